/* The --demo agent: what an embedder writes. It receives the person's chat messages
 * through ac_server_set_message_cb() and answers each with a live run from a worker
 * thread through the thread-safe ac_run_* API: agent_started, thinking streamed word by
 * word, one real tool call (an arithmetic evaluator, or a word counter), the answer. No
 * network, no model: just enough to show what the gateway carries. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/demo.h"

#define DEMO_SLOTS 16
#define DEMO_TEXT_MAX 2000

typedef struct job_s {
    struct demo_s *demo;
    int slot;
    char user_id[257];
    char thread_id[257];
    int has_thread;
    char text[DEMO_TEXT_MAX + 1];
} job_t;

struct demo_s {
    ac_server_t *server;
    uv_mutex_t lock;
    uv_thread_t threads[DEMO_SLOTS];
    int used[DEMO_SLOTS];
    int done[DEMO_SLOTS];
};

/* ---- the tool: a small arithmetic evaluator (+ - * / and parentheses) ----------- */

typedef struct expr_s {
    const char *p;
    int err;
} expr_t;

static double parse_sum(expr_t *e);

static void skip(expr_t *e)
{
    while (*e->p == ' ')
        e->p++;
}

static double parse_atom(expr_t *e)
{
    skip(e);
    if (*e->p == '(') {
        e->p++;
        double v = parse_sum(e);
        skip(e);
        if (*e->p != ')')
            e->err = 1;
        else
            e->p++;
        return v;
    }
    if (*e->p == '-') {
        e->p++;
        return -parse_atom(e);
    }
    char *end;
    double v = strtod(e->p, &end);
    if (end == e->p)
        e->err = 1;
    e->p = end;
    return v;
}

static double parse_product(expr_t *e)
{
    double v = parse_atom(e);
    for (;;) {
        skip(e);
        if (*e->p == '*') {
            e->p++;
            v *= parse_atom(e);
        } else if (*e->p == '/') {
            e->p++;
            double d = parse_atom(e);
            if (d == 0)
                e->err = 1;
            else
                v /= d;
        } else {
            return v;
        }
    }
}

static double parse_sum(expr_t *e)
{
    double v = parse_product(e);
    for (;;) {
        skip(e);
        if (*e->p == '+') {
            e->p++;
            v += parse_product(e);
        } else if (*e->p == '-') {
            e->p++;
            v -= parse_product(e);
        } else {
            return v;
        }
    }
}

/* Finds the longest run of arithmetic characters holding a digit and an operator. */
static int find_expression(const char *text, char *out, size_t outsz)
{
    size_t best = 0, best_at = 0, n = strlen(text);

    for (size_t i = 0; i < n;) {
        size_t j = i;
        int digit = 0, op = 0;
        while (j < n && strchr("0123456789.+-*/() ", text[j]) != NULL) {
            digit |= isdigit((unsigned char)text[j]) != 0;
            op |= strchr("+-*/", text[j]) != NULL;
            j++;
        }
        if (digit && op && j - i > best) {
            best = j - i;
            best_at = i;
        }
        i = j > i ? j : i + 1;
    }
    while (best > 0 && text[best_at] == ' ') {
        best_at++;
        best--;
    }
    if (best == 0 || best >= outsz)
        return 0;
    memcpy(out, text + best_at, best);
    out[best] = '\0';
    while (best > 0 && out[best - 1] == ' ')
        out[--best] = '\0';
    return 1;
}

/* ---- one run -------------------------------------------------------------------- */

static void think(ac_run_t *run, const char *sentence)
{
    char word[64];
    const char *p = sentence;

    /* Word by word, as a model streams tokens. */
    while (*p != '\0') {
        size_t n = strcspn(p, " ");
        size_t take = n + (p[n] == ' ' ? 1 : 0);
        if (take >= sizeof(word))
            take = sizeof(word) - 1;
        memcpy(word, p, take);
        word[take] = '\0';
        ac_run_thinking(run, word);
        p += take;
        uv_sleep(45);
    }
}

