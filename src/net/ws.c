/* RFC 6455 frame codec: header encode/decode, receive-side rule checks, unmasking, UTF-8
 * validation (RFC 3629) and the Sec-WebSocket-Accept computation. Pure functions over
 * caller-owned bytes: no sockets, no allocation, no libuv, no logging. It is not the
 * connection state machine (conn.c) and it never buffers: the caller feeds what it has. */
#include "net/ws.h"

#include <assert.h>
#include <string.h>

#include <openssl/evp.h>
#include <pthread.h>

size_t ac__ws_header_size(uint64_t payload_len)
{
    if (payload_len < 126)
        return 2;
    if (payload_len <= 0xFFFF)
        return 4;
    return 10;
}

size_t ac__ws_header_encode(uint8_t *out, unsigned opcode, unsigned fin, uint64_t payload_len)
{
    assert(opcode <= 0xF);
    out[0] = (uint8_t)((fin ? 0x80 : 0x00) | (opcode & 0x0F));
    /* RFC 6455 5.2: the length uses the minimal encoding; server frames carry no mask. */
    if (payload_len < 126) {
        out[1] = (uint8_t)payload_len;
        return 2;
    }
    if (payload_len <= 0xFFFF) {
        out[1] = 126;
        out[2] = (uint8_t)(payload_len >> 8);
        out[3] = (uint8_t)payload_len;
        return 4;
    }
    out[1] = 127;
    for (int i = 0; i < 8; i++)
        out[2 + i] = (uint8_t)(payload_len >> (56 - 8 * i));
    return 10;
}

int ac__ws_header_decode(const uint8_t *p, size_t n, ac__ws_header_t *h)
{
    if (n < 2)
        return 0;

    unsigned len7 = p[1] & 0x7F;
    unsigned masked = p[1] >> 7;
    size_t need = 2u + (len7 == 126 ? 2u : len7 == 127 ? 8u : 0u) + (masked ? 4u : 0u);
    if (n < need)
        return 0;

    /* Fill a local copy so *h is only written for a complete, well-formed header. */
    ac__ws_header_t out;
    out.fin = p[0] >> 7;
    out.rsv = (p[0] >> 4) & 0x7;
    out.opcode = p[0] & 0x0F;
    out.masked = masked;

    size_t pos = 2;
    if (len7 == 126) {
        out.len = ((uint64_t)p[2] << 8) | p[3];
        pos = 4;
    } else if (len7 == 127) {
        /* The 64-bit form reserves its top bit (RFC 6455 5.2); a set bit is not a length. */
        if (p[2] & 0x80)
            return -1;
        out.len = 0;
        for (int i = 0; i < 8; i++)
            out.len = (out.len << 8) | p[2 + i];
        pos = 10;
    } else {
        out.len = len7;
    }

    if (masked)
        memcpy(out.mask, p + pos, 4);
    else
        memset(out.mask, 0, 4);
    out.header_len = need;

    *h = out;
    return (int)need;
}

int ac__ws_check_header(const ac__ws_header_t *h, int in_message, uint64_t message_len,
                        uint64_t max_message)
{
    /* RFC 6455 5.1: a server must fail the connection on an unmasked client frame. */
    if (!h->masked)
        return AC_WS_CLOSE_PROTOCOL;
    /* No extension is negotiated, so any RSV bit is a protocol error (5.2). */
    if (h->rsv != 0)
        return AC_WS_CLOSE_PROTOCOL;

    switch (h->opcode) {
    case AC_WS_CLOSE:
    case AC_WS_PING:
    case AC_WS_PONG:
        /* 5.5: control frames are never fragmented and carry at most 125 bytes. They may
         * arrive between fragments and do not count toward the data message, so the
         * size limit below does not apply to them. */
        if (!h->fin || h->len > 125)
            return AC_WS_CLOSE_PROTOCOL;
        return 0;
    case AC_WS_CONT:
        if (!in_message)
            return AC_WS_CLOSE_PROTOCOL;
        break;
    case AC_WS_TEXT:
    case AC_WS_BINARY:
        /* 5.4: fragments of one message must not interleave with another message. */
        if (in_message)
            return AC_WS_CLOSE_PROTOCOL;
        /* A new message starts empty, whatever a stale message_len says. */
        message_len = 0;
        break;
    default:
        /* 3-7 and 11-15 are reserved (5.2). */
        return AC_WS_CLOSE_PROTOCOL;
    }

    /* Written as a subtraction so a huge h->len cannot wrap the sum past the limit. */
    if (h->len > max_message || message_len > max_message - h->len)
        return AC_WS_CLOSE_TOO_BIG;
    return 0;
}

