/* Unit tests for src/core/bridge.c: the run lifecycle (README "Runs (the agent bridge)").
 * Batch checks (every refusal with its reason and index, all against the batch's own
 * earlier ops, changing nothing), applying ops, the timeout order, forced closes, expiry
 * of closed runs and growth of the table. Leaks are caught under ASan (make asan). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "agentcast.h"
#include "core/bridge.h"

static const char *const R_ALREADY_OPEN = "run_id: run already open";
static const char *const R_CLOSED = "run_id: run closed";
static const char *const R_NOT_OPEN = "run_id: run not open";
static const char *const R_OTHER_USER = "run_id: belongs to another user";
static const char *const R_NOT_EXECUTING = "data.tool_call_id: not executing in this run";
static const char *const R_ALREADY_EXECUTING = "data.tool_call_id: already executing in this run";

static ac__str_t str(const char *s)
{
    return (ac__str_t){s, s != NULL ? strlen(s) : 0};
}

/* An op of `run` by `user`; `tool` only for tool events (NULL otherwise). No thread. */
static ac__run_op_t op(ac__ev_type_t type, const char *run, const char *user, const char *tool)
{
    ac__run_op_t o = {
        .type = type,
        .run_id = str(run),
        .user_id = str(user),
        .thread_id = str(NULL),
        .tool_call_id = str(tool),
    };
    return o;
}

static ac__run_op_t started(const char *run, const char *user)
{
    return op(AC__EV_AGENT_STARTED, run, user, NULL);
}

static ac__run_op_t thinking(const char *run, const char *user)
{
    return op(AC__EV_AGENT_THINKING, run, user, NULL);
}

static ac__run_op_t tool_exec(const char *run, const char *user, const char *tool)
{
    return op(AC__EV_TOOL_EXECUTING, run, user, tool);
}

static ac__run_op_t tool_done(const char *run, const char *user, const char *tool)
{
    return op(AC__EV_TOOL_COMPLETED, run, user, tool);
}

static ac__run_op_t completed(const char *run, const char *user)
{
    return op(AC__EV_AGENT_COMPLETED, run, user, NULL);
}

static ac__run_op_t errored(const char *run, const char *user)
{
    return op(AC__EV_AGENT_ERROR, run, user, NULL);
}

static ac__run_op_t custom(const char *run, const char *user)
{
    return op(AC__EV_CUSTOM, run, user, NULL);
}

static void bridge_init(ac__bridge_t *b)
{
    assert_int_equal(ac__bridge_init(b), 0);
}

static ac__run_t *find(const ac__bridge_t *b, const char *id)
{
    return ac__bridge_find(b, id, strlen(id));
}

static void check_ok(const ac__bridge_t *b, const ac__run_op_t *ops, size_t n)
{
    size_t bad = 12345;
    const char *reason = NULL;
    assert_int_equal(ac__bridge_check(b, ops, n, &bad, &reason), 0);
}

static void check_refused(const ac__bridge_t *b, const ac__run_op_t *ops, size_t n, size_t want_bad,
                          const char *want_reason)
{
    size_t bad = 12345;
    const char *reason = NULL;
    assert_int_equal(ac__bridge_check(b, ops, n, &bad, &reason), -1);
    assert_int_equal(bad, want_bad);
    assert_non_null(reason);
    assert_string_equal(reason, want_reason);
}

/* Applies one op published with `seq` at monotonic `now` (wall clock now + 1e12). */
static void apply(ac__bridge_t *b, ac__run_op_t o, uint64_t seq, uint64_t now)
{
    assert_int_equal(ac__bridge_apply(b, &o, seq, now, (int64_t)now + 1000000000000), 0);
}

/* 1 when `tool` is in r's executing list. */
static int has_tool(const ac__run_t *r, const char *tool)
{
    for (uint32_t i = 0; i < r->ntools; i++) {
        if (strcmp(r->tools[i], tool) == 0)
            return 1;
    }
    return 0;
}

/* ---- check: a valid run ---- */

static void test_check_accepts_full_valid_run_in_one_batch(void **st)
{
    ac__bridge_t b;
    bridge_init(&b);
    ac__run_op_t ops[] = {
        started("r1", "alice"),         thinking("r1", "alice"),  tool_exec("r1", "alice", "c1"),
        tool_done("r1", "alice", "c1"), completed("r1", "alice"),
    };
    check_ok(&b, ops, 5);
    ac__bridge_dispose(&b);
}

static void test_check_alone_changes_nothing(void **st)
{
    ac__bridge_t b;
    bridge_init(&b);
    ac__run_op_t ops[] = {started("r1", "alice"), thinking("r1", "alice"),
                          tool_exec("r1", "alice", "c1")};
    check_ok(&b, ops, 3);
    assert_null(find(&b, "r1"));
    assert_int_equal(b.nruns, 0);
    assert_int_equal(b.nopen, 0);
    assert_null(b.open_head);
    assert_null(b.closed_head);
    check_ok(&b, ops, 3); /* still unknown: starting it again is fine */
    ac__bridge_dispose(&b);
}

static void test_check_failed_batch_leaves_applied_run_untouched(void **st)
{
    ac__bridge_t b;
    bridge_init(&b);
    apply(&b, started("r1", "alice"), 1, 10);
    apply(&b, tool_exec("r1", "alice", "c1"), 2, 20);
    ac__run_op_t bad[] = {tool_done("r1", "alice", "c1"), completed("r1", "alice"),
                          thinking("r1", "alice")};
    check_refused(&b, bad, 3, 2, R_CLOSED);
    ac__run_t *r = find(&b, "r1");
    assert_int_equal(r->state, AC__RUN_OPEN);
    assert_int_equal(r->ntools, 1);
    assert_string_equal(r->tools[0], "c1");
    assert_int_equal(r->events, 2);
    assert_int_equal(r->last_seq, 2);
    ac__run_op_t again[] = {tool_done("r1", "alice", "c1")};
    check_ok(&b, again, 1);
    ac__bridge_dispose(&b);
}

