/* Several loops in one process (group.h): their threads, parking, ownership, the hand-off
 * queue, and a shutdown that waits for all of them. */
#include <sched.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "net/conn.h"
#include "net/group.h"

enum {
    CTL_PARK = 1 << 0,     /* another shard parks this one */
    CTL_SHUTDOWN = 1 << 1, /* shard 0 began the shutdown */
    CTL_ENDED = 1 << 2     /* (shard 0) a shard's loop ended */
};

#define AC__HANDOFF_QUEUE 65536

static int flush_out(ac__shard_t *sh);

/* FNV-1a: the same user always lands on the same shard of the same build. */
static uint32_t user_hash(const char *p, size_t n)
{
    uint32_t h = 2166136261u;

    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)p[i];
        h *= 16777619u;
    }
    return h;
}

ac_server_t *ac__group_owner(ac_server_t *s, const char *user, size_t len)
{
    ac__group_t *g;

    if (s->shard == NULL || !s->shard->g->route)
        return s;
    g = s->shard->g;
    return g->shards[user_hash(user, len) % g->n].s;
}

/* ---- the run registry ------------------------------------------------------------- */

#define RUNREG_STRIPES 64

typedef struct runreg_node_s {
    struct runreg_node_s *next;
    unsigned shard;
    size_t len;
    char id[];
} runreg_node_t;

typedef struct ac__runreg_s {
    struct {
        uv_mutex_t lock;
        runreg_node_t **buckets;
        size_t nbuckets;
        size_t n;
    } stripe[RUNREG_STRIPES];
} runreg_t;

static runreg_t *runreg_new(void)
{
    runreg_t *r = calloc(1, sizeof(*r));

    if (r == NULL)
        return NULL;
    for (int i = 0; i < RUNREG_STRIPES; i++)
        uv_mutex_init(&r->stripe[i].lock);
    return r;
}

static void runreg_free(runreg_t *r)
{
    if (r == NULL)
        return;
    for (int i = 0; i < RUNREG_STRIPES; i++) {
        for (size_t b = 0; b < r->stripe[i].nbuckets; b++) {
            runreg_node_t *n = r->stripe[i].buckets[b];
            while (n != NULL) {
                runreg_node_t *next = n->next;
                free(n);
                n = next;
            }
        }
        free(r->stripe[i].buckets);
        uv_mutex_destroy(&r->stripe[i].lock);
    }
    free(r);
}

/* Under the stripe's lock: the slot holding id (or where it would go). */
static runreg_node_t **runreg_slot(runreg_t *r, uint32_t h, const char *id, size_t len)
{
    __typeof__(r->stripe[0]) *st = &r->stripe[h % RUNREG_STRIPES];
    runreg_node_t **pp;

    if (st->nbuckets == 0)
        return NULL;
    pp = &st->buckets[(h / RUNREG_STRIPES) & (st->nbuckets - 1)];
    while (*pp != NULL && ((*pp)->len != len || memcmp((*pp)->id, id, len) != 0))
        pp = &(*pp)->next;
    return pp;
}

static void runreg_grow(runreg_t *r, unsigned si)
{
    __typeof__(r->stripe[0]) *st = &r->stripe[si];
    size_t nb = st->nbuckets ? st->nbuckets * 2 : 16;
    runreg_node_t **b = calloc(nb, sizeof(*b));

    if (b == NULL)
        return;
    for (size_t i = 0; i < st->nbuckets; i++) {
        runreg_node_t *n = st->buckets[i];
        while (n != NULL) {
            runreg_node_t *next = n->next;
            uint32_t h = user_hash(n->id, n->len);
            size_t at = (h / RUNREG_STRIPES) & (nb - 1);
            n->next = b[at];
            b[at] = n;
            n = next;
        }
    }
    free(st->buckets);
    st->buckets = b;
    st->nbuckets = nb;
}

