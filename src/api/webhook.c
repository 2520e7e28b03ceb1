/* --message-webhook: user messages go to the agent backend as an HTTP POST (JSON), one
 * connection per attempt, with retries and capped, jittered backoff. A message that
 * cannot be delivered comes back to its sender's connection as an error envelope, so the
 * person is never left waiting on a message nobody got. Plain http:// only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "api/api.h"
#include "core/log.h"

#define WEBHOOK_ATTEMPTS 4
#define WEBHOOK_TIMEOUT_MS 5000
#define WEBHOOK_BACKOFF_MS 250
#define WEBHOOK_MAX_INFLIGHT 1024

typedef struct delivery_s delivery_t;

typedef struct ac__webhook_s {
    char *host;
    char *port;
    char *path;
    char *host_header;
    delivery_t *inflight; /* every delivery not yet finished */
    size_t ninflight;
} webhook_t;

struct delivery_s {
    delivery_t *prev, *next;
    ac_server_t *server;
    char *user_id;
    char conn_id[18];
    char *request; /* the whole HTTP request */
    size_t request_len;
    int attempt;
    int status; /* HTTP status of the current attempt, 0 before one arrived */
    int cancelled;
    int tcp_open;
    int resolving;
    int resolve_late; /* the attempt timed out while its name was being resolved */
    char why[96];
    uv_getaddrinfo_t resolve;
    uv_tcp_t tcp;
    uv_connect_t connect;
    uv_write_t write;
    uv_timer_t timer; /* attempt timeout, then backoff */
    http_parser parser;
};

static void attempt_start(delivery_t *d);
static void attempt_end(delivery_t *d, const char *why);

/* Splits http://HOST[:PORT]/PATH. */
static webhook_t *webhook_get(ac_server_t *s)
{
    const char *url = s->opts.message_webhook;
    const char *p, *slash, *colon;
    webhook_t *w;

    if (s->webhook != NULL)
        return s->webhook;
    if (url == NULL || strncmp(url, "http://", 7) != 0)
        return NULL;
    p = url + 7;
    slash = strchr(p, '/');
    if (slash == NULL)
        slash = p + strlen(p);
    colon = memchr(p, ':', (size_t)(slash - p));
    w = calloc(1, sizeof(*w));
    if (w == NULL)
        return NULL;
    w->host = strndup(p, (size_t)((colon ? colon : slash) - p));
    w->port = colon ? strndup(colon + 1, (size_t)(slash - colon - 1)) : strdup("80");
    w->path = strdup(*slash ? slash : "/");
    w->host_header = strndup(p, (size_t)(slash - p));
    if (w->host == NULL || w->port == NULL || w->path == NULL || w->host_header == NULL ||
        w->host[0] == '\0') {
        free(w->host);
        free(w->port);
        free(w->path);
        free(w->host_header);
        free(w);
        return NULL;
    }
    s->webhook = w;
    return w;
}

static void delivery_free(delivery_t *d)
{
    free(d->user_id);
    free(d->request);
    free(d);
}

static void on_timer_closed(uv_handle_t *h)
{
    delivery_free(h->data);
}

/* The delivery is over (delivered, given up, or cancelled): unlink and release. */
static void delivery_finish(delivery_t *d)
{
    webhook_t *w = d->server->webhook;

    if (d->prev != NULL)
        d->prev->next = d->next;
    else if (w->inflight == d)
        w->inflight = d->next;
    if (d->next != NULL)
        d->next->prev = d->prev;
    w->ninflight--;
    uv_close((uv_handle_t *)&d->timer, on_timer_closed);
}

static void give_up(delivery_t *d)
{
    ac_server_t *s = d->server;
    ac__user_t *u = ac__manager_find_user(&s->manager, d->user_id, strlen(d->user_id));
    uint64_t id;

    ac__log(AC_LOG_WARN, "event=webhook_failed user=%s attempts=%d reason=\"%s\"", d->user_id,
            d->attempt, d->why);
    if (u != NULL && ac__conn_id_parse(d->conn_id, strlen(d->conn_id), &id) == 0) {
        ac__mconn_t *m = ac__manager_find_conn(u, id);
        if (m != NULL) {
            char data[200];
            snprintf(data, sizeof(data),
                     "{\"error\":\"message not delivered: %s\",\"attempts\":%d}", d->why,
                     d->attempt);
            ac__buf_t *b = ac__emitter_server_msg(&s->emitter, "error", (ac__str_t){0},
                                                  (ac__str_t){0}, data, ac__now_ms());
            if (b != NULL) {
                ac__conn_send(AC__CONN_OF(m), b);
                ac__buf_unref(b);
            }
        }
    }
    delivery_finish(d);
}

