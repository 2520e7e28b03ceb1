/* The publish path's JSON scanner (jscan.h). It validates exactly what jansson does for
 * the subset it handles (RFC 8259 grammar, UTF-8 as jansson checks it, escapes and
 * surrogate pairs, no duplicate keys) and answers -1 for everything else. */
#include <string.h>

#include "core/buf.h"
#include "core/jscan.h"
#include "core/utf8.h"

void ac__jscan_init(ac__jscan_t *j, const char *p, size_t len)
{
    j->p = p;
    j->end = p + len;
    j->depth = 0;
    j->ws = 0;
    j->esc = 0;
}

int ac__jscan_skip_ws(ac__jscan_t *j)
{
    const char *p = j->p;

    while (p < j->end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    if (p != j->p) {
        j->ws = 1;
        j->p = p;
    }
    return p < j->end ? (unsigned char)*p : -1;
}

/* Four hex digits at p (at least 4 bytes there); -1 when they are not. */
static long hex4(const unsigned char *p)
{
    long v = 0;

    for (int i = 0; i < 4; i++) {
        unsigned c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= c - '0';
        else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
            v |= (c | 0x20) - 'a' + 10;
        else
            return -1;
    }
    return v;
}

/* A string at j->p (its opening quote); j->p ends past its closing quote. */
static int scan_string(ac__jscan_t *j)
{
    const unsigned char *p = (const unsigned char *)j->p + 1;
    const unsigned char *end = (const unsigned char *)j->end;

    j->esc = 0;
    for (;;) {
        p += ac__json_plain_prefix((const char *)p, (size_t)(end - p), 1);
        if (p >= end)
            return -1;
        unsigned c = *p;
        if (c == '"')
            break;
        if (c < 0x20)
            return -1;
        if (c >= 0x80) {
            size_t n = ac__utf8_char_len(p, (size_t)(end - p));
            if (n == 0)
                return -1;
            p += n;
            continue;
        }
        if (c != '\\') {
            p++;
            continue;
        }
        j->esc = 1;
        if (end - p < 2)
            return -1;
        c = p[1];
        if (c != 'u') {
            if (!strchr("\"\\/bfnrt", (int)c) || c == '\0')
                return -1;
            p += 2;
            continue;
        }
        long cp = end - p >= 6 ? hex4(p + 2) : -1;
        if (cp < 0 || (cp >= 0xDC00 && cp <= 0xDFFF))
            return -1;
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            long lo = end - p >= 12 && p[6] == '\\' && p[7] == 'u' ? hex4(p + 8) : -1;
            if (lo < 0xDC00 || lo > 0xDFFF)
                return -1;
            p += 6;
        }
        p += 6;
    }
    j->p = (const char *)p + 1;
    return 0;
}

/* A number at j->p. Exponents and integers past 18 digits are left to jansson (its range
 * checks); so are reals of more than 300 characters. */
static int scan_number(ac__jscan_t *j)
{
    const char *p = j->p, *end = j->end, *digits;
    int real = 0;

    if (p < end && *p == '-')
        p++;
    digits = p;
    if (p >= end || *p < '0' || *p > '9')
        return -1;
    if (*p == '0')
        p++;
    else
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    if (p < end && *p == '.') {
        p++;
        if (p >= end || *p < '0' || *p > '9')
            return -1;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
        real = 1;
    }
    if (p < end && (*p == 'e' || *p == 'E'))
        return -1;
    if (p - digits > (real ? 300 : 18))
        return -1;
    j->p = p;
    return 0;
}

static int scan_word(ac__jscan_t *j, const char *w, size_t n)
{
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, w, n) != 0)
        return -1;
    j->p += n;
    return 0;
}

void ac__jscan_object(ac__jscan_t *j, ac__jobj_t *o)
{
    j->p++;
    o->n = 0;
}

