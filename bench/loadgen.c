/* loadgen: drives agentcastd over its wire protocol (README.md) and measures connect
 * cost, server memory per connection, publish throughput, fan-out delivery latency and
 * correctness (lost, duplicate, misrouted, out-of-order events). One thread, plain epoll and
 * non-blocking sockets; RFC 6455 client side written by hand. It is a client of the daemon
 * only: no TLS, no JWT, no resume (last_seq=), not a protocol conformance test. */
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
#include <time.h>
#include <unistd.h>

#include <openssl/sha.h>

#define NS_PER_S 1000000000LL
#define RBUF_SIZE (4u << 20) /* shared read buffer: the largest frame we accept */
#define MAX_HTTP_HEAD 16384  /* a handshake or publish response head larger than this fails */
#define EVENT_JSON_MAX 160   /* upper bound of one serialised event */
#define EP_CONN 1u
#define EP_PUB 2u

/* ---------------------------------------------------------------- options */

struct lg_opts {
    const char *host;
    int port;
    uint32_t users;
    uint32_t conns_per_user;
    uint64_t events;
    uint32_t batch;
    uint32_t window; /* per publisher connection */
    uint32_t publishers;
    uint32_t connect_concurrency;
    uint32_t src_addrs; /* spread client sources over 127.0.0.2 .. 127.0.0.(1+src_addrs) */
    int pid;
    bool idle;
    const char *api_key;
    const char *label;
    double timeout_s;
    bool quiet;
};

static void usage(FILE *f)
{
    fprintf(f, "usage: loadgen --port P [options]\n"
               "  --host H               server address (127.0.0.1)\n"
               "  --port P               server port (required)\n"
               "  --users N              users u0..u<N-1> (100)\n"
               "  --conns-per-user K     WebSocket connections per user (1)\n"
               "  --events M             events to publish (1000)\n"
               "  --batch B              events per POST /v1/publish array (100)\n"
               "  --window W             publish requests in flight per publisher (4)\n"
               "  --publishers C         keep-alive publish connections (1)\n"
               "  --connect-concurrency  handshakes in flight while connecting (500)\n"
               "  --src-addrs S          client source addresses 127.0.0.2.. (8; 0 = any)\n"
               "  --pid PID              server pid: RSS and CPU from /proc\n"
               "  --idle                 connect all, report RSS per connection, exit\n"
               "  --api-key K            Bearer key for /v1/publish\n"
               "  --label L              copied into the JSON result\n"
               "  --timeout S            hard stop in seconds (120)\n"
               "  --quiet                no progress lines on stderr\n");
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-')
        return -1;
    *out = v;
    return 0;
}

static int parse_u32(const char *s, uint32_t min, uint32_t *out)
{
    uint64_t v;
    if (parse_u64(s, &v) || v < min || v > UINT32_MAX)
        return -1;
    *out = (uint32_t)v;
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
        O_CC,
        O_SRC,
        O_PID,
        O_IDLE,
        O_KEY,
        O_LABEL,
        O_TIMEOUT,
        O_QUIET,
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
        {"connect-concurrency", required_argument, 0, O_CC},
        {"src-addrs", required_argument, 0, O_SRC},
        {"pid", required_argument, 0, O_PID},
        {"idle", no_argument, 0, O_IDLE},
        {"api-key", required_argument, 0, O_KEY},
        {"label", required_argument, 0, O_LABEL},
        {"timeout", required_argument, 0, O_TIMEOUT},
        {"quiet", no_argument, 0, O_QUIET},
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
                          .connect_concurrency = 500,
                          .src_addrs = 8,
                          .timeout_s = 120};
    int c;
    uint32_t u32;
    char *end;
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
            bad = parse_u32(optarg, 1, &o->batch);
            break;
        case O_WINDOW:
            bad = parse_u32(optarg, 1, &o->window);
            break;
        case O_PUBS:
            bad = parse_u32(optarg, 1, &o->publishers);
            break;
        case O_CC:
            bad = parse_u32(optarg, 1, &o->connect_concurrency);
            break;
        case O_SRC:
            bad = parse_u32(optarg, 0, &o->src_addrs) || o->src_addrs > 250;
            break;
        case O_PID:
            bad = parse_u32(optarg, 1, &u32);
            o->pid = (int)u32;
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
            o->timeout_s = strtod(optarg, &end);
            bad = *end || o->timeout_s <= 0;
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
    if (optind != argc || o->port == 0) {
        fprintf(stderr, "loadgen: --port is required and no positional arguments are taken\n");
        return -1;
    }
    if (strlen(o->host) > 255 || (o->api_key && strlen(o->api_key) > 255)) {
        fprintf(stderr, "loadgen: --host and --api-key take at most 255 bytes\n");
        return -1;
    }
    if (o->idle && !o->pid) {
        fprintf(stderr, "loadgen: --idle needs --pid\n");
        return -1;
    }
    if ((uint64_t)o->users * o->conns_per_user > 10000000) {
        fprintf(stderr, "loadgen: too many connections\n");
        return -1;
    }
    if (o->publishers > o->users)
        o->publishers = o->users; /* each publisher owns a disjoint set of users */
    return 0;
}

