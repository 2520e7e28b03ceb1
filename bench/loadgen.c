/* loadgen: drives a gateway that speaks agentcast's wire protocol (README.md: agentcastd, or
 * the Node.js peer in bench/peers/) and measures connect cost, server memory per connection,
 * publish throughput over POST /v1/publish or the publisher socket /v1/agent, delivery
 * latency and correctness (lost, duplicate, misrouted, out-of-order events; run order in the
 * token-streaming mode; resume after a reconnect storm). One thread, plain epoll,
 * non-blocking sockets, RFC 6455 client side written by hand. Not a conformance test: no
 * TLS, no JWT. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "lg_util.h"

#define RBUF_SIZE (4u << 20) /* shared read buffer: the largest frame we accept */
#define MAX_HTTP_HEAD 16384  /* a handshake or publish response head larger than this fails */
#define EVENT_JSON_BASE 224  /* one serialised event without its chunk text */
#define EP_CONN 1u
#define EP_PUB 2u
#define EP_TIMER 3u
#define MAX_TARGETS 64 /* gateway nodes one run can drive (--targets) */
#define MAX_PIDS 16    /* server processes whose RSS and CPU are read (--pid) */

/* ---------------------------------------------------------------- options */

enum lg_via { VIA_HTTP, VIA_AGENT };

/* One gateway node: its address as given (the Host header) and as resolved. */
struct target {
    char host[256];
    int port;
    struct sockaddr_in addr;
};

struct lg_opts {
    const char *host;
    int port;
    struct target targets[MAX_TARGETS]; /* --targets, or the one --host/--port */
    uint32_t ntargets;
    uint32_t users;
    uint32_t conns_per_user;
    uint64_t events;
    uint32_t batch;
    uint32_t window; /* frames (requests) in flight per publisher connection */
    uint32_t publishers;
    uint32_t connect_concurrency;
    uint32_t src_addrs; /* spread client sources over 127.0.0.2 .. 127.0.0.(1+src_addrs) */
    int pids[MAX_PIDS]; /* --pid, repeatable or a comma list: the gateway node(s) */
    uint32_t npids;
    int broker_pids[MAX_PIDS]; /* --broker-pid: redis-server(s), reported apart from the nodes */
    uint32_t nbroker;
    const char *redis[MAX_PIDS]; /* --redis HOST:PORT[,...]: INFO before and after publishing */
    uint32_t nredis;
    bool idle;
    int via;
    double rate; /* events/s over all publishers; 0: as fast as the window allows */
    uint32_t stream_runs;
    uint32_t chunks;
    uint32_t chunk_bytes;
    uint32_t chunk_burst;
    bool storm;
    double storm_at;
    const char *api_key;
    const char *label;
    double timeout_s;
    bool quiet;
    bool busy_poll; /* never sleep: poll sockets and the rate clock in a loop */
};

static void usage(FILE *f)
{
    fprintf(f, "usage: loadgen --port P [options]   or   loadgen --targets H:P,H:P,... [options]\n"
               "  --host H               server address (127.0.0.1)\n"
               "  --port P               server port (this or --targets is required)\n"
               "  --targets H:P,...      several gateway nodes (instead of --host/--port):\n"
               "                         a user's K connections go to K consecutive nodes,\n"
               "                         publisher p publishes through node p %% nodes\n"
               "  --users N              users u0..u<N-1> (100)\n"
               "  --conns-per-user K     WebSocket connections per user (1)\n"
               "  --events M             events to publish (1000)\n"
               "  --batch B              events per publish body (an array) (100)\n"
               "  --window W             publish frames/requests in flight per publisher (4)\n"
               "  --publishers C         publisher connections (1)\n"
               "  --via http|agent       POST /v1/publish keep-alive, or the /v1/agent socket "
               "(http)\n"
               "  --rate R               publish R events/s in all (0 = as fast as possible)\n"
               "  --stream-runs N        token streaming: N runs of agent_started, chunks,\n"
               "                         agent_completed (replaces --events)\n"
               "  --chunks C             agent_thinking events per run (200)\n"
               "  --chunk-bytes B        bytes of each chunk's thought (40)\n"
               "  --chunk-burst K        consecutive events of one run per turn in a body (1)\n"
               "  --storm                drop every connection at once mid-stream, resume\n"
               "                         with last_seq+epoch, time until all are whole\n"
               "  --storm-at F           drop after this fraction of events was sent (0.5)\n"
               "  --connect-concurrency  handshakes in flight while connecting (500)\n"
               "  --src-addrs S          client source addresses 127.0.0.2.. (8; 0 = any)\n"
               "  --pid PID[,PID...]     server pid(s), repeatable: RSS and CPU from /proc,\n"
               "                         summed over the pids (and each one listed)\n"
               "  --broker-pid PID[,PID] the broker's pid(s) (redis-server, one per shard): CPU\n"
               "                         and RSS apart, summed (and each one listed)\n"
               "  --redis H:P[,H:P]      read Redis INFO before and after the publish phase:\n"
               "                         commands and bytes per event (summed over shards,\n"
               "                         and each shard's CPU and script time listed)\n"
               "  --idle                 connect all, report RSS per connection, exit\n"
               "  --api-key K            Bearer key for /v1/publish and /v1/agent\n"
               "  --label L              copied into the JSON result\n"
               "  --timeout S            hard stop in seconds (120)\n"
               "  --quiet                no progress lines on stderr\n"
               "  --busy-poll            never sleep in epoll_wait (a pinned core of its own):\n"
               "                         the loadgen's own wake-ups leave the latency figures\n");
}

/* --targets HOST:PORT,HOST:PORT,...: 0, or -1 when malformed or too many. */
static int parse_targets(struct lg_opts *o, const char *arg)
{
    const char *p = arg;
    o->ntargets = 0;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        const char *colon = memrchr(p, ':', len);
        char num[8];
        uint32_t port;
        if (o->ntargets == MAX_TARGETS || !colon || colon == p ||
            (size_t)(colon - p) >= sizeof(o->targets[0].host) ||
            (size_t)(p + len - colon - 1) >= sizeof(num))
            return -1;
        memcpy(num, colon + 1, (size_t)(p + len - colon - 1));
        num[p + len - colon - 1] = '\0';
        if (parse_u32(num, 1, &port) || port > 65535)
            return -1;
        struct target *t = &o->targets[o->ntargets++];
        memcpy(t->host, p, (size_t)(colon - p));
        t->host[colon - p] = '\0';
        t->port = (int)port;
        if (!comma)
            return 0;
        p = comma + 1;
    }
}

/* --pid PID[,PID...], repeatable: appends; 0, or -1 when malformed or too many. */
static int parse_pids(struct lg_opts *o, const char *arg)
{
    char buf[256];
    if (strlen(arg) >= sizeof(buf))
        return -1;
    strcpy(buf, arg);
    char *save, *tok = strtok_r(buf, ",", &save);
    if (!tok)
        return -1;
    for (; tok; tok = strtok_r(NULL, ",", &save)) {
        uint32_t v;
        if (o->npids == MAX_PIDS || parse_u32(tok, 1, &v) || v > INT32_MAX)
            return -1;
        o->pids[o->npids++] = (int)v;
    }
    return 0;
}

static int opts_parse(struct lg_opts *o, int argc, char **argv)
{
    enum {
        O_HOST = 256,
        O_PORT,
        O_USERS,
        O_CPU,
        O_EVENTS,
        O_BATCH,
        O_WINDOW,
        O_PUBS,
        O_VIA,
        O_RATE,
        O_RUNS,
        O_CHUNKS,
        O_CHUNK_BYTES,
        O_CHUNK_BURST,
        O_STORM,
        O_STORM_AT,
        O_CC,
        O_SRC,
        O_PID,
        O_IDLE,
        O_KEY,
        O_LABEL,
        O_TIMEOUT,
        O_QUIET,
        O_BUSY,
        O_TARGETS,
        O_BROKER_PID,
        O_REDIS,
        O_HELP
    };
    static const struct option longopts[] = {
        {"host", required_argument, 0, O_HOST},
        {"port", required_argument, 0, O_PORT},
        {"users", required_argument, 0, O_USERS},
        {"conns-per-user", required_argument, 0, O_CPU},
        {"events", required_argument, 0, O_EVENTS},
        {"batch", required_argument, 0, O_BATCH},
        {"window", required_argument, 0, O_WINDOW},
        {"publishers", required_argument, 0, O_PUBS},
        {"via", required_argument, 0, O_VIA},
        {"rate", required_argument, 0, O_RATE},
        {"stream-runs", required_argument, 0, O_RUNS},
        {"chunks", required_argument, 0, O_CHUNKS},
        {"chunk-bytes", required_argument, 0, O_CHUNK_BYTES},
        {"chunk-burst", required_argument, 0, O_CHUNK_BURST},
        {"storm", no_argument, 0, O_STORM},
        {"storm-at", required_argument, 0, O_STORM_AT},
        {"connect-concurrency", required_argument, 0, O_CC},
        {"src-addrs", required_argument, 0, O_SRC},
        {"pid", required_argument, 0, O_PID},
        {"idle", no_argument, 0, O_IDLE},
        {"api-key", required_argument, 0, O_KEY},
        {"label", required_argument, 0, O_LABEL},
        {"timeout", required_argument, 0, O_TIMEOUT},
        {"quiet", no_argument, 0, O_QUIET},
        {"busy-poll", no_argument, 0, O_BUSY},
        {"targets", required_argument, 0, O_TARGETS},
        {"broker-pid", required_argument, 0, O_BROKER_PID},
        {"redis", required_argument, 0, O_REDIS},
        {"help", no_argument, 0, O_HELP},
        {0, 0, 0, 0},
    };
    *o = (struct lg_opts){.host = "127.0.0.1",
                          .users = 100,
                          .conns_per_user = 1,
                          .events = 1000,
                          .batch = 100,
                          .window = 4,
                          .publishers = 1,
                          .via = VIA_HTTP,
                          .chunks = 200,
                          .chunk_bytes = 40,
                          .chunk_burst = 1,
                          .storm_at = 0.5,
                          .connect_concurrency = 500,
                          .src_addrs = 8,
                          .timeout_s = 120};
    int c;
    uint32_t u32;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        int bad = 0;
        switch (c) {
        case O_HOST:
            o->host = optarg;
            break;
        case O_PORT:
            bad = parse_u32(optarg, 1, &u32) || u32 > 65535;
            o->port = (int)u32;
            break;
        case O_USERS:
            bad = parse_u32(optarg, 1, &o->users);
            break;
        case O_CPU:
            bad = parse_u32(optarg, 1, &o->conns_per_user);
            break;
        case O_EVENTS:
            bad = parse_u64(optarg, &o->events);
            break;
        case O_BATCH:
            bad = parse_u32(optarg, 1, &o->batch) || o->batch > 100000;
            break;
        case O_WINDOW:
            bad = parse_u32(optarg, 1, &o->window);
            break;
        case O_PUBS:
            bad = parse_u32(optarg, 1, &o->publishers);
            break;
        case O_VIA:
            if (strcmp(optarg, "http") == 0)
                o->via = VIA_HTTP;
            else if (strcmp(optarg, "agent") == 0)
                o->via = VIA_AGENT;
            else
                bad = 1;
            break;
        case O_RATE:
            bad = parse_pos_double(optarg, &o->rate);
            break;
        case O_RUNS:
            bad = parse_u32(optarg, 1, &o->stream_runs);
            break;
        case O_CHUNKS:
            bad = parse_u32(optarg, 1, &o->chunks) || o->chunks > 1000000;
            break;
        case O_CHUNK_BYTES:
            bad = parse_u32(optarg, 1, &o->chunk_bytes) || o->chunk_bytes > 65536;
            break;
        case O_CHUNK_BURST:
            bad = parse_u32(optarg, 1, &o->chunk_burst);
            break;
        case O_STORM:
            o->storm = true;
            break;
        case O_STORM_AT:
            bad = parse_pos_double(optarg, &o->storm_at) || o->storm_at >= 1;
            break;
        case O_CC:
            bad = parse_u32(optarg, 1, &o->connect_concurrency);
            break;
        case O_SRC:
            bad = parse_u32(optarg, 0, &o->src_addrs) || o->src_addrs > 250;
            break;
        case O_PID:
            bad = parse_pids(o, optarg);
            break;
        case O_BROKER_PID:
            for (char *save = NULL, *tok = strtok_r(optarg, ",", &save); tok && !bad;
                 tok = strtok_r(NULL, ",", &save)) {
                bad = o->nbroker == MAX_PIDS || parse_u32(tok, 1, &u32) || u32 > INT32_MAX;
                if (!bad)
                    o->broker_pids[o->nbroker++] = (int)u32;
            }
            break;
        case O_TARGETS:
            bad = parse_targets(o, optarg);
            break;
        case O_REDIS:
            for (char *save = NULL, *tok = strtok_r(optarg, ",", &save); tok && !bad;
                 tok = strtok_r(NULL, ",", &save)) {
                bad = o->nredis == MAX_PIDS || strchr(tok, ':') == NULL;
                if (!bad)
                    o->redis[o->nredis++] = tok;
            }
            break;
        case O_IDLE:
            o->idle = true;
            break;
        case O_KEY:
            o->api_key = optarg;
            break;
        case O_LABEL:
            o->label = optarg;
            break;
        case O_TIMEOUT:
            bad = parse_pos_double(optarg, &o->timeout_s);
            break;
        case O_BUSY:
            o->busy_poll = true;
            break;
        case O_QUIET:
            o->quiet = true;
            break;
        case O_HELP:
            usage(stdout);
            exit(0);
        default:
            return -1;
        }
        if (bad) {
            fprintf(stderr, "loadgen: bad value for --%s: %s\n", longopts[c - O_HOST].name, optarg);
            return -1;
        }
    }
    if (optind != argc || (o->port == 0) == (o->ntargets == 0)) {
        fprintf(stderr, "loadgen: --port or --targets is required (not both), and no positional "
                        "arguments are taken\n");
        return -1;
    }
    if (o->ntargets == 0) {
        snprintf(o->targets[0].host, sizeof(o->targets[0].host), "%s", o->host);
        o->targets[0].port = o->port;
        o->ntargets = 1;
    }
    if (strlen(o->host) > 255 || (o->api_key && strlen(o->api_key) > 255) ||
        (o->label && strlen(o->label) > 200)) {
        fprintf(stderr, "loadgen: --host and --api-key take at most 255 bytes, --label 200\n");
        return -1;
    }
    if (o->idle && !o->npids) {
        fprintf(stderr, "loadgen: --idle needs --pid\n");
        return -1;
    }
    if ((uint64_t)o->users * o->conns_per_user > 10000000) {
        fprintf(stderr, "loadgen: too many connections\n");
        return -1;
    }
    if (o->stream_runs) {
        if ((uint64_t)o->stream_runs * (o->chunks + 2) > (1ull << 40)) {
            fprintf(stderr, "loadgen: too many stream events\n");
            return -1;
        }
        o->events = (uint64_t)o->stream_runs * (o->chunks + 2);
    }
    if (o->storm && o->events < 2) {
        fprintf(stderr, "loadgen: --storm needs events to flow\n");
        return -1;
    }
    if (o->publishers > o->users)
        o->publishers = o->users; /* each publisher owns a disjoint set of users */
    return 0;
}

