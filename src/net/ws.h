/* RFC 6455 frame codec: bytes <-> frame headers, unmasking, the handshake accept key and
 * the receive-side protocol rules (UTF-8 validation is core/utf8.h). Pure functions: no
 * sockets, no allocation, no libuv. The connection code in conn.c drives it. */
#ifndef AC_NET_WS_H
#define AC_NET_WS_H

#include <stddef.h>
#include <stdint.h>

#include "core/utf8.h"

enum {
    AC_WS_CONT = 0x0,
    AC_WS_TEXT = 0x1,
    AC_WS_BINARY = 0x2,
    AC_WS_CLOSE = 0x8,
    AC_WS_PING = 0x9,
    AC_WS_PONG = 0xA
};

/* Largest header a server frame needs (no mask): 2 + 8. */
#define AC_WS_MAX_SERVER_HEADER 10
/* Largest header a client frame can have (with mask): 2 + 8 + 4. */
#define AC_WS_MAX_CLIENT_HEADER 14

/* Close codes this gateway sends (see README). */
enum {
    AC_WS_CLOSE_NORMAL = 1000,
    AC_WS_CLOSE_GOING_AWAY = 1001,
    AC_WS_CLOSE_PROTOCOL = 1002,
    AC_WS_CLOSE_BAD_DATA = 1007,
    AC_WS_CLOSE_POLICY = 1008,
    AC_WS_CLOSE_TOO_BIG = 1009,
    AC_WS_CLOSE_EVICTED = 4001,
    AC_WS_CLOSE_STALE = 4002,
    AC_WS_CLOSE_OPERATOR = 4003,
    AC_WS_CLOSE_TOO_SLOW = 4008
};

typedef struct ac__ws_header_s {
    unsigned fin;    /* 1 when this frame ends its message */
    unsigned rsv;    /* the three RSV bits, as bits 2..0 */
    unsigned opcode; /* AC_WS_* */
    unsigned masked; /* 1 when a masking key follows the length */
    uint64_t len;    /* payload length */
    uint8_t mask[4]; /* masking key when masked */
    size_t header_len;
} ac__ws_header_t;

/* Size of the header of an unmasked server frame carrying `payload_len` bytes: 2, 4 or 10. */
size_t ac__ws_header_size(uint64_t payload_len);

/* Writes the header of an unmasked server frame (FIN set when `fin`) into `out`, which has
 * room for AC_WS_MAX_SERVER_HEADER bytes. Returns the header length. */
size_t ac__ws_header_encode(uint8_t *out, unsigned opcode, unsigned fin, uint64_t payload_len);

/* Decodes the frame header at the start of p[0..n). Returns the header length when the
 * whole header is present, 0 when more bytes are needed, or -1 when the header is
 * malformed (64-bit length with its most significant bit set). Validation of what the
 * header asks for is ac__ws_check_header()'s job. */
int ac__ws_header_decode(const uint8_t *p, size_t n, ac__ws_header_t *h);

/* Receive-side rules for a frame from a client. `in_message` is 1 while a fragmented data
 * message is open; `message_len` is how many payload bytes that message holds so far.
 * Returns 0 when the frame is acceptable, else the close code to send: 1002 for an
 * unmasked frame, RSV bits, a reserved opcode, a control frame that is fragmented or over
 * 125 bytes, a continuation with no message open, a new data frame inside an open message;
 * 1009 when message_len + h->len exceeds max_message. */
int ac__ws_check_header(const ac__ws_header_t *h, int in_message, uint64_t message_len,
                        uint64_t max_message);

/* XORs p[0..n) with the masking key, where p starts `offset` bytes into the payload
 * (so a payload split across reads can be unmasked piece by piece). */
void ac__ws_unmask(uint8_t *p, size_t n, const uint8_t mask[4], uint64_t offset);

/* 1 when a close frame from a peer may carry `code` (RFC 6455 7.4), else 0. */
int ac__ws_close_code_valid(unsigned code);

/* Checks a Sec-WebSocket-Key (base64 of exactly 16 bytes) and writes the
 * Sec-WebSocket-Accept value, NUL-terminated, into out[29]. Returns 0, or -1 when the key
 * is not base64 of 16 bytes. */
int ac__ws_accept_key(const char *key, size_t key_len, char out[29]);

/* Fetches the digest the handshake uses (once per process; thread-safe). Servers call it
 * at creation; ac__ws_accept_key calls it too. */
void ac__ws_init(void);

#endif
