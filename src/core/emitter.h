/* The emitter: turns an accepted event into its envelope, serialised once into a
 * reference-counted WebSocket text frame; hands out each user's seq; counts events by
 * type. Also builds the server-only messages (connected, ping, resync, error, closing).
 * Pure logic; loop thread only. */
#ifndef AC_CORE_EMITTER_H
#define AC_CORE_EMITTER_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "core/buf.h"
#include "core/event.h"
#include "core/manager.h"

typedef struct ac__emitter_s {
    uint64_t by_type[AC__EV_NTYPES];
    uint64_t events_total; /* events given a seq */
    uint64_t direct_total; /* direct messages */
    ac__sbuf_t scratch;    /* reused for every envelope */
    int64_t ts_sec;        /* the second ts_prefix was formatted for */
    char ts_prefix[20];    /* "YYYY-MM-DDTHH:MM:SS" of ts_sec */
} ac__emitter_t;

/* A string that may be absent (p == NULL). */
typedef struct ac__str_s {
    const char *p;
    size_t len;
} ac__str_t;

typedef struct ac__event_s {
    ac__ev_type_t type;
    ac__str_t type_name; /* as published (custom types keep their name) */
    ac__str_t run_id;
    ac__str_t thread_id;
    const json_t *data; /* an object; borrowed; NULL: data_raw */
    ac__str_t data_raw; /* or the object's text as published (core/jscan accepted it);
                           both absent: {} */
    int data_ws;        /* data_raw has whitespace between tokens (compacted on copy) */
} ac__event_t;

void ac__emitter_init(ac__emitter_t *e);
void ac__emitter_dispose(ac__emitter_t *e);

/* Gives the event the user's next seq, counts it and returns its frame (one reference,
 * the caller's; buf->seq is the seq). `ts_ms` is the acceptance time. NULL when out of
 * memory, in which case no seq was consumed. */
ac__buf_t *ac__emitter_event(ac__emitter_t *e, ac__user_t *u, const ac__event_t *ev, int64_t ts_ms);

/* A direct message to one connection: the same envelope without a seq. */
ac__buf_t *ac__emitter_direct(ac__emitter_t *e, const ac__user_t *u, const ac__event_t *ev,
                              int64_t ts_ms);

/* Appends an event's envelope to `out` for a broker that numbers events itself: with
 * `split`, the seq field is left open there (its digits go between the two parts);
 * without, the envelope has no seq (a direct message). Counts nothing. 0 or AC_ENOMEM. */
int ac__emitter_envelope(ac__emitter_t *e, ac__sbuf_t *out, ac__str_t user, const ac__event_t *ev,
                         int64_t ts_ms, size_t *split);

/* A server-only message: {"type":type[,"user_id"][,"thread_id"],"timestamp",["data":data_json]}.
 * `user` and `thread` may be absent; data_json is a JSON object text or NULL. */
ac__buf_t *ac__emitter_server_msg(ac__emitter_t *e, const char *type, ac__str_t user,
                                  ac__str_t thread, const char *data_json, int64_t ts_ms);

/* Wraps `len` bytes as a WebSocket frame with `opcode` (a control frame's payload must be
 * at most 125 bytes). One reference, the caller's. */
ac__buf_t *ac__frame_raw(unsigned opcode, const void *payload, size_t len);

#endif