/* ---------------------------------------------------------------- small utilities */

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
}

static uint64_t rng_next(uint64_t *s)
{
    /* xorshift64*: statistically fine for picking users and masking keys */
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static void base64_encode(const uint8_t *in, size_t n, char *out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        out[o++] = tab[(v >> 18) & 63];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? tab[v & 63] : '=';
    }
    out[o] = '\0';
}

/* The Sec-WebSocket-Accept a server must answer to `key` (RFC 6455 4.2.2). */
static void ws_accept_for(const char *key, char out[29])
{
    char buf[64];
    uint8_t digest[SHA_DIGEST_LENGTH];
    int n = snprintf(buf, sizeof(buf), "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", key);
    SHA1((const uint8_t *)buf, (size_t)n, digest);
    base64_encode(digest, sizeof(digest), out);
}

/* Finds header `name` in an HTTP head (status line included); case-insensitive name. */
static bool http_header(const char *h, size_t hlen, const char *name, const char **val,
                        size_t *vlen)
{
    size_t nl = strlen(name);
    const char *p = h, *end = h + hlen;
    while (p < end) {
        const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
        if (!eol)
            eol = end;
        if ((size_t)(eol - p) > nl && p[nl] == ':' && strncasecmp(p, name, nl) == 0) {
            const char *v = p + nl + 1;
            const char *ve = eol;
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            *val = v;
            *vlen = (size_t)(ve - v);
            return true;
        }
        p = eol + 2;
    }
    return false;
}

/* The status code of an HTTP/1.x response head, or -1. */
static int http_status(const char *h, size_t hlen)
{
    if (hlen < 12 || memcmp(h, "HTTP/1.", 7) != 0 || h[8] != ' ')
        return -1;
    int code = 0;
    for (int i = 9; i < 12; i++) {
        if (h[i] < '0' || h[i] > '9')
            return -1;
        code = code * 10 + (h[i] - '0');
    }
    return code;
}

/* Minimal JSON field access for the hot path: the unsigned integer after `key` (which
 * includes the quotes and colon, e.g. "\"seq\":"). Our envelopes never nest a same-named key
 * before the one we mean. */
static bool json_u64(const char *p, size_t n, const char *key, uint64_t *out)
{
    size_t kl = strlen(key);
    const char *k = memmem(p, n, key, kl);
    if (!k)
        return false;
    const char *d = k + kl, *end = p + n;
    while (d < end && *d == ' ')
        d++;
    if (d >= end || *d < '0' || *d > '9')
        return false;
    uint64_t v = 0;
    while (d < end && *d >= '0' && *d <= '9')
        v = v * 10 + (uint64_t)(*d++ - '0');
    *out = v;
    return true;
}

/* The string value after `key` (quotes and colon included, e.g. "\"type\":"), without its
 * quotes; escapes are not decoded (the values we read never need them). */
static bool json_str(const char *p, size_t n, const char *key, const char **val, size_t *vlen)
{
    size_t kl = strlen(key);
    const char *k = memmem(p, n, key, kl);
    if (!k)
        return false;
    const char *d = k + kl, *end = p + n;
    while (d < end && *d == ' ')
        d++;
    if (d >= end || *d != '"')
        return false;
    d++;
    const char *q = memchr(d, '"', (size_t)(end - d));
    if (!q)
        return false;
    *val = d;
    *vlen = (size_t)(q - d);
    return true;
}

