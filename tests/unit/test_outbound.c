/* Unit tests for src/net/outbound.c: requests through libcurl's multi interface on a libuv
 * loop, against a small HTTP/1.1 server on the same loop (127.0.0.1, port 0). Each test runs
 * the loop until its requests are answered, closes the client and checks that the loop is
 * left with no handle. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "agentcast.h"
#include "net/outbound.h"

/* ---- the test server: /ok, /echo (the body back), /never (no answer), /big --------- */

typedef struct peer_s {
    uv_tcp_t tcp;
    char buf[65536];
    size_t len;
} peer_t;

static uv_loop_t loop;
static uv_tcp_t listener;
static int port;
static int accepted;

static void on_peer_closed(uv_handle_t *h)
{
    free(h->data);
}

static void on_written(uv_write_t *w, int status)
{
    free(w->data);
    free(w);
}

static void reply(peer_t *p, const char *status, const char *body, size_t n)
{
    char head[128];
    int hn = snprintf(head, sizeof(head), "HTTP/1.1 %s\r\nContent-Length: %zu\r\n\r\n", status, n);
    char *out = malloc((size_t)hn + n);
    memcpy(out, head, (size_t)hn);
    memcpy(out + hn, body, n);
    uv_write_t *w = malloc(sizeof(*w));
    w->data = out;
    uv_buf_t b = uv_buf_init(out, (unsigned)((size_t)hn + n));
    uv_write(w, (uv_stream_t *)&p->tcp, &b, 1, on_written);
}

/* Answers every whole request in the buffer. */
static void serve(peer_t *p)
{
    for (;;) {
        char *end = memmem(p->buf, p->len, "\r\n\r\n", 4);
        if (end == NULL)
            return;
        size_t head = (size_t)(end - p->buf) + 4;
        size_t body = 0;
        for (char *h = p->buf; h < end; h = strstr(h, "\r\n") + 2) {
            if (strncasecmp(h, "content-length:", 15) == 0)
                body = strtoul(h + 15, NULL, 10);
        }
        if (p->len < head + body)
            return;
        if (strncmp(p->buf, "POST /echo ", 11) == 0) {
            reply(p, "200 OK", p->buf + head, body);
        } else if (strncmp(p->buf, "GET /ok ", 8) == 0) {
            reply(p, "200 OK", "hello", 5);
        } else if (strncmp(p->buf, "GET /big ", 9) == 0) {
            static char big[100000];
            memset(big, 'x', sizeof(big));
            reply(p, "200 OK", big, sizeof(big));
        } else if (strncmp(p->buf, "GET /never ", 11) != 0) {
            reply(p, "404 Not Found", "", 0);
        }
        memmove(p->buf, p->buf + head + body, p->len - head - body);
        p->len -= head + body;
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    peer_t *p = h->data;
    *b = uv_buf_init(p->buf + p->len, (unsigned)(sizeof(p->buf) - p->len));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    peer_t *p = s->data;
    if (n < 0) {
        uv_close((uv_handle_t *)&p->tcp, on_peer_closed);
        return;
    }
    p->len += (size_t)n;
    serve(p);
}

static void on_connection(uv_stream_t *server, int status)
{
    peer_t *p = calloc(1, sizeof(*p));
    uv_tcp_init(&loop, &p->tcp);
    p->tcp.data = p;
    assert_int_equal(uv_accept(server, (uv_stream_t *)&p->tcp), 0);
    accepted++;
    uv_read_start((uv_stream_t *)&p->tcp, on_alloc, on_read);
}

static void close_any(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h))
        uv_close(h, h == (uv_handle_t *)&listener ? NULL : on_peer_closed);
}

static int setup(void **state)
{
    struct sockaddr_in a;
    struct sockaddr_storage bound;
    int len = sizeof(bound);
    uv_loop_init(&loop);
    uv_tcp_init(&loop, &listener);
    uv_ip4_addr("127.0.0.1", 0, &a);
    uv_tcp_bind(&listener, (const struct sockaddr *)&a, 0);
    uv_listen((uv_stream_t *)&listener, 16, on_connection);
    uv_tcp_getsockname(&listener, (struct sockaddr *)&bound, &len);
    port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
    accepted = 0;
    return 0;
}

