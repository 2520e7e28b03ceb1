/* The Redis broker: several nodes share each user's seq stream, history, connection
 * registry, runs and idempotency keys through Redis, on the node's own loop (hiredis,
 * redis_uv.c). With several Redis URLs (shards) a consistent hash of the user id picks the
 * one Redis that holds all of that user's keys; every node is given the same list. Two
 * connections per shard: `cmd` runs the one Lua script (redis.lua, EVALSHA: every publish,
 * join and claim is one atomic round trip per shard) and small commands; `sub` holds a
 * SUBSCRIBE per user this node has connections for, so a node's traffic follows its own
 * users, not the cluster's. A shard down refuses only its own users.
 *
 * Order and completeness on a node: Redis publishes a user's events in seq order, but a
 * subscription only carries what comes after it, and a join's answer (on `cmd`) races with
 * the events (on `sub`). So each subscribed user has a node-side stream position (u->seq,
 * u->epoch): an event is delivered only when it is the next one; one that leaves a gap is
 * held and the gap filled from Redis's history (a "sync"); a joining connection is greeted
 * with what Redis retained up to its snapshot, then caught up from the node's recent
 * frames (u->hist) before it goes live. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <jansson.h>

#include "agentcast.h"
#include "broker/broker.h"
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

#define HB_INTERVAL_MS 1000 /* PING (round-trip time, liveness) and the node's heartbeat */
#define HB_TTL_MS 15000     /* a node silent this long no longer counts in the registry */
#define PING_DEADLINE_MS 3000
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000
#define HELD_MAX 4096 /* frames held per user while a gap is being filled */
#define RTT_RING 1024

enum { SUB_NONE = 0, SUB_PENDING, SUB_ON, SUB_LEAVING };

typedef struct waiter_s {
    uint64_t conn_id;
    uint64_t snap; /* greeted up to this seq; live once the node has reached it */
} waiter_t;

/* A subscribed user's state on this node (u->bs). */
typedef struct ustate_s {
    uint8_t sub;
    uint8_t synced;  /* u->seq and u->epoch are this node's position in the stream */
    uint8_t syncing; /* a sync is in flight */
    uint8_t resub;   /* subscribe again once the pending unsubscribe is confirmed */
    uint32_t nheld, held_cap;
    ac__buf_t **held; /* events past a gap, in arrival (= seq) order */
    uint32_t nwait, wait_cap;
    waiter_t *wait;
    uint32_t nqueued, queued_cap;
    ac__join_req_t *queued; /* joins waiting for the subscription */
    uint32_t joins;         /* joins in flight */
    struct link_s *lk;      /* the user's shard */
} ustate_t;

typedef struct rb_s rb_t;

/* One shard: a Redis, its two connections and their state. */
typedef struct link_s {
    rb_t *r;
    unsigned idx;
    ac__redis_addr_t addr;
    redisAsyncContext *cmd;
    redisAsyncContext *sub;
    int cmd_ready; /* connected, authenticated, database selected, script loaded */
    int sub_ready;
    int up;
    int in_down;
    char sha[41];
    unsigned backoff_ms;
    uint64_t next_attempt;    /* uv_now() of the next connection attempt */
    uint64_t ping_sent;       /* uv_now() of the PING in flight, 0: none */
    uint64_t connect_started; /* uv_now() of the attempt not yet up, 0: none */
    uint64_t last_beat;       /* uv_now() of the last PING + heartbeat */
    uint64_t reconnects;
    uint64_t open_runs; /* on this shard, as of the last sweep */
    size_t subscribed;
    char tag[16]; /* a Redis Cluster master's own hash tag ("{N}"), "" otherwise */
} link_t;

struct rb_s {
    ac__broker_t base;
    uv_loop_t *loop;
    ac__manager_t *manager;
    ac__redis_opts_t o;
    char *prefix;
    char *password;
    char node[17];
    link_t *links;
    unsigned nlinks;
    uint8_t *slots; /* a Redis Cluster's slot -> link; NULL: shards by consistent hash */
    int started;    /* every shard was up once: the node serves */
    int closing;
    uv_timer_t *timer; /* its own allocation: freed by its close callback */
    uint64_t rng;
    uint64_t rtt_us[RTT_RING];
    uint64_t rtt_n;
    uint64_t rtt_max;
    uint64_t gaps_filled;
    uint64_t resets;
    ac__run_timeout_fn on_timeout;
    void *timeout_arg;
};

/* ---- small helpers ------------------------------------------------------------------ */

