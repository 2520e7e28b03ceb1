/* The user side of the gateway: the GET /ws handshake (identity, limits, resume point)
 * and the messages a user's client sends (a chat message becomes a user_message event of
 * the user's stream, then goes to the agent). Identity comes only from a verified token,
 * from the backend's answer with --auth=proxy, or in --auth=none development mode from
 * user_id=. A handshake waiting on the network (the connect proxy, a JWKS fetch) is
 * answered later; the loop never waits for it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/api.h"
#include "api/auth.h"
#include "api/authproxy.h"
#include "api/jwks.h"
#include "core/log.h"
#include "net/group.h"
#include "net/ws.h"

#define QUERY_VALUE_MAX 8192

typedef struct handshake_s {
    char user[QUERY_VALUE_MAX];
    size_t user_len;
    char thread[AC__USER_ID_MAX + 1];
    long thread_len; /* -1: none */
    int has_last_seq;
    uint64_t last_seq;
    char epoch[17];
    long epoch_len; /* -1: none */
} handshake_t;

static int header_is(const ac__http_req_t *req, int h, const char *value)
{
    size_t n = strlen(value);
    return req->headers[h] != NULL && req->header_lens[h] == n &&
           strncasecmp(req->headers[h], value, n) == 0;
}

/* In jwt mode a browser's handshake must come from a page of this very host (port
 * included): a token leaked to another site must not open a socket from there. A request
 * without Origin is a server-side client and passes. */
static int origin_matches_host(const ac__http_req_t *req)
{
    const char *o = req->headers[AC__H_ORIGIN];
    size_t olen = req->header_lens[AC__H_ORIGIN];
    const char *h = req->headers[AC__H_HOST];
    size_t hlen = req->header_lens[AC__H_HOST];
    const char *sep;

    if (o == NULL)
        return 1;
    if (h == NULL)
        return 0;
    sep = olen >= 3 ? memmem(o, olen, "://", 3) : NULL;
    if (sep == NULL)
        return 0;
    sep += 3;
    olen -= (size_t)(sep - o);
    if (olen > 0 && sep[olen - 1] == '/')
        olen--;
    if (olen == hlen && strncasecmp(sep, h, hlen) == 0)
        return 1;
    /* Default ports may be implicit on one side only. */
    int https = strncasecmp(o, "https://", 8) == 0;
    const char *dflt = https ? ":443" : ":80";
    size_t dlen = strlen(dflt);
    if (hlen == olen + dlen && strncasecmp(sep, h, olen) == 0 && strncmp(h + olen, dflt, dlen) == 0)
        return 1;
    if (olen == hlen + dlen && strncasecmp(sep, h, hlen) == 0 &&
        strncmp(sep + hlen, dflt, dlen) == 0)
        return 1;
    return 0;
}

/* read_identity's outcomes besides 0 (identity in hs->user) and -1 (answered). */
enum { IDENTITY_WAIT_KEYS = 1, IDENTITY_ASK_PROXY = 2 };

static ac__jwt_policy_t jwt_policy(const ac_server_t *s)
{
    ac__jwt_policy_t p;

    memset(&p, 0, sizeof(p));
    if (s->opts.jwt_secret != NULL && s->opts.jwt_secret[0] != '\0') {
        p.secret = (const uint8_t *)s->opts.jwt_secret;
        p.secret_len = strlen(s->opts.jwt_secret);
    }
    p.keys = s->jwks ? ac__jwks_keys(s->jwks) : NULL;
    p.asymmetric = s->jwks != NULL;
    p.audience = s->opts.jwt_audience;
    p.issuer = s->opts.jwt_issuer;
    p.leeway = (int64_t)s->opts.jwt_leeway;
    p.user_claim = s->opts.jwt_user_claim;
    return p;
}

/* Checks the token held in hs->user; on success hs->user is the user. With may_wait, a
 * token naming a key the set lacks waits for a JWKS refresh (IDENTITY_WAIT_KEYS). */
static int check_token(ac__conn_t *c, handshake_t *hs, int may_wait)
{
    ac_server_t *s = ac__conn_server(c);
    ac__jwt_policy_t pol = jwt_policy(s);
    const char *reason = "token required";
    char *sub = NULL;
    int r = hs->user_len == 0
                ? AC__JWT_REFUSED
                : ac__jwt_check(hs->user, hs->user_len, &pol, ac__now_ms() / 1000, &sub, &reason);

    if (r == AC__JWT_UNKNOWN_KEY && may_wait && ac__jwks_want_refresh(s->jwks))
        return IDENTITY_WAIT_KEYS;
    if (r == AC__JWT_UNKNOWN_KEY && pol.keys == NULL) {
        ac__log(AC_LOG_WARN, "event=auth_unavailable reason=\"no signing keys yet\"");
        ac__conn_respond_error(c, 503, "signing keys unavailable: the JWKS has not loaded yet",
                               "Retry-After: 5\r\n");
        return -1;
    }
    if (r != 0) {
        ac__log(AC_LOG_INFO, "event=auth_refused reason=\"%s\"", reason);
        ac__conn_respond_error(c, 401, reason, NULL);
        return -1;
    }
    hs->user_len = strlen(sub);
    memcpy(hs->user, sub, hs->user_len + 1);
    free(sub);
    return 0;
}

