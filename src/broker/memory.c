/* The memory broker: one node, no network. Publishing retains the frame in the user's
 * history and fans it out on the spot; there is nothing that can be down. */
#include <stdlib.h>
#include <string.h>

#include "broker/broker.h"
#include "core/log.h"

typedef struct memory_broker_s {
    ac__broker_t base;
    ac__history_store_t *store;
} memory_broker_t;

static int memory_publish(ac__broker_t *b, ac__user_t *u, ac__buf_t *frame, unsigned *delivered)
{
    memory_broker_t *m = (memory_broker_t *)b;

    /* Retained before it is sent: a client that reconnects at any moment from here on
     * finds the event in history or gets it live, never neither. */
    if (ac__history_append(m->store, u, frame) != 0)
        ac__log(AC_LOG_ERROR, "event=history_oom user=%s seq=%llu", u->id,
                (unsigned long long)frame->seq);
    *delivered = b->host.deliver(b->host.arg, u, frame);
    return 0;
}

static uint64_t memory_oldest(ac__broker_t *b, ac__user_t *u)
{
    return ac__history_oldest(u);
}

static void memory_replay(ac__broker_t *b, ac__user_t *u, uint64_t after, ac__history_fn fn,
                          void *arg)
{
    ac__history_since(u, after, fn, arg);
}

typedef struct collect_s {
    ac__buf_t **frames;
    size_t n;
    size_t cap;
} collect_t;

static void collect_one(ac__buf_t *frame, void *arg)
{
    collect_t *cl = arg;

    if (cl->n == cl->cap)
        return; /* sized from the history's count: cannot happen */
    cl->frames[cl->n++] = frame;
}

/* One node: the stream is here, so the greeting is decided on the spot. */
static int memory_join(ac__broker_t *b, ac__user_t *u, const ac__join_req_t *req)
{
    ac__join_res_t res;
    collect_t cl = {0};
    uint64_t oldest = ac__history_oldest(u);

    memset(&res, 0, sizeof(res));
    ac__user_epoch_str(u, res.epoch);
    res.seq = u->seq;
    res.oldest = oldest;
    res.resume = req->has_after;
    if (req->has_after) {
        int same_epoch = req->epoch[0] == '\0' || strcmp(req->epoch, res.epoch) == 0;
        uint64_t from;
        /* Whole when every event after N is still retained (or none came after N). */
        res.recovered = same_epoch && req->after <= u->seq && req->after + 1 >= oldest;
        from = res.recovered ? req->after : oldest - 1;
        if (u->hist != NULL && u->hist->count > 0) {
            cl.cap = u->hist->count;
            cl.frames = malloc(cl.cap * sizeof(*cl.frames));
            if (cl.frames == NULL)
                return AC_ENOMEM;
            ac__history_since(u, from, collect_one, &cl);
        }
    }
    res.frames = cl.frames;
    res.nframes = cl.n;
    if (b->host.greet(b->host.arg, u, req->conn_id, &res) == 0)
        b->host.go_live(b->host.arg, u, req->conn_id);
    free(cl.frames);
    return 0;
}

static void memory_leave(ac__broker_t *b, ac__user_t *u, uint64_t conn_id)
{
}

static void memory_sweep(ac__broker_t *b)
{
}

static void memory_stats(const ac__broker_t *b, void *out)
{
}

static void memory_close(ac__broker_t *b)
{
}

static int memory_up(const ac__broker_t *b)
{
    return 1;
}

static void memory_free(ac__broker_t *b)
{
    free(b);
}

static const ac__broker_vtable_t memory_vtable = {.name = "memory",
                                                  .publish = memory_publish,
                                                  .join = memory_join,
                                                  .leave = memory_leave,
                                                  .sweep = memory_sweep,
                                                  .oldest = memory_oldest,
                                                  .replay = memory_replay,
                                                  .up = memory_up,
                                                  .stats = memory_stats,
                                                  .close = memory_close,
                                                  .free = memory_free};

ac__broker_t *ac__broker_memory_new(const ac__broker_host_t *host, ac__history_store_t *store)
{
    memory_broker_t *m = calloc(1, sizeof(*m));

    if (m == NULL)
        return NULL;
    m->base.vt = &memory_vtable;
    m->base.host = *host;
    m->store = store;
    return &m->base;
}
