/* The Redis broker: several nodes share each user's seq stream, history, connection
 * registry, runs and idempotency keys through Redis, on the node's own loop (hiredis,
 * redis_uv.c). With several Redis URLs (shards) a consistent hash of the user id picks the
 * one Redis that holds all of that user's keys; every node is given the same list; in a
 * Redis Cluster each master is a shard, picked by the user's slot. Two connections per
 * shard: `cmd` runs the one Lua script (redis.lua, EVALSHA: every publish, join and claim is
 * one atomic round trip per shard) and small commands; `sub` holds a SUBSCRIBE per user this
 * node has connections for, so a node's traffic follows its own users, not the cluster's.
 * A shard down refuses only its own users. This file: the links (connect, heartbeat,
 * backoff), runs, disconnects, upkeep, stats and the vtable; per-user streams and
 * subscriptions are in redis_stream.c, publishing in redis_pub.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <jansson.h>

#include "agentcast.h"
#include "broker/broker.h"
#include "broker/redis_int.h"
#include "broker/redis_uv.h"
#include "core/event.h"
#include "core/log.h"
#include "core/manager.h"
#include "net/ws.h" /* the codec's opcodes only */

static const char lua_script[] =
#include "redis_lua.h"
    ;
/* In a Redis Cluster the script touches a user's slot and its master's own slot (L in
 * redis.lua), both served by the master it runs on: Redis 7 allows that when told. */
static const char lua_cluster_script[] = "#!lua flags=allow-cross-slot-keys\n"
#include "redis_lua.h"
    ;

/* ---- small helpers ------------------------------------------------------------------ */

