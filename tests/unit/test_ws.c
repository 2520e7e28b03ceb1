/* Unit tests for src/net/ws.c: the RFC 6455 frame codec, receive-side rules, unmasking,
 * UTF-8 validation and the handshake accept key. Pure functions, so no loop and no
 * sockets here; the connection state machine is tested in the integration suite. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "net/ws.h"

/* ---- header encode ---- */

static void check_encode(uint64_t len, const uint8_t *want, size_t want_len)
{
    uint8_t out[AC_WS_MAX_SERVER_HEADER];
    memset(out, 0xEE, sizeof(out));
    size_t n = ac__ws_header_encode(out, AC_WS_TEXT, 1, len);
    assert_int_equal(n, want_len);
    assert_int_equal(ac__ws_header_size(len), want_len);
    assert_memory_equal(out, want, want_len);
}

static void test_header_encode_len_0_uses_7bit_form(void **st)
{
    static const uint8_t want[] = {0x81, 0x00};
    check_encode(0, want, sizeof(want));
}

static void test_header_encode_len_125_uses_7bit_form(void **st)
{
    static const uint8_t want[] = {0x81, 125};
    check_encode(125, want, sizeof(want));
}

static void test_header_encode_len_126_uses_16bit_form(void **st)
{
    static const uint8_t want[] = {0x81, 126, 0x00, 0x7E};
    check_encode(126, want, sizeof(want));
}

static void test_header_encode_len_65535_uses_16bit_form(void **st)
{
    static const uint8_t want[] = {0x81, 126, 0xFF, 0xFF};
    check_encode(65535, want, sizeof(want));
}

static void test_header_encode_len_65536_uses_64bit_form(void **st)
{
    static const uint8_t want[] = {0x81, 127, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00};
    check_encode(65536, want, sizeof(want));
}

static void test_header_encode_len_2_pow_32_uses_64bit_form(void **st)
{
    static const uint8_t want[] = {0x81, 127, 0, 0, 0, 0x01, 0, 0, 0, 0};
    check_encode(UINT64_C(1) << 32, want, sizeof(want));
}

static void test_header_encode_without_fin_clears_fin_bit(void **st)
{
    uint8_t out[AC_WS_MAX_SERVER_HEADER];
    assert_int_equal(ac__ws_header_encode(out, AC_WS_CONT, 0, 3), 2);
    assert_int_equal(out[0], 0x00);
    assert_int_equal(ac__ws_header_encode(out, AC_WS_CLOSE, 1, 2), 2);
    assert_int_equal(out[0], 0x88);
}

static void test_header_encode_then_decode_roundtrips(void **st)
{
    static const uint64_t lens[] = {
        0, 1, 125, 126, 127, 65535, 65536, UINT64_C(1) << 32, (UINT64_C(1) << 63) - 1};
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        uint8_t out[AC_WS_MAX_SERVER_HEADER];
        size_t n = ac__ws_header_encode(out, AC_WS_BINARY, 1, lens[i]);
        ac__ws_header_t h;
        assert_int_equal(ac__ws_header_decode(out, n, &h), (int)n);
        assert_true(h.len == lens[i]);
        assert_int_equal(h.opcode, AC_WS_BINARY);
        assert_int_equal(h.fin, 1);
        assert_int_equal(h.masked, 0);
        assert_int_equal(h.header_len, n);
    }
}

/* ---- header decode ---- */

static void test_header_decode_7bit_masked(void **st)
{
    static const uint8_t in[] = {0x81, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F};
    ac__ws_header_t h;
    assert_int_equal(ac__ws_header_decode(in, sizeof(in), &h), 6);
    assert_int_equal(h.fin, 1);
    assert_int_equal(h.rsv, 0);
    assert_int_equal(h.opcode, AC_WS_TEXT);
    assert_int_equal(h.masked, 1);
    assert_true(h.len == 5);
    assert_int_equal(h.header_len, 6);
    static const uint8_t mask[] = {0x37, 0xFA, 0x21, 0x3D};
    assert_memory_equal(h.mask, mask, 4);
}

static void test_header_decode_7bit_unmasked(void **st)
{
    static const uint8_t in[] = {0x82, 0x7D};
    ac__ws_header_t h;
    assert_int_equal(ac__ws_header_decode(in, sizeof(in), &h), 2);
    assert_int_equal(h.opcode, AC_WS_BINARY);
    assert_int_equal(h.masked, 0);
    assert_true(h.len == 125);
    assert_int_equal(h.header_len, 2);
}

