/* The redis broker's per-user streams on this node and their channel subscriptions, and
 * the vtable's join and leave. Links, runs and upkeep are in redis.c.
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

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "agentcast.h"
#include "broker/redis_int.h"
#include "core/event.h"
#include "core/log.h"
#include "core/manager.h"
#include "net/ws.h" /* the codec's opcodes only */

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
/* The user's channel name into buf; returns its length. */
static size_t channel_of(const rb_t *r, const char *user, size_t ulen, char *buf, size_t cap)
{
    int n = snprintf(buf, cap, "%sc:%.*s", r->prefix, (int)ulen, user);
    return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
}
/* ---- per-user stream position ------------------------------------------------------- */

void ac__rb_held_clear(ustate_t *st)
{
    for (uint32_t i = 0; i < st->nheld; i++)
        ac__buf_unref(st->held[i]);
    st->nheld = 0;
}

void ac__rb_ustate_free(ac__user_t *u)
{
    ustate_t *st = u->bs;
    if (st == NULL)
        return;
    ac__rb_held_clear(st);
    free(st->held);
    free(st->wait);
    free(st->queued);
    free(st);
    u->bs = NULL;
}

static void start_sync(rb_t *r, ac__user_t *u);

static void hold(rb_t *r, ac__user_t *u, ac__buf_t *frame)
{
    ustate_t *st = ac__rb_ustate(u);

    if (st->nheld == HELD_MAX) {
        /* Too far behind to hold: let history fill it all. */
        ac__rb_held_clear(st);
        start_sync(r, u);
        return;
    }
    if (st->nheld == st->held_cap) {
        uint32_t ncap = st->held_cap ? st->held_cap * 2 : 16;
        ac__buf_t **n = realloc(st->held, ncap * sizeof(*n));
        if (n == NULL) {
            ac__rb_held_clear(st);
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
    ustate_t *st = ac__rb_ustate(u);
    uint32_t i = 0;

    while (st != NULL && i < st->nwait) {
        if (st->wait[i].snap <= u->seq) {
            waiter_t w = st->wait[i];
            st->wait[i] = st->wait[--st->nwait];
            catch_up(r, u, w.conn_id, w.snap);
            st = ac__rb_ustate(u);
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
    if (ac__rb_ustate(u) != NULL && ac__rb_ustate(u)->nwait > 0)
        check_waiters(r, u);
}

/* Delivers held events that continue the stream; a remaining gap starts a sync. */
static void drain_held(rb_t *r, ac__user_t *u)
{
    ustate_t *st = ac__rb_ustate(u);
    uint32_t i;

    for (i = 0; i < st->nheld; i++) {
        ac__buf_t *f = st->held[i];
        if (f->seq <= u->seq)
            continue;
        if (f->seq != u->seq + 1)
            break;
        accept_event(r, u, f);
        if ((st = ac__rb_ustate(u)) == NULL)
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
        ac__rb_held_clear(st);
    }
}

/* The user's stream was recreated (Redis came back empty, or the stream expired): its
 * connections cannot continue their seqs; they are asked to resume, and get `resync`. */
static void stream_reset(rb_t *r, ac__user_t *u, const char *why)
{
    ac__broker_host_t *h = &r->base.host;
    ac__mconn_t *m = u->head;
    ustate_t *st = ac__rb_ustate(u);

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
        ac__rb_held_clear(st);
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
        ac__rb_member_of(r, req->conn_id, member);
    snprintf(cap, sizeof(cap), "%u", r->o.max_per_user);
    ac__rb_new_epoch(r, ep);
    snprintf(ttl, sizeof(ttl), "%llu", (unsigned long long)r->o.seq_ttl_ms);
    if (req->has_after)
        snprintf(after, sizeof(after), "%llu", (unsigned long long)req->after);
    {
        const char *args[7] = {kid, member, cap, ep, ttl, after, req->epoch};
        ac__rb_key_id(r, u->id, u->id_len, kid);
        rc = ac__rb_script(ac__rb_ustate(u)->lk, on_join_reply, j, "join", 7, args);
    }
    if (rc != 0) {
        free(j);
        return AC_EUNAVAIL;
    }
    if (req->conn_id != 0)
        ac__rb_ustate(u)->joins++;
    return 0;
}

static void start_sync(rb_t *r, ac__user_t *u)
{
    ustate_t *st = ac__rb_ustate(u);
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

/* An event's frame from its envelope as Redis has it: whole, or (published by the plain
 * path of redis.lua) with a NUL byte where the seq goes, which JSON never has raw. */
static ac__buf_t *event_frame(const char *env, size_t len, uint64_t seq)
{
    const char *z = memchr(env, '\0', len);
    ac__buf_t *b;

    if (z == NULL) {
        b = ac__frame_raw(AC_WS_TEXT, env, len);
    } else {
        char small[2048], *w = len + 20 <= sizeof(small) ? small : malloc(len + 20);
        size_t head = (size_t)(z - env), n;
        if (w == NULL)
            return NULL;
        memcpy(w, env, head);
        n = head + (size_t)snprintf(w + head, 21, "%llu", (unsigned long long)seq);
        memcpy(w + n, z + 1, len - head - 1);
        b = ac__frame_raw(AC_WS_TEXT, w, n + len - head - 1);
        if (w != small)
            free(w);
    }
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
    ustate_t *st = u ? ac__rb_ustate(u) : NULL;
    ac__join_res_t res;
    uint32_t ep = 0;
    int ok;

    if (x != NULL)
        ac__rb_observe_rtt(r, j->t0);
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
        res.seq = ac__rb_reply_u64(x->element[1]);
        res.oldest = ac__rb_reply_u64(x->element[2]);
        res.recovered = ac__rb_reply_u64(x->element[3]) == 1;
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
                if ((st = ac__rb_ustate(u)) == NULL)
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
    if (h->greet(h->arg, u, j->req.conn_id, &res) == 0 && (st = ac__rb_ustate(u)) != NULL) {
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
    if ((st = ac__rb_ustate(u)) != NULL)
        drain_held(r, u);
done:
    frames_free(&res);
    free(j);
}

/* ---- subscriptions ------------------------------------------------------------------ */

static void on_sub_reply(redisAsyncContext *ac, void *reply, void *priv);

void ac__rb_subscribe_user(rb_t *r, ac__user_t *u, const char *verb)
{
    char chan[KEY_ID_MAX + 64], kid[KEY_ID_MAX];
    size_t n = channel_of(r, kid, ac__rb_key_id(r, u->id, u->id_len, kid), chan, sizeof(chan));
    const char *argv[2] = {verb, chan};
    size_t lens[2] = {strlen(verb), n};
    link_t *l = ac__rb_ustate(u)->lk;

    if (l->sub != NULL && l->sub_ready)
        redisAsyncCommandArgv(l->sub, on_sub_reply, NULL, 2, argv, lens);
}

/* The subscription is on: joins that waited for it go out; after a reconnect, the
 * node's position is checked against what Redis has. */
static void subscribed(rb_t *r, ac__user_t *u)
{
    ustate_t *st = ac__rb_ustate(u);

    st->sub = SUB_ON;
    if (st->synced) {
        /* Back after an outage: the registry may have dropped this node's connections
         * (its heartbeat lapsed); they are older than any made meanwhile, so they go back
         * with the lowest rank (first to be evicted). */
        char member[40], kid[KEY_ID_MAX];
        const char *args[2] = {kid, member};
        ac__rb_key_id(r, u->id, u->id_len, kid);
        for (ac__mconn_t *m = u->head; m != NULL; m = m->next) {
            ac__rb_member_of(r, m->id, member);
            ac__rb_script(st->lk, NULL, NULL, "rejoin", 2, args);
        }
        st->syncing = 0;
        start_sync(r, u);
    }
    for (uint32_t i = 0; i < st->nqueued; i++) {
        if (send_join(r, u, &st->queued[i]) != 0) {
            ac__broker_host_t *h = &r->base.host;
            h->close_one(h->arg, u, st->queued[i].conn_id, 1013, "broker unavailable: try again");
            if ((st = ac__rb_ustate(u)) == NULL)
                return;
        }
    }
    st->nqueued = 0;
}

/* One event of the user's stream from the channel. Returns -1 when the user's state is
 * gone (the rest of a batch is dropped with it). */
static int on_event(rb_t *r, ac__user_t *u, uint32_t ep, uint64_t seq, const char *env, size_t len)
{
    ustate_t *st = ac__rb_ustate(u);
    ac__buf_t *f = event_frame(env, len, seq);

    if (f == NULL) {
        start_sync(r, u);
        return ac__rb_ustate(u) == NULL ? -1 : 0;
    }
    if (st->synced && ep != u->epoch) {
        stream_reset(r, u, "event stream reset (new epoch): resume");
    } else if (st->synced && !st->syncing && seq == u->seq + 1) {
        accept_event(r, u, f);
    } else if (!st->synced || st->syncing || seq > u->seq + 1) {
        if (st->synced && !st->syncing && st->nheld == 0)
            start_sync(r, u);
        if ((st = ac__rb_ustate(u)) != NULL)
            hold(r, u, f);
    }
    ac__buf_unref(f);
    return ac__rb_ustate(u) == NULL ? -1 : 0;
}

/* B EPOCH FIRSTSEQ LEN,LEN,... ENVELOPES: several events of one publish, in seq order;
 * "b FIRSTSEQ LEN,..." leaves out the epoch: the stream's current one. */
static void on_batch(rb_t *r, ac__user_t *u, const char *p, size_t n)
{
    const char *end = p + n, *e = p + 2, *sp1, *sp2, *sp3, *c, *env;
    uint32_t ep = u->epoch;
    uint64_t seq;

    if (p[0] == 'b') {
        sp1 = p + 1; /* the space before FIRSTSEQ */
    } else if ((sp1 = memchr(e, ' ', n - 2)) == NULL ||
               parse_epoch(e, (size_t)(sp1 - e), &ep) != 0) {
        return;
    }
    if ((sp2 = memchr(sp1 + 1, ' ', (size_t)(end - sp1 - 1))) == NULL ||
        (sp3 = memchr(sp2 + 1, ' ', (size_t)(end - sp2 - 1))) == NULL ||
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
    ustate_t *st = ac__rb_ustate(u);
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
    } else if (p[0] == 'e' && p[1] == ' ') {
        /* e SEQ ENVELOPE: the epoch left out (the stream's current one) */
        const char *sp = memchr(p + 2, ' ', n - 2);
        uint64_t seq;
        if (sp == NULL || ac__parse_u64(p + 2, (size_t)(sp - p - 2), &seq) != 0)
            return;
        on_event(r, u, u->epoch, seq, sp + 1, (size_t)(p + n - sp - 1));
    } else if ((p[0] == 'B' || p[0] == 'b') && p[1] == ' ') {
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
    id = ac__rb_user_of_key_id(r, chan->str + plen + 2, &len);
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
    st = u ? ac__rb_ustate(u) : NULL;
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
            ac__rb_subscribe_user(r, u, "SUBSCRIBE");
        } else {
            ac__rb_ustate_free(u);
            ac__history_drop(&r->manager->history, u);
        }
    }
}

/* ---- the vtable --------------------------------------------------------------------- */

int ac__rb_join(ac__broker_t *b, ac__user_t *u, const ac__join_req_t *req)
{
    rb_t *r = (rb_t *)b;
    ustate_t *st = ac__rb_ustate(u);
    link_t *l = st != NULL ? st->lk : ac__rb_link_of(r, u->id, u->id_len);

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
        ac__rb_subscribe_user(r, u, "SUBSCRIBE");
    } else if (st->sub == SUB_LEAVING) {
        st->resub = 1;
    }
    return 0;
}

void ac__rb_leave(ac__broker_t *b, ac__user_t *u, uint64_t conn_id)
{
    rb_t *r = (rb_t *)b;
    ustate_t *st = ac__rb_ustate(u);
    char member[40], kid[KEY_ID_MAX];
    const char *args[2] = {kid, member};

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
    /* out of the registry (and its counts: redis.lua) */
    ac__rb_key_id(r, u->id, u->id_len, kid);
    ac__rb_member_of(r, conn_id, member);
    ac__rb_script(st != NULL ? st->lk : ac__rb_link_of(r, u->id, u->id_len), NULL, NULL, "leave", 2,
                  args);
}
