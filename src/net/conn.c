/* Connection I/O: accept, read into the loop's one buffer, HTTP request framing, the
 * WebSocket receive path (frame rules, fragments, UTF-8, close handshake), the output
 * queue and its flush (uv_try_write first, then one uv_write in flight), deadlines and
 * closing. What a request or a message means is api/'s business. */
#include <assert.h>
#include <openssl/err.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "core/log.h"
#include "net/conn.h"
#include "net/conn_int.h"
#include "net/tls.h"
#include "net/ws.h"

#define MAX_IOV 64

static void on_close(uv_handle_t *h);

/* ---- deadline list ---------------------------------------------------------------- */

static void dl_remove(ac__conn_t *c)
{
    ac_server_t *s = ac__conn_server(c);

    if (!(c->flags & AC__CF_IN_DL))
        return;
    if (c->dl_prev != NULL)
        c->dl_prev->dl_next = c->dl_next;
    else
        s->dl_head = c->dl_next;
    if (c->dl_next != NULL)
        c->dl_next->dl_prev = c->dl_prev;
    c->dl_prev = c->dl_next = NULL;
    c->flags &= (uint8_t)~AC__CF_IN_DL;
}

static void dl_set(ac__conn_t *c, uint64_t after_ms)
{
    ac_server_t *s = ac__conn_server(c);

    c->deadline = ac__conn_now32(s) + (uint32_t)after_ms;
    if (c->flags & AC__CF_IN_DL)
        return;
    c->dl_prev = NULL;
    c->dl_next = s->dl_head;
    if (s->dl_head != NULL)
        s->dl_head->dl_prev = c;
    s->dl_head = c;
    c->flags |= AC__CF_IN_DL;
}

void ac__conn_expire(ac_server_t *s)
{
    uint32_t now = ac__conn_now32(s);
    ac__conn_t *c = s->dl_head;

    while (c != NULL) {
        ac__conn_t *next = c->dl_next;
        if ((int32_t)(now - c->deadline) >= 0) {
            if (c->state == AC__CONN_HTTP)
                ac__log(AC_LOG_DEBUG, "event=http_timeout");
            ac__conn_destroy(c);
        }
        c = next;
    }
}

/* ---- byte buffers ----------------------------------------------------------------- */

int ac__bytes_append(ac__bytes_t **bp, const char *p, size_t n)
{
    ac__bytes_t *b = *bp;
    size_t len = b ? b->len : 0;
    size_t cap = b ? b->cap : 0;

    if (len + n > UINT32_MAX / 2)
        return AC_E2BIG;
    if (b == NULL || len + n > cap) {
        size_t ncap = cap ? cap : 512;
        while (ncap < len + n)
            ncap *= 2;
        b = realloc(b, sizeof(*b) + ncap);
        if (b == NULL)
            return AC_ENOMEM;
        b->len = (uint32_t)len;
        b->cap = (uint32_t)ncap;
        *bp = b;
    }
    memcpy(b->p + b->len, p, n);
    b->len += (uint32_t)n;
    return 0;
}

/* Keeps the bytes from `off` on; frees the buffer when none are left. */
void ac__bytes_consume(ac__bytes_t **bp, size_t off)
{
    ac__bytes_t *b = *bp;

    if (off >= b->len) {
        free(b);
        *bp = NULL;
        return;
    }
    memmove(b->p, b->p + off, b->len - off);
    b->len -= (uint32_t)off;
}

/* ---- output ----------------------------------------------------------------------- */

static void mark_dirty(ac__conn_t *c)
{
    ac_server_t *s = ac__conn_server(c);

    if (c->flags & AC__CF_DIRTY)
        return;
    c->flags |= AC__CF_DIRTY;
    c->dirty_next = s->dirty;
    s->dirty = c;
}

static int outq_push_raw(ac__conn_t *c, ac__buf_t *b);

/* With TLS the frame is encrypted into the session's write BIO at once (a copy: TLS
 * records are per connection); flush() moves the ciphertext to the queue. */
