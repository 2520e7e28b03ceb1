/* --message-webhook: user messages go to the agent backend as an HTTP(S) POST (JSON)
 * through the gateway's outbound client (net/outbound.h: connection reuse, verified TLS),
 * with retries and capped, jittered backoff. A message that cannot be delivered comes back
 * to its sender's connection as an error envelope, so the person is never left waiting on
 * a message nobody got. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "api/api.h"
#include "core/log.h"
#include "net/outbound.h"

#define WEBHOOK_ATTEMPTS 4
#define WEBHOOK_BACKOFF_MS 250
#define WEBHOOK_MAX_INFLIGHT 1024
#define WEBHOOK_MAX_RESPONSE (64 * 1024)

typedef struct delivery_s delivery_t;

typedef struct ac__webhook_s {
    delivery_t *inflight; /* every delivery not yet finished */
    size_t ninflight;
} webhook_t;

struct delivery_s {
    delivery_t *prev, *next;
    ac_server_t *server;
    char *user_id;
    char conn_id[18];
    char *body; /* the JSON posted */
    size_t body_len;
    int attempt;
    ac__outreq_t *req; /* the attempt in flight, NULL between attempts */
    char why[160];
    uv_timer_t timer; /* backoff between attempts */
};

static void attempt_start(delivery_t *d);

static webhook_t *webhook_get(ac_server_t *s)
{
    if (s->webhook == NULL)
        s->webhook = calloc(1, sizeof(webhook_t));
    return s->webhook;
}

static void delivery_free(delivery_t *d)
{
    free(d->user_id);
    free(d->body);
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
            json_t *data = json_pack("{s:s+,s:i}", "error", "message not delivered: ", d->why,
                                     "attempts", d->attempt);
            char *text = data ? json_dumps(data, JSON_COMPACT) : NULL;
            ac__buf_t *b = text ? ac__emitter_server_msg(&s->emitter, "error", (ac__str_t){0},
                                                         (ac__str_t){0}, text, ac__now_ms())
                                : NULL;
            if (b != NULL) {
                ac__conn_send(AC__CONN_OF(m), b);
                ac__buf_unref(b);
            }
            free(text);
            json_decref(data);
        }
    }
    delivery_finish(d);
}

static void on_backoff(uv_timer_t *t)
{
    attempt_start(t->data);
}

/* After a failed attempt: the next one after a backoff, or give up. */
static void retry_or_give_up(delivery_t *d)
{
    uint64_t delay;
    uint32_t rnd = 0;

    if (d->attempt >= WEBHOOK_ATTEMPTS || d->server->shutting_down) {
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

static void on_answer(void *arg, const ac__outres_t *res)
{
    delivery_t *d = arg;

    d->req = NULL;
    if (res->status >= 200 && res->status < 300) {
        ac__log(AC_LOG_DEBUG, "event=webhook_delivered user=%s status=%ld", d->user_id,
                res->status);
        delivery_finish(d);
        return;
    }
    if (res->status != 0)
        snprintf(d->why, sizeof(d->why), "webhook answered %ld", res->status);
    else if (res->timed_out)
        snprintf(d->why, sizeof(d->why), "webhook timed out");
    else
        snprintf(d->why, sizeof(d->why), "cannot connect to the webhook (%s)", res->error);
    retry_or_give_up(d);
}

static void attempt_start(delivery_t *d)
{
    ac_server_t *s = d->server;
    ac__outbound_t *ob = ac__server_outbound(s);
    static const char *const headers[] = {"Content-Type: application/json", NULL};
    ac__outreq_opts_t o = {
        .url = s->opts.message_webhook,
        .body = d->body,
        .body_len = d->body_len,
        .headers = headers,
        .timeout_ms = (unsigned)(s->opts.outbound_timeout * 1000),
        .max_response = WEBHOOK_MAX_RESPONSE,
    };
    int r;

    d->attempt++;
    d->why[0] = '\0';
    r = ob ? ac__outbound_request(ob, &o, on_answer, d, &d->req) : AC_ECLOSED;
    if (r != 0) {
        snprintf(d->why, sizeof(d->why), "cannot post to the webhook (%s)", ac_strerror(r));
        retry_or_give_up(d);
    }
}

int ac__webhook_post(ac_server_t *s, const ac_message_t *m)
{
    webhook_t *w = webhook_get(s);
    json_t *body;
    char *json;
    delivery_t *d;

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
    d->body = json;
    d->body_len = strlen(json);
    if (d->user_id == NULL) {
        delivery_free(d);
        return -1;
    }
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

    /* Each delivery frees itself once its timer is closed. */
    while (d != NULL) {
        delivery_t *next = d->next;
        ac__outbound_cancel(d->req);
        d->req = NULL;
        uv_timer_stop(&d->timer);
        delivery_finish(d);
        d = next;
    }
}

void ac__webhook_free(ac_server_t *s)
{
    free(s->webhook);
    s->webhook = NULL;
}
