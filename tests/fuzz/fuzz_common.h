/* What every fuzz target shares: an invariant check that aborts (libFuzzer then keeps the
 * input), logs that go nowhere, and exact-size copies (so ASan sees any overread). A target
 * defines FUZZ_NAME before including this. */
#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agentcast.h"

__attribute__((unused)) static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, FUZZ_NAME ": invariant broken: %s\n", what);
        abort();
    }
}

static void fuzz_null_sink(ac_log_level_t level, const char *line, void *arg)
{
    (void)level;
    (void)arg;
    check(strlen(line) < 1024, "log line over its buffer");
}

/* Logs at `level` go nowhere: debug still runs the formatting of fuzzed fields. */
__attribute__((unused)) static void fuzz_quiet_logs(ac_log_level_t level)
{
    ac_log_set_sink(fuzz_null_sink, NULL);
    ac_log_set_level(level);
}

/* A copy in a block of exactly n bytes (1 when n is 0, so the pointer is never NULL). */
__attribute__((unused)) static void *dup_exact(const void *p, size_t n)
{
    void *d = malloc(n ? n : 1);

    check(d != NULL, "malloc");
    if (n > 0)
        memcpy(d, p, n);
    return d;
}

#endif