static int outq_push(ac__conn_t *c, ac__buf_t *b)
{
    if (c->ssl == NULL)
        return outq_push_raw(c, b);
    if (SSL_write(c->ssl, b->data, (int)b->len) <= 0)
        return AC_EINVAL;
    mark_dirty(c);
    return 0;
}

/* Unsent bytes: the queue's, plus ciphertext not yet moved to it. */
static uint64_t backlog(const ac__conn_t *c)
{
    uint64_t n = c->out && c->out->bytes > c->out->exempt ? c->out->bytes - c->out->exempt : 0;
    if (c->ssl != NULL)
        n += BIO_ctrl_pending(SSL_get_wbio(c->ssl));
    return n;
}

static int outq_push_raw(ac__conn_t *c, ac__buf_t *b)
{
    ac__outq_t *q = c->out;

    if (q == NULL) {
        ac_server_t *s = ac__conn_server(c);
        /* Most queues live for one loop turn: reuse them instead of malloc and free. */
        if (s->outq_cache != NULL) {
            q = s->outq_cache;
            s->outq_cache = q->next_free;
            s->outq_cached--;
        } else {
            q = malloc(sizeof(*q));
            if (q == NULL)
                return AC_ENOMEM;
        }
        memset(q, 0, offsetof(ac__outq_t, inline_items));
        q->items = q->inline_items;
        q->cap = AC__OUTQ_INLINE;
        c->out = q;
    }
    if (q->count == q->cap) {
        uint32_t ncap = q->cap * 2;
        ac__outitem_t *items = malloc(ncap * sizeof(*items));
        if (items == NULL)
            return AC_ENOMEM;
        for (uint32_t i = 0; i < q->count; i++)
            items[i] = q->items[(q->head + i) % q->cap];
        if (q->items != q->inline_items)
            free(q->items);
        q->items = items;
        q->cap = ncap;
        q->head = 0;
    }
    q->items[(q->head + q->count) % q->cap] = (ac__outitem_t){ac__buf_ref(b), 0, 0};
    q->count++;
    q->bytes += b->len;
    ac__conn_server(c)->queued_bytes += b->len;
    mark_dirty(c);
    return 0;
}

/* Forgets `n` written bytes from the head of the queue. */
static void outq_consume(ac__conn_t *c, size_t n)
{
    ac__outq_t *q = c->out;
    ac_server_t *s = ac__conn_server(c);

    uint64_t now = 0;

    q->bytes -= n;
    s->queued_bytes -= n;
    while (n > 0) {
        ac__outitem_t *it = &q->items[q->head];
        size_t left = it->buf->len - it->off;
        if (n < left) {
            it->off += (uint32_t)n;
            return;
        }
        n -= left;
        if (it->live && it->buf->t_ns != 0) {
            if (now == 0)
                now = uv_hrtime();
            ac__server_observe_latency(s, now - it->buf->t_ns);
        }
        ac__buf_unref(it->buf);
        q->head = (q->head + 1) % q->cap;
        q->count--;
    }
}

static void outq_free(ac__conn_t *c)
{
    ac__outq_t *q = c->out;

    if (q == NULL)
        return;

    ac_server_t *s = ac__conn_server(c);

    for (uint32_t i = 0; i < q->count; i++)
        ac__buf_unref(q->items[(q->head + i) % q->cap].buf);
    s->queued_bytes -= q->bytes;
    if (q->items != q->inline_items)
        free(q->items);
    c->out = NULL;
    if (s->outq_cached < AC__OUTQ_CACHE) {
        q->next_free = s->outq_cache;
        s->outq_cache = q;
        s->outq_cached++;
    } else {
        free(q);
    }
}

