/* The JWKS key source: a file read whole, or a URL fetched through the outbound client.
 * It swaps whole key sets (a token is checked against one set, never a mix), keeps the
 * last good one while a load fails, and bounds how often a fetch can be caused. It does
 * not verify tokens (api/auth.c) nor parse keys (api/jwk.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/jwks.h"
#include "core/log.h"
#include "net/outbound.h"
#include "net/server.h"

typedef struct waiter_s {
    struct waiter_s *next;
    ac__jwks_cb cb;
    void *arg;
} waiter_t;

struct ac__jwks_s {
    ac_server_t *server;
    ac__keyset_t *keys;
    ac__outreq_t *req;     /* the fetch in flight, NULL when none */
    uint64_t last_fetch;   /* server ms when the last fetch started */
    uint64_t next_refresh; /* server ms when the interval's refresh is due */
    int fetched;           /* a fetch has started at least once */
    waiter_t *waiters;
    waiter_t **waiters_tail;
    size_t nwaiters;
};

static uint64_t secs_ms(double s)
{
    return (uint64_t)(s * 1000);
}

/* Reads a whole file of at most AC__JWKS_MAX_BYTES; NULL with why. Caller frees. */
static char *read_file(const char *path, size_t *len, char *why, size_t n)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;

    if (f == NULL) {
        snprintf(why, n, "cannot open %s", path);
        return NULL;
    }
    buf = malloc(AC__JWKS_MAX_BYTES + 1);
    if (buf == NULL) {
        snprintf(why, n, "out of memory");
        fclose(f);
        return NULL;
    }
    *len = fread(buf, 1, AC__JWKS_MAX_BYTES + 1, f);
    if (ferror(f) || *len > AC__JWKS_MAX_BYTES) {
        snprintf(why, n, "cannot read %s (or over %d bytes)", path, AC__JWKS_MAX_BYTES);
        free(buf);
        buf = NULL;
    }
    fclose(f);
    return buf;
}

static void install(ac__jwks_t *j, ac__keyset_t *ks, const char *from)
{
    ac__keyset_free(j->keys);
    j->keys = ks;
    ac__log(AC_LOG_INFO, "event=jwks_loaded from=%s keys=%zu skipped=%zu", from,
            ac__keyset_count(ks), ac__keyset_skipped(ks));
}

static int load_file(ac__jwks_t *j, char *why, size_t n)
{
    size_t len = 0;
    char *text = read_file(j->server->opts.jwt_jwks_file, &len, why, n);
    if (text == NULL)
        return AC_EINVAL;
    ac__keyset_t *ks = ac__keyset_parse(text, len, why, n);
    free(text);
    if (ks == NULL)
        return AC_EINVAL;
    install(j, ks, "file");
    return 0;
}

ac__jwks_t *ac__jwks_new(ac_server_t *s, char *why, size_t n)
{
    ac__jwks_t *j = calloc(1, sizeof(*j));

    if (j == NULL) {
        snprintf(why, n, "out of memory");
        return NULL;
    }
    j->server = s;
    j->waiters_tail = &j->waiters;
    if (s->opts.jwt_jwks_file != NULL && load_file(j, why, n) != 0) {
        free(j);
        return NULL;
    }
    return j;
}

static void call_waiters(ac__jwks_t *j)
{
    waiter_t *w = j->waiters;

    j->waiters = NULL;
    j->waiters_tail = &j->waiters;
    j->nwaiters = 0;
    while (w != NULL) {
        waiter_t *next = w->next;
        w->cb(w->arg);
        free(w);
        w = next;
    }
}

