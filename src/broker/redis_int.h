/* The Redis broker's private parts, shared by redis.c (links, streams, subscriptions, runs,
 * upkeep) and redis_pub.c (publishing: a body split per shard). Not an interface. */
#ifndef AC_BROKER_REDIS_INT_H
#define AC_BROKER_REDIS_INT_H

#include <stdint.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <uv.h>

#include "broker/broker.h"
#include "core/manager.h"
#include "broker/redis_uv.h"

#define HB_INTERVAL_MS 1000 /* PING (round-trip time, liveness) and the node's heartbeat */
#define HB_TTL_MS 15000     /* a node silent this long no longer counts in the registry */
#define PING_DEADLINE_MS 3000
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000
#define HELD_MAX 4096 /* frames held per user while a gap is being filled */
#define RTT_RING 1024

enum { SUB_NONE = 0, SUB_PENDING, SUB_ON, SUB_LEAVING };

typedef struct waiter_s {
    uint64_t conn_id;
    uint64_t snap; /* greeted up to this seq; live once the node has reached it */
} waiter_t;

/* A subscribed user's state on this node (u->bs). */
typedef struct ustate_s {
    uint8_t sub;
    uint8_t synced;  /* u->seq and u->epoch are this node's position in the stream */
    uint8_t syncing; /* a sync is in flight */
    uint8_t resub;   /* subscribe again once the pending unsubscribe is confirmed */
    uint32_t nheld, held_cap;
    ac__buf_t **held; /* events past a gap, in arrival (= seq) order */
    uint32_t nwait, wait_cap;
    waiter_t *wait;
    uint32_t nqueued, queued_cap;
    ac__join_req_t *queued; /* joins waiting for the subscription */
    uint32_t joins;         /* joins in flight */
    struct link_s *lk;      /* the user's shard */
} ustate_t;

typedef struct rb_s rb_t;

/* One shard: a Redis, its two connections and their state. */
typedef struct link_s {
    rb_t *r;
    unsigned idx;
    ac__redis_addr_t addr;
    redisAsyncContext *cmd;
    redisAsyncContext *sub;
    int cmd_ready; /* connected, authenticated, database selected, script loaded */
    int sub_ready;
    int up;
    int in_down;
    char sha[41];
    unsigned backoff_ms;
    uint64_t next_attempt;    /* uv_now() of the next connection attempt */
    uint64_t ping_sent;       /* uv_now() of the PING in flight, 0: none */
    uint64_t connect_started; /* uv_now() of the attempt not yet up, 0: none */
    uint64_t last_beat;       /* uv_now() of the last PING + heartbeat */
    uint64_t reconnects;
    uint64_t open_runs; /* on this shard, as of the last sweep */
    size_t subscribed;
    char tag[16]; /* a Redis Cluster master's own hash tag ("{N}"), "" otherwise */
} link_t;

struct rb_s {
    ac__broker_t base;
    uv_loop_t *loop;
    ac__manager_t *manager;
    ac__redis_opts_t o;
    char *prefix;
    char *password;
    char node[17];
    link_t *links;
    unsigned nlinks;
    uint8_t *slots; /* a Redis Cluster's slot -> link; NULL: shards by consistent hash */
    int started;    /* every shard was up once: the node serves */
    int closing;
    uv_timer_t *timer; /* its own allocation: freed by its close callback */
    uint64_t rng;
    uint64_t rtt_us[RTT_RING];
    uint64_t rtt_n;
    uint64_t rtt_max;
    uint64_t gaps_filled;
    uint64_t resets;
    ac__run_timeout_fn on_timeout;
    void *timeout_arg;
};

#define KEY_ID_MAX (AC__USER_ID_MAX + 16)
#define SCRIPT_HEAD 6 /* EVALSHA sha 0 op prefix tag */

/* A fresh epoch (8 hex digits) for a stream the script may create. */
void ac__rb_new_epoch(rb_t *r, char out[9]);

/* Records the round trip of a reply to a command sent at uv_hrtime() t0_ns. */
void ac__rb_observe_rtt(rb_t *r, uint64_t t0_ns);

/* An integer or a decimal string reply as a number (0 otherwise). */
uint64_t ac__rb_reply_u64(const redisReply *x);

/* The shard (or Redis Cluster master) of a user id. */
link_t *ac__rb_link_of(rb_t *r, const char *user, size_t ulen);

/* The id a user's keys and channel are built from, into buf (KEY_ID_MAX bytes): the id, or
 * in a Redis Cluster "{TAG}id", TAG naming the user's slot. Returns its length. */
size_t ac__rb_key_id(const rb_t *r, const char *user, size_t ulen, char *buf);

/* The first SCRIPT_HEAD arguments of every call of the one script on link l. */
void ac__rb_script_head(const link_t *l, const char *op, const char **argv, size_t *lens);

/* A subscribed user's state on this node. */
static inline ustate_t *ac__rb_ustate(ac__user_t *u)
{
    return u->bs;
}

/* A command on the shard's `cmd` with argv; fn may be NULL. Returns 0 or -1 when not
 * connected. */
int ac__rb_command(link_t *l, redisCallbackFn *fn, void *priv, int argc, const char **argv,
                   const size_t *lens);

/* A call of the script with at most 8 arguments, each a NUL-terminated string. Returns 0 or
 * -1 when not connected. */
int ac__rb_script(link_t *l, redisCallbackFn *fn, void *priv, const char *op, int n,
                  const char *const *args);

/* CONNID@NODE: a connection of this node in the registry. */
void ac__rb_member_of(const rb_t *r, uint64_t conn_id, char out[40]);

/* The user id in a key id (a Redis Cluster's "{TAG}id" without its tag). */
const char *ac__rb_user_of_key_id(const rb_t *r, const char *kid, size_t *len);

/* redis_stream.c: the user's held frames dropped; its state freed (u->bs NULL); a
 * SUBSCRIBE or UNSUBSCRIBE of its channel on its shard; the vtable's join and leave. */
void ac__rb_held_clear(ustate_t *st);
void ac__rb_ustate_free(ac__user_t *u);
void ac__rb_subscribe_user(rb_t *r, ac__user_t *u, const char *verb);
int ac__rb_join(ac__broker_t *b, ac__user_t *u, const ac__join_req_t *req);
void ac__rb_leave(ac__broker_t *b, ac__user_t *u, uint64_t conn_id);

/* The vtable's publish_batch (redis_pub.c). */
int ac__rb_publish_batch(ac__broker_t *b, const ac__pub_item_t *items, size_t n,
                         ac__pub_done_cb done, void *arg);

#endif
