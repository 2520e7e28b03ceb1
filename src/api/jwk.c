/* JWKS parsing and JWS signature checks with OpenSSL 3: every JWK becomes an EVP_PKEY
 * (EVP_PKEY_fromdata for RSA n/e and EC x/y/crv, raw public keys for OKP x) pinned to the
 * one algorithm its kty/crv/alg allow, so a token never chooses how it is checked. It is not
 * a JOSE library: public signature keys only, no certificates (x5c), no encryption. */
#include "api/jwk.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>

#include "api/auth.h"

#define KID_MAX 256
/* base64url of a 16384-bit RSA modulus, more than any key in use. */
#define B64_PART_MAX 2800
#define DECODED_ROOM(n) (((n)*3) / 4 + 3)

typedef struct key_s {
    char *kid; /* NULL: none */
    ac__jwa_t alg;
    EVP_PKEY *pkey;
} jwk_key_t;

struct ac__keyset_s {
    jwk_key_t keys[AC__JWKS_MAX_KEYS];
    size_t n;
    size_t skipped;
};

static const char *const JWA_NAMES[AC__JWA_COUNT] = {"HS256", "RS256", "RS384", "RS512",
                                                     "ES256", "ES384", "EdDSA"};

ac__jwa_t ac__jwa_parse(const char *name, size_t len)
{
    for (int i = 0; i < AC__JWA_COUNT; i++) {
        if (strlen(JWA_NAMES[i]) == len && memcmp(JWA_NAMES[i], name, len) == 0)
            return (ac__jwa_t)i;
    }
    return AC__JWA_NONE;
}

const char *ac__jwa_name(ac__jwa_t alg)
{
    return alg >= 0 && alg < AC__JWA_COUNT ? JWA_NAMES[alg] : "none";
}

/* Decodes one base64url member of a JWK into out (room for DECODED_ROOM(B64_PART_MAX));
 * returns its length or -1 when absent or malformed. */
static long member_bytes(const json_t *jwk, const char *name, uint8_t *out)
{
    const json_t *v = json_object_get(jwk, name);
    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > B64_PART_MAX)
        return -1;
    return ac__base64url_decode(json_string_value(v), json_string_length(v), out);
}

static EVP_PKEY *from_params(const char *type, OSSL_PARAM_BLD *bld)
{
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = params ? EVP_PKEY_CTX_new_from_name(NULL, type, NULL) : NULL;
    EVP_PKEY *pkey = NULL;

    if (ctx == NULL || EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1)
        pkey = NULL;
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    return pkey;
}

/* A public key must be a valid one (an EC point on its curve, an RSA e that is odd...). */
static int public_ok(EVP_PKEY *pkey)
{
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    int ok = ctx != NULL && EVP_PKEY_public_check(ctx) == 1;
    EVP_PKEY_CTX_free(ctx);
    return ok;
}

static EVP_PKEY *rsa_key(const json_t *jwk)
{
    uint8_t n[DECODED_ROOM(B64_PART_MAX)], e[DECODED_ROOM(B64_PART_MAX)];
    long nlen = member_bytes(jwk, "n", n);
    long elen = member_bytes(jwk, "e", e);
    if (nlen <= 0 || elen <= 0 || elen > 8)
        return NULL;
    BIGNUM *bn = BN_bin2bn(n, (int)nlen, NULL);
    BIGNUM *be = BN_bin2bn(e, (int)elen, NULL);
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    EVP_PKEY *pkey = NULL;
    if (bn != NULL && be != NULL && bld != NULL &&
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) == 1 &&
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be) == 1)
        pkey = from_params("RSA", bld);
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn);
    BN_free(be);
    if (pkey != NULL && (EVP_PKEY_get_bits(pkey) < AC__JWK_RSA_MIN_BITS || !public_ok(pkey))) {
        EVP_PKEY_free(pkey);
        pkey = NULL;
    }
    return pkey;
}

static EVP_PKEY *ec_key(const json_t *jwk, const char *group, size_t field)
{
    uint8_t x[DECODED_ROOM(B64_PART_MAX)], y[DECODED_ROOM(B64_PART_MAX)];
    long xlen = member_bytes(jwk, "x", x);
    long ylen = member_bytes(jwk, "y", y);
    /* RFC 7518 6.2.1.2: each coordinate is exactly the field's size. */
    if (xlen != (long)field || ylen != (long)field)
        return NULL;
    uint8_t pub[1 + 2 * 48];
    pub[0] = 0x04; /* uncompressed point */
    memcpy(pub + 1, x, field);
    memcpy(pub + 1 + field, y, field);
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    EVP_PKEY *pkey = NULL;
    if (bld != NULL &&
        OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, group, 0) == 1 &&
        OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub, 1 + 2 * field) == 1)
        pkey = from_params("EC", bld);
    OSSL_PARAM_BLD_free(bld);
    if (pkey != NULL && !public_ok(pkey)) {
        EVP_PKEY_free(pkey);
        pkey = NULL;
    }
    return pkey;
}