static uint64_t next_rand(rb_t *r)
{
    uint64_t z = (r->rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void new_epoch(rb_t *r, char out[9])
{
    snprintf(out, 9, "%08x", (unsigned)(next_rand(r) & 0xffffffffu));
}

static void observe_rtt(rb_t *r, uint64_t t0_ns)
{
    uint64_t us = (uv_hrtime() - t0_ns) / 1000;
    r->rtt_us[r->rtt_n++ % RTT_RING] = us;
    if (us > r->rtt_max)
        r->rtt_max = us;
}

/* 1..16 lowercase hex digits (an epoch, a connection id) into *out; 0 or -1. */
static int parse_hex(const char *p, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    if (n == 0 || n > 16)
        return -1;
    for (size_t i = 0; i < n; i++) {
        int d = p[i] >= '0' && p[i] <= '9'   ? p[i] - '0'
                : p[i] >= 'a' && p[i] <= 'f' ? p[i] - 'a' + 10
                                             : -1;
        if (d < 0)
            return -1;
        v = v * 16 + (uint64_t)d;
    }
    *out = v;
    return 0;
}

static int parse_epoch(const char *p, size_t n, uint32_t *out)
{
    uint64_t v;
    if (n > 8 || parse_hex(p, n, &v) != 0)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

static uint64_t reply_u64(const redisReply *x)
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

/* The user's channel name into buf; returns its length. */
static size_t channel_of(const rb_t *r, const char *user, size_t ulen, char *buf, size_t cap)
{
    int n = snprintf(buf, cap, "%sc:%.*s", r->prefix, (int)ulen, user);
    return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
}

static void member_of(const rb_t *r, uint64_t conn_id, char out[40])
{
    snprintf(out, 40, "%016llx@%s", (unsigned long long)conn_id, r->node);
}

/* The shard (or Redis Cluster master) of a user id. */
static link_t *link_of(rb_t *r, const char *user, size_t ulen)
{
    if (r->slots != NULL) {
        char tag[9];
        ac__redis_user_tag(user, ulen, tag);
        return &r->links[r->slots[ac__redis_slot(tag, 8)]];
    }
    return &r->links[r->nlinks == 1 ? 0 : ac__redis_shard_of(user, ulen, r->nlinks)];
}

#define KEY_ID_MAX (AC__USER_ID_MAX + 16)

/* The id a user's keys and channel are built from, into buf (KEY_ID_MAX bytes): the id, or
 * in a Redis Cluster "{TAG}id", TAG naming the user's slot. Returns its length. */
static size_t key_id(const rb_t *r, const char *user, size_t ulen, char *buf)
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
static const char *user_of_key_id(const rb_t *r, const char *kid, size_t *len)
{
    if (r->slots != NULL && *len >= 10 && kid[0] == '{' && kid[9] == '}') {
        *len -= 10;
        return kid + 10;
    }
    return kid;
}

/* A command on the shard's `cmd` with argv; fn may be NULL. Returns 0 or -1 when not
 * connected. */
static int command(link_t *l, redisCallbackFn *fn, void *priv, int argc, const char **argv,
                   const size_t *lens)
{
    if (l->cmd == NULL || !l->cmd_ready)
        return -1;
    return redisAsyncCommandArgv(l->cmd, fn, priv, argc, argv, lens) == REDIS_OK ? 0 : -1;
}

#define SCRIPT_HEAD 6

/* The first arguments of every call of the one script: EVALSHA sha 0 op prefix tag. */
static void script_head(const link_t *l, const char *op, const char **argv, size_t *lens)
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
static int script(link_t *l, redisCallbackFn *fn, void *priv, const char *op, int n,
                  const char *const *args)
{
    const char *argv[SCRIPT_HEAD + 8];
    size_t lens[SCRIPT_HEAD + 8];

    if (n > 8)
        return -1;
    script_head(l, op, argv, lens);
    for (int i = 0; i < n; i++) {
        argv[SCRIPT_HEAD + i] = args[i];
        lens[SCRIPT_HEAD + i] = strlen(args[i]);
    }
    return command(l, fn, priv, SCRIPT_HEAD + n, argv, lens);
}

/* ---- per-user stream position ------------------------------------------------------- */

static ustate_t *ustate(ac__user_t *u)
{
    return u->bs;
}

static void held_clear(ustate_t *st)
{
    for (uint32_t i = 0; i < st->nheld; i++)
        ac__buf_unref(st->held[i]);
    st->nheld = 0;
}

static void ustate_free(ac__user_t *u)
{
    ustate_t *st = u->bs;
    if (st == NULL)
        return;
    held_clear(st);
    free(st->held);
    free(st->wait);
    free(st->queued);
    free(st);
    u->bs = NULL;
}

static void start_sync(rb_t *r, ac__user_t *u);

static void hold(rb_t *r, ac__user_t *u, ac__buf_t *frame)
{
    ustate_t *st = ustate(u);

    if (st->nheld == HELD_MAX) {
        /* Too far behind to hold: let history fill it all. */
        held_clear(st);
        start_sync(r, u);
        return;
    }
    if (st->nheld == st->held_cap) {
        uint32_t ncap = st->held_cap ? st->held_cap * 2 : 16;
        ac__buf_t **n = realloc(st->held, ncap * sizeof(*n));
        if (n == NULL) {
            held_clear(st);
            start_sync(r, u);
            return;
        }
        st->held = n;
        st->held_cap = ncap;
    }
    ac__buf_ref(frame);
    st->held[st->nheld++] = frame;
}

typedef struct catchup_s {
    rb_t *r;
    ac__user_t *u;
    uint64_t conn_id;
} catchup_t;

static void catchup_one(ac__buf_t *frame, void *arg)
{
    catchup_t *cu = arg;
    cu->r->base.host.send_one(cu->r->base.host.arg, cu->u, cu->conn_id, frame, 1);
}

/* A greeted connection is sent what the node delivered after its snapshot, then is live.
 * When the node's recent frames no longer reach back that far, it is asked to resume. */
static void catch_up(rb_t *r, ac__user_t *u, uint64_t conn_id, uint64_t snap)
{
    ac__broker_host_t *h = &r->base.host;

    if (u->seq > snap && ac__history_oldest(u) > snap + 1) {
        h->close_one(h->arg, u, conn_id, 1012, "fell behind while joining: resume");
        return;
    }
    if (u->seq > snap) {
        catchup_t cu = {r, u, conn_id};
        ac__history_since(u, snap, catchup_one, &cu);
    }
    h->go_live(h->arg, u, conn_id);
}

static void check_waiters(rb_t *r, ac__user_t *u)
{
    ustate_t *st = ustate(u);
    uint32_t i = 0;

    while (st != NULL && i < st->nwait) {
        if (st->wait[i].snap <= u->seq) {
            waiter_t w = st->wait[i];
            st->wait[i] = st->wait[--st->nwait];
            catch_up(r, u, w.conn_id, w.snap);
            st = ustate(u);
        } else {
            i++;
        }
    }
}

/* The next event of the stream: kept in the node's recent frames and delivered. */
static void accept_event(rb_t *r, ac__user_t *u, ac__buf_t *frame)
{
    u->seq = frame->seq;
    if (ac__history_append(&r->manager->history, u, frame) != 0)
        ac__log(AC_LOG_WARN, "event=recent_frames_oom user=%s", u->id);
    r->base.host.deliver(r->base.host.arg, u, frame);
    if (ustate(u) != NULL && ustate(u)->nwait > 0)
        check_waiters(r, u);
}

/* Delivers held events that continue the stream; a remaining gap starts a sync. */
static void drain_held(rb_t *r, ac__user_t *u)
{
    ustate_t *st = ustate(u);
    uint32_t i;

    for (i = 0; i < st->nheld; i++) {
        ac__buf_t *f = st->held[i];
        if (f->seq <= u->seq)
            continue;
        if (f->seq != u->seq + 1)
            break;
        accept_event(r, u, f);
        if ((st = ustate(u)) == NULL)
            return;
    }
    if (i < st->nheld) {
        /* Keep the rest (a gap before them). */
        uint32_t k = 0;
        for (uint32_t j = 0; j < i; j++)
            ac__buf_unref(st->held[j]);
        for (uint32_t j = i; j < st->nheld; j++)
            st->held[k++] = st->held[j];
        st->nheld = k;
        start_sync(r, u);
    } else {
        held_clear(st);
    }
}

/* The user's stream was recreated (Redis came back empty, or the stream expired): its
 * connections cannot continue their seqs; they are asked to resume, and get `resync`. */
static void stream_reset(rb_t *r, ac__user_t *u, const char *why)
{
    ac__broker_host_t *h = &r->base.host;
    ac__mconn_t *m = u->head;
    ustate_t *st = ustate(u);

    r->resets++;
    ac__log(AC_LOG_WARN, "event=stream_reset user=%s reason=\"%s\"", u->id, why);
    while (m != NULL) {
        ac__mconn_t *next = m->next;
        h->close_one(h->arg, u, m->id, 1012, why);
        m = next;
    }
    if (st != NULL) {
        st->synced = 0;
        st->nwait = 0;
        held_clear(st);
    }
    ac__history_drop(&r->manager->history, u);
    u->seq = 0;
}

/* ---- joins and syncs ---------------------------------------------------------------- */

typedef struct jctx_s {
    rb_t *r;
    uint64_t t0;
    ac__join_req_t req; /* conn_id 0: a sync of the node's own position */
    size_t ulen;
    char user[];
} jctx_t;

static void on_join_reply(redisAsyncContext *ac, void *reply, void *priv);

static int send_join(rb_t *r, ac__user_t *u, const ac__join_req_t *req)
{
    char member[40] = "", cap[16], ep[9], ttl[24], after[24] = "", kid[KEY_ID_MAX];
    int rc;
    jctx_t *j = malloc(sizeof(*j) + u->id_len + 1);

    if (j == NULL)
        return AC_ENOMEM;
    j->r = r;
    j->t0 = uv_hrtime();
    j->req = *req;
    j->ulen = u->id_len;
    memcpy(j->user, u->id, u->id_len + 1);
    if (req->conn_id != 0)
        member_of(r, req->conn_id, member);
    snprintf(cap, sizeof(cap), "%u", r->o.max_per_user);
    new_epoch(r, ep);
    snprintf(ttl, sizeof(ttl), "%llu", (unsigned long long)r->o.seq_ttl_ms);
    if (req->has_after)
        snprintf(after, sizeof(after), "%llu", (unsigned long long)req->after);
    {
        const char *args[7] = {kid, member, cap, ep, ttl, after, req->epoch};
        key_id(r, u->id, u->id_len, kid);
        rc = script(ustate(u)->lk, on_join_reply, j, "join", 7, args);
    }
    if (rc != 0) {
        free(j);
        return AC_EUNAVAIL;
    }
    if (req->conn_id != 0)
        ustate(u)->joins++;
    return 0;
}

static void start_sync(rb_t *r, ac__user_t *u)
{
    ustate_t *st = ustate(u);
    ac__join_req_t req;

    if (st == NULL || st->syncing || !st->synced || st->sub != SUB_ON)
        return;
    memset(&req, 0, sizeof(req));
    req.has_after = 1;
    req.after = u->seq;
    ac__user_epoch_str(u, req.epoch);
    if (send_join(r, u, &req) == 0) {
        st->syncing = 1;
        r->gaps_filled++;
    }
}

static ac__buf_t *event_frame(const char *env, size_t len, uint64_t seq)
{
    ac__buf_t *b = ac__frame_raw(AC_WS_TEXT, env, len);
    if (b != NULL) {
        b->seq = seq;
        b->t_ns = uv_hrtime();
    }
    return b;
}

/* Makes res.frames from the reply's envelopes (elements 4..); seqs end at res.seq. */
static int reply_frames(const redisReply *x, ac__join_res_t *res)
{
    size_t n = x->elements - 4;

    res->nframes = 0;
    res->frames = NULL;
    if (n == 0)
        return 0;
    res->frames = calloc(n, sizeof(*res->frames));
    if (res->frames == NULL)
        return AC_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const redisReply *e = x->element[4 + i];
        res->frames[i] = event_frame(e->str, e->len, res->seq - (n - 1 - i));
        if (res->frames[i] == NULL)
            return AC_ENOMEM;
        res->nframes++;
    }
    return 0;
}

static void frames_free(ac__join_res_t *res)
{
    for (size_t i = 0; i < res->nframes; i++)
        ac__buf_unref(res->frames[i]);
    free(res->frames);
}

static void on_join_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    jctx_t *j = priv;
    rb_t *r = j->r;
    redisReply *x = reply;
    ac__broker_host_t *h = &r->base.host;
    ac__user_t *u = ac__manager_find_user(r->manager, j->user, j->ulen);
    ustate_t *st = u ? ustate(u) : NULL;
    ac__join_res_t res;
    uint32_t ep = 0;
    int ok;

    if (x != NULL)
        observe_rtt(r, j->t0);
    if (st == NULL) {
        free(j);
        return;
    }
    if (j->req.conn_id != 0)
        st->joins--;
    else
        st->syncing = 0;
    memset(&res, 0, sizeof(res));
    ok = x != NULL && x->type == REDIS_REPLY_ARRAY && x->elements >= 4 &&
         x->element[0]->type == REDIS_REPLY_STRING && x->element[0]->len < sizeof(res.epoch) &&
         parse_epoch(x->element[0]->str, x->element[0]->len, &ep) == 0;
    if (ok) {
        memcpy(res.epoch, x->element[0]->str, x->element[0]->len);
        res.seq = reply_u64(x->element[1]);
        res.oldest = reply_u64(x->element[2]);
        res.recovered = reply_u64(x->element[3]) == 1;
        res.resume = j->req.has_after;
        ok = reply_frames(x, &res) == 0;
    }
    if (!ok) {
        if (x != NULL && x->type == REDIS_REPLY_ERROR)
            ac__log(AC_LOG_ERROR, "event=redis_error op=join error=\"%s\"", x->str);
        if (j->req.conn_id != 0)
            h->close_one(h->arg, u, j->req.conn_id, 1013, "broker unavailable: try again");
        frames_free(&res);
        free(j);
        return;
    }
    if (st->synced && ep != u->epoch)
        stream_reset(r, u, "event stream reset (new epoch): resume");
    if (j->req.conn_id == 0) {
        /* A sync: fill the node's gap, then what was held. */
        if (!st->synced) {
            /* Reset meanwhile: the next join sets the position. */
        } else if (!res.recovered) {
            stream_reset(r, u, "events missed on this node: resume");
        } else {
            for (size_t i = 0; i < res.nframes; i++) {
                if (res.frames[i]->seq == u->seq + 1)
                    accept_event(r, u, res.frames[i]);
                if ((st = ustate(u)) == NULL)
                    break;
            }
            if (st != NULL)
                drain_held(r, u);
        }
        frames_free(&res);
        free(j);
        return;
    }
    if (!st->synced) {
        st->synced = 1;
        u->epoch = ep;
        u->seq = res.seq;
        ac__history_drop(&r->manager->history, u);
        for (size_t i = 0; i < res.nframes; i++) {
            if (ac__history_append(&r->manager->history, u, res.frames[i]) != 0)
                break;
        }
    }
    if (h->greet(h->arg, u, j->req.conn_id, &res) == 0 && (st = ustate(u)) != NULL) {
        if (u->seq >= res.seq) {
            catch_up(r, u, j->req.conn_id, res.seq);
        } else {
            /* The node has not yet seen the events up to the snapshot: they are on their
             * way on `sub` (subscribed before the join ran). */
            if (st->nwait == st->wait_cap) {
                uint32_t ncap = st->wait_cap ? st->wait_cap * 2 : 4;
                waiter_t *n = realloc(st->wait, ncap * sizeof(*n));
                if (n == NULL) {
                    h->close_one(h->arg, u, j->req.conn_id, 1013, "out of memory: try again");
                    goto done;
                }
                st->wait = n;
                st->wait_cap = ncap;
            }
            st->wait[st->nwait++] = (waiter_t){j->req.conn_id, res.seq};
        }
    }
    if ((st = ustate(u)) != NULL)
        drain_held(r, u);
done:
    frames_free(&res);
    free(j);
}

/* ---- subscriptions ------------------------------------------------------------------ */

static void on_sub_reply(redisAsyncContext *ac, void *reply, void *priv);

static void subscribe_user(rb_t *r, ac__user_t *u, const char *verb)
{
    char chan[KEY_ID_MAX + 64], kid[KEY_ID_MAX];
    size_t n = channel_of(r, kid, key_id(r, u->id, u->id_len, kid), chan, sizeof(chan));
    const char *argv[2] = {verb, chan};
    size_t lens[2] = {strlen(verb), n};
    link_t *l = ustate(u)->lk;

    if (l->sub != NULL && l->sub_ready)
        redisAsyncCommandArgv(l->sub, on_sub_reply, NULL, 2, argv, lens);
}

/* The subscription is on: joins that waited for it go out; after a reconnect, the
 * node's position is checked against what Redis has. */
static void subscribed(rb_t *r, ac__user_t *u)
{
    ustate_t *st = ustate(u);

    st->sub = SUB_ON;
    if (st->synced) {
        /* Back after an outage: the registry may have dropped this node's connections
         * (its heartbeat lapsed); they are older than any made meanwhile, so they go back
         * with the lowest rank (first to be evicted). */
        char key[KEY_ID_MAX + 64], member[40], kid[KEY_ID_MAX];
        const char *argv[5] = {"ZADD", key, "NX", "0", member};
        size_t lens[5] = {4, 0, 2, 1, 0};
        key_id(r, u->id, u->id_len, kid);
        lens[1] = (size_t)snprintf(key, sizeof(key), "%sk:%s", r->prefix, kid);
        for (ac__mconn_t *m = u->head; m != NULL; m = m->next) {
            member_of(r, m->id, member);
            lens[4] = strlen(member);
            command(st->lk, NULL, NULL, 5, argv, lens);
        }
        st->syncing = 0;
        start_sync(r, u);
    }
    for (uint32_t i = 0; i < st->nqueued; i++) {
        if (send_join(r, u, &st->queued[i]) != 0) {
            ac__broker_host_t *h = &r->base.host;
            h->close_one(h->arg, u, st->queued[i].conn_id, 1013, "broker unavailable: try again");
            if ((st = ustate(u)) == NULL)
                return;
        }
    }
    st->nqueued = 0;
}

/* One event of the user's stream from the channel. Returns -1 when the user's state is
 * gone (the rest of a batch is dropped with it). */
static int on_event(rb_t *r, ac__user_t *u, uint32_t ep, uint64_t seq, const char *env, size_t len)
{
    ustate_t *st = ustate(u);
    ac__buf_t *f = event_frame(env, len, seq);

    if (f == NULL) {
        start_sync(r, u);
        return ustate(u) == NULL ? -1 : 0;
    }
    if (st->synced && ep != u->epoch) {
        stream_reset(r, u, "event stream reset (new epoch): resume");
    } else if (st->synced && !st->syncing && seq == u->seq + 1) {
        accept_event(r, u, f);
    } else if (!st->synced || st->syncing || seq > u->seq + 1) {
        if (st->synced && !st->syncing && st->nheld == 0)
            start_sync(r, u);
        if ((st = ustate(u)) != NULL)
            hold(r, u, f);
    }
    ac__buf_unref(f);
    return ustate(u) == NULL ? -1 : 0;
}

/* B EPOCH FIRSTSEQ LEN,LEN,... ENVELOPES: several events of one publish, in seq order. */
static void on_batch(rb_t *r, ac__user_t *u, const char *p, size_t n)
{
    const char *end = p + n, *e = p + 2, *sp1 = memchr(e, ' ', n - 2), *sp2, *sp3, *c, *env;
    uint32_t ep;
    uint64_t seq;

    if (sp1 == NULL || (sp2 = memchr(sp1 + 1, ' ', (size_t)(end - sp1 - 1))) == NULL ||
        (sp3 = memchr(sp2 + 1, ' ', (size_t)(end - sp2 - 1))) == NULL ||
        parse_epoch(e, (size_t)(sp1 - e), &ep) != 0 ||
        ac__parse_u64(sp1 + 1, (size_t)(sp2 - sp1 - 1), &seq) != 0)
        return;
    env = sp3 + 1;
    for (c = sp2 + 1; c < sp3; seq++) {
        const char *comma = memchr(c, ',', (size_t)(sp3 - c));
        const char *stop = comma != NULL ? comma : sp3;
        uint64_t len;
        if (ac__parse_u64(c, (size_t)(stop - c), &len) != 0 || len > (uint64_t)(end - env))
            return;
        if (on_event(r, u, ep, seq, env, (size_t)len) != 0)
            return;
        env += len;
        c = stop + 1;
    }
}

static void on_message(rb_t *r, ac__user_t *u, const char *p, size_t n)
{
    ustate_t *st = ustate(u);
    ac__broker_host_t *h = &r->base.host;

    if (st == NULL || n < 2)
        return;
    if (p[0] == 'E' && p[1] == ' ') {
        /* E EPOCH SEQ ENVELOPE */
        const char *e = p + 2, *sp1 = memchr(e, ' ', n - 2), *sp2;
        uint32_t ep;
        uint64_t seq;
        if (sp1 == NULL || (sp2 = memchr(sp1 + 1, ' ', (size_t)(p + n - sp1 - 1))) == NULL ||
            parse_epoch(e, (size_t)(sp1 - e), &ep) != 0 ||
            ac__parse_u64(sp1 + 1, (size_t)(sp2 - sp1 - 1), &seq) != 0)
            return;
        on_event(r, u, ep, seq, sp2 + 1, (size_t)(p + n - sp2 - 1));
    } else if (p[0] == 'B' && p[1] == ' ') {
        on_batch(r, u, p, n);
    } else if (p[0] == 'D' && p[1] == ' ') {
        /* D CONNID ENVELOPE: a direct message to one connection. */
        const char *sp = memchr(p + 2, ' ', n - 2);
        uint64_t id;
        if (sp == NULL || (size_t)(sp - p - 2) != 16 || parse_hex(p + 2, 16, &id) != 0)
            return;
        ac__buf_t *f = ac__frame_raw(AC_WS_TEXT, sp + 1, (size_t)(p + n - sp - 1));
        if (f != NULL) {
            h->send_one(h->arg, u, id, f, 0);
            ac__buf_unref(f);
        }
    } else if ((p[0] == 'X' || p[0] == 'K') && p[1] == ' ') {
        /* X CONNID@NODE: over the per-user cap somewhere in the cluster; K: an operator's
         * disconnect. */
        const char *at = memchr(p + 2, '@', n - 2);
        uint64_t id;
        char reason[80];
        if (at == NULL || (size_t)(at - p - 2) != 16 || parse_hex(p + 2, 16, &id) != 0 ||
            (size_t)(p + n - at - 1) != strlen(r->node) ||
            memcmp(at + 1, r->node, strlen(r->node)) != 0)
            return;
        if (p[0] == 'K') {
            h->close_one(h->arg, u, id, 4003, "disconnected by an operator");
            return;
        }
        snprintf(reason, sizeof(reason), "evicted: over max-conns-per-user (%u)",
                 r->o.max_per_user);
        h->close_one(h->arg, u, id, 4001, reason);
    }
}

static ac__user_t *user_of_channel(rb_t *r, const redisReply *chan)
{
    size_t plen = strlen(r->prefix);

    const char *id;
    size_t len;

    if (chan == NULL || chan->type != REDIS_REPLY_STRING || chan->len <= plen + 2 ||
        memcmp(chan->str, r->prefix, plen) != 0 || memcmp(chan->str + plen, "c:", 2) != 0)
        return NULL;
    len = chan->len - plen - 2;
    id = user_of_key_id(r, chan->str + plen + 2, &len);
    return ac__manager_find_user(r->manager, id, len);
}

static void on_sub_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    link_t *l = ac->data;
    rb_t *r = l->r;
    redisReply *x = reply;
    ac__user_t *u;
    ustate_t *st;

    if (x == NULL || x->type != REDIS_REPLY_ARRAY || x->elements < 3 ||
        x->element[0]->type != REDIS_REPLY_STRING)
        return;
    u = user_of_channel(r, x->element[1]);
    st = u ? ustate(u) : NULL;
    if (st == NULL)
        return;
    if (strcmp(x->element[0]->str, "message") == 0) {
        if (x->element[2]->type == REDIS_REPLY_STRING)
            on_message(r, u, x->element[2]->str, x->element[2]->len);
    } else if (strcmp(x->element[0]->str, "subscribe") == 0) {
        if (st->sub == SUB_PENDING)
            subscribed(r, u);
    } else if (strcmp(x->element[0]->str, "unsubscribe") == 0) {
        if (st->sub != SUB_LEAVING)
            return;
        l->subscribed--;
        if (st->resub || u->nconns > 0) {
            st->resub = 0;
            st->sub = SUB_PENDING;
            l->subscribed++;
            subscribe_user(r, u, "SUBSCRIBE");
        } else {
            ustate_free(u);
            ac__history_drop(&r->manager->history, u);
        }
    }
}