static void test_header_decode_16bit_length(void **st)
{
    static const uint8_t in[] = {0x82, 0xFE, 0x01, 0x02, 1, 2, 3, 4};
    ac__ws_header_t h;
    assert_int_equal(ac__ws_header_decode(in, sizeof(in), &h), 8);
    assert_true(h.len == 0x0102);
    assert_int_equal(h.masked, 1);
    static const uint8_t mask[] = {1, 2, 3, 4};
    assert_memory_equal(h.mask, mask, 4);
}

static void test_header_decode_64bit_length(void **st)
{
    static const uint8_t in[] = {0x82, 0xFF, 0x01, 0x02, 0x03, 0x04, 0x05,
                                 0x06, 0x07, 0x08, 9,    10,   11,   12};
    ac__ws_header_t h;
    assert_int_equal(ac__ws_header_decode(in, sizeof(in), &h), 14);
    assert_true(h.len == UINT64_C(0x0102030405060708));
    static const uint8_t mask[] = {9, 10, 11, 12};
    assert_memory_equal(h.mask, mask, 4);
    assert_int_equal(h.header_len, 14);
}

static void test_header_decode_splits_fin_rsv_opcode(void **st)
{
    static const uint8_t in[] = {0x59, 0x80, 0, 0, 0, 0}; /* fin 0, rsv 101, opcode 9 */
    ac__ws_header_t h;
    assert_int_equal(ac__ws_header_decode(in, sizeof(in), &h), 6);
    assert_int_equal(h.fin, 0);
    assert_int_equal(h.rsv, 5);
    assert_int_equal(h.opcode, AC_WS_PING);
}

static void test_header_decode_ignores_payload_after_header(void **st)
{
    static const uint8_t in[] = {0x81, 0x83, 0, 0, 0, 0, 'a', 'b', 'c'};
    ac__ws_header_t h;
    assert_int_equal(ac__ws_header_decode(in, sizeof(in), &h), 6);
    assert_true(h.len == 3);
}

static void test_header_decode_incomplete_returns_0_at_every_prefix(void **st)
{
    static const uint8_t s7[] = {0x81, 0x05};
    static const uint8_t s7m[] = {0x81, 0x85, 1, 2, 3, 4};
    static const uint8_t s16[] = {0x81, 0x7E, 0x01, 0x00};
    static const uint8_t s16m[] = {0x81, 0xFE, 0x01, 0x00, 1, 2, 3, 4};
    static const uint8_t s64[] = {0x81, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0};
    static const uint8_t s64m[] = {0x81, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4};
    const struct {
        const uint8_t *p;
        size_t n;
    } cases[] = {{s7, sizeof(s7)},     {s7m, sizeof(s7m)}, {s16, sizeof(s16)},
                 {s16m, sizeof(s16m)}, {s64, sizeof(s64)}, {s64m, sizeof(s64m)}};
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        for (size_t n = 0; n < cases[c].n; n++) {
            ac__ws_header_t h;
            memset(&h, 0xAB, sizeof(h));
            assert_int_equal(ac__ws_header_decode(cases[c].p, n, &h), 0);
            assert_int_equal(h.fin, 0xABABABABu); /* *h untouched until complete */
        }
        ac__ws_header_t h;
        assert_int_equal(ac__ws_header_decode(cases[c].p, cases[c].n, &h), (int)cases[c].n);
    }
}

static void test_header_decode_64bit_length_with_msb_set_is_malformed(void **st)
{
    static const uint8_t in[] = {0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4};
    ac__ws_header_t h;
    assert_int_equal(ac__ws_header_decode(in, sizeof(in), &h), -1);
}

/* ---- check_header ---- */

static const uint64_t MAX_MSG = 1 << 20;

static ac__ws_header_t frame(unsigned opcode, unsigned fin, uint64_t len)
{
    ac__ws_header_t h;
    memset(&h, 0, sizeof(h));
    h.fin = fin;
    h.opcode = opcode;
    h.masked = 1;
    h.len = len;
    h.header_len = 6;
    return h;
}

static void test_check_accepts_masked_text_frame(void **st)
{
    ac__ws_header_t h = frame(AC_WS_TEXT, 1, 10);
    assert_int_equal(ac__ws_check_header(&h, 0, 0, MAX_MSG), 0);
}

