/* Unit tests for src/core/emitter.c: the event envelope (field order, optional fields,
 * escaping, timestamp), per-user seq numbering, counters, direct and server-only
 * messages, and raw frame headers. Each frame is decoded with the ws.c codec and its
 * payload parsed with jansson. */
#include <regex.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <jansson.h>

#include "core/emitter.h"
#include "core/manager.h"
#include "net/ws.h"

#define TS INT64_C(1764093760123)
#define TS_STR "2025-11-25T18:02:40.123Z"

/* ---- fixture: a manager with users, an emitter ---- */

typedef struct fx_s {
    ac__manager_t m;
    ac__emitter_t e;
} fx_t;

static int setup(void **st)
{
    fx_t *f = calloc(1, sizeof(*f));
    if (f == NULL || ac__manager_init(&f->m, 3, 100) != 0)
        return -1;
    ac__emitter_init(&f->e);
    *st = f;
    return 0;
}

static int teardown(void **st)
{
    fx_t *f = *st;
    ac__emitter_dispose(&f->e);
    ac__manager_dispose(&f->m);
    free(f);
    return 0;
}

static ac__user_t *user(fx_t *f, const char *id)
{
    ac__user_t *u = ac__manager_user(&f->m, id, strlen(id), 0);
    assert_non_null(u);
    return u;
}

static ac__str_t str(const char *s)
{
    return (ac__str_t){s, s != NULL ? strlen(s) : 0};
}

/* ---- frame helpers ---- */

/* Checks the frame is one unmasked FIN text frame whose header length matches the buffer
 * and returns its payload parsed (caller decrefs). */
static json_t *payload_json(const ac__buf_t *b, const char **payload, size_t *plen)
{
    ac__ws_header_t h;
    int hl = ac__ws_header_decode((const uint8_t *)b->data, b->len, &h);
    assert_true(hl > 0);
    assert_int_equal(h.fin, 1);
    assert_int_equal(h.rsv, 0);
    assert_int_equal(h.opcode, AC_WS_TEXT);
    assert_int_equal(h.masked, 0);
    assert_int_equal(h.len, b->len - (uint32_t)hl);
    *payload = b->data + hl;
    *plen = (size_t)h.len;
    json_error_t err;
    json_t *v = json_loadb(*payload, *plen, 0, &err);
    if (v == NULL)
        fail_msg("payload is not JSON (%s): %.*s", err.text, (int)*plen, *payload);
    assert_true(json_is_object(v));
    return v;
}

static json_t *parse_frame(const ac__buf_t *b)
{
    const char *p;
    size_t n;
    return payload_json(b, &p, &n);
}

/* Writes the object's top-level keys, in the order they appear in the text, as
 * "k1,k2,...". The text must be valid JSON (checked by jansson first). */
static void top_level_keys(const char *p, size_t n, char *out, size_t outsz)
{
    int depth = 0;
    int in_str = 0;
    int expect_key = 0;
    size_t o = 0;
    const char *key = NULL;

    out[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (in_str) {
            if (c == '\\') {
                i++;
            } else if (c == '"') {
                in_str = 0;
                if (key != NULL) {
                    size_t klen = (size_t)(p + i - key);
                    assert_true(o + klen + 2 < outsz);
                    if (o > 0)
                        out[o++] = ',';
                    memcpy(out + o, key, klen);
                    o += klen;
                    out[o] = '\0';
                    key = NULL;
                }
            }
            continue;
        }
        if (c == '"') {
            in_str = 1;
            if (depth == 1 && expect_key)
                key = p + i + 1;
            expect_key = 0;
        } else if (c == '{' || c == '[') {
            depth++;
            expect_key = depth == 1;
        } else if (c == '}' || c == ']') {
            depth--;
        } else if (c == ',' && depth == 1) {
            expect_key = 1;
        }
    }
}

static void assert_keys(const ac__buf_t *b, const char *want)
{
    const char *p;
    size_t n;
    json_t *v = payload_json(b, &p, &n);
    char keys[256];
    top_level_keys(p, n, keys, sizeof(keys));
    assert_string_equal(keys, want);
    json_decref(v);
}

static const char *get_str(const json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    if (v == NULL || !json_is_string(v))
        fail_msg("field %s missing or not a string", key);
    return json_string_value(v);
}

static json_int_t get_int(const json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    if (v == NULL || !json_is_integer(v))
        fail_msg("field %s missing or not an integer", key);
    return json_integer_value(v);
}

