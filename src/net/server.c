/* The server's loop glue: listening, the loop-wide timers (one sweep for all connections,
 * never a timer per connection), the per-turn flush, the fan-out entry point and graceful
 * shutdown. Building the server object (options, core, broker, api) is gateway/server.c. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "net/conn.h"
#include "net/group.h"
#include "net/outbound.h"
#include "net/server.h"
#include "net/ws.h"

int ac__server_net_init(ac_server_t *s)
{
    s->listen_fd = s->spare_fd = -1;
    s->bound_port = -1;
    s->rbuf = malloc(AC__READ_BUF_SIZE);
    s->scratch_http = ac__http_new(s->opts.max_publish_size);
    if (s->opts.tls_cert != NULL)
        s->tls_buf = malloc(AC__READ_BUF_SIZE);
    if (s->rbuf == NULL || s->scratch_http == NULL ||
        (s->opts.tls_cert != NULL && s->tls_buf == NULL))
        return AC_ENOMEM;
    return 0;
}

void ac__server_net_dispose(ac_server_t *s)
{
    free(s->tls_buf);
    ac__http_free(s->scratch_http);
    while (s->outq_cache != NULL) {
        struct ac__outq_s *q = s->outq_cache;
        s->outq_cache = q->next_free;
        free(q);
    }
    free(s->rbuf);
    if (s->listen_fd >= 0)
        close(s->listen_fd);
    if (s->spare_fd >= 0)
        close(s->spare_fd);
}

int ac_server_port(const ac_server_t *s)
{
    return s->bound_port;
}

/* ---- loop callbacks --------------------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h);

/* Out of file descriptors: the pending connections are accepted and closed at once with
 * the descriptor kept in reserve, instead of staying in the backlog and waking the loop
 * again and again. */
static void shed_pending(ac_server_t *s)
{
    unsigned n = 0;
    int fd;

    if (s->spare_fd < 0)
        s->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (s->spare_fd < 0) {
        /* Not even a reserve descriptor (another loop took the one freed): stop watching
         * the listener, or its readiness would spin the loop; the tick tries again. */
        if (!s->accept_paused && uv_poll_stop(&s->listener) == 0)
            s->accept_paused = 1;
        return;
    }
    close(s->spare_fd);
    while ((fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC)) >= 0) {
        close(fd);
        n++;
    }
    s->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    ac__log(AC_LOG_WARN, "event=accept_shed connections=%u reason=\"out of file descriptors\"", n);
}

/* Accepts what is pending, a bounded number per loop turn. */
static void on_listen_io(uv_poll_t *h, int status, int events)
{
    ac_server_t *s = h->data;

    if (status < 0) {
        ac__log(AC_LOG_WARN, "event=accept_error error=%s", uv_strerror(status));
        return;
    }
    for (int i = 0; i < 128 && !s->shutting_down; i++) {
        int fd = accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            ac__conn_accept(s, fd);
            continue;
        }
        if (errno == EINTR || errno == ECONNABORTED)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return;
        ac__log(AC_LOG_WARN, "event=accept_error error=\"%s\"", strerror(errno));
        if (errno == EMFILE || errno == ENFILE)
            shed_pending(s);
        return;
    }
}

static void on_flush_check(uv_check_t *h)
{
    ac__conn_flush_dirty(h->data);
}

static void on_flush_prepare(uv_prepare_t *h)
{
    ac__conn_flush_dirty(h->data);
}

static void on_emit_async(uv_async_t *a)
{
    ac_server_t *s = a->data;

    s->handlers->on_wakeup(s);
}

static void on_tick(uv_timer_t *t)
{
    ac_server_t *s = t->data;

    ac__conn_expire(s);
    s->handlers->on_tick(s);
    if (s->accept_paused && !s->shutting_down) {
        s->accept_paused = 0;
        uv_poll_start(&s->listener, UV_READABLE, on_listen_io);
    }
}

typedef struct ping_ctx_s {
    ac__buf_t *app; /* {"type":"ping"} envelope, shared by every connection */
    ac__buf_t *ctl; /* RFC 6455 ping frame, shared too */
} ping_ctx_t;