static uint64_t next_rand(rb_t *r)
{
    uint64_t z = (r->rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void ac__rb_new_epoch(rb_t *r, char out[9])
{
    snprintf(out, 9, "%08x", (unsigned)(next_rand(r) & 0xffffffffu));
}

void ac__rb_observe_rtt(rb_t *r, uint64_t t0_ns)
{
    uint64_t us = (uv_hrtime() - t0_ns) / 1000;
    r->rtt_us[r->rtt_n++ % RTT_RING] = us;
    if (us > r->rtt_max)
        r->rtt_max = us;
}

uint64_t ac__rb_reply_u64(const redisReply *x)
{
    uint64_t v = 0;
    if (x == NULL)
        return 0;
    if (x->type == REDIS_REPLY_INTEGER)
        return x->integer < 0 ? 0 : (uint64_t)x->integer;
    if (x->type == REDIS_REPLY_STRING)
        ac__parse_u64(x->str, x->len, &v);
    return v;
}

void ac__rb_member_of(const rb_t *r, uint64_t conn_id, char out[40])
{
    snprintf(out, 40, "%016llx@%s", (unsigned long long)conn_id, r->node);
}

/* The shard (or Redis Cluster master) of a user id. */
link_t *ac__rb_link_of(rb_t *r, const char *user, size_t ulen)
{
    if (r->slots != NULL) {
        char tag[9];
        ac__redis_user_tag(user, ulen, tag);
        return &r->links[r->slots[ac__redis_slot(tag, 8)]];
    }
    return &r->links[r->nlinks == 1 ? 0 : ac__redis_shard_of(user, ulen, r->nlinks)];
}

/* The id a user's keys and channel are built from, into buf (KEY_ID_MAX bytes): the id, or
 * in a Redis Cluster "{TAG}id", TAG naming the user's slot. Returns its length. */
size_t ac__rb_key_id(const rb_t *r, const char *user, size_t ulen, char *buf)
{
    int n;
    if (r->slots == NULL) {
        n = snprintf(buf, KEY_ID_MAX, "%.*s", (int)ulen, user);
    } else {
        char tag[9];
        ac__redis_user_tag(user, ulen, tag);
        n = snprintf(buf, KEY_ID_MAX, "{%s}%.*s", tag, (int)ulen, user);
    }
    return n < 0 ? 0 : (size_t)n;
}

/* The user id in a key id (a Redis Cluster's "{TAG}id" without its tag). */
const char *ac__rb_user_of_key_id(const rb_t *r, const char *kid, size_t *len)
{
    if (r->slots != NULL && *len >= 10 && kid[0] == '{' && kid[9] == '}') {
        *len -= 10;
        return kid + 10;
    }
    return kid;
}

/* A command on the shard's `cmd` with argv; fn may be NULL. Returns 0 or -1 when not
 * connected. */
int ac__rb_command(link_t *l, redisCallbackFn *fn, void *priv, int argc, const char **argv,
                   const size_t *lens)
{
    if (l->cmd == NULL || !l->cmd_ready)
        return -1;
    return redisAsyncCommandArgv(l->cmd, fn, priv, argc, argv, lens) == REDIS_OK ? 0 : -1;
}

/* The first arguments of every call of the one script: EVALSHA sha 0 op prefix tag. */
void ac__rb_script_head(const link_t *l, const char *op, const char **argv, size_t *lens)
{
    argv[0] = "EVALSHA";
    argv[1] = l->sha;
    argv[2] = "0";
    argv[3] = op;
    argv[4] = l->r->prefix;
    argv[5] = l->tag;
    for (int i = 0; i < SCRIPT_HEAD; i++)
        lens[i] = strlen(argv[i]);
}

/* A call of the script with at most 8 arguments, each a NUL-terminated string (ids are
 * labels: no NUL inside). Returns 0 or -1 when not connected. */
int ac__rb_script(link_t *l, redisCallbackFn *fn, void *priv, const char *op, int n,
                  const char *const *args)
{
    const char *argv[SCRIPT_HEAD + 8];
    size_t lens[SCRIPT_HEAD + 8];

    if (n > 8)
        return -1;
    ac__rb_script_head(l, op, argv, lens);
    for (int i = 0; i < n; i++) {
        argv[SCRIPT_HEAD + i] = args[i];
        lens[SCRIPT_HEAD + i] = strlen(args[i]);
    }
    return ac__rb_command(l, fn, priv, SCRIPT_HEAD + n, argv, lens);
}

/* ---- GET /v1/runs/{id} ------------------------------------------------------------ */

/* A run lives on its user's shard, and the id alone does not name the user: every shard
 * is asked; the first that knows the run answers. */
typedef struct rctx_s {
    rb_t *r;
    uint64_t t0;
    ac__run_done_cb done;
    void *arg;
    unsigned pending;
    int answered;
    int failed;
    size_t idlen;
    char id[];
} rctx_t;

static json_t *iso_or_null(const char *ms)
{
    char ts[25];
    uint64_t v;
    if (ms == NULL || ac__parse_u64(ms, strlen(ms), &v) != 0)
        return json_null();
    ac__iso8601_ms((int64_t)v, ts);
    return json_string(ts);
}

/* Answers with the run's object from its shard's reply (the hash's fields, "tools", ids). */
static void run_answer(rctx_t *c, const redisReply *x)
{
    const char *f[8] = {0}; /* user thread state closed_by started updated last_seq events */
    static const char *const names[8] = {"user",    "thread",  "state",    "closed_by",
                                         "started", "updated", "last_seq", "events"};
    json_t *o, *tools;
    char *body;
    const char *user;
    size_t i, ulen;

    tools = json_array();
    for (i = 0; i + 1 < x->elements; i += 2) {
        if (strcmp(x->element[i]->str, "tools") == 0)
            break;
        for (int k = 0; k < 8; k++) {
            if (strcmp(x->element[i]->str, names[k]) == 0)
                f[k] = x->element[i + 1]->str;
        }
    }
    for (i = i + 1; i < x->elements; i++)
        json_array_append_new(tools, json_string(x->element[i]->str));
    ulen = f[0] ? strlen(f[0]) : 0;
    user = f[0] ? ac__rb_user_of_key_id(c->r, f[0], &ulen) : "";
    o = json_pack("{s:s#,s:s#,s:o,s:s,s:o,s:I,s:I,s:o,s:o,s:o}", "run_id", c->id, (int)c->idlen,
                  "user_id", user, (int)ulen, "thread_id",
                  f[1] && f[1][0] ? json_string(f[1]) : json_null(), "state",
                  f[2] && strcmp(f[2], "open") == 0 ? "open" : "closed", "tools_executing", tools,
                  "last_seq", (json_int_t)(f[6] ? strtoull(f[6], NULL, 10) : 0), "events",
                  (json_int_t)(f[7] ? strtoull(f[7], NULL, 10) : 0), "started_at",
                  iso_or_null(f[4]), "updated_at", iso_or_null(f[5]), "closed_by",
                  f[3] && f[3][0] ? json_string(f[3]) : json_null());
    body = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (body == NULL)
        c->done(c->arg, 503, NULL, 0);
    else
        c->done(c->arg, 200, body, strlen(body));
    free(body);
}

static void on_run_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    rctx_t *c = priv;
    redisReply *x = reply;

    c->pending--;
    if (x == NULL || x->type != REDIS_REPLY_ARRAY) {
        c->failed = 1;
    } else {
        ac__rb_observe_rtt(c->r, c->t0);
        if (x->elements > 0 && !c->answered) {
            c->answered = 1;
            run_answer(c, x);
        }
    }
    if (c->pending > 0)
        return;
    if (!c->answered)
        c->done(c->arg, c->failed ? 503 : 404, NULL, 0);
    free(c);
}

static int redis_run_get(ac__broker_t *b, const char *id, size_t len, ac__run_done_cb done,
                         void *arg)
{
    rb_t *r = (rb_t *)b;
    rctx_t *c;

    for (unsigned i = 0; i < r->nlinks; i++) {
        if (!r->links[i].up)
            return AC_EUNAVAIL;
    }
    if ((c = calloc(1, sizeof(*c) + len + 1)) == NULL)
        return AC_ENOMEM;
    c->r = r;
    c->t0 = uv_hrtime();
    c->done = done;
    c->arg = arg;
    c->idlen = len;
    memcpy(c->id, id, len);
    c->id[len] = '\0';
    for (unsigned i = 0; i < r->nlinks; i++) {
        if (ac__rb_script(&r->links[i], on_run_reply, c, "run", 1, (const char *const[]){c->id}) ==
            0)
            c->pending++;
        else
            c->failed = 1;
    }
    if (c->pending == 0) {
        free(c);
        return AC_EUNAVAIL;
    }
    return 0;
}

/* ---- POST /v1/disconnect ------------------------------------------------------------ */

typedef struct kctx_s {
    rb_t *r;
    uint64_t t0;
    void (*done)(void *arg, int status, unsigned n);
    void *arg;
} kctx_t;

static void on_kick_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    kctx_t *k = priv;
    redisReply *x = reply;

    if (x != NULL)
        ac__rb_observe_rtt(k->r, k->t0);
    if (x == NULL || x->type != REDIS_REPLY_INTEGER)
        k->done(k->arg, AC_EUNAVAIL, 0);
    else
        k->done(k->arg, 0, (unsigned)x->integer);
    free(k);
}

