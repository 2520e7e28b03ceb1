/* Event type table and validation rules (DESIGN.md: the five critical events, agent_error,
 * custom types, reserved names). The type name is resolved once, at the edge; everything
 * after uses the enum. */
#include <string.h>
#include <time.h>

#include "core/event.h"

static const char *const type_names[AC__EV_NTYPES] = {
    "agent_started",   "agent_thinking", "tool_executing", "tool_completed",
    "agent_completed", "agent_error",    "user_message",   "custom"};

/* The data fields of AC__DF_*, in bit order. */
static const char *const field_names[] = {"agent",        "thought", "tool",
                                          "tool_call_id", "result",  "error"};

/* Required data fields per type, in the order they are reported missing. */
static const unsigned required[AC__EV_NTYPES] = {
    AC__DF_AGENT,
    AC__DF_THOUGHT,
    AC__DF_TOOL | AC__DF_TOOL_CALL_ID,
    AC__DF_TOOL | AC__DF_TOOL_CALL_ID | AC__DF_RESULT,
    AC__DF_RESULT,
    AC__DF_ERROR,
    0, /* user_message: the gateway builds it */
    0,
};

/* Server messages, and user_message: a user_message in a stream always came from that
 * user's own connection, never from a publisher speaking for the person. */
static const char *const reserved[] = {"connected", "ping",    "resync",
                                       "error",     "closing", "user_message"};

int ac__ev_type_parse(const char *name, size_t len, const char **reason)
{
    if (len == 0 || len > 64 || name[0] < 'a' || name[0] > 'z')
        goto malformed;
    for (size_t i = 1; i < len; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-'))
            goto malformed;
    }
    static const uint8_t reserved_lens[] = {9, 4, 6, 5, 7, 12};
    static const uint8_t type_lens[AC__EV_CUSTOM] = {13, 14, 14, 14, 15, 11, 12};

    for (size_t i = 0; i < sizeof(reserved_lens); i++) {
        if (reserved_lens[i] == len && memcmp(reserved[i], name, len) == 0) {
            *reason = "type: reserved";
            return -1;
        }
    }
    for (int t = 0; t < AC__EV_CUSTOM; t++) {
        if (type_lens[t] == len && memcmp(type_names[t], name, len) == 0)
            return t;
    }
    return AC__EV_CUSTOM;

malformed:
    *reason = "type: malformed";
    return -1;
}

const char *ac__ev_type_name(ac__ev_type_t t)
{
    return (unsigned)t < AC__EV_NTYPES ? type_names[t] : "custom";
}

unsigned ac__ev_data_field(const char *name, size_t len)
{
    unsigned i;

    switch (len) { /* one candidate per length, but for agent and error */
    case 4:
        i = 2; /* tool */
        break;
    case 5:
        i = name[0] == 'a' ? 0 : 5; /* agent, error */
        break;
    case 6:
        i = 4; /* result */
        break;
    case 7:
        i = 1; /* thought */
        break;
    case 12:
        i = 3; /* tool_call_id */
        break;
    default:
        return 0;
    }
    return memcmp(field_names[i], name, len) == 0 ? 1u << i : 0;
}

int ac__ev_check_fields(ac__ev_type_t t, unsigned present, const char **field)
{
    unsigned missing = (unsigned)t < AC__EV_NTYPES ? required[t] & ~present : 0;

    if (missing == 0)
        return 0;
    for (unsigned i = 0;; i++) {
        if (missing & (1u << i)) {
            *field = field_names[i];
            return -1;
        }
    }
}

int ac__ev_check_data(ac__ev_type_t t, const json_t *data, const char **field)
{
    unsigned present = 0;

    for (unsigned i = 0; i < sizeof(field_names) / sizeof(field_names[0]); i++) {
        json_t *v = json_object_get(data, field_names[i]);
        if (v != NULL && !json_is_null(v))
            present |= 1u << i;
    }
    return ac__ev_check_fields(t, present, field);
}

void ac__iso8601_ms(int64_t ms, char out[25])
{
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;

    gmtime_r(&secs, &tm);
    strftime(out, 25, "%Y-%m-%dT%H:%M:%S", &tm);
    out[19] = '.';
    out[20] = (char)('0' + (ms / 100) % 10);
    out[21] = (char)('0' + (ms / 10) % 10);
    out[22] = (char)('0' + ms % 10);
    out[23] = 'Z';
    out[24] = '\0';
}

int64_t ac__now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int ac__parse_u64(const char *p, size_t n, uint64_t *out)
{
    uint64_t v = 0;

    if (n == 0 || n > 19)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        v = v * 10 + (uint64_t)(p[i] - '0');
    }
    *out = v;
    return 0;
}
