/* libFuzzer target: publish validation and what a publish changes (src/api/publish.c):
 * users and seq streams, history caps, idempotency keys, the run lifecycle and its timeouts.
 * Each input gets a fresh server (never started, no sockets), so it reproduces alone; the
 * events of one input share it, so lifecycles play out. */

/* Input: byte 0 picks the mode (bit 0) and the server's options (bits 1-3); the rest:
 *   mode 0 (ac__emit_now(), where ac_emit() ends): fields separated by NUL bytes, in groups
 *     of seven: user_id, type, data_json, run_id, thread_id, connection_id, idempotency_key.
 *     A field of the one byte FF is NULL. A user_id of the one byte FE runs the sweep's run
 *     expiry instead of a publish.
 *   mode 1 (the body of POST /v1/publish and of a publisher socket's text frame): bodies
 *     separated by NUL bytes, each an event object or an array of them. publish_body() is
 *     static, so this file includes publish.c itself: the archive's copy is then never
 *     linked, and the code fuzzed is the same source with the same flags. */
#include "api/publish.c"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "agentcast.h"

#define FUZZ_NAME "fuzz_publish"
#include "fuzz_common.h"

/* What ac__emit_start() answered (synchronously: the memory broker). */
typedef struct emit_out_s {
    int called;
    int status;
    ac_publish_result_t res;
    const char *reason;
} emit_out_t;

static void on_emitted(ac_server_t *server, int status, const ac_publish_result_t *result,
                       const char *reason, void *arg)
{
    emit_out_t *o = arg;
    o->called++;
    o->status = status;
    if (result != NULL)
        o->res = *result;
    o->reason = reason;
}

#define MAX_USERS 64
#define SEQ_UNKNOWN UINT64_MAX

static uv_loop_t loop;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_quiet_logs(AC_LOG_DEBUG);
    check(uv_loop_init(&loop) == 0, "uv_loop_init");
    return 0;
}

/* Per-user seq, as the target saw it, to check each publish is the previous seq + 1. */
typedef struct seen_s {
    char *user;
    uint64_t seq;
} seen_t;

static uint64_t *seen_seq(seen_t *seen, size_t *n, const char *user)
{
    for (size_t i = 0; i < *n; i++) {
        if (strcmp(seen[i].user, user) == 0)
            return &seen[i].seq;
    }
    if (*n == MAX_USERS)
        return NULL;
    seen[*n].user = strdup(user);
    check(seen[*n].user != NULL, "strdup");
    seen[*n].seq = 0;
    return &seen[(*n)++].seq;
}

static const char *field(const char *f)
{
    return (unsigned char)f[0] == 0xFF && f[1] == '\0' ? NULL : f;
}

static void mode_emit(ac_server_t *s, char *text, size_t len)
{
    seen_t seen[MAX_USERS];
    size_t nseen = 0;
    const char *f[7];
    size_t nf = 0;
    char *p = text;

    /* text[len] is a NUL the caller added, so the last field ends too. */
    while (p <= text + len) {
        f[nf++] = p;
        p += strlen(p) + 1;
        if (nf < 7 && p <= text + len)
            continue;
        for (size_t i = nf; i < 7; i++)
            f[i] = "\xff";
        nf = 0;
        if ((unsigned char)f[0][0] == 0xFE && f[0][1] == '\0') {
            ac__api_expire_runs(s);
            /* A timed-out run's agent_error took a seq of its user. */
            for (size_t i = 0; i < nseen; i++)
                seen[i].seq = SEQ_UNKNOWN;
            continue;
        }
        ac_event_t ev = {field(f[0]), field(f[1]), field(f[2]), field(f[3]),
                         field(f[4]), field(f[5]), field(f[6])};
        emit_out_t out = {.called = 0};
        ac__emit_start(s, &ev, on_emitted, &out);
        check(out.called == 1, "emit: the memory broker answers before returning, once");
        ac_publish_result_t res = out.res;
        const char *reason = out.reason;
        int r = out.status;
        if (r == 0) {
            check(ev.user_id != NULL && ev.type != NULL, "published without user_id or type");
            check(res.seq >= 1, "published without a seq");
            uint64_t *last = seen_seq(seen, &nseen, ev.user_id);
            if (last == NULL || *last == SEQ_UNKNOWN) {
                if (last != NULL && !res.duplicate)
                    *last = res.seq;
            } else if (res.duplicate) {
                check(res.seq <= *last, "duplicate answered with a seq not yet given");
            } else {
                check(res.seq == *last + 1, "seq is not the previous + 1");
                *last = res.seq;
            }
            continue;
        }
        check(r == AC_EINVAL || r == AC_ENOENT || r == AC_ESTATE || r == AC_ENOMEM ||
                  r == AC_EUNAVAIL,
              "emit: unexpected error code");
        if (r == AC_EINVAL || r == AC_ENOENT || r == AC_ESTATE)
            check(reason != NULL && reason[0] != '\0', "refusal without a reason");
    }
    for (size_t i = 0; i < nseen; i++)
        free(seen[i].user);
}

