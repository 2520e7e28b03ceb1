/* Unit tests for src/api/jwk.c and the asymmetric half of src/api/auth.c: JWKS parsing
 * (which keys are usable, how each is pinned), every supported algorithm, and the classic
 * attacks (alg none, HS256 signed with the RSA public key, alg swapped under a kid, another
 * audience or issuer, expiry within and beyond the leeway). Keys are generated here with
 * OpenSSL, exported to JWK and used to sign tokens, so nothing depends on another JOSE
 * implementation. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include "api/auth.h"
#include "api/jwk.h"

#define NOW 1700000000LL
#define TOK_MAX 16384

static EVP_PKEY *rsa2048, *rsa1024, *p256, *p384, *ed25519, *ed448, *other_p256;

/* ---- encoding ---------------------------------------------------------------------- */

static size_t b64url(const uint8_t *in, size_t len, char *out)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0, i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = a[v >> 18];
        out[o++] = a[(v >> 12) & 63];
        out[o++] = a[(v >> 6) & 63];
        out[o++] = a[v & 63];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = a[v >> 18];
        out[o++] = a[(v >> 12) & 63];
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = a[v >> 18];
        out[o++] = a[(v >> 12) & 63];
        out[o++] = a[(v >> 6) & 63];
    }
    out[o] = '\0';
    return o;
}

static void bn_b64(EVP_PKEY *k, const char *param, size_t pad, char *out)
{
    BIGNUM *bn = NULL;
    uint8_t buf[1024];
    assert_int_equal(EVP_PKEY_get_bn_param(k, param, &bn), 1);
    int n = pad ? BN_bn2binpad(bn, buf, (int)pad) : BN_bn2bin(bn, buf);
    assert_true(n > 0);
    b64url(buf, (size_t)n, out);
    BN_free(bn);
}

/* One JWK object for k; extra is spliced in (e.g. ",\"alg\":\"RS384\""). */
static void jwk_of(EVP_PKEY *k, const char *kid, const char *extra, char *out, size_t cap)
{
    char a[1500], b[1500];
    const char *kidf = kid ? ",\"kid\":\"" : "";
    const char *kidv = kid ? kid : "";
    const char *kide = kid ? "\"" : "";
    if (EVP_PKEY_is_a(k, "RSA")) {
        bn_b64(k, OSSL_PKEY_PARAM_RSA_N, 0, a);
        bn_b64(k, OSSL_PKEY_PARAM_RSA_E, 0, b);
        snprintf(out, cap, "{\"kty\":\"RSA\",\"n\":\"%s\",\"e\":\"%s\"%s%s%s%s}", a, b, kidf, kidv,
                 kide, extra);
    } else if (EVP_PKEY_is_a(k, "EC")) {
        size_t field = EVP_PKEY_get_bits(k) == 256 ? 32 : 48;
        bn_b64(k, OSSL_PKEY_PARAM_EC_PUB_X, field, a);
        bn_b64(k, OSSL_PKEY_PARAM_EC_PUB_Y, field, b);
        snprintf(out, cap, "{\"kty\":\"EC\",\"crv\":\"%s\",\"x\":\"%s\",\"y\":\"%s\"%s%s%s%s}",
                 field == 32 ? "P-256" : "P-384", a, b, kidf, kidv, kide, extra);
    } else {
        uint8_t raw[64];
        size_t n = sizeof(raw);
        assert_int_equal(EVP_PKEY_get_raw_public_key(k, raw, &n), 1);
        b64url(raw, n, a);
        snprintf(out, cap, "{\"kty\":\"OKP\",\"crv\":\"%s\",\"x\":\"%s\"%s%s%s%s}",
                 EVP_PKEY_is_a(k, "ED25519") ? "Ed25519" : "Ed448", a, kidf, kidv, kide, extra);
    }
}

static ac__keyset_t *parse_set(const char *keys_json)
{
    char doc[TOK_MAX], why[160];
    snprintf(doc, sizeof(doc), "{\"keys\":[%s]}", keys_json);
    return ac__keyset_parse(doc, strlen(doc), why, sizeof(why));
}

