/* Connection I/O: accept, read into the loop's one buffer, HTTP request framing, the
 * WebSocket receive path (frame rules, fragments, UTF-8, close handshake), the output
 * queue and its flush (one sendmsg of the whole queue per loop turn; when the kernel's
 * buffer is full, the rest waits for the socket to be writable), deadlines and closing.
 * The socket is watched with a uv_poll_t and read and written here: no libuv stream, no
 * write requests. What a request or a message means is api/'s business. */
#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "core/history.h"
#include "core/log.h"
#include "net/conn.h"
#include "net/conn_int.h"
#include "net/tls.h"
#include "net/ws.h"

#define MAX_IOV 64

static void on_close(uv_handle_t *h);
static void on_io(uv_poll_t *h, int status, int events);

int ac__conn_fd(const ac__conn_t *c)
{
    uv_os_fd_t fd;

    return uv_fileno((const uv_handle_t *)&c->io, &fd) == 0 ? fd : -1;
}

/* Makes the poll handle watch what the connection waits for: readable unless reading is
 * paused, writable while output is blocked. */
static void io_update(ac__conn_t *c)
{
    unsigned want = (c->ioflags & (AC__IO_PAUSED | AC__IO_OUTFULL) ? 0 : AC__IO_POLL_R) |
                    (c->ioflags & AC__IO_BLOCKED ? AC__IO_POLL_W : 0);
    int r;

    if ((c->ioflags & (AC__IO_POLL_R | AC__IO_POLL_W)) == want || ac__conn_gone(c))
        return;
    c->ioflags = (uint8_t)((c->ioflags & ~(AC__IO_POLL_R | AC__IO_POLL_W)) | want);
    if (want == 0)
        r = uv_poll_stop(&c->io);
    else
        r = uv_poll_start(&c->io,
                          (want & AC__IO_POLL_R ? UV_READABLE : 0) |
                              (want & AC__IO_POLL_W ? UV_WRITABLE : 0),
                          on_io);
    if (r != 0)
        ac__conn_destroy(c);
}

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
            if (c->state == AC__CONN_HTTP && c->pend != NULL) {
                /* A whole request whose answer waits on the network (the connect proxy, the
                 * signing keys, a broker, another loop) past --handshake-timeout: answered
                 * 503 and closed; its late answer finds no connection. */
                ac__log(AC_LOG_INFO, "event=http_wait_timeout");
                s->handlers->on_conn_free(c);
                ac__conn_respond_error(c, 503,
                                       "timed out waiting for the answer (--handshake-timeout)",
                                       "Retry-After: 1\r\n");
                if (!ac__conn_gone(c))
                    ac__conn_end(c);
            } else {
                if (c->state == AC__CONN_HTTP)
                    ac__log(AC_LOG_DEBUG, "event=http_timeout");
                ac__conn_destroy(c);
            }
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

/* The connection's output queue, created when it has none. */
static ac__outq_t *outq_get(ac__conn_t *c)
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
                return NULL;
        }
        memset(q, 0, offsetof(ac__outq_t, inline_items));
        q->items = q->inline_items;
        q->cap = AC__OUTQ_INLINE;
        c->out = q;
    }
    return q;
}

