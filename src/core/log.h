/* Internal logging: one key=value line per event through the sink chosen with
 * ac_log_set_sink(). Callers check ac__log_enabled() before building costly fields. */
#ifndef AC_CORE_LOG_H
#define AC_CORE_LOG_H

#include "agentcast.h"

int ac__log_enabled(ac_log_level_t level);

/* Formats one line (printf-style) and hands it to the sink when `level` is enabled. */
void ac__log(ac_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
