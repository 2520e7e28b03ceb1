/* sendprobe: this machine's ceiling for what a gateway's hot path does, measured in the same
 * bench run: N connected loopback TCP pairs; one thread on one core write()s one small
 * WebSocket frame per call to random sockets for a few seconds (frames/s with one write per
 * frame), then writev()s batches of K frames per call to one random socket; a reader thread
 * on another core drains the other ends. Prints one JSON line. Not a network benchmark: the
 * frames never leave loopback and nobody parses them. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "lg_util.h"

struct sp_opts {
    uint32_t pairs;
    uint32_t frame_bytes;
    uint32_t batch;
    double seconds;
    int writer_cpu;
    int reader_cpu;
    const char *label;
};

struct reader {
    int ep;
    atomic_bool stop;
    uint64_t bytes;
    uint64_t reads;
};

struct phase {
    uint64_t calls;
    uint64_t frames;
    uint64_t eagain;
    uint64_t partial;
    double wall_s;
    double cpu_s;
};

static void usage(FILE *f)
{
    fprintf(f, "usage: sendprobe [options]\n"
               "  --pairs N        connected loopback TCP pairs (5000)\n"
               "  --frame-bytes B  bytes of one WebSocket frame, header included (150)\n"
               "  --batch K        frames per writev() in the second phase (8)\n"
               "  --seconds S      length of each phase (3)\n"
               "  --writer-cpu C   pin the writing thread to CPU C\n"
               "  --reader-cpu C   pin the draining thread to CPU C\n"
               "  --label L        copied into the JSON line\n");
}

static int opts_parse(struct sp_opts *o, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"pairs", required_argument, 0, 'p'},
        {"frame-bytes", required_argument, 0, 'f'},
        {"batch", required_argument, 0, 'b'},
        {"seconds", required_argument, 0, 's'},
        {"writer-cpu", required_argument, 0, 'w'},
        {"reader-cpu", required_argument, 0, 'r'},
        {"label", required_argument, 0, 'l'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    *o = (struct sp_opts){.pairs = 5000,
                          .frame_bytes = 150,
                          .batch = 8,
                          .seconds = 3,
                          .writer_cpu = -1,
                          .reader_cpu = -1,
                          .label = "sendprobe"};
    int c;
    uint32_t u;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        int bad = 0;
        switch (c) {
        case 'p':
            bad = parse_u32(optarg, 1, &o->pairs) || o->pairs > 1000000;
            break;
        case 'f':
            bad = parse_u32(optarg, 8, &o->frame_bytes) || o->frame_bytes > 65535;
            break;
        case 'b':
            bad = parse_u32(optarg, 1, &o->batch) || o->batch > IOV_MAX;
            break;
        case 's':
            bad = parse_pos_double(optarg, &o->seconds);
            break;
        case 'w':
            bad = parse_u32(optarg, 0, &u) || u >= CPU_SETSIZE;
            o->writer_cpu = (int)u;
            break;
        case 'r':
            bad = parse_u32(optarg, 0, &u) || u >= CPU_SETSIZE;
            o->reader_cpu = (int)u;
            break;
        case 'l':
            o->label = optarg;
            bad = strlen(optarg) > 200;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            return -1;
        }
        if (bad) {
            fprintf(stderr, "sendprobe: bad value: %s\n", optarg);
            return -1;
        }
    }
    return optind == argc ? 0 : -1;
}

static int pin_self(int cpu)
{
    if (cpu < 0)
        return 0;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

static double thread_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_THREAD, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static int reader_cpu_g = -1;

static void *reader_main(void *arg)
{
    struct reader *r = arg;
    static char buf[1 << 16];
    struct epoll_event evs[256];
    pin_self(reader_cpu_g);
    while (!atomic_load_explicit(&r->stop, memory_order_relaxed)) {
        int n = epoll_wait(r->ep, evs, 256, 50);
        for (int i = 0; i < n; i++) {
            ssize_t got;
            while ((got = read(evs[i].data.fd, buf, sizeof(buf))) > 0) {
                r->bytes += (uint64_t)got;
                r->reads++;
                if ((size_t)got < sizeof(buf))
                    break;
            }
        }
    }
    return NULL;
}

/* Connects `pairs` loopback pairs: w[i] is the accepted (server) end that writes, its peer
 * joins the reader's epoll. */
