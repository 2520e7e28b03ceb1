/* libFuzzer target: HS256 token verification and base64url (src/api/auth.h), on arbitrary
 * tokens and on correctly signed ones built here around fuzzed JSON, so the claim checks
 * are reached; verdicts and decodings are compared with the rules of auth.h. */

/* Input: byte 0 picks the mode (bits 0-1) and variations (bits 2-7):
 *   0: the rest is a token, verified under a fixed secret, as a handshake's token= is, and
 *      under a JWKS policy (one Ed25519 key; it must never verify: nobody has the private
 *      key); the rest is also parsed as a JWKS document (src/api/jwk.h);
 *   1: the rest is header JSON, NUL, payload JSON: signed here (HMAC-SHA256 via OpenSSL)
 *      and the verdict compared with the rules of auth.h checked on the parsed JSON;
 *   2: the rest is base64url text: ac__base64url_decode() against a reference decoder;
 *   3: ac__secret_equal() on the two halves of the rest, against memcmp. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "agentcast.h"
#include "api/auth.h"

#define FUZZ_NAME "fuzz_jwt"
#include "fuzz_common.h"

static const char SECRET[] = "fuzz-secret-0123456789";
#define SECRET_LEN (sizeof(SECRET) - 1)
/* 2023-11-14T22:13:20Z: what the claims are checked against. */
#define NOW INT64_C(1700000000)
#define MAX_TOKEN 8192

/* The Ed25519 public key of RFC 8037 appendix A.2. */
static const char JWKS[] = "{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"kid\":\"k1\","
                           "\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\"}]}";
static ac__keyset_t *keyset;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_quiet_logs(AC_LOG_ERROR);
    char why[160];
    keyset = ac__keyset_parse(JWKS, strlen(JWKS), why, sizeof(why));
    check(keyset != NULL && ac__keyset_count(keyset) == 1, "fixed JWKS");
    return 0;
}

