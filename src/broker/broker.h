/* How an event travels from its publisher to the connections of its user. A broker is a
 * small vtable; memory.c is the one-node broker (the default). The broker never builds
 * envelopes (the emitter does) and never writes to sockets (it calls `deliver`). */
#ifndef AC_BROKER_BROKER_H
#define AC_BROKER_BROKER_H

#include "core/buf.h"
#include "core/history.h"
#include "core/manager.h"

/* Hands `frame` to every open connection of `u` on this node; returns how many. */
typedef unsigned (*ac__deliver_cb)(void *arg, ac__user_t *u, ac__buf_t *frame);

typedef struct ac__broker_s ac__broker_t;

typedef struct ac__broker_vtable_s {
    const char *name;
    /* Publishes an event frame (buf->seq set) for `u`; sets *delivered. Borrows frame
     * (takes its own references). Returns 0 or AC_EUNAVAIL. */
    int (*publish)(ac__broker_t *b, ac__user_t *u, ac__buf_t *frame, unsigned *delivered);
    /* The oldest seq the user can still be replayed (newest + 1 when none). */
    uint64_t (*oldest)(ac__broker_t *b, ac__user_t *u);
    /* Calls fn for each retained event of the user with seq > after, in order. */
    void (*replay)(ac__broker_t *b, ac__user_t *u, uint64_t after, ac__history_fn fn, void *arg);
    /* 1 when the broker can take events now. */
    int (*up)(const ac__broker_t *b);
    void (*free)(ac__broker_t *b);
} ac__broker_vtable_t;

struct ac__broker_s {
    const ac__broker_vtable_t *vt;
    ac__deliver_cb deliver;
    void *deliver_arg;
};

/* The one-node broker: history in `store` (borrowed), delivery a direct call into
 * `deliver`. Caller frees with b->vt->free(b). NULL when out of memory. */
ac__broker_t *ac__broker_memory_new(ac__deliver_cb deliver, void *arg, ac__history_store_t *store);

#endif