/* ---------------------------------------------------------------- run state */

enum conn_state { CS_NEW, CS_CONNECTING, CS_HANDSHAKE, CS_OPEN, CS_CLOSED };

/* One user WebSocket connection. Its seq bookkeeping survives a storm's reconnect. */
struct conn {
    int fd;
    uint8_t state;
    bool connected;      /* `connected` envelope seen on the current socket */
    bool resume;         /* the next handshake asks for last_seq + epoch */
    bool storm_wait;     /* dropped by the storm and not whole again yet */
    uint16_t close_code; /* from the server's close frame, 0 if none */
    uint8_t node;        /* index in --targets */
    uint32_t user;
    uint64_t base_seq; /* data.last_seq of the first `connected`: seq before our first event */
    uint64_t last_seq;
    uint64_t received; /* distinct events (seq advanced) */
    uint64_t whole_at; /* storm: events its user had when it reconnected */
    char key[25];      /* Sec-WebSocket-Key */
    char epoch[17];    /* data.epoch of `connected` */
    uint8_t *rest;     /* bytes of an incomplete head or frame; owned */
    uint32_t rest_len, rest_cap;
    uint8_t *out; /* unsent bytes; owned */
    uint32_t out_len;
};

/* One token-streaming run: agent_started (k = 0), chunks agent_thinking (k = 1..chunks),
 * agent_completed (k = chunks + 1), published in order by the publisher owning its user. */
struct run {
    uint32_t user;
    uint32_t next; /* k of the next event to publish */
};

/* One publisher connection (keep-alive HTTP or a /v1/agent WebSocket) publishing the events
 * of users u with u % C == index, so every user's events stay in order on one connection. */
struct pub {
    int fd;
    uint32_t index;
    uint32_t node; /* index in --targets: index % nodes */
    bool dead;
    uint64_t to_send;   /* events not yet put in a body */
    uint64_t built;     /* events put in bodies (the rate pacing counts these) */
    uint32_t in_flight; /* bodies sent, reply pending */
    uint32_t *sizes;    /* ring of in-flight body sizes, `window` long; owned */
    uint32_t ring_head;
    uint32_t *runs; /* stream mode: indexes of its runs with events left; owned */
    uint32_t nruns, cursor, burst_used;
    char *out; /* owned */
    size_t out_len, out_off, out_cap;
    char *in; /* owned */
    size_t in_len, in_cap;
};

struct counters {
    uint64_t deliveries; /* event envelopes received */
    uint64_t distinct;   /* of which advanced seq */
    uint64_t dup;
    uint64_t misrouted;
    uint64_t out_of_order; /* seq gaps */
    uint64_t n_mismatch;   /* data.n differs from the position in the user's stream */
    uint64_t run_order;    /* stream mode: run_id, k or type not what the run needs next */
    uint64_t runs_done;    /* stream mode: agent_completed received, over all connections */
    uint64_t proto_errors;
    uint64_t server_errors; /* `error` and other unexpected envelopes */
    uint64_t closed_by_server;
    uint64_t conn_lost; /* EOF or socket error on a user connection */
    uint64_t connect_failed;
    uint64_t not_recovered; /* a resume answered recovered:false */
    uint64_t pings;
    uint64_t pub_requests, pub_responses, pub_events_sent, pub_events_ok, pub_non200;
    uint64_t pub_delivered_sum, pub_unsent;
};

struct lg {
    struct lg_opts o;
    int ep;
    uint64_t rng;
    uint8_t *rbuf;

    struct conn *conns;
    uint32_t nconns;
    uint32_t next_conn;   /* next to start connecting */
    uint32_t handshaking; /* started, `connected` not yet seen */
    uint32_t open;        /* `connected` seen and not closed */

    uint64_t *user_sent; /* events published per user so far (= its last data.n) */
    uint16_t *user_open; /* open connections per user */
    uint64_t need;       /* deliveries still owed to open connections */

    struct pub *pubs;
    char *body;       /* scratch for one publish body */
    size_t body_cap;  /* its size */
    double period_ns; /* rate mode: ns between two events of one publisher */
    int tfd;          /* rate mode: a timerfd armed for the next event due */
    int64_t t_armed;  /* when it is armed for */

    /* stream mode */
    struct run *runs;
    uint32_t runs_per_user; /* ceil(stream_runs / users) */
    uint32_t *run_pos;      /* [conn * runs_per_user + run / users]: next k expected */
    char nonce[9];          /* run_id = r<index>-<nonce>, fresh per loadgen run */
    char *chunk;            /* chunk_bytes of text */

    /* storm mode */
    bool dropped;
    uint32_t storm_waiting; /* connections not whole again */
    int64_t t_drop, t_reconnected, t_whole;
    long listen_overflows0; /* machine-wide TcpExt ListenOverflows at the drop */

    struct counters c;
    struct hist lat;
    uint64_t node_deliveries[MAX_TARGETS]; /* distinct events received on each node's conns */
    uint32_t node_conns[MAX_TARGETS];      /* user connections placed on each node */

    int64_t t_start, t_connected, t_pub_start, t_pub_written, t_pub_acked, t_last_delivery;
    int64_t deadline, next_progress, idle_until;
    uint64_t prog_deliveries;
    uint64_t prog_lat_max; /* the largest latency since the last progress line */
    bool publishing;
    bool server_gone;
    int gone_pid;
};

static void ep_set(struct lg *lg, int fd, uint32_t kind, uint32_t idx, uint32_t events, int op)
{
    struct epoll_event ev = {.events = events, .data.u64 = ((uint64_t)kind << 32) | idx};
    if (epoll_ctl(lg->ep, op, fd, &ev) < 0) {
        perror("loadgen: epoll_ctl");
        exit(2);
    }
}

/* ---------------------------------------------------------------- user connections */

static void conn_close(struct lg *lg, struct conn *c)
{
    if (c->state == CS_CLOSED || c->state == CS_NEW)
        return;
    if (c->connected) {
        lg->open--;
        lg->user_open[c->user]--;
        uint64_t owed = lg->user_sent[c->user] - c->received;
        lg->need -= owed < lg->need ? owed : lg->need;
    } else {
        lg->handshaking--;
    }
    close(c->fd);
    c->fd = -1;
    c->state = CS_CLOSED;
    free(c->rest);
    free(c->out);
    c->rest = NULL;
    c->out = NULL;
    c->rest_len = c->rest_cap = c->out_len = 0;
}

static void conn_fail(struct lg *lg, struct conn *c, const char *why)
{
    uint32_t i = (uint32_t)(c - lg->conns);
    if (c->storm_wait) {
        /* it will not be whole again; the run fails on connect_failed or conn_lost */
        c->storm_wait = false;
        lg->storm_waiting--;
    }
    if (!c->connected) {
        if (lg->c.connect_failed++ < 5)
            fprintf(stderr, "loadgen: conn %u (u%u) failed before connected: %s\n", i, c->user,
                    why);
    } else if (lg->c.conn_lost++ < 5) {
        fprintf(stderr, "loadgen: conn %u (u%u) lost: %s\n", i, c->user, why);
    }
    conn_close(lg, c);
}

static int conn_flush(struct lg *lg, struct conn *c)
{
    while (c->out_len) {
        ssize_t n = send(c->fd, c->out, c->out_len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            return -1;
        }
        memmove(c->out, c->out + n, c->out_len - (size_t)n);
        c->out_len -= (uint32_t)n;
    }
    uint32_t events = EPOLLIN | (c->out_len ? EPOLLOUT : 0);
    ep_set(lg, c->fd, EP_CONN, (uint32_t)(c - lg->conns), events, EPOLL_CTL_MOD);
    return 0;
}

static int conn_send(struct lg *lg, struct conn *c, const void *data, size_t len)
{
    uint8_t *p = realloc(c->out, c->out_len + len);
    if (!p)
        return -1;
    c->out = p;
    memcpy(c->out + c->out_len, data, len);
    c->out_len += (uint32_t)len;
    return conn_flush(lg, c);
}

/* Sends a masked control frame (payload <= 125 bytes), as a client must. */
static int conn_send_control(struct lg *lg, struct conn *c, unsigned opcode, const uint8_t *pl,
                             size_t len)
{
    uint8_t f[14 + 125];
    size_t hl = ws_client_header(f, opcode, len, (uint32_t)rng_next(&lg->rng));
    uint32_t mask;
    memcpy(&mask, f + hl - 4, 4);
    memcpy(f + hl, pl, len);
    ws_mask(f + hl, len, mask);
    return conn_send(lg, c, f, hl + len);
}

