/* Unit tests for src/core/event.c: type-name classification (critical, agent_error,
 * custom, reserved, malformed), the data fields each type requires, and the envelope's
 * ISO 8601 timestamps. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <jansson.h>

#include "core/event.h"

/* ---- ac__ev_type_parse ---- */

static int parse(const char *name, const char **reason)
{
    *reason = NULL;
    return ac__ev_type_parse(name, strlen(name), reason);
}

static void assert_malformed(const char *name, size_t len)
{
    const char *reason = NULL;
    assert_int_equal(ac__ev_type_parse(name, len, &reason), -1);
    assert_non_null(reason);
    assert_non_null(strstr(reason, "malformed"));
    assert_null(strstr(reason, "reserved"));
}

static void test_type_parse_agent_started(void **st)
{
    const char *reason;
    assert_int_equal(parse("agent_started", &reason), AC__EV_AGENT_STARTED);
    assert_null(reason);
}

static void test_type_parse_agent_thinking(void **st)
{
    const char *reason;
    assert_int_equal(parse("agent_thinking", &reason), AC__EV_AGENT_THINKING);
    assert_null(reason);
}

static void test_type_parse_tool_executing(void **st)
{
    const char *reason;
    assert_int_equal(parse("tool_executing", &reason), AC__EV_TOOL_EXECUTING);
    assert_null(reason);
}

static void test_type_parse_tool_completed(void **st)
{
    const char *reason;
    assert_int_equal(parse("tool_completed", &reason), AC__EV_TOOL_COMPLETED);
    assert_null(reason);
}

static void test_type_parse_agent_completed(void **st)
{
    const char *reason;
    assert_int_equal(parse("agent_completed", &reason), AC__EV_AGENT_COMPLETED);
    assert_null(reason);
}

static void test_type_parse_agent_error(void **st)
{
    const char *reason;
    assert_int_equal(parse("agent_error", &reason), AC__EV_AGENT_ERROR);
    assert_null(reason);
}

static void test_type_parse_custom_name_with_all_allowed_chars(void **st)
{
    const char *reason;
    assert_int_equal(parse("my.event-1_x", &reason), AC__EV_CUSTOM);
    assert_null(reason);
}

static void test_type_parse_single_letter_is_custom(void **st)
{
    const char *reason;
    assert_int_equal(parse("a", &reason), AC__EV_CUSTOM);
}

static void test_type_parse_prefix_of_critical_is_custom(void **st)
{
    const char *reason;
    assert_int_equal(parse("agent_start", &reason), AC__EV_CUSTOM);
    assert_int_equal(parse("agent_startedx", &reason), AC__EV_CUSTOM);
}

static void test_type_parse_uses_len_not_nul(void **st)
{
    const char *reason = NULL;
    /* "agent_started" followed by more bytes, classified on its first 13 bytes only. */
    assert_int_equal(ac__ev_type_parse("agent_started!!", 13, &reason), AC__EV_AGENT_STARTED);
}

static void test_type_parse_64_chars_is_valid(void **st)
{
    char name[65];
    memset(name, 'a', 64);
    name[64] = '\0';
    const char *reason;
    assert_int_equal(parse(name, &reason), AC__EV_CUSTOM);
    assert_null(reason);
}

static void test_type_parse_65_chars_is_malformed(void **st)
{
    char name[66];
    memset(name, 'a', 65);
    name[65] = '\0';
    assert_malformed(name, 65);
}

static void test_type_parse_uppercase_is_malformed(void **st)
{
    assert_malformed("Agent_started", 13);
    assert_malformed("agentStarted", 12);
}

static void test_type_parse_leading_digit_is_malformed(void **st)
{
    assert_malformed("1event", 6);
}

static void test_type_parse_leading_punctuation_is_malformed(void **st)
{
    assert_malformed("_event", 6);
    assert_malformed(".event", 6);
    assert_malformed("-event", 6);
}

static void test_type_parse_space_is_malformed(void **st)
{
    assert_malformed("my event", 8);
    assert_malformed("event ", 6);
}

static void test_type_parse_empty_is_malformed(void **st)
{
    assert_malformed("", 0);
}

static void test_type_parse_non_ascii_is_malformed(void **st)
{
    assert_malformed("caf\xc3\xa9", 5);
}

static void test_type_parse_embedded_nul_is_malformed(void **st)
{
    assert_malformed("ab\0c", 4);
}

static void assert_reserved(const char *name)
{
    const char *reason = NULL;
    assert_int_equal(ac__ev_type_parse(name, strlen(name), &reason), -1);
    assert_non_null(reason);
    assert_non_null(strstr(reason, "reserved"));
}

