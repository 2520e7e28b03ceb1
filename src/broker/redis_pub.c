/* The redis broker's publishing: a body is split by shard (or Redis Cluster master) into
 * parts, one script call each, all in flight at once, the results put back in the body's
 * order; checked on every shard first when a refusal is possible on several. The rest of
 * the broker is in redis.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "agentcast.h"
#include "broker/redis_int.h"
#include "core/event.h"
#include "core/log.h"

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
    size_t *runs; /* plain path: how many events each user has (in map order), else NULL */
    size_t nruns;
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
        free(b->parts[i].runs);
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
        size_t i = (size_t)ac__rb_reply_u64(x->element[1]);
        ac__rb_observe_rtt(b->r, pt->t0);
        refuse(b, (unsigned)ac__rb_reply_u64(x->element[3]), i < pt->n ? pt->map[i] : pt->map[0],
               x->element[2]->str);
    } else if (x->type == REDIS_REPLY_ARRAY && x->elements == 1 && b->checking) {
        ac__rb_observe_rtt(b->r, pt->t0);
    } else if (x->type == REDIS_REPLY_ARRAY && pt->runs != NULL && !b->checking &&
               x->elements == 1 + 2 * pt->nruns) {
        /* the plain path: per user its newest seq and delivered */
        size_t i = 0;
        ac__rb_observe_rtt(b->r, pt->t0);
        b->applied++;
        for (size_t k = 0; k < pt->nruns; k++) {
            uint64_t last = ac__rb_reply_u64(x->element[1 + 2 * k]);
            unsigned delivered = (unsigned)ac__rb_reply_u64(x->element[2 + 2 * k]);
            for (size_t j = 0; j < pt->runs[k]; j++, i++) {
                ac_publish_result_t *res = &b->res[pt->map[i]];
                res->seq = last - (pt->runs[k] - 1 - j);
                res->delivered = delivered;
                res->duplicate = 0;
            }
        }
    } else if (x->type == REDIS_REPLY_ARRAY && x->elements == 1 + 3 * pt->n && !b->checking &&
               pt->runs == NULL) {
        ac__rb_observe_rtt(b->r, pt->t0);
        b->applied++;
        for (size_t i = 0; i < pt->n; i++) {
            ac_publish_result_t *res = &b->res[pt->map[i]];
            res->seq = ac__rb_reply_u64(x->element[1 + 3 * i]);
            res->delivered = (unsigned)ac__rb_reply_u64(x->element[2 + 3 * i]);
            res->duplicate = ac__rb_reply_u64(x->element[3 + 3 * i]) == 1;
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

#define PUB_FIXED (SCRIPT_HEAD + 8)
#define PUB_FIELDS 4
#define PLAIN_FIELDS 2

/* An event the script cannot refuse and that writes nothing but its user's stream: no run,
 * idempotency key, direct connection or timeout. */
static int item_plain(const ac__pub_item_t *it)
{
    return it->op.run_id.p == NULL && it->idem_key.p == NULL && it->conn_id == 0 && !it->timeout;
}

static _Thread_local const ac__pub_item_t *tl_sort_items;

static int same_user(const ac__pub_item_t *a, const ac__pub_item_t *b)
{
    size_t al = a->op.user_id.p ? a->op.user_id.len : 0,
           bl = b->op.user_id.p ? b->op.user_id.len : 0;
    return al == bl && (al == 0 || memcmp(a->op.user_id.p, b->op.user_id.p, al) == 0);
}

/* Orders batch indexes by user id, then by index: each user's events together, in order. */
static int by_user(const void *a, const void *b)
{
    size_t i = *(const size_t *)a, j = *(const size_t *)b;
    const ac__str_t *u = &tl_sort_items[i].op.user_id, *v = &tl_sort_items[j].op.user_id;
    size_t ul = u->p ? u->len : 0, vl = v->p ? v->len : 0;
    int c = memcmp(u->p ? u->p : "", v->p ? v->p : "", ul < vl ? ul : vl);

    if (c == 0 && ul != vl)
        c = ul < vl ? -1 : 1;
    if (c == 0)
        c = i < j ? -1 : i > j;
    return c;
}

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
        l[0] = ac__rb_key_id(r, a[0], l[0], kid);
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

/* The bytes event i takes in part_format's buffer: its `extra` (see item_args) and, for
 * the plain path, its envelope with a NUL where the seq goes. */
static size_t arg_cap(const ac__pub_item_t *it, int plain)
{
    return extra_cap(it) +
           (plain ? (it->head.p ? it->head.len : 0) + 1 + (it->tail.p ? it->tail.len : 0) : 0);
}

/* Formats the part's script call ('pub' or 'chk') into *out; returns its length or -1. A
 * part of plain events only goes as 2 fields per event (user, envelope with a NUL where
 * the seq goes), each user's events together (pt->map reordered: the reply follows it):
 * redis.lua's plain path. */
static int part_format(part_t *pt, const ac__pub_item_t *items, const char *op, char **out)
{
    rb_t *r = pt->b->r;
    int plain = 1;
    size_t fields, argc, cap = 0;
    const char **argv = NULL;
    size_t *lens = NULL;
    char *extras = NULL, *w;
    char hs[16], ttl[24], iw[24], ep[9], rttl[24], cnt[24], sttl[24];
    int len = -1;

    for (size_t i = 0; i < pt->n && plain; i++)
        plain = item_plain(&items[pt->map[i]]);
    if (plain && pt->runs == NULL) {
        /* each user's events together, in order; the length of each user's run */
        if (pt->n > 1) {
            tl_sort_items = items;
            qsort(pt->map, pt->n, sizeof(*pt->map), by_user);
            tl_sort_items = NULL;
        }
        if ((pt->runs = malloc(pt->n * sizeof(*pt->runs))) == NULL)
            return -1;
        pt->nruns = 0;
        for (size_t i = 0; i < pt->n; i++) {
            if (i == 0 || !same_user(&items[pt->map[i - 1]], &items[pt->map[i]]))
                pt->runs[pt->nruns++] = 0;
            pt->runs[pt->nruns - 1]++;
        }
    }
    fields = plain ? PLAIN_FIELDS : PUB_FIELDS;
    argc = PUB_FIXED + fields * pt->n;
    argv = malloc(argc * sizeof(*argv));
    lens = malloc(argc * sizeof(*lens));
    for (size_t i = 0; i < pt->n; i++)
        cap += arg_cap(&items[pt->map[i]], plain);
    if (argv == NULL || lens == NULL || (extras = malloc(cap)) == NULL)
        goto done;
    snprintf(hs, sizeof(hs), "%u", r->o.history_size);
    snprintf(ttl, sizeof(ttl), "%llu", (unsigned long long)r->o.history_ttl_ms);
    snprintf(iw, sizeof(iw), "%llu", (unsigned long long)r->o.idem_ms);
    ac__rb_new_epoch(r, ep);
    snprintf(rttl, sizeof(rttl), "%llu",
             (unsigned long long)(r->o.run_timeout_ms * 2 + r->o.history_ttl_ms));
    snprintf(cnt, sizeof(cnt), "%zu", pt->n);
    snprintf(sttl, sizeof(sttl), "%llu",
             (unsigned long long)(r->o.seq_ttl_ms > r->o.history_ttl_ms ? r->o.seq_ttl_ms
                                                                        : r->o.history_ttl_ms));
    ac__rb_script_head(pt->l, op, argv, lens);
    argv[SCRIPT_HEAD] = hs;
    argv[SCRIPT_HEAD + 1] = ttl;
    argv[SCRIPT_HEAD + 2] = iw;
    argv[SCRIPT_HEAD + 3] = ep;
    argv[SCRIPT_HEAD + 4] = rttl;
    argv[SCRIPT_HEAD + 5] = cnt;
    argv[SCRIPT_HEAD + 6] = sttl;
    argv[SCRIPT_HEAD + 7] = plain ? "p" : "x";
    for (size_t i = SCRIPT_HEAD; i < PUB_FIXED; i++)
        lens[i] = strlen(argv[i]);
    w = extras;
    for (size_t i = 0; i < pt->n; i++) {
        const ac__pub_item_t *it = &items[pt->map[i]];
        size_t k = PUB_FIXED + fields * i;
        const char *a[PUB_FIELDS];
        size_t l[PUB_FIELDS];
        item_args(r, it, a, l, w);
        if (plain) {
            /* head NUL tail, after the extra's bytes */
            char *env = w + extra_cap(it);
            memcpy(env, a[1], l[1]);
            env[l[1]] = '\0';
            memcpy(env + l[1] + 1, a[2], l[2]);
            l[1] += 1 + l[2];
            a[1] = env;
        }
        memcpy(argv + k, a, fields * sizeof(*a));
        memcpy(lens + k, l, fields * sizeof(*l));
        w += arg_cap(it, plain);
    }
    len = redisFormatCommandArgv(out, (int)argc, argv, lens);
done:
    free(argv);
    free(lens);
    free(extras);
    return len;
}

int ac__rb_publish_batch(ac__broker_t *base, const ac__pub_item_t *items, size_t n,
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
        link_t *l = ac__rb_link_of(r, u->p, u->len);
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