static int outq_push_raw(ac__conn_t *c, ac__buf_t *b)
{
    ac__outq_t *q = outq_get(c);

    if (q == NULL)
        return AC_ENOMEM;
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

static unsigned outq_iov(const ac__outq_t *q, struct iovec *iov, unsigned max, size_t *total)
{
    unsigned n = 0;

    *total = 0;
    for (uint32_t i = 0; i < q->count && n < max; i++) {
        const ac__outitem_t *it = &q->items[(q->head + i) % q->cap];
        iov[n].iov_base = it->buf->data + it->off;
        iov[n].iov_len = it->buf->len - it->off;
        *total += iov[n++].iov_len;
    }
    return n;
}

/* The queue is empty: do what was waiting for that. With TLS the session's close_notify
 * goes out first, so the peer can tell a complete response from a cut one. */
static void after_drain(ac__conn_t *c)
{
    if (c->flags & AC__CF_CLOSE_AFTER) {
        ac__conn_destroy(c);
        return;
    }
    if (c->flags & AC__CF_SHUTDOWN_AFTER) {
        if (c->ssl != NULL && !(SSL_get_shutdown(c->ssl) & SSL_SENT_SHUTDOWN)) {
            if (!SSL_in_init(c->ssl))
                (void)SSL_shutdown(c->ssl);
            SSL_set_shutdown(c->ssl, SSL_get_shutdown(c->ssl) | SSL_SENT_SHUTDOWN); /* once */
            ERR_clear_error();
            if (BIO_ctrl_pending(SSL_get_wbio(c->ssl)) > 0) {
                mark_dirty(c); /* written by the next flush, which comes back here */
                return;
            }
        }
        c->flags &= (uint8_t)~AC__CF_SHUTDOWN_AFTER;
        if (shutdown(ac__conn_fd(c), SHUT_WR) != 0)
            ac__conn_destroy(c);
    }
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

/* ---- slow consumers ---------------------------------------------------------------- */

static void too_slow(ac__conn_t *c, const char *why)
{
    ac_server_t *s = ac__conn_server(c);

    s->slow_total++;
    ac__log(AC_LOG_WARN, "event=slow_consumer conn=%llx user=%s queued=%llu reason=\"%s\"",
            (unsigned long long)c->m.id, c->m.user ? c->m.user->id : "-",
            (unsigned long long)backlog(c), why);
    if (c->out != NULL)
        c->out->lag_seq = 0;
    ac__conn_drop_backlog(c);
    ac__conn_close_ws(c, AC_WS_CLOSE_TOO_SLOW, "too slow, resume with last_seq", 0);
}

void ac__conn_check_slow(ac__conn_t *c, uint32_t now)
{
    ac_server_t *s = ac__conn_server(c);
    ac__outq_t *q = c->out;

    if (q == NULL || q->slow_since == 0 || c->state != AC__CONN_WS)
        return;
    /* since is now | 1 (0 means "not slow"): it may be 1 ms ahead of now. */
    int32_t elapsed = (int32_t)(now - q->slow_since);
    if (elapsed >= 0 && (double)elapsed >= s->opts.slow_timeout * 1000)
        too_slow(c, "backlog over max-queue-bytes for slow-timeout");
}

/* The backlog is over the cap: the soft limit's clock starts (once). */
static void mark_slow(ac__conn_t *c)
{
    if (c->out != NULL && c->out->slow_since == 0)
        c->out->slow_since = ac__conn_now32(ac__conn_server(c)) | 1;
}

/* After a write: a connection back under its cap is no longer slow, and one that was not
 * read for its backlog is read again below half of it. */
static void slow_update(ac__conn_t *c)
{
    uint64_t max = ac__conn_server(c)->opts.max_queue_bytes;
    uint64_t n = backlog(c);

    if (c->out != NULL && c->out->lag_seq == 0 && n <= max)
        c->out->slow_since = 0;
    if ((c->ioflags & AC__IO_OUTFULL) && n <= max / 2) {
        c->ioflags &= (uint8_t)~AC__IO_OUTFULL;
        io_update(c);
    }
}

/* After queueing: over the cap, the soft limit's clock runs; a publisher socket or an
 * HTTP client that does not read its answers is not read either (the receiver sets the
 * pace) instead of having answers pile up. */
static void after_push(ac__conn_t *c)
{
    ac_server_t *s = ac__conn_server(c);

    if (backlog(c) <= s->opts.max_queue_bytes)
        return;
    mark_slow(c);
    if ((c->kind == AC__KIND_AGENT || c->state == AC__CONN_HTTP) &&
        !(c->ioflags & AC__IO_OUTFULL)) {
        c->ioflags |= AC__IO_OUTFULL;
        io_update(c);
    }
}

/* A lagging connection takes its next events from its user's history: up to the cap, or
 * (all) everything it is owed. Caught up, it is live again; when what it needs is no
 * longer retained it cannot be served in order and is closed 4008 (it resumes, and is
 * told with `resync` what was lost). */
static void refill(ac__conn_t *c, int all)
{
    uint64_t max = ac__conn_server(c)->opts.max_queue_bytes;
    ac__outq_t *q = c->out;
    ac__user_t *u = c->m.user;

    while (q->lag_seq != 0 && (all || backlog(c) <= max)) {
        ac__buf_t *f;
        if (u == NULL || c->state != AC__CONN_WS || q->lag_seq > u->seq) {
            q->lag_seq = 0; /* caught up, or closing: nothing more is owed */
            return;
        }
        f = ac__history_get(u, q->lag_seq);
        if (f == NULL) {
            too_slow(c, "the events it needs have left the history");
            return;
        }
        if (outq_push(c, f) != 0) {
            ac__conn_destroy(c);
            return;
        }
        if (c->ssl == NULL)
            q->items[(q->head + q->count - 1) % q->cap].live = 1;
        q->lag_seq++;
    }
}

/* Writes what the kernel takes now; the rest waits for the socket to be writable. A
 * lagging connection is refilled from history whenever it drained to half its cap. */
static void flush(ac__conn_t *c)
{
    struct iovec iov[MAX_IOV];
    struct msghdr mh = {.msg_iov = iov};
    uint64_t max = ac__conn_server(c)->opts.max_queue_bytes;
    ac__outq_t *q;
    int fd;

    if (ac__conn_gone(c))
        return;
    fd = ac__conn_fd(c);
    for (;;) {
        if (c->out != NULL && c->out->lag_seq != 0 && backlog(c) <= max / 2) {
            refill(c, 0);
            if (ac__conn_gone(c))
                return;
        }
        if (c->ssl != NULL && tls_move_out(c) != 0) {
            ac__conn_destroy(c);
            return;
        }
        q = c->out;
        if (q == NULL) {
            if (c->state == AC__CONN_CLOSING || (c->flags & AC__CF_CLOSE_AFTER))
                after_drain(c);
            return;
        }
        if (c->ioflags & AC__IO_BLOCKED)
            break;
        while (q->count > 0) {
            size_t total;
            mh.msg_iovlen = outq_iov(q, iov, MAX_IOV, &total);
            ssize_t r = sendmsg(fd, &mh, MSG_NOSIGNAL);
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                c->ioflags |= AC__IO_BLOCKED;
                break;
            }
            if (r < 0) {
                ac__log(AC_LOG_DEBUG, "event=write_error error=\"%s\"", strerror(errno));
                ac__conn_destroy(c);
                return;
            }
            outq_consume(c, (size_t)r);
            if ((size_t)r < total) {
                c->ioflags |= AC__IO_BLOCKED; /* the kernel's buffer is full */
                break;
            }
        }
        if (q->count > 0)
            break;
        if (q->lag_seq != 0)
            continue; /* the kernel took it all: more from history */
        outq_free(c);
        slow_update(c);
        after_drain(c);
        return;
    }
    slow_update(c);
    io_update(c);
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

    if (q != NULL)
        q->lag_seq = 0;
    /* Ciphertext cannot be dropped without breaking the TLS stream. */
    if (q == NULL || c->ssl != NULL)
        return;
    keep = q->count > 0 && q->items[q->head].off > 0; /* a frame half written stays */
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
    ac__outq_t *q = c->out;

    if (c->state != AC__CONN_WS)
        return 0;
    if (q != NULL && q->lag_seq != 0) {
        if (frame->seq >= q->lag_seq) {
            /* In the history already: it is sent from there, in its turn, unless the
             * history has moved past what this connection still needs. */
            if (c->m.user != NULL && ac__history_oldest(c->m.user) > q->lag_seq)
                too_slow(c, "the events it needs have left the history");
            else
                ac__conn_check_slow(c, ac__conn_now32(s));
            return c->state == AC__CONN_WS;
        }
        /* Not of the stream (a direct message): what the stream owes goes first. */
        refill(c, 1);
        if (c->state != AC__CONN_WS)
            return 0;
    }
    if (frame->seq != 0 && c->m.user != NULL && backlog(c) > 0 &&
        backlog(c) + frame->len > s->opts.max_queue_bytes &&
        ac__history_get(c->m.user, frame->seq) == frame) {
        /* At the cap: keep the place in the history instead of a copy of the burst. */
        if ((q = outq_get(c)) == NULL) {
            ac__conn_destroy(c);
            return 0;
        }
        q->lag_seq = frame->seq;
        mark_slow(c);
        mark_dirty(c);
        ac__conn_check_slow(c, ac__conn_now32(s));
        return c->state == AC__CONN_WS;
    }
    if (outq_push(c, frame) != 0) {
        ac__conn_destroy(c);
        return 0;
    }
    if (c->out != NULL && c->ssl == NULL) {
        q = c->out;
        q->items[(q->head + q->count - 1) % q->cap].live = 1;
    }
    after_push(c);
    ac__conn_check_slow(c, ac__conn_now32(s));
    return c->state == AC__CONN_WS;
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
    if (outq_push(c, frame) != 0) {
        ac__conn_destroy(c);
        return;
    }
    if (c->state == AC__CONN_HTTP)
        after_push(c);
}

/* ---- closing ---------------------------------------------------------------------- */

void ac__conn_destroy(ac__conn_t *c)
{
    ac_server_t *s = ac__conn_server(c);
    int fd;

    if (ac__conn_gone(c))
        return;
    ac__server_conn_leave(s, c);
    ac__server_agent_remove(s, c);
    dl_remove(c);
    c->state = AC__CONN_CLOSED;
    fd = ac__conn_fd(c);
    /* uv_close() takes the socket out of epoll at once: it can be closed now. */
    uv_close((uv_handle_t *)&c->io, on_close);
    if (fd >= 0)
        close(fd);
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
        s->handlers->on_conn_free(c);
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
            s->req_conn = c;
            s->req_start = buf;
            s->req_rest = buf + consumed;
            s->req_rest_len = len - consumed;
            s->handlers->on_request(c, &req);
            s->req_conn = NULL;
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
            c->ioflags |= AC__IO_PAUSED;
            io_update(c);
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

void ac__conn_http_resume(ac__conn_t *c)
{
    if (ac__conn_gone(c) || c->state != AC__CONN_HTTP || c->pend != NULL)
        return;
    c->ioflags &= (uint8_t)~AC__IO_PAUSED;
    io_update(c);
    if (!ac__conn_gone(c) && c->in != NULL)
        http_input(c, NULL, 0);
}

void ac__conn_ws_resume(ac__conn_t *c)
{
    if (ac__conn_gone(c) || c->state != AC__CONN_WS)
        return;
    c->ioflags &= (uint8_t)~AC__IO_PAUSED;
    io_update(c);
    ac__bytes_t *rest = c->in;
    if (rest != NULL && !ac__conn_gone(c)) {
        c->in = NULL;
        ac__conn_ws_input(c, rest->p, rest->len);
        free(rest);
    }
}

void ac__conn_read_pause(ac__conn_t *c, int pause)
{
    if (ac__conn_gone(c) || c->state != AC__CONN_WS)
        return;
    if (pause)
        c->ioflags |= AC__IO_PAUSED;
    else
        c->ioflags &= (uint8_t)~AC__IO_PAUSED;
    io_update(c);
}

void ac__conn_bound_kernel_buffer(ac__conn_t *c)
{
    size_t want = ac__conn_server(c)->opts.max_queue_bytes;
    int size = want < 16384 ? 16384 : want > 262144 ? 262144 : (int)want;

    setsockopt(ac__conn_fd(c), SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
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

/* Bytes in: one buffer for the whole loop. A read is handled to completion before the
 * next (anything left over is copied into the connection), so one buffer is enough; a
 * read nested in another's handling (a callback that runs the loop) gets a small one. */
static void do_read(ac__conn_t *c)
{
    ac_server_t *s = ac__conn_server(c);
    char small[4096];
    int nested = s->rbuf_busy, fd = ac__conn_fd(c);
    char *buf = nested ? small : s->rbuf;
    size_t cap = nested ? sizeof(small) : AC__READ_BUF_SIZE;

    /* A full buffer means more may be waiting: a few more reads before the next poll. */
    for (int i = 0; i < 4; i++) {
        ssize_t n = recv(fd, buf, cap, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n <= 0) {
            if (n < 0)
                ac__log(AC_LOG_DEBUG, "event=read_error error=\"%s\"", strerror(errno));
            ac__conn_destroy(c); /* EOF or an error */
            return;
        }
        if (c->state == AC__CONN_WS)
            ac__conn_refill_tokens(c, ac__conn_now32(s));
        c->last_rx = ac__conn_now32(s);
        s->rbuf_busy = 1;
        if (c->ssl != NULL)
            tls_input(c, buf, (size_t)n);
        else
            dispatch(c, buf, (size_t)n);
        s->rbuf_busy = nested;
        if ((size_t)n < cap || ac__conn_gone(c) || (c->ioflags & (AC__IO_PAUSED | AC__IO_OUTFULL)))
            return;
    }
}

static void on_io(uv_poll_t *h, int status, int events)
{
    ac__conn_t *c = (ac__conn_t *)h;

    if (status < 0) {
        ac__log(AC_LOG_DEBUG, "event=poll_error error=%s", uv_strerror(status));
        ac__conn_destroy(c);
        return;
    }
    if (events & UV_WRITABLE) {
        c->ioflags &= (uint8_t)~AC__IO_BLOCKED;
        flush(c);
        if (ac__conn_gone(c))
            return;
        if (!(c->ioflags & AC__IO_BLOCKED))
            io_update(c);
    }
    if ((events & UV_READABLE) && !(c->ioflags & (AC__IO_PAUSED | AC__IO_OUTFULL)) &&
        !ac__conn_gone(c))
        do_read(c);
}

void ac__conn_accept(ac_server_t *s, int fd)
{
    ac__conn_t *c = calloc(1, sizeof(*c));
    int one = 1;

    if (c == NULL || uv_poll_init(s->loop, &c->io, fd) != 0) {
        free(c);
        close(fd);
        return;
    }
    c->io.data = s;
    s->nconns_all++;
    s->accepted_total++;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (s->tls != NULL && (c->ssl = ac__tls_session_new(s->tls)) == NULL) {
        ac__conn_destroy(c);
        return;
    }
    c->state = AC__CONN_HTTP;
    c->last_rx = ac__conn_now32(s);
    dl_set(c, (uint64_t)(s->opts.handshake_timeout * 1000));
    io_update(c);
}

/* ---- moving to another loop ------------------------------------------------------ */

int ac__conn_detach(ac__conn_t *c, ac__handoff_t *h)
{
    return ac__conn_detach_from(c, h, 0);
}

int ac__conn_detach_from(ac__conn_t *c, ac__handoff_t *h, int with_request)
{
    ac_server_t *s = ac__conn_server(c);

    /* Ciphertext the session made but this loop did not queue yet (TLS 1.3 tickets sent as
     * the handshake ends) stays in the session's BIO and goes out from the new loop. */
    if (ac__conn_gone(c) || c->state != AC__CONN_HTTP || c->out != NULL)
        return AC_EINVAL;
    h->rest = NULL;
    if (with_request && s->req_conn != c)
        return AC_EINVAL;
    if (s->req_conn == c) {
        /* From the request's handler: what follows the request is in the read buffer (or
         * in c->in, which on_close frees); the request itself too when asked. */
        const char *from = with_request ? s->req_start : s->req_rest;
        size_t n = (size_t)(s->req_rest - from) + s->req_rest_len;
        if (n > 0 && ac__bytes_append(&h->rest, from, n) != 0)
            return AC_ENOMEM;
    } else {
        h->rest = c->in;
        c->in = NULL;
    }
    h->fd = ac__conn_fd(c);
    h->ssl = c->ssl;
    c->ssl = NULL;
    s->handoffs_out++;
    ac__server_conn_leave(s, c);
    ac__server_agent_remove(s, c);
    dl_remove(c);
    c->state = AC__CONN_CLOSED;
    /* Out of this loop's epoll at once; the socket stays open for its new loop. */
    uv_close((uv_handle_t *)&c->io, on_close);
    return 0;
}

void ac__handoff_drop(ac__handoff_t *h)
{
    if (h->fd >= 0)
        close(h->fd);
    SSL_free(h->ssl);
    free(h->rest);
    h->fd = -1;
    h->ssl = NULL;
    h->rest = NULL;
}

ac__conn_t *ac__conn_attach(ac_server_t *s, ac__handoff_t *h)
{
    ac__conn_t *c = calloc(1, sizeof(*c));

    if (c == NULL || uv_poll_init(s->loop, &c->io, h->fd) != 0) {
        free(c);
        ac__handoff_drop(h);
        return NULL;
    }
    c->io.data = s;
    s->nconns_all++;
    s->handoffs_in++;
    c->ssl = h->ssl;
    c->in = h->rest;
    h->ssl = NULL;
    h->rest = NULL;
    h->fd = -1;
    c->state = AC__CONN_HTTP;
    c->last_rx = ac__conn_now32(s);
    c->ioflags |= AC__IO_PAUSED;
    dl_set(c, (uint64_t)(s->opts.handshake_timeout * 1000));
    return c;
}

void ac__conn_attach_resume(ac__conn_t *c)
{
    ac_server_t *s = ac__conn_server(c);
    ac__bytes_t *rest = c->in;
    int nested = s->rbuf_busy;

    if (ac__conn_gone(c))
        return;
    c->in = NULL;
    c->ioflags &= (uint8_t)~AC__IO_PAUSED;
    io_update(c);
    /* The loop's plaintext buffer may be in use below us: dispatch from rest itself. */
    s->rbuf_busy = 1;
    if (rest != NULL && !ac__conn_gone(c))
        dispatch(c, rest->p, rest->len);
    free(rest);
    /* Records the session decrypted no further before the move. */
    if (c->ssl != NULL && !ac__conn_gone(c))
        tls_input(c, "", 0); /* also queues what the session holds for output */
    s->rbuf_busy = nested;
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
