/* HTTP routing and the small read-only endpoints: /v1/stats, /healthz, /metrics. The
 * publish API and the WebSocket handshake live in publish.c and ws.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/auth.h"
#include "core/log.h"

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

static void handle_stats(ac__conn_t *c, const ac__http_req_t *req)
{
    ac_server_t *s = ac__conn_server(c);
    ac_stats_t st;
    json_t *by_type = json_object();

    ac_server_stats(s, &st);
    for (int i = 0; i < AC_STAT_NTYPES; i++)
        json_object_set_new(by_type, ac__ev_type_name((ac__ev_type_t)i),
                            json_integer((json_int_t)st.events_by_type[i]));
    respond_json(
        c, req, 200,
        json_pack("{s:I,s:I,s:I,s:o,s:I,s:I,s:I,s:{s:I,s:I,s:I,s:I},s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:f,"
                  "s:s,s:s}",
                  "total_users", (json_int_t)st.total_users, "total_connections",
                  (json_int_t)st.total_connections, "active_emitters",
                  (json_int_t)st.active_emitters, "events_by_type", by_type, "events_total",
                  (json_int_t)st.events_total, "direct_total", (json_int_t)st.direct_total,
                  "deliveries_total", (json_int_t)st.deliveries_total, "closes", "evicted_4001",
                  (json_int_t)st.evictions_total, "stale_4002", (json_int_t)st.stale_total,
                  "too_slow_4008", (json_int_t)st.slow_total, "rate_limited_1008_429",
                  (json_int_t)st.rate_limited_total, "queued_bytes",
                  (json_int_t)st.queued_bytes, "history_bytes", (json_int_t)st.history_bytes,
                  "history_events", (json_int_t)st.history_events, "duplicates_total",
                  (json_int_t)st.duplicates_total, "open_runs", (json_int_t)st.open_runs,
                  "http_requests_total", (json_int_t)st.http_requests_total, "http_errors_total",
                  (json_int_t)st.http_errors_total, "uptime_s", st.uptime_s, "broker",
                  s->broker->vt->name, "version", AC_VERSION));
}

static void handle_health(ac__conn_t *c, const ac__http_req_t *req)
{
    ac_server_t *s = ac__conn_server(c);
    int up = s->broker->vt->up(s->broker);

    respond_json(
        c, req, up ? 200 : 503,
        json_pack("{s:s,s:s}", "status", up ? "ok" : "degraded", "broker", up ? "up" : "down"));
}

static void handle_metrics(ac__conn_t *c, const ac__http_req_t *req)
{
    ac_server_t *s = ac__conn_server(c);
    ac_stats_t st;
    ac__sbuf_t b = {0};
    int r = 0;

    ac_server_stats(s, &st);
    r |=
        ac__sbuf_printf(&b,
                        "# HELP agentcast_connections Open user WebSocket connections.\n"
                        "# TYPE agentcast_connections gauge\nagentcast_connections %llu\n"
                        "# HELP agentcast_users Users with at least one open connection.\n"
                        "# TYPE agentcast_users gauge\nagentcast_users %llu\n"
                        "# HELP agentcast_streams Users whose seq stream is kept.\n"
                        "# TYPE agentcast_streams gauge\nagentcast_streams %llu\n"
                        "# HELP agentcast_events_total Events accepted, by type.\n"
                        "# TYPE agentcast_events_total counter\n",
                        (unsigned long long)st.total_connections,
                        (unsigned long long)st.total_users, (unsigned long long)st.active_emitters);
    for (int i = 0; i < AC_STAT_NTYPES; i++)
        r |= ac__sbuf_printf(&b, "agentcast_events_total{type=\"%s\"} %llu\n",
                             ac__ev_type_name((ac__ev_type_t)i),
                             (unsigned long long)st.events_by_type[i]);
    r |= ac__sbuf_printf(
        &b,
        "# HELP agentcast_direct_messages_total Direct messages accepted.\n"
        "# TYPE agentcast_direct_messages_total counter\nagentcast_direct_messages_total %llu\n"
        "# HELP agentcast_deliveries_total Frames handed to connections.\n"
        "# TYPE agentcast_deliveries_total counter\nagentcast_deliveries_total %llu\n"
        "# HELP agentcast_closes_total Connections closed by the server, by close code.\n"
        "# TYPE agentcast_closes_total counter\n"
        "agentcast_closes_total{code=\"4001\"} %llu\nagentcast_closes_total{code=\"4002\"} %llu\n"
        "agentcast_closes_total{code=\"4008\"} %llu\n"
        "# HELP agentcast_queued_bytes Unsent bytes over all connections.\n"
        "# TYPE agentcast_queued_bytes gauge\nagentcast_queued_bytes %llu\n"
        "# HELP agentcast_http_requests_total HTTP requests.\n"
        "# TYPE agentcast_http_requests_total counter\nagentcast_http_requests_total %llu\n"
        "# HELP agentcast_uptime_seconds Seconds since start.\n"
        "# TYPE agentcast_uptime_seconds gauge\nagentcast_uptime_seconds %.3f\n",
        (unsigned long long)st.direct_total, (unsigned long long)st.deliveries_total,
        (unsigned long long)st.evictions_total, (unsigned long long)st.stale_total,
        (unsigned long long)st.slow_total, (unsigned long long)st.queued_bytes,
        (unsigned long long)st.http_requests_total, st.uptime_s);
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

void ac__api_http_request(ac__conn_t *c, const ac__http_req_t *req)
{
    static const char runs[] = "/v1/runs/";

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
