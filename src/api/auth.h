/* Identity: HS256 JWT verification (OpenSSL HMAC) and constant-time secret comparison.
 * Pure functions over bytes: no sockets, no logging (a secret or a token never reaches a
 * log line from here). */
#ifndef AC_API_AUTH_H
#define AC_API_AUTH_H

#include <stddef.h>
#include <stdint.h>

/* Verifies a compact JWS token: header.payload.signature, base64url without padding.
 * Rules: header `alg` exactly "HS256" (anything else, "none" included, is refused); the
 * signature is HMAC-SHA256 of "header.payload" under `secret`, compared in constant time;
 * payload `sub` is a non-empty string of at most 256 bytes; `exp` is a number and
 * now < exp; when `nbf` is present, now >= nbf.
 * On success returns 0 and sets *sub to a NUL-terminated copy of `sub` (caller frees with
 * free()). On failure returns -1, leaves *sub NULL and sets *reason to a static string
 * naming the rule ("token: bad signature", "token: expired", "token: alg must be HS256",
 * "token: sub required", "token: exp required", "token: malformed", "token: not yet
 * valid"). Thread-safe. */
int ac__jwt_verify(const char *token, size_t token_len, const uint8_t *secret, size_t secret_len,
                   int64_t now, char **sub, const char **reason);

/* Fetches the digest tokens are checked with (once per process; thread-safe). Servers
 * call it at creation; the functions below call it too. */
void ac__auth_init(void);

/* 1 when a[0..alen) equals b[0..blen), else 0, in time that depends only on the lengths
 * being compared against, never on where the bytes differ. */
int ac__secret_equal(const char *a, size_t alen, const char *b, size_t blen);

/* Decodes base64url (RFC 4648 section 5, padding optional) into out, which has room for
 * at least (in_len * 3) / 4 + 3 bytes. Returns the decoded length or -1 on a bad
 * character or impossible length. */
long ac__base64url_decode(const char *in, size_t in_len, uint8_t *out);

#endif