static void test_check_empty_batch_is_ok(void **st)
{
    ac__bridge_t b;
    bridge_init(&b);
    check_ok(&b, NULL, 0);
    ac__bridge_dispose(&b);
}

/* ---- check: refusals ---- */

static void test_check_refuses_start_of_open_run(void **st)
{
    ac__bridge_t b;
    bridge_init(&b);
    apply(&b, started("r1", "alice"), 1, 10);
    ac__run_op_t ops[] = {started("r1", "alice")};
    check_refused(&b, ops, 1, 0, R_ALREADY_OPEN);
    ac__bridge_dispose(&b);
}

static void test_check_refuses_second_start_in_same_batch(void **st)
{
    ac__bridge_t b;
    bridge_init(&b);
    ac__run_op_t ops[] = {started("r1", "alice"), thinking("r1", "alice"), started("r1", "alice")};
    check_refused(&b, ops, 3, 2, R_ALREADY_OPEN);
    ac__bridge_dispose(&b);
}

static void test_check_refuses_restart_after_completed(void **st)
{
    ac__bridge_t b;
    bridge_init(&b);
    apply(&b, started("r1", "alice"), 1, 10);
    apply(&b, completed("r1", "alice"), 2, 20);
    ac__run_op_t ops[] = {started("r1", "alice")};
    check_refused(&b, ops, 1, 0, R_CLOSED);
    ac__bridge_dispose(&b);
}

static void test_check_refuses_restart_after_error(void **st)
{
    ac__bridge_t b;
    bridge_init(&b);
    apply(&b, started("r1", "alice"), 1, 10);
    apply(&b, errored("r1", "alice"), 2, 20);
    ac__run_op_t ops[] = {started("r1", "alice")};
    check_refused(&b, ops, 1, 0, R_CLOSED);
    ac__bridge_dispose(&b);
}

static void test_check_refuses_every_type_on_closed_run(void **st)
{
    ac__bridge_t b;
    bridge_init(&b);
    apply(&b, started("r1", "alice"), 1, 10);
    apply(&b, tool_exec("r1", "alice", "c1"), 2, 20);
    apply(&b, completed("r1", "alice"), 3, 30);
    const ac__run_op_t each[] = {
        thinking("r1", "alice"),  tool_exec("r1", "alice", "c2"), tool_done("r1", "alice", "c1"),
        completed("r1", "alice"), errored("r1", "alice"),         custom("r1", "alice"),
    };
    for (size_t i = 0; i < sizeof(each) / sizeof(each[0]); i++)
        check_refused(&b, &each[i], 1, 0, R_CLOSED);
    ac__bridge_dispose(&b);
}

static void test_check_refuses_every_non_start_type_on_unknown_run(void **st)
{
    ac__bridge_t b;
    bridge_init(&b);
    const ac__run_op_t each[] = {
        thinking("r9", "alice"),  tool_exec("r9", "alice", "c1"), tool_done("r9", "alice", "c1"),
        completed("r9", "alice"), errored("r9", "alice"),         custom("r9", "alice"),
    };
    for (size_t i = 0; i < sizeof(each) / sizeof(each[0]); i++) {
        /* A valid start of another run first, so the index must point past it. */
        ac__run_op_t ops[] = {started("r1", "alice"), each[i]};
        check_refused(&b, ops, 2, 1, R_NOT_OPEN);
    }
    ac__bridge_dispose(&b);
}

static void test_check_refuses_custom_type_on_unknown_run(void **st)
{
    ac__bridge_t b;
    bridge_init(&b);
    ac__run_op_t ops[] = {custom("r1", "alice")};
    check_refused(&b, ops, 1, 0, R_NOT_OPEN);
    ac__bridge_dispose(&b);
}

static void test_check_refuses_event_of_another_user(void **st)
{
    ac__bridge_t b;
    bridge_init(&b);
    apply(&b, started("r1", "alice"), 1, 10);
    ac__run_op_t ops[] = {thinking("r1", "bob")};
    check_refused(&b, ops, 1, 0, R_OTHER_USER);
    ac__bridge_dispose(&b);
}

static void test_check_refuses_user_id_sharing_prefix_of_owner(void **st)
{
    ac__bridge_t b;
    bridge_init(&b);
    apply(&b, started("r1", "alice"), 1, 10);
    ac__run_op_t shorter[] = {thinking("r1", "alic")};
    ac__run_op_t longer[] = {thinking("r1", "alice2")};
    check_refused(&b, shorter, 1, 0, R_OTHER_USER);
    check_refused(&b, longer, 1, 0, R_OTHER_USER);
    ac__bridge_dispose(&b);
}

static void test_check_refuses_start_of_another_users_run(void **st)
{
    ac__bridge_t b;
    bridge_init(&b);
    apply(&b, started("r1", "alice"), 1, 10);
    apply(&b, started("r2", "alice"), 2, 10);
    apply(&b, completed("r2", "alice"), 3, 20);
    ac__run_op_t open_run[] = {started("r1", "bob")};
    ac__run_op_t closed_run[] = {started("r2", "bob")};
    check_refused(&b, open_run, 1, 0, R_OTHER_USER);
    check_refused(&b, closed_run, 1, 0, R_OTHER_USER);
    ac__bridge_dispose(&b);
}

static void test_check_refuses_another_user_after_start_in_same_batch(void **st)
{
    ac__bridge_t b;
    bridge_init(&b);
    ac__run_op_t ops[] = {started("r1", "alice"), thinking("r1", "alice"), thinking("r1", "bob")};
    check_refused(&b, ops, 3, 2, R_OTHER_USER);
    ac__bridge_dispose(&b);
}

