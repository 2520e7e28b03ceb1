/* libFuzzer target: the HTTP request path of a connection (src/net/http.h), driven the way
 * conn.c's http_input() drives it: pieces of a request, the scratch parser and its clone,
 * DONE, the request as the API reads it (query, headers, accept key), then reset and the
 * pipelined remainder. Not the API's answers: only what the parser hands them. */

/* Input: byte 0 is the length of the first read (0: everything in one read); byte 1 picks
 * the body limit (bits 0-1: 1, 64, 4096, 1 MiB) and the length of every later read (bits
 * 2-7, 0: the rest at once); the bytes after them are what the client sends. Every read and
 * the connection's kept bytes live in heap blocks of their exact size, so ASan sees any read
 * past them. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agentcast.h"
#include "net/http.h"
#include "net/ws.h"

#define FUZZ_NAME "fuzz_http"
#include "fuzz_common.h"

/* What a connection in its HTTP phase holds between reads. */
typedef struct sim_s {
    ac__http_t *scratch; /* the server's parser for requests that arrive whole */
    ac__http_t *http;    /* the connection's own parser while a request is partial */
    char *in;            /* the connection's kept bytes (exact size), or NULL */
    size_t in_len;
    int open; /* 0 once the connection left HTTP (error, close, upgrade) */
} sim_t;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_quiet_logs(AC_LOG_ERROR);
    return 0;
}

static int within(const char *p, size_t n, const char *buf, size_t len)
{
    return p >= buf && (size_t)(p - buf) <= len && n <= len - (size_t)(p - buf);
}

/* What the API layer reads from a request (router.c, usersock.c), with the buffer sizes it
 * uses, each in a block of its exact size. */
static void query_lookups(const ac__http_req_t *req)
{
    static const struct {
        const char *name;
        size_t outsz;
    } keys[] = {{"user_id", 8192}, {"token", 8192}, {"thread_id", 257},
                {"last_seq", 32},  {"epoch", 17},   {"", 8}};
    char *q = req->query ? dup_exact(req->query, req->query_len) : NULL;

    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        char *out = malloc(keys[i].outsz);
        check(out != NULL, "malloc");
        long n = ac__http_query_get(q, req->query_len, keys[i].name, out, keys[i].outsz);
        check(n >= -2, "query_get: return below -2");
        if (n >= 0) {
            check((size_t)n < keys[i].outsz, "query_get: value does not fit out");
            check(out[n] == '\0', "query_get: value not NUL-terminated");
        }
        free(out);
    }
    free(q);
}

/* A value that is exactly one token: short, no comma, no NUL, no blank at either end. */
static int is_one_token(const char *v, size_t n)
{
    return n > 0 && n < 64 && memchr(v, ',', n) == NULL && memchr(v, '\0', n) == NULL &&
           v[0] != ' ' && v[0] != '\t' && v[n - 1] != ' ' && v[n - 1] != '\t';
}

static void header_checks(const ac__http_req_t *req)
{
    for (int i = 0; i < AC__H_COUNT; i++) {
        if (req->headers[i] == NULL) {
            check(req->header_lens[i] == 0, "absent header with a length");
            continue;
        }
        char *v = dup_exact(req->headers[i], req->header_lens[i]);
        size_t n = req->header_lens[i];
        /* The tokens usersock.c and conn.c look for, and one from the header itself. */
        (void)ac__http_has_token(v, n, "websocket");
        (void)ac__http_has_token(v, n, "upgrade");
        (void)ac__http_has_token(v, n, "keep-alive");
        (void)ac__http_has_token(v, n, "");
        if (is_one_token(v, n)) {
            char tok[64];
            memcpy(tok, v, n);
            tok[n] = '\0';
            check(ac__http_has_token(v, n, tok) == 1, "has_token: one token not found in itself");
        }
        if (i == AC__H_WS_KEY) {
            char accept[29];
            if (ac__ws_accept_key(v, n, accept) == 0)
                check(strlen(accept) == 28, "accept key: not 28 characters");
        }
        free(v);
    }
}