static const char *md_of(const char *alg)
{
    if (strcmp(alg, "RS256") == 0 || strcmp(alg, "ES256") == 0)
        return "SHA256";
    if (strcmp(alg, "RS384") == 0 || strcmp(alg, "ES384") == 0)
        return "SHA384";
    if (strcmp(alg, "RS512") == 0)
        return "SHA512";
    return NULL;
}

/* header.payload.signature, signed by k as alg. */
static size_t sign_token(EVP_PKEY *k, const char *alg, const char *header, const char *payload,
                         char *out)
{
    size_t t = b64url((const uint8_t *)header, strlen(header), out);
    out[t++] = '.';
    t += b64url((const uint8_t *)payload, strlen(payload), out + t);
    uint8_t sig[1024];
    size_t siglen = sizeof(sig);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    assert_int_equal(EVP_DigestSignInit_ex(md, NULL, md_of(alg), NULL, NULL, k, NULL), 1);
    assert_int_equal(EVP_DigestSign(md, sig, &siglen, (const uint8_t *)out, t), 1);
    EVP_MD_CTX_free(md);
    if (alg[0] == 'E' && alg[1] == 'S') {
        /* DER -> r || s, as JWS carries it */
        size_t field = strcmp(alg, "ES256") == 0 ? 32 : 48;
        const uint8_t *p = sig;
        ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)siglen);
        assert_non_null(es);
        uint8_t raw[96];
        BN_bn2binpad(ECDSA_SIG_get0_r(es), raw, (int)field);
        BN_bn2binpad(ECDSA_SIG_get0_s(es), raw + field, (int)field);
        ECDSA_SIG_free(es);
        memcpy(sig, raw, 2 * field);
        siglen = 2 * field;
    }
    out[t++] = '.';
    t += b64url(sig, siglen, out + t);
    return t;
}

static size_t hs256_token(const uint8_t *key, size_t keylen, const char *header,
                          const char *payload, char *out)
{
    size_t t = b64url((const uint8_t *)header, strlen(header), out);
    out[t++] = '.';
    t += b64url((const uint8_t *)payload, strlen(payload), out + t);
    uint8_t mac[32];
    unsigned ml = 0;
    HMAC(EVP_sha256(), key, (int)keylen, (const uint8_t *)out, t, mac, &ml);
    out[t++] = '.';
    t += b64url(mac, 32, out + t);
    return t;
}

static char payload_buf[512];

static const char *claims(long long exp_delta)
{
    snprintf(payload_buf, sizeof(payload_buf), "{\"sub\":\"u1\",\"exp\":%lld}", NOW + exp_delta);
    return payload_buf;
}

static int check(const char *token, size_t len, const ac__jwt_policy_t *pol, const char **reason)
{
    char *user = NULL;
    const char *why = NULL;
    int r = ac__jwt_check(token, len, pol, NOW, &user, &why);
    if (r == 0) {
        assert_string_equal(user, "u1");
        free(user);
    } else {
        assert_null(user);
    }
    if (reason != NULL)
        *reason = why;
    return r;
}

static ac__jwt_policy_t policy(const ac__keyset_t *ks)
{
    ac__jwt_policy_t p;
    memset(&p, 0, sizeof(p));
    p.keys = ks;
    p.asymmetric = 1;
    return p;
}

/* ---- every algorithm -------------------------------------------------------------- */

static void accepts(EVP_PKEY *k, const char *alg, const char *jwk_extra)
{
    char jwk[4096], tok[TOK_MAX], header[128];
    jwk_of(k, "k1", jwk_extra, jwk, sizeof(jwk));
    ac__keyset_t *ks = parse_set(jwk);
    assert_non_null(ks);
    assert_int_equal(ac__keyset_count(ks), 1);
    ac__jwt_policy_t pol = policy(ks);
    snprintf(header, sizeof(header), "{\"alg\":\"%s\",\"kid\":\"k1\"}", alg);
    size_t n = sign_token(k, alg, header, claims(60), tok);
    assert_int_equal(check(tok, n, &pol, NULL), 0);
    /* Without a kid: every key pinned to that alg is tried. */
    snprintf(header, sizeof(header), "{\"alg\":\"%s\"}", alg);
    n = sign_token(k, alg, header, claims(60), tok);
    assert_int_equal(check(tok, n, &pol, NULL), 0);
    /* One flipped signature bit. */
    tok[n - 2] = tok[n - 2] == 'A' ? 'B' : 'A';
    const char *why;
    assert_int_equal(check(tok, n, &pol, &why), AC__JWT_REFUSED);
    assert_string_equal(why, "token: bad signature");
    ac__keyset_free(ks);
}