static int redis_disconnect(ac__broker_t *b, const char *user, size_t ulen, uint64_t conn_id,
                            void (*done)(void *arg, int status, unsigned n), void *arg)
{
    rb_t *r = (rb_t *)b;
    link_t *l = ac__rb_link_of(r, user, ulen);
    char id[17] = "", who[KEY_ID_MAX];
    int rc;
    kctx_t *k;

    if (!l->up)
        return AC_EUNAVAIL;
    if (ulen > AC__USER_ID_MAX)
        return AC_EINVAL;
    if ((k = malloc(sizeof(*k))) == NULL)
        return AC_ENOMEM;
    k->r = r;
    k->t0 = uv_hrtime();
    k->done = done;
    k->arg = arg;
    if (conn_id != 0)
        snprintf(id, sizeof(id), "%016llx", (unsigned long long)conn_id);
    ac__rb_key_id(r, user, ulen, who);
    rc = ac__rb_script(l, on_kick_reply, k, "kick", 2, (const char *const[]){who, id});
    if (rc != 0) {
        free(k);
        return AC_EUNAVAIL;
    }
    return 0;
}

/* ---- upkeep ------------------------------------------------------------------------- */

static void on_claim_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    link_t *l = ac->data;
    rb_t *r = l->r;
    redisReply *x = reply;

    if (x == NULL || x->type != REDIS_REPLY_ARRAY || x->elements == 0 || r->on_timeout == NULL)
        return;
    l->open_runs = ac__rb_reply_u64(x->element[0]);
    for (size_t i = 1; i + 2 < x->elements; i += 3) {
        if (x->element[i]->type != REDIS_REPLY_STRING)
            continue;
        size_t ulen = x->element[i + 1]->len;
        const char *user = ac__rb_user_of_key_id(r, x->element[i + 1]->str, &ulen);
        r->on_timeout(r->timeout_arg, x->element[i]->str, user,
                      x->element[i + 2]->len ? x->element[i + 2]->str : NULL);
    }
}

/* A connected user's stream stays, however quiet: its seq counter for the seq ttl, its
 * history for the history ttl. */
static void refresh_user(rb_t *r, ac__user_t *u)
{
    char key[KEY_ID_MAX + 64], ttl[24], kid[KEY_ID_MAX];
    const char *argv[3] = {"PEXPIRE", key, ttl};
    size_t lens[3];
    link_t *l = ac__rb_ustate(u)->lk;

    ac__rb_key_id(r, u->id, u->id_len, kid);
    lens[0] = 7;
    lens[2] = (size_t)snprintf(ttl, sizeof(ttl), "%llu", (unsigned long long)r->o.seq_ttl_ms);
    lens[1] = (size_t)snprintf(key, sizeof(key), "%su:%s", r->prefix, kid);
    ac__rb_command(l, NULL, NULL, 3, argv, lens);
    lens[2] = (size_t)snprintf(ttl, sizeof(ttl), "%llu", (unsigned long long)r->o.history_ttl_ms);
    lens[1] = (size_t)snprintf(key, sizeof(key), "%sh:%s", r->prefix, kid);
    ac__rb_command(l, NULL, NULL, 3, argv, lens);
}