/* ---- the vtable --------------------------------------------------------------------- */

static int redis_join(ac__broker_t *b, ac__user_t *u, const ac__join_req_t *req)
{
    rb_t *r = (rb_t *)b;
    ustate_t *st = ustate(u);
    link_t *l = st != NULL ? st->lk : link_of(r, u->id, u->id_len);

    if (!l->up)
        return AC_EUNAVAIL;
    if (st == NULL) {
        if ((st = calloc(1, sizeof(*st))) == NULL)
            return AC_ENOMEM;
        st->lk = l;
        u->bs = st;
    }
    if (st->sub == SUB_ON)
        return send_join(r, u, req);
    if (st->nqueued == st->queued_cap) {
        uint32_t ncap = st->queued_cap ? st->queued_cap * 2 : 4;
        ac__join_req_t *n = realloc(st->queued, ncap * sizeof(*n));
        if (n == NULL)
            return AC_ENOMEM;
        st->queued = n;
        st->queued_cap = ncap;
    }
    st->queued[st->nqueued++] = *req;
    if (st->sub == SUB_NONE) {
        st->sub = SUB_PENDING;
        l->subscribed++;
        subscribe_user(r, u, "SUBSCRIBE");
    } else if (st->sub == SUB_LEAVING) {
        st->resub = 1;
    }
    return 0;
}

