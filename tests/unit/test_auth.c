/* Unit tests for src/api/auth.c: HS256 token verification, constant-time secret comparison
 * and the base64url decoder. Tokens are minted here with OpenSSL HMAC and a local encoder,
 * so these tests do not depend on any other JWT implementation. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "api/auth.h"

#define NOW 1700000000LL
#define SECRET "correct horse battery staple"
#define OTHER_SECRET "correct horse battery stapler"
#define HS256_HEADER "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"
#define TOK_MAX 16384
#define SIG_LEN 32

struct tok {
    char s[TOK_MAX];
    size_t len;
};

/* Unpadded base64url; NUL-terminates out and returns the length written. */
static size_t b64url_encode(const uint8_t *in, size_t len, char *out)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    size_t i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = alphabet[(v >> 18) & 63];
        out[o++] = alphabet[(v >> 12) & 63];
        out[o++] = alphabet[(v >> 6) & 63];
        out[o++] = alphabet[v & 63];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = alphabet[(v >> 18) & 63];
        out[o++] = alphabet[(v >> 12) & 63];
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = alphabet[(v >> 18) & 63];
        out[o++] = alphabet[(v >> 12) & 63];
        out[o++] = alphabet[(v >> 6) & 63];
    }
    out[o] = '\0';
    return o;
}

/* Length of the unpadded encoding of n bytes. */
static size_t b64url_len(size_t n)
{
    return n / 3 * 4 + (n % 3 ? n % 3 + 1 : 0);
}

static void append_part(struct tok *t, const char *json, size_t json_len)
{
    assert_true(t->len + b64url_len(json_len) + 1 < TOK_MAX);
    t->len += b64url_encode((const uint8_t *)json, json_len, t->s + t->len);
}

static void append_char(struct tok *t, char c)
{
    assert_true(t->len + 1 < TOK_MAX);
    t->s[t->len++] = c;
    t->s[t->len] = '\0';
}

/* "b64(header).b64(payload)", the signing input, with no signature part yet. */
static void build_unsigned(struct tok *t, const char *header, const char *payload)
{
    t->len = 0;
    append_part(t, header, strlen(header));
    append_char(t, '.');
    append_part(t, payload, strlen(payload));
}

static void hmac_sha256(const char *secret, const char *data, size_t len, uint8_t *mac)
{
    unsigned int mac_len = 0;
    assert_non_null(HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)data,
                         len, mac, &mac_len));
    assert_int_equal(mac_len, SIG_LEN);
}

static void append_sig(struct tok *t, const uint8_t *sig, size_t len)
{
    append_char(t, '.');
    assert_true(t->len + b64url_len(len) + 1 < TOK_MAX);
    t->len += b64url_encode(sig, len, t->s + t->len);
}

static void build(struct tok *t, const char *header, const char *payload, const char *secret)
{
    build_unsigned(t, header, payload);
    uint8_t mac[SIG_LEN];
    hmac_sha256(secret, t->s, t->len, mac);
    append_sig(t, mac, sizeof(mac));
}

static void build_claims(struct tok *t, const char *payload)
{
    build(t, HS256_HEADER, payload, SECRET);
}

static void payload_with_exp(char *buf, size_t size, const char *sub, long long exp)
{
    int n = snprintf(buf, size, "{\"sub\":\"%s\",\"exp\":%lld}", sub, exp);
    assert_true(n > 0 && (size_t)n < size);
}

static int verify(const struct tok *t, const char *secret, char **sub, const char **reason)
{
    return ac__jwt_verify(t->s, t->len, (const uint8_t *)secret, strlen(secret), NOW, sub, reason);
}

static void assert_accepted(const struct tok *t, const char *want_sub)
{
    char *sub = NULL;
    const char *reason = NULL;
    assert_int_equal(verify(t, SECRET, &sub, &reason), 0);
    assert_non_null(sub);
    assert_string_equal(sub, want_sub);
    free(sub);
}

