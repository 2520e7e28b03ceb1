/* Publishing: POST /v1/publish and ac_emit(). One path validates an event object (every
 * field, all of an array before any of it is published: all or nothing), then hands each
 * event to the emitter (seq, envelope) and the broker (fan-out). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "core/jscan.h"
#include "core/log.h"
#include "net/group.h"
#include "net/ws.h"

/* The fields of one event object as published, read either by core/jscan (in place) or
 * from jansson's tree; validation then reads only this. */
enum { F_USER_ID, F_TYPE, F_DATA, F_RUN_ID, F_THREAD_ID, F_CONNECTION_ID, F_IDEMPOTENCY_KEY, F_N };

static const char *const known_fields[F_N] = {
    "user_id", "type", "data", "run_id", "thread_id", "connection_id", "idempotency_key"};

typedef struct fields_s {
    uint8_t kind[F_N];  /* 0: absent, else AC__J_* */
    uint8_t tcid_kind;  /* data.tool_call_id's kind */
    int data_ws;        /* data_raw has whitespace between tokens */
    unsigned data_has;  /* AC__DF_* members of data present and not null */
    ac__str_t str[F_N]; /* the string fields' values */
    ac__str_t tcid;     /* data.tool_call_id when a string */
    const json_t *data; /* data from jansson, or */
    ac__str_t data_raw; /* data's text as published (scanned) */
} fields_t;

typedef struct ac__api_item_s {
    fields_t f;
    ac__event_t ev;
    ac__run_op_t op;
    ac__str_t user;
    ac__str_t idem_key; /* p NULL: none */
    int direct;
    int timeout; /* the gateway's own agent_error for a silent run */
    uint64_t conn_id;
    ac_server_t *own; /* the loop that owns the user (--threads): its state decides */
} item_t;

typedef struct ac__pend_s pend_t;

/* Reasons that name a value are formatted here (per thread: one server per loop thread). */
static __thread char reason_buf[160];

static int known_field(const char *key, size_t len)
{
    int i;

    switch (len) { /* one candidate per length, but for type and data */
    case 4:
        i = key[0] == 't' ? F_TYPE : F_DATA;
        break;
    case 6:
        i = F_RUN_ID;
        break;
    case 7:
        i = F_USER_ID;
        break;
    case 9:
        i = F_THREAD_ID;
        break;
    case 13:
        i = F_CONNECTION_ID;
        break;
    case 15:
        i = F_IDEMPOTENCY_KEY;
        break;
    default:
        return -1;
    }
    return memcmp(known_fields[i], key, len) == 0 ? i : -1;
}

/* Reads one event from jansson's tree. Returns 0, or 400 with *reason. */
static int fields_from_json(json_t *obj, fields_t *f, const char **reason)
{
    const char *key;
    json_t *v, *data;

    memset(f, 0, sizeof(*f));
    if (!json_is_object(obj)) {
        *reason = "event: must be a JSON object";
        return 400;
    }
    json_object_foreach(obj, key, v)
    {
        int i = known_field(key, strlen(key));
        if (i < 0) {
            snprintf(reason_buf, sizeof(reason_buf), "%.64s: unknown field", key);
            *reason = reason_buf;
            return 400;
        }
        f->kind[i] = (uint8_t)ac__json_kind(v);
        if (json_is_string(v))
            f->str[i] = (ac__str_t){json_string_value(v), json_string_length(v)};
    }
    data = json_object_get(obj, "data");
    if (json_is_object(data)) {
        f->data = data;
        json_object_foreach(data, key, v)
        {
            unsigned bit = ac__ev_data_field(key, strlen(key));
            if (bit != 0 && !json_is_null(v))
                f->data_has |= bit;
            if (bit == AC__DF_TOOL_CALL_ID) {
                f->tcid_kind = (uint8_t)ac__json_kind(v);
                if (json_is_string(v))
                    f->tcid = (ac__str_t){json_string_value(v), json_string_length(v)};
            }
        }
    }
    return 0;
}

/* Reads one event object in place. 0, or -1 when jansson should read the body instead
 * (anything unusual or invalid: it gives the precise error). */
static int fields_scan(ac__jscan_t *j, fields_t *f)
{
    ac__jobj_t o;
    const char *key, *start;
    size_t klen;
    int r, kind;

    memset(f, 0, sizeof(*f));
    if (ac__jscan_peek(j) != '{')
        return -1;
    ac__jscan_object(j, &o);
    while ((r = ac__jscan_member(j, &o, &key, &klen)) == 1) {
        int i = known_field(key, klen);
        if (i < 0)
            return -1;
        if (i == F_DATA && ac__jscan_peek(j) == '{') {
            ac__jobj_t d;
            start = j->p;
            j->ws = 0;
            ac__jscan_object(j, &d);
            while ((r = ac__jscan_member(j, &d, &key, &klen)) == 1) {
                const char *vstart;
                unsigned bit = ac__ev_data_field(key, klen);
                if (ac__jscan_value(j, &kind, &vstart) != 0)
                    return -1;
                if (bit != 0 && kind != AC__J_NULL)
                    f->data_has |= bit;
                if (bit == AC__DF_TOOL_CALL_ID) {
                    f->tcid_kind = (uint8_t)kind;
                    if (kind == AC__J_STRING && j->esc)
                        return -1;
                    if (kind == AC__J_STRING)
                        f->tcid = (ac__str_t){vstart + 1, (size_t)(j->p - vstart) - 2};
                }
            }
            if (r != 0)
                return -1;
            f->kind[i] = AC__J_OBJECT;
            f->data_raw = (ac__str_t){start, (size_t)(j->p - start)};
            f->data_ws = (int)j->ws;
            continue;
        }
        if (ac__jscan_value(j, &kind, &start) != 0 || (kind == AC__J_STRING && j->esc))
            return -1;
        f->kind[i] = (uint8_t)kind;
        if (kind == AC__J_STRING)
            f->str[i] = (ac__str_t){start + 1, (size_t)(j->p - start) - 2};
    }
    return r;
}

/* An optional string field that, when present, is a label (1..256 bytes, no controls). */
static int opt_label(const fields_t *f, int i, ac__str_t *out, const char **reason)
{
    *out = (ac__str_t){0};
    if (f->kind[i] == 0 || f->kind[i] == AC__J_NULL)
        return 0;
    if (f->kind[i] != AC__J_STRING) {
        snprintf(reason_buf, sizeof(reason_buf), "%s: must be a string", known_fields[i]);
        *reason = reason_buf;
        return -1;
    }
    *out = f->str[i];
    if (!ac__api_label_ok(out->p, out->len, AC__USER_ID_MAX)) {
        snprintf(reason_buf, sizeof(reason_buf), "%s: 1 to 256 bytes without control characters",
                 known_fields[i]);
        *reason = reason_buf;
        return -1;
    }
    return 0;
}

static int is_duplicate(ac_server_t *s, const item_t *it);

/* Validates one event's fields (it->f). Returns 0, or the HTTP status (400, 404) with
 * *reason. */