static int u64_to_dec(char *out, uint64_t v)
{
    char tmp[20];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (int i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    return n;
}

/* ---------------------------------------------------------------- latency histogram */

/* Log-linear buckets over nanoseconds: exact below 64, then 64 sub-buckets per power of two
 * (under 1.6% error), enough for any latency a run can see. */
#define HIST_SUB_BITS 6
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_BUCKETS ((64 - HIST_SUB_BITS + 1) * HIST_SUB)

struct hist {
    uint64_t count;
    uint64_t max;
    uint64_t sum;
    uint64_t b[HIST_BUCKETS];
};

static unsigned hist_index(uint64_t v)
{
    if (v < HIST_SUB)
        return (unsigned)v;
    unsigned k = 63u - (unsigned)__builtin_clzll(v);
    unsigned sub = (unsigned)(v >> (k - HIST_SUB_BITS)) & (HIST_SUB - 1);
    return (k - HIST_SUB_BITS + 1) * HIST_SUB + sub;
}

static uint64_t hist_value(unsigned i)
{
    if (i < HIST_SUB)
        return i;
    unsigned k = i / HIST_SUB + HIST_SUB_BITS - 1;
    uint64_t width = 1ull << (k - HIST_SUB_BITS);
    return (HIST_SUB + i % HIST_SUB) * width + width / 2;
}

static void hist_add(struct hist *h, uint64_t v)
{
    h->b[hist_index(v)]++;
    h->count++;
    h->sum += v;
    if (v > h->max)
        h->max = v;
}

/* The q-quantile (0 < q <= 1), or 0 for an empty histogram. */
static uint64_t hist_quantile(const struct hist *h, double q)
{
    if (!h->count)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)h->count + 0.999999);
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= rank) {
            uint64_t v = hist_value(i);
            return v < h->max ? v : h->max;
        }
    }
    return h->max;
}

/* ---------------------------------------------------------------- server process stats */