static json_t *data_of(const char *text)
{
    json_error_t err;
    json_t *d = json_loads(text, 0, &err);
    assert_non_null(d);
    return d;
}

/* Emits an event of `type` for u and returns its frame. */
static ac__buf_t *emit(fx_t *f, ac__user_t *u, ac__ev_type_t type, const char *name,
                       const json_t *data)
{
    ac__event_t ev = {.type = type, .type_name = str(name), .data = data};
    ac__buf_t *b = ac__emitter_event(&f->e, u, &ev, TS);
    assert_non_null(b);
    return b;
}

/* ---- the event envelope ---- */

static void test_event_envelope_fields_in_order(void **st)
{
    fx_t *f = *st;
    ac__user_t *u = user(f, "alice");
    json_t *data = data_of("{\"agent\":\"planner\",\"n\":[1,{\"type\":2}]}");
    ac__event_t ev = {.type = AC__EV_AGENT_STARTED,
                      .type_name = str("agent_started"),
                      .run_id = str("run-1"),
                      .thread_id = str("thr-9"),
                      .data = data};
    ac__buf_t *b = ac__emitter_event(&f->e, u, &ev, TS);
    assert_non_null(b);
    assert_keys(b, "type,seq,user_id,run_id,thread_id,timestamp,data");
    ac__buf_unref(b);
    json_decref(data);
}

static void test_event_envelope_values(void **st)
{
    fx_t *f = *st;
    ac__user_t *u = user(f, "alice");
    json_t *data = data_of("{\"agent\":\"planner\",\"n\":[1,2.5,null,true]}");
    ac__event_t ev = {.type = AC__EV_AGENT_STARTED,
                      .type_name = str("agent_started"),
                      .run_id = str("run-1"),
                      .thread_id = str("thr-9"),
                      .data = data};
    ac__buf_t *b = ac__emitter_event(&f->e, u, &ev, TS);
    json_t *v = parse_frame(b);
    assert_int_equal(json_object_size(v), 7);
    assert_string_equal(get_str(v, "type"), "agent_started");
    assert_int_equal(get_int(v, "seq"), 1);
    assert_string_equal(get_str(v, "user_id"), "alice");
    assert_string_equal(get_str(v, "run_id"), "run-1");
    assert_string_equal(get_str(v, "thread_id"), "thr-9");
    assert_string_equal(get_str(v, "timestamp"), TS_STR);
    assert_true(json_equal(json_object_get(v, "data"), data));
    json_decref(v);
    ac__buf_unref(b);
    json_decref(data);
}

static void test_event_is_compact_single_line(void **st)
{
    fx_t *f = *st;
    ac__user_t *u = user(f, "alice");
    json_t *data = data_of("{ \"agent\" : \"a\" ,\n \"x\" : [ 1 , 2 ] }");
    ac__buf_t *b = emit(f, u, AC__EV_AGENT_STARTED, "agent_started", data);
    const char *p;
    size_t n;
    json_t *v = payload_json(b, &p, &n);
    const char want[] = "{\"type\":\"agent_started\",\"seq\":1,\"user_id\":\"alice\","
                        "\"timestamp\":\"" TS_STR "\",\"data\":{\"agent\":\"a\",\"x\":[1,2]}}";
    assert_int_equal(n, sizeof(want) - 1);
    assert_memory_equal(p, want, n);
    json_decref(v);
    ac__buf_unref(b);
    json_decref(data);
}

static void test_event_omits_absent_run_and_thread(void **st)
{
    fx_t *f = *st;
    ac__user_t *u = user(f, "alice");
    json_t *data = data_of("{\"thought\":\"hm\"}");
    ac__buf_t *b = emit(f, u, AC__EV_AGENT_THINKING, "agent_thinking", data);
    assert_keys(b, "type,seq,user_id,timestamp,data");
    ac__buf_unref(b);
    json_decref(data);
}

static void test_event_omits_run_keeps_thread(void **st)
{
    fx_t *f = *st;
    ac__user_t *u = user(f, "alice");
    json_t *data = data_of("{}");
    ac__event_t ev = {
        .type = AC__EV_CUSTOM, .type_name = str("my.event"), .thread_id = str("t"), .data = data};
    ac__buf_t *b = ac__emitter_event(&f->e, u, &ev, TS);
    assert_keys(b, "type,seq,user_id,thread_id,timestamp,data");
    ac__buf_unref(b);
    json_decref(data);
}