static void test_check_refuses_tool_completed_not_executing(void **st)
{
    ac__bridge_t b;
    bridge_init(&b);
    apply(&b, started("r1", "alice"), 1, 10);
    apply(&b, tool_exec("r1", "alice", "c1"), 2, 20);
    ac__run_op_t ops[] = {tool_done("r1", "alice", "c2")};
    check_refused(&b, ops, 1, 0, R_NOT_EXECUTING);
    ac__bridge_dispose(&b);
}

static void test_check_refuses_tool_id_differing_only_in_length(void **st)
{
    ac__bridge_t b;
    bridge_init(&b);
    apply(&b, started("r1", "alice"), 1, 10);
    apply(&b, tool_exec("r1", "alice", "c1"), 2, 20);
    ac__run_op_t prefix[] = {tool_done("r1", "alice", "c")};
    ac__run_op_t longer[] = {tool_done("r1", "alice", "c10")};
    check_refused(&b, prefix, 1, 0, R_NOT_EXECUTING);
    check_refused(&b, longer, 1, 0, R_NOT_EXECUTING);
    ac__bridge_dispose(&b);
}

static void test_check_refuses_tool_already_executing(void **st)
{
    ac__bridge_t b;
    bridge_init(&b);
    apply(&b, started("r1", "alice"), 1, 10);
    apply(&b, tool_exec("r1", "alice", "c1"), 2, 20);
    ac__run_op_t ops[] = {tool_exec("r1", "alice", "c1")};
    check_refused(&b, ops, 1, 0, R_ALREADY_EXECUTING);
    ac__bridge_dispose(&b);
}

static void test_check_refuses_tool_executing_twice_in_same_batch(void **st)
{
    ac__bridge_t b;
    bridge_init(&b);
    ac__run_op_t ops[] = {started("r1", "alice"), tool_exec("r1", "alice", "c1"),
                          tool_exec("r1", "alice", "c2"), tool_exec("r1", "alice", "c1")};
    check_refused(&b, ops, 4, 3, R_ALREADY_EXECUTING);
    ac__bridge_dispose(&b);
}

static void test_check_refuses_tool_completed_twice_in_same_batch(void **st)
{
    ac__bridge_t b;
    bridge_init(&b);
    ac__run_op_t ops[] = {started("r1", "alice"), tool_exec("r1", "alice", "c1"),
                          tool_done("r1", "alice", "c1"), tool_done("r1", "alice", "c1")};
    check_refused(&b, ops, 4, 3, R_NOT_EXECUTING);
    ac__bridge_dispose(&b);
}

static void test_check_refuses_tool_completed_again_after_apply(void **st)
{
    ac__bridge_t b;
    bridge_init(&b);
    apply(&b, started("r1", "alice"), 1, 10);
    apply(&b, tool_exec("r1", "alice", "c1"), 2, 20);
    apply(&b, tool_done("r1", "alice", "c1"), 3, 30);
    ac__run_op_t ops[] = {tool_done("r1", "alice", "c1")};
    check_refused(&b, ops, 1, 0, R_NOT_EXECUTING);
    ac__bridge_dispose(&b);
}

static void test_check_reports_first_failing_index_only(void **st)
{
    ac__bridge_t b;
    bridge_init(&b);
    ac__run_op_t ops[] = {started("r1", "alice"), tool_done("r1", "alice", "c1"),
                          thinking("r2", "alice")};
    check_refused(&b, ops, 3, 1, R_NOT_EXECUTING);
    ac__bridge_dispose(&b);
}

/* ---- check: what is allowed ---- */

static void test_check_skips_ops_without_run_id(void **st)
{
    ac__bridge_t b;
    bridge_init(&b);
    ac__run_op_t ops[] = {thinking(NULL, "alice"), tool_done(NULL, "alice", "c1"),
                          completed(NULL, "alice")};
    check_ok(&b, ops, 3);
    ac__bridge_dispose(&b);
}

static void test_check_counts_skipped_ops_in_failing_index(void **st)
{
    ac__bridge_t b;
    bridge_init(&b);
    ac__run_op_t ops[] = {thinking(NULL, "alice"), custom(NULL, "bob"), thinking("r1", "alice")};
    check_refused(&b, ops, 3, 2, R_NOT_OPEN);
    ac__bridge_dispose(&b);
}

static void test_check_sees_start_earlier_in_batch(void **st)
{
    ac__bridge_t b;
    bridge_init(&b);
    ac__run_op_t ops[] = {started("r1", "alice"), thinking("r1", "alice")};
    check_ok(&b, ops, 2);
    ac__bridge_dispose(&b);
}

static void test_check_sees_close_earlier_in_batch(void **st)
{
    ac__bridge_t b;
    bridge_init(&b);
    apply(&b, started("r1", "alice"), 1, 10);
    ac__run_op_t ops[] = {completed("r1", "alice"), thinking("r1", "alice")};
    check_refused(&b, ops, 2, 1, R_CLOSED);
    ac__bridge_dispose(&b);
}

static void test_check_sees_tool_completion_earlier_in_batch(void **st)
{
    ac__bridge_t b;
    bridge_init(&b);
    apply(&b, started("r1", "alice"), 1, 10);
    apply(&b, tool_exec("r1", "alice", "c1"), 2, 20);
    ac__run_op_t ops[] = {tool_done("r1", "alice", "c1"), tool_exec("r1", "alice", "c1")};
    check_ok(&b, ops, 2);
    ac__bridge_dispose(&b);
}

static void test_check_allows_same_tool_id_in_different_runs(void **st)
{
    ac__bridge_t b;
    bridge_init(&b);
    ac__run_op_t ops[] = {started("r1", "alice"),         started("r2", "alice"),
                          tool_exec("r1", "alice", "c1"), tool_exec("r2", "alice", "c1"),
                          tool_done("r2", "alice", "c1"), tool_done("r1", "alice", "c1")};
    check_ok(&b, ops, 6);
    ac__bridge_dispose(&b);
}

