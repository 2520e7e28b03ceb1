/* Unit tests for src/core/jscan.c: the kinds and spans of accepted values, the ws and esc
 * flags, what is rejected (grammar, numbers, UTF-8, escapes, control characters, duplicate
 * and escaped keys), the depth and key limits, ac__jscan_finish and ac__json_compact. Every
 * input is scanned from a block of its exact size, so ASan (make asan) sees any overread. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "core/jscan.h"

/* ---- helpers ---- */

/* What scanning one value of some text gave: ac__jscan_value's answer, the value's kind and
 * where its text is (offsets into the input), the flags after it, then ac__jscan_finish's
 * answer (-1 when the value was not accepted). */
typedef struct scan_s {
    int rc;
    int kind;
    size_t off;
    size_t len;
    unsigned ws;
    unsigned esc;
    unsigned depth;
    int finish;
} scan_t;

static scan_t scan_n(const char *text, size_t len)
{
    scan_t s = {.rc = -1, .finish = -1};
    char *buf = malloc(len ? len : 1);
    const char *start = NULL;
    ac__jscan_t j;

    assert_non_null(buf);
    if (len > 0)
        memcpy(buf, text, len);
    ac__jscan_init(&j, buf, len);
    s.rc = ac__jscan_value(&j, &s.kind, &start);
    if (s.rc == 0) {
        assert_true(start >= buf && start <= j.p && j.p <= buf + len);
        s.off = (size_t)(start - buf);
        s.len = (size_t)(j.p - start);
    }
    s.ws = j.ws;
    s.esc = j.esc;
    s.depth = j.depth;
    if (s.rc == 0)
        s.finish = ac__jscan_finish(&j);
    free(buf);
    return s;
}

/* 1 when the whole text is accepted as one value. */
static int whole_n(const char *text, size_t len)
{
    scan_t s = scan_n(text, len);
    return s.rc == 0 && s.finish == 0;
}

/* 1 when jansson, as the publish path calls it, accepts the text (any value at the top). */
static int jansson_accepts(const char *text, size_t len)
{
    json_error_t err;
    json_t *v =
        json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL | JSON_DECODE_ANY, &err);
    json_decref(v);
    return v != NULL;
}

/* 1 when the whole text is accepted as one value; jansson must then accept it too. */
static int whole(const char *text)
{
    size_t len = strlen(text);

    if (!whole_n(text, len))
        return 0;
    assert_true(jansson_accepts(text, len));
    return 1;
}

#define scan(lit) scan_n(lit, sizeof(lit) - 1)
/* Literals may hold NUL bytes: their length is sizeof - 1. What the scanner accepts jansson
 * must accept too (the contract of jscan.h), so that is checked alongside. */
#define assert_accepted(lit)                                                                       \
    do {                                                                                           \
        assert_true(whole_n(lit, sizeof(lit) - 1));                                                \
        assert_true(jansson_accepts(lit, sizeof(lit) - 1));                                        \
    } while (0)
#define assert_rejected(lit) assert_false(whole_n(lit, sizeof(lit) - 1))

/* Checks the text is accepted whole, as a value of `kind` whose text is `span` at `off`. */
#define assert_value(lit, k, o, span)                                                              \
    do {                                                                                           \
        scan_t s_ = scan(lit);                                                                     \
        assert_int_equal(s_.rc, 0);                                                                \
        assert_int_equal(s_.finish, 0);                                                            \
        assert_int_equal(s_.kind, (k));                                                            \
        assert_int_equal(s_.off, (o));                                                             \
        assert_int_equal(s_.len, sizeof(span) - 1);                                                \
        assert_memory_equal((lit) + s_.off, span, sizeof(span) - 1);                               \
        assert_true(jansson_accepts(lit, sizeof(lit) - 1));                                        \
    } while (0)

/* `n` containers nested, opened by `open` and closed by `close` around `inner`: in a block
 * the caller frees. */
static char *nest(unsigned n, const char *open, const char *inner, const char *close)
{
    size_t lo = strlen(open), li = strlen(inner), lc = strlen(close);
    char *t = malloc(n * (lo + lc) + li + 1), *p = t;

    assert_non_null(t);
    for (unsigned i = 0; i < n; i++, p += lo)
        memcpy(p, open, lo);
    memcpy(p, inner, li);
    p += li;
    for (unsigned i = 0; i < n; i++, p += lc)
        memcpy(p, close, lc);
    *p = '\0';
    return t;
}

/* An object of `n` members "k0":0, "k1":1, ...: in a block the caller frees. */
static char *object_of(unsigned n)
{
    char *t = malloc(16 * (size_t)n + 3), *p = t;

    assert_non_null(t);
    *p++ = '{';
    for (unsigned i = 0; i < n; i++)
        p += sprintf(p, "%s\"k%u\":%u", i ? "," : "", i, i);
    *p++ = '}';
    *p = '\0';
    return t;
}

/* ac__json_compact() of `in` (which the scanner must accept), into a block of its size. */
static void assert_compacts_to(const char *in, const char *want)
{
    size_t len = strlen(in);
    char *out = malloc(len ? len : 1);

    assert_non_null(out);
    assert_true(whole(in));
    size_t n = ac__json_compact(out, in, len);
    assert_int_equal(n, strlen(want));
    assert_memory_equal(out, want, n);
    free(out);
}

/* ---- kinds and spans ---- */

static void test_value_object_kind_and_span(void **st)
{
    assert_value("{\"a\":1}", AC__J_OBJECT, 0, "{\"a\":1}");
}