static EVP_PKEY *okp_key(const json_t *jwk, const char *type, size_t size)
{
    uint8_t x[DECODED_ROOM(B64_PART_MAX)];
    long xlen = member_bytes(jwk, "x", x);
    if (xlen != (long)size)
        return NULL;
    return EVP_PKEY_new_raw_public_key_ex(NULL, type, NULL, x, size);
}

static int str_is(const json_t *v, const char *s)
{
    return json_is_string(v) && strcmp(json_string_value(v), s) == 0 &&
           json_string_length(v) == strlen(s);
}

/* One JWK: its pinned algorithm and key, or -1 to skip it. */
static int load_key(const json_t *jwk, jwk_key_t *k)
{
    const json_t *kty = json_object_get(jwk, "kty");
    const json_t *crv = json_object_get(jwk, "crv");
    const json_t *alg = json_object_get(jwk, "alg");
    const json_t *use = json_object_get(jwk, "use");
    const json_t *kid = json_object_get(jwk, "kid");
    ac__jwa_t want = AC__JWA_NONE;

    if (!json_is_object(jwk) || (use != NULL && !str_is(use, "sig")))
        return -1;
    if (alg != NULL && !json_is_string(alg))
        return -1;
    if (kid != NULL && (!json_is_string(kid) || json_string_length(kid) == 0 ||
                        json_string_length(kid) > KID_MAX ||
                        strlen(json_string_value(kid)) != json_string_length(kid)))
        return -1;
    if (str_is(kty, "RSA")) {
        want = alg == NULL ? AC__JWA_RS256
                           : ac__jwa_parse(json_string_value(alg), json_string_length(alg));
        if (want != AC__JWA_RS256 && want != AC__JWA_RS384 && want != AC__JWA_RS512)
            return -1;
        k->pkey = rsa_key(jwk);
    } else if (str_is(kty, "EC")) {
        want = str_is(crv, "P-256")   ? AC__JWA_ES256
               : str_is(crv, "P-384") ? AC__JWA_ES384
                                      : AC__JWA_NONE;
        if (want == AC__JWA_NONE || (alg != NULL && !str_is(alg, ac__jwa_name(want))))
            return -1;
        k->pkey = want == AC__JWA_ES256 ? ec_key(jwk, "P-256", 32) : ec_key(jwk, "P-384", 48);
    } else if (str_is(kty, "OKP")) {
        want = AC__JWA_EDDSA;
        if (alg != NULL && !str_is(alg, "EdDSA"))
            return -1;
        if (str_is(crv, "Ed25519"))
            k->pkey = okp_key(jwk, "ED25519", 32);
        else if (str_is(crv, "Ed448"))
            k->pkey = okp_key(jwk, "ED448", 57);
        else
            return -1;
    } else {
        return -1; /* oct (a shared secret has no place in a public set), or unknown */
    }
    ERR_clear_error();
    if (k->pkey == NULL)
        return -1;
    k->alg = want;
    if (kid != NULL && (k->kid = strdup(json_string_value(kid))) == NULL) {
        EVP_PKEY_free(k->pkey);
        k->pkey = NULL;
        return -1;
    }
    return 0;
}