static int validate(ac_server_t *s, item_t *it, const char **reason)
{
    const fields_t *f = &it->f;
    const char *field;
    int t;

    it->ev = (ac__event_t){0};
    it->op = (ac__run_op_t){0};
    it->idem_key = (ac__str_t){0};
    it->direct = 0;
    it->timeout = 0;
    it->conn_id = 0;
    if (f->kind[F_USER_ID] == 0) {
        *reason = "user_id: required";
        return 400;
    }
    if (opt_label(f, F_USER_ID, &it->user, reason) != 0)
        return 400;
    if (it->user.p == NULL) {
        *reason = "user_id: required";
        return 400;
    }
    it->own = ac__group_owner(s, it->user.p, it->user.len);
    if (f->kind[F_TYPE] == 0 || f->kind[F_TYPE] == AC__J_NULL) {
        *reason = "type: required";
        return 400;
    }
    if (f->kind[F_TYPE] != AC__J_STRING) {
        *reason = "type: must be a string";
        return 400;
    }
    t = ac__ev_type_parse(f->str[F_TYPE].p, f->str[F_TYPE].len, reason);
    if (t < 0)
        return 400;
    it->ev.type = (ac__ev_type_t)t;
    it->ev.type_name = f->str[F_TYPE];

    if (f->kind[F_DATA] != 0 && f->kind[F_DATA] != AC__J_NULL && f->kind[F_DATA] != AC__J_OBJECT) {
        *reason = "data: must be an object";
        return 400;
    }
    if (ac__ev_check_fields(it->ev.type, f->data_has, &field) != 0) {
        snprintf(reason_buf, sizeof(reason_buf), "data.%s: required for %s", field,
                 ac__ev_type_name(it->ev.type));
        *reason = reason_buf;
        return 400;
    }
    it->ev.data = f->data;
    it->ev.data_raw = f->data_raw;
    it->ev.data_ws = f->data_ws;
    if (opt_label(f, F_RUN_ID, &it->ev.run_id, reason) != 0 ||
        opt_label(f, F_THREAD_ID, &it->ev.thread_id, reason) != 0)
        return 400;
    if (opt_label(f, F_IDEMPOTENCY_KEY, &it->idem_key, reason) != 0)
        return 400;

    if (it->ev.type == AC__EV_TOOL_EXECUTING || it->ev.type == AC__EV_TOOL_COMPLETED) {
        if (f->tcid_kind != AC__J_STRING ||
            !ac__api_label_ok(f->tcid.p, f->tcid.len, AC__USER_ID_MAX)) {
            *reason = "data.tool_call_id: must be a string of 1 to 256 bytes";
            return 400;
        }
        it->op.tool_call_id = f->tcid;
    }
    it->op.type = it->ev.type;
    it->op.user_id = it->user;
    it->op.thread_id = it->ev.thread_id;

    if (f->kind[F_CONNECTION_ID] != 0 && f->kind[F_CONNECTION_ID] != AC__J_NULL) {
        const ac__user_t *u;
        if (f->kind[F_CONNECTION_ID] != AC__J_STRING) {
            *reason = "connection_id: must be a string";
            return 400;
        }
        it->direct = 1;
        /* With a cluster broker the connection may be on another node: the broker checks.
         * Another loop's connections are looked up once that loop is parked. A repeated
         * idempotency key answers as the first time, even once the connection has closed. */
        u = it->own == s ? ac__manager_find_user(&s->manager, it->user.p, it->user.len) : NULL;
        if (ac__conn_id_parse(f->str[F_CONNECTION_ID].p, f->str[F_CONNECTION_ID].len,
                              &it->conn_id) != 0 ||
            (s->broker->vt->publish_batch == NULL && it->own == s && !is_duplicate(s, it) &&
             (u == NULL || ac__manager_find_conn(u, it->conn_id) == NULL))) {
            *reason = "connection_id: not open for this user";
            return 404;
        }
    }
    if (!it->direct)
        it->op.run_id = it->ev.run_id; /* direct messages are outside run lifecycles */
    return 0;
}

/* 1 when the item repeats an idempotency key seen within the window. */
static int is_duplicate(ac_server_t *s, const item_t *it)
{
    return it->idem_key.p != NULL &&
           ac__idem_get(&s->idem, it->user.p, it->user.len, it->idem_key.p, it->idem_key.len,
                        ac__server_now(s)) != 0;
}

/* Lifecycle of runs over the whole batch, in order, on the bridge of `s` (the items' owner).
 * A repeated idempotency key answers with the first result instead of breaking a rule the
 * first one satisfied. Returns 0 or the HTTP status with *reason and *index. */
static int check_runs_one(ac_server_t *s, const item_t *items, size_t n, size_t *index,
                          const char **reason)
{
    ac__run_op_t one = {0}, *ops = &one;
    int st = 0;

    if (n > 1 && (ops = malloc(n * sizeof(*ops))) == NULL) {
        *reason = "out of memory";
        return 503;
    }
    for (size_t i = 0; i < n; i++) {
        ops[i] = items[i].op;
        if (is_duplicate(s, &items[i]))
            ops[i].run_id = (ac__str_t){0};
    }
    int r = ac__bridge_check(&s->bridge, ops, n, index, reason);
    if (r == -1)
        st = 409;
    else if (r != 0)
        st = 503;
    if (ops != &one)
        free(ops);
    return st;
}

/* The same over items of several loops (the others parked): each loop checks its users'
 * items in their order (a run lives with its user), and the first refusal in the batch's
 * order is the answer. */
static int check_runs_sharded(ac_server_t *s, const item_t *items, size_t n, size_t *index,
                              const char **reason);

/* With several loops a run id lives on one of them (net/group.c's registry): an event of
 * another loop's user naming it breaks the rule that a run belongs to one user. Returns the
 * index of the first such event, or n. */
static size_t foreign_run(ac_server_t *s, const item_t *items, size_t n)
{
    if (ac__group_size(s) == 1)
        return n;
    for (size_t i = 0; i < n; i++) {
        const item_t *it = &items[i];
        int at;
        if (it->op.run_id.p == NULL || is_duplicate(it->own, it))
            continue;
        at = ac__group_run_shard(s, it->op.run_id.p, it->op.run_id.len);
        if (at >= 0 && (unsigned)at != ac__group_index(it->own))
            return i;
    }
    return n;
}

static int check_runs(ac_server_t *s, const item_t *items, size_t n, size_t *index,
                      const char **reason)
{
    size_t foreign = foreign_run(s, items, n);
    int st = check_runs_sharded(s, items, n, index, reason);

    /* At the same event the owner rule comes first, as in the bridge's own check. */
    if (foreign < n && (st == 0 || foreign <= *index)) {
        *index = foreign;
        *reason = "run_id: belongs to another user";
        return 409;
    }
    return st;
}

/* Room for the items of one loop out of n (sub) and their places in the body (at). 0, or
 * 503 with *reason when out of memory (nothing kept). */
static int sub_alloc(size_t n, item_t **sub, size_t **at, const char **reason)
{
    *sub = malloc(n * sizeof(**sub));
    *at = malloc(n * sizeof(**at));
    if (*sub == NULL || *at == NULL) {
        free(*sub);
        free(*at);
        *reason = "out of memory";
        return 503;
    }
    return 0;
}

/* The items of loop `own`, in the body's order, into sub with their places in at; returns
 * how many. */
static size_t items_of(const item_t *items, size_t n, const ac_server_t *own, item_t *sub,
                       size_t *at)
{
    size_t m = 0;

    for (size_t i = 0; i < n; i++) {
        if (items[i].own == own) {
            sub[m] = items[i];
            at[m++] = i;
        }
    }
    return m;
}

static int check_runs_sharded(ac_server_t *s, const item_t *items, size_t n, size_t *index,
                              const char **reason)
{
    unsigned loops = ac__group_size(s);
    item_t *sub;
    size_t *at;
    size_t best = n;
    int best_st = 0;

    for (size_t i = 0; i < n && loops > 1; i++) {
        if (items[i].own != s)
            break;
        if (i == n - 1)
            loops = 1;
    }
    if (loops == 1)
        return check_runs_one(s, items, n, index, reason);
    if (sub_alloc(n, &sub, &at, reason) != 0)
        return 503;
    for (unsigned k = 0; k < loops; k++) {
        ac_server_t *own = ac__group_shard(s, k);
        size_t m = items_of(items, n, own, sub, at), bad = 0;
        const char *why = NULL;
        int st;
        if (m == 0)
            continue;
        st = check_runs_one(own, sub, m, &bad, &why);
        if (st != 0 && at[bad] < best) {
            best = at[bad];
            best_st = st;
            /* Kept: the next loop's check may reuse the buffer the reason is in. */
            snprintf(reason_buf, sizeof(reason_buf), "%s", why ? why : "refused");
            *reason = reason_buf;
        }
    }
    free(sub);
    free(at);
    if (best_st != 0)
        *index = best;
    return best_st;
}

/* Direct messages to another loop's connections (that loop parked): 0, or 404 with the
 * index of the first one not open. */
static int check_direct(ac_server_t *s, const item_t *items, size_t n, size_t *index)
{
    for (size_t i = 0; i < n; i++) {
        const item_t *it = &items[i];
        const ac__user_t *u;
        if (!it->direct || it->own == s || s->broker->vt->publish_batch != NULL ||
            is_duplicate(it->own, it))
            continue;
        u = ac__manager_find_user(&it->own->manager, it->user.p, it->user.len);
        if (u == NULL || ac__manager_find_conn(u, it->conn_id) == NULL) {
            *index = i;
            return 404;
        }
    }
    return 0;
}

/* 1 when an item's user lives on another loop. */
static int any_remote(ac_server_t *s, const item_t *items, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (items[i].own != s)
            return 1;
    return 0;
}

