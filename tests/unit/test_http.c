/* Unit tests for src/net/http.c: request parsing over an accumulating buffer (whole,
 * byte by byte, pipelined), body limits, head limit, keep-alive and upgrade; query
 * string lookup and decoding; header token search; response building. No sockets: the
 * buffer handling mirrors what conn.c does with a connection's input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "net/http.h"

#define MAX_BODY 1024

static const char ws_get[] = "GET /ws?user=alice&token=a%20b HTTP/1.1\r\n"
                             "hOsT: example.com:8080\r\n"
                             "ORIGIN: https://app.example\r\n"
                             "authorization: Bearer tok\r\n"
                             "X-Ignored: whatever\r\n"
                             "Upgrade: websocket\r\n"
                             "CONNECTION: keep-alive, Upgrade\r\n"
                             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                             "sec-websocket-version: 13\r\n"
                             "\r\n";

static ac__http_t *http_new(void)
{
    ac__http_t *h = ac__http_new(MAX_BODY);
    assert_non_null(h);
    return h;
}

static void assert_span(const char *p, size_t n, const char *want)
{
    if (want == NULL) {
        assert_null(p);
        return;
    }
    assert_non_null(p);
    assert_int_equal(n, strlen(want));
    assert_memory_equal(p, want, n);
}

static void assert_header(const ac__http_req_t *req, int i, const char *want)
{
    assert_span(req->headers[i], req->header_lens[i], want);
}

/* Feeds the whole of text[0..len) at once; expects a complete request. */
static void parse_whole(ac__http_t *h, const char *text, size_t len, ac__http_req_t *req)
{
    size_t consumed = 0;
    assert_int_equal(ac__http_feed(h, text, len, &consumed), AC__HTTP_DONE);
    assert_int_equal(consumed, len);
    ac__http_request(h, text, req);
}

/* ---- a complete GET ---- */

static void assert_ws_get(const ac__http_req_t *req)
{
    assert_int_equal(req->method, HTTP_GET);
    assert_span(req->path, req->path_len, "/ws");
    assert_span(req->query, req->query_len, "user=alice&token=a%20b");
    assert_header(req, AC__H_HOST, "example.com:8080");
    assert_header(req, AC__H_ORIGIN, "https://app.example");
    assert_header(req, AC__H_AUTHORIZATION, "Bearer tok");
    assert_header(req, AC__H_UPGRADE, "websocket");
    assert_header(req, AC__H_CONNECTION, "keep-alive, Upgrade");
    assert_header(req, AC__H_WS_KEY, "dGhlIHNhbXBsZSBub25jZQ==");
    assert_header(req, AC__H_WS_VERSION, "13");
    assert_int_equal(req->body_len, 0);
    assert_int_equal(req->upgrade, 1);
    assert_int_equal(req->keep_alive, 1);
}

static void test_feed_complete_get_parses_request(void **st)
{
    ac__http_t *h = http_new();
    ac__http_req_t req;
    parse_whole(h, ws_get, sizeof(ws_get) - 1, &req);
    assert_ws_get(&req);
    ac__http_free(h);
}

static void test_feed_one_byte_at_a_time_gives_same_request(void **st)
{
    const size_t len = sizeof(ws_get) - 1;
    char *buf = malloc(len); /* grows like a connection's input buffer */
    assert_non_null(buf);
    ac__http_t *h = http_new();
    size_t consumed = 0;
    for (size_t n = 1; n < len; n++) {
        buf[n - 1] = ws_get[n - 1];
        assert_int_equal(ac__http_feed(h, buf, n, &consumed), AC__HTTP_MORE);
    }
    buf[len - 1] = ws_get[len - 1];
    assert_int_equal(ac__http_feed(h, buf, len, &consumed), AC__HTTP_DONE);
    assert_int_equal(consumed, len);
    ac__http_req_t req;
    ac__http_request(h, buf, &req);
    assert_ws_get(&req);
    ac__http_free(h);
    free(buf);
}

static void test_feed_without_new_bytes_is_more(void **st)
{
    ac__http_t *h = http_new();
    size_t consumed = 0;
    assert_int_equal(ac__http_feed(h, ws_get, 10, &consumed), AC__HTTP_MORE);
    assert_int_equal(ac__http_feed(h, ws_get, 10, &consumed), AC__HTTP_MORE);
    ac__http_free(h);
}

static void test_plain_get_has_absent_headers_null_and_no_query(void **st)
{
    static const char text[] = "GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n";
    ac__http_t *h = http_new();
    ac__http_req_t req;
    parse_whole(h, text, sizeof(text) - 1, &req);
    assert_span(req.path, req.path_len, "/healthz");
    assert_null(req.query);
    assert_int_equal(req.query_len, 0);
    assert_header(&req, AC__H_HOST, "h");
    assert_header(&req, AC__H_ORIGIN, NULL);
    assert_header(&req, AC__H_AUTHORIZATION, NULL);
    assert_header(&req, AC__H_UPGRADE, NULL);
    assert_header(&req, AC__H_CONNECTION, NULL);
    assert_header(&req, AC__H_WS_KEY, NULL);
    assert_header(&req, AC__H_WS_VERSION, NULL);
    assert_int_equal(req.upgrade, 0);
    ac__http_free(h);
}

