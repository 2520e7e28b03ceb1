/* The server object: options, and the wiring of every layer (core, broker, api's handlers
 * for net/) into one ac_server_t; its stats. The loop glue (listening, timers, flush,
 * shutdown) is net/server.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "api/api.h"
#include "api/auth.h"
#include "api/authproxy.h"
#include "api/jwks.h"
#include "core/log.h"
#include "net/group.h"
#include "net/outbound.h"
#include "net/server.h"
#include "net/tls.h"
#include "net/ws.h"

void ac_server_opts_init(ac_server_opts_t *o)
{
    memset(o, 0, sizeof(*o));
    o->listen = "127.0.0.1:8080";
    o->auth = AC_AUTH_JWT;
    o->max_conns = 100000;
    o->max_conns_per_user = 3;
    o->ping_interval = 30;
    o->stale_timeout = 120;
    o->cleanup_interval = 30;
    o->handshake_timeout = 10;
    o->shutdown_timeout = 10;
    o->history_ttl = 600;
    o->history_size = 1000;
    o->history_max_bytes = 256 * 1024 * 1024;
    o->idempotency_window = 300;
    o->run_timeout = 300;
    o->client_rate = 100;
    o->web_dir = "web";
    o->client_dir = "clients/js";
    o->max_publish_size = 1024 * 1024;
    o->max_message_size = 64 * 1024;
    o->max_queue_bytes = 1024 * 1024;
    o->broker = "memory";
    o->redis_prefix = "ac:";
    o->slow_timeout = 15;
    o->seq_ttl = 7 * 24 * 3600;
    o->jwt_jwks_refresh = 600;
    o->jwt_jwks_min_refresh = 30;
    o->jwt_user_claim = "sub";
    o->outbound_timeout = 5;
    o->threads = 1;
}

const char *ac_strerror(int err)
{
    switch (err) {
    case 0:
        return "ok";
    case AC_ESTATE:
        return "breaks the run lifecycle";
    case AC_EUNAVAIL:
        return "broker unavailable";
    case AC_ECLOSED:
        return "server shutting down";
    default:
        return err < 0 ? strerror(-err) : "unknown error";
    }
}

/* Splits "HOST:PORT" ("[v6]:PORT" too). */
static int parse_listen(const char *listen, char **host, int *port)
{
    const char *colon = strrchr(listen, ':');
    const char *h = listen;
    size_t hlen;
    char *end;
    long p;

    if (colon == NULL)
        return AC_EINVAL;
    hlen = (size_t)(colon - listen);
    if (hlen >= 2 && h[0] == '[' && h[hlen - 1] == ']') {
        h++;
        hlen -= 2;
    }
    p = strtol(colon + 1, &end, 10);
    if (*end != '\0' || colon[1] == '\0' || p < 0 || p > 65535 || hlen == 0)
        return AC_EINVAL;
    *host = strndup(h, hlen);
    if (*host == NULL)
        return AC_ENOMEM;
    *port = (int)p;
    return 0;
}

static int is_http_url(const char *u)
{
    return strncasecmp(u, "http://", 7) == 0 || strncasecmp(u, "https://", 8) == 0;
}

/* The identity and outbound options. */
static int check_identity_opts(const ac_server_opts_t *o)
{
    int has_secret = o->jwt_secret != NULL && o->jwt_secret[0] != '\0';

    if (o->auth == AC_AUTH_JWT && !has_secret && o->jwt_jwks_file == NULL &&
        o->jwt_jwks_url == NULL)
        return AC_EINVAL;
    if (o->jwt_jwks_file != NULL && o->jwt_jwks_url != NULL)
        return AC_EINVAL;
    if (o->auth == AC_AUTH_PROXY && (o->auth_proxy_url == NULL || !is_http_url(o->auth_proxy_url)))
        return AC_EINVAL;
    if ((o->jwt_jwks_url != NULL && !is_http_url(o->jwt_jwks_url)) ||
        (o->message_webhook != NULL && !is_http_url(o->message_webhook)))
        return AC_EINVAL;
    if (!(o->jwt_jwks_refresh > 0) || !(o->jwt_jwks_min_refresh > 0) || !(o->jwt_leeway >= 0) ||
        !(o->auth_proxy_cache_ttl >= 0) || !(o->outbound_timeout > 0) || o->outbound_timeout > 3600)
        return AC_EINVAL;
    if (o->outbound_ca_file != NULL && access(o->outbound_ca_file, R_OK) != 0)
        return AC_EINVAL;
    return 0;
}