static void test_type_parse_connected_is_reserved(void **st)
{
    assert_reserved("connected");
}

static void test_type_parse_ping_is_reserved(void **st)
{
    assert_reserved("ping");
}

static void test_type_parse_pong_is_custom_not_reserved(void **st)
{
    /* pong is a client's message, never a server's: event.h does not reserve it. */
    const char *reason;
    assert_int_equal(parse("pong", &reason), AC__EV_CUSTOM);
    assert_null(reason);
}

static void test_type_parse_resync_is_reserved(void **st)
{
    assert_reserved("resync");
}

static void test_type_parse_error_is_reserved(void **st)
{
    assert_reserved("error");
}

static void test_type_parse_closing_is_reserved(void **st)
{
    assert_reserved("closing");
}

static void test_type_parse_user_message_is_reserved(void **st)
{
    /* Only the gateway publishes it, from the user's own connection. */
    assert_reserved("user_message");
}

static void test_type_parse_reserved_prefix_is_custom(void **st)
{
    const char *reason;
    assert_int_equal(parse("pin", &reason), AC__EV_CUSTOM);
    assert_int_equal(parse("pings", &reason), AC__EV_CUSTOM);
    assert_int_equal(parse("error2", &reason), AC__EV_CUSTOM);
}

/* ---- ac__ev_type_name ---- */

static void test_type_name_roundtrips_through_parse(void **st)
{
    for (int t = 0; t < AC__EV_CUSTOM; t++) {
        const char *reason;
        if (t == AC__EV_USER_MESSAGE)
            continue; /* named, but reserved for the gateway */
        assert_int_equal(parse(ac__ev_type_name((ac__ev_type_t)t), &reason), t);
    }
    assert_string_equal(ac__ev_type_name(AC__EV_USER_MESSAGE), "user_message");
}

static void test_type_name_custom_and_out_of_range(void **st)
{
    assert_string_equal(ac__ev_type_name(AC__EV_CUSTOM), "custom");
    assert_string_equal(ac__ev_type_name(AC__EV_NTYPES), "custom");
    assert_string_equal(ac__ev_type_name(AC__EV_AGENT_ERROR), "agent_error");
}

/* ---- ac__ev_data_field ---- */

static void test_data_field_names_their_bits(void **st)
{
    static const struct {
        const char *name;
        unsigned bit;
    } f[] = {{"agent", AC__DF_AGENT},   {"thought", AC__DF_THOUGHT},
             {"tool", AC__DF_TOOL},     {"tool_call_id", AC__DF_TOOL_CALL_ID},
             {"result", AC__DF_RESULT}, {"error", AC__DF_ERROR}};

    for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++)
        assert_int_equal(ac__ev_data_field(f[i].name, strlen(f[i].name)), f[i].bit);
}

static void test_data_field_other_names_are_zero(void **st)
{
    assert_int_equal(ac__ev_data_field("too", 3), 0);
    assert_int_equal(ac__ev_data_field("tool_call", 9), 0);
    assert_int_equal(ac__ev_data_field("results", 7), 0);
    assert_int_equal(ac__ev_data_field("Agent", 5), 0);
    assert_int_equal(ac__ev_data_field("", 0), 0);
}

static void test_check_fields_reports_first_missing_in_order(void **st)
{
    const char *field = NULL;

    assert_int_equal(ac__ev_check_fields(AC__EV_TOOL_COMPLETED, AC__DF_RESULT, &field), -1);
    assert_string_equal(field, "tool");
    assert_int_equal(ac__ev_check_fields(AC__EV_TOOL_COMPLETED, AC__DF_TOOL, &field), -1);
    assert_string_equal(field, "tool_call_id");
    assert_int_equal(ac__ev_check_fields(AC__EV_CUSTOM, 0, &field), 0);
}

/* ---- ac__ev_check_data ---- */

static int check(ac__ev_type_t t, const char *data_json, const char **field)
{
    json_error_t err;
    json_t *data = json_loads(data_json, 0, &err);
    assert_non_null(data);
    *field = NULL;
    int rc = ac__ev_check_data(t, data, field);
    json_decref(data);
    return rc;
}

static void assert_missing(ac__ev_type_t t, const char *data_json, const char *want)
{
    const char *field;
    assert_int_equal(check(t, data_json, &field), -1);
    assert_non_null(field);
    assert_string_equal(field, want);
}

static void assert_complete(ac__ev_type_t t, const char *data_json)
{
    const char *field;
    assert_int_equal(check(t, data_json, &field), 0);
    assert_null(field);
}

