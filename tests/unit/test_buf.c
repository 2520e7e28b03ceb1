/* Unit tests for src/core/buf.c: reference-counted frame buffers and the growable byte
 * string with its JSON string escaper. Leaks and double frees are caught by running the
 * binary under ASan (make asan). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "agentcast.h"
#include "core/buf.h"

/* ---- ac__buf_t ---- */

static void test_buf_new_has_one_ref_and_len(void **st)
{
    ac__buf_t *b = ac__buf_new(10);
    assert_non_null(b);
    assert_int_equal(b->refs, 1);
    assert_int_equal(b->len, 10);
    assert_int_equal(b->seq, 0);
    memset(b->data, 'x', 10); /* all 10 bytes are writable (ASan checks) */
    ac__buf_unref(b);
}

static void test_buf_new_zero_len_is_valid(void **st)
{
    ac__buf_t *b = ac__buf_new(0);
    assert_non_null(b);
    assert_int_equal(b->refs, 1);
    assert_int_equal(b->len, 0);
    ac__buf_unref(b);
}

static void test_buf_new_over_uint32_is_refused(void **st)
{
    assert_null(ac__buf_new((size_t)UINT32_MAX + 1));
}

static void test_buf_ref_returns_same_buffer_and_counts(void **st)
{
    ac__buf_t *b = ac__buf_new(4);
    assert_ptr_equal(ac__buf_ref(b), b);
    assert_int_equal(b->refs, 2);
    assert_ptr_equal(ac__buf_ref(b), b);
    assert_int_equal(b->refs, 3);
    ac__buf_unref(b);
    ac__buf_unref(b);
    ac__buf_unref(b);
}

static void test_buf_unref_keeps_buffer_until_last_ref(void **st)
{
    ac__buf_t *b = ac__buf_new(5);
    memcpy(b->data, "hello", 5);
    ac__buf_ref(b);
    ac__buf_unref(b);
    /* Still alive: reading it is valid (ASan would flag a use after free). */
    assert_int_equal(b->refs, 1);
    assert_memory_equal(b->data, "hello", 5);
    ac__buf_unref(b); /* the last: freed (ASan flags a leak otherwise) */
}

/* ---- ac__sbuf_t ---- */

static void test_sbuf_append_to_empty_allocates_256(void **st)
{
    ac__sbuf_t s = {0};
    assert_int_equal(ac__sbuf_append(&s, "abc", 3), 0);
    assert_int_equal(s.len, 3);
    assert_int_equal(s.cap, 256);
    assert_memory_equal(s.p, "abc", 3);
    ac__sbuf_dispose(&s);
}

static void test_sbuf_append_grows_by_doubling_and_keeps_bytes(void **st)
{
    ac__sbuf_t s = {0};
    char chunk[100];
    for (int i = 0; i < 10; i++) {
        memset(chunk, 'a' + i, sizeof(chunk));
        assert_int_equal(ac__sbuf_append(&s, chunk, sizeof(chunk)), 0);
    }
    assert_int_equal(s.len, 1000);
    assert_int_equal(s.cap, 1024);
    for (int i = 0; i < 10; i++) {
        for (int j = 0; j < 100; j++)
            assert_int_equal(s.p[i * 100 + j], 'a' + i);
    }
    ac__sbuf_dispose(&s);
}

static void test_sbuf_append_large_jumps_to_fitting_power_of_two(void **st)
{
    ac__sbuf_t s = {0};
    char big[5000];
    memset(big, 'z', sizeof(big));
    assert_int_equal(ac__sbuf_append(&s, big, sizeof(big)), 0);
    assert_int_equal(s.len, 5000);
    assert_int_equal(s.cap, 8192);
    assert_memory_equal(s.p, big, sizeof(big));
    ac__sbuf_dispose(&s);
}

static void test_sbuf_append_zero_bytes_is_noop(void **st)
{
    ac__sbuf_t s = {0};
    assert_int_equal(ac__sbuf_append(&s, "x", 1), 0);
    assert_int_equal(ac__sbuf_append(&s, "", 0), 0);
    assert_int_equal(s.len, 1);
    ac__sbuf_dispose(&s);
}

static void test_sbuf_reserve_keeps_len_and_gives_room(void **st)
{
    ac__sbuf_t s = {0};
    assert_int_equal(ac__sbuf_append(&s, "ab", 2), 0);
    assert_int_equal(ac__sbuf_reserve(&s, 1000), 0);
    assert_int_equal(s.len, 2);
    assert_int_equal(s.cap, 1024);
    memset(s.p + s.len, 'q', 1000); /* the reserved room is writable (ASan checks) */
    assert_memory_equal(s.p, "ab", 2);
    ac__sbuf_dispose(&s);
}