/* Publishes a validated item. Returns 0 or a negative AC_E* code. */
static int execute(ac_server_t *s, const item_t *it, int64_t ts, ac_publish_result_t *res)
{
    ac__user_t *u;
    ac__buf_t *frame;
    int r;

    res->seq = 0;
    res->delivered = 0;
    res->duplicate = 0;
    if (it->idem_key.p != NULL) {
        uint64_t first = ac__idem_get(&s->idem, it->user.p, it->user.len, it->idem_key.p,
                                      it->idem_key.len, ac__server_now(s));
        if (first != 0) {
            res->seq = first == AC__IDEM_DIRECT ? 0 : first;
            res->duplicate = 1;
            s->duplicates_total++;
            return 0;
        }
    }
    if (it->direct) {
        ac__mconn_t *m;
        u = ac__manager_find_user(&s->manager, it->user.p, it->user.len);
        m = u ? ac__manager_find_conn(u, it->conn_id) : NULL;
        if (m == NULL)
            return AC_ENOENT; /* closed by an earlier event of the same batch */
        frame = ac__emitter_direct(&s->emitter, u, &it->ev, ts);
        if (frame == NULL)
            return AC_ENOMEM;
        res->delivered = (unsigned)ac__conn_send(AC__CONN_OF(m), frame);
        s->deliveries_total += res->delivered;
        ac__buf_unref(frame);
        /* A retry after a lost answer must not deliver it twice: the key is kept, with no
         * seq (a direct message has none). */
        if (it->idem_key.p != NULL &&
            ac__idem_put(&s->idem, it->user.p, it->user.len, it->idem_key.p, it->idem_key.len,
                         AC__IDEM_DIRECT, ac__server_now(s)) != 0)
            ac__log(AC_LOG_ERROR, "event=idempotency_oom user=%s", u->id);
        return 0;
    }
    u = ac__manager_user(&s->manager, it->user.p, it->user.len, ac__server_now(s));
    if (u == NULL)
        return AC_ENOMEM;
    frame = ac__emitter_event(&s->emitter, u, &it->ev, ts);
    if (frame == NULL)
        return AC_ENOMEM;
    frame->t_ns = uv_hrtime();
    u->last_active = ac__server_now(s);
    r = s->broker->vt->publish(s->broker, u, frame, &res->delivered);
    res->seq = frame->seq;
    if (r == 0 && ac__bridge_apply(&s->bridge, &it->op, res->seq, ac__server_now(s), ts) != 0)
        ac__log(AC_LOG_ERROR, "event=bridge_oom run=%.*s", (int)it->op.run_id.len, it->op.run_id.p);
    if (r == 0 && it->idem_key.p != NULL &&
        ac__idem_put(&s->idem, it->user.p, it->user.len, it->idem_key.p, it->idem_key.len, res->seq,
                     ac__server_now(s)) != 0)
        ac__log(AC_LOG_ERROR, "event=idempotency_oom user=%s", u->id);
    if (ac__log_enabled(AC_LOG_DEBUG))
        ac__log(AC_LOG_DEBUG, "event=publish user=%s type=%.*s seq=%llu delivered=%u bytes=%u",
                u->id, (int)it->ev.type_name.len, it->ev.type_name.p, (unsigned long long)res->seq,
                res->delivered, frame->len);
    ac__buf_unref(frame);
    return r;
}

/* One reply object, written by hand: this runs once per published event. */
static int put_result(ac__sbuf_t *out, const item_t *it, const ac_publish_result_t *res)
{
    if (res->duplicate && it->direct)
        return ac__sbuf_append(out, "{\"delivered\":0,\"duplicate\":true}", 32);
    if (res->duplicate)
        return ac__sbuf_append(out, "{\"seq\":", 7) || ac__sbuf_u64(out, res->seq) ||
               ac__sbuf_append(out, ",\"delivered\":0,\"duplicate\":true}", 32);
    if (it->direct)
        return ac__sbuf_append(out, "{\"delivered\":", 13) || ac__sbuf_u64(out, res->delivered) ||
               ac__sbuf_append(out, "}", 1);
    return ac__sbuf_append(out, "{\"seq\":", 7) || ac__sbuf_u64(out, res->seq) ||
           ac__sbuf_append(out, ",\"delivered\":", 13) || ac__sbuf_u64(out, res->delivered) ||
           ac__sbuf_append(out, "}", 1);
}

static json_t *error_json(const char *reason, long index)
{
    json_t *o = json_pack("{s:s}", "error", reason);

    if (o == NULL) {
        /* A reason quoting the input (a cut key, jansson's "near '...'") may not be valid
         * UTF-8: answer anyway, with the non-ASCII bytes replaced. */
        char safe[sizeof(reason_buf)];
        size_t i;
        for (i = 0; reason[i] != '\0' && i + 1 < sizeof(safe); i++)
            safe[i] = (unsigned char)reason[i] < 0x80 ? reason[i] : '?';
        safe[i] = '\0';
        o = json_pack("{s:s}", "error", safe);
    }
    if (o != NULL && index >= 0)
        json_object_set_new(o, "index", json_integer(index));
    return o;
}

/* ---- the cluster path: answered when the broker is --------------------------------- */

#define AC__PUB_LATER 1000u
#define AC__PUB_ITEMS_KEEP 1024 /* items kept for the next body */

static pend_t *pend_new(ac_server_t *s, int kind, ac__conn_t *c)
{
    pend_t *p = calloc(1, sizeof(*p));

    if (p != NULL) {
        p->s = s;
        p->kind = kind;
        p->c = c;
    }
    return p;
}

/* For other api files answering an HTTP request later (usersock.c). */
pend_t *ac__api_pend_new_http(ac__conn_t *c, int keep_alive)
{
    pend_t *p = pend_new(ac__conn_server(c), PEND_HTTP, c);

    if (p != NULL)
        p->keep_alive = keep_alive;
    return p;
}

static void pend_free(pend_t *p);

void ac__api_pend_free(pend_t *p)
{
    pend_free(p);
}

/* Publisher sockets answer in order; a publisher that pipelines faster than the broker
 * answers is paused at this many pending messages (its socket is not read), and read
 * again below half of it. */
#define AC__AGENT_PENDING_MAX 4096

static void pend_append(ac__conn_t *c, pend_t *p)
{
    pend_t *head = c->pend;

    p->next = NULL;
    if (head == NULL) {
        c->pend = p;
        p->last = p;
        p->count = 1;
        return;
    }
    head->last->next = p;
    head->last = p;
    if (++head->count == AC__AGENT_PENDING_MAX)
        ac__conn_read_pause(c, 1);
}

static void pend_free(pend_t *p)
{
    free(p->close_reason);
    free(p->direct);
    free(p->types);
    if (p->frame != NULL)
        ac__buf_unref(p->frame);
    free(p);
}

void ac__api_pend_orphan(ac__conn_t *c)
{
    pend_t *p = c->pend;

    c->pend = NULL;
    while (p != NULL) {
        pend_t *next = p->next;
        p->next = NULL;
        p->c = NULL;
        if (p->ready)
            pend_free(p); /* answered, not yet sent: nobody to send it to */
        p = next;
    }
}

static void agent_flush(ac__conn_t *c);
static json_t *error_json(const char *reason, long index);
static int put_result(ac__sbuf_t *out, const item_t *it, const ac_publish_result_t *res);

/* The answer of a cluster publish, to whoever asked. */
static void cluster_done(void *arg, unsigned status, size_t index, const char *reason,
                         const ac_publish_result_t *results, size_t n)
{
    pend_t *p = arg;
    ac_server_t *s = p->s;
    ac__sbuf_t *out = &s->reply;
    int ok = 1;

    out->len = 0;
    if (status == 200) {
        for (size_t i = 0; i < n; i++) {
            if (results[i].duplicate) {
                s->duplicates_total++;
            } else if (p->direct[i]) {
                s->emitter.direct_total++;
            } else {
                ac__ev_type_t t = (ac__ev_type_t)p->types[i];
                s->emitter.by_type[t < AC__EV_NTYPES ? t : AC__EV_CUSTOM]++;
                s->emitter.events_total++;
            }
        }
    }
    if (p->kind == PEND_EMIT) {
        int r = status == 200   ? 0
                : status == 404 ? AC_ENOENT
                : status == 409 ? AC_ESTATE
                                : AC_EUNAVAIL;
        if (p->cb != NULL)
            p->cb(s, r, r == 0 ? &results[0] : NULL, r == 0 ? ac_strerror(0) : reason, p->cb_arg);
        pend_free(p);
        return;
    }
    if (p->kind == PEND_TIMEOUT) {
        if (status != 200 && status != 409)
            ac__log(AC_LOG_WARN, "event=run_timeout_publish_failed status=%u reason=\"%s\"", status,
                    reason ? reason : "");
        pend_free(p);
        return;
    }
    if (status == 200) {
        if (p->is_array && ac__sbuf_append(out, "[", 1) != 0)
            ok = 0;
        for (size_t i = 0; i < n && ok; i++) {
            item_t it;
            it.direct = p->direct[i];
            if ((i > 0 && ac__sbuf_append(out, ",", 1) != 0) ||
                put_result(out, &it, &results[i]) != 0)
                ok = 0;
        }
        if (ok && p->is_array && ac__sbuf_append(out, "]", 1) != 0)
            ok = 0;
    } else {
        json_t *err = error_json(reason ? reason : "broker error",
                                 p->is_array && status != 503 ? (long)index : -1);
        size_t need;
        if (err != NULL && p->kind == PEND_AGENT)
            json_object_set_new(err, "status", json_integer(status));
        need = err ? json_dumpb(err, NULL, 0, JSON_COMPACT) : 0;
        if (need == 0 || ac__sbuf_reserve(out, need) != 0 ||
            json_dumpb(err, out->p + out->len, need, JSON_COMPACT) != need)
            ok = 0;
        else
            out->len += need;
        json_decref(err);
    }
    if (p->c == NULL) {
        pend_free(p); /* the connection closed meanwhile */
        return;
    }
    if (p->kind == PEND_HTTP) {
        ac__conn_t *c = p->c;
        c->pend = NULL;
        if (!ok)
            ac__conn_destroy(c);
        else
            ac__conn_respond(c, status, NULL, out->p, out->len, NULL, p->keep_alive);
        pend_free(p);
        ac__conn_http_resume(c);
        return;
    }
    /* PEND_AGENT: it is on the connection's FIFO. */
    p->frame = ok ? ac__frame_raw(AC_WS_TEXT, out->p, out->len) : NULL;
    p->ready = 1;
    if (p->frame == NULL) {
        ac__conn_destroy(p->c); /* its FIFO, this entry included, goes when it is freed */
        return;
    }
    agent_flush(p->c);
}