static int make_pairs(uint32_t pairs, int *w, int ep)
{
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(ls, 4096) < 0 ||
        getsockname(ls, (struct sockaddr *)&a, &al) < 0) {
        perror("sendprobe: listen");
        return -1;
    }
    int one = 1;
    for (uint32_t i = 0; i < pairs; i++) {
        int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (c < 0 || connect(c, (struct sockaddr *)&a, sizeof(a)) < 0) {
            perror("sendprobe: connect");
            return -1;
        }
        int s = accept4(ls, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (s < 0) {
            perror("sendprobe: accept");
            return -1;
        }
        setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        fcntl(c, F_SETFL, fcntl(c, F_GETFL) | O_NONBLOCK);
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = c};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev) < 0) {
            perror("sendprobe: epoll_ctl");
            return -1;
        }
        w[i] = s;
    }
    close(ls);
    return 0;
}

/* One write() of one frame per call to random sockets for `seconds`. */
static void phase_write(const struct sp_opts *o, const int *w, const uint8_t *frame, uint64_t *rng,
                        struct phase *ph)
{
    double cpu0 = thread_cpu_s();
    int64_t t0 = now_ns(), end = t0 + (int64_t)(o->seconds * NS_PER_S), t = t0;
    while (t < end) {
        for (int i = 0; i < 256; i++) {
            int fd = w[rng_next(rng) % o->pairs];
            ssize_t n = write(fd, frame, o->frame_bytes);
            ph->calls++;
            if (n == (ssize_t)o->frame_bytes)
                ph->frames++;
            else if (n < 0 && errno == EAGAIN)
                ph->eagain++;
            else
                ph->partial++;
        }
        t = now_ns();
    }
    ph->wall_s = (double)(t - t0) / NS_PER_S;
    ph->cpu_s = thread_cpu_s() - cpu0;
}

/* One writev() of `batch` frames (separate buffers, as queued frames are) per call. */
static void phase_writev(const struct sp_opts *o, const int *w, uint8_t *const *frames,
                         uint64_t *rng, struct phase *ph)
{
    struct iovec iov[IOV_MAX];
    size_t total = (size_t)o->batch * o->frame_bytes;
    for (uint32_t i = 0; i < o->batch; i++)
        iov[i] = (struct iovec){.iov_base = frames[i], .iov_len = o->frame_bytes};
    double cpu0 = thread_cpu_s();
    int64_t t0 = now_ns(), end = t0 + (int64_t)(o->seconds * NS_PER_S), t = t0;
    while (t < end) {
        for (int i = 0; i < 256; i++) {
            int fd = w[rng_next(rng) % o->pairs];
            ssize_t n = writev(fd, iov, (int)o->batch);
            ph->calls++;
            if (n == (ssize_t)total)
                ph->frames += o->batch;
            else if (n < 0 && errno == EAGAIN)
                ph->eagain++;
            else
                ph->partial++;
        }
        t = now_ns();
    }
    ph->wall_s = (double)(t - t0) / NS_PER_S;
    ph->cpu_s = thread_cpu_s() - cpu0;
}

/* A server text frame of `n` bytes holding an envelope-shaped JSON payload. */
static void fill_frame(uint8_t *f, uint32_t n)
{
    static const char env[] = "{\"type\":\"agent_thinking\",\"seq\":123456,\"user_id\":\"u4242\","
                              "\"timestamp\":\"2026-11-25T17:49:20.123Z\",\"data\":{\"thought\":";
    uint32_t hl = n - 2 < 126 ? 2 : 4;
    uint32_t pl = n - hl;
    f[0] = 0x81;
    if (hl == 2) {
        f[1] = (uint8_t)pl;
    } else {
        f[1] = 126;
        f[2] = (uint8_t)(pl >> 8);
        f[3] = (uint8_t)pl;
    }
    for (uint32_t i = 0; i < pl; i++)
        f[hl + i] = i < sizeof(env) - 1 ? (uint8_t)env[i] : 'x';
}

