/* The Redis broker's plumbing: hiredis driven by a libuv loop, one Redis address parsed
 * and probed, and the consistent hash that picks a user's shard. The broker's protocol
 * (script, streams, subscriptions) is in redis.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "broker/redis_uv.h"
#include "core/event.h"

/* hiredis's events on a uv_poll_t. Ours rather than hiredis 0.14's libuv adapter: that one
 * drops the poll callback's error status, and libuv reports a refused connect as exactly
 * that (then stops the handle), which left a reconnect waiting forever. */
typedef struct rio_s {
    redisAsyncContext *ac; /* NULL once hiredis let go of the context */
    uv_poll_t poll;
    int events;
} rio_t;

static void rio_on_poll(uv_poll_t *h, int status, int events)
{
    rio_t *io = h->data;

    if (io->ac == NULL)
        return;
    if (status < 0) {
        /* The socket has an error: the next read (or the connect check) finds it and
         * hiredis closes the context. */
        if (io->ac->c.flags & REDIS_CONNECTED)
            redisAsyncHandleRead(io->ac);
        else
            redisAsyncHandleWrite(io->ac);
        return;
    }
    if ((events & UV_READABLE) && io->ac != NULL)
        redisAsyncHandleRead(io->ac);
    if ((events & UV_WRITABLE) && io->ac != NULL)
        redisAsyncHandleWrite(io->ac);
}

static void rio_set(rio_t *io, int events)
{
    io->events = events;
    if (events != 0)
        uv_poll_start(&io->poll, events, rio_on_poll);
    else
        uv_poll_stop(&io->poll);
}

static void rio_add_read(void *p)
{
    rio_set(p, ((rio_t *)p)->events | UV_READABLE);
}

static void rio_del_read(void *p)
{
    rio_set(p, ((rio_t *)p)->events & ~UV_READABLE);
}

static void rio_add_write(void *p)
{
    rio_set(p, ((rio_t *)p)->events | UV_WRITABLE);
}

static void rio_del_write(void *p)
{
    rio_set(p, ((rio_t *)p)->events & ~UV_WRITABLE);
}

static void rio_closed(uv_handle_t *h)
{
    free(h->data);
}

static void rio_cleanup(void *p)
{
    rio_t *io = p;

    io->ac = NULL;
    uv_close((uv_handle_t *)&io->poll, rio_closed);
}

int ac__redis_uv_attach(redisAsyncContext *ac, uv_loop_t *loop)
{
    rio_t *io = calloc(1, sizeof(*io));

    if (io == NULL)
        return -1;
    if (uv_poll_init(loop, &io->poll, ac->c.fd) != 0) {
        free(io);
        return -1;
    }
    io->ac = ac;
    io->poll.data = io;
    ac->ev.data = io;
    ac->ev.addRead = rio_add_read;
    ac->ev.delRead = rio_del_read;
    ac->ev.addWrite = rio_add_write;
    ac->ev.delWrite = rio_del_write;
    ac->ev.cleanup = rio_cleanup;
    return 0;
}

int ac__redis_addr_parse(const char *url, size_t len, ac__redis_addr_t *a, char *why, size_t whylen)
{
    const char *p, *colon, *slash, *end = url + len;
    uint64_t port, db = 0;

    if (len < 8 || strncmp(url, "redis://", 8) != 0) {
        snprintf(why, whylen,
                 "--broker: expected memory or redis://HOST:PORT[/DB] (comma-separated for "
                 "shards), got \"%.*s\"",
                 (int)len, url);
        return -1;
    }
    p = url + 8;
    if (memchr(p, '@', (size_t)(end - p)) != NULL) {
        snprintf(why, whylen,
                 "--broker: no credentials in the URL; set AGENTCAST_REDIS_PASSWORD instead");
        return -1;
    }
    slash = memchr(p, '/', (size_t)(end - p));
    if (slash != NULL)
        end = slash;
    if (p < end && *p == '[') {
        const char *rb = memchr(p, ']', (size_t)(end - p));
        if (rb == NULL || rb + 1 >= end || rb[1] != ':' || (size_t)(rb - p - 1) >= sizeof(a->host))
            goto bad;
        memcpy(a->host, p + 1, (size_t)(rb - p - 1));
        a->host[rb - p - 1] = '\0';
        colon = rb + 1;
    } else {
        colon = memchr(p, ':', (size_t)(end - p));
        if (colon == NULL || colon == p || (size_t)(colon - p) >= sizeof(a->host))
            goto bad;
        memcpy(a->host, p, (size_t)(colon - p));
        a->host[colon - p] = '\0';
    }
    if (ac__parse_u64(colon + 1, (size_t)(end - colon - 1), &port) != 0 || port == 0 ||
        port > 65535)
        goto bad;
    if (slash != NULL &&
        (ac__parse_u64(slash + 1, (size_t)(url + len - slash - 1), &db) != 0 || db > 1000000))
        goto bad;
    a->port = (int)port;
    a->db = (int)db;
    return 0;
bad:
    snprintf(why, whylen, "--broker: expected redis://HOST:PORT[/DB], got \"%.*s\"", (int)len, url);
    return -1;
}

/* A blocking connection to a (2 s timeouts), authenticated when a password is given; NULL
 * with the reason in why. */