static void conn_start(struct lg *lg, struct conn *c)
{
    uint32_t i = (uint32_t)(c - lg->conns);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        perror("loadgen: socket");
        exit(2);
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (lg->o.src_addrs) {
        /* pick the port at connect() time, so each source address has its own port range */
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
        struct sockaddr_in src = {.sin_family = AF_INET};
        src.sin_addr.s_addr = htonl(0x7f000002u + i % lg->o.src_addrs);
        if (bind(fd, (struct sockaddr *)&src, sizeof(src)) < 0) {
            perror("loadgen: bind source address");
            exit(2);
        }
    }
    c->fd = fd;
    c->state = CS_CONNECTING;
    c->connected = false;
    lg->handshaking++;
    ep_set(lg, fd, EP_CONN, i, EPOLLOUT, EPOLL_CTL_ADD);
    const struct sockaddr_in *to = &lg->o.targets[c->node].addr;
    if (connect(fd, (const struct sockaddr *)to, sizeof(*to)) < 0 && errno != EINPROGRESS)
        conn_fail(lg, c, strerror(errno));
}

static void conn_send_handshake(struct lg *lg, struct conn *c)
{
    int err = 0;
    socklen_t len = sizeof(err);
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) {
        conn_fail(lg, c, strerror(err));
        return;
    }
    ws_new_key(&lg->rng, c->key);
    char resume[80] = "";
    if (c->resume)
        snprintf(resume, sizeof(resume), "&last_seq=%" PRIu64 "&epoch=%s", c->last_seq, c->epoch);
    char req[640];
    int n =
        snprintf(req, sizeof(req),
                 "GET /ws?user_id=u%u%s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                 "Sec-WebSocket-Version: 13\r\n\r\n",
                 c->user, resume, lg->o.targets[c->node].host, lg->o.targets[c->node].port, c->key);
    c->state = CS_HANDSHAKE;
    if (conn_send(lg, c, req, (size_t)n) < 0)
        conn_fail(lg, c, "send handshake");
}

/* Consumes the 101 response head; returns its length, 0 if incomplete, -1 on failure. */
static long conn_on_handshake(struct lg *lg, struct conn *c, const uint8_t *p, size_t n)
{
    const char *h = (const char *)p;
    const char *end = memmem(h, n, "\r\n\r\n", 4);
    if (!end) {
        if (n > MAX_HTTP_HEAD) {
            conn_fail(lg, c, "handshake response head too large");
            return -1;
        }
        return 0;
    }
    size_t hlen = (size_t)(end - h) + 4;
    int status = http_status(h, hlen);
    if (status != 101) {
        char why[160];
        const char *body = end + 4;
        size_t blen = n - hlen < 80 ? n - hlen : 80;
        snprintf(why, sizeof(why), "handshake status %d %.*s", status, (int)blen, body);
        conn_fail(lg, c, why);
        return -1;
    }
    const char *v;
    size_t vlen;
    char want[29];
    ws_accept_for(c->key, want);
    if (!http_header(h, hlen, "Sec-WebSocket-Accept", &v, &vlen) || vlen != 28 ||
        memcmp(v, want, 28) != 0) {
        lg->c.proto_errors++;
        conn_fail(lg, c, "bad Sec-WebSocket-Accept");
        return -1;
    }
    c->state = CS_OPEN;
    return (long)hlen;
}

/* A storm-dropped connection is whole again once it holds every event its user had when it
 * reconnected: those before the drop and those published while it was away. */
static void storm_check_whole(struct lg *lg, struct conn *c)
{
    if (!c->storm_wait || !c->connected || c->received < c->whole_at)
        return;
    c->storm_wait = false;
    if (--lg->storm_waiting == 0)
        lg->t_whole = now_ns();
}

static void on_connected(struct lg *lg, struct conn *c, const char *p, size_t n)
{
    uint64_t last = 0;
    if (c->connected || !json_u64(p, n, "\"last_seq\":", &last)) {
        lg->c.proto_errors++;
        conn_fail(lg, c, "connected envelope without data.last_seq, or twice");
        return;
    }
    const char *ep;
    size_t elen;
    if (json_str(p, n, "\"epoch\":", &ep, &elen) && elen < sizeof(c->epoch)) {
        memcpy(c->epoch, ep, elen);
        c->epoch[elen] = '\0';
    }
    c->connected = true;
    lg->handshaking--;
    lg->open++;
    lg->user_open[c->user]++;
    if (c->resume) {
        /* the replay of what this connection missed follows; it is owed again */
        if (!memmem(p, n, "\"recovered\":true", 16) && lg->c.not_recovered++ < 5)
            fprintf(stderr, "loadgen: resume of u%u at %" PRIu64 " not recovered: %.*s\n", c->user,
                    c->last_seq, (int)(n < 300 ? n : 300), p);
        lg->need += lg->user_sent[c->user] - c->received;
        c->whole_at = lg->user_sent[c->user];
        if (lg->open == lg->nconns && lg->t_reconnected == 0)
            lg->t_reconnected = now_ns();
        storm_check_whole(lg, c);
        return;
    }
    c->base_seq = c->last_seq = last;
}

/* Stream mode: the event must be the next one of a run of this connection's user. */
static void check_run_order(struct lg *lg, struct conn *c, const char *p, size_t n)
{
    const char *rid = NULL, *type = NULL;
    size_t rlen = 0, tlen = 0;
    uint64_t run = 0, k = 0;
    bool ok = json_str(p, n, "\"run_id\":", &rid, &rlen) && rlen > 2 && rid[0] == 'r' &&
              json_u64(p, n, "\"k\":", &k) && json_str(p, n, "\"type\":", &type, &tlen);
    size_t i = 1;
    for (; ok && i < rlen && rid[i] >= '0' && rid[i] <= '9'; i++)
        run = run * 10 + (uint64_t)(rid[i] - '0');
    ok = ok && i > 1 && i < rlen && rid[i] == '-' && rlen - i - 1 == strlen(lg->nonce) &&
         memcmp(rid + i + 1, lg->nonce, rlen - i - 1) == 0 && run < lg->o.stream_runs &&
         run % lg->o.users == c->user;
    uint32_t *pos = NULL;
    if (ok) {
        pos = &lg->run_pos[(size_t)(c - lg->conns) * lg->runs_per_user + run / lg->o.users];
        const char *want = k == 0                  ? "agent_started"
                           : k == lg->o.chunks + 1 ? "agent_completed"
                                                   : "agent_thinking";
        ok = k == *pos && tlen == strlen(want) && memcmp(type, want, tlen) == 0;
    }
    if (!ok) {
        if (lg->c.run_order++ < 5)
            fprintf(stderr, "loadgen: run order on u%u (want k %u): %.*s\n", c->user,
                    pos ? *pos : 0, (int)(n < 200 ? n : 200), p);
        return;
    }
    (*pos)++;
    if (k == lg->o.chunks + 1)
        lg->c.runs_done++;
}

static void on_event(struct lg *lg, struct conn *c, const char *p, size_t n, uint64_t seq)
{
    int64_t now = now_ns();
    lg->c.deliveries++;
    lg->t_last_delivery = now;

    /* routing: "user_id":"u<digits>" must be this connection's user */
    const char *u;
    size_t ulen;
    uint64_t uid = 0;
    bool ok = json_str(p, n, "\"user_id\":", &u, &ulen) && ulen >= 2 && ulen <= 11 && u[0] == 'u';
    for (size_t i = 1; ok && i < ulen; i++) {
        ok = u[i] >= '0' && u[i] <= '9';
        uid = uid * 10 + (uint64_t)(u[i] - '0');
    }
    ok = ok && uid == c->user;
    if (!ok) {
        if (lg->c.misrouted++ < 5)
            fprintf(stderr, "loadgen: misrouted on conn of u%u: %.*s\n", c->user,
                    (int)(n < 200 ? n : 200), p);
        return;
    }

    if (!c->connected) {
        lg->c.proto_errors++;
        conn_fail(lg, c, "event before connected");
        return;
    }
    if (seq <= c->last_seq) {
        if (lg->c.dup++ < 5)
            fprintf(stderr, "loadgen: dup on u%u: seq %" PRIu64 " after %" PRIu64 "\n", c->user,
                    seq, c->last_seq);
        return;
    }
    if (seq != c->last_seq + 1 && lg->c.out_of_order++ < 5)
        fprintf(stderr, "loadgen: gap on u%u: seq %" PRIu64 " after %" PRIu64 "\n", c->user, seq,
                c->last_seq);
    c->last_seq = seq;
    c->received++;
    lg->c.distinct++;
    lg->node_deliveries[c->node]++;
    if (lg->need)
        lg->need--;
    if (c->storm_wait)
        storm_check_whole(lg, c);

    uint64_t ev_n = 0, t = 0;
    if (!json_u64(p, n, "\"n\":", &ev_n) || ev_n != seq - c->base_seq) {
        if (lg->c.n_mismatch++ < 5)
            fprintf(stderr,
                    "loadgen: u%u seq %" PRIu64 " carries n %" PRIu64 ", want %" PRIu64 "\n",
                    c->user, seq, ev_n, seq - c->base_seq);
    }
    if (lg->o.stream_runs)
        check_run_order(lg, c, p, n);
    if (json_u64(p, n, "\"t\":", &t) && (int64_t)t <= now) {
        hist_add(&lg->lat, (uint64_t)(now - (int64_t)t));
        if ((uint64_t)(now - (int64_t)t) > lg->prog_lat_max)
            lg->prog_lat_max = (uint64_t)(now - (int64_t)t);
    } else if (!json_u64(p, n, "\"t\":", &t))
        lg->c.proto_errors++;
    /* a t in the future is a paced event stamped with its schedule, received early: 0 us */
    else
        hist_add(&lg->lat, 0);
}

static void on_text(struct lg *lg, struct conn *c, const char *p, size_t n)
{
    uint64_t seq;
    if (json_u64(p, n, "\"seq\":", &seq)) {
        on_event(lg, c, p, n, seq);
        return;
    }
    const char *t;
    size_t tl;
    if (!json_str(p, n, "\"type\":", &t, &tl)) {
        lg->c.proto_errors++;
        return;
    }
    if (tl == 9 && memcmp(t, "connected", 9) == 0) {
        on_connected(lg, c, p, n);
    } else if (tl == 4 && memcmp(t, "ping", 4) == 0) {
        lg->c.pings++;
    } else if (tl == 7 && memcmp(t, "closing", 7) == 0) {
        /* the close frame follows and is counted there */
    } else {
        if (lg->c.server_errors++ < 5)
            fprintf(stderr, "loadgen: unexpected message on u%u: %.*s\n", c->user,
                    (int)(n < 200 ? n : 200), p);
    }
}

static void on_frame(struct lg *lg, struct conn *c, unsigned b0, const uint8_t *pl, size_t n)
{
    unsigned opcode = b0 & 0x0f;
    bool fin = b0 & 0x80;
    if (b0 & 0x70 || (!fin && opcode != 0)) {
        /* the contract is one unfragmented text frame per message */
        lg->c.proto_errors++;
        conn_fail(lg, c, "RSV bits or fragmented frame from server");
        return;
    }
    switch (opcode) {
    case 0x1:
        on_text(lg, c, (const char *)pl, n);
        break;
    case 0x8: {
        uint16_t code = n >= 2 ? (uint16_t)(pl[0] << 8 | pl[1]) : 1005;
        c->close_code = code;
        if (lg->c.closed_by_server++ < 5)
            fprintf(stderr, "loadgen: server closed conn of u%u with %u %.*s\n", c->user, code,
                    (int)(n > 2 ? n - 2 : 0), (const char *)pl + 2);
        uint8_t echo[2] = {(uint8_t)(code >> 8), (uint8_t)code};
        conn_send_control(lg, c, 0x8, echo, n >= 2 ? 2 : 0);
        conn_close(lg, c);
        break;
    }
    case 0x9:
        if (conn_send_control(lg, c, 0xA, pl, n) < 0)
            conn_fail(lg, c, "send pong");
        break;
    case 0xA:
        break;
    default:
        lg->c.proto_errors++;
        conn_fail(lg, c, "unexpected opcode from server");
        break;
    }
}

/* The header of the server frame at f (n bytes available): its length and payload length;
 * 0 when incomplete, -1 when masked or too large. */