static void redis_sweep(ac__broker_t *b)
{
    rb_t *r = (rb_t *)b;
    ac__manager_t *m = r->manager;
    char tmo[24];

    for (size_t i = 0; i < m->nbuckets; i++) {
        for (ac__user_t *u = m->buckets[i]; u != NULL; u = u->hnext) {
            ustate_t *st = ac__rb_ustate(u);
            if (st == NULL)
                continue;
            if (u->nconns > 0) {
                refresh_user(r, u);
            } else if (st->sub == SUB_ON && st->joins == 0 && st->lk->sub_ready) {
                /* Its place in the stream is no longer kept: a later join starts afresh. */
                st->sub = SUB_LEAVING;
                st->synced = 0;
                st->nwait = 0;
                ac__rb_held_clear(st);
                ac__history_drop(&r->manager->history, u);
                ac__rb_subscribe_user(r, u, "UNSUBSCRIBE");
            } else if (st->sub == SUB_NONE || !st->lk->sub_ready) {
                if (st->sub != SUB_NONE)
                    st->lk->subscribed--;
                ac__rb_ustate_free(u);
                ac__history_drop(&r->manager->history, u);
            }
        }
    }
    if (r->o.run_timeout_ms > 0) {
        snprintf(tmo, sizeof(tmo), "%llu", (unsigned long long)r->o.run_timeout_ms);
        for (unsigned i = 0; i < r->nlinks; i++)
            ac__rb_script(&r->links[i], on_claim_reply, NULL, "claim", 1,
                          (const char *const[]){tmo});
    }
}

/* ---- connections to Redis ------------------------------------------------------------ */

static void went_down(link_t *l, const char *why)
{
    rb_t *r = l->r;
    ac__manager_t *m = r->manager;

    if (l->up)
        ac__log(AC_LOG_ERROR, "event=broker_down broker=redis addr=%s:%d reason=\"%s\"",
                l->addr.host, l->addr.port, why);
    l->up = 0;
    l->ping_sent = 0;
    l->connect_started = 0;
    /* Subscriptions are gone with the connection; positions stay, to be checked later. */
    for (size_t i = 0; i < m->nbuckets; i++) {
        for (ac__user_t *u = m->buckets[i]; u != NULL; u = u->hnext) {
            ustate_t *st = ac__rb_ustate(u);
            if (st == NULL || st->lk != l)
                continue;
            if (st->sub != SUB_NONE)
                l->subscribed--;
            st->sub = SUB_NONE;
            st->syncing = 0;
            st->resub = 0;
        }
    }
    /* Both connections go (a command connection without its subscriptions, or the other
     * way round, would deliver half a stream). Freeing answers their pending callbacks
     * with no reply: publishes get 503, joins close with 1013. */
    if (!l->in_down) {
        l->in_down = 1;
        if (l->cmd != NULL) {
            redisAsyncContext *c = l->cmd;
            l->cmd = NULL;
            l->cmd_ready = 0;
            redisAsyncFree(c);
        }
        if (l->sub != NULL) {
            redisAsyncContext *c = l->sub;
            l->sub = NULL;
            l->sub_ready = 0;
            redisAsyncFree(c);
        }
        l->in_down = 0;
    }
    l->next_attempt = uv_now(r->loop) + l->backoff_ms / 2 + next_rand(r) % (l->backoff_ms / 2 + 1);
    l->backoff_ms = l->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : l->backoff_ms * 2;
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    link_t *l = ac->data;

    if (ac == l->cmd) {
        l->cmd = NULL;
        l->cmd_ready = 0;
    } else if (ac == l->sub) {
        l->sub = NULL;
        l->sub_ready = 0;
    }
    if (!l->r->closing)
        went_down(l, ac->errstr[0] ? ac->errstr : "connection closed");
}

static void heartbeat(link_t *l)
{
    char key[128], ttl[16];
    const char *hb[5] = {"SET", key, "1", "PX", ttl};

    snprintf(key, sizeof(key), "%s%sn:%s", l->r->prefix, l->tag, l->r->node);
    snprintf(ttl, sizeof(ttl), "%d", HB_TTL_MS);
    ac__rb_command(l, NULL, NULL, 5, hb, NULL);
}

