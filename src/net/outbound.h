/* Outbound HTTP(S): libcurl's multi interface driven by the server's libuv loop (one
 * uv_poll_t per socket curl opens, one uv_timer_t for curl's timeouts). The one client for
 * every call the gateway makes: the message webhook, the JWKS fetch, the connect proxy.
 * https:// is verified (system trust store, or --outbound-ca-file), connections are reused,
 * every request has a deadline and the requests in flight are bounded. It never retries:
 * callers decide. Loop thread only. */
#ifndef AC_NET_OUTBOUND_H
#define AC_NET_OUTBOUND_H

#include <stddef.h>
#include <uv.h>

typedef struct ac__outbound_s ac__outbound_t;
typedef struct ac__outreq_s ac__outreq_t;

/* Requests in flight at once (past it ac__outbound_request() answers AC_EBUSY), and open
 * connections per host (more requests to one host wait for one of them). */
#define AC__OUTBOUND_MAX_INFLIGHT 1024
#define AC__OUTBOUND_MAX_HOST_CONNS 32

typedef struct ac__outbound_opts_s {
    const char *ca_file; /* PEM bundle that replaces the system trust store; NULL: system */
} ac__outbound_opts_t;

typedef struct ac__outreq_opts_s {
    const char *url;  /* http:// or https:// (anything else: AC_EINVAL) */
    const char *body; /* POST this body when not NULL, else GET */
    size_t body_len;
    const char *const *headers; /* "Name: value" lines, NULL-terminated; NULL: none */
    unsigned timeout_ms;        /* the whole request, connecting included (> 0) */
    size_t max_response;        /* body bytes kept; a longer body is an error */
} ac__outreq_opts_t;

typedef struct ac__outres_s {
    long status;      /* HTTP status; 0 when no response arrived */
    const char *body; /* NUL-terminated (borrowed for the callback's duration) */
    size_t body_len;
    const char *error; /* NULL with a complete response; else what failed, for logs */
    int timed_out;     /* the deadline passed */
} ac__outres_t;

/* Called exactly once per accepted request, on the loop thread, never from inside
 * ac__outbound_request(). The request handle is gone when it is called. */
typedef void (*ac__outreq_cb)(void *arg, const ac__outres_t *res);

/* A client on `loop` (borrowed). Starts no handle until the first request. NULL with
 * *err (AC_ENOMEM, AC_EINVAL when ca_file holds no PEM certificate) on failure. Closed (and
 * freed) with ac__outbound_close(); one that never made a request is freed at once. */
ac__outbound_t *ac__outbound_new(uv_loop_t *loop, const ac__outbound_opts_t *opts, int *err);

/* Starts one request; url, body and headers are copied. Returns 0 (cb will be called once)
 * and, when `req` is not NULL, the handle ac__outbound_cancel() takes; or AC_EINVAL (a URL
 * that is not http(s)://), AC_EBUSY (AC__OUTBOUND_MAX_INFLIGHT in flight), AC_ENOMEM,
 * AC_ECLOSED (closing): cb is then never called. */
int ac__outbound_request(ac__outbound_t *ob, const ac__outreq_opts_t *opts, ac__outreq_cb cb,
                         void *arg, ac__outreq_t **req);

/* Abandons a request whose callback has not run yet: it never will. */
void ac__outbound_cancel(ac__outreq_t *req);

/* Requests in flight now. */
unsigned ac__outbound_inflight(const ac__outbound_t *ob);

/* Completes every request still in flight with an error ("shutting down"), closes the
 * connections and handles, frees the client, then calls done(arg) (from a close callback).
 * Calling ac__outbound_request() from those callbacks gets AC_ECLOSED. */
void ac__outbound_close(ac__outbound_t *ob, void (*done)(void *arg), void *arg);

#endif