/* VmRSS of `pid` in KiB, or -1. */
static long proc_rss_kb(int pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long kb = -1;
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kb = strtol(line + 6, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kb;
}

/* utime + stime of `pid` in seconds, or -1. */
static double proc_cpu_s(int pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* comm may hold spaces */
    unsigned long ut, st;
    if (!p || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static double self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

/* ---------------------------------------------------------------- run state */

enum conn_state { CS_NEW, CS_CONNECTING, CS_HANDSHAKE, CS_OPEN, CS_CLOSED };

/* One user WebSocket connection. */
struct conn {
    int fd;
    uint8_t state;
    bool connected;      /* `connected` envelope seen */
    uint16_t close_code; /* from the server's close frame, 0 if none */
    uint32_t user;
    uint64_t base_seq; /* data.last_seq of `connected`: seq before our first event */
    uint64_t last_seq;
    uint64_t received; /* distinct events (seq advanced) */
    char key[25];      /* Sec-WebSocket-Key */
    uint8_t *rest;     /* bytes of an incomplete head or frame; owned */
    uint32_t rest_len, rest_cap;
    uint8_t *out; /* unsent bytes; owned */
    uint32_t out_len;
};

/* One keep-alive HTTP connection publishing the events of users u with u % C == index. */
struct pub {
    int fd;
    uint32_t index;
    bool dead;
    uint64_t to_send;   /* events not yet put in a request */
    uint32_t in_flight; /* requests sent, response pending */
    uint32_t *sizes;    /* ring of in-flight batch sizes, `window` long; owned */
    uint32_t ring_head;
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
    uint64_t proto_errors;
    uint64_t server_errors; /* `error` envelopes */
    uint64_t closed_by_server;
    uint64_t conn_lost; /* EOF or socket error on a user connection */
    uint64_t connect_failed;
    uint64_t pings;
    uint64_t pub_requests, pub_responses, pub_events_sent, pub_events_ok, pub_non200;
    uint64_t pub_delivered_sum, pub_unsent;
};

struct lg {
    struct lg_opts o;
    int ep;
    struct sockaddr_in server;
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
    char *body; /* scratch for one publish body */

    struct counters c;
    struct hist lat;

    int64_t t_start, t_connected, t_pub_start, t_pub_written, t_pub_acked, t_last_delivery;
    int64_t deadline, next_progress, idle_until;
    uint64_t prog_deliveries;
    bool server_gone;
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
    if (c->state == CS_CLOSED)
        return;
    if (c->connected) {
        lg->open--;
        lg->user_open[c->user]--;
        uint64_t owed = lg->user_sent[c->user] - c->received;
        lg->need -= owed < lg->need ? owed : lg->need;
    } else if (c->state != CS_NEW) {
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
    uint8_t f[6 + 125];
    uint32_t mask = (uint32_t)rng_next(&lg->rng);
    f[0] = (uint8_t)(0x80 | opcode);
    f[1] = (uint8_t)(0x80 | len);
    memcpy(f + 2, &mask, 4);
    for (size_t i = 0; i < len; i++)
        f[6 + i] = pl[i] ^ f[2 + i % 4];
    return conn_send(lg, c, f, 6 + len);
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
    lg->handshaking++;
    ep_set(lg, fd, EP_CONN, i, EPOLLOUT, EPOLL_CTL_ADD);
    if (connect(fd, (struct sockaddr *)&lg->server, sizeof(lg->server)) < 0 && errno != EINPROGRESS)
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
    uint8_t raw[16];
    uint64_t r1 = rng_next(&lg->rng), r2 = rng_next(&lg->rng);
    memcpy(raw, &r1, 8);
    memcpy(raw + 8, &r2, 8);
    base64_encode(raw, 16, c->key);
    char req[512];
    int n = snprintf(req, sizeof(req),
                     "GET /ws?user_id=u%u HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n",
                     c->user, lg->o.host, lg->o.port, c->key);
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

static void on_connected(struct lg *lg, struct conn *c, const char *p, size_t n)
{
    uint64_t last = 0;
    if (c->connected || !json_u64(p, n, "\"last_seq\":", &last)) {
        lg->c.proto_errors++;
        conn_fail(lg, c, "connected envelope without data.last_seq, or twice");
        return;
    }
    c->connected = true;
    c->base_seq = c->last_seq = last;
    lg->handshaking--;
    lg->open++;
    lg->user_open[c->user]++;
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
    if (lg->need)
        lg->need--;

    uint64_t ev_n = 0, t = 0;
    if (!json_u64(p, n, "\"n\":", &ev_n) || ev_n != seq - c->base_seq) {
        if (lg->c.n_mismatch++ < 5)
            fprintf(stderr,
                    "loadgen: u%u seq %" PRIu64 " carries n %" PRIu64 ", want %" PRIu64 "\n",
                    c->user, seq, ev_n, seq - c->base_seq);
    }
    if (json_u64(p, n, "\"t\":", &t) && (int64_t)t <= now)
        hist_add(&lg->lat, (uint64_t)(now - (int64_t)t));
    else
        lg->c.proto_errors++;
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

/* Parses complete frames out of p[0..n); returns bytes consumed or -1 once closed. */
static long conn_parse_frames(struct lg *lg, struct conn *c, const uint8_t *p, size_t n)
{
    size_t off = 0;
    while (n - off >= 2) {
        const uint8_t *f = p + off;
        uint64_t len = f[1] & 0x7f;
        size_t hl = 2;
        if (f[1] & 0x80) {
            lg->c.proto_errors++;
            conn_fail(lg, c, "masked frame from server");
            return -1;
        }
        if (len == 126) {
            if (n - off < 4)
                break;
            len = (uint64_t)f[2] << 8 | f[3];
            hl = 4;
        } else if (len == 127) {
            if (n - off < 10)
                break;
            len = 0;
            for (int i = 0; i < 8; i++)
                len = len << 8 | f[2 + i];
            hl = 10;
        }
        if (len > RBUF_SIZE / 2) {
            lg->c.proto_errors++;
            conn_fail(lg, c, "frame larger than loadgen accepts");
            return -1;
        }
        if (n - off - hl < len)
            break;
        on_frame(lg, c, f[0], f + hl, (size_t)len);
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
    while (lg->next_conn < lg->nconns && lg->handshaking < lg->o.connect_concurrency)
        conn_start(lg, &lg->conns[lg->next_conn++]);
}

/* ---------------------------------------------------------------- publishers */

static void pub_fail(struct lg *lg, struct pub *p, const char *why)
{
    fprintf(stderr, "loadgen: publisher %u failed: %s (%u requests unanswered)\n", p->index, why,
            p->in_flight);
    lg->c.pub_non200 += p->in_flight;
    lg->c.pub_unsent += p->to_send;
    p->in_flight = 0;
    p->to_send = 0;
    p->dead = true;
    close(p->fd);
    p->fd = -1;
}

static int pub_reserve(char **buf, size_t *cap, size_t need)
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

/* Serialises one POST of `count` events for this publisher's users into p->out. */
static int pub_build_request(struct lg *lg, struct pub *p, uint32_t count)
{
    uint32_t C = lg->o.publishers;
    uint32_t owned = (lg->o.users - p->index + C - 1) / C;
    char tbuf[24];
    int tlen = u64_to_dec(tbuf, (uint64_t)now_ns());
    char *b = lg->body;
    size_t blen = 0;
    b[blen++] = '[';
    for (uint32_t i = 0; i < count; i++) {
        uint32_t user = p->index + C * (uint32_t)(rng_next(&lg->rng) % owned);
        uint64_t n = ++lg->user_sent[user];
        lg->need += lg->user_open[user];
        if (i)
            b[blen++] = ',';
        static const char a[] = "{\"user_id\":\"u";
        static const char m[] = "\",\"type\":\"agent_thinking\",\"data\":{\"thought\":\"x\",\"n\":";
        memcpy(b + blen, a, sizeof(a) - 1);
        blen += sizeof(a) - 1;
        blen += (size_t)u64_to_dec(b + blen, user);
        memcpy(b + blen, m, sizeof(m) - 1);
        blen += sizeof(m) - 1;
        blen += (size_t)u64_to_dec(b + blen, n);
        memcpy(b + blen, ",\"t\":", 5);
        blen += 5;
        memcpy(b + blen, tbuf, (size_t)tlen);
        blen += (size_t)tlen;
        memcpy(b + blen, "}}", 2);
        blen += 2;
    }
    b[blen++] = ']';

    if (pub_reserve(&p->out, &p->out_cap, p->out_len + blen + 512) < 0)
        return -1;
    char auth[300] = "";
    if (lg->o.api_key)
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s\r\n", lg->o.api_key);
    int hl = snprintf(p->out + p->out_len, 512,
                      "POST /v1/publish HTTP/1.1\r\nHost: %s:%d\r\n%s"
                      "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                      lg->o.host, lg->o.port, auth, blen);
    if (hl < 0 || hl >= 512)
        return -1;
    p->out_len += (size_t)hl;
    memcpy(p->out + p->out_len, b, blen);
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

/* Tops the window up with new requests and writes what it can. */
static void pub_fill(struct lg *lg, struct pub *p)
{
    if (p->dead)
        return;
    bool added = false;
    while (p->in_flight < lg->o.window && p->to_send) {
        uint32_t count = p->to_send < lg->o.batch ? (uint32_t)p->to_send : lg->o.batch;
        if (pub_build_request(lg, p, count) < 0) {
            pub_fail(lg, p, "out of memory or request head too long");
            return;
        }
        added = true;
    }
    if (added)
        pub_flush(lg, p);
}

static void pub_on_response(struct lg *lg, struct pub *p, int status, const char *body, size_t blen)
{
    uint32_t count = p->sizes[p->ring_head];
    p->ring_head = (p->ring_head + 1) % lg->o.window;
    p->in_flight--;
    lg->c.pub_responses++;
    if (status != 200) {
        if (lg->c.pub_non200++ < 5)
            fprintf(stderr, "loadgen: publish answered %d: %.*s\n", status,
                    (int)(blen < 200 ? blen : 200), body);
        return;
    }
    lg->c.pub_events_ok += count;
    lg->t_pub_acked = now_ns();
    /* the 200 body is an array of {"seq":N,"delivered":K}; sum K as a cross-check */
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

static void pub_on_readable(struct lg *lg, struct pub *p)
{
    if (pub_reserve(&p->in, &p->in_cap, p->in_len + 65536) < 0) {
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
    size_t off = 0;
    while (off < p->in_len) {
        const char *h = p->in + off;
        size_t avail = p->in_len - off;
        const char *e = memmem(h, avail, "\r\n\r\n", 4);
        if (!e) {
            if (avail > MAX_HTTP_HEAD) {
                pub_fail(lg, p, "response head too large");
                return;
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
            return;
        }
        memcpy(num, v, vlen);
        num[vlen] = '\0';
        if (parse_u64(num, &clen) < 0) {
            pub_fail(lg, p, "bad Content-Length");
            return;
        }
        if (avail - hlen < clen)
            break;
        if (p->in_flight == 0) {
            pub_fail(lg, p, "response without a request");
            return;
        }
        pub_on_response(lg, p, http_status(h, hlen), h + hlen, (size_t)clen);
        off += hlen + (size_t)clen;
        if (http_header(h, hlen, "Connection", &v, &vlen) && vlen == 5 &&
            strncasecmp(v, "close", 5) == 0) {
            pub_fail(lg, p, "server sent Connection: close");
            return;
        }
    }
    memmove(p->in, p->in + off, p->in_len - off);
    p->in_len -= off;
    pub_fill(lg, p);
}

static void pubs_start(struct lg *lg)
{
    uint32_t C = lg->o.publishers;
    for (uint32_t i = 0; i < C; i++) {
        struct pub *p = &lg->pubs[i];
        p->index = i;
        p->to_send = lg->o.events / C + (i < lg->o.events % C);
        p->sizes = calloc(lg->o.window, sizeof(*p->sizes));
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int one = 1;
        /* a blocking connect keeps setup simple; the server is local */
        if (fd < 0 || !p->sizes ||
            connect(fd, (struct sockaddr *)&lg->server, sizeof(lg->server)) < 0) {
            perror("loadgen: publisher connect");
            exit(2);
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        p->fd = fd;
        ep_set(lg, fd, EP_PUB, i, EPOLLIN, EPOLL_CTL_ADD);
    }
    lg->t_pub_start = now_ns();
    for (uint32_t i = 0; i < C; i++)
        pub_fill(lg, &lg->pubs[i]);
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
    return lg->need == 0;
}

static void progress(struct lg *lg, const char *phase, int64_t now)
{
    long rss = lg->o.pid ? proc_rss_kb(lg->o.pid) : -1;
    if (lg->o.pid && rss < 0)
        lg->server_gone = true;
    if (lg->o.quiet)
        return;
    double t = (double)(now - lg->t_start) / NS_PER_S;
    if (strcmp(phase, "publish") == 0) {
        fprintf(stderr,
                "[%6.1fs] publish sent %" PRIu64 "/%" PRIu64 " acked %" PRIu64
                " deliveries %" PRIu64 " (+%" PRIu64 "/s) owed %" PRIu64
                " p99 %.0fus open %u rss %ldkB\n",
                t, lg->c.pub_events_sent, lg->o.events, lg->c.pub_events_ok, lg->c.distinct,
                lg->c.distinct - lg->prog_deliveries, lg->need, hist_quantile(&lg->lat, 0.99) / 1e3,
                lg->open, rss);
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
            fprintf(stderr, "loadgen: server pid %d is gone\n", lg->o.pid);
            return -1;
        }
        int n = epoll_wait(lg->ep, evs, 512, 20);
        if (n < 0 && errno != EINTR) {
            perror("loadgen: epoll_wait");
            exit(2);
        }
        for (int i = 0; i < n; i++) {
            uint32_t kind = (uint32_t)(evs[i].data.u64 >> 32);
            uint32_t idx = (uint32_t)evs[i].data.u64;
            uint32_t e = evs[i].events;
            if (kind == EP_CONN) {
                struct conn *c = &lg->conns[idx];
                if (c->state != CS_CLOSED)
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
    printf("{\"label\":\"%s\",\"mode\":\"%s\",\"users\":%u,\"conns_per_user\":%u,"
           "\"connections\":%u,\"connected\":%u,\"connect_failed\":%" PRIu64 ","
           "\"connect_s\":%.3f,",
           lg->o.label ? lg->o.label : "", mode, lg->o.users, lg->o.conns_per_user, lg->nconns,
           lg->open, lg->c.connect_failed, secs(lg->t_start, lg->t_connected));
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

static int run_idle(struct lg *lg)
{
    long rss0 = proc_rss_kb(lg->o.pid);
    double cpu0 = proc_cpu_s(lg->o.pid);
    if (rss0 < 0) {
        fprintf(stderr, "loadgen: cannot read /proc/%d\n", lg->o.pid);
        return 2;
    }
    int rc = phase_connect(lg);
    if (rc == 0) {
        lg->idle_until = now_ns() + NS_PER_S;
        rc = run_until(lg, "idle", idle_done);
    }
    long rss1 = proc_rss_kb(lg->o.pid);
    double cpu1 = proc_cpu_s(lg->o.pid);
    bool ok = rc == 0 && rss1 >= 0 && lg->open == lg->nconns && lg->c.proto_errors == 0;
    double per_conn = lg->open ? (double)(rss1 - rss0) * 1024 / lg->open : 0;
    json_head(lg, "idle");
    printf("\"server_rss_before_kb\":%ld,\"server_rss_after_kb\":%ld,\"bytes_per_conn\":%.0f,"
           "\"server_cpu_s\":%.2f,\"loadgen_cpu_s\":%.2f,\"proto_errors\":%" PRIu64 ","
           "\"closed_by_server\":%" PRIu64 ",\"pings\":%" PRIu64 ",\"ok\":%s}\n",
           rss0, rss1, per_conn, cpu1 - cpu0, self_cpu_s(), lg->c.proto_errors,
           lg->c.closed_by_server, lg->c.pings, ok ? "true" : "false");
    fflush(stdout);
    return ok ? 0 : 1;
}

static int run_load(struct lg *lg)
{
    bool have_pid = lg->o.pid != 0;
    long rss0 = have_pid ? proc_rss_kb(lg->o.pid) : -1;
    double cpu0 = have_pid ? proc_cpu_s(lg->o.pid) : -1;
    int rc = phase_connect(lg);
    long rss1 = have_pid ? proc_rss_kb(lg->o.pid) : -1;
    double cpu1 = have_pid ? proc_cpu_s(lg->o.pid) : -1;
    bool timed_out = false;
    if (rc == 0) {
        pubs_start(lg);
        timed_out = run_until(lg, "publish", publish_done) < 0;
    }
    int64_t t_end = now_ns();
    long rss2 = have_pid ? proc_rss_kb(lg->o.pid) : -1;
    double cpu2 = have_pid ? proc_cpu_s(lg->o.pid) : -1;

    uint64_t expected = 0, lost = 0;
    for (uint32_t i = 0; i < lg->nconns; i++) {
        const struct conn *c = &lg->conns[i];
        if (!c->connected)
            continue;
        expected += lg->user_sent[c->user];
        lost += lg->user_sent[c->user] - c->received;
    }
    const struct counters *k = &lg->c;
    int64_t t0 = lg->t_pub_start ? lg->t_pub_start : t_end; /* 0 when publishing never began */
    int64_t t_deliv = lg->t_last_delivery > t0 ? lg->t_last_delivery : t_end;
    bool ok = rc == 0 && !timed_out && lost == 0 && k->dup == 0 && k->misrouted == 0 &&
              k->out_of_order == 0 && k->n_mismatch == 0 && k->pub_non200 == 0 &&
              k->pub_unsent == 0 && k->pub_events_ok == lg->o.events && k->proto_errors == 0;

    json_head(lg, "load");
    printf("\"events\":%" PRIu64 ",\"batch\":%u,\"window\":%u,\"publishers\":%u,"
           "\"published\":%" PRIu64 ",\"accepted\":%" PRIu64 ",\"publish_non200\":%" PRIu64 ","
           "\"publish_s\":%.3f,\"events_per_s_published\":%.0f,\"events_per_s_accepted\":%.0f,",
           lg->o.events, lg->o.batch, lg->o.window, lg->o.publishers, k->pub_events_sent,
           k->pub_events_ok, k->pub_non200 + k->pub_unsent, secs(t0, lg->t_pub_acked),
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
    printf("\"lost\":%" PRIu64 ",\"dup\":%" PRIu64 ",\"misrouted\":%" PRIu64
           ",\"out_of_order\":%" PRIu64 ",\"n_mismatch\":%" PRIu64 ",\"proto_errors\":%" PRIu64
           ",\"unexpected_messages\":%" PRIu64 ",\"closed_by_server\":%" PRIu64
           ",\"conn_lost\":%" PRIu64 ",\"pings\":%" PRIu64 ",",
           lost, k->dup, k->misrouted, k->out_of_order, k->n_mismatch, k->proto_errors,
           k->server_errors, k->closed_by_server, k->conn_lost, k->pings);
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
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res;
    int rc = getaddrinfo(lg->o.host, NULL, &hints, &res);
    if (rc) {
        fprintf(stderr, "loadgen: %s: %s\n", lg->o.host, gai_strerror(rc));
        return -1;
    }
    lg->server = *(struct sockaddr_in *)res->ai_addr;
    lg->server.sin_port = htons((uint16_t)lg->o.port);
    freeaddrinfo(res);
    /* source addresses 127.0.0.x only reach a loopback server */
    if ((ntohl(lg->server.sin_addr.s_addr) >> 24) != 127)
        lg->o.src_addrs = 0;
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

static int lg_setup(struct lg *lg)
{
    const struct lg_opts *o = &lg->o;
    lg->nconns = o->users * o->conns_per_user;
    if (resolve(lg) < 0 || raise_nofile((uint64_t)lg->nconns + o->publishers + 32) < 0)
        return -1;
    if (getrandom(&lg->rng, sizeof(lg->rng), 0) != sizeof(lg->rng) || lg->rng == 0)
        lg->rng = (uint64_t)now_ns() | 1;
    lg->ep = epoll_create1(EPOLL_CLOEXEC);
    lg->rbuf = malloc(RBUF_SIZE);
    lg->conns = calloc(lg->nconns, sizeof(*lg->conns));
    lg->user_sent = calloc(o->users, sizeof(*lg->user_sent));
    lg->user_open = calloc(o->users, sizeof(*lg->user_open));
    lg->pubs = calloc(o->publishers, sizeof(*lg->pubs));
    lg->body = malloc((size_t)o->batch * EVENT_JSON_MAX + 16);
    if (lg->ep < 0 || !lg->rbuf || !lg->conns || !lg->user_sent || !lg->user_open || !lg->pubs ||
        !lg->body) {
        fprintf(stderr, "loadgen: setup: out of memory or epoll\n");
        return -1;
    }
    /* the K connections of a user are consecutive: u0,u0,u0,u1,... */
    for (uint32_t i = 0; i < lg->nconns; i++) {
        lg->conns[i].fd = -1;
        lg->conns[i].user = i / o->conns_per_user;
    }
    for (uint32_t i = 0; i < o->publishers; i++)
        lg->pubs[i].fd = -1;
    return 0;
}

static void lg_free(struct lg *lg)
{
    for (uint32_t i = 0; i < lg->nconns; i++)
        conn_close(lg, &lg->conns[i]);
    for (uint32_t i = 0; i < lg->o.publishers; i++) {
        struct pub *p = &lg->pubs[i];
        if (p->fd >= 0)
            close(p->fd);
        free(p->sizes);
        free(p->out);
        free(p->in);
    }
    if (lg->ep >= 0)
        close(lg->ep);
    free(lg->conns);
    free(lg->user_sent);
    free(lg->user_open);
    free(lg->pubs);
    free(lg->body);
    free(lg->rbuf);
    free(lg);
}

int main(int argc, char **argv)
{
    struct lg *lg = calloc(1, sizeof(*lg));
    if (!lg)
        return 2;
    lg->ep = -1;
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
