/* libFuzzer target: the WebSocket codec (src/net/ws.h) as conn.c's ws_input() uses it on a
 * client's bytes, plus the handshake's accept key. Differential: unmasking, UTF-8 validation
 * and the receive rules are compared with reference versions written here from RFC 6455 and
 * RFC 3629 (abort on any disagreement). */

/* Input: byte 0 seeds the split points; byte 1 bit 7 picks the mode (set: the rest is text
 * for the UTF-8 comparison alone; clear: a stream of client frames, 64 KiB message limit),
 * bits 0-2 + 24 is how many leading stream bytes go to ac__ws_accept_key(). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "agentcast.h"
#include "net/ws.h"

#define FUZZ_NAME "fuzz_ws"
#include "fuzz_common.h"

#define MAX_MESSAGE 65536

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_quiet_logs(AC_LOG_ERROR);
    return 0;
}

/* xorshift32: split points derived from the input, so every run of an input is the same. */
static uint32_t rnd(uint32_t *s)
{
    uint32_t x = *s ? *s : 0x9e3779b9u;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *s = x;
    return x;
}

/* ---- reference UTF-8 (RFC 3629), written for clarity, not speed ---------------------- */

/* Whether the n bytes s[0..n) (1 <= n <= 4, s[0] a lead byte) can begin a valid encoded
 * character: every code point they allow, with the bits still missing taken anywhere from
 * all zeros to all ones, is checked against the range for that length minus surrogates. */
static int ref_seq_prefix_ok(const uint8_t *s, size_t n)
{
    size_t need;
    uint32_t cp, min;

    if (s[0] >= 0xC2 && s[0] <= 0xDF) {
        need = 2, cp = s[0] & 0x1F, min = 0x80;
    } else if (s[0] >= 0xE0 && s[0] <= 0xEF) {
        need = 3, cp = s[0] & 0x0F, min = 0x800;
    } else if (s[0] >= 0xF0 && s[0] <= 0xF4) {
        need = 4, cp = s[0] & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (n > need)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3F);
    }
    unsigned missing = (unsigned)(need - n) * 6;
    uint32_t lo = cp << missing;
    uint32_t hi = lo | ((1u << missing) - 1);
    uint32_t max = need == 2 ? 0x7FF : need == 3 ? 0xFFFF : 0x10FFFF;
    if (lo < min)
        lo = min;
    if (hi > max)
        hi = max;
    if (lo > hi)
        return 0;
    if (lo >= 0xD800 && hi <= 0xDFFF)
        return 0;
    return 1;
}

/* Length of the longest prefix of p[0..n) that some valid UTF-8 text begins with; sets
 * *boundary to 1 when the whole of p is valid and ends between characters. */
static size_t ref_valid_prefix(const uint8_t *p, size_t n, int *boundary)
{
    size_t i = 0;

    *boundary = 0;
    while (i < n) {
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        size_t need = p[i] >= 0xF0 ? 4 : p[i] >= 0xE0 ? 3 : 2;
        size_t k = 1;
        for (; k <= need && i + k <= n; k++) {
            if (!ref_seq_prefix_ok(p + i, k))
                return i + k - 1;
        }
        if (k <= need)
            return n; /* valid so far, but cut inside a character */
        i += need;
    }
    *boundary = 1;
    return n;
}

/* Feeds p[0..n) to ac__utf8_validate() in pieces and compares every step with the
 * reference; returns 1 when the text is complete, valid UTF-8. */
static int utf8_diff(const uint8_t *p, size_t n, uint32_t *seed)
{
    int whole_boundary;
    size_t good = ref_valid_prefix(p, n, &whole_boundary);
    uint32_t st = 0;
    size_t off = 0;
    int failed = 0;

    while (off < n || off == 0) {
        size_t piece = n - off;
        if (rnd(seed) % 3 != 0 && piece > 0)
            piece = rnd(seed) % (piece + 1); /* 0 included: an empty call changes nothing */
        uint8_t *chunk = dup_exact(p + off, piece);
        int r = ac__utf8_validate(&st, chunk, piece);
        free(chunk);
        off += piece;
        if (r != 0) {
            check(good < off, "utf8: refused a valid prefix");
            failed = 1;
            break;
        }
        check(good >= off, "utf8: accepted an invalid prefix");
        int b;
        ref_valid_prefix(p, off, &b);
        check((st == 0) == (b == 1), "utf8: state 0 not exactly at a character boundary");
        if (n == 0)
            break;
    }
    if (failed) {
        /* Once invalid, it stays invalid, whatever follows. */
        int r = ac__utf8_validate(&st, (const uint8_t *)"a", 1);
        check(r == -1 && st != 0, "utf8: invalid state is not sticky");
    }
    /* One call over the whole text agrees with the pieces. */
    uint32_t one = 0;
    uint8_t *all = dup_exact(p, n);
    int r1 = ac__utf8_validate(&one, all, n);
    free(all);
    check((r1 == 0) == !failed, "utf8: one call and pieces disagree");
    int ok = !failed && st == 0;
    check(ok == (good == n && whole_boundary), "utf8: verdict differs from the reference");
    return ok;
}

