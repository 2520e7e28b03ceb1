/* The embedding API's thread-safe side: ac_emit() and the ac_run_* helpers may be called
 * from any thread. They copy the event into a node, append it to a bounded, mutex-guarded
 * FIFO and wake the loop with uv_async_send(); the loop drains the whole FIFO per wake-up
 * (async sends coalesce) and publishes on its own thread. No server state is locked. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "api/api.h"
#include "core/log.h"

typedef struct emit_node_s {
    struct emit_node_s *next;
    ac_emit_cb cb;
    void *arg;
    ac_event_t ev; /* strings point into text[] */
    char text[];
} emit_node_t;

static size_t len0(const char *p)
{
    return p ? strlen(p) + 1 : 0;
}

static const char *put(char **o, const char *p)
{
    if (p == NULL)
        return NULL;
    size_t n = strlen(p) + 1;
    char *dst = *o;
    memcpy(dst, p, n);
    *o += n;
    return dst;
}

static emit_node_t *node_new(const ac_event_t *ev, ac_emit_cb cb, void *arg)
{
    size_t n = len0(ev->user_id) + len0(ev->type) + len0(ev->data_json) + len0(ev->run_id) +
               len0(ev->thread_id) + len0(ev->connection_id) + len0(ev->idempotency_key);
    emit_node_t *node = malloc(sizeof(*node) + n);
    char *o;

    if (node == NULL)
        return NULL;
    o = node->text;
    node->next = NULL;
    node->cb = cb;
    node->arg = arg;
    node->ev.user_id = put(&o, ev->user_id);
    node->ev.type = put(&o, ev->type);
    node->ev.data_json = put(&o, ev->data_json);
    node->ev.run_id = put(&o, ev->run_id);
    node->ev.thread_id = put(&o, ev->thread_id);
    node->ev.connection_id = put(&o, ev->connection_id);
    node->ev.idempotency_key = put(&o, ev->idempotency_key);
    return node;
}

int ac_emit(ac_server_t *s, const ac_event_t *ev, ac_emit_cb cb, void *arg)
{
    emit_node_t *node;
    int r = 0;

    if (ev == NULL || ev->user_id == NULL || ev->type == NULL)
        return AC_EINVAL;
    node = node_new(ev, cb, arg);
    if (node == NULL)
        return AC_ENOMEM;
    uv_mutex_lock(&s->emit_lock);
    if (s->emit_closed) {
        r = AC_ECLOSED;
    } else if (s->emit_count >= AC_EMIT_QUEUE_MAX) {
        r = AC_EBUSY;
    } else {
        if (s->emit_tail != NULL)
            s->emit_tail->next = node;
        else
            s->emit_head = node;
        s->emit_tail = node;
        s->emit_count++;
        if (s->emit_async_ready)
            uv_async_send(&s->emit_async);
    }
    uv_mutex_unlock(&s->emit_lock);
    if (r != 0)
        free(node);
    return r;
}

void ac__embed_drain(ac_server_t *s)
{
    emit_node_t *node;

    /* Take the whole FIFO at once: publishing happens outside the lock. */
    uv_mutex_lock(&s->emit_lock);
    node = s->emit_head;
    s->emit_head = s->emit_tail = NULL;
    s->emit_count = 0;
    uv_mutex_unlock(&s->emit_lock);
    while (node != NULL) {
        emit_node_t *next = node->next;
        ac__emit_start(s, &node->ev, node->cb, node->arg);
        free(node);
        node = next;
    }
}

void ac__embed_close(ac_server_t *s)
{
    emit_node_t *node;

    uv_mutex_lock(&s->emit_lock);
    s->emit_closed = 1;
    node = s->emit_head;
    s->emit_head = s->emit_tail = NULL;
    s->emit_count = 0;
    uv_mutex_unlock(&s->emit_lock);
    while (node != NULL) {
        emit_node_t *next = node->next;
        if (node->cb != NULL)
            node->cb(s, AC_ECLOSED, NULL, ac_strerror(AC_ECLOSED), node->arg);
        free(node);
        node = next;
    }
}

/* ---- runs ---------------------------------------------------------------------------- */

struct ac_run_s {
    ac_server_t *server;
    ac_emit_cb cb;
    void *arg;
    char *user_id;
    char *thread_id;
    char run_id[72];
};

