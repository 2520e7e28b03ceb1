/* Per-user rings of retained frames plus one LRU list of users across the store, so the
 * global byte cap takes history from the users least recently written to. */
#include <stdlib.h>

#include "agentcast.h"
#include "core/history.h"
#include "core/manager.h"

void ac__history_store_init(ac__history_store_t *st, unsigned per_user, uint64_t max_bytes)
{
    st->per_user = per_user ? per_user : 1;
    st->max_bytes = max_bytes;
    st->bytes = 0;
    st->frames = 0;
    st->lru_head = st->lru_tail = NULL;
}

static void lru_unlink(ac__history_store_t *st, ac__history_t *h)
{
    if (h->lru_prev != NULL)
        h->lru_prev->lru_next = h->lru_next;
    else if (st->lru_head == h)
        st->lru_head = h->lru_next;
    if (h->lru_next != NULL)
        h->lru_next->lru_prev = h->lru_prev;
    else if (st->lru_tail == h)
        st->lru_tail = h->lru_prev;
    h->lru_prev = h->lru_next = NULL;
}

static void lru_push_tail(ac__history_store_t *st, ac__history_t *h)
{
    h->lru_prev = st->lru_tail;
    h->lru_next = NULL;
    if (st->lru_tail != NULL)
        st->lru_tail->lru_next = h;
    else
        st->lru_head = h;
    st->lru_tail = h;
}

static void drop_oldest(ac__history_store_t *st, ac__history_t *h)
{
    ac__buf_t *b = h->ring[h->head];

    h->head = (h->head + 1) % h->cap;
    h->count--;
    h->bytes -= b->len;
    st->bytes -= b->len;
    st->frames--;
    ac__buf_unref(b);
}

void ac__history_drop(ac__history_store_t *st, ac__user_t *u)
{
    ac__history_t *h = u->hist;

    if (h == NULL)
        return;
    while (h->count > 0)
        drop_oldest(st, h);
    lru_unlink(st, h);
    free(h->ring);
    free(h);
    u->hist = NULL;
}

int ac__history_append(ac__history_store_t *st, ac__user_t *u, ac__buf_t *frame)
{
    ac__history_t *h = u->hist;

    if (h == NULL) {
        h = calloc(1, sizeof(*h));
        if (h == NULL)
            return AC_ENOMEM;
        h->user = u;
        u->hist = h;
        lru_push_tail(st, h);
    } else if (st->lru_tail != h) {
        lru_unlink(st, h);
        lru_push_tail(st, h);
    }
    if (h->count == st->per_user)
        drop_oldest(st, h);
    if (h->count == h->cap) {
        /* Grow geometrically up to per_user, so a user with few events costs little. */
        uint32_t ncap = h->cap ? h->cap * 2 : 8;
        if (ncap > st->per_user)
            ncap = st->per_user;
        ac__buf_t **ring = malloc(ncap * sizeof(*ring));
        if (ring == NULL) {
            if (h->count == 0)
                ac__history_drop(st, u); /* no empty history left on the LRU list */
            return AC_ENOMEM;
        }
        for (uint32_t i = 0; i < h->count; i++)
            ring[i] = h->ring[(h->head + i) % h->cap];
        free(h->ring);
        h->ring = ring;
        h->cap = ncap;
        h->head = 0;
    }
    h->ring[(h->head + h->count) % h->cap] = ac__buf_ref(frame);
    h->count++;
    h->bytes += frame->len;
    st->bytes += frame->len;
    st->frames++;
    /* Over the global cap: the least recently written users give up their history,
     * oldest frames first; the user just written to is the last to lose any. */
    while (st->bytes > st->max_bytes && st->lru_head != NULL) {
        ac__history_t *victim = st->lru_head;
        if (victim == u->hist && victim->count <= 1)
            break;
        if (victim->count > 0)
            drop_oldest(st, victim);
        if (victim->count == 0)
            ac__history_drop(st, victim->user);
    }
    return 0;
}

uint64_t ac__history_oldest(const ac__user_t *u)
{
    const ac__history_t *h = u->hist;

    if (h == NULL || h->count == 0)
        return u->seq + 1;
    return h->ring[h->head]->seq;
}

void ac__history_since(const ac__user_t *u, uint64_t after, ac__history_fn fn, void *arg)
{
    const ac__history_t *h = u->hist;

    if (h == NULL)
        return;
    for (uint32_t i = 0; i < h->count; i++) {
        ac__buf_t *b = h->ring[(h->head + i) % h->cap];
        if (b->seq > after)
            fn(b, arg);
    }
}

ac__buf_t *ac__history_get(const ac__user_t *u, uint64_t seq)
{
    const ac__history_t *h = u->hist;
    uint64_t first;

    if (h == NULL || h->count == 0 || seq == 0)
        return NULL;
    first = h->ring[h->head]->seq;
    if (seq < first)
        return NULL;
    if (seq - first < h->count) {
        ac__buf_t *b = h->ring[(h->head + (seq - first)) % h->cap];
        if (b->seq == seq)
            return b;
    }
    /* A gap before it: look it up the slow way (seqs increase along the ring). */
    for (uint32_t i = 0; i < h->count; i++) {
        ac__buf_t *b = h->ring[(h->head + i) % h->cap];
        if (b->seq >= seq)
            return b->seq == seq ? b : NULL;
    }
    return NULL;
}
