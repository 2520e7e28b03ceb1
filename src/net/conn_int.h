/* What conn.c (sockets, output, closing, HTTP) and wsconn.c (the WebSocket receive path)
 * share. Private to src/net. */
#ifndef AC_NET_CONN_INT_H
#define AC_NET_CONN_INT_H

#include "net/conn.h"

static inline uint32_t ac__conn_now32(const ac_server_t *s)
{
    return (uint32_t)ac__server_now(s);
}

/* uv_close() was called: nothing may be queued or parsed any more. */
static inline int ac__conn_gone(const ac__conn_t *c)
{
    return c->state == AC__CONN_CLOSED;
}

/* Appends to a byte buffer that exists only while bytes wait (created on demand). */
int ac__bytes_append(ac__bytes_t **bp, const char *p, size_t n);
/* Keeps the bytes from `off` on; frees the buffer when none are left. */
void ac__bytes_consume(ac__bytes_t **bp, size_t off);

/* Drops queued frames nobody has started writing, so a close can go out next. */
void ac__conn_drop_backlog(ac__conn_t *c);
/* Closing state: input read only for a close frame, output drains, then shutdown. */
void ac__conn_begin_closing(ac__conn_t *c, uint64_t timeout_ms);
void ac__conn_send_close_frame(ac__conn_t *c, unsigned code, const char *reason);

/* Bytes of a WebSocket (plaintext) from the peer (wsconn.c). */
void ac__conn_ws_input(ac__conn_t *c, char *data, size_t len);
/* Refills the --client-rate bucket for the time since the last read (wsconn.c). */
void ac__conn_refill_tokens(ac__conn_t *c, uint32_t now);

#endif