static void mode_body(ac_server_t *s, const char *text, size_t len)
{
    const char *p = text;

    while (p <= text + len) {
        const char *end = memchr(p, '\0', (size_t)(text + len - p));
        size_t n = end ? (size_t)(end - p) : (size_t)(text + len - p);
        /* The body in a block of its exact size, as http.c hands it over. */
        char *body = malloc(n ? n : 1);
        check(body != NULL, "malloc");
        memcpy(body, p, n);
        ac__sbuf_t out = {0};
        unsigned status = publish_body(s, n ? body : NULL, n, (unsigned char)n & 1, &out, NULL);
        free(body);
        check(status == 200 || status == 400 || status == 404 || status == 409 || status == 500 ||
                  status == 503,
              "body: unexpected status");
        /* The answer is always one valid JSON value: parse it back. */
        json_t *reply = json_loadb(out.p ? out.p : "", out.len, JSON_ALLOW_NUL, NULL);
        check(reply != NULL, "body: the reply is not JSON");
        if (status == 200)
            check(json_is_object(reply) || json_is_array(reply), "body: 200 reply shape");
        else
            check(json_is_string(json_object_get(reply, "error")), "body: error without reason");
        json_decref(reply);
        ac__sbuf_dispose(&out);
        p += n + 1;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    ac_server_opts_t opts;
    ac_server_opts_init(&opts);
    opts.auth = AC_AUTH_NONE;
    opts.listen = "127.0.0.1:0";
    /* Small caps keep memory low and make the eviction paths reachable. */
    opts.history_size = (data[0] & 2) ? 1 : 4;
    opts.history_max_bytes = (data[0] & 4) ? 600 : 1024 * 1024;
    if (data[0] & 8) {
        /* The loop clock never moves here: zero-length limits make every open run time
         * out and every closed one expire at the next sweep, and keys be forgotten. */
        opts.run_timeout = 1e-9;
        opts.history_ttl = 0;
        opts.idempotency_window = 1e-9;
    }
    int err = 0;
    ac_server_t *s = ac_server_new(&loop, &opts, &err);
    check(s != NULL, "ac_server_new");

    char *text = malloc(size);
    check(text != NULL, "malloc");
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0';
    if (data[0] & 1)
        mode_body(s, text, size - 1);
    else
        mode_emit(s, text, size - 1);
    ac__api_expire_runs(s);
    free(text);

    ac_stats_t st;
    ac_server_stats(s, &st);
    check(st.history_bytes <= opts.history_max_bytes || st.history_events <= 1,
          "history over its byte cap");
    check(st.total_connections == 0 && st.deliveries_total == 0, "deliveries with no connection");
    ac_server_free(s);
    return 0;
}
