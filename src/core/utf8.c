/* UTF-8 validation (RFC 3629): one DFA for the WebSocket receive path (whole messages,
 * incrementally) and for the publish scanner (one character at a time). */
#include <string.h>

#include "core/utf8.h"

/* UTF-8 as a DFA over byte classes (RFC 3629 section 4 grammar). The classes split the
 * continuation range 80..BF into the three pieces that the second byte of E0, ED, F0 and F4
 * must be checked against; that is what rules out overlongs, surrogates and > U+10FFFF. */
enum {
    C_ASCII, /* 00..7F */
    C_C80,   /* 80..8F */
    C_C90,   /* 90..9F */
    C_CA0,   /* A0..BF */
    C_L2,    /* C2..DF */
    C_E0,    /* E0 */
    C_L3,    /* E1..EC, EE..EF */
    C_ED,    /* ED */
    C_F0,    /* F0 */
    C_L4,    /* F1..F3 */
    C_F4,    /* F4 */
    C_BAD,   /* C0, C1, F5..FF: never valid anywhere */
    C_COUNT
};

/* clang-format off */
static const uint8_t utf8_class[256] = {
#define A C_ASCII
    A, A, A, A, A, A, A, A, A, A, A, A, A, A, A, A, /* 00 */
    A, A, A, A, A, A, A, A, A, A, A, A, A, A, A, A, /* 10 */
    A, A, A, A, A, A, A, A, A, A, A, A, A, A, A, A, /* 20 */
    A, A, A, A, A, A, A, A, A, A, A, A, A, A, A, A, /* 30 */
    A, A, A, A, A, A, A, A, A, A, A, A, A, A, A, A, /* 40 */
    A, A, A, A, A, A, A, A, A, A, A, A, A, A, A, A, /* 50 */
    A, A, A, A, A, A, A, A, A, A, A, A, A, A, A, A, /* 60 */
    A, A, A, A, A, A, A, A, A, A, A, A, A, A, A, A, /* 70 */
#undef A
#define X C_C80
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, /* 80 */
#undef X
#define X C_C90
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, /* 90 */
#undef X
#define X C_CA0
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, /* A0 */
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, /* B0 */
#undef X
#define X C_L2
    C_BAD, C_BAD, X, X, X, X, X, X, X, X, X, X, X, X, X, X, /* C0 */
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,         /* D0 */
#undef X
#define X C_L3
    C_E0, X, X, X, X, X, X, X, X, X, X, X, X, C_ED, X, X, /* E0 */
#undef X
#define X C_BAD
    C_F0, C_L4, C_L4, C_L4, C_F4, X, X, X, X, X, X, X, X, X, X, X, /* F0 */
#undef X
};
/* clang-format on */

/* States. S_OK must be 0: that is the caller's "start" and "complete" value. */
enum {
    S_OK,  /* between characters */
    S_T1,  /* one continuation byte 80..BF left */
    S_T2,  /* two left */
    S_T3,  /* three left */
    S_E0,  /* after E0: next must be A0..BF (lower would be overlong) */
    S_ED,  /* after ED: next must be 80..9F (higher would be a surrogate) */
    S_F0,  /* after F0: next must be 90..BF (lower would be overlong) */
    S_F4,  /* after F4: next must be 80..8F (higher is above U+10FFFF) */
    S_BAD, /* sticky: once invalid, the message stays invalid */
    S_COUNT
};

/* clang-format off */
#define R S_BAD
static const uint8_t utf8_next[S_COUNT][C_COUNT] = {
    /* class:   ASCII 80-8F 90-9F A0-BF C2-DF E0    E1-EF ED    F0    F1-F3 F4    bad */
    [S_OK]  = { S_OK, R,    R,    R,    S_T1, S_E0, S_T2, S_ED, S_F0, S_T3, S_F4, R },
    [S_T1]  = { R,    S_OK, S_OK, S_OK, R,    R,    R,    R,    R,    R,    R,    R },
    [S_T2]  = { R,    S_T1, S_T1, S_T1, R,    R,    R,    R,    R,    R,    R,    R },
    [S_T3]  = { R,    S_T2, S_T2, S_T2, R,    R,    R,    R,    R,    R,    R,    R },
    [S_E0]  = { R,    R,    R,    S_T1, R,    R,    R,    R,    R,    R,    R,    R },
    [S_ED]  = { R,    S_T1, S_T1, R,    R,    R,    R,    R,    R,    R,    R,    R },
    [S_F0]  = { R,    R,    S_T2, S_T2, R,    R,    R,    R,    R,    R,    R,    R },
    [S_F4]  = { R,    S_T2, R,    R,    R,    R,    R,    R,    R,    R,    R,    R },
    [S_BAD] = { R,    R,    R,    R,    R,    R,    R,    R,    R,    R,    R,    R },
};
#undef R
/* clang-format on */

int ac__utf8_validate(uint32_t *state, const uint8_t *p, size_t n)
{
    uint32_t s = *state;
    if (s >= S_BAD) {
        *state = S_BAD;
        return -1;
    }

    size_t i = 0;
    while (i < n) {
        /* Agent traffic is mostly JSON, i.e. mostly ASCII: skip 8 plain bytes at a time
         * while between characters. */
        if (s == S_OK) {
            while (i + 8 <= n) {
                uint64_t w;
                memcpy(&w, p + i, 8);
                if (w & UINT64_C(0x8080808080808080))
                    break;
                i += 8;
            }
            if (i == n)
                break;
        }
        s = utf8_next[s][utf8_class[p[i]]];
        if (s == S_BAD) {
            *state = S_BAD;
            return -1;
        }
        i++;
    }
    *state = s;
    return 0;
}

size_t ac__utf8_char_len(const uint8_t *p, size_t n)
{
    uint32_t s = S_OK;

    for (size_t i = 0; i < n && i < 4; i++) {
        s = utf8_next[s][utf8_class[p[i]]];
        if (s == S_BAD)
            return 0;
        if (s == S_OK)
            return i + 1;
    }
    return 0;
}