/* The bridge's hook (core/bridge.h), on the loop that owns the run. */
static void on_run(void *arg, const char *id, size_t len, int added)
{
    ac__shard_t *sh = arg;
    runreg_t *r = sh->g->runs;
    uint32_t h = user_hash(id, len);
    unsigned si = h % RUNREG_STRIPES;
    runreg_node_t **pp, *n;

    uv_mutex_lock(&r->stripe[si].lock);
    if (added) {
        if (r->stripe[si].n >= r->stripe[si].nbuckets)
            runreg_grow(r, si);
        pp = runreg_slot(r, h, id, len);
        /* A second user opening the same id on another loop at the same moment keeps the
         * first owner here (and its own run there). */
        if (pp != NULL && *pp == NULL && (n = malloc(sizeof(*n) + len)) != NULL) {
            n->next = NULL;
            n->shard = sh->id;
            n->len = len;
            memcpy(n->id, id, len);
            *pp = n;
            r->stripe[si].n++;
        }
    } else {
        pp = runreg_slot(r, h, id, len);
        if (pp != NULL && *pp != NULL && (*pp)->shard == sh->id) {
            n = *pp;
            *pp = n->next;
            free(n);
            r->stripe[si].n--;
        }
    }
    uv_mutex_unlock(&r->stripe[si].lock);
}

int ac__group_run_shard(ac_server_t *s, const char *id, size_t len)
{
    runreg_t *r;
    uint32_t h;
    unsigned si;
    runreg_node_t **pp;
    int shard;

    if (s->shard == NULL || !s->shard->g->route)
        return -1;
    r = s->shard->g->runs;
    h = user_hash(id, len);
    si = h % RUNREG_STRIPES;
    uv_mutex_lock(&r->stripe[si].lock);
    pp = runreg_slot(r, h, id, len);
    shard = pp != NULL && *pp != NULL ? (int)(*pp)->shard : -1;
    uv_mutex_unlock(&r->stripe[si].lock);
    return shard;
}

/* ---- parking ---------------------------------------------------------------------- */

/* Stops here while another shard parks this one (called from this shard's own thread). */
static void serve_park(ac__shard_t *sh)
{
    ac__group_t *g = sh->g;

    for (;;) {
        uint64_t seen;
        uv_mutex_lock(&g->m);
        seen = g->gen;
        if (!g->parking || sh->parked_gen == seen) {
            uv_mutex_unlock(&g->m);
            return;
        }
        uv_mutex_unlock(&g->m);
        /* The parker flushed what it sent here before it began park `seen`
         * (ac__group_park): run that first, or a parked publish could overtake the same
         * publisher's earlier forwarded body or split part (the callers drain too, but the
         * park may begin between their drain and this call). */
        ac__inbox_drain(&sh->inbox);
        uv_mutex_lock(&g->m);
        if (g->parking && g->gen == seen) {
            sh->parked_gen = seen;
            uv_cond_broadcast(&g->cv);
            while (g->parking && g->gen == seen)
                uv_cond_wait(&g->cv, &g->m);
            uv_mutex_unlock(&g->m);
            return;
        }
        uv_mutex_unlock(&g->m); /* that park ended, or a newer one began: look again */
    }
}

static int all_parked(const ac__group_t *g, unsigned self)
{
    for (unsigned k = 0; k < g->n; k++) {
        const ac__shard_t *o = &g->shards[k];
        if (k != self && o->alive && o->parked_gen != g->gen)
            return 0;
    }
    return 1;
}

void ac__group_park(ac_server_t *s)
{
    ac__shard_t *sh = s->shard;
    ac__group_t *g;

    if (sh == NULL)
        return;
    g = sh->g;
    /* What this loop sent before (forwarded publishes) reaches its loops first: a parked
     * loop drains its inbox before it stops (serve_park). */
    while (flush_out(sh)) {
        ac__inbox_drain(&sh->inbox);
        serve_park(sh);
        sched_yield();
    }
    /* Another parker may hold the world: stop for it meanwhile. */
    while (uv_mutex_trylock(&g->world) != 0) {
        /* The caller has not touched its state yet (parks come first): what others sent
         * may run here, before their park does. */
        ac__inbox_drain(&sh->inbox);
        serve_park(sh);
        sched_yield();
    }
    uv_mutex_lock(&g->m);
    g->gen++;
    g->parking = 1;
    for (unsigned k = 0; k < g->n; k++) {
        ac__shard_t *o = &g->shards[k];
        if (k != sh->id && o->alive) {
            atomic_fetch_or(&o->ctl_flags, CTL_PARK);
            uv_async_send(&o->ctl);
        }
    }
    while (!all_parked(g, sh->id))
        uv_cond_wait(&g->cv, &g->m);
    uv_mutex_unlock(&g->m);
}

void ac__group_unpark(ac_server_t *s)
{
    ac__shard_t *sh = s->shard;
    ac__group_t *g;

    if (sh == NULL)
        return;
    g = sh->g;
    uv_mutex_lock(&g->m);
    g->parking = 0;
    uv_cond_broadcast(&g->cv);
    uv_mutex_unlock(&g->m);
    uv_mutex_unlock(&g->world);
}

