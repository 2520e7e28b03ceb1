/* Unit tests for src/core/log.c: the default sink's text and JSON formats (stderr is
 * redirected to a temporary file and read back; JSON lines are parsed with jansson), level
 * filtering, and a replaced sink receiving the key=value line whatever the format. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "agentcast.h"

/* What the default sink wrote to stderr while `emit` ran; caller frees. */
typedef void (*emit_fn)(void);

static char *capture_stderr(emit_fn emit)
{
    FILE *tmp = tmpfile();
    int saved = dup(STDERR_FILENO);
    char *text = calloc(1, 65536);

    assert_non_null(tmp);
    assert_non_null(text);
    fflush(stderr);
    assert_true(dup2(fileno(tmp), STDERR_FILENO) >= 0);
    emit();
    fflush(stderr);
    assert_true(dup2(saved, STDERR_FILENO) >= 0);
    close(saved);
    rewind(tmp);
    size_t n = fread(text, 1, 65535, tmp);
    text[n] = '\0';
    fclose(tmp);
    return text;
}

/* The one JSON object of a one-line capture; caller decrefs. */
static json_t *one_json_line(const char *text)
{
    json_error_t err;
    size_t len = strlen(text);

    assert_true(len > 0);
    assert_int_equal(text[len - 1], '\n');
    assert_null(memchr(text, '\n', len - 1)); /* exactly one line */
    json_t *o = json_loadb(text, len - 1, JSON_REJECT_DUPLICATES, &err);
    if (o == NULL)
        fail_msg("not JSON (%s): %s", err.text, text);
    assert_true(json_is_object(o));
    return o;
}

static const char *member(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    assert_non_null(v);
    assert_true(json_is_string(v));
    return json_string_value(v);
}

static int setup_json(void **st)
{
    ac_log_set_sink(NULL, NULL);
    ac_log_set_level(AC_LOG_INFO);
    ac_log_set_format(AC_LOG_JSON);
    return 0;
}

static int teardown(void **st)
{
    ac_log_set_sink(NULL, NULL);
    ac_log_set_level(AC_LOG_INFO);
    ac_log_set_format(AC_LOG_TEXT);
    return 0;
}

static void emit_fields(void)
{
    ac_log(AC_LOG_INFO, "event=ws_open conn=1a user=u42 conns=%d", 3);
}

static void test_json_fields_are_string_members_after_ts_and_level(void **st)
{
    char *text = capture_stderr(emit_fields);
    json_t *o = one_json_line(text);

    assert_int_equal(json_object_size(o), 6);
    assert_string_equal(member(o, "level"), "info");
    assert_int_equal(strlen(member(o, "ts")), strlen("2026-11-25T17:49:20.123Z"));
    assert_int_equal(member(o, "ts")[23], 'Z');
    assert_string_equal(member(o, "event"), "ws_open");
    assert_string_equal(member(o, "conn"), "1a");
    assert_string_equal(member(o, "user"), "u42");
    assert_string_equal(member(o, "conns"), "3");
    assert_true(strncmp(text, "{\"ts\":", 6) == 0); /* ts first, for humans reading raw */
    json_decref(o);
    free(text);
}

static void emit_quoted(void)
{
    ac_log(AC_LOG_WARN, "event=webhook_failed reason=\"connection refused by peer\" attempts=3");
}

static void test_json_quoted_value_keeps_its_spaces_not_its_quotes(void **st)
{
    char *text = capture_stderr(emit_quoted);
    json_t *o = one_json_line(text);

    assert_string_equal(member(o, "level"), "warn");
    assert_string_equal(member(o, "reason"), "connection refused by peer");
    assert_string_equal(member(o, "attempts"), "3");
    json_decref(o);
    free(text);
}

static void emit_free_text(void)
{
    ac_log(AC_LOG_ERROR, "something odd happened event=odd here");
}

static void test_json_text_that_is_not_key_value_goes_to_msg(void **st)
{
    char *text = capture_stderr(emit_free_text);
    json_t *o = one_json_line(text);

    assert_string_equal(member(o, "msg"), "something odd happened here");
    assert_string_equal(member(o, "event"), "odd");
    json_decref(o);
    free(text);
}