/* want == NULL accepts any reason; either way *sub must come back NULL. */
static void assert_refused_with(const struct tok *t, const char *secret, const char *want)
{
    char dummy = 0;
    char *sub = &dummy;
    const char *reason = NULL;
    assert_int_equal(verify(t, secret, &sub, &reason), -1);
    assert_null(sub);
    assert_non_null(reason);
    if (want != NULL)
        assert_string_equal(reason, want);
}

static void assert_refused(const struct tok *t, const char *want)
{
    assert_refused_with(t, SECRET, want);
}

/* ---- ac__jwt_verify: signature ---- */

static void test_valid_token_returns_sub(void **state)
{
    struct tok t;
    build_claims(&t, "{\"sub\":\"u42\",\"exp\":1700000060}");
    assert_accepted(&t, "u42");
}

static void test_flipped_signature_bit_is_refused(void **state)
{
    struct tok t;
    build_unsigned(&t, HS256_HEADER, "{\"sub\":\"u42\",\"exp\":1700000060}");
    uint8_t mac[SIG_LEN];
    hmac_sha256(SECRET, t.s, t.len, mac);
    mac[0] ^= 0x01;
    append_sig(&t, mac, sizeof(mac));
    assert_refused(&t, "token: bad signature");
}

static void test_signature_from_other_secret_is_refused(void **state)
{
    struct tok t;
    build(&t, HS256_HEADER, "{\"sub\":\"u42\",\"exp\":1700000060}", OTHER_SECRET);
    assert_refused(&t, "token: bad signature");
}

static void test_tampered_payload_is_refused(void **state)
{
    struct tok good;
    build_claims(&good, "{\"sub\":\"u42\",\"exp\":1700000060}");
    const char *old_sig = strrchr(good.s, '.') + 1;

    struct tok forged;
    build_unsigned(&forged, HS256_HEADER, "{\"sub\":\"admin\",\"exp\":1700000060}");
    append_char(&forged, '.');
    for (const char *c = old_sig; *c != '\0'; c++)
        append_char(&forged, *c);
    assert_refused(&forged, "token: bad signature");
}

static void test_truncated_signature_is_refused(void **state)
{
    struct tok t;
    build_unsigned(&t, HS256_HEADER, "{\"sub\":\"u42\",\"exp\":1700000060}");
    uint8_t mac[SIG_LEN];
    hmac_sha256(SECRET, t.s, t.len, mac);
    append_sig(&t, mac, SIG_LEN - 1);
    assert_refused(&t, "token: bad signature");
}

static void test_empty_secret_is_refused(void **state)
{
    struct tok t;
    build_unsigned(&t, HS256_HEADER, "{\"sub\":\"u42\",\"exp\":1700000060}");
    uint8_t mac[SIG_LEN];
    unsigned int mac_len = 0;
    /* A real HMAC under the empty key: it must still not verify. */
    assert_non_null(HMAC(EVP_sha256(), "", 0, (const unsigned char *)t.s, t.len, mac, &mac_len));
    append_sig(&t, mac, sizeof(mac));
    assert_refused_with(&t, "", "token: bad signature");
}

static void test_padded_signature_is_accepted(void **state)
{
    struct tok t;
    build_claims(&t, "{\"sub\":\"u42\",\"exp\":1700000060}");
    append_char(&t, '=');
    assert_accepted(&t, "u42");
}

/* ---- ac__jwt_verify: header ---- */

static void test_alg_none_with_empty_signature_is_refused(void **state)
{
    struct tok t;
    build_unsigned(&t, "{\"alg\":\"none\",\"typ\":\"JWT\"}",
                   "{\"sub\":\"u42\",\"exp\":1700000060}");
    append_char(&t, '.');
    assert_refused(&t, "token: alg must be HS256");
}

static void test_alg_hs512_is_refused(void **state)
{
    struct tok t;
    build(&t, "{\"alg\":\"HS512\"}", "{\"sub\":\"u42\",\"exp\":1700000060}", SECRET);
    assert_refused(&t, "token: alg must be HS256");
}

static void test_alg_lowercase_is_refused(void **state)
{
    struct tok t;
    build(&t, "{\"alg\":\"hs256\"}", "{\"sub\":\"u42\",\"exp\":1700000060}", SECRET);
    assert_refused(&t, "token: alg must be HS256");
}

