/* Small helpers shared by the bench tools (loadgen.c, sendprobe.c): clock, PRNG, number
 * parsing, base64 and the WebSocket accept key, HTTP head and flat-JSON scanning, a
 * log-linear latency histogram, and /proc readers for another process's RSS and CPU.
 * Header-only (static inline) because each bench tool is built from one .c file. */
#ifndef AC_BENCH_LG_UTIL_H
#define AC_BENCH_LG_UTIL_H

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <openssl/sha.h>

#define NS_PER_S 1000000000LL

static inline int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
}

static inline uint64_t rng_next(uint64_t *s)
{
    /* xorshift64*: statistically fine for picking users, sockets and masking keys */
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static inline int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-')
        return -1;
    *out = v;
    return 0;
}

static inline int parse_u32(const char *s, uint32_t min, uint32_t *out)
{
    uint64_t v;
    if (parse_u64(s, &v) || v < min || v > UINT32_MAX)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

/* A positive finite number of seconds or events/s; -1 otherwise. */
static inline int parse_pos_double(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v > 0) || v > 1e12)
        return -1;
    *out = v;
    return 0;
}

static inline void base64_encode(const uint8_t *in, size_t n, char *out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        out[o++] = tab[(v >> 18) & 63];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? tab[v & 63] : '=';
    }
    out[o] = '\0';
}

/* The Sec-WebSocket-Accept a server must answer to `key` (RFC 6455 4.2.2). */
static inline void ws_accept_for(const char *key, char out[29])
{
    char buf[64];
    uint8_t digest[SHA_DIGEST_LENGTH];
    int n = snprintf(buf, sizeof(buf), "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", key);
    SHA1((const uint8_t *)buf, (size_t)n, digest);
    base64_encode(digest, sizeof(digest), out);
}

/* A fresh Sec-WebSocket-Key (base64 of 16 random bytes) into key[25]. */
static inline void ws_new_key(uint64_t *rng, char key[25])
{
    uint8_t raw[16];
    uint64_t r1 = rng_next(rng), r2 = rng_next(rng);
    memcpy(raw, &r1, 8);
    memcpy(raw + 8, &r2, 8);
    base64_encode(raw, 16, key);
}

/* Writes a masked client frame header for a FIN frame of `opcode` and `len` payload bytes
 * into hdr (at most 14 bytes); returns its length. The 4-byte mask key is the last four. */
static inline size_t ws_client_header(uint8_t *hdr, unsigned opcode, uint64_t len, uint32_t mask)
{
    size_t n = 0;
    hdr[n++] = (uint8_t)(0x80 | opcode);
    if (len < 126) {
        hdr[n++] = (uint8_t)(0x80 | len);
    } else if (len < 65536) {
        hdr[n++] = 0x80 | 126;
        hdr[n++] = (uint8_t)(len >> 8);
        hdr[n++] = (uint8_t)len;
    } else {
        hdr[n++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            hdr[n++] = (uint8_t)(len >> (8 * i));
    }
    memcpy(hdr + n, &mask, 4);
    return n + 4;
}

/* XORs p[0..n) with the 4-byte mask key `mask` (as laid out in the frame header). */
static inline void ws_mask(uint8_t *p, size_t n, uint32_t mask)
{
    uint64_t m8 = (uint64_t)mask << 32 | mask;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        w ^= m8;
        memcpy(p + i, &w, 8);
    }
    const uint8_t *mk = (const uint8_t *)&mask;
    for (; i < n; i++)
        p[i] ^= mk[i & 3];
}

/* Finds header `name` in an HTTP head (status line included); case-insensitive name. */
static inline bool http_header(const char *h, size_t hlen, const char *name, const char **val,
                               size_t *vlen)
{
    size_t nl = strlen(name);
    const char *p = h, *end = h + hlen;
    while (p < end) {
        const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
        if (!eol)
            eol = end;
        if ((size_t)(eol - p) > nl && p[nl] == ':' && strncasecmp(p, name, nl) == 0) {
            const char *v = p + nl + 1;
            const char *ve = eol;
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            *val = v;
            *vlen = (size_t)(ve - v);
            return true;
        }
        p = eol + 2;
    }
    return false;
}

/* The status code of an HTTP/1.x response head, or -1. */
static inline int http_status(const char *h, size_t hlen)
{
    if (hlen < 12 || memcmp(h, "HTTP/1.", 7) != 0 || h[8] != ' ')
        return -1;
    int code = 0;
    for (int i = 9; i < 12; i++) {
        if (h[i] < '0' || h[i] > '9')
            return -1;
        code = code * 10 + (h[i] - '0');
    }
    return code;
}

/* Minimal JSON field access for the hot path: the unsigned integer after `key` (which
 * includes the quotes and colon, e.g. "\"seq\":"). Our envelopes never nest a same-named key
 * before the one we mean. */
static inline bool json_u64(const char *p, size_t n, const char *key, uint64_t *out)
{
    size_t kl = strlen(key);
    const char *k = memmem(p, n, key, kl);
    if (!k)
        return false;
    const char *d = k + kl, *end = p + n;
    while (d < end && *d == ' ')
        d++;
    if (d >= end || *d < '0' || *d > '9')
        return false;
    uint64_t v = 0;
    while (d < end && *d >= '0' && *d <= '9')
        v = v * 10 + (uint64_t)(*d++ - '0');
    *out = v;
    return true;
}

