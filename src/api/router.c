/* HTTP routing and the small read-only endpoints: /v1/stats, /healthz, /metrics. The
 * publish API and the WebSocket handshake live in publish.c and ws.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/auth.h"
#include "api/jwks.h"
#include "core/log.h"
#include "net/group.h"

int ac__api_label_ok(const char *p, size_t n, size_t max)
{
    if (n == 0 || n > max)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (ch < 0x20 || ch == 0x7f)
            return 0;
    }
    return 1;
}

int ac__api_check_key(ac__conn_t *c, const ac__http_req_t *req)
{
    const ac_server_t *s = ac__conn_server(c);
    const char *key = s->opts.api_key;
    const char *h = req->headers[AC__H_AUTHORIZATION];
    size_t hlen = req->header_lens[AC__H_AUTHORIZATION];
    static const char extra[] = "WWW-Authenticate: Bearer\r\n";

    if (key == NULL || key[0] == '\0')
        return 0;
    if (h == NULL || hlen < 7 || strncasecmp(h, "Bearer ", 7) != 0) {
        ac__conn_respond_error(c, 401, "api key required", extra);
        return -1;
    }
    if (!ac__secret_equal(h + 7, hlen - 7, key, strlen(key))) {
        ac__conn_respond_error(c, 401, "invalid api key", extra);
        return -1;
    }
    return 0;
}

static int path_is(const ac__http_req_t *req, const char *path)
{
    size_t n = strlen(path);
    return req->path_len == n && memcmp(req->path, path, n) == 0;
}

static void respond_json(ac__conn_t *c, const ac__http_req_t *req, unsigned status, json_t *obj)
{
    char *body = json_dumps(obj, JSON_COMPACT | JSON_REAL_PRECISION(9));

    json_decref(obj);
    if (body == NULL) {
        ac__conn_respond_error(c, 500, "out of memory", NULL);
        return;
    }
    ac__conn_respond(c, status, NULL, body, strlen(body), NULL, req->keep_alive);
    free(body);
}

/* What /v1/stats and /metrics read besides ac_server_stats(), summed over the loops, and
 * each loop's connections and events (so an imbalance shows). */
typedef struct sums_s {
    uint64_t closes_std[16];
    uint64_t closes_app[16];
    uint64_t lat_buckets[AC__LAT_NBUCKETS + 1];
    uint64_t lat_count;
    double lat_sum_s;
    size_t nagents;
    unsigned nloops;
    uint64_t handoffs;
    uint64_t bodies_forwarded, bodies_split, bodies_parked;
    uint64_t loop_conns[AC__GROUP_MAX];
    uint64_t loop_events[AC__GROUP_MAX];
    uint64_t loop_accepted[AC__GROUP_MAX];
    uint64_t loop_handoffs[AC__GROUP_MAX];
} sums_t;

static void sum_loops(ac_server_t *s, sums_t *o)
{
    memset(o, 0, sizeof(*o));
    o->nloops = ac__group_size(s);
    ac__group_park(s);
    for (unsigned k = 0; k < o->nloops; k++) {
        const ac_server_t *sk = ac__group_shard(s, k);
        for (int i = 0; i < 16; i++) {
            o->closes_std[i] += sk->closes_std[i];
            o->closes_app[i] += sk->closes_app[i];
        }
        for (int i = 0; i <= AC__LAT_NBUCKETS; i++)
            o->lat_buckets[i] += sk->lat_buckets[i];
        o->lat_count += sk->lat_count;
        o->lat_sum_s += sk->lat_sum_s;
        o->nagents += sk->nagents;
        o->loop_conns[k] = sk->manager.nconns;
        o->loop_events[k] = sk->emitter.events_total;
        o->loop_accepted[k] = sk->accepted_total;
        o->loop_handoffs[k] = sk->handoffs_in;
        o->handoffs += sk->handoffs_in;
        o->bodies_forwarded += sk->bodies_forwarded;
        o->bodies_split += sk->bodies_split;
        o->bodies_parked += sk->bodies_parked;
    }
    ac__group_unpark(s);
}

