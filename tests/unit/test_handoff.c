/* Unit tests for moving a connection between loops (net/conn.c: ac__conn_detach, attach,
 * attach_resume, over net/inbox.c): a WebSocket upgrade read on loop A is answered and
 * served by loop B on its own thread, in plain TCP and in TLS, with the bytes that came
 * behind the request (in the read buffer, or still inside the TLS session) delivered once
 * and in order on B. A real client on a real loopback socket. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "agentcast.h"
#include "core/emitter.h"
#include "net/conn.h"
#include "net/inbox.h"
#include "net/server.h"
#include "net/tls.h"
#include "net/ws.h"

/* ---- two minimal servers: net/ with a test's handler table ---- */

typedef struct side_s {
    ac_server_t s;
    uv_loop_t loop;
    uv_check_t flusher;
    ac__inbox_t inbox; /* B only */
    uv_timer_t keepalive;
    unsigned requests; /* on_request calls */
    unsigned messages; /* on_message calls */
    unsigned attached; /* B: connections attached and upgraded */
} side_t;

static side_t A, B;

static void on_flush(uv_check_t *h)
{
    ac__conn_flush_dirty(h->data);
}

static void on_request_a(ac__conn_t *c, const ac__http_req_t *req);
static void on_request_b(ac__conn_t *c, const ac__http_req_t *req);
static void on_message_b(ac__conn_t *c, const char *p, size_t len, int binary);
static void on_message_a(ac__conn_t *c, const char *p, size_t len, int binary)
{
    A.messages++; /* never: the connection moved before it spoke WebSocket */
}
static void nop_conn(ac__conn_t *c)
{
}
static void nop_server(ac_server_t *s)
{
}

static const ac__net_handlers_t handlers_a = {.on_request = on_request_a,
                                              .on_message = on_message_a,
                                              .on_conn_free = nop_conn,
                                              .on_wakeup = nop_server,
                                              .on_sweep = nop_server,
                                              .on_tick = nop_server,
                                              .on_shutdown = nop_server};
static const ac__net_handlers_t handlers_b = {.on_request = on_request_b,
                                              .on_message = on_message_b,
                                              .on_conn_free = nop_conn,
                                              .on_wakeup = nop_server,
                                              .on_sweep = nop_server,
                                              .on_tick = nop_server,
                                              .on_shutdown = nop_server};

static void side_init(side_t *d, const ac__net_handlers_t *h, const char *cert, const char *key)
{
    const char *why = NULL;

    memset(d, 0, sizeof(*d));
    assert_int_equal(uv_loop_init(&d->loop), 0);
    ac_server_opts_init(&d->s.opts);
    d->s.opts.tls_cert = cert;
    d->s.opts.tls_key = key;
    d->s.loop = &d->loop;
    d->s.handlers = h;
    d->s.start_ms = uv_now(&d->loop);
    assert_int_equal(ac__server_net_init(&d->s), 0);
    assert_int_equal(ac__manager_init(&d->s.manager, 3, 100), 0);
    ac__emitter_init(&d->s.emitter);
    if (cert != NULL) {
        d->s.tls = ac__tls_ctx_new(cert, key, &why);
        assert_non_null(d->s.tls);
    }
    uv_check_init(&d->loop, &d->flusher);
    d->flusher.data = &d->s;
    uv_check_start(&d->flusher, on_flush);
    uv_unref((uv_handle_t *)&d->flusher);
}

static void side_dispose(side_t *d)
{
    uv_close((uv_handle_t *)&d->flusher, NULL);
    uv_run(&d->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&d->loop), 0);
    SSL_CTX_free(d->s.tls);
    ac__emitter_dispose(&d->s.emitter);
    ac__manager_dispose(&d->s.manager);
    ac__server_net_dispose(&d->s);
}

/* ---- A: reads the request and moves the connection; B: upgrades and echoes ---- */

