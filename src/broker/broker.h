/* How an event travels from its publisher to the connections of its user. A broker is a
 * small vtable; memory.c is the one-node broker (the default). The broker never builds
 * envelopes (the emitter does) and never writes to sockets (it calls `deliver`). */
#ifndef AC_BROKER_BROKER_H
#define AC_BROKER_BROKER_H

#include "agentcast.h"
#include "core/bridge.h"
#include "core/buf.h"
#include "core/history.h"
#include "core/manager.h"

struct ac__join_res_s;

/* What a broker needs from the node that runs it: the node's connections, reached only
 * through these calls (the broker never touches a socket). `arg` is the host's. */
typedef struct ac__broker_host_s {
    void *arg;
    /* Hands `frame` to every open, greeted connection of `u` on this node; returns how
     * many. Connections still joining are skipped (their join catches them up). */
    unsigned (*deliver)(void *arg, ac__user_t *u, ac__buf_t *frame);
    /* Sends `frame` to one connection (a direct message, a replayed event); 0 when the
     * connection is not open here. */
    unsigned (*send_one)(void *arg, ac__user_t *u, uint64_t conn_id, ac__buf_t *frame, int replay);
    /* The greeting of a joining connection: `connected`, `resync` when not recovered,
     * then the replay. Returns -1 when the connection is gone. */
    int (*greet)(void *arg, ac__user_t *u, uint64_t conn_id, const struct ac__join_res_s *res);
    /* The connection is caught up: live events reach it from now on. */
    void (*go_live)(void *arg, ac__user_t *u, uint64_t conn_id);
    /* Closes one connection of the user with `code` (a `closing` envelope first). */
    void (*close_one)(void *arg, ac__user_t *u, uint64_t conn_id, unsigned code,
                      const char *reason);
} ac__broker_host_t;

typedef struct ac__broker_s ac__broker_t;

/* What a joining connection asked: resume after `after` (has_after) in stream `epoch`
 * ("" when the client named none). */
typedef struct ac__join_req_s {
    uint64_t conn_id;
    uint64_t after;
    int has_after;
    char epoch[17];
} ac__join_req_t;

/* The answer: the stream's epoch and newest seq, the oldest seq that can be replayed,
 * whether the resume is whole, and the frames to replay (oldest first, borrowed). */
typedef struct ac__join_res_s {
    char epoch[17];
    uint64_t seq;
    uint64_t oldest;
    int resume;    /* the client asked to resume (req.has_after) */
    int recovered; /* ... and gets every event after its last_seq */
    ac__buf_t **frames;
    size_t nframes;
} ac__join_res_t;

/* One validated event of a publish batch, for a broker that decides cluster-wide. */
typedef struct ac__pub_item_s {
    ac__run_op_t op;    /* lifecycle: op.user_id is the user; op.run_id.p NULL: no run */
    ac__str_t idem_key; /* p NULL: none */
    ac__str_t head;     /* the envelope up to the seq digits */
    ac__str_t tail;     /* the envelope after them (a direct message: all of it) */
    uint64_t conn_id;   /* a direct message to this connection; 0: an event */
    int timeout;        /* the gateway's own agent_error for a silent run */
} ac__pub_item_t;

/* The outcome of a batch: status 200 (results[0..n)), 404/409 with `index` and `reason`,
 * or 503 with `reason`. Called exactly once. */
typedef void (*ac__pub_done_cb)(void *arg, unsigned status, size_t index, const char *reason,
                                const ac_publish_result_t *results, size_t n);

/* GET /v1/runs/{id}: `json` is the run's object, or NULL with status 404 / 503. */
typedef void (*ac__run_done_cb)(void *arg, unsigned status, const char *json, size_t len);

