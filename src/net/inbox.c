/* The loop-to-loop queue (inbox.h): a mutex-protected list spliced whole per drain (h2o's
 * multithread queue), a uv_async_t per loop, and the wake elided while the receiver is
 * awake: it flags itself asleep in uv_prepare and looks at the queue once more after a full
 * fence, so either the producer sees the flag and wakes it or the receiver sees the
 * message (libuv's own async wake-up writes the eventfd on every 0->1 transition, even to
 * an awake loop). */
#include <stdlib.h>

#include "agentcast.h"
#include "net/inbox.h"

static void run_chain(ac__msg_t *m, void *arg, int status)
{
    while (m != NULL) {
        ac__msg_t *next = m->next;
        m->next = NULL;
        m->run(m, arg, status);
        m = next;
    }
}

void ac__inbox_drain(ac__inbox_t *in)
{
    ac__msg_t *m;
    size_t n;

    uv_mutex_lock(&in->lock);
    m = in->head;
    n = in->count;
    in->head = in->tail = NULL;
    in->count = 0;
    if (n > 0) {
        in->batches++;
        if (n > in->max_batch)
            in->max_batch = n;
    }
    uv_mutex_unlock(&in->lock);
    run_chain(m, in->arg, 0);
}

static void on_async(uv_async_t *a)
{
    ac__inbox_drain(a->data);
}

static void on_prepare(uv_prepare_t *h)
{
    ac__inbox_t *in = h->data;
    size_t n;

    atomic_store(&in->sleeping, 1);
    atomic_thread_fence(memory_order_seq_cst);
    uv_mutex_lock(&in->lock);
    n = in->count;
    uv_mutex_unlock(&in->lock);
    /* Posted while we were awake, with the wake elided: do not sleep on it. */
    if (n > 0)
        uv_async_send(&in->async);
}

static void on_check(uv_check_t *h)
{
    ac__inbox_t *in = h->data;

    atomic_store(&in->sleeping, 0);
    ac__inbox_drain(in);
}

int ac__inbox_init(uv_loop_t *loop, ac__inbox_t *in, size_t cap, void *arg)
{
    int r;

    in->head = in->tail = NULL;
    in->count = 0;
    in->cap = cap;
    in->closed = 0;
    in->arg = arg;
    in->on_closed = NULL;
    in->batches = in->max_batch = 0;
    atomic_init(&in->sleeping, 0);
    atomic_init(&in->posted, 0);
    atomic_init(&in->refused, 0);
    atomic_init(&in->wakes, 0);
    atomic_init(&in->elided, 0);
    r = uv_mutex_init(&in->lock);
    if (r != 0)
        return r;
    r = uv_async_init(loop, &in->async, on_async);
    if (r != 0) {
        uv_mutex_destroy(&in->lock);
        return r;
    }
    in->async.data = in;
    uv_prepare_init(loop, &in->prepare);
    in->prepare.data = in;
    uv_prepare_start(&in->prepare, on_prepare);
    uv_check_init(loop, &in->check);
    in->check.data = in;
    uv_check_start(&in->check, on_check);
    uv_unref((uv_handle_t *)&in->async);
    uv_unref((uv_handle_t *)&in->prepare);
    uv_unref((uv_handle_t *)&in->check);
    in->open_handles = 3;
    return 0;
}

int ac__inbox_post(ac__inbox_t *in, ac__msg_t *first, ac__msg_t *last, size_t n)
{
    int r = 0;

    if (n == 0)
        return 0;
    last->next = NULL;
    uv_mutex_lock(&in->lock);
    if (in->closed) {
        r = AC_ECLOSED;
    } else if (n > in->cap || in->count > in->cap - n) {
        r = AC_EBUSY;
    } else {
        if (in->tail != NULL)
            in->tail->next = first;
        else
            in->head = first;
        in->tail = last;
        in->count += n;
        /* Sent under the lock: close() cannot free the handle in between. */
        atomic_thread_fence(memory_order_seq_cst);
        if (atomic_load(&in->sleeping)) {
            uv_async_send(&in->async);
            atomic_fetch_add(&in->wakes, 1);
        } else {
            atomic_fetch_add(&in->elided, 1);
        }
    }
    uv_mutex_unlock(&in->lock);
    if (r == 0)
        atomic_fetch_add(&in->posted, n);
    else if (r == AC_EBUSY)
        atomic_fetch_add(&in->refused, n);
    return r;
}

static void on_handle_closed(uv_handle_t *h)
{
    ac__inbox_t *in = h->data;

    if (--in->open_handles == 0 && in->on_closed != NULL)
        in->on_closed(in);
}

void ac__inbox_dispose(ac__inbox_t *in)
{
    uv_mutex_destroy(&in->lock);
}

void ac__inbox_close(ac__inbox_t *in, void (*on_closed)(ac__inbox_t *in))
{
    ac__msg_t *m;

    uv_mutex_lock(&in->lock);
    in->closed = 1;
    m = in->head;
    in->head = in->tail = NULL;
    in->count = 0;
    uv_mutex_unlock(&in->lock);
    run_chain(m, in->arg, AC_ECLOSED);
    in->on_closed = on_closed;
    uv_close((uv_handle_t *)&in->async, on_handle_closed);
    uv_close((uv_handle_t *)&in->prepare, on_handle_closed);
    uv_close((uv_handle_t *)&in->check, on_handle_closed);
}

void ac__inbox_stats(ac__inbox_t *in, ac__inbox_stats_t *out)
{
    out->posted = atomic_load(&in->posted);
    out->refused = atomic_load(&in->refused);
    out->wakes = atomic_load(&in->wakes);
    out->elided = atomic_load(&in->elided);
    uv_mutex_lock(&in->lock);
    out->batches = in->batches;
    out->max_batch = in->max_batch;
    uv_mutex_unlock(&in->lock);
}

void ac__outbox_push(ac__outbox_t *o, ac__msg_t *m)
{
    m->next = NULL;
    if (o->tail != NULL)
        o->tail->next = m;
    else
        o->head = m;
    o->tail = m;
    o->n++;
}

int ac__outbox_flush(ac__outbox_t *o)
{
    int r;

    if (o->n == 0)
        return 0;
    r = ac__inbox_post(o->to, o->head, o->tail, o->n);
    if (r == 0) {
        o->head = o->tail = NULL;
        o->n = 0;
    }
    return r;
}

void ac__outbox_cancel(ac__outbox_t *o)
{
    ac__msg_t *m = o->head;

    o->head = o->tail = NULL;
    o->n = 0;
    run_chain(m, NULL, AC_ECLOSED);
}