static void test_missing_alg_is_refused(void **state)
{
    struct tok t;
    build(&t, "{\"typ\":\"JWT\"}", "{\"sub\":\"u42\",\"exp\":1700000060}", SECRET);
    assert_refused(&t, "token: alg must be HS256");
}

static void test_non_string_alg_is_refused(void **state)
{
    struct tok t;
    build(&t, "{\"alg\":256}", "{\"sub\":\"u42\",\"exp\":1700000060}", SECRET);
    assert_refused(&t, "token: alg must be HS256");
}

static void test_duplicate_alg_is_malformed(void **state)
{
    struct tok t;
    build(&t, "{\"alg\":\"none\",\"alg\":\"HS256\"}", "{\"sub\":\"u42\",\"exp\":1700000060}",
          SECRET);
    assert_refused(&t, "token: malformed");
}

static void test_header_not_json_is_malformed(void **state)
{
    struct tok t;
    build(&t, "alg=HS256", "{\"sub\":\"u42\",\"exp\":1700000060}", SECRET);
    assert_refused(&t, "token: malformed");
}

static void test_header_json_array_is_malformed(void **state)
{
    struct tok t;
    build(&t, "[\"HS256\"]", "{\"sub\":\"u42\",\"exp\":1700000060}", SECRET);
    assert_refused(&t, "token: malformed");
}

/* ---- ac__jwt_verify: shape ---- */

static void test_two_parts_is_malformed(void **state)
{
    struct tok t;
    build_unsigned(&t, HS256_HEADER, "{\"sub\":\"u42\",\"exp\":1700000060}");
    assert_refused(&t, "token: malformed");
}

static void test_four_parts_is_malformed(void **state)
{
    struct tok t;
    build_claims(&t, "{\"sub\":\"u42\",\"exp\":1700000060}");
    append_char(&t, '.');
    append_char(&t, 'A');
    append_char(&t, 'A');
    assert_refused(&t, "token: malformed");
}

static void test_empty_token_is_malformed(void **state)
{
    struct tok t = {.len = 0};
    assert_refused(&t, "token: malformed");
}

static void test_invalid_base64_in_payload_is_malformed(void **state)
{
    struct tok t;
    /* Re-signed after the edit, so the character and not the signature is at fault. */
    build_unsigned(&t, HS256_HEADER, "{\"sub\":\"u42\",\"exp\":1700000060}");
    strchr(t.s, '.')[1] = '*';
    uint8_t mac[SIG_LEN];
    hmac_sha256(SECRET, t.s, t.len, mac);
    append_sig(&t, mac, sizeof(mac));
    assert_refused(&t, "token: malformed");
}

static void test_payload_not_object_is_malformed(void **state)
{
    struct tok t;
    build_claims(&t, "[\"u42\",1700000060]");
    assert_refused(&t, "token: malformed");
}

/* Builds a valid token of exactly `want` bytes by sizing a filler claim and the header. */
static void build_sized(struct tok *t, size_t want)
{
    static const char head[] = "{\"sub\":\"u42\",\"exp\":1700000060,\"pad\":\"";
    static const char tail[] = "\"}";
    static char payload[TOK_MAX];
    size_t payload_base = strlen(head) + strlen(tail);
    for (int spaces = 0; spaces < 4; spaces++) {
        char header[64];
        snprintf(header, sizeof(header), "{\"alg\":\"HS256\",%*s\"typ\":\"JWT\"}", spaces, "");
        size_t hlen = strlen(header);
        for (size_t k = 0; payload_base + k < sizeof(payload); k++) {
            size_t total =
                b64url_len(hlen) + 1 + b64url_len(payload_base + k) + 1 + b64url_len(SIG_LEN);
            if (total != want)
                continue;
            memcpy(payload, head, strlen(head));
            memset(payload + strlen(head), 'x', k);
            memcpy(payload + strlen(head) + k, tail, sizeof(tail));
            build(t, header, payload, SECRET);
            assert_int_equal(t->len, want);
            return;
        }
    }
    fail_msg("no token of %zu bytes", want);
}