static redisContext *sync_connect(const ac__redis_addr_t *a, const char *password, char *why,
                                  size_t whylen)
{
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout(a->host, a->port, tv);
    redisReply *x;

    if (c == NULL || c->err) {
        snprintf(why, whylen, "cannot reach redis at %s:%d: %s", a->host, a->port,
                 c ? c->errstr : "out of memory");
        if (c != NULL)
            redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, tv);
    if (password != NULL) {
        x = redisCommand(c, "AUTH %s", password);
        if (x == NULL || x->type == REDIS_REPLY_ERROR) {
            snprintf(why, whylen, "redis at %s:%d refused AUTH: %s", a->host, a->port,
                     x ? x->str : c->errstr);
            if (x != NULL)
                freeReplyObject(x);
            redisFree(c);
            return NULL;
        }
        freeReplyObject(x);
    }
    return c;
}

int ac__redis_probe(const ac__redis_addr_t *a, const char *password, char *why, size_t whylen)
{
    redisContext *c = sync_connect(a, password, why, whylen);
    redisReply *x = NULL;
    int rc = -1;

    if (c == NULL)
        goto done;
    x = redisCommand(c, "SELECT %d", a->db);
    if (x == NULL || x->type == REDIS_REPLY_ERROR) {
        snprintf(why, whylen, "redis at %s:%d: SELECT %d: %s", a->host, a->port, a->db,
                 x ? x->str : c->errstr);
        goto done;
    }
    freeReplyObject(x);
    x = redisCommand(c, "PING");
    if (x == NULL || x->type == REDIS_REPLY_ERROR) {
        snprintf(why, whylen, "redis at %s:%d: PING: %s", a->host, a->port, x ? x->str : c->errstr);
        goto done;
    }
    rc = 0;
done:
    if (x != NULL)
        freeReplyObject(x);
    if (c != NULL)
        redisFree(c);
    return rc;
}

/* FNV-1a, 64 bits. */
static uint64_t fnv1a(const char *p, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull;

    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

unsigned ac__redis_shard_of(const char *user, size_t len, unsigned nshards)
{
    uint64_t h = fnv1a(user, len);
    int64_t b = -1, j = 0;

    while (j < (int64_t)nshards) {
        b = j;
        h = h * 2862933555777941757ull + 1;
        j = (int64_t)((double)(b + 1) * ((double)(1ll << 31) / (double)((h >> 33) + 1)));
    }
    return b < 0 ? 0 : (unsigned)b;
}

unsigned ac__redis_slot(const char *tag, size_t len)
{
    uint16_t crc = 0;

    for (size_t i = 0; i < len; i++) {
        crc ^= (uint16_t)((unsigned char)tag[i] << 8);
        for (int k = 0; k < 8; k++)
            crc = crc & 0x8000 ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
    }
    return crc & 16383;
}

void ac__redis_user_tag(const char *user, size_t len, char out[9])
{
    uint64_t h = fnv1a(user, len);

    snprintf(out, 9, "%08x", (unsigned)(h ^ (h >> 32)));
}

int ac__redis_cluster_masters(const ac__redis_addr_t *a, const char *password,
                              ac__redis_master_t *out, unsigned cap, unsigned *n, char *why,
                              size_t whylen)
{
    redisContext *c = sync_connect(a, password, why, whylen);
    redisReply *x = NULL;
    unsigned covered = 0;
    int rc = -1;

    *n = 0;
    if (c == NULL)
        goto done;
    x = redisCommand(c, "CLUSTER SLOTS");
    if (x == NULL || x->type != REDIS_REPLY_ARRAY) {
        snprintf(why, whylen, "redis at %s:%d: CLUSTER SLOTS: %s (is it a Redis Cluster?)", a->host,
                 a->port, x && x->type == REDIS_REPLY_ERROR ? x->str : c->errstr);
        goto done;
    }
    for (size_t i = 0; i < x->elements; i++) {
        const redisReply *e = x->element[i], *m;
        ac__redis_master_t *ms = NULL;
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 ||
            e->element[0]->type != REDIS_REPLY_INTEGER ||
            e->element[1]->type != REDIS_REPLY_INTEGER ||
            (m = e->element[2])->type != REDIS_REPLY_ARRAY || m->elements < 2 ||
            m->element[0]->type != REDIS_REPLY_STRING || m->element[1]->type != REDIS_REPLY_INTEGER)
            continue;
        for (unsigned k = 0; k < *n; k++) {
            if (out[k].addr.port == (int)m->element[1]->integer &&
                strcmp(out[k].addr.host, m->element[0]->len ? m->element[0]->str : a->host) == 0)
                ms = &out[k];
        }
        if (ms == NULL) {
            if (*n == cap) {
                snprintf(why, whylen, "redis cluster at %s:%d: more than %u masters", a->host,
                         a->port, cap);
                goto done;
            }
            ms = &out[(*n)++];
            memset(ms, 0, sizeof(*ms));
            snprintf(ms->addr.host, sizeof(ms->addr.host), "%s",
                     m->element[0]->len ? m->element[0]->str : a->host);
            ms->addr.port = (int)m->element[1]->integer;
        }
        if (ms->nranges == sizeof(ms->lo) / sizeof(ms->lo[0])) {
            snprintf(why, whylen, "redis cluster at %s:%d: a master with too many slot ranges",
                     a->host, a->port);
            goto done;
        }
        ms->lo[ms->nranges] = (uint16_t)e->element[0]->integer;
        ms->hi[ms->nranges] = (uint16_t)e->element[1]->integer;
        covered += (unsigned)(ms->hi[ms->nranges] - ms->lo[ms->nranges] + 1);
        ms->nranges++;
    }
    if (covered != 16384) {
        snprintf(why, whylen, "redis cluster at %s:%d serves %u of the 16384 slots", a->host,
                 a->port, covered);
        goto done;
    }
    rc = 0;
done:
    if (x != NULL)
        freeReplyObject(x);
    if (c != NULL)
        redisFree(c);
    return rc;
}