static void ping_one(ac__mconn_t *m, void *arg)
{
    ping_ctx_t *p = arg;
    ac__conn_t *c = AC__CONN_OF(m);

    if (c->kind == AC__KIND_USER)
        ac__conn_send_control(c, p->app);
    ac__conn_send_control(c, p->ctl);
}

static void foreach_agent(ac_server_t *s, ac__mconn_fn fn, void *arg);

static uint64_t ms(double seconds);

/* Every connection is pinged once per --ping-interval, but not all in one loop turn: a
 * round is cut into slices of about AC__PING_SLICE connections (under a millisecond each), one
 * slice per tick (at most one tick per 5 ms), so a ping round never stalls the events behind it
 * (pinging 4,000 connections at once took 35-60 ms, 10-15 us each). */
#define AC__PING_SLICE 64

static void on_ping(uv_timer_t *t)
{
    ac_server_t *s = t->data;
    ping_ctx_t p;

    if (s->ping_slice == 0) {
        uint64_t period = ms(s->opts.ping_interval);
        uint64_t want = s->manager.nconns / AC__PING_SLICE + 1;
        if (want > period / 5)
            want = period / 5 ? period / 5 : 1;
        if (want > s->manager.nbuckets)
            want = s->manager.nbuckets;
        s->ping_slices = (unsigned)want;
        uv_timer_set_repeat(t, period / want ? period / want : 1);
    }
    p.app = ac__emitter_server_msg(&s->emitter, "ping", (ac__str_t){0}, (ac__str_t){0}, NULL,
                                   ac__now_ms());
    p.ctl = ac__frame_raw(AC_WS_PING, "ac", 2);
    if (p.app != NULL && p.ctl != NULL) {
        ac__manager_foreach_slice(&s->manager, s->ping_slice, s->ping_slices, ping_one, &p);
        if (s->ping_slice == 0)
            foreach_agent(s, ping_one, &p);
    }
    s->ping_slice = (s->ping_slice + 1) % s->ping_slices;
    if (p.app != NULL)
        ac__buf_unref(p.app);
    if (p.ctl != NULL)
        ac__buf_unref(p.ctl);
}

static void sweep_one(ac__mconn_t *m, void *arg)
{
    ac_server_t *s = arg;
    ac__conn_t *c = AC__CONN_OF(m);
    uint32_t now = (uint32_t)ac__server_now(s);
    uint32_t limit = (uint32_t)(s->opts.stale_timeout * 1000);

    ac__conn_check_slow(c, now);
    if (c->state == AC__CONN_WS && now - c->last_rx >= limit) {
        char reason[64];
        snprintf(reason, sizeof(reason), "stale: nothing received for %g s", s->opts.stale_timeout);
        s->stale_total++;
        ac__conn_close_ws(c, AC_WS_CLOSE_STALE, reason, 1);
    }
}

static void on_sweep(uv_timer_t *t)
{
    ac_server_t *s = t->data;
    size_t expired;

    ac__manager_foreach(&s->manager, sweep_one, s);
    foreach_agent(s, sweep_one, s);
    s->broker->vt->sweep(s->broker);
    /* With the redis broker a node's records are a cache of streams that live in Redis
     * (with their own --seq-ttl there): they go with their history. */
    expired = ac__manager_expire(
        &s->manager, ac__server_now(s), (uint64_t)(s->opts.history_ttl * 1000),
        s->broker->vt->publish_batch == NULL ? (uint64_t)(s->opts.seq_ttl * 1000)
                                             : (uint64_t)(s->opts.history_ttl * 1000));
    if (expired > 0)
        ac__log(AC_LOG_DEBUG, "event=users_expired count=%zu", expired);
    ac__idem_expire(&s->idem, ac__server_now(s));
    s->handlers->on_sweep(s);
    ac__group_handshake_expire(s);
}

static uint64_t ms(double seconds)
{
    uint64_t v = (uint64_t)(seconds * 1000 + 0.5);
    return v ? v : 1;
}

/* The listening socket, non-blocking, SO_REUSEADDR (as libuv sets it). 0 or a negative
 * errno. */