typedef struct ac__broker_vtable_s {
    const char *name;
    /* Publishes an event frame (buf->seq set) for `u`; sets *delivered. Borrows frame
     * (takes its own references). Returns 0 or AC_EUNAVAIL. The one-node path. */
    int (*publish)(ac__broker_t *b, ac__user_t *u, ac__buf_t *frame, unsigned *delivered);
    /* A connection of `u` joins this node (it is attached to the manager, not yet live):
     * registers it where the per-user cap is kept, and greets it through the host. Returns
     * 0, or AC_EUNAVAIL when the broker is down (the caller closes the connection). */
    int (*join)(ac__broker_t *b, ac__user_t *u, const ac__join_req_t *req);
    /* The connection left (closed or evicted). */
    void (*leave)(ac__broker_t *b, ac__user_t *u, uint64_t conn_id);
    /* Cluster-wide publish: idempotency, lifecycle, seq, history and fan-out decided in
     * one atomic step where the cluster's state lives. NULL for the memory broker: the
     * node decides with core/bridge and core/idempotency and calls `publish` per event.
     * Returns 0 (done will be called) or AC_EUNAVAIL. */
    int (*publish_batch)(ac__broker_t *b, const ac__pub_item_t *items, size_t n,
                         ac__pub_done_cb done, void *arg);
    /* The run's state (NULL for the memory broker: the node's bridge has it). */
    int (*run_get)(ac__broker_t *b, const char *id, size_t len, ac__run_done_cb done, void *arg);
    /* POST /v1/disconnect across the cluster: closes the user's connection `conn_id` (0:
     * all of them) wherever it is; done gets how many (NULL for the memory broker). */
    int (*disconnect)(ac__broker_t *b, const char *user, size_t ulen, uint64_t conn_id,
                      void (*done)(void *arg, int status, unsigned n), void *arg);
    /* Periodic upkeep (the node's sweep): keep-alives, expiring runs, idle subscriptions. */
    void (*sweep)(ac__broker_t *b);
    /* The oldest seq the user can still be replayed (newest + 1 when none). */
    uint64_t (*oldest)(ac__broker_t *b, ac__user_t *u);
    /* Calls fn for each retained event of the user with seq > after, in order. */
    void (*replay)(ac__broker_t *b, ac__user_t *u, uint64_t after, ac__history_fn fn, void *arg);
    /* 1 when the broker can take events now. */
    int (*up)(const ac__broker_t *b);
    /* Optional (NULL: nothing to add): adds to /healthz's JSON object which parts of the
     * broker are down (the redis broker's shards). */
    void (*health)(const ac__broker_t *b, void *out);
    /* Adds the broker's figures to /v1/stats (`stats` is a JSON object). */
    void (*stats)(const ac__broker_t *b, void *out);
    /* Before the node stops: no new work; pending operations are answered. */
    void (*close)(ac__broker_t *b);
    void (*free)(ac__broker_t *b);
} ac__broker_vtable_t;

struct ac__broker_s {
    const ac__broker_vtable_t *vt;
    ac__broker_host_t host;
};

/* The one-node broker: history in `store` (borrowed), delivery a direct call into the
 * host. Caller frees with b->vt->free(b). NULL when out of memory. */
ac__broker_t *ac__broker_memory_new(const ac__broker_host_t *host, ac__history_store_t *store);

/* The Redis broker (redis.c). `url` is redis://HOST:PORT[/DB], or several of them joined
 * by commas (shards: a user's keys live on one, picked by a consistent hash of its id), or
 * redis+cluster://HOST:PORT[,HOST:PORT] (a Redis Cluster's seeds: each master a shard, by
 * slot); the password comes from `password` (NULL: none). Probes each synchronously once to
 * fail fast (AC_EUNAVAIL with *why), then runs on `loop`. */
typedef struct ac__redis_opts_s {
    const char *url;
    const char *password;
    const char *prefix;      /* key and channel namespace: "ac:" */
    unsigned max_per_user;   /* the cluster-wide per-user cap */
    unsigned history_size;   /* events kept per user */
    uint64_t history_ttl_ms; /* a stream kept this long after its last event */
    uint64_t seq_ttl_ms;     /* its seq counter and epoch kept this long (>= history_ttl_ms) */
    uint64_t idem_ms;        /* idempotency window */
    uint64_t run_timeout_ms; /* open runs silent this long are timed out */
} ac__redis_opts_t;

struct uv_loop_s;
struct ac__manager_s;
int ac__broker_redis_new(struct uv_loop_s *loop, const ac__broker_host_t *host,
                         struct ac__manager_s *manager, const ac__redis_opts_t *opts,
                         ac__broker_t **out, char *why, size_t whylen);

/* Hooks the redis broker asks of the node's run timeout: it publishes the gateway's
 * agent_error for each silent run it claims (api/publish.c). */
typedef void (*ac__run_timeout_fn)(void *arg, const char *run_id, const char *user_id,
                                   const char *thread_id);
void ac__broker_redis_on_timeout(ac__broker_t *b, ac__run_timeout_fn fn, void *arg);

#endif