static void redis_leave(ac__broker_t *b, ac__user_t *u, uint64_t conn_id)
{
    rb_t *r = (rb_t *)b;
    ustate_t *st = ustate(u);
    char key[KEY_ID_MAX + 64], member[40], kid[KEY_ID_MAX];
    int klen;
    const char *argv[3] = {"ZREM", key, member};
    size_t lens[3];

    if (st != NULL) {
        for (uint32_t i = 0; i < st->nwait; i++) {
            if (st->wait[i].conn_id == conn_id) {
                st->wait[i] = st->wait[--st->nwait];
                break;
            }
        }
        for (uint32_t i = 0; i < st->nqueued; i++) {
            if (st->queued[i].conn_id == conn_id) {
                memmove(&st->queued[i], &st->queued[i + 1],
                        (st->nqueued - i - 1) * sizeof(*st->queued));
                st->nqueued--;
                break;
            }
        }
    }
    key_id(r, u->id, u->id_len, kid);
    klen = snprintf(key, sizeof(key), "%sk:%s", r->prefix, kid);
    member_of(r, conn_id, member);
    lens[0] = 4;
    lens[1] = (size_t)klen;
    lens[2] = strlen(member);
    command(st != NULL ? st->lk : link_of(r, u->id, u->id_len), NULL, NULL, 3, argv, lens);
}