static int teardown(void **state)
{
    uv_walk(&loop, close_any, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    return 0;
}

/* ---- the client side ---------------------------------------------------------------- */

typedef struct result_s {
    int called;
    long status;
    char body[128];
    size_t body_len;
    int timed_out;
    int has_error;
    char error[128];
} result_t;

static void on_result(void *arg, const ac__outres_t *res)
{
    result_t *r = arg;
    r->called++;
    r->status = res->status;
    r->body_len = res->body_len;
    snprintf(r->body, sizeof(r->body), "%s", res->body);
    r->timed_out = res->timed_out;
    r->has_error = res->error != NULL;
    snprintf(r->error, sizeof(r->error), "%s", res->error ? res->error : "");
}

static int closed;

static void on_closed(void *arg)
{
    closed++;
}

static ac__outbound_t *client(void)
{
    int err = 0;
    ac__outbound_t *ob = ac__outbound_new(&loop, NULL, &err);
    assert_non_null(ob);
    return ob;
}

static void url(char *out, size_t n, const char *path)
{
    snprintf(out, n, "http://127.0.0.1:%d%s", port, path);
}

static void run_until(const int *flag, int want)
{
    while (*flag < want)
        uv_run(&loop, UV_RUN_ONCE);
}

static void close_client(ac__outbound_t *ob)
{
    closed = 0;
    ac__outbound_close(ob, on_closed, NULL);
    run_until(&closed, 1);
}

static void test_get_answers_status_and_body(void **state)
{
    ac__outbound_t *ob = client();
    char u[64];
    url(u, sizeof(u), "/ok");
    result_t r = {0};
    ac__outreq_opts_t o = {.url = u, .timeout_ms = 5000, .max_response = 1024};
    assert_int_equal(ac__outbound_request(ob, &o, on_result, &r, NULL), 0);
    assert_int_equal(r.called, 0); /* never from inside the call */
    run_until(&r.called, 1);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "hello");
    assert_false(r.has_error);
    close_client(ob);
}

static void test_post_sends_the_body_and_headers(void **state)
{
    ac__outbound_t *ob = client();
    char u[64];
    url(u, sizeof(u), "/echo");
    result_t r = {0};
    static const char *const headers[] = {"Content-Type: application/json", NULL};
    ac__outreq_opts_t o = {.url = u,
                           .body = "{\"a\":1}",
                           .body_len = 7,
                           .headers = headers,
                           .timeout_ms = 5000,
                           .max_response = 1024};
    assert_int_equal(ac__outbound_request(ob, &o, on_result, &r, NULL), 0);
    run_until(&r.called, 1);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"a\":1}");
    close_client(ob);
}

static void test_sequential_requests_reuse_one_connection(void **state)
{
    ac__outbound_t *ob = client();
    char u[64];
    url(u, sizeof(u), "/ok");
    for (int i = 0; i < 3; i++) {
        result_t r = {0};
        ac__outreq_opts_t o = {.url = u, .timeout_ms = 5000, .max_response = 1024};
        assert_int_equal(ac__outbound_request(ob, &o, on_result, &r, NULL), 0);
        run_until(&r.called, 1);
        assert_int_equal(r.status, 200);
    }
    assert_int_equal(accepted, 1);
    close_client(ob);
}

static void test_a_server_that_never_answers_times_out(void **state)
{
    ac__outbound_t *ob = client();
    char u[64];
    url(u, sizeof(u), "/never");
    result_t r = {0};
    ac__outreq_opts_t o = {.url = u, .timeout_ms = 200, .max_response = 1024};
    assert_int_equal(ac__outbound_request(ob, &o, on_result, &r, NULL), 0);
    run_until(&r.called, 1);
    assert_int_equal(r.status, 0);
    assert_true(r.timed_out);
    assert_true(r.has_error);
    close_client(ob);
}