typedef struct move_s {
    ac__handoff_t h; /* first: its msg is the message */
} move_t;

static void on_moved(ac__msg_t *m, void *arg, int status)
{
    move_t *mv = (move_t *)m;
    ac__conn_t *c;

    /* B's thread: what goes wrong is recorded for the main thread to assert on. */
    uv_timer_stop(&B.keepalive);
    c = status == 0 ? ac__conn_attach(&B.s, &mv->h) : NULL;
    /* The accept key of RFC 6455's example nonce. */
    if (c != NULL && ac__conn_upgrade(c, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") == 0) {
        B.attached++;
        ac__conn_attach_resume(c);
    }
    free(mv);
}

static void on_request_a(ac__conn_t *c, const ac__http_req_t *req)
{
    move_t *mv = calloc(1, sizeof(*mv));

    A.requests++;
    assert_non_null(mv);
    assert_true(req->upgrade);
    mv->h.msg.run = on_moved;
    assert_int_equal(ac__conn_detach(c, &mv->h), 0);
    assert_int_equal(ac__inbox_post(&B.inbox, &mv->h.msg, &mv->h.msg, 1), 0);
}

static void on_request_b(ac__conn_t *c, const ac__http_req_t *req)
{
    B.requests++; /* never: B gets the connection upgraded */
}

static void on_message_b(ac__conn_t *c, const char *p, size_t len, int binary)
{
    char out[128];
    ac__buf_t *f;

    B.messages++;
    if (len + 2 > sizeof(out))
        len = sizeof(out) - 2;
    memcpy(out, "B:", 2);
    memcpy(out + 2, p, len);
    f = ac__frame_raw(AC_WS_TEXT, out, len + 2);
    if (f == NULL)
        return;
    ac__conn_send_control(c, f);
    ac__buf_unref(f);
}

static void on_keepalive(uv_timer_t *t)
{
    /* No connection reached B within 60 s: the main thread's checks fail. */
}

static void b_main(void *arg)
{
    uv_run(&B.loop, UV_RUN_DEFAULT);
}

/* ---- the client: blocking sockets on its own thread ---- */

typedef struct client_s {
    const char *failed; /* the step that failed, NULL when all passed */
    int port;
    int tls;
    int split; /* TLS: the request and the first frame in two records, sent in one write */
    char got1[64];
    char got2[64];
    uv_sem_t connected;
} client_t;

static const char request[] =
    "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\n\r\n";

/* A masked text frame (client to server). */
static size_t client_frame(const char *text, unsigned char *out)
{
    size_t n = strlen(text);
    static const unsigned char mask[4] = {1, 2, 3, 4};

    out[0] = 0x81;
    out[1] = (unsigned char)(0x80 | n);
    memcpy(out + 2, mask, 4);
    for (size_t i = 0; i < n; i++)
        out[6 + i] = (unsigned char)text[i] ^ mask[i % 4];
    return n + 6;
}

typedef struct io_s {
    int fd;
    SSL *ssl;
} io_t;

static int io_read(io_t *io, void *p, size_t n)
{
    return io->ssl ? SSL_read(io->ssl, p, (int)n) : (int)recv(io->fd, p, n, 0);
}

static int io_write(io_t *io, const void *p, size_t n)
{
    if (io->ssl)
        return SSL_write(io->ssl, p, (int)n) == (int)n ? 0 : -1;
    return send(io->fd, p, n, 0) == (ssize_t)n ? 0 : -1;
}

/* Reads are bounded by the socket's 10 s receive timeout. */
static int read_exact(io_t *io, char *p, size_t n)
{
    size_t got = 0;
    while (got < n) {
        int r = io_read(io, p + got, n - got);
        if (r <= 0)
            return -1;
        got += (size_t)r;
    }
    return 0;
}

/* The 101's head, byte by byte up to its blank line. */
static int read_101(io_t *io)
{
    char head[512];
    size_t n = 0;

    while (n < 4 || memcmp(head + n - 4, "\r\n\r\n", 4) != 0) {
        if (n == sizeof(head) - 1 || read_exact(io, head + n, 1) != 0)
            return -1;
        n++;
    }
    head[n] = '\0';
    return strncmp(head, "HTTP/1.1 101 ", 13) == 0 ? 0 : -1;
}

/* One unmasked text frame of under 126 bytes. */
static int read_text(io_t *io, char *out, size_t cap)
{
    unsigned char h[2];

    if (read_exact(io, (char *)h, 2) != 0 || h[0] != 0x81 || (h[1] & 0x7f) >= cap ||
        read_exact(io, out, h[1] & 0x7f) != 0)
        return -1;
    out[h[1] & 0x7f] = '\0';
    return 0;
}

/* Sends the request and the frame "hello" right behind it. */
static int send_request(client_t *cl, io_t *io)
{
    unsigned char frame[64];
    size_t flen = client_frame("hello", frame), rlen = strlen(request);

    if (cl->tls && cl->split) {
        /* Two records, one write: the first read on A holds both, and A's session still
         * holds the second when the connection moves. */
        BIO *mem = BIO_new(BIO_s_mem());
        BIO *sock = SSL_get_wbio(io->ssl);
        char *p;
        long n;
        int r;
        BIO_up_ref(sock);
        SSL_set0_wbio(io->ssl, mem);
        r = SSL_write(io->ssl, request, (int)rlen) == (int)rlen &&
                    SSL_write(io->ssl, frame, (int)flen) == (int)flen
                ? 0
                : -1;
        n = BIO_get_mem_data(mem, &p);
        if (r == 0 && send(io->fd, p, (size_t)n, 0) != n)
            r = -1;
        SSL_set0_wbio(io->ssl, sock);
        return r;
    }
    char both[512];
    memcpy(both, request, rlen);
    memcpy(both + rlen, frame, flen);
    return io_write(io, both, rlen + flen);
}

static void client_main(void *arg)
{
    client_t *cl = arg;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)cl->port)};
    struct timeval tv = {.tv_sec = 10};
    unsigned char frame[64];
    size_t flen;
    io_t io = {socket(AF_INET, SOCK_STREAM, 0), NULL};
    SSL_CTX *ctx = NULL;

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(io.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(io.fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
        cl->failed = "connect";
    uv_sem_post(&cl->connected);
    if (cl->failed == NULL && cl->tls) {
        ctx = SSL_CTX_new(TLS_client_method());
        io.ssl = SSL_new(ctx);
        SSL_set_fd(io.ssl, io.fd);
        if (SSL_connect(io.ssl) != 1)
            cl->failed = "TLS handshake";
    }
    if (cl->failed == NULL && send_request(cl, &io) != 0)
        cl->failed = "send the request";
    if (cl->failed == NULL && read_101(&io) != 0)
        cl->failed = "read the 101";
    if (cl->failed == NULL && read_text(&io, cl->got1, sizeof(cl->got1)) != 0)
        cl->failed = "read the answer to the frame sent behind the request";
    /* A frame after the move arrives through B's own poll handle. */
    flen = client_frame("again", frame);
    if (cl->failed == NULL && io_write(&io, frame, flen) != 0)
        cl->failed = "send a frame";
    if (cl->failed == NULL && read_text(&io, cl->got2, sizeof(cl->got2)) != 0)
        cl->failed = "read the answer to a frame sent after the move";
    SSL_free(io.ssl);
    SSL_CTX_free(ctx);
    close(io.fd);
}

/* ---- a self-signed certificate for the TLS cases ---- */

static char cert_path[64], key_path[64], tmp_dir[32];

static void make_cert(void)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    FILE *f;

    assert_non_null(key);
    strcpy(tmp_dir, "/tmp/ac_handoffXXXXXX");
    assert_non_null(mkdtemp(tmp_dir));
    snprintf(cert_path, sizeof(cert_path), "%s/cert.pem", tmp_dir);
    snprintf(key_path, sizeof(key_path), "%s/key.pem", tmp_dir);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, key);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               (const unsigned char *)"127.0.0.1", -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    assert_true(X509_sign(x, key, EVP_sha256()) > 0);
    f = fopen(cert_path, "w");
    assert_non_null(f);
    PEM_write_X509(f, x);
    fclose(f);
    f = fopen(key_path, "w");
    assert_non_null(f);
    PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    X509_free(x);
    EVP_PKEY_free(key);
}