/* ---- control of a shard's loop ------------------------------------------------------ */

static void maybe_finish(ac__group_t *g);

static void on_shard_down(ac_server_t *s, void *arg)
{
    /* Shards >= 1: their loop ends by itself once every handle is closed. */
}

static void on_ctl(uv_async_t *a)
{
    ac__shard_t *sh = a->data;
    unsigned f = atomic_exchange(&sh->ctl_flags, 0);

    if (f & CTL_PARK) {
        /* At a safe point of the turn: what other loops sent before they parked us is
         * applied first, so a parked publish never overtakes a forwarded one. */
        ac__inbox_drain(&sh->inbox);
        serve_park(sh);
    }
    if ((f & CTL_SHUTDOWN) && sh->s->started && !sh->s->shutting_down)
        ac__server_shutdown_loop(sh->s, on_shard_down, NULL);
    if (f & CTL_ENDED)
        maybe_finish(sh->g);
}

/* ---- batched sends between loops -------------------------------------------------- */

/* Sends every non-empty outbox; 1 when one stays (its destination was full). */
static int flush_out(ac__shard_t *sh)
{
    int left = 0;

    if (sh->out_pending == 0)
        return 0;
    for (unsigned k = 0; k < sh->g->n; k++) {
        ac__outbox_t *o = &sh->out[k];
        if (o->n == 0)
            continue;
        if (ac__outbox_flush(o) == AC_EBUSY)
            left = 1;
        /* AC_ECLOSED: that loop ended; the batch is kept and freed with the group. */
    }
    sh->out_pending = left;
    return left;
}

static void on_retry(uv_idle_t *h)
{
    ac__shard_t *sh = h->data;

    if (!flush_out(sh))
        uv_idle_stop(h);
}

static void on_flush(uv_check_t *h)
{
    ac__shard_t *sh = h->data;

    if (flush_out(sh))
        uv_idle_start(&sh->retry, on_retry);
}

static void on_preflush(uv_prepare_t *h)
{
    ac__shard_t *sh = h->data;

    if (flush_out(sh))
        uv_idle_start(&sh->retry, on_retry);
}

void ac__group_send(ac_server_t *from, ac_server_t *to, ac__msg_t *m)
{
    ac__shard_t *sh = from->shard;

    ac__outbox_push(&sh->out[to->shard->id], m);
    sh->out_pending = 1;
}

static int shard_handles_init(ac__shard_t *sh)
{
    int r = uv_async_init(sh->loop, &sh->ctl, on_ctl);

    if (r != 0)
        return r;
    sh->ctl.data = sh;
    uv_unref((uv_handle_t *)&sh->ctl);
    r = ac__inbox_init(sh->loop, &sh->inbox, AC__HANDOFF_QUEUE, sh->s);
    if (r != 0) {
        uv_close((uv_handle_t *)&sh->ctl, NULL);
        return r;
    }
    sh->out = calloc(sh->g->n, sizeof(*sh->out));
    if (sh->out == NULL)
        return AC_ENOMEM;
    for (unsigned k = 0; k < sh->g->n; k++)
        ac__outbox_init(&sh->out[k], &sh->g->shards[k].inbox);
    uv_check_init(sh->loop, &sh->flush);
    sh->flush.data = sh;
    uv_check_start(&sh->flush, on_flush);
    uv_unref((uv_handle_t *)&sh->flush);
    uv_prepare_init(sh->loop, &sh->preflush);
    sh->preflush.data = sh;
    uv_prepare_start(&sh->preflush, on_preflush);
    uv_unref((uv_handle_t *)&sh->preflush);
    uv_idle_init(sh->loop, &sh->retry);
    sh->retry.data = sh;
    uv_unref((uv_handle_t *)&sh->retry);
    return 0;
}

/* After every loop ended: what is still queued or batched runs with AC_ECLOSED (frees). */
static void shard_dispose_msgs(ac__shard_t *sh)
{
    if (sh->out != NULL) {
        for (unsigned k = 0; k < sh->g->n; k++)
            ac__outbox_cancel(&sh->out[k]);
        free(sh->out);
        sh->out = NULL;
    }
}

int ac__group_handoff(ac_server_t *owner, ac__handoff_t *h)
{
    return ac__inbox_post(&owner->shard->inbox, &h->msg, &h->msg, 1);
}

/* ---- building and starting ---------------------------------------------------------- */

