/* History: each user's newest events, retained as the very frames the live path sent
 * (references, no second copy), so a reconnecting client can be replayed what it missed.
 * Bounded per user (count) and in total (bytes: the users whose newest event is oldest
 * lose their history first). Pure logic; loop thread only. */
#ifndef AC_CORE_HISTORY_H
#define AC_CORE_HISTORY_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

typedef struct ac__user_s ac__user_t;

/* One user's retained frames: a ring, oldest at head. Allocated on the first event. */
typedef struct ac__history_s {
    ac__user_t *user;               /* whose */
    struct ac__history_s *lru_prev; /* the store's order */
    struct ac__history_s *lru_next;
    ac__buf_t **ring;
    uint32_t cap;
    uint32_t head;
    uint32_t count;
    uint64_t bytes;
} ac__history_t;

typedef struct ac__history_store_s {
    unsigned per_user;  /* frames kept per user */
    uint64_t max_bytes; /* frames kept in all */
    uint64_t bytes;     /* frames kept now */
    uint64_t frames;
    ac__history_t *lru_head; /* users' histories, least recently appended first */
    ac__history_t *lru_tail;
} ac__history_store_t;

void ac__history_store_init(ac__history_store_t *st, unsigned per_user, uint64_t max_bytes);

/* Retains `frame` (takes its own reference) as the user's newest event; drops the user's
 * oldest past per_user, and other users' history past max_bytes. Returns 0 or AC_ENOMEM
 * (the frame is then simply not retained). */
int ac__history_append(ac__history_store_t *st, ac__user_t *u, ac__buf_t *frame);

/* The oldest retained seq of the user, or the user's newest seq + 1 when none is kept. */
uint64_t ac__history_oldest(const ac__user_t *u);

/* Calls fn for each retained frame with seq > after, oldest first. */
typedef void (*ac__history_fn)(ac__buf_t *frame, void *arg);
void ac__history_since(const ac__user_t *u, uint64_t after, ac__history_fn fn, void *arg);

/* The retained frame with this seq (borrowed), or NULL when it is not retained. O(1) while
 * the user's frames are consecutive, as they are unless a frame failed to be retained. */
ac__buf_t *ac__history_get(const ac__user_t *u, uint64_t seq);

/* Forgets everything the user retains. */
void ac__history_drop(ac__history_store_t *st, ac__user_t *u);

#endif
