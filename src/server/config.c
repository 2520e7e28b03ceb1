/* Flag, environment and config-file parsing for agentcastd. One table names every setting
 * once: its flag, its AGENTCAST_ variable and its config-file name (both derived from the
 * flag), its kind, its default and help. --help, --help-man (the manual page) and
 * --check-config are all printed from it. */
#include <ctype.h>
#include <sched.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "server/config.h"

/* K_SECRET: a string masked by --check-config. K_LOGFORMAT: text or json. K_CONFIG: the
 * config file's path (command line or environment only). K_CMD: a command-line switch that
 * is no setting (--help): neither the environment nor the file reads it. */
typedef enum {
    K_STR,
    K_UINT,
    K_SECS,
    K_RATE,
    K_BYTES,
    K_AUTH,
    K_LOGLEVEL,
    K_BOOL,
    K_SECRET,
    K_LOGFORMAT,
    K_CONFIG,
    K_CMD
} kind_t;

typedef struct flag_s {
    const char *name;
    kind_t kind;
    size_t offset; /* into ac_config_t */
    const char *help;
} flag_t;

#define OPT(field) offsetof(ac_config_t, server.field)

static const flag_t flags[] = {
    {"config", K_CONFIG, offsetof(ac_config_t, config_file),
     "read settings from FILE: `name = value` lines named as the flags; # comments"},
    {"listen", K_STR, OPT(listen), "address to listen on, HOST:PORT (port 0: any free port)"},
    {"auth", K_AUTH, OPT(auth),
     "jwt (token= signed with --jwt-secret or a JWKS key), proxy (--auth-proxy-url decides "
     "from cookies) or none (user_id=, development)"},
    {"jwt-secret", K_SECRET, OPT(jwt_secret), "HS256 secret for --auth=jwt (prefer the env var)"},
    {"jwt-jwks-file", K_STR, OPT(jwt_jwks_file),
     "JWKS file of RS256/384/512, ES256/384, EdDSA keys for --auth=jwt (reloaded on SIGHUP)"},
    {"jwt-jwks-url", K_STR, OPT(jwt_jwks_url),
     "http(s) URL of the identity provider's JWKS: fetched at start, refreshed"},
    {"jwt-jwks-refresh", K_SECS, OPT(jwt_jwks_refresh), "seconds between JWKS URL refreshes"},
    {"jwt-jwks-min-refresh", K_SECS, OPT(jwt_jwks_min_refresh),
     "least seconds between two JWKS fetches (an unknown kid asks for one)"},
    {"jwt-audience", K_STR, OPT(jwt_audience), "when set, a token's aud must contain it"},
    {"jwt-issuer", K_STR, OPT(jwt_issuer), "when set, a token's iss must equal it"},
    {"jwt-leeway", K_RATE, OPT(jwt_leeway), "seconds of clock skew allowed on exp and nbf"},
    {"jwt-user-claim", K_STR, OPT(jwt_user_claim), "the token claim that names the user"},
    {"auth-proxy-url", K_STR, OPT(auth_proxy_url),
     "--auth=proxy: http(s) URL POSTed the Cookie, Authorization, Origin and query of each "
     "/ws upgrade; answers {\"user_id\":...}"},
    {"auth-proxy-cache-ttl", K_RATE, OPT(auth_proxy_cache_ttl),
     "seconds an allowed proxy answer is reused for the same Cookie/Authorization; 0: off"},
    {"outbound-ca-file", K_STR, OPT(outbound_ca_file),
     "PEM CA bundle for https:// calls out (webhook, JWKS, proxy); unset: the system's"},
    {"outbound-timeout", K_SECS, OPT(outbound_timeout),
     "seconds an outbound request (webhook attempt, JWKS fetch, proxy call) may take"},
    {"api-key", K_SECRET, OPT(api_key),
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
     "http(s)://HOST[:PORT]/PATH that receives user messages as JSON POSTs (retried)"},
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
    {"threads", K_UINT, OPT(threads),
     "event loops, one thread each, users sharded across them by a hash of the user id "
     "(default: the CPUs this process may run on; 1: a single loop)"},
    {"broker", K_STR, OPT(broker),
     "memory (one node) or redis://HOST:PORT[/DB] (several nodes; password from "
     "AGENTCAST_REDIS_PASSWORD); comma-separated redis:// URLs: shards; "
     "redis+cluster://HOST:PORT[,...]: a Redis Cluster"},
    {"redis-prefix", K_STR, OPT(redis_prefix),
     "namespace of the redis broker's keys and channels (nodes of one cluster share it)"},
    {"redis-password", K_SECRET, OPT(redis_password),
     "AUTH password of the redis broker (prefer the environment or a file only root reads)"},
    {"log-level", K_LOGLEVEL, offsetof(ac_config_t, log_level), "error, warn, info or debug"},
    {"log-format", K_LOGFORMAT, offsetof(ac_config_t, log_format),
     "text (key=value lines) or json (one JSON object per line, for log pipelines)"},
    {"check-config", K_CMD, offsetof(ac_config_t, check_config),
     "validate the configuration, print it with secrets masked, and exit (0: valid)"},
    {"help", K_CMD, offsetof(ac_config_t, help), "print this help and exit"},
    {"help-man", K_CMD, offsetof(ac_config_t, help_man),
     "print the manual page agentcastd(8) (roff) and exit"},
    {"version", K_CMD, offsetof(ac_config_t, version), "print the version and exit"},
};

