/* JSON Web Keys (RFC 7517) for token verification: a JWKS document parsed into OpenSSL
 * public keys, each pinned to the one algorithm its JWK allows (kty/crv/alg), and the JWS
 * signature check (RFC 7518: RS256/384/512, ES256/384; RFC 8037: EdDSA). Pure functions
 * over bytes: no I/O, no logging, no global state; a key set is immutable once parsed, so
 * it may be read from any thread. */
#ifndef AC_API_JWK_H
#define AC_API_JWK_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    AC__JWA_NONE = -1, /* unknown or refused ("none" included) */
    AC__JWA_HS256 = 0,
    AC__JWA_RS256,
    AC__JWA_RS384,
    AC__JWA_RS512,
    AC__JWA_ES256,
    AC__JWA_ES384,
    AC__JWA_EDDSA,
    AC__JWA_COUNT
} ac__jwa_t;

/* The algorithm a JWS header's `alg` names (exact, case-sensitive), or AC__JWA_NONE. */
ac__jwa_t ac__jwa_parse(const char *name, size_t len);
const char *ac__jwa_name(ac__jwa_t alg);

/* Keys a JWKS document may hold; the rest are ignored with a count. */
#define AC__JWKS_MAX_KEYS 64
/* The smallest RSA modulus accepted (bits). */
#define AC__JWK_RSA_MIN_BITS 2048

typedef struct ac__keyset_s ac__keyset_t;

/* Parses a JWKS document {"keys":[...]}. Usable keys: kty RSA (alg RS256/384/512, RS256
 * when absent; modulus >= 2048 bits), kty EC with crv P-256 (ES256) or P-384 (ES384), kty
 * OKP with crv Ed25519 or Ed448 (EdDSA); `use`, when present, must be "sig"; an `alg` that
 * disagrees with kty/crv drops the key. Symmetric (oct) keys, encryption keys, other
 * algorithms, malformed keys and a repeated kid are skipped and counted. Returns the set
 * (caller frees with ac__keyset_free()), or NULL with a reason in why[0..whylen) when the
 * document is not a JWKS or holds no usable key. */
ac__keyset_t *ac__keyset_parse(const char *json, size_t len, char *why, size_t whylen);
void ac__keyset_free(ac__keyset_t *ks);

/* Usable keys, and keys skipped while parsing. */
size_t ac__keyset_count(const ac__keyset_t *ks);
size_t ac__keyset_skipped(const ac__keyset_t *ks);

/* 1 when the set holds a key with this kid. */
int ac__keyset_has_kid(const ac__keyset_t *ks, const char *kid);

enum { AC__JWS_OK = 0, AC__JWS_BAD = -1, AC__JWS_UNKNOWN_KEY = -2 };

/* Keys a token without kid is tried against, at most (in the set's order). */
#define AC__JWS_MAX_TRIES 4

/* Checks a JWS signature over msg[0..msglen). With a kid, only the key with that kid is
 * tried, and only when it is pinned to `alg`; without one, the first AC__JWS_MAX_TRIES keys
 * pinned to `alg`.
 * Returns AC__JWS_OK, AC__JWS_UNKNOWN_KEY (no key with that kid, or none for that alg: a
 * refreshed set may have it), or AC__JWS_BAD with *why naming the rule ("token: bad
 * signature", "token: alg does not match the key"). */
int ac__keyset_verify(const ac__keyset_t *ks, const char *kid, ac__jwa_t alg, const uint8_t *msg,
                      size_t msglen, const uint8_t *sig, size_t siglen, const char **why);

#endif
