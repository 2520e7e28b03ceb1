/* Outbound HTTP(S) on the loop: libcurl's multi interface, told about socket readiness by
 * uv_poll_t handles and about time by one uv_timer_t (curl_multi_socket_action). curl
 * keeps the connection cache, TLS sessions and DNS cache; this module owns the requests'
 * life cycle and the handles. It is not a retrying client and parses no bodies. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <openssl/err.h>
#include <openssl/x509.h>

#include "agentcast.h"
#include "net/outbound.h"

typedef struct sock_s {
    uv_poll_t poll;
    ac__outbound_t *ob;
    curl_socket_t fd;
    struct sock_s *prev, *next; /* the client's open sockets */
} sock_t;

struct ac__outreq_s {
    ac__outreq_t *prev, *next; /* the client's requests in flight */
    ac__outbound_t *ob;
    CURL *easy;
    struct curl_slist *headers;
    char *body; /* the request body (a copy) */
    char *resp; /* the response body so far */
    size_t resp_len;
    size_t resp_cap;
    size_t max_response;
    int too_big;
    ac__outreq_cb cb;
    void *arg;
    char errbuf[CURL_ERROR_SIZE];
};

struct ac__outbound_s {
    uv_loop_t *loop;
    CURLM *multi;
    char *ca_file;
    uv_timer_t timer;
    int timer_init;
    unsigned open_handles; /* the timer and the polls not yet closed */
    sock_t *socks;
    ac__outreq_t *reqs;
    unsigned inflight;
    int closing;
    void (*done)(void *arg);
    void *done_arg;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static int curl_ok;

static void curl_init_once(void)
{
    /* Not thread-safe in libcurl before 7.84: once per process, whoever comes first. */
    curl_ok = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
}

static void check_done(ac__outbound_t *ob);

static void maybe_free(ac__outbound_t *ob)
{
    if (!ob->closing || ob->open_handles > 0)
        return;
    void (*done)(void *) = ob->done;
    void *arg = ob->done_arg;
    free(ob->ca_file);
    free(ob);
    if (done != NULL)
        done(arg);
}

static void on_handle_closed(uv_handle_t *h)
{
    ac__outbound_t *ob = h->data;

    ob->open_handles--;
    maybe_free(ob);
}

static void on_sock_closed(uv_handle_t *h)
{
    sock_t *sk = (sock_t *)h;
    ac__outbound_t *ob = sk->ob;

    free(sk);
    ob->open_handles--;
    maybe_free(ob);
}

static void sock_close(sock_t *sk)
{
    ac__outbound_t *ob = sk->ob;

    if (sk->prev != NULL)
        sk->prev->next = sk->next;
    else
        ob->socks = sk->next;
    if (sk->next != NULL)
        sk->next->prev = sk->prev;
    uv_poll_stop(&sk->poll);
    uv_close((uv_handle_t *)&sk->poll, on_sock_closed);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    sock_t *sk = (sock_t *)h;
    ac__outbound_t *ob = sk->ob;
    int flags = 0;
    int running = 0;

    if (status < 0)
        flags = CURL_CSELECT_ERR;
    else
        flags = (events & UV_READABLE ? CURL_CSELECT_IN : 0) |
                (events & UV_WRITABLE ? CURL_CSELECT_OUT : 0);
    curl_multi_socket_action(ob->multi, sk->fd, flags, &running);
    check_done(ob);
}

/* CURLMOPT_SOCKETFUNCTION: what curl wants to wait for on one socket. */
static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    ac__outbound_t *ob = userp;
    sock_t *sk = socketp;

    if (what == CURL_POLL_REMOVE) {
        if (sk != NULL) {
            if (!ob->closing)
                curl_multi_assign(ob->multi, fd, NULL);
            sock_close(sk);
        }
        return 0;
    }
    if (sk == NULL) {
        sk = calloc(1, sizeof(*sk));
        if (sk == NULL)
            return -1;
        if (uv_poll_init_socket(ob->loop, &sk->poll, fd) != 0) {
            free(sk);
            return -1;
        }
        sk->ob = ob;
        sk->fd = fd;
        sk->next = ob->socks;
        if (ob->socks != NULL)
            ob->socks->prev = sk;
        ob->socks = sk;
        ob->open_handles++;
        curl_multi_assign(ob->multi, fd, sk);
    }
    int events = (what & CURL_POLL_IN ? UV_READABLE : 0) | (what & CURL_POLL_OUT ? UV_WRITABLE : 0);
    uv_poll_start(&sk->poll, events, on_poll);
    return 0;
}

