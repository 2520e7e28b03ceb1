/* Flag and environment parsing for agentcastd. One table names every setting once: its
 * flag, its AGENTCAST_ variable (derived from the flag), its kind, its default and help. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/config.h"

typedef enum { K_STR, K_UINT, K_SECS, K_RATE, K_BYTES, K_AUTH, K_LOGLEVEL, K_BOOL } kind_t;

typedef struct flag_s {
    const char *name;
    kind_t kind;
    size_t offset; /* into ac_config_t */
    const char *help;
} flag_t;

#define OPT(field) offsetof(ac_config_t, server.field)

static const flag_t flags[] = {
    {"listen", K_STR, OPT(listen), "address to listen on, HOST:PORT (port 0: any free port)"},
    {"auth", K_AUTH, OPT(auth), "jwt (HS256 token= with sub) or none (user_id=, development)"},
    {"jwt-secret", K_STR, OPT(jwt_secret), "HS256 secret for --auth=jwt (prefer the env var)"},
    {"api-key", K_STR, OPT(api_key),
     "Bearer key for /v1/publish, /v1/stats, /metrics (unset: no key asked)"},
    {"max-conns", K_UINT, OPT(max_conns), "user connections on /ws in all; beyond: HTTP 503"},
    {"max-conns-per-user", K_UINT, OPT(max_conns_per_user),
     "connections per user; beyond: the oldest is closed with 4001"},
    {"ping-interval", K_SECS, OPT(ping_interval),
     "seconds between app ping envelopes and RFC 6455 pings"},
    {"stale-timeout", K_SECS, OPT(stale_timeout),
     "seconds without any frame from a client before close 4002"},
    {"cleanup-interval", K_SECS, OPT(cleanup_interval),
     "seconds between sweeps for stale connections and idle users"},
    {"handshake-timeout", K_SECS, OPT(handshake_timeout),
     "seconds to finish an HTTP request (and idle keep-alive limit)"},
    {"shutdown-timeout", K_SECS, OPT(shutdown_timeout),
     "seconds a graceful shutdown may take on SIGTERM/SIGINT"},
    {"history-ttl", K_SECS, OPT(history_ttl),
     "seconds a user's seq stream is kept after its last connection or event"},
    {"seq-ttl", K_SECS, OPT(seq_ttl),
     "seconds a user's seq counter and epoch outlive its history, so seqs are never reused"},
    {"history-size", K_UINT, OPT(history_size), "events retained per user for resume"},
    {"history-max-bytes", K_BYTES, OPT(history_max_bytes),
     "bytes of events retained in all; past it the least recently active users lose theirs"},
    {"idempotency-window", K_SECS, OPT(idempotency_window),
     "seconds an idempotency_key is remembered per user"},
    {"run-timeout", K_SECS, OPT(run_timeout),
     "seconds an open run may go without an event before the gateway closes it"},
    {"allowed-origins", K_STR, OPT(allowed_origins),
     "comma list of browser origins allowed on /ws, or *; unset: any with --auth=none, "
     "the request's own host with jwt"},
    {"client-rate", K_RATE, OPT(client_rate),
     "frames per second a user connection may send (burst: twice that); over: close 1008; "
     "0: no limit"},
    {"handshake-rate", K_RATE, OPT(handshake_rate),
     "WebSocket upgrades per second per client IP (burst: twice that); over: 429; 0: off"},
    {"tls-cert", K_STR, OPT(tls_cert), "PEM certificate chain: serve wss:// and https://"},
    {"tls-key", K_STR, OPT(tls_key), "PEM private key for --tls-cert"},
    {"message-webhook", K_STR, OPT(message_webhook),
     "http://HOST[:PORT]/PATH that receives user messages as JSON POSTs (retried)"},
    {"demo", K_BOOL, offsetof(ac_config_t, demo),
     "run the built-in demo agent: it answers user messages with a live run"},
    {"web-dir", K_STR, OPT(web_dir), "folder served at /, /dashboard and /static/"},
    {"client-dir", K_STR, OPT(client_dir), "folder served at /clients/js/"},
    {"max-publish-size", K_BYTES, OPT(max_publish_size), "bytes of a publish body; beyond: 413"},
    {"max-message-size", K_BYTES, OPT(max_message_size),
     "bytes of a client WebSocket message; beyond: close 1009"},
    {"max-queue-bytes", K_BYTES, OPT(max_queue_bytes),
     "unsent bytes per connection; above it for --slow-timeout: close 4008"},
    {"slow-timeout", K_SECS, OPT(slow_timeout),
     "seconds a connection's backlog may stay above --max-queue-bytes before close 4008"},
    {"broker", K_STR, OPT(broker),
     "memory (one node) or redis://HOST:PORT[/DB] (several nodes; password from "
     "AGENTCAST_REDIS_PASSWORD); comma-separated redis:// URLs: shards; "
     "redis+cluster://HOST:PORT[,...]: a Redis Cluster"},
    {"redis-prefix", K_STR, OPT(redis_prefix),
     "namespace of the redis broker's keys and channels (nodes of one cluster share it)"},
    {"log-level", K_LOGLEVEL, offsetof(ac_config_t, log_level), "error, warn, info or debug"},
    {"help", K_BOOL, offsetof(ac_config_t, help), "print this help and exit"},
    {"version", K_BOOL, offsetof(ac_config_t, version), "print the version and exit"},
};

