/* Reference-counted byte buffers: one event is serialised once into a buffer (a whole
 * WebSocket frame) and every connection that sends it holds a reference. Loop thread
 * only: the count is a plain integer, not an atomic. */
#ifndef AC_CORE_BUF_H
#define AC_CORE_BUF_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

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

/* The length of the longest prefix of p[0..n) that a JSON string holds as is: no '"', no
 * '\\', no control character (< 0x20) and, with `ascii`, no byte >= 0x80. Eight bytes at a
 * time: the hot loop of the publish path's scanner and of envelope building. */
static inline size_t ac__json_plain_prefix(const char *p, size_t n, int ascii)
{
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    size_t i = 0;

    /* Per word: a byte equal to '"' or '\\' (a zero byte after the xor), or below 0x20
     * (the classic has-less test). The lowest flag of each test marks the first such byte
     * exactly (a false flag can only sit above a true one), so on little-endian machines the
     * word gives the position; elsewhere the byte loop below finds it. */
    for (; i + 8 <= n; i += 8) {
        uint64_t x, q, b, t;
        memcpy(&x, p + i, 8);
        q = x ^ (ones * '"');
        b = x ^ (ones * '\\');
        t = (((q - ones) & ~q) | ((b - ones) & ~b) | ((x - ones * 0x20) & ~x) | (ascii ? x : 0)) &
            highs;
        if (t != 0) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
            return i + ((size_t)__builtin_ctzll(t) >> 3);
#else
            break;
#endif
        }
    }
    for (; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '"' || c == '\\' || c < 0x20 || (ascii && c >= 0x80))
            break;
    }
    return i;
}

void ac__sbuf_dispose(ac__sbuf_t *s);

/* Appends v in decimal (no printf: this runs per event). 0 or AC_ENOMEM. */
int ac__sbuf_u64(ac__sbuf_t *s, uint64_t v);

#endif