static void on_timer(uv_timer_t *t)
{
    ac__outbound_t *ob = t->data;
    int running = 0;

    curl_multi_socket_action(ob->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(ob);
}

/* CURLMOPT_TIMERFUNCTION: when curl next wants to be called without socket activity. */
static int on_timer_set(CURLM *multi, long timeout_ms, void *userp)
{
    ac__outbound_t *ob = userp;

    if (ob->closing)
        return 0;
    if (timeout_ms < 0)
        uv_timer_stop(&ob->timer);
    else
        uv_timer_start(&ob->timer, on_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

ac__outbound_t *ac__outbound_new(uv_loop_t *loop, const ac__outbound_opts_t *opts, int *err)
{
    ac__outbound_t *ob;
    int r = AC_ENOMEM;

    pthread_once(&curl_once, curl_init_once);
    if (!curl_ok)
        goto fail;
    if (opts != NULL && opts->ca_file != NULL) {
        /* A bundle that holds no certificate would fail every https:// call: say so now. */
        X509_STORE *st = X509_STORE_new();
        int loaded = st != NULL && X509_STORE_load_file(st, opts->ca_file) == 1;
        X509_STORE_free(st);
        ERR_clear_error();
        if (!loaded) {
            r = AC_EINVAL;
            goto fail;
        }
    }
    ob = calloc(1, sizeof(*ob));
    if (ob == NULL)
        goto fail;
    ob->loop = loop;
    if (opts != NULL && opts->ca_file != NULL && (ob->ca_file = strdup(opts->ca_file)) == NULL)
        goto fail_ca;
    ob->multi = curl_multi_init();
    if (ob->multi == NULL)
        goto fail_multi;
    curl_multi_setopt(ob->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(ob->multi, CURLMOPT_SOCKETDATA, ob);
    curl_multi_setopt(ob->multi, CURLMOPT_TIMERFUNCTION, on_timer_set);
    curl_multi_setopt(ob->multi, CURLMOPT_TIMERDATA, ob);
    curl_multi_setopt(ob->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)AC__OUTBOUND_MAX_HOST_CONNS);
    /* Idle connections kept for reuse: one full set per host for a few hosts. */
    curl_multi_setopt(ob->multi, CURLMOPT_MAXCONNECTS, (long)(AC__OUTBOUND_MAX_HOST_CONNS * 4));
    return ob;

fail_multi:
    free(ob->ca_file);
fail_ca:
    free(ob);
fail:
    if (err != NULL)
        *err = r;
    return NULL;
}

static size_t on_write(char *p, size_t size, size_t n, void *userp)
{
    ac__outreq_t *q = userp;
    size_t len = size * n;

    if (q->resp_len + len > q->max_response) {
        q->too_big = 1;
        return 0; /* CURLE_WRITE_ERROR */
    }
    if (q->resp_len + len + 1 > q->resp_cap) {
        size_t cap = q->resp_cap ? q->resp_cap : 1024;
        while (cap < q->resp_len + len + 1)
            cap *= 2;
        char *nb = realloc(q->resp, cap);
        if (nb == NULL)
            return 0;
        q->resp = nb;
        q->resp_cap = cap;
    }
    memcpy(q->resp + q->resp_len, p, len);
    q->resp_len += len;
    q->resp[q->resp_len] = '\0';
    return len;
}

static void req_unlink(ac__outreq_t *q)
{
    ac__outbound_t *ob = q->ob;

    if (q->prev != NULL)
        q->prev->next = q->next;
    else
        ob->reqs = q->next;
    if (q->next != NULL)
        q->next->prev = q->prev;
    ob->inflight--;
    curl_multi_remove_handle(ob->multi, q->easy);
}

static void req_free(ac__outreq_t *q)
{
    curl_easy_cleanup(q->easy);
    curl_slist_free_all(q->headers);
    free(q->body);
    free(q->resp);
    free(q);
}

static int url_ok(const char *url)
{
    return url != NULL &&
           (strncasecmp(url, "http://", 7) == 0 || strncasecmp(url, "https://", 8) == 0);
}

int ac__outbound_request(ac__outbound_t *ob, const ac__outreq_opts_t *o, ac__outreq_cb cb,
                         void *arg, ac__outreq_t **req)
{
    ac__outreq_t *q;

    if (ob->closing)
        return AC_ECLOSED;
    if (!url_ok(o->url) || o->timeout_ms == 0)
        return AC_EINVAL;
    if (ob->inflight >= AC__OUTBOUND_MAX_INFLIGHT)
        return AC_EBUSY;
    if (!ob->timer_init) {
        if (uv_timer_init(ob->loop, &ob->timer) != 0)
            return AC_ENOMEM;
        ob->timer.data = ob;
        ob->timer_init = 1;
        ob->open_handles++;
    }
    q = calloc(1, sizeof(*q));
    if (q == NULL)
        return AC_ENOMEM;
    q->ob = ob;
    q->cb = cb;
    q->arg = arg;
    q->max_response = o->max_response;
    q->easy = curl_easy_init();
    if (q->easy == NULL)
        goto fail;
    for (const char *const *h = o->headers; h != NULL && *h != NULL; h++) {
        struct curl_slist *l = curl_slist_append(q->headers, *h);
        if (l == NULL)
            goto fail;
        q->headers = l;
    }
    /* No "Expect: 100-continue" round trip before a body. */
    struct curl_slist *l = curl_slist_append(q->headers, "Expect:");
    if (l == NULL)
        goto fail;
    q->headers = l;

    CURL *e = q->easy;
    curl_easy_setopt(e, CURLOPT_PRIVATE, q);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, q->errbuf);
    if (curl_easy_setopt(e, CURLOPT_URL, o->url) != CURLE_OK)
        goto fail;
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)o->timeout_ms);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "agentcast/" AC_VERSION);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, q->headers);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, q);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    if (ob->ca_file != NULL) {
        curl_easy_setopt(e, CURLOPT_CAINFO, ob->ca_file);
        curl_easy_setopt(e, CURLOPT_CAPATH, NULL);
    }
    if (o->body != NULL) {
        q->body = malloc(o->body_len + 1);
        if (q->body == NULL)
            goto fail;
        memcpy(q->body, o->body, o->body_len);
        q->body[o->body_len] = '\0';
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)o->body_len);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, q->body);
    }
    if (curl_multi_add_handle(ob->multi, e) != CURLM_OK)
        goto fail;
    q->next = ob->reqs;
    if (ob->reqs != NULL)
        ob->reqs->prev = q;
    ob->reqs = q;
    ob->inflight++;
    if (req != NULL)
        *req = q;
    return 0;

