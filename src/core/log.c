/* Logging: a replaceable sink and a level. The default sink writes a UTC timestamp,
 * the level and the line to stderr; it is the only place in the library that prints. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/log.h"

static ac_log_cb log_sink;
static void *log_sink_arg;
static ac_log_level_t log_level = AC_LOG_INFO;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void ac_log_set_sink(ac_log_cb cb, void *arg)
{
    log_sink = cb;
    log_sink_arg = arg;
}

void ac_log_set_level(ac_log_level_t level)
{
    log_level = level;
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

int ac__log_enabled(ac_log_level_t level)
{
    return level <= log_level;
}

static void default_sink(ac_log_level_t level, const char *line)
{
    struct timespec ts;
    struct tm tm;
    char stamp[32];

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
    fprintf(stderr, "ts=%s.%03ldZ level=%s %s\n", stamp, ts.tv_nsec / 1000000, level_names[level],
            line);
}

void ac__log(ac_log_level_t level, const char *fmt, ...)
{
    char line[1024];
    va_list ap;

    if (!ac__log_enabled(level))
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (log_sink != NULL)
        log_sink(level, line, log_sink_arg);
    else
        default_sink(level, line);
}