static void test_check_agent_started_needs_agent(void **st)
{
    assert_missing(AC__EV_AGENT_STARTED, "{}", "agent");
    assert_complete(AC__EV_AGENT_STARTED, "{\"agent\":\"a\"}");
}

static void test_check_agent_thinking_needs_thought(void **st)
{
    assert_missing(AC__EV_AGENT_THINKING, "{\"agent\":\"a\"}", "thought");
    assert_complete(AC__EV_AGENT_THINKING, "{\"thought\":\"t\"}");
}

static void test_check_tool_executing_needs_tool(void **st)
{
    assert_missing(AC__EV_TOOL_EXECUTING, "{\"tool_call_id\":\"c\"}", "tool");
}

static void test_check_tool_executing_needs_tool_call_id(void **st)
{
    assert_missing(AC__EV_TOOL_EXECUTING, "{\"tool\":\"x\"}", "tool_call_id");
    assert_complete(AC__EV_TOOL_EXECUTING, "{\"tool\":\"x\",\"tool_call_id\":\"c\"}");
}

static void test_check_tool_completed_needs_tool(void **st)
{
    assert_missing(AC__EV_TOOL_COMPLETED, "{\"tool_call_id\":\"c\",\"result\":1}", "tool");
}

static void test_check_tool_completed_needs_tool_call_id(void **st)
{
    assert_missing(AC__EV_TOOL_COMPLETED, "{\"tool\":\"x\",\"result\":1}", "tool_call_id");
}

static void test_check_tool_completed_needs_result(void **st)
{
    assert_missing(AC__EV_TOOL_COMPLETED, "{\"tool\":\"x\",\"tool_call_id\":\"c\"}", "result");
    assert_complete(AC__EV_TOOL_COMPLETED, "{\"tool\":\"x\",\"tool_call_id\":\"c\",\"result\":1}");
}

static void test_check_agent_completed_needs_result(void **st)
{
    assert_missing(AC__EV_AGENT_COMPLETED, "{\"agent\":\"a\"}", "result");
    assert_complete(AC__EV_AGENT_COMPLETED, "{\"result\":\"done\"}");
}

static void test_check_agent_error_needs_error(void **st)
{
    assert_missing(AC__EV_AGENT_ERROR, "{\"message\":\"m\"}", "error");
    assert_complete(AC__EV_AGENT_ERROR, "{\"error\":{\"code\":1}}");
}

static void test_check_custom_needs_nothing(void **st)
{
    assert_complete(AC__EV_CUSTOM, "{}");
}

static void test_check_null_field_counts_as_missing(void **st)
{
    assert_missing(AC__EV_AGENT_STARTED, "{\"agent\":null}", "agent");
    assert_missing(AC__EV_TOOL_COMPLETED, "{\"tool\":\"x\",\"tool_call_id\":null,\"result\":1}",
                   "tool_call_id");
}

static void test_check_falsy_values_count_as_present(void **st)
{
    assert_complete(AC__EV_AGENT_COMPLETED, "{\"result\":false}");
    assert_complete(AC__EV_AGENT_COMPLETED, "{\"result\":0}");
    assert_complete(AC__EV_AGENT_COMPLETED, "{\"result\":\"\"}");
    assert_complete(AC__EV_AGENT_COMPLETED, "{\"result\":[]}");
}

static void test_check_names_first_missing_when_all_missing(void **st)
{
    assert_missing(AC__EV_TOOL_COMPLETED, "{}", "tool");
}

/* ---- ac__iso8601_ms ---- */

static void assert_iso(int64_t ms, const char *want)
{
    char out[25];
    memset(out, 'X', sizeof(out));
    ac__iso8601_ms(ms, out);
    assert_int_equal(out[24], '\0');
    assert_string_equal(out, want);
}

static void test_iso8601_epoch_zero(void **st)
{
    assert_iso(0, "1970-01-01T00:00:00.000Z");
}

static void test_iso8601_sub_second_digits(void **st)
{
    assert_iso(1, "1970-01-01T00:00:00.001Z");
    assert_iso(10, "1970-01-01T00:00:00.010Z");
    assert_iso(999, "1970-01-01T00:00:00.999Z");
    assert_iso(1000, "1970-01-01T00:00:01.000Z");
}

static void test_iso8601_known_instant(void **st)
{
    assert_iso(INT64_C(1764093760123), "2025-11-25T18:02:40.123Z");
}