/* Reads the identity of a handshake: 0 (hs->user set), -1 (refused and answered), or one
 * of the IDENTITY_ outcomes that answer later. */
static int read_identity(ac__conn_t *c, const ac__http_req_t *req, handshake_t *hs)
{
    ac_server_t *s = ac__conn_server(c);
    long n;

    if (s->opts.auth == AC_AUTH_NONE) {
        n = ac__http_query_get(req->query, req->query_len, "user_id", hs->user, sizeof(hs->user));
        if (n == -1 || n == 0) {
            ac__conn_respond_error(c, 400, "user_id required", NULL);
            return -1;
        }
        if (n < 0 || !ac__api_label_ok(hs->user, (size_t)n, AC__USER_ID_MAX)) {
            ac__conn_respond_error(c, 400, "user_id: 1 to 256 bytes without control characters",
                                   NULL);
            return -1;
        }
        hs->user_len = (size_t)n;
        return 0;
    }
    if (s->opts.auth == AC_AUTH_PROXY) {
        n = ac__authproxy_cached(s->authproxy, req, hs->user, sizeof(hs->user));
        if (n < 0)
            return IDENTITY_ASK_PROXY;
        hs->user_len = (size_t)n;
        return 0;
    }
    char *token = hs->user; /* reuse the buffer: the token is read first */
    n = ac__http_query_get(req->query, req->query_len, "token", token, sizeof(hs->user));
    if (n < 0 && req->headers[AC__H_AUTHORIZATION] != NULL &&
        req->header_lens[AC__H_AUTHORIZATION] > 7 &&
        req->header_lens[AC__H_AUTHORIZATION] - 7 < sizeof(hs->user) &&
        strncasecmp(req->headers[AC__H_AUTHORIZATION], "Bearer ", 7) == 0) {
        n = (long)req->header_lens[AC__H_AUTHORIZATION] - 7;
        memcpy(token, req->headers[AC__H_AUTHORIZATION] + 7, (size_t)n);
    }
    hs->user_len = n > 0 ? (size_t)n : 0;
    return check_token(c, hs, 1);
}

/* Reads the options of a handshake; answers and returns -1 on a bad one. */
static int read_options(ac__conn_t *c, const ac__http_req_t *req, handshake_t *hs)
{
    char tmp[32];
    long n;

    hs->thread_len =
        ac__http_query_get(req->query, req->query_len, "thread_id", hs->thread, sizeof(hs->thread));
    if (hs->thread_len == -2 || hs->thread_len == 0 ||
        (hs->thread_len > 0 &&
         !ac__api_label_ok(hs->thread, (size_t)hs->thread_len, AC__USER_ID_MAX))) {
        ac__conn_respond_error(c, 400, "thread_id: 1 to 256 bytes without control characters",
                               NULL);
        return -1;
    }
    n = ac__http_query_get(req->query, req->query_len, "last_seq", tmp, sizeof(tmp));
    if (n != -1) {
        if (n < 0 || ac__parse_u64(tmp, (size_t)n, &hs->last_seq) != 0) {
            ac__conn_respond_error(c, 400, "last_seq must be a non-negative integer", NULL);
            return -1;
        }
        hs->has_last_seq = 1;
    }
    hs->epoch_len =
        ac__http_query_get(req->query, req->query_len, "epoch", hs->epoch, sizeof(hs->epoch));
    if (hs->epoch_len == -2) {
        ac__conn_respond_error(c, 400, "epoch: at most 16 characters", NULL);
        return -1;
    }
    return 0;
}

static ac__conn_t *find_conn(ac__user_t *u, uint64_t conn_id)
{
    ac__mconn_t *m = ac__manager_find_conn(u, conn_id);
    return m ? AC__CONN_OF(m) : NULL;
}

/* Sends `connected`; then, for a resume (last_seq=N), `resync` when the events after N
 * cannot all be replayed, then the retained events, all before any live event reaches
 * the connection (the broker keeps it joining until then). */
static int host_greet(void *arg, ac__user_t *u, uint64_t conn_id, const ac__join_res_t *res)
{
    ac_server_t *s = arg;
    ac__conn_t *c = find_conn(u, conn_id);
    char id[18], data[200];
    ac__str_t user = {u->id, u->id_len};
    ac__str_t thread;
    int64_t now = ac__now_ms();
    ac__buf_t *b;

    if (c == NULL || c->state != AC__CONN_WS)
        return -1;
    thread = (ac__str_t){c->thread_id, c->thread_id ? strlen(c->thread_id) : 0};
    ac__conn_id_str(c->m.id, id);
    snprintf(data, sizeof(data),
             "{\"connection_id\":\"%s\",\"last_seq\":%llu,\"epoch\":\"%s\",\"recovered\":%s}", id,
             (unsigned long long)res->seq, res->epoch, res->recovered ? "true" : "false");
    b = ac__emitter_server_msg(&s->emitter, "connected", user, thread, data, now);
    if (b == NULL) {
        ac__conn_destroy(c);
        return -1;
    }
    ac__conn_send(c, b);
    ac__buf_unref(b);
    if (!res->resume)
        return 0; /* no last_seq: live from here */
    if (!res->recovered) {
        snprintf(data, sizeof(data), "{\"from_seq\":%llu}", (unsigned long long)res->oldest);
        b = ac__emitter_server_msg(&s->emitter, "resync", user, thread, data, now);
        if (b == NULL) {
            ac__conn_destroy(c);
            return -1;
        }
        ac__conn_send(c, b);
        ac__buf_unref(b);
    }
    for (size_t i = 0; i < res->nframes && c->state == AC__CONN_WS; i++)
        ac__conn_send_replay(c, res->frames[i]);
    return c->state == AC__CONN_WS ? 0 : -1;
}