#define NFLAGS (sizeof(flags) / sizeof(flags[0]))

static void env_name(const char *flag, char *out, size_t outsz)
{
    size_t n = (size_t)snprintf(out, outsz, "AGENTCAST_");
    for (const char *p = flag; *p && n + 1 < outsz; p++)
        out[n++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
    out[n] = '\0';
}

static int set_value(ac_config_t *cfg, const flag_t *f, const char *v, const char *origin)
{
    void *field = (char *)cfg + f->offset;
    char *end;

    switch (f->kind) {
    case K_STR:
        *(const char **)field = v;
        return 0;
    case K_UINT: {
        errno = 0;
        unsigned long n = strtoul(v, &end, 10);
        if (errno || *end || v[0] == '\0' || v[0] == '-' || n == 0 || n > 0xffffffffUL)
            break;
        *(unsigned *)field = (unsigned)n;
        return 0;
    }
    case K_SECS: {
        errno = 0;
        double d = strtod(v, &end);
        if (errno || *end || v[0] == '\0' || !(d > 0) || d > 31536000)
            break;
        *(double *)field = d;
        return 0;
    }
    case K_RATE: {
        errno = 0;
        double d = strtod(v, &end);
        if (errno || *end || v[0] == '\0' || !(d >= 0) || d > 1e6)
            break;
        *(double *)field = d;
        return 0;
    }
    case K_BYTES: {
        errno = 0;
        unsigned long long n = strtoull(v, &end, 10);
        unsigned long long mult = 1;
        if (*end == 'k' || *end == 'K')
            mult = 1024, end++;
        else if (*end == 'm' || *end == 'M')
            mult = 1024 * 1024, end++;
        else if (*end == 'g' || *end == 'G')
            mult = 1024ull * 1024 * 1024, end++;
        if (errno || *end || v[0] == '\0' || v[0] == '-' || n == 0 || n > (1ull << 40) / mult)
            break;
        *(size_t *)field = (size_t)(n * mult);
        return 0;
    }
    case K_AUTH:
        if (strcmp(v, "jwt") == 0)
            *(ac_auth_mode_t *)field = AC_AUTH_JWT;
        else if (strcmp(v, "none") == 0)
            *(ac_auth_mode_t *)field = AC_AUTH_NONE;
        else
            break;
        return 0;
    case K_LOGLEVEL:
        if (ac_log_level_parse(v, (ac_log_level_t *)field) != 0)
            break;
        return 0;
    case K_BOOL:
        if (strcmp(v, "1") == 0 || strcmp(v, "true") == 0 || strcmp(v, "yes") == 0)
            *(int *)field = 1;
        else if (strcmp(v, "0") == 0 || strcmp(v, "false") == 0 || strcmp(v, "no") == 0)
            *(int *)field = 0;
        else
            break;
        return 0;
    }
    fprintf(stderr, "agentcastd: %s: invalid value \"%s\" for --%s\n", origin, v, f->name);
    return -1;
}

static const flag_t *find_flag(const char *name, size_t len)
{
    for (size_t i = 0; i < NFLAGS; i++) {
        if (strlen(flags[i].name) == len && strncmp(flags[i].name, name, len) == 0)
            return &flags[i];
    }
    return NULL;
}

int ac_config_parse(ac_config_t *cfg, int argc, char **argv)
{
    memset(cfg, 0, sizeof(*cfg));
    ac_server_opts_init(&cfg->server);
    cfg->log_level = AC_LOG_INFO;

    for (size_t i = 0; i < NFLAGS; i++) {
        char name[64];
        const char *v;
        env_name(flags[i].name, name, sizeof(name));
        v = getenv(name);
        if (v != NULL && v[0] != '\0' && set_value(cfg, &flags[i], v, name) != 0)
            return -1;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *eq, *v;
        const flag_t *f;
        if (strncmp(a, "--", 2) != 0) {
            fprintf(stderr, "agentcastd: unexpected argument \"%s\" (see --help)\n", a);
            return -1;
        }
        a += 2;
        eq = strchr(a, '=');
        f = find_flag(a, eq ? (size_t)(eq - a) : strlen(a));
        if (f == NULL) {
            fprintf(stderr, "agentcastd: unknown flag \"%s\" (see --help)\n", argv[i]);
            return -1;
        }
        if (eq != NULL) {
            v = eq + 1;
        } else if (f->kind == K_BOOL) {
            v = "1";
        } else if (i + 1 < argc) {
            v = argv[++i];
        } else {
            fprintf(stderr, "agentcastd: --%s needs a value\n", f->name);
            return -1;
        }
        if (set_value(cfg, f, v, "flag") != 0)
            return -1;
    }
    return 0;
}

static void default_text(const flag_t *f, char *out, size_t n)
{
    ac_config_t d;

    memset(&d, 0, sizeof(d));
    ac_server_opts_init(&d.server);
    d.log_level = AC_LOG_INFO;
    void *field = (char *)&d + f->offset;
    switch (f->kind) {
    case K_STR: {
        const char *s = *(const char **)field;
        snprintf(out, n, "%s", s ? s : "(unset)");
        break;
    }
    case K_UINT:
        snprintf(out, n, "%u", *(unsigned *)field);
        break;
    case K_RATE:
    case K_SECS:
        snprintf(out, n, "%g", *(double *)field);
        break;
    case K_BYTES:
        snprintf(out, n, "%zu", *(size_t *)field);
        break;
    case K_AUTH:
        snprintf(out, n, "%s", *(ac_auth_mode_t *)field == AC_AUTH_JWT ? "jwt" : "none");
        break;
    case K_LOGLEVEL:
        snprintf(out, n, "info");
        break;
    case K_BOOL:
        snprintf(out, n, "off");
        break;
    }
}

void ac_config_usage(FILE *out)
{
    fprintf(out, "usage: agentcastd [--flag=value | --flag value]...\n\n"
                 "Every flag also reads AGENTCAST_<FLAG> (upper case, dashes as underscores);\n"
                 "a flag on the command line wins over the environment. Sizes take k/M/G.\n\n");
    for (size_t i = 0; i < NFLAGS; i++) {
        char def[64], env[64];
        default_text(&flags[i], def, sizeof(def));
        env_name(flags[i].name, env, sizeof(env));
        fprintf(out, "  --%-20s %s\n  %22s default: %s; env: %s\n", flags[i].name, flags[i].help,
                "", def, env);
    }
}