static void test_check_unmasked_frame_is_protocol_error(void **st)
{
    ac__ws_header_t h = frame(AC_WS_TEXT, 1, 10);
    h.masked = 0;
    assert_int_equal(ac__ws_check_header(&h, 0, 0, MAX_MSG), AC_WS_CLOSE_PROTOCOL);
}

static void test_check_any_rsv_bit_is_protocol_error(void **st)
{
    for (unsigned rsv = 1; rsv <= 7; rsv++) {
        ac__ws_header_t h = frame(AC_WS_TEXT, 1, 10);
        h.rsv = rsv;
        assert_int_equal(ac__ws_check_header(&h, 0, 0, MAX_MSG), AC_WS_CLOSE_PROTOCOL);
    }
}

static void test_check_reserved_opcodes_are_protocol_error(void **st)
{
    static const unsigned reserved[] = {3, 4, 5, 6, 7, 11, 12, 13, 14, 15};
    for (size_t i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++) {
        ac__ws_header_t h = frame(reserved[i], 1, 0);
        assert_int_equal(ac__ws_check_header(&h, 0, 0, MAX_MSG), AC_WS_CLOSE_PROTOCOL);
        assert_int_equal(ac__ws_check_header(&h, 1, 0, MAX_MSG), AC_WS_CLOSE_PROTOCOL);
    }
}

static void test_check_fragmented_ping_is_protocol_error(void **st)
{
    ac__ws_header_t h = frame(AC_WS_PING, 0, 4);
    assert_int_equal(ac__ws_check_header(&h, 0, 0, MAX_MSG), AC_WS_CLOSE_PROTOCOL);
}

static void test_check_fragmented_close_is_protocol_error(void **st)
{
    ac__ws_header_t h = frame(AC_WS_CLOSE, 0, 2);
    assert_int_equal(ac__ws_check_header(&h, 0, 0, MAX_MSG), AC_WS_CLOSE_PROTOCOL);
}

static void test_check_ping_of_125_bytes_is_accepted(void **st)
{
    ac__ws_header_t h = frame(AC_WS_PING, 1, 125);
    assert_int_equal(ac__ws_check_header(&h, 0, 0, MAX_MSG), 0);
}

static void test_check_ping_of_126_bytes_is_protocol_error(void **st)
{
    ac__ws_header_t h = frame(AC_WS_PING, 1, 126);
    assert_int_equal(ac__ws_check_header(&h, 0, 0, MAX_MSG), AC_WS_CLOSE_PROTOCOL);
}

static void test_check_pong_of_126_bytes_is_protocol_error(void **st)
{
    ac__ws_header_t h = frame(AC_WS_PONG, 1, 126);
    assert_int_equal(ac__ws_check_header(&h, 0, 0, MAX_MSG), AC_WS_CLOSE_PROTOCOL);
}

static void test_check_continuation_without_message_is_protocol_error(void **st)
{
    ac__ws_header_t h = frame(AC_WS_CONT, 1, 10);
    assert_int_equal(ac__ws_check_header(&h, 0, 0, MAX_MSG), AC_WS_CLOSE_PROTOCOL);
}

static void test_check_continuation_inside_message_is_accepted(void **st)
{
    ac__ws_header_t h = frame(AC_WS_CONT, 0, 10);
    assert_int_equal(ac__ws_check_header(&h, 1, 100, MAX_MSG), 0);
}

static void test_check_text_inside_open_message_is_protocol_error(void **st)
{
    ac__ws_header_t h = frame(AC_WS_TEXT, 1, 10);
    assert_int_equal(ac__ws_check_header(&h, 1, 10, MAX_MSG), AC_WS_CLOSE_PROTOCOL);
}

static void test_check_binary_inside_open_message_is_protocol_error(void **st)
{
    ac__ws_header_t h = frame(AC_WS_BINARY, 0, 10);
    assert_int_equal(ac__ws_check_header(&h, 1, 10, MAX_MSG), AC_WS_CLOSE_PROTOCOL);
}

static void test_check_ping_inside_open_message_is_accepted(void **st)
{
    /* The open message is already at the limit: a control frame must not count toward it. */
    ac__ws_header_t h = frame(AC_WS_PING, 1, 5);
    assert_int_equal(ac__ws_check_header(&h, 1, MAX_MSG, MAX_MSG), 0);
}

static void test_check_single_frame_of_max_size_is_accepted(void **st)
{
    ac__ws_header_t h = frame(AC_WS_BINARY, 1, MAX_MSG);
    assert_int_equal(ac__ws_check_header(&h, 0, 0, MAX_MSG), 0);
}

