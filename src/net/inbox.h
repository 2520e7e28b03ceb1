/* Messages between loops: a bounded multi-producer queue into one loop with a coalescing
 * wake-up (one uv_async_t per loop), and, on the producing loop, an outbox per destination
 * that batches what one loop turn posts so a turn costs at most one lock and one wake per
 * destination. The wake is elided while the receiving loop is awake (it drains before it
 * sleeps). Not a general thread pool: each inbox belongs to one loop thread. */
#ifndef AC_NET_INBOX_H
#define AC_NET_INBOX_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct ac__msg_s ac__msg_t;

/* Runs a message on the receiving loop's thread; it owns `m` from here (frees it). status:
 * 0, or AC_ECLOSED when the inbox closed with m still queued (m is only to be freed). */
typedef void (*ac__msg_fn)(ac__msg_t *m, void *arg, int status);

/* Embedded at the start of (or anywhere in) the sender's own message struct. */
struct ac__msg_s {
    ac__msg_t *next;
    ac__msg_fn run;
};

typedef struct ac__inbox_stats_s {
    uint64_t posted;    /* messages taken */
    uint64_t refused;   /* posts refused because the inbox was full */
    uint64_t wakes;     /* uv_async_send() calls made by producers */
    uint64_t elided;    /* posts that found the loop awake and sent no wake */
    uint64_t batches;   /* non-empty drains */
    uint64_t max_batch; /* the most messages one drain ran */
} ac__inbox_stats_t;

typedef struct ac__inbox_s {
    uv_async_t async;     /* the wake-up */
    uv_prepare_t prepare; /* marks the loop asleep before it polls */
    uv_check_t check;     /* marks it awake after, and drains */
    uv_mutex_t lock;      /* head, tail, count, closed */
    ac__msg_t *head;
    ac__msg_t *tail;
    size_t count;
    size_t cap;
    int closed;
    unsigned open_handles;
    atomic_int sleeping; /* the loop is (about to be) blocked in its poll */
    void *arg;
    void (*on_closed)(struct ac__inbox_s *in);
    atomic_uint_fast64_t posted, refused, wakes, elided;
    uint64_t batches, max_batch; /* under lock */
} ac__inbox_t;

/* Sets up `in` on `loop` (call on that loop's thread): at most `cap` messages wait at once;
 * `arg` is passed to every message's run. 0 or a negative error. The handles do not keep
 * the loop alive (unreferenced). */
int ac__inbox_init(uv_loop_t *loop, ac__inbox_t *in, size_t cap, void *arg);

/* Any thread: appends the chain first..last (n messages, linked by next) in order. Returns
 * 0 (the inbox owns them), AC_EBUSY when they do not fit under the cap, or AC_ECLOSED; on
 * an error nothing was taken. */
int ac__inbox_post(ac__inbox_t *in, ac__msg_t *first, ac__msg_t *last, size_t n);

/* Loop thread: runs every queued message now (the wake-up does this by itself). */
void ac__inbox_drain(ac__inbox_t *in);

/* Loop thread: refuses further posts, hands what is queued to its run with AC_ECLOSED, and
 * closes the handles; on_closed (may be NULL) is called once they are closed. */
void ac__inbox_close(ac__inbox_t *in, void (*on_closed)(ac__inbox_t *in));

/* Once closed and no producer can post any more (their threads joined): frees the lock. */
void ac__inbox_dispose(ac__inbox_t *in);

/* Any thread: a snapshot of the counters. */
void ac__inbox_stats(ac__inbox_t *in, ac__inbox_stats_t *out);

/* A producing loop's batch for one destination: messages pushed during a loop turn go out
 * together with one ac__outbox_flush() (at the end of the turn, in a uv_check). Owned by
 * the producing loop's thread. */
typedef struct ac__outbox_s {
    ac__inbox_t *to;
    ac__msg_t *head;
    ac__msg_t *tail;
    size_t n;
} ac__outbox_t;

static inline void ac__outbox_init(ac__outbox_t *o, ac__inbox_t *to)
{
    o->to = to;
    o->head = o->tail = NULL;
    o->n = 0;
}

/* Appends m to the batch (in order); nothing is sent until the flush. */
void ac__outbox_push(ac__outbox_t *o, ac__msg_t *m);

/* Sends the batch: 0 when it is empty or was taken whole, AC_EBUSY when the destination is
 * full (the batch stays, in order: flush again later and stop taking new work meanwhile),
 * AC_ECLOSED when it closed (the batch stays: ac__outbox_cancel() disposes of it). */
int ac__outbox_flush(ac__outbox_t *o);

/* Hands every message of the batch to its run with AC_ECLOSED, on this thread, with arg
 * NULL; the batch is then empty. */
void ac__outbox_cancel(ac__outbox_t *o);

#endif