static void test_check_allows_many_tools_in_one_batch(void **st)
{
    enum { N = 40 }; /* past the overlay's first growth */
    ac__bridge_t b;
    bridge_init(&b);
    static char ids[N][16];
    ac__run_op_t ops[1 + 2 * N];
    ops[0] = started("r1", "alice");
    for (int i = 0; i < N; i++) {
        snprintf(ids[i], sizeof(ids[i]), "c%d", i);
        ops[1 + i] = tool_exec("r1", "alice", ids[i]);
    }
    for (int i = 0; i < N; i++)
        ops[1 + N + i] = tool_done("r1", "alice", ids[N - 1 - i]);
    check_ok(&b, ops, 1 + 2 * N);
    ops[1 + N] = tool_exec("r1", "alice", ids[5]); /* all N still executing there */
    check_refused(&b, ops, 1 + 2 * N, 1 + N, R_ALREADY_EXECUTING);
    ac__bridge_dispose(&b);
}

/* ---- apply and find ---- */

static void test_apply_started_opens_run(void **st)
{
    ac__bridge_t b;
    bridge_init(&b);
    apply(&b, started("r1", "alice"), 7, 100);
    ac__run_t *r = find(&b, "r1");
    assert_non_null(r);
    assert_int_equal(r->state, AC__RUN_OPEN);
    assert_int_equal(r->closed_by, AC__CLOSED_BY_NONE);
    assert_int_equal(r->id_len, 2);
    assert_memory_equal(r->id, "r1", 2);
    assert_string_equal(r->user_id, "alice");
    assert_null(r->thread_id);
    assert_int_equal(r->last_seq, 7);
    assert_int_equal(r->events, 1);
    assert_int_equal(r->ntools, 0);
    assert_int_equal(r->touched, 100);
    assert_int_equal(r->started_ms, 1000000000100);
    assert_int_equal(r->updated_ms, 1000000000100);
    assert_int_equal(b.nruns, 1);
    assert_int_equal(b.nopen, 1);
    ac__bridge_dispose(&b);
}

static void test_apply_started_copies_thread_id(void **st)
{
    ac__bridge_t b;
    bridge_init(&b);
    char thread[] = "t3";
    ac__run_op_t o = started("r1", "alice");
    o.thread_id = (ac__str_t){thread, 2};
    apply(&b, o, 1, 10);
    thread[0] = 'x';
    ac__run_t *r = find(&b, "r1");
    assert_non_null(r->thread_id);
    assert_string_equal(r->thread_id, "t3");
    ac__bridge_dispose(&b);
}

static void test_apply_copies_ids_not_borrowing_them(void **st)
{
    ac__bridge_t b;
    bridge_init(&b);
    char run[] = "r1", user[] = "alice", tool[] = "c1";
    apply(&b, started(run, user), 1, 10);
    apply(&b, tool_exec(run, user, tool), 2, 20);
    run[0] = user[0] = tool[0] = 'x';
    ac__run_t *r = find(&b, "r1");
    assert_non_null(r);
    assert_string_equal(r->user_id, "alice");
    assert_string_equal(r->tools[0], "c1");
    assert_null(find(&b, "x1"));
    ac__bridge_dispose(&b);
}

static void test_apply_updates_seq_events_and_times(void **st)
{
    ac__bridge_t b;
    bridge_init(&b);
    apply(&b, started("r1", "alice"), 3, 100);
    apply(&b, thinking("r1", "alice"), 5, 200);
    apply(&b, custom("r1", "alice"), 9, 350);
    ac__run_t *r = find(&b, "r1");
    assert_int_equal(r->last_seq, 9);
    assert_int_equal(r->events, 3);
    assert_int_equal(r->touched, 350);
    assert_int_equal(r->started_ms, 1000000000100);
    assert_int_equal(r->updated_ms, 1000000000350);
    assert_int_equal(r->state, AC__RUN_OPEN);
    ac__bridge_dispose(&b);
}

static void test_apply_tracks_executing_tools(void **st)
{
    ac__bridge_t b;
    bridge_init(&b);
    apply(&b, started("r1", "alice"), 1, 10);
    apply(&b, tool_exec("r1", "alice", "c1"), 2, 20);
    apply(&b, tool_exec("r1", "alice", "c2"), 3, 30);
    apply(&b, tool_exec("r1", "alice", "c3"), 4, 40);
    ac__run_t *r = find(&b, "r1");
    assert_int_equal(r->ntools, 3);
    assert_true(has_tool(r, "c1"));
    assert_true(has_tool(r, "c2"));
    assert_true(has_tool(r, "c3"));
    apply(&b, tool_done("r1", "alice", "c2"), 5, 50);
    assert_int_equal(r->ntools, 2);
    assert_true(has_tool(r, "c1"));
    assert_false(has_tool(r, "c2"));
    assert_true(has_tool(r, "c3"));
    assert_int_equal(r->events, 5);
    assert_int_equal(r->last_seq, 5);
    ac__bridge_dispose(&b);
}

static void test_apply_tool_completed_removes_exact_id(void **st)
{
    ac__bridge_t b;
    bridge_init(&b);
    apply(&b, started("r1", "alice"), 1, 10);
    apply(&b, tool_exec("r1", "alice", "c10"), 2, 20);
    apply(&b, tool_exec("r1", "alice", "c1"), 3, 30);
    apply(&b, tool_done("r1", "alice", "c1"), 4, 40);
    ac__run_t *r = find(&b, "r1");
    assert_int_equal(r->ntools, 1);
    assert_string_equal(r->tools[0], "c10");
    ac__bridge_dispose(&b);
}