static void test_check_single_frame_over_max_is_too_big(void **st)
{
    ac__ws_header_t h = frame(AC_WS_BINARY, 1, MAX_MSG + 1);
    assert_int_equal(ac__ws_check_header(&h, 0, 0, MAX_MSG), AC_WS_CLOSE_TOO_BIG);
}

static void test_check_fragments_accumulating_over_max_are_too_big(void **st)
{
    ac__ws_header_t h = frame(AC_WS_CONT, 0, 1000);
    assert_int_equal(ac__ws_check_header(&h, 1, MAX_MSG - 1000, MAX_MSG), 0);
    assert_int_equal(ac__ws_check_header(&h, 1, MAX_MSG - 999, MAX_MSG), AC_WS_CLOSE_TOO_BIG);
}

static void test_check_huge_length_does_not_wrap_past_limit(void **st)
{
    /* message_len + len would wrap to a small number in 64-bit arithmetic. */
    ac__ws_header_t h = frame(AC_WS_CONT, 1, UINT64_MAX - 5);
    assert_int_equal(ac__ws_check_header(&h, 1, 10, MAX_MSG), AC_WS_CLOSE_TOO_BIG);
}

static void test_check_new_message_ignores_stale_message_len(void **st)
{
    ac__ws_header_t h = frame(AC_WS_TEXT, 0, 10);
    assert_int_equal(ac__ws_check_header(&h, 0, MAX_MSG, MAX_MSG), 0);
}

/* ---- unmask ---- */

static void naive_unmask(uint8_t *p, size_t n, const uint8_t mask[4], uint64_t offset)
{
    for (size_t i = 0; i < n; i++)
        p[i] ^= mask[(offset + i) % 4];
}

static void test_unmask_matches_naive_at_every_offset_length_alignment(void **st)
{
    static const uint8_t mask[4] = {0xA5, 0x3C, 0x0F, 0x81};
    uint8_t buf[300 + 8], ref[300 + 8];
    static const size_t lens[] = {0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 63, 64, 65, 300};
    for (size_t li = 0; li < sizeof(lens) / sizeof(lens[0]); li++) {
        for (uint64_t off = 0; off < 9; off++) {
            for (size_t align = 0; align < 8; align++) {
                for (size_t i = 0; i < sizeof(buf); i++)
                    buf[i] = ref[i] = (uint8_t)(i * 31 + 7);
                ac__ws_unmask(buf + align, lens[li], mask, off);
                naive_unmask(ref + align, lens[li], mask, off);
                assert_memory_equal(buf, ref, sizeof(buf)); /* nothing outside touched */
            }
        }
    }
}

static void test_unmask_large_offset_uses_offset_mod_4(void **st)
{
    static const uint8_t mask[4] = {1, 2, 4, 8};
    uint8_t a[20] = {0}, b[20] = {0};
    ac__ws_unmask(a, sizeof(a), mask, (UINT64_C(1) << 40) + 3);
    naive_unmask(b, sizeof(b), mask, 3);
    assert_memory_equal(a, b, sizeof(a));
}

static void test_unmask_in_pieces_equals_unmask_whole(void **st)
{
    static const uint8_t mask[4] = {0xDE, 0xAD, 0xBE, 0xEF};
    uint8_t whole[100], pieces[100];
    for (size_t i = 0; i < sizeof(whole); i++)
        whole[i] = pieces[i] = (uint8_t)i;
    ac__ws_unmask(whole, sizeof(whole), mask, 0);
    static const size_t cuts[] = {0, 3, 4, 13, 21, 50, 99, 100};
    for (size_t c = 0; c + 1 < sizeof(cuts) / sizeof(cuts[0]); c++)
        ac__ws_unmask(pieces + cuts[c], cuts[c + 1] - cuts[c], mask, cuts[c]);
    assert_memory_equal(whole, pieces, sizeof(whole));
}

static void test_unmask_decodes_rfc6455_masked_hello(void **st)
{
    /* RFC 6455 5.7: a masked "Hello". */
    uint8_t p[] = {0x7F, 0x9F, 0x4D, 0x51, 0x58};
    static const uint8_t mask[4] = {0x37, 0xFA, 0x21, 0x3D};
    ac__ws_unmask(p, sizeof(p), mask, 0);
    assert_memory_equal(p, "Hello", 5);
}

/* ---- UTF-8 ---- */

