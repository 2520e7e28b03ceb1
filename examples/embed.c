/* An embedder's view of agentcast: a C program that runs the gateway on its own libuv
 * loop and four "agents" on worker threads, each streaming whole runs (started, thinking,
 * a tool call, completed) to its user through the thread-safe ac_run_* API. It checks
 * every outcome on the loop thread (all accepted, each user's seqs consecutive) and the
 * server's stats, shuts down gracefully and exits 0 only when all of it held.
 *
 *   build/examples/embed [--listen 127.0.0.1:0] [--runs 25]      (make test runs it) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "agentcast.h"

#define AGENTS 4
#define EVENTS_PER_RUN 7 /* started, 3 thinking, tool executing + completed, completed */

typedef struct agent_s {
    ac_server_t *server;
    int index;
    int runs;
    int failures; /* calls refused at once (on the agent's thread) */
    uv_thread_t thread;
} agent_t;

/* Touched only on the loop thread (the callbacks). */
static struct {
    long accepted;
    long refused;
    long expected;
    uint64_t last_seq[AGENTS];
    long seq_gaps;
    ac_server_t *server;
    int shutting_down;
} loop_state;

static void on_shutdown(ac_server_t *server, void *arg)
{
    (void)arg;
    (void)server;
}

static void on_outcome(ac_server_t *server, int status, const ac_publish_result_t *res,
                       const char *reason, void *arg)
{
    int user = (int)(intptr_t)arg;

    if (status != 0) {
        loop_state.refused++;
        fprintf(stderr, "embed: user %d: refused: %s\n", user, reason);
    } else {
        loop_state.accepted++;
        if (res->seq != loop_state.last_seq[user] + 1)
            loop_state.seq_gaps++;
        loop_state.last_seq[user] = res->seq;
    }
    if (loop_state.accepted + loop_state.refused == loop_state.expected &&
        !loop_state.shutting_down) {
        loop_state.shutting_down = 1;
        ac_server_shutdown(server, on_shutdown, NULL);
    }
}

static void agent_main(void *arg)
{
    agent_t *a = arg;
    char user[32], thread[32], thought[64], call[32], result[64];
    void *tag = (void *)(intptr_t)a->index;

    snprintf(user, sizeof(user), "embed-user-%d", a->index);
    for (int r = 0; r < a->runs; r++) {
        int err = 0;
        snprintf(thread, sizeof(thread), "thread-%d", r);
        ac_run_t *run =
            ac_run_start(a->server, user, thread, NULL, "calculator", on_outcome, tag, &err);
        if (run == NULL) {
            a->failures += EVENTS_PER_RUN;
            continue;
        }
        for (int t = 0; t < 3; t++) {
            snprintf(thought, sizeof(thought), "step %d of run %d", t, r);
            a->failures += ac_run_thinking(run, thought) != 0;
        }
        snprintf(call, sizeof(call), "call-%d", r);
        snprintf(result, sizeof(result), "%d", 6 * 7 + r);
        a->failures += ac_run_tool_executing(run, "multiply", call, "{\"a\":6,\"b\":7}") != 0;
        a->failures += ac_run_tool_completed(run, "multiply", call, result) != 0;
        a->failures += ac_run_completed(run, "\"done\"") != 0;
    }
}

int main(int argc, char **argv)
{
    ac_server_opts_t opts;
    uv_loop_t loop;
    agent_t agents[AGENTS];
    ac_stats_t st;
    int runs = 25, err = 0, failures = 0;

    ac_server_opts_init(&opts);
    opts.listen = "127.0.0.1:0";
    opts.auth = AC_AUTH_NONE;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--listen") == 0)
            opts.listen = argv[i + 1];
        else if (strcmp(argv[i], "--runs") == 0)
            runs = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--threads") == 0)
            opts.threads = (unsigned)atoi(argv[i + 1]); /* event loops; this one is the first */
    }
    ac_log_set_level(AC_LOG_WARN);
    uv_loop_init(&loop);
    ac_server_t *server = ac_server_new(&loop, &opts, &err);
    if (server == NULL || ac_server_start(server) != 0) {
        fprintf(stderr, "embed: cannot start: %s\n", ac_strerror(err));
        return 1;
    }
    loop_state.server = server;
    loop_state.expected = (long)AGENTS * runs * EVENTS_PER_RUN;

    /* The agents publish from their own threads while the loop runs here. */
    for (int i = 0; i < AGENTS; i++) {
        agents[i] = (agent_t){.server = server, .index = i, .runs = runs};
        uv_thread_create(&agents[i].thread, agent_main, &agents[i]);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    for (int i = 0; i < AGENTS; i++) {
        uv_thread_join(&agents[i].thread);
        failures += agents[i].failures;
    }
    ac_server_stats(server, &st);
    ac_server_free(server);
    if (uv_loop_close(&loop) != 0) {
        fprintf(stderr, "embed: handles left open\n");
        failures++;
    }
    printf("embed: %d agents x %d runs: accepted %ld of %ld, refused %ld, seq gaps %ld, "
           "events_total %llu, open_runs %llu\n",
           AGENTS, runs, loop_state.accepted, loop_state.expected, loop_state.refused,
           loop_state.seq_gaps, (unsigned long long)st.events_total,
           (unsigned long long)st.open_runs);
    if (failures || loop_state.refused || loop_state.seq_gaps ||
        loop_state.accepted != loop_state.expected ||
        st.events_total != (uint64_t)loop_state.expected || st.open_runs != 0) {
        printf("embed: FAILED\n");
        return 1;
    }
    printf("embed: ok\n");
    return 0;
}