static void test_rs256_is_accepted(void **state)
{
    accepts(rsa2048, "RS256", ",\"alg\":\"RS256\",\"use\":\"sig\"");
}

static void test_rs384_is_accepted(void **state)
{
    accepts(rsa2048, "RS384", ",\"alg\":\"RS384\"");
}

static void test_rs512_is_accepted(void **state)
{
    accepts(rsa2048, "RS512", ",\"alg\":\"RS512\"");
}

static void test_es256_is_accepted(void **state)
{
    accepts(p256, "ES256", "");
}

static void test_es384_is_accepted(void **state)
{
    accepts(p384, "ES384", ",\"alg\":\"ES384\"");
}

static void test_eddsa_ed25519_is_accepted(void **state)
{
    accepts(ed25519, "EdDSA", ",\"alg\":\"EdDSA\"");
}

static void test_eddsa_ed448_is_accepted(void **state)
{
    accepts(ed448, "EdDSA", "");
}

static void test_rsa_key_without_alg_is_pinned_to_rs256(void **state)
{
    char jwk[4096], tok[TOK_MAX];
    jwk_of(rsa2048, "k1", "", jwk, sizeof(jwk));
    ac__keyset_t *ks = parse_set(jwk);
    ac__jwt_policy_t pol = policy(ks);
    size_t n = sign_token(rsa2048, "RS256", "{\"alg\":\"RS256\",\"kid\":\"k1\"}", claims(60), tok);
    assert_int_equal(check(tok, n, &pol, NULL), 0);
    n = sign_token(rsa2048, "RS512", "{\"alg\":\"RS512\",\"kid\":\"k1\"}", claims(60), tok);
    const char *why;
    assert_int_equal(check(tok, n, &pol, &why), AC__JWT_REFUSED);
    assert_string_equal(why, "token: alg does not match the key");
    ac__keyset_free(ks);
}

/* ---- attacks ---------------------------------------------------------------------- */

static void test_alg_none_is_refused(void **state)
{
    char jwk[4096], tok[TOK_MAX];
    jwk_of(rsa2048, "k1", "", jwk, sizeof(jwk));
    ac__keyset_t *ks = parse_set(jwk);
    ac__jwt_policy_t pol = policy(ks);
    size_t t = b64url((const uint8_t *)"{\"alg\":\"none\",\"kid\":\"k1\"}", 25, tok);
    tok[t++] = '.';
    t += b64url((const uint8_t *)claims(60), strlen(claims(60)), tok + t);
    tok[t++] = '.';
    tok[t] = '\0';
    const char *why;
    assert_int_equal(check(tok, t, &pol, &why), AC__JWT_REFUSED);
    assert_string_equal(why, "token: alg not accepted");
    ac__keyset_free(ks);
}

/* The classic confusion: the attacker HMACs with the (public) RSA key as the secret. */
static void test_hs256_signed_with_the_rsa_public_key_is_refused(void **state)
{
    char jwk[4096], tok[TOK_MAX];
    jwk_of(rsa2048, "k1", ",\"alg\":\"RS256\"", jwk, sizeof(jwk));
    ac__keyset_t *ks = parse_set(jwk);
    BIO *bio = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_PUBKEY(bio, rsa2048), 1);
    char *pem = NULL;
    long pemlen = BIO_get_mem_data(bio, &pem);
    size_t n = hs256_token((const uint8_t *)pem, (size_t)pemlen,
                           "{\"alg\":\"HS256\",\"kid\":\"k1\"}", claims(60), tok);
    const char *why;
    /* JWKS only: HS256 is not an algorithm of this gateway at all. */
    ac__jwt_policy_t pol = policy(ks);
    assert_int_equal(check(tok, n, &pol, &why), AC__JWT_REFUSED);
    assert_string_equal(why, "token: alg not accepted");
    /* With a shared secret too: HS256 is checked under that secret only, never a JWK. */
    pol.secret = (const uint8_t *)"the-real-shared-secret";
    pol.secret_len = strlen("the-real-shared-secret");
    assert_int_equal(check(tok, n, &pol, &why), AC__JWT_REFUSED);
    assert_string_equal(why, "token: bad signature");
    BIO_free(bio);
    ac__keyset_free(ks);
}