/* Hands a validated batch to the cluster broker with its envelopes. 0: `pend` will be
 * answered; else AC_E* (nothing was sent). */
static int cluster_start(ac_server_t *s, item_t *items, size_t n, int is_array, pend_t *pend)
{
    ac__sbuf_t env = {0};
    ac__pub_item_t *pi = calloc(n, sizeof(*pi));
    size_t *off = calloc(2 * n + 1, sizeof(*off));
    int64_t ts = ac__now_ms();
    int r = AC_ENOMEM;

    pend->n = n;
    pend->is_array = is_array;
    pend->direct = calloc(n, 1);
    pend->types = calloc(n, 1);
    if (pi == NULL || off == NULL || pend->direct == NULL || pend->types == NULL)
        goto done;
    for (size_t i = 0; i < n; i++) {
        size_t split = 0;
        off[2 * i] = env.len;
        if (ac__emitter_envelope(&s->emitter, &env, items[i].user, &items[i].ev, ts,
                                 items[i].direct ? NULL : &split) != 0)
            goto done;
        off[2 * i + 1] = items[i].direct ? env.len : split;
    }
    off[2 * n] = env.len;
    for (size_t i = 0; i < n; i++) {
        size_t start = off[2 * i], mid = off[2 * i + 1], end = off[2 * i + 2];
        pi[i].op = items[i].op;
        pi[i].op.user_id = items[i].user;
        pi[i].idem_key = items[i].idem_key;
        pi[i].head = (ac__str_t){env.p + start, mid - start};
        pi[i].tail = (ac__str_t){env.p + mid, end - mid};
        pi[i].conn_id = items[i].direct ? items[i].conn_id : 0;
        pi[i].timeout = items[i].timeout;
        pend->direct[i] = (uint8_t)items[i].direct;
        pend->types[i] = (uint8_t)items[i].ev.type;
    }
    r = s->broker->vt->publish_batch(s->broker, pi, n, cluster_done, pend);
done:
    ac__sbuf_dispose(&env);
    free(pi);
    free(off);
    if (r != 0) {
        free(pend->direct);
        free(pend->types);
        pend->direct = pend->types = NULL;
    }
    return r;
}

/* Publishes one body (an event object or an array of them, all or nothing). Returns the
 * HTTP status and writes the JSON answer into `out` (emptied first); with `with_status`
 * an error answer also carries "status" (the publisher socket's form). 0 when out of
 * memory; AC__PUB_LATER when `pend` was handed to the cluster broker (it answers). Shared by
 * POST /v1/publish, the publisher socket and ac_emit(). */
static void ac__api_run_get_local(ac__conn_t *c, const ac__http_req_t *req, const char *id,
                                  size_t len);

/* An array of items with room for `n`; NULL when out of memory. */
static item_t *items_reserve(item_t **items, size_t *cap, size_t n)
{
    if (n > *cap) {
        size_t c = *cap ? *cap : 16;
        item_t *p;
        while (c < n)
            c *= 2;
        p = realloc(*items, c * sizeof(*p));
        if (p == NULL)
            return NULL;
        *items = p;
        *cap = c;
    }
    return *items;
}

/* Reads a body in place into *items: the number of events, or 0 when jansson should read
 * it instead. */
static size_t scan_body(item_t **items, size_t *cap, const char *body, size_t len, int *is_array)
{
    ac__jscan_t j;
    size_t n = 0;
    int c, first, r;

    ac__jscan_init(&j, body, len);
    c = ac__jscan_peek(&j);
    if (c == '{') {
        if (items_reserve(items, cap, 1) == NULL || fields_scan(&j, &(*items)[0].f) != 0)
            return 0;
        n = 1;
        *is_array = 0;
    } else if (c == '[') {
        ac__jscan_array(&j, &first);
        while ((r = ac__jscan_element(&j, &first)) == 1) {
            if (items_reserve(items, cap, n + 1) == NULL || fields_scan(&j, &(*items)[n].f) != 0)
                return 0;
            n++;
        }
        if (r != 0)
            return 0;
        *is_array = 1;
    } else {
        return 0;
    }
    return ac__jscan_finish(&j) == 0 ? n : 0;
}

/* ---- --threads: a body for users of another loop ------------------------------------ */

/* The other loop that owns every user of the body, or NULL (one loop, a cluster broker,
 * users of this loop or of several). */
static ac_server_t *single_owner(ac_server_t *s, const item_t *items, size_t n)
{
    ac_server_t *own = n > 0 ? items[0].own : s;

    if (own == s || s->broker->vt->publish_batch != NULL)
        return NULL;
    for (size_t i = 1; i < n; i++)
        if (items[i].own != own)
            return NULL;
    return own;
}

/* A body on its way to the loop of its users, and its answer on the way back. */
typedef struct fwd_s {
    ac__msg_t msg;
    ac_server_t *origin;
    pend_t *pend; /* the origin's; touched there only */
    int with_status;
    unsigned status; /* the answer: HTTP status (0: out of memory) ... */
    char *reply;     /* ... and its JSON */
    size_t reply_len;
    size_t body_len;
    char body[];
} fwd_t;

static unsigned publish_body(ac_server_t *s, const char *body, size_t len, int with_status,
                             ac__sbuf_t *out, pend_t *pend);

/* Appends an error answer (with "status" on a publisher socket) and frees err. 0, or -1
 * when out of memory (err NULL included). */
static int put_error(ac__sbuf_t *out, json_t *err, unsigned status, int with_status)
{
    size_t need;
    int r = 0;

    if (err == NULL)
        return -1;
    if (with_status)
        json_object_set_new(err, "status", json_integer(status));
    need = json_dumpb(err, NULL, 0, JSON_COMPACT);
    if (need == 0 || ac__sbuf_reserve(out, need) != 0 ||
        json_dumpb(err, out->p + out->len, need, JSON_COMPACT) != need)
        r = -1;
    else
        out->len += need;
    json_decref(err);
    return r;
}

/* An ac_emit() answered by the loop that owns its user: the callback gets what the reply
 * says (status 0: out of memory there; AC__PUB_CLOSED: the loops ended first). */
#define AC__PUB_CLOSED 1001u
static void emit_answer(pend_t *p, unsigned status, const char *reply, size_t len)
{
    ac_publish_result_t res = {0};
    json_t *j = status != 0 && status != AC__PUB_CLOSED ? json_loadb(reply, len, 0, NULL) : NULL;
    const char *why = json_string_value(json_object_get(j, "error"));
    int r = status == 200              ? 0
            : status == 400            ? AC_EINVAL
            : status == 404            ? AC_ENOENT
            : status == 409            ? AC_ESTATE
            : status == AC__PUB_CLOSED ? AC_ECLOSED
                                       : AC_ENOMEM;

    if (r == 0 && !json_is_object(j))
        r = AC_ENOMEM;
    if (r == 0) {
        res.seq = (uint64_t)json_integer_value(json_object_get(j, "seq"));
        res.delivered = (unsigned)json_integer_value(json_object_get(j, "delivered"));
        res.duplicate = json_is_true(json_object_get(j, "duplicate"));
    }
    if (p->cb != NULL)
        p->cb(p->s, r, r == 0 ? &res : NULL, r == 0 || why == NULL ? ac_strerror(r) : why,
              p->cb_arg);
    json_decref(j);
}

