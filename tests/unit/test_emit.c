/* Unit tests for ac_emit() through the public C API, with one loop and with several: an
 * event for a user of another loop is published by that loop and its callback comes back to
 * the embedder's loop with the same outcome one loop gives (seq, duplicate, run and
 * connection refusals, reasons), in order for each user. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <uv.h>

#include "agentcast.h"
#include "net/group.h"
#include "net/server.h"

#define USERS 16 /* enough that, at 4 loops, most are owned by a loop other than the first */
#define STEPS 6

/* What each step of a user's script expects. */
static const struct {
    const char *what;
    int status;
    uint64_t seq;
    int duplicate;
    const char *reason; /* a substring of the callback's reason, or NULL */
} want[STEPS] = {
    {"a plain event", 0, 1, 0, NULL},
    {"an event with a new idempotency key", 0, 2, 0, NULL},
    {"the same key again", 0, 2, 1, NULL},
    {"agent_thinking of a run never started", AC_ESTATE, 0, 0, "run_id: run not open"},
    {"a direct message to a connection that is not open", AC_ENOENT, 0, 0,
     "connection_id: not open for this user"},
    {"a plain event after the refusals", 0, 3, 0, NULL},
};

typedef struct {
    int done;
    int status;
    uint64_t seq;
    int duplicate;
    char reason[128];
    int order; /* when it came, among this user's callbacks */
} outcome_t;

static outcome_t got[USERS][STEPS];
static int per_user[USERS];
static int answered;
static int shutting_down;

static void on_shutdown(ac_server_t *server, void *arg)
{
    (void)server;
    (void)arg;
}

static void on_outcome(ac_server_t *server, int status, const ac_publish_result_t *res,
                       const char *reason, void *arg)
{
    int u = (int)((intptr_t)arg / STEPS), k = (int)((intptr_t)arg % STEPS);
    outcome_t *o = &got[u][k];

    o->done++;
    o->status = status;
    o->seq = res != NULL ? res->seq : 0;
    o->duplicate = res != NULL ? res->duplicate : 0;
    snprintf(o->reason, sizeof(o->reason), "%s", reason ? reason : "");
    o->order = per_user[u]++;
    if (++answered == USERS * STEPS && !shutting_down) {
        shutting_down = 1;
        ac_server_shutdown(server, on_shutdown, NULL);
    }
}

static void emit_all(ac_server_t *s)
{
    for (int u = 0; u < USERS; u++) {
        char user[32], run[32];
        snprintf(user, sizeof(user), "emit-user-%d", u);
        snprintf(run, sizeof(run), "never-%d", u);
        ac_event_t evs[STEPS] = {
            {.user_id = user, .type = "chunk", .data_json = "{\"n\":0}"},
            {.user_id = user, .type = "chunk", .data_json = "{\"n\":1}", .idempotency_key = "k"},
            {.user_id = user, .type = "chunk", .data_json = "{\"n\":2}", .idempotency_key = "k"},
            {.user_id = user,
             .type = "agent_thinking",
             .data_json = "{\"thought\":\"t\"}",
             .run_id = run},
            {.user_id = user, .type = "note", .connection_id = "c-not-open"},
            {.user_id = user, .type = "chunk", .data_json = "{\"n\":3}"},
        };
        for (int k = 0; k < STEPS; k++)
            assert_int_equal(ac_emit(s, &evs[k], on_outcome, (void *)(intptr_t)(u * STEPS + k)), 0);
    }
}

static void run_with_loops(unsigned loops)
{
    ac_server_opts_t opts;
    uv_loop_t loop;
    ac_server_t *s;
    ac_stats_t st;
    int err = 0, remote = 0;

    memset(got, 0, sizeof(got));
    memset(per_user, 0, sizeof(per_user));
    answered = 0;
    shutting_down = 0;
    ac_server_opts_init(&opts);
    opts.listen = "127.0.0.1:0";
    opts.auth = AC_AUTH_NONE;
    opts.threads = loops;
    assert_int_equal(uv_loop_init(&loop), 0);
    s = ac_server_new(&loop, &opts, &err);
    assert_non_null(s);
    assert_int_equal(ac_server_start(s), 0);
    emit_all(s);
    uv_run(&loop, UV_RUN_DEFAULT);
    ac_server_stats(s, &st);
    /* This loop's own counters: every event of another loop's user went there (refused ones
     * too, to keep each user's callbacks in order), and no emit parked the other loops. */
    for (int u = 0; u < USERS; u++) {
        char user[32];
        int n = snprintf(user, sizeof(user), "emit-user-%d", u);
        remote += ac__group_owner(s, user, (size_t)n) != s;
    }
    assert_true(loops == 1 || remote > 0);
    assert_int_equal(s->bodies_forwarded, (uint64_t)remote * STEPS);
    assert_int_equal(s->bodies_parked, 0);
    ac_server_free(s);
    assert_int_equal(uv_loop_close(&loop), 0);

    assert_int_equal(answered, USERS * STEPS);
    for (int u = 0; u < USERS; u++) {
        for (int k = 0; k < STEPS; k++) {
            const outcome_t *o = &got[u][k];
            if (o->done != 1 || o->status != want[k].status || o->seq != want[k].seq ||
                o->duplicate != want[k].duplicate || o->order != k ||
                (want[k].reason != NULL && strstr(o->reason, want[k].reason) == NULL)) {
                for (int j = 0; j < STEPS; j++)
                    print_message("user %d step %d: order %d status %d seq %llu dup %d \"%s\"\n", u,
                                  j, got[u][j].order, got[u][j].status,
                                  (unsigned long long)got[u][j].seq, got[u][j].duplicate,
                                  got[u][j].reason);
                fail_msg("%u loops, user %d, %s: done %d status %d seq %llu duplicate %d order %d "
                         "reason \"%s\"",
                         loops, u, want[k].what, o->done, o->status, (unsigned long long)o->seq,
                         o->duplicate, o->order, o->reason);
            }
        }
    }
    /* Each user's seqs 1..3 were taken; nothing refused took one. */
    assert_int_equal(st.events_total, (uint64_t)USERS * 3);
}

static void test_emit_on_one_loop(void **state)
{
    (void)state;
    run_with_loops(1);
}

static void test_emit_for_users_of_other_loops_is_answered_as_on_one(void **state)
{
    (void)state;
    run_with_loops(4);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_emit_on_one_loop),
        cmocka_unit_test(test_emit_for_users_of_other_loops_is_answered_as_on_one),
    };
    ac_log_set_level(AC_LOG_ERROR);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