#define NFLAGS (sizeof(flags) / sizeof(flags[0]))
_Static_assert(NFLAGS <= AC_CONFIG_MAX_FLAGS, "raise AC_CONFIG_MAX_FLAGS");

enum { FROM_DEFAULT = 0, FROM_FILE, FROM_ENV, FROM_CLI };

static const char *const level_names[] = {"error", "warn", "info", "debug"};

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
    case K_SECRET:
    case K_CONFIG:
        *(const char **)field = v;
        return 0;
    case K_LOGFORMAT:
        if (ac_log_format_parse(v, (ac_log_format_t *)field) != 0)
            break;
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
        else if (strcmp(v, "proxy") == 0)
            *(ac_auth_mode_t *)field = AC_AUTH_PROXY;
        else
            break;
        return 0;
    case K_LOGLEVEL:
        if (ac_log_level_parse(v, (ac_log_level_t *)field) != 0)
            break;
        return 0;
    case K_BOOL:
    case K_CMD:
        if (strcmp(v, "1") == 0 || strcmp(v, "true") == 0 || strcmp(v, "yes") == 0)
            *(int *)field = 1;
        else if (strcmp(v, "0") == 0 || strcmp(v, "false") == 0 || strcmp(v, "no") == 0)
            *(int *)field = 0;
        else
            break;
        return 0;
    }
    if (f->kind == K_SECRET)
        v = "********";
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

static size_t flag_index(const flag_t *f)
{
    return (size_t)(f - flags);
}

/* Reads the flag at argv[*i] and its value (advancing *i past a separate value). Returns 0,
 * or -1 after printing the reason. */
static int next_flag(int argc, char **argv, int *i, const flag_t **fp, const char **vp)
{
    const char *a = argv[*i];
    const char *eq;
    const flag_t *f;

    if (strncmp(a, "--", 2) != 0) {
        fprintf(stderr, "agentcastd: unexpected argument \"%s\" (see --help)\n", a);
        return -1;
    }
    a += 2;
    eq = strchr(a, '=');
    f = find_flag(a, eq ? (size_t)(eq - a) : strlen(a));
    if (f == NULL) {
        fprintf(stderr, "agentcastd: unknown flag \"%s\" (see --help)\n", argv[*i]);
        return -1;
    }
    if (eq != NULL) {
        *vp = eq + 1;
    } else if (f->kind == K_BOOL || f->kind == K_CMD) {
        *vp = "1";
    } else if (*i + 1 < argc) {
        *vp = argv[++*i];
    } else {
        fprintf(stderr, "agentcastd: --%s needs a value\n", f->name);
        return -1;
    }
    *fp = f;
    return 0;
}