static void run_job(void *arg)
{
    job_t *job = arg;
    struct demo_s *demo = job->demo;
    char expr[256], call_id[40], buf[512], answer[600];
    ac_run_t *run;
    int err = 0;

    run = ac_run_start(demo->server, job->user_id, job->has_thread ? job->thread_id : NULL, NULL,
                       "demo-agent", NULL, NULL, &err);
    if (run == NULL)
        goto done;
    snprintf(call_id, sizeof(call_id), "call-%s", ac_run_id(run) + 4);
    think(run, "Reading your message. ");
    if (find_expression(job->text, expr, sizeof(expr))) {
        expr_t e = {expr, 0};
        double v = parse_sum(&e);
        skip(&e);
        think(run, "It contains arithmetic, so I will use the calculator tool. ");
        json_t *args = json_pack("{s:s}", "expression", expr);
        char *args_s = json_dumps(args, JSON_COMPACT);
        json_decref(args);
        ac_run_tool_executing(run, "calculator", call_id, args_s);
        free(args_s);
        uv_sleep(400);
        if (e.err || *e.p != '\0') {
            ac_run_tool_completed(run, "calculator", call_id, "{\"error\":\"cannot evaluate\"}");
            snprintf(answer, sizeof(answer), "\"I could not evaluate %s.\"", expr);
        } else {
            snprintf(buf, sizeof(buf), "{\"value\":%.12g}", v);
            ac_run_tool_completed(run, "calculator", call_id, buf);
            think(run, "The calculator answered. ");
            json_t *a = json_sprintf("%s = %.12g", expr, v);
            char *s = json_dumps(a, JSON_ENCODE_ANY);
            snprintf(answer, sizeof(answer), "%s", s ? s : "\"done\"");
            free(s);
            json_decref(a);
        }
    } else {
        int words = 0, in_word = 0;
        for (const char *p = job->text; *p; p++) {
            int w = !isspace((unsigned char)*p);
            words += w && !in_word;
            in_word = w;
        }
        think(run, "No arithmetic here, so I will count the words with the word_count tool. ");
        json_t *args = json_pack("{s:s}", "text", job->text);
        char *args_s = json_dumps(args, JSON_COMPACT);
        json_decref(args);
        ac_run_tool_executing(run, "word_count", call_id, args_s);
        free(args_s);
        uv_sleep(400);
        snprintf(buf, sizeof(buf), "{\"words\":%d,\"characters\":%zu}", words, strlen(job->text));
        ac_run_tool_completed(run, "word_count", call_id, buf);
        think(run, "Done counting. ");
        snprintf(answer, sizeof(answer), "\"Your message has %d word%s and %zu characters.\"",
                 words, words == 1 ? "" : "s", strlen(job->text));
    }
    ac_run_completed(run, answer);
done:
    uv_mutex_lock(&demo->lock);
    demo->done[job->slot] = 1;
    uv_mutex_unlock(&demo->lock);
    free(job);
}

/* Joins finished workers; returns a free slot or -1. Caller holds the lock. */
static int free_slot(demo_t *demo)
{
    int slot = -1;

    for (int i = 0; i < DEMO_SLOTS; i++) {
        if (demo->used[i] && demo->done[i]) {
            uv_thread_join(&demo->threads[i]);
            demo->used[i] = demo->done[i] = 0;
        }
        if (!demo->used[i] && slot < 0)
            slot = i;
    }
    return slot;
}

static int on_message(ac_server_t *server, const ac_message_t *m, void *arg)
{
    demo_t *demo = arg;
    job_t *job;
    int slot;

    uv_mutex_lock(&demo->lock);
    slot = free_slot(demo);
    if (slot < 0) {
        uv_mutex_unlock(&demo->lock);
        return -1; /* all workers busy: the person gets an error envelope */
    }
    job = calloc(1, sizeof(*job));
    if (job == NULL) {
        uv_mutex_unlock(&demo->lock);
        return -1;
    }
    job->demo = demo;
    job->slot = slot;
    snprintf(job->user_id, sizeof(job->user_id), "%s", m->user_id);
    if (m->thread_id != NULL) {
        snprintf(job->thread_id, sizeof(job->thread_id), "%s", m->thread_id);
        job->has_thread = 1;
    }
    snprintf(job->text, sizeof(job->text), "%s", m->text);
    demo->used[slot] = 1;
    demo->done[slot] = 0;
    if (uv_thread_create(&demo->threads[slot], run_job, job) != 0) {
        demo->used[slot] = 0;
        free(job);
        uv_mutex_unlock(&demo->lock);
        return -1;
    }
    uv_mutex_unlock(&demo->lock);
    return 0;
}

demo_t *demo_start(ac_server_t *server)
{
    demo_t *demo = calloc(1, sizeof(*demo));

    if (demo == NULL)
        return NULL;
    if (uv_mutex_init(&demo->lock) != 0) {
        free(demo);
        return NULL;
    }
    demo->server = server;
    ac_server_set_message_cb(server, on_message, demo);
    return demo;
}

void demo_stop(demo_t *demo)
{
    if (demo == NULL)
        return;
    /* The server has shut down: the workers' calls now fail fast and they finish. */
    for (int i = 0; i < DEMO_SLOTS; i++) {
        if (demo->used[i])
            uv_thread_join(&demo->threads[i]);
    }
    uv_mutex_destroy(&demo->lock);
    free(demo);
}
