/* Logging: a replaceable sink, a level and a format. The default sink writes one line per
 * event to stderr, as text (a UTC timestamp, the level, the key=value fields) or as one
 * JSON object; it is the only place in the library that prints. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/log.h"
#include "core/utf8.h"

static ac_log_cb log_sink;
static void *log_sink_arg;
static ac_log_level_t log_level = AC_LOG_INFO;
static ac_log_format_t log_format = AC_LOG_TEXT;

static const char *const level_names[] = {"error", "warn", "info", "debug"};
static const char *const format_names[] = {"text", "json"};

void ac_log_set_sink(ac_log_cb cb, void *arg)
{
    log_sink = cb;
    log_sink_arg = arg;
}

void ac_log_set_level(ac_log_level_t level)
{
    log_level = level;
}

void ac_log_set_format(ac_log_format_t format)
{
    log_format = format;
}

int ac_log_level_parse(const char *name, ac_log_level_t *out)
{
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcasecmp(name, level_names[i]) == 0) {
            *out = (ac_log_level_t)i;
            return 0;
        }
    }
    return AC_EINVAL;
}

int ac_log_format_parse(const char *name, ac_log_format_t *out)
{
    for (size_t i = 0; i < sizeof(format_names) / sizeof(format_names[0]); i++) {
        if (strcasecmp(name, format_names[i]) == 0) {
            *out = (ac_log_format_t)i;
            return 0;
        }
    }
    return AC_EINVAL;
}

int ac__log_enabled(ac_log_level_t level)
{
    return level <= log_level;
}

/* A bounded output buffer: appends past the end are dropped, the caller checks `len`. */
typedef struct out_s {
    char *p;
    size_t len, cap;
} out_t;

static void put(out_t *o, const char *s, size_t n)
{
    if (o->len + n <= o->cap)
        memcpy(o->p + o->len, s, n);
    o->len += n;
}

/* `s[0..n)` as the inside of a JSON string: escapes quotes, backslashes and control
 * characters, and replaces bytes that are not UTF-8 with U+FFFD, so the line always parses. */
static void put_json_chars(out_t *o, const char *s, size_t n)
{
    size_t i = 0;

    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\', esc[1] = (char)c;
            put(o, esc, 2);
            i++;
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(esc, sizeof(esc), "\\u%04x", c);
            put(o, esc, 6);
            i++;
        } else if (c < 0x80) {
            put(o, s + i, 1);
            i++;
        } else {
            size_t len = ac__utf8_char_len((const uint8_t *)s + i, n - i);
            if (len == 0) {
                put(o, "\\ufffd", 6);
                len = 1;
            } else {
                put(o, s + i, len);
            }
            i += len;
        }
    }
}

static void put_member(out_t *o, const char *key, size_t klen, const char *val, size_t vlen)
{
    put(o, ",\"", 2);
    put_json_chars(o, key, klen);
    put(o, "\":\"", 3);
    put_json_chars(o, val, vlen);
    put(o, "\"", 1);
}

static int is_key_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
}

/* Turns `key=value key2="a value" ...` into JSON members. A quoted value ends at a quote
 * followed by a space or the end of the line (the producers do not escape quotes). Tokens
 * that are not key=value are gathered, space separated, into one "msg" member. */
static void put_fields(out_t *o, const char *line)
{
    char msg[1024];
    size_t mlen = 0;
    const char *p = line;

    while (*p != '\0') {
        while (*p == ' ')
            p++;
        if (*p == '\0')
            break;
        const char *k = p;
        while (is_key_char(*p))
            p++;
        size_t klen = (size_t)(p - k);
        const char *v, *end;
        if (klen > 0 && *p == '=' && p[1] == '"') {
            v = p + 2;
            end = v;
            while (*end != '\0' && !(end[0] == '"' && (end[1] == ' ' || end[1] == '\0')))
                end++;
            put_member(o, k, klen, v, (size_t)(end - v));
            p = *end == '"' ? end + 1 : end;
            continue;
        }
        if (klen > 0 && *p == '=') {
            v = p + 1;
            end = v;
            while (*end != '\0' && *end != ' ')
                end++;
            put_member(o, k, klen, v, (size_t)(end - v));
            p = end;
            continue;
        }
        while (*p != '\0' && *p != ' ')
            p++;
        size_t n = (size_t)(p - k);
        if (mlen > 0 && mlen < sizeof(msg))
            msg[mlen++] = ' ';
        if (mlen + n <= sizeof(msg)) {
            memcpy(msg + mlen, k, n);
            mlen += n;
        }
    }
    if (mlen > 0)
        put_member(o, "msg", 3, msg, mlen);
}

static void default_sink(ac_log_level_t level, const char *line)
{
    struct timespec ts;
    struct tm tm;
    char stamp[64], date[32];
    char buf[8192];
    out_t o = {buf, 0, sizeof(buf) - 2};

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(stamp, sizeof(stamp), "%s.%03ldZ", date, ts.tv_nsec / 1000000);
    if (log_format == AC_LOG_JSON) {
        put(&o, "{\"ts\":\"", 7);
        put(&o, stamp, strlen(stamp));
        put(&o, "\",\"level\":\"", 11);
        put(&o, level_names[level], strlen(level_names[level]));
        put(&o, "\"", 1);
        put_fields(&o, line);
        if (o.len > o.cap) { /* cannot happen for a 1 KiB line; never print half an object */
            static const char tail[] = "\",\"level\":\"error\",\"event\":\"log_line_too_long\"";
            o.len = 0;
            put(&o, "{\"ts\":\"", 7);
            put(&o, stamp, strlen(stamp));
            put(&o, tail, sizeof(tail) - 1);
        }
        buf[o.len++] = '}'; /* cap left room for these two */
        buf[o.len++] = '\n';
        /* One write per line, so lines from several threads never interleave. */
        fwrite(buf, 1, o.len, stderr);
        return;
    }
    fprintf(stderr, "ts=%s level=%s %s\n", stamp, level_names[level], line);
}

static void log_v(ac_log_level_t level, const char *fmt, va_list ap)
{
    char line[1024];

    vsnprintf(line, sizeof(line), fmt, ap);
    if (log_sink != NULL)
        log_sink(level, line, log_sink_arg);
    else
        default_sink(level, line);
}

void ac__log(ac_log_level_t level, const char *fmt, ...)
{
    va_list ap;

    if (!ac__log_enabled(level))
        return;
    va_start(ap, fmt);
    log_v(level, fmt, ap);
    va_end(ap);
}

/* The public name of the same function: one body, two symbols (the .so exports only this). */
void ac_log(ac_log_level_t level, const char *fmt, ...) __attribute__((alias("ac__log")));