#define CONFIG_FILE_MAX (1024 * 1024)

/* The whole file, NUL-terminated, in a buffer the caller frees; NULL after printing why. */
static char *read_file(const char *path)
{
    FILE *fp = fopen(path, "r");
    char *text;
    size_t n;

    if (fp == NULL) {
        fprintf(stderr, "agentcastd: --config %s: %s\n", path, strerror(errno));
        return NULL;
    }
    text = malloc(CONFIG_FILE_MAX + 1);
    if (text == NULL) {
        fclose(fp);
        fprintf(stderr, "agentcastd: --config %s: out of memory\n", path);
        return NULL;
    }
    n = fread(text, 1, CONFIG_FILE_MAX + 1, fp);
    if (ferror(fp) || n > CONFIG_FILE_MAX) {
        fprintf(stderr, "agentcastd: --config %s: %s\n", path,
                ferror(fp) ? strerror(errno) : "larger than 1 MiB");
        fclose(fp);
        free(text);
        return NULL;
    }
    fclose(fp);
    text[n] = '\0';
    if (memchr(text, '\0', n) != NULL) {
        fprintf(stderr, "agentcastd: --config %s: not a text file (a NUL byte)\n", path);
        free(text);
        return NULL;
    }
    return text;
}

/* A secret in a file that others may read is worth a line on stderr (ssh does the same). */
static void warn_if_readable(const char *path, const char *name)
{
    struct stat st;

    if (stat(path, &st) == 0 && (st.st_mode & 0077) != 0)
        fprintf(stderr,
                "agentcastd: warning: %s holds %s and other users may read it (mode %03o); "
                "chmod 600 it, or set the secret in the environment\n",
                path, name, (unsigned)(st.st_mode & 0777));
}

static char *trim(char *s, char *end)
{
    while (s < end && isspace((unsigned char)*s))
        s++;
    while (end > s && isspace((unsigned char)end[-1]))
        end--;
    *end = '\0';
    return s;
}

/* Applies `name = value` lines (values may be "quoted"; # starts a comment line). Values
 * point into cfg->file_text, which this modifies in place. */
static int apply_file(ac_config_t *cfg, const char *path)
{
    char *line = cfg->file_text;
    unsigned lineno = 0;

    while (line != NULL && *line != '\0') {
        char *nl = strchr(line, '\n');
        char *end = nl ? nl : line + strlen(line);
        char *next = nl ? nl + 1 : NULL;
        char origin[512];
        lineno++;
        snprintf(origin, sizeof(origin), "%s:%u", path, lineno);
        char *l = trim(line, end);
        line = next;
        if (*l == '\0' || *l == '#')
            continue;
        char *eq = strchr(l, '=');
        if (eq == NULL) {
            fprintf(stderr, "agentcastd: %s: expected \"name = value\", got \"%s\"\n", origin, l);
            return -1;
        }
        char *name = trim(l, eq);
        char *value = trim(eq + 1, eq + 1 + strlen(eq + 1));
        size_t vlen = strlen(value);
        if (vlen >= 2 && value[0] == '"' && value[vlen - 1] == '"') {
            value[vlen - 1] = '\0';
            value++;
        }
        const flag_t *f = find_flag(name, strlen(name));
        if (f == NULL) {
            fprintf(stderr,
                    "agentcastd: %s: unknown setting \"%s\" (settings are the flags' names "
                    "without --; see --help)\n",
                    origin, name);
            return -1;
        }
        size_t k = flag_index(f);
        if (f->kind == K_CMD || f->kind == K_CONFIG) {
            fprintf(stderr, "agentcastd: %s: \"%s\" is a command-line switch, not a setting\n",
                    origin, name);
            return -1;
        }
        if (cfg->src[k].from == FROM_FILE) {
            fprintf(stderr, "agentcastd: %s: \"%s\" is already set on line %u\n", origin, name,
                    cfg->src[k].line);
            return -1;
        }
        if (*value == '\0') {
            fprintf(stderr, "agentcastd: %s: \"%s\" needs a value\n", origin, name);
            return -1;
        }
        if (set_value(cfg, f, value, origin) != 0)
            return -1;
        cfg->src[k].from = FROM_FILE;
        cfg->src[k].line = lineno;
        if (f->kind == K_SECRET)
            warn_if_readable(path, f->name);
    }
    return 0;
}