static void test_empty_query_after_question_mark(void **st)
{
    static const char text[] = "GET /x? HTTP/1.1\r\nHost: h\r\n\r\n";
    ac__http_t *h = http_new();
    ac__http_req_t req;
    parse_whole(h, text, sizeof(text) - 1, &req);
    assert_span(req.path, req.path_len, "/x");
    assert_non_null(req.query);
    assert_int_equal(req.query_len, 0);
    ac__http_free(h);
}

static void test_repeated_header_keeps_first_value(void **st)
{
    static const char text[] = "GET / HTTP/1.1\r\nHost: first\r\nHost: second\r\n\r\n";
    ac__http_t *h = http_new();
    ac__http_req_t req;
    parse_whole(h, text, sizeof(text) - 1, &req);
    assert_header(&req, AC__H_HOST, "first");
    ac__http_free(h);
}

static void test_repeated_header_after_empty_first_keeps_first(void **st)
{
    static const char text[] = "GET / HTTP/1.1\r\nOrigin:\r\nOrigin: https://evil\r\n\r\n";
    ac__http_t *h = http_new();
    ac__http_req_t req;
    parse_whole(h, text, sizeof(text) - 1, &req);
    ac__http_free(h); /* req points into text only */
    assert_header(&req, AC__H_ORIGIN, "");
}

static void test_header_name_prefix_is_not_kept(void **st)
{
    static const char text[] = "GET / HTTP/1.1\r\nHosts: no\r\nOrigin-X: no\r\n\r\n";
    ac__http_t *h = http_new();
    ac__http_req_t req;
    parse_whole(h, text, sizeof(text) - 1, &req);
    assert_header(&req, AC__H_HOST, NULL);
    assert_header(&req, AC__H_ORIGIN, NULL);
    ac__http_free(h);
}

/* ---- bodies ---- */

static void test_post_with_content_length_body(void **st)
{
    static const char text[] = "POST /v1/publish HTTP/1.1\r\nHost: h\r\n"
                               "Content-Length: 13\r\n\r\n{\"a\":\"hello\"}";
    ac__http_t *h = http_new();
    ac__http_req_t req;
    parse_whole(h, text, sizeof(text) - 1, &req);
    assert_int_equal(req.method, HTTP_POST);
    assert_span(req.path, req.path_len, "/v1/publish");
    assert_span(req.body, req.body_len, "{\"a\":\"hello\"}");
    ac__http_free(h);
}

static void test_post_body_in_pieces(void **st)
{
    static const char text[] = "POST /p HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789";
    const size_t len = sizeof(text) - 1;
    ac__http_t *h = http_new();
    size_t consumed = 0;
    assert_int_equal(ac__http_feed(h, text, len - 7, &consumed), AC__HTTP_MORE);
    assert_int_equal(ac__http_feed(h, text, len - 2, &consumed), AC__HTTP_MORE);
    assert_int_equal(ac__http_feed(h, text, len, &consumed), AC__HTTP_DONE);
    assert_int_equal(consumed, len);
    ac__http_req_t req;
    ac__http_request(h, text, &req);
    assert_span(req.body, req.body_len, "0123456789");
    ac__http_free(h);
}

static void test_post_with_chunked_body(void **st)
{
    static const char text[] = "POST /v1/publish HTTP/1.1\r\nHost: h\r\n"
                               "Transfer-Encoding: chunked\r\n\r\n"
                               "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    ac__http_t *h = http_new();
    ac__http_req_t req;
    parse_whole(h, text, sizeof(text) - 1, &req);
    assert_int_equal(req.method, HTTP_POST);
    assert_span(req.body, req.body_len, "hello world");
    ac__http_free(h);
}

static void test_chunked_body_one_byte_at_a_time(void **st)
{
    static const char text[] = "POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                               "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    const size_t len = sizeof(text) - 1;
    char *buf = malloc(len);
    assert_non_null(buf);
    ac__http_t *h = http_new();
    size_t consumed = 0;
    for (size_t n = 1; n < len; n++) {
        buf[n - 1] = text[n - 1];
        assert_int_equal(ac__http_feed(h, buf, n, &consumed), AC__HTTP_MORE);
    }
    buf[len - 1] = text[len - 1];
    assert_int_equal(ac__http_feed(h, buf, len, &consumed), AC__HTTP_DONE);
    assert_int_equal(consumed, len);
    ac__http_req_t req;
    ac__http_request(h, buf, &req);
    assert_span(req.path, req.path_len, "/p");
    assert_span(req.body, req.body_len, "hello world");
    ac__http_free(h);
    free(buf);
}