static int listen_socket(ac_server_t *s, const struct sockaddr_storage *addr)
{
    socklen_t len =
        addr->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    int one = 1, fd = socket(addr->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return -errno;
    /* Several loops: one listener each on the same port, the kernel spreads the accepts. */
    if (s->shard != NULL && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        bind(fd, (const struct sockaddr *)addr, len) != 0 || listen(fd, 4096) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    s->listen_fd = fd;
    return 0;
}

int ac__server_start_loop(ac_server_t *s)
{
    struct sockaddr_storage addr;
    int r;

    if (s->started)
        return AC_EINVAL;
    if (uv_ip4_addr(s->listen_host, s->listen_port, (struct sockaddr_in *)&addr) != 0 &&
        uv_ip6_addr(s->listen_host, s->listen_port, (struct sockaddr_in6 *)&addr) != 0) {
        ac__log(AC_LOG_ERROR, "event=listen_error addr=%s error=\"not an IP address\"",
                s->opts.listen);
        return AC_EINVAL;
    }
    s->started = 1;
    r = listen_socket(s, &addr);
    if (r == 0 && (r = uv_poll_init(s->loop, &s->listener, s->listen_fd)) == 0) {
        s->listener.data = s;
        s->open_handles++;
        r = uv_poll_start(&s->listener, UV_READABLE, on_listen_io);
        if (r != 0)
            uv_close((uv_handle_t *)&s->listener, on_handle_closed);
    }
    if (r != 0) {
        if (s->listen_fd >= 0)
            close(s->listen_fd);
        s->listen_fd = -1;
        ac__log(AC_LOG_ERROR, "event=listen_error addr=%s error=\"%s\"", s->opts.listen,
                uv_strerror(r));
        s->started = 0; /* nothing to shut down: ac_server_free() is what is left to call */
        return r;
    }
    s->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    {
        struct sockaddr_storage bound;
        socklen_t len = sizeof(bound);
        char ip[64] = "?";
        getsockname(s->listen_fd, (struct sockaddr *)&bound, &len);
        if (bound.ss_family == AF_INET6) {
            uv_ip6_name((struct sockaddr_in6 *)&bound, ip, sizeof(ip));
            s->bound_port = ntohs(((struct sockaddr_in6 *)&bound)->sin6_port);
        } else {
            uv_ip4_name((struct sockaddr_in *)&bound, ip, sizeof(ip));
            s->bound_port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
        }
        /* One line for the process (supervisors and scripts read the port from it): the
         * other loops of --threads listen on the same port. */
        if (ac__group_index(s) == 0)
            ac__log(AC_LOG_INFO, "event=listening addr=%s%s%s:%d auth=%s broker=%s tls=%s",
                    bound.ss_family == AF_INET6 ? "[" : "", ip,
                    bound.ss_family == AF_INET6 ? "]" : "", s->bound_port,
                    s->opts.auth == AC_AUTH_JWT ? "jwt" : "none", s->broker->vt->name,
                    s->tls ? "on" : "off");
    }
    uv_check_init(s->loop, &s->flusher);
    s->flusher.data = s;
    uv_check_start(&s->flusher, on_flush_check);
    uv_prepare_init(s->loop, &s->preflusher);
    s->preflusher.data = s;
    uv_prepare_start(&s->preflusher, on_flush_prepare);
    uv_unref((uv_handle_t *)&s->preflusher);
    uv_unref((uv_handle_t *)&s->flusher);

    uint64_t tick = ms(s->opts.handshake_timeout) / 4;
    tick = tick < 10 ? 10 : tick > 500 ? 500 : tick;
    uv_timer_init(s->loop, &s->tick);
    s->tick.data = s;
    uv_timer_start(&s->tick, on_tick, tick, tick);
    uv_timer_init(s->loop, &s->pinger);
    s->pinger.data = s;
    uv_timer_start(&s->pinger, on_ping, ms(s->opts.ping_interval), ms(s->opts.ping_interval));
    uv_timer_init(s->loop, &s->sweeper);
    s->sweeper.data = s;
    uv_timer_start(&s->sweeper, on_sweep, ms(s->opts.cleanup_interval),
                   ms(s->opts.cleanup_interval));
    uv_timer_init(s->loop, &s->shutdown_timer);
    s->shutdown_timer.data = s;
    uv_async_init(s->loop, &s->emit_async, on_emit_async);
    s->emit_async.data = s;
    s->open_handles += 7;
    s->handlers->on_tick(s); /* the first fetch of a JWKS URL, say */
    /* Events emitted before the start are waiting: wake the loop for them. */
    uv_mutex_lock(&s->emit_lock);
    s->emit_async_ready = 1;
    if (s->emit_head != NULL)
        uv_async_send(&s->emit_async);
    uv_mutex_unlock(&s->emit_lock);
    return 0;
}

/* ---- counters --------------------------------------------------------------------- */

const double AC__LAT_BOUNDS_S[AC__LAT_NBUCKETS] = {
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0};

void ac__server_count_close(ac_server_t *s, unsigned code)
{
    if (code >= 1000 && code < 1016)
        s->closes_std[code - 1000]++;
    else if (code >= 4000 && code < 4016)
        s->closes_app[code - 4000]++;
}

void ac__server_observe_latency(ac_server_t *s, uint64_t ns)
{
    double secs = (double)ns / 1e9;
    int i = 0;

    while (i < AC__LAT_NBUCKETS && secs > AC__LAT_BOUNDS_S[i])
        i++;
    s->lat_buckets[i]++;
    s->lat_count++;
    s->lat_sum_s += secs;
}

void ac_server_set_message_cb(ac_server_t *s, ac_message_cb cb, void *arg)
{
    s->message_cb = cb;
    s->message_arg = arg;
}

/* ---- publisher sockets ------------------------------------------------------------ */

void ac__server_agent_add(ac_server_t *s, ac__conn_t *c)
{
    c->kind = AC__KIND_AGENT;
    c->flags |= AC__CF_LISTED;
    c->m.id = s->manager.next_conn_id++;
    c->m.prev = NULL;
    c->m.next = s->agents ? &s->agents->m : NULL;
    if (s->agents != NULL)
        s->agents->m.prev = &c->m;
    s->agents = c;
    s->nagents++;
}

void ac__server_agent_remove(ac_server_t *s, ac__conn_t *c)
{
    if (!(c->flags & AC__CF_LISTED))
        return;
    if (c->m.prev != NULL)
        c->m.prev->next = c->m.next;
    else
        s->agents = c->m.next ? AC__CONN_OF(c->m.next) : NULL;
    if (c->m.next != NULL)
        c->m.next->prev = c->m.prev;
    c->m.prev = c->m.next = NULL;
    c->flags &= (uint8_t)~AC__CF_LISTED;
    s->nagents--;
}

/* Calls fn for every publisher socket; fn may close the one it is given. */
static void foreach_agent(ac_server_t *s, ac__mconn_fn fn, void *arg)
{
    ac__mconn_t *m = s->agents ? &s->agents->m : NULL;

    while (m != NULL) {
        ac__mconn_t *next = m->next;
        fn(m, arg);
        m = next;
    }
}

/* ---- fan-out ---------------------------------------------------------------------- */

unsigned ac__server_deliver(void *arg, ac__user_t *u, ac__buf_t *frame)
{
    ac_server_t *s = arg;
    unsigned n = 0;
    ac__mconn_t *m = u->head;

    while (m != NULL) {
        ac__mconn_t *next = m->next; /* a slow connection detaches itself */
        ac__conn_t *c = AC__CONN_OF(m);
        if (c->kind != AC__KIND_JOINING)
            n += (unsigned)ac__conn_send(c, frame);
        m = next;
    }
    s->deliveries_total += n;
    return n;
}

void ac__server_conn_leave(ac_server_t *s, ac__conn_t *c)
{
    if (c->m.user != NULL) {
        s->broker->vt->leave(s->broker, c->m.user, c->m.id);
        ac__group_conn_release(s);
    }
    ac__manager_detach(&s->manager, &c->m, ac__server_now(s));
}

/* ---- shutdown --------------------------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h)
{
    ac_server_t *s = h->data;

    if (--s->open_handles == 0 && s->shutdown_cb != NULL)
        s->shutdown_cb(s, s->shutdown_arg);
}

static void on_outbound_closed(void *arg)
{
    ac_server_t *s = arg;

    if (--s->open_handles == 0 && s->shutdown_cb != NULL)
        s->shutdown_cb(s, s->shutdown_arg);
}

struct ac__outbound_s *ac__server_outbound(ac_server_t *s)
{
    if (s->outbound == NULL && s->shutting_down < 2) {
        ac__outbound_opts_t o = {.ca_file = s->opts.outbound_ca_file};
        int err = 0;
        s->outbound = ac__outbound_new(s->loop, &o, &err);
        if (s->outbound == NULL)
            ac__log(AC_LOG_ERROR, "event=outbound_error error=\"%s\"", ac_strerror(err));
    }
    return s->outbound;
}

static void close_handles(ac_server_t *s)
{
    s->broker->vt->close(s->broker);
    if (s->outbound != NULL) {
        s->open_handles++;
        ac__outbound_t *ob = s->outbound;
        s->outbound = NULL;
        ac__outbound_close(ob, on_outbound_closed, s);
    }
    uv_close((uv_handle_t *)&s->flusher, on_handle_closed);
    uv_close((uv_handle_t *)&s->preflusher, on_handle_closed);
    uv_close((uv_handle_t *)&s->tick, on_handle_closed);
    uv_close((uv_handle_t *)&s->pinger, on_handle_closed);
    uv_close((uv_handle_t *)&s->sweeper, on_handle_closed);
    uv_close((uv_handle_t *)&s->shutdown_timer, on_handle_closed);
    uv_mutex_lock(&s->emit_lock);
    s->emit_async_ready = 0;
    uv_mutex_unlock(&s->emit_lock);
    uv_close((uv_handle_t *)&s->emit_async, on_handle_closed);
}

void ac__server_conn_freed(ac_server_t *s)
{
    s->nconns_all--;
    if (s->shutting_down == 1 && s->nconns_all == 0) {
        s->shutting_down = 2;
        ac__log(AC_LOG_INFO, "event=shutdown_complete loop=%u", ac__group_index(s));
        close_handles(s);
    }
}

static void close_ws_going_away(ac__mconn_t *m, void *arg)
{
    ac__conn_close_ws(AC__CONN_OF(m), AC_WS_CLOSE_GOING_AWAY, "server shutting down", 1);
}

static void on_shutdown_timeout(uv_timer_t *t)
{
    ac_server_t *s = t->data;
    ac__conn_t *c = s->dl_head;

    ac__log(AC_LOG_WARN, "event=shutdown_timeout loop=%u open=%zu", ac__group_index(s),
            s->nconns_all);
    while (c != NULL) {
        ac__conn_t *next = c->dl_next;
        ac__conn_destroy(c);
        c = next;
    }
}

int ac__server_shutdown_loop(ac_server_t *s, ac_server_shutdown_cb cb, void *arg)
{
    if (s->shutting_down || !s->started)
        return AC_ECLOSED;
    s->shutting_down = 1;
    s->shutdown_cb = cb;
    s->shutdown_arg = arg;
    ac__log(AC_LOG_INFO, "event=shutdown_begin loop=%u connections=%zu open=%zu",
            ac__group_index(s), s->manager.nconns, s->nconns_all);
    /* What was emitted before the signal is published (and retained) first. */
    s->handlers->on_shutdown(s);
    uv_close((uv_handle_t *)&s->listener, on_handle_closed);
    close(s->listen_fd); /* out of epoll already (uv_close) */
    s->listen_fd = -1;
    if (s->spare_fd >= 0)
        close(s->spare_fd);
    s->spare_fd = -1;
    uv_timer_stop(&s->pinger);
    uv_timer_stop(&s->sweeper);
    /* Every user connection gets 1001; HTTP connections finish their response. After
     * this every open connection is on the deadline list. */
    ac__manager_foreach(&s->manager, close_ws_going_away, NULL);
    foreach_agent(s, close_ws_going_away, NULL);
    for (ac__conn_t *c = s->dl_head; c != NULL;) {
        ac__conn_t *next = c->dl_next;
        if (c->state == AC__CONN_HTTP) {
            if (c->out == NULL)
                ac__conn_destroy(c);
            else
                c->flags |= AC__CF_CLOSE_AFTER;
        }
        c = next;
    }
    uv_timer_start(&s->shutdown_timer, on_shutdown_timeout, ms(s->opts.shutdown_timeout), 0);
    uv_unref((uv_handle_t *)&s->shutdown_timer);
    if (s->nconns_all == 0) {
        s->shutting_down = 2;
        close_handles(s);
    }
    return 0;
}