static int server_frame_header(const uint8_t *f, size_t n, size_t *hl, uint64_t *len)
{
    if (n < 2)
        return 0;
    if (f[1] & 0x80)
        return -1;
    *len = f[1] & 0x7f;
    *hl = 2;
    if (*len == 126) {
        if (n < 4)
            return 0;
        *len = (uint64_t)f[2] << 8 | f[3];
        *hl = 4;
    } else if (*len == 127) {
        if (n < 10)
            return 0;
        *len = 0;
        for (int i = 0; i < 8; i++)
            *len = *len << 8 | f[2 + i];
        *hl = 10;
    }
    if (*len > RBUF_SIZE / 2)
        return -1;
    return n - *hl >= *len ? 1 : 0;
}

/* Parses complete frames out of p[0..n); returns bytes consumed or -1 once closed. */
static long conn_parse_frames(struct lg *lg, struct conn *c, const uint8_t *p, size_t n)
{
    size_t off = 0;
    for (;;) {
        size_t hl;
        uint64_t len;
        int r = server_frame_header(p + off, n - off, &hl, &len);
        if (r == 0)
            break;
        if (r < 0) {
            lg->c.proto_errors++;
            conn_fail(lg, c, "masked or oversized frame from server");
            return -1;
        }
        on_frame(lg, c, p[off], p + off + hl, (size_t)len);
        if (c->state == CS_CLOSED)
            return -1;
        off += hl + (size_t)len;
    }
    return (long)off;
}

static void conn_keep_rest(struct lg *lg, struct conn *c, const uint8_t *p, size_t n)
{
    if (n > c->rest_cap) {
        uint8_t *r = realloc(c->rest, n);
        if (!r) {
            conn_fail(lg, c, "out of memory");
            return;
        }
        c->rest = r;
        c->rest_cap = (uint32_t)n;
    }
    if (n > 0)
        memcpy(c->rest, p, n);
    c->rest_len = (uint32_t)n;
}

static void conn_on_readable(struct lg *lg, struct conn *c)
{
    /* read into the shared buffer behind any partial frame kept from the last read */
    for (int round = 0; round < 4 && c->state != CS_CLOSED; round++) {
        size_t have = c->rest_len;
        if (have > 0)
            memcpy(lg->rbuf, c->rest, have);
        size_t room = RBUF_SIZE - have;
        ssize_t r = recv(c->fd, lg->rbuf + have, room, 0);
        if (r == 0) {
            conn_fail(lg, c, "EOF from server");
            return;
        }
        if (r < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                conn_fail(lg, c, strerror(errno));
            return;
        }
        size_t n = have + (size_t)r, off = 0;
        if (c->state == CS_HANDSHAKE) {
            long h = conn_on_handshake(lg, c, lg->rbuf, n);
            if (h < 0)
                return;
            off = (size_t)h;
        }
        if (c->state == CS_OPEN) {
            long used = conn_parse_frames(lg, c, lg->rbuf + off, n - off);
            if (used < 0)
                return;
            off += (size_t)used;
        }
        conn_keep_rest(lg, c, lg->rbuf + off, n - off);
        if ((size_t)r < room)
            return;
    }
}

static void conn_on_event(struct lg *lg, struct conn *c, uint32_t events)
{
    if (c->state == CS_CONNECTING) {
        if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
            conn_send_handshake(lg, c);
        return;
    }
    if (events & EPOLLOUT && conn_flush(lg, c) < 0) {
        conn_fail(lg, c, "send failed");
        return;
    }
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
        conn_on_readable(lg, c);
}

/* Starts connections until connect_concurrency handshakes are in flight. */
static void conns_start_more(struct lg *lg)
{
    while (lg->next_conn < lg->nconns && lg->handshaking < lg->o.connect_concurrency) {
        struct conn *c = &lg->conns[lg->next_conn++];
        if (c->state == CS_NEW)
            conn_start(lg, c);
    }
}

/* The storm: every user connection is dropped at once (RST, as a network failure would),
 * then all reconnect with last_seq and epoch while the publishers keep going. */
static void storm_drop(struct lg *lg)
{
    lg->dropped = true;
    lg->t_drop = now_ns();
    lg->listen_overflows0 = tcpext_counter("ListenOverflows");
    struct linger lin = {.l_onoff = 1, .l_linger = 0};
    for (uint32_t i = 0; i < lg->nconns; i++) {
        struct conn *c = &lg->conns[i];
        if (c->state == CS_CLOSED || c->state == CS_NEW)
            continue;
        bool was = c->connected;
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lin, sizeof(lin));
        conn_close(lg, c);
        c->connected = false;
        c->state = CS_NEW;
        c->resume = was;
        c->storm_wait = true;
        lg->storm_waiting++;
    }
    lg->next_conn = 0;
    if (!lg->o.quiet)
        fprintf(stderr, "[%6.1fs] storm: dropped %u connections after %" PRIu64 " events\n",
                (double)(lg->t_drop - lg->t_start) / NS_PER_S, lg->storm_waiting,
                lg->c.pub_events_sent);
    conns_start_more(lg);
}

/* ---------------------------------------------------------------- events and bodies */

static char *put(char *b, const char *s, size_t n)
{
    memcpy(b, s, n);
    return b + n;
}

static char *put_str(char *b, const char *s)
{
    return put(b, s, strlen(s));
}

static char *put_u64(char *b, uint64_t v)
{
    return b + u64_to_dec(b, v);
}

/* One event for `user`, whose stream position it is `n`; `run` is NULL outside stream mode.
 * data carries n (checked against seq), k (the run position) and t (ns, for latency). */
static char *put_event(const struct lg *lg, char *b, uint32_t user, uint64_t n,
                       const struct run *run, uint32_t run_index, uint32_t k, int64_t t)
{
    b = put_str(b, "{\"user_id\":\"u");
    b = put_u64(b, user);
    if (!run) {
        b = put_str(b, "\",\"type\":\"agent_thinking\",\"data\":{\"thought\":\"x\"");
    } else {
        const char *type = k == 0                  ? "agent_started"
                           : k == lg->o.chunks + 1 ? "agent_completed"
                                                   : "agent_thinking";
        b = put_str(b, "\",\"type\":\"");
        b = put_str(b, type);
        b = put_str(b, "\",\"run_id\":\"r");
        b = put_u64(b, run_index);
        *b++ = '-';
        b = put_str(b, lg->nonce);
        if (k == 0) {
            b = put_str(b, "\",\"data\":{\"agent\":\"bench\"");
        } else if (k == lg->o.chunks + 1) {
            b = put_str(b, "\",\"data\":{\"result\":\"done\"");
        } else {
            b = put_str(b, "\",\"data\":{\"thought\":\"");
            b = put(b, lg->chunk, lg->o.chunk_bytes);
            *b++ = '"';
        }
        b = put_str(b, ",\"k\":");
        b = put_u64(b, k);
    }
    b = put_str(b, ",\"n\":");
    b = put_u64(b, n);
    b = put_str(b, ",\"t\":");
    b = put_u64(b, (uint64_t)t);
    return put_str(b, "}}");
}

/* The next run event of publisher p: its run and k. Runs take turns, each giving up to
 * chunk_burst consecutive events per turn; a finished run leaves the rotation. */
static uint32_t pub_next_run_event(struct lg *lg, struct pub *p, uint32_t *k)
{
    uint32_t *burst_used = &p->burst_used;
    uint32_t ri = p->runs[p->cursor];
    struct run *r = &lg->runs[ri];
    *k = r->next++;
    if (r->next == lg->o.chunks + 2) {
        p->runs[p->cursor] = p->runs[--p->nruns];
        *burst_used = 0;
        if (p->cursor >= p->nruns)
            p->cursor = 0;
    } else if (++*burst_used >= lg->o.chunk_burst) {
        *burst_used = 0;
        p->cursor = (p->cursor + 1) % p->nruns;
    }
    return ri;
}

/* Builds one body of `count` events into lg->body (a JSON array, or one object when the
 * batch is 1); returns its length. */
static size_t pub_build_body(struct lg *lg, struct pub *p, uint32_t count)
{
    uint32_t C = lg->o.publishers;
    uint32_t owned = (lg->o.users - p->index + C - 1) / C;
    bool array = lg->o.batch > 1;
    int64_t now = now_ns();
    char *b = lg->body;
    if (array)
        *b++ = '[';
    for (uint32_t i = 0; i < count; i++) {
        /* paced events are stamped with when they were due, so a late send shows up as
         * latency (no coordinated omission) */
        int64_t t =
            lg->o.rate > 0 ? lg->t_pub_start + (int64_t)((double)p->built * lg->period_ns) : now;
        if (i)
            *b++ = ',';
        if (lg->o.stream_runs) {
            uint32_t k;
            uint32_t ri = pub_next_run_event(lg, p, &k);
            uint32_t user = lg->runs[ri].user;
            uint64_t n = ++lg->user_sent[user];
            lg->need += lg->user_open[user];
            b = put_event(lg, b, user, n, &lg->runs[ri], ri, k, t);
        } else {
            uint32_t user = p->index + C * (uint32_t)(rng_next(&lg->rng) % owned);
            uint64_t n = ++lg->user_sent[user];
            lg->need += lg->user_open[user];
            b = put_event(lg, b, user, n, NULL, 0, 0, t);
        }
        p->built++;
    }
    if (array)
        *b++ = ']';
    return (size_t)(b - lg->body);
}

/* ---------------------------------------------------------------- publishers */

static void pub_fail(struct lg *lg, struct pub *p, const char *why)
{
    fprintf(stderr, "loadgen: publisher %u failed: %s (%u bodies unanswered)\n", p->index, why,
            p->in_flight);
    for (uint32_t i = 0; i < p->in_flight; i++)
        lg->c.pub_non200 += p->sizes[(p->ring_head + i) % lg->o.window];
    lg->c.pub_unsent += p->to_send;
    p->in_flight = 0;
    p->to_send = 0;
    p->dead = true;
    close(p->fd);
    p->fd = -1;
}

static int buf_reserve(char **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    size_t ncap = *cap ? *cap : 65536;
    while (ncap < need)
        ncap *= 2;
    char *b = realloc(*buf, ncap);
    if (!b)
        return -1;
    *buf = b;
    *cap = ncap;
    return 0;
}