static void test_body_exactly_max_is_accepted(void **st)
{
    char text[256 + MAX_BODY];
    int n =
        snprintf(text, sizeof(text), "POST /p HTTP/1.1\r\nContent-Length: %d\r\n\r\n", MAX_BODY);
    memset(text + n, 'b', MAX_BODY);
    ac__http_t *h = http_new();
    ac__http_req_t req;
    parse_whole(h, text, (size_t)n + MAX_BODY, &req);
    assert_int_equal(req.body_len, MAX_BODY);
    ac__http_free(h);
}

static void test_content_length_over_max_is_body_too_big_before_body(void **st)
{
    char text[128];
    int n = snprintf(text, sizeof(text), "POST /p HTTP/1.1\r\nContent-Length: %d\r\n\r\n",
                     MAX_BODY + 1);
    ac__http_t *h = http_new();
    size_t consumed = 0;
    assert_int_equal(ac__http_feed(h, text, (size_t)n, &consumed), AC__HTTP_BODY_TOO_BIG);
    ac__http_free(h);
}

static void test_chunked_body_over_max_is_body_too_big(void **st)
{
    /* Two chunks of 0x200 = 512 bytes each, then one more byte: 1025 > 1024. */
    char text[2048];
    size_t n = (size_t)snprintf(text, sizeof(text),
                                "POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (int c = 0; c < 2; c++) {
        n += (size_t)snprintf(text + n, sizeof(text) - n, "200\r\n");
        memset(text + n, 'c', 512);
        n += 512;
        n += (size_t)snprintf(text + n, sizeof(text) - n, "\r\n");
    }
    n += (size_t)snprintf(text + n, sizeof(text) - n, "1\r\nx\r\n0\r\n\r\n");
    ac__http_t *h = http_new();
    size_t consumed = 0;
    assert_int_equal(ac__http_feed(h, text, n, &consumed), AC__HTTP_BODY_TOO_BIG);
    ac__http_free(h);
}

static void test_chunked_body_exactly_max_is_accepted(void **st)
{
    char text[2048];
    size_t n = (size_t)snprintf(text, sizeof(text),
                                "POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (int c = 0; c < 2; c++) {
        n += (size_t)snprintf(text + n, sizeof(text) - n, "200\r\n");
        memset(text + n, 'c', 512);
        n += 512;
        n += (size_t)snprintf(text + n, sizeof(text) - n, "\r\n");
    }
    n += (size_t)snprintf(text + n, sizeof(text) - n, "0\r\n\r\n");
    ac__http_t *h = http_new();
    ac__http_req_t req;
    parse_whole(h, text, n, &req);
    assert_int_equal(req.body_len, MAX_BODY);
    ac__http_free(h);
}

/* ---- head limit and malformed input ---- */

static size_t padded_head(char *out, size_t pad, int complete)
{
    size_t n = (size_t)sprintf(out, "GET / HTTP/1.1\r\nX-Pad: ");
    memset(out + n, 'a', pad);
    n += pad;
    if (complete)
        n += (size_t)sprintf(out + n, "\r\n\r\n");
    return n;
}

static void test_incomplete_head_over_16k_is_head_too_big(void **st)
{
    char *text = malloc(AC__MAX_HEAD + 1024);
    assert_non_null(text);
    size_t n = padded_head(text, AC__MAX_HEAD + 100, 0);
    ac__http_t *h = http_new();
    size_t consumed = 0;
    assert_int_equal(ac__http_feed(h, text, n, &consumed), AC__HTTP_HEAD_TOO_BIG);
    ac__http_free(h);
    free(text);
}

static void test_complete_head_over_16k_in_one_feed_is_head_too_big(void **st)
{
    char *text = malloc(AC__MAX_HEAD + 1024);
    assert_non_null(text);
    size_t n = padded_head(text, AC__MAX_HEAD + 100, 1);
    ac__http_t *h = http_new();
    size_t consumed = 0;
    assert_int_equal(ac__http_feed(h, text, n, &consumed), AC__HTTP_HEAD_TOO_BIG);
    ac__http_free(h);
    free(text);
}

static void test_head_over_16k_fed_in_pieces_is_head_too_big(void **st)
{
    char *text = malloc(AC__MAX_HEAD + 1024);
    assert_non_null(text);
    size_t n = padded_head(text, AC__MAX_HEAD + 100, 1);
    ac__http_t *h = http_new();
    size_t consumed = 0;
    ac__http_status_t rc = AC__HTTP_MORE;
    for (size_t fed = 1000; rc == AC__HTTP_MORE; fed += 1000) {
        size_t k = fed < n ? fed : n;
        rc = ac__http_feed(h, text, k, &consumed);
        if (k == n)
            break;
    }
    assert_int_equal(rc, AC__HTTP_HEAD_TOO_BIG);
    ac__http_free(h);
    free(text);
}

static void test_complete_head_under_16k_is_accepted(void **st)
{
    char *text = malloc(AC__MAX_HEAD + 1024);
    assert_non_null(text);
    size_t n = padded_head(text, AC__MAX_HEAD - 100, 1);
    assert_true(n < AC__MAX_HEAD);
    ac__http_t *h = http_new();
    ac__http_req_t req;
    parse_whole(h, text, n, &req);
    assert_span(req.path, req.path_len, "/");
    ac__http_free(h);
    free(text);
}

