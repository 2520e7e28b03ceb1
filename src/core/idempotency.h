/* Idempotency keys: (user, key) -> the seq the first publish got, remembered for a
 * window. Entries expire in insertion order (the window is one constant), so expiry is a
 * walk from the oldest. A count cap bounds memory under abuse. Pure logic; loop thread
 * only. */
#ifndef AC_CORE_IDEMPOTENCY_H
#define AC_CORE_IDEMPOTENCY_H

#include <stddef.h>
#include <stdint.h>

typedef struct ac__idem_entry_s ac__idem_entry_t;

typedef struct ac__idem_s {
    ac__idem_entry_t **buckets;
    size_t nbuckets;
    size_t count;
    size_t max_count;
    uint64_t window; /* caller's clock units (ms) */
    uint64_t seed;
    ac__idem_entry_t *oldest;
    ac__idem_entry_t *newest;
} ac__idem_t;

int ac__idem_init(ac__idem_t *t, uint64_t window, size_t max_count);
void ac__idem_dispose(ac__idem_t *t);

/* What a key of a direct message (which has no seq) is remembered with. */
#define AC__IDEM_DIRECT UINT64_MAX

/* The seq remembered for (user, key) within the window, or 0. */
uint64_t ac__idem_get(ac__idem_t *t, const char *user, size_t ulen, const char *key, size_t klen,
                      uint64_t now);

/* Remembers (user, key) -> seq from `now`. Returns 0 or AC_ENOMEM. */
int ac__idem_put(ac__idem_t *t, const char *user, size_t ulen, const char *key, size_t klen,
                 uint64_t seq, uint64_t now);

/* Forgets entries older than the window. */
void ac__idem_expire(ac__idem_t *t, uint64_t now);

#endif
