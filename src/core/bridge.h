/* The bridge: the lifecycle of agent runs. A run opens with agent_started, carries
 * thinking, tool calls and custom events while open, and closes for good with
 * agent_completed or agent_error (or the gateway's timeout). Checks are pure and can be
 * made for a whole batch before any of it is applied (all or nothing). Loop thread only. */
#ifndef AC_CORE_BRIDGE_H
#define AC_CORE_BRIDGE_H

#include <stddef.h>
#include <stdint.h>

#include "core/emitter.h"
#include "core/event.h"

typedef enum { AC__RUN_UNKNOWN = 0, AC__RUN_OPEN = 1, AC__RUN_CLOSED = 2 } ac__run_state_t;

typedef enum {
    AC__CLOSED_BY_NONE = 0,
    AC__CLOSED_BY_COMPLETED,
    AC__CLOSED_BY_ERROR,
    AC__CLOSED_BY_TIMEOUT
} ac__closed_by_t;

typedef struct ac__run_s {
    struct ac__run_s *hnext;
    struct ac__run_s *prev; /* open runs by last event, oldest first; or closed runs by close */
    struct ac__run_s *next;
    char *user_id;
    char *thread_id; /* NULL when none */
    char **tools;    /* tool_call_ids executing */
    uint32_t ntools;
    uint32_t tools_cap;
    uint64_t last_seq;
    uint64_t events;
    uint64_t touched;   /* caller's monotonic ms of the last event (or of the close) */
    int64_t started_ms; /* wall clock */
    int64_t updated_ms;
    uint32_t hash;
    uint8_t state;
    uint8_t closed_by;
    uint8_t timing_out; /* the gateway is publishing its timeout error */
    uint16_t id_len;
    char id[];
} ac__run_t;

typedef struct ac__bridge_s {
    ac__run_t **buckets;
    size_t nbuckets;
    size_t nruns;
    size_t nopen;
    uint64_t seed;
    ac__run_t *open_head, *open_tail;
    ac__run_t *closed_head, *closed_tail;
    /* Optional: told when a run id becomes known (added 1) and when it is forgotten (0), so
     * a registry over several bridges (--threads) can keep one owner per run id. */
    void (*on_run)(void *arg, const char *id, size_t len, int added);
    void *on_run_arg;
} ac__bridge_t;

/* What one event asks of the lifecycle. */
typedef struct ac__run_op_s {
    ac__ev_type_t type;
    ac__str_t run_id; /* p NULL: not part of a run; nothing to check */
    ac__str_t user_id;
    ac__str_t thread_id;
    ac__str_t tool_call_id; /* for tool_executing / tool_completed */
} ac__run_op_t;

int ac__bridge_init(ac__bridge_t *b);
void ac__bridge_dispose(ac__bridge_t *b);

ac__run_t *ac__bridge_find(const ac__bridge_t *b, const char *id, size_t len);

/* Checks ops[0..n) in order, each against the runs as the ops before it would leave
 * them. Returns 0, or -1 with *bad the failing op's index and *reason a static text
 * naming the rule. Changes nothing. AC_ENOMEM is returned as -2. */
int ac__bridge_check(const ac__bridge_t *b, const ac__run_op_t *ops, size_t n, size_t *bad,
                     const char **reason);

/* Applies one op that was checked and published with `seq`, at monotonic `now` and wall
 * clock `wall_ms`. Returns 0 or AC_ENOMEM. */
int ac__bridge_apply(ac__bridge_t *b, const ac__run_op_t *op, uint64_t seq, uint64_t now,
                     int64_t wall_ms);

/* The open run silent the longest, when it has been silent for `timeout` at `now`; else
 * NULL. The caller publishes the timeout error (marking run->timing_out first). */
ac__run_t *ac__bridge_next_timeout(const ac__bridge_t *b, uint64_t now, uint64_t timeout);

/* Closes a run without an event (when its timeout error could not be published). */
void ac__bridge_force_close(ac__bridge_t *b, ac__run_t *r, uint64_t now);

/* Forgets closed runs closed `ttl` or more before `now`. Returns how many. */
size_t ac__bridge_expire(ac__bridge_t *b, uint64_t now, uint64_t ttl);

const char *ac__run_closed_by_name(ac__closed_by_t c);

#endif