/* A complete head of exactly `total` bytes, final CRLF CRLF included. */
static size_t head_of_total(char *out, size_t total)
{
    return padded_head(out, total - strlen("GET / HTTP/1.1\r\nX-Pad: ") - 4, 1);
}

static void test_head_of_exactly_16384_bytes_is_accepted(void **st)
{
    char *text = malloc(AC__MAX_HEAD + 1024);
    assert_non_null(text);
    size_t n = head_of_total(text, AC__MAX_HEAD);
    assert_int_equal(n, AC__MAX_HEAD);
    ac__http_t *h = http_new();
    ac__http_req_t req;
    parse_whole(h, text, n, &req);
    ac__http_free(h);
    free(text);
}

static void test_head_of_16385_bytes_is_head_too_big(void **st)
{
    char *text = malloc(AC__MAX_HEAD + 1024);
    assert_non_null(text);
    size_t n = head_of_total(text, AC__MAX_HEAD + 1);
    assert_int_equal(n, AC__MAX_HEAD + 1);
    ac__http_t *h = http_new();
    size_t consumed = 0;
    ac__http_status_t rc = ac__http_feed(h, text, n, &consumed);
    ac__http_free(h);
    free(text);
    assert_int_equal(rc, AC__HTTP_HEAD_TOO_BIG);
}

static void test_head_limit_does_not_depend_on_read_split(void **st)
{
    /* The same 16386-byte head, fed whole or as 16385 bytes then 1, gets one answer. */
    char *text = malloc(AC__MAX_HEAD + 1024);
    assert_non_null(text);
    size_t n = head_of_total(text, AC__MAX_HEAD + 2);
    size_t consumed = 0;
    ac__http_t *whole = http_new();
    ac__http_status_t rc_whole = ac__http_feed(whole, text, n, &consumed);
    ac__http_t *split = http_new();
    ac__http_status_t rc_split = ac__http_feed(split, text, n - 1, &consumed);
    if (rc_split == AC__HTTP_MORE)
        rc_split = ac__http_feed(split, text, n, &consumed);
    ac__http_free(whole);
    ac__http_free(split);
    free(text);
    assert_int_equal(rc_whole, rc_split);
}

static void test_garbage_request_line_is_bad(void **st)
{
    static const char text[] = "HELLO WORLD\r\n\r\n";
    ac__http_t *h = http_new();
    size_t consumed = 0;
    assert_int_equal(ac__http_feed(h, text, sizeof(text) - 1, &consumed), AC__HTTP_BAD);
    ac__http_free(h);
}

static void test_binary_garbage_is_bad(void **st)
{
    static const char text[] = "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";
    ac__http_t *h = http_new();
    size_t consumed = 0;
    assert_int_equal(ac__http_feed(h, text, sizeof(text) - 1, &consumed), AC__HTTP_BAD);
    ac__http_free(h);
}

static void test_bad_header_line_is_bad(void **st)
{
    static const char text[] = "GET / HTTP/1.1\r\nNo colon here\r\n\r\n";
    ac__http_t *h = http_new();
    size_t consumed = 0;
    assert_int_equal(ac__http_feed(h, text, sizeof(text) - 1, &consumed), AC__HTTP_BAD);
    ac__http_free(h);
}

/* ---- pipelining ---- */

static void test_pipelined_requests_parse_one_after_another(void **st)
{
    static const char first[] = "POST /one HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";
    static const char second[] = "GET /two?x=1 HTTP/1.1\r\nOrigin: o2\r\n\r\n";
    const size_t l1 = sizeof(first) - 1, l2 = sizeof(second) - 1;
    char buf[256];
    memcpy(buf, first, l1);
    memcpy(buf + l1, second, l2);
    size_t len = l1 + l2;

    ac__http_t *h = http_new();
    size_t consumed = 0;
    ac__http_req_t req;
    assert_int_equal(ac__http_feed(h, buf, len, &consumed), AC__HTTP_DONE);
    assert_int_equal(consumed, l1);
    ac__http_request(h, buf, &req);
    assert_span(req.path, req.path_len, "/one");
    assert_span(req.body, req.body_len, "abc");

    memmove(buf, buf + consumed, len - consumed);
    len -= consumed;
    ac__http_reset(h);
    assert_int_equal(ac__http_feed(h, buf, len, &consumed), AC__HTTP_DONE);
    assert_int_equal(consumed, l2);
    ac__http_request(h, buf, &req);
    assert_int_equal(req.method, HTTP_GET);
    assert_span(req.path, req.path_len, "/two");
    assert_span(req.query, req.query_len, "x=1");
    assert_header(&req, AC__H_ORIGIN, "o2");
    assert_int_equal(req.body_len, 0);
    ac__http_free(h);
}

