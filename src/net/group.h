/* --threads N: N loops, each running a whole ac_server_t (a shard) on its own thread, shard 0
 * on the embedder's loop. Users are owned by a shard (a hash of the user id): a user's
 * connections, seq, history, runs and idempotency keys live there, touched by that loop
 * only. A /ws connection moves to its owner once its user is known (ac__conn_detach over the
 * owner's inbox). A publish body whose users all live on one other shard goes there through
 * the batched loop-to-loop queue (ac__group_send) and its answer comes back the same way; a
 * body naming users of several is split into one such message per loop when no other loop's
 * state can refuse its events (api/publish.c). What else spans shards (a body with run ops or
 * direct messages for several, stats, /v1/disconnect, /v1/runs) runs on the loop that
 * received it with the other loops parked: each stopped at a safe point of
 * its turn, so their state is read and written from one thread at a time. With the redis broker
 * every shard is a node of the cluster and no ownership applies. Not the place for what one loop
 * does alone. */
#ifndef AC_NET_GROUP_H
#define AC_NET_GROUP_H

#include <stdatomic.h>
#include <uv.h>

#include "net/conn.h"
#include "net/inbox.h"
#include "net/server.h"

/* The most loops one server runs. */
#define AC__GROUP_MAX 256

typedef struct ac__group_s ac__group_t;

typedef struct ac__shard_s {
    ac__group_t *g;
    unsigned id;
    ac_server_t *s;
    uv_loop_t *loop;    /* s->loop: the embedder's for shard 0, else own_loop */
    uv_loop_t own_loop; /* shards >= 1 */
    uv_thread_t thread; /* shards >= 1 */
    int thread_started;
    uv_async_t ctl;        /* park, shut down, a shard's loop ended (shard 0) */
    atomic_uint ctl_flags; /* CTL_* asked of this shard */
    ac__inbox_t inbox;     /* connections handed to this shard */
    ac__outbox_t *out;     /* per destination shard: what this loop sends in one turn */
    unsigned out_pending;  /* outboxes not empty */
    uv_check_t flush;      /* sends the outboxes at the end of each turn */
    uv_prepare_t preflush; /* and before the loop blocks (what the turn's drain sent) */
    uv_idle_t retry;       /* keeps the loop turning while a full inbox refused a batch */
    int alive;             /* under g->m: its loop runs (it can be parked) */
    uint64_t parked_gen;   /* under g->m: the park it stopped for */
} ac__shard_t;

struct ac__group_s {
    unsigned n;
    int route; /* users are owned by a shard (memory broker); 0: each shard a cluster node */
    ac__shard_t *shards;
    uv_mutex_t world; /* held by the one loop that parks the others */
    uv_mutex_t m;     /* what follows, and every shard's alive / parked_gen */
    uv_cond_t cv;
    int parking;
    uint64_t gen;
    unsigned running; /* shards >= 1 whose loops still run */
    /* Process-wide limits over all shards. */
    atomic_long user_conns; /* open /ws connections, for --max-conns */
    uv_mutex_t rl_lock;     /* shard 0's --handshake-rate limiter, used by every shard */
    /* Which shard holds each run id (a run lives with the user that started it; another
     * user's event naming it must be refused wherever it arrives). */
    struct ac__runreg_s *runs;
    /* Graceful shutdown of all of them (started on shard 0). */
    ac_server_shutdown_cb shutdown_cb;
    void *shutdown_arg;
    int s0_down;
    unsigned s0_handles;
    unsigned closing; /* the first loop's handles still closing after ac__group_free() */
};

/* Makes one more shard's server on `loop` (gateway/server.c). NULL with *err on failure. */
typedef ac_server_t *(*ac__shard_new_fn)(uv_loop_t *loop, const ac_server_opts_t *opts, int *err);

/* Turns s0 (already built on the embedder's loop) into shard 0 of n, building shards 1..n-1
 * with make_shard on loops of their own. 0 or a negative error (nothing is kept then). */
int ac__group_new(ac_server_t *s0, unsigned n, int route, ac__shard_new_fn make_shard);

/* Listens on every shard (SO_REUSEPORT on s0's port) and starts their threads; s0 is
 * started by the caller first. 0 or a negative error. */
int ac__group_start(ac_server_t *s0);

/* Shuts every shard down (1001 to their connections, within --shutdown-timeout); cb once
 * all loops have closed their handles. */
int ac__group_shutdown(ac_server_t *s0, ac_server_shutdown_cb cb, void *arg);

/* Stops the shards' threads if they run and frees shards 1..n-1 (free_shard for each). */
void ac__group_free(ac_server_t *s0, void (*free_shard)(ac_server_t *s));

/* The shard that owns a user; s itself with one loop or without ownership (redis). */
ac_server_t *ac__group_owner(ac_server_t *s, const char *user, size_t len);

/* Loops in the group (1 without one) and shard k's server. */
static inline unsigned ac__group_size(const ac_server_t *s)
{
    return s->shard != NULL ? s->shard->g->n : 1;
}

static inline ac_server_t *ac__group_shard(ac_server_t *s, unsigned k)
{
    return s->shard != NULL ? s->shard->g->shards[k].s : s;
}

/* Parks every other shard's loop (each stops inside its turn and waits) so this thread may
 * use their state; unpark lets them go on (their output is flushed in that same turn). First
 * this loop's batched sends go out, and a loop runs what is in its inbox before it stops, so
 * a parked publish never overtakes a forwarded one of the same publisher. While it waits
 * for another parker, this loop serves that park and runs its own inbox: call it before the
 * operation touches any state. No-ops with one loop. Not nested. */
void ac__group_park(ac_server_t *s);
void ac__group_unpark(ac_server_t *s);

/* Sends m (m->run set) to loop `to`, batched: everything one loop turn sends to a loop goes
 * with one lock and at most one wake-up, at the end of the turn, in the order sent. Loop
 * thread of `from` only; never fails (a full inbox is retried next turn; a closed one runs m
 * with AC_ECLOSED when the group is freed). */
void ac__group_send(ac_server_t *from, ac_server_t *to, ac__msg_t *m);

/* Hands a moved connection (h->msg.run set by the caller) to the owner's inbox. 0, or an
 * AC_E* error with nothing taken. */
int ac__group_handoff(ac_server_t *owner, ac__handoff_t *h);

/* --max-conns over all shards: takes one of the process-wide slots (1) or none is left (0);
 * release gives one back. */
int ac__group_conn_take(ac_server_t *s);
void ac__group_conn_release(ac_server_t *s);

/* The shard holding run `id`, or -1 when no shard knows it (always -1 with one loop). */
int ac__group_run_shard(ac_server_t *s, const char *id, size_t len);

/* This loop's index in its group (0 with one loop). */
static inline unsigned ac__group_index(const ac_server_t *s)
{
    return s->shard != NULL ? s->shard->id : 0;
}

/* --handshake-rate, one limiter for the process: 1 when the address may upgrade now. */
int ac__group_handshake_take(ac_server_t *s, const void *key, size_t klen);
void ac__group_handshake_expire(ac_server_t *s);

#endif
