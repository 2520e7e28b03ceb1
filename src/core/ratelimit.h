/* Token buckets keyed by a short byte string (a client IP): rate tokens per second, a
 * burst of twice that. Used for --handshake-rate. Buckets idle long enough to be full
 * again are forgotten by the sweep, so memory follows the clients seen recently. Pure
 * logic over a caller-given clock; loop thread only. */
#ifndef AC_CORE_RATELIMIT_H
#define AC_CORE_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>

typedef struct ac__bucket_s ac__bucket_t;

typedef struct ac__ratelimit_s {
    ac__bucket_t **buckets;
    size_t nbuckets;
    size_t count;
    double rate;  /* tokens per second; 0: no limit */
    double burst; /* bucket size */
    uint64_t seed;
} ac__ratelimit_t;

int ac__ratelimit_init(ac__ratelimit_t *rl, double rate);
void ac__ratelimit_dispose(ac__ratelimit_t *rl);

/* Takes one token for `key` at `now` (ms). Returns 1 when allowed, 0 when over the rate
 * (or out of memory to track a new key: refusing is the safe side). */
int ac__ratelimit_take(ac__ratelimit_t *rl, const void *key, size_t len, uint64_t now);

/* Forgets buckets that would be full again at `now`. Returns how many. */
size_t ac__ratelimit_expire(ac__ratelimit_t *rl, uint64_t now);

#endif
