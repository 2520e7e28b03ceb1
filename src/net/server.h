/* The server object as net/ sees it: options, the loop's handles, the core objects
 * (manager, emitter, broker) and counters, and the handler table through which net/ hands
 * requests and messages up (filled in by api/, wired by gateway/server.c). net/ includes
 * no api/ header. Private to the library. */
#ifndef AC_NET_SERVER_H
#define AC_NET_SERVER_H

#include <uv.h>

#include "agentcast.h"
#include "broker/broker.h"
#include "core/bridge.h"
#include "core/emitter.h"
#include "core/idempotency.h"
#include "core/manager.h"
#include "core/ratelimit.h"
#include "net/http.h"

typedef struct ac__conn_s ac__conn_t;

/* What net/ calls upward: the meaning of requests and messages, and the application's part
 * of the loop's lifecycle. Every entry is required; all run on the loop thread. */
typedef struct ac__net_handlers_s {
    /* A complete HTTP request on c: answer it, defer it (c->pend) or upgrade c. */
    void (*on_request)(ac__conn_t *c, const ac__http_req_t *req);
    /* A complete message of an open WebSocket (text is valid UTF-8). */
    void (*on_message)(ac__conn_t *c, const char *p, size_t len, int binary);
    /* c is being freed with requests still deferred (c->pend != NULL): forget c there. */
    void (*on_conn_free)(ac__conn_t *c);
    /* The loop's wake-up from other threads fired (ac_emit()). */
    void (*on_wakeup)(ac_server_t *s);
    /* The --cleanup-interval sweep, after net/'s own. */
    void (*on_sweep)(ac_server_t *s);
    /* A protocol error on a WebSocket with requests still being answered (c->pend): 1 when
     * the application closes it (code, reason) once they are; may be NULL. */
    int (*on_ws_fail)(ac__conn_t *c, unsigned code, const char *reason);
    /* The deadline tick (10-500 ms), and once at start. */
    void (*on_tick)(ac_server_t *s);
    /* Shutdown begins, before any connection is closed: drain and refuse what is queued. */
    void (*on_shutdown)(ac_server_t *s);
} ac__net_handlers_t;

#define AC__READ_BUF_SIZE (64 * 1024)
#define AC__LAT_NBUCKETS 14
extern const double AC__LAT_BOUNDS_S[AC__LAT_NBUCKETS];
#define AC__CLOSE_TIMEOUT_MS 2000

struct ac_server_s {
    uv_loop_t *loop;
    const ac__net_handlers_t *handlers; /* api/'s, set by ac_server_new() */
    struct ac__shard_s *shard;          /* --threads > 1: this loop's place (net/group.h) */
    ac_server_opts_t opts;
    char *listen_host; /* parsed from opts.listen */
    int listen_port;
    int bound_port;

    uv_poll_t listener; /* on listen_fd: accepts (net/server.c) */
    int listen_fd;
    int spare_fd;            /* kept open for when descriptors run out (shed_pending) */
    int accept_paused;       /* out of descriptors, reserve included: the tick resumes */
    uv_check_t flusher;      /* writes every dirty connection once per loop turn, after I/O */
    uv_prepare_t preflusher; /* and before blocking, for what timers queued */
    uv_timer_t tick;         /* deadlines: handshakes, idle keep-alive, closing */
    uv_timer_t pinger;       /* --ping-interval, one slice of the connections per tick */
    unsigned ping_slice;     /* the slice the next tick pings */
    unsigned ping_slices;    /* slices in this round */
    uv_timer_t sweeper;      /* --cleanup-interval: stale connections, idle users */
    uv_timer_t shutdown_timer;
    uv_async_t emit_async; /* wakes the loop for ac_emit() from other threads */
    unsigned open_handles; /* server handles not yet closed */

    ac__manager_t manager;
    ac__emitter_t emitter;
    ac__idem_t idem;
    ac__bridge_t bridge;
    ac__ratelimit_t handshakes; /* --handshake-rate, per client IP */
    ac__broker_t *broker;

    ac__conn_t *dirty;   /* connections with output to flush */
    ac__conn_t *dl_head; /* connections with a deadline (HTTP phase, closing) */
    ac__conn_t *agents;  /* open publisher sockets */
    size_t nagents;
    size_t nconns_all; /* every accepted TCP connection not yet freed */
    uint64_t start_ms; /* uv_now() at creation */

    /* The request being handled (http_input): its connection and the bytes after it, so a
     * handler that moves the connection to another loop takes them along. */
    ac__conn_t *req_conn;
    const char *req_start;
    const char *req_rest;
    size_t req_rest_len;
    uint64_t handoffs_out; /* connections moved to another loop */
    uint64_t handoffs_in;  /* and taken from one */
    /* --threads: publish bodies received here naming users of other loops, by how they ran
     * (publish.c): sent whole to one loop, split by owner, run with the others parked. */
    uint64_t bodies_forwarded;
    uint64_t bodies_split;
    uint64_t bodies_parked;