static void test_value_empty_object(void **st)
{
    assert_value("{}", AC__J_OBJECT, 0, "{}");
}

static void test_value_array_kind_and_span(void **st)
{
    assert_value("[1,\"x\",null]", AC__J_ARRAY, 0, "[1,\"x\",null]");
}

static void test_value_empty_array(void **st)
{
    assert_value("[]", AC__J_ARRAY, 0, "[]");
}

static void test_value_string_span_includes_quotes(void **st)
{
    assert_value("\"abc\"", AC__J_STRING, 0, "\"abc\"");
}

static void test_value_empty_string(void **st)
{
    assert_value("\"\"", AC__J_STRING, 0, "\"\"");
}

static void test_value_integer(void **st)
{
    assert_value("42", AC__J_NUMBER, 0, "42");
}

static void test_value_zero(void **st)
{
    assert_value("0", AC__J_NUMBER, 0, "0");
}

static void test_value_negative_zero(void **st)
{
    assert_value("-0", AC__J_NUMBER, 0, "-0");
}

static void test_value_negative_real(void **st)
{
    assert_value("-12.50", AC__J_NUMBER, 0, "-12.50");
}

static void test_value_real_below_one(void **st)
{
    assert_value("0.001", AC__J_NUMBER, 0, "0.001");
}

static void test_value_true(void **st)
{
    assert_value("true", AC__J_TRUE, 0, "true");
}

static void test_value_false(void **st)
{
    assert_value("false", AC__J_FALSE, 0, "false");
}

static void test_value_null(void **st)
{
    assert_value("null", AC__J_NULL, 0, "null");
}

static void test_value_span_starts_after_leading_whitespace(void **st)
{
    assert_value(" \t\r\n[true]", AC__J_ARRAY, 4, "[true]");
}

static void test_value_span_ends_before_trailing_whitespace(void **st)
{
    assert_value("\"x\" \n", AC__J_STRING, 0, "\"x\"");
}

static void test_value_nested_containers_span_the_whole_value(void **st)
{
    assert_value("{\"a\":[1,{\"b\":null}],\"c\":\"}\"}", AC__J_OBJECT, 0,
                 "{\"a\":[1,{\"b\":null}],\"c\":\"}\"}");
}

static void test_value_stops_at_the_end_of_its_text(void **st)
{
    /* One value, then what follows it is left for the caller. */
    scan_t s = scan("[1,2],3");
    assert_int_equal(s.rc, 0);
    assert_int_equal(s.kind, AC__J_ARRAY);
    assert_int_equal(s.len, 5);
    assert_int_equal(s.finish, -1);

    s = scan("12]");
    assert_int_equal(s.rc, 0);
    assert_int_equal(s.kind, AC__J_NUMBER);
    assert_int_equal(s.len, 2);
}

static void test_value_depth_is_zero_after_a_value(void **st)
{
    scan_t s = scan("[[{\"a\":[]}],{}]");
    assert_int_equal(s.rc, 0);
    assert_int_equal(s.depth, 0);
}

static void test_value_empty_input_rejected(void **st)
{
    assert_int_equal(scan("").rc, -1);
}

static void test_value_whitespace_only_rejected(void **st)
{
    assert_int_equal(scan(" \n\t\r").rc, -1);
}

static void test_value_truncated_literals_rejected(void **st)
{
    assert_rejected("tru");
    assert_rejected("fals");
    assert_rejected("nul");
    assert_rejected("[nul]");
}

static void test_value_misspelled_literals_rejected(void **st)
{
    assert_rejected("True");
    assert_rejected("nulL");
    assert_rejected("fAlse");
    assert_rejected("undefined");
    assert_rejected("NaN");
    assert_rejected("Infinity");
}

static void test_value_literal_followed_by_letters_rejected(void **st)
{
    assert_rejected("truex");
    assert_rejected("[nullnull]");
}

static void test_value_single_quoted_string_rejected(void **st)
{
    assert_rejected("'a'");
}

/* ---- members and elements one by one ---- */

static void test_member_gives_raw_key_and_leaves_j_at_value(void **st)
{
    static const char text[] = "{ \"ab\" : 1 , \"\" :2}";
    ac__jscan_t j;
    ac__jobj_t o;
    const char *key, *start;
    size_t klen;
    int kind;

    ac__jscan_init(&j, text, sizeof(text) - 1);
    assert_int_equal(ac__jscan_peek(&j), '{');
    ac__jscan_object(&j, &o);
    assert_int_equal(ac__jscan_member(&j, &o, &key, &klen), 1);
    assert_int_equal(klen, 2);
    assert_memory_equal(key, "ab", 2);
    assert_int_equal(ac__jscan_value(&j, &kind, &start), 0);
    assert_int_equal(kind, AC__J_NUMBER);
    assert_int_equal(*start, '1');
    assert_int_equal(ac__jscan_member(&j, &o, &key, &klen), 1);
    assert_int_equal(klen, 0);
    assert_int_equal(ac__jscan_value(&j, &kind, &start), 0);
    assert_int_equal(ac__jscan_member(&j, &o, &key, &klen), 0);
    assert_int_equal(o.n, 2);
    assert_int_equal(ac__jscan_finish(&j), 0);
}

