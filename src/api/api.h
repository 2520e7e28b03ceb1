/* The HTTP API and the application side of user WebSockets: routing, authentication,
 * publish validation, stats, health, metrics. net/ calls in with complete requests and
 * messages; this layer decides and calls back into net/ to answer. */
#ifndef AC_API_API_H
#define AC_API_API_H

#include <stddef.h>

#include "agentcast.h"
#include "net/conn.h"
#include "net/http.h"

/* What net/ calls: the entries below, as its handler table (router.c). */
extern const ac__net_handlers_t ac__api_handlers;

/* Handles one complete HTTP request on `c` (answers it, or upgrades the connection). */
void ac__api_http_request(ac__conn_t *c, const ac__http_req_t *req);

/* Handles one complete message from a user's WebSocket (text is valid UTF-8). */
void ac__api_ws_message(ac__conn_t *c, const char *p, size_t len, int binary);

/* POST /v1/publish (publish.c). */
void ac__api_publish(ac__conn_t *c, const ac__http_req_t *req);

/* GET /ws: the handshake of a user connection (usersock.c). */
void ac__api_ws_handshake(ac__conn_t *c, const ac__http_req_t *req);

/* GET /v1/agent: the handshake of a publisher socket (usersock.c). */
void ac__api_agent_handshake(ac__conn_t *c, const ac__http_req_t *req);

/* One message on a publisher socket: a publish body, answered with one frame (publish.c). */
void ac__api_agent_message(ac__conn_t *c, const char *p, size_t len, int binary);

/* Closes runs silent for --run-timeout (publishing their agent_error) and forgets closed
 * runs after --history-ttl (publish.c). Called by the sweep. */
void ac__api_expire_runs(ac_server_t *s);

/* GET /v1/runs/{run_id} (publish.c). */
void ac__api_run_get(ac__conn_t *c, const ac__http_req_t *req, const char *id, size_t len);

/* Validates and publishes one event (loop thread): what ac_emit() queues ends here
 * (publish.c). Calls cb once with the outcome (status, result, reason naming the field or
 * rule): before returning with the memory broker, when Redis answers with a cluster. */
void ac__emit_start(ac_server_t *s, const ac_event_t *event, ac_emit_cb cb, void *arg);

/* Publishes an event the gateway itself makes for a user (a user_message: its type is
 * reserved, so no publisher can), through the same path as every event: seq, history,
 * fan-out, with either broker. `data` (an object) and the strings are borrowed for the call.
 * Calls cb exactly once with the outcome (0 and the seq, or AC_EUNAVAIL / AC_ENOMEM with a
 * reason): before returning with the memory broker, when Redis answers with a cluster
 * (publish.c). */
void ac__api_publish_own(ac_server_t *s, ac__str_t user, ac__ev_type_t type, ac__str_t thread,
                         const json_t *data, ac_emit_cb cb, void *arg);

/* Runs every queued ac_emit() now (embed.c); the uv_async_t callback. */
void ac__embed_drain(ac_server_t *s);

/* Refuses further ac_emit() calls and answers what is still queued with AC_ECLOSED. */
void ac__embed_close(ac_server_t *s);

/* Static files: `name` inside `dir` (static.c). */
void ac__api_static(ac__conn_t *c, const ac__http_req_t *req, const char *dir, const char *name,
                    size_t nlen);
void ac__api_static_free(ac_server_t *s);

/* Posts a user message to --message-webhook in the background (webhook.c); delivery
 * failures come back to the sender as an error envelope. Returns 0 or -1. */
int ac__webhook_post(ac_server_t *s, const ac_message_t *m);
void ac__webhook_cancel(ac_server_t *s); /* at shutdown */
void ac__webhook_free(ac_server_t *s);

/* POST /v1/disconnect (usersock.c). */
void ac__api_disconnect(ac__conn_t *c, const ac__http_req_t *req);

/* The broker's view of this node's connections (usersock.c). */
void ac__api_broker_host(ac_server_t *s, ac__broker_host_t *h);

/* With a cluster broker: the run timeout publishes through it (publish.c). */
void ac__api_cluster_init(ac_server_t *s);

/* A connection with publishes still awaiting the broker is being freed: their answers
 * will be dropped (publish.c). */
void ac__api_pend_orphan(ac__conn_t *c);

/* A request answered later (the broker's reply): an HTTP request (the connection stops
 * reading until then), a publisher socket's message (on its ordered FIFO, c->pend), an
 * ac_emit() or the gateway's own run timeout. publish.c owns the life cycle. */
enum { PEND_HTTP, PEND_AGENT, PEND_EMIT, PEND_TIMEOUT, PEND_CLOSE };

typedef struct ac__pend_s {
    struct ac__pend_s *next;
    struct ac__pend_s *last; /* the FIFO's head only: its newest entry */
    size_t count;            /* the FIFO's head only: entries */
    ac_server_t *s;
    ac__conn_t *c; /* NULL once the connection is gone */
    int kind;
    int keep_alive;
    int ready;        /* agent FIFO: the answer is in `frame` */
    ac__buf_t *frame; /* agent FIFO: the answer */
    ac_emit_cb cb;    /* ac_emit() */
    void *cb_arg;
    size_t n;
    int is_array;        /* a publish body that was an array */
    int by_conn;         /* POST /v1/disconnect named a connection_id */
    uint8_t *direct;     /* per event */
    uint8_t *types;      /* per event: ac__ev_type_t, for the counters */
    unsigned close_code; /* PEND_CLOSE: a publisher socket closed once the answers before */
    char *close_reason;  /* it went out */
} ac__pend_t;

/* A protocol error on a publisher socket whose answers are still pending: the close waits
 * its turn behind them on the FIFO. 1 when queued; 0: close now (net/ does). */
int ac__api_agent_fail(ac__conn_t *c, unsigned code, const char *reason);

ac__pend_t *ac__api_pend_new_http(ac__conn_t *c, int keep_alive);
void ac__api_pend_free(ac__pend_t *p);

/* Checks the Bearer API key when one is configured; answers 401 and returns -1 when it
 * is missing or wrong (router.c). */
int ac__api_check_key(ac__conn_t *c, const ac__http_req_t *req);

/* 1 when p[0..n) has no control characters (so it is safe in a log line) and n is in
 * 1..max. */
int ac__api_label_ok(const char *p, size_t n, size_t max);

#endif