/* ---- publishing ------------------------------------------------------------------- */

/* A publish batch is split by shard into parts, one script call each, all in flight at
 * once; results are put back in the batch's order. A batch whose parts could refuse (run
 * lifecycle, direct messages) and that spans several shards is first checked on every
 * shard ('chk', writing nothing) and only then applied ('pub', which decides again):
 * all or nothing, unless a shard changes its mind or goes down between the two steps;
 * that case answers 503 naming it, and a retry with the same idempotency keys is exact. */
typedef struct batch_s batch_t;

typedef struct part_s {
    batch_t *b;
    link_t *l;
    uint64_t t0;
    size_t n;
    size_t *map;  /* the batch index of each of its events */
    char *pubcmd; /* the formatted 'pub' call, sent after the check */
    int publen;
} part_t;

struct batch_s {
    rb_t *r;
    size_t n;
    ac__pub_done_cb done;
    void *arg;
    unsigned nparts;
    unsigned pending;
    int checking;
    unsigned applied; /* parts that answered OK to 'pub' */
    unsigned lost;    /* parts sent and not answered: they may have applied */
    unsigned status;  /* the first refusal (lowest index), 0: none */
    size_t index;
    char reason[200];
    ac_publish_result_t *res;
    part_t parts[];
};

static void batch_free(batch_t *b)
{
    for (unsigned i = 0; i < b->nparts; i++) {
        free(b->parts[i].map);
        if (b->parts[i].pubcmd != NULL)
            redisFreeCommand(b->parts[i].pubcmd);
    }
    free(b->res);
    free(b);
}