static void test_sbuf_printf_formats_and_appends(void **st)
{
    ac__sbuf_t s = {0};
    assert_int_equal(ac__sbuf_append(&s, "x=", 2), 0);
    assert_int_equal(ac__sbuf_printf(&s, "%d,%s,%llu", -7, "ok", 18446744073709551615ull), 0);
    const char want[] = "x=-7,ok,18446744073709551615";
    assert_int_equal(s.len, sizeof(want) - 1);
    assert_memory_equal(s.p, want, sizeof(want) - 1);
    ac__sbuf_dispose(&s);
}

static void test_sbuf_printf_grows_past_initial_capacity(void **st)
{
    ac__sbuf_t s = {0};
    char big[700];
    memset(big, 'k', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(ac__sbuf_append(&s, "[", 1), 0);
    assert_int_equal(ac__sbuf_printf(&s, "%s]", big), 0);
    assert_int_equal(s.len, 1 + 699 + 1);
    assert_int_equal(s.cap, 1024);
    assert_int_equal(s.p[0], '[');
    assert_memory_equal(s.p + 1, big, 699);
    assert_int_equal(s.p[700], ']');
    ac__sbuf_dispose(&s);
}

static void test_sbuf_printf_does_not_count_nul(void **st)
{
    ac__sbuf_t s = {0};
    assert_int_equal(ac__sbuf_printf(&s, "ab"), 0);
    assert_int_equal(ac__sbuf_printf(&s, "cd"), 0);
    assert_int_equal(s.len, 4);
    assert_memory_equal(s.p, "abcd", 4);
    ac__sbuf_dispose(&s);
}

static void test_sbuf_printf_empty_result_keeps_len(void **st)
{
    ac__sbuf_t s = {0};
    assert_int_equal(ac__sbuf_printf(&s, "%s", ""), 0);
    assert_int_equal(s.len, 0);
    ac__sbuf_dispose(&s);
}

static void test_sbuf_dispose_resets_fields(void **st)
{
    ac__sbuf_t s = {0};
    assert_int_equal(ac__sbuf_append(&s, "abc", 3), 0);
    ac__sbuf_dispose(&s);
    assert_null(s.p);
    assert_int_equal(s.len, 0);
    assert_int_equal(s.cap, 0);
    ac__sbuf_dispose(&s); /* twice is safe: no double free */
}

/* ---- ac__sbuf_json_str ---- */

static void check_json_str(const char *in, size_t n, const char *want)
{
    ac__sbuf_t s = {0};
    assert_int_equal(ac__sbuf_json_str(&s, in, n), 0);
    assert_int_equal(s.len, strlen(want));
    assert_memory_equal(s.p, want, s.len);
    ac__sbuf_dispose(&s);
}

static void test_json_str_plain_is_quoted(void **st)
{
    check_json_str("hello", 5, "\"hello\"");
}

static void test_json_str_empty_is_two_quotes(void **st)
{
    check_json_str("", 0, "\"\"");
}

static void test_json_str_escapes_quote(void **st)
{
    check_json_str("a\"b", 3, "\"a\\\"b\"");
}

static void test_json_str_escapes_backslash(void **st)
{
    check_json_str("a\\b", 3, "\"a\\\\b\"");
}

static void test_json_str_escapes_newline_as_u000a(void **st)
{
    check_json_str("a\nb", 3, "\"a\\u000ab\"");
}

static void test_json_str_escapes_control_0x01_and_0x1f(void **st)
{
    check_json_str("\x01\x1f", 2, "\"\\u0001\\u001f\"");
}

static void test_json_str_escapes_nul(void **st)
{
    check_json_str("a\0b", 3, "\"a\\u0000b\"");
}

static void test_json_str_passes_utf8_and_del_through(void **st)
{
    check_json_str("\xc3\xa9\xf0\x9f\x98\x80\x7f", 7, "\"\xc3\xa9\xf0\x9f\x98\x80\x7f\"");
}

static void test_json_str_appends_after_existing_bytes(void **st)
{
    ac__sbuf_t s = {0};
    assert_int_equal(ac__sbuf_append(&s, "{\"k\":", 5), 0);
    assert_int_equal(ac__sbuf_json_str(&s, "v", 1), 0);
    assert_int_equal(s.len, 8);
    assert_memory_equal(s.p, "{\"k\":\"v\"", 8);
    ac__sbuf_dispose(&s);
}

static void test_json_str_worst_case_all_control_chars_fits(void **st)
{
    char in[300];
    memset(in, 0x02, sizeof(in));
    ac__sbuf_t s = {0};
    assert_int_equal(ac__sbuf_json_str(&s, in, sizeof(in)), 0);
    assert_int_equal(s.len, 300 * 6 + 2);
    assert_memory_equal(s.p + 1, "\\u0002", 6);
    assert_memory_equal(s.p + 1 + 299 * 6, "\\u0002\"", 7);
    ac__sbuf_dispose(&s);
}

static void test_json_str_roundtrips_through_jansson(void **st)
{
    /* Every byte 0x00..0x7f plus multi-byte UTF-8. */
    char in[128 + 6];
    for (int i = 0; i < 128; i++)
        in[i] = (char)i;
    memcpy(in + 128, "\xc3\xa9\xe2\x82\xac", 5);
    in[133] = '"';
    ac__sbuf_t s = {0};
    assert_int_equal(ac__sbuf_json_str(&s, in, sizeof(in)), 0);

    json_error_t err;
    json_t *v = json_loadb(s.p, s.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    assert_non_null(v);
    assert_true(json_is_string(v));
    assert_int_equal(json_string_length(v), sizeof(in));
    assert_memory_equal(json_string_value(v), in, sizeof(in));
    json_decref(v);
    ac__sbuf_dispose(&s);
}

/* ---- ac__json_plain_prefix: word-at-a-time against a byte-at-a-time reference ---- */

static size_t plain_ref(const unsigned char *p, size_t n, int ascii)
{
    size_t i = 0;
    while (i < n && p[i] != '"' && p[i] != '\\' && p[i] >= 0x20 && !(ascii && p[i] >= 0x80))
        i++;
    return i;
}

static void test_plain_prefix_matches_bytewise_reference(void **st)
{
    /* Every special byte, and the bytes around each boundary, at every position of strings
     * of every length up to 40, in both modes. */
    static const unsigned char special[] = {'"',  '\\',        0x00,        0x1f, 0x20,
                                            0x21, 0x7f,        0x80,        0xff, 0x5b,
                                            0x5d, 0x22 ^ 0x80, 0x5c ^ 0x80, 0x01, 0xa2};
    unsigned char buf[48];

    for (size_t n = 0; n <= 40; n++) {
        for (size_t pos = 0; pos <= n; pos++) {
            for (size_t k = 0; k < sizeof(special); k++) {
                for (size_t i = 0; i < n; i++)
                    buf[i] = (unsigned char)('a' + (i * 7) % 26);
                if (pos < n)
                    buf[pos] = special[k];
                for (int ascii = 0; ascii <= 1; ascii++)
                    assert_int_equal(ac__json_plain_prefix((const char *)buf, n, ascii),
                                     plain_ref(buf, n, ascii));
            }
        }
    }
}

static void test_plain_prefix_pseudorandom_bytes(void **st)
{
    uint32_t x = 2463534242u;
    unsigned char buf[64];

    for (int round = 0; round < 20000; round++) {
        size_t n = (size_t)(round % 64);
        for (size_t i = 0; i < n; i++) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            /* mostly plain ASCII, sometimes anything */
            buf[i] = (unsigned char)((x & 0xf00) ? 0x23 + (x % 0x58) : (x >> 16));
        }
        for (int ascii = 0; ascii <= 1; ascii++)
            assert_int_equal(ac__json_plain_prefix((const char *)buf, n, ascii),
                             plain_ref(buf, n, ascii));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buf_new_has_one_ref_and_len),
        cmocka_unit_test(test_buf_new_zero_len_is_valid),
        cmocka_unit_test(test_buf_new_over_uint32_is_refused),
        cmocka_unit_test(test_buf_ref_returns_same_buffer_and_counts),
        cmocka_unit_test(test_buf_unref_keeps_buffer_until_last_ref),
        cmocka_unit_test(test_sbuf_append_to_empty_allocates_256),
        cmocka_unit_test(test_sbuf_append_grows_by_doubling_and_keeps_bytes),
        cmocka_unit_test(test_sbuf_append_large_jumps_to_fitting_power_of_two),
        cmocka_unit_test(test_sbuf_append_zero_bytes_is_noop),
        cmocka_unit_test(test_sbuf_reserve_keeps_len_and_gives_room),
        cmocka_unit_test(test_sbuf_printf_formats_and_appends),
        cmocka_unit_test(test_sbuf_printf_grows_past_initial_capacity),
        cmocka_unit_test(test_sbuf_printf_does_not_count_nul),
        cmocka_unit_test(test_sbuf_printf_empty_result_keeps_len),
        cmocka_unit_test(test_sbuf_dispose_resets_fields),
        cmocka_unit_test(test_json_str_plain_is_quoted),
        cmocka_unit_test(test_json_str_empty_is_two_quotes),
        cmocka_unit_test(test_json_str_escapes_quote),
        cmocka_unit_test(test_json_str_escapes_backslash),
        cmocka_unit_test(test_json_str_escapes_newline_as_u000a),
        cmocka_unit_test(test_json_str_escapes_control_0x01_and_0x1f),
        cmocka_unit_test(test_json_str_escapes_nul),
        cmocka_unit_test(test_json_str_passes_utf8_and_del_through),
        cmocka_unit_test(test_json_str_appends_after_existing_bytes),
        cmocka_unit_test(test_json_str_worst_case_all_control_chars_fits),
        cmocka_unit_test(test_json_str_roundtrips_through_jansson),
        cmocka_unit_test(test_plain_prefix_matches_bytewise_reference),
        cmocka_unit_test(test_plain_prefix_pseudorandom_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