static int utf8_whole(const char *s, size_t n, uint32_t *end_state)
{
    uint32_t state = 0;
    int rc = ac__utf8_validate(&state, (const uint8_t *)s, n);
    *end_state = state;
    return rc;
}

static void assert_utf8_valid(const char *s, size_t n)
{
    uint32_t state;
    assert_int_equal(utf8_whole(s, n, &state), 0);
    assert_int_equal(state, 0);
}

static void assert_utf8_invalid(const char *s, size_t n)
{
    uint32_t state;
    assert_int_equal(utf8_whole(s, n, &state), -1);
}

#define VALID(lit) assert_utf8_valid(lit, sizeof(lit) - 1)
#define INVALID(lit) assert_utf8_invalid(lit, sizeof(lit) - 1)

static void test_utf8_empty_is_valid(void **st)
{
    uint32_t state = 0;
    assert_int_equal(ac__utf8_validate(&state, (const uint8_t *)"", 0), 0);
    assert_int_equal(state, 0);
}

static void test_utf8_ascii_is_valid(void **st)
{
    VALID("{\"type\":\"tool_completed\",\"id\":42}\x01\x7F");
}

static void test_utf8_two_byte_chars_are_valid(void **st)
{
    VALID("\xC2\x80"); /* U+0080 */
    VALID("\xC3\xA9"); /* U+00E9 */
    VALID("\xDF\xBF"); /* U+07FF */
}

static void test_utf8_three_byte_chars_are_valid(void **st)
{
    VALID("\xE0\xA0\x80"); /* U+0800 */
    VALID("\xE2\x82\xAC"); /* U+20AC */
    VALID("\xED\x9F\xBF"); /* U+D7FF, just below the surrogates */
    VALID("\xEE\x80\x80"); /* U+E000, just above */
    VALID("\xEF\xBF\xBF"); /* U+FFFF */
}

static void test_utf8_four_byte_chars_are_valid(void **st)
{
    VALID("\xF0\x90\x80\x80"); /* U+10000 */
    VALID("\xF0\x9F\x98\x80"); /* U+1F600 */
    VALID("\xF3\xBF\xBF\xBF"); /* U+FFFFF */
}

static void test_utf8_max_code_point_is_valid(void **st)
{
    VALID("\xF4\x8F\xBF\xBF"); /* U+10FFFF */
}

static const char mixed[] = "a\xC3\xA9z \xE2\x82\xAC\xF0\x9F\x98\x80.\xF4\x8F\xBF\xBF"
                            "0123456789abcdef\xCE\xBA\xE1\xBD\xB9";

static void test_utf8_split_at_every_boundary_is_valid(void **st)
{
    size_t n = sizeof(mixed) - 1;
    for (size_t cut = 0; cut <= n; cut++) {
        uint32_t state = 0;
        assert_int_equal(ac__utf8_validate(&state, (const uint8_t *)mixed, cut), 0);
        assert_int_equal(ac__utf8_validate(&state, (const uint8_t *)mixed + cut, n - cut), 0);
        assert_int_equal(state, 0);
    }
}

static void test_utf8_byte_by_byte_is_valid(void **st)
{
    uint32_t state = 0;
    for (size_t i = 0; i < sizeof(mixed) - 1; i++)
        assert_int_equal(ac__utf8_validate(&state, (const uint8_t *)mixed + i, 1), 0);
    assert_int_equal(state, 0);
}

static void test_utf8_split_character_leaves_nonzero_state_between_calls(void **st)
{
    uint32_t state = 0;
    assert_int_equal(ac__utf8_validate(&state, (const uint8_t *)"\xF0\x9F", 2), 0);
    assert_int_not_equal(state, 0);
    assert_int_equal(ac__utf8_validate(&state, (const uint8_t *)"\x98\x80", 2), 0);
    assert_int_equal(state, 0);
}

static void test_utf8_overlong_two_byte_is_invalid(void **st)
{
    INVALID("\xC0\x80");
    INVALID("\xC0\xAF");
    INVALID("\xC1\xBF");
}

static void test_utf8_overlong_three_byte_is_invalid(void **st)
{
    INVALID("\xE0\x80\x80");
    INVALID("\xE0\x80\xAF");
    INVALID("\xE0\x9F\xBF");
}

static void test_utf8_overlong_four_byte_is_invalid(void **st)
{
    INVALID("\xF0\x80\x80\x80");
    INVALID("\xF0\x80\x80\xAF");
    INVALID("\xF0\x8F\xBF\xBF");
}

