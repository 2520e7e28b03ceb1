/* Reference-counted byte buffers: one event is serialised once into a buffer (a whole
 * WebSocket frame) and every connection that sends it holds a reference. Loop thread
 * only: the count is a plain integer, not an atomic. */
#ifndef AC_CORE_BUF_H
#define AC_CORE_BUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct ac__buf_s {
    uint32_t refs; /* holders: queues, history, the builder until it lets go */
    uint32_t len;  /* bytes in data */
    uint64_t seq;  /* the event's seq, 0 for frames that have none */
    uint64_t t_ns; /* when the event was accepted (uv_hrtime clock), 0 when not an event */
    char data[];
} ac__buf_t;

/* A buffer with room for `len` bytes and one reference (the caller's). NULL when out of
 * memory. */
ac__buf_t *ac__buf_new(size_t len);

static inline ac__buf_t *ac__buf_ref(ac__buf_t *b)
{
    b->refs++;
    return b;
}

/* Drops one reference; frees the buffer with the last. */
void ac__buf_unref(ac__buf_t *b);

/* A growable byte string for building frames and bodies. */
typedef struct ac__sbuf_s {
    char *p;
    size_t len;
    size_t cap;
} ac__sbuf_t;

int ac__sbuf_reserve(ac__sbuf_t *s, size_t extra);
int ac__sbuf_append(ac__sbuf_t *s, const void *p, size_t n);
int ac__sbuf_printf(ac__sbuf_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends `p` as a JSON string literal (quotes included, escaped). */
int ac__sbuf_json_str(ac__sbuf_t *s, const char *p, size_t n);
void ac__sbuf_dispose(ac__sbuf_t *s);

/* Appends v in decimal (no printf: this runs per event). 0 or AC_ENOMEM. */
int ac__sbuf_u64(ac__sbuf_t *s, uint64_t v);

#endif