static void host_go_live(void *arg, ac__user_t *u, uint64_t conn_id)
{
    ac__conn_t *c = find_conn(u, conn_id);

    if (c != NULL && c->kind == AC__KIND_JOINING)
        c->kind = AC__KIND_USER;
}

static unsigned host_send_one(void *arg, ac__user_t *u, uint64_t conn_id, ac__buf_t *frame,
                              int replay)
{
    ac_server_t *s = arg;
    ac__conn_t *c = find_conn(u, conn_id);
    unsigned n;

    if (c == NULL)
        return 0;
    n = (unsigned)(replay ? ac__conn_send_replay(c, frame) : ac__conn_send(c, frame));
    if (!replay)
        s->deliveries_total += n;
    return n;
}

static void host_close_one(void *arg, ac__user_t *u, uint64_t conn_id, unsigned code,
                           const char *reason)
{
    ac_server_t *s = arg;
    ac__conn_t *c = find_conn(u, conn_id);

    if (c == NULL)
        return;
    if (code == AC_WS_CLOSE_EVICTED)
        s->evictions_total++;
    ac__conn_close_ws(c, code, reason, 1);
}

void ac__api_broker_host(ac_server_t *s, ac__broker_host_t *h)
{
    h->arg = s;
    h->deliver = ac__server_deliver;
    h->send_one = host_send_one;
    h->greet = host_greet;
    h->go_live = host_go_live;
    h->close_one = host_close_one;
}

/* --handshake-rate: upgrades per second per client IP (the address bytes only). */
static int handshake_rate_ok(ac__conn_t *c)
{
    ac_server_t *s = ac__conn_server(c);
    struct sockaddr_storage peer;
    socklen_t len = sizeof(peer);
    const void *key;
    size_t klen;

    if (s->opts.handshake_rate <= 0)
        return 1;
    if (getpeername(ac__conn_fd(c), (struct sockaddr *)&peer, &len) != 0)
        return 1;
    if (peer.ss_family == AF_INET6) {
        key = &((struct sockaddr_in6 *)&peer)->sin6_addr;
        klen = 16;
    } else {
        key = &((struct sockaddr_in *)&peer)->sin_addr;
        klen = 4;
    }
    if (ac__group_handshake_take(s, key, klen))
        return 1;
    s->rate_limited_total++;
    ac__log(AC_LOG_WARN, "event=handshake_rate_limited");
    return 0;
}

/* Compares one entry of --allowed-origins with the request's Origin, ignoring case and a
 * trailing slash. */
static int origin_equal(const char *a, size_t alen, const char *b, size_t blen)
{
    while (alen > 0 && (a[alen - 1] == '/' || a[alen - 1] == ' '))
        alen--;
    while (blen > 0 && b[blen - 1] == '/')
        blen--;
    return alen == blen && strncasecmp(a, b, alen) == 0;
}

/* Browsers send Origin; a server-side client does not and is never refused for that. */
static int origin_allowed(const ac_server_t *s, const ac__http_req_t *req)
{
    const char *o = req->headers[AC__H_ORIGIN];
    size_t olen = req->header_lens[AC__H_ORIGIN];
    const char *list = s->opts.allowed_origins;

    if (o == NULL)
        return 1;
    if (list == NULL || list[0] == '\0')
        return s->opts.auth == AC_AUTH_NONE || origin_matches_host(req);
    while (*list != '\0') {
        while (*list == ' ' || *list == ',')
            list++;
        const char *end = strchr(list, ',');
        size_t n = end ? (size_t)(end - list) : strlen(list);
        if (n == 1 && list[0] == '*')
            return 1;
        if (n > 0 && origin_equal(list, n, o, olen))
            return 1;
        list += n;
    }
    return 0;
}

/* The RFC 6455 part of a handshake, common to both sockets: answers and returns -1 when
 * the request is not a valid upgrade; else writes the accept key. */
static int check_upgrade(ac__conn_t *c, const ac__http_req_t *req, char accept[29])
{
    static const char upgrade_hdr[] = "Upgrade: websocket\r\n";

    if (!req->upgrade || req->headers[AC__H_UPGRADE] == NULL ||
        !ac__http_has_token(req->headers[AC__H_UPGRADE], req->header_lens[AC__H_UPGRADE],
                            "websocket") ||
        !ac__http_has_token(req->headers[AC__H_CONNECTION], req->header_lens[AC__H_CONNECTION],
                            "upgrade")) {
        ac__conn_respond_error(c, 426, "websocket upgrade required", upgrade_hdr);
        return -1;
    }
    if (!header_is(req, AC__H_WS_VERSION, "13")) {
        ac__conn_respond_error(c, 426, "Sec-WebSocket-Version: must be 13",
                               "Sec-WebSocket-Version: 13\r\n");
        return -1;
    }
    if (req->headers[AC__H_WS_KEY] == NULL ||
        ac__ws_accept_key(req->headers[AC__H_WS_KEY], req->header_lens[AC__H_WS_KEY], accept) !=
            0) {
        ac__conn_respond_error(c, 400, "Sec-WebSocket-Key: must be base64 of 16 bytes", NULL);
        return -1;
    }
    if (ac__conn_server(c)->shutting_down) {
        ac__conn_respond_error(c, 503, "server shutting down", NULL);
        return -1;
    }
    if (!handshake_rate_ok(c)) {
        ac__conn_respond_error(c, 429, "handshake rate exceeded for this address",
                               "Retry-After: 1\r\n");
        return -1;
    }
    return 0;
}