static unsigned outq_iov(const ac__outq_t *q, uv_buf_t *bufs, unsigned max)
{
    unsigned n = 0;

    for (uint32_t i = 0; i < q->count && n < max; i++) {
        const ac__outitem_t *it = &q->items[(q->head + i) % q->cap];
        bufs[n++] = uv_buf_init(it->buf->data + it->off, it->buf->len - it->off);
    }
    return n;
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    free(req);
}

/* The queue is empty: do what was waiting for that. */
static void after_drain(ac__conn_t *c)
{
    if (c->flags & AC__CF_CLOSE_AFTER) {
        ac__conn_destroy(c);
        return;
    }
    if (c->flags & AC__CF_SHUTDOWN_AFTER) {
        uv_shutdown_t *req = malloc(sizeof(*req));
        c->flags &= (uint8_t)~AC__CF_SHUTDOWN_AFTER;
        if (req == NULL || uv_shutdown(req, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
            free(req);
            ac__conn_destroy(c);
        }
    }
}

static void flush(ac__conn_t *c);

static void on_write(uv_write_t *req, int status)
{
    ac__conn_t *c = req->data;
    ac__outq_t *q = c->out;
    size_t n = 0;

    for (uint32_t i = 0; i < q->inflight; i++) {
        const ac__outitem_t *it = &q->items[(q->head + i) % q->cap];
        n += it->buf->len - it->off;
    }
    outq_consume(c, n);
    q->inflight = 0;
    if (ac__conn_gone(c))
        return;
    if (status < 0) {
        ac__log(AC_LOG_DEBUG, "event=write_error error=%s", uv_strerror(status));
        ac__conn_destroy(c);
        return;
    }
    if (q->count > 0) {
        mark_dirty(c);
        return;
    }
    outq_free(c);
    after_drain(c);
}

/* Moves the session's pending ciphertext into the output queue as one buffer. */
static int tls_move_out(ac__conn_t *c)
{
    BIO *wbio = SSL_get_wbio(c->ssl);
    size_t pending = BIO_ctrl_pending(wbio);
    ac__buf_t *b;

    if (pending == 0)
        return 0;
    b = ac__buf_new(pending);
    if (b == NULL)
        return AC_ENOMEM;
    if (BIO_read(wbio, b->data, (int)pending) != (int)pending || outq_push_raw(c, b) != 0) {
        ac__buf_unref(b);
        return AC_ENOMEM;
    }
    ac__buf_unref(b);
    return 0;
}

static void flush(ac__conn_t *c)
{
    ac__outq_t *q;
    uv_buf_t bufs[MAX_IOV];
    unsigned n;
    int r;

    if (ac__conn_gone(c))
        return;
    if (c->ssl != NULL && tls_move_out(c) != 0) {
        ac__conn_destroy(c);
        return;
    }
    q = c->out;
    if (q == NULL || q->inflight > 0)
        return;
    /* Write what the kernel takes now, then hand the rest to one uv_write. */
    while (q->count > 0) {
        size_t total = 0;
        n = outq_iov(q, bufs, MAX_IOV);
        for (unsigned i = 0; i < n; i++)
            total += bufs[i].len;
        r = uv_try_write((uv_stream_t *)&c->tcp, bufs, n);
        if (r == UV_EAGAIN || r == UV_ENOSYS)
            break;
        if (r < 0) {
            ac__log(AC_LOG_DEBUG, "event=write_error error=%s", uv_strerror(r));
            ac__conn_destroy(c);
            return;
        }
        outq_consume(c, (size_t)r);
        if ((size_t)r < total)
            break; /* the kernel's buffer is full */
    }
    if (q->count == 0) {
        outq_free(c);
        after_drain(c);
        return;
    }
    n = outq_iov(q, bufs, MAX_IOV);
    q->req.data = c;
    r = uv_write(&q->req, (uv_stream_t *)&c->tcp, bufs, n, on_write);
    if (r < 0) {
        ac__conn_destroy(c);
        return;
    }
    q->inflight = n;
}

void ac__conn_flush_dirty(ac_server_t *s)
{
    while (s->dirty != NULL) {
        ac__conn_t *c = s->dirty;
        s->dirty = c->dirty_next;
        c->dirty_next = NULL;
        c->flags &= (uint8_t)~AC__CF_DIRTY;
        flush(c);
    }
}

/* Drops queued frames nobody has started writing, so a close can go out next. */
void ac__conn_drop_backlog(ac__conn_t *c)
{
    ac__outq_t *q = c->out;
    uint32_t keep;

    /* Ciphertext cannot be dropped without breaking the TLS stream. */
    if (q == NULL || c->ssl != NULL)
        return;
    keep = q->inflight;
    if (keep == 0 && q->count > 0 && q->items[q->head].off > 0)
        keep = 1;
    while (q->count > keep) {
        ac__outitem_t *it = &q->items[(q->head + q->count - 1) % q->cap];
        q->bytes -= it->buf->len - it->off;
        ac__conn_server(c)->queued_bytes -= it->buf->len - it->off;
        ac__buf_unref(it->buf);
        q->count--;
    }
}

int ac__conn_send(ac__conn_t *c, ac__buf_t *frame)
{
    ac_server_t *s = ac__conn_server(c);

    if (c->state != AC__CONN_WS)
        return 0;
    if (backlog(c) > 0 && backlog(c) + frame->len > s->opts.max_queue_bytes) {
        s->slow_total++;
        ac__log(AC_LOG_WARN, "event=slow_consumer conn=%llx user=%s queued=%llu",
                (unsigned long long)c->m.id, c->m.user ? c->m.user->id : "-",
                (unsigned long long)backlog(c));
        ac__conn_drop_backlog(c);
        ac__conn_close_ws(c, AC_WS_CLOSE_TOO_SLOW, "too slow, resume with last_seq", 0);
        return 0;
    }
    if (outq_push(c, frame) != 0) {
        ac__conn_destroy(c);
        return 0;
    }
    if (c->out != NULL && c->ssl == NULL) {
        ac__outq_t *q = c->out;
        q->items[(q->head + q->count - 1) % q->cap].live = 1;
    }
    return 1;
}

int ac__conn_send_replay(ac__conn_t *c, ac__buf_t *frame)
{
    if (c->state != AC__CONN_WS)
        return 0;
    if (outq_push(c, frame) != 0) {
        ac__conn_destroy(c);
        return 0;
    }
    if (c->ssl == NULL)
        c->out->exempt += frame->len;
    return 1;
}

void ac__conn_send_control(ac__conn_t *c, ac__buf_t *frame)
{
    if (ac__conn_gone(c))
        return;
    if (outq_push(c, frame) != 0)
        ac__conn_destroy(c);
}

/* ---- closing ---------------------------------------------------------------------- */

void ac__conn_destroy(ac__conn_t *c)
{
    ac_server_t *s = ac__conn_server(c);

    if (ac__conn_gone(c))
        return;
    ac__server_conn_leave(s, c);
    ac__server_agent_remove(s, c);
    dl_remove(c);
    c->state = AC__CONN_CLOSED;
    uv_close((uv_handle_t *)&c->tcp, on_close);
}

static void on_close(uv_handle_t *h)
{
    ac__conn_t *c = (ac__conn_t *)h;
    ac_server_t *s = ac__conn_server(c);

    if (c->flags & AC__CF_DIRTY) {
        for (ac__conn_t **pp = &s->dirty; *pp != NULL; pp = &(*pp)->dirty_next) {
            if (*pp == c) {
                *pp = c->dirty_next;
                break;
            }
        }
    }
    if (c->pend != NULL)
        ac__api_pend_orphan(c);
    outq_free(c);
    SSL_free(c->ssl);
    free(c->in);
    free(c->msg);
    ac__http_free(c->http);
    free(c->thread_id);
    free(c);
    ac__server_conn_freed(s);
}

/* Enters the closing state: input is read only for a peer's close frame, output drains,
 * then the write side is shut and the socket closed on EOF or the deadline. */
void ac__conn_begin_closing(ac__conn_t *c, uint64_t timeout_ms)
{
    ac_server_t *s = ac__conn_server(c);

    ac__server_conn_leave(s, c);
    ac__server_agent_remove(s, c);
    c->state = AC__CONN_CLOSING;
    c->flags |= AC__CF_SHUTDOWN_AFTER;
    dl_set(c, timeout_ms);
    if (c->out == NULL)
        after_drain(c);
    else
        mark_dirty(c);
}

void ac__conn_send_close_frame(ac__conn_t *c, unsigned code, const char *reason)
{
    uint8_t payload[125];
    size_t rlen = reason ? strlen(reason) : 0;
    ac__buf_t *b;

    if (rlen > sizeof(payload) - 2)
        rlen = sizeof(payload) - 2;
    payload[0] = (uint8_t)(code >> 8);
    payload[1] = (uint8_t)code;
    if (rlen > 0)
        memcpy(payload + 2, reason, rlen);
    b = ac__frame_raw(AC_WS_CLOSE, payload, code ? 2 + rlen : 0);
    if (b == NULL) {
        ac__conn_destroy(c);
        return;
    }
    c->flags |= AC__CF_CLOSE_SENT;
    ac__server_count_close(ac__conn_server(c), code);
    ac__conn_send_control(c, b);
    ac__buf_unref(b);
}

void ac__conn_end(ac__conn_t *c)
{
    if (c->state == AC__CONN_HTTP)
        ac__conn_begin_closing(c, AC__CLOSE_TIMEOUT_MS);
}

void ac__conn_close_ws(ac__conn_t *c, unsigned code, const char *reason, int announce)
{
    ac_server_t *s = ac__conn_server(c);
    uint64_t timeout = AC__CLOSE_TIMEOUT_MS;

    if (c->state != AC__CONN_WS)
        return;
    if (announce) {
        ac__sbuf_t data = {0};
        if (ac__sbuf_printf(&data, "{\"code\":%u,\"reason\":", code) == 0 &&
            ac__sbuf_json_str(&data, reason, strlen(reason)) == 0 &&
            ac__sbuf_append(&data, "}", 2) == 0) {
            ac__buf_t *b = ac__emitter_server_msg(&s->emitter, "closing", (ac__str_t){0},
                                                  (ac__str_t){0}, data.p, ac__now_ms());
            if (b != NULL) {
                ac__conn_send_control(c, b);
                ac__buf_unref(b);
            }
        }
        ac__sbuf_dispose(&data);
    }
    ac__log(code >= 4000 || code == AC_WS_CLOSE_GOING_AWAY ? AC_LOG_INFO : AC_LOG_DEBUG,
            "event=ws_close conn=%llx code=%u reason=\"%s\"", (unsigned long long)c->m.id, code,
            reason);
    ac__conn_send_close_frame(c, code, reason);
    if (s->shutting_down)
        timeout = (uint64_t)(s->opts.shutdown_timeout * 1000);
    ac__conn_begin_closing(c, timeout);
}

/* ---- HTTP ------------------------------------------------------------------------- */

void ac__conn_respond(ac__conn_t *c, unsigned status, const char *content_type, const char *body,
                      size_t len, const char *extra_headers, int keep_alive)
{
    ac_server_t *s = ac__conn_server(c);
    ac__buf_t *b;

    if (s->shutting_down)
        keep_alive = 0;
    b = ac__http_response(status, content_type ? content_type : "application/json",
                          extra_headers ? extra_headers : "", body, len, keep_alive);
    if (status >= 400)
        s->http_errors_total++;
    if (b == NULL) {
        ac__conn_destroy(c);
        return;
    }
    ac__conn_send_control(c, b);
    ac__buf_unref(b);
    if (!keep_alive && c->state == AC__CONN_HTTP)
        ac__conn_begin_closing(c, AC__CLOSE_TIMEOUT_MS);
}

void ac__conn_respond_error(ac__conn_t *c, unsigned status, const char *msg,
                            const char *extra_headers)
{
    ac__sbuf_t body = {0};
    /* Errors in the request line or headers leave the stream unusable: close. An error
     * about a well-formed request keeps the connection, as HTTP/1.1 allows. */
    int keep = status != 400 && status != 413 && status != 431 && status != 408 && status != 426 &&
               c->http != NULL && !c->http->parser.upgrade &&
               http_should_keep_alive(&c->http->parser);

    if (ac__sbuf_append(&body, "{\"error\":", 9) != 0 ||
        ac__sbuf_json_str(&body, msg, strlen(msg)) != 0 || ac__sbuf_append(&body, "}", 1) != 0) {
        ac__sbuf_dispose(&body);
        ac__conn_destroy(c);
        return;
    }
    ac__conn_respond(c, status, NULL, body.p, body.len, extra_headers, keep);
    ac__sbuf_dispose(&body);
}

/* Most requests arrive whole in one read: they are parsed straight from the loop's read
 * buffer with the server's scratch parser, and a connection keeps bytes and parser state
 * of its own only while a request is incomplete. */
static void http_input(ac__conn_t *c, const char *p, size_t n)
{
    ac_server_t *s = ac__conn_server(c);
    const char *buf = p;
    size_t len = n;

    if (c->in != NULL || c->pend != NULL) {
        if (n > 0 && ac__bytes_append(&c->in, p, n) != 0) {
            ac__conn_destroy(c);
            return;
        }
        if (c->pend != NULL || c->in == NULL)
            return; /* a request is still being answered: the next one waits */
        buf = c->in->p;
        len = c->in->len;
    }
    while (c->state == AC__CONN_HTTP && len > 0) {
        size_t consumed = 0;
        ac__http_status_t st;
        ac__http_req_t req;
        int scratch = c->http == NULL;

        if (scratch) {
            c->http = s->scratch_http;
            ac__http_reset(c->http);
        }
        st = ac__http_feed(c->http, buf, len, &consumed);
        if (st == AC__HTTP_MORE) {
            /* Keep the partial request: its parser state and its bytes. */
            if (scratch && (c->http = ac__http_clone(s->scratch_http)) == NULL) {
                ac__conn_destroy(c);
                return;
            }
            if (c->in == NULL && ac__bytes_append(&c->in, buf, len) != 0)
                ac__conn_destroy(c);
            return;
        }
        switch (st) {
        case AC__HTTP_BAD:
            ac__conn_respond_error(c, 400, "malformed HTTP request", NULL);
            break;
        case AC__HTTP_HEAD_TOO_BIG:
            ac__conn_respond_error(c, 431, "request headers over 16384 bytes", NULL);
            break;
        case AC__HTTP_BODY_TOO_BIG: {
            char msg[96];
            snprintf(msg, sizeof(msg), "body over max-publish-size (%zu bytes)",
                     s->opts.max_publish_size);
            ac__conn_respond_error(c, 413, msg, NULL);
            break;
        }
        default:
            /* For an upgrade the parser stops at the end of the request (head and any
             * body); what follows is WebSocket frames. Its count is exact. */
            s->http_requests_total++;
            ac__http_request(c->http, buf, &req);
            ac__api_http_request(c, &req);
            break;
        }
        /* The request is done with: its parser state goes back (or away). */
        if (c->http == s->scratch_http)
            c->http = NULL;
        else if (c->state != AC__CONN_HTTP || st != AC__HTTP_DONE) {
            ac__http_free(c->http);
            c->http = NULL;
        } else {
            ac__http_reset(c->http);
        }
        if (ac__conn_gone(c) || st != AC__HTTP_DONE)
            return;
        if (c->in != NULL) {
            ac__bytes_consume(&c->in, consumed);
            buf = c->in ? c->in->p : NULL;
            len = c->in ? c->in->len : 0;
        } else {
            buf += consumed;
            len -= consumed;
        }
        if (c->http != NULL && len == 0) {
            ac__http_free(c->http); /* idle keep-alive: nothing per connection */
            c->http = NULL;
        }
        if (c->pend != NULL && c->state == AC__CONN_HTTP) {
            /* Answered later: keep what follows and stop reading until then. */
            if (c->in == NULL && len > 0 && ac__bytes_append(&c->in, buf, len) != 0) {
                ac__conn_destroy(c);
                return;
            }
            dl_set(c, (uint64_t)(s->opts.handshake_timeout * 1000));
            uv_read_stop((uv_stream_t *)&c->tcp);
            return;
        }
        if (c->state == AC__CONN_HTTP) {
            dl_set(c, (uint64_t)(s->opts.handshake_timeout * 1000));
            continue;
        }
        if (c->state == AC__CONN_WS && len > 0) {
            /* Frames sent right behind the handshake. */
            ac__bytes_t *rest = c->in;
            if (rest != NULL) {
                c->in = NULL;
                ac__conn_ws_input(c, rest->p, rest->len);
                free(rest);
            } else {
                ac__conn_ws_input(c, (char *)buf, len);
            }
        }
        return;
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

void ac__conn_http_resume(ac__conn_t *c)
{
    int r;

    if (ac__conn_gone(c) || c->state != AC__CONN_HTTP || c->pend != NULL)
        return;
    r = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (r != 0 && r != UV_EALREADY) {
        ac__conn_destroy(c);
        return;
    }
    if (c->in != NULL)
        http_input(c, NULL, 0);
}

void ac__conn_read_pause(ac__conn_t *c, int pause)
{
    if (ac__conn_gone(c) || c->state != AC__CONN_WS)
        return;
    int r;

    if (pause) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        return;
    }
    r = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (r != 0 && r != UV_EALREADY) /* EALREADY: it was not paused */
        ac__conn_destroy(c);
}

void ac__conn_bound_kernel_buffer(ac__conn_t *c)
{
    size_t want = ac__conn_server(c)->opts.max_queue_bytes;
    int size = want < 16384 ? 16384 : want > 262144 ? 262144 : (int)want;

    uv_send_buffer_size((uv_handle_t *)&c->tcp, &size);
}

int ac__conn_upgrade(ac__conn_t *c, const char accept_key[29])
{
    char head[160];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
                     accept_key);
    ac__buf_t *b = ac__buf_new((size_t)n);

    if (b == NULL)
        return AC_ENOMEM;
    memcpy(b->data, head, (size_t)n);
    ac__conn_send_control(c, b);
    ac__buf_unref(b);
    dl_remove(c);
    c->state = AC__CONN_WS;
    c->flags |= AC__CF_WS;
    {
        double burst = ac__conn_server(c)->opts.client_rate * 2000.0;
        c->tokens = (uint32_t)(burst < 1000 ? 1000 : burst > 4e9 ? 4e9 : burst);
    }
    c->last_rx = ac__conn_now32(ac__conn_server(c));
    return 0;
}

/* ---- reading and accepting -------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    ac_server_t *s = h->data;

    /* One buffer for the whole loop: reads are handled to completion one at a time, and
     * anything left over is copied into the connection. */
    if (s->rbuf_busy) {
        *buf = uv_buf_init(NULL, 0);
        return;
    }
    s->rbuf_busy = 1;
    *buf = uv_buf_init(s->rbuf, AC__READ_BUF_SIZE);
}