static void test_event_omits_thread_keeps_run(void **st)
{
    fx_t *f = *st;
    ac__user_t *u = user(f, "alice");
    json_t *data = data_of("{}");
    ac__event_t ev = {
        .type = AC__EV_CUSTOM, .type_name = str("my.event"), .run_id = str("r"), .data = data};
    ac__buf_t *b = ac__emitter_event(&f->e, u, &ev, TS);
    assert_keys(b, "type,seq,user_id,run_id,timestamp,data");
    ac__buf_unref(b);
    json_decref(data);
}

static void test_event_empty_run_id_is_present_not_absent(void **st)
{
    fx_t *f = *st;
    ac__user_t *u = user(f, "alice");
    json_t *data = data_of("{}");
    ac__event_t ev = {
        .type = AC__EV_CUSTOM, .type_name = str("x"), .run_id = str(""), .data = data};
    ac__buf_t *b = ac__emitter_event(&f->e, u, &ev, TS);
    json_t *v = parse_frame(b);
    assert_string_equal(get_str(v, "run_id"), "");
    json_decref(v);
    ac__buf_unref(b);
    json_decref(data);
}

static void test_event_custom_type_keeps_published_name(void **st)
{
    fx_t *f = *st;
    ac__user_t *u = user(f, "alice");
    json_t *data = data_of("{}");
    ac__buf_t *b = emit(f, u, AC__EV_CUSTOM, "my.event-1_x", data);
    json_t *v = parse_frame(b);
    assert_string_equal(get_str(v, "type"), "my.event-1_x");
    json_decref(v);
    ac__buf_unref(b);
    json_decref(data);
}

static void test_event_type_name_uses_len_not_nul(void **st)
{
    fx_t *f = *st;
    ac__user_t *u = user(f, "alice");
    json_t *data = data_of("{}");
    ac__event_t ev = {.type = AC__EV_CUSTOM, .type_name = {"abcdef", 3}, .data = data};
    ac__buf_t *b = ac__emitter_event(&f->e, u, &ev, TS);
    json_t *v = parse_frame(b);
    assert_string_equal(get_str(v, "type"), "abc");
    json_decref(v);
    ac__buf_unref(b);
    json_decref(data);
}

/* ---- seq ---- */

static void test_seq_increments_per_event_and_buf_seq_matches(void **st)
{
    fx_t *f = *st;
    ac__user_t *u = user(f, "alice");
    json_t *data = data_of("{}");
    for (int i = 1; i <= 5; i++) {
        ac__buf_t *b = emit(f, u, AC__EV_CUSTOM, "tick", data);
        assert_int_equal(b->seq, i);
        assert_int_equal(u->seq, i);
        json_t *v = parse_frame(b);
        assert_int_equal(get_int(v, "seq"), i);
        json_decref(v);
        ac__buf_unref(b);
    }
    json_decref(data);
}

static void test_seq_is_independent_per_user(void **st)
{
    fx_t *f = *st;
    ac__user_t *a = user(f, "alice");
    ac__user_t *b = user(f, "bob");
    json_t *data = data_of("{}");
    ac__buf_t *f1 = emit(f, a, AC__EV_CUSTOM, "x", data);
    ac__buf_t *f2 = emit(f, a, AC__EV_CUSTOM, "x", data);
    ac__buf_t *f3 = emit(f, b, AC__EV_CUSTOM, "x", data);
    ac__buf_t *f4 = emit(f, a, AC__EV_CUSTOM, "x", data);
    assert_int_equal(f1->seq, 1);
    assert_int_equal(f2->seq, 2);
    assert_int_equal(f3->seq, 1);
    assert_int_equal(f4->seq, 3);
    assert_int_equal(a->seq, 3);
    assert_int_equal(b->seq, 1);
    json_t *v = parse_frame(f3);
    assert_string_equal(get_str(v, "user_id"), "bob");
    assert_int_equal(get_int(v, "seq"), 1);
    json_decref(v);
    ac__buf_unref(f1);
    ac__buf_unref(f2);
    ac__buf_unref(f3);
    ac__buf_unref(f4);
    json_decref(data);
}

static void test_seq_continues_from_user_record(void **st)
{
    fx_t *f = *st;
    ac__user_t *u = user(f, "alice");
    u->seq = 41;
    json_t *data = data_of("{}");
    ac__buf_t *b = emit(f, u, AC__EV_CUSTOM, "x", data);
    assert_int_equal(b->seq, 42);
    json_t *v = parse_frame(b);
    assert_int_equal(get_int(v, "seq"), 42);
    json_decref(v);
    ac__buf_unref(b);
    json_decref(data);
}