static void handle_stats(ac__conn_t *c, const ac__http_req_t *req)
{
    ac_server_t *s = ac__conn_server(c);
    ac_stats_t st;
    json_t *by_type = json_object();

    sums_t *sum = malloc(sizeof(*sum));
    json_t *loops = json_array();

    if (sum == NULL) {
        json_decref(by_type);
        json_decref(loops);
        ac__conn_respond_error(c, 503, "out of memory", NULL);
        return;
    }
    ac_server_stats(s, &st);
    sum_loops(s, sum);
    for (unsigned k = 0; k < sum->nloops; k++)
        json_array_append_new(loops, json_pack("{s:I,s:I,s:I,s:I}", "connections",
                                               (json_int_t)sum->loop_conns[k], "events",
                                               (json_int_t)sum->loop_events[k], "accepted",
                                               (json_int_t)sum->loop_accepted[k], "handoffs",
                                               (json_int_t)sum->loop_handoffs[k]));
    for (int i = 0; i < AC_STAT_NTYPES; i++)
        json_object_set_new(by_type, ac__ev_type_name((ac__ev_type_t)i),
                            json_integer((json_int_t)st.events_by_type[i]));
    json_t *o = json_pack(
        "{s:I,s:I,s:I,s:o,s:I,s:I,s:I,s:{s:I,s:I,s:I,s:I,s:I},s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:f,"
        "s:s,s:s}",
        "total_users", (json_int_t)st.total_users, "total_connections",
        (json_int_t)st.total_connections, "active_emitters", (json_int_t)st.active_emitters,
        "events_by_type", by_type, "events_total", (json_int_t)st.events_total, "direct_total",
        (json_int_t)st.direct_total, "deliveries_total", (json_int_t)st.deliveries_total, "closes",
        "evicted_4001", (json_int_t)st.evictions_total, "stale_4002", (json_int_t)st.stale_total,
        "too_slow_4008", (json_int_t)st.slow_total, "rate_limited_1008_429",
        (json_int_t)st.rate_limited_total, "operator_4003", (json_int_t)sum->closes_app[3],
        "queued_bytes", (json_int_t)st.queued_bytes, "history_bytes", (json_int_t)st.history_bytes,
        "history_events", (json_int_t)st.history_events, "duplicates_total",
        (json_int_t)st.duplicates_total, "open_runs", (json_int_t)st.open_runs,
        "user_messages_total", (json_int_t)st.messages_total, "http_requests_total",
        (json_int_t)st.http_requests_total, "http_errors_total", (json_int_t)st.http_errors_total,
        "uptime_s", st.uptime_s, "broker", s->broker->vt->name, "version", AC_VERSION);
    if (o != NULL) {
        s->broker->vt->stats(s->broker, o);
        json_object_set_new(o, "loops", loops);
        json_object_set_new(o, "handoffs_total", json_integer((json_int_t)sum->handoffs));
        json_object_set_new(
            o, "cross_loop_bodies",
            json_pack("{s:I,s:I,s:I}", "forwarded", (json_int_t)sum->bodies_forwarded, "split",
                      (json_int_t)sum->bodies_split, "parked", (json_int_t)sum->bodies_parked));
    } else {
        json_decref(loops);
    }
    free(sum);
    respond_json(c, req, 200, o);
}

/* One loop's view: up or down, and what its broker adds (the shards it cannot reach). */
static json_t *health_of(ac_server_t *s, int *up)
{
    json_t *o;

    *up = s->broker->vt->up(s->broker);
    o = json_pack("{s:s,s:s}", "status", *up ? "ok" : "degraded", "broker", *up ? "up" : "down");
    if (o != NULL && s->broker->vt->health != NULL)
        s->broker->vt->health(s->broker, o);
    return o;
}

/* The process is up when every loop's broker is (with redis each loop is a node with links
 * of its own); the answer is the first loop's view that is not all well, if any. */
static void handle_health(ac__conn_t *c, const ac__http_req_t *req)
{
    ac_server_t *s = ac__conn_server(c);
    int up = 1;
    json_t *o = NULL;

    ac__group_park(s);
    for (unsigned k = 0; k < ac__group_size(s); k++) {
        int one;
        json_t *v = health_of(ac__group_shard(s, k), &one);
        const char *b = json_string_value(json_object_get(v, "broker"));
        up = up && one;
        const char *ob = json_string_value(json_object_get(o, "broker"));
        if (o == NULL ||
            (b != NULL && strcmp(b, "up") != 0 && ob != NULL && strcmp(ob, "up") == 0)) {
            json_decref(o);
            o = v;
        } else {
            json_decref(v);
        }
    }
    ac__group_unpark(s);
    respond_json(c, req, up ? 200 : 503, o);
}

