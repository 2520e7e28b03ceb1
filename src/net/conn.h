/* One TCP connection: HTTP requests until it upgrades, then a WebSocket. Owns the
 * socket, the output queue (references to shared frames, flushed once per loop turn with
 * one write in flight) and the partial input. The only code that reads or writes a
 * socket. Loop thread only. */
#ifndef AC_NET_CONN_H
#define AC_NET_CONN_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/buf.h"
#include "core/manager.h"
#include "net/http.h"
#include "net/inbox.h"
#include "net/server.h"

typedef enum {
    AC__CONN_HTTP = 0, /* reading HTTP requests */
    AC__CONN_WS,       /* an open WebSocket */
    AC__CONN_CLOSING,  /* output draining; input read only for a close frame */
    AC__CONN_CLOSED    /* uv_close() called; freed in its callback */
} ac__conn_state_t;

enum {
    AC__CF_DIRTY = 1 << 0,          /* on the server's flush list */
    AC__CF_SHUTDOWN_AFTER = 1 << 1, /* half-close once the queue drains */
    AC__CF_CLOSE_AFTER = 1 << 2,    /* close once the queue drains */
    AC__CF_IN_DL = 1 << 3,          /* on the deadline list */
    AC__CF_CLOSE_SENT = 1 << 4,     /* our close frame is queued */
    AC__CF_WS = 1 << 5,             /* upgraded to a WebSocket */
    AC__CF_LISTED = 1 << 6,         /* on the server's list of publisher sockets */
    AC__CF_DISCARD = 1 << 7         /* input after a protocol error: ignored until EOF */
};

enum {
    AC__KIND_USER = 0,   /* GET /ws: a user's connection, attached to the manager */
    AC__KIND_AGENT = 1,  /* GET /v1/agent: a publisher socket, on the server's agent list */
    AC__KIND_JOINING = 2 /* a user's connection waiting for its greeting (redis broker) */
};

typedef struct ac__outitem_s {
    ac__buf_t *buf;
    uint32_t off;  /* bytes of buf already written */
    uint32_t live; /* a live event (not a replay): its send time is measured */
} ac__outitem_t;

#define AC__OUTQ_INLINE 4 /* frames a queue holds before it allocates */
/* Idle queues the server keeps for reuse. A loop turn that writes to N connections needs N
 * queues at once: with 1,000 users x 3 connections, a cache of 1,024 left ~2,000 malloc +
 * free pairs per turn (s4: 200k -> 223k deliveries/s at 8,192, 10% less CPU). At most
 * 8,192 x ~300 B are kept, and only after a turn that needed them. */
#define AC__OUTQ_CACHE 8192

/* Exists only while output is pending (then back to the server's cache). */
typedef struct ac__outq_s {
    struct ac__outq_s *next_free; /* the server's cache */
    ac__outitem_t *items;         /* ring: inline_items, or allocated past AC__OUTQ_INLINE */
    uint32_t cap;
    uint32_t head;
    uint32_t count;
    uint64_t bytes;  /* unwritten bytes of every queued item */
    uint64_t exempt; /* bytes of replayed history: not counted against the cap */
    /* A user connection whose backlog reached --max-queue-bytes is not queued more: it
     * keeps its place in its user's history (the seq of the first event not yet queued),
     * and is refilled from there as the socket drains. 0 when it is not lagging. */
    uint64_t lag_seq;
    uint32_t slow_since; /* server ms (| 1) since the backlog is over the cap; 0: it is not */
    ac__outitem_t inline_items[AC__OUTQ_INLINE];
} ac__outq_t;

/* Bytes received and not yet consumed; exists only while some are. */
typedef struct ac__bytes_s {
    uint32_t len;
    uint32_t cap;
    char p[];
} ac__bytes_t;

/* The socket's poll state (ac__conn_t.ioflags). */
enum {
    AC__IO_PAUSED = 1 << 0,  /* reading stopped (backpressure, a request answered later) */
    AC__IO_BLOCKED = 1 << 1, /* the kernel's send buffer is full: waiting to be writable */
    AC__IO_POLL_R = 1 << 2,  /* the poll handle watches readable */
    AC__IO_POLL_W = 1 << 3,  /* and writable */
    AC__IO_OUTFULL = 1 << 4  /* reading stopped: the peer does not read our answers */
};