/* --threads' default: the CPUs the process may run on (taskset, cgroup cpusets). */
static unsigned cpus_allowed(void)
{
    cpu_set_t set;
    int n;

    if (sched_getaffinity(0, sizeof(set), &set) != 0)
        return 1;
    n = CPU_COUNT(&set);
    return n < 1 ? 1 : n > 256 ? 256 : (unsigned)n;
}

static void set_defaults(ac_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    ac_server_opts_init(&cfg->server);
    cfg->server.threads = cpus_allowed();
    cfg->log_level = AC_LOG_INFO;
    cfg->log_format = AC_LOG_TEXT;
}

int ac_config_parse(ac_config_t *cfg, int argc, char **argv)
{
    const flag_t *f;
    const char *v;

    set_defaults(cfg);
    /* The file's path first (command line, then environment): it is the lowest layer. */
    for (int i = 1; i < argc; i++) {
        if (next_flag(argc, argv, &i, &f, &v) != 0)
            return -1;
        if (f->kind == K_CONFIG)
            cfg->config_file = v;
    }
    if (cfg->config_file == NULL) {
        const char *env = getenv("AGENTCAST_CONFIG");
        if (env != NULL && env[0] != '\0')
            cfg->config_file = env;
    }
    if (cfg->config_file != NULL) {
        if (cfg->config_file[0] == '\0') {
            fprintf(stderr, "agentcastd: --config needs a file name\n");
            return -1;
        }
        cfg->file_text = read_file(cfg->config_file);
        if (cfg->file_text == NULL || apply_file(cfg, cfg->config_file) != 0)
            return -1;
    }
    for (size_t i = 0; i < NFLAGS; i++) {
        char name[64];
        if (flags[i].kind == K_CMD || flags[i].kind == K_CONFIG)
            continue;
        env_name(flags[i].name, name, sizeof(name));
        v = getenv(name);
        if (v == NULL || v[0] == '\0')
            continue;
        if (set_value(cfg, &flags[i], v, name) != 0)
            return -1;
        cfg->src[i].from = FROM_ENV;
    }
    for (int i = 1; i < argc; i++) {
        if (next_flag(argc, argv, &i, &f, &v) != 0)
            return -1;
        if (f->kind == K_CONFIG)
            continue;
        if (set_value(cfg, f, v, "flag") != 0)
            return -1;
        cfg->src[flag_index(f)].from = FROM_CLI;
    }
    return 0;
}

void ac_config_dispose(ac_config_t *cfg)
{
    free(cfg->file_text);
    cfg->file_text = NULL;
}