static void on_fetched(void *arg, const ac__outres_t *res)
{
    ac__jwks_t *j = arg;
    uint64_t now = ac__server_now(j->server);
    char why[160];

    j->req = NULL;
    if (res->status == 200) {
        ac__keyset_t *ks = ac__keyset_parse(res->body, res->body_len, why, sizeof(why));
        if (ks != NULL) {
            install(j, ks, "url");
            j->next_refresh = now + secs_ms(j->server->opts.jwt_jwks_refresh);
            call_waiters(j);
            return;
        }
    } else if (res->status != 0) {
        snprintf(why, sizeof(why), "answered %ld", res->status);
    } else {
        snprintf(why, sizeof(why), "%s", res->error ? res->error : "no answer");
    }
    /* Keep the last good set; try again after the floor rather than the full interval. */
    ac__log(AC_LOG_WARN, "event=jwks_fetch_failed keys_kept=%zu error=\"%s\"",
            ac__keyset_count(j->keys), why);
    j->next_refresh = now + secs_ms(j->server->opts.jwt_jwks_min_refresh);
    call_waiters(j);
}

static int fetch(ac__jwks_t *j)
{
    ac_server_t *s = j->server;
    ac__outbound_t *ob = ac__server_outbound(s);
    static const char *const headers[] = {"Accept: application/json", NULL};
    ac__outreq_opts_t o = {
        .url = s->opts.jwt_jwks_url,
        .headers = headers,
        .timeout_ms = (unsigned)secs_ms(s->opts.outbound_timeout),
        .max_response = AC__JWKS_MAX_BYTES,
    };

    if (j->req != NULL)
        return 0;
    j->last_fetch = ac__server_now(s);
    j->fetched = 1;
    int r = ob ? ac__outbound_request(ob, &o, on_fetched, j, &j->req) : AC_ECLOSED;
    if (r != 0) {
        ac__log(AC_LOG_WARN, "event=jwks_fetch_failed error=\"%s\"", ac_strerror(r));
        j->next_refresh = j->last_fetch + secs_ms(s->opts.jwt_jwks_min_refresh);
        return r;
    }
    return 0;
}

const ac__keyset_t *ac__jwks_keys(const ac__jwks_t *j)
{
    return j->keys;
}

int ac__jwks_want_refresh(ac__jwks_t *j)
{
    ac_server_t *s = j->server;

    if (s->opts.jwt_jwks_url == NULL || s->shutting_down)
        return 0;
    if (j->req != NULL)
        return 1;
    /* The floor: tokens naming made-up kids cannot turn the gateway into a fetch loop
     * against the identity provider. */
    if (j->fetched && ac__server_now(s) - j->last_fetch < secs_ms(s->opts.jwt_jwks_min_refresh))
        return 0;
    return fetch(j) == 0 && j->req != NULL;
}

int ac__jwks_wait(ac__jwks_t *j, ac__jwks_cb cb, void *arg)
{
    if (j->req == NULL || j->nwaiters >= AC__JWKS_MAX_WAITERS)
        return -1;
    waiter_t *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return -1;
    w->cb = cb;
    w->arg = arg;
    *j->waiters_tail = w;
    j->waiters_tail = &w->next;
    j->nwaiters++;
    return 0;
}

void ac__jwks_tick(ac__jwks_t *j)
{
    ac_server_t *s = j->server;

    if (s->opts.jwt_jwks_url == NULL || s->shutting_down || j->req != NULL)
        return;
    if (!j->fetched || ac__server_now(s) >= j->next_refresh)
        fetch(j);
}

int ac__jwks_reload(ac__jwks_t *j)
{
    char why[160];

    if (j->server->opts.jwt_jwks_file == NULL)
        return 0;
    if (load_file(j, why, sizeof(why)) != 0) {
        ac__log(AC_LOG_ERROR, "event=jwks_reload_failed keys_kept=%zu error=\"%s\"",
                ac__keyset_count(j->keys), why);
        return AC_EINVAL;
    }
    return 0;
}

void ac__jwks_stop(ac__jwks_t *j)
{
    ac__outbound_cancel(j->req);
    j->req = NULL;
    call_waiters(j);
}

void ac__jwks_free(ac__jwks_t *j)
{
    if (j == NULL)
        return;
    ac__jwks_stop(j);
    ac__keyset_free(j->keys);
    free(j);
}
