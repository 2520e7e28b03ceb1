/* The daemon's configuration: command-line flags, AGENTCAST_* environment variables and
 * their defaults, all from one table (which also writes --help). */
#ifndef AC_SERVER_CONFIG_H
#define AC_SERVER_CONFIG_H

#include "agentcast.h"

typedef struct ac_config_s {
    ac_server_opts_t server;
    ac_log_level_t log_level;
    int demo;
    int help;
    int version;
} ac_config_t;

/* Fills `cfg` from defaults, then the environment, then argv (flags win). Returns 0, or
 * -1 after printing the reason on stderr. Strings point into argv or the environment. */
int ac_config_parse(ac_config_t *cfg, int argc, char **argv);

/* Prints every flag with its default and environment variable. */
void ac_config_usage(FILE *out);

#endif