static void maybe_up(link_t *l)
{
    rb_t *r = l->r;
    ac__manager_t *m = r->manager;
    unsigned nup = 0;

    if (!l->cmd_ready || !l->sub_ready || l->up)
        return;
    /* Alive before any connection is registered: the registry counts live nodes only. */
    heartbeat(l);
    l->up = 1;
    l->connect_started = 0;
    l->backoff_ms = BACKOFF_MIN_MS;
    ac__log(AC_LOG_INFO, "event=broker_up broker=redis addr=%s:%d node=%s shard=%u/%u",
            l->addr.host, l->addr.port, r->node, l->idx, r->nlinks);
    for (unsigned i = 0; i < r->nlinks; i++)
        nup += r->links[i].up != 0;
    if (nup == r->nlinks)
        r->started = 1;
    /* Subscribe again for every user of this shard with connections here; each then
     * syncs. */
    for (size_t i = 0; i < m->nbuckets; i++) {
        for (ac__user_t *u = m->buckets[i]; u != NULL; u = u->hnext) {
            ustate_t *st = ac__rb_ustate(u);
            if (st == NULL || st->lk != l || st->sub != SUB_NONE)
                continue;
            st->sub = SUB_PENDING;
            l->subscribed++;
            ac__rb_subscribe_user(r, u, "SUBSCRIBE");
        }
    }
}

static void on_setup_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    link_t *l = ac->data;
    redisReply *x = reply;
    const char *step = priv;

    if (x == NULL)
        return;
    if (x->type == REDIS_REPLY_ERROR) {
        ac__log(AC_LOG_ERROR, "event=redis_error op=%s addr=%s:%d error=\"%s\"", step, l->addr.host,
                l->addr.port, x->str);
        redisAsyncDisconnect(ac);
        return;
    }
    if (strcmp(step, "script") == 0) {
        if (x->type != REDIS_REPLY_STRING || x->len != 40) {
            redisAsyncDisconnect(ac);
            return;
        }
        memcpy(l->sha, x->str, 40);
        l->sha[40] = '\0';
        l->cmd_ready = 1;
        maybe_up(l);
    } else if (strcmp(step, "sub-ready") == 0) {
        l->sub_ready = 1;
        maybe_up(l);
    }
}

static void on_connect(const redisAsyncContext *cac, int status)
{
    redisAsyncContext *ac = (redisAsyncContext *)cac;
    link_t *l = ac->data;

    if (status != REDIS_OK) {
        /* hiredis frees the context after this; no disconnect callback follows. */
        if (ac == l->cmd)
            l->cmd = NULL;
        else if (ac == l->sub)
            l->sub = NULL;
        if (!l->r->closing)
            went_down(l, ac->errstr[0] ? ac->errstr : "connect failed");
        return;
    }
    if (l->r->password != NULL) {
        const char *argv[2] = {"AUTH", l->r->password};
        redisAsyncCommandArgv(ac, on_setup_reply, (void *)"auth", 2, argv, NULL);
    }
    if (ac == l->cmd) {
        char db[16];
        const char *sel[2] = {"SELECT", db};
        const char *load[3] = {"SCRIPT", "LOAD", lua_script};
        size_t load_lens[3] = {6, 4, sizeof(lua_script) - 1};
        if (l->r->slots != NULL) {
            load[2] = lua_cluster_script;
            load_lens[2] = sizeof(lua_cluster_script) - 1;
        }
        snprintf(db, sizeof(db), "%d", l->addr.db);
        if (l->addr.db != 0)
            redisAsyncCommandArgv(ac, on_setup_reply, (void *)"select", 2, sel, NULL);
        redisAsyncCommandArgv(ac, on_setup_reply, (void *)"script", 3, load, load_lens);
    } else {
        /* PING answers once AUTH (if any) has: the connection is usable. */
        const char *ping[1] = {"PING"};
        redisAsyncCommandArgv(ac, on_setup_reply, (void *)"sub-ready", 1, ping, NULL);
    }
}