ac__keyset_t *ac__keyset_parse(const char *json, size_t len, char *why, size_t whylen)
{
    json_error_t jerr;
    json_t *doc = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    const json_t *keys = json_object_get(doc, "keys");
    ac__keyset_t *ks = NULL;

    if (!json_is_object(doc) || !json_is_array(keys)) {
        snprintf(why, whylen, "not a JWKS document (an object with a \"keys\" array)");
        goto done;
    }
    ks = calloc(1, sizeof(*ks));
    if (ks == NULL) {
        snprintf(why, whylen, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < json_array_size(keys); i++) {
        jwk_key_t k = {NULL, AC__JWA_NONE, NULL};
        if (ks->n == AC__JWKS_MAX_KEYS || load_key(json_array_get(keys, i), &k) != 0) {
            ks->skipped++;
            continue;
        }
        if (k.kid != NULL && ac__keyset_has_kid(ks, k.kid)) {
            /* Two keys under one kid: which one a token means is not ours to guess. */
            free(k.kid);
            EVP_PKEY_free(k.pkey);
            ks->skipped++;
            continue;
        }
        ks->keys[ks->n++] = k;
    }
    if (ks->n == 0) {
        snprintf(why, whylen, "no usable signing key (%zu skipped)", ks->skipped);
        ac__keyset_free(ks);
        ks = NULL;
    }
done:
    json_decref(doc);
    return ks;
}

void ac__keyset_free(ac__keyset_t *ks)
{
    if (ks == NULL)
        return;
    for (size_t i = 0; i < ks->n; i++) {
        free(ks->keys[i].kid);
        EVP_PKEY_free(ks->keys[i].pkey);
    }
    free(ks);
}

size_t ac__keyset_count(const ac__keyset_t *ks)
{
    return ks ? ks->n : 0;
}

size_t ac__keyset_skipped(const ac__keyset_t *ks)
{
    return ks ? ks->skipped : 0;
}

int ac__keyset_has_kid(const ac__keyset_t *ks, const char *kid)
{
    for (size_t i = 0; ks != NULL && i < ks->n; i++) {
        if (ks->keys[i].kid != NULL && strcmp(ks->keys[i].kid, kid) == 0)
            return 1;
    }
    return 0;
}

static const char *digest_of(ac__jwa_t alg)
{
    switch (alg) {
    case AC__JWA_RS256:
    case AC__JWA_ES256:
        return "SHA256";
    case AC__JWA_RS384:
    case AC__JWA_ES384:
        return "SHA384";
    case AC__JWA_RS512:
        return "SHA512";
    default:
        return NULL; /* EdDSA hashes internally */
    }
}

/* JWS carries ECDSA signatures as r || s, each the field's size (RFC 7518 3.4); OpenSSL
 * wants DER. Returns the DER length or -1. */
static int ecdsa_der(const uint8_t *sig, size_t siglen, size_t field, uint8_t *der, size_t room)
{
    if (siglen != 2 * field)
        return -1;
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(sig, (int)field, NULL);
    BIGNUM *s = BN_bin2bn(sig + field, (int)field, NULL);
    int n = -1;
    if (es != NULL && r != NULL && s != NULL && ECDSA_SIG_set0(es, r, s) == 1) {
        r = s = NULL; /* owned by es now */
        if (i2d_ECDSA_SIG(es, NULL) <= (int)room) {
            uint8_t *p = der;
            n = i2d_ECDSA_SIG(es, &p);
        }
    }
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(es);
    return n;
}

static int check_one(const jwk_key_t *k, const uint8_t *msg, size_t msglen, const uint8_t *sig,
                     size_t siglen)
{
    uint8_t der[160];
    if (k->alg == AC__JWA_ES256 || k->alg == AC__JWA_ES384) {
        int n = ecdsa_der(sig, siglen, k->alg == AC__JWA_ES256 ? 32 : 48, der, sizeof(der));
        if (n <= 0)
            return 0;
        sig = der;
        siglen = (size_t)n;
    }
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int ok = md != NULL &&
             EVP_DigestVerifyInit_ex(md, NULL, digest_of(k->alg), NULL, NULL, k->pkey, NULL) == 1 &&
             EVP_DigestVerify(md, sig, siglen, msg, msglen) == 1;
    EVP_MD_CTX_free(md);
    ERR_clear_error();
    return ok;
}

int ac__keyset_verify(const ac__keyset_t *ks, const char *kid, ac__jwa_t alg, const uint8_t *msg,
                      size_t msglen, const uint8_t *sig, size_t siglen, const char **why)
{
    int tried = 0;

    *why = "token: bad signature";
    for (size_t i = 0; ks != NULL && i < ks->n; i++) {
        const jwk_key_t *k = &ks->keys[i];
        if (kid != NULL) {
            if (k->kid == NULL || strcmp(k->kid, kid) != 0)
                continue;
            if (k->alg != alg) {
                *why = "token: alg does not match the key";
                return AC__JWS_BAD;
            }
            return check_one(k, msg, msglen, sig, siglen) ? AC__JWS_OK : AC__JWS_BAD;
        }
        if (k->alg != alg)
            continue;
        if (tried == AC__JWS_MAX_TRIES)
            break; /* each try is a signature check on the loop: a token names its kid */
        tried++;
        if (check_one(k, msg, msglen, sig, siglen))
            return AC__JWS_OK;
    }
    return tried > 0 ? AC__JWS_BAD : AC__JWS_UNKNOWN_KEY;
}