static void test_pipelined_two_gets_first_consumed_is_exact(void **st)
{
    static const char first[] = "GET /a HTTP/1.1\r\nHost: one\r\n\r\n";
    static const char second[] = "GET /b HTTP/1.1\r\nHost: two\r\n\r\n";
    const size_t l1 = sizeof(first) - 1, l2 = sizeof(second) - 1;
    char buf[128];
    memcpy(buf, first, l1);
    memcpy(buf + l1, second, l2);

    ac__http_t *h = http_new();
    size_t consumed = 0;
    ac__http_req_t req;
    assert_int_equal(ac__http_feed(h, buf, l1 + l2, &consumed), AC__HTTP_DONE);
    assert_int_equal(consumed, l1);
    ac__http_request(h, buf, &req);
    assert_header(&req, AC__H_HOST, "one");

    memmove(buf, buf + l1, l2);
    ac__http_reset(h);
    assert_int_equal(ac__http_feed(h, buf, l2, &consumed), AC__HTTP_DONE);
    assert_int_equal(consumed, l2);
    ac__http_request(h, buf, &req);
    assert_span(req.path, req.path_len, "/b");
    assert_header(&req, AC__H_HOST, "two");
    ac__http_free(h);
}

static void test_reset_clears_previous_body(void **st)
{
    static const char first[] = "POST /one HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";
    static const char second[] = "GET /two HTTP/1.1\r\n\r\n";
    ac__http_t *h = http_new();
    ac__http_req_t req;
    parse_whole(h, first, sizeof(first) - 1, &req);
    ac__http_reset(h);
    parse_whole(h, second, sizeof(second) - 1, &req);
    assert_int_equal(req.body_len, 0);
    assert_header(&req, AC__H_HOST, NULL);
    ac__http_free(h);
}

/* ---- clone: a partial request moves from the scratch parser to a connection ---- */

static void test_clone_continues_partial_request_in_new_buffer(void **st)
{
    static const char text[] = "POST /v1/publish?a=1 HTTP/1.1\r\nHost: h\r\n"
                               "Content-Length: 10\r\n\r\n0123456789";
    const size_t len = sizeof(text) - 1;
    ac__http_t *scratch = http_new();
    size_t consumed = 0;
    /* First read: the head and 4 body bytes, parsed straight from the read buffer. */
    assert_int_equal(ac__http_feed(scratch, text, len - 6, &consumed), AC__HTTP_MORE);
    ac__http_t *c = ac__http_clone(scratch);
    assert_non_null(c);
    assert_null(scratch->body.p);
    assert_int_equal(scratch->body.len, 0);

    /* The connection keeps its own copy of the bytes and appends the next read. */
    char *own = malloc(len);
    assert_non_null(own);
    memcpy(own, text, len);
    assert_int_equal(ac__http_feed(c, own, len, &consumed), AC__HTTP_DONE);
    assert_int_equal(consumed, len);
    ac__http_req_t req;
    ac__http_request(c, own, &req);
    assert_int_equal(req.method, HTTP_POST);
    assert_span(req.path, req.path_len, "/v1/publish");
    assert_span(req.query, req.query_len, "a=1");
    assert_header(&req, AC__H_HOST, "h");
    assert_span(req.body, req.body_len, "0123456789");
    ac__http_free(c);
    ac__http_free(scratch); /* ASan: no double free of the moved body */
    free(own);
}

static void test_clone_leaves_original_reusable(void **st)
{
    static const char partial[] = "POST /a HTTP/1.1\r\nContent-Length: 6\r\n\r\nabc";
    static const char other[] = "POST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nxyz";
    ac__http_t *scratch = http_new();
    size_t consumed = 0;
    assert_int_equal(ac__http_feed(scratch, partial, sizeof(partial) - 1, &consumed),
                     AC__HTTP_MORE);
    ac__http_t *c = ac__http_clone(scratch);
    assert_non_null(c);
    ac__http_reset(scratch);
    ac__http_req_t req;
    parse_whole(scratch, other, sizeof(other) - 1, &req);
    assert_span(req.path, req.path_len, "/b");
    assert_span(req.body, req.body_len, "xyz");
    /* The clone's body is its own: untouched by the original's next request. */
    assert_int_equal(c->body.len, 3);
    assert_memory_equal(c->body.p, "abc", 3);
    ac__http_free(c);
    ac__http_free(scratch);
}

/* ---- keep-alive and upgrade ---- */

static int keep_alive_of(const char *text)
{
    ac__http_t *h = http_new();
    ac__http_req_t req;
    parse_whole(h, text, strlen(text), &req);
    ac__http_free(h);
    return req.keep_alive;
}

static void test_keep_alive_http11_default(void **st)
{
    assert_int_equal(keep_alive_of("GET / HTTP/1.1\r\nHost: h\r\n\r\n"), 1);
}

static void test_keep_alive_http11_connection_close(void **st)
{
    assert_int_equal(keep_alive_of("GET / HTTP/1.1\r\nConnection: close\r\n\r\n"), 0);
}