/* Serialises one publish of `count` events (a POST or a masked text frame) into p->out. */
static int pub_build(struct lg *lg, struct pub *p, uint32_t count)
{
    size_t blen = pub_build_body(lg, p, count);
    if (buf_reserve(&p->out, &p->out_cap, p->out_len + blen + 512) < 0)
        return -1;
    if (lg->o.via == VIA_AGENT) {
        uint32_t mask = (uint32_t)rng_next(&lg->rng);
        p->out_len += ws_client_header((uint8_t *)p->out + p->out_len, 0x1, blen, mask);
        memcpy(p->out + p->out_len, lg->body, blen);
        ws_mask((uint8_t *)p->out + p->out_len, blen, mask);
    } else {
        char auth[300] = "";
        if (lg->o.api_key)
            snprintf(auth, sizeof(auth), "Authorization: Bearer %s\r\n", lg->o.api_key);
        int hl = snprintf(p->out + p->out_len, 512,
                          "POST /v1/publish HTTP/1.1\r\nHost: %s:%d\r\n%s"
                          "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                          lg->o.targets[p->node].host, lg->o.targets[p->node].port, auth, blen);
        if (hl < 0 || hl >= 512)
            return -1;
        p->out_len += (size_t)hl;
        memcpy(p->out + p->out_len, lg->body, blen);
    }
    p->out_len += blen;
    p->sizes[(p->ring_head + p->in_flight) % lg->o.window] = count;
    p->in_flight++;
    p->to_send -= count;
    lg->c.pub_requests++;
    lg->c.pub_events_sent += count;
    return 0;
}

static void pub_flush(struct lg *lg, struct pub *p)
{
    while (p->out_off < p->out_len) {
        ssize_t n = send(p->fd, p->out + p->out_off, p->out_len - p->out_off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            pub_fail(lg, p, strerror(errno));
            return;
        }
        p->out_off += (size_t)n;
    }
    bool pending = p->out_off < p->out_len;
    if (!pending) {
        p->out_off = p->out_len = 0;
        if (!p->to_send)
            lg->t_pub_written = now_ns();
    }
    ep_set(lg, p->fd, EP_PUB, p->index, EPOLLIN | (pending ? EPOLLOUT : 0), EPOLL_CTL_MOD);
}

/* Events publisher p may put in bodies now: all of them, or in rate mode those due. */
static uint64_t pub_due(const struct lg *lg, const struct pub *p, int64_t now)
{
    if (!(lg->o.rate > 0))
        return p->to_send;
    double elapsed = (double)(now - lg->t_pub_start);
    uint64_t allowed = elapsed < 0 ? 0 : (uint64_t)(elapsed / lg->period_ns) + 1;
    uint64_t due = allowed > p->built ? allowed - p->built : 0;
    return due < p->to_send ? due : p->to_send;
}

/* Tops the window up with new bodies and writes what it can. */
static void pub_fill(struct lg *lg, struct pub *p)
{
    if (p->dead || !lg->publishing)
        return;
    uint64_t due = pub_due(lg, p, now_ns());
    bool added = false;
    while (p->in_flight < lg->o.window && due) {
        uint32_t count = due < lg->o.batch ? (uint32_t)due : lg->o.batch;
        if (pub_build(lg, p, count) < 0) {
            pub_fail(lg, p, "out of memory or request head too long");
            return;
        }
        due -= count;
        added = true;
    }
    if (added)
        pub_flush(lg, p);
}

/* One reply (an HTTP response body or a reply frame) to the oldest body in flight. */
static void pub_on_reply(struct lg *lg, struct pub *p, bool ok, const char *body, size_t blen)
{
    if (p->in_flight == 0) {
        pub_fail(lg, p, "reply without a publish");
        return;
    }
    uint32_t count = p->sizes[p->ring_head];
    p->ring_head = (p->ring_head + 1) % lg->o.window;
    p->in_flight--;
    lg->c.pub_responses++;
    if (!ok) {
        lg->c.pub_non200 += count;
        if (lg->c.pub_non200 <= 5 * count)
            fprintf(stderr, "loadgen: publish refused: %.*s\n", (int)(blen < 200 ? blen : 200),
                    body);
        return;
    }
    lg->c.pub_events_ok += count;
    lg->t_pub_acked = now_ns();
    /* the reply is {"seq":N,"delivered":K} or an array of them; sum K as a cross-check */
    static const char dk[] = "\"delivered\":";
    const char *q = body, *end = body + blen;
    uint32_t seen = 0;
    while ((q = memmem(q, (size_t)(end - q), dk, sizeof(dk) - 1))) {
        uint64_t k = 0;
        q += sizeof(dk) - 1;
        while (q < end && *q >= '0' && *q <= '9')
            k = k * 10 + (uint64_t)(*q++ - '0');
        lg->c.pub_delivered_sum += k;
        seen++;
    }
    if (seen != count && lg->c.proto_errors++ < 5)
        fprintf(stderr, "loadgen: publish of %u events answered %u results\n", count, seen);
}

/* Parses HTTP responses out of p->in; returns bytes consumed, or -1 after failing p. */
static long pub_parse_http(struct lg *lg, struct pub *p)
{
    size_t off = 0;
    while (off < p->in_len) {
        const char *h = p->in + off;
        size_t avail = p->in_len - off;
        const char *e = memmem(h, avail, "\r\n\r\n", 4);
        if (!e) {
            if (avail > MAX_HTTP_HEAD) {
                pub_fail(lg, p, "response head too large");
                return -1;
            }
            break;
        }
        size_t hlen = (size_t)(e - h) + 4;
        const char *v;
        size_t vlen;
        uint64_t clen;
        char num[24];
        if (!http_header(h, hlen, "Content-Length", &v, &vlen) || vlen == 0 || vlen > 18) {
            pub_fail(lg, p, "response without Content-Length");
            return -1;
        }
        memcpy(num, v, vlen);
        num[vlen] = '\0';
        if (parse_u64(num, &clen) < 0) {
            pub_fail(lg, p, "bad Content-Length");
            return -1;
        }
        if (avail - hlen < clen)
            break;
        pub_on_reply(lg, p, http_status(h, hlen) == 200, h + hlen, (size_t)clen);
        if (p->dead)
            return -1;
        off += hlen + (size_t)clen;
        if (http_header(h, hlen, "Connection", &v, &vlen) && vlen == 5 &&
            strncasecmp(v, "close", 5) == 0) {
            pub_fail(lg, p, "server sent Connection: close");
            return -1;
        }
    }
    return (long)off;
}

/* Parses reply frames of the /v1/agent socket out of p->in; returns bytes consumed, or -1
 * after failing p. */
static long pub_parse_agent(struct lg *lg, struct pub *p)
{
    size_t off = 0;
    for (;;) {
        const uint8_t *f = (const uint8_t *)p->in + off;
        size_t hl;
        uint64_t len;
        int r = server_frame_header(f, p->in_len - off, &hl, &len);
        if (r == 0)
            break;
        if (r < 0 || (f[0] & 0x70) || !(f[0] & 0x80)) {
            lg->c.proto_errors++;
            pub_fail(lg, p, "masked, fragmented or oversized reply frame");
            return -1;
        }
        const char *pl = (const char *)f + hl;
        switch (f[0] & 0x0f) {
        case 0x1:
            /* {"error":...,"status":N} refuses the whole body */
            pub_on_reply(lg, p, !(len > 0 && pl[0] == '{' && memmem(pl, len, "\"error\"", 7)), pl,
                         (size_t)len);
            break;
        case 0x9: {
            uint8_t fr[14 + 125];
            uint32_t mask = (uint32_t)rng_next(&lg->rng);
            size_t fl = ws_client_header(fr, 0xA, len, mask);
            memcpy(fr + fl, pl, (size_t)len);
            ws_mask(fr + fl, (size_t)len, mask);
            if (len > 125 || buf_reserve(&p->out, &p->out_cap, p->out_len + fl + len) < 0) {
                pub_fail(lg, p, "bad ping");
                return -1;
            }
            memcpy(p->out + p->out_len, fr, fl + (size_t)len);
            p->out_len += fl + (size_t)len;
            pub_flush(lg, p);
            break;
        }
        case 0xA:
            break;
        case 0x8:
            pub_fail(lg, p, "server closed the publisher socket");
            return -1;
        default:
            lg->c.proto_errors++;
            pub_fail(lg, p, "unexpected opcode on the publisher socket");
            return -1;
        }
        if (p->dead)
            return -1;
        off += hl + (size_t)len;
    }
    return (long)off;
}

static void pub_on_readable(struct lg *lg, struct pub *p)
{
    if (buf_reserve(&p->in, &p->in_cap, p->in_len + 65536) < 0) {
        pub_fail(lg, p, "out of memory");
        return;
    }
    ssize_t r = recv(p->fd, p->in + p->in_len, p->in_cap - p->in_len, 0);
    if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
        pub_fail(lg, p, r == 0 ? "EOF from server" : strerror(errno));
        return;
    }
    if (r < 0)
        return;
    p->in_len += (size_t)r;
    long off = lg->o.via == VIA_AGENT ? pub_parse_agent(lg, p) : pub_parse_http(lg, p);
    if (off < 0)
        return;
    memmove(p->in, p->in + off, p->in_len - (size_t)off);
    p->in_len -= (size_t)off;
    pub_fill(lg, p);
}

/* The /v1/agent upgrade on a blocking socket; bytes after the 101 head stay in p->in. */
static int pub_agent_handshake(struct lg *lg, struct pub *p)
{
    char key[25], want[29], auth[300] = "", req[1024];
    ws_new_key(&lg->rng, key);
    ws_accept_for(key, want);
    if (lg->o.api_key)
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s\r\n", lg->o.api_key);
    int n = snprintf(req, sizeof(req),
                     "GET /v1/agent HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\n%s\r\n",
                     lg->o.targets[p->node].host, lg->o.targets[p->node].port, key, auth);
    if (send(p->fd, req, (size_t)n, MSG_NOSIGNAL) != n)
        return -1;
    if (buf_reserve(&p->in, &p->in_cap, MAX_HTTP_HEAD + 1) < 0)
        return -1;
    const char *e = NULL;
    while (!(e = memmem(p->in, p->in_len, "\r\n\r\n", 4))) {
        ssize_t r = p->in_len < MAX_HTTP_HEAD
                        ? recv(p->fd, p->in + p->in_len, MAX_HTTP_HEAD - p->in_len, 0)
                        : 0;
        if (r <= 0)
            return -1;
        p->in_len += (size_t)r;
    }
    size_t hlen = (size_t)(e - p->in) + 4;
    const char *v;
    size_t vlen;
    if (http_status(p->in, hlen) != 101 ||
        !http_header(p->in, hlen, "Sec-WebSocket-Accept", &v, &vlen) || vlen != 28 ||
        memcmp(v, want, 28) != 0) {
        fprintf(stderr, "loadgen: /v1/agent refused: %.*s\n", (int)(hlen < 300 ? hlen : 300),
                p->in);
        return -1;
    }
    memmove(p->in, p->in + hlen, p->in_len - hlen);
    p->in_len -= hlen;
    return 0;
}

/* Stream mode: deals the runs to the publishers owning their users. */
static int runs_deal(struct lg *lg)
{
    uint32_t C = lg->o.publishers;
    for (uint32_t i = 0; i < C; i++) {
        lg->pubs[i].runs = calloc(lg->o.stream_runs / C + 1, sizeof(uint32_t));
        if (!lg->pubs[i].runs)
            return -1;
    }
    for (uint32_t r = 0; r < lg->o.stream_runs; r++) {
        uint32_t user = r % lg->o.users;
        struct pub *p = &lg->pubs[user % C];
        lg->runs[r] = (struct run){.user = user};
        p->runs[p->nruns++] = r;
        p->to_send += lg->o.chunks + 2;
    }
    return 0;
}

