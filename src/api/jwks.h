/* Where the asymmetric keys come from: --jwt-jwks-file (read at creation and by
 * ac_server_reload) or --jwt-jwks-url (fetched through net/outbound at start, refreshed on
 * an interval and when a token names an unknown kid, never more often than
 * --jwt-jwks-min-refresh). The last good set is kept while a load fails. Loop thread only. */
#ifndef AC_API_JWKS_H
#define AC_API_JWKS_H

#include <stddef.h>

#include "agentcast.h"
#include "api/jwk.h"

typedef struct ac__jwks_s ac__jwks_t;

/* Handshakes that may wait on one fetch; more are refused with 503. */
#define AC__JWKS_MAX_WAITERS 4096
/* Largest JWKS document accepted. */
#define AC__JWKS_MAX_BYTES (1024 * 1024)

/* Called once when the fetch a handshake waited on has ended, whatever its outcome. */
typedef void (*ac__jwks_cb)(void *arg);

/* The key source of a server whose options name a JWKS file or URL. A file is loaded now:
 * NULL with why[0..n) when it cannot be. Caller frees with ac__jwks_free(). */
ac__jwks_t *ac__jwks_new(ac_server_t *s, char *why, size_t n);
void ac__jwks_free(ac__jwks_t *j);

/* The current set; NULL until a URL's first fetch has succeeded. */
const ac__keyset_t *ac__jwks_keys(const ac__jwks_t *j);

/* A token named a key the set lacks: starts a fetch unless one ran within the floor.
 * Returns 1 when a fetch is in flight (ac__jwks_wait() may wait on it), else 0. */
int ac__jwks_want_refresh(ac__jwks_t *j);

/* Calls cb(arg) when the fetch in flight ends (ac__jwks_want_refresh() returned 1).
 * Returns 0, or -1 (too many waiters; cb is never called). */
int ac__jwks_wait(ac__jwks_t *j, ac__jwks_cb cb, void *arg);

/* Periodic work from the server's tick: starts the interval's refresh when it is due. */
void ac__jwks_tick(ac__jwks_t *j);

/* Reads --jwt-jwks-file again (ac_server_reload). 0, or AC_EINVAL when the file does not
 * load (the previous set stays). Nothing to do (0) for a URL. */
int ac__jwks_reload(ac__jwks_t *j);

/* At shutdown: abandons the fetch in flight and calls every waiter. */
void ac__jwks_stop(ac__jwks_t *j);

#endif
