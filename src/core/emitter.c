/* Envelope building. An envelope is written straight into a reusable scratch buffer in
 * its final field order and then copied once behind its frame header: the one copy every
 * connection of the user will share. */
#include <string.h>

#include "agentcast.h"
#include "core/emitter.h"
#include "core/jscan.h"
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

/* `,"key":"value"` (value escaped); nothing when the value is absent. `key` is the
 * literal with its quotes and colon, e.g. ",\"run_id\":". */
static int put_str_field(ac__sbuf_t *s, const char *key, ac__str_t v)
{
    if (v.p == NULL)
        return 0;
    if (ac__sbuf_append(s, key, strlen(key)) != 0)
        return AC_ENOMEM;
    return ac__sbuf_json_str(s, v.p, v.len);
}

/* The seconds part of the timestamp changes once a second: format it then, not per event. */
static int put_timestamp(ac__emitter_t *e, ac__sbuf_t *s, int64_t ts_ms)
{
    char frac[6];
    int64_t sec = ts_ms / 1000;

    if (sec != e->ts_sec || e->ts_prefix[0] == '\0') {
        char ts[25];
        ac__iso8601_ms(ts_ms, ts);
        memcpy(e->ts_prefix, ts, 19);
        e->ts_prefix[19] = '\0';
        e->ts_sec = sec;
    }
    frac[0] = '.';
    frac[1] = (char)('0' + (ts_ms / 100) % 10);
    frac[2] = (char)('0' + (ts_ms / 10) % 10);
    frac[3] = (char)('0' + ts_ms % 10);
    frac[4] = 'Z';
    frac[5] = '"';
    if (ac__sbuf_append(s, ",\"timestamp\":\"", 14) != 0 ||
        ac__sbuf_append(s, e->ts_prefix, 19) != 0)
        return AC_ENOMEM;
    return ac__sbuf_append(s, frac, sizeof(frac));
}

/* The data object, compact, written straight into the buffer (one pass when it fits). */
static int put_json(ac__sbuf_t *s, const json_t *v)
{
    size_t room = s->cap - s->len;
    size_t n = json_dumpb(v, s->p ? s->p + s->len : NULL, s->p ? room : 0, JSON_COMPACT);

    if (n == 0)
        return AC_ENOMEM;
    if (n > room) {
        if (ac__sbuf_reserve(s, n) != 0 ||
            json_dumpb(v, s->p + s->len, s->cap - s->len, JSON_COMPACT) != n)
            return AC_ENOMEM;
    }
    s->len += n;
    return 0;
}

/* The event's data: its object, its text (compacted), or {}. */
static int put_data(ac__sbuf_t *s, const ac__event_t *ev)
{
    if (ev->data != NULL)
        return put_json(s, ev->data);
    if (ev->data_raw.p == NULL)
        return ac__sbuf_append(s, "{}", 2);
    if (!ev->data_ws)
        return ac__sbuf_append(s, ev->data_raw.p, ev->data_raw.len);
    if (ac__sbuf_reserve(s, ev->data_raw.len) != 0)
        return AC_ENOMEM;
    s->len += ac__json_compact(s->p + s->len, ev->data_raw.p, ev->data_raw.len);
    return 0;
}

/* Appends the envelope of an event to `s`. With `split`, a seq field is opened and left
 * without its digits: *split is where they go. Else seq 0 means no seq field. */
static int put_event(ac__emitter_t *e, ac__sbuf_t *s, ac__str_t user, const ac__event_t *ev,
                     uint64_t seq, int64_t ts_ms, size_t *split)
{
    if (ac__sbuf_append(s, "{\"type\":", 8) != 0 ||
        ac__sbuf_json_str(s, ev->type_name.p, ev->type_name.len) != 0)
        return AC_ENOMEM;
    if (split != NULL) {
        if (ac__sbuf_append(s, ",\"seq\":", 7) != 0)
            return AC_ENOMEM;
        *split = s->len;
    } else if (seq != 0 && (ac__sbuf_append(s, ",\"seq\":", 7) != 0 || ac__sbuf_u64(s, seq) != 0)) {
        return AC_ENOMEM;
    }
    if (put_str_field(s, ",\"user_id\":", user) != 0 ||
        put_str_field(s, ",\"run_id\":", ev->run_id) != 0 ||
        put_str_field(s, ",\"thread_id\":", ev->thread_id) != 0 ||
        put_timestamp(e, s, ts_ms) != 0 || ac__sbuf_append(s, ",\"data\":", 8) != 0)
        return AC_ENOMEM;
    if (put_data(s, ev) != 0)
        return AC_ENOMEM;
    return ac__sbuf_append(s, "}", 1);
}

/* Builds the envelope of an event into e->scratch; seq 0 means no seq field. */
static int build_event(ac__emitter_t *e, const ac__user_t *u, const ac__event_t *ev, uint64_t seq,
                       int64_t ts_ms)
{
    e->scratch.len = 0;
    return put_event(e, &e->scratch, (ac__str_t){u->id, u->id_len}, ev, seq, ts_ms, NULL);
}

int ac__emitter_envelope(ac__emitter_t *e, ac__sbuf_t *out, ac__str_t user, const ac__event_t *ev,
                         int64_t ts_ms, size_t *split)
{
    return put_event(e, out, user, ev, 0, ts_ms, split);
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
        put_str_field(s, ",\"user_id\":", user) != 0 ||
        put_str_field(s, ",\"thread_id\":", thread) != 0 || put_timestamp(e, s, ts_ms) != 0)
        return NULL;
    if (data_json != NULL && ac__sbuf_printf(s, ",\"data\":%s", data_json) != 0)
        return NULL;
    if (ac__sbuf_append(s, "}", 1) != 0)
        return NULL;
    return ac__frame_raw(AC_WS_TEXT, s->p, s->len);
}
