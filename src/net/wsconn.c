/* The WebSocket receive path of a connection: frames in, the receive-side rules of
 * RFC 6455 (via ws.c), fragments, UTF-8, the close handshake, the inbound rate limit.
 * What a complete message means is api/'s business; output and closing live in conn.c. */
#include <openssl/ssl.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "net/conn.h"
#include "net/conn_int.h"
#include "net/ws.h"

static void ws_fail(ac__conn_t *c, unsigned code, const char *reason)
{
    ac__log(AC_LOG_DEBUG, "event=ws_protocol_error conn=%llx code=%u reason=\"%s\"",
            (unsigned long long)c->m.id, code, reason);
    /* The stream cannot be parsed past this point (the rest of an oversized frame would
     * read as garbage): ignore what follows, let our close frame go out, then close. */
    c->flags |= AC__CF_DISCARD;
    if (c->state == AC__CONN_WS) {
        /* A user connection's backlog is events it can resume; a publisher's is answers to
         * messages that were applied: those go out before the close. */
        if (c->kind != AC__KIND_AGENT)
            ac__conn_drop_backlog(c);
        else if (c->pend != NULL && ac__conn_server(c)->handlers->on_ws_fail != NULL &&
                 ac__conn_server(c)->handlers->on_ws_fail(c, code, reason))
            return; /* answers still on their way (another loop, a broker) go out first */
        ac__conn_close_ws(c, code, reason, 0);
    }
}

static void ws_message(ac__conn_t *c, unsigned opcode, const char *p, size_t n)
{
    if (opcode == AC_WS_TEXT) {
        uint32_t st = 0;
        if (ac__utf8_validate(&st, (const uint8_t *)p, n) != 0 || st != 0) {
            ws_fail(c, AC_WS_CLOSE_BAD_DATA, "invalid UTF-8");
            return;
        }
    }
    if (c->state != AC__CONN_WS)
        return;
    ac__conn_server(c)->handlers->on_message(c, p, n, opcode == AC_WS_BINARY);
}

static void ws_close_frame(ac__conn_t *c, const uint8_t *p, size_t n)
{
    unsigned code = 0;

    if (n == 1) {
        ws_fail(c, AC_WS_CLOSE_PROTOCOL, "close payload of 1 byte");
        return;
    }
    if (n >= 2) {
        uint32_t st = 0;
        code = (unsigned)p[0] << 8 | p[1];
        if (!ac__ws_close_code_valid(code)) {
            ws_fail(c, AC_WS_CLOSE_PROTOCOL, "invalid close code");
            return;
        }
        if (ac__utf8_validate(&st, p + 2, n - 2) != 0 || st != 0) {
            ws_fail(c, AC_WS_CLOSE_BAD_DATA, "invalid UTF-8 in close reason");
            return;
        }
    }
    if (c->flags & AC__CF_CLOSE_SENT) {
        /* Our close was answered: the handshake is done, the server closes TCP (once our
         * own close frame has left). */
        if (c->out == NULL && (c->ssl == NULL || BIO_ctrl_pending(SSL_get_wbio(c->ssl)) == 0))
            ac__conn_destroy(c);
        else
            c->flags |= AC__CF_CLOSE_AFTER;
        return;
    }
    ac__conn_send_close_frame(c, code ? code : AC_WS_CLOSE_NORMAL, NULL);
    c->flags |= AC__CF_CLOSE_AFTER;
    ac__conn_begin_closing(c, AC__CLOSE_TIMEOUT_MS);
}