fail:
    req_free(q);
    return AC_ENOMEM;
}

static void req_complete(ac__outreq_t *q, CURLcode code)
{
    ac__outres_t res;
    long status = 0;

    memset(&res, 0, sizeof(res));
    if (code == CURLE_OK) {
        curl_easy_getinfo(q->easy, CURLINFO_RESPONSE_CODE, &status);
        res.status = status;
    } else if (q->too_big) {
        res.error = "response body too large";
    } else {
        res.error = q->errbuf[0] != '\0' ? q->errbuf : curl_easy_strerror(code);
        res.timed_out = code == CURLE_OPERATION_TIMEDOUT;
    }
    res.body = q->resp != NULL ? q->resp : "";
    res.body_len = q->resp_len;
    req_unlink(q);
    q->cb(q->arg, &res);
    req_free(q);
}

/* Hands every finished transfer to its owner. */
static void check_done(ac__outbound_t *ob)
{
    CURLMsg *msg;
    int left = 0;

    while ((msg = curl_multi_info_read(ob->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        ac__outreq_t *q = NULL;
        CURLcode code = msg->data.result;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&q);
        if (q != NULL)
            req_complete(q, code);
    }
}

void ac__outbound_cancel(ac__outreq_t *q)
{
    if (q == NULL)
        return;
    req_unlink(q);
    req_free(q);
}

unsigned ac__outbound_inflight(const ac__outbound_t *ob)
{
    return ob->inflight;
}

void ac__outbound_close(ac__outbound_t *ob, void (*done)(void *arg), void *arg)
{
    ac__outres_t res;

    ob->closing = 1;
    ob->done = done;
    ob->done_arg = arg;
    memset(&res, 0, sizeof(res));
    res.error = "shutting down";
    res.body = "";
    while (ob->reqs != NULL) {
        ac__outreq_t *q = ob->reqs;
        req_unlink(q);
        q->cb(q->arg, &res);
        req_free(q);
    }
    /* Cleanup closes the cached connections; sockets it does not report removed are
     * closed here. */
    curl_multi_cleanup(ob->multi);
    ob->multi = NULL;
    while (ob->socks != NULL)
        sock_close(ob->socks);
    if (ob->timer_init) {
        uv_timer_stop(&ob->timer);
        uv_close((uv_handle_t *)&ob->timer, on_handle_closed);
        return;
    }
    maybe_free(ob);
}