static void test_a_body_over_max_response_is_an_error(void **state)
{
    ac__outbound_t *ob = client();
    char u[64];
    url(u, sizeof(u), "/big");
    result_t r = {0};
    ac__outreq_opts_t o = {.url = u, .timeout_ms = 5000, .max_response = 1000};
    assert_int_equal(ac__outbound_request(ob, &o, on_result, &r, NULL), 0);
    run_until(&r.called, 1);
    assert_int_equal(r.status, 0);
    assert_string_equal(r.error, "response body too large");
    close_client(ob);
}

static void test_a_refused_connection_is_an_error(void **state)
{
    ac__outbound_t *ob = client();
    result_t r = {0};
    ac__outreq_opts_t o = {.url = "http://127.0.0.1:1/", .timeout_ms = 5000, .max_response = 10};
    assert_int_equal(ac__outbound_request(ob, &o, on_result, &r, NULL), 0);
    run_until(&r.called, 1);
    assert_int_equal(r.status, 0);
    assert_true(r.has_error);
    assert_false(r.timed_out);
    close_client(ob);
}

static void test_only_http_and_https_urls_are_taken(void **state)
{
    ac__outbound_t *ob = client();
    result_t r = {0};
    const char *bad[] = {"file:///etc/passwd", "ftp://127.0.0.1/", "gopher://x", "", "127.0.0.1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ac__outreq_opts_t o = {.url = bad[i], .timeout_ms = 100, .max_response = 10};
        assert_int_equal(ac__outbound_request(ob, &o, on_result, &r, NULL), AC_EINVAL);
    }
    assert_int_equal(r.called, 0);
    close_client(ob);
}

static void test_a_cancelled_request_never_calls_back(void **state)
{
    ac__outbound_t *ob = client();
    char u[64];
    url(u, sizeof(u), "/never");
    result_t r = {0}, other = {0};
    ac__outreq_t *req = NULL;
    ac__outreq_opts_t o = {.url = u, .timeout_ms = 300, .max_response = 10};
    assert_int_equal(ac__outbound_request(ob, &o, on_result, &r, &req), 0);
    assert_int_equal(ac__outbound_inflight(ob), 1);
    ac__outbound_cancel(req);
    assert_int_equal(ac__outbound_inflight(ob), 0);
    /* A second request runs out its own timeout: by then the first would have too. */
    assert_int_equal(ac__outbound_request(ob, &o, on_result, &other, NULL), 0);
    run_until(&other.called, 1);
    assert_int_equal(r.called, 0);
    close_client(ob);
}

static void test_close_fails_what_is_in_flight_and_leaves_no_handle(void **state)
{
    ac__outbound_t *ob = client();
    char u[64];
    url(u, sizeof(u), "/never");
    result_t r[3] = {{0}};
    ac__outreq_opts_t o = {.url = u, .timeout_ms = 60000, .max_response = 10};
    for (int i = 0; i < 3; i++)
        assert_int_equal(ac__outbound_request(ob, &o, on_result, &r[i], NULL), 0);
    /* Let the connections open. */
    while (accepted < 3)
        uv_run(&loop, UV_RUN_ONCE);
    closed = 0;
    ac__outbound_close(ob, on_closed, NULL);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(r[i].called, 1);
        assert_string_equal(r[i].error, "shutting down");
    }
    run_until(&closed, 1);
    /* teardown checks that the loop closes with nothing left open */
}

static void test_a_ca_file_without_a_certificate_is_refused(void **state)
{
    char path[] = "/tmp/agentcast-test-ca-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "not a certificate\n", 18), 18);
    close(fd);
    int err = 0;
    ac__outbound_opts_t o = {.ca_file = path};
    assert_null(ac__outbound_new(&loop, &o, &err));
    assert_int_equal(err, AC_EINVAL);
    o.ca_file = "/nonexistent/ca.pem";
    assert_null(ac__outbound_new(&loop, &o, &err));
    assert_int_equal(err, AC_EINVAL);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_get_answers_status_and_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_post_sends_the_body_and_headers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sequential_requests_reuse_one_connection, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_server_that_never_answers_times_out, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_body_over_max_response_is_an_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_refused_connection_is_an_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_only_http_and_https_urls_are_taken, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_cancelled_request_never_calls_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_fails_what_is_in_flight_and_leaves_no_handle,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_ca_file_without_a_certificate_is_refused, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