int ac__group_new(ac_server_t *s0, unsigned n, int route, ac__shard_new_fn make_shard)
{
    ac__group_t *g = calloc(1, sizeof(*g));
    ac_server_opts_t o = s0->opts;
    int r = AC_ENOMEM;
    unsigned built = 1;

    if (g == NULL)
        return AC_ENOMEM;
    g->n = n;
    g->route = route;
    g->shards = calloc(n, sizeof(*g->shards));
    if (g->shards == NULL)
        goto fail;
    uv_mutex_init(&g->world);
    uv_mutex_init(&g->m);
    uv_mutex_init(&g->rl_lock);
    uv_cond_init(&g->cv);
    atomic_init(&g->user_conns, 0);
    for (unsigned k = 0; k < n; k++) {
        g->shards[k].g = g;
        g->shards[k].id = k;
        atomic_init(&g->shards[k].ctl_flags, 0);
    }
    g->shards[0].s = s0;
    g->shards[0].loop = s0->loop;
    if (route && (g->runs = runreg_new()) == NULL)
        goto fail;
    for (; built < n; built++) {
        ac__shard_t *sh = &g->shards[built];
        r = uv_loop_init(&sh->own_loop);
        if (r != 0)
            goto fail;
        sh->loop = &sh->own_loop;
        sh->s = make_shard(sh->loop, &o, &r);
        if (sh->s == NULL) {
            uv_loop_close(&sh->own_loop);
            goto fail;
        }
    }
    for (unsigned k = 0; k < n; k++) {
        r = shard_handles_init(&g->shards[k]);
        if (r != 0) {
            /* The handles made so far close with their loops' first run. */
            built = n;
            goto fail;
        }
        g->shards[k].s->shard = &g->shards[k];
        if (route) {
            g->shards[k].s->bridge.on_run = on_run;
            g->shards[k].s->bridge.on_run_arg = &g->shards[k];
        }
    }
    s0->shard = &g->shards[0];
    return 0;

fail:
    if (g->shards != NULL) {
        for (unsigned k = 1; k < built && k < n; k++) {
            ac__shard_t *sh = &g->shards[k];
            if (sh->s == NULL)
                continue;
            sh->s->shard = NULL;
            ac_server_free(sh->s);
            uv_run(&sh->own_loop, UV_RUN_DEFAULT);
            uv_loop_close(&sh->own_loop);
        }
        uv_cond_destroy(&g->cv);
        uv_mutex_destroy(&g->world);
        uv_mutex_destroy(&g->m);
        uv_mutex_destroy(&g->rl_lock);
    }
    runreg_free(g->runs);
    free(g->shards);
    free(g);
    s0->shard = NULL;
    return r;
}

/* A shard's thread: its loop until every ref'd handle closed (the shutdown), then the
 * group's own handles. */
static void shard_main(void *arg)
{
    ac__shard_t *sh = arg;
    ac__group_t *g = sh->g;

    uv_run(sh->loop, UV_RUN_DEFAULT);
    uv_mutex_lock(&g->m);
    sh->alive = 0;
    g->running--;
    uv_cond_broadcast(&g->cv); /* a parker no longer waits for this one */
    /* Under the lock: shard 0's ctl is open while any shard runs. */
    atomic_fetch_or(&g->shards[0].ctl_flags, CTL_ENDED);
    uv_async_send(&g->shards[0].ctl);
    uv_mutex_unlock(&g->m);
    /* The inbox stays open (others may still post) until the group is freed. */
    uv_close((uv_handle_t *)&sh->ctl, NULL);
    uv_close((uv_handle_t *)&sh->flush, NULL);
    uv_close((uv_handle_t *)&sh->preflush, NULL);
    uv_close((uv_handle_t *)&sh->retry, NULL);
    uv_run(sh->loop, UV_RUN_DEFAULT);
}