static void refuse(batch_t *b, unsigned status, size_t index, const char *reason)
{
    if (b->status != 0 && index >= b->index)
        return;
    b->status = status;
    b->index = index;
    snprintf(b->reason, sizeof(b->reason), "%s", reason);
}

static void on_part_reply(redisAsyncContext *ac, void *reply, void *priv);

static int part_send(part_t *pt, const char *cmd, int len)
{
    link_t *l = pt->l;

    pt->t0 = uv_hrtime();
    if (l->cmd == NULL || !l->cmd_ready || !l->up ||
        redisAsyncFormattedCommand(l->cmd, on_part_reply, pt, cmd, (size_t)len) != REDIS_OK)
        return -1;
    pt->b->pending++;
    return 0;
}

static void batch_finish(batch_t *b)
{
    if (b->checking && b->status == 0) {
        /* Every shard agrees: apply everywhere. */
        b->checking = 0;
        for (unsigned i = 0; i < b->nparts; i++) {
            part_t *pt = &b->parts[i];
            if (part_send(pt, pt->pubcmd, pt->publen) != 0)
                refuse(b, 503, pt->map[0], "broker unavailable");
        }
        if (b->pending > 0)
            return;
    }
    if (b->status == 0) {
        b->done(b->arg, 200, 0, NULL, b->res, b->n);
    } else if (b->applied == 0 && b->lost == 0) {
        /* Nothing was written anywhere. */
        b->done(b->arg, b->status, b->index, b->reason, NULL, 0);
    } else if (b->nparts == 1) {
        b->done(b->arg, 503, 0,
                "broker connection lost before it answered: the events may have been "
                "published; retry with the same idempotency_key",
                NULL, 0);
    } else {
        char why[320];
        snprintf(why, sizeof(why),
                 "batch applied on %u of %u shards (event %zu: %s): retry it with the same "
                 "idempotency_keys",
                 b->applied, b->nparts, b->index, b->reason);
        b->done(b->arg, 503, b->index, why, NULL, 0);
    }
    batch_free(b);
}

static void on_part_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    part_t *pt = priv;
    batch_t *b = pt->b;
    redisReply *x = reply;

    b->pending--;
    if (x == NULL) {
        /* Sent, not answered: Redis may still have run it (what it had read it executes). */
        if (!b->checking)
            b->lost++;
        refuse(b, 503, pt->map[0], "broker connection lost before it answered");
    } else if (x->type == REDIS_REPLY_ARRAY && x->elements == 4 &&
               x->element[0]->type == REDIS_REPLY_STRING && strcmp(x->element[0]->str, "E") == 0 &&
               x->element[2]->type == REDIS_REPLY_STRING) {
        size_t i = (size_t)reply_u64(x->element[1]);
        observe_rtt(b->r, pt->t0);
        refuse(b, (unsigned)reply_u64(x->element[3]), i < pt->n ? pt->map[i] : pt->map[0],
               x->element[2]->str);
    } else if (x->type == REDIS_REPLY_ARRAY && x->elements == 1 && b->checking) {
        observe_rtt(b->r, pt->t0);
    } else if (x->type == REDIS_REPLY_ARRAY && x->elements == 1 + 3 * pt->n && !b->checking) {
        observe_rtt(b->r, pt->t0);
        b->applied++;
        for (size_t i = 0; i < pt->n; i++) {
            ac_publish_result_t *res = &b->res[pt->map[i]];
            res->seq = reply_u64(x->element[1 + 3 * i]);
            res->delivered = (unsigned)reply_u64(x->element[2 + 3 * i]);
            res->duplicate = reply_u64(x->element[3 + 3 * i]) == 1;
        }
    } else {
        ac__log(AC_LOG_ERROR, "event=redis_error op=publish shard=%s:%d error=\"%s\"",
                pt->l->addr.host, pt->l->addr.port,
                x->type == REDIS_REPLY_ERROR ? x->str : "unexpected reply");
        refuse(b, 503, pt->map[0], "broker error");
    }
    if (b->pending == 0)
        batch_finish(b);
}

#define PUB_FIXED (SCRIPT_HEAD + 7)
#define PUB_FIELDS 4

static const char *op_name(ac__ev_type_t t)
{
    switch (t) {
    case AC__EV_AGENT_STARTED:
        return "started";
    case AC__EV_TOOL_EXECUTING:
        return "tool_executing";
    case AC__EV_TOOL_COMPLETED:
        return "tool_completed";
    case AC__EV_AGENT_COMPLETED:
        return "completed";
    case AC__EV_AGENT_ERROR:
        return "error";
    default:
        return "other";
    }
}