/* ---- reference receive rules (RFC 6455 5.1-5.5, the contract in ws.h) -------------- */

static int ref_check_header(const ac__ws_header_t *h, int in_message, uint64_t message_len)
{
    int control = h->opcode >= 8;

    if (!h->masked || h->rsv != 0)
        return AC_WS_CLOSE_PROTOCOL;
    if (h->opcode != AC_WS_CONT && h->opcode != AC_WS_TEXT && h->opcode != AC_WS_BINARY &&
        h->opcode != AC_WS_CLOSE && h->opcode != AC_WS_PING && h->opcode != AC_WS_PONG)
        return AC_WS_CLOSE_PROTOCOL;
    if (control)
        return (!h->fin || h->len > 125) ? AC_WS_CLOSE_PROTOCOL : 0;
    if (h->opcode == AC_WS_CONT && !in_message)
        return AC_WS_CLOSE_PROTOCOL;
    if (h->opcode != AC_WS_CONT && in_message)
        return AC_WS_CLOSE_PROTOCOL;
    uint64_t before = h->opcode == AC_WS_CONT ? message_len : 0;
    /* In 128 bits nothing wraps. */
    if ((unsigned __int128)before + h->len > MAX_MESSAGE)
        return AC_WS_CLOSE_TOO_BIG;
    return 0;
}

static void ref_unmask(uint8_t *p, size_t n, const uint8_t mask[4], uint64_t offset)
{
    for (size_t i = 0; i < n; i++)
        p[i] ^= mask[(offset + i) % 4];
}

static void accept_key(const uint8_t *p, size_t n)
{
    char out[29];
    char *key = (char *)dup_exact(p, n);
    int r = ac__ws_accept_key(key, n, out);
    int valid = n == 24 && key[22] == '=' && key[23] == '=';
    for (size_t i = 0; valid && i < 22; i++) {
        char c = key[i];
        valid = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                c == '+' || c == '/';
    }
    check((r == 0) == valid, "accept key: verdict");
    if (r == 0) {
        static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
        unsigned char in[24 + 36], md[EVP_MAX_MD_SIZE], b64[32];
        unsigned mdlen = 0;
        memcpy(in, key, 24);
        memcpy(in + 24, guid, 36);
        check(EVP_Digest(in, sizeof(in), md, &mdlen, EVP_sha1(), NULL) == 1, "sha1");
        check(EVP_EncodeBlock(b64, md, (int)mdlen) == 28, "base64");
        check(strcmp(out, (const char *)b64) == 0, "accept key: wrong value");
    } else {
        check(out[0] == '\0', "accept key: out not emptied on failure");
    }
    free(key);
}

/* One decoded header: re-decoding any shorter prefix asks for more bytes, and a server
 * header with the same fields round-trips. */
static void header_props(const uint8_t *p, size_t avail, const ac__ws_header_t *h, int r)
{
    ac__ws_header_t t;

    check(r >= 2 && r <= AC_WS_MAX_CLIENT_HEADER && (size_t)r <= avail &&
              h->header_len == (size_t)r,
          "decode: header length");
    for (int k = 0; k < r; k++) {
        uint8_t *cut = dup_exact(p, (size_t)k);
        check(ac__ws_header_decode(cut, (size_t)k, &t) == 0, "decode: short prefix not 0");
        free(cut);
    }
    if (h->len >> 63)
        return;
    uint8_t enc[AC_WS_MAX_SERVER_HEADER];
    size_t e = ac__ws_header_encode(enc, h->opcode, h->fin, h->len);
    check(e == ac__ws_header_size(h->len), "encode: size");
    check(ac__ws_header_decode(enc, e, &t) == (int)e, "round trip: decode");
    check(t.fin == h->fin && t.opcode == h->opcode && t.len == h->len && !t.masked && t.rsv == 0,
          "round trip: fields");
}

static void close_payload(const uint8_t *p, size_t n, uint32_t *seed)
{
    if (n < 2)
        return;
    unsigned code = (unsigned)p[0] << 8 | p[1];
    int ok = ac__ws_close_code_valid(code);
    /* Never valid on the wire: below 1000, 1004-1006, 1015, 1016-2999, 5000 on. */
    if (code < 1000 || (code >= 1004 && code <= 1006) || (code >= 1015 && code < 3000) ||
        code >= 5000)
        check(!ok, "close code: a reserved code accepted");
    if (code == 1000 || code == 1001 || code == 1002 || code == 1003 || code == 1007 ||
        code == 1008 || code == 1009 || code == 1010 || code == 1011 || code == 4000)
        check(ok, "close code: a defined code refused");
    if (ok)
        utf8_diff(p + 2, n - 2, seed);
}