int ac__jscan_member(ac__jscan_t *j, ac__jobj_t *o, const char **key, size_t *klen)
{
    int c = ac__jscan_peek(j);
    const char *k;
    size_t kl;

    if (c == '}') {
        j->p++;
        return 0;
    }
    if (o->n > 0) {
        if (c != ',')
            return -1;
        j->p++;
        c = ac__jscan_peek(j);
    }
    if (c != '"')
        return -1;
    k = j->p + 1;
    if (scan_string(j) != 0 || j->esc)
        return -1;
    kl = (size_t)(j->p - 1 - k);
    for (unsigned i = 0; i < o->n; i++) {
        if (o->keys[i].len == kl &&
            (kl == 0 || (o->keys[i].p[0] == k[0] && memcmp(o->keys[i].p, k, kl) == 0)))
            return -1;
    }
    if (o->n == AC__JSCAN_MAX_KEYS || ac__jscan_peek(j) != ':')
        return -1;
    j->p++;
    o->keys[o->n].p = k;
    o->keys[o->n].len = kl;
    o->n++;
    *key = k;
    *klen = kl;
    return 1;
}

void ac__jscan_array(ac__jscan_t *j, int *first)
{
    j->p++;
    *first = 1;
}

int ac__jscan_element(ac__jscan_t *j, int *first)
{
    int c = ac__jscan_peek(j);

    if (c == ']') {
        j->p++;
        return 0;
    }
    if (!*first) {
        if (c != ',')
            return -1;
        j->p++;
    }
    *first = 0;
    return 1;
}

int ac__jscan_value(ac__jscan_t *j, int *kind, const char **start)
{
    int c = ac__jscan_peek(j), r, sub;
    const char *k, *s;
    size_t kl;

    *start = j->p;
    switch (c) {
    case '{': {
        ac__jobj_t o;
        if (++j->depth > AC__JSCAN_MAX_DEPTH)
            return -1;
        ac__jscan_object(j, &o);
        while ((r = ac__jscan_member(j, &o, &k, &kl)) == 1) {
            if (ac__jscan_value(j, &sub, &s) != 0)
                return -1;
        }
        j->depth--;
        *kind = AC__J_OBJECT;
        return r;
    }
    case '[': {
        int first;
        if (++j->depth > AC__JSCAN_MAX_DEPTH)
            return -1;
        ac__jscan_array(j, &first);
        while ((r = ac__jscan_element(j, &first)) == 1) {
            if (ac__jscan_value(j, &sub, &s) != 0)
                return -1;
        }
        j->depth--;
        *kind = AC__J_ARRAY;
        return r;
    }
    case '"':
        *kind = AC__J_STRING;
        return scan_string(j);
    case 't':
        *kind = AC__J_TRUE;
        return scan_word(j, "true", 4);
    case 'f':
        *kind = AC__J_FALSE;
        return scan_word(j, "false", 5);
    case 'n':
        *kind = AC__J_NULL;
        return scan_word(j, "null", 4);
    default:
        *kind = AC__J_NUMBER;
        return scan_number(j);
    }
}

int ac__jscan_finish(ac__jscan_t *j)
{
    return ac__jscan_peek(j) == -1 ? 0 : -1;
}

int ac__json_kind(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return AC__J_OBJECT;
    case JSON_ARRAY:
        return AC__J_ARRAY;
    case JSON_STRING:
        return AC__J_STRING;
    case JSON_TRUE:
        return AC__J_TRUE;
    case JSON_FALSE:
        return AC__J_FALSE;
    case JSON_NULL:
        return AC__J_NULL;
    default:
        return AC__J_NUMBER;
    }
}

size_t ac__json_compact(char *dst, const char *src, size_t len)
{
    size_t o = 0;
    int in_string = 0;

    for (size_t i = 0; i < len; i++) {
        char c = src[i];
        if (in_string) {
            dst[o++] = c;
            if (c == '\\' && i + 1 < len)
                dst[o++] = src[++i];
            else if (c == '"')
                in_string = 0;
        } else if (c != ' ' && c != '\n' && c != '\r' && c != '\t') {
            dst[o++] = c;
            in_string = c == '"';
        }
    }
    return o;
}
