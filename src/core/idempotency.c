/* A chained hash of (user '\0' key) plus a FIFO through the same entries for expiry. */
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "agentcast.h"
#include "core/idempotency.h"

struct ac__idem_entry_s {
    ac__idem_entry_t *hnext;
    ac__idem_entry_t *fnext; /* next newer */
    uint64_t at;
    uint64_t seq;
    uint32_t hash;
    uint32_t len;
    char key[]; /* user '\0' key */
};

static uint32_t hash_key(const ac__idem_t *t, const char *user, size_t ulen, const char *key,
                         size_t klen)
{
    uint64_t h = 0xcbf29ce484222325ull ^ t->seed;
    for (size_t i = 0; i < ulen; i++)
        h = (h ^ (unsigned char)user[i]) * 0x100000001b3ull;
    h = (h ^ 0xff) * 0x100000001b3ull;
    for (size_t i = 0; i < klen; i++)
        h = (h ^ (unsigned char)key[i]) * 0x100000001b3ull;
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    return (uint32_t)(h ^ (h >> 32));
}

int ac__idem_init(ac__idem_t *t, uint64_t window, size_t max_count)
{
    memset(t, 0, sizeof(*t));
    if (getrandom(&t->seed, sizeof(t->seed), 0) != (ssize_t)sizeof(t->seed))
        t->seed = (uint64_t)(uintptr_t)t;
    t->nbuckets = 1024;
    t->buckets = calloc(t->nbuckets, sizeof(*t->buckets));
    if (t->buckets == NULL)
        return AC_ENOMEM;
    t->window = window;
    t->max_count = max_count ? max_count : 1;
    return 0;
}

void ac__idem_dispose(ac__idem_t *t)
{
    ac__idem_entry_t *e = t->oldest;

    while (e != NULL) {
        ac__idem_entry_t *next = e->fnext;
        free(e);
        e = next;
    }
    free(t->buckets);
    memset(t, 0, sizeof(*t));
}

static int matches(const ac__idem_entry_t *e, uint32_t h, const char *user, size_t ulen,
                   const char *key, size_t klen)
{
    return e->hash == h && e->len == ulen + 1 + klen && memcmp(e->key, user, ulen) == 0 &&
           e->key[ulen] == '\0' && memcmp(e->key + ulen + 1, key, klen) == 0;
}

/* Removes the oldest entry. */
static void pop_oldest(ac__idem_t *t)
{
    ac__idem_entry_t *e = t->oldest;
    ac__idem_entry_t **pp = &t->buckets[e->hash & (t->nbuckets - 1)];

    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    t->oldest = e->fnext;
    if (t->oldest == NULL)
        t->newest = NULL;
    t->count--;
    free(e);
}

void ac__idem_expire(ac__idem_t *t, uint64_t now)
{
    while (t->oldest != NULL && t->oldest->at + t->window <= now)
        pop_oldest(t);
}

uint64_t ac__idem_get(ac__idem_t *t, const char *user, size_t ulen, const char *key, size_t klen,
                      uint64_t now)
{
    uint32_t h = hash_key(t, user, ulen, key, klen);

    ac__idem_expire(t, now);
    for (ac__idem_entry_t *e = t->buckets[h & (t->nbuckets - 1)]; e != NULL; e = e->hnext) {
        if (matches(e, h, user, ulen, key, klen))
            return e->seq;
    }
    return 0;
}

static void grow(ac__idem_t *t)
{
    size_t n = t->nbuckets * 2;
    ac__idem_entry_t **b = calloc(n, sizeof(*b));

    if (b == NULL)
        return;
    for (size_t i = 0; i < t->nbuckets; i++) {
        ac__idem_entry_t *e = t->buckets[i];
        while (e != NULL) {
            ac__idem_entry_t *next = e->hnext;
            e->hnext = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
            e = next;
        }
    }
    free(t->buckets);
    t->buckets = b;
    t->nbuckets = n;
}

int ac__idem_put(ac__idem_t *t, const char *user, size_t ulen, const char *key, size_t klen,
                 uint64_t seq, uint64_t now)
{
    ac__idem_entry_t *e = malloc(sizeof(*e) + ulen + 1 + klen);

    if (e == NULL)
        return AC_ENOMEM;
    e->hash = hash_key(t, user, ulen, key, klen);
    e->len = (uint32_t)(ulen + 1 + klen);
    memcpy(e->key, user, ulen);
    e->key[ulen] = '\0';
    memcpy(e->key + ulen + 1, key, klen);
    e->at = now;
    e->seq = seq;
    e->fnext = NULL;
    if (t->count >= t->max_count)
        pop_oldest(t);
    if (t->count >= t->nbuckets)
        grow(t);
    e->hnext = t->buckets[e->hash & (t->nbuckets - 1)];
    t->buckets[e->hash & (t->nbuckets - 1)] = e;
    if (t->newest != NULL)
        t->newest->fnext = e;
    else
        t->oldest = e;
    t->newest = e;
    t->count++;
    return 0;
}