/* Plaintext from the peer, to whatever the connection is speaking now. */
static void dispatch(ac__conn_t *c, char *p, size_t n)
{
    switch (c->state) {
    case AC__CONN_HTTP:
        http_input(c, p, n);
        break;
    case AC__CONN_WS:
        ac__conn_ws_input(c, p, n);
        break;
    case AC__CONN_CLOSING:
        /* An HTTP connection on its way out: discard. A WebSocket: watch for close. */
        if ((c->flags & AC__CF_WS) && !(c->flags & AC__CF_DISCARD))
            ac__conn_ws_input(c, p, n);
        break;
    default:
        break;
    }
}

/* Ciphertext in: finish the handshake, then decrypt record by record into the loop's
 * plaintext buffer and dispatch. Handshake replies and alerts go out with the next flush. */
static void tls_input(ac__conn_t *c, const char *p, size_t n)
{
    ac_server_t *s = ac__conn_server(c);

    if (BIO_write(SSL_get_rbio(c->ssl), p, (int)n) != (int)n) {
        ac__conn_destroy(c);
        return;
    }
    while (!ac__conn_gone(c)) {
        int r = SSL_read(c->ssl, s->tls_buf, AC__READ_BUF_SIZE);
        if (r > 0) {
            dispatch(c, s->tls_buf, (size_t)r);
            continue;
        }
        int err = SSL_get_error(c->ssl, r);
        if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) {
            ac__log(AC_LOG_DEBUG, "event=tls_error conn=%llx ssl_error=%d",
                    (unsigned long long)c->m.id, err);
            ERR_clear_error();
            /* Send the alert, if any, then go. */
            c->flags |= AC__CF_CLOSE_AFTER;
            if (BIO_ctrl_pending(SSL_get_wbio(c->ssl)) == 0)
                ac__conn_destroy(c);
            else
                mark_dirty(c);
            return;
        }
        break;
    }
    if (!ac__conn_gone(c) && BIO_ctrl_pending(SSL_get_wbio(c->ssl)) > 0)
        mark_dirty(c);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    ac__conn_t *c = (ac__conn_t *)stream;
    ac_server_t *s = ac__conn_server(c);

    if (buf->base == s->rbuf)
        s->rbuf_busy = 0;
    if (nread == 0)
        return;
    if (nread < 0) {
        ac__conn_destroy(c);
        return;
    }
    if (c->state == AC__CONN_WS)
        ac__conn_refill_tokens(c, ac__conn_now32(s));
    c->last_rx = ac__conn_now32(s);
    if (c->ssl != NULL)
        tls_input(c, buf->base, (size_t)nread);
    else
        dispatch(c, buf->base, (size_t)nread);
}