static void test_es256_token_under_an_rsa_kid_is_refused(void **state)
{
    char jwk[4096], tok[TOK_MAX];
    jwk_of(rsa2048, "k1", "", jwk, sizeof(jwk));
    ac__keyset_t *ks = parse_set(jwk);
    ac__jwt_policy_t pol = policy(ks);
    size_t n = sign_token(p256, "ES256", "{\"alg\":\"ES256\",\"kid\":\"k1\"}", claims(60), tok);
    const char *why;
    assert_int_equal(check(tok, n, &pol, &why), AC__JWT_REFUSED);
    assert_string_equal(why, "token: alg does not match the key");
    ac__keyset_free(ks);
}

static void test_token_signed_by_another_key_is_refused(void **state)
{
    char jwk[4096], tok[TOK_MAX];
    jwk_of(p256, "k1", "", jwk, sizeof(jwk));
    ac__keyset_t *ks = parse_set(jwk);
    ac__jwt_policy_t pol = policy(ks);
    size_t n =
        sign_token(other_p256, "ES256", "{\"alg\":\"ES256\",\"kid\":\"k1\"}", claims(60), tok);
    assert_int_equal(check(tok, n, &pol, NULL), AC__JWT_REFUSED);
    ac__keyset_free(ks);
}

static void test_unknown_kid_asks_for_a_refresh(void **state)
{
    char jwk[4096], tok[TOK_MAX];
    jwk_of(p256, "k1", "", jwk, sizeof(jwk));
    ac__keyset_t *ks = parse_set(jwk);
    ac__jwt_policy_t pol = policy(ks);
    size_t n = sign_token(p256, "ES256", "{\"alg\":\"ES256\",\"kid\":\"k2\"}", claims(60), tok);
    const char *why;
    assert_int_equal(check(tok, n, &pol, &why), AC__JWT_UNKNOWN_KEY);
    assert_string_equal(why, "token: no key for this kid or alg");
    /* No keys loaded yet at all: the same answer, so the caller can wait for them. */
    pol.keys = NULL;
    assert_int_equal(check(tok, n, &pol, NULL), AC__JWT_UNKNOWN_KEY);
    ac__keyset_free(ks);
}

static void test_crit_header_is_refused(void **state)
{
    char jwk[4096], tok[TOK_MAX];
    jwk_of(p256, "k1", "", jwk, sizeof(jwk));
    ac__keyset_t *ks = parse_set(jwk);
    ac__jwt_policy_t pol = policy(ks);
    size_t n = sign_token(p256, "ES256", "{\"alg\":\"ES256\",\"kid\":\"k1\",\"crit\":[\"exp\"]}",
                          claims(60), tok);
    const char *why;
    assert_int_equal(check(tok, n, &pol, &why), AC__JWT_REFUSED);
    assert_string_equal(why, "token: crit header not supported");
    ac__keyset_free(ks);
}

/* ---- claims policy ----------------------------------------------------------------- */

static ac__keyset_t *ed_set(void)
{
    char jwk[1024];
    jwk_of(ed25519, "k1", "", jwk, sizeof(jwk));
    return parse_set(jwk);
}

static int ed_check(const ac__jwt_policy_t *pol, const char *payload, const char **why)
{
    char tok[TOK_MAX];
    size_t n = sign_token(ed25519, "EdDSA", "{\"alg\":\"EdDSA\",\"kid\":\"k1\"}", payload, tok);
    return check(tok, n, pol, why);
}

static void test_audience_must_match(void **state)
{
    ac__keyset_t *ks = ed_set();
    ac__jwt_policy_t pol = policy(ks);
    const char *why;
    pol.audience = "gateway";
    char p[256];
    snprintf(p, sizeof(p), "{\"sub\":\"u1\",\"exp\":%lld,\"aud\":\"gateway\"}", NOW + 60);
    assert_int_equal(ed_check(&pol, p, NULL), 0);
    snprintf(p, sizeof(p), "{\"sub\":\"u1\",\"exp\":%lld,\"aud\":[\"x\",\"gateway\"]}", NOW + 60);
    assert_int_equal(ed_check(&pol, p, NULL), 0);
    snprintf(p, sizeof(p), "{\"sub\":\"u1\",\"exp\":%lld,\"aud\":\"billing\"}", NOW + 60);
    assert_int_equal(ed_check(&pol, p, &why), AC__JWT_REFUSED);
    assert_string_equal(why, "token: aud does not match --jwt-audience");
    assert_int_equal(ed_check(&pol, claims(60), &why), AC__JWT_REFUSED);
    assert_string_equal(why, "token: aud does not match --jwt-audience");
    ac__keyset_free(ks);
}

