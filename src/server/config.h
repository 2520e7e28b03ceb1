/* The daemon's configuration: command-line flags, AGENTCAST_* environment variables, a
 * config file (--config) and the defaults, all from one table, which also writes --help,
 * the manual page (--help-man) and the effective configuration (--check-config). */
#ifndef AC_SERVER_CONFIG_H
#define AC_SERVER_CONFIG_H

#include <stdio.h>

#include "agentcast.h"

#define AC_CONFIG_MAX_FLAGS 128

typedef struct ac_config_s {
    ac_server_opts_t server;
    ac_log_level_t log_level;
    ac_log_format_t log_format;
    int demo;
    const char *config_file; /* --config or AGENTCAST_CONFIG; NULL: none */
    int check_config;
    int help;
    int help_man;
    int version;
    /* Private to config.c: the config file's text (values point into it) and where each
     * setting came from. */
    char *file_text;
    struct {
        unsigned char from;
        unsigned line;
    } src[AC_CONFIG_MAX_FLAGS];
} ac_config_t;

/* Fills `cfg` from the defaults, then the config file, then the environment, then argv:
 * command line > environment > file > defaults. Returns 0, or -1 after printing the reason
 * on stderr (a file's errors name the file and line). Strings point into argv, the
 * environment or cfg's copy of the file. Call ac_config_dispose() afterwards either way. */
int ac_config_parse(ac_config_t *cfg, int argc, char **argv);

/* Frees what ac_config_parse() allocated (the file's text). */
void ac_config_dispose(ac_config_t *cfg);

/* Prints every setting as a `name = value` line with where it came from; secrets (the kind
 * K_SECRET in the table) are masked. */
void ac_config_print(const ac_config_t *cfg, FILE *out);

/* Prints every flag with its default and environment variable (--help). */
void ac_config_usage(FILE *out);

/* Prints the manual page agentcastd(8) in roff, from the same table (--help-man). */
void ac_config_man(FILE *out);

#endif