static int check_opts(const ac_server_opts_t *o)
{
    if (check_identity_opts(o) != 0)
        return AC_EINVAL;
    if (o->max_conns == 0 || o->max_conns_per_user == 0 || o->ping_interval <= 0 ||
        o->stale_timeout <= 0 || o->cleanup_interval <= 0 || o->handshake_timeout <= 0 ||
        o->shutdown_timeout < 0 || o->history_ttl < 0 || o->slow_timeout <= 0 || o->seq_ttl < 0 ||
        o->max_publish_size == 0 || o->history_size == 0 || o->history_max_bytes == 0 ||
        o->idempotency_window <= 0 || o->run_timeout <= 0 || o->client_rate < 0 ||
        o->handshake_rate < 0 || (o->tls_cert == NULL) != (o->tls_key == NULL) ||
        o->max_message_size == 0 || o->max_queue_bytes == 0)
        return AC_EINVAL;
    return 0;
}

/* One loop's server (every shard of a group is one). With `identity`, it holds what comes
 * from the network to verify a user (a JWKS, the connect proxy): only the first loop does. */
static ac_server_t *server_new_one(uv_loop_t *loop, const ac_server_opts_t *opts, int identity,
                                   int *err)
{
    ac_server_t *s;
    int r;

    r = check_opts(opts);
    if (r != 0)
        goto fail;
    r = AC_ENOMEM;
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        goto fail;
    ac__ws_init();
    ac__auth_init();
    s->loop = loop;
    s->opts = *opts;
    s->handlers = &ac__api_handlers;
    r = parse_listen(opts->listen, &s->listen_host, &s->listen_port);
    if (r != 0)
        goto fail_listen;
    r = ac__server_net_init(s);
    if (r != 0)
        goto fail_net;
    r = AC_ENOMEM;
    if (ac__manager_init(&s->manager, opts->max_conns_per_user, opts->max_conns) != 0)
        goto fail_manager;
    ac__history_store_init(&s->manager.history, opts->history_size, opts->history_max_bytes);
    if (ac__idem_init(&s->idem, (uint64_t)(opts->idempotency_window * 1000), 1000000) != 0)
        goto fail_idem;
    if (ac__bridge_init(&s->bridge) != 0)
        goto fail_bridge;
    if (ac__ratelimit_init(&s->handshakes, opts->handshake_rate) != 0)
        goto fail_ratelimit;
    ac__emitter_init(&s->emitter);
    {
        ac__broker_host_t host;
        ac__api_broker_host(s, &host);
        if (opts->broker == NULL || opts->broker[0] == '\0' ||
            strcmp(opts->broker, "memory") == 0) {
            s->broker = ac__broker_memory_new(&host, &s->manager.history);
            if (s->broker == NULL)
                goto fail_broker;
        } else {
            char why[256];
            ac__redis_opts_t ro = {
                .url = opts->broker,
                .password = opts->redis_password,
                .prefix = opts->redis_prefix ? opts->redis_prefix : "ac:",
                .max_per_user = opts->max_conns_per_user,
                .history_size = opts->history_size,
                .history_ttl_ms = (uint64_t)(opts->history_ttl * 1000),
                .seq_ttl_ms = (uint64_t)(opts->seq_ttl * 1000),
                .idem_ms = (uint64_t)(opts->idempotency_window * 1000),
                .run_timeout_ms = (uint64_t)(opts->run_timeout * 1000),
            };
            r = ac__broker_redis_new(loop, &host, &s->manager, &ro, &s->broker, why, sizeof(why));
            if (r != 0) {
                ac__log(AC_LOG_ERROR, "event=broker_error broker=redis error=\"%s\"", why);
                goto fail_broker;
            }
            /* Serve only once connected: run the loop until the broker is up (its
             * connections, script and subscriptions are set up on it), at most 5 s. */
            {
                uint64_t t0 = uv_now(loop);
                while (!s->broker->vt->up(s->broker) && uv_now(loop) - t0 < 5000)
                    uv_run(loop, UV_RUN_ONCE);
                if (!s->broker->vt->up(s->broker)) {
                    ac__log(AC_LOG_ERROR, "event=broker_error broker=redis error=\"not ready "
                                          "within 5 s (see the errors above)\"");
                    r = AC_EUNAVAIL;
                    goto fail_tls;
                }
            }
            /* The cap is the cluster's (the registry in Redis), not this node's. */
            s->manager.max_per_user = ~0u;
            /* Recent frames on this node only bridge a join's answer and the live events. */
            if (s->manager.history.per_user > 256)
                s->manager.history.per_user = 256;
            ac__api_cluster_init(s);
        }
    }
    if (opts->tls_cert != NULL) {
        const char *why = NULL;
        r = AC_EINVAL;
        s->tls = ac__tls_ctx_new(opts->tls_cert, opts->tls_key, &why);
        if (s->tls == NULL) {
            ac__log(AC_LOG_ERROR, "event=tls_error error=\"%s\"", why);
            goto fail_tls;
        }
        r = AC_ENOMEM;
    }
    if (identity && opts->auth == AC_AUTH_JWT &&
        (opts->jwt_jwks_file != NULL || opts->jwt_jwks_url != NULL)) {
        char why[200];
        s->jwks = ac__jwks_new(s, why, sizeof(why));
        if (s->jwks == NULL) {
            ac__log(AC_LOG_ERROR, "event=jwks_error error=\"%s\"", why);
            r = AC_EINVAL;
            goto fail_identity;
        }
    }
    r = AC_ENOMEM;
    if (identity && opts->auth == AC_AUTH_PROXY && (s->authproxy = ac__authproxy_new(s)) == NULL)
        goto fail_identity;
    if (opts->message_webhook != NULL || s->authproxy != NULL ||
        (s->jwks != NULL && opts->jwt_jwks_url != NULL)) {
        /* Now, so a bad --outbound-ca-file stops the start; it holds no handle yet. */
        ac__outbound_opts_t oo = {.ca_file = opts->outbound_ca_file};
        s->outbound = ac__outbound_new(loop, &oo, &r);
        if (s->outbound == NULL) {
            ac__log(AC_LOG_ERROR, "event=outbound_error error=\"%s\"",
                    r == AC_EINVAL ? "--outbound-ca-file: no PEM certificate in it"
                                   : ac_strerror(r));
            goto fail_identity;
        }
    }
    r = AC_ENOMEM;
    if (uv_mutex_init(&s->emit_lock) != 0)
        goto fail_mutex;
    s->start_ms = uv_now(loop);
    return s;

fail_mutex:
fail_identity:
    if (s->outbound != NULL)
        ac__outbound_close(s->outbound, NULL, NULL); /* no request made: freed at once */
    ac__authproxy_free(s->authproxy);
    ac__jwks_free(s->jwks);
    SSL_CTX_free(s->tls);
fail_tls:
    s->broker->vt->free(s->broker);

fail_broker:
    ac__emitter_dispose(&s->emitter);
    ac__ratelimit_dispose(&s->handshakes);
fail_ratelimit:
    ac__bridge_dispose(&s->bridge);
fail_bridge:
    ac__idem_dispose(&s->idem);
fail_idem:
    ac__manager_dispose(&s->manager);
fail_manager:
fail_net:
    ac__server_net_dispose(s);
    free(s->listen_host);
fail_listen:
    free(s);
fail:
    if (err != NULL)
        *err = r;
    return NULL;
}

