/* Reference-counted frame buffers and a growable byte string. No I/O. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agentcast.h"
#include "core/buf.h"

ac__buf_t *ac__buf_new(size_t len)
{
    ac__buf_t *b;

    if (len > UINT32_MAX)
        return NULL;
    b = malloc(sizeof(*b) + len);
    if (b == NULL)
        return NULL;
    b->refs = 1;
    b->len = (uint32_t)len;
    b->seq = 0;
    b->t_ns = 0;
    return b;
}

void ac__buf_unref(ac__buf_t *b)
{
    if (--b->refs == 0)
        free(b);
}

int ac__sbuf_reserve(ac__sbuf_t *s, size_t extra)
{
    size_t want = s->len + extra;
    size_t cap = s->cap ? s->cap : 256;
    char *p;

    if (want <= s->cap)
        return 0;
    while (cap < want)
        cap *= 2;
    p = realloc(s->p, cap);
    if (p == NULL)
        return AC_ENOMEM;
    s->p = p;
    s->cap = cap;
    return 0;
}

int ac__sbuf_append(ac__sbuf_t *s, const void *p, size_t n)
{
    if (ac__sbuf_reserve(s, n) != 0)
        return AC_ENOMEM;
    memcpy(s->p + s->len, p, n);
    s->len += n;
    return 0;
}

int ac__sbuf_printf(ac__sbuf_t *s, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || ac__sbuf_reserve(s, (size_t)n + 1) != 0)
        return AC_ENOMEM;
    va_start(ap, fmt);
    vsnprintf(s->p + s->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    s->len += (size_t)n;
    return 0;
}

int ac__sbuf_json_str(ac__sbuf_t *s, const char *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";

    /* Worst case every byte becomes \u00XX. */
    if (ac__sbuf_reserve(s, n * 6 + 2) != 0)
        return AC_ENOMEM;
    char *o = s->p + s->len;
    *o++ = '"';
    for (size_t i = 0; i < n; i++) {
        size_t k = ac__json_plain_prefix(p + i, n - i, 0);
        memcpy(o, p + i, k);
        o += k;
        i += k;
        if (i == n)
            break;
        unsigned char c = (unsigned char)p[i];
        if (c == '"' || c == '\\') {
            *o++ = '\\';
            *o++ = (char)c;
        } else if (c < 0x20) {
            *o++ = '\\';
            *o++ = 'u';
            *o++ = '0';
            *o++ = '0';
            *o++ = hex[c >> 4];
            *o++ = hex[c & 15];
        } else {
            *o++ = (char)c;
        }
    }
    *o++ = '"';
    s->len = (size_t)(o - s->p);
    return 0;
}

void ac__sbuf_dispose(ac__sbuf_t *s)
{
    free(s->p);
    s->p = NULL;
    s->len = s->cap = 0;
}

int ac__sbuf_u64(ac__sbuf_t *s, uint64_t v)
{
    char digits[20];
    size_t n = 0;

    do {
        digits[sizeof(digits) - 1 - n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    return ac__sbuf_append(s, digits + sizeof(digits) - n, n);
}