/* One Prometheus series with its HELP and TYPE lines. */
static int metric(ac__sbuf_t *b, const char *name, const char *type, const char *help, double value)
{
    return ac__sbuf_printf(b, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name, type,
                           name, value);
}

static void handle_metrics(ac__conn_t *c, const ac__http_req_t *req)
{
    ac_server_t *s = ac__conn_server(c);
    ac_stats_t st;
    ac__sbuf_t b = {0};
    uint64_t cum = 0;
    int r = 0;

    sums_t *sum = malloc(sizeof(*sum));

    if (sum == NULL) {
        ac__conn_respond_error(c, 503, "out of memory", NULL);
        return;
    }
    ac_server_stats(s, &st);
    sum_loops(s, sum);
    r |= metric(&b, "agentcast_connections", "gauge", "Open user WebSocket connections.",
                (double)st.total_connections);
    r |= metric(&b, "agentcast_users", "gauge", "Users with at least one open connection.",
                (double)st.total_users);
    r |= metric(&b, "agentcast_streams", "gauge", "Users whose seq stream is kept.",
                (double)st.active_emitters);
    r |= metric(&b, "agentcast_publisher_sockets", "gauge", "Open /v1/agent sockets.",
                (double)sum->nagents);
    r |= metric(&b, "agentcast_open_runs", "gauge", "Runs started and not yet closed.",
                (double)st.open_runs);
    r |= metric(&b, "agentcast_history_bytes", "gauge", "Bytes of events retained for resume.",
                (double)st.history_bytes);
    r |= metric(&b, "agentcast_history_events", "gauge", "Events retained for resume.",
                (double)st.history_events);
    r |= metric(&b, "agentcast_queued_bytes", "gauge", "Unsent bytes over all connections.",
                (double)st.queued_bytes);
    r |= ac__sbuf_printf(&b, "# HELP agentcast_events_total Events accepted, by type.\n"
                             "# TYPE agentcast_events_total counter\n");
    for (int i = 0; i < AC_STAT_NTYPES; i++)
        r |= ac__sbuf_printf(&b, "agentcast_events_total{type=\"%s\"} %llu\n",
                             ac__ev_type_name((ac__ev_type_t)i),
                             (unsigned long long)st.events_by_type[i]);
    r |= metric(&b, "agentcast_direct_messages_total", "counter", "Direct messages accepted.",
                (double)st.direct_total);
    r |= metric(&b, "agentcast_duplicates_total", "counter",
                "Publishes answered from an idempotency key.", (double)st.duplicates_total);
    r |= metric(&b, "agentcast_frames_delivered_total", "counter",
                "Event frames handed to connections.", (double)st.deliveries_total);
    r |= metric(&b, "agentcast_user_messages_total", "counter", "Chat messages from users.",
                (double)st.messages_total);
    r |= ac__sbuf_printf(&b, "# HELP agentcast_closes_total WebSocket closes the server sent, "
                             "by close code.\n# TYPE agentcast_closes_total counter\n");
    for (int i = 0; i < 16; i++) {
        if (sum->closes_std[i] != 0)
            r |= ac__sbuf_printf(&b, "agentcast_closes_total{code=\"%d\"} %llu\n", 1000 + i,
                                 (unsigned long long)sum->closes_std[i]);
    }
    for (int i = 0; i < 16; i++) {
        if (sum->closes_app[i] != 0)
            r |= ac__sbuf_printf(&b, "agentcast_closes_total{code=\"%d\"} %llu\n", 4000 + i,
                                 (unsigned long long)sum->closes_app[i]);
    }
    r |= ac__sbuf_printf(&b, "# HELP agentcast_publish_to_send_seconds From an event's acceptance "
                             "to its frame's hand-off to the kernel, live sends only.\n"
                             "# TYPE agentcast_publish_to_send_seconds histogram\n");
    for (int i = 0; i < AC__LAT_NBUCKETS; i++) {
        cum += sum->lat_buckets[i];
        r |= ac__sbuf_printf(&b, "agentcast_publish_to_send_seconds_bucket{le=\"%g\"} %llu\n",
                             AC__LAT_BOUNDS_S[i], (unsigned long long)cum);
    }
    r |= ac__sbuf_printf(&b,
                         "agentcast_publish_to_send_seconds_bucket{le=\"+Inf\"} %llu\n"
                         "agentcast_publish_to_send_seconds_sum %.9f\n"
                         "agentcast_publish_to_send_seconds_count %llu\n",
                         (unsigned long long)sum->lat_count, sum->lat_sum_s,
                         (unsigned long long)sum->lat_count);
    r |= metric(&b, "agentcast_http_requests_total", "counter", "HTTP requests.",
                (double)st.http_requests_total);
    r |= metric(&b, "agentcast_http_errors_total", "counter", "HTTP responses with status >= 400.",
                (double)st.http_errors_total);
    r |= metric(&b, "agentcast_uptime_seconds", "gauge", "Seconds since start.", st.uptime_s);
    r |= metric(&b, "agentcast_handoffs_total", "counter",
                "User connections moved to the event loop that owns their user.",
                (double)sum->handoffs);
    r |= ac__sbuf_printf(&b,
                         "# HELP agentcast_cross_loop_bodies_total Publish bodies naming users of "
                         "other event loops, by how they ran (--threads).\n"
                         "# TYPE agentcast_cross_loop_bodies_total counter\n"
                         "agentcast_cross_loop_bodies_total{path=\"forwarded\"} %llu\n"
                         "agentcast_cross_loop_bodies_total{path=\"split\"} %llu\n"
                         "agentcast_cross_loop_bodies_total{path=\"parked\"} %llu\n",
                         (unsigned long long)sum->bodies_forwarded,
                         (unsigned long long)sum->bodies_split,
                         (unsigned long long)sum->bodies_parked);
    r |= ac__sbuf_printf(&b, "# HELP agentcast_loop_connections Open user connections, by event "
                             "loop (--threads).\n# TYPE agentcast_loop_connections gauge\n");
    for (unsigned k = 0; k < sum->nloops; k++)
        r |= ac__sbuf_printf(&b, "agentcast_loop_connections{loop=\"%u\"} %llu\n", k,
                             (unsigned long long)sum->loop_conns[k]);
    r |= ac__sbuf_printf(&b, "# HELP agentcast_loop_events_total Events accepted, by the event "
                             "loop of their user.\n# TYPE agentcast_loop_events_total counter\n");
    for (unsigned k = 0; k < sum->nloops; k++)
        r |= ac__sbuf_printf(&b, "agentcast_loop_events_total{loop=\"%u\"} %llu\n", k,
                             (unsigned long long)sum->loop_events[k]);
    r |= metric(&b, "agentcast_broker_up", "gauge",
                "1 when the broker takes events (memory: always).",
                s->broker->vt->up(s->broker) ? 1.0 : 0.0);
    free(sum);
    if (r != 0) {
        ac__sbuf_dispose(&b);
        ac__conn_respond_error(c, 500, "out of memory", NULL);
        return;
    }
    ac__conn_respond(c, 200, "text/plain; version=0.0.4", b.p, b.len, NULL, req->keep_alive);
    ac__sbuf_dispose(&b);
}

