/* agentcastd: the daemon. One user of the library's public API: parse the configuration,
 * create the server on the default loop, run until SIGTERM/SIGINT (SIGHUP reloads the TLS
 * certificate and the JWKS file), shut down gracefully.
 * Nothing here knows about sockets or events. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "agentcast.h"
#include "server/config.h"
#include "server/demo.h"

typedef struct daemon_s {
    ac_server_t *server;
    uv_signal_t sigterm;
    uv_signal_t sigint;
    uv_signal_t sighup; /* reload: TLS certificate, JWKS file */
    int signals;
    demo_t *demo;
} daemon_t;

static void on_shutdown_done(ac_server_t *server, void *arg)
{
    daemon_t *d = arg;

    uv_close((uv_handle_t *)&d->sigterm, NULL);
    uv_close((uv_handle_t *)&d->sigint, NULL);
    uv_close((uv_handle_t *)&d->sighup, NULL);
}

static void on_sighup(uv_signal_t *h, int signum)
{
    daemon_t *d = h->data;

    ac_server_reload(d->server); /* logs what reloaded and what kept its old version */
}

static void on_signal(uv_signal_t *h, int signum)
{
    daemon_t *d = h->data;

    if (d->signals++ > 0) {
        fprintf(stderr, "agentcastd: second signal, exiting now\n");
        exit(1);
    }
    sd_notify(0, "STOPPING=1");
    ac_server_shutdown(d->server, on_shutdown_done, d);
}

/* A gateway holds one descriptor per connection: take all the kernel allows. */
static void raise_nofile(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* --check-config: everything ac_server_new() validates (limits, the listen address, the TLS
 * files, the webhook URL), on a scratch loop with the memory broker, so neither Redis is
 * contacted nor any port bound. Prints the effective configuration. 0 valid, 2 not. */
static int check_config(const ac_config_t *cfg)
{
    ac_server_opts_t opts = cfg->server;
    uv_loop_t loop;
    ac_server_t *server;
    int err = 0;

    ac_config_print(cfg, stdout);
    fflush(stdout);
    opts.broker = "memory";
    if (uv_loop_init(&loop) != 0)
        return 1;
    server = ac_server_new(&loop, &opts, &err);
    if (server != NULL)
        ac_server_free(server);
    uv_run(&loop, UV_RUN_NOWAIT);
    uv_loop_close(&loop);
    if (server == NULL) {
        fprintf(stderr, "agentcastd: invalid configuration: %s\n", ac_strerror(err));
        return 2;
    }
    fprintf(stderr, "agentcastd: the configuration is valid\n");
    return 0;
}

static int run(const ac_config_t *cfg);

int main(int argc, char **argv)
{
    ac_config_t cfg;
    int rc = ac_config_parse(&cfg, argc, argv) != 0 ? 2 : run(&cfg);

    ac_config_dispose(&cfg);
    return rc;
}

static int run(const ac_config_t *cfg)
{
    daemon_t d = {0};
    uv_loop_t *loop = uv_default_loop();
    int err = 0;

    if (cfg->help) {
        ac_config_usage(stdout);
        return 0;
    }
    if (cfg->help_man) {
        ac_config_man(stdout);
        return 0;
    }
    if (cfg->version) {
        printf("agentcastd %s\n", AC_VERSION);
        return 0;
    }
    ac_log_set_level(cfg->log_level);
    ac_log_set_format(cfg->log_format);
    if (cfg->server.auth == AC_AUTH_JWT &&
        (cfg->server.jwt_secret == NULL || cfg->server.jwt_secret[0] == '\0') &&
        cfg->server.jwt_jwks_file == NULL && cfg->server.jwt_jwks_url == NULL) {
        fprintf(stderr, "agentcastd: --auth=jwt needs --jwt-secret (or AGENTCAST_JWT_SECRET), "
                        "--jwt-jwks-file or --jwt-jwks-url (or --auth=none for development)\n");
        return 2;
    }
    if (cfg->server.jwt_jwks_file != NULL && cfg->server.jwt_jwks_url != NULL) {
        fprintf(stderr, "agentcastd: --jwt-jwks-file and --jwt-jwks-url: give one of them\n");
        return 2;
    }
    if (cfg->server.auth == AC_AUTH_PROXY && cfg->server.auth_proxy_url == NULL) {
        fprintf(stderr, "agentcastd: --auth=proxy needs --auth-proxy-url\n");
        return 2;
    }
    if (cfg->check_config) {
        int r = check_config(cfg);
        uv_loop_close(loop); /* the default loop's own allocations (LeakSanitizer) */
        return r;
    }
    signal(SIGPIPE, SIG_IGN);
    /* `systemctl reload` sends SIGHUP: never let it end the daemon (a reload handler, where
     * there is one, replaces this). */
    signal(SIGHUP, SIG_IGN);
    raise_nofile();

    d.server = ac_server_new(loop, &cfg->server, &err);
    if (d.server == NULL && err == AC_EUNAVAIL) {
        fprintf(stderr, "agentcastd: the broker (%s) is unreachable; see the error above\n",
                cfg->server.broker);
        return 1;
    }
    if (d.server == NULL) {
        fprintf(stderr, "agentcastd: invalid configuration: %s\n", ac_strerror(err));
        return 2;
    }
    if (cfg->demo && (d.demo = demo_start(d.server)) == NULL) {
        fprintf(stderr, "agentcastd: cannot start the demo agent\n");
        return 1;
    }
    if (cfg->server.auth == AC_AUTH_NONE)
        ac_log(AC_LOG_WARN, "event=auth_none reason=\"--auth=none: any client may claim any "
                            "user_id. For development only; never expose this to a network.\"");
    /* Signals first: a supervisor may stop us the moment we say we listen. */
    uv_signal_init(loop, &d.sigterm);
    uv_signal_init(loop, &d.sigint);
    d.sigterm.data = d.sigint.data = &d;
    uv_signal_start(&d.sigterm, on_signal, SIGTERM);
    uv_signal_start(&d.sigint, on_signal, SIGINT);
    uv_signal_init(loop, &d.sighup);
    d.sighup.data = &d;
    uv_signal_start(&d.sighup, on_sighup, SIGHUP);
    err = ac_server_start(d.server);
    if (err != 0) {
        fprintf(stderr, "agentcastd: cannot listen on %s: %s\n", cfg->server.listen,
                ac_strerror(err));
        return 1;
    }
    /* systemd (Type=notify): ready once we listen; a no-op without $NOTIFY_SOCKET. */
    sd_notifyf(0, "READY=1\nSTATUS=listening on port %d\nMAINPID=%lu", ac_server_port(d.server),
               (unsigned long)getpid());

    uv_run(loop, UV_RUN_DEFAULT);

    demo_stop(d.demo);
    ac_server_free(d.server);
    if (uv_loop_close(loop) != 0)
        fprintf(stderr, "agentcastd: warning: handles left open at exit\n");
    return 0;
}