/* Per-connection memory, on x86_64 with libuv 1.44 (sizes in bytes):
 *   io         160  the libuv poll handle on the socket (io.data points at the server); we
 *                   read and write the socket ourselves: a uv_tcp_t would be 248, plus a
 *                   uv_write_t of 192 per write in flight
 *   m           32  manager link: user list prev/next, user, connection id
 *   out          8  pending output, NULL when none
 *   in           8  partial input (request or frame), NULL when none
 *   msg          8  a fragmented message being assembled, NULL when none
 *   http         8  parser state of an incomplete request, else NULL
 *   thread_id    8  the thread_id= label, NULL when none
 *   ssl          8  the TLS session (NULL without --tls-cert; a session costs several KB)
 *   pend         8  publishes answered later (redis broker), NULL when none
 *   dirty_next   8  flush list link
 *   dl_prev/next 16 deadline list links (HTTP phase and closing only)
 *   deadline     4  server ms when the connection is closed if still on the list
 *   last_rx      4  server ms (wrapping) of the last byte received
 *   tokens       4  inbound rate bucket (thousandths of a frame)
 *   state, flags, msg_opcode, kind + ioflags  4
 * 288 in all (sizeof, checked by hand with this libuv); plus the user's record (64 + id)
 * shared by the user's connections; nothing else per connection while idle. */
struct ac__conn_s {
    uv_poll_t io;
    ac__mconn_t m;
    ac__outq_t *out;
    ac__bytes_t *in;
    ac__bytes_t *msg;
    ac__http_t
        *http; /* while a request is incomplete, or the server's scratch while one is handled */
    char *thread_id;
    struct ssl_st *ssl;      /* TLS session, NULL for plain TCP */
    struct ac__pend_s *pend; /* publishes awaiting the broker, oldest first (api/publish.c) */
    struct ac__conn_s *dirty_next;
    struct ac__conn_s *dl_prev;
    struct ac__conn_s *dl_next;
    uint32_t deadline;
    uint32_t last_rx;
    uint32_t tokens; /* --client-rate bucket, in thousandths of a frame */
    uint8_t state;
    uint8_t flags;
    uint8_t msg_opcode;
    uint8_t kind : 2;    /* AC__KIND_* */
    uint8_t ioflags : 6; /* AC__IO_* */
};

#define AC__CONN_OF(mconn) ((ac__conn_t *)((char *)(mconn)-offsetof(ac__conn_t, m)))

static inline ac_server_t *ac__conn_server(const ac__conn_t *c)
{
    return c->io.data;
}

/* Takes an accepted socket (non-blocking): a new connection in its HTTP phase. On failure
 * the socket is closed. */
void ac__conn_accept(ac_server_t *s, int fd);

/* The connection's socket, or -1 once it is closing. */
int ac__conn_fd(const ac__conn_t *c);

/* Queues a data frame (takes its own reference). Returns 1 when it will be sent, 0 when
 * the connection is not open (or was closed as too slow). A user connection whose backlog
 * is at --max-queue-bytes does not queue an event of its user's stream: it takes it from
 * the history when the socket drains (so a burst costs no memory per connection). It is
 * closed with 4008 when its backlog stays over the cap for --slow-timeout, or when the
 * events it still needs have left the history. Other connections (publisher sockets, HTTP)
 * stop being read while their unsent answers are over the cap. */
int ac__conn_send(ac__conn_t *c, ac__buf_t *frame);

/* Closes the connection with 4008 when its backlog has been over the cap for
 * --slow-timeout at `now` (the sweep's check for a client that stalled). */
void ac__conn_check_slow(ac__conn_t *c, uint32_t now);

/* Queues a frame replayed from history: allowed past the cap (it is already in memory,
 * shared), so a resume is never refused for its own size. Returns 1, or 0 when closed. */
int ac__conn_send_replay(ac__conn_t *c, ac__buf_t *frame);

/* Queues a control frame or response (takes its own reference); never refused. */
void ac__conn_send_control(ac__conn_t *c, ac__buf_t *frame);

/* Sends an HTTP response (content_type NULL: application/json) and keeps the connection
 * or closes it once written; _error sends {"error": msg}. */
void ac__conn_respond(ac__conn_t *c, unsigned status, const char *content_type, const char *body,
                      size_t len, const char *extra_headers, int keep_alive);
void ac__conn_respond_error(ac__conn_t *c, unsigned status, const char *msg,
                            const char *extra_headers);