typedef struct route_s {
    const char *path;
    unsigned method;
    const char *allow;
    int needs_key;
    void (*handler)(ac__conn_t *c, const ac__http_req_t *req);
} route_t;

static const route_t routes[] = {
    {"/ws", HTTP_GET, "Allow: GET\r\n", 0, ac__api_ws_handshake},
    {"/v1/publish", HTTP_POST, "Allow: POST\r\n", 1, ac__api_publish},
    {"/v1/agent", HTTP_GET, "Allow: GET\r\n", 1, ac__api_agent_handshake},
    {"/v1/disconnect", HTTP_POST, "Allow: POST\r\n", 1, ac__api_disconnect},
    {"/v1/stats", HTTP_GET, "Allow: GET\r\n", 1, handle_stats},
    {"/healthz", HTTP_GET, "Allow: GET\r\n", 0, handle_health},
    {"/metrics", HTTP_GET, "Allow: GET\r\n", 1, handle_metrics},
};

/* Decodes %XX in a path segment into out; returns the length or -1. */
static long path_decode(const char *p, size_t n, char *out, size_t outsz)
{
    size_t o = 0;

    for (size_t i = 0; i < n; i++) {
        char ch = p[i];
        if (ch == '%') {
            char hex[3] = {0};
            char *end;
            if (i + 2 >= n)
                return -1;
            hex[0] = p[i + 1];
            hex[1] = p[i + 2];
            ch = (char)strtol(hex, &end, 16);
            if (*end != '\0')
                return -1;
            i += 2;
        }
        if (o + 1 >= outsz)
            return -1;
        out[o++] = ch;
    }
    out[o] = '\0';
    return (long)o;
}