static void test_iso8601_matches_gmtime(void **st)
{
    static const int64_t instants[] = {INT64_C(1764093760123), INT64_C(951782400000),
                                       INT64_C(4102444799999), INT64_C(86399999)};
    for (size_t i = 0; i < sizeof(instants) / sizeof(instants[0]); i++) {
        time_t secs = (time_t)(instants[i] / 1000);
        struct tm tm;
        assert_non_null(gmtime_r(&secs, &tm));
        char want[96];
        snprintf(want, sizeof(want), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                 (int)(instants[i] % 1000));
        assert_iso(instants[i], want);
    }
}

static void test_iso8601_leap_day(void **st)
{
    assert_iso(INT64_C(951782400000), "2000-02-29T00:00:00.000Z");
}

static void test_now_ms_is_close_to_time(void **st)
{
    int64_t before = (int64_t)time(NULL) * 1000;
    int64_t now = ac__now_ms();
    int64_t after = (int64_t)time(NULL) * 1000 + 1000;
    assert_true(now >= before);
    assert_true(now < after);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_type_parse_agent_started),
        cmocka_unit_test(test_type_parse_agent_thinking),
        cmocka_unit_test(test_type_parse_tool_executing),
        cmocka_unit_test(test_type_parse_tool_completed),
        cmocka_unit_test(test_type_parse_agent_completed),
        cmocka_unit_test(test_type_parse_agent_error),
        cmocka_unit_test(test_type_parse_custom_name_with_all_allowed_chars),
        cmocka_unit_test(test_type_parse_single_letter_is_custom),
        cmocka_unit_test(test_type_parse_prefix_of_critical_is_custom),
        cmocka_unit_test(test_type_parse_uses_len_not_nul),
        cmocka_unit_test(test_type_parse_64_chars_is_valid),
        cmocka_unit_test(test_type_parse_65_chars_is_malformed),
        cmocka_unit_test(test_type_parse_uppercase_is_malformed),
        cmocka_unit_test(test_type_parse_leading_digit_is_malformed),
        cmocka_unit_test(test_type_parse_leading_punctuation_is_malformed),
        cmocka_unit_test(test_type_parse_space_is_malformed),
        cmocka_unit_test(test_type_parse_empty_is_malformed),
        cmocka_unit_test(test_type_parse_non_ascii_is_malformed),
        cmocka_unit_test(test_type_parse_embedded_nul_is_malformed),
        cmocka_unit_test(test_type_parse_connected_is_reserved),
        cmocka_unit_test(test_type_parse_ping_is_reserved),
        cmocka_unit_test(test_type_parse_pong_is_custom_not_reserved),
        cmocka_unit_test(test_type_parse_resync_is_reserved),
        cmocka_unit_test(test_type_parse_error_is_reserved),
        cmocka_unit_test(test_type_parse_closing_is_reserved),
        cmocka_unit_test(test_type_parse_user_message_is_reserved),
        cmocka_unit_test(test_type_parse_reserved_prefix_is_custom),
        cmocka_unit_test(test_type_name_roundtrips_through_parse),
        cmocka_unit_test(test_type_name_custom_and_out_of_range),
        cmocka_unit_test(test_check_agent_started_needs_agent),
        cmocka_unit_test(test_check_agent_thinking_needs_thought),
        cmocka_unit_test(test_check_tool_executing_needs_tool),
        cmocka_unit_test(test_check_tool_executing_needs_tool_call_id),
        cmocka_unit_test(test_check_tool_completed_needs_tool),
        cmocka_unit_test(test_check_tool_completed_needs_tool_call_id),
        cmocka_unit_test(test_check_tool_completed_needs_result),
        cmocka_unit_test(test_check_agent_completed_needs_result),
        cmocka_unit_test(test_check_agent_error_needs_error),
        cmocka_unit_test(test_check_custom_needs_nothing),
        cmocka_unit_test(test_check_null_field_counts_as_missing),
        cmocka_unit_test(test_check_falsy_values_count_as_present),
        cmocka_unit_test(test_check_names_first_missing_when_all_missing),
        cmocka_unit_test(test_iso8601_epoch_zero),
        cmocka_unit_test(test_iso8601_sub_second_digits),
        cmocka_unit_test(test_iso8601_known_instant),
        cmocka_unit_test(test_data_field_names_their_bits),
        cmocka_unit_test(test_data_field_other_names_are_zero),
        cmocka_unit_test(test_check_fields_reports_first_missing_in_order),
        cmocka_unit_test(test_iso8601_matches_gmtime),
        cmocka_unit_test(test_iso8601_leap_day),
        cmocka_unit_test(test_now_ms_is_close_to_time),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