int ac__group_start(ac_server_t *s0)
{
    ac__group_t *g = s0->shard->g;
    int r;

    uv_mutex_lock(&g->m);
    g->shards[0].alive = 1;
    uv_mutex_unlock(&g->m);
    for (unsigned k = 1; k < g->n; k++) {
        ac__shard_t *sh = &g->shards[k];
        sh->s->listen_port = s0->bound_port;
        r = ac__server_start_loop(sh->s);
        if (r != 0)
            return r;
    }
    /* All alive before any runs: a park begun by a loop that started first waits for the
     * ones still starting rather than missing them. */
    uv_mutex_lock(&g->m);
    for (unsigned k = 1; k < g->n; k++) {
        g->shards[k].alive = 1;
        g->running++;
    }
    uv_mutex_unlock(&g->m);
    for (unsigned k = 1; k < g->n; k++) {
        ac__shard_t *sh = &g->shards[k];
        r = uv_thread_create(&sh->thread, shard_main, sh);
        if (r != 0) {
            uv_mutex_lock(&g->m);
            for (unsigned j = k; j < g->n; j++) {
                g->shards[j].alive = 0;
                g->running--;
            }
            uv_cond_broadcast(&g->cv);
            uv_mutex_unlock(&g->m);
            return r;
        }
        sh->thread_started = 1;
    }
    ac__log(AC_LOG_INFO, "event=loops_started loops=%u routing=%s", g->n,
            g->route ? "owner" : "cluster");
    return 0;
}

/* ---- shutdown ------------------------------------------------------------------------ */

static void on_s0_handle_closed(uv_handle_t *h)
{
    ac__group_t *g = ((ac__shard_t *)h->data)->g;

    if (--g->s0_handles == 0 && g->shutdown_cb != NULL)
        g->shutdown_cb(g->shards[0].s, g->shutdown_arg);
}

static void on_s0_inbox_closed(ac__inbox_t *in)
{
    ac_server_t *s0 = in->arg;
    ac__group_t *g = s0->shard->g;

    if (--g->s0_handles == 0 && g->shutdown_cb != NULL)
        g->shutdown_cb(s0, g->shutdown_arg);
}

/* Shard 0 is done when its own loop closed its handles and every other loop ended. */
static void maybe_finish(ac__group_t *g)
{
    ac__shard_t *s0 = &g->shards[0];
    unsigned running;

    uv_mutex_lock(&g->m);
    running = g->running;
    uv_mutex_unlock(&g->m);
    if (!g->s0_down || running != 0 || g->s0_handles != 0)
        return;
    for (unsigned k = 1; k < g->n; k++) {
        if (g->shards[k].thread_started) {
            uv_thread_join(&g->shards[k].thread);
            g->shards[k].thread_started = 0;
        }
    }
    uv_mutex_lock(&g->m);
    s0->alive = 0;
    uv_mutex_unlock(&g->m);
    g->s0_handles = 5;
    uv_close((uv_handle_t *)&s0->ctl, on_s0_handle_closed);
    uv_close((uv_handle_t *)&s0->flush, on_s0_handle_closed);
    uv_close((uv_handle_t *)&s0->preflush, on_s0_handle_closed);
    uv_close((uv_handle_t *)&s0->retry, on_s0_handle_closed);
    ac__inbox_close(&s0->inbox, on_s0_inbox_closed);
}

static void on_s0_down(ac_server_t *s, void *arg)
{
    ac__group_t *g = arg;

    g->s0_down = 1;
    maybe_finish(g);
}

int ac__group_shutdown(ac_server_t *s0, ac_server_shutdown_cb cb, void *arg)
{
    ac__group_t *g = s0->shard->g;
    int r;

    g->shutdown_cb = cb;
    g->shutdown_arg = arg;
    /* The first loop stays alive until every other loop has ended (their CTL_ENDED). */
    uv_ref((uv_handle_t *)&s0->shard->ctl);
    /* Shard 0 first: what ac_emit() queued is published while every loop still runs. */
    r = ac__server_shutdown_loop(s0, on_s0_down, g);
    if (r != 0)
        return r;
    uv_mutex_lock(&g->m);
    for (unsigned k = 1; k < g->n; k++) {
        ac__shard_t *sh = &g->shards[k];
        if (sh->alive) {
            atomic_fetch_or(&sh->ctl_flags, CTL_SHUTDOWN);
            uv_async_send(&sh->ctl);
        }
    }
    uv_mutex_unlock(&g->m);
    return 0;
}

/* The last of the first loop's handles closed after the group was freed: its memory goes. */
static void late_closed(ac__group_t *g)
{
    if (--g->closing == 0) {
        free(g->shards);
        free(g);
    }
}

static void on_late_closed(uv_handle_t *h)
{
    late_closed(((ac__shard_t *)h->data)->g);
}

static void on_late_inbox_closed(ac__inbox_t *in)
{
    late_closed(((ac__shard_t *)((char *)in - offsetof(ac__shard_t, inbox)))->g);
}