static int run_emit(ac_run_t *run, const char *type, json_t *data)
{
    ac_event_t ev = {0};
    char *text;
    int r;

    if (data == NULL)
        return AC_EINVAL;
    text = json_dumps(data, JSON_COMPACT | JSON_ALLOW_NUL);
    json_decref(data);
    if (text == NULL)
        return AC_ENOMEM;
    ev.user_id = run->user_id;
    ev.type = type;
    ev.data_json = text;
    ev.run_id = run->run_id;
    ev.thread_id = run->thread_id;
    r = ac_emit(run->server, &ev, run->cb, run->arg);
    free(text);
    return r;
}

/* A JSON text given by the caller, or null when none; NULL when it is not JSON. */
static json_t *json_arg(const char *text)
{
    if (text == NULL || text[0] == '\0')
        return json_null();
    return json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
}

static void run_free(ac_run_t *run)
{
    free(run->user_id);
    free(run->thread_id);
    free(run);
}

ac_run_t *ac_run_start(ac_server_t *s, const char *user_id, const char *thread_id,
                       const char *run_id, const char *agent, ac_emit_cb cb, void *arg, int *err)
{
    ac_run_t *run;
    int r = AC_EINVAL;

    if (user_id == NULL || agent == NULL || (run_id != NULL && strlen(run_id) >= 72))
        goto fail;
    r = AC_ENOMEM;
    run = calloc(1, sizeof(*run));
    if (run == NULL)
        goto fail;
    run->server = s;
    run->cb = cb;
    run->arg = arg;
    run->user_id = strdup(user_id);
    run->thread_id = thread_id ? strdup(thread_id) : NULL;
    if (run->user_id == NULL || (thread_id != NULL && run->thread_id == NULL))
        goto fail_run;
    if (run_id != NULL) {
        snprintf(run->run_id, sizeof(run->run_id), "%s", run_id);
    } else {
        uint64_t rnd[2] = {0, 0};
        if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
            rnd[0] = (uint64_t)(uintptr_t)run;
        snprintf(run->run_id, sizeof(run->run_id), "run-%016llx%016llx", (unsigned long long)rnd[0],
                 (unsigned long long)rnd[1]);
    }
    r = run_emit(run, "agent_started", json_pack("{s:s}", "agent", agent));
    if (r != 0)
        goto fail_run;
    return run;

fail_run:
    run_free(run);
fail:
    if (err != NULL)
        *err = r;
    return NULL;
}

const char *ac_run_id(const ac_run_t *run)
{
    return run->run_id;
}

int ac_run_thinking(ac_run_t *run, const char *thought)
{
    if (thought == NULL)
        return AC_EINVAL;
    return run_emit(run, "agent_thinking", json_pack("{s:s}", "thought", thought));
}

/* tool_executing / tool_completed: {"tool", "tool_call_id", key: the JSON text}. */
static int run_tool(ac_run_t *run, const char *type, const char *tool, const char *tool_call_id,
                    const char *key, const char *json_text)
{
    json_t *value = json_arg(json_text);

    if (tool == NULL || tool_call_id == NULL || value == NULL) {
        json_decref(value);
        return AC_EINVAL;
    }
    return run_emit(
        run, type,
        json_pack("{s:s,s:s,s:o}", "tool", tool, "tool_call_id", tool_call_id, key, value));
}

int ac_run_tool_executing(ac_run_t *run, const char *tool, const char *tool_call_id,
                          const char *args_json)
{
    return run_tool(run, "tool_executing", tool, tool_call_id, "args", args_json);
}

int ac_run_tool_completed(ac_run_t *run, const char *tool, const char *tool_call_id,
                          const char *result_json)
{
    return run_tool(run, "tool_completed", tool, tool_call_id, "result", result_json);
}

int ac_run_completed(ac_run_t *run, const char *result_json)
{
    json_t *result = json_arg(result_json);
    int r;

    if (result == NULL) {
        run_free(run);
        return AC_EINVAL;
    }
    r = run_emit(run, "agent_completed", json_pack("{s:o}", "result", result));
    run_free(run);
    return r;
}

int ac_run_error(ac_run_t *run, const char *error)
{
    int r;

    r = error ? run_emit(run, "agent_error", json_pack("{s:s}", "error", error)) : AC_EINVAL;
    run_free(run);
    return r;
}
