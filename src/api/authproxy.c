/* The connect proxy (--auth=proxy): one POST to the backend per /ws upgrade through the
 * outbound client, the backend's verdict mapped to the upgrade's answer, and a small cache
 * of allowed answers keyed by a digest of the Cookie and Authorization headers (the raw
 * values are never kept). It does not hold connections: the caller owns the waiting
 * handshake (api/usersock.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "api/api.h"
#include "api/authproxy.h"
#include "core/log.h"
#include "net/outbound.h"

#define PROXY_MAX_RESPONSE (64 * 1024)
#define CACHE_BUCKETS 4096 /* a power of two */

typedef struct entry_s {
    struct entry_s *chain; /* bucket */
    struct entry_s *newer; /* insertion order: all entries share one TTL */
    uint8_t key[32];
    uint64_t expires; /* server ms */
    size_t user_len;
    char user[];
} entry_t;

struct ac__authproxy_s {
    ac_server_t *server;
    entry_t *buckets[CACHE_BUCKETS];
    entry_t *oldest, *newest;
    size_t count;
};

typedef struct ask_s {
    ac__authproxy_t *proxy;
    ac__authproxy_cb cb;
    void *arg;
    int cacheable;
    uint8_t key[32];
} ask_t;

ac__authproxy_t *ac__authproxy_new(ac_server_t *s)
{
    ac__authproxy_t *p = calloc(1, sizeof(*p));

    if (p != NULL)
        p->server = s;
    return p;
}

static size_t bucket_of(const uint8_t key[32])
{
    return (size_t)(key[0] | key[1] << 8) & (CACHE_BUCKETS - 1);
}

static void unlink_oldest(ac__authproxy_t *p)
{
    entry_t *e = p->oldest;
    entry_t **pp = &p->buckets[bucket_of(e->key)];

    while (*pp != e)
        pp = &(*pp)->chain;
    *pp = e->chain;
    p->oldest = e->newer;
    if (p->oldest == NULL)
        p->newest = NULL;
    p->count--;
    free(e);
}

void ac__authproxy_free(ac__authproxy_t *p)
{
    if (p == NULL)
        return;
    while (p->oldest != NULL)
        unlink_oldest(p);
    free(p);
}

static const char *hdr(const ac__http_req_t *req, int h, size_t *len)
{
    *len = req->header_lens[h];
    return req->headers[h];
}

/* The cache key: SHA-256 over Cookie NUL Authorization. 0 when the request has neither:
 * nothing identifies its session, so nothing is cached. */
static int cache_key(const ac__http_req_t *req, uint8_t key[32])
{
    size_t clen, alen;
    const char *cookie = hdr(req, AC__H_COOKIE, &clen);
    const char *auth = hdr(req, AC__H_AUTHORIZATION, &alen);
    unsigned int n = 0;
    EVP_MD_CTX *md;
    int ok;

    if (cookie == NULL && auth == NULL)
        return 0;
    md = EVP_MD_CTX_new();
    ok = md != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 &&
         EVP_DigestUpdate(md, cookie ? cookie : "", cookie ? clen : 0) == 1 &&
         EVP_DigestUpdate(md, "", 1) == 1 &&
         EVP_DigestUpdate(md, auth ? auth : "", auth ? alen : 0) == 1 &&
         EVP_DigestFinal_ex(md, key, &n) == 1 && n == 32;
    EVP_MD_CTX_free(md);
    return ok;
}

static void expire(ac__authproxy_t *p, uint64_t now)
{
    while (p->oldest != NULL && p->oldest->expires <= now)
        unlink_oldest(p);
}

long ac__authproxy_cached(ac__authproxy_t *p, const ac__http_req_t *req, char *out, size_t cap)
{
    uint8_t key[32];

    if (p->server->opts.auth_proxy_cache_ttl <= 0 || !cache_key(req, key))
        return -1;
    expire(p, ac__server_now(p->server));
    for (entry_t *e = p->buckets[bucket_of(key)]; e != NULL; e = e->chain) {
        if (memcmp(e->key, key, 32) == 0 && e->user_len < cap) {
            memcpy(out, e->user, e->user_len + 1);
            return (long)e->user_len;
        }
    }
    return -1;
}

static void cache_put(ac__authproxy_t *p, const uint8_t key[32], const char *user, size_t len)
{
    uint64_t now = ac__server_now(p->server);
    entry_t *e;

    expire(p, now);
    for (e = p->buckets[bucket_of(key)]; e != NULL; e = e->chain) {
        if (memcmp(e->key, key, 32) == 0)
            return; /* two upgrades of one session asked at once: the first answer stays */
    }
    if (p->count >= AC__AUTHPROXY_CACHE_MAX)
        unlink_oldest(p);
    e = malloc(sizeof(*e) + len + 1);
    if (e == NULL)
        return;
    memcpy(e->key, key, 32);
    e->expires = now + (uint64_t)(p->server->opts.auth_proxy_cache_ttl * 1000);
    e->user_len = len;
    memcpy(e->user, user, len);
    e->user[len] = '\0';
    e->chain = p->buckets[bucket_of(key)];
    p->buckets[bucket_of(key)] = e;
    e->newer = NULL;
    if (p->newest != NULL)
        p->newest->newer = e;
    else
        p->oldest = e;
    p->newest = e;
    p->count++;
}