/* The value of `f` in `cfg` as the config file would spell it; "" for an unset string. */
static void value_text(const ac_config_t *cfg, const flag_t *f, char *out, size_t n)
{
    const void *field = (const char *)cfg + f->offset;

    switch (f->kind) {
    case K_STR:
    case K_SECRET:
    case K_CONFIG: {
        const char *s = *(const char *const *)field;
        snprintf(out, n, "%s", s ? s : "");
        break;
    }
    case K_UINT:
        snprintf(out, n, "%u", *(const unsigned *)field);
        break;
    case K_RATE:
    case K_SECS:
        snprintf(out, n, "%g", *(const double *)field);
        break;
    case K_BYTES:
        snprintf(out, n, "%zu", *(const size_t *)field);
        break;
    case K_AUTH: {
        /* Spelled as set_value() parses them: a mode added there is added here too. */
        ac_auth_mode_t m = *(const ac_auth_mode_t *)field;
        if (m == AC_AUTH_JWT)
            snprintf(out, n, "jwt");
        else if (m == AC_AUTH_NONE)
            snprintf(out, n, "none");
        else if (m == AC_AUTH_PROXY)
            snprintf(out, n, "proxy");
        else
            snprintf(out, n, "(mode %d)", (int)m);
        break;
    }
    case K_LOGLEVEL:
        snprintf(out, n, "%s", level_names[*(const ac_log_level_t *)field]);
        break;
    case K_LOGFORMAT:
        snprintf(out, n, "%s", *(const ac_log_format_t *)field == AC_LOG_JSON ? "json" : "text");
        break;
    case K_BOOL:
    case K_CMD:
        snprintf(out, n, "%s", *(const int *)field ? "true" : "false");
        break;
    }
}

static void default_text(const flag_t *f, char *out, size_t n)
{
    ac_config_t d;

    set_defaults(&d);
    value_text(&d, f, out, n);
    if (out[0] == '\0')
        snprintf(out, n, "(unset)");
}

typedef struct {
    char p[1024];
    size_t len;
    int full;
} maskbuf_t;

static void put(maskbuf_t *b, const char *src, size_t len)
{
    if (b->full || b->len + len >= sizeof(b->p)) {
        b->full = 1;
        return;
    }
    memcpy(b->p + b->len, src, len);
    b->len += len;
}

/* A URL's credentials: its userinfo (`user:pass@`) and its query or fragment (where tokens
 * are often put) become ****, in every URL of a comma-separated list. */
static void mask_urls(char *val, size_t n)
{
    maskbuf_t b = {.len = 0, .full = 0};
    const char *p = val, *scheme;

    while ((scheme = strstr(p, "://")) != NULL) {
        const char *auth = scheme + 3, *end = auth + strcspn(auth, "/?#,");
        const char *at = memchr(auth, '@', (size_t)(end - auth));
        put(&b, p, (size_t)(auth - p));
        if (at != NULL) {
            put(&b, "****", 4);
            auth = at;
        }
        /* The host and path are kept, up to a query, a fragment or the list's next URL. */
        p = end + strcspn(end, "?#,");
        put(&b, auth, (size_t)(p - auth));
        if (*p == '?' || *p == '#') {
            put(&b, p, 1);
            put(&b, "****", 4);
            p += strcspn(p, ",");
        }
    }
    if (p == val)
        return; /* no URL */
    put(&b, p, strlen(p));
    if (b.full)
        snprintf(val, n, "(too long to show masked)");
    else
        snprintf(val, n, "%.*s", (int)b.len, b.p);
}

void ac_config_print(const ac_config_t *cfg, FILE *out)
{
    fprintf(out,
            "# agentcastd %s: the effective configuration (secrets masked)\n"
            "# precedence: command line > environment > config file > defaults\n"
            "# config file: %s\n",
            AC_VERSION, cfg->config_file ? cfg->config_file : "(none)");
    for (size_t i = 0; i < NFLAGS; i++) {
        const flag_t *f = &flags[i];
        char val[1024], from[600], line[1200];
        if (f->kind == K_CMD || f->kind == K_CONFIG)
            continue;
        value_text(cfg, f, val, sizeof(val));
        switch (cfg->src[i].from) {
        case FROM_FILE:
            snprintf(from, sizeof(from), "%s:%u", cfg->config_file, cfg->src[i].line);
            break;
        case FROM_ENV: {
            char env[64];
            env_name(f->name, env, sizeof(env));
            snprintf(from, sizeof(from), "environment %s", env);
            break;
        }
        case FROM_CLI:
            snprintf(from, sizeof(from), "command line");
            break;
        default:
            snprintf(from, sizeof(from), "default");
        }
        if (val[0] == '\0') {
            fprintf(out, "# %s is unset (%s)\n", f->name, from);
            continue;
        }
        if (f->kind == K_SECRET)
            snprintf(val, sizeof(val), "********");
        else if (f->kind == K_STR)
            mask_urls(val, sizeof(val));
        snprintf(line, sizeof(line), "%s = %s", f->name, val);
        fprintf(out, "%-44s # %s\n", line, from);
    }
}