static void test_apply_many_tools_grows_list(void **st)
{
    enum { N = 37 };
    ac__bridge_t b;
    bridge_init(&b);
    apply(&b, started("r1", "alice"), 1, 10);
    char id[32];
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof(id), "call-%d", i);
        apply(&b, tool_exec("r1", "alice", id), (uint64_t)i + 2, 20);
    }
    ac__run_t *r = find(&b, "r1");
    assert_int_equal(r->ntools, N);
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof(id), "call-%d", i);
        assert_true(has_tool(r, id));
    }
    ac__run_op_t dup[] = {tool_exec("r1", "alice", "call-36")};
    check_refused(&b, dup, 1, 0, R_ALREADY_EXECUTING);
    ac__bridge_dispose(&b);
}

static void test_apply_completed_closes_run(void **st)
{
    ac__bridge_t b;
    bridge_init(&b);
    apply(&b, started("r1", "alice"), 1, 10);
    apply(&b, tool_exec("r1", "alice", "c1"), 2, 20);
    apply(&b, completed("r1", "alice"), 3, 30);
    ac__run_t *r = find(&b, "r1");
    assert_non_null(r);
    assert_int_equal(r->state, AC__RUN_CLOSED);
    assert_int_equal(r->closed_by, AC__CLOSED_BY_COMPLETED);
    assert_int_equal(r->ntools, 0);
    assert_int_equal(r->events, 3);
    assert_int_equal(r->last_seq, 3);
    assert_int_equal(r->touched, 30);
    assert_int_equal(b.nopen, 0);
    assert_int_equal(b.nruns, 1);
    assert_ptr_equal(b.closed_head, r);
    assert_null(b.open_head);
    ac__bridge_dispose(&b);
}

static void test_apply_error_closes_run(void **st)
{
    ac__bridge_t b;
    bridge_init(&b);
    apply(&b, started("r1", "alice"), 1, 10);
    apply(&b, errored("r1", "alice"), 2, 20);
    ac__run_t *r = find(&b, "r1");
    assert_int_equal(r->state, AC__RUN_CLOSED);
    assert_int_equal(r->closed_by, AC__CLOSED_BY_ERROR);
    assert_int_equal(r->events, 2);
    assert_int_equal(b.nopen, 0);
    ac__bridge_dispose(&b);
}

static void test_apply_without_run_id_does_nothing(void **st)
{
    ac__bridge_t b;
    bridge_init(&b);
    ac__run_op_t o = started(NULL, "alice");
    assert_int_equal(ac__bridge_apply(&b, &o, 1, 10, 10), 0);
    assert_int_equal(b.nruns, 0);
    assert_int_equal(b.nopen, 0);
    assert_null(b.open_head);
    ac__bridge_dispose(&b);
}

static void test_find_matches_exact_id_only(void **st)
{
    ac__bridge_t b;
    bridge_init(&b);
    apply(&b, started("r1", "alice"), 1, 10);
    apply(&b, started("r10", "bob"), 2, 10);
    assert_string_equal(find(&b, "r1")->user_id, "alice");
    assert_string_equal(find(&b, "r10")->user_id, "bob");
    assert_null(find(&b, "r"));
    assert_null(find(&b, "r100"));
    assert_null(ac__bridge_find(&b, "r1", 0));
    assert_ptr_equal(ac__bridge_find(&b, "r10xyz", 3), find(&b, "r10"));
    ac__bridge_dispose(&b);
}

static void test_nopen_counts_open_runs_only(void **st)
{
    ac__bridge_t b;
    bridge_init(&b);
    apply(&b, started("r1", "alice"), 1, 10);
    apply(&b, started("r2", "alice"), 2, 10);
    apply(&b, started("r3", "bob"), 3, 10);
    assert_int_equal(b.nopen, 3);
    apply(&b, completed("r2", "alice"), 4, 20);
    assert_int_equal(b.nopen, 2);
    apply(&b, errored("r3", "bob"), 5, 20);
    assert_int_equal(b.nopen, 1);
    assert_int_equal(b.nruns, 3);
    ac__bridge_dispose(&b);
}

/* ---- timeouts ---- */

static void test_next_timeout_none_without_runs(void **st)
{
    ac__bridge_t b;
    bridge_init(&b);
    assert_null(ac__bridge_next_timeout(&b, 1000000, 300));
    ac__bridge_dispose(&b);
}

static void test_next_timeout_only_after_silent_for_timeout(void **st)
{
    ac__bridge_t b;
    bridge_init(&b);
    apply(&b, started("r1", "alice"), 1, 1000);
    assert_null(ac__bridge_next_timeout(&b, 1299, 300));
    assert_ptr_equal(ac__bridge_next_timeout(&b, 1300, 300), find(&b, "r1"));
    ac__bridge_dispose(&b);
}

static void test_next_timeout_counts_from_last_event(void **st)
{
    ac__bridge_t b;
    bridge_init(&b);
    apply(&b, started("r1", "alice"), 1, 1000);
    apply(&b, thinking("r1", "alice"), 2, 1200);
    assert_null(ac__bridge_next_timeout(&b, 1300, 300));
    assert_null(ac__bridge_next_timeout(&b, 1499, 300));
    assert_ptr_equal(ac__bridge_next_timeout(&b, 1500, 300), find(&b, "r1"));
    ac__bridge_dispose(&b);
}

static void test_next_timeout_returns_least_recently_touched(void **st)
{
    ac__bridge_t b;
    bridge_init(&b);
    apply(&b, started("r1", "alice"), 1, 100);
    apply(&b, started("r2", "alice"), 2, 200);
    apply(&b, started("r3", "bob"), 3, 300);
    assert_ptr_equal(ac__bridge_next_timeout(&b, 10000, 300), find(&b, "r1"));
    ac__bridge_dispose(&b);
}