/* Answers a pend with a body's answer that another loop produced (status 0: out of
 * memory, the connection goes), like a broker's answer; frees it. Origin loop only. */
static void pend_answer(pend_t *p, unsigned status, const char *reply, size_t len)
{
    ac__conn_t *c = p->c;

    if (p->kind == PEND_EMIT) {
        emit_answer(p, status, reply, len);
        pend_free(p);
    } else if (p->kind == PEND_HTTP) {
        if (c != NULL) {
            c->pend = NULL;
            if (status == 0)
                ac__conn_destroy(c);
            else
                /* As the request asked (its parser is gone by now), errors included. */
                ac__conn_respond(c, status, NULL, reply, len, NULL, p->keep_alive);
            ac__conn_http_resume(c);
        }
        pend_free(p);
    } else if (c == NULL) {
        pend_free(p); /* its publisher socket closed meanwhile */
    } else {
        p->frame = status ? ac__frame_raw(AC_WS_TEXT, reply, len) : NULL;
        p->ready = 1;
        if (p->frame == NULL)
            ac__conn_destroy(c); /* its FIFO, this entry included, goes when it is freed */
        else
            agent_flush(c);
    }
}

/* Back on the origin: the pend is answered like a broker's answer. */
static void on_fwd_answer(ac__msg_t *m, void *arg, int status)
{
    fwd_t *f = (fwd_t *)m;

    if (status == 0)
        pend_answer(f->pend, f->status, f->reply, f->reply_len);
    else if (f->pend->kind == PEND_EMIT)
        pend_answer(f->pend, AC__PUB_CLOSED, NULL, 0); /* its callback is called once */
    else
        pend_free(f->pend); /* the group is being freed: nobody is waiting any more */
    free(f->reply);
    free(f);
}

/* On the owner's loop: the body is published as if it had arrived here. */
static void on_fwd_body(ac__msg_t *m, void *arg, int status)
{
    fwd_t *f = (fwd_t *)m;
    ac_server_t *s = arg;

    if (status != 0) {
        /* Every loop has ended (the group is being freed): nobody waits for the answer. */
        on_fwd_answer(&f->msg, NULL, status);
        return;
    }
    /* Its own buffer: this may run while the loop's own publish waits to park the others. */
    f->status = publish_body(s, f->body, f->body_len, f->with_status, &s->fwd_reply, NULL);
    f->reply = f->status ? malloc(s->fwd_reply.len ? s->fwd_reply.len : 1) : NULL;
    if (f->reply == NULL)
        f->status = 0;
    else
        memcpy(f->reply, s->fwd_reply.p, s->fwd_reply.len);
    f->reply_len = s->fwd_reply.len;
    f->msg.run = on_fwd_answer;
    ac__group_send(s, f->origin, &f->msg);
}

/* Sends the body to `own`; pend is answered when it comes back. 0 or AC_ENOMEM. */
static int forward_body(ac_server_t *s, ac_server_t *own, const char *body, size_t len,
                        int with_status, pend_t *pend)
{
    fwd_t *f = malloc(sizeof(*f) + len);

    if (f == NULL)
        return AC_ENOMEM;
    memset(f, 0, sizeof(*f));
    f->msg.run = on_fwd_body;
    f->origin = s;
    f->pend = pend;
    f->with_status = with_status;
    f->body_len = len;
    memcpy(f->body, body, len);
    ac__group_send(s, own, &f->msg);
    return 0;
}

/* ---- --threads: a body for users of several loops, split by owner ------------------- */

/* A body naming users of several loops, where no event of another loop's user can be
 * refused by that loop's state (no run op, no direct message: an idempotency key is no
 * refusal, a repeat answers with its first seq where it runs), is not run parked: each loop
 * publishes its users' events in the body's order and the origin answers once every part is
 * back. Validation (stateless) and this loop's own checks come first: all or nothing.
 * Per-user order with the publisher's other bodies holds: a part travels on the same FIFO
 * batched queue as every other body forwarded to that loop, ac__group_park() flushes it and
 * the parked loop runs it before it stops, and this loop's own events run at once. */

typedef struct split_s split_t;

/* One loop's events of a split body, there and back. */
typedef struct part_s {
    ac__msg_t msg;
    split_t *sp;
    ac_server_t *own;
    uint32_t *idx; /* its events' indices in the body, in order */
    size_t n;
    size_t err_at; /* the first that could not be published (sp->n: none), and why */
    int err;
} part_t;

struct split_s {
    ac_server_t *origin;
    pend_t *pend; /* the origin's; touched there only */
    json_t *root; /* jansson's tree the events point into, or NULL (they point into body) */
    int64_t ts;
    int with_status;
    int is_array;
    int closed;    /* a part was dropped with the group: nobody is answered */
    unsigned left; /* parts not back yet (origin loop only) */
    unsigned nparts;
    size_t n;
    part_t *parts;
    item_t *items; /* copies, pointing into body */
    ac_publish_result_t *res;
    /* then in the same block: the parts' indices (uint32_t[n]) and the body */
};

/* 1 when no event of another loop's user can be refused by that loop's state (its runs,
 * its connections). */