static void server_free_one(ac_server_t *s)
{
    ac__embed_close(s);
    uv_mutex_destroy(&s->emit_lock);
    ac__api_static_free(s);
    ac__webhook_free(s);
    if (s->outbound != NULL) /* never started: it made no request and holds no handle */
        ac__outbound_close(s->outbound, NULL, NULL);
    ac__jwks_free(s->jwks);
    ac__authproxy_free(s->authproxy);
    SSL_CTX_free(s->tls);
    s->broker->vt->free(s->broker);
    ac__emitter_dispose(&s->emitter);
    ac__ratelimit_dispose(&s->handshakes);
    ac__bridge_dispose(&s->bridge);
    ac__idem_dispose(&s->idem);
    ac__manager_dispose(&s->manager);
    ac__sbuf_dispose(&s->reply);
    ac__sbuf_dispose(&s->fwd_reply);
    free(s->pub_items);
    ac__server_net_dispose(s);
    free(s->listen_host);
    free(s);
}

/* ---- stats ------------------------------------------------------------------------ */

static void stats_one(const ac_server_t *s, ac_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    out->total_users = s->manager.users_connected;
    out->total_connections = s->manager.nconns;
    out->active_emitters = s->manager.nusers;
    for (int i = 0; i < AC_STAT_NTYPES; i++)
        out->events_by_type[i] = s->emitter.by_type[i];
    out->events_total = s->emitter.events_total;
    out->direct_total = s->emitter.direct_total;
    out->deliveries_total = s->deliveries_total;
    out->evictions_total = s->evictions_total;
    out->stale_total = s->stale_total;
    out->slow_total = s->slow_total;
    out->rate_limited_total = s->rate_limited_total;
    out->http_requests_total = s->http_requests_total;
    out->http_errors_total = s->http_errors_total;
    out->queued_bytes = s->queued_bytes;
    out->history_bytes = s->manager.history.bytes;
    out->history_events = s->manager.history.frames;
    out->duplicates_total = s->duplicates_total;
    out->open_runs = s->bridge.nopen;
    out->messages_total = s->messages_total;
    out->uptime_s = (double)(uv_now(s->loop) - s->start_ms) / 1000.0;
}