    char *rbuf;                       /* the one read buffer of the loop */
    struct ssl_ctx_st *tls;           /* --tls-cert/--tls-key; NULL: plain TCP */
    char *tls_buf;                    /* the one plaintext buffer of the loop, with TLS */
    ac__http_t *scratch_http;         /* parser state for requests that arrive whole */
    ac__sbuf_t reply;                 /* publish answers are written here, then copied out once */
    ac__sbuf_t fwd_reply;             /* and answers to bodies other loops sent here (--threads) */
    struct ac__api_item_s *pub_items; /* the events of the body being published (publish.c) */
    size_t pub_items_cap;
    struct ac__outq_s *outq_cache; /* idle output queues for reuse */
    size_t outq_cached;
    int rbuf_busy;

    /* ac_emit()'s queue: the only state other threads touch, under emit_lock. */
    uv_mutex_t emit_lock;
    struct emit_node_s *emit_head;
    struct emit_node_s *emit_tail;
    size_t emit_count;
    int emit_closed;
    int emit_async_ready;

    int started;
    int shutting_down;
    ac_server_shutdown_cb shutdown_cb;
    void *shutdown_arg;

    /* counters */
    uint64_t deliveries_total;
    uint64_t evictions_total;
    uint64_t stale_total;
    uint64_t slow_total;
    uint64_t rate_limited_total;
    uint64_t http_requests_total;
    uint64_t http_errors_total;
    uint64_t queued_bytes;
    uint64_t accepted_total;
    uint64_t messages_total;
    uint64_t closes_std[16]; /* closes we sent with 1000 + i */
    uint64_t closes_app[16]; /* closes we sent with 4000 + i */
    /* publish-to-send latency of event frames, le = AC__LAT_BOUNDS_US[i] */
    uint64_t lat_buckets[AC__LAT_NBUCKETS + 1];
    uint64_t lat_count;
    double lat_sum_s;

    ac_message_cb message_cb; /* user messages: an embedded agent */
    void *message_arg;
    struct ac__static_s *statics;  /* web files read once, then served from memory */
    struct ac__webhook_s *webhook; /* --message-webhook */
    uint64_t duplicates_total;
    /* Outbound HTTP and identity providers. */
    struct ac__outbound_s *outbound;   /* created on first use; closed with the handles */
    struct ac__jwks_s *jwks;           /* --jwt-jwks-file / --jwt-jwks-url; NULL: none */
    struct ac__authproxy_s *authproxy; /* --auth=proxy */
};

/* Milliseconds since the server was created, on the loop clock. */
static inline uint64_t ac__server_now(const ac_server_t *s)
{
    return uv_now(s->loop) - s->start_ms;
}

/* Fan-out of one frame to a user's connections (the broker's deliver callback). */
unsigned ac__server_deliver(void *arg, ac__user_t *u, ac__buf_t *frame);

/* A user connection closes: the broker is told, then it leaves the manager. */
void ac__server_conn_leave(ac_server_t *s, ac__conn_t *c);

/* Publisher sockets: listed for pings, the stale sweep and shutdown. They reuse the
 * connection's manager links (m.prev/m.next), never attached to a user. */
void ac__server_agent_add(ac_server_t *s, ac__conn_t *c);
void ac__server_agent_remove(ac_server_t *s, ac__conn_t *c);

/* Counts a close code the server sent. */
void ac__server_count_close(ac_server_t *s, unsigned code);

/* Records the publish-to-send latency of one event frame. */
void ac__server_observe_latency(ac_server_t *s, uint64_t ns);

/* The outbound HTTP client (net/outbound.h), created on first use; NULL once shutdown
 * has closed it or when it cannot be created. */
struct ac__outbound_s *ac__server_outbound(ac_server_t *s);

/* Called by conn.c when a connection is freed, so shutdown can finish. */
void ac__server_conn_freed(ac_server_t *s);

/* One loop's part of ac_server_start() and ac_server_shutdown() (the public ones, in
 * gateway/server.c, also run the other loops of a group). */
int ac__server_start_loop(ac_server_t *s);
int ac__server_shutdown_loop(ac_server_t *s, ac_server_shutdown_cb cb, void *arg);

/* net/'s part of the server: buffers allocated by ac__server_net_init() (0 or AC_ENOMEM)
 * and, in dispose, the output queue cache and the sockets too. */
int ac__server_net_init(ac_server_t *s);
void ac__server_net_dispose(ac_server_t *s);

#endif