static void emit_hostile(void)
{
    /* A tab, a control byte, a backslash, an inner quote, valid UTF-8 and a stray 0xff. */
    ac_log(AC_LOG_INFO, "event=x user=a\tb\x01\\c\"d reason=\"caf\xc3\xa9 \xff end\"");
}

static void test_json_escapes_controls_quotes_and_invalid_utf8(void **st)
{
    char *text = capture_stderr(emit_hostile);
    json_t *o = one_json_line(text);

    assert_string_equal(member(o, "user"), "a\tb\x01\\c\"d");
    assert_string_equal(member(o, "reason"), "caf\xc3\xa9 \xef\xbf\xbd end");
    json_decref(o);
    free(text);
}

static void emit_unterminated(void)
{
    ac_log(AC_LOG_INFO, "event=x reason=\"never closed");
}

static void test_json_unterminated_quote_takes_the_rest_of_the_line(void **st)
{
    char *text = capture_stderr(emit_unterminated);
    json_t *o = one_json_line(text);

    assert_string_equal(member(o, "reason"), "never closed");
    json_decref(o);
    free(text);
}

static void emit_long(void)
{
    char big[2000];
    memset(big, '\x01', sizeof(big) - 1); /* each byte escapes to six */
    big[sizeof(big) - 1] = '\0';
    ac_log(AC_LOG_INFO, "event=big v=%s", big);
}

static void test_json_longest_line_of_control_bytes_is_still_one_object(void **st)
{
    char *text = capture_stderr(emit_long);
    json_t *o = one_json_line(text);

    assert_string_equal(member(o, "event"), "big");
    json_decref(o);
    free(text);
}

static void emit_debug(void)
{
    ac_log(AC_LOG_DEBUG, "event=hidden");
}

static void test_below_the_level_nothing_is_written(void **st)
{
    char *text = capture_stderr(emit_debug);
    assert_string_equal(text, "");
    free(text);
}

static void emit_text(void)
{
    ac_log_set_format(AC_LOG_TEXT);
    ac_log(AC_LOG_INFO, "event=ws_open user=u1");
}

static void test_text_format_is_ts_level_and_the_line(void **st)
{
    char *text = capture_stderr(emit_text);

    assert_true(strncmp(text, "ts=", 3) == 0);
    assert_non_null(strstr(text, "Z level=info event=ws_open user=u1\n"));
    free(text);
}

static char sink_line[256];
static ac_log_level_t sink_level;

static void sink(ac_log_level_t level, const char *line, void *arg)
{
    sink_level = level;
    snprintf(sink_line, sizeof(sink_line), "%s", line);
    (*(int *)arg)++;
}

static void test_replaced_sink_gets_the_key_value_line_in_json_mode(void **st)
{
    int calls = 0;

    ac_log_set_sink(sink, &calls);
    ac_log(AC_LOG_WARN, "event=x n=%d", 7);
    assert_int_equal(calls, 1);
    assert_int_equal(sink_level, AC_LOG_WARN);
    assert_string_equal(sink_line, "event=x n=7");
}

static void test_format_parse(void **st)
{
    ac_log_format_t f = AC_LOG_TEXT;

    assert_int_equal(ac_log_format_parse("json", &f), 0);
    assert_int_equal(f, AC_LOG_JSON);
    assert_int_equal(ac_log_format_parse("TEXT", &f), 0);
    assert_int_equal(f, AC_LOG_TEXT);
    assert_int_equal(ac_log_format_parse("xml", &f), AC_EINVAL);
    assert_int_equal(f, AC_LOG_TEXT);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup_json, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_json_fields_are_string_members_after_ts_and_level),
        T(test_json_quoted_value_keeps_its_spaces_not_its_quotes),
        T(test_json_text_that_is_not_key_value_goes_to_msg),
        T(test_json_escapes_controls_quotes_and_invalid_utf8),
        T(test_json_unterminated_quote_takes_the_rest_of_the_line),
        T(test_json_longest_line_of_control_bytes_is_still_one_object),
        T(test_below_the_level_nothing_is_written),
        T(test_text_format_is_ts_level_and_the_line),
        T(test_replaced_sink_gets_the_key_value_line_in_json_mode),
        T(test_format_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