static void test_element_walks_an_array(void **st)
{
    static const char text[] = "[ 1 ,\"x\" ]";
    ac__jscan_t j;
    const char *start;
    int first, kind;

    ac__jscan_init(&j, text, sizeof(text) - 1);
    assert_int_equal(ac__jscan_peek(&j), '[');
    ac__jscan_array(&j, &first);
    assert_int_equal(first, 1);
    assert_int_equal(ac__jscan_element(&j, &first), 1);
    assert_int_equal(ac__jscan_value(&j, &kind, &start), 0);
    assert_int_equal(kind, AC__J_NUMBER);
    assert_int_equal(ac__jscan_element(&j, &first), 1);
    assert_int_equal(ac__jscan_value(&j, &kind, &start), 0);
    assert_int_equal(kind, AC__J_STRING);
    assert_int_equal(ac__jscan_element(&j, &first), 0);
    assert_int_equal(ac__jscan_finish(&j), 0);
}

static void test_peek_gives_next_byte_or_minus_one_at_end(void **st)
{
    static const char text[] = "  \xff";
    ac__jscan_t j;

    ac__jscan_init(&j, text, sizeof(text) - 1);
    assert_int_equal(ac__jscan_peek(&j), 0xff);
    assert_ptr_equal(j.p, text + 2);
    j.p++;
    assert_int_equal(ac__jscan_peek(&j), -1);
}

/* ---- the ws flag ---- */

static void test_ws_clear_when_there_is_no_whitespace(void **st)
{
    scan_t s = scan("{\"a\":[1,2,{\"b\":\"c\"}],\"d\":null}");
    assert_int_equal(s.rc, 0);
    assert_int_equal(s.ws, 0);
}

static void test_ws_not_set_by_spaces_inside_strings(void **st)
{
    scan_t s = scan("[\"a b\",\" \"]");
    assert_int_equal(s.rc, 0);
    assert_int_equal(s.ws, 0);
}

static void test_ws_set_by_leading_whitespace(void **st)
{
    scan_t s = scan(" 1");
    assert_int_equal(s.rc, 0);
    assert_int_equal(s.ws, 1);
}

static void test_ws_set_by_whitespace_before_a_colon(void **st)
{
    assert_int_equal(scan("{\"a\" :1}").ws, 1);
}

static void test_ws_set_by_whitespace_after_a_colon(void **st)
{
    assert_int_equal(scan("{\"a\":\t1}").ws, 1);
}

static void test_ws_set_by_whitespace_around_commas(void **st)
{
    assert_int_equal(scan("[1 ,2]").ws, 1);
    assert_int_equal(scan("[1,\n2]").ws, 1);
    assert_int_equal(scan("{\"a\":1,\r\"b\":2}").ws, 1);
}

static void test_ws_set_by_whitespace_before_a_close(void **st)
{
    assert_int_equal(scan("[1 ]").ws, 1);
    assert_int_equal(scan("{\"a\":1\n}").ws, 1);
    assert_int_equal(scan("{ }").ws, 1);
}

static void test_ws_set_by_whitespace_after_an_open(void **st)
{
    assert_int_equal(scan("[ 1]").ws, 1);
    assert_int_equal(scan("{\t\"a\":1}").ws, 1);
}

static void test_ws_form_feed_and_vertical_tab_are_not_whitespace(void **st)
{
    assert_rejected("\f1");
    assert_rejected("[1,\v2]");
    assert_rejected("1\f");
}

/* ---- strings and the esc flag ---- */

static void test_esc_clear_for_plain_string(void **st)
{
    scan_t s = scan("\"plain / text\"");
    assert_int_equal(s.rc, 0);
    assert_int_equal(s.esc, 0);
}

static void test_esc_set_for_simple_escape(void **st)
{
    scan_t s = scan("\"a\\nb\"");
    assert_int_equal(s.rc, 0);
    assert_int_equal(s.esc, 1);
}

static void test_esc_set_for_unicode_escape(void **st)
{
    scan_t s = scan("\"\\u00e9\"");
    assert_int_equal(s.rc, 0);
    assert_int_equal(s.esc, 1);
}

static void test_esc_describes_the_last_string_scanned(void **st)
{
    scan_t s = scan("[\"\\t\",\"x\"]");
    assert_int_equal(s.rc, 0);
    assert_int_equal(s.esc, 0);

    s = scan("[\"x\",\"\\t\"]");
    assert_int_equal(s.rc, 0);
    assert_int_equal(s.esc, 1);
}