/* Completes a WebSocket handshake: 101 with the accept key; the connection is a
 * WebSocket from here on. */
int ac__conn_upgrade(ac__conn_t *c, const char accept_key[29]);

/* Caps the socket's kernel send buffer from --max-queue-bytes (16 KiB..256 KiB; Linux
 * doubles it), so a client that stops reading holds a bounded amount in the kernel too and
 * reaches the 4008 cap instead of hiding megabytes in an autotuned buffer. */
void ac__conn_bound_kernel_buffer(ac__conn_t *c);

/* Starts the closing handshake with `code`; with `announce`, a `closing` envelope goes
 * first. Detaches from the manager at once. No-op unless the WebSocket is open. */
void ac__conn_close_ws(ac__conn_t *c, unsigned code, const char *reason, int announce);

/* An HTTP connection that is done: close once what is queued has been written. */
void ac__conn_end(ac__conn_t *c);

/* An HTTP connection whose request was answered later (a publish through the broker):
 * reading resumes, with any request that arrived meanwhile. */
void ac__conn_http_resume(ac__conn_t *c);

/* A connection upgraded after its handshake was answered later (the connect proxy, a JWKS
 * fetch): reading resumes, and frames that arrived behind the handshake are processed. */
void ac__conn_ws_resume(ac__conn_t *c);

/* Stops (pause 1) or resumes (0) reading a WebSocket: backpressure on a publisher whose
 * answers are pending. Idempotent. */
void ac__conn_read_pause(ac__conn_t *c, int pause);

/* Closes the socket now. */
void ac__conn_destroy(ac__conn_t *c);

/* Flushes every connection on the server's dirty list (the uv_check callback). */
void ac__conn_flush_dirty(ac_server_t *s);

/* Closes connections whose deadline has passed. */
void ac__conn_expire(ac_server_t *s);

/* ---- moving a connection to another loop ---------------------------------------------
 * A user's WebSocket belongs on the loop that owns its user, which is known only once its
 * upgrade request has been read and its token verified. The socket moves (never two poll
 * handles on one socket: the source's is closed first), its TLS session with it, and the
 * input read past the request; the connection object does not (each loop allocates its own). */
typedef struct ac__handoff_s {
    ac__msg_t msg;      /* for the destination's inbox: the sender sets msg.run */
    int fd;             /* the socket, open, non-blocking */
    struct ssl_st *ssl; /* its TLS session (with any input it holds), NULL for plain TCP */
    ac__bytes_t *rest;  /* plaintext read past the request, NULL when none */
    void *app;          /* what the application carries along (the verified user) */
} ac__handoff_t;

/* Takes c's socket, TLS session and unconsumed input into *h (h->msg and h->app are left
 * to the caller) and closes c without closing the socket (it is freed as a gone
 * connection). c must be in its HTTP phase with nothing queued for output (what its TLS
 * session holds unqueued goes along): from its request
 * handler (the bytes after the request go along) or while that request is answered later
 * (the bytes held since). Returns 0, AC_EINVAL when c cannot move (output pending, not
 * HTTP) or AC_ENOMEM; on an error c is untouched. */
int ac__conn_detach(ac__conn_t *c, ac__handoff_t *h);

/* The same with the request itself going along (from its handler only), so the destination
 * reads it again from the start: for a request only another loop can answer. */
int ac__conn_detach_from(ac__conn_t *c, ac__handoff_t *h, int with_request);

/* On the destination loop: a connection on h's socket (takes h->fd, h->ssl and h->rest),
 * in its HTTP phase, not reading, under the handshake deadline. The caller upgrades it
 * (ac__conn_upgrade) or answers it, then calls ac__conn_attach_resume(). NULL when out of
 * memory (the socket and session are then closed and freed). */
ac__conn_t *ac__conn_attach(ac_server_t *s, ac__handoff_t *h);

/* Closes the socket of a hand-off nobody will attach (its destination closed). */
void ac__handoff_drop(ac__handoff_t *h);

/* Processes the input that travelled with an attached connection (what followed its
 * request, then what its TLS session still holds) and starts reading. */
void ac__conn_attach_resume(ac__conn_t *c);

/* "c" + 16 hex digits + NUL. */
void ac__conn_id_str(uint64_t id, char out[18]);
/* Parses the form above; returns 0 or -1. */
int ac__conn_id_parse(const char *s, size_t len, uint64_t *id);

#endif
