/* The memory broker: one node, no network. Publishing retains the frame in the user's
 * history and fans it out on the spot; there is nothing that can be down. */
#include <stdlib.h>

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
    *delivered = b->deliver(b->deliver_arg, u, frame);
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
                                                  .oldest = memory_oldest,
                                                  .replay = memory_replay,
                                                  .up = memory_up,
                                                  .free = memory_free};

ac__broker_t *ac__broker_memory_new(ac__deliver_cb deliver, void *arg, ac__history_store_t *store)
{
    memory_broker_t *m = calloc(1, sizeof(*m));

    if (m == NULL)
        return NULL;
    m->base.vt = &memory_vtable;
    m->base.deliver = deliver;
    m->base.deliver_arg = arg;
    m->store = store;
    return &m->base;
}