/* The backend's own reason for a refusal, when it gave a short printable one. */
static void refusal_reason(const ac__outres_t *res, char *out, size_t n)
{
    json_t *o = json_loadb(res->body, res->body_len, 0, NULL);
    const json_t *e = json_object_get(o, "error");

    if (json_is_string(e) && ac__api_label_ok(json_string_value(e), json_string_length(e), 200))
        snprintf(out, n, "auth proxy: %s", json_string_value(e));
    else
        snprintf(out, n, "auth proxy: refused (%ld)", res->status);
    json_decref(o);
}

static void on_answer(void *arg, const ac__outres_t *res)
{
    ask_t *a = arg;
    char reason[240];
    unsigned status = 503;

    if (res->status >= 200 && res->status < 300) {
        json_t *o = json_loadb(res->body, res->body_len, JSON_REJECT_DUPLICATES, NULL);
        const json_t *u = json_object_get(o, "user_id");
        if (json_is_string(u) &&
            ac__api_label_ok(json_string_value(u), json_string_length(u), AC__USER_ID_MAX)) {
            if (a->cacheable && a->proxy->server->opts.auth_proxy_cache_ttl > 0)
                cache_put(a->proxy, a->key, json_string_value(u), json_string_length(u));
            a->cb(a->arg, 0, json_string_value(u), json_string_length(u), NULL);
            json_decref(o);
            free(a);
            return;
        }
        json_decref(o);
        snprintf(reason, sizeof(reason),
                 "auth proxy: answer without a valid user_id (1 to 256 bytes)");
    } else if (res->status == 401 || res->status == 403) {
        status = (unsigned)res->status;
        refusal_reason(res, reason, sizeof(reason));
    } else if (res->status != 0) {
        snprintf(reason, sizeof(reason), "auth proxy: answered %ld", res->status);
    } else if (res->timed_out) {
        snprintf(reason, sizeof(reason), "auth proxy: timed out");
    } else {
        snprintf(reason, sizeof(reason), "auth proxy: unreachable");
    }
    if (status == 503)
        ac__log(AC_LOG_WARN, "event=auth_proxy_failed status=%ld error=\"%s\"", res->status,
                res->error ? res->error : reason);
    a->cb(a->arg, status, NULL, 0, reason);
    free(a);
}

/* "Name: value" for one forwarded header; -1 when it is absent, 1 when it cannot be
 * forwarded (a control character would end the header early). */
static int header_line(const ac__http_req_t *req, int h, const char *name, char **line)
{
    size_t len;
    const char *v = hdr(req, h, &len);

    *line = NULL;
    if (v == NULL)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)v[i] < 0x20 && v[i] != '\t')
            return 1;
    }
    size_t nlen = strlen(name);
    *line = malloc(nlen + 2 + len + 1);
    if (*line == NULL)
        return 1;
    memcpy(*line, name, nlen);
    memcpy(*line + nlen, ": ", 2);
    memcpy(*line + nlen + 2, v, len);
    (*line)[nlen + 2 + len] = '\0';
    return 0;
}

int ac__authproxy_ask(ac__authproxy_t *p, const ac__http_req_t *req, ac__authproxy_cb cb, void *arg,
                      unsigned *status, const char **reason)
{
    ac_server_t *s = p->server;
    static const int fwd[] = {AC__H_COOKIE, AC__H_AUTHORIZATION, AC__H_ORIGIN};
    static const char *const names[] = {"Cookie", "Authorization", "Origin"};
    char *lines[3] = {NULL, NULL, NULL};
    const char *headers[6];
    size_t nh = 0;
    int r = -1;
    ask_t *a = NULL;
    char *body = NULL;

    *status = 503;
    *reason = "auth proxy: out of memory";
    headers[nh++] = "Content-Type: application/json";
    for (int i = 0; i < 3; i++) {
        int h = header_line(req, fwd[i], names[i], &lines[i]);
        if (h > 0) {
            *status = 400;
            *reason = "request headers: a control character cannot be forwarded";
            goto done;
        }
        if (h == 0)
            headers[nh++] = lines[i];
    }
    headers[nh] = NULL;
    json_t *o = json_pack("{s:s,s:s%}", "path", "/ws", "query", req->query ? req->query : "",
                          req->query ? req->query_len : 0);
    body = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (o == NULL) {
        *status = 400;
        *reason = "query: not valid UTF-8";
        goto done;
    }
    a = body ? calloc(1, sizeof(*a)) : NULL;
    if (a == NULL)
        goto done;
    a->proxy = p;
    a->cb = cb;
    a->arg = arg;
    a->cacheable = cache_key(req, a->key);
    ac__outbound_t *ob = ac__server_outbound(s);
    ac__outreq_opts_t ro = {
        .url = s->opts.auth_proxy_url,
        .body = body,
        .body_len = strlen(body),
        .headers = headers,
        .timeout_ms = (unsigned)(s->opts.outbound_timeout * 1000),
        .max_response = PROXY_MAX_RESPONSE,
    };
    int e = ob ? ac__outbound_request(ob, &ro, on_answer, a, NULL) : AC_ECLOSED;
    if (e != 0) {
        *reason =
            e == AC_EBUSY ? "auth proxy: too many requests in flight" : "auth proxy: unavailable";
        free(a);
        goto done;
    }
    r = 0;
done:
    free(body);
    for (int i = 0; i < 3; i++)
        free(lines[i]);
    return r;
}