static const char *metavar(const flag_t *f)
{
    switch (f->kind) {
    case K_UINT:
        return "N";
    case K_SECS:
        return "SECONDS";
    case K_RATE:
        return "PER_SECOND";
    case K_BYTES:
        return "BYTES";
    case K_AUTH:
        return "MODE";
    case K_LOGLEVEL:
        return "LEVEL";
    case K_LOGFORMAT:
        return "FORMAT";
    case K_SECRET:
        return "SECRET";
    case K_CONFIG:
        return "FILE";
    case K_BOOL:
    case K_CMD:
        return "";
    case K_STR:
        break;
    }
    return "VALUE";
}

void ac_config_usage(FILE *out)
{
    fprintf(out, "usage: agentcastd [--config FILE] [--flag=value | --flag value]...\n\n"
                 "Every setting is a flag, an AGENTCAST_<FLAG> environment variable (upper case,\n"
                 "dashes as underscores) and a `flag = value` line of the --config file.\n"
                 "Precedence: command line > environment > config file > defaults.\n"
                 "Durations are seconds (fractions allowed); sizes are bytes and take k/M/G.\n\n");
    for (size_t i = 0; i < NFLAGS; i++) {
        const flag_t *f = &flags[i];
        char def[64], env[64], head[64];
        snprintf(head, sizeof(head), "%s%s%s", f->name, metavar(f)[0] ? " " : "", metavar(f));
        fprintf(out, "  --%-24s %s\n", head, f->help);
        env_name(f->name, env, sizeof(env));
        if (f->kind == K_CMD) {
            fprintf(out, "  %26s command line only\n", "");
        } else if (f->kind == K_CONFIG) {
            fprintf(out, "  %26s env: %s\n", "", env);
        } else {
            default_text(f, def, sizeof(def));
            fprintf(out, "  %26s default: %s; env: %s\n", "", def, env);
        }
    }
}

/* `s` as roff text: backslashes and dashes escaped, a leading dot or quote made literal. */
static void roff(FILE *out, const char *s)
{
    if (*s == '.' || *s == '\'')
        fputs("\\&", out);
    for (; *s; s++) {
        if (*s == '\\')
            fputs("\\e", out);
        else if (*s == '-')
            fputs("\\-", out);
        else
            fputc(*s, out);
    }
}

static void roff_line(FILE *out, const char *s)
{
    roff(out, s);
    fputc('\n', out);
}

