/* Run lifecycle: a hash of runs by id, a list of open runs ordered by their last event
 * (so the timeout check looks only at the head) and a list of closed runs ordered by
 * closing (so forgetting them does too). A batch is checked against a small overlay of
 * the runs it touches, then applied op by op as each event is published. */
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "agentcast.h"
#include "core/bridge.h"

static uint32_t hash_id(const ac__bridge_t *b, const char *id, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull ^ b->seed;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)id[i]) * 0x100000001b3ull;
    h ^= h >> 31;
    h *= 0x94d049bb133111ebull;
    return (uint32_t)(h ^ (h >> 29));
}

int ac__bridge_init(ac__bridge_t *b)
{
    memset(b, 0, sizeof(*b));
    if (getrandom(&b->seed, sizeof(b->seed), 0) != (ssize_t)sizeof(b->seed))
        b->seed = (uint64_t)(uintptr_t)b;
    b->nbuckets = 256;
    b->buckets = calloc(b->nbuckets, sizeof(*b->buckets));
    return b->buckets ? 0 : AC_ENOMEM;
}

static void run_free(ac__run_t *r)
{
    for (uint32_t i = 0; i < r->ntools; i++)
        free(r->tools[i]);
    free(r->tools);
    free(r->user_id);
    free(r->thread_id);
    free(r);
}

void ac__bridge_dispose(ac__bridge_t *b)
{
    for (size_t i = 0; i < b->nbuckets; i++) {
        ac__run_t *r = b->buckets[i];
        while (r != NULL) {
            ac__run_t *next = r->hnext;
            run_free(r);
            r = next;
        }
    }
    free(b->buckets);
    memset(b, 0, sizeof(*b));
}

ac__run_t *ac__bridge_find(const ac__bridge_t *b, const char *id, size_t len)
{
    uint32_t h = hash_id(b, id, len);

    for (ac__run_t *r = b->buckets[h & (b->nbuckets - 1)]; r != NULL; r = r->hnext) {
        if (r->hash == h && r->id_len == len && memcmp(r->id, id, len) == 0)
            return r;
    }
    return NULL;
}

/* ---- checking ------------------------------------------------------------------- */

/* A run as the batch so far would leave it. Tool ids are borrowed (from the run or the
 * batch), never copied. */
typedef struct overlay_s {
    ac__str_t id;
    ac__str_t user;
    int state;
    const char **tools;
    size_t *tool_lens;
    size_t ntools;
    size_t cap;
} overlay_t;

static int ov_has_tool(const overlay_t *o, ac__str_t t)
{
    for (size_t i = 0; i < o->ntools; i++) {
        if (o->tool_lens[i] == t.len && memcmp(o->tools[i], t.p, t.len) == 0)
            return (int)i + 1;
    }
    return 0;
}

static int ov_add_tool(overlay_t *o, const char *p, size_t len)
{
    if (o->ntools == o->cap) {
        size_t ncap = o->cap ? o->cap * 2 : 4;
        const char **t = realloc(o->tools, ncap * sizeof(*t));
        if (t == NULL)
            return -1;
        o->tools = t;
        size_t *l = realloc(o->tool_lens, ncap * sizeof(*l));
        if (l == NULL)
            return -1;
        o->tool_lens = l;
        o->cap = ncap;
    }
    o->tools[o->ntools] = p;
    o->tool_lens[o->ntools] = len;
    o->ntools++;
    return 0;
}

static overlay_t *ov_get(const ac__bridge_t *b, overlay_t **ovs, size_t *nov, ac__str_t id)
{
    for (size_t i = 0; i < *nov; i++) {
        if ((*ovs)[i].id.len == id.len && memcmp((*ovs)[i].id.p, id.p, id.len) == 0)
            return &(*ovs)[i];
    }
    overlay_t *n = realloc(*ovs, (*nov + 1) * sizeof(**ovs));
    if (n == NULL)
        return NULL;
    *ovs = n;
    overlay_t *o = &n[(*nov)++];
    memset(o, 0, sizeof(*o));
    o->id = id;
    const ac__run_t *r = ac__bridge_find(b, id.p, id.len);
    if (r != NULL) {
        o->state = r->state;
        o->user = (ac__str_t){r->user_id, strlen(r->user_id)};
        for (uint32_t i = 0; i < r->ntools; i++) {
            if (ov_add_tool(o, r->tools[i], strlen(r->tools[i])) != 0)
                return NULL;
        }
    }
    return o;
}