static void pubs_start(struct lg *lg)
{
    uint32_t C = lg->o.publishers;
    for (uint32_t i = 0; i < C; i++) {
        struct pub *p = &lg->pubs[i];
        p->index = i;
        p->node = i % lg->o.ntargets;
        if (!lg->o.stream_runs)
            p->to_send = lg->o.events / C + (i < lg->o.events % C);
        p->sizes = calloc(lg->o.window, sizeof(*p->sizes));
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int one = 1;
        struct timeval tv = {.tv_sec = 10};
        /* a blocking connect and upgrade keep setup simple; the server is local */
        if (fd < 0 || !p->sizes) {
            perror("loadgen: publisher socket");
            exit(2);
        }
        p->fd = fd;
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        const struct target *to = &lg->o.targets[p->node];
        if (connect(fd, (const struct sockaddr *)&to->addr, sizeof(to->addr)) < 0 ||
            (lg->o.via == VIA_AGENT && pub_agent_handshake(lg, p) < 0)) {
            fprintf(stderr, "loadgen: publisher %u (%s:%d): connect or /v1/agent upgrade failed\n",
                    i, to->host, to->port);
            exit(2);
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        ep_set(lg, fd, EP_PUB, i, EPOLLIN, EPOLL_CTL_ADD);
    }
    lg->period_ns = lg->o.rate > 0 ? (double)C * NS_PER_S / lg->o.rate : 0;
    lg->publishing = true;
    lg->t_pub_start = now_ns();
    for (uint32_t i = 0; i < C; i++)
        pub_fill(lg, &lg->pubs[i]);
}

/* Rate mode: fills every publisher and arms the timer for the next event due. The loop
 * sleeps in epoll_wait between events rather than spinning: a spinning loadgen loses whole
 * scheduler slices whenever anything else wants its CPU. */
static void pubs_tick(struct lg *lg)
{
    if (!lg->publishing || !(lg->o.rate > 0))
        return;
    int64_t now = now_ns(), next = INT64_MAX;
    for (uint32_t i = 0; i < lg->o.publishers; i++) {
        struct pub *p = &lg->pubs[i];
        pub_fill(lg, p);
        if (!p->dead && p->to_send && p->in_flight < lg->o.window) {
            int64_t due = lg->t_pub_start + (int64_t)((double)p->built * lg->period_ns);
            if (due < next)
                next = due;
        }
    }
    if (next == INT64_MAX || next == lg->t_armed || lg->o.busy_poll)
        return; /* busy polling: the loop comes back here at once */
    if (next <= now)
        next = now + 1000;
    struct itimerspec its = {.it_value = {.tv_sec = next / NS_PER_S, .tv_nsec = next % NS_PER_S}};
    if (timerfd_settime(lg->tfd, TFD_TIMER_ABSTIME, &its, NULL) == 0)
        lg->t_armed = next;
}

/* ---------------------------------------------------------------- the loop */

typedef bool (*lg_done_fn)(struct lg *lg);

static bool connect_done(struct lg *lg)
{
    return lg->next_conn == lg->nconns && lg->handshaking == 0;
}

static bool idle_done(struct lg *lg)
{
    return now_ns() >= lg->idle_until;
}

static bool publish_done(struct lg *lg)
{
    for (uint32_t i = 0; i < lg->o.publishers; i++) {
        const struct pub *p = &lg->pubs[i];
        if (p->dead)
            return true; /* the run has failed; waiting would only end in the timeout */
        if (p->to_send || p->in_flight)
            return false;
    }
    if (lg->o.storm && (!lg->dropped || lg->storm_waiting))
        return false;
    return lg->need == 0;
}

/* ---------------------------------------------------------------- servers' /proc and Redis */

static int resolve_one(const char *host, int port, struct sockaddr_in *out)
{
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res;
    int rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc) {
        fprintf(stderr, "loadgen: %s: %s\n", host, gai_strerror(rc));
        return -1;
    }
    *out = *(struct sockaddr_in *)res->ai_addr;
    out->sin_port = htons((uint16_t)port);
    freeaddrinfo(res);
    return 0;
}

/* RSS and CPU of every --pid: the sums, each one in each[] (may be NULL). A pid that cannot
 * be read makes the sum -1. */
static long pids_rss_kb(const struct lg *lg, long *each)
{
    long sum = 0;
    for (uint32_t i = 0; i < lg->o.npids; i++) {
        long v = proc_rss_kb(lg->o.pids[i]);
        if (each)
            each[i] = v;
        sum = sum < 0 || v < 0 ? -1 : sum + v;
    }
    return lg->o.npids ? sum : -1;
}

static double pids_cpu_s(const struct lg *lg, double *each)
{
    double sum = 0;
    for (uint32_t i = 0; i < lg->o.npids; i++) {
        double v = proc_cpu_s(lg->o.pids[i]);
        if (each)
            each[i] = v;
        sum = sum < 0 || v < 0 ? -1 : sum + v;
    }
    return lg->o.npids ? sum : -1;
}

/* The CPU seconds of the --broker-pid processes, summed (each into each[]); -1 without. */
static double brokers_cpu_s(const struct lg *lg, double *each)
{
    double sum = 0;
    if (lg->o.nbroker == 0)
        return -1;
    for (uint32_t i = 0; i < lg->o.nbroker; i++)
        sum += each[i] = proc_cpu_s(lg->o.broker_pids[i]);
    return sum;
}

/* The first pid (of --pid, then --broker-pid) that is gone, or 0. */
static int pid_gone(const struct lg *lg)
{
    for (uint32_t i = 0; i < lg->o.npids; i++)
        if (proc_rss_kb(lg->o.pids[i]) < 0)
            return lg->o.pids[i];
    for (uint32_t i = 0; i < lg->o.nbroker; i++)
        if (proc_rss_kb(lg->o.broker_pids[i]) < 0)
            return lg->o.broker_pids[i];
    return 0;
}

/* What Redis's INFO says at one moment: per-command calls and microseconds (commandstats,
 * which counts the commands a Lua script runs too), bytes in and out, its CPU. */
#define REDIS_CMDS 160
struct redis_snap {
    bool ok;
    unsigned n;
    char cmd[REDIS_CMDS][48];
    uint64_t calls[REDIS_CMDS], usec[REDIS_CMDS];
    uint64_t net_in, net_out, reply_len;
    double cpu_s;
};

/* One INFO over a blocking socket (RESP inline command, bulk string reply). */
static void redis_info(const char *hostport, struct redis_snap *r)
{
    memset(r, 0, sizeof(*r));
    char host[256];
    const char *colon = strrchr(hostport, ':');
    uint32_t port;
    if (!colon || (size_t)(colon - hostport) >= sizeof(host) || parse_u32(colon + 1, 1, &port))
        return;
    memcpy(host, hostport, (size_t)(colon - hostport));
    host[colon - hostport] = '\0';
    struct sockaddr_in addr;
    if (resolve_one(host, (int)port, &addr) < 0)
        return;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct timeval tv = {.tv_sec = 3};
    if (fd < 0)
        return;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    static const char req[] = "INFO all\r\n";
    size_t cap = 1 << 20, len = 0;
    char *buf = malloc(cap);
    if (!buf || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
        send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof(req) - 1))
        goto out;
    /* $<len>\r\n<len bytes>\r\n */
    uint64_t want = 0;
    const char *body = NULL;
    for (;;) {
        ssize_t n = recv(fd, buf + len, cap - 1 - len, 0);
        if (n <= 0)
            goto out;
        len += (size_t)n;
        buf[len] = '\0';
        if (!body) {
            char *eol = strstr(buf, "\r\n");
            if (!eol)
                continue;
            char *end;
            want = strtoull(buf + 1, &end, 10);
            if (buf[0] != '$' || end != eol || want > cap - 64)
                goto out;
            body = eol + 2;
        }
        if ((uint64_t)(buf + len - body) >= want + 2)
            break;
    }
    r->reply_len = len;
    char *save, *line = strtok_r((char *)body, "\r\n", &save);
    double cpu_user = 0, cpu_sys = 0;
    for (; line && line < body + want; line = strtok_r(NULL, "\r\n", &save)) {
        if (strncmp(line, "cmdstat_", 8) == 0 && r->n < REDIS_CMDS) {
            char *c = strchr(line, ':');
            if (!c || (size_t)(c - line - 8) >= sizeof(r->cmd[0]))
                continue;
            memcpy(r->cmd[r->n], line + 8, (size_t)(c - line - 8));
            r->cmd[r->n][c - line - 8] = '\0';
            const char *k = strstr(c, "calls="), *u = strstr(c, "usec=");
            if (!k || !u)
                continue;
            r->calls[r->n] = strtoull(k + 6, NULL, 10);
            r->usec[r->n] = strtoull(u + 5, NULL, 10);
            r->n++;
        } else if (strncmp(line, "total_net_input_bytes:", 22) == 0) {
            r->net_in = strtoull(line + 22, NULL, 10);
        } else if (strncmp(line, "total_net_output_bytes:", 23) == 0) {
            r->net_out = strtoull(line + 23, NULL, 10);
        } else if (strncmp(line, "used_cpu_user:", 14) == 0) {
            cpu_user = strtod(line + 14, NULL);
        } else if (strncmp(line, "used_cpu_sys:", 13) == 0) {
            cpu_sys = strtod(line + 13, NULL);
        }
    }
    r->cpu_s = cpu_user + cpu_sys;
    r->ok = true;
out:
    free(buf);
    close(fd);
}

/* Adds snapshot b into a (several shards seen as one Redis). */
static void redis_add(struct redis_snap *a, const struct redis_snap *b)
{
    if (!b->ok) {
        a->ok = false;
        return;
    }
    for (unsigned i = 0; i < b->n; i++) {
        unsigned j = 0;
        while (j < a->n && strcmp(a->cmd[j], b->cmd[i]) != 0)
            j++;
        if (j == a->n) {
            if (a->n == REDIS_CMDS)
                continue;
            memcpy(a->cmd[a->n++], b->cmd[i], sizeof(a->cmd[0]));
        }
        a->calls[j] += b->calls[i];
        a->usec[j] += b->usec[i];
    }
    a->net_in += b->net_in;
    a->net_out += b->net_out;
    a->reply_len += b->reply_len;
    a->cpu_s += b->cpu_s;
}

/* The usec commandstats gives `cmd` in s (0 when it has none). */
static uint64_t redis_usec_of(const struct redis_snap *s, const char *cmd, uint64_t *calls)
{
    for (unsigned i = 0; i < s->n; i++)
        if (strcmp(s->cmd[i], cmd) == 0) {
            *calls = s->calls[i];
            return s->usec[i];
        }
    *calls = 0;
    return 0;
}

/* "redis_calls":{cmd:calls,...},"redis_usec":{...},... for what happened between a and b
 * (INFO itself left out), per accepted event where it says so. */
static void redis_print(const struct redis_snap *a, const struct redis_snap *b, uint64_t events,
                        unsigned nshards)
{
    if (!a->ok || !b->ok) {
        printf("\"redis_info\":false,");
        return;
    }
    uint64_t total = 0;
    for (int pass = 0; pass < 2; pass++) {
        printf(pass ? "\"redis_usec\":{" : "\"redis_calls\":{");
        bool first = true;
        for (unsigned i = 0; i < b->n; i++) {
            if (strcmp(b->cmd[i], "info") == 0)
                continue;
            uint64_t c0 = 0, u0 = 0;
            for (unsigned j = 0; j < a->n; j++)
                if (strcmp(a->cmd[j], b->cmd[i]) == 0) {
                    c0 = a->calls[j];
                    u0 = a->usec[j];
                    break;
                }
            if (b->calls[i] <= c0)
                continue;
            printf("%s\"%s\":%" PRIu64, first ? "" : ",", b->cmd[i],
                   pass ? b->usec[i] - u0 : b->calls[i] - c0);
            first = false;
            if (!pass)
                total += b->calls[i] - c0;
        }
        printf("},");
    }
    /* the first INFO's reply and the second's request are not the run's traffic */
    uint64_t in = b->net_in - a->net_in - 10 * nshards,
             out = b->net_out - a->net_out - a->reply_len;
    double ev = events ? (double)events : 1;
    printf("\"redis_calls_total\":%" PRIu64 ",\"redis_calls_per_event\":%.2f,"
           "\"redis_net_in_bytes\":%" PRIu64 ",\"redis_net_out_bytes\":%" PRIu64 ","
           "\"redis_in_bytes_per_event\":%.0f,\"redis_out_bytes_per_event\":%.0f,"
           "\"redis_info_cpu_s\":%.2f,",
           total, (double)total / ev, in, out, (double)in / ev, (double)out / ev,
           b->cpu_s - a->cpu_s);
}

static void progress(struct lg *lg, const char *phase, int64_t now)
{
    long rss = pids_rss_kb(lg, NULL);
    int gone = pid_gone(lg);
    if (gone) {
        lg->server_gone = true;
        lg->gone_pid = gone;
    }
    if (lg->o.quiet)
        return;
    double t = (double)(now - lg->t_start) / NS_PER_S;
    if (strcmp(phase, "publish") == 0) {
        fprintf(stderr,
                "[%6.1fs] publish sent %" PRIu64 "/%" PRIu64 " acked %" PRIu64
                " deliveries %" PRIu64 " (+%" PRIu64 "/s) owed %" PRIu64
                " p99 %.0fus (max this second %.1fms) open %u",
                t, lg->c.pub_events_sent, lg->o.events, lg->c.pub_events_ok, lg->c.distinct,
                lg->c.distinct - lg->prog_deliveries, lg->need, hist_quantile(&lg->lat, 0.99) / 1e3,
                lg->prog_lat_max / 1e6, lg->open);
        lg->prog_lat_max = 0;
        if (lg->dropped)
            fprintf(stderr, " storm-waiting %u", lg->storm_waiting);
        fprintf(stderr, " rss %ldkB\n", rss);
        lg->prog_deliveries = lg->c.distinct;
    } else {
        fprintf(stderr, "[%6.1fs] %s open %u/%u handshaking %u failed %" PRIu64 " rss %ldkB\n", t,
                phase, lg->open, lg->nconns, lg->handshaking, lg->c.connect_failed, rss);
    }
}