void ac__api_agent_handshake(ac__conn_t *c, const ac__http_req_t *req)
{
    char accept[29];

    if (check_upgrade(c, req, accept) != 0)
        return;
    if (ac__conn_upgrade(c, accept) != 0) {
        ac__conn_destroy(c);
        return;
    }
    ac__server_agent_add(ac__conn_server(c), c);
    ac__log(AC_LOG_INFO, "event=agent_open conn=%llx", (unsigned long long)c->m.id);
}

/* The rest of a /ws handshake once the user is known: limits, upgrade, join, on the loop
 * that owns the user. Borrows hs. */
static void finish_handshake(ac__conn_t *c, handshake_t *hs, const char accept[29])
{
    ac_server_t *s = ac__conn_server(c);
    ac__user_t *u;
    ac__mconn_t *evicted;

    if (s->shutting_down) { /* answered later or moved here, after shutdown began */
        ac__conn_respond_error(c, 503, "server shutting down", NULL);
        return;
    }
    if (!s->broker->vt->up(s->broker)) {
        ac__conn_respond_error(c, 503, "broker unavailable", "Retry-After: 1\r\n");
        return;
    }
    if (!ac__group_conn_take(s)) {
        ac__log(AC_LOG_WARN, "event=max_conns_reached max=%u", s->opts.max_conns);
        ac__conn_respond_error(c, 503, "max-conns reached", NULL);
        return;
    }
    u = ac__manager_user(&s->manager, hs->user, hs->user_len, ac__server_now(s));
    if (u == NULL) {
        ac__group_conn_release(s);
        ac__conn_respond_error(c, 503, "out of memory", NULL);
        return;
    }
    if (hs->thread_len > 0) {
        c->thread_id = strdup(hs->thread);
        if (c->thread_id == NULL) {
            ac__group_conn_release(s);
            ac__conn_respond_error(c, 503, "out of memory", NULL);
            return;
        }
    }
    if (ac__conn_upgrade(c, accept) != 0) {
        ac__group_conn_release(s);
        ac__conn_destroy(c);
        return;
    }
    ac__conn_bound_kernel_buffer(c);
    /* From here the slot taken above is given back when the connection leaves. */
    evicted = ac__manager_attach(&s->manager, u, &c->m);
    {
        char id[18];
        ac__conn_id_str(c->m.id, id);
        ac__log(AC_LOG_INFO, "event=ws_open conn=%s user=%s conns=%u", id, u->id, u->nconns);
    }
    {
        ac__join_req_t jr;
        memset(&jr, 0, sizeof(jr));
        jr.conn_id = c->m.id;
        jr.has_after = hs->has_last_seq;
        jr.after = hs->last_seq;
        if (hs->epoch_len > 0)
            memcpy(jr.epoch, hs->epoch, (size_t)hs->epoch_len);
        c->kind = AC__KIND_JOINING;
        if (s->broker->vt->join(s->broker, u, &jr) != 0)
            ac__conn_close_ws(c, 1013, "broker unavailable: try again", 1);
    }
    if (evicted != NULL) {
        char reason[80];
        snprintf(reason, sizeof(reason), "evicted: over max-conns-per-user (%u)",
                 s->opts.max_conns_per_user);
        s->evictions_total++;
        ac__conn_close_ws(AC__CONN_OF(evicted), AC_WS_CLOSE_EVICTED, reason, 1);
    }
}

/* A user connection on its way to the loop that owns its user. */
typedef struct ws_move_s {
    ac__handoff_t h; /* first: h.msg is the inbox message */
    handshake_t *hs;
    char accept[29];
} ws_move_t;

/* On the owner's loop (arg): the connection arrives with its verified user. */
static void on_ws_moved(ac__msg_t *m, void *arg, int status)
{
    ws_move_t *mv = (ws_move_t *)m;
    ac__conn_t *c;

    if (status != 0) {
        /* The owner shut down first: nobody to serve it. */
        ac__handoff_drop(&mv->h);
        free(mv->hs);
        free(mv);
        return;
    }
    c = ac__conn_attach(arg, &mv->h);
    if (c == NULL) {
        free(mv->hs);
    } else {
        finish_handshake(c, mv->hs, mv->accept);
        free(mv->hs);
        ac__conn_attach_resume(c);
    }
    free(mv);
}