static void test_utf8_surrogates_are_invalid(void **st)
{
    INVALID("\xED\xA0\x80"); /* U+D800 */
    INVALID("\xED\xAD\xBF"); /* U+DB7F */
    INVALID("\xED\xBF\xBF"); /* U+DFFF */
}

static void test_utf8_above_max_code_point_is_invalid(void **st)
{
    INVALID("\xF4\x90\x80\x80"); /* U+110000 */
    INVALID("\xF4\xBF\xBF\xBF");
    INVALID("\xF5\x80\x80\x80");
    INVALID("\xF7\xBF\xBF\xBF");
}

static void test_utf8_fe_ff_and_five_byte_leads_are_invalid(void **st)
{
    INVALID("\xFE");
    INVALID("\xFF");
    INVALID("a\xFE\xFE\xFF\xFF");
    INVALID("\xF8\x88\x80\x80\x80");
    INVALID("\xFC\x84\x80\x80\x80\x80");
}

static void test_utf8_lone_continuation_is_invalid(void **st)
{
    INVALID("\x80");
    INVALID("\xBF");
    INVALID("a\x80z");
    INVALID("\xC3\xA9\xA9"); /* one continuation too many */
}

static void test_utf8_lead_followed_by_non_continuation_is_invalid(void **st)
{
    INVALID("\xC3\x41");
    INVALID("\xE2\x82\x41");
    INVALID("\xF0\x9F\x98\xC3");
}

static void test_utf8_truncated_ending_leaves_nonzero_state(void **st)
{
    static const char *truncated[] = {"\xC3",     "\xE2",         "\xE2\x82",
                                      "\xF0\x9F", "\xF0\x9F\x98", "ok\xF4\x8F\xBF"};
    for (size_t i = 0; i < sizeof(truncated) / sizeof(truncated[0]); i++) {
        uint32_t state;
        assert_int_equal(utf8_whole(truncated[i], strlen(truncated[i]), &state), 0);
        assert_int_not_equal(state, 0);
    }
}

static void test_utf8_invalid_split_across_calls_is_caught(void **st)
{
    uint32_t state = 0;
    assert_int_equal(ac__utf8_validate(&state, (const uint8_t *)"ab\xED", 3), 0);
    assert_int_equal(ac__utf8_validate(&state, (const uint8_t *)"\xA0\x80", 2), -1);
}

static void test_utf8_rejection_is_sticky(void **st)
{
    uint32_t state = 0;
    assert_int_equal(ac__utf8_validate(&state, (const uint8_t *)"\xFF", 1), -1);
    assert_int_not_equal(state, 0);
    assert_int_equal(ac__utf8_validate(&state, (const uint8_t *)"abc", 3), -1);
}

static void test_utf8_bad_byte_after_long_ascii_run_is_caught(void **st)
{
    /* Every position, so the 8-bytes-at-a-time ASCII path and the tail both see it. */
    char buf[40];
    for (size_t pos = 0; pos < sizeof(buf); pos++) {
        memset(buf, 'x', sizeof(buf));
        buf[pos] = (char)0x80;
        assert_utf8_invalid(buf, sizeof(buf));
    }
}

static void test_utf8_valid_char_after_long_ascii_run_is_valid(void **st)
{
    char buf[40];
    for (size_t pos = 0; pos + 2 <= sizeof(buf); pos++) {
        memset(buf, 'x', sizeof(buf));
        buf[pos] = (char)0xC3;
        buf[pos + 1] = (char)0xA9;
        assert_utf8_valid(buf, sizeof(buf));
    }
}

/* ---- close codes ---- */

static void test_close_codes_valid(void **st)
{
    static const unsigned valid[] = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012,
                                     1013, 1014, 3000, 3999, 4000, 4001, 4002, 4003, 4008, 4999};
    for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
        if (!ac__ws_close_code_valid(valid[i]))
            fail_msg("code %u should be valid", valid[i]);
    }
}

static void test_close_codes_invalid(void **st)
{
    static const unsigned invalid[] = {0,    1,    999,  1004, 1005, 1006,  1015,
                                       1016, 1100, 2000, 2999, 5000, 65535, 0xFFFFFFFFu};
    for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
        if (ac__ws_close_code_valid(invalid[i]))
            fail_msg("code %u should be invalid", invalid[i]);
    }
}

/* ---- accept key ---- */