static int splittable(ac_server_t *s, const item_t *items, size_t n)
{
    if (n > UINT32_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (items[i].own != s && (items[i].direct || items[i].op.run_id.p != NULL))
            return 0;
    return 1;
}

/* Run rules over this loop's events of a split body (no other one names a run): 0, or the
 * refusal with *index its position in the body. */
static int check_runs_local(ac_server_t *s, const item_t *items, size_t n, size_t *index,
                            const char **reason)
{
    item_t *sub;
    size_t *at, m, bad = 0;
    int any = 0, st;

    for (size_t i = 0; i < n && !any; i++)
        any = items[i].own == s && items[i].op.run_id.p != NULL;
    if (!any)
        return 0;
    if (sub_alloc(n, &sub, &at, reason) != 0)
        return 503;
    m = items_of(items, n, s, sub, at);
    st = check_runs(s, sub, m, &bad, reason);
    if (st != 0)
        *index = at[bad < m ? bad : 0];
    free(sub);
    free(at);
    return st;
}

/* A slice of the body, moved into its copy. */
static void rebase(ac__str_t *x, const char *from, size_t len, const char *to)
{
    uintptr_t p = (uintptr_t)x->p, f = (uintptr_t)from;

    if (x->p != NULL && p >= f && p <= f + len)
        x->p = to + (p - f);
}

/* Publishes a part on its loop (this thread), in order, stopping at the first event that
 * fails (only memory can). */
static void split_run(part_t *pt)
{
    split_t *sp = pt->sp;

    for (size_t j = 0; j < pt->n; j++) {
        size_t i = pt->idx[j];
        int r = execute(pt->own, &sp->items[i], sp->ts, &sp->res[i]);
        if (r != 0 && !(r == AC_ENOENT && sp->items[i].direct)) {
            pt->err_at = i;
            pt->err = r;
            return;
        }
    }
}

/* Every part is back (origin loop): the answer, as publish_body() writes it. */
static void split_finish(split_t *sp)
{
    ac__sbuf_t *out = &sp->origin->fwd_reply;
    unsigned status = 200;
    size_t bad = sp->n;
    int err = 0;

    if (sp->closed) {
        pend_free(sp->pend); /* the group is being freed: nobody is waiting any more */
        goto free;
    }
    for (unsigned k = 0; k < sp->nparts; k++) {
        if (sp->parts[k].err_at < bad) {
            bad = sp->parts[k].err_at;
            err = sp->parts[k].err;
        }
    }
    out->len = 0;
    if (bad < sp->n) {
        /* What was published stays published. */
        status = err == AC_EUNAVAIL ? 503 : 500;
        if (put_error(out, error_json(ac_strerror(err), sp->is_array ? (long)bad : -1), status,
                      sp->with_status) != 0)
            status = 0;
    } else {
        if (sp->is_array && ac__sbuf_append(out, "[", 1) != 0)
            status = 0;
        for (size_t i = 0; i < sp->n && status != 0; i++)
            if ((i > 0 && ac__sbuf_append(out, ",", 1) != 0) ||
                put_result(out, &sp->items[i], &sp->res[i]) != 0)
                status = 0;
        if (status != 0 && sp->is_array && ac__sbuf_append(out, "]", 1) != 0)
            status = 0;
    }
    pend_answer(sp->pend, status, out->p, out->len);
free:
    json_decref(sp->root);
    free(sp);
}

/* A part back on the origin (or dropped with the group: status != 0, every loop ended). */
static void on_split_back(ac__msg_t *m, void *arg, int status)
{
    split_t *sp = ((part_t *)m)->sp;

    if (status != 0)
        sp->closed = 1;
    if (--sp->left == 0)
        split_finish(sp);
}

/* On the owner's loop: its events of the body, then back. */
static void on_split_part(ac__msg_t *m, void *arg, int status)
{
    part_t *pt = (part_t *)m;

    if (status != 0) {
        on_split_back(m, arg, status);
        return;
    }
    split_run(pt);
    pt->msg.run = on_split_back;
    ac__group_send(pt->own, pt->sp->origin, &pt->msg);
}

/* Splits a validated body by owner, publishes this loop's events now and sends the others
 * to their loops; `pend` is answered when every part is back. Takes `root` (the events may
 * point into it). 0, or AC_ENOMEM with nothing published and root not taken. */
static int split_body(ac_server_t *s, const item_t *items, size_t n, const char *body, size_t len,
                      json_t *root, int is_array, int with_status, int64_t ts, pend_t *pend)
{
    unsigned loops = ac__group_size(s), nparts = 0, off = 0;
    unsigned cnt[AC__GROUP_MAX] = {0}, slot[AC__GROUP_MAX];
    split_t *sp;
    char *p, *copy;
    uint32_t *idx;

    for (size_t i = 0; i < n; i++)
        cnt[ac__group_index(items[i].own)]++;
    for (unsigned k = 0; k < loops; k++)
        if (cnt[k] != 0)
            slot[k] = nparts++;
    sp = malloc(sizeof(*sp) + nparts * sizeof(part_t) + n * sizeof(item_t) +
                n * sizeof(ac_publish_result_t) + n * sizeof(uint32_t) + len);
    if (sp == NULL)
        return AC_ENOMEM;
    memset(sp, 0, sizeof(*sp));
    p = (char *)(sp + 1);
    sp->parts = (part_t *)p;
    p += nparts * sizeof(part_t);
    sp->items = (item_t *)p;
    p += n * sizeof(item_t);
    sp->res = (ac_publish_result_t *)p;
    p += n * sizeof(ac_publish_result_t);
    idx = (uint32_t *)p;
    copy = p + n * sizeof(uint32_t);
    memcpy(copy, body, len);
    memcpy(sp->items, items, n * sizeof(item_t));
    memset(sp->res, 0, n * sizeof(ac_publish_result_t));
    for (size_t i = 0; i < n; i++) {
        item_t *it = &sp->items[i];
        ac__str_t *slices[] = {&it->ev.type_name, &it->ev.run_id,       &it->ev.thread_id,
                               &it->ev.data_raw,  &it->op.run_id,       &it->op.user_id,
                               &it->op.thread_id, &it->op.tool_call_id, &it->user,
                               &it->idem_key};
        memset(&it->f, 0, sizeof(it->f)); /* validation's only */
        for (size_t k = 0; k < sizeof(slices) / sizeof(slices[0]); k++)
            rebase(slices[k], body, len, copy);
    }
    for (unsigned k = 0; k < loops; k++) {
        part_t *pt;
        if (cnt[k] == 0)
            continue;
        pt = &sp->parts[slot[k]];
        memset(pt, 0, sizeof(*pt));
        pt->msg.run = on_split_part;
        pt->sp = sp;
        pt->own = ac__group_shard(s, k);
        pt->idx = idx + off;
        pt->err_at = n;
        off += cnt[k];
    }
    for (size_t i = 0; i < n; i++) {
        part_t *pt = &sp->parts[slot[ac__group_index(items[i].own)]];
        pt->idx[pt->n++] = (uint32_t)i;
    }
    sp->origin = s;
    sp->pend = pend;
    sp->root = root;
    sp->ts = ts;
    sp->with_status = with_status;
    sp->is_array = is_array;
    sp->n = n;
    sp->nparts = nparts;
    sp->left = nparts;
    /* This loop's events now (checked by the caller); the others leave at the end of the
     * turn, on each loop's FIFO. */
    for (unsigned k = 0; k < nparts; k++) {
        part_t *pt = &sp->parts[k];
        if (pt->own == s) {
            split_run(pt);
            sp->left--;
        } else {
            ac__group_send(s, pt->own, &pt->msg);
        }
    }
    return 0;
}

static unsigned publish_body(ac_server_t *s, const char *body, size_t len, int with_status,
                             ac__sbuf_t *out, pend_t *pend)
{
    json_error_t jerr;
    json_t *root = NULL, *err = NULL;
    /* The server's array, taken: a publish nested in this one (from a callback) gets its own. */
    item_t *items = s->pub_items;
    size_t cap = s->pub_items_cap, n;
    int is_array = 0, parked = 0;
    ac_server_t *own;
    unsigned status = 200;
    int64_t ts = ac__now_ms();

    s->pub_items = NULL;
    s->pub_items_cap = 0;
    out->len = 0;
    body = body ? body : "";
    n = scan_body(&items, &cap, body, len, &is_array);
    for (size_t i = 0; i < n; i++) {
        const char *reason = NULL;
        int st = validate(s, &items[i], &reason);
        if (st != 0) {
            err = error_json(reason, is_array ? (long)i : -1);
            status = (unsigned)st;
            goto done;
        }
    }
    if (n == 0) {
        /* Not for the scanner: jansson reads it, and explains what is wrong. */
        root = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
        if (root == NULL) {
            snprintf(reason_buf, sizeof(reason_buf), "invalid JSON: %.100s (line %d, column %d)",
                     jerr.text, jerr.line, jerr.column);
            err = error_json(reason_buf, -1);
            status = 400;
            goto done;
        }
        is_array = json_is_array(root);
        n = is_array ? json_array_size(root) : 1;
        if (n == 0) {
            err = error_json("body: empty array", -1);
            status = 400;
            goto done;
        }
        if (items_reserve(&items, &cap, n) == NULL) {
            err = error_json("out of memory", -1);
            status = 503;
            goto done;
        }
        for (size_t i = 0; i < n; i++) {
            const char *reason = NULL;
            int st =
                fields_from_json(is_array ? json_array_get(root, i) : root, &items[i].f, &reason);
            if (st == 0)
                st = validate(s, &items[i], &reason);
            if (st != 0) {
                err = error_json(reason, is_array ? (long)i : -1);
                status = (unsigned)st;
                goto done;
            }
        }
    }
    if (pend != NULL && (own = single_owner(s, items, n)) != NULL) {
        /* Every event for users of one other loop: that loop publishes the body itself
         * and the answer comes back (in order, as a broker's would). */
        if (forward_body(s, own, body, len, with_status, pend) == 0) {
            s->bodies_forwarded++;
            status = AC__PUB_LATER;
            goto done;
        }
        err = error_json("out of memory", -1);
        status = 503;
        goto done;
    }
    if (pend != NULL && s->broker->vt->publish_batch != NULL) {
        /* The cluster decides lifecycle and idempotency, atomically, where its state is. */
        int r = cluster_start(s, items, n, is_array, pend);
        if (r == 0) {
            status = AC__PUB_LATER;
            goto done;
        }
        err = error_json(r == AC_ENOMEM ? "out of memory" : "broker unavailable", -1);
        status = 503;
        goto done;
    }
    if (pend != NULL && any_remote(s, items, n) && splittable(s, items, n)) {
        /* Users of several loops, none of whose events their loop's state could refuse:
         * each loop publishes its own, no loop is parked. */
        const char *reason = NULL;
        size_t bad = 0;
        int st = check_runs_local(s, items, n, &bad, &reason);
        if (st != 0) {
            err = error_json(reason, is_array ? (long)bad : -1);
            status = (unsigned)st;
            goto done;
        }
        if (split_body(s, items, n, body, len, root, is_array, with_status, ts, pend) == 0) {
            root = NULL; /* the split's now */
            s->bodies_split++;
            status = AC__PUB_LATER;
            goto done;
        }
        err = error_json("out of memory", -1);
        status = 503;
        goto done;
    }
    if (any_remote(s, items, n)) {
        /* Users of other loops whose state decides (a run op or a direct message there):
         * their state is used from here while they are parked. */
        size_t bad = 0;
        ac__group_park(s);
        parked = 1;
        s->bodies_parked++;
        if (check_direct(s, items, n, &bad) != 0) {
            err = error_json("connection_id: not open for this user", is_array ? (long)bad : -1);
            status = 404;
            goto done;
        }
    }
    {
        const char *reason = NULL;
        size_t bad = 0;
        int st = check_runs(s, items, n, &bad, &reason);
        if (st != 0) {
            err = error_json(reason, is_array ? (long)bad : -1);
            status = (unsigned)st;
            goto done;
        }
    }
    if (is_array && ac__sbuf_append(out, "[", 1) != 0)
        status = 0;
    for (size_t i = 0; i < n && status == 200; i++) {
        ac_publish_result_t res;
        int r = execute(items[i].own, &items[i], ts, &res);
        if (r != 0 && !(r == AC_ENOENT && items[i].direct)) {
            /* Only memory can fail here; what was published stays published. */
            out->len = 0;
            err = error_json(ac_strerror(r), is_array ? (long)i : -1);
            status = r == AC_EUNAVAIL ? 503 : 500;
            goto done;
        }
        if ((i > 0 && ac__sbuf_append(out, ",", 1) != 0) || put_result(out, &items[i], &res) != 0)
            status = 0;
    }
    if (status == 200 && is_array && ac__sbuf_append(out, "]", 1) != 0)
        status = 0;
done:
    if (parked)
        ac__group_unpark(s);
    if (err != NULL) {
        if (put_error(out, err, status, with_status) != 0)
            status = 0;
    } else if (status != 200 && status != 0 && status != AC__PUB_LATER) {
        status = 0; /* an error without its answer: out of memory */
    }
    if (s->pub_items == NULL && cap <= AC__PUB_ITEMS_KEEP) {
        s->pub_items = items; /* kept for the next body; a huge one does not pin its items */
        s->pub_items_cap = cap;
    } else {
        free(items);
    }
    json_decref(root);
    return status;
}

void ac__api_publish(ac__conn_t *c, const ac__http_req_t *req)
{
    ac_server_t *s = ac__conn_server(c);
    pend_t *pend = pend_new(s, PEND_HTTP, c);
    unsigned status;

    if (pend != NULL)
        pend->keep_alive = req->keep_alive;
    status = publish_body(s, req->body, req->body_len, 0, &s->reply, pend);
    if (status == AC__PUB_LATER) {
        c->pend = pend; /* reading stops until the answer (conn.c) */
        return;
    }
    free(pend);
    if (status == 0) {
        ac__conn_destroy(c);
        return;
    }
    ac__conn_respond(c, status, NULL, s->reply.p, s->reply.len, NULL,
                     status == 200 ? req->keep_alive
                                   : c->http != NULL && http_should_keep_alive(&c->http->parser));
}

/* Answers on a publisher socket leave in the order of the messages. */
static void agent_flush(ac__conn_t *c)
{
    while (c->pend != NULL && c->pend->ready) {
        pend_t *p = c->pend;
        c->pend = p->next;
        if (c->pend != NULL) {
            c->pend->last = p->last;
            c->pend->count = p->count - 1;
            if (c->pend->count == AC__AGENT_PENDING_MAX / 2)
                ac__conn_read_pause(c, 0);
        } else if (p->count >= AC__AGENT_PENDING_MAX / 2) {
            ac__conn_read_pause(c, 0);
        }
        if (p->frame != NULL)
            ac__conn_send(c, p->frame);
        if (p->kind == PEND_CLOSE) {
            /* The answers before it are out: now the close the protocol error asked for. */
            ac__conn_close_ws(c, p->close_code, p->close_reason ? p->close_reason : "", 0);
            pend_free(p);
            return;
        }
        pend_free(p);
    }
}

int ac__api_agent_fail(ac__conn_t *c, unsigned code, const char *reason)
{
    pend_t *p;

    if (c->kind != AC__KIND_AGENT || c->pend == NULL)
        return 0;
    p = pend_new(ac__conn_server(c), PEND_CLOSE, c);
    if (p == NULL)
        return 0;
    p->close_code = code;
    p->close_reason = strdup(reason);
    p->ready = 1;
    pend_append(c, p);
    return 1;
}

void ac__api_agent_message(ac__conn_t *c, const char *p, size_t len, int binary)
{
    ac_server_t *s = ac__conn_server(c);
    static const char binary_err[] =
        "{\"error\":\"binary messages are not supported\",\"status\":400}";
    unsigned status;
    ac__buf_t *b;
    /* Answered later with a cluster broker, or by another loop (--threads). */
    pend_t *pend =
        s->broker->vt->publish_batch || ac__group_size(s) > 1 ? pend_new(s, PEND_AGENT, c) : NULL;

    if (binary) {
        b = ac__frame_raw(AC_WS_TEXT, binary_err, sizeof(binary_err) - 1);
    } else {
        status = publish_body(s, p, len, 1, &s->reply, pend);
        if (status == AC__PUB_LATER) {
            pend_append(c, pend);
            return;
        }
        b = status ? ac__frame_raw(AC_WS_TEXT, s->reply.p, s->reply.len) : NULL;
    }
    if (b == NULL) {
        free(pend);
        ac__conn_destroy(c);
        return;
    }
    if (c->pend == NULL) {
        free(pend);
        ac__conn_send(c, b);
        ac__buf_unref(b);
        return;
    }
    /* Earlier messages are still being answered: this answer waits its turn. */
    if (pend == NULL) {
        ac__buf_unref(b);
        ac__conn_destroy(c);
        return;
    }
    pend->frame = b;
    pend->ready = 1;
    pend_append(c, pend);
}

void ac__emit_start(ac_server_t *s, const ac_event_t *event, ac_emit_cb cb, void *arg)
{
    json_t *obj, *data = NULL;
    json_error_t jerr;
    item_t it;
    ac_publish_result_t res = {0};
    const char *why = NULL;
    int st, r;

    if (s->shutting_down) {
        r = AC_ECLOSED;
        goto answer;
    }
    if (event->data_json != NULL && event->data_json[0] != '\0') {
        data = json_loads(event->data_json, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
        if (data == NULL) {
            why = "data: invalid JSON";
            r = AC_EINVAL;
            goto answer;
        }
    }
    obj = json_object();
    if (obj == NULL) {
        json_decref(data);
        r = AC_ENOMEM;
        goto answer;
    }
    if (event->user_id != NULL)
        json_object_set_new(obj, "user_id", json_string(event->user_id));
    if (event->type != NULL)
        json_object_set_new(obj, "type", json_string(event->type));
    if (data != NULL)
        json_object_set_new(obj, "data", data);
    if (event->run_id != NULL)
        json_object_set_new(obj, "run_id", json_string(event->run_id));
    if (event->thread_id != NULL)
        json_object_set_new(obj, "thread_id", json_string(event->thread_id));
    if (event->connection_id != NULL)
        json_object_set_new(obj, "connection_id", json_string(event->connection_id));
    if (event->idempotency_key != NULL)
        json_object_set_new(obj, "idempotency_key", json_string(event->idempotency_key));

    it.own = NULL;
    st = fields_from_json(obj, &it.f, &why);
    if (st == 0)
        st = validate(s, &it, &why);
    if (st == 0 && s->broker->vt->publish_batch != NULL) {
        pend_t *p = pend_new(s, PEND_EMIT, NULL);
        if (p == NULL) {
            r = AC_ENOMEM;
        } else {
            p->cb = cb;
            p->cb_arg = arg;
            r = cluster_start(s, &it, 1, 0, p);
            if (r == 0) {
                json_decref(obj);
                return; /* cluster_done calls cb */
            }
            free(p);
        }
        json_decref(obj);
        goto answer;
    }
    if (it.own != NULL && it.own != s && s->broker->vt->publish_batch == NULL) {
        /* Another loop's user: that loop publishes it (its run and connection checks
         * included) and the callback is called here with its answer, as a publisher socket's
         * forwarded body is answered. A refused one goes too, so that a user's callbacks
         * come in the order of the calls (the same FIFO queue), as with one loop. */
        pend_t *p = pend_new(s, PEND_EMIT, NULL);
        char *text = p != NULL ? json_dumps(obj, JSON_COMPACT) : NULL;
        r = AC_ENOMEM;
        if (text != NULL) {
            p->cb = cb;
            p->cb_arg = arg;
            if (forward_body(s, it.own, text, strlen(text), 0, p) == 0) {
                s->bodies_forwarded++;
                free(text);
                json_decref(obj);
                return;
            }
        }
        free(text);
        free(p);
        json_decref(obj);
        goto answer;
    }
    if (st == 0) {
        size_t bad;
        st = check_runs(s, &it, 1, &bad, &why);
    }
    if (st != 0) {
        r = st == 404 ? AC_ENOENT : st == 409 ? AC_ESTATE : st == 503 ? AC_ENOMEM : AC_EINVAL;
    } else {
        r = execute(s, &it, ac__now_ms(), &res);
        if (r == AC_ENOENT)
            why = "connection_id: not open for this user";
    }
    json_decref(obj);
answer:
    if (r != 0 && ac__log_enabled(AC_LOG_DEBUG))
        ac__log(AC_LOG_DEBUG, "event=emit_refused user=%s type=%s reason=\"%s\"",
                event->user_id ? event->user_id : "", event->type ? event->type : "",
                why ? why : ac_strerror(r));
    if (cb != NULL)
        cb(s, r, r == 0 ? &res : NULL, why ? why : ac_strerror(r), arg);
}

void ac__api_publish_own(ac_server_t *s, ac__str_t user, ac__ev_type_t type, ac__str_t thread,
                         const json_t *data, ac_emit_cb cb, void *arg)
{
    const char *name = ac__ev_type_name(type);
    ac_publish_result_t res = {0};
    item_t it;
    int r;

    memset(&it, 0, sizeof(it));
    it.ev.type = type;
    it.ev.type_name = (ac__str_t){name, strlen(name)};
    it.ev.thread_id = thread;
    it.ev.data = data;
    it.user = user;
    it.own = s; /* a user's own message: on its owner's loop */
    it.op.type = type;
    it.op.user_id = user;
    it.op.thread_id = thread;
    if (s->shutting_down) {
        r = AC_ECLOSED;
    } else if (s->broker->vt->publish_batch != NULL) {
        pend_t *p = pend_new(s, PEND_EMIT, NULL);
        r = AC_ENOMEM;
        if (p != NULL) {
            p->cb = cb;
            p->cb_arg = arg;
            r = cluster_start(s, &it, 1, 0, p);
            if (r == 0)
                return; /* cluster_done calls cb */
            free(p);
        }
    } else {
        r = execute(s, &it, ac__now_ms(), &res);
    }
    cb(s, r, r == 0 ? &res : NULL, r == AC_EUNAVAIL ? "broker unavailable" : ac_strerror(r), arg);
}

void ac__api_expire_runs(ac_server_t *s)
{
    uint64_t now = ac__server_now(s);
    uint64_t timeout = (uint64_t)(s->opts.run_timeout * 1000);
    ac__run_t *r;

    while ((r = ac__bridge_next_timeout(&s->bridge, now, timeout)) != NULL) {
        char data[96];
        item_t it;
        ac_publish_result_t res;
        json_t *d;

        snprintf(data, sizeof(data), "{\"error\":\"run timed out\",\"timeout_s\":%g}",
                 s->opts.run_timeout);
        d = json_loads(data, 0, NULL);
        memset(&it, 0, sizeof(it));
        it.ev.type = AC__EV_AGENT_ERROR;
        it.ev.type_name = (ac__str_t){"agent_error", 11};
        it.ev.run_id = (ac__str_t){r->id, r->id_len};
        if (r->thread_id != NULL)
            it.ev.thread_id = (ac__str_t){r->thread_id, strlen(r->thread_id)};
        it.ev.data = d;
        it.user = (ac__str_t){r->user_id, strlen(r->user_id)};
        it.own = s; /* the run lives with its user */
        it.op.type = AC__EV_AGENT_ERROR;
        it.op.run_id = it.ev.run_id;
        it.op.user_id = it.user;
        it.op.thread_id = it.ev.thread_id;
        r->timing_out = 1;
        ac__log(AC_LOG_WARN, "event=run_timeout run=%s user=%s", r->id, r->user_id);
        if (d == NULL || execute(s, &it, ac__now_ms(), &res) != 0 || r->state == AC__RUN_OPEN)
            ac__bridge_force_close(&s->bridge, r, now);
        json_decref(d);
    }
    ac__bridge_expire(&s->bridge, now, (uint64_t)(s->opts.history_ttl * 1000));
}

/* A run the cluster broker found silent: its agent_error, published by this node. */
static void cluster_run_timeout(void *arg, const char *run_id, const char *user_id,
                                const char *thread_id)
{
    ac_server_t *s = arg;
    char data[96];
    item_t it;
    json_t *d;
    pend_t *p;

    snprintf(data, sizeof(data), "{\"error\":\"run timed out\",\"timeout_s\":%g}",
             s->opts.run_timeout);
    d = json_loads(data, 0, NULL);
    p = pend_new(s, PEND_TIMEOUT, NULL);
    if (d == NULL || p == NULL) {
        json_decref(d);
        free(p);
        return;
    }
    memset(&it, 0, sizeof(it));
    it.ev.type = AC__EV_AGENT_ERROR;
    it.ev.type_name = (ac__str_t){"agent_error", 11};
    it.ev.run_id = (ac__str_t){run_id, strlen(run_id)};
    if (thread_id != NULL)
        it.ev.thread_id = (ac__str_t){thread_id, strlen(thread_id)};
    it.ev.data = d;
    it.user = (ac__str_t){user_id, strlen(user_id)};
    it.own = s;
    it.op.type = AC__EV_AGENT_ERROR;
    it.op.run_id = it.ev.run_id;
    it.op.user_id = it.user;
    it.op.thread_id = it.ev.thread_id;
    it.timeout = 1;
    ac__log(AC_LOG_WARN, "event=run_timeout run=%s user=%s", run_id, user_id);
    if (cluster_start(s, &it, 1, 0, p) != 0)
        free(p);
    json_decref(d);
}

void ac__api_cluster_init(ac_server_t *s)
{
    ac__broker_redis_on_timeout(s->broker, cluster_run_timeout, s);
}

static void run_done(void *arg, unsigned status, const char *json, size_t len)
{
    pend_t *p = arg;
    ac__conn_t *c = p->c;

    if (c != NULL) {
        c->pend = NULL;
        if (status == 200)
            ac__conn_respond(c, 200, NULL, json, len, NULL, p->keep_alive);
        else
            ac__conn_respond_error(
                c, status, status == 404 ? "run_id: unknown run" : "broker unavailable", NULL);
        ac__conn_http_resume(c);
    }
    pend_free(p);
}

void ac__api_run_get(ac__conn_t *c, const ac__http_req_t *req, const char *id, size_t len)
{
    if (ac__conn_server(c)->broker->vt->run_get != NULL) {
        ac_server_t *s = ac__conn_server(c);
        pend_t *p = ac__api_pend_new_http(c, req->keep_alive);
        if (p == NULL) {
            ac__conn_respond_error(c, 503, "out of memory", NULL);
            return;
        }
        if (s->broker->vt->run_get(s->broker, id, len, run_done, p) != 0) {
            free(p);
            ac__conn_respond_error(c, 503, "broker unavailable", NULL);
            return;
        }
        c->pend = p;
        return;
    }
    ac__api_run_get_local(c, req, id, len);
}

static void ac__api_run_get_local(ac__conn_t *c, const ac__http_req_t *req, const char *id,
                                  size_t len)
{
    ac_server_t *s = ac__conn_server(c);
    const ac__run_t *r = NULL;
    json_t *o, *tools;
    char started[25], updated[25];
    const char *closed_by;
    char *body;

    /* A run lives on its user's loop: with several, look in each (the others parked until
     * the answer is built). */
    ac__group_park(s);
    for (unsigned k = 0; k < ac__group_size(s) && r == NULL; k++)
        r = ac__bridge_find(&ac__group_shard(s, k)->bridge, id, len);
    if (r == NULL) {
        ac__group_unpark(s);
        ac__conn_respond_error(c, 404, "run_id: unknown run", NULL);
        return;
    }
    tools = json_array();
    for (uint32_t i = 0; i < r->ntools; i++)
        json_array_append_new(tools, json_string(r->tools[i]));
    ac__iso8601_ms(r->started_ms, started);
    ac__iso8601_ms(r->updated_ms, updated);
    closed_by = ac__run_closed_by_name((ac__closed_by_t)r->closed_by);
    o = json_pack(
        "{s:s#,s:s,s:o,s:s,s:o,s:I,s:I,s:s,s:s,s:o}", "run_id", r->id, (int)r->id_len, "user_id",
        r->user_id, "thread_id", r->thread_id ? json_string(r->thread_id) : json_null(), "state",
        r->state == AC__RUN_OPEN ? "open" : "closed", "tools_executing", tools, "last_seq",
        (json_int_t)r->last_seq, "events", (json_int_t)r->events, "started_at", started,
        "updated_at", updated, "closed_by", closed_by ? json_string(closed_by) : json_null());
    ac__group_unpark(s);
    body = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (body == NULL) {
        ac__conn_respond_error(c, 503, "out of memory", NULL);
        return;
    }
    ac__conn_respond(c, 200, NULL, body, strlen(body), NULL, req->keep_alive);
    free(body);
}