static void test_next_timeout_follows_newer_events(void **st)
{
    ac__bridge_t b;
    bridge_init(&b);
    apply(&b, started("r1", "alice"), 1, 100);
    apply(&b, started("r2", "alice"), 2, 200);
    apply(&b, started("r3", "bob"), 3, 300);
    apply(&b, thinking("r1", "alice"), 4, 400);
    /* r2 (200) is now the oldest; r1 was touched at 400. */
    assert_null(ac__bridge_next_timeout(&b, 499, 300));
    assert_ptr_equal(ac__bridge_next_timeout(&b, 500, 300), find(&b, "r2"));
    apply(&b, tool_exec("r2", "alice", "c1"), 5, 500);
    assert_null(ac__bridge_next_timeout(&b, 599, 300));
    assert_ptr_equal(ac__bridge_next_timeout(&b, 600, 300), find(&b, "r3"));
    ac__bridge_dispose(&b);
}

static void test_next_timeout_skips_closed_runs(void **st)
{
    ac__bridge_t b;
    bridge_init(&b);
    apply(&b, started("r1", "alice"), 1, 100);
    apply(&b, started("r2", "alice"), 2, 200);
    apply(&b, completed("r1", "alice"), 3, 250);
    assert_null(ac__bridge_next_timeout(&b, 499, 300));
    assert_ptr_equal(ac__bridge_next_timeout(&b, 500, 300), find(&b, "r2"));
    apply(&b, completed("r2", "alice"), 4, 260);
    assert_null(ac__bridge_next_timeout(&b, 1000000, 300));
    ac__bridge_dispose(&b);
}

static void test_next_timeout_not_again_while_timing_out(void **st)
{
    ac__bridge_t b;
    bridge_init(&b);
    apply(&b, started("r1", "alice"), 1, 100);
    ac__run_t *r = ac__bridge_next_timeout(&b, 400, 300);
    assert_non_null(r);
    r->timing_out = 1;
    assert_null(ac__bridge_next_timeout(&b, 400, 300));
    assert_null(ac__bridge_next_timeout(&b, 100000, 300));
    ac__bridge_dispose(&b);
}

static void test_timing_out_then_error_is_closed_by_timeout(void **st)
{
    ac__bridge_t b;
    bridge_init(&b);
    apply(&b, started("r1", "alice"), 1, 100);
    apply(&b, tool_exec("r1", "alice", "c1"), 2, 150);
    ac__run_t *r = ac__bridge_next_timeout(&b, 450, 300);
    assert_non_null(r);
    r->timing_out = 1;
    ac__run_op_t ops[] = {errored("r1", "alice")};
    check_ok(&b, ops, 1);
    apply(&b, ops[0], 3, 450);
    assert_int_equal(r->state, AC__RUN_CLOSED);
    assert_int_equal(r->closed_by, AC__CLOSED_BY_TIMEOUT);
    assert_string_equal(ac__run_closed_by_name(r->closed_by), "timeout");
    assert_int_equal(r->ntools, 0);
    assert_int_equal(r->last_seq, 3);
    assert_int_equal(r->events, 3);
    assert_int_equal(b.nopen, 0);
    assert_null(ac__bridge_next_timeout(&b, 100000, 300));
    ac__bridge_dispose(&b);
}

/* ---- force close ---- */

static void test_force_close_closes_by_timeout(void **st)
{
    ac__bridge_t b;
    bridge_init(&b);
    apply(&b, started("r1", "alice"), 1, 100);
    apply(&b, tool_exec("r1", "alice", "c1"), 2, 150);
    apply(&b, started("r2", "alice"), 3, 200);
    ac__run_t *r = find(&b, "r1");
    ac__bridge_force_close(&b, r, 700);
    assert_int_equal(r->state, AC__RUN_CLOSED);
    assert_int_equal(r->closed_by, AC__CLOSED_BY_TIMEOUT);
    assert_int_equal(r->ntools, 0);
    assert_int_equal(r->touched, 700);
    assert_int_equal(r->events, 2);
    assert_int_equal(r->last_seq, 2);
    assert_int_equal(b.nopen, 1);
    assert_ptr_equal(b.closed_head, r);
    assert_ptr_equal(ac__bridge_next_timeout(&b, 700, 300), find(&b, "r2"));
    ac__run_op_t ops[] = {started("r1", "alice")};
    check_refused(&b, ops, 1, 0, R_CLOSED);
    ac__bridge_dispose(&b);
}

static void test_force_close_of_closed_run_is_noop(void **st)
{
    ac__bridge_t b;
    bridge_init(&b);
    apply(&b, started("r1", "alice"), 1, 100);
    apply(&b, completed("r1", "alice"), 2, 200);
    apply(&b, started("r2", "alice"), 3, 300);
    ac__run_t *r = find(&b, "r1");
    ac__bridge_force_close(&b, r, 900);
    assert_int_equal(r->state, AC__RUN_CLOSED);
    assert_int_equal(r->closed_by, AC__CLOSED_BY_COMPLETED);
    assert_int_equal(r->touched, 200);
    assert_int_equal(b.nopen, 1);
    assert_int_equal(b.nruns, 2);
    ac__bridge_dispose(&b);
}

/* ---- expiry ---- */

static void test_expire_keeps_closed_run_before_ttl(void **st)
{
    ac__bridge_t b;
    bridge_init(&b);
    apply(&b, started("r1", "alice"), 1, 100);
    apply(&b, completed("r1", "alice"), 2, 1000);
    assert_int_equal(ac__bridge_expire(&b, 1499, 500), 0);
    assert_non_null(find(&b, "r1"));
    assert_int_equal(b.nruns, 1);
    ac__bridge_dispose(&b);
}

