/* Identity: verifies JSON Web Tokens (compact JWS: HS256 under a shared secret, or the
 * asymmetric algorithms of api/jwk.c under a JWKS) against a policy (audience, issuer,
 * leeway, user claim), and compares shared secrets in constant time. Pure functions over
 * bytes: no I/O, no logging, no global state, so every function here is thread-safe. */

#include "api/auth.h"

#include <assert.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>

/* Caps the work an unauthenticated peer can cause (two decodes, two JSON parses, one HMAC)
 * and lets every decoded part live on the stack instead of the heap. */
#define JWT_MAX_TOKEN 8192
#define JWT_MAX_SUB 256
#define JWT_SIG_LEN 32 /* HMAC-SHA256 */
/* 32 bytes are 43 base64url characters, 44 with the one '=' of padding we tolerate. */
#define JWT_SIG_MAX_B64 44
/* Room ac__base64url_decode() asks for, per its contract. */
#define DECODED_ROOM(n) (((n)*3) / 4 + 3)

static const char R_MALFORMED[] = "token: malformed";
static const char R_ALG[] = "token: alg must be HS256";
static const char R_SIGNATURE[] = "token: bad signature";
static const char R_SUB[] = "token: sub required";
static const char R_SUB_LONG[] = "token: sub longer than 256 bytes";
static const char R_SUB_CTRL[] = "token: sub has control characters";
static const char R_EXP[] = "token: exp required";
static const char R_EXPIRED[] = "token: expired";
static const char R_NBF[] = "token: nbf must be a number";
static const char R_NOT_YET[] = "token: not yet valid";
static const char R_NOMEM[] = "token: out of memory";
static const char R_ALG_REFUSED[] = "token: alg not accepted";
static const char R_KID[] = "token: kid must be a string of 1 to 256 bytes";
static const char R_CRIT[] = "token: crit header not supported";
static const char R_UNKNOWN_KEY[] = "token: no key for this kid or alg";
static const char R_USER[] = "token: user claim (--jwt-user-claim) required";
static const char R_AUD[] = "token: aud does not match --jwt-audience";
static const char R_ISS[] = "token: iss does not match --jwt-issuer";
/* Asymmetric signatures: RSA up to 8192 bits (1024 bytes, 1366 characters). */
#define JWT_ASIG_MAX_B64 1368

static int b64url_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

