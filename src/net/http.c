/* HTTP/1.1 request parsing on top of http-parser, and response building. A request's
 * bytes accumulate in the connection's input buffer; the parser is fed only the new
 * bytes and records header values as offsets into that buffer. Bodies are copied. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "agentcast.h"
#include "net/http.h"

/* Set only during ac__http_feed(): where offsets are measured from. */
static __thread const char *feed_base;

static const struct {
    const char *name;
    int index;
} kept_headers[] = {
    {"host", AC__H_HOST},
    {"origin", AC__H_ORIGIN},
    {"authorization", AC__H_AUTHORIZATION},
    {"upgrade", AC__H_UPGRADE},
    {"connection", AC__H_CONNECTION},
    {"sec-websocket-key", AC__H_WS_KEY},
    {"sec-websocket-version", AC__H_WS_VERSION},
    {"cookie", AC__H_COOKIE},
};

static ac__http_t *from_parser(http_parser *p)
{
    return p->data;
}

/* The request line and headers must end within AC__MAX_HEAD bytes of the request's start
 * (offsets are from there). */
static int head_over(ac__http_t *h, uint32_t off, size_t len)
{
    if (off + len > h->head_end)
        h->head_end = off + (uint32_t)len;
    if ((size_t)off + len <= AC__MAX_HEAD)
        return 0;
    h->head_too_big = 1;
    return 1;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    ac__http_t *h = from_parser(p);
    uint32_t off = (uint32_t)(at - feed_base);

    if (head_over(h, off, len))
        return -1;

    if (h->url.len == 0)
        h->url.off = off;
    h->url.len = off + (uint32_t)len - h->url.off;
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    ac__http_t *h = from_parser(p);
    uint32_t off = (uint32_t)(at - feed_base);

    if (head_over(h, off, len))
        return -1;

    if (h->last_was_value || h->cur_header == -2) {
        h->field.off = off;
        h->field.len = 0;
        h->cur_header = -1;
    }
    h->field.len = off + (uint32_t)len - h->field.off;
    h->last_was_value = 0;
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    ac__http_t *h = from_parser(p);
    uint32_t off = (uint32_t)(at - feed_base);

    if (head_over(h, off, len))
        return -1;

    if (!h->last_was_value) {
        h->cur_header = -1;
        for (size_t i = 0; i < sizeof(kept_headers) / sizeof(kept_headers[0]); i++) {
            if (strlen(kept_headers[i].name) == h->field.len &&
                strncasecmp(kept_headers[i].name, feed_base + h->field.off, h->field.len) == 0) {
                h->cur_header = kept_headers[i].index;
                /* A repeated header keeps its first value, even an empty one. */
                if (h->seen & (1u << h->cur_header)) {
                    h->cur_header = -1;
                } else {
                    h->seen |= 1u << h->cur_header;
                    h->headers[h->cur_header].off = off;
                }
                break;
            }
        }
        h->last_was_value = 1;
    }
    if (h->cur_header >= 0) {
        ac__span_t *s = &h->headers[h->cur_header];
        s->len = off + (uint32_t)len - s->off;
    }
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    ac__http_t *h = from_parser(p);

    h->headers_done = 1;
    /* The head ends with the last header's CRLF and the empty line's: 4 bytes on. */
    if ((size_t)h->head_end + 4 > AC__MAX_HEAD) {
        h->head_too_big = 1;
        return -1;
    }
    if ((p->flags & F_CONTENTLENGTH) && p->content_length > h->max_body) {
        h->too_big = 1;
        return -1;
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    ac__http_t *h = from_parser(p);

    if (h->body.len + len > h->max_body) {
        h->too_big = 1;
        return -1;
    }
    return ac__sbuf_append(&h->body, at, len) == 0 ? 0 : -1;
}

static int on_message_complete(http_parser *p)
{
    ac__http_t *h = from_parser(p);

    h->message_done = 1;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings settings = {
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

ac__http_t *ac__http_new(size_t max_body)
{
    ac__http_t *h = calloc(1, sizeof(*h));

    if (h == NULL)
        return NULL;
    h->max_body = max_body;
    ac__http_reset(h);
    return h;
}

ac__http_t *ac__http_clone(ac__http_t *h)
{
    ac__http_t *c = malloc(sizeof(*c));

    if (c == NULL)
        return NULL;
    *c = *h;
    c->parser.data = c;
    memset(&h->body, 0, sizeof(h->body));
    return c;
}

void ac__http_free(ac__http_t *h)
{
    if (h == NULL)
        return;
    ac__sbuf_dispose(&h->body);
    free(h);
}

void ac__http_reset(ac__http_t *h)
{
    ac__sbuf_t body = h->body;
    size_t max_body = h->max_body;

    memset(h, 0, sizeof(*h));
    http_parser_init(&h->parser, HTTP_REQUEST);
    h->parser.data = h;
    h->cur_header = -2;
    h->max_body = max_body;
    body.len = 0;
    h->body = body;
}

ac__http_status_t ac__http_feed(ac__http_t *h, const char *buf, size_t len, size_t *consumed)
{
    size_t n;

    if (h->parsed >= len)
        return AC__HTTP_MORE;
    feed_base = buf;
    n = http_parser_execute(&h->parser, &settings, buf + h->parsed, len - h->parsed);
    feed_base = NULL;
    h->parsed += (uint32_t)n;

    if (h->message_done) {
        *consumed = h->parsed;
        return AC__HTTP_DONE;
    }
    if (h->too_big)
        return AC__HTTP_BODY_TOO_BIG;
    if (h->head_too_big)
        return AC__HTTP_HEAD_TOO_BIG;
    if (HTTP_PARSER_ERRNO(&h->parser) == HPE_HEADER_OVERFLOW)
        return AC__HTTP_HEAD_TOO_BIG;
    if (HTTP_PARSER_ERRNO(&h->parser) != HPE_OK)
        return AC__HTTP_BAD;
    if (!h->headers_done && h->parsed > AC__MAX_HEAD)
        return AC__HTTP_HEAD_TOO_BIG;
    return AC__HTTP_MORE;
}

void ac__http_request(const ac__http_t *h, const char *buf, ac__http_req_t *req)
{
    const char *url = buf + h->url.off;
    const char *q;

    memset(req, 0, sizeof(*req));
    req->method = h->parser.method;
    req->path = url;
    req->path_len = h->url.len;
    q = memchr(url, '?', h->url.len);
    if (q != NULL) {
        req->path_len = (size_t)(q - url);
        req->query = q + 1;
        req->query_len = h->url.len - req->path_len - 1;
    }
    for (int i = 0; i < AC__H_COUNT; i++) {
        if (h->seen & (1u << i)) {
            req->headers[i] = buf + h->headers[i].off;
            req->header_lens[i] = h->headers[i].len;
        }
    }
    req->body = h->body.p;
    req->body_len = h->body.len;
    req->upgrade = h->parser.upgrade;
    req->keep_alive = http_should_keep_alive(&h->parser);
}

const char *ac__http_reason(unsigned status)
{
    switch (status) {
    case 101:
        return "Switching Protocols";
    case 200:
        return "OK";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 413:
        return "Payload Too Large";
    case 426:
        return "Upgrade Required";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    default:
        return "Unknown";
    }
}

ac__buf_t *ac__http_response(unsigned status, const char *content_type, const char *extra_headers,
                             const char *body, size_t body_len, int keep_alive)
{
    char head[512];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %u %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Cache-Control: no-store\r\nConnection: %s\r\n",
                     status, ac__http_reason(status), content_type, body_len,
                     keep_alive ? "keep-alive" : "close");
    size_t extra = strlen(extra_headers);
    ac__buf_t *b;

    if (n < 0 || (size_t)n >= sizeof(head))
        return NULL;
    b = ac__buf_new((size_t)n + extra + 2 + body_len);
    if (b == NULL)
        return NULL;
    memcpy(b->data, head, (size_t)n);
    memcpy(b->data + n, extra_headers, extra);
    memcpy(b->data + n + extra, "\r\n", 2);
    if (body_len > 0)
        memcpy(b->data + n + extra + 2, body, body_len);
    return b;
}

int ac__http_has_token(const char *value, size_t len, const char *token)
{
    size_t tlen = strlen(token);
    size_t i = 0;

    while (i < len) {
        while (i < len && (value[i] == ' ' || value[i] == '\t' || value[i] == ','))
            i++;
        size_t start = i;
        while (i < len && value[i] != ',')
            i++;
        size_t end = i;
        while (end > start && (value[end - 1] == ' ' || value[end - 1] == '\t'))
            end--;
        if (end - start == tlen && strncasecmp(value + start, token, tlen) == 0)
            return 1;
    }
    return 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

long ac__http_query_get(const char *query, size_t qlen, const char *name, char *out, size_t outsz)
{
    size_t nlen = strlen(name);
    size_t i = 0;

    while (query != NULL && i < qlen) {
        size_t start = i;
        while (i < qlen && query[i] != '&')
            i++;
        const char *kv = query + start;
        size_t kvlen = i - start;
        i++;
        if (kvlen < nlen || memcmp(kv, name, nlen) != 0 || (kvlen > nlen && kv[nlen] != '='))
            continue;
        size_t o = 0;
        for (size_t j = nlen + 1; j < kvlen; j++) {
            char c = kv[j];
            if (c == '%') {
                int hi = j + 2 < kvlen ? hexval(kv[j + 1]) : -1;
                int lo = j + 2 < kvlen ? hexval(kv[j + 2]) : -1;
                if (hi < 0 || lo < 0)
                    return -2;
                c = (char)(hi * 16 + lo);
                j += 2;
            } else if (c == '+') {
                c = ' ';
            }
            if (o + 1 >= outsz)
                return -2;
            out[o++] = c;
        }
        out[o] = '\0';
        return (long)o;
    }
    return -1;
}