/* The bytes one event's `extra` argument may need (see item_args). */
static size_t extra_cap(const ac__pub_item_t *it)
{
    return it->op.run_id.len + it->op.thread_id.len + it->op.tool_call_id.len + it->idem_key.len +
           16 + 16 + 1 + 7 * 22 + KEY_ID_MAX;
}

static char *put_field(char *w, const char *p, size_t len)
{
    w += sprintf(w, "%zu:", len);
    if (len > 0)
        memcpy(w, p, len);
    return w + len;
}

/* One event as its 4 script arguments: user, envelope head, envelope tail, extra. `extra`
 * is empty for a plain event (no run, idempotency key, direct connection or timeout), else
 * 7 "LEN:VALUE" fields (redis.lua); it is written at `buf` (extra_cap bytes, whose last
 * KEY_ID_MAX hold the user's key id in a Redis Cluster). */
static void item_args(const rb_t *r, const ac__pub_item_t *it, const char **a, size_t *l, char *buf)
{
    a[0] = it->op.user_id.p ? it->op.user_id.p : "";
    l[0] = it->op.user_id.p ? it->op.user_id.len : 0;
    if (r->slots != NULL) {
        /* the user's key id, at the end of buf */
        char *kid = buf + extra_cap(it) - KEY_ID_MAX;
        l[0] = key_id(r, a[0], l[0], kid);
        a[0] = kid;
    }
    a[1] = it->head.p ? it->head.p : "";
    l[1] = it->head.p ? it->head.len : 0;
    a[2] = it->tail.p ? it->tail.p : "";
    l[2] = it->tail.p ? it->tail.len : 0;
    a[3] = buf;
    l[3] = 0;
    if (it->op.run_id.p != NULL || it->idem_key.p != NULL || it->conn_id != 0 || it->timeout) {
        const char *opn = it->op.run_id.p ? op_name(it->op.type) : "other";
        const ac__str_t *strs[4] = {&it->op.run_id, &it->op.thread_id, &it->op.tool_call_id,
                                    &it->idem_key};
        char id[17] = "";
        char *w = put_field(buf, opn, strlen(opn));
        for (int k = 0; k < 4; k++)
            w = put_field(w, strs[k]->p, strs[k]->p ? strs[k]->len : 0);
        if (it->conn_id != 0)
            snprintf(id, sizeof(id), "%016llx", (unsigned long long)it->conn_id);
        w = put_field(w, id, strlen(id));
        w = put_field(w, it->timeout ? "1" : "0", 1);
        l[3] = (size_t)(w - buf);
    }
}

/* Formats the part's script call ('pub' or 'chk') into *out; returns its length or -1. */
static int part_format(part_t *pt, const ac__pub_item_t *items, const char *op, char **out)
{
    rb_t *r = pt->b->r;
    size_t argc = PUB_FIXED + PUB_FIELDS * pt->n, cap = 0;
    const char **argv = malloc(argc * sizeof(*argv));
    size_t *lens = malloc(argc * sizeof(*lens));
    char *extras = NULL, *w;
    char hs[16], ttl[24], iw[24], ep[9], rttl[24], cnt[24], sttl[24];
    int len = -1;

    for (size_t i = 0; i < pt->n; i++)
        cap += extra_cap(&items[pt->map[i]]);
    if (argv == NULL || lens == NULL || (extras = malloc(cap)) == NULL)
        goto done;
    snprintf(hs, sizeof(hs), "%u", r->o.history_size);
    snprintf(ttl, sizeof(ttl), "%llu", (unsigned long long)r->o.history_ttl_ms);
    snprintf(iw, sizeof(iw), "%llu", (unsigned long long)r->o.idem_ms);
    new_epoch(r, ep);
    snprintf(rttl, sizeof(rttl), "%llu",
             (unsigned long long)(r->o.run_timeout_ms * 2 + r->o.history_ttl_ms));
    snprintf(cnt, sizeof(cnt), "%zu", pt->n);
    snprintf(sttl, sizeof(sttl), "%llu",
             (unsigned long long)(r->o.seq_ttl_ms > r->o.history_ttl_ms ? r->o.seq_ttl_ms
                                                                        : r->o.history_ttl_ms));
    script_head(pt->l, op, argv, lens);
    argv[SCRIPT_HEAD] = hs;
    argv[SCRIPT_HEAD + 1] = ttl;
    argv[SCRIPT_HEAD + 2] = iw;
    argv[SCRIPT_HEAD + 3] = ep;
    argv[SCRIPT_HEAD + 4] = rttl;
    argv[SCRIPT_HEAD + 5] = cnt;
    argv[SCRIPT_HEAD + 6] = sttl;
    for (size_t i = SCRIPT_HEAD; i < PUB_FIXED; i++)
        lens[i] = strlen(argv[i]);
    w = extras;
    for (size_t i = 0; i < pt->n; i++) {
        const ac__pub_item_t *it = &items[pt->map[i]];
        size_t k = PUB_FIXED + PUB_FIELDS * i;
        item_args(r, it, argv + k, lens + k, w);
        w += extra_cap(it);
    }
    len = redisFormatCommandArgv(out, (int)argc, argv, lens);
done:
    free(argv);
    free(lens);
    free(extras);
    return len;
}

