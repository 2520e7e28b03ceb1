/* The server object shared by net/ and api/: options, the loop's handles, the core
 * objects (manager, emitter, broker) and counters. Private to the library. */
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

#define AC__READ_BUF_SIZE (64 * 1024)
#define AC__LAT_NBUCKETS 14
extern const double AC__LAT_BOUNDS_S[AC__LAT_NBUCKETS];
#define AC__CLOSE_TIMEOUT_MS 2000

struct ac_server_s {
    uv_loop_t *loop;
    ac_server_opts_t opts;
    char *listen_host; /* parsed from opts.listen */
    int listen_port;
    int bound_port;

    uv_poll_t listener; /* on listen_fd: accepts (net/server.c) */
    int listen_fd;
    int spare_fd;            /* kept open for when descriptors run out (shed_pending) */
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

    char *rbuf;                       /* the one read buffer of the loop */
    struct ssl_ctx_st *tls;           /* --tls-cert/--tls-key; NULL: plain TCP */
    char *tls_buf;                    /* the one plaintext buffer of the loop, with TLS */
    ac__http_t *scratch_http;         /* parser state for requests that arrive whole */
    ac__sbuf_t reply;                 /* publish answers are written here, then copied out once */
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

#endif