static void test_accept_key_rfc6455_sample(void **st)
{
    /* RFC 6455 section 1.3; the SHA-1 bytes it lists (b3 7a 4f 2c ... c4 ea) encode to this. */
    static const char key[] = "dGhlIHNhbXBsZSBub25jZQ==";
    char out[29];
    assert_int_equal(ac__ws_accept_key(key, sizeof(key) - 1, out), 0);
    assert_string_equal(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

static void test_accept_key_second_sample(void **st)
{
    /* Bytes 1..16; expected value computed independently (Python hashlib + base64). */
    static const char key[] = "AQIDBAUGBwgJCgsMDQ4PEA==";
    char out[29];
    assert_int_equal(ac__ws_accept_key(key, sizeof(key) - 1, out), 0);
    assert_string_equal(out, "C/0nmHhBztSRGR1CwL6Tf4ZjwpY=");
}

static void test_accept_key_reads_only_key_len_bytes(void **st)
{
    /* Header values are not NUL-terminated: whatever follows must not matter. */
    static const char buf[] = "dGhlIHNhbXBsZSBub25jZQ==\r\nHost: x";
    char out[29];
    assert_int_equal(ac__ws_accept_key(buf, 24, out), 0);
    assert_string_equal(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

static void test_accept_key_rejects_short_key(void **st)
{
    static const char key[] = "dGhlIHNhbXBsZSBub25jZQ=";
    char out[29];
    assert_int_equal(ac__ws_accept_key(key, sizeof(key) - 1, out), -1);
    assert_int_equal(ac__ws_accept_key(key, 0, out), -1);
}

static void test_accept_key_rejects_long_key(void **st)
{
    static const char key[] = "dGhlIHNhbXBsZSBub25jZQ===";
    char out[29];
    assert_int_equal(ac__ws_accept_key(key, sizeof(key) - 1, out), -1);
}

static void test_accept_key_rejects_non_base64(void **st)
{
    static const char *bad[] = {
        "dGhlIHNhbXBsZSBub25j*Q==", "dGhlIHNhbXBsZSBub25j Q==", "dGhlIHNhbXBsZSBub25j-Q==",
        "dGhlIHNhbXBsZSBub25j_Q==", "dGhlIHNh=XBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZQ\r\n"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char out[29];
        assert_int_equal(ac__ws_accept_key(bad[i], 24, out), -1);
    }
}

static void test_accept_key_rejects_embedded_nul(void **st)
{
    static const char key[] = "dGhlIHNhbXBsZSBu\0\x32\x35jZQ==";
    char out[29];
    assert_int_equal(ac__ws_accept_key(key, 24, out), -1);
}

static void test_accept_key_rejects_17_byte_key(void **st)
{
    static const char key[] = "AAAAAAAAAAAAAAAAAAAAAAA="; /* base64 of 17 zero bytes */
    char out[29];
    assert_int_equal(ac__ws_accept_key(key, sizeof(key) - 1, out), -1);
}

static void test_accept_key_rejects_18_byte_key(void **st)
{
    static const char key[] = "AAAAAAAAAAAAAAAAAAAAAAAA"; /* base64 of 18 zero bytes */
    char out[29];
    assert_int_equal(ac__ws_accept_key(key, sizeof(key) - 1, out), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_encode_len_0_uses_7bit_form),
        cmocka_unit_test(test_header_encode_len_125_uses_7bit_form),
        cmocka_unit_test(test_header_encode_len_126_uses_16bit_form),
        cmocka_unit_test(test_header_encode_len_65535_uses_16bit_form),
        cmocka_unit_test(test_header_encode_len_65536_uses_64bit_form),
        cmocka_unit_test(test_header_encode_len_2_pow_32_uses_64bit_form),
        cmocka_unit_test(test_header_encode_without_fin_clears_fin_bit),
        cmocka_unit_test(test_header_encode_then_decode_roundtrips),
        cmocka_unit_test(test_header_decode_7bit_masked),
        cmocka_unit_test(test_header_decode_7bit_unmasked),
        cmocka_unit_test(test_header_decode_16bit_length),
        cmocka_unit_test(test_header_decode_64bit_length),
        cmocka_unit_test(test_header_decode_splits_fin_rsv_opcode),
        cmocka_unit_test(test_header_decode_ignores_payload_after_header),
        cmocka_unit_test(test_header_decode_incomplete_returns_0_at_every_prefix),
        cmocka_unit_test(test_header_decode_64bit_length_with_msb_set_is_malformed),
        cmocka_unit_test(test_check_accepts_masked_text_frame),
        cmocka_unit_test(test_check_unmasked_frame_is_protocol_error),
        cmocka_unit_test(test_check_any_rsv_bit_is_protocol_error),
        cmocka_unit_test(test_check_reserved_opcodes_are_protocol_error),
        cmocka_unit_test(test_check_fragmented_ping_is_protocol_error),
        cmocka_unit_test(test_check_fragmented_close_is_protocol_error),
        cmocka_unit_test(test_check_ping_of_125_bytes_is_accepted),
        cmocka_unit_test(test_check_ping_of_126_bytes_is_protocol_error),
        cmocka_unit_test(test_check_pong_of_126_bytes_is_protocol_error),
        cmocka_unit_test(test_check_continuation_without_message_is_protocol_error),
        cmocka_unit_test(test_check_continuation_inside_message_is_accepted),
        cmocka_unit_test(test_check_text_inside_open_message_is_protocol_error),
        cmocka_unit_test(test_check_binary_inside_open_message_is_protocol_error),
        cmocka_unit_test(test_check_ping_inside_open_message_is_accepted),
        cmocka_unit_test(test_check_single_frame_of_max_size_is_accepted),
        cmocka_unit_test(test_check_single_frame_over_max_is_too_big),
        cmocka_unit_test(test_check_fragments_accumulating_over_max_are_too_big),
        cmocka_unit_test(test_check_huge_length_does_not_wrap_past_limit),
        cmocka_unit_test(test_check_new_message_ignores_stale_message_len),
        cmocka_unit_test(test_unmask_matches_naive_at_every_offset_length_alignment),
        cmocka_unit_test(test_unmask_large_offset_uses_offset_mod_4),
        cmocka_unit_test(test_unmask_in_pieces_equals_unmask_whole),
        cmocka_unit_test(test_unmask_decodes_rfc6455_masked_hello),
        cmocka_unit_test(test_utf8_empty_is_valid),
        cmocka_unit_test(test_utf8_ascii_is_valid),
        cmocka_unit_test(test_utf8_two_byte_chars_are_valid),
        cmocka_unit_test(test_utf8_three_byte_chars_are_valid),
        cmocka_unit_test(test_utf8_four_byte_chars_are_valid),
        cmocka_unit_test(test_utf8_max_code_point_is_valid),
        cmocka_unit_test(test_utf8_split_at_every_boundary_is_valid),
        cmocka_unit_test(test_utf8_byte_by_byte_is_valid),
        cmocka_unit_test(test_utf8_split_character_leaves_nonzero_state_between_calls),
        cmocka_unit_test(test_utf8_overlong_two_byte_is_invalid),
        cmocka_unit_test(test_utf8_overlong_three_byte_is_invalid),
        cmocka_unit_test(test_utf8_overlong_four_byte_is_invalid),
        cmocka_unit_test(test_utf8_surrogates_are_invalid),
        cmocka_unit_test(test_utf8_above_max_code_point_is_invalid),
        cmocka_unit_test(test_utf8_fe_ff_and_five_byte_leads_are_invalid),
        cmocka_unit_test(test_utf8_lone_continuation_is_invalid),
        cmocka_unit_test(test_utf8_lead_followed_by_non_continuation_is_invalid),
        cmocka_unit_test(test_utf8_truncated_ending_leaves_nonzero_state),
        cmocka_unit_test(test_utf8_invalid_split_across_calls_is_caught),
        cmocka_unit_test(test_utf8_rejection_is_sticky),
        cmocka_unit_test(test_utf8_bad_byte_after_long_ascii_run_is_caught),
        cmocka_unit_test(test_utf8_valid_char_after_long_ascii_run_is_valid),
        cmocka_unit_test(test_close_codes_valid),
        cmocka_unit_test(test_close_codes_invalid),
        cmocka_unit_test(test_accept_key_rfc6455_sample),
        cmocka_unit_test(test_accept_key_second_sample),
        cmocka_unit_test(test_accept_key_reads_only_key_len_bytes),
        cmocka_unit_test(test_accept_key_rejects_short_key),
        cmocka_unit_test(test_accept_key_rejects_long_key),
        cmocka_unit_test(test_accept_key_rejects_non_base64),
        cmocka_unit_test(test_accept_key_rejects_embedded_nul),
        cmocka_unit_test(test_accept_key_rejects_17_byte_key),
        cmocka_unit_test(test_accept_key_rejects_18_byte_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