static void print_phase(const char *name, const struct phase *ph)
{
    /* per CPU second too: on a shared machine the writer may not get its whole core */
    printf("\"%s_calls_per_s\":%.0f,\"%s_frames_per_s\":%.0f,\"%s_frames_per_cpu_s\":%.0f,"
           "\"%s_eagain\":%" PRIu64 ",\"%s_partial\":%" PRIu64
           ",\"%s_cpu_s\":%.2f,\"%s_wall_s\":%.2f,",
           name, ph->wall_s > 0 ? ph->calls / ph->wall_s : 0, name,
           ph->wall_s > 0 ? ph->frames / ph->wall_s : 0, name,
           ph->cpu_s > 0 ? ph->frames / ph->cpu_s : 0, name, ph->eagain, name, ph->partial, name,
           ph->cpu_s, name, ph->wall_s);
}

int main(int argc, char **argv)
{
    struct sp_opts o;
    if (opts_parse(&o, argc, argv) < 0) {
        usage(stderr);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
        if (rl.rlim_cur < 2ull * o.pairs + 16) {
            fprintf(stderr, "sendprobe: %u pairs need %u files, limit is %llu\n", o.pairs,
                    2 * o.pairs + 16, (unsigned long long)rl.rlim_cur);
            return 2;
        }
    }
    struct reader rd = {.ep = epoll_create1(EPOLL_CLOEXEC)};
    int *w = calloc(o.pairs, sizeof(*w));
    uint8_t **frames = calloc(o.batch, sizeof(*frames));
    if (rd.ep < 0 || !w || !frames)
        return 2;
    for (uint32_t i = 0; i < o.batch; i++) {
        frames[i] = malloc(o.frame_bytes);
        if (!frames[i])
            return 2;
        fill_frame(frames[i], o.frame_bytes);
    }
    if (make_pairs(o.pairs, w, rd.ep) < 0)
        return 2;
    uint64_t rng;
    if (getrandom(&rng, sizeof(rng), 0) != sizeof(rng) || rng == 0)
        rng = (uint64_t)now_ns() | 1;

    reader_cpu_g = o.reader_cpu;
    pthread_t th;
    if (pthread_create(&th, NULL, reader_main, &rd) != 0)
        return 2;
    if (pin_self(o.writer_cpu) != 0)
        fprintf(stderr, "sendprobe: cannot pin the writer to CPU %d\n", o.writer_cpu);

    struct phase warm = {0}, one = {0}, vec = {0};
    struct sp_opts wo = o;
    wo.seconds = 0.3;
    phase_write(&wo, w, frames[0], &rng, &warm);
    phase_write(&o, w, frames[0], &rng, &one);
    phase_writev(&o, w, frames, &rng, &vec);
    usleep(200000);
    atomic_store(&rd.stop, true);
    pthread_join(th, NULL);

    bool ok = one.frames > 0 && vec.frames > 0 && one.partial == 0 && vec.partial == 0;
    printf("{\"label\":\"%s\",\"mode\":\"sendprobe\",\"pairs\":%u,\"frame_bytes\":%u,"
           "\"writev_batch\":%u,\"seconds\":%.1f,\"writer_cpu\":%d,\"reader_cpu\":%d,",
           o.label, o.pairs, o.frame_bytes, o.batch, o.seconds, o.writer_cpu, o.reader_cpu);
    print_phase("write", &one);
    print_phase("writev", &vec);
    printf("\"reader_bytes\":%" PRIu64 ",\"reader_reads\":%" PRIu64 ",\"ok\":%s}\n", rd.bytes,
           rd.reads, ok ? "true" : "false");
    for (uint32_t i = 0; i < o.pairs; i++)
        close(w[i]);
    for (uint32_t i = 0; i < o.batch; i++)
        free(frames[i]);
    free(frames);
    free(w);
    close(rd.ep);
    return ok ? 0 : 1;
}