static void test_token_at_8_kib_is_accepted(void **state)
{
    struct tok t;
    build_sized(&t, 8192);
    assert_accepted(&t, "u42");
}

static void test_token_over_8_kib_is_malformed(void **state)
{
    struct tok t;
    build_sized(&t, 8193);
    assert_refused(&t, "token: malformed");
}

/* ---- ac__jwt_verify: time claims ---- */

static void test_expired_token_is_refused(void **state)
{
    struct tok t;
    build_claims(&t, "{\"sub\":\"u42\",\"exp\":1699999999}");
    assert_refused(&t, "token: expired");
}

static void test_token_expiring_now_is_refused(void **state)
{
    char payload[128];
    payload_with_exp(payload, sizeof(payload), "u42", NOW);
    struct tok t;
    build_claims(&t, payload);
    assert_refused(&t, "token: expired");
}

static void test_real_exp_is_accepted(void **state)
{
    struct tok t;
    build_claims(&t, "{\"sub\":\"u42\",\"exp\":1700000000.5}");
    assert_accepted(&t, "u42");
}

static void test_missing_exp_is_refused(void **state)
{
    struct tok t;
    build_claims(&t, "{\"sub\":\"u42\"}");
    assert_refused(&t, "token: exp required");
}

static void test_string_exp_is_refused(void **state)
{
    struct tok t;
    build_claims(&t, "{\"sub\":\"u42\",\"exp\":\"1700000060\"}");
    assert_refused(&t, "token: exp required");
}

static void test_nbf_in_future_is_refused(void **state)
{
    struct tok t;
    build_claims(&t, "{\"sub\":\"u42\",\"exp\":1700000060,\"nbf\":1700000001}");
    assert_refused(&t, "token: not yet valid");
}

static void test_nbf_now_is_accepted(void **state)
{
    struct tok t;
    build_claims(&t, "{\"sub\":\"u42\",\"exp\":1700000060,\"nbf\":1700000000}");
    assert_accepted(&t, "u42");
}

static void test_non_numeric_nbf_is_refused(void **state)
{
    struct tok t;
    build_claims(&t, "{\"sub\":\"u42\",\"exp\":1700000060,\"nbf\":null}");
    assert_refused(&t, "token: nbf must be a number");
}

/* ---- ac__jwt_verify: sub ---- */

static void test_missing_sub_is_refused(void **state)
{
    struct tok t;
    build_claims(&t, "{\"exp\":1700000060}");
    assert_refused(&t, "token: sub required");
}

static void test_empty_sub_is_refused(void **state)
{
    struct tok t;
    build_claims(&t, "{\"sub\":\"\",\"exp\":1700000060}");
    assert_refused(&t, "token: sub required");
}

static void test_non_string_sub_is_refused(void **state)
{
    struct tok t;
    build_claims(&t, "{\"sub\":42,\"exp\":1700000060}");
    assert_refused(&t, "token: sub required");
}

static void test_sub_of_256_bytes_is_accepted(void **state)
{
    char sub[257];
    memset(sub, 'u', 256);
    sub[256] = '\0';
    char payload[512];
    payload_with_exp(payload, sizeof(payload), sub, NOW + 60);
    struct tok t;
    build_claims(&t, payload);
    assert_accepted(&t, sub);
}

static void test_sub_of_257_bytes_is_refused(void **state)
{
    char sub[258];
    memset(sub, 'u', 257);
    sub[257] = '\0';
    char payload[512];
    payload_with_exp(payload, sizeof(payload), sub, NOW + 60);
    struct tok t;
    build_claims(&t, payload);
    assert_refused(&t, "token: sub longer than 256 bytes");
}

static void test_sub_with_newline_is_refused(void **state)
{
    struct tok t;
    build_claims(&t, "{\"sub\":\"u42\\nuser=admin\",\"exp\":1700000060}");
    assert_refused(&t, "token: sub has control characters");
}