static void test_event_frame_has_one_reference(void **st)
{
    fx_t *f = *st;
    ac__user_t *u = user(f, "alice");
    json_t *data = data_of("{}");
    ac__buf_t *b = emit(f, u, AC__EV_CUSTOM, "x", data);
    assert_int_equal(b->refs, 1);
    ac__buf_unref(b);
    json_decref(data);
}

static void test_event_frames_do_not_share_scratch(void **st)
{
    fx_t *f = *st;
    ac__user_t *u = user(f, "alice");
    json_t *d1 = data_of("{\"k\":\"first\"}");
    json_t *d2 = data_of("{\"k\":\"second, and longer\"}");
    ac__buf_t *b1 = emit(f, u, AC__EV_CUSTOM, "x", d1);
    ac__buf_t *b2 = emit(f, u, AC__EV_CUSTOM, "x", d2);
    json_t *v1 = parse_frame(b1);
    json_t *v2 = parse_frame(b2);
    assert_true(json_equal(json_object_get(v1, "data"), d1));
    assert_true(json_equal(json_object_get(v2, "data"), d2));
    json_decref(v1);
    json_decref(v2);
    ac__buf_unref(b1);
    ac__buf_unref(b2);
    json_decref(d1);
    json_decref(d2);
}

/* ---- counters ---- */

static void test_counters_by_type_for_each_type(void **st)
{
    fx_t *f = *st;
    ac__user_t *u = user(f, "alice");
    json_t *data = data_of("{}");
    for (int t = 0; t < AC__EV_NTYPES; t++) {
        /* t + 1 events of type t, so a misplaced count shows. */
        for (int k = 0; k <= t; k++)
            ac__buf_unref(emit(f, u, (ac__ev_type_t)t, ac__ev_type_name((ac__ev_type_t)t), data));
    }
    for (int t = 0; t < AC__EV_NTYPES; t++)
        assert_int_equal(f->e.by_type[t], t + 1);
    assert_int_equal(f->e.events_total, AC__EV_NTYPES * (AC__EV_NTYPES + 1) / 2);
    assert_int_equal(f->e.direct_total, 0);
    json_decref(data);
}

static void test_counters_agent_error(void **st)
{
    fx_t *f = *st;
    ac__user_t *u = user(f, "alice");
    json_t *data = data_of("{\"error\":\"boom\"}");
    ac__buf_unref(emit(f, u, AC__EV_AGENT_ERROR, "agent_error", data));
    assert_int_equal(f->e.by_type[AC__EV_AGENT_ERROR], 1);
    assert_int_equal(f->e.by_type[AC__EV_CUSTOM], 0);
    assert_int_equal(f->e.events_total, 1);
    json_decref(data);
}

static void test_counters_custom_names_share_custom_slot(void **st)
{
    fx_t *f = *st;
    ac__user_t *u = user(f, "alice");
    json_t *data = data_of("{}");
    ac__buf_unref(emit(f, u, AC__EV_CUSTOM, "a.one", data));
    ac__buf_unref(emit(f, u, AC__EV_CUSTOM, "b.two", data));
    assert_int_equal(f->e.by_type[AC__EV_CUSTOM], 2);
    for (int t = 0; t < AC__EV_CUSTOM; t++)
        assert_int_equal(f->e.by_type[t], 0);
    assert_int_equal(f->e.events_total, 2);
    json_decref(data);
}

/* ---- direct messages ---- */

static void test_direct_has_no_seq_field(void **st)
{
    fx_t *f = *st;
    ac__user_t *u = user(f, "alice");
    json_t *data = data_of("{\"hi\":1}");
    ac__event_t ev = {.type = AC__EV_CUSTOM,
                      .type_name = str("note"),
                      .run_id = str("r"),
                      .thread_id = str("t"),
                      .data = data};
    ac__buf_t *b = ac__emitter_direct(&f->e, u, &ev, TS);
    assert_non_null(b);
    assert_int_equal(b->seq, 0);
    assert_keys(b, "type,user_id,run_id,thread_id,timestamp,data");
    json_t *v = parse_frame(b);
    assert_string_equal(get_str(v, "type"), "note");
    assert_string_equal(get_str(v, "user_id"), "alice");
    assert_string_equal(get_str(v, "timestamp"), TS_STR);
    assert_true(json_equal(json_object_get(v, "data"), data));
    json_decref(v);
    ac__buf_unref(b);
    json_decref(data);
}