/* A client's bytes, as ws_input() and ws_frame() in conn.c handle them. */
static void frames(const uint8_t *data, size_t len, uint32_t seed)
{
    uint8_t *in = NULL; /* bytes received and not yet a whole frame (exact size) */
    size_t in_len = 0;
    uint8_t *msg = NULL; /* the open fragmented message, NULL when none */
    size_t msg_len = 0;
    unsigned msg_opcode = 0;
    int in_message = 0;
    int open = 1;
    size_t off = 0;

    while (open && off < len) {
        size_t piece = len - off;
        if (rnd(&seed) % 2)
            piece = 1 + rnd(&seed) % piece;
        uint8_t *grown = realloc(in, in_len + piece);
        check(grown != NULL, "realloc");
        in = grown;
        memcpy(in + in_len, data + off, piece);
        in_len += piece;
        off += piece;

        size_t pos = 0;
        while (open && pos < in_len) {
            ac__ws_header_t h;
            size_t avail = in_len - pos;
            size_t hn = avail < AC_WS_MAX_CLIENT_HEADER ? avail : AC_WS_MAX_CLIENT_HEADER;
            uint8_t *hb = dup_exact(in + pos, hn);
            int r = ac__ws_header_decode(hb, hn, &h);
            if (r > 0)
                header_props(hb, hn, &h, r);
            free(hb);
            if (r == 0)
                break;
            if (r < 0) {
                check(in[pos + 1] % 128 == 127 && (in[pos + 2] & 0x80), "decode: -1 for a length");
                open = 0;
                break;
            }
            int code = ac__ws_check_header(&h, in_message, msg_len, MAX_MESSAGE);
            check(code == ref_check_header(&h, in_message, msg_len), "check_header: verdict");
            /* A stale message_len must not matter outside a message. */
            if (!in_message)
                check(ac__ws_check_header(&h, 0, UINT64_MAX, MAX_MESSAGE) == code,
                      "check_header: stale message_len counted");
            if (code != 0) {
                open = 0;
                break;
            }
            if (avail - (size_t)r < h.len)
                break;
            size_t n = (size_t)h.len;
            uint8_t *payload = dup_exact(in + pos + r, n);
            uint8_t *expect = dup_exact(in + pos + r, n);
            ref_unmask(expect, n, h.mask, 0);
            /* Unmask in pieces at random offsets, as a payload split across reads is. */
            size_t done = 0;
            while (done < n) {
                size_t k = 1 + rnd(&seed) % (n - done);
                uint8_t *part = dup_exact(payload + done, k);
                ac__ws_unmask(part, k, h.mask, done);
                memcpy(payload + done, part, k);
                free(part);
                done += k;
            }
            check(n == 0 || memcmp(payload, expect, n) == 0, "unmask: pieces differ");
            /* And in one call from a phase the key repeats at. */
            memcpy(expect, in + pos + r, n);
            ac__ws_unmask(expect, n, h.mask, 4 * (uint64_t)(rnd(&seed) % 1000));
            check(n == 0 || memcmp(payload, expect, n) == 0, "unmask: offset 4k not in phase");
            free(expect);
            pos += (size_t)r + n;

            switch (h.opcode) {
            case AC_WS_CLOSE:
                close_payload(payload, n, &seed);
                open = 0;
                break;
            case AC_WS_TEXT:
            case AC_WS_BINARY:
                if (h.fin) {
                    if (h.opcode == AC_WS_TEXT && !utf8_diff(payload, n, &seed))
                        open = 0; /* close 1007 */
                    break;
                }
                msg_opcode = h.opcode;
                msg = dup_exact(payload, n);
                msg_len = n;
                in_message = 1;
                break;
            case AC_WS_CONT: {
                uint8_t *m = realloc(msg, msg_len + n ? msg_len + n : 1);
                check(m != NULL, "realloc");
                msg = m;
                if (n > 0)
                    memcpy(msg + msg_len, payload, n);
                msg_len += n;
                check(msg_len <= MAX_MESSAGE, "message over the limit got through");
                if (h.fin) {
                    if (msg_opcode == AC_WS_TEXT && !utf8_diff(msg, msg_len, &seed))
                        open = 0; /* close 1007 */
                    free(msg);
                    msg = NULL;
                    msg_len = 0;
                    in_message = 0;
                }
                break;
            }
            default:
                break;
            }
            free(payload);
        }
        /* Keep what is left, in a block of its exact size. */
        size_t rest = in_len - pos;
        uint8_t *kept = rest ? dup_exact(in + pos, rest) : NULL;
        free(in);
        in = kept;
        in_len = rest;
    }
    free(in);
    free(msg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    uint32_t seed = data[0] * 0x01000193u + 1;
    const uint8_t *p = data + 2;
    size_t n = size - 2;

    if (data[1] & 0x80) {
        utf8_diff(p, n, &seed);
        return 0;
    }
    size_t klen = 24 + (data[1] & 7);
    accept_key(p, n < klen ? n : klen);
    frames(p, n, seed);
    return 0;
}