long ac__base64url_decode(const char *in, size_t in_len, uint8_t *out)
{
    if (in_len == 0)
        return 0;
    /* The output is shorter than the input, so this keeps the result representable. */
    if (in == NULL || in_len > (size_t)LONG_MAX)
        return -1;

    size_t pad = 0;
    while (pad < in_len && in[in_len - 1 - pad] == '=')
        pad++;
    /* Padding, when present, must complete the last quantum exactly, as RFC 4648 writes it. */
    if (pad > 2 || (pad > 0 && in_len % 4 != 0))
        return -1;
    size_t n = in_len - pad;
    if (n % 4 == 1)
        return -1;

    size_t o = 0;
    uint32_t acc = 0;
    size_t i = 0;
    for (; i < n; i++) {
        int v = b64url_value((unsigned char)in[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        if (i % 4 == 3) {
            out[o++] = (uint8_t)(acc >> 16);
            out[o++] = (uint8_t)(acc >> 8);
            out[o++] = (uint8_t)acc;
            acc = 0;
        }
    }
    /* Unused low bits of a partial quantum must be zero. Accepting them would give one
     * signature several spellings, and a token is often used as a key (revocation, caches). */
    switch (n % 4) {
    case 2:
        if (acc & 0xf)
            return -1;
        out[o++] = (uint8_t)(acc >> 4);
        break;
    case 3:
        if (acc & 0x3)
            return -1;
        out[o++] = (uint8_t)(acc >> 10);
        out[o++] = (uint8_t)(acc >> 2);
        break;
    default:
        break;
    }
    return (long)o;
}

/* SHA-256 fetched once (see ac__ws_init): tokens are checked without an implicit fetch. */
static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void sha256_fetch(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}

void ac__auth_init(void)
{
    pthread_once(&sha256_once, sha256_fetch);
}

static const EVP_MD *sha256(void)
{
    ac__auth_init();
    return sha256_md ? sha256_md : EVP_sha256();
}

int ac__secret_equal(const char *a, size_t alen, const char *b, size_t blen)
{
    /* Hashing first turns the comparison into one of two fixed-size digests, so the time
     * depends on the lengths alone and unequal lengths need no early return. */
    unsigned char da[EVP_MAX_MD_SIZE];
    unsigned char db[EVP_MAX_MD_SIZE];
    unsigned int dalen = 0;
    unsigned int dblen = 0;
    int ok = EVP_Digest(alen ? a : "", alen, da, &dalen, sha256(), NULL);
    ok &= EVP_Digest(blen ? b : "", blen, db, &dblen, sha256(), NULL);
    int equal = 0;
    if (ok == 1 && dalen == dblen)
        equal = (CRYPTO_memcmp(da, db, dalen) == 0) & (alen == blen);
    OPENSSL_cleanse(da, sizeof(da));
    OPENSSL_cleanse(db, sizeof(db));
    return equal;
}

/* The three base64url parts of a compact token, pointing into the caller's buffer. */
struct jwt_parts {
    const char *part[3];
    size_t len[3];
};

static int split_token(const char *token, size_t len, struct jwt_parts *p)
{
    const char *end = token + len;
    const char *start = token;
    for (int i = 0; i < 2; i++) {
        const char *dot = memchr(start, '.', (size_t)(end - start));
        if (dot == NULL)
            return -1;
        p->part[i] = start;
        p->len[i] = (size_t)(dot - start);
        start = dot + 1;
    }
    if (memchr(start, '.', (size_t)(end - start)) != NULL)
        return -1;
    p->part[2] = start;
    p->len[2] = (size_t)(end - start);
    return 0;
}

/* Returns a new reference to the JSON object encoded in one token part, or NULL. */
static json_t *load_object(const char *b64, size_t len)
{
    uint8_t buf[DECODED_ROOM(JWT_MAX_TOKEN)];
    long n = ac__base64url_decode(b64, len, buf);
    if (n < 0)
        return NULL;
    /* Duplicate keys are refused: two "alg" or two "sub" members could be read differently
     * by us and by whatever issued or inspects the token. */
    json_t *obj = json_loadb((const char *)buf, (size_t)n, JSON_REJECT_DUPLICATES, NULL);
    if (obj != NULL && !json_is_object(obj)) {
        json_decref(obj);
        return NULL;
    }
    return obj;
}

static const char *check_signature(const struct jwt_parts *p, const uint8_t *secret,
                                   size_t secret_len)
{
    /* An empty key would let anyone mint tokens; no token verifies under it. */
    if (secret == NULL || secret_len == 0 || secret_len > INT_MAX)
        return R_SIGNATURE;
    if (p->len[2] > JWT_SIG_MAX_B64)
        return R_SIGNATURE;
    uint8_t given[DECODED_ROOM(JWT_SIG_MAX_B64)];
    long n = ac__base64url_decode(p->part[2], p->len[2], given);
    if (n < 0)
        return R_MALFORMED;
    if (n != JWT_SIG_LEN)
        return R_SIGNATURE;

    /* The signing input is the token's own bytes up to the second dot. */
    size_t signed_len = p->len[0] + 1 + p->len[1];
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    const char *why = R_SIGNATURE;
    if (HMAC(sha256(), secret, (int)secret_len, (const unsigned char *)p->part[0], signed_len, mac,
             &mac_len) != NULL &&
        mac_len == JWT_SIG_LEN && CRYPTO_memcmp(mac, given, JWT_SIG_LEN) == 0)
        why = NULL;
    OPENSSL_cleanse(mac, sizeof(mac));
    return why;
}

/* 1 when now < t, for a claim known to be a JSON number. */
static int before(int64_t now, const json_t *t)
{
    if (json_is_integer(t))
        return (long long)now < (long long)json_integer_value(t);
    return (double)now < json_real_value(t);
}

static const char *check_sub(const json_t *s, const char *missing)
{
    if (!json_is_string(s) || json_string_length(s) == 0)
        return missing;
    size_t n = json_string_length(s);
    if (n > JWT_MAX_SUB)
        return R_SUB_LONG;
    /* sub ends up in log lines and protocol fields; a NUL would truncate it and a newline
     * or escape sequence would forge or garble them. */
    const unsigned char *v = (const unsigned char *)json_string_value(s);
    for (size_t i = 0; i < n; i++) {
        if (v[i] < 0x20 || v[i] == 0x7f)
            return R_SUB_CTRL;
    }
    return NULL;
}

static int str_equal(const json_t *v, const char *want)
{
    return json_is_string(v) && json_string_length(v) == strlen(want) &&
           memcmp(json_string_value(v), want, json_string_length(v)) == 0;
}

/* RFC 7519 4.1.3: aud is one string or an array of them. */
static int audience_ok(const json_t *aud, const char *want)
{
    if (json_is_array(aud)) {
        for (size_t i = 0; i < json_array_size(aud); i++) {
            if (str_equal(json_array_get(aud, i), want))
                return 1;
        }
        return 0;
    }
    return str_equal(aud, want);
}

static const char *user_claim(const ac__jwt_policy_t *pol)
{
    return pol->user_claim != NULL && pol->user_claim[0] != '\0' ? pol->user_claim : "sub";
}

static const char *check_claims(const json_t *payload, int64_t now, const ac__jwt_policy_t *pol)
{
    const char *claim = user_claim(pol);
    const char *why =
        check_sub(json_object_get(payload, claim), strcmp(claim, "sub") == 0 ? R_SUB : R_USER);
    if (why != NULL)
        return why;
    /* Leeway moves "now" back for exp and forward for nbf: a clock a little ahead of the
     * issuer's, or behind, does not refuse a fresh token. */
    const json_t *exp = json_object_get(payload, "exp");
    if (!json_is_number(exp))
        return R_EXP;
    if (!before(now - pol->leeway, exp))
        return R_EXPIRED;
    const json_t *nbf = json_object_get(payload, "nbf");
    if (nbf != NULL && !json_is_number(nbf))
        return R_NBF;
    if (nbf != NULL && before(now + pol->leeway, nbf))
        return R_NOT_YET;
    if (pol->audience != NULL && !audience_ok(json_object_get(payload, "aud"), pol->audience))
        return R_AUD;
    if (pol->issuer != NULL && !str_equal(json_object_get(payload, "iss"), pol->issuer))
        return R_ISS;
    return NULL;
}

static const char *check_asymmetric(const struct jwt_parts *p, const ac__jwt_policy_t *pol,
                                    ac__jwa_t alg, const char *kid, int *code)
{
    if (p->len[2] > JWT_ASIG_MAX_B64)
        return R_SIGNATURE;
    uint8_t sig[DECODED_ROOM(JWT_ASIG_MAX_B64)];
    long n = ac__base64url_decode(p->part[2], p->len[2], sig);
    if (n < 0)
        return R_MALFORMED;
    const char *why = NULL;
    int r = ac__keyset_verify(pol->keys, kid, alg, (const uint8_t *)p->part[0],
                              p->len[0] + 1 + p->len[1], sig, (size_t)n, &why);
    if (r == AC__JWS_OK)
        return NULL;
    if (r == AC__JWS_UNKNOWN_KEY) {
        *code = AC__JWT_UNKNOWN_KEY;
        return R_UNKNOWN_KEY;
    }
    return why;
}

/* The header decides which check applies, and only among what the policy allows. */
static const char *check_header_and_signature(const struct jwt_parts *p,
                                              const ac__jwt_policy_t *pol, int *code)
{
    json_t *header = load_object(p->part[0], p->len[0]);
    if (header == NULL)
        return R_MALFORMED;
    const json_t *a = json_object_get(header, "alg");
    const json_t *k = json_object_get(header, "kid");
    ac__jwa_t alg = json_is_string(a) ? ac__jwa_parse(json_string_value(a), json_string_length(a))
                                      : AC__JWA_NONE;
    const char *why = NULL;
    char kid[JWT_MAX_SUB + 1];

    if (json_object_get(header, "crit") != NULL) {
        why = R_CRIT; /* RFC 7515 4.1.11: an extension we do not understand */
    } else if (k != NULL && (!json_is_string(k) || json_string_length(k) == 0 ||
                             json_string_length(k) > JWT_MAX_SUB ||
                             strlen(json_string_value(k)) != json_string_length(k))) {
        why = R_KID;
    } else if (alg == AC__JWA_HS256 && (pol->secret != NULL && pol->secret_len > 0)) {
        why = check_signature(p, pol->secret, pol->secret_len);
    } else if (alg == AC__JWA_HS256 && !pol->asymmetric) {
        why = check_signature(p, pol->secret, pol->secret_len); /* refuses: no secret */
    } else if (alg != AC__JWA_NONE && alg != AC__JWA_HS256 && pol->asymmetric) {
        if (k != NULL)
            memcpy(kid, json_string_value(k), json_string_length(k) + 1);
        why = check_asymmetric(p, pol, alg, k != NULL ? kid : NULL, code);
    } else {
        why = pol->asymmetric ? R_ALG_REFUSED : R_ALG;
    }
    json_decref(header);
    return why;
}

static const char *verify(const char *token, size_t token_len, const ac__jwt_policy_t *pol,
                          int64_t now, char **sub, int *code)
{
    if (token == NULL || token_len > JWT_MAX_TOKEN)
        return R_MALFORMED;
    struct jwt_parts p;
    if (split_token(token, token_len, &p) != 0)
        return R_MALFORMED;

    /* Authenticate before reading the payload, so claims are only ever parsed from bytes
     * the key's holder produced. */
    const char *why = check_header_and_signature(&p, pol, code);
    if (why != NULL)
        return why;

    json_t *payload = load_object(p.part[1], p.len[1]);
    if (payload == NULL)
        return R_MALFORMED;
    why = check_claims(payload, now, pol);
    if (why == NULL) {
        const json_t *s = json_object_get(payload, user_claim(pol));
        size_t n = json_string_length(s);
        *sub = malloc(n + 1);
        if (*sub != NULL) {
            memcpy(*sub, json_string_value(s), n);
            (*sub)[n] = '\0';
        } else {
            why = R_NOMEM;
        }
    }
    json_decref(payload);
    return why;
}

int ac__jwt_check(const char *token, size_t token_len, const ac__jwt_policy_t *policy, int64_t now,
                  char **user, const char **reason)
{
    assert(user != NULL && reason != NULL && policy != NULL);
    *user = NULL;
    int code = AC__JWT_REFUSED;
    const char *why = verify(token, token_len, policy, now, user, &code);
    if (why == NULL)
        return 0;
    *reason = why;
    return code;
}

int ac__jwt_verify(const char *token, size_t token_len, const uint8_t *secret, size_t secret_len,
                   int64_t now, char **sub, const char **reason)
{
    ac__jwt_policy_t pol;

    memset(&pol, 0, sizeof(pol));
    pol.secret = secret;
    pol.secret_len = secret_len;
    return ac__jwt_check(token, token_len, &pol, now, sub, reason) == 0 ? 0 : -1;
}
