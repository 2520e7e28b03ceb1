/* The manager: users -> their open connections, in creation order. It enforces the
 * per-user cap (the oldest connection is the one evicted) and keeps each user's seq
 * stream (newest seq, epoch) while the user is connected or recently active. Pure logic:
 * connections are intrusive links (ac__mconn_t) embedded in net's connection objects; the
 * manager never frees or closes one, it tells the caller which to close. Loop thread
 * only. */
#ifndef AC_CORE_MANAGER_H
#define AC_CORE_MANAGER_H

#include <stddef.h>
#include <stdint.h>

#include "core/history.h"

typedef struct ac__user_s ac__user_t;

typedef struct ac__mconn_s {
    struct ac__mconn_s *prev; /* the user's connections, oldest first */
    struct ac__mconn_s *next;
    ac__user_t *user; /* NULL while not attached */
    uint64_t id;      /* unique, increasing: creation order */
} ac__mconn_t;

/* 64 bytes + the id on x86_64: a user with one connection costs an 80-byte allocation
 * for a short id. */
struct ac__user_s {
    ac__user_t *hnext;    /* hash chain */
    ac__mconn_t *head;    /* oldest connection; the list is short (the per-user cap) */
    uint64_t seq;         /* newest seq handed out in this user's stream (0: none yet) */
    uint64_t last_active; /* caller's clock (ms) at the last event or last close */
    uint32_t hash;
    uint32_t nconns;
    uint32_t epoch; /* names this seq stream; new when the stream is created anew */
    uint16_t id_len;
    ac__history_t *hist; /* retained frames (and the store's LRU links), NULL when none */
    void *bs;            /* the broker's state for this user (redis: subscription), or NULL */
    char id[];           /* NUL-terminated */
};

typedef struct ac__manager_s {
    ac__user_t **buckets;
    size_t nbuckets;        /* a power of two */
    size_t nusers;          /* user records (seq streams kept) */
    size_t users_connected; /* users with at least one connection */
    size_t nconns;          /* attached connections */
    unsigned max_per_user;
    unsigned max_total;
    ac__history_store_t history;
    uint64_t seed;
    uint64_t rng;
    uint64_t next_conn_id;
} ac__manager_t;

#define AC__USER_ID_MAX 256

/* Initialises an empty manager with the per-user cap and the global cap on attached
 * connections; returns 0 or AC_ENOMEM. */
int ac__manager_init(ac__manager_t *m, unsigned max_per_user, unsigned max_total);

/* 1 when the global cap leaves no room for one more connection. */
static inline int ac__manager_full(const ac__manager_t *m)
{
    return m->nconns >= m->max_total;
}

/* Frees every user record. Connections still attached are unlinked (their `user` becomes
 * NULL); the caller owns and frees them. */
void ac__manager_dispose(ac__manager_t *m);

/* Looks up a user; NULL when there is no record. */
ac__user_t *ac__manager_find_user(const ac__manager_t *m, const char *id, size_t len);

/* Looks up a user, creating its record (seq 0, a fresh epoch) when missing. Returns NULL
 * when out of memory or when `len` is 0 or over AC__USER_ID_MAX. */
ac__user_t *ac__manager_user(ac__manager_t *m, const char *id, size_t len, uint64_t now);

/* Attaches `c` (not attached) as the user's newest connection and gives it its id. When
 * that puts the user over the per-user cap, the oldest connection is detached and
 * returned (the caller closes it with 4001); otherwise NULL. */
ac__mconn_t *ac__manager_attach(ac__manager_t *m, ac__user_t *u, ac__mconn_t *c);

/* Detaches `c` from its user (no-op when not attached). The user record stays, marked
 * active at `now`, until ac__manager_expire() removes it. */
void ac__manager_detach(ac__manager_t *m, ac__mconn_t *c, uint64_t now);

/* The user's connection with this id, or NULL. Cost: the user's connections. */
ac__mconn_t *ac__manager_find_conn(const ac__user_t *u, uint64_t id);

/* Users with no connection whose last activity is older than `history_ttl` at `now` lose
 * their retained frames; older than `seq_ttl` (>= history_ttl), their record too: seq and
 * epoch outlive the history, so a seq is never handed out twice within an epoch. Those the
 * broker still keeps state for are left alone. Returns how many records were removed. */
size_t ac__manager_expire(ac__manager_t *m, uint64_t now, uint64_t history_ttl, uint64_t seq_ttl);

/* Calls fn for every attached connection. fn may detach the connection it is given (and
 * no other). */
typedef void (*ac__mconn_fn)(ac__mconn_t *c, void *arg);
void ac__manager_foreach(ac__manager_t *m, ac__mconn_fn fn, void *arg);

/* The same for slice `slice` of `nslices` (0 <= slice < nslices) of the users: the slices
 * together cover every connection once while the table does not grow. */
void ac__manager_foreach_slice(ac__manager_t *m, unsigned slice, unsigned nslices, ac__mconn_fn fn,
                               void *arg);

/* Writes the epoch as 8 lowercase hex digits + NUL. */
void ac__user_epoch_str(const ac__user_t *u, char out[9]);

#endif