static void test_direct_does_not_consume_seq(void **st)
{
    fx_t *f = *st;
    ac__user_t *u = user(f, "alice");
    json_t *data = data_of("{}");
    ac__buf_unref(emit(f, u, AC__EV_CUSTOM, "x", data));
    ac__event_t ev = {.type = AC__EV_CUSTOM, .type_name = str("note"), .data = data};
    ac__buf_unref(ac__emitter_direct(&f->e, u, &ev, TS));
    assert_int_equal(u->seq, 1);
    ac__buf_t *b = emit(f, u, AC__EV_CUSTOM, "x", data);
    assert_int_equal(b->seq, 2);
    ac__buf_unref(b);
    json_decref(data);
}

static void test_direct_counts_direct_total_only(void **st)
{
    fx_t *f = *st;
    ac__user_t *u = user(f, "alice");
    json_t *data = data_of("{}");
    ac__event_t ev = {.type = AC__EV_AGENT_STARTED, .type_name = str("note"), .data = data};
    ac__buf_unref(ac__emitter_direct(&f->e, u, &ev, TS));
    ac__buf_unref(ac__emitter_direct(&f->e, u, &ev, TS));
    assert_int_equal(f->e.direct_total, 2);
    assert_int_equal(f->e.events_total, 0);
    for (int t = 0; t < AC__EV_NTYPES; t++)
        assert_int_equal(f->e.by_type[t], 0);
    json_decref(data);
}

/* ---- escaping ---- */

static const char nasty[] = "q\"b\\s/n\nt\tc\x01\x1f del\x7f e\xc3\xa9 euro\xe2\x82\xac "
                            "emoji\xf0\x9f\x98\x80 end";

static void test_escaping_roundtrips_run_and_thread_ids(void **st)
{
    fx_t *f = *st;
    ac__user_t *u = user(f, "alice");
    json_t *data = data_of("{}");
    ac__event_t ev = {.type = AC__EV_CUSTOM,
                      .type_name = str("x"),
                      .run_id = {nasty, sizeof(nasty) - 1},
                      .thread_id = {nasty, sizeof(nasty) - 1},
                      .data = data};
    ac__buf_t *b = ac__emitter_event(&f->e, u, &ev, TS);
    json_t *v = parse_frame(b);
    assert_string_equal(get_str(v, "run_id"), nasty);
    assert_string_equal(get_str(v, "thread_id"), nasty);
    json_decref(v);
    ac__buf_unref(b);
    json_decref(data);
}

static void test_escaping_roundtrips_user_id(void **st)
{
    fx_t *f = *st;
    ac__user_t *u = ac__manager_user(&f->m, nasty, sizeof(nasty) - 1, 0);
    assert_non_null(u);
    json_t *data = data_of("{}");
    ac__buf_t *b = emit(f, u, AC__EV_CUSTOM, "x", data);
    json_t *v = parse_frame(b);
    assert_string_equal(get_str(v, "user_id"), nasty);
    json_decref(v);
    ac__buf_unref(b);
    json_decref(data);
}

static void test_escaping_roundtrips_data_strings(void **st)
{
    fx_t *f = *st;
    ac__user_t *u = user(f, "alice");
    json_t *data = json_object();
    json_object_set_new(data, nasty, json_string(nasty));
    json_object_set_new(data, "thought", json_string("line1\nline2 \"quoted\" \\"));
    ac__buf_t *b = emit(f, u, AC__EV_AGENT_THINKING, "agent_thinking", data);
    json_t *v = parse_frame(b);
    assert_true(json_equal(json_object_get(v, "data"), data));
    json_decref(v);
    ac__buf_unref(b);
    json_decref(data);
}

static void test_escaping_control_chars_use_u_escapes(void **st)
{
    fx_t *f = *st;
    ac__user_t *u = user(f, "alice");
    json_t *data = data_of("{}");
    ac__event_t ev = {
        .type = AC__EV_CUSTOM, .type_name = str("x"), .run_id = str("a\"\\\n\x01"), .data = data};
    ac__buf_t *b = ac__emitter_event(&f->e, u, &ev, TS);
    const char *p;
    size_t n;
    json_t *v = payload_json(b, &p, &n);
    const char want[] = "\"run_id\":\"a\\\"\\\\\\u000a\\u0001\"";
    assert_non_null(memmem(p, n, want, sizeof(want) - 1));
    json_decref(v);
    ac__buf_unref(b);
    json_decref(data);
}

/* ---- server messages ---- */