/* Runs the loop until `done` or the deadline; returns 0, or -1 on timeout or a gone server. */
static int run_until(struct lg *lg, const char *phase, lg_done_fn done)
{
    struct epoll_event evs[512];
    while (!done(lg)) {
        int64_t now = now_ns();
        if (now >= lg->deadline) {
            fprintf(stderr, "loadgen: timeout in phase %s\n", phase);
            return -1;
        }
        if (now >= lg->next_progress) {
            progress(lg, phase, now);
            lg->next_progress += NS_PER_S;
        }
        if (lg->server_gone) {
            fprintf(stderr, "loadgen: server pid %d is gone\n", lg->gone_pid);
            return -1;
        }
        if (lg->o.storm && lg->publishing && !lg->dropped &&
            (double)lg->c.pub_events_sent >= lg->o.storm_at * (double)lg->o.events)
            storm_drop(lg);
        pubs_tick(lg);
        int n = epoll_wait(lg->ep, evs, 512, lg->o.busy_poll ? 0 : 20);
        if (n < 0 && errno != EINTR) {
            perror("loadgen: epoll_wait");
            exit(2);
        }
        for (int i = 0; i < n; i++) {
            uint32_t kind = (uint32_t)(evs[i].data.u64 >> 32);
            uint32_t idx = (uint32_t)evs[i].data.u64;
            uint32_t e = evs[i].events;
            if (kind == EP_TIMER) {
                uint64_t expirations;
                if (read(lg->tfd, &expirations, sizeof(expirations)) < 0 && errno != EAGAIN)
                    perror("loadgen: timerfd");
                lg->t_armed = 0;
                continue;
            }
            if (kind == EP_CONN) {
                struct conn *c = &lg->conns[idx];
                if (c->state != CS_CLOSED && c->state != CS_NEW)
                    conn_on_event(lg, c, e);
                continue;
            }
            struct pub *p = &lg->pubs[idx];
            if (!p->dead && e & EPOLLOUT)
                pub_flush(lg, p);
            if (!p->dead && e & (EPOLLIN | EPOLLERR | EPOLLHUP))
                pub_on_readable(lg, p);
        }
        conns_start_more(lg);
    }
    return 0;
}

/* ---------------------------------------------------------------- phases and report */

static double secs(int64_t from, int64_t to)
{
    return to > from ? (double)(to - from) / NS_PER_S : 0;
}

static double rate(uint64_t n, int64_t from, int64_t to)
{
    double s = secs(from, to);
    return s > 0 ? (double)n / s : 0;
}

static void json_head(const struct lg *lg, const char *mode)
{
    printf("{\"label\":\"%s\",\"mode\":\"%s\",\"busy_poll\":%s,\"nodes\":%u,\"users\":%u,\"conns_"
           "per_user\":%u,"
           "\"connections\":%u,\"connected\":%u,\"connect_failed\":%" PRIu64 ","
           "\"connect_s\":%.3f,",
           lg->o.label ? lg->o.label : "", mode, lg->o.busy_poll ? "true" : "false", lg->o.ntargets,
           lg->o.users, lg->o.conns_per_user, lg->nconns, lg->open, lg->c.connect_failed,
           secs(lg->t_start, lg->t_connected));
}

/* Connects every client; 0 when all of them got `connected`. */
static int phase_connect(struct lg *lg)
{
    lg->t_start = now_ns();
    lg->next_progress = lg->t_start + NS_PER_S;
    lg->deadline = lg->t_start + (int64_t)(lg->o.timeout_s * NS_PER_S);
    int rc = run_until(lg, "connect", connect_done);
    lg->t_connected = now_ns();
    if (rc == 0 && lg->open != lg->nconns) {
        fprintf(stderr, "loadgen: only %u of %u connections opened\n", lg->open, lg->nconns);
        rc = -1;
    }
    return rc;
}

/* Bytes in each kernel slab cache (num_objs x objsize, from /proc/slabinfo, readable by
 * root), so an idle run can say which caches grew per socket. */
#define SLAB_MAX 512
struct slab_snap {
    unsigned n;
    char name[SLAB_MAX][32];
    long bytes[SLAB_MAX];
};

static void slab_snap(struct slab_snap *s)
{
    char line[512];
    s->n = 0;
    FILE *f = fopen("/proc/slabinfo", "r");
    if (!f)
        return;
    while (s->n < SLAB_MAX && fgets(line, sizeof(line), f)) {
        long active, num, size;
        if (line[0] == '#' ||
            sscanf(line, "%31s %ld %ld %ld", s->name[s->n], &active, &num, &size) != 4)
            continue;
        s->bytes[s->n++] = num * size;
    }
    fclose(f);
}

/* Prints "kernel_slab_top":{"cache":bytes per socket,...} for the caches that grew most. */
static void slab_print_top(const struct slab_snap *a, const struct slab_snap *b, double sockets)
{
    long delta[SLAB_MAX] = {0};
    for (unsigned i = 0; i < b->n; i++)
        for (unsigned j = 0; j < a->n; j++)
            if (strcmp(a->name[j], b->name[i]) == 0) {
                delta[i] = b->bytes[i] - a->bytes[j];
                break;
            }
    printf("\"kernel_slab_top\":{");
    bool used[SLAB_MAX] = {false};
    for (int k = 0; k < 8; k++) {
        int best = -1;
        for (unsigned i = 0; i < b->n; i++)
            if (!used[i] && delta[i] > 0 && (best < 0 || delta[i] > delta[best]))
                best = (int)i;
        if (best < 0 || sockets <= 0)
            break;
        used[best] = true;
        printf("%s\"%s\":%.0f", k ? "," : "", b->name[best], (double)delta[best] / sockets);
    }
    printf("},");
}

static int run_idle(struct lg *lg)
{
    static struct slab_snap slab_a, slab_b;
    slab_snap(&slab_a);
    long rss0 = pids_rss_kb(lg, NULL);
    double cpu0 = pids_cpu_s(lg, NULL);
    long slab0 = kernel_slab_kb(), tcpmem0 = kernel_tcp_mem_pages();
    if (rss0 < 0) {
        fprintf(stderr, "loadgen: cannot read /proc of every --pid\n");
        return 2;
    }
    int rc = phase_connect(lg);
    if (rc == 0) {
        lg->idle_until = now_ns() + NS_PER_S;
        rc = run_until(lg, "idle", idle_done);
    }
    long rss1 = pids_rss_kb(lg, NULL);
    double cpu1 = pids_cpu_s(lg, NULL);
    long slab1 = kernel_slab_kb(), tcpmem1 = kernel_tcp_mem_pages();
    slab_snap(&slab_b);
    bool ok = rc == 0 && rss1 >= 0 && lg->open == lg->nconns && lg->c.proto_errors == 0;
    double per_conn = lg->open ? (double)(rss1 - rss0) * 1024 / lg->open : 0;
    /* both ends of every loopback connection live in this kernel: two sockets each */
    double kern_per_sock = lg->open && slab0 >= 0 && slab1 >= 0
                               ? (double)(slab1 - slab0) * 1024 / (2.0 * lg->open)
                               : -1;
    json_head(lg, "idle");
    printf("\"server_rss_before_kb\":%ld,\"server_rss_after_kb\":%ld,\"bytes_per_conn\":%.0f,"
           "\"kernel_slab_delta_kb\":%ld,\"kernel_slab_bytes_per_socket\":%.0f,"
           "\"kernel_tcp_mem_pages_delta\":%ld,",
           rss0, rss1, per_conn, slab1 - slab0, kern_per_sock, tcpmem1 - tcpmem0);
    slab_print_top(&slab_a, &slab_b, 2.0 * lg->open);
    printf("\"server_cpu_s\":%.2f,\"loadgen_cpu_s\":%.2f,\"proto_errors\":%" PRIu64 ","
           "\"closed_by_server\":%" PRIu64 ",\"pings\":%" PRIu64 ",\"ok\":%s}\n",
           cpu1 - cpu0, self_cpu_s(), lg->c.proto_errors, lg->c.closed_by_server, lg->c.pings,
           ok ? "true" : "false");
    fflush(stdout);
    return ok ? 0 : 1;
}