static int redis_publish_batch(ac__broker_t *base, const ac__pub_item_t *items, size_t n,
                               ac__pub_done_cb done, void *arg)
{
    rb_t *r = (rb_t *)base;
    unsigned *shard = malloc(n * sizeof(*shard));
    unsigned *part_of = calloc(r->nlinks, sizeof(*part_of)); /* shard -> part + 1 */
    unsigned nparts = 0;
    int refusable = 0, rc = AC_ENOMEM;
    batch_t *b = NULL;

    if (r->closing)
        rc = AC_EUNAVAIL;
    if (shard == NULL || part_of == NULL || r->closing)
        goto done;
    for (size_t i = 0; i < n; i++) {
        const ac__str_t *u = &items[i].op.user_id;
        link_t *l = link_of(r, u->p, u->len);
        shard[i] = l->idx;
        if (!l->up) {
            rc = AC_EUNAVAIL;
            goto done;
        }
        if (part_of[l->idx] == 0)
            part_of[l->idx] = ++nparts;
        refusable |= items[i].op.run_id.p != NULL || items[i].conn_id != 0;
    }
    b = calloc(1, sizeof(*b) + nparts * sizeof(b->parts[0]));
    if (b == NULL || (b->res = calloc(n ? n : 1, sizeof(*b->res))) == NULL)
        goto done;
    b->r = r;
    b->n = n;
    b->done = done;
    b->arg = arg;
    b->nparts = nparts;
    b->checking = nparts > 1 && refusable;
    for (unsigned s = 0; s < r->nlinks; s++) {
        if (part_of[s] != 0) {
            b->parts[part_of[s] - 1].l = &r->links[s];
            b->parts[part_of[s] - 1].b = b;
        }
    }
    for (size_t i = 0; i < n; i++)
        b->parts[part_of[shard[i]] - 1].n++;
    for (unsigned k = 0; k < nparts; k++) {
        part_t *pt = &b->parts[k];
        if ((pt->map = malloc(pt->n * sizeof(*pt->map))) == NULL)
            goto done;
        pt->n = 0;
    }
    for (size_t i = 0; i < n; i++) {
        part_t *pt = &b->parts[part_of[shard[i]] - 1];
        pt->map[pt->n++] = i;
    }
    /* Format everything first: nothing is sent unless every part could be. */
    for (unsigned k = 0; k < nparts; k++) {
        part_t *pt = &b->parts[k];
        if ((pt->publen = part_format(pt, items, "pub", &pt->pubcmd)) < 0) {
            pt->pubcmd = NULL;
            goto done;
        }
    }
    rc = AC_EUNAVAIL;
    for (unsigned k = 0; k < nparts; k++) {
        part_t *pt = &b->parts[k];
        char *chk = NULL;
        int len = 0, sent;
        if (b->checking && (len = part_format(pt, items, "chk", &chk)) < 0) {
            refuse(b, 503, pt->map[0], "out of memory");
            continue;
        }
        sent = b->checking ? part_send(pt, chk, len) : part_send(pt, pt->pubcmd, pt->publen);
        if (chk != NULL)
            redisFreeCommand(chk);
        if (sent != 0)
            refuse(b, 503, pt->map[0], "broker unavailable");
    }
    if (b->pending == 0 && b->status != 0)
        goto done; /* nothing went out: the caller answers */
    if (b->pending == 0)
        batch_finish(b);
    b = NULL;
    rc = 0;
done:
    if (b != NULL)
        batch_free(b);
    free(shard);
    free(part_of);
    return rc;
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
    user = f[0] ? user_of_key_id(c->r, f[0], &ulen) : "";
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
        observe_rtt(c->r, c->t0);
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
        if (script(&r->links[i], on_run_reply, c, "run", 1, (const char *const[]){c->id}) == 0)
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
        observe_rtt(k->r, k->t0);
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
    link_t *l = link_of(r, user, ulen);
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
    key_id(r, user, ulen, who);
    rc = script(l, on_kick_reply, k, "kick", 2, (const char *const[]){who, id});
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
    l->open_runs = reply_u64(x->element[0]);
    for (size_t i = 1; i + 2 < x->elements; i += 3) {
        if (x->element[i]->type != REDIS_REPLY_STRING)
            continue;
        size_t ulen = x->element[i + 1]->len;
        const char *user = user_of_key_id(r, x->element[i + 1]->str, &ulen);
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
    link_t *l = ustate(u)->lk;

    key_id(r, u->id, u->id_len, kid);
    lens[0] = 7;
    lens[2] = (size_t)snprintf(ttl, sizeof(ttl), "%llu", (unsigned long long)r->o.seq_ttl_ms);
    lens[1] = (size_t)snprintf(key, sizeof(key), "%su:%s", r->prefix, kid);
    command(l, NULL, NULL, 3, argv, lens);
    lens[2] = (size_t)snprintf(ttl, sizeof(ttl), "%llu", (unsigned long long)r->o.history_ttl_ms);
    lens[1] = (size_t)snprintf(key, sizeof(key), "%sh:%s", r->prefix, kid);
    command(l, NULL, NULL, 3, argv, lens);
}

static void redis_sweep(ac__broker_t *b)
{
    rb_t *r = (rb_t *)b;
    ac__manager_t *m = r->manager;
    char tmo[24];

    for (size_t i = 0; i < m->nbuckets; i++) {
        for (ac__user_t *u = m->buckets[i]; u != NULL; u = u->hnext) {
            ustate_t *st = ustate(u);
            if (st == NULL)
                continue;
            if (u->nconns > 0) {
                refresh_user(r, u);
            } else if (st->sub == SUB_ON && st->joins == 0 && st->lk->sub_ready) {
                /* Its place in the stream is no longer kept: a later join starts afresh. */
                st->sub = SUB_LEAVING;
                st->synced = 0;
                st->nwait = 0;
                held_clear(st);
                ac__history_drop(&r->manager->history, u);
                subscribe_user(r, u, "UNSUBSCRIBE");
            } else if (st->sub == SUB_NONE || !st->lk->sub_ready) {
                if (st->sub != SUB_NONE)
                    st->lk->subscribed--;
                ustate_free(u);
                ac__history_drop(&r->manager->history, u);
            }
        }
    }
    if (r->o.run_timeout_ms > 0) {
        snprintf(tmo, sizeof(tmo), "%llu", (unsigned long long)r->o.run_timeout_ms);
        for (unsigned i = 0; i < r->nlinks; i++)
            script(&r->links[i], on_claim_reply, NULL, "claim", 1, (const char *const[]){tmo});
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
            ustate_t *st = ustate(u);
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
    command(l, NULL, NULL, 5, hb, NULL);
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
            ustate_t *st = ustate(u);
            if (st == NULL || st->lk != l || st->sub != SUB_NONE)
                continue;
            st->sub = SUB_PENDING;
            l->subscribed++;
            subscribe_user(r, u, "SUBSCRIBE");
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
    observe_rtt(l->r, t0);
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
        command(l, on_pong, (void *)(uintptr_t)uv_hrtime(), 1, ping, NULL);
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
        command(&r->links[i], NULL, NULL, 2, del, NULL);
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
            ustate_free(u);
    }
    free(r->links);
    free(r->slots);
    free(r->prefix);
    free(r->password);
    free(r);
}

static const ac__broker_vtable_t redis_vtable = {.name = "redis",
                                                 .publish = redis_publish_one,
                                                 .join = redis_join,
                                                 .leave = redis_leave,
                                                 .publish_batch = redis_publish_batch,
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