/* A sum over loops; gauges and counters alike add up. */
static void stats_add(ac_stats_t *sum, const ac_stats_t *a)
{
    sum->total_users += a->total_users;
    sum->total_connections += a->total_connections;
    sum->active_emitters += a->active_emitters;
    for (int i = 0; i < AC_STAT_NTYPES; i++)
        sum->events_by_type[i] += a->events_by_type[i];
    sum->events_total += a->events_total;
    sum->direct_total += a->direct_total;
    sum->deliveries_total += a->deliveries_total;
    sum->evictions_total += a->evictions_total;
    sum->stale_total += a->stale_total;
    sum->slow_total += a->slow_total;
    sum->rate_limited_total += a->rate_limited_total;
    sum->http_requests_total += a->http_requests_total;
    sum->http_errors_total += a->http_errors_total;
    sum->queued_bytes += a->queued_bytes;
    sum->history_bytes += a->history_bytes;
    sum->history_events += a->history_events;
    sum->duplicates_total += a->duplicates_total;
    sum->open_runs += a->open_runs;
    sum->messages_total += a->messages_total;
}

void ac_server_stats(const ac_server_t *cs, ac_stats_t *out)
{
    ac_server_t *s = (ac_server_t *)cs; /* parking the other loops changes no figure */
    unsigned n = ac__group_size(s);

    stats_one(s, out);
    if (n == 1)
        return;
    ac__group_park(s);
    for (unsigned k = 0; k < n; k++) {
        ac_stats_t one;
        if (ac__group_shard(s, k) == s)
            continue;
        stats_one(ac__group_shard(s, k), &one);
        stats_add(out, &one);
    }
    ac__group_unpark(s);
}

/* Loops after the first: their identity handshakes go to the first (api/usersock.c). */
static ac_server_t *server_new_shard(uv_loop_t *loop, const ac_server_opts_t *opts, int *err)
{
    return server_new_one(loop, opts, 0, err);
}

ac_server_t *ac_server_new(uv_loop_t *loop, const ac_server_opts_t *opts, int *err)
{
    unsigned n = opts->threads ? opts->threads : 1;
    ac_server_opts_t o = *opts;
    ac_server_t *s;
    int r;

    if (n > AC__GROUP_MAX) {
        if (err != NULL)
            *err = AC_EINVAL;
        return NULL;
    }
    /* --history-max-bytes is the process's: each loop keeps its share. */
    if (n > 1 && o.history_max_bytes / n > 0)
        o.history_max_bytes /= n;
    s = server_new_one(loop, &o, 1, err);
    if (s == NULL || n == 1)
        return s;
    r = ac__group_new(s, n, s->broker->vt->publish_batch == NULL, server_new_shard);
    if (r != 0) {
        server_free_one(s);
        if (err != NULL)
            *err = r;
        return NULL;
    }
    return s;
}

void ac_server_free(ac_server_t *s)
{
    if (s == NULL)
        return;
    if (s->shard != NULL)
        ac__group_free(s, server_free_one);
    server_free_one(s);
}

int ac_server_start(ac_server_t *s)
{
    int r = ac__server_start_loop(s);

    if (r == 0 && s->shard != NULL)
        r = ac__group_start(s);
    return r;
}

/* One loop's certificate and JWKS. */
static int reload_one(ac_server_t *s)
{
    int r = 0;

    if (s->tls != NULL) {
        const char *why = NULL;
        if (ac__tls_ctx_reload(&s->tls, s->opts.tls_cert, s->opts.tls_key, &why) != 0) {
            ac__log(AC_LOG_ERROR, "event=reload_failed what=tls error=\"%s\"", why);
            r = AC_EINVAL;
        } else {
            ac__log(AC_LOG_INFO, "event=reloaded what=tls");
        }
    }
    if (s->jwks != NULL && ac__jwks_reload(s->jwks) != 0 && r == 0)
        r = AC_EINVAL;
    return r;
}

int ac_server_reload(ac_server_t *s)
{
    int r = reload_one(s);

    /* Every loop has its own TLS context and key set: the others reload while parked. */
    ac__group_park(s);
    for (unsigned k = 0; k < ac__group_size(s); k++) {
        ac_server_t *sk = ac__group_shard(s, k);
        if (sk != s && reload_one(sk) != 0 && r == 0)
            r = AC_EINVAL;
    }
    ac__group_unpark(s);
    return r;
}

int ac_server_shutdown(ac_server_t *s, ac_server_shutdown_cb cb, void *arg)
{
    if (s->shard == NULL)
        return ac__server_shutdown_loop(s, cb, arg);
    if (s->shutting_down || !s->started)
        return AC_ECLOSED;
    return ac__group_shutdown(s, cb, arg);
}