static void on_backoff(uv_timer_t *t)
{
    attempt_start(t->data);
}

static void on_tcp_closed(uv_handle_t *h)
{
    delivery_t *d = h->data;
    uint64_t delay;
    uint32_t rnd = 0;

    d->tcp_open = 0;
    if (d->cancelled) {
        delivery_finish(d);
        return;
    }
    if (d->status >= 200 && d->status < 300) {
        ac__log(AC_LOG_DEBUG, "event=webhook_delivered user=%s status=%d", d->user_id, d->status);
        delivery_finish(d);
        return;
    }
    if (d->attempt >= WEBHOOK_ATTEMPTS) {
        give_up(d);
        return;
    }
    /* Exponential backoff with +-50% jitter: retries from many nodes do not align. */
    if (getrandom(&rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
        rnd = (uint32_t)(uintptr_t)d;
    delay = (uint64_t)WEBHOOK_BACKOFF_MS << (d->attempt - 1);
    delay = delay / 2 + rnd % (delay + 1);
    uv_timer_start(&d->timer, on_backoff, delay, 0);
}

/* Ends the current attempt; the outcome is decided once its socket is closed. */
static void attempt_end(delivery_t *d, const char *why)
{
    if (why != NULL && d->why[0] == '\0')
        snprintf(d->why, sizeof(d->why), "%s", why);
    uv_timer_stop(&d->timer);
    if (d->tcp_open) {
        if (!uv_is_closing((uv_handle_t *)&d->tcp))
            uv_close((uv_handle_t *)&d->tcp, on_tcp_closed);
    } else {
        on_tcp_closed((uv_handle_t *)&d->tcp);
    }
}

static int on_status(http_parser *p)
{
    delivery_t *d = p->data;

    d->status = (int)p->status_code;
    if (d->status < 200 || d->status >= 300)
        snprintf(d->why, sizeof(d->why), "webhook answered %d", d->status);
    return 1; /* nothing more is needed from the response */
}

static const http_parser_settings response_settings = {.on_headers_complete = on_status};

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    static char small[4096]; /* loop thread only; the status line is all we read */
    *buf = uv_buf_init(small, sizeof(small));
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    delivery_t *d = stream->data;

    if (nread < 0) {
        attempt_end(d, d->status ? NULL : "webhook closed the connection without an answer");
        return;
    }
    if (nread > 0) {
        http_parser_execute(&d->parser, &response_settings, buf->base, (size_t)nread);
        if (d->status != 0)
            attempt_end(d, NULL);
        else if (HTTP_PARSER_ERRNO(&d->parser) != HPE_OK)
            attempt_end(d, "webhook sent a malformed HTTP response");
    }
}

static void on_written(uv_write_t *req, int status)
{
    delivery_t *d = req->data;

    if (status < 0)
        attempt_end(d, "cannot write to the webhook");
}

static void on_connected(uv_connect_t *req, int status)
{
    delivery_t *d = req->data;
    uv_buf_t b = uv_buf_init(d->request, (unsigned)d->request_len);

    if (status < 0) {
        char why[96];
        snprintf(why, sizeof(why), "cannot connect to the webhook (%s)", uv_err_name(status));
        attempt_end(d, why);
        return;
    }
    http_parser_init(&d->parser, HTTP_RESPONSE);
    d->parser.data = d;
    d->write.data = d;
    if (uv_write(&d->write, (uv_stream_t *)&d->tcp, &b, 1, on_written) != 0 ||
        uv_read_start((uv_stream_t *)&d->tcp, on_alloc, on_read) != 0)
        attempt_end(d, "cannot write to the webhook");
}

static void on_timeout(uv_timer_t *t)
{
    delivery_t *d = t->data;

    if (d->resolving) {
        d->resolve_late = 1; /* on_resolved ends the attempt */
        return;
    }
    attempt_end(d, "webhook timed out");
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    delivery_t *d = req->data;

    d->resolving = 0;
    if (d->cancelled || d->resolve_late) {
        uv_freeaddrinfo(res);
        d->resolve_late = 0;
        attempt_end(d, "webhook timed out");
        return;
    }
    if (status < 0 || res == NULL) {
        uv_freeaddrinfo(res);
        attempt_end(d, "cannot resolve the webhook host");
        return;
    }
    uv_tcp_init(d->server->loop, &d->tcp);
    d->tcp.data = d;
    d->tcp_open = 1;
    d->connect.data = d;
    if (uv_tcp_connect(&d->connect, &d->tcp, res->ai_addr, on_connected) != 0)
        attempt_end(d, "cannot connect to the webhook");
    uv_freeaddrinfo(res);
}

static void attempt_start(delivery_t *d)
{
    webhook_t *w = d->server->webhook;
    struct addrinfo hints;

    d->attempt++;
    d->status = 0;
    d->why[0] = '\0';
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    d->resolve.data = d;
    uv_timer_start(&d->timer, on_timeout, WEBHOOK_TIMEOUT_MS, 0);
    d->resolving = 1;
    if (uv_getaddrinfo(d->server->loop, &d->resolve, on_resolved, w->host, w->port, &hints) != 0) {
        d->resolving = 0;
        attempt_end(d, "cannot resolve the webhook host");
    }
}

int ac__webhook_post(ac_server_t *s, const ac_message_t *m)
{
    webhook_t *w = webhook_get(s);
    json_t *body;
    char *json;
    delivery_t *d;
    int n;

    if (w == NULL || w->ninflight >= WEBHOOK_MAX_INFLIGHT || s->shutting_down)
        return -1;
    body = json_pack("{s:s,s:s,s:s?,s:s,s:I,s:I,s:o}", "user_id", m->user_id, "connection_id",
                     m->connection_id, "thread_id", m->thread_id, "text", m->text, "seq",
                     (json_int_t)m->seq, "received_at_ms", (json_int_t)ac__now_ms(), "message",
                     json_loads(m->json, JSON_ALLOW_NUL, NULL));
    json = body ? json_dumps(body, JSON_COMPACT | JSON_ALLOW_NUL) : NULL;
    json_decref(body);
    d = json ? calloc(1, sizeof(*d)) : NULL;
    if (d == NULL) {
        free(json);
        return -1;
    }
    d->server = s;
    d->user_id = strdup(m->user_id);
    snprintf(d->conn_id, sizeof(d->conn_id), "%s", m->connection_id);
    n = snprintf(NULL, 0,
                 "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                 "User-Agent: agentcast/" AC_VERSION "\r\nContent-Length: %zu\r\n"
                 "Connection: close\r\n\r\n%s",
                 w->path, w->host_header, strlen(json), json);
    d->request = malloc((size_t)n + 1);
    if (d->user_id == NULL || d->request == NULL) {
        free(json);
        delivery_free(d);
        return -1;
    }
    snprintf(d->request, (size_t)n + 1,
             "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
             "User-Agent: agentcast/" AC_VERSION "\r\nContent-Length: %zu\r\n"
             "Connection: close\r\n\r\n%s",
             w->path, w->host_header, strlen(json), json);
    d->request_len = (size_t)n;
    free(json);
    uv_timer_init(s->loop, &d->timer);
    d->timer.data = d;
    d->next = w->inflight;
    if (w->inflight != NULL)
        w->inflight->prev = d;
    w->inflight = d;
    w->ninflight++;
    attempt_start(d);
    return 0;
}

void ac__webhook_cancel(ac_server_t *s)
{
    webhook_t *w = s->webhook;
    delivery_t *d = w ? w->inflight : NULL;

    /* Each delivery frees itself once its handles are closed. */
    while (d != NULL) {
        delivery_t *next = d->next;
        d->cancelled = 1;
        if (d->tcp_open) {
            uv_timer_stop(&d->timer);
            if (!uv_is_closing((uv_handle_t *)&d->tcp))
                uv_close((uv_handle_t *)&d->tcp, on_tcp_closed);
        } else if (!d->resolving) {
            uv_timer_stop(&d->timer); /* waiting out a backoff */
            delivery_finish(d);
        } /* else: on_resolved sees the flag */
        d = next;
    }
}

void ac__webhook_free(ac_server_t *s)
{
    webhook_t *w = s->webhook;

    if (w == NULL)
        return;
    free(w->host);
    free(w->port);
    free(w->path);
    free(w->host_header);
    free(w);
    s->webhook = NULL;
}