/* The string value after `key` (quotes and colon included, e.g. "\"type\":"), without its
 * quotes; escapes are not decoded (the values we read never need them). */
static inline bool json_str(const char *p, size_t n, const char *key, const char **val,
                            size_t *vlen)
{
    size_t kl = strlen(key);
    const char *k = memmem(p, n, key, kl);
    if (!k)
        return false;
    const char *d = k + kl, *end = p + n;
    while (d < end && *d == ' ')
        d++;
    if (d >= end || *d != '"')
        return false;
    d++;
    const char *q = memchr(d, '"', (size_t)(end - d));
    if (!q)
        return false;
    *val = d;
    *vlen = (size_t)(q - d);
    return true;
}

static inline int u64_to_dec(char *out, uint64_t v)
{
    char tmp[20];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (int i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    return n;
}

/* ---------------------------------------------------------------- latency histogram */

/* Log-linear buckets over nanoseconds: exact below 64, then 64 sub-buckets per power of two
 * (under 1.6% error), enough for any latency a run can see. */
#define HIST_SUB_BITS 6
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_BUCKETS ((64 - HIST_SUB_BITS + 1) * HIST_SUB)

struct hist {
    uint64_t count;
    uint64_t max;
    uint64_t sum;
    uint64_t b[HIST_BUCKETS];
};

static inline unsigned hist_index(uint64_t v)
{
    if (v < HIST_SUB)
        return (unsigned)v;
    unsigned k = 63u - (unsigned)__builtin_clzll(v);
    unsigned sub = (unsigned)(v >> (k - HIST_SUB_BITS)) & (HIST_SUB - 1);
    return (k - HIST_SUB_BITS + 1) * HIST_SUB + sub;
}

static inline uint64_t hist_value(unsigned i)
{
    if (i < HIST_SUB)
        return i;
    unsigned k = i / HIST_SUB + HIST_SUB_BITS - 1;
    uint64_t width = 1ull << (k - HIST_SUB_BITS);
    return (HIST_SUB + i % HIST_SUB) * width + width / 2;
}

static inline void hist_add(struct hist *h, uint64_t v)
{
    h->b[hist_index(v)]++;
    h->count++;
    h->sum += v;
    if (v > h->max)
        h->max = v;
}

/* The q-quantile (0 < q <= 1), or 0 for an empty histogram. */
static inline uint64_t hist_quantile(const struct hist *h, double q)
{
    if (!h->count)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)h->count + 0.999999);
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= rank) {
            uint64_t v = hist_value(i);
            return v < h->max ? v : h->max;
        }
    }
    return h->max;
}

/* ---------------------------------------------------------------- process and kernel stats */

/* The number after `key` in a "Key:   123 kB"-style file, or -1. */
static inline long proc_field(const char *path, const char *key)
{
    char line[256];
    size_t kl = strlen(key);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long v = -1;
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, key, kl) == 0) {
            v = strtol(line + kl, NULL, 10);
            break;
        }
    }
    fclose(f);
    return v;
}

/* VmRSS of `pid` in KiB, or -1. */
static inline long proc_rss_kb(int pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    return proc_field(path, "VmRSS:");
}

/* utime + stime of `pid` in seconds, or -1. */
static inline double proc_cpu_s(int pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* comm may hold spaces */
    unsigned long ut, st;
    if (!p || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static inline double self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

/* The kernel's slab memory (SReclaimable + SUnreclaim, from /proc/meminfo) in KiB, or -1. */
static inline long kernel_slab_kb(void)
{
    return proc_field("/proc/meminfo", "Slab:");
}

/* Pages the kernel charges to TCP socket buffers ("TCP: ... mem N" in /proc/net/sockstat). */
static inline long kernel_tcp_mem_pages(void)
{
    char line[256];
    FILE *f = fopen("/proc/net/sockstat", "r");
    if (!f)
        return -1;
    long v = -1;
    while (fgets(line, sizeof(line), f)) {
        const char *m = strstr(line, " mem ");
        if (strncmp(line, "TCP:", 4) == 0 && m) {
            v = strtol(m + 5, NULL, 10);
            break;
        }
    }
    fclose(f);
    return v;
}

/* A TcpExt counter of /proc/net/netstat (e.g. "ListenOverflows"), machine-wide, or -1. */
static inline long tcpext_counter(const char *name)
{
    static char head[8192], vals[8192];
    FILE *f = fopen("/proc/net/netstat", "r");
    if (!f)
        return -1;
    long v = -1;
    while (fgets(head, sizeof(head), f) && fgets(vals, sizeof(vals), f)) {
        if (strncmp(head, "TcpExt:", 7) != 0)
            continue;
        char *hs, *vs;
        char *h = strtok_r(head + 7, " \n", &hs), *x = strtok_r(vals + 7, " \n", &vs);
        while (h && x) {
            if (strcmp(h, name) == 0) {
                v = strtol(x, NULL, 10);
                break;
            }
            h = strtok_r(NULL, " \n", &hs);
            x = strtok_r(NULL, " \n", &vs);
        }
        break;
    }
    fclose(f);
    return v;
}

#endif
