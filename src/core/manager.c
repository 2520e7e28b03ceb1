/* Users and their connections: a chained hash table keyed by user id (seeded hash), each
 * user holding a doubly-linked list of its connections, oldest first, so eviction at the
 * cap and removal are O(1) and a publish touches only its user's connections. */
#include <assert.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "agentcast.h"
#include "core/manager.h"

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint32_t hash_id(const ac__manager_t *m, const char *id, size_t len)
{
    /* FNV-1a from a per-process random basis, then a final mix so that the low bits used
     * for the bucket depend on every byte. */
    uint64_t h = 0xcbf29ce484222325ull ^ m->seed;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)id[i];
        h *= 0x100000001b3ull;
    }
    uint64_t s = h;
    return (uint32_t)splitmix64(&s);
}

int ac__manager_init(ac__manager_t *m, unsigned max_per_user, unsigned max_total)
{
    uint64_t seed[2];

    memset(m, 0, sizeof(*m));
    if (getrandom(seed, sizeof(seed), 0) != (ssize_t)sizeof(seed)) {
        seed[0] = (uint64_t)(uintptr_t)m ^ 0x5bd1e995u;
        seed[1] = seed[0] * 31;
    }
    m->seed = seed[0];
    m->rng = seed[1];
    m->nbuckets = 1024;
    m->buckets = calloc(m->nbuckets, sizeof(*m->buckets));
    if (m->buckets == NULL)
        return AC_ENOMEM;
    m->max_per_user = max_per_user ? max_per_user : 1;
    m->max_total = max_total;
    /* High bits random so connection ids do not repeat across restarts. */
    m->next_conn_id = (splitmix64(&m->rng) & 0xffffffff00000000ull) | 1;
    return 0;
}

void ac__manager_dispose(ac__manager_t *m)
{
    for (size_t b = 0; b < m->nbuckets; b++) {
        ac__user_t *u = m->buckets[b];
        while (u != NULL) {
            ac__user_t *next = u->hnext;
            for (ac__mconn_t *c = u->head; c != NULL; c = c->next)
                c->user = NULL;
            ac__history_drop(&m->history, u);
            free(u);
            u = next;
        }
    }
    free(m->buckets);
    memset(m, 0, sizeof(*m));
}

ac__user_t *ac__manager_find_user(const ac__manager_t *m, const char *id, size_t len)
{
    uint32_t h = hash_id(m, id, len);

    for (ac__user_t *u = m->buckets[h & (m->nbuckets - 1)]; u != NULL; u = u->hnext) {
        if (u->hash == h && u->id_len == len && memcmp(u->id, id, len) == 0)
            return u;
    }
    return NULL;
}

static void grow(ac__manager_t *m)
{
    size_t n = m->nbuckets * 2;
    ac__user_t **b = calloc(n, sizeof(*b));

    if (b == NULL)
        return; /* keep the longer chains; still correct */
    for (size_t i = 0; i < m->nbuckets; i++) {
        ac__user_t *u = m->buckets[i];
        while (u != NULL) {
            ac__user_t *next = u->hnext;
            u->hnext = b[u->hash & (n - 1)];
            b[u->hash & (n - 1)] = u;
            u = next;
        }
    }
    free(m->buckets);
    m->buckets = b;
    m->nbuckets = n;
}

ac__user_t *ac__manager_user(ac__manager_t *m, const char *id, size_t len, uint64_t now)
{
    ac__user_t *u;

    if (len == 0 || len > AC__USER_ID_MAX)
        return NULL;
    u = ac__manager_find_user(m, id, len);
    if (u != NULL)
        return u;
    u = calloc(1, sizeof(*u) + len + 1);
    if (u == NULL)
        return NULL;
    memcpy(u->id, id, len);
    u->id_len = (uint16_t)len;
    u->hash = hash_id(m, id, len);
    u->epoch = (uint32_t)splitmix64(&m->rng);
    u->last_active = now;
    if (m->nusers >= m->nbuckets)
        grow(m);
    u->hnext = m->buckets[u->hash & (m->nbuckets - 1)];
    m->buckets[u->hash & (m->nbuckets - 1)] = u;
    m->nusers++;
    return u;
}

static void unlink_conn(ac__manager_t *m, ac__mconn_t *c)
{
    ac__user_t *u = c->user;

    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        u->head = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    c->user = NULL;
    u->nconns--;
    m->nconns--;
    if (u->nconns == 0)
        m->users_connected--;
}

ac__mconn_t *ac__manager_attach(ac__manager_t *m, ac__user_t *u, ac__mconn_t *c)
{
    assert(c->user == NULL);
    c->id = m->next_conn_id++;
    c->user = u;
    c->next = NULL;
    if (u->head == NULL) {
        c->prev = NULL;
        u->head = c;
    } else {
        ac__mconn_t *last = u->head;
        while (last->next != NULL)
            last = last->next; /* at most the per-user cap: no tail pointer to keep */
        last->next = c;
        c->prev = last;
    }
    if (u->nconns++ == 0)
        m->users_connected++;
    m->nconns++;
    if (u->nconns <= m->max_per_user)
        return NULL;
    ac__mconn_t *oldest = u->head;
    unlink_conn(m, oldest);
    return oldest;
}

void ac__manager_detach(ac__manager_t *m, ac__mconn_t *c, uint64_t now)
{
    if (c->user == NULL)
        return;
    c->user->last_active = now;
    unlink_conn(m, c);
}

ac__mconn_t *ac__manager_find_conn(const ac__user_t *u, uint64_t id)
{
    for (ac__mconn_t *c = u->head; c != NULL; c = c->next) {
        if (c->id == id)
            return c;
    }
    return NULL;
}

size_t ac__manager_expire(ac__manager_t *m, uint64_t now, uint64_t history_ttl, uint64_t seq_ttl)
{
    size_t removed = 0;

    if (seq_ttl < history_ttl)
        seq_ttl = history_ttl;
    for (size_t b = 0; b < m->nbuckets; b++) {
        ac__user_t **pp = &m->buckets[b];
        while (*pp != NULL) {
            ac__user_t *u = *pp;
            if (u->nconns != 0 || u->bs != NULL) {
                pp = &u->hnext;
                continue;
            }
            if (u->hist != NULL && u->last_active + history_ttl <= now)
                ac__history_drop(&m->history, u);
            if (u->last_active + seq_ttl <= now) {
                *pp = u->hnext;
                ac__history_drop(&m->history, u);
                free(u);
                m->nusers--;
                removed++;
            } else {
                pp = &u->hnext;
            }
        }
    }
    return removed;
}

void ac__user_epoch_str(const ac__user_t *u, char out[9])
{
    static const char hex[] = "0123456789abcdef";

    for (int i = 0; i < 8; i++)
        out[i] = hex[(u->epoch >> (28 - 4 * i)) & 15];
    out[8] = '\0';
}

void ac__manager_foreach(ac__manager_t *m, ac__mconn_fn fn, void *arg)
{
    ac__manager_foreach_slice(m, 0, 1, fn, arg);
}

void ac__manager_foreach_slice(ac__manager_t *m, unsigned slice, unsigned nslices, ac__mconn_fn fn,
                               void *arg)
{
    size_t from = m->nbuckets * slice / nslices;
    size_t to = m->nbuckets * (slice + 1) / nslices;

    for (size_t b = from; b < to && b < m->nbuckets; b++) {
        for (ac__user_t *u = m->buckets[b]; u != NULL; u = u->hnext) {
            ac__mconn_t *c = u->head;
            while (c != NULL) {
                ac__mconn_t *next = c->next;
                fn(c, arg);
                c = next;
            }
        }
    }
}
