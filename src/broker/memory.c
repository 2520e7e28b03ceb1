/* The memory broker: one node, no network. Publishing is fan-out on the spot; there is
 * nothing that can be down. */
#include <stdlib.h>

#include "broker/broker.h"

static int memory_publish(ac__broker_t *b, ac__user_t *u, ac__buf_t *frame, unsigned *delivered)
{
    *delivered = b->deliver(b->deliver_arg, u, frame);
    return 0;
}

static int memory_up(const ac__broker_t *b)
{
    return 1;
}

static void memory_free(ac__broker_t *b)
{
    free(b);
}

static const ac__broker_vtable_t memory_vtable = {
    .name = "memory", .publish = memory_publish, .up = memory_up, .free = memory_free};

ac__broker_t *ac__broker_memory_new(ac__deliver_cb deliver, void *arg)
{
    ac__broker_t *b = calloc(1, sizeof(*b));

    if (b == NULL)
        return NULL;
    b->vt = &memory_vtable;
    b->deliver = deliver;
    b->deliver_arg = arg;
    return b;
}