static void test_issuer_must_match(void **state)
{
    ac__keyset_t *ks = ed_set();
    ac__jwt_policy_t pol = policy(ks);
    const char *why;
    pol.issuer = "https://idp.example/";
    char p[256];
    snprintf(p, sizeof(p), "{\"sub\":\"u1\",\"exp\":%lld,\"iss\":\"https://idp.example/\"}",
             NOW + 60);
    assert_int_equal(ed_check(&pol, p, NULL), 0);
    snprintf(p, sizeof(p), "{\"sub\":\"u1\",\"exp\":%lld,\"iss\":\"https://evil.example/\"}",
             NOW + 60);
    assert_int_equal(ed_check(&pol, p, &why), AC__JWT_REFUSED);
    assert_string_equal(why, "token: iss does not match --jwt-issuer");
    ac__keyset_free(ks);
}

static void test_expired_within_the_leeway_is_accepted(void **state)
{
    ac__keyset_t *ks = ed_set();
    ac__jwt_policy_t pol = policy(ks);
    pol.leeway = 30;
    assert_int_equal(ed_check(&pol, claims(-29), NULL), 0);
    ac__keyset_free(ks);
}

static void test_expired_beyond_the_leeway_is_refused(void **state)
{
    ac__keyset_t *ks = ed_set();
    ac__jwt_policy_t pol = policy(ks);
    const char *why;
    pol.leeway = 30;
    assert_int_equal(ed_check(&pol, claims(-30), &why), AC__JWT_REFUSED);
    assert_string_equal(why, "token: expired");
    pol.leeway = 0;
    assert_int_equal(ed_check(&pol, claims(0), &why), AC__JWT_REFUSED);
    ac__keyset_free(ks);
}

static void test_nbf_within_the_leeway_is_accepted(void **state)
{
    ac__keyset_t *ks = ed_set();
    ac__jwt_policy_t pol = policy(ks);
    const char *why;
    char p[256];
    snprintf(p, sizeof(p), "{\"sub\":\"u1\",\"exp\":%lld,\"nbf\":%lld}", NOW + 600, NOW + 10);
    assert_int_equal(ed_check(&pol, p, &why), AC__JWT_REFUSED);
    assert_string_equal(why, "token: not yet valid");
    pol.leeway = 10;
    assert_int_equal(ed_check(&pol, p, NULL), 0);
    ac__keyset_free(ks);
}

static void test_user_claim_is_configurable(void **state)
{
    ac__keyset_t *ks = ed_set();
    ac__jwt_policy_t pol = policy(ks);
    const char *why;
    pol.user_claim = "email";
    char p[256];
    snprintf(p, sizeof(p), "{\"sub\":\"ignored\",\"email\":\"u1\",\"exp\":%lld}", NOW + 60);
    assert_int_equal(ed_check(&pol, p, NULL), 0);
    assert_int_equal(ed_check(&pol, claims(60), &why), AC__JWT_REFUSED);
    assert_string_equal(why, "token: user claim (--jwt-user-claim) required");
    ac__keyset_free(ks);
}

/* ---- JWKS parsing ----------------------------------------------------------------- */