void ac__ws_unmask(uint8_t *p, size_t n, const uint8_t mask[4], uint64_t offset)
{
    /* The key repeats every 4 bytes and 8 is a multiple of 4, so one rotated 8-byte word
     * serves the whole run. Building it byte by byte keeps this independent of endianness;
     * memcpy keeps the loads and stores legal at any alignment. */
    uint8_t rot[8];
    for (unsigned i = 0; i < 8; i++)
        rot[i] = mask[(offset + i) & 3];
    uint64_t m;
    memcpy(&m, rot, 8);

    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        w ^= m;
        memcpy(p + i, &w, 8);
    }
    /* i is a multiple of 8, so rot[] is still in phase for the tail. */
    for (size_t j = 0; i < n; i++, j++)
        p[i] ^= rot[j];
}

int ac__ws_close_code_valid(unsigned code)
{
    /* RFC 6455 7.4.1 and the IANA registry. 1004 is reserved; 1005, 1006 and 1015 exist
     * only to be reported locally and must never be sent; 1016-2999 are unassigned;
     * 3000-3999 are registered by libraries and 4000-4999 are private use. */
    if (code >= 1000 && code <= 1003)
        return 1;
    if (code >= 1007 && code <= 1014)
        return 1;
    if (code >= 3000 && code <= 4999)
        return 1;
    return 0;
}

static int is_base64_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/';
}

/* SHA-1 fetched from OpenSSL's provider once, not implicitly at every handshake (and the
 * provider's setup done at startup instead of by the first handshake). */
static EVP_MD *sha1_md;
static pthread_once_t sha1_once = PTHREAD_ONCE_INIT;

static void sha1_fetch(void)
{
    sha1_md = EVP_MD_fetch(NULL, "SHA1", NULL);
}

void ac__ws_init(void)
{
    pthread_once(&sha1_once, sha1_fetch);
}

int ac__ws_accept_key(const char *key, size_t key_len, char out[29])
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    enum { KEY_LEN = 24, GUID_LEN = sizeof(guid) - 1 };

    out[0] = '\0';
    /* 16 bytes encode to 5 full groups of 3 (20 chars) plus one leftover byte, which is
     * 2 chars and "==": always 24 chars with exactly two pad characters at the end. Bits
     * left over in the last char are not required to be zero: clients are not asked to
     * be canonical, and the key is hashed as text, never decoded. */
    if (key_len != KEY_LEN || key[22] != '=' || key[23] != '=')
        return -1;
    for (size_t i = 0; i < 22; i++) {
        if (!is_base64_char(key[i]))
            return -1;
    }

    /* RFC 6455 4.2.2: base64(SHA-1(key || GUID)), the key taken as the 24 ASCII chars. */
    uint8_t buf[KEY_LEN + GUID_LEN];
    memcpy(buf, key, KEY_LEN);
    memcpy(buf + KEY_LEN, guid, GUID_LEN);

    uint8_t digest[EVP_MAX_MD_SIZE];
    unsigned digest_len = 0;
    ac__ws_init();
    if (EVP_Digest(buf, sizeof(buf), digest, &digest_len, sha1_md ? sha1_md : EVP_sha1(), NULL) !=
            1 ||
        digest_len != 20)
        return -1;

    /* 20 bytes -> 28 chars plus the NUL EVP_EncodeBlock appends: exactly out[29]. */
    if (EVP_EncodeBlock((unsigned char *)out, digest, 20) != 28) {
        out[0] = '\0';
        return -1;
    }
    return 0;
}