static void test_sub_with_nul_is_refused(void **state)
{
    struct tok t;
    build_claims(&t, "{\"sub\":\"u42\\u0000admin\",\"exp\":1700000060}");
    assert_refused(&t, NULL);
}

/* ---- ac__secret_equal ---- */

static void test_secret_equal_same_bytes(void **state)
{
    assert_int_equal(ac__secret_equal("s3cret", 6, "s3cret", 6), 1);
}

static void test_secret_equal_first_byte_differs(void **state)
{
    assert_int_equal(ac__secret_equal("s3cret", 6, "t3cret", 6), 0);
}

static void test_secret_equal_last_byte_differs(void **state)
{
    assert_int_equal(ac__secret_equal("s3cret", 6, "s3creu", 6), 0);
}

static void test_secret_equal_prefix_differs_in_length(void **state)
{
    assert_int_equal(ac__secret_equal("s3cret", 6, "s3cre", 5), 0);
    assert_int_equal(ac__secret_equal("s3cre", 5, "s3cret", 6), 0);
}

static void test_secret_equal_both_empty(void **state)
{
    assert_int_equal(ac__secret_equal("", 0, "", 0), 1);
    assert_int_equal(ac__secret_equal(NULL, 0, NULL, 0), 1);
}

static void test_secret_equal_one_empty(void **state)
{
    assert_int_equal(ac__secret_equal("", 0, "s3cret", 6), 0);
    assert_int_equal(ac__secret_equal("s3cret", 6, NULL, 0), 0);
}

static void test_secret_equal_embedded_nul(void **state)
{
    assert_int_equal(ac__secret_equal("a\0b", 3, "a\0c", 3), 0);
    assert_int_equal(ac__secret_equal("a\0b", 3, "a\0b", 3), 1);
}

/* ---- ac__base64url_decode ---- */

static void assert_decodes(const char *in, const char *want, size_t want_len)
{
    uint8_t out[64];
    size_t in_len = strlen(in);
    assert_true(in_len * 3 / 4 + 3 <= sizeof(out));
    long n = ac__base64url_decode(in, in_len, out);
    assert_int_equal(n, (long)want_len);
    assert_memory_equal(out, want, want_len);
}

static void assert_rejected(const char *in)
{
    uint8_t out[64];
    assert_int_equal(ac__base64url_decode(in, strlen(in), out), -1);
}

static void test_b64_rfc4648_vectors_unpadded(void **state)
{
    assert_decodes("", "", 0);
    assert_decodes("Zg", "f", 1);
    assert_decodes("Zm8", "fo", 2);
    assert_decodes("Zm9v", "foo", 3);
    assert_decodes("Zm9vYg", "foob", 4);
    assert_decodes("Zm9vYmE", "fooba", 5);
    assert_decodes("Zm9vYmFy", "foobar", 6);
}

static void test_b64_rfc4648_vectors_padded(void **state)
{
    assert_decodes("Zg==", "f", 1);
    assert_decodes("Zm8=", "fo", 2);
    assert_decodes("Zm9vYg==", "foob", 4);
    assert_decodes("Zm9vYmE=", "fooba", 5);
}

static void test_b64_url_alphabet(void **state)
{
    /* 0xfb 0xff is "+/8" in the standard alphabet. */
    assert_decodes("-_8", "\xfb\xff", 2);
    assert_decodes("-_-_", "\xfb\xff\xbf", 3);
}

static void test_b64_standard_alphabet_rejected(void **state)
{
    assert_rejected("+/8");
    assert_rejected("Zm9v+A");
}

static void test_b64_invalid_characters_rejected(void **state)
{
    assert_rejected("Zm9!");
    assert_rejected("Zm 9");
    assert_rejected("Zm9\n");
    uint8_t out[8];
    assert_int_equal(ac__base64url_decode("Zm\0v", 4, out), -1);
}

static void test_b64_length_mod_4_of_1_rejected(void **state)
{
    assert_rejected("Z");
    assert_rejected("Zm9vY");
}

static void test_b64_padding_only_at_end(void **state)
{
    assert_rejected("Zg==Zg==");
    assert_rejected("Z=g=");
    assert_rejected("=");
    assert_rejected("====");
    assert_rejected("Zm9vY===");
}

