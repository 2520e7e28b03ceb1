/* Envelope building. An envelope is written straight into a reusable scratch buffer in
 * its final field order and then copied once behind its frame header: the one copy every
 * connection of the user will share. */
#include <string.h>

#include "agentcast.h"
#include "core/emitter.h"
#include "net/ws.h"

void ac__emitter_init(ac__emitter_t *e)
{
    memset(e, 0, sizeof(*e));
}

void ac__emitter_dispose(ac__emitter_t *e)
{
    ac__sbuf_dispose(&e->scratch);
}

ac__buf_t *ac__frame_raw(unsigned opcode, const void *payload, size_t len)
{
    size_t hlen = ac__ws_header_size(len);
    ac__buf_t *b = ac__buf_new(hlen + len);

    if (b == NULL)
        return NULL;
    ac__ws_header_encode((uint8_t *)b->data, opcode, 1, len);
    if (len > 0)
        memcpy(b->data + hlen, payload, len);
    return b;
}

static int dump_cb(const char *buffer, size_t size, void *arg)
{
    return ac__sbuf_append(arg, buffer, size) == 0 ? 0 : -1;
}

static int put_str_field(ac__sbuf_t *s, const char *key, ac__str_t v)
{
    if (v.p == NULL)
        return 0;
    if (ac__sbuf_printf(s, ",\"%s\":", key) != 0)
        return AC_ENOMEM;
    return ac__sbuf_json_str(s, v.p, v.len);
}

static int put_timestamp(ac__sbuf_t *s, int64_t ts_ms)
{
    char ts[25];

    ac__iso8601_ms(ts_ms, ts);
    return ac__sbuf_printf(s, ",\"timestamp\":\"%s\"", ts);
}

/* Builds the envelope of an event into e->scratch; seq 0 means no seq field. */
static int build_event(ac__emitter_t *e, const ac__user_t *u, const ac__event_t *ev, uint64_t seq,
                       int64_t ts_ms)
{
    ac__sbuf_t *s = &e->scratch;

    s->len = 0;
    if (ac__sbuf_append(s, "{\"type\":", 8) != 0 ||
        ac__sbuf_json_str(s, ev->type_name.p, ev->type_name.len) != 0)
        return AC_ENOMEM;
    if (seq != 0 && ac__sbuf_printf(s, ",\"seq\":%llu", (unsigned long long)seq) != 0)
        return AC_ENOMEM;
    if (put_str_field(s, "user_id", (ac__str_t){u->id, u->id_len}) != 0 ||
        put_str_field(s, "run_id", ev->run_id) != 0 ||
        put_str_field(s, "thread_id", ev->thread_id) != 0 || put_timestamp(s, ts_ms) != 0 ||
        ac__sbuf_append(s, ",\"data\":", 8) != 0)
        return AC_ENOMEM;
    if (json_dump_callback(ev->data, dump_cb, s, JSON_COMPACT) != 0)
        return AC_ENOMEM;
    return ac__sbuf_append(s, "}", 1);
}

ac__buf_t *ac__emitter_event(ac__emitter_t *e, ac__user_t *u, const ac__event_t *ev, int64_t ts_ms)
{
    ac__buf_t *b;

    if (build_event(e, u, ev, u->seq + 1, ts_ms) != 0)
        return NULL;
    b = ac__frame_raw(AC_WS_TEXT, e->scratch.p, e->scratch.len);
    if (b == NULL)
        return NULL;
    b->seq = ++u->seq;
    e->by_type[ev->type < AC__EV_NTYPES ? ev->type : AC__EV_CUSTOM]++;
    e->events_total++;
    return b;
}

ac__buf_t *ac__emitter_direct(ac__emitter_t *e, const ac__user_t *u, const ac__event_t *ev,
                              int64_t ts_ms)
{
    ac__buf_t *b;

    if (build_event(e, u, ev, 0, ts_ms) != 0)
        return NULL;
    b = ac__frame_raw(AC_WS_TEXT, e->scratch.p, e->scratch.len);
    if (b != NULL)
        e->direct_total++;
    return b;
}

ac__buf_t *ac__emitter_server_msg(ac__emitter_t *e, const char *type, ac__str_t user,
                                  ac__str_t thread, const char *data_json, int64_t ts_ms)
{
    ac__sbuf_t *s = &e->scratch;

    s->len = 0;
    if (ac__sbuf_printf(s, "{\"type\":\"%s\"", type) != 0 ||
        put_str_field(s, "user_id", user) != 0 || put_str_field(s, "thread_id", thread) != 0 ||
        put_timestamp(s, ts_ms) != 0)
        return NULL;
    if (data_json != NULL && ac__sbuf_printf(s, ",\"data\":%s", data_json) != 0)
        return NULL;
    if (ac__sbuf_append(s, "}", 1) != 0)
        return NULL;
    return ac__frame_raw(AC_WS_TEXT, s->p, s->len);
}