static void handle_run(ac__conn_t *c, const ac__http_req_t *req)
{
    static const char prefix[] = "/v1/runs/";
    char id[AC__USER_ID_MAX + 1];
    long n = path_decode(req->path + sizeof(prefix) - 1, req->path_len - (sizeof(prefix) - 1), id,
                         sizeof(id));

    if (n <= 0 || !ac__api_label_ok(id, (size_t)n, AC__USER_ID_MAX)) {
        ac__conn_respond_error(c, 404, "run_id: unknown run", NULL);
        return;
    }
    ac__api_run_get(c, req, id, (size_t)n);
}

/* GET (or HEAD) of a page, its assets or the JavaScript client. Returns 1 when handled. */
static int static_route(ac__conn_t *c, const ac__http_req_t *req)
{
    const ac_server_opts_t *o = &ac__conn_server(c)->opts;
    static const char st[] = "/static/", js[] = "/clients/js/";

    if (req->method != HTTP_GET && req->method != HTTP_HEAD)
        return 0;
    if (path_is(req, "/") || path_is(req, "/index.html"))
        ac__api_static(c, req, o->web_dir, "index.html", 10);
    else if (path_is(req, "/dashboard"))
        ac__api_static(c, req, o->web_dir, "dashboard.html", 14);
    else if (req->path_len > sizeof(st) - 1 && memcmp(req->path, st, sizeof(st) - 1) == 0)
        ac__api_static(c, req, o->web_dir, req->path + sizeof(st) - 1,
                       req->path_len - (sizeof(st) - 1));
    else if (req->path_len > sizeof(js) - 1 && memcmp(req->path, js, sizeof(js) - 1) == 0)
        ac__api_static(c, req, o->client_dir, req->path + sizeof(js) - 1,
                       req->path_len - (sizeof(js) - 1));
    else
        return 0;
    return 1;
}

void ac__api_http_request(ac__conn_t *c, const ac__http_req_t *req)
{
    static const char runs[] = "/v1/runs/";

    if (!req->upgrade && static_route(c, req))
        return;

    if (req->path_len > sizeof(runs) - 1 && memcmp(req->path, runs, sizeof(runs) - 1) == 0) {
        if (req->method != HTTP_GET)
            ac__conn_respond_error(c, 405, "method not allowed", "Allow: GET\r\n");
        else if (ac__api_check_key(c, req) == 0)
            handle_run(c, req);
        return;
    }
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        const route_t *r = &routes[i];
        if (!path_is(req, r->path))
            continue;
        if (req->method != r->method) {
            ac__conn_respond_error(c, 405, "method not allowed", r->allow);
            return;
        }
        if (r->needs_key && ac__api_check_key(c, req) != 0)
            return;
        r->handler(c, req);
        return;
    }
    ac__conn_respond_error(c, 404, "not found", NULL);
}

/* Shutdown begins: what was emitted before the signal is published (and retained) first,
 * then ac_emit() is refused and the webhook's requests are cancelled. */
static void on_shutdown(ac_server_t *s)
{
    ac__embed_drain(s);
    ac__embed_close(s);
    ac__webhook_cancel(s);
    if (s->jwks != NULL)
        ac__jwks_stop(s->jwks);
}

/* A JWKS URL is fetched and refreshed from the tick. */
static void on_tick(ac_server_t *s)
{
    if (s->jwks != NULL)
        ac__jwks_tick(s->jwks);
}

const ac__net_handlers_t ac__api_handlers = {
    .on_request = ac__api_http_request,
    .on_message = ac__api_ws_message,
    .on_conn_free = ac__api_pend_orphan,
    .on_wakeup = ac__embed_drain,
    .on_sweep = ac__api_expire_runs,
    .on_tick = on_tick,
    .on_ws_fail = ac__api_agent_fail,
    .on_shutdown = on_shutdown,
};