static void test_b64_padding_must_complete_quantum(void **state)
{
    assert_rejected("Zg=");
    assert_rejected("Zm8==");
    assert_rejected("Zm9v=");
}

static void test_b64_nonzero_trailing_bits_rejected(void **state)
{
    /* "Zh" and "Zm9" carry bits past the last whole byte; only one spelling is accepted. */
    assert_rejected("Zh");
    assert_rejected("Zm9");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_token_returns_sub),
        cmocka_unit_test(test_flipped_signature_bit_is_refused),
        cmocka_unit_test(test_signature_from_other_secret_is_refused),
        cmocka_unit_test(test_tampered_payload_is_refused),
        cmocka_unit_test(test_truncated_signature_is_refused),
        cmocka_unit_test(test_empty_secret_is_refused),
        cmocka_unit_test(test_padded_signature_is_accepted),
        cmocka_unit_test(test_alg_none_with_empty_signature_is_refused),
        cmocka_unit_test(test_alg_hs512_is_refused),
        cmocka_unit_test(test_alg_lowercase_is_refused),
        cmocka_unit_test(test_missing_alg_is_refused),
        cmocka_unit_test(test_non_string_alg_is_refused),
        cmocka_unit_test(test_duplicate_alg_is_malformed),
        cmocka_unit_test(test_header_not_json_is_malformed),
        cmocka_unit_test(test_header_json_array_is_malformed),
        cmocka_unit_test(test_two_parts_is_malformed),
        cmocka_unit_test(test_four_parts_is_malformed),
        cmocka_unit_test(test_empty_token_is_malformed),
        cmocka_unit_test(test_invalid_base64_in_payload_is_malformed),
        cmocka_unit_test(test_payload_not_object_is_malformed),
        cmocka_unit_test(test_token_at_8_kib_is_accepted),
        cmocka_unit_test(test_token_over_8_kib_is_malformed),
        cmocka_unit_test(test_expired_token_is_refused),
        cmocka_unit_test(test_token_expiring_now_is_refused),
        cmocka_unit_test(test_real_exp_is_accepted),
        cmocka_unit_test(test_missing_exp_is_refused),
        cmocka_unit_test(test_string_exp_is_refused),
        cmocka_unit_test(test_nbf_in_future_is_refused),
        cmocka_unit_test(test_nbf_now_is_accepted),
        cmocka_unit_test(test_non_numeric_nbf_is_refused),
        cmocka_unit_test(test_missing_sub_is_refused),
        cmocka_unit_test(test_empty_sub_is_refused),
        cmocka_unit_test(test_non_string_sub_is_refused),
        cmocka_unit_test(test_sub_of_256_bytes_is_accepted),
        cmocka_unit_test(test_sub_of_257_bytes_is_refused),
        cmocka_unit_test(test_sub_with_newline_is_refused),
        cmocka_unit_test(test_sub_with_nul_is_refused),
        cmocka_unit_test(test_secret_equal_same_bytes),
        cmocka_unit_test(test_secret_equal_first_byte_differs),
        cmocka_unit_test(test_secret_equal_last_byte_differs),
        cmocka_unit_test(test_secret_equal_prefix_differs_in_length),
        cmocka_unit_test(test_secret_equal_both_empty),
        cmocka_unit_test(test_secret_equal_one_empty),
        cmocka_unit_test(test_secret_equal_embedded_nul),
        cmocka_unit_test(test_b64_rfc4648_vectors_unpadded),
        cmocka_unit_test(test_b64_rfc4648_vectors_padded),
        cmocka_unit_test(test_b64_url_alphabet),
        cmocka_unit_test(test_b64_standard_alphabet_rejected),
        cmocka_unit_test(test_b64_invalid_characters_rejected),
        cmocka_unit_test(test_b64_length_mod_4_of_1_rejected),
        cmocka_unit_test(test_b64_padding_only_at_end),
        cmocka_unit_test(test_b64_padding_must_complete_quantum),
        cmocka_unit_test(test_b64_nonzero_trailing_bits_rejected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