static void test_keep_alive_http10_default_is_close(void **st)
{
    assert_int_equal(keep_alive_of("GET / HTTP/1.0\r\nHost: h\r\n\r\n"), 0);
}

static void test_keep_alive_http10_with_keep_alive_header(void **st)
{
    assert_int_equal(keep_alive_of("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"), 1);
}

static void test_upgrade_request_sets_upgrade(void **st)
{
    static const char text[] = "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
                               "Connection: Upgrade\r\nSec-WebSocket-Key: k\r\n"
                               "Sec-WebSocket-Version: 13\r\n\r\n";
    ac__http_t *h = http_new();
    ac__http_req_t req;
    parse_whole(h, text, sizeof(text) - 1, &req);
    assert_int_equal(req.upgrade, 1);
    ac__http_free(h);
}

static void test_upgrade_header_without_connection_upgrade_is_not_upgrade(void **st)
{
    static const char text[] = "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n";
    ac__http_t *h = http_new();
    ac__http_req_t req;
    parse_whole(h, text, sizeof(text) - 1, &req);
    assert_int_equal(req.upgrade, 0);
    ac__http_free(h);
}

static void test_upgrade_consumed_stops_at_end_of_head(void **st)
{
    /* Frame bytes right behind the handshake are not part of the request. */
    static const char head[] = "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n"
                               "Connection: Upgrade\r\n\r\n";
    char buf[128];
    memcpy(buf, head, sizeof(head) - 1);
    memcpy(buf + sizeof(head) - 1, "\x81\x85\x01\x02\x03\x04", 6);
    ac__http_t *h = http_new();
    size_t consumed = 0;
    assert_int_equal(ac__http_feed(h, buf, sizeof(head) - 1 + 6, &consumed), AC__HTTP_DONE);
    assert_int_equal(consumed, sizeof(head) - 1);
    ac__http_free(h);
}

/* ---- ac__http_query_get ---- */

static long qget(const char *query, const char *name, char *out, size_t outsz)
{
    memset(out, 'Z', outsz);
    return ac__http_query_get(query, query != NULL ? strlen(query) : 0, name, out, outsz);
}

static void test_query_get_present(void **st)
{
    char out[64];
    assert_int_equal(qget("user=alice&token=xyz", "user", out, sizeof(out)), 5);
    assert_string_equal(out, "alice");
    assert_int_equal(qget("user=alice&token=xyz", "token", out, sizeof(out)), 3);
    assert_string_equal(out, "xyz");
}

static void test_query_get_absent_is_minus_1(void **st)
{
    char out[64];
    assert_int_equal(qget("user=alice&token=xyz", "thread", out, sizeof(out)), -1);
    assert_int_equal(qget("", "user", out, sizeof(out)), -1);
    assert_int_equal(qget(NULL, "user", out, sizeof(out)), -1);
}

static void test_query_get_empty_value(void **st)
{
    char out[64];
    assert_int_equal(qget("a=1&user=&b=2", "user", out, sizeof(out)), 0);
    assert_string_equal(out, "");
}

static void test_query_get_decodes_percent_and_plus(void **st)
{
    char out[64];
    assert_int_equal(qget("q=a%20b+c%2Fd%2fe%41", "q", out, sizeof(out)), 10);
    assert_string_equal(out, "a b c/d/eA");
}

static void test_query_get_decodes_utf8_bytes(void **st)
{
    char out[64];
    assert_int_equal(qget("name=caf%C3%A9", "name", out, sizeof(out)), 5);
    assert_string_equal(out, "caf\xc3\xa9");
}

static void test_query_get_percent_at_last_position(void **st)
{
    char out[64];
    assert_int_equal(qget("q=%41", "q", out, sizeof(out)), 1);
    assert_string_equal(out, "A");
    assert_int_equal(qget("q=%41&r=1", "q", out, sizeof(out)), 1);
    assert_string_equal(out, "A");
}

static void test_query_get_malformed_percent_is_minus_2(void **st)
{
    char out[64];
    assert_int_equal(qget("q=%G1", "q", out, sizeof(out)), -2);
    assert_int_equal(qget("q=%1G", "q", out, sizeof(out)), -2);
}

static void test_query_get_truncated_percent_is_minus_2(void **st)
{
    char out[64];
    assert_int_equal(qget("q=ab%4", "q", out, sizeof(out)), -2);
    assert_int_equal(qget("q=ab%", "q", out, sizeof(out)), -2);
    assert_int_equal(qget("q=ab%4&r=1", "q", out, sizeof(out)), -2);
}

static void test_query_get_too_long_is_minus_2(void **st)
{
    char out[4];
    assert_int_equal(qget("q=abcd", "q", out, sizeof(out)), -2);
    assert_int_equal(qget("q=%41%42%43%44", "q", out, sizeof(out)), -2);
}

static void test_query_get_value_filling_buffer_exactly(void **st)
{
    char out[4];
    assert_int_equal(qget("q=abc", "q", out, sizeof(out)), 3);
    assert_string_equal(out, "abc");
}