/* The request as ac__api_http_request() would get it, and its answer built. */
static void handle_request(const ac__http_t *h, const char *buf, size_t len, size_t consumed)
{
    ac__http_req_t req;

    ac__http_request(h, buf, &req);
    check(req.method <= 255, "method out of range");
    check(within(req.path, req.path_len, buf, len), "path outside the bytes");
    if (req.query != NULL) {
        check(within(req.query, req.query_len, buf, len), "query outside the bytes");
        check(req.query == req.path + req.path_len + 1 && req.query[-1] == '?',
              "query does not follow path and '?'");
        check(memchr(req.path, '?', req.path_len) == NULL, "'?' left in the path");
    }
    for (int i = 0; i < AC__H_COUNT; i++) {
        if (req.headers[i] != NULL)
            check(within(req.headers[i], req.header_lens[i], buf, consumed),
                  "header outside its request");
    }
    check(req.body_len <= h->max_body, "body over max_body");
    check(req.body_len == 0 || req.body != NULL, "body length without a body");
    if (req.body_len > 0) {
        char *b = dup_exact(req.body, req.body_len);
        free(b);
    }
    query_lookups(&req);
    header_checks(&req);

    static const unsigned statuses[] = {200, 400, 404, 413, 426, 431, 503, 999};
    unsigned status = statuses[(req.path_len + req.body_len) % 8];
    ac__buf_t *r = ac__http_response(status, "application/json", "Allow: GET\r\n", req.body,
                                     req.body_len, req.keep_alive);
    check(r != NULL, "response: NULL");
    check(r->len >= req.body_len && memcmp(r->data, "HTTP/1.1 ", 9) == 0, "response: malformed");
    check(req.body_len == 0 || memcmp(r->data + r->len - req.body_len, req.body, req.body_len) == 0,
          "response: body not at the end");
    ac__buf_unref(r);
}

/* One read, as http_input() in conn.c handles it. */
static void sim_read(sim_t *c, const char *p, size_t n)
{
    const char *buf = p;
    size_t len = n;

    if (c->in != NULL) {
        char *grown = realloc(c->in, c->in_len + n);
        check(grown != NULL, "realloc");
        memcpy(grown + c->in_len, p, n);
        c->in = grown;
        c->in_len += n;
        buf = c->in;
        len = c->in_len;
    }
    while (c->open && len > 0) {
        size_t consumed = 0;
        int scratch = c->http == NULL;

        if (scratch) {
            c->http = c->scratch;
            ac__http_reset(c->http);
        }
        ac__http_status_t st = ac__http_feed(c->http, buf, len, &consumed);
        check(st >= AC__HTTP_BODY_TOO_BIG && st <= AC__HTTP_DONE, "feed: unknown status");
        if (st == AC__HTTP_MORE) {
            check(c->http->parsed == len, "MORE before every byte was parsed");
            if (scratch) {
                c->http = ac__http_clone(c->scratch);
                check(c->http != NULL, "clone");
            }
            if (c->in == NULL) {
                c->in = dup_exact(buf, len);
                c->in_len = len;
            }
            return;
        }
        int upgrade = 0;
        if (st == AC__HTTP_DONE) {
            check(consumed > 0 && consumed <= len, "DONE: consumed out of range");
            upgrade = c->http->parser.upgrade;
            /* conn.c takes the parser's count as the end of an upgrade request too (what
             * follows is frames): nothing to recompute here. */
            handle_request(c->http, buf, len, consumed);
        }
        int keep = st == AC__HTTP_DONE && !upgrade && http_should_keep_alive(&c->http->parser);
        if (c->http == c->scratch)
            c->http = NULL;
        else if (!keep) {
            ac__http_free(c->http);
            c->http = NULL;
        } else {
            ac__http_reset(c->http);
        }
        if (!keep) {
            /* An error answer, Connection: close, or the switch to WebSocket frames. */
            c->open = 0;
            return;
        }
        if (c->in != NULL) {
            size_t rest = c->in_len - consumed;
            char *kept = rest ? dup_exact(c->in + consumed, rest) : NULL;
            free(c->in);
            c->in = kept;
            c->in_len = rest;
            buf = c->in;
            len = c->in_len;
        } else {
            buf += consumed;
            len -= consumed;
        }
        if (c->http != NULL && len == 0) {
            ac__http_free(c->http);
            c->http = NULL;
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t max_bodies[] = {1, 64, 4096, 1024 * 1024};
    sim_t c = {0};

    if (size < 2)
        return 0;
    size_t first = data[0];
    size_t step = data[1] >> 2;
    const char *stream = (const char *)data + 2;
    size_t len = size - 2;

    c.scratch = ac__http_new(max_bodies[data[1] & 3]);
    check(c.scratch != NULL, "http_new");
    c.open = 1;
    size_t off = 0;
    while (c.open && off < len) {
        size_t n = len - off;
        if (off == 0 && first > 0 && first < n)
            n = first;
        else if (off > 0 && step > 0 && step < n)
            n = step;
        char *chunk = dup_exact(stream + off, n);
        sim_read(&c, chunk, n);
        free(chunk);
        off += n;
    }
    ac__http_free(c.http);
    ac__http_free(c.scratch);
    free(c.in);
    return 0;
}
