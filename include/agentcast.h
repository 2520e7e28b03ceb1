/* agentcast: a WebSocket gateway that streams AI agents' progress events to the people
 * chatting with them. This is the one public header: the server (create it on your own
 * uv_loop_t, or let the daemon do it), publishing events, stats, logging and errors.
 * Every function here runs on the loop thread that owns the server unless it says
 * otherwise. */
#ifndef AGENTCAST_H
#define AGENTCAST_H

#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <uv.h>

#ifdef __cplusplus
extern "C" {
#endif

#define AC_VERSION "0.1.0"

/* Errors: 0 is success; failures are negative. Where an errno fits it is used. */
enum {
    AC_EINVAL = -EINVAL, /* an argument or a field is invalid */
    AC_ENOMEM = -ENOMEM, /* out of memory */
    AC_ENOENT = -ENOENT, /* no such user, connection or run */
    AC_E2BIG = -E2BIG,   /* over a size limit */
    AC_EBUSY = -EBUSY,   /* over a count limit */
    AC_ESTATE = -4001,   /* the request breaks a lifecycle rule (HTTP 409) */
    AC_EUNAVAIL = -4002, /* the broker cannot take events now (HTTP 503) */
    AC_ECLOSED = -4003   /* the server is shutting down */
};

/* A static, human-readable text for an AC_E* code or a negative errno. */
const char *ac_strerror(int err);

/* ---- logging ---------------------------------------------------------------------- */

typedef enum { AC_LOG_ERROR = 0, AC_LOG_WARN, AC_LOG_INFO, AC_LOG_DEBUG } ac_log_level_t;

/* Receives one formatted line (no trailing newline) of key=value fields. */
typedef void (*ac_log_cb)(ac_log_level_t level, const char *line, void *arg);

/* Replaces the log sink (default: a timestamped line on stderr) and the level. Call
 * before starting a server; not thread-safe. A NULL cb restores the default sink. */
void ac_log_set_sink(ac_log_cb cb, void *arg);
void ac_log_set_level(ac_log_level_t level);
/* Parses "error", "warn", "info" or "debug"; returns AC_EINVAL for anything else. */
int ac_log_level_parse(const char *name, ac_log_level_t *out);

/* What the default sink writes, one line per event on stderr. AC_LOG_TEXT (the default):
 * `ts=... level=... key=value...`. AC_LOG_JSON: one JSON object per line, for log
 * pipelines: "ts", "level", then each key=value field as a string member (a quoted value
 * without its quotes; text that is not key=value goes to "msg"). A sink set with
 * ac_log_set_sink() still receives the key=value line. Not thread-safe, like the sink. */
typedef enum { AC_LOG_TEXT = 0, AC_LOG_JSON = 1 } ac_log_format_t;
void ac_log_set_format(ac_log_format_t format);
/* Parses "text" or "json"; returns AC_EINVAL for anything else. */
int ac_log_format_parse(const char *name, ac_log_format_t *out);

/* Writes one line of key=value fields (printf-style) through the sink when `level` is
 * enabled: the embedder's own events in the gateway's log. Any thread when the sink is
 * thread-safe (the default sink is). */
void ac_log(ac_log_level_t level, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* ---- the server ------------------------------------------------------------------- */

/* jwt: a signed token (HS256 secret or a JWKS); none: user_id= (development only); proxy:
 * the backend at auth_proxy_url decides from the request's cookies and headers. */
typedef enum { AC_AUTH_JWT = 0, AC_AUTH_NONE = 1, AC_AUTH_PROXY = 2 } ac_auth_mode_t;

/* Options, filled with the daemon's defaults by ac_server_opts_init(). Strings are
 * borrowed: they must outlive the server. Durations are seconds (fractions allowed). */
typedef struct ac_server_opts_s {
    const char *listen;          /* "HOST:PORT"; port 0 picks a free one. 127.0.0.1:8080 */
    ac_auth_mode_t auth;         /* AC_AUTH_JWT */
    const char *jwt_secret;      /* HS256 secret; with AC_AUTH_JWT it or a JWKS is required */
    const char *api_key;         /* Bearer key for the HTTP API; NULL: no key asked */
    unsigned max_conns;          /* user connections on /ws, all users: 100000 */
    unsigned max_conns_per_user; /* beyond it the oldest is closed with 4001: 3 */
    double ping_interval;        /* app ping + RFC 6455 ping: 30 */
    double stale_timeout;        /* nothing received for this long: close 4002: 120 */
    double cleanup_interval;     /* period of the staleness / expiry sweep: 30 */
    double handshake_timeout;    /* an unfinished or idle HTTP request: 10 */
    double shutdown_timeout;     /* longest graceful shutdown: 10 */
    double history_ttl;          /* how long an idle user's seq stream is kept: 600 */
    unsigned history_size;       /* events retained per user for resume: 1000 */
    size_t history_max_bytes;    /* events retained in all: 256 MiB */
    double idempotency_window;   /* how long an idempotency_key is remembered: 300 */
    double run_timeout;          /* a run silent this long is closed with agent_error: 300 */
    const char *allowed_origins; /* comma list of origins, or "*"; NULL: see README */
    double client_rate;          /* frames per second a user connection may send: 100 */
    double handshake_rate;       /* upgrades per second per client IP; 0: no limit */
    const char *tls_cert;        /* PEM certificate chain; with tls_key: TLS on */
    const char *tls_key;         /* PEM private key */
    const char *message_webhook; /* http(s)://HOST[:PORT]/PATH that receives user messages */
    const char *web_dir;         /* static files for / and /dashboard: "web" */
    const char *client_dir;      /* the JavaScript client served at /clients/js/: "clients/js" */
    size_t max_publish_size;     /* publish body: 1 MiB */
    size_t max_message_size;     /* inbound WebSocket message: 64 KiB */
    size_t max_queue_bytes;      /* a connection's unsent backlog: 1 MiB */
    const char *broker;          /* "memory" (one node) or redis://HOST:PORT[/DB]: "memory" */
    const char *redis_password;  /* AUTH for the redis broker; NULL: none */
    const char *redis_prefix;    /* namespace of the redis broker's keys and channels: "ac:" */
    double slow_timeout;         /* backlog above max_queue_bytes this long: close 4008: 15 */
    double seq_ttl;              /* an idle user's seq counter and epoch outlive its history
                                    (history_ttl) this long, so seqs are never reused; at least
                                    history_ttl: 604800 */
    /* Identity providers and outbound HTTP. */
    const char *jwt_jwks_file;    /* JWKS (RFC 7517) file of RS/ES/EdDSA keys; reloaded by
                                     ac_server_reload() */
    const char *jwt_jwks_url;     /* http(s) URL of a JWKS, fetched at start and refreshed */
    double jwt_jwks_refresh;      /* seconds between refreshes of jwt_jwks_url: 600 */
    double jwt_jwks_min_refresh;  /* least seconds between two fetches, whatever asks: 30 */
    const char *jwt_audience;     /* when set, a token's aud must contain it */
    const char *jwt_issuer;       /* when set, a token's iss must equal it */
    double jwt_leeway;            /* seconds of clock skew allowed on exp and nbf: 0 */
    const char *jwt_user_claim;   /* the claim that names the user: "sub" */
    const char *auth_proxy_url;   /* AC_AUTH_PROXY: http(s) URL POSTed on each /ws upgrade */
    double auth_proxy_cache_ttl;  /* seconds an allowed answer is reused per cookie: 0 (off) */
    const char *outbound_ca_file; /* PEM CAs for https:// calls out; NULL: the system's */
    double outbound_timeout;      /* seconds an outbound request may take: 5 */
    unsigned threads; /* event loops, each on its own thread (the first is `loop`), users
                         sharded across them by a hash of the user id: 1 (0 means 1);
                         agentcastd's default is the CPUs it may run on. ac_emit()'s callback
                         and ac_message_cb stay on `loop`'s thread; the webhook posts from the
                         loop that owns the user. */
} ac_server_opts_t;

void ac_server_opts_init(ac_server_opts_t *opts);

typedef struct ac_server_s ac_server_t;

/* Creates a server on `loop` (borrowed; must outlive the server). Validates the options
 * (jwt mode needs a secret; every limit > 0) and binds nothing yet. Returns NULL and sets
 * *err (when err is not NULL) on failure. Caller frees with ac_server_free(). */
ac_server_t *ac_server_new(uv_loop_t *loop, const ac_server_opts_t *opts, int *err);

/* Binds and listens. Returns 0 or a negative error (-EADDRINUSE, AC_EINVAL for a bad
 * listen address...). */
int ac_server_start(ac_server_t *server);

/* The port actually bound (useful with port 0), or -1 before ac_server_start(). */
int ac_server_port(const ac_server_t *server);

/* Called once a graceful shutdown has finished: every connection closed (or the
 * shutdown timeout passed) and every handle of the server closed. */
typedef void (*ac_server_shutdown_cb)(ac_server_t *server, void *arg);

/* Starts a graceful shutdown: stops accepting, sends `closing` and close 1001 to every
 * user connection, flushes what is queued and closes everything within
 * opts.shutdown_timeout; then calls cb. Calling it again does nothing and returns
 * AC_ECLOSED. After cb the loop holds no handle of the server. */
int ac_server_shutdown(ac_server_t *server, ac_server_shutdown_cb cb, void *arg);

/* Reloads what may change under a running server (the daemon calls it on SIGHUP): the TLS
 * certificate and key (new handshakes use them; open connections are kept) and
 * opts.jwt_jwks_file. Each part that fails to load keeps its previous version and is
 * logged. Returns 0 when everything reloaded, else the first error (AC_EINVAL). */
int ac_server_reload(ac_server_t *server);

/* Frees a server that was never started, or whose shutdown callback has run. */
void ac_server_free(ac_server_t *server);

/* ---- events ----------------------------------------------------------------------- */

/* One event to publish. Strings are borrowed for the duration of the call; `data_json`
 * is a JSON object text (NULL or "" for {}). */
typedef struct ac_event_s {
    const char *user_id;
    const char *type; /* agent_started, ..., or a custom [a-z][a-z0-9_.-]{0,63} */
    const char *data_json;
    const char *run_id;          /* optional */
    const char *thread_id;       /* optional */
    const char *connection_id;   /* optional: a direct message to that one connection */
    const char *idempotency_key; /* optional: a repeat within the window is not published */
} ac_event_t;

/* Result of a publish. */
typedef struct ac_publish_result_s {
    uint64_t seq;       /* the event's seq; 0 for a direct message */
    unsigned delivered; /* connections it was handed to */
    int duplicate; /* 1: an idempotency_key seen before; seq is the first publish's (0: a direct
                      message) */
} ac_publish_result_t;

/* Called once for each event ac_emit() queued, on the loop thread, after the event was
 * validated and published: status 0 with the result, or a negative AC_E* code (AC_EINVAL:
 * a field is invalid; AC_ENOENT: a direct message's connection is not open; AC_ESTATE: the
 * run lifecycle refused it; AC_ECLOSED: the server shut down first) with `reason` naming
 * the field or rule (valid during the call). */
typedef void (*ac_emit_cb)(ac_server_t *server, int status, const ac_publish_result_t *result,
                           const char *reason, void *arg);

/* Publishes one event. Thread-safe: call it from any thread, before or after
 * ac_server_start(). The event is copied; it is validated and published on the loop thread,
 * in the order the calls were made, through a bounded queue and one uv_async_t wake-up (no
 * lock is ever taken on the server's state). `cb` may be NULL.
 * Returns 0 when queued (cb will be called exactly once), AC_EINVAL when user_id or type is
 * NULL, AC_EBUSY when AC_EMIT_QUEUE_MAX events are already waiting, AC_ECLOSED once
 * shutdown has begun (cb is then never called). */
#define AC_EMIT_QUEUE_MAX 65536
int ac_emit(ac_server_t *server, const ac_event_t *event, ac_emit_cb cb, void *arg);

/* ---- messages from users ---------------------------------------------------------- */

/* One chat message a user's client sent: {"type":"user_message","text":...,"thread_id":...}.
 * It reaches the agent only after it became a `user_message` event in the user's stream
 * (every tab of the user sees it; `seq` is its place there). Strings are valid during the
 * call only; `json` is the whole message as received. */
typedef struct ac_message_s {
    const char *user_id;
    const char *connection_id;
    const char *thread_id; /* NULL when the message has none */
    const char *text;
    const char *json;
    uint64_t seq; /* the message's user_message event in the user's stream */
} ac_message_t;

/* Receives user messages on the loop thread. Return 0 when taken; a negative value makes
 * the gateway answer the sender with an error envelope. */
typedef int (*ac_message_cb)(ac_server_t *server, const ac_message_t *message, void *arg);

/* Routes user messages to `cb` (an embedded agent, such as the daemon's --demo). Without
 * one, messages go to opts.message_webhook, or are refused with an error envelope. Loop
 * thread, before or after start. */
void ac_server_set_message_cb(ac_server_t *server, ac_message_cb cb, void *arg);

/* ---- runs: the agent bridge for C agents ------------------------------------------- */

/* A run handle: the five critical events of one agent run for one user, in lifecycle
 * order. Thread-safe like ac_emit() (each call queues one event); one thread at a time may
 * use a given handle. */
typedef struct ac_run_s ac_run_t;

/* Publishes agent_started {"agent": agent} and returns the handle (caller ends it with
 * ac_run_completed() or ac_run_error(), which free it). run_id NULL: a random id.
 * thread_id may be NULL. `cb` (may be NULL) receives the outcome of every event of the
 * run, as with ac_emit(). NULL with *err on failure (AC_EINVAL, AC_ENOMEM, AC_EBUSY,
 * AC_ECLOSED); cb is then never called. */
ac_run_t *ac_run_start(ac_server_t *server, const char *user_id, const char *thread_id,
                       const char *run_id, const char *agent, ac_emit_cb cb, void *arg, int *err);

/* The run's id (valid until the handle is freed). */
const char *ac_run_id(const ac_run_t *run);

/* agent_thinking {"thought": thought}. */
int ac_run_thinking(ac_run_t *run, const char *thought);
/* tool_executing {"tool", "tool_call_id", "args": args_json (a JSON text, NULL: none)}. */
int ac_run_tool_executing(ac_run_t *run, const char *tool, const char *tool_call_id,
                          const char *args_json);
/* tool_completed {"tool", "tool_call_id", "result": result_json (a JSON text)}. */
int ac_run_tool_completed(ac_run_t *run, const char *tool, const char *tool_call_id,
                          const char *result_json);
/* agent_completed {"result": result_json}; ends the run and frees the handle, whatever the
 * outcome. */
int ac_run_completed(ac_run_t *run, const char *result_json);
/* agent_error {"error": error}; ends the run and frees the handle, whatever the outcome. */
int ac_run_error(ac_run_t *run, const char *error);

/* ---- stats ------------------------------------------------------------------------ */

enum {
    AC_STAT_AGENT_STARTED = 0,
    AC_STAT_AGENT_THINKING,
    AC_STAT_TOOL_EXECUTING,
    AC_STAT_TOOL_COMPLETED,
    AC_STAT_AGENT_COMPLETED,
    AC_STAT_AGENT_ERROR,
    AC_STAT_USER_MESSAGE, /* the people's chat messages, published by the gateway */
    AC_STAT_CUSTOM,
    AC_STAT_NTYPES
};

typedef struct ac_stats_s {
    uint64_t total_users;       /* users with at least one open connection */
    uint64_t total_connections; /* open user connections on /ws */
    uint64_t active_emitters;   /* users whose seq stream is kept (connected or recent) */
    uint64_t events_by_type[AC_STAT_NTYPES];
    uint64_t events_total;       /* accepted events with a seq */
    uint64_t direct_total;       /* accepted direct messages */
    uint64_t deliveries_total;   /* frames handed to connections (events and direct) */
    uint64_t evictions_total;    /* closes with 4001 */
    uint64_t stale_total;        /* closes with 4002 */
    uint64_t slow_total;         /* closes with 4008 */
    uint64_t rate_limited_total; /* closes with 1008 and handshakes refused with 429 */
    uint64_t http_requests_total;
    uint64_t http_errors_total; /* responses with status >= 400 */
    uint64_t queued_bytes;      /* unsent bytes over all connections */
    uint64_t history_bytes;     /* bytes of retained events */
    uint64_t history_events;    /* retained events */
    uint64_t duplicates_total;  /* publishes answered from an idempotency key */
    uint64_t open_runs;         /* runs started and not yet closed */
    uint64_t messages_total;    /* user messages received */
    double uptime_s;
} ac_stats_t;

/* Fills *out: the whole process (sums over every loop of opts.threads). Loop thread only
 * (with several loops, the others stop for the moment the figures are read). */
void ac_server_stats(const ac_server_t *server, ac_stats_t *out);

#ifdef __cplusplus
}
#endif
#endif