static void test_string_all_simple_escapes_accepted(void **st)
{
    assert_accepted("\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"");
}

static void test_string_unknown_escapes_rejected(void **st)
{
    assert_rejected("\"\\a\"");
    assert_rejected("\"\\x41\"");
    assert_rejected("\"\\'\"");
    assert_rejected("\"\\U0041\"");
    assert_rejected("\"\\ \"");
    assert_rejected("\"\\\xc3\xa9\"");
}

static void test_string_escaped_nul_byte_rejected(void **st)
{
    assert_rejected("\"\\\0\"");
}

static void test_string_backslash_at_end_of_input_rejected(void **st)
{
    assert_rejected("\"\\");
    assert_rejected("\"ab\\");
}

static void test_string_unterminated_rejected(void **st)
{
    assert_rejected("\"abc");
    assert_rejected("\"abc\\\"");
    assert_rejected("[\"abc]");
}

static void test_string_del_byte_accepted(void **st)
{
    assert_accepted("\"\x7f\"");
}

static void test_string_raw_control_characters_rejected(void **st)
{
    for (unsigned c = 0; c < 0x20; c++) {
        char text[] = "\"a?b\"";
        text[2] = (char)c;
        if (whole_n(text, sizeof(text) - 1))
            fail_msg("raw control character 0x%02x accepted in a string", c);
    }
}

static void test_string_escaped_control_characters_accepted(void **st)
{
    assert_accepted("\"\\u0001\\u001f\\u0009\"");
}

/* ---- \u escapes ---- */

static void test_unicode_escape_bmp_accepted(void **st)
{
    assert_accepted("\"\\u00e9\\u20AC\\uFFFF\\uabcd\"");
}

static void test_unicode_escape_nul_accepted(void **st)
{
    assert_accepted("\"\\u0000\"");
    assert_accepted("[\"a\\u0000b\"]");
}

static void test_unicode_escape_surrogate_pair_accepted(void **st)
{
    assert_accepted("\"\\uD83D\\uDE00\"");
    assert_accepted("\"\\ud800\\udc00\"");
    assert_accepted("\"\\uDBFF\\uDFFF\"");
}

static void test_unicode_escape_lone_high_surrogate_rejected(void **st)
{
    assert_rejected("\"\\uD83D\"");
    assert_rejected("\"\\uD83Dx\"");
    assert_rejected("\"\\uD83D\\n\"");
    assert_rejected("\"\\uD83D");
}

static void test_unicode_escape_high_surrogate_then_non_low_rejected(void **st)
{
    assert_rejected("\"\\uD83D\\u0041\"");
    assert_rejected("\"\\uD83D\\uD83D\"");
    assert_rejected("\"\\uD83D\\uE000\"");
}

static void test_unicode_escape_lone_low_surrogate_rejected(void **st)
{
    assert_rejected("\"\\uDC00\"");
    assert_rejected("\"\\uDFFF\"");
    assert_rejected("\"\\uDE00\\uD83D\"");
}

static void test_unicode_escape_bad_hex_rejected(void **st)
{
    assert_rejected("\"\\u12G4\"");
    assert_rejected("\"\\u 123\"");
    assert_rejected("\"\\u-123\"");
    assert_rejected("\"\\uD83D\\uDE0g\"");
}

static void test_unicode_escape_short_rejected(void **st)
{
    assert_rejected("\"\\u12\"");
    assert_rejected("\"\\u123\"");
    assert_rejected("\"\\u12");
    assert_rejected("\"\\uD83D\\uDE0\"");
}

/* ---- UTF-8 ---- */

static void test_utf8_two_byte_accepted(void **st)
{
    assert_accepted("\"\xc3\xa9\"");
    assert_accepted("\"\xc2\x80\"");
    assert_accepted("\"\xdf\xbf\"");
}

static void test_utf8_three_byte_accepted(void **st)
{
    assert_accepted("\"\xe2\x82\xac\"");
    assert_accepted("\"\xe0\xa0\x80\"");
    assert_accepted("\"\xed\x9f\xbf\"");
    assert_accepted("\"\xee\x80\x80\"");
    assert_accepted("\"\xef\xbf\xbf\"");
}

static void test_utf8_four_byte_accepted(void **st)
{
    assert_accepted("\"\xf0\x9f\x98\x80\"");
    assert_accepted("\"\xf0\x90\x80\x80\"");
    assert_accepted("\"\xf4\x8f\xbf\xbf\"");
}

static void test_utf8_in_keys_accepted(void **st)
{
    assert_accepted("{\"\xc3\xa9t\xc3\xa9\":\"\xe2\x82\xac\"}");
}

static void test_utf8_overlong_rejected(void **st)
{
    assert_rejected("\"\xc0\x80\"");
    assert_rejected("\"\xc1\xbf\"");
    assert_rejected("\"\xe0\x80\x80\"");
    assert_rejected("\"\xe0\x9f\xbf\"");
    assert_rejected("\"\xf0\x80\x80\x80\"");
    assert_rejected("\"\xf0\x8f\xbf\xbf\"");
}

static void test_utf8_surrogates_rejected(void **st)
{
    assert_rejected("\"\xed\xa0\x80\"");
    assert_rejected("\"\xed\xbf\xbf\"");
    assert_rejected("\"\xed\xa0\xbd\xed\xb8\x80\"");
}

static void test_utf8_above_max_rejected(void **st)
{
    assert_rejected("\"\xf4\x90\x80\x80\"");
    assert_rejected("\"\xf5\x80\x80\x80\"");
    assert_rejected("\"\xf7\xbf\xbf\xbf\"");
    assert_rejected("\"\xf8\x88\x80\x80\x80\"");
    assert_rejected("\"\xfe\"");
    assert_rejected("\"\xff\"");
}

static void test_utf8_truncated_rejected(void **st)
{
    assert_rejected("\"\xc3\"");
    assert_rejected("\"\xe2\x82\"");
    assert_rejected("\"\xf0\x9f\x98\"");
    assert_rejected("\"\xe2\x82x\"");
}

static void test_utf8_truncated_at_end_of_input_rejected(void **st)
{
    assert_rejected("\"\xc3");
    assert_rejected("\"\xe2\x82");
    assert_rejected("\"\xf0\x9f\x98");
}

static void test_utf8_stray_continuation_rejected(void **st)
{
    assert_rejected("\"\x80\"");
    assert_rejected("\"\xbf\"");
    assert_rejected("\"\xc3\xa9\xa9\"");
}

static void test_utf8_bad_continuation_rejected(void **st)
{
    assert_rejected("\"\xc3\x41\"");
    assert_rejected("\"\xe2\x41\x82\"");
    assert_rejected("\"\xf0\x9f\xc0\x80\"");
}

static void test_utf8_outside_strings_rejected(void **st)
{
    assert_rejected("[\xc3\xa9]");
    assert_rejected("\xef\xbb\xbf{}");
    assert_rejected("{}\xc2\xa0");
}

/* ---- objects: duplicate and escaped keys ---- */

static void test_object_duplicate_keys_rejected(void **st)
{
    assert_rejected("{\"a\":1,\"a\":2}");
    assert_rejected("{\"a\":1,\"b\":2,\"a\":1}");
}

static void test_object_duplicate_empty_keys_rejected(void **st)
{
    assert_rejected("{\"\":1,\"\":2}");
}

static void test_object_duplicate_keys_in_nested_object_rejected(void **st)
{
    assert_rejected("{\"x\":{\"a\":1,\"a\":2}}");
    assert_rejected("[{\"a\":1,\"a\":2}]");
}

static void test_object_keys_that_are_prefixes_accepted(void **st)
{
    assert_accepted("{\"a\":1,\"ab\":2,\"\":3}");
}

static void test_object_same_key_in_different_objects_accepted(void **st)
{
    assert_accepted("[{\"a\":1},{\"a\":2}]");
    assert_accepted("{\"a\":{\"a\":1}}");
    assert_accepted("{\"a\":{\"b\":1},\"b\":2}");
}

static void test_object_escaped_key_rejected(void **st)
{
    assert_rejected("{\"\\u0061\":1}");
    assert_rejected("{\"a\\n\":1}");
    assert_rejected("{\"\\\"\":1}");
}

static void test_member_escaped_key_rejected(void **st)
{
    static const char text[] = "{\"a\\/b\":1}";
    ac__jscan_t j;
    ac__jobj_t o;
    const char *key;
    size_t klen;

    ac__jscan_init(&j, text, sizeof(text) - 1);
    ac__jscan_object(&j, &o);
    assert_int_equal(ac__jscan_member(&j, &o, &key, &klen), -1);
}

static void test_object_escapes_in_values_accepted(void **st)
{
    assert_accepted("{\"a\":\"\\n\\u0061\"}");
}

static void test_object_non_string_key_rejected(void **st)
{
    assert_rejected("{a:1}");
    assert_rejected("{1:1}");
    assert_rejected("{null:1}");
}

static void test_object_missing_colon_rejected(void **st)
{
    assert_rejected("{\"a\" 1}");
    assert_rejected("{\"a\"}");
    assert_rejected("{\"a\":}");
}

/* ---- grammar ---- */

static void test_grammar_trailing_comma_in_object_rejected(void **st)
{
    assert_rejected("{\"a\":1,}");
    assert_rejected("{\"a\":1 , }");
}

static void test_grammar_trailing_comma_in_array_rejected(void **st)
{
    assert_rejected("[1,]");
    assert_rejected("[1 , ]");
}

static void test_grammar_leading_comma_rejected(void **st)
{
    assert_rejected("[,1]");
    assert_rejected("{,\"a\":1}");
    assert_rejected("{,}");
    assert_rejected("[,]");
}

static void test_grammar_double_comma_rejected(void **st)
{
    assert_rejected("[1,,2]");
    assert_rejected("{\"a\":1,,\"b\":2}");
}

static void test_grammar_missing_comma_rejected(void **st)
{
    assert_rejected("[1 2]");
    assert_rejected("[\"a\"\"b\"]");
    assert_rejected("{\"a\":1 \"b\":2}");
}

static void test_grammar_unclosed_containers_rejected(void **st)
{
    assert_rejected("[");
    assert_rejected("[1");
    assert_rejected("[1,");
    assert_rejected("{");
    assert_rejected("{\"a\":1");
    assert_rejected("{\"a\":[1]");
}

static void test_grammar_mismatched_close_rejected(void **st)
{
    assert_rejected("[1}");
    assert_rejected("{\"a\":1]");
    assert_rejected("]");
    assert_rejected("}");
}

/* ---- numbers ---- */

static void test_number_leading_zero_rejected(void **st)
{
    /* "01": the value is the "0", and the "1" after it is garbage. */
    scan_t s = scan("01");
    assert_int_equal(s.rc, 0);
    assert_int_equal(s.len, 1);
    assert_int_equal(s.finish, -1);

    assert_rejected("[01]");
    assert_rejected("-01");
    assert_rejected("00");
    assert_rejected("{\"a\":007}");
}

static void test_number_zero_point_digits_accepted(void **st)
{
    assert_accepted("0.0");
    assert_accepted("-0.5");
    assert_accepted("[0,-0,10]");
}

static void test_number_without_fraction_digits_rejected(void **st)
{
    assert_rejected("1.");
    assert_rejected("[1.]");
    assert_rejected("-0.");
    assert_rejected("1.x");
}

static void test_number_minus_alone_rejected(void **st)
{
    assert_rejected("-");
    assert_rejected("[-]");
    assert_rejected("- 1");
    assert_rejected("--1");
}

static void test_number_without_integer_part_rejected(void **st)
{
    assert_rejected(".5");
    assert_rejected("-.5");
    assert_rejected("[.5]");
}

static void test_number_plus_sign_rejected(void **st)
{
    assert_rejected("+1");
}

static void test_number_hex_rejected(void **st)
{
    assert_rejected("0x10");
}

static void test_number_exponent_rejected(void **st)
{
    assert_rejected("1e5");
    assert_rejected("1E5");
    assert_rejected("1e+5");
    assert_rejected("1.5e-3");
    assert_rejected("0e0");
    assert_rejected("[1e5]");
    assert_int_equal(scan("1e5").rc, -1);
}

static void test_number_18_digit_integer_accepted(void **st)
{
    assert_accepted("123456789012345678");
    assert_accepted("-999999999999999999");
}

static void test_number_19_digit_integer_rejected(void **st)
{
    assert_rejected("1234567890123456789");
    assert_rejected("-1234567890123456789");
    assert_rejected("9223372036854775807");
    assert_rejected("[1000000000000000000]");
}

static void test_number_real_of_300_characters_accepted(void **st)
{
    char text[302];
    memset(text, '9', 298);
    memcpy(text + 298, ".5", 3); /* 300 characters */
    assert_int_equal(strlen(text), 300);
    assert_true(whole(text));
}

static void test_number_real_minus_sign_not_counted(void **st)
{
    char text[303];
    text[0] = '-';
    memset(text + 1, '9', 298);
    memcpy(text + 299, ".5", 3); /* "-" and 300 characters */
    assert_true(whole(text));
}

static void test_number_real_over_300_characters_rejected(void **st)
{
    char text[303];
    memset(text, '9', 299);
    memcpy(text + 299, ".5", 3); /* 301 characters */
    assert_int_equal(strlen(text), 301);
    assert_false(whole(text));
}

/* ---- limits ---- */

static void test_depth_32_arrays_accepted(void **st)
{
    char *t = nest(AC__JSCAN_MAX_DEPTH, "[", "1", "]");
    assert_true(whole(t));
    free(t);
}

static void test_depth_33_arrays_rejected(void **st)
{
    char *t = nest(AC__JSCAN_MAX_DEPTH + 1, "[", "1", "]");
    assert_int_equal(scan_n(t, strlen(t)).rc, -1);
    free(t);
}

static void test_depth_32_objects_accepted(void **st)
{
    char *t = nest(AC__JSCAN_MAX_DEPTH - 1, "{\"a\":", "{}", "}");
    assert_true(whole(t));
    free(t);
}

static void test_depth_33_objects_rejected(void **st)
{
    char *t = nest(AC__JSCAN_MAX_DEPTH, "{\"a\":", "{}", "}");
    assert_int_equal(scan_n(t, strlen(t)).rc, -1);
    free(t);
}

static void test_depth_32_mixed_accepted(void **st)
{
    char *t = nest(AC__JSCAN_MAX_DEPTH / 2, "[{\"a\":", "1", "}]");
    assert_true(whole(t));
    free(t);
}

static void test_depth_33_mixed_rejected(void **st)
{
    char *t = nest(AC__JSCAN_MAX_DEPTH / 2, "[{\"a\":", "[]", "}]");
    assert_false(whole(t));
    free(t);
}

static void test_depth_counts_nesting_not_containers(void **st)
{
    /* Two siblings of depth 31 inside one array: 32 deep, 63 containers. */
    char *inner = nest(AC__JSCAN_MAX_DEPTH - 1, "[", "", "]");
    size_t n = strlen(inner);
    char *t = malloc(2 * n + 4);
    assert_non_null(t);
    sprintf(t, "[%s,%s]", inner, inner);
    scan_t s = scan_n(t, strlen(t));
    assert_int_equal(s.rc, 0);
    assert_int_equal(s.finish, 0);
    assert_int_equal(s.depth, 0);
    free(t);
    free(inner);
}

static void test_keys_32_accepted(void **st)
{
    char *t = object_of(AC__JSCAN_MAX_KEYS);
    assert_true(whole(t));
    free(t);
}

static void test_keys_33_rejected(void **st)
{
    char *t = object_of(AC__JSCAN_MAX_KEYS + 1);
    assert_int_equal(scan_n(t, strlen(t)).rc, -1);
    free(t);
}

static void test_keys_limit_is_per_object(void **st)
{
    char *o = object_of(AC__JSCAN_MAX_KEYS), *o31 = object_of(AC__JSCAN_MAX_KEYS - 1);
    char *t = malloc(2 * strlen(o) + strlen(o31) + 8);
    assert_non_null(t);
    sprintf(t, "[%s,%s]", o, o);
    assert_true(whole(t));
    /* 32 keys in the outer object, the first holding 32 more. */
    sprintf(t, "{\"x\":%s,%s", o, o31 + 1);
    assert_true(whole(t));
    free(t);
    free(o31);
    free(o);
}

/* ---- ac__jscan_finish ---- */

static void test_finish_nothing_left(void **st)
{
    assert_int_equal(scan("{}").finish, 0);
}

static void test_finish_trailing_whitespace_accepted(void **st)
{
    assert_int_equal(scan("{} \n\r\t ").finish, 0);
}

static void test_finish_trailing_garbage_rejected(void **st)
{
    assert_int_equal(scan("{}x").finish, -1);
    assert_int_equal(scan("{} x").finish, -1);
    assert_int_equal(scan("1 2").finish, -1);
    assert_int_equal(scan("{}{}").finish, -1);
    assert_int_equal(scan("[]]").finish, -1);
}

static void test_finish_trailing_nul_rejected(void **st)
{
    assert_int_equal(scan("{}\0").finish, -1);
    assert_int_equal(scan("{} \0").finish, -1);
}

/* ---- ac__json_compact ---- */

static void test_compact_removes_whitespace_between_tokens(void **st)
{
    assert_compacts_to(" { \"a\" : [ 1 , 2 ] ,\n\t\"b\" :\r\ntrue , \"c\":{ } } ",
                       "{\"a\":[1,2],\"b\":true,\"c\":{}}");
}

static void test_compact_keeps_text_without_whitespace(void **st)
{
    assert_compacts_to("{\"a\":[1,-2.5,null,false],\"b\":\"x\"}",
                       "{\"a\":[1,-2.5,null,false],\"b\":\"x\"}");
}

static void test_compact_keeps_whitespace_inside_strings(void **st)
{
    assert_compacts_to("{ \"a b\" : \" x  y \" }", "{\"a b\":\" x  y \"}");
}

static void test_compact_keeps_whitespace_after_escaped_quote(void **st)
{
    assert_compacts_to("[ \"a\\\" b\" , \" c\" ]", "[\"a\\\" b\",\" c\"]");
    assert_compacts_to("{\"k\": \"\\\" \\\" \"}", "{\"k\":\"\\\" \\\" \"}");
}

static void test_compact_escaped_backslash_ends_before_quote(void **st)
{
    /* "a\\" is a complete string: the space after it is between tokens. */
    assert_compacts_to("[ \"a\\\\\" , \" b\" ]", "[\"a\\\\\",\" b\"]");
}

static void test_compact_keeps_escapes_and_utf8(void **st)
{
    assert_compacts_to("[ \"\\u00e9 \\n\" , \"\xc3\xa9 \xf0\x9f\x98\x80\" ]",
                       "[\"\\u00e9 \\n\",\"\xc3\xa9 \xf0\x9f\x98\x80\"]");
}

static void test_compact_scalar_with_surrounding_whitespace(void **st)
{
    assert_compacts_to("  \" a \"\n", "\" a \"");
    assert_compacts_to("\t-1.5 ", "-1.5");
}

static void test_compact_output_scans_without_whitespace(void **st)
{
    static const char in[] = "{ \"a\" : [ 1 , { \"b\" : \" \" } ] }";
    char out[sizeof(in)];
    size_t n = ac__json_compact(out, in, sizeof(in) - 1);
    scan_t s = scan_n(out, n);
    assert_int_equal(s.rc, 0);
    assert_int_equal(s.finish, 0);
    assert_int_equal(s.kind, AC__J_OBJECT);
    assert_int_equal(s.ws, 0);
    assert_int_equal(s.len, n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_value_object_kind_and_span),
        cmocka_unit_test(test_value_empty_object),
        cmocka_unit_test(test_value_array_kind_and_span),
        cmocka_unit_test(test_value_empty_array),
        cmocka_unit_test(test_value_string_span_includes_quotes),
        cmocka_unit_test(test_value_empty_string),
        cmocka_unit_test(test_value_integer),
        cmocka_unit_test(test_value_zero),
        cmocka_unit_test(test_value_negative_zero),
        cmocka_unit_test(test_value_negative_real),
        cmocka_unit_test(test_value_real_below_one),
        cmocka_unit_test(test_value_true),
        cmocka_unit_test(test_value_false),
        cmocka_unit_test(test_value_null),
        cmocka_unit_test(test_value_span_starts_after_leading_whitespace),
        cmocka_unit_test(test_value_span_ends_before_trailing_whitespace),
        cmocka_unit_test(test_value_nested_containers_span_the_whole_value),
        cmocka_unit_test(test_value_stops_at_the_end_of_its_text),
        cmocka_unit_test(test_value_depth_is_zero_after_a_value),
        cmocka_unit_test(test_value_empty_input_rejected),
        cmocka_unit_test(test_value_whitespace_only_rejected),
        cmocka_unit_test(test_value_truncated_literals_rejected),
        cmocka_unit_test(test_value_misspelled_literals_rejected),
        cmocka_unit_test(test_value_literal_followed_by_letters_rejected),
        cmocka_unit_test(test_value_single_quoted_string_rejected),
        cmocka_unit_test(test_member_gives_raw_key_and_leaves_j_at_value),
        cmocka_unit_test(test_element_walks_an_array),
        cmocka_unit_test(test_peek_gives_next_byte_or_minus_one_at_end),
        cmocka_unit_test(test_ws_clear_when_there_is_no_whitespace),
        cmocka_unit_test(test_ws_not_set_by_spaces_inside_strings),
        cmocka_unit_test(test_ws_set_by_leading_whitespace),
        cmocka_unit_test(test_ws_set_by_whitespace_before_a_colon),
        cmocka_unit_test(test_ws_set_by_whitespace_after_a_colon),
        cmocka_unit_test(test_ws_set_by_whitespace_around_commas),
        cmocka_unit_test(test_ws_set_by_whitespace_before_a_close),
        cmocka_unit_test(test_ws_set_by_whitespace_after_an_open),
        cmocka_unit_test(test_ws_form_feed_and_vertical_tab_are_not_whitespace),
        cmocka_unit_test(test_esc_clear_for_plain_string),
        cmocka_unit_test(test_esc_set_for_simple_escape),
        cmocka_unit_test(test_esc_set_for_unicode_escape),
        cmocka_unit_test(test_esc_describes_the_last_string_scanned),
        cmocka_unit_test(test_string_all_simple_escapes_accepted),
        cmocka_unit_test(test_string_unknown_escapes_rejected),
        cmocka_unit_test(test_string_escaped_nul_byte_rejected),
        cmocka_unit_test(test_string_backslash_at_end_of_input_rejected),
        cmocka_unit_test(test_string_unterminated_rejected),
        cmocka_unit_test(test_string_del_byte_accepted),
        cmocka_unit_test(test_string_raw_control_characters_rejected),
        cmocka_unit_test(test_string_escaped_control_characters_accepted),
        cmocka_unit_test(test_unicode_escape_bmp_accepted),
        cmocka_unit_test(test_unicode_escape_nul_accepted),
        cmocka_unit_test(test_unicode_escape_surrogate_pair_accepted),
        cmocka_unit_test(test_unicode_escape_lone_high_surrogate_rejected),
        cmocka_unit_test(test_unicode_escape_high_surrogate_then_non_low_rejected),
        cmocka_unit_test(test_unicode_escape_lone_low_surrogate_rejected),
        cmocka_unit_test(test_unicode_escape_bad_hex_rejected),
        cmocka_unit_test(test_unicode_escape_short_rejected),
        cmocka_unit_test(test_utf8_two_byte_accepted),
        cmocka_unit_test(test_utf8_three_byte_accepted),
        cmocka_unit_test(test_utf8_four_byte_accepted),
        cmocka_unit_test(test_utf8_in_keys_accepted),
        cmocka_unit_test(test_utf8_overlong_rejected),
        cmocka_unit_test(test_utf8_surrogates_rejected),
        cmocka_unit_test(test_utf8_above_max_rejected),
        cmocka_unit_test(test_utf8_truncated_rejected),
        cmocka_unit_test(test_utf8_truncated_at_end_of_input_rejected),
        cmocka_unit_test(test_utf8_stray_continuation_rejected),
        cmocka_unit_test(test_utf8_bad_continuation_rejected),
        cmocka_unit_test(test_utf8_outside_strings_rejected),
        cmocka_unit_test(test_object_duplicate_keys_rejected),
        cmocka_unit_test(test_object_duplicate_empty_keys_rejected),
        cmocka_unit_test(test_object_duplicate_keys_in_nested_object_rejected),
        cmocka_unit_test(test_object_keys_that_are_prefixes_accepted),
        cmocka_unit_test(test_object_same_key_in_different_objects_accepted),
        cmocka_unit_test(test_object_escaped_key_rejected),
        cmocka_unit_test(test_member_escaped_key_rejected),
        cmocka_unit_test(test_object_escapes_in_values_accepted),
        cmocka_unit_test(test_object_non_string_key_rejected),
        cmocka_unit_test(test_object_missing_colon_rejected),
        cmocka_unit_test(test_grammar_trailing_comma_in_object_rejected),
        cmocka_unit_test(test_grammar_trailing_comma_in_array_rejected),
        cmocka_unit_test(test_grammar_leading_comma_rejected),
        cmocka_unit_test(test_grammar_double_comma_rejected),
        cmocka_unit_test(test_grammar_missing_comma_rejected),
        cmocka_unit_test(test_grammar_unclosed_containers_rejected),
        cmocka_unit_test(test_grammar_mismatched_close_rejected),
        cmocka_unit_test(test_number_leading_zero_rejected),
        cmocka_unit_test(test_number_zero_point_digits_accepted),
        cmocka_unit_test(test_number_without_fraction_digits_rejected),
        cmocka_unit_test(test_number_minus_alone_rejected),
        cmocka_unit_test(test_number_without_integer_part_rejected),
        cmocka_unit_test(test_number_plus_sign_rejected),
        cmocka_unit_test(test_number_hex_rejected),
        cmocka_unit_test(test_number_exponent_rejected),
        cmocka_unit_test(test_number_18_digit_integer_accepted),
        cmocka_unit_test(test_number_19_digit_integer_rejected),
        cmocka_unit_test(test_number_real_of_300_characters_accepted),
        cmocka_unit_test(test_number_real_minus_sign_not_counted),
        cmocka_unit_test(test_number_real_over_300_characters_rejected),
        cmocka_unit_test(test_depth_32_arrays_accepted),
        cmocka_unit_test(test_depth_33_arrays_rejected),
        cmocka_unit_test(test_depth_32_objects_accepted),
        cmocka_unit_test(test_depth_33_objects_rejected),
        cmocka_unit_test(test_depth_32_mixed_accepted),
        cmocka_unit_test(test_depth_33_mixed_rejected),
        cmocka_unit_test(test_depth_counts_nesting_not_containers),
        cmocka_unit_test(test_keys_32_accepted),
        cmocka_unit_test(test_keys_33_rejected),
        cmocka_unit_test(test_keys_limit_is_per_object),
        cmocka_unit_test(test_finish_nothing_left),
        cmocka_unit_test(test_finish_trailing_whitespace_accepted),
        cmocka_unit_test(test_finish_trailing_garbage_rejected),
        cmocka_unit_test(test_finish_trailing_nul_rejected),
        cmocka_unit_test(test_compact_removes_whitespace_between_tokens),
        cmocka_unit_test(test_compact_keeps_text_without_whitespace),
        cmocka_unit_test(test_compact_keeps_whitespace_inside_strings),
        cmocka_unit_test(test_compact_keeps_whitespace_after_escaped_quote),
        cmocka_unit_test(test_compact_escaped_backslash_ends_before_quote),
        cmocka_unit_test(test_compact_keeps_escapes_and_utf8),
        cmocka_unit_test(test_compact_scalar_with_surrounding_whitespace),
        cmocka_unit_test(test_compact_output_scans_without_whitespace),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