static void test_query_get_name_prefix_of_another(void **st)
{
    char out[64];
    assert_int_equal(qget("user_id=42&user=bob", "user", out, sizeof(out)), 3);
    assert_string_equal(out, "bob");
    assert_int_equal(qget("user_id=42&user=bob", "user_id", out, sizeof(out)), 2);
    assert_string_equal(out, "42");
    assert_int_equal(qget("username=x", "user", out, sizeof(out)), -1);
    assert_int_equal(qget("user=x", "user_id", out, sizeof(out)), -1);
}

static void test_query_get_name_must_start_a_pair(void **st)
{
    char out[64];
    assert_int_equal(qget("xuser=1&auser=2", "user", out, sizeof(out)), -1);
    assert_int_equal(qget("a=user=1", "user", out, sizeof(out)), -1);
}

static void test_query_get_first_of_repeated_name(void **st)
{
    char out[64];
    assert_int_equal(qget("user=a&user=b", "user", out, sizeof(out)), 1);
    assert_string_equal(out, "a");
}

static void test_query_get_respects_qlen(void **st)
{
    char out[64];
    const char q[] = "user=alice&token=xyz";
    /* Only "user=ali" is the query. */
    assert_int_equal(ac__http_query_get(q, 8, "user", out, sizeof(out)), 3);
    assert_string_equal(out, "ali");
    assert_int_equal(ac__http_query_get(q, 8, "token", out, sizeof(out)), -1);
}

/* ---- ac__http_has_token ---- */

static int has(const char *value, const char *token)
{
    return ac__http_has_token(value, strlen(value), token);
}

static void test_has_token_finds_upgrade_case_insensitively(void **st)
{
    assert_int_equal(has("keep-alive, Upgrade", "upgrade"), 1);
    assert_int_equal(has("keep-alive, Upgrade", "keep-alive"), 1);
    assert_int_equal(has("UPGRADE", "upgrade"), 1);
}

static void test_has_token_rejects_longer_token(void **st)
{
    assert_int_equal(has("upgrader", "upgrade"), 0);
    assert_int_equal(has("keep-alive, upgrader", "upgrade"), 0);
}

static void test_has_token_rejects_shorter_token(void **st)
{
    assert_int_equal(has("upgrad", "upgrade"), 0);
}

static void test_has_token_trims_spaces_and_tabs(void **st)
{
    assert_int_equal(has("  \tupgrade \t ,close", "upgrade"), 1);
    assert_int_equal(has("a,,  ,upgrade", "upgrade"), 1);
}

static void test_has_token_absent(void **st)
{
    assert_int_equal(has("keep-alive, Upgrade", "close"), 0);
    assert_int_equal(has("", "close"), 0);
    assert_int_equal(has(" , ,", "close"), 0);
}

static void test_has_token_respects_len(void **st)
{
    assert_int_equal(ac__http_has_token("close, upgrade", 5, "upgrade"), 0);
    assert_int_equal(ac__http_has_token("close, upgrade", 5, "close"), 1);
    assert_int_equal(ac__http_has_token("upgrader", 7, "upgrade"), 1);
}

/* ---- responses ---- */

static void assert_buf(const ac__buf_t *b, const char *want)
{
    assert_non_null(b);
    assert_int_equal(b->len, strlen(want));
    assert_memory_equal(b->data, want, b->len);
}

static void test_response_with_body_and_keep_alive(void **st)
{
    ac__buf_t *b = ac__http_response(200, "application/json", "", "{\"ok\":true}", 11, 1);
    assert_buf(b, "HTTP/1.1 200 OK\r\n"
                  "Content-Type: application/json\r\n"
                  "Content-Length: 11\r\n"
                  "Cache-Control: no-store\r\n"
                  "Connection: keep-alive\r\n"
                  "\r\n"
                  "{\"ok\":true}");
    assert_int_equal(b->refs, 1);
    ac__buf_unref(b);
}

static void test_response_with_extra_headers_and_close(void **st)
{
    ac__buf_t *b =
        ac__http_response(429, "application/json", "Retry-After: 1\r\nX-A: b\r\n", "{}", 2, 0);
    assert_buf(b, "HTTP/1.1 429 Too Many Requests\r\n"
                  "Content-Type: application/json\r\n"
                  "Content-Length: 2\r\n"
                  "Cache-Control: no-store\r\n"
                  "Connection: close\r\n"
                  "Retry-After: 1\r\n"
                  "X-A: b\r\n"
                  "\r\n"
                  "{}");
    ac__buf_unref(b);
}

static void test_response_without_body(void **st)
{
    ac__buf_t *b = ac__http_response(204, "text/plain", "", NULL, 0, 1);
    assert_buf(b, "HTTP/1.1 204 No Content\r\n"
                  "Content-Type: text/plain\r\n"
                  "Content-Length: 0\r\n"
                  "Cache-Control: no-store\r\n"
                  "Connection: keep-alive\r\n"
                  "\r\n");
    ac__buf_unref(b);
}