/* Hands c to the owner's loop. 0, or -1 with c still here and nothing sent. */
static int ws_move(ac__conn_t *c, ac_server_t *owner, handshake_t *hs, const char accept[29])
{
    ws_move_t *mv = calloc(1, sizeof(*mv));
    int r;

    if (mv == NULL || ac__conn_detach(c, &mv->h) != 0) {
        free(mv);
        return -1;
    }
    mv->h.msg.run = on_ws_moved;
    mv->hs = hs;
    memcpy(mv->accept, accept, sizeof(mv->accept));
    r = ac__group_handoff(owner, &mv->h);
    if (r != 0) {
        /* Detached already: the socket can only be dropped. */
        ac__log(AC_LOG_WARN, "event=handoff_refused error=\"%s\"", ac_strerror(r));
        mv->h.msg.run(&mv->h.msg, NULL, r);
    }
    return 0;
}

/* Finishes the handshake here, or moves c to the loop that owns its user (--threads),
 * taking *hsp then (set to NULL). */
static void join_user(ac__conn_t *c, handshake_t **hsp, const char accept[29])
{
    ac_server_t *s = ac__conn_server(c);
    ac_server_t *owner = ac__group_owner(s, (*hsp)->user, (*hsp)->user_len);

    if (owner == s) {
        finish_handshake(c, *hsp, accept);
        return;
    }
    if (ws_move(c, owner, *hsp, accept) == 0) {
        *hsp = NULL;
        return;
    }
    /* Output still queued here (rare): this loop cannot hand it over. */
    ac__conn_respond_error(c, 503, "busy: try again", "Retry-After: 1\r\n");
}

/* A handshake answered later: the connection stops reading (its pend) until the network
 * answers. The connection may be gone by then (pend->c is NULL). */
typedef struct deferred_s {
    ac__pend_t *pend;
    handshake_t *hs;
    char accept[29];
} deferred_t;

/* The connection a deferred handshake belongs to, or NULL when it is gone; frees the pend. */
static ac__conn_t *deferred_take(deferred_t *d)
{
    ac__conn_t *c = d->pend->c;

    if (c != NULL)
        c->pend = NULL;
    ac__api_pend_free(d->pend);
    d->pend = NULL;
    return c;
}

static void deferred_done(ac__conn_t *c, deferred_t *d)
{
    if (c != NULL) {
        if (c->state == AC__CONN_WS)
            ac__conn_ws_resume(c);
        else
            ac__conn_http_resume(c);
    }
    free(d->hs);
    free(d);
}

static void on_keys_ready(void *arg)
{
    deferred_t *d = arg;
    ac__conn_t *c = deferred_take(d);

    if (c != NULL && check_token(c, d->hs, 0) == 0)
        join_user(c, &d->hs, d->accept);
    deferred_done(c, d);
}

static void on_proxy_answer(void *arg, unsigned status, const char *user, size_t len,
                            const char *reason)
{
    deferred_t *d = arg;
    ac__conn_t *c = deferred_take(d);

    if (c != NULL && status != 0) {
        ac__log(AC_LOG_INFO, "event=auth_refused status=%u reason=\"%s\"", status, reason);
        ac__conn_respond_error(c, status, reason, status == 503 ? "Retry-After: 1\r\n" : NULL);
    } else if (c != NULL) {
        memcpy(d->hs->user, user, len);
        d->hs->user[len] = '\0';
        d->hs->user_len = len;
        join_user(c, &d->hs, d->accept);
    }
    deferred_done(c, d);
}

/* Parks the handshake until the keys or the proxy answer; takes ownership of hs. */
static void defer_handshake(ac__conn_t *c, const ac__http_req_t *req, handshake_t *hs,
                            const char accept[29], int what)
{
    ac_server_t *s = ac__conn_server(c);
    deferred_t *d = calloc(1, sizeof(*d));
    unsigned status = 503;
    const char *reason = "out of memory";

    if (d == NULL || (d->pend = ac__api_pend_new_http(c, 0)) == NULL)
        goto refuse;
    d->hs = hs;
    memcpy(d->accept, accept, sizeof(d->accept));
    if (what == IDENTITY_ASK_PROXY) {
        if (ac__authproxy_ask(s->authproxy, req, on_proxy_answer, d, &status, &reason) != 0)
            goto refuse;
    } else if (ac__jwks_wait(s->jwks, on_keys_ready, d) != 0) {
        reason = "too many handshakes waiting for the signing keys";
        goto refuse;
    }
    c->pend = d->pend;
    return;

refuse:
    ac__conn_respond_error(c, status, reason, status == 503 ? "Retry-After: 1\r\n" : NULL);
    if (d != NULL && d->pend != NULL)
        ac__api_pend_free(d->pend);
    free(d);
    free(hs);
}

/* Identity from the network (a JWKS, the connect proxy) is kept on the first loop only (one
 * fetch schedule, one cache); the other loops pass such handshakes to it whole. */
static int identity_on_first_loop(const ac_server_t *s)
{
    return s->opts.auth == AC_AUTH_PROXY ||
           (s->opts.auth == AC_AUTH_JWT &&
            (s->opts.jwt_jwks_file != NULL || s->opts.jwt_jwks_url != NULL));
}

