/* --auth=proxy: the connect proxy for cookie sessions. On a /ws upgrade the gateway POSTs
 * the request's Cookie, Authorization and Origin headers and its query to
 * --auth-proxy-url and takes the user from the JSON answer {"user_id":"..."}; allowed
 * answers may be reused per cookie for --auth-proxy-cache-ttl. Loop thread only. */
#ifndef AC_API_AUTHPROXY_H
#define AC_API_AUTHPROXY_H

#include <stddef.h>

#include "agentcast.h"
#include "net/http.h"

typedef struct ac__authproxy_s ac__authproxy_t;

/* Answers kept in the cache at most (the oldest go first). */
#define AC__AUTHPROXY_CACHE_MAX 10000

/* The verdict: status 0 with the user (valid during the call), or the HTTP status to
 * refuse the upgrade with (401, 403 from the backend; 503 for a timeout, a 5xx or an
 * answer without a valid user_id) and a reason. */
typedef void (*ac__authproxy_cb)(void *arg, unsigned status, const char *user, size_t user_len,
                                 const char *reason);

ac__authproxy_t *ac__authproxy_new(ac_server_t *s);
void ac__authproxy_free(ac__authproxy_t *p);

/* A cached answer for this request's Cookie/Authorization: copies the user into
 * out[0..cap) and returns its length, or -1. */
long ac__authproxy_cached(ac__authproxy_t *p, const ac__http_req_t *req, char *out, size_t cap);

/* Asks the backend about `req` (its headers and query are copied). Returns 0 (cb will be
 * called once, later), or -1 (cb never called) with the status and reason to refuse
 * with in *status and *reason (a header that cannot be forwarded: 400; too many requests in
 * flight: 503). */
int ac__authproxy_ask(ac__authproxy_t *p, const ac__http_req_t *req, ac__authproxy_cb cb, void *arg,
                      unsigned *status, const char **reason);

#endif