static void test_expire_forgets_closed_run_at_ttl(void **st)
{
    ac__bridge_t b;
    bridge_init(&b);
    apply(&b, started("r1", "alice"), 1, 100);
    apply(&b, completed("r1", "alice"), 2, 1000);
    assert_int_equal(ac__bridge_expire(&b, 1500, 500), 1);
    assert_null(find(&b, "r1"));
    assert_int_equal(b.nruns, 0);
    assert_null(b.closed_head);
    assert_null(b.closed_tail);
    ac__bridge_dispose(&b);
}

static void test_expire_never_forgets_open_run(void **st)
{
    ac__bridge_t b;
    bridge_init(&b);
    apply(&b, started("r1", "alice"), 1, 0);
    assert_int_equal(ac__bridge_expire(&b, 1000000000, 1), 0);
    ac__run_t *r = find(&b, "r1");
    assert_non_null(r);
    assert_int_equal(r->state, AC__RUN_OPEN);
    assert_int_equal(b.nopen, 1);
    assert_int_equal(b.nruns, 1);
    ac__bridge_dispose(&b);
}

static void test_expire_forgets_in_closing_order(void **st)
{
    ac__bridge_t b;
    bridge_init(&b);
    apply(&b, started("r1", "alice"), 1, 0);
    apply(&b, started("r2", "alice"), 2, 0);
    apply(&b, started("r3", "alice"), 3, 0);
    apply(&b, started("r4", "alice"), 4, 0);
    apply(&b, completed("r2", "alice"), 5, 100);
    apply(&b, errored("r1", "alice"), 6, 200);
    ac__bridge_force_close(&b, find(&b, "r3"), 300);
    assert_int_equal(ac__bridge_expire(&b, 1099, 1000), 0);
    assert_int_equal(ac__bridge_expire(&b, 1250, 1000), 2);
    assert_null(find(&b, "r2"));
    assert_null(find(&b, "r1"));
    assert_non_null(find(&b, "r3"));
    assert_non_null(find(&b, "r4"));
    assert_int_equal(ac__bridge_expire(&b, 1300, 1000), 1);
    assert_null(find(&b, "r3"));
    assert_non_null(find(&b, "r4"));
    assert_int_equal(b.nruns, 1);
    assert_int_equal(b.nopen, 1);
    ac__bridge_dispose(&b);
}

static void test_expired_run_id_can_start_again(void **st)
{
    ac__bridge_t b;
    bridge_init(&b);
    apply(&b, started("r1", "alice"), 1, 0);
    apply(&b, completed("r1", "alice"), 2, 10);
    assert_int_equal(ac__bridge_expire(&b, 20, 10), 1);
    ac__run_op_t ops[] = {started("r1", "bob")};
    check_ok(&b, ops, 1);
    apply(&b, ops[0], 3, 30);
    ac__run_t *r = find(&b, "r1");
    assert_string_equal(r->user_id, "bob");
    assert_int_equal(r->events, 1);
    assert_int_equal(r->state, AC__RUN_OPEN);
    ac__bridge_dispose(&b);
}

/* ---- names ---- */

static void test_closed_by_name_for_each_value(void **st)
{
    assert_null(ac__run_closed_by_name(AC__CLOSED_BY_NONE));
    assert_string_equal(ac__run_closed_by_name(AC__CLOSED_BY_COMPLETED), "agent_completed");
    assert_string_equal(ac__run_closed_by_name(AC__CLOSED_BY_ERROR), "agent_error");
    assert_string_equal(ac__run_closed_by_name(AC__CLOSED_BY_TIMEOUT), "timeout");
}

/* ---- scale ---- */

static void test_many_runs_grow_table_and_stay_findable(void **st)
{
    enum { N = 20000 };
    ac__bridge_t b;
    bridge_init(&b);
    size_t initial_buckets = b.nbuckets;
    char id[32], user[32];
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof(id), "run-%d", i);
        snprintf(user, sizeof(user), "user-%d", i % 97);
        apply(&b, started(id, user), (uint64_t)i + 1, (uint64_t)i);
    }
    assert_int_equal(b.nruns, N);
    assert_int_equal(b.nopen, N);
    assert_true(b.nbuckets > initial_buckets);
    assert_true(b.nbuckets >= N);
    assert_int_equal(b.nbuckets & (b.nbuckets - 1), 0);
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof(id), "run-%d", i);
        snprintf(user, sizeof(user), "user-%d", i % 97);
        ac__run_t *r = find(&b, id);
        assert_non_null(r);
        assert_int_equal(r->id_len, strlen(id));
        assert_memory_equal(r->id, id, strlen(id));
        assert_string_equal(r->user_id, user);
        assert_int_equal(r->last_seq, (uint64_t)i + 1);
    }
    snprintf(id, sizeof(id), "run-%d", N);
    assert_null(find(&b, id));
    assert_ptr_equal(ac__bridge_next_timeout(&b, N + 1000, 1000), find(&b, "run-0"));
    ac__bridge_dispose(&b);
}

static void test_many_closed_runs_all_expire(void **st)
{
    enum { N = 20000 };
    ac__bridge_t b;
    bridge_init(&b);
    char id[32];
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof(id), "run-%d", i);
        apply(&b, started(id, "alice"), 1, 0);
    }
    for (int i = N - 1; i >= 0; i--) {
        snprintf(id, sizeof(id), "run-%d", i);
        apply(&b, completed(id, "alice"), 2, (uint64_t)(N - i));
    }
    assert_int_equal(b.nopen, 0);
    assert_int_equal(ac__bridge_expire(&b, N / 2 + 100, 100), N / 2);
    assert_int_equal(b.nruns, N / 2);
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof(id), "run-%d", i);
        if (i >= N / 2)
            assert_null(find(&b, id));
        else
            assert_non_null(find(&b, id));
    }
    assert_int_equal(ac__bridge_expire(&b, N + 100, 100), N / 2);
    assert_int_equal(b.nruns, 0);
    assert_null(b.closed_head);
    ac__bridge_dispose(&b);
}