/* On the first loop: the handshake arrives as it was received, and is read again. */
static void on_handshake_moved(ac__msg_t *m, void *arg, int status)
{
    ac__handoff_t *h = (ac__handoff_t *)m;
    ac__conn_t *c = status == 0 ? ac__conn_attach(arg, h) : NULL;

    if (status != 0)
        ac__handoff_drop(h);
    if (c != NULL)
        ac__conn_attach_resume(c);
    free(h);
}

/* 1 when c went to the first loop with its request; 0 when it is to be handled here. */
static int pass_to_first_loop(ac__conn_t *c)
{
    ac_server_t *s = ac__conn_server(c), *first = ac__group_shard(s, 0);
    ac__handoff_t *h;
    int r;

    if (first == s || !identity_on_first_loop(s))
        return 0;
    h = calloc(1, sizeof(*h));
    if (h == NULL || ac__conn_detach_from(c, h, 1) != 0) {
        free(h);
        return 0;
    }
    h->msg.run = on_handshake_moved;
    r = ac__group_handoff(first, h);
    if (r != 0)
        h->msg.run(&h->msg, NULL, r);
    return 1;
}

void ac__api_ws_handshake(ac__conn_t *c, const ac__http_req_t *req)
{
    ac_server_t *s = ac__conn_server(c);
    char accept[29];
    handshake_t *hs;
    int r;

    if (pass_to_first_loop(c))
        return;
    if (check_upgrade(c, req, accept) != 0)
        return;
    if (!origin_allowed(s, req)) {
        ac__conn_respond_error(c, 403, "origin: not allowed", NULL);
        return;
    }
    hs = calloc(1, sizeof(*hs));
    if (hs == NULL) {
        ac__conn_respond_error(c, 503, "out of memory", NULL);
        return;
    }
    r = read_identity(c, req, hs);
    if (r < 0 || read_options(c, req, hs) != 0) {
        free(hs);
        return;
    }
    if (r > 0) {
        defer_handshake(c, req, hs, accept, r);
        return;
    }
    join_user(c, &hs, accept);
    free(hs);
}

static void send_error(ac__conn_t *c, const char *msg)
{
    ac_server_t *s = ac__conn_server(c);
    ac__sbuf_t data = {0};
    ac__buf_t *b = NULL;

    if (ac__sbuf_append(&data, "{\"error\":", 9) == 0 &&
        ac__sbuf_json_str(&data, msg, strlen(msg)) == 0 && ac__sbuf_append(&data, "}", 2) == 0)
        b = ac__emitter_server_msg(&s->emitter, "error", (ac__str_t){0}, (ac__str_t){0}, data.p,
                                   ac__now_ms());
    ac__sbuf_dispose(&data);
    if (b == NULL) {
        ac__conn_destroy(c);
        return;
    }
    ac__conn_send(c, b);
    ac__buf_unref(b);
}

/* A chat message on its way: published first, then handed to the agent. Owns copies of
 * what the message said, since with Redis the sender may be gone when the broker answers. */
typedef struct umsg_s {
    ac__msg_t msg;     /* --threads: to shard 0's loop for ac_message_cb, and back on refusal */
    ac_server_t *from; /* the loop that owns the user */
    uint64_t seq;
    uint64_t conn_id;
    char conn[18];
    char *user_id;
    char *thread_id; /* NULL: none */
    char *text;
    char *json; /* the message as the client sent it */
} umsg_t;

static void umsg_free(umsg_t *um)
{
    free(um->user_id);
    free(um->thread_id);
    free(um->text);
    free(um->json);
    free(um);
}

/* Tells the sender, if its connection is still open on this node. */
static void umsg_error(ac_server_t *s, const umsg_t *um, const char *msg)
{
    ac__user_t *u = ac__manager_find_user(&s->manager, um->user_id, strlen(um->user_id));
    ac__conn_t *c = u ? find_conn(u, um->conn_id) : NULL;

    if (c != NULL && c->state == AC__CONN_WS)
        send_error(c, msg);
}

/* The message is in the user's stream (every tab has it): now the agent gets it. */
/* The embedded agent of the server (ac_server_set_message_cb()) is set on the first loop's
 * object and called on that loop's thread, whichever loop owns the user. */
static ac_server_t *agent_loop(ac_server_t *s)
{
    return ac__group_shard(s, 0);
}

/* Back on the owner's loop: the agent refused the message (or the loop is going away). */
static void on_umsg_refused(ac__msg_t *msg, void *arg, int status)
{
    umsg_t *um = (umsg_t *)msg;

    if (status == 0)
        umsg_error(um->from, um, "message not accepted by the agent");
    umsg_free(um);
}

/* On the first loop: the embedded agent takes the message, or it goes back refused. */
static void on_umsg_for_agent(ac__msg_t *msg, void *arg, int status)
{
    umsg_t *um = (umsg_t *)msg;
    ac_server_t *s = arg;
    ac_message_t m = {um->user_id, um->conn, um->thread_id, um->text, um->json, um->seq};

    if (status == 0 && s->message_cb != NULL && s->message_cb(s, &m, s->message_arg) >= 0) {
        umsg_free(um);
        return;
    }
    if (status != 0) {
        umsg_free(um); /* shutting down: nobody to tell */
        return;
    }
    um->msg.run = on_umsg_refused;
    if (ac__inbox_post(&um->from->shard->inbox, &um->msg, &um->msg, 1) != 0)
        umsg_free(um);
}

