/* A chained hash of token buckets. */
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "agentcast.h"
#include "core/ratelimit.h"

struct ac__bucket_s {
    ac__bucket_t *next;
    uint64_t last; /* ms of the last refill */
    double tokens;
    uint32_t hash;
    uint8_t len;
    uint8_t key[16];
};

static uint32_t hash_key(const ac__ratelimit_t *rl, const void *key, size_t len)
{
    const uint8_t *p = key;
    uint64_t h = 0xcbf29ce484222325ull ^ rl->seed;
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    return (uint32_t)(h ^ (h >> 33));
}

int ac__ratelimit_init(ac__ratelimit_t *rl, double rate)
{
    memset(rl, 0, sizeof(*rl));
    if (getrandom(&rl->seed, sizeof(rl->seed), 0) != (ssize_t)sizeof(rl->seed))
        rl->seed = (uint64_t)(uintptr_t)rl;
    rl->rate = rate;
    rl->burst = rate * 2 < 1 ? 1 : rate * 2;
    rl->nbuckets = 256;
    rl->buckets = calloc(rl->nbuckets, sizeof(*rl->buckets));
    return rl->buckets ? 0 : AC_ENOMEM;
}

void ac__ratelimit_dispose(ac__ratelimit_t *rl)
{
    for (size_t i = 0; i < rl->nbuckets; i++) {
        ac__bucket_t *b = rl->buckets[i];
        while (b != NULL) {
            ac__bucket_t *next = b->next;
            free(b);
            b = next;
        }
    }
    free(rl->buckets);
    memset(rl, 0, sizeof(*rl));
}

static void grow(ac__ratelimit_t *rl)
{
    size_t n = rl->nbuckets * 2;
    ac__bucket_t **nb = calloc(n, sizeof(*nb));

    if (nb == NULL)
        return;
    for (size_t i = 0; i < rl->nbuckets; i++) {
        ac__bucket_t *b = rl->buckets[i];
        while (b != NULL) {
            ac__bucket_t *next = b->next;
            b->next = nb[b->hash & (n - 1)];
            nb[b->hash & (n - 1)] = b;
            b = next;
        }
    }
    free(rl->buckets);
    rl->buckets = nb;
    rl->nbuckets = n;
}

int ac__ratelimit_take(ac__ratelimit_t *rl, const void *key, size_t len, uint64_t now)
{
    uint32_t h;
    ac__bucket_t *b;

    if (rl->rate <= 0)
        return 1;
    if (len > sizeof(b->key))
        len = sizeof(b->key);
    h = hash_key(rl, key, len);
    for (b = rl->buckets[h & (rl->nbuckets - 1)]; b != NULL; b = b->next) {
        if (b->hash == h && b->len == len && memcmp(b->key, key, len) == 0)
            break;
    }
    if (b == NULL) {
        b = calloc(1, sizeof(*b));
        if (b == NULL)
            return 0;
        b->hash = h;
        b->len = (uint8_t)len;
        memcpy(b->key, key, len);
        b->tokens = rl->burst;
        b->last = now;
        if (rl->count >= rl->nbuckets)
            grow(rl);
        b->next = rl->buckets[h & (rl->nbuckets - 1)];
        rl->buckets[h & (rl->nbuckets - 1)] = b;
        rl->count++;
    }
    b->tokens += (double)(now - b->last) * rl->rate / 1000.0;
    if (b->tokens > rl->burst)
        b->tokens = rl->burst;
    b->last = now;
    if (b->tokens < 1)
        return 0;
    b->tokens -= 1;
    return 1;
}

size_t ac__ratelimit_expire(ac__ratelimit_t *rl, uint64_t now)
{
    size_t removed = 0;

    if (rl->rate <= 0)
        return 0;
    for (size_t i = 0; i < rl->nbuckets; i++) {
        ac__bucket_t **pp = &rl->buckets[i];
        while (*pp != NULL) {
            ac__bucket_t *b = *pp;
            double full_at = (double)b->last + (rl->burst - b->tokens) * 1000.0 / rl->rate;
            if ((double)now >= full_at) {
                *pp = b->next;
                free(b);
                rl->count--;
                removed++;
            } else {
                pp = &b->next;
            }
        }
    }
    return removed;
}