static const char *check_one(overlay_t *o, const ac__run_op_t *op)
{
    if (o->state != AC__RUN_UNKNOWN &&
        (o->user.len != op->user_id.len || memcmp(o->user.p, op->user_id.p, o->user.len) != 0))
        return "run_id: belongs to another user";
    if (op->type == AC__EV_AGENT_STARTED) {
        if (o->state == AC__RUN_OPEN)
            return "run_id: run already open";
        if (o->state == AC__RUN_CLOSED)
            return "run_id: run closed";
        o->state = AC__RUN_OPEN;
        o->user = op->user_id;
        return NULL;
    }
    if (o->state == AC__RUN_CLOSED)
        return "run_id: run closed";
    if (o->state != AC__RUN_OPEN)
        return "run_id: run not open";
    switch (op->type) {
    case AC__EV_TOOL_EXECUTING:
        if (ov_has_tool(o, op->tool_call_id))
            return "data.tool_call_id: already executing in this run";
        if (ov_add_tool(o, op->tool_call_id.p, op->tool_call_id.len) != 0)
            return "out of memory";
        return NULL;
    case AC__EV_TOOL_COMPLETED: {
        int i = ov_has_tool(o, op->tool_call_id);
        if (i == 0)
            return "data.tool_call_id: not executing in this run";
        o->ntools--;
        o->tools[i - 1] = o->tools[o->ntools];
        o->tool_lens[i - 1] = o->tool_lens[o->ntools];
        return NULL;
    }
    case AC__EV_AGENT_COMPLETED:
    case AC__EV_AGENT_ERROR:
        o->state = AC__RUN_CLOSED;
        return NULL;
    default:
        return NULL;
    }
}

int ac__bridge_check(const ac__bridge_t *b, const ac__run_op_t *ops, size_t n, size_t *bad,
                     const char **reason)
{
    overlay_t *ovs = NULL;
    size_t nov = 0;
    int r = 0;

    for (size_t i = 0; i < n && r == 0; i++) {
        if (ops[i].run_id.p == NULL)
            continue;
        overlay_t *o = ov_get(b, &ovs, &nov, ops[i].run_id);
        const char *why = o ? check_one(o, &ops[i]) : "out of memory";
        if (why != NULL) {
            *bad = i;
            *reason = why;
            r = strcmp(why, "out of memory") == 0 ? -2 : -1;
        }
    }
    for (size_t i = 0; i < nov; i++) {
        free(ovs[i].tools);
        free(ovs[i].tool_lens);
    }
    free(ovs);
    return r;
}

/* ---- applying ------------------------------------------------------------------- */

static void list_remove(ac__run_t **head, ac__run_t **tail, ac__run_t *r)
{
    if (r->prev != NULL)
        r->prev->next = r->next;
    else
        *head = r->next;
    if (r->next != NULL)
        r->next->prev = r->prev;
    else
        *tail = r->prev;
    r->prev = r->next = NULL;
}

static void list_append(ac__run_t **head, ac__run_t **tail, ac__run_t *r)
{
    r->next = NULL;
    r->prev = *tail;
    if (*tail != NULL)
        (*tail)->next = r;
    else
        *head = r;
    *tail = r;
}

static void grow(ac__bridge_t *b)
{
    size_t n = b->nbuckets * 2;
    ac__run_t **nb = calloc(n, sizeof(*nb));

    if (nb == NULL)
        return;
    for (size_t i = 0; i < b->nbuckets; i++) {
        ac__run_t *r = b->buckets[i];
        while (r != NULL) {
            ac__run_t *next = r->hnext;
            r->hnext = nb[r->hash & (n - 1)];
            nb[r->hash & (n - 1)] = r;
            r = next;
        }
    }
    free(b->buckets);
    b->buckets = nb;
    b->nbuckets = n;
}

static ac__run_t *run_new(ac__bridge_t *b, const ac__run_op_t *op)
{
    ac__run_t *r = calloc(1, sizeof(*r) + op->run_id.len + 1);

    if (r == NULL)
        return NULL;
    memcpy(r->id, op->run_id.p, op->run_id.len);
    r->id_len = (uint16_t)op->run_id.len;
    r->hash = hash_id(b, op->run_id.p, op->run_id.len);
    r->user_id = strndup(op->user_id.p, op->user_id.len);
    if (op->thread_id.p != NULL)
        r->thread_id = strndup(op->thread_id.p, op->thread_id.len);
    if (r->user_id == NULL || (op->thread_id.p != NULL && r->thread_id == NULL)) {
        run_free(r);
        return NULL;
    }
    if (b->nruns >= b->nbuckets)
        grow(b);
    r->hnext = b->buckets[r->hash & (b->nbuckets - 1)];
    b->buckets[r->hash & (b->nbuckets - 1)] = r;
    b->nruns++;
    if (b->on_run != NULL)
        b->on_run(b->on_run_arg, r->id, r->id_len, 1);
    return r;
}

