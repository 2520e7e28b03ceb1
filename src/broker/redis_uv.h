/* What the Redis broker needs below its protocol: hiredis on a libuv loop, one Redis
 * address (redis://HOST:PORT[/DB]) parsed and probed, and the shard a user lives on. No
 * broker state here. */
#ifndef AC_BROKER_REDIS_UV_H
#define AC_BROKER_REDIS_UV_H

#include <stddef.h>
#include <stdint.h>

#include <hiredis/async.h>
#include <uv.h>

typedef struct ac__redis_addr_s {
    char host[256];
    int port;
    int db;
} ac__redis_addr_t;

/* Drives `ac` from `loop` (a uv_poll_t on its socket, freed when hiredis lets go of the
 * context). Returns 0, or -1 when out of memory or the poll cannot start. */
int ac__redis_uv_attach(redisAsyncContext *ac, uv_loop_t *loop);

/* Parses one "redis://HOST:PORT[/DB]" of `len` bytes (HOST may be [v6]) into *a. Returns 0,
 * or -1 with *why naming the flag and the bad URL. */
int ac__redis_addr_parse(const char *url, size_t len, ac__redis_addr_t *a, char *why,
                         size_t whylen);

/* One blocking connection with AUTH (`password` NULL: none), SELECT and PING, 2 s each, to
 * fail fast at start. Returns 0 or -1 with *why. */
int ac__redis_probe(const ac__redis_addr_t *a, const char *password, char *why, size_t whylen);

/* The shard (0 .. nshards-1) of a user id: FNV-1a 64 of its bytes, then Lamping and
 * Veach's jump consistent hash, so every node given the same list agrees, and growing the
 * list from n to n+1 shards moves only 1/(n+1) of the users. */
unsigned ac__redis_shard_of(const char *user, size_t len, unsigned nshards);

/* Redis Cluster: the slot (0..16383) of a hash tag's text (CRC16/XMODEM, as Redis). */
unsigned ac__redis_slot(const char *tag, size_t len);

/* A user's hash tag in a Redis Cluster: 8 hex digits of its FNV-1a hash, NUL-terminated. */
void ac__redis_user_tag(const char *user, size_t len, char out[9]);

/* One master of a Redis Cluster and the slots it serves (CLUSTER SLOTS). */
typedef struct ac__redis_master_s {
    ac__redis_addr_t addr;
    uint16_t lo[64], hi[64]; /* its slot ranges */
    unsigned nranges;
} ac__redis_master_t;

/* Asks the seed `a` (blocking, 2 s) for the cluster's masters: up to `cap` into out[],
 * *n set. Returns 0, or -1 with *why (unreachable, not a cluster, slots not all served). */
int ac__redis_cluster_masters(const ac__redis_addr_t *a, const char *password,
                              ac__redis_master_t *out, unsigned cap, unsigned *n, char *why,
                              size_t whylen);

#endif