void ac__conn_accept(ac_server_t *s)
{
    ac__conn_t *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return;
    if (uv_tcp_init(s->loop, &c->tcp) != 0) {
        free(c);
        return;
    }
    c->tcp.data = s;
    s->nconns_all++;
    if (uv_accept((uv_stream_t *)&s->listener, (uv_stream_t *)&c->tcp) != 0) {
        c->state = AC__CONN_CLOSED;
        uv_close((uv_handle_t *)&c->tcp, on_close);
        return;
    }
    s->accepted_total++;
    uv_tcp_nodelay(&c->tcp, 1);
    if (s->tls != NULL && (c->ssl = ac__tls_session_new(s->tls)) == NULL) {
        ac__conn_destroy(c);
        return;
    }
    c->state = AC__CONN_HTTP;
    c->last_rx = ac__conn_now32(s);
    dl_set(c, (uint64_t)(s->opts.handshake_timeout * 1000));
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
        ac__conn_destroy(c);
}

void ac__conn_id_str(uint64_t id, char out[18])
{
    snprintf(out, 18, "c%016llx", (unsigned long long)id);
}

int ac__conn_id_parse(const char *s, size_t len, uint64_t *id)
{
    uint64_t v = 0;

    if (len != 17 || s[0] != 'c')
        return -1;
    for (size_t i = 1; i < len; i++) {
        char ch = s[i];
        int d = (ch >= '0' && ch <= '9') ? ch - '0' : (ch >= 'a' && ch <= 'f') ? ch - 'a' + 10 : -1;
        if (d < 0)
            return -1;
        v = v << 4 | (uint64_t)d;
    }
    *id = v;
    return 0;
}