static void on_user_message_published(ac_server_t *s, int status, const ac_publish_result_t *res,
                                      const char *reason, void *arg)
{
    umsg_t *um = arg;
    ac_message_t m;
    char err[160];
    int r;

    if (status != 0) {
        ac__log(AC_LOG_WARN, "event=user_message_refused conn=%s user=%s reason=\"%s\"", um->conn,
                um->user_id, reason ? reason : ac_strerror(status));
        /* A Redis connection lost mid-publish may have published it: the reason says so. */
        snprintf(err, sizeof(err), "message %s: %s",
                 reason && strstr(reason, "may have been published") ? "not handed to the agent"
                                                                     : "not published",
                 reason ? reason : "broker error");
        umsg_error(s, um, err);
        goto done;
    }
    m.user_id = um->user_id;
    m.connection_id = um->conn;
    m.thread_id = um->thread_id;
    m.text = um->text;
    m.json = um->json;
    m.seq = res->seq;
    if (agent_loop(s) != s && agent_loop(s)->message_cb != NULL) {
        um->from = s;
        um->seq = res->seq;
        um->msg.run = on_umsg_for_agent;
        if (ac__inbox_post(&agent_loop(s)->shard->inbox, &um->msg, &um->msg, 1) == 0)
            return; /* um travels */
        r = -1;
    } else if (s->message_cb != NULL)
        r = s->message_cb(s, &m, s->message_arg) < 0 ? -1 : 0;
    else if (s->opts.message_webhook != NULL)
        r = ac__webhook_post(s, &m);
    else
        r = -1; /* the agent went away meanwhile */
    if (r != 0)
        umsg_error(s, um, "message not accepted by the agent");
done:
    umsg_free(um);
}

/* A chat message from the person: it becomes a user_message event in the user's stream
 * (seq, history, every connection of the user, on every node), and once the broker took
 * it, goes to the embedded agent or the webhook. Without either it is refused unpublished. */
static void user_message(ac__conn_t *c, json_t *msg)
{
    ac_server_t *s = ac__conn_server(c);
    json_t *text = json_object_get(msg, "text");
    json_t *thread = json_object_get(msg, "thread_id");
    const char *thread_id;
    json_t *data;
    umsg_t *um;

    if (!json_is_string(text) || json_string_length(text) == 0) {
        send_error(c, "text: required (a non-empty string)");
        return;
    }
    if (strlen(json_string_value(text)) != json_string_length(text)) {
        send_error(c, "text: must not contain NUL characters");
        return;
    }
    if (thread != NULL && !json_is_null(thread) &&
        (!json_is_string(thread) ||
         !ac__api_label_ok(json_string_value(thread), json_string_length(thread),
                           AC__USER_ID_MAX))) {
        send_error(c, "thread_id: 1 to 256 bytes without control characters");
        return;
    }
    if (c->m.user == NULL)
        return; /* closing */
    s->messages_total++;
    if (agent_loop(s)->message_cb == NULL && s->opts.message_webhook == NULL) {
        send_error(c, "no agent is listening: start the gateway with --demo or --message-webhook");
        return;
    }
    thread_id = json_is_string(thread) ? json_string_value(thread) : c->thread_id;
    um = calloc(1, sizeof(*um));
    if (um == NULL)
        goto oom;
    um->conn_id = c->m.id;
    ac__conn_id_str(c->m.id, um->conn);
    um->user_id = strdup(c->m.user->id);
    um->thread_id = thread_id ? strdup(thread_id) : NULL;
    um->text = strdup(json_string_value(text));
    um->json = json_dumps(msg, JSON_COMPACT | JSON_ALLOW_NUL);
    if (um->user_id == NULL || (thread_id != NULL && um->thread_id == NULL) || um->text == NULL ||
        um->json == NULL)
        goto oom;
    data = json_pack("{s:s,s:s?,s:s}", "text", um->text, "thread_id", um->thread_id,
                     "connection_id", um->conn);
    if (data == NULL)
        goto oom;
    /* Calls on_user_message_published, now or when the broker answers; it frees um. */
    ac__api_publish_own(s, (ac__str_t){um->user_id, strlen(um->user_id)}, AC__EV_USER_MESSAGE,
                        (ac__str_t){um->thread_id, um->thread_id ? strlen(um->thread_id) : 0}, data,
                        on_user_message_published, um);
    json_decref(data);
    return;
oom:
    if (um != NULL)
        umsg_free(um);
    send_error(c, "out of memory");
}

