/* Event types and their rules: the five critical events, agent_error, custom types and
 * the reserved server-only names; which data fields each requires; envelope timestamps.
 * Pure logic over strings and jansson values; no I/O. */
#ifndef AC_CORE_EVENT_H
#define AC_CORE_EVENT_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

typedef enum {
    AC__EV_AGENT_STARTED = 0, /* same order as AC_STAT_* */
    AC__EV_AGENT_THINKING,
    AC__EV_TOOL_EXECUTING,
    AC__EV_TOOL_COMPLETED,
    AC__EV_AGENT_COMPLETED,
    AC__EV_AGENT_ERROR,
    AC__EV_USER_MESSAGE, /* the person's chat message; published only by the gateway */
    AC__EV_CUSTOM,
    AC__EV_NTYPES
} ac__ev_type_t;

/* Classifies a publisher-given type name. Returns the type, or -1 with *reason set to
 * "type: reserved" (connected, ping, resync, error, closing: server messages; user_message:
 * only the gateway publishes it, for the user's own connection) or "type: malformed"
 * (not [a-z][a-z0-9_.-]{0,63}). */
int ac__ev_type_parse(const char *name, size_t len, const char **reason);

/* The canonical name of a non-custom type ("custom" for AC__EV_CUSTOM). */
const char *ac__ev_type_name(ac__ev_type_t t);

/* The data fields some type requires, as bits: a set of them says which are present and
 * not null. */
enum {
    AC__DF_AGENT = 1 << 0,
    AC__DF_THOUGHT = 1 << 1,
    AC__DF_TOOL = 1 << 2,
    AC__DF_TOOL_CALL_ID = 1 << 3,
    AC__DF_RESULT = 1 << 4,
    AC__DF_ERROR = 1 << 5
};

/* The AC__DF_* bit of a data member's name, or 0 for any other name. */
unsigned ac__ev_data_field(const char *name, size_t len);

/* Checks that `present` (AC__DF_* bits) holds every field `t` requires. Returns 0, or -1
 * with *field pointing at the first missing field's name. */
int ac__ev_check_fields(ac__ev_type_t t, unsigned present, const char **field);

/* The same for `data` (a JSON object). */
int ac__ev_check_data(ac__ev_type_t t, const json_t *data, const char **field);

/* Writes "YYYY-MM-DDTHH:MM:SS.mmmZ" (24 chars + NUL) for `ms` since the epoch. */
void ac__iso8601_ms(int64_t ms, char out[25]);

/* Parses 1..19 decimal digits (nothing else) into *out; returns 0 or -1. */
int ac__parse_u64(const char *p, size_t n, uint64_t *out);

/* Milliseconds since the Unix epoch, from the realtime clock. */
int64_t ac__now_ms(void);

#endif
