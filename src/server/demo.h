/* The --demo agent (demo.c): answers user messages with live runs, through the public
 * API only, as an embedder would. */
#ifndef AC_SERVER_DEMO_H
#define AC_SERVER_DEMO_H

#include <jansson.h>

#include "agentcast.h"

typedef struct demo_s demo_t;

/* Registers the demo agent as the server's message handler. NULL when out of memory. */
demo_t *demo_start(ac_server_t *server);

/* Joins the workers; call after the loop has finished (the server has shut down). */
void demo_stop(demo_t *demo);

#endif