static const char B64URL[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* base64url without padding; returns the length written (out has room for 4n/3 + 4). */
static size_t b64url_encode(const uint8_t *p, size_t n, char *out, int pad)
{
    size_t o = 0, i = 0;

    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        out[o++] = B64URL[v >> 18];
        out[o++] = B64URL[(v >> 12) & 63];
        out[o++] = B64URL[(v >> 6) & 63];
        out[o++] = B64URL[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        out[o++] = B64URL[v >> 18];
        out[o++] = B64URL[(v >> 12) & 63];
        if (pad) {
            out[o++] = '=';
            out[o++] = '=';
        }
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
        out[o++] = B64URL[v >> 18];
        out[o++] = B64URL[(v >> 12) & 63];
        out[o++] = B64URL[(v >> 6) & 63];
        if (pad)
            out[o++] = '=';
    }
    return o;
}

/* Reference decoder (RFC 4648 section 5): optional padding that completes the last group,
 * no other characters, the unused bits of a partial group zero. -1 when invalid. */
static long ref_b64url_decode(const char *in, size_t n, uint8_t *out)
{
    size_t pad = 0;

    if (n >= 1 && in[n - 1] == '=')
        pad = (n >= 2 && in[n - 2] == '=') ? 2 : 1;
    if (pad > 0 && (n % 4 != 0 || (n >= 3 && in[n - 3] == '=')))
        return -1;
    n -= pad;
    if (n % 4 == 1)
        return -1;
    size_t o = 0;
    uint64_t bits = 0;
    unsigned nbits = 0;
    for (size_t i = 0; i < n; i++) {
        const char *c = in[i] ? memchr(B64URL, in[i], 64) : NULL;
        if (c == NULL)
            return -1;
        bits = bits << 6 | (uint64_t)(c - B64URL);
        nbits += 6;
        if (nbits >= 8) {
            nbits -= 8;
            out[o++] = (uint8_t)(bits >> nbits);
            bits &= (1u << nbits) - 1;
        }
    }
    if (bits != 0)
        return -1;
    return (long)o;
}

static void mode_base64(const uint8_t *p, size_t n)
{
    char *in = dup_exact(p, n);
    uint8_t *out = malloc(n * 3 / 4 + 3); /* the room the contract asks for, exactly */
    uint8_t *ref = malloc(n + 1);
    check(out != NULL && ref != NULL, "malloc");
    long r = ac__base64url_decode(in, n, out);
    long e = ref_b64url_decode(in, n, ref);
    check(r == e, "base64url: length or verdict differs from the reference");
    check(r <= 0 || memcmp(out, ref, (size_t)r) == 0, "base64url: bytes differ");
    if (r >= 0) {
        /* Canonical: re-encoding gives the input back, padding aside. */
        char *again = malloc((size_t)r * 4 / 3 + 4);
        check(again != NULL, "malloc");
        size_t m = b64url_encode(out, (size_t)r, again, 0);
        size_t unpadded = n;
        while (unpadded > 0 && in[unpadded - 1] == '=')
            unpadded--;
        check(m == unpadded && memcmp(again, in, m) == 0, "base64url: not canonical");
        free(again);
    }
    free(ref);
    free(out);
    free(in);
}

/* Verifies and checks what every answer must look like; returns the verdict. */
static int verify(const char *token, size_t len, const uint8_t *secret, size_t secret_len,
                  char **sub_out)
{
    char *tok = dup_exact(token, len);
    char *sub = (char *)"unset";
    const char *reason = NULL;
    int r = ac__jwt_verify(tok, len, secret, secret_len, NOW, &sub, &reason);
    free(tok);
    if (r == 0) {
        check(sub != NULL, "accepted without sub");
        size_t n = strlen(sub);
        check(n >= 1 && n <= 256, "sub length");
        for (size_t i = 0; i < n; i++)
            check((unsigned char)sub[i] >= 0x20 && sub[i] != 0x7f, "sub has a control char");
        if (sub_out != NULL)
            *sub_out = sub;
        else
            free(sub);
    } else {
        check(r == -1, "verify: return not 0 or -1");
        check(sub == NULL, "refused but sub set");
        check(reason != NULL && strncmp(reason, "token: ", 7) == 0, "reason");
    }
    return r;
}

static void mode_token(const uint8_t *p, size_t n)
{
    verify((const char *)p, n, (const uint8_t *)SECRET, SECRET_LEN, NULL);
    /* No token verifies under an empty secret. */
    check(verify((const char *)p, n, (const uint8_t *)"", 0, NULL) != 0, "empty secret");

    ac__jwt_policy_t pol;
    memset(&pol, 0, sizeof(pol));
    pol.keys = keyset;
    pol.asymmetric = 1;
    pol.leeway = 60;
    char *tok = dup_exact(p, n);
    char *user = (char *)"unset";
    const char *reason = NULL;
    int r = ac__jwt_check(tok, n, &pol, NOW, &user, &reason);
    check(r == AC__JWT_REFUSED || r == AC__JWT_UNKNOWN_KEY, "JWKS policy: forged token accepted");
    check(user == NULL && reason != NULL && strncmp(reason, "token: ", 7) == 0, "JWKS reason");
    free(tok);

    char why[160];
    ac__keyset_t *ks = ac__keyset_parse((const char *)p, n, why, sizeof(why));
    check(ks == NULL || (ac__keyset_count(ks) >= 1 && ac__keyset_count(ks) <= AC__JWKS_MAX_KEYS),
          "JWKS: key count");
    ac__keyset_free(ks);
}

/* 1 when now < t for a JSON number, as auth.h says exp and nbf are read. */
static int before_now(const json_t *t)
{
    if (json_is_integer(t))
        return NOW < json_integer_value(t);
    return (double)NOW < json_real_value(t);
}

/* The rules of ac__jwt_verify() (auth.h) over the JSON of a correctly signed token. */
static int ref_accepts(const char *hjson, size_t hlen, const char *pjson, size_t plen,
                       size_t token_len, const char **sub, json_t **keep)
{
    if (token_len > MAX_TOKEN)
        return 0;
    json_t *h = json_loadb(hjson, hlen, JSON_REJECT_DUPLICATES, NULL);
    int ok = json_is_object(h) && json_is_string(json_object_get(h, "alg")) &&
             strcmp(json_string_value(json_object_get(h, "alg")), "HS256") == 0 &&
             json_string_length(json_object_get(h, "alg")) == 5;
    json_decref(h);
    if (!ok)
        return 0;
    json_t *p = json_loadb(pjson, plen, JSON_REJECT_DUPLICATES, NULL);
    const json_t *s = json_object_get(p, "sub");
    const json_t *exp = json_object_get(p, "exp");
    const json_t *nbf = json_object_get(p, "nbf");
    ok = json_is_object(p) && json_is_string(s) && json_string_length(s) >= 1 &&
         json_string_length(s) <= 256 && json_is_number(exp) && before_now(exp) &&
         (nbf == NULL || (json_is_number(nbf) && !before_now(nbf)));
    for (size_t i = 0; ok && i < json_string_length(s); i++) {
        unsigned char c = (unsigned char)json_string_value(s)[i];
        ok = c >= 0x20 && c != 0x7f;
    }
    if (ok) {
        *sub = json_string_value(s);
        *keep = p;
    } else {
        json_decref(p);
    }
    return ok;
}

/* Variation bits (byte 0 >> 2): 1 pad the parts, 2 sign with another secret, 4 flip one
 * signature bit, 8 add a fourth part. */
static void mode_signed(uint8_t flags, const uint8_t *p, size_t n)
{
    const uint8_t *nul = memchr(p, '\0', n);
    const char *hjson = (const char *)p;
    size_t hlen = nul ? (size_t)(nul - p) : n;
    const char *pjson = nul ? (const char *)nul + 1 : "";
    size_t plen = nul ? n - hlen - 1 : 0;
    int pad = flags & 1;
    char *tok = malloc(4 * (n + 64) / 3 + 64);
    check(tok != NULL, "malloc");

    size_t t = b64url_encode((const uint8_t *)hjson, hlen, tok, pad);
    tok[t++] = '.';
    t += b64url_encode((const uint8_t *)pjson, plen, tok + t, pad);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned maclen = 0;
    const char *key = (flags & 2) ? "another-secret" : SECRET;
    check(HMAC(EVP_sha256(), key, (int)strlen(key), (const unsigned char *)tok, t, mac, &maclen) !=
                  NULL &&
              maclen == 32,
          "hmac");
    if (flags & 4)
        mac[flags % 32] ^= 1;
    tok[t++] = '.';
    t += b64url_encode(mac, 32, tok + t, 0);
    if (flags & 8) {
        tok[t++] = '.';
        tok[t++] = 'e';
    }

    const char *want_sub = NULL;
    json_t *keep = NULL;
    int want = !(flags & (2 | 4 | 8)) && ref_accepts(hjson, hlen, pjson, plen, t, &want_sub, &keep);
    char *sub = NULL;
    int r = verify(tok, t, (const uint8_t *)SECRET, SECRET_LEN, &sub);
    check((r == 0) == want, "signed token: verdict differs from the rules");
    if (r == 0) {
        check(strcmp(sub, want_sub) == 0, "signed token: wrong sub");
        free(sub);
    }
    json_decref(keep);
    free(tok);
}

static void mode_secret_equal(const uint8_t *p, size_t n)
{
    size_t half = n / 2;
    char *a = dup_exact(p, half);
    char *b = dup_exact(p + half, n - half);
    int eq = half == n - half && memcmp(a, b, half) == 0;
    check(ac__secret_equal(a, half, b, n - half) == eq, "secret_equal");
    check(ac__secret_equal(a, half, a, half) == 1, "secret_equal: not reflexive");
    free(a);
    free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const uint8_t *p = data + 1;
    size_t n = size - 1;

    switch (data[0] & 3) {
    case 0:
        mode_token(p, n);
        break;
    case 1:
        mode_signed((uint8_t)(data[0] >> 2), p, n);
        break;
    case 2:
        mode_base64(p, n);
        break;
    default:
        mode_secret_equal(p, n);
        break;
    }
    return 0;
}