void ac__group_free(ac_server_t *s0, void (*free_shard)(ac_server_t *s))
{
    ac__group_t *g = s0->shard->g;

    for (unsigned k = 1; k < g->n; k++) {
        ac__shard_t *sh = &g->shards[k];
        if (sh->thread_started) {
            /* Freed without a shutdown: that loop shuts down and ends first. */
            atomic_fetch_or(&sh->ctl_flags, CTL_SHUTDOWN);
            uv_async_send(&sh->ctl);
            uv_thread_join(&sh->thread);
        }
    }
    /* Every loop ended: what is left in flight between them is freed now. */
    for (unsigned k = 0; k < g->n; k++)
        shard_dispose_msgs(&g->shards[k]);
    for (unsigned k = 1; k < g->n; k++) {
        ac__shard_t *sh = &g->shards[k];
        uv_handle_t *hs[] = {(uv_handle_t *)&sh->ctl, (uv_handle_t *)&sh->flush,
                             (uv_handle_t *)&sh->preflush, (uv_handle_t *)&sh->retry};
        for (unsigned i = 0; i < 4; i++)
            if (!uv_is_closing(hs[i]))
                uv_close(hs[i], NULL);
        if (!sh->inbox.closed)
            ac__inbox_close(&sh->inbox, NULL);
        uv_run(sh->loop, UV_RUN_DEFAULT);
        sh->s->shard = NULL;
        free_shard(sh->s);
        uv_run(sh->loop, UV_RUN_DEFAULT);
        uv_loop_close(sh->loop);
        ac__inbox_dispose(&sh->inbox);
    }
    {
        /* Never started (or never shut down): the first loop's handles close with the
         * embedder's next run of its loop, and the shards' memory (theirs) goes then. */
        ac__shard_t *sh = &g->shards[0];
        uv_handle_t *hs[] = {(uv_handle_t *)&sh->ctl, (uv_handle_t *)&sh->flush,
                             (uv_handle_t *)&sh->preflush, (uv_handle_t *)&sh->retry};
        for (unsigned i = 0; i < 4; i++) {
            if (!uv_is_closing(hs[i])) {
                g->closing++;
                uv_close(hs[i], on_late_closed);
            }
        }
        if (!sh->inbox.closed) {
            g->closing++;
            ac__inbox_close(&sh->inbox, on_late_inbox_closed);
        }
    }
    ac__inbox_dispose(&g->shards[0].inbox);
    uv_cond_destroy(&g->cv);
    uv_mutex_destroy(&g->world);
    uv_mutex_destroy(&g->m);
    uv_mutex_destroy(&g->rl_lock);
    /* s0's bridge is disposed after this: it must no longer report to the registry. */
    s0->bridge.on_run = NULL;
    runreg_free(g->runs);
    g->runs = NULL;
    s0->shard = NULL;
    if (g->closing == 0) {
        free(g->shards);
        free(g);
    }
}

/* ---- process-wide limits ------------------------------------------------------------ */

int ac__group_conn_take(ac_server_t *s)
{
    ac__group_t *g;

    if (s->shard == NULL)
        return !ac__manager_full(&s->manager);
    g = s->shard->g;
    if (atomic_fetch_add(&g->user_conns, 1) >= (long)s->opts.max_conns) {
        atomic_fetch_sub(&g->user_conns, 1);
        return 0;
    }
    return 1;
}

void ac__group_conn_release(ac_server_t *s)
{
    if (s->shard != NULL)
        atomic_fetch_sub(&s->shard->g->user_conns, 1);
}

int ac__group_handshake_take(ac_server_t *s, const void *key, size_t klen)
{
    ac__group_t *g;
    ac_server_t *s0;
    int ok;

    if (s->shard == NULL)
        return ac__ratelimit_take(&s->handshakes, key, klen, ac__server_now(s));
    g = s->shard->g;
    s0 = g->shards[0].s;
    uv_mutex_lock(&g->rl_lock);
    ok = ac__ratelimit_take(&s0->handshakes, key, klen, uv_hrtime() / 1000000);
    uv_mutex_unlock(&g->rl_lock);
    return ok;
}

void ac__group_handshake_expire(ac_server_t *s)
{
    if (s->shard == NULL) {
        ac__ratelimit_expire(&s->handshakes, ac__server_now(s));
        return;
    }
    if (s->shard->id != 0)
        return;
    /* Every loop's clock differs: the shared limiter runs on the monotonic one. */
    uv_mutex_lock(&s->shard->g->rl_lock);
    ac__ratelimit_expire(&s->handshakes, uv_hrtime() / 1000000);
    uv_mutex_unlock(&s->shard->g->rl_lock);
}