void ac_config_man(FILE *out)
{
    fprintf(out,
            ".\\\" agentcastd(8), generated by `agentcastd --help-man` from the flag table of\n"
            ".\\\" src/server/config.c (the table that prints --help). Do not edit.\n"
            ".TH AGENTCASTD 8 \"\" \"agentcast %s\" \"System Administration\"\n"
            ".SH NAME\n"
            "agentcastd \\- WebSocket gateway that streams AI agents' progress to users\n"
            ".SH SYNOPSIS\n"
            ".B agentcastd\n"
            "[\\fB\\-\\-config\\fR \\fIFILE\\fR] [\\fB\\-\\-\\fIflag\\fB=\\fIvalue\\fR | "
            "\\fB\\-\\-\\fIflag\\fR \\fIvalue\\fR]...\n"
            ".br\n"
            ".B agentcastd \\-\\-check\\-config\n"
            "[\\fB\\-\\-config\\fR \\fIFILE\\fR] [\\fIflags\\fR]...\n"
            ".SH DESCRIPTION\n"
            ".B agentcastd\n"
            "delivers the events of AI agent runs (agent_started, agent_thinking,\n"
            "tool_executing, tool_completed, agent_completed) to every open WebSocket\n"
            "connection of the user they belong to, in order, with a per-user seq; a client\n"
            "that reconnects with last_seq is replayed what it missed. Agent backends publish\n"
            "with POST /v1/publish or over the publisher socket GET /v1/agent; users connect\n"
            "to GET /ws. GET /healthz, GET /v1/stats and GET /metrics report its state.\n"
            ".SH OPTIONS\n"
            "Every setting is a flag (\\fB\\-\\-name=value\\fR or \\fB\\-\\-name value\\fR),\n"
            "an environment variable and a line of the configuration file.\n"
            "Precedence: command line > environment > configuration file > defaults.\n"
            "Durations are seconds (fractions allowed); sizes are bytes and take k, M or G.\n",
            AC_VERSION);
    for (size_t i = 0; i < NFLAGS; i++) {
        const flag_t *f = &flags[i];
        char def[64], env[64];
        fputs(".TP\n\\fB", out);
        roff(out, "--");
        roff(out, f->name);
        fputs("\\fR", out);
        if (metavar(f)[0] != '\0') {
            fputs(" \\fI", out);
            roff(out, metavar(f));
            fputs("\\fR", out);
        }
        fputc('\n', out);
        roff(out, f->help);
        fputs(".\n", out);
        env_name(f->name, env, sizeof(env));
        if (f->kind == K_CMD) {
            fputs("Command line only.\n", out);
            continue;
        }
        if (f->kind != K_CONFIG) {
            default_text(f, def, sizeof(def));
            fputs("Default: ", out);
            roff(out, def);
            fputs(". ", out);
        }
        fputs("Environment: \\fB", out);
        roff(out, env);
        fputs("\\fR.\n", out);
    }
    static const char *const tail[] = {
        ".SH CONFIGURATION FILE",
        "The file named by --config (or AGENTCAST_CONFIG) holds one setting per line, "
        "`name = value`, with the flags' names without the leading dashes; a value may be "
        "put in double quotes; blank lines and lines starting with # are ignored. A name "
        "that is not a setting, a value that does not parse or a setting given twice stops "
        "the daemon with the file's name and line. agentcastd --check-config prints the "
        "effective configuration, each value with where it came from, secrets masked, and "
        "exits 0 when it is valid.",
        ".SH SIGNALS",
        "SIGTERM or SIGINT: stop accepting, send closing and close 1001 to every connection, "
        "flush what is queued and exit 0 within --shutdown-timeout; a second signal exits at "
        "once.",
        ".SH SYSTEMD",
        "Under systemd (Type=notify) agentcastd sends READY=1 once it listens and STOPPING=1 "
        "when a shutdown begins, through $NOTIFY_SOCKET.",
        ".SH EXIT STATUS",
        "0: a clean shutdown, or a valid configuration with --check-config. 1: the broker is "
        "unreachable or the address cannot be bound. 2: an invalid flag, environment "
        "variable, configuration file or combination of settings.",
        ".SH FILES",
        "/etc/agentcast/agentcast.conf or /usr/local/etc/agentcast/agentcast.conf (by the "
        "installation prefix): the configuration the systemd unit agentcastd.service passes "
        "with --config. share/agentcast/: the demo pages (web/) and the JavaScript client "
        "(clients/js/).",
        ".SH SEE ALSO",
        "systemd.exec(5), the README of agentcast.",
    };
    for (size_t i = 0; i < sizeof(tail) / sizeof(tail[0]); i++) {
        if (tail[i][0] == '.')
            fprintf(out, "%s\n", tail[i]);
        else
            roff_line(out, tail[i]);
    }
}