void ac__api_ws_message(ac__conn_t *c, const char *p, size_t len, int binary)
{
    json_t *msg, *type;
    json_error_t jerr;

    if (c->kind == AC__KIND_AGENT) {
        ac__api_agent_message(c, p, len, binary);
        return;
    }
    if (binary) {
        send_error(c, "binary messages are not supported");
        return;
    }
    msg = json_loadb(p, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (msg == NULL || !json_is_object(msg)) {
        send_error(c, "invalid JSON: expected an object");
        goto done;
    }
    type = json_object_get(msg, "type");
    if (!json_is_string(type)) {
        send_error(c, "type: required");
        goto done;
    }
    if (strcmp(json_string_value(type), "pong") == 0)
        goto done; /* liveness was noted when the bytes arrived */
    if (strcmp(json_string_value(type), "user_message") == 0) {
        user_message(c, msg);
        goto done;
    }
    {
        char err[120];
        snprintf(err, sizeof(err), "type: unknown message type \"%.64s\"", json_string_value(type));
        send_error(c, err);
    }
done:
    json_decref(msg);
}

typedef struct disconnect_ctx_s {
    uint64_t id;
    unsigned n;
} disconnect_ctx_t;

static void disconnect_match(ac__mconn_t *m, void *arg)
{
    disconnect_ctx_t *d = arg;

    if (m->id == d->id) {
        ac__conn_close_ws(AC__CONN_OF(m), AC_WS_CLOSE_OPERATOR, "disconnected by an operator", 1);
        d->n++;
    }
}

static void cluster_disconnect_done(void *arg, int status, unsigned n)
{
    ac__pend_t *p = arg;
    ac__conn_t *c = p->c;
    char reply[64];

    if (c != NULL) {
        c->pend = NULL;
        if (status != 0) {
            ac__conn_respond_error(c, 503, "broker unavailable", NULL);
        } else if (n == 0 && p->by_conn) {
            ac__conn_respond_error(c, 404, "connection_id: not open", NULL);
        } else {
            ac__log(AC_LOG_INFO, "event=operator_disconnect count=%u cluster=1", n);
            snprintf(reply, sizeof(reply), "{\"disconnected\":%u}", n);
            ac__conn_respond(c, 200, NULL, reply, strlen(reply), NULL, p->keep_alive);
        }
        ac__conn_http_resume(c);
    }
    ac__api_pend_free(p);
}

void ac__api_disconnect(ac__conn_t *c, const ac__http_req_t *req)
{
    ac_server_t *s = ac__conn_server(c);
    json_t *body = json_loadb(req->body ? req->body : "", req->body_len, 0, NULL);
    json_t *cid = json_object_get(body, "connection_id");
    json_t *uid = json_object_get(body, "user_id");
    disconnect_ctx_t d = {0, 0};
    char reply[64];

    if (!json_is_object(body) || (!json_is_string(cid) && !json_is_string(uid))) {
        ac__conn_respond_error(c, 400, "connection_id or user_id: required (a string)", NULL);
        goto done;
    }
    if (s->broker->vt->disconnect != NULL && json_is_string(uid)) {
        /* The user's connections may be on any node: the registry in the broker knows. */
        ac__pend_t *p;
        if (json_is_string(cid) &&
            ac__conn_id_parse(json_string_value(cid), json_string_length(cid), &d.id) != 0) {
            ac__conn_respond_error(c, 404, "connection_id: not open", NULL);
            goto done;
        }
        p = ac__api_pend_new_http(c, req->keep_alive);
        if (p == NULL) {
            ac__conn_respond_error(c, 503, "out of memory", NULL);
            goto done;
        }
        p->by_conn = json_is_string(cid);
        if (s->broker->vt->disconnect(s->broker, json_string_value(uid), json_string_length(uid),
                                      d.id, cluster_disconnect_done, p) != 0) {
            ac__api_pend_free(p);
            ac__conn_respond_error(c, 503, "broker unavailable", NULL);
            goto done;
        }
        c->pend = p;
        goto done;
    }
    if (json_is_string(cid) &&
        ac__conn_id_parse(json_string_value(cid), json_string_length(cid), &d.id) != 0) {
        ac__conn_respond_error(c, 404, "connection_id: not open", NULL);
        goto done;
    }
    /* A user's connections are on its owner's loop; a connection_id alone may be on any.
     * With several loops the others are parked meanwhile. */
    ac__group_park(s);
    for (unsigned k = 0; k < ac__group_size(s); k++) {
        ac_server_t *sk = ac__group_shard(s, k);
        ac__user_t *u = NULL;
        if (json_is_string(uid)) {
            if (sk != ac__group_owner(s, json_string_value(uid), json_string_length(uid)))
                continue;
            u = ac__manager_find_user(&sk->manager, json_string_value(uid),
                                      json_string_length(uid));
        }
        if (json_is_string(cid)) {
            ac__mconn_t *m = u ? ac__manager_find_conn(u, d.id) : NULL;
            if (m != NULL)
                disconnect_match(m, &d);
            else if (!json_is_string(uid))
                ac__manager_foreach(&sk->manager, disconnect_match, &d);
        } else {
            ac__mconn_t *m = u ? u->head : NULL;
            while (m != NULL) {
                ac__mconn_t *next = m->next;
                ac__conn_close_ws(AC__CONN_OF(m), AC_WS_CLOSE_OPERATOR,
                                  "disconnected by an operator", 1);
                d.n++;
                m = next;
            }
        }
    }
    ac__group_unpark(s);
    if (json_is_string(cid) && d.n == 0) {
        ac__conn_respond_error(c, 404, "connection_id: not open", NULL);
        goto done;
    }
    ac__log(AC_LOG_INFO, "event=operator_disconnect count=%u", d.n);
    snprintf(reply, sizeof(reply), "{\"disconnected\":%u}", d.n);
    ac__conn_respond(c, 200, NULL, reply, strlen(reply), NULL, req->keep_alive);
done:
    json_decref(body);
}