static redisAsyncContext *connect_one(link_t *l)
{
    redisAsyncContext *ac = redisAsyncConnect(l->addr.host, l->addr.port);

    if (ac == NULL)
        return NULL;
    if (ac->err) {
        redisAsyncFree(ac);
        return NULL;
    }
    ac->data = l;
    if (ac__redis_uv_attach(ac, l->r->loop) != 0) {
        redisAsyncFree(ac);
        return NULL;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    return ac;
}

static void start_connect(link_t *l)
{
    l->connect_started = uv_now(l->r->loop);
    if (l->cmd == NULL)
        l->cmd = connect_one(l);
    if (l->sub == NULL)
        l->sub = connect_one(l);
    if (l->cmd == NULL || l->sub == NULL)
        went_down(l, "cannot create a connection");
}

static void on_pong(redisAsyncContext *ac, void *reply, void *priv)
{
    link_t *l = ac->data;
    uint64_t t0 = (uint64_t)(uintptr_t)priv;

    if (reply == NULL)
        return;
    l->ping_sent = 0;
    ac__rb_observe_rtt(l->r, t0);
}

static void link_tick(link_t *l, uint64_t now)
{
    if (l->cmd == NULL && l->sub == NULL) {
        if (now >= l->next_attempt) {
            l->reconnects++;
            start_connect(l);
        }
        return;
    }
    if (!l->up) {
        /* hiredis has no connect timeout: a dropped SYN would wait for minutes. */
        if (l->connect_started != 0 && now - l->connect_started > PING_DEADLINE_MS)
            went_down(l, "connect timed out");
        return;
    }
    if (l->ping_sent != 0 && now - l->ping_sent > PING_DEADLINE_MS) {
        went_down(l, "no answer to PING");
        return;
    }
    if (l->ping_sent == 0 && now - l->last_beat >= HB_INTERVAL_MS) {
        const char *ping[1] = {"PING"};
        l->ping_sent = now;
        l->last_beat = now;
        ac__rb_command(l, on_pong, (void *)(uintptr_t)uv_hrtime(), 1, ping, NULL);
        heartbeat(l);
    }
}

static void on_timer(uv_timer_t *t)
{
    rb_t *r = t->data;

    if (r->closing)
        return;
    for (unsigned i = 0; i < r->nlinks; i++)
        link_tick(&r->links[i], uv_now(r->loop));
}

/* ---- the rest of the vtable --------------------------------------------------------- */

static int redis_publish_one(ac__broker_t *b, ac__user_t *u, ac__buf_t *frame, unsigned *delivered)
{
    return AC_EUNAVAIL; /* events go through publish_batch */
}

static uint64_t redis_oldest(ac__broker_t *b, ac__user_t *u)
{
    return ac__history_oldest(u);
}

static void redis_replay(ac__broker_t *b, ac__user_t *u, uint64_t after, ac__history_fn fn,
                         void *arg)
{
    ac__history_since(u, after, fn, arg);
}

/* A node serves once every shard was up; after that, while at least one is (a shard down
 * refuses only its own users). */
static int redis_up(const ac__broker_t *b)
{
    const rb_t *r = (const rb_t *)b;
    unsigned nup = 0;

    for (unsigned i = 0; i < r->nlinks; i++)
        nup += r->links[i].up != 0;
    return r->closing ? 0 : r->started ? nup > 0 : nup == r->nlinks;
}

/* /healthz, with several shards and some down: those, by address ("shards_down"), and
 * "broker":"partial" while others are up. Otherwise the body stays the one-Redis one. */
static void redis_health(const ac__broker_t *b, void *out)
{
    const rb_t *r = (const rb_t *)b;
    json_t *o = out, *down;
    char addr[300];

    if (r->nlinks == 1 || (down = json_array()) == NULL)
        return;
    for (unsigned i = 0; i < r->nlinks; i++) {
        if (r->links[i].up)
            continue;
        snprintf(addr, sizeof(addr), "%s:%d", r->links[i].addr.host, r->links[i].addr.port);
        json_array_append_new(down, json_string(addr));
    }
    if (json_array_size(down) > 0 && json_array_size(down) < r->nlinks && redis_up(b)) {
        json_object_set_new(o, "status", json_string("degraded"));
        json_object_set_new(o, "broker", json_string("partial"));
    }
    if (json_array_size(down) > 0)
        json_object_set_new(o, "shards_down", down);
    else
        json_decref(down);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void redis_stats(const ac__broker_t *b, void *out)
{
    const rb_t *r = (const rb_t *)b;
    json_t *o = out, *shards = json_array();
    size_t n = r->rtt_n < RTT_RING ? (size_t)r->rtt_n : RTT_RING;
    uint64_t sorted[RTT_RING], reconnects = 0, open_runs = 0, subscribed = 0;
    json_t *rtt;
    char addr[300];

    memcpy(sorted, r->rtt_us, n * sizeof(*sorted));
    qsort(sorted, n, sizeof(*sorted), cmp_u64);
    rtt = json_pack("{s:I,s:I,s:I,s:I}", "p50", (json_int_t)(n ? sorted[n / 2] : 0), "p99",
                    (json_int_t)(n ? sorted[(n * 99) / 100 < n ? (n * 99) / 100 : n - 1] : 0),
                    "max", (json_int_t)r->rtt_max, "samples", (json_int_t)n);
    for (unsigned i = 0; i < r->nlinks; i++) {
        const link_t *l = &r->links[i];
        reconnects += l->reconnects;
        open_runs += l->open_runs;
        subscribed += l->subscribed;
        snprintf(addr, sizeof(addr), "%s:%d", l->addr.host, l->addr.port);
        json_array_append_new(shards, json_pack("{s:s,s:b,s:I,s:I}", "addr", addr, "up", l->up,
                                                "reconnects", (json_int_t)l->reconnects,
                                                "users_subscribed", (json_int_t)l->subscribed));
    }
    json_object_set_new(o, "broker_up", json_boolean(redis_up(b)));
    json_object_set_new(o, "broker_node", json_string(r->node));
    json_object_set_new(o, "broker_reconnects", json_integer((json_int_t)reconnects));
    json_object_set_new(o, "broker_rtt_us", rtt);
    json_object_set_new(o, "broker_users_subscribed", json_integer((json_int_t)subscribed));
    json_object_set_new(o, "broker_gaps_filled", json_integer((json_int_t)r->gaps_filled));
    json_object_set_new(o, "broker_stream_resets", json_integer((json_int_t)r->resets));
    json_object_set_new(o, "broker_shards", shards);
    json_object_set_new(o, "open_runs", json_integer((json_int_t)open_runs));
}

static void on_timer_closed(uv_handle_t *h)
{
    free(h);
}

static void redis_close(ac__broker_t *b)
{
    rb_t *r = (rb_t *)b;
    char key[128];
    const char *del[2] = {"DEL", key};

    if (r->closing)
        return;
    for (unsigned i = 0; i < r->nlinks; i++) {
        snprintf(key, sizeof(key), "%s%sn:%s", r->prefix, r->links[i].tag, r->node);
        ac__rb_command(&r->links[i], NULL, NULL, 2, del, NULL);
    }
    r->closing = 1;
    uv_timer_stop(r->timer);
    uv_close((uv_handle_t *)r->timer, on_timer_closed);
    /* Pending replies are still answered; then the connections close. */
    for (unsigned i = 0; i < r->nlinks; i++) {
        link_t *l = &r->links[i];
        l->up = 0;
        if (l->cmd != NULL)
            redisAsyncDisconnect(l->cmd);
        if (l->sub != NULL)
            redisAsyncDisconnect(l->sub);
    }
}

static void redis_free(ac__broker_t *b)
{
    rb_t *r = (rb_t *)b;
    ac__manager_t *m = r->manager;

    redis_close(b);
    for (unsigned i = 0; i < r->nlinks; i++) {
        if (r->links[i].cmd != NULL)
            redisAsyncFree(r->links[i].cmd);
        if (r->links[i].sub != NULL)
            redisAsyncFree(r->links[i].sub);
    }
    for (size_t i = 0; i < m->nbuckets; i++) {
        for (ac__user_t *u = m->buckets[i]; u != NULL; u = u->hnext)
            ac__rb_ustate_free(u);
    }
    free(r->links);
    free(r->slots);
    free(r->prefix);
    free(r->password);
    free(r);
}

static const ac__broker_vtable_t redis_vtable = {.name = "redis",
                                                 .publish = redis_publish_one,
                                                 .join = ac__rb_join,
                                                 .leave = ac__rb_leave,
                                                 .publish_batch = ac__rb_publish_batch,
                                                 .run_get = redis_run_get,
                                                 .disconnect = redis_disconnect,
                                                 .sweep = redis_sweep,
                                                 .oldest = redis_oldest,
                                                 .replay = redis_replay,
                                                 .up = redis_up,
                                                 .health = redis_health,
                                                 .stats = redis_stats,
                                                 .close = redis_close,
                                                 .free = redis_free};

void ac__broker_redis_on_timeout(ac__broker_t *b, ac__run_timeout_fn fn, void *arg)
{
    rb_t *r = (rb_t *)b;
    r->on_timeout = fn;
    r->timeout_arg = arg;
}

/* "redis+cluster://SEED[,SEED...]": one link per master of the cluster (CLUSTER SLOTS from
 * the first seed that answers), the slot map, and each master's own tag: "{N}" with the
 * smallest N whose slot that master serves. */
static int cluster_links_new(rb_t *r, const char *seeds, char *why, size_t whylen)
{
    ac__redis_master_t ms[64];
    unsigned n = 0;
    int found = -1;

    if (strchr(r->prefix, '{') != NULL || strchr(r->prefix, '}') != NULL) {
        snprintf(why, whylen, "--redis-prefix: no { or } with a Redis Cluster (hash tags)");
        return -1;
    }
    while (found != 0 && *seeds != '\0') {
        const char *comma = strchr(seeds, ',');
        size_t len = comma ? (size_t)(comma - seeds) : strlen(seeds);
        char url[300];
        ac__redis_addr_t seed;
        snprintf(url, sizeof(url), "redis://%.*s", (int)len, seeds);
        if (ac__redis_addr_parse(url, strlen(url), &seed, why, whylen) != 0)
            return -1;
        if (seed.db != 0) {
            snprintf(why, whylen, "--broker: a Redis Cluster has only database 0, got \"%s\"", url);
            return -1;
        }
        found = ac__redis_cluster_masters(&seed, r->password, ms, 64, &n, why, whylen);
        seeds += len + (comma != NULL);
    }
    if (found != 0)
        return -1;
    if ((r->links = calloc(n, sizeof(*r->links))) == NULL || (r->slots = malloc(16384)) == NULL) {
        snprintf(why, whylen, "out of memory");
        return -1;
    }
    r->nlinks = n;
    for (unsigned i = 0; i < n; i++) {
        link_t *l = &r->links[i];
        l->r = r;
        l->idx = i;
        l->backoff_ms = BACKOFF_MIN_MS;
        l->addr = ms[i].addr;
        for (unsigned k = 0; k < ms[i].nranges; k++) {
            for (unsigned slot = ms[i].lo[k]; slot <= ms[i].hi[k]; slot++)
                r->slots[slot] = (uint8_t)i;
        }
    }
    for (unsigned i = 0, tagged = 0; tagged < n && i < 1000000; i++) {
        char t[8];
        int len = snprintf(t, sizeof(t), "%u", i % 1000000);
        link_t *l = &r->links[r->slots[ac__redis_slot(t, (size_t)len)]];
        if (l->tag[0] == '\0') {
            snprintf(l->tag, sizeof(l->tag), "{%s}", t);
            tagged++;
        }
    }
    for (unsigned i = 0; i < n; i++) {
        if (ac__redis_probe(&r->links[i].addr, r->password, why, whylen) != 0)
            return -1;
    }
    return 0;
}

/* "redis://A[/DB],redis://B,...": one link per URL, each probed. */
static int links_new(rb_t *r, const char *urls, char *why, size_t whylen)
{
    unsigned n = 1;

    if (strncmp(urls, "redis+cluster://", 16) == 0)
        return cluster_links_new(r, urls + 16, why, whylen);

    for (const char *p = urls; *p; p++)
        n += *p == ',';
    if (n > 64) {
        snprintf(why, whylen, "--broker: at most 64 shards, got %u", n);
        return -1;
    }
    if ((r->links = calloc(n, sizeof(*r->links))) == NULL) {
        snprintf(why, whylen, "out of memory");
        return -1;
    }
    r->nlinks = n;
    for (unsigned i = 0; i < n; i++) {
        const char *comma = strchr(urls, ',');
        size_t len = comma ? (size_t)(comma - urls) : strlen(urls);
        link_t *l = &r->links[i];
        l->r = r;
        l->idx = i;
        l->backoff_ms = BACKOFF_MIN_MS;
        if (ac__redis_addr_parse(urls, len, &l->addr, why, whylen) != 0)
            return -1;
        for (unsigned k = 0; k < i; k++) {
            if (strcmp(r->links[k].addr.host, l->addr.host) == 0 &&
                r->links[k].addr.port == l->addr.port && r->links[k].addr.db == l->addr.db) {
                snprintf(why, whylen, "--broker: shard %.*s is listed twice", (int)len, urls);
                return -1;
            }
        }
        urls += len + (comma != NULL);
    }
    for (unsigned i = 0; i < n; i++) {
        if (ac__redis_probe(&r->links[i].addr, r->password, why, whylen) != 0)
            return -1;
    }
    return 0;
}

int ac__broker_redis_new(uv_loop_t *loop, const ac__broker_host_t *host, ac__manager_t *manager,
                         const ac__redis_opts_t *opts, ac__broker_t **out, char *why, size_t whylen)
{
    rb_t *r = calloc(1, sizeof(*r));
    uint64_t seed[2];

    *out = NULL;
    if (r == NULL) {
        snprintf(why, whylen, "out of memory");
        return AC_ENOMEM;
    }
    r->base.vt = &redis_vtable;
    r->base.host = *host;
    r->loop = loop;
    r->manager = manager;
    r->o = *opts;
    r->prefix = strdup(opts->prefix ? opts->prefix : "ac:");
    r->password = opts->password && opts->password[0] ? strdup(opts->password) : NULL;
    if (getrandom(seed, sizeof(seed), 0) != (ssize_t)sizeof(seed)) {
        seed[0] = uv_hrtime() ^ (uint64_t)(uintptr_t)r;
        seed[1] = seed[0] * 0x9E3779B97F4A7C15ull;
    }
    r->rng = seed[0];
    snprintf(r->node, sizeof(r->node), "%016llx", (unsigned long long)seed[1]);
    if (r->prefix == NULL || links_new(r, opts->url, why, whylen) != 0)
        goto fail;
    r->timer = malloc(sizeof(*r->timer));
    if (r->timer == NULL) {
        snprintf(why, whylen, "out of memory");
        goto fail;
    }
    uv_timer_init(loop, r->timer);
    r->timer->data = r;
    uv_timer_start(r->timer, on_timer, HB_INTERVAL_MS / 4, HB_INTERVAL_MS / 4);
    for (unsigned i = 0; i < r->nlinks; i++)
        start_connect(&r->links[i]);
    *out = &r->base;
    return 0;
fail:
    free(r->links);
    free(r->slots);
    free(r->prefix);
    free(r->password);
    free(r);
    return AC_EUNAVAIL;
}