static ac__buf_t *server_msg(fx_t *f, const char *type, const char *user_id, const char *thread,
                             const char *data_json)
{
    ac__buf_t *b = ac__emitter_server_msg(&f->e, type, str(user_id), str(thread), data_json, TS);
    assert_non_null(b);
    return b;
}

static void test_server_msg_connected_shape(void **st)
{
    fx_t *f = *st;
    ac__buf_t *b = server_msg(f, "connected", "alice", NULL,
                              "{\"connection_id\":\"c1\",\"epoch\":\"0badf00d\",\"seq\":0}");
    assert_int_equal(b->seq, 0);
    assert_keys(b, "type,user_id,timestamp,data");
    json_t *v = parse_frame(b);
    assert_string_equal(get_str(v, "type"), "connected");
    assert_string_equal(get_str(v, "user_id"), "alice");
    assert_string_equal(get_str(v, "timestamp"), TS_STR);
    json_t *d = json_object_get(v, "data");
    assert_string_equal(get_str(d, "connection_id"), "c1");
    assert_string_equal(get_str(d, "epoch"), "0badf00d");
    assert_int_equal(get_int(d, "seq"), 0);
    json_decref(v);
    ac__buf_unref(b);
}

static void test_server_msg_ping_has_type_and_timestamp_only(void **st)
{
    fx_t *f = *st;
    ac__buf_t *b = server_msg(f, "ping", NULL, NULL, NULL);
    const char *p;
    size_t n;
    json_t *v = payload_json(b, &p, &n);
    const char want[] = "{\"type\":\"ping\",\"timestamp\":\"" TS_STR "\"}";
    assert_int_equal(n, sizeof(want) - 1);
    assert_memory_equal(p, want, n);
    json_decref(v);
    ac__buf_unref(b);
}

static void test_server_msg_closing_with_data(void **st)
{
    fx_t *f = *st;
    ac__buf_t *b = server_msg(f, "closing", NULL, NULL, "{\"reason\":\"shutdown\",\"code\":1001}");
    assert_keys(b, "type,timestamp,data");
    json_t *v = parse_frame(b);
    assert_string_equal(get_str(v, "type"), "closing");
    json_t *d = json_object_get(v, "data");
    assert_string_equal(get_str(d, "reason"), "shutdown");
    assert_int_equal(get_int(d, "code"), 1001);
    json_decref(v);
    ac__buf_unref(b);
}

static void test_server_msg_with_user_and_thread(void **st)
{
    fx_t *f = *st;
    ac__buf_t *b = server_msg(f, "resync", "bob", "thr \"1\"", "{}");
    assert_keys(b, "type,user_id,thread_id,timestamp,data");
    json_t *v = parse_frame(b);
    assert_string_equal(get_str(v, "user_id"), "bob");
    assert_string_equal(get_str(v, "thread_id"), "thr \"1\"");
    json_decref(v);
    ac__buf_unref(b);
}

static void test_server_msg_does_not_count_events(void **st)
{
    fx_t *f = *st;
    ac__buf_unref(server_msg(f, "ping", NULL, NULL, NULL));
    assert_int_equal(f->e.events_total, 0);
    assert_int_equal(f->e.direct_total, 0);
}

/* ---- timestamp ---- */