static void test_reason_phrases(void **st)
{
    assert_string_equal(ac__http_reason(101), "Switching Protocols");
    assert_string_equal(ac__http_reason(400), "Bad Request");
    assert_string_equal(ac__http_reason(404), "Not Found");
    assert_string_equal(ac__http_reason(413), "Payload Too Large");
    assert_string_equal(ac__http_reason(431), "Request Header Fields Too Large");
    assert_string_equal(ac__http_reason(503), "Service Unavailable");
    assert_string_equal(ac__http_reason(299), "Unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_feed_complete_get_parses_request),
        cmocka_unit_test(test_feed_one_byte_at_a_time_gives_same_request),
        cmocka_unit_test(test_feed_without_new_bytes_is_more),
        cmocka_unit_test(test_plain_get_has_absent_headers_null_and_no_query),
        cmocka_unit_test(test_empty_query_after_question_mark),
        cmocka_unit_test(test_repeated_header_keeps_first_value),
        cmocka_unit_test(test_repeated_header_after_empty_first_keeps_first),
        cmocka_unit_test(test_header_name_prefix_is_not_kept),
        cmocka_unit_test(test_post_with_content_length_body),
        cmocka_unit_test(test_post_body_in_pieces),
        cmocka_unit_test(test_post_with_chunked_body),
        cmocka_unit_test(test_chunked_body_one_byte_at_a_time),
        cmocka_unit_test(test_body_exactly_max_is_accepted),
        cmocka_unit_test(test_content_length_over_max_is_body_too_big_before_body),
        cmocka_unit_test(test_chunked_body_over_max_is_body_too_big),
        cmocka_unit_test(test_chunked_body_exactly_max_is_accepted),
        cmocka_unit_test(test_incomplete_head_over_16k_is_head_too_big),
        cmocka_unit_test(test_complete_head_over_16k_in_one_feed_is_head_too_big),
        cmocka_unit_test(test_head_over_16k_fed_in_pieces_is_head_too_big),
        cmocka_unit_test(test_complete_head_under_16k_is_accepted),
        cmocka_unit_test(test_head_of_exactly_16384_bytes_is_accepted),
        cmocka_unit_test(test_head_of_16385_bytes_is_head_too_big),
        cmocka_unit_test(test_head_limit_does_not_depend_on_read_split),
        cmocka_unit_test(test_garbage_request_line_is_bad),
        cmocka_unit_test(test_binary_garbage_is_bad),
        cmocka_unit_test(test_bad_header_line_is_bad),
        cmocka_unit_test(test_pipelined_requests_parse_one_after_another),
        cmocka_unit_test(test_pipelined_two_gets_first_consumed_is_exact),
        cmocka_unit_test(test_reset_clears_previous_body),
        cmocka_unit_test(test_clone_continues_partial_request_in_new_buffer),
        cmocka_unit_test(test_clone_leaves_original_reusable),
        cmocka_unit_test(test_keep_alive_http11_default),
        cmocka_unit_test(test_keep_alive_http11_connection_close),
        cmocka_unit_test(test_keep_alive_http10_default_is_close),
        cmocka_unit_test(test_keep_alive_http10_with_keep_alive_header),
        cmocka_unit_test(test_upgrade_request_sets_upgrade),
        cmocka_unit_test(test_upgrade_header_without_connection_upgrade_is_not_upgrade),
        cmocka_unit_test(test_upgrade_consumed_stops_at_end_of_head),
        cmocka_unit_test(test_query_get_present),
        cmocka_unit_test(test_query_get_absent_is_minus_1),
        cmocka_unit_test(test_query_get_empty_value),
        cmocka_unit_test(test_query_get_decodes_percent_and_plus),
        cmocka_unit_test(test_query_get_decodes_utf8_bytes),
        cmocka_unit_test(test_query_get_percent_at_last_position),
        cmocka_unit_test(test_query_get_malformed_percent_is_minus_2),
        cmocka_unit_test(test_query_get_truncated_percent_is_minus_2),
        cmocka_unit_test(test_query_get_too_long_is_minus_2),
        cmocka_unit_test(test_query_get_value_filling_buffer_exactly),
        cmocka_unit_test(test_query_get_name_prefix_of_another),
        cmocka_unit_test(test_query_get_name_must_start_a_pair),
        cmocka_unit_test(test_query_get_first_of_repeated_name),
        cmocka_unit_test(test_query_get_respects_qlen),
        cmocka_unit_test(test_has_token_finds_upgrade_case_insensitively),
        cmocka_unit_test(test_has_token_rejects_longer_token),
        cmocka_unit_test(test_has_token_rejects_shorter_token),
        cmocka_unit_test(test_has_token_trims_spaces_and_tabs),
        cmocka_unit_test(test_has_token_absent),
        cmocka_unit_test(test_has_token_respects_len),
        cmocka_unit_test(test_response_with_body_and_keep_alive),
        cmocka_unit_test(test_response_with_extra_headers_and_close),
        cmocka_unit_test(test_response_without_body),
        cmocka_unit_test(test_reason_phrases),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