static void test_jwks_skips_what_it_cannot_use(void **state)
{
    char a[4096], b[4096], c[4096], doc[TOK_MAX], why[160];
    jwk_of(p256, "good", "", a, sizeof(a));
    jwk_of(p384, "enc", ",\"use\":\"enc\"", b, sizeof(b));
    jwk_of(rsa1024, "small", "", c, sizeof(c));
    snprintf(doc, sizeof(doc),
             "{\"keys\":[%s,%s,%s,{\"kty\":\"oct\",\"k\":\"c2VjcmV0\",\"kid\":\"hmac\"},"
             "{\"kty\":\"RSA\",\"alg\":\"PS256\",\"n\":\"AQAB\",\"e\":\"AQAB\"},"
             "{\"kty\":\"EC\",\"crv\":\"P-521\",\"x\":\"AA\",\"y\":\"AA\"},\"junk\"]}",
             a, b, c);
    ac__keyset_t *ks = ac__keyset_parse(doc, strlen(doc), why, sizeof(why));
    assert_non_null(ks);
    assert_int_equal(ac__keyset_count(ks), 1);
    assert_int_equal(ac__keyset_skipped(ks), 6);
    assert_true(ac__keyset_has_kid(ks, "good"));
    assert_false(ac__keyset_has_kid(ks, "hmac"));
    ac__keyset_free(ks);
}

static void test_jwks_ec_alg_that_disagrees_with_crv_drops_the_key(void **state)
{
    char a[4096], why[160], doc[8192];
    jwk_of(p256, "k", ",\"alg\":\"ES384\"", a, sizeof(a));
    snprintf(doc, sizeof(doc), "{\"keys\":[%s]}", a);
    assert_null(ac__keyset_parse(doc, strlen(doc), why, sizeof(why)));
    assert_string_equal(why, "no usable signing key (1 skipped)");
}

static void test_jwks_point_off_the_curve_is_skipped(void **state)
{
    char a[4096], why[160], doc[8192];
    jwk_of(p256, "k", "", a, sizeof(a));
    /* Change one character of y: the point leaves the curve. */
    char *y = strstr(a, "\"y\":\"") + 5;
    y[3] = y[3] == 'A' ? 'B' : 'A';
    snprintf(doc, sizeof(doc), "{\"keys\":[%s]}", a);
    assert_null(ac__keyset_parse(doc, strlen(doc), why, sizeof(why)));
}

static void test_jwks_repeated_kid_keeps_the_first(void **state)
{
    char a[4096], b[4096], doc[TOK_MAX], why[160], tok[TOK_MAX];
    jwk_of(p256, "same", "", a, sizeof(a));
    jwk_of(other_p256, "same", "", b, sizeof(b));
    snprintf(doc, sizeof(doc), "{\"keys\":[%s,%s]}", a, b);
    ac__keyset_t *ks = ac__keyset_parse(doc, strlen(doc), why, sizeof(why));
    assert_int_equal(ac__keyset_count(ks), 1);
    assert_int_equal(ac__keyset_skipped(ks), 1);
    ac__jwt_policy_t pol = policy(ks);
    size_t n =
        sign_token(other_p256, "ES256", "{\"alg\":\"ES256\",\"kid\":\"same\"}", claims(60), tok);
    assert_int_equal(check(tok, n, &pol, NULL), AC__JWT_REFUSED);
    ac__keyset_free(ks);
}

/* Without a kid a token is tried against at most AC__JWS_MAX_TRIES keys of its alg. */
static void test_a_token_without_kid_tries_a_bounded_number_of_keys(void **state)
{
    char doc[TOK_MAX] = "", jwk[1024], tok[TOK_MAX], kid[8];
    EVP_PKEY *k[AC__JWS_MAX_TRIES + 1];
    for (int i = 0; i <= AC__JWS_MAX_TRIES; i++) {
        k[i] = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
        snprintf(kid, sizeof(kid), "k%d", i);
        jwk_of(k[i], kid, "", jwk, sizeof(jwk));
        if (i > 0)
            strcat(doc, ",");
        strcat(doc, jwk);
    }
    ac__keyset_t *ks = parse_set(doc);
    assert_int_equal(ac__keyset_count(ks), AC__JWS_MAX_TRIES + 1);
    ac__jwt_policy_t pol = policy(ks);
    size_t n =
        sign_token(k[AC__JWS_MAX_TRIES - 1], "EdDSA", "{\"alg\":\"EdDSA\"}", claims(60), tok);
    assert_int_equal(check(tok, n, &pol, NULL), 0);
    n = sign_token(k[AC__JWS_MAX_TRIES], "EdDSA", "{\"alg\":\"EdDSA\"}", claims(60), tok);
    assert_int_equal(check(tok, n, &pol, NULL), AC__JWT_REFUSED);
    /* With its kid, the same key is found. */
    snprintf(jwk, sizeof(jwk), "{\"alg\":\"EdDSA\",\"kid\":\"k%d\"}", AC__JWS_MAX_TRIES);
    n = sign_token(k[AC__JWS_MAX_TRIES], "EdDSA", jwk, claims(60), tok);
    assert_int_equal(check(tok, n, &pol, NULL), 0);
    for (int i = 0; i <= AC__JWS_MAX_TRIES; i++)
        EVP_PKEY_free(k[i]);
    ac__keyset_free(ks);
}