static void close_run(ac__bridge_t *b, ac__run_t *r, ac__closed_by_t by, uint64_t now)
{
    list_remove(&b->open_head, &b->open_tail, r);
    b->nopen--;
    r->state = AC__RUN_CLOSED;
    r->closed_by = (uint8_t)(r->timing_out ? AC__CLOSED_BY_TIMEOUT : by);
    r->touched = now;
    for (uint32_t i = 0; i < r->ntools; i++)
        free(r->tools[i]);
    r->ntools = 0;
    list_append(&b->closed_head, &b->closed_tail, r);
}

int ac__bridge_apply(ac__bridge_t *b, const ac__run_op_t *op, uint64_t seq, uint64_t now,
                     int64_t wall_ms)
{
    ac__run_t *r;

    if (op->run_id.p == NULL)
        return 0;
    r = ac__bridge_find(b, op->run_id.p, op->run_id.len);
    if (op->type == AC__EV_AGENT_STARTED && r == NULL) {
        r = run_new(b, op);
        if (r == NULL)
            return AC_ENOMEM;
        r->state = AC__RUN_OPEN;
        r->started_ms = wall_ms;
        b->nopen++;
        list_append(&b->open_head, &b->open_tail, r);
    }
    if (r == NULL || r->state != AC__RUN_OPEN)
        return 0; /* checked before: cannot happen */
    r->last_seq = seq;
    r->events++;
    r->touched = now;
    r->updated_ms = wall_ms;
    list_remove(&b->open_head, &b->open_tail, r);
    list_append(&b->open_head, &b->open_tail, r);
    switch (op->type) {
    case AC__EV_TOOL_EXECUTING:
        if (r->ntools == r->tools_cap) {
            uint32_t ncap = r->tools_cap ? r->tools_cap * 2 : 4;
            char **t = realloc(r->tools, ncap * sizeof(*t));
            if (t == NULL)
                return AC_ENOMEM;
            r->tools = t;
            r->tools_cap = ncap;
        }
        r->tools[r->ntools] = strndup(op->tool_call_id.p, op->tool_call_id.len);
        if (r->tools[r->ntools] == NULL)
            return AC_ENOMEM;
        r->ntools++;
        break;
    case AC__EV_TOOL_COMPLETED:
        for (uint32_t i = 0; i < r->ntools; i++) {
            if (strlen(r->tools[i]) == op->tool_call_id.len &&
                memcmp(r->tools[i], op->tool_call_id.p, op->tool_call_id.len) == 0) {
                free(r->tools[i]);
                r->tools[i] = r->tools[--r->ntools];
                break;
            }
        }
        break;
    case AC__EV_AGENT_COMPLETED:
        close_run(b, r, AC__CLOSED_BY_COMPLETED, now);
        break;
    case AC__EV_AGENT_ERROR:
        close_run(b, r, AC__CLOSED_BY_ERROR, now);
        break;
    default:
        break;
    }
    return 0;
}

ac__run_t *ac__bridge_next_timeout(const ac__bridge_t *b, uint64_t now, uint64_t timeout)
{
    ac__run_t *r = b->open_head;

    if (r != NULL && !r->timing_out && r->touched + timeout <= now)
        return r;
    return NULL;
}

void ac__bridge_force_close(ac__bridge_t *b, ac__run_t *r, uint64_t now)
{
    if (r->state == AC__RUN_OPEN) {
        r->timing_out = 1;
        close_run(b, r, AC__CLOSED_BY_TIMEOUT, now);
    }
}

size_t ac__bridge_expire(ac__bridge_t *b, uint64_t now, uint64_t ttl)
{
    size_t n = 0;

    while (b->closed_head != NULL && b->closed_head->touched + ttl <= now) {
        ac__run_t *r = b->closed_head;
        list_remove(&b->closed_head, &b->closed_tail, r);
        ac__run_t **pp = &b->buckets[r->hash & (b->nbuckets - 1)];
        while (*pp != r)
            pp = &(*pp)->hnext;
        *pp = r->hnext;
        b->nruns--;
        if (b->on_run != NULL)
            b->on_run(b->on_run_arg, r->id, r->id_len, 0);
        run_free(r);
        n++;
    }
    return n;
}

const char *ac__run_closed_by_name(ac__closed_by_t c)
{
    switch (c) {
    case AC__CLOSED_BY_COMPLETED:
        return "agent_completed";
    case AC__CLOSED_BY_ERROR:
        return "agent_error";
    case AC__CLOSED_BY_TIMEOUT:
        return "timeout";
    default:
        return NULL;
    }
}