static void ws_frame(ac__conn_t *c, const ac__ws_header_t *h, char *payload)
{
    switch (h->opcode) {
    case AC_WS_CLOSE:
        ws_close_frame(c, (const uint8_t *)payload, (size_t)h->len);
        return;
    case AC_WS_PING:
        if (c->state == AC__CONN_WS) {
            ac__buf_t *b = ac__frame_raw(AC_WS_PONG, payload, (size_t)h->len);
            if (b == NULL) {
                ac__conn_destroy(c);
                return;
            }
            ac__conn_send_control(c, b);
            ac__buf_unref(b);
        }
        return;
    case AC_WS_PONG:
        return;
    case AC_WS_TEXT:
    case AC_WS_BINARY:
        if (h->fin) {
            ws_message(c, h->opcode, payload, (size_t)h->len);
            return;
        }
        c->msg_opcode = (uint8_t)h->opcode;
        if (ac__bytes_append(&c->msg, payload, (size_t)h->len) != 0)
            ac__conn_destroy(c);
        return;
    case AC_WS_CONT:
        if (h->len > 0 && ac__bytes_append(&c->msg, payload, (size_t)h->len) != 0) {
            ac__conn_destroy(c);
            return;
        }
        if (h->fin) {
            ac__bytes_t *m = c->msg;
            c->msg = NULL;
            ws_message(c, c->msg_opcode, m->p, m->len);
            free(m);
        }
        return;
    default:
        return; /* reserved opcodes were refused by ac__ws_check_header() */
    }
}

/* Refills the --client-rate bucket for the time since the last read (called before
 * last_rx moves on). Publisher sockets are trusted (API key) and not limited. */
void ac__conn_refill_tokens(ac__conn_t *c, uint32_t now)
{
    ac_server_t *s = ac__conn_server(c);
    double cap = s->opts.client_rate * 2000.0;
    double t;

    if (s->opts.client_rate <= 0 || c->kind != AC__KIND_USER)
        return;
    if (cap < 1000)
        cap = 1000;
    t = (double)c->tokens + (double)(now - c->last_rx) * s->opts.client_rate;
    c->tokens = (uint32_t)(t > cap ? cap : t);
}

static int take_token(ac__conn_t *c)
{
    ac_server_t *s = ac__conn_server(c);

    if (s->opts.client_rate <= 0 || c->kind != AC__KIND_USER)
        return 1;
    if (c->tokens < 1000)
        return 0;
    c->tokens -= 1000;
    return 1;
}

void ac__conn_ws_input(ac__conn_t *c, char *data, size_t len)
{
    ac_server_t *s = ac__conn_server(c);
    char *p = data;
    size_t n = len;
    size_t off = 0;
    int from_in = 0;

    if (c->in != NULL) {
        if (ac__bytes_append(&c->in, data, len) != 0) {
            ac__conn_destroy(c);
            return;
        }
        p = c->in->p;
        n = c->in->len;
        from_in = 1;
    }
    while (off < n && !ac__conn_gone(c) && !(c->flags & AC__CF_DISCARD)) {
        ac__ws_header_t h;
        int r = ac__ws_header_decode((const uint8_t *)p + off, n - off, &h);
        if (r == 0)
            break;
        if (r < 0) {
            ws_fail(c, AC_WS_CLOSE_PROTOCOL, "malformed frame header");
            return;
        }
        /* A publisher's message is a publish body: it may be as large as one. */
        int code = ac__ws_check_header(&h, c->msg != NULL, c->msg ? c->msg->len : 0,
                                       c->kind == AC__KIND_AGENT ? s->opts.max_publish_size
                                                                 : s->opts.max_message_size);
        if (code != 0) {
            ws_fail(c, (unsigned)code,
                    code != AC_WS_CLOSE_TOO_BIG ? "protocol error"
                    : c->kind == AC__KIND_AGENT ? "message over max-publish-size"
                                                : "message over max-message-size");
            return;
        }
        if (n - off - (size_t)r < h.len)
            break;
        if (!take_token(c)) {
            s->rate_limited_total++;
            ws_fail(c, AC_WS_CLOSE_POLICY, "rate limit: over --client-rate");
            return;
        }
        char *payload = p + off + r;
        ac__ws_unmask((uint8_t *)payload, (size_t)h.len, h.mask, 0);
        off += (size_t)r + (size_t)h.len;
        ws_frame(c, &h, payload);
        /* The frame's handler may have closed us, or freed c->in via the manager. */
        if (ac__conn_gone(c) || c->state == AC__CONN_HTTP)
            return;
    }
    if (ac__conn_gone(c))
        return;
    if (c->flags & AC__CF_DISCARD) {
        free(c->in);
        c->in = NULL;
        return;
    }
    if (from_in) {
        ac__bytes_consume(&c->in, off);
    } else if (off < n) {
        if (ac__bytes_append(&c->in, p + off, n - off) != 0)
            ac__conn_destroy(c);
    }
}