static void test_jwks_not_a_document_is_refused(void **state)
{
    char why[160];
    assert_null(ac__keyset_parse("[]", 2, why, sizeof(why)));
    assert_string_equal(why, "not a JWKS document (an object with a \"keys\" array)");
    assert_null(ac__keyset_parse("{\"keys\":{}}", 11, why, sizeof(why)));
    assert_null(ac__keyset_parse("{\"keys\":[]}", 11, why, sizeof(why)));
    assert_string_equal(why, "no usable signing key (0 skipped)");
    assert_null(ac__keyset_parse("{", 1, why, sizeof(why)));
}

static void test_jwa_names_round_trip(void **state)
{
    for (int i = 0; i < AC__JWA_COUNT; i++) {
        const char *n = ac__jwa_name((ac__jwa_t)i);
        assert_int_equal(ac__jwa_parse(n, strlen(n)), i);
    }
    assert_int_equal(ac__jwa_parse("none", 4), AC__JWA_NONE);
    assert_int_equal(ac__jwa_parse("rs256", 5), AC__JWA_NONE);
    assert_int_equal(ac__jwa_parse("ES512", 5), AC__JWA_NONE);
}

static int setup(void **state)
{
    rsa2048 = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    rsa1024 = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
    p256 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    other_p256 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    p384 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
    ed25519 = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    ed448 = EVP_PKEY_Q_keygen(NULL, NULL, "ED448");
    return rsa2048 && rsa1024 && p256 && other_p256 && p384 && ed25519 && ed448 ? 0 : -1;
}

static int teardown(void **state)
{
    EVP_PKEY *all[] = {rsa2048, rsa1024, p256, other_p256, p384, ed25519, ed448};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        EVP_PKEY_free(all[i]);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rs256_is_accepted),
        cmocka_unit_test(test_rs384_is_accepted),
        cmocka_unit_test(test_rs512_is_accepted),
        cmocka_unit_test(test_es256_is_accepted),
        cmocka_unit_test(test_es384_is_accepted),
        cmocka_unit_test(test_eddsa_ed25519_is_accepted),
        cmocka_unit_test(test_eddsa_ed448_is_accepted),
        cmocka_unit_test(test_rsa_key_without_alg_is_pinned_to_rs256),
        cmocka_unit_test(test_alg_none_is_refused),
        cmocka_unit_test(test_hs256_signed_with_the_rsa_public_key_is_refused),
        cmocka_unit_test(test_es256_token_under_an_rsa_kid_is_refused),
        cmocka_unit_test(test_token_signed_by_another_key_is_refused),
        cmocka_unit_test(test_unknown_kid_asks_for_a_refresh),
        cmocka_unit_test(test_crit_header_is_refused),
        cmocka_unit_test(test_audience_must_match),
        cmocka_unit_test(test_issuer_must_match),
        cmocka_unit_test(test_expired_within_the_leeway_is_accepted),
        cmocka_unit_test(test_expired_beyond_the_leeway_is_refused),
        cmocka_unit_test(test_nbf_within_the_leeway_is_accepted),
        cmocka_unit_test(test_user_claim_is_configurable),
        cmocka_unit_test(test_jwks_skips_what_it_cannot_use),
        cmocka_unit_test(test_jwks_ec_alg_that_disagrees_with_crv_drops_the_key),
        cmocka_unit_test(test_jwks_point_off_the_curve_is_skipped),
        cmocka_unit_test(test_jwks_repeated_kid_keeps_the_first),
        cmocka_unit_test(test_a_token_without_kid_tries_a_bounded_number_of_keys),
        cmocka_unit_test(test_jwks_not_a_document_is_refused),
        cmocka_unit_test(test_jwa_names_round_trip),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
