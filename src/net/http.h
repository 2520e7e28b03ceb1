/* HTTP/1.1 requests, parsed with Debian's http-parser over a connection's accumulated
 * bytes, and responses with JSON bodies. Header values are kept as offsets into the
 * accumulated bytes, so nothing is copied but the body. */
#ifndef AC_NET_HTTP_H
#define AC_NET_HTTP_H

#include <http_parser.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

/* Request line and headers larger than this get 431. */
#define AC__MAX_HEAD (16 * 1024)

typedef struct ac__span_s {
    uint32_t off;
    uint32_t len;
} ac__span_t;

enum {
    AC__H_HOST,
    AC__H_ORIGIN,
    AC__H_AUTHORIZATION,
    AC__H_UPGRADE,
    AC__H_CONNECTION,
    AC__H_WS_KEY,
    AC__H_WS_VERSION,
    AC__H_COOKIE, /* forwarded to --auth-proxy-url */
    AC__H_COUNT
};

/* Per-connection request state; exists only while the connection speaks HTTP. */
typedef struct ac__http_s {
    http_parser parser;
    uint32_t parsed; /* bytes of conn->in already fed to the parser */
    ac__span_t url;
    ac__span_t field; /* the header name being read */
    ac__span_t headers[AC__H_COUNT];
    int cur_header; /* index in headers, -1 for one we do not keep, -2 none */
    int last_was_value;
    int headers_done;
    int message_done;
    int too_big;       /* body over the limit */
    int head_too_big;  /* request line and headers over AC__MAX_HEAD */
    uint32_t head_end; /* where the last URL/header byte seen so far ends */
    uint32_t seen;     /* bit i: headers[i] was present */
    size_t max_body;
    ac__sbuf_t body;
} ac__http_t;

/* A complete request, as the API layer sees it. Pointers are valid until the handler
 * returns. */
typedef struct ac__http_req_s {
    unsigned method; /* enum http_method */
    const char *path;
    size_t path_len;
    const char *query; /* after '?', or NULL */
    size_t query_len;
    const char *headers[AC__H_COUNT]; /* NULL when absent */
    size_t header_lens[AC__H_COUNT];
    const char *body;
    size_t body_len;
    int upgrade;    /* a WebSocket upgrade was asked for */
    int keep_alive; /* the client wants the connection kept */
} ac__http_req_t;

ac__http_t *ac__http_new(size_t max_body);
void ac__http_free(ac__http_t *h);
/* A copy that owns the body so far (taken from `h`, which is left without one). NULL
 * when out of memory. */
ac__http_t *ac__http_clone(ac__http_t *h);

/* Resets for the next request on a kept-alive connection. */
void ac__http_reset(ac__http_t *h);

typedef enum {
    AC__HTTP_MORE = 0,          /* need more bytes */
    AC__HTTP_DONE = 1,          /* a whole request is ready; *consumed bytes belong to it */
    AC__HTTP_BAD = -1,          /* malformed: 400 */
    AC__HTTP_HEAD_TOO_BIG = -2, /* 431 */
    AC__HTTP_BODY_TOO_BIG = -3  /* 413 */
} ac__http_status_t;

/* Feeds the bytes of `buf[0..len)` not yet parsed. */
ac__http_status_t ac__http_feed(ac__http_t *h, const char *buf, size_t len, size_t *consumed);

/* Fills `req` from the parsed state and the accumulated bytes. */
void ac__http_request(const ac__http_t *h, const char *buf, ac__http_req_t *req);

/* A whole response in one buffer. `extra_headers` is "" or lines ending in \r\n. */
ac__buf_t *ac__http_response(unsigned status, const char *content_type, const char *extra_headers,
                             const char *body, size_t body_len, int keep_alive);

/* The standard reason phrase for a status. */
const char *ac__http_reason(unsigned status);

/* Case-insensitive search of a comma-separated header value for `token`. */
int ac__http_has_token(const char *value, size_t len, const char *token);

/* Looks up `name` in a query string; decodes %XX and '+' into out (size outsz, NUL-ended).
 * Returns the decoded length, -1 when absent, -2 when malformed or too long. */
long ac__http_query_get(const char *query, size_t qlen, const char *name, char *out, size_t outsz);

#endif