static void assert_timestamp_for(fx_t *f, int64_t ms)
{
    ac__buf_t *b = ac__emitter_server_msg(&f->e, "ping", str(NULL), str(NULL), NULL, ms);
    assert_non_null(b);
    json_t *v = parse_frame(b);
    const char *ts = get_str(v, "timestamp");

    regex_t re;
    assert_int_equal(regcomp(&re,
                             "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"
                             "\\.[0-9]{3}Z$",
                             REG_EXTENDED | REG_NOSUB),
                     0);
    int rc = regexec(&re, ts, 0, NULL, 0);
    regfree(&re);
    assert_int_equal(rc, 0);

    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    assert_non_null(gmtime_r(&secs, &tm));
    char want[96];
    snprintf(want, sizeof(want), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
    assert_string_equal(ts, want);
    json_decref(v);
    ac__buf_unref(b);
}

static void test_timestamp_format_and_value(void **st)
{
    assert_timestamp_for(*st, TS);
}

static void test_timestamp_keeps_leading_zero_millis(void **st)
{
    assert_timestamp_for(*st, INT64_C(1764093760007));
    assert_timestamp_for(*st, INT64_C(1764093760050));
    assert_timestamp_for(*st, INT64_C(1764093760000));
}

static void test_timestamp_of_event_is_given_ms(void **st)
{
    fx_t *f = *st;
    ac__user_t *u = user(f, "alice");
    json_t *data = data_of("{}");
    ac__event_t ev = {.type = AC__EV_CUSTOM, .type_name = str("x"), .data = data};
    ac__buf_t *b = ac__emitter_event(&f->e, u, &ev, INT64_C(951782400999));
    json_t *v = parse_frame(b);
    assert_string_equal(get_str(v, "timestamp"), "2000-02-29T00:00:00.999Z");
    json_decref(v);
    ac__buf_unref(b);
    json_decref(data);
}

/* ---- ac__frame_raw ---- */

static void check_raw(size_t len, const uint8_t *want_hdr, size_t hlen)
{
    uint8_t *payload = malloc(len > 0 ? len : 1);
    assert_non_null(payload);
    for (size_t i = 0; i < len; i++)
        payload[i] = (uint8_t)(i * 7 + 3);
    ac__buf_t *b = ac__frame_raw(AC_WS_TEXT, payload, len);
    assert_non_null(b);
    assert_int_equal(b->refs, 1);
    assert_int_equal(b->seq, 0);
    assert_int_equal(b->len, hlen + len);
    assert_memory_equal(b->data, want_hdr, hlen);
    if (len > 0)
        assert_memory_equal(b->data + hlen, payload, len);
    ac__ws_header_t h;
    assert_int_equal(ac__ws_header_decode((const uint8_t *)b->data, b->len, &h), (int)hlen);
    assert_int_equal(h.len, len);
    ac__buf_unref(b);
    free(payload);
}

static void test_frame_raw_empty_payload(void **st)
{
    static const uint8_t hdr[] = {0x81, 0x00};
    check_raw(0, hdr, sizeof(hdr));
}

static void test_frame_raw_125_bytes_uses_7bit_length(void **st)
{
    static const uint8_t hdr[] = {0x81, 125};
    check_raw(125, hdr, sizeof(hdr));
}

static void test_frame_raw_126_bytes_uses_16bit_length(void **st)
{
    static const uint8_t hdr[] = {0x81, 126, 0x00, 126};
    check_raw(126, hdr, sizeof(hdr));
}

static void test_frame_raw_70000_bytes_uses_64bit_length(void **st)
{
    /* 70000 = 0x11170 */
    static const uint8_t hdr[] = {0x81, 127, 0, 0, 0, 0, 0, 0x01, 0x11, 0x70};
    check_raw(70000, hdr, sizeof(hdr));
}

static void test_frame_raw_uses_given_opcode(void **st)
{
    ac__buf_t *b = ac__frame_raw(AC_WS_PING, "hi", 2);
    assert_non_null(b);
    static const uint8_t want[] = {0x89, 0x02, 'h', 'i'};
    assert_int_equal(b->len, sizeof(want));
    assert_memory_equal(b->data, want, sizeof(want));
    ac__buf_unref(b);

    b = ac__frame_raw(AC_WS_CLOSE, "\x03\xe8", 2);
    assert_non_null(b);
    static const uint8_t want_close[] = {0x88, 0x02, 0x03, 0xe8};
    assert_int_equal(b->len, sizeof(want_close));
    assert_memory_equal(b->data, want_close, sizeof(want_close));
    ac__buf_unref(b);
}

static void test_event_over_125_bytes_has_16bit_header(void **st)
{
    fx_t *f = *st;
    ac__user_t *u = user(f, "alice");
    char big[300];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    json_t *data = json_pack("{s:s}", "agent", big);
    ac__buf_t *b = emit(f, u, AC__EV_AGENT_STARTED, "agent_started", data);
    assert_int_equal((uint8_t)b->data[0], 0x81);
    assert_int_equal((uint8_t)b->data[1], 126);
    size_t plen = ((size_t)(uint8_t)b->data[2] << 8) | (uint8_t)b->data[3];
    assert_int_equal(plen, b->len - 4);
    json_t *v = parse_frame(b);
    assert_true(json_equal(json_object_get(v, "data"), data));
    json_decref(v);
    ac__buf_unref(b);
    json_decref(data);
}

/* ---- envelopes for a broker that numbers events itself (redis) ---- */

/* head + seq digits + tail is exactly the envelope ac__emitter_event() builds. */
static void test_envelope_split_joins_to_the_event(void **st)
{
    fx_t *f = *st;
    ac__user_t *u = user(f, "al\"ice");
    json_t *data = data_of("{\"thought\":\"a \\\"quoted\\\" word\",\"n\":[1,2]}");
    ac__event_t ev = {.type = AC__EV_AGENT_THINKING,
                      .type_name = str("agent_thinking"),
                      .run_id = str("run-1"),
                      .thread_id = str("t"),
                      .data = data};
    ac__sbuf_t out = {0};
    size_t split = 0;
    char joined[512];
    ac__buf_t *b;
    ac__ws_header_t h;
    int hl;

    assert_int_equal(ac__sbuf_append(&out, "xyz", 3), 0); /* appends: earlier bytes stay */
    assert_int_equal(
        ac__emitter_envelope(&f->e, &out, (ac__str_t){u->id, u->id_len}, &ev, TS, &split), 0);
    assert_true(split > 3 && split < out.len);
    assert_memory_equal(out.p, "xyz", 3);
    assert_memory_equal(out.p + split - 7, ",\"seq\":", 7);
    snprintf(joined, sizeof(joined), "%.*s%d%.*s", (int)(split - 3), out.p + 3, 1,
             (int)(out.len - split), out.p + split);
    b = ac__emitter_event(&f->e, u, &ev, TS); /* seq 1 */
    hl = ac__ws_header_decode((const uint8_t *)b->data, b->len, &h);
    assert_true(hl > 0);
    assert_int_equal(h.len, strlen(joined));
    assert_memory_equal(b->data + hl, joined, strlen(joined));
    /* Counting is the caller's: the split envelope counted nothing. */
    assert_int_equal(f->e.events_total, 1);
    ac__buf_unref(b);
    ac__sbuf_dispose(&out);
    json_decref(data);
}

/* Without split: a direct message's envelope, no seq field. */
static void test_envelope_without_split_has_no_seq(void **st)
{
    fx_t *f = *st;
    json_t *data = data_of("{}");
    ac__event_t ev = {.type = AC__EV_CUSTOM, .type_name = str("note.x"), .data = data};
    ac__sbuf_t out = {0};
    json_t *v;

    assert_int_equal(ac__emitter_envelope(&f->e, &out, str("bob"), &ev, TS, NULL), 0);
    v = json_loadb(out.p, out.len, 0, NULL);
    assert_non_null(v);
    assert_null(json_object_get(v, "seq"));
    assert_string_equal(json_string_value(json_object_get(v, "user_id")), "bob");
    assert_string_equal(json_string_value(json_object_get(v, "timestamp")), TS_STR);
    json_decref(v);
    ac__sbuf_dispose(&out);
    json_decref(data);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_event_envelope_fields_in_order),
        T(test_envelope_split_joins_to_the_event),
        T(test_envelope_without_split_has_no_seq),
        T(test_event_envelope_values),
        T(test_event_is_compact_single_line),
        T(test_event_omits_absent_run_and_thread),
        T(test_event_omits_run_keeps_thread),
        T(test_event_omits_thread_keeps_run),
        T(test_event_empty_run_id_is_present_not_absent),
        T(test_event_custom_type_keeps_published_name),
        T(test_event_type_name_uses_len_not_nul),
        T(test_seq_increments_per_event_and_buf_seq_matches),
        T(test_seq_is_independent_per_user),
        T(test_seq_continues_from_user_record),
        T(test_event_frame_has_one_reference),
        T(test_event_frames_do_not_share_scratch),
        T(test_counters_by_type_for_each_type),
        T(test_counters_agent_error),
        T(test_counters_custom_names_share_custom_slot),
        T(test_direct_has_no_seq_field),
        T(test_direct_does_not_consume_seq),
        T(test_direct_counts_direct_total_only),
        T(test_escaping_roundtrips_run_and_thread_ids),
        T(test_escaping_roundtrips_user_id),
        T(test_escaping_roundtrips_data_strings),
        T(test_escaping_control_chars_use_u_escapes),
        T(test_server_msg_connected_shape),
        T(test_server_msg_ping_has_type_and_timestamp_only),
        T(test_server_msg_closing_with_data),
        T(test_server_msg_with_user_and_thread),
        T(test_server_msg_does_not_count_events),
        T(test_timestamp_format_and_value),
        T(test_timestamp_keeps_leading_zero_millis),
        T(test_timestamp_of_event_is_given_ms),
        T(test_frame_raw_empty_payload),
        T(test_frame_raw_125_bytes_uses_7bit_length),
        T(test_frame_raw_126_bytes_uses_16bit_length),
        T(test_frame_raw_70000_bytes_uses_64bit_length),
        T(test_frame_raw_uses_given_opcode),
        T(test_event_over_125_bytes_has_16bit_header),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