/* ---- dispose ---- */

static void test_dispose_frees_open_and_closed_runs(void **st)
{
    ac__bridge_t b;
    bridge_init(&b);
    ac__run_op_t o = started("r1", "alice");
    o.thread_id = str("t1");
    apply(&b, o, 1, 10);
    apply(&b, tool_exec("r1", "alice", "c1"), 2, 20);
    apply(&b, tool_exec("r1", "alice", "c2"), 3, 30);
    o = started("r2", "bob");
    o.thread_id = str("t2");
    apply(&b, o, 4, 40);
    apply(&b, tool_exec("r2", "bob", "c1"), 5, 50);
    apply(&b, completed("r2", "bob"), 6, 60);
    apply(&b, started("r3", "carol"), 7, 70);
    ac__bridge_force_close(&b, find(&b, "r3"), 80);
    ac__bridge_dispose(&b); /* ASan: every run, id, tool list freed */
    assert_null(b.buckets);
    assert_int_equal(b.nbuckets, 0);
    assert_int_equal(b.nruns, 0);
    assert_int_equal(b.nopen, 0);
    assert_null(b.open_head);
    assert_null(b.closed_head);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check_accepts_full_valid_run_in_one_batch),
        cmocka_unit_test(test_check_alone_changes_nothing),
        cmocka_unit_test(test_check_failed_batch_leaves_applied_run_untouched),
        cmocka_unit_test(test_check_empty_batch_is_ok),
        cmocka_unit_test(test_check_refuses_start_of_open_run),
        cmocka_unit_test(test_check_refuses_second_start_in_same_batch),
        cmocka_unit_test(test_check_refuses_restart_after_completed),
        cmocka_unit_test(test_check_refuses_restart_after_error),
        cmocka_unit_test(test_check_refuses_every_type_on_closed_run),
        cmocka_unit_test(test_check_refuses_every_non_start_type_on_unknown_run),
        cmocka_unit_test(test_check_refuses_custom_type_on_unknown_run),
        cmocka_unit_test(test_check_refuses_event_of_another_user),
        cmocka_unit_test(test_check_refuses_user_id_sharing_prefix_of_owner),
        cmocka_unit_test(test_check_refuses_start_of_another_users_run),
        cmocka_unit_test(test_check_refuses_another_user_after_start_in_same_batch),
        cmocka_unit_test(test_check_refuses_tool_completed_not_executing),
        cmocka_unit_test(test_check_refuses_tool_id_differing_only_in_length),
        cmocka_unit_test(test_check_refuses_tool_already_executing),
        cmocka_unit_test(test_check_refuses_tool_executing_twice_in_same_batch),
        cmocka_unit_test(test_check_refuses_tool_completed_twice_in_same_batch),
        cmocka_unit_test(test_check_refuses_tool_completed_again_after_apply),
        cmocka_unit_test(test_check_reports_first_failing_index_only),
        cmocka_unit_test(test_check_skips_ops_without_run_id),
        cmocka_unit_test(test_check_counts_skipped_ops_in_failing_index),
        cmocka_unit_test(test_check_sees_start_earlier_in_batch),
        cmocka_unit_test(test_check_sees_close_earlier_in_batch),
        cmocka_unit_test(test_check_sees_tool_completion_earlier_in_batch),
        cmocka_unit_test(test_check_allows_same_tool_id_in_different_runs),
        cmocka_unit_test(test_check_allows_many_tools_in_one_batch),
        cmocka_unit_test(test_apply_started_opens_run),
        cmocka_unit_test(test_apply_started_copies_thread_id),
        cmocka_unit_test(test_apply_copies_ids_not_borrowing_them),
        cmocka_unit_test(test_apply_updates_seq_events_and_times),
        cmocka_unit_test(test_apply_tracks_executing_tools),
        cmocka_unit_test(test_apply_tool_completed_removes_exact_id),
        cmocka_unit_test(test_apply_many_tools_grows_list),
        cmocka_unit_test(test_apply_completed_closes_run),
        cmocka_unit_test(test_apply_error_closes_run),
        cmocka_unit_test(test_apply_without_run_id_does_nothing),
        cmocka_unit_test(test_find_matches_exact_id_only),
        cmocka_unit_test(test_nopen_counts_open_runs_only),
        cmocka_unit_test(test_next_timeout_none_without_runs),
        cmocka_unit_test(test_next_timeout_only_after_silent_for_timeout),
        cmocka_unit_test(test_next_timeout_counts_from_last_event),
        cmocka_unit_test(test_next_timeout_returns_least_recently_touched),
        cmocka_unit_test(test_next_timeout_follows_newer_events),
        cmocka_unit_test(test_next_timeout_skips_closed_runs),
        cmocka_unit_test(test_next_timeout_not_again_while_timing_out),
        cmocka_unit_test(test_timing_out_then_error_is_closed_by_timeout),
        cmocka_unit_test(test_force_close_closes_by_timeout),
        cmocka_unit_test(test_force_close_of_closed_run_is_noop),
        cmocka_unit_test(test_expire_keeps_closed_run_before_ttl),
        cmocka_unit_test(test_expire_forgets_closed_run_at_ttl),
        cmocka_unit_test(test_expire_never_forgets_open_run),
        cmocka_unit_test(test_expire_forgets_in_closing_order),
        cmocka_unit_test(test_expired_run_id_can_start_again),
        cmocka_unit_test(test_closed_by_name_for_each_value),
        cmocka_unit_test(test_many_runs_grow_table_and_stay_findable),
        cmocka_unit_test(test_many_closed_runs_all_expire),
        cmocka_unit_test(test_dispose_frees_open_and_closed_runs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