static int run_load(struct lg *lg)
{
    bool have_pid = lg->o.npids != 0;
    uint32_t nb = lg->o.nbroker, nr = lg->o.nredis;
    int bpid = nb > 0;
    uint32_t np = lg->o.npids;
    double cpu_each[3][MAX_PIDS];
    long rss_each[MAX_PIDS];
    static struct redis_snap rs0, rs1, rs0_each[MAX_PIDS], rs1_each[MAX_PIDS];
    double bcpu_each[3][MAX_PIDS];
    long rss0 = pids_rss_kb(lg, NULL);
    double cpu0 = pids_cpu_s(lg, cpu_each[0]);
    double bcpu0 = brokers_cpu_s(lg, bcpu_each[0]);
    int rc = phase_connect(lg);
    long rss1 = pids_rss_kb(lg, NULL);
    double cpu1 = pids_cpu_s(lg, cpu_each[1]);
    double bcpu1 = brokers_cpu_s(lg, bcpu_each[1]);
    bool timed_out = false;
    if (rc == 0) {
        for (uint32_t i = 0; i < nr; i++)
            redis_info(lg->o.redis[i], &rs0_each[i]);
        pubs_start(lg);
        timed_out = run_until(lg, "publish", publish_done) < 0;
        for (uint32_t i = 0; i < nr; i++)
            redis_info(lg->o.redis[i], &rs1_each[i]);
        rs0.ok = rs1.ok = nr > 0;
        for (uint32_t i = 0; i < nr; i++) {
            redis_add(&rs0, &rs0_each[i]);
            redis_add(&rs1, &rs1_each[i]);
        }
    }
    int64_t t_end = now_ns();
    long rss2 = pids_rss_kb(lg, rss_each);
    double cpu2 = pids_cpu_s(lg, cpu_each[2]);
    double bcpu2 = brokers_cpu_s(lg, bcpu_each[2]);
    long brss2 = 0;
    for (uint32_t i = 0; i < nb; i++)
        brss2 += proc_rss_kb(lg->o.broker_pids[i]);

    uint64_t expected = 0, lost = 0, runs_expected = 0;
    for (uint32_t i = 0; i < lg->nconns; i++) {
        const struct conn *c = &lg->conns[i];
        if (!c->connected)
            continue;
        expected += lg->user_sent[c->user];
        lost += lg->user_sent[c->user] - c->received;
        if (lg->o.stream_runs)
            runs_expected +=
                lg->o.stream_runs / lg->o.users + (c->user < lg->o.stream_runs % lg->o.users);
    }
    const struct counters *k = &lg->c;
    int64_t t0 = lg->t_pub_start ? lg->t_pub_start : t_end; /* 0 when publishing never began */
    int64_t t_deliv = lg->t_last_delivery > t0 ? lg->t_last_delivery : t_end;
    bool ok = rc == 0 && !timed_out && lost == 0 && k->dup == 0 && k->misrouted == 0 &&
              k->out_of_order == 0 && k->n_mismatch == 0 && k->pub_non200 == 0 &&
              k->pub_unsent == 0 && k->pub_events_ok == lg->o.events && k->proto_errors == 0 &&
              k->run_order == 0 && k->runs_done == runs_expected && k->not_recovered == 0 &&
              lg->open == lg->nconns;
    const char *mode = lg->o.storm ? "storm" : lg->o.stream_runs ? "stream" : "load";

    json_head(lg, mode);
    printf("\"via\":\"%s\",\"rate\":%.0f,\"events\":%" PRIu64 ",\"batch\":%u,\"window\":%u,"
           "\"publishers\":%u,\"published\":%" PRIu64 ",\"accepted\":%" PRIu64
           ",\"publish_non200\":%" PRIu64 ",\"publish_s\":%.3f,\"events_per_s_published\":%.0f,"
           "\"events_per_s_accepted\":%.0f,",
           lg->o.via == VIA_AGENT ? "agent" : "http", lg->o.rate, lg->o.events, lg->o.batch,
           lg->o.window, lg->o.publishers, k->pub_events_sent, k->pub_events_ok,
           k->pub_non200 + k->pub_unsent, secs(t0, lg->t_pub_acked),
           rate(k->pub_events_sent, t0, lg->t_pub_written),
           rate(k->pub_events_ok, t0, lg->t_pub_acked));
    printf("\"deliveries\":%" PRIu64 ",\"deliveries_expected\":%" PRIu64 ","
           "\"server_delivered\":%" PRIu64 ",\"delivery_s\":%.3f,\"deliveries_per_s\":%.0f,"
           "\"lat_p50_us\":%.1f,\"lat_p99_us\":%.1f,\"lat_p999_us\":%.1f,\"lat_max_us\":%.1f,"
           "\"lat_mean_us\":%.1f,",
           k->distinct, expected, k->pub_delivered_sum, secs(t0, t_deliv),
           rate(k->distinct, t0, t_deliv), hist_quantile(&lg->lat, 0.5) / 1e3,
           hist_quantile(&lg->lat, 0.99) / 1e3, hist_quantile(&lg->lat, 0.999) / 1e3,
           lg->lat.max / 1e3, lg->lat.count ? (double)lg->lat.sum / lg->lat.count / 1e3 : 0);
    if (lg->o.stream_runs)
        printf("\"stream_runs\":%u,\"chunks\":%u,\"chunk_bytes\":%u,\"chunk_burst\":%u,"
               "\"runs_completed\":%" PRIu64 ",\"runs_expected\":%" PRIu64
               ",\"run_order_errors\":%" PRIu64 ",",
               lg->o.stream_runs, lg->o.chunks, lg->o.chunk_bytes, lg->o.chunk_burst, k->runs_done,
               runs_expected, k->run_order);
    if (lg->o.storm)
        printf(
            "\"storm_at_events\":%.0f,\"storm_dropped\":%s,\"storm_reconnect_s\":%.3f,"
            "\"storm_whole_s\":%.3f,\"storm_not_whole\":%u,\"not_recovered\":%" PRIu64 ","
            "\"storm_listen_overflows\":%ld,",
            lg->o.storm_at * (double)lg->o.events, lg->dropped ? "true" : "false",
            lg->t_reconnected ? secs(lg->t_drop, lg->t_reconnected) : -1.0,
            lg->t_whole ? secs(lg->t_drop, lg->t_whole) : -1.0, lg->storm_waiting, k->not_recovered,
            lg->listen_overflows0 >= 0 ? tcpext_counter("ListenOverflows") - lg->listen_overflows0
                                       : -1);
    printf("\"lost\":%" PRIu64 ",\"dup\":%" PRIu64 ",\"misrouted\":%" PRIu64
           ",\"out_of_order\":%" PRIu64 ",\"n_mismatch\":%" PRIu64 ",\"proto_errors\":%" PRIu64
           ",\"unexpected_messages\":%" PRIu64 ",\"closed_by_server\":%" PRIu64
           ",\"conn_lost\":%" PRIu64 ",\"pings\":%" PRIu64 ",",
           lost, k->dup, k->misrouted, k->out_of_order, k->n_mismatch, k->proto_errors,
           k->server_errors, k->closed_by_server, k->conn_lost, k->pings);
    if (lg->o.ntargets > 1) {
        /* per node: its user connections and the distinct events they received */
        printf("\"node_conns\":[");
        for (uint32_t i = 0; i < lg->o.ntargets; i++)
            printf("%s%u", i ? "," : "", lg->node_conns[i]);
        printf("],\"node_deliveries\":[");
        for (uint32_t i = 0; i < lg->o.ntargets; i++)
            printf("%s%" PRIu64, i ? "," : "", lg->node_deliveries[i]);
        printf("],");
    }
    if (np > 1) {
        /* each --pid apart; the server_* fields below are their sums */
        printf("\"server_pids\":%u,\"server_cpu_publish_s_each\":[", np);
        for (uint32_t i = 0; i < np; i++)
            printf("%s%.2f", i ? "," : "", cpu_each[2][i] - cpu_each[1][i]);
        printf("],\"server_rss_end_kb_each\":[");
        for (uint32_t i = 0; i < np; i++)
            printf("%s%ld", i ? "," : "", rss_each[i]);
        printf("],");
    }
    if (bpid)
        printf("\"broker_cpu_connect_s\":%.2f,\"broker_cpu_publish_s\":%.2f,"
               "\"broker_rss_end_kb\":%ld,",
               bcpu1 - bcpu0, bcpu2 - bcpu1, brss2);
    if (nb > 1) {
        printf("\"broker_cpu_publish_s_each\":[");
        for (uint32_t i = 0; i < nb; i++)
            printf("%s%.2f", i ? "," : "", bcpu_each[2][i] - bcpu_each[1][i]);
        printf("],");
    }
    if (nr > 0 && rc == 0)
        redis_print(&rs0, &rs1, k->pub_events_ok, nr);
    if (nr > 1 && rc == 0) {
        /* each shard: its CPU, its script calls and their time, during the publish phase */
        printf("\"redis_shards\":[");
        for (uint32_t i = 0; i < nr; i++) {
            uint64_t c0, c1, u0 = redis_usec_of(&rs0_each[i], "evalsha", &c0),
                             u1 = redis_usec_of(&rs1_each[i], "evalsha", &c1);
            printf("%s{\"addr\":\"%s\",\"cpu_s\":%.2f,\"evalsha_calls\":%" PRIu64
                   ",\"evalsha_usec\":%" PRIu64 "}",
                   i ? "," : "", lg->o.redis[i], rs1_each[i].cpu_s - rs0_each[i].cpu_s, c1 - c0,
                   u1 - u0);
        }
        printf("],");
    }
    printf("\"server_rss_start_kb\":%ld,\"server_rss_connected_kb\":%ld,\"server_rss_end_kb\":%ld,"
           "\"server_cpu_connect_s\":%.2f,\"server_cpu_publish_s\":%.2f,\"loadgen_cpu_s\":%.2f,"
           "\"timed_out\":%s,\"ok\":%s}\n",
           rss0, rss1, rss2, have_pid ? cpu1 - cpu0 : -1, have_pid ? cpu2 - cpu1 : -1, self_cpu_s(),
           timed_out ? "true" : "false", ok ? "true" : "false");
    fflush(stdout);
    return ok ? 0 : 1;
}

/* ---------------------------------------------------------------- setup */

static int resolve(struct lg *lg)
{
    for (uint32_t i = 0; i < lg->o.ntargets; i++) {
        struct target *t = &lg->o.targets[i];
        if (resolve_one(t->host, t->port, &t->addr) < 0)
            return -1;
        /* source addresses 127.0.0.x only reach a loopback server */
        if ((ntohl(t->addr.sin_addr.s_addr) >> 24) != 127)
            lg->o.src_addrs = 0;
    }
    return 0;
}

static int raise_nofile(uint64_t need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur < need) {
        fprintf(stderr, "loadgen: needs %" PRIu64 " open files, limit is %llu\n", need,
                (unsigned long long)rl.rlim_cur);
        return -1;
    }
    return 0;
}

/* Stream mode: the runs, the per-connection run positions, the chunk text, the nonce. */
static int stream_setup(struct lg *lg)
{
    static const char words[] = "the quick agent thinks about the next tool to call and ";
    const struct lg_opts *o = &lg->o;
    lg->runs_per_user = (o->stream_runs + o->users - 1) / o->users;
    lg->runs = calloc(o->stream_runs, sizeof(*lg->runs));
    lg->run_pos = calloc((size_t)lg->nconns * lg->runs_per_user, sizeof(*lg->run_pos));
    lg->chunk = malloc(o->chunk_bytes);
    if (!lg->runs || !lg->run_pos || !lg->chunk)
        return -1;
    for (uint32_t i = 0; i < o->chunk_bytes; i++)
        lg->chunk[i] = words[i % (sizeof(words) - 1)];
    snprintf(lg->nonce, sizeof(lg->nonce), "%08x", (unsigned)(rng_next(&lg->rng) >> 32));
    return runs_deal(lg);
}

static int lg_setup(struct lg *lg)
{
    const struct lg_opts *o = &lg->o;
    lg->nconns = o->users * o->conns_per_user;
    if (resolve(lg) < 0 || raise_nofile((uint64_t)lg->nconns + o->publishers + 32) < 0)
        return -1;
    if (getrandom(&lg->rng, sizeof(lg->rng), 0) != sizeof(lg->rng) || lg->rng == 0)
        lg->rng = (uint64_t)now_ns() | 1;
    lg->ep = epoll_create1(EPOLL_CLOEXEC);
    lg->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (lg->ep >= 0 && lg->tfd >= 0)
        ep_set(lg, lg->tfd, EP_TIMER, 0, EPOLLIN, EPOLL_CTL_ADD);
    lg->rbuf = malloc(RBUF_SIZE);
    lg->conns = calloc(lg->nconns, sizeof(*lg->conns));
    lg->user_sent = calloc(o->users, sizeof(*lg->user_sent));
    lg->user_open = calloc(o->users, sizeof(*lg->user_open));
    lg->pubs = calloc(o->publishers, sizeof(*lg->pubs));
    lg->body_cap = (size_t)o->batch * (EVENT_JSON_BASE + o->chunk_bytes) + 16;
    lg->body = malloc(lg->body_cap);
    if (lg->ep < 0 || lg->tfd < 0 || !lg->rbuf || !lg->conns || !lg->user_sent || !lg->user_open ||
        !lg->pubs || !lg->body) {
        fprintf(stderr, "loadgen: setup: out of memory or epoll\n");
        return -1;
    }
    /* the K connections of a user are consecutive: u0,u0,u0,u1,...; with several nodes
     * they go to K consecutive nodes from (user / publishers) % nodes: K > 1 puts one user
     * on several nodes, and each publisher's users (u % publishers == p) spread evenly over
     * the nodes, whichever node the publisher itself uses */
    for (uint32_t i = 0; i < lg->nconns; i++) {
        struct conn *c = &lg->conns[i];
        c->fd = -1;
        c->user = i / o->conns_per_user;
        c->node = (uint8_t)((c->user / o->publishers + i % o->conns_per_user) % o->ntargets);
        lg->node_conns[c->node]++;
    }
    for (uint32_t i = 0; i < o->publishers; i++)
        lg->pubs[i].fd = -1;
    if (o->stream_runs && stream_setup(lg) < 0) {
        fprintf(stderr, "loadgen: setup: out of memory\n");
        return -1;
    }
    return 0;
}

static void lg_free(struct lg *lg)
{
    if (lg->conns)
        for (uint32_t i = 0; i < lg->nconns; i++)
            conn_close(lg, &lg->conns[i]);
    if (lg->pubs) {
        for (uint32_t i = 0; i < lg->o.publishers; i++) {
            struct pub *p = &lg->pubs[i];
            if (p->fd >= 0)
                close(p->fd);
            free(p->sizes);
            free(p->runs);
            free(p->out);
            free(p->in);
        }
    }
    if (lg->ep >= 0)
        close(lg->ep);
    if (lg->tfd >= 0)
        close(lg->tfd);
    free(lg->conns);
    free(lg->user_sent);
    free(lg->user_open);
    free(lg->pubs);
    free(lg->runs);
    free(lg->run_pos);
    free(lg->chunk);
    free(lg->body);
    free(lg->rbuf);
    free(lg);
}

int main(int argc, char **argv)
{
    struct lg *lg = calloc(1, sizeof(*lg));
    if (!lg)
        return 2;
    lg->ep = lg->tfd = -1;
    if (opts_parse(&lg->o, argc, argv) < 0) {
        usage(stderr);
        free(lg);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    int rc = 2;
    if (lg_setup(lg) == 0)
        rc = lg->o.idle ? run_idle(lg) : run_load(lg);
    lg_free(lg);
    return rc;
}
