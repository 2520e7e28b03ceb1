/* Identity: JWT verification (HS256 with a shared secret; RS/ES/EdDSA with the keys of a
 * JWKS, api/jwk.h) and constant-time secret comparison. Pure functions over bytes: no
 * sockets, no logging (a secret or a token never reaches a log line from here). */
#ifndef AC_API_AUTH_H
#define AC_API_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "api/jwk.h"

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
/* The HS256-only policy: ac__jwt_check with just a secret. */
int ac__jwt_verify(const char *token, size_t token_len, const uint8_t *secret, size_t secret_len,
                   int64_t now, char **sub, const char **reason);

/* What a token must satisfy (ac__jwt_check). Strings are borrowed. */
typedef struct ac__jwt_policy_s {
    const uint8_t *secret; /* HS256 key; NULL or empty: HS256 is refused */
    size_t secret_len;
    const ac__keyset_t *keys; /* asymmetric keys, each pinned to its alg; NULL: none */
    int asymmetric;           /* 1: RS/ES/EdDSA tokens are expected (keys may be loading) */
    const char *audience;     /* when set, `aud` (a string or an array) must contain it */
    const char *issuer;       /* when set, `iss` must equal it */
    int64_t leeway;           /* seconds of clock skew allowed on exp and nbf */
    const char *user_claim;   /* the claim naming the user; NULL: "sub" */
} ac__jwt_policy_t;

/* ac__jwt_check's outcomes besides 0. */
enum { AC__JWT_REFUSED = -1, AC__JWT_UNKNOWN_KEY = -2 };

/* Verifies a compact JWS token under `policy`. The header's `alg` selects nothing by itself:
 * HS256 needs policy->secret; RS256/384/512, ES256/384 and EdDSA need a key of the set pinned
 * to that very alg (found by `kid`, or every key of that alg without one); "none" and any
 * other alg are refused, and so is a `crit` header. Signature first, then claims: the user
 * claim (1 to 256 bytes, no control characters), `exp` required (now < exp + leeway), `nbf`
 * when present (now + leeway >= nbf), `aud` and `iss` when the policy names them.
 * Returns 0 with *user (caller frees); AC__JWT_UNKNOWN_KEY when an asymmetric token names a
 * kid (or alg) the set lacks, so a refreshed set may verify it; AC__JWT_REFUSED otherwise.
 * On failure *user is NULL and *reason a static string naming the rule. Thread-safe. */
int ac__jwt_check(const char *token, size_t token_len, const ac__jwt_policy_t *policy, int64_t now,
                  char **user, const char **reason);

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