static void remove_cert(void)
{
    unlink(cert_path);
    unlink(key_path);
    rmdir(tmp_dir);
}

/* ---- the cases ---- */

static void run_case(int tls, int split)
{
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), fd;
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t slen = sizeof(sa);
    uv_thread_t bt, ct;
    client_t cl = {.tls = tls, .split = split};

    if (tls)
        make_cert();
    side_init(&A, &handlers_a, tls ? cert_path : NULL, tls ? key_path : NULL);
    side_init(&B, &handlers_b, tls ? cert_path : NULL, tls ? key_path : NULL);
    assert_int_equal(ac__inbox_init(&B.loop, &B.inbox, 16, NULL), 0);
    uv_timer_init(&B.loop, &B.keepalive);
    uv_timer_start(&B.keepalive, on_keepalive, 60000, 0);

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(lfd, 4), 0);
    assert_int_equal(getsockname(lfd, (struct sockaddr *)&sa, &slen), 0);
    cl.port = ntohs(sa.sin_port);
    assert_int_equal(uv_sem_init(&cl.connected, 0), 0);
    assert_int_equal(uv_thread_create(&bt, b_main, NULL), 0);
    assert_int_equal(uv_thread_create(&ct, client_main, &cl), 0);
    uv_sem_wait(&cl.connected);
    fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    assert_true(fd >= 0);
    ac__conn_accept(&A.s, fd);
    /* A's loop ends once its connection is gone (moved). */
    uv_run(&A.loop, UV_RUN_DEFAULT);
    uv_thread_join(&ct);
    uv_thread_join(&bt); /* B's ends once the client closed */

    if (cl.failed != NULL)
        fail_msg("client: %s failed", cl.failed);
    assert_int_equal(B.attached, 1);
    assert_string_equal(cl.got1, "B:hello");
    assert_string_equal(cl.got2, "B:again");
    assert_int_equal(A.requests, 1);
    assert_int_equal(A.messages, 0);
    assert_int_equal(A.s.handoffs_out, 1);
    assert_int_equal(A.s.nconns_all, 0);
    assert_int_equal(B.requests, 0);
    assert_int_equal(B.messages, 2);
    assert_int_equal(B.s.handoffs_in, 1);
    assert_int_equal(B.s.nconns_all, 0);

    ac__inbox_close(&B.inbox, NULL);
    uv_close((uv_handle_t *)&B.keepalive, NULL);
    side_dispose(&B);
    ac__inbox_dispose(&B.inbox);
    side_dispose(&A);
    uv_sem_destroy(&cl.connected);
    close(lfd);
    if (tls)
        remove_cert();
}

static void test_plain_upgrade_moves_to_another_loop_with_the_frame_behind_it(void **st)
{
    run_case(0, 0);
}

static void test_tls_upgrade_moves_with_its_session(void **st)
{
    run_case(1, 0);
}

static void test_tls_records_left_in_the_session_are_read_on_the_new_loop(void **st)
{
    run_case(1, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_upgrade_moves_to_another_loop_with_the_frame_behind_it),
        cmocka_unit_test(test_tls_upgrade_moves_with_its_session),
        cmocka_unit_test(test_tls_records_left_in_the_session_are_read_on_the_new_loop),
    };
    ac__ws_init();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
