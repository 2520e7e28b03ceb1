/* Unit tests for src/core/history.c: each user's retained frames (references to the very
 * buffers the live path sent), the per-user count cap, the global byte cap taken from the
 * least recently appended users first, replay with ac__history_since, and the release of
 * every reference on drop, expiry and dispose. Users come from a real manager (manager.h);
 * leaks are caught under ASan (make asan). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "agentcast.h"
#include "core/buf.h"
#include "core/history.h"
#include "core/manager.h"

static ac__manager_t *mgr_new(unsigned per_user, uint64_t max_bytes)
{
    ac__manager_t *m = malloc(sizeof(*m));
    assert_non_null(m);
    assert_int_equal(ac__manager_init(m, 3, 100), 0);
    ac__history_store_init(&m->history, per_user, max_bytes);
    return m;
}

static void mgr_free(ac__manager_t *m)
{
    ac__manager_dispose(m);
    free(m);
}

static ac__user_t *user(ac__manager_t *m, const char *id)
{
    ac__user_t *u = ac__manager_user(m, id, strlen(id), 0);
    assert_non_null(u);
    return u;
}

/* Hands out the user's next seq (as the emitter would) in a frame of `len` bytes and
 * appends it. Returns the frame with the caller's reference still held. */
static ac__buf_t *emit_held(ac__manager_t *m, ac__user_t *u, size_t len)
{
    ac__buf_t *b = ac__buf_new(len);
    assert_non_null(b);
    memset(b->data, 'a' + (int)(u->seq % 26), len);
    b->seq = ++u->seq;
    assert_int_equal(ac__history_append(&m->history, u, b), 0);
    return b;
}

/* As emit_held, letting go of the caller's reference: history holds the only one. */
static void emit(ac__manager_t *m, ac__user_t *u, size_t len)
{
    ac__buf_unref(emit_held(m, u, len));
}

enum { MAX_SEEN = 256 };

struct seen {
    size_t n;
    uint64_t seq[MAX_SEEN];
    ac__buf_t *buf[MAX_SEEN];
};

static void on_frame(ac__buf_t *frame, void *arg)
{
    struct seen *s = arg;
    assert_true(s->n < MAX_SEEN);
    s->seq[s->n] = frame->seq;
    s->buf[s->n] = frame;
    s->n++;
}

/* Checks that since(after) visits exactly the seqs first..last, in order. */
static void assert_since(const ac__user_t *u, uint64_t after, uint64_t first, uint64_t last)
{
    struct seen s = {0};
    ac__history_since(u, after, on_frame, &s);
    assert_int_equal(s.n, last + 1 - first);
    for (size_t i = 0; i < s.n; i++)
        assert_int_equal(s.seq[i], first + i);
}

static void assert_since_none(const ac__user_t *u, uint64_t after)
{
    struct seen s = {0};
    ac__history_since(u, after, on_frame, &s);
    assert_int_equal(s.n, 0);
}

/* ---- store ---- */

static void test_store_init_sets_caps_and_zero_counters(void **st)
{
    ac__history_store_t s;
    memset(&s, 0xab, sizeof(s));
    ac__history_store_init(&s, 7, 4096);
    assert_int_equal(s.per_user, 7);
    assert_int_equal(s.max_bytes, 4096);
    assert_int_equal(s.bytes, 0);
    assert_int_equal(s.frames, 0);
    assert_null(s.lru_head);
    assert_null(s.lru_tail);
}

static void test_store_init_per_user_zero_means_one(void **st)
{
    ac__manager_t *m = mgr_new(0, 1 << 20);
    assert_int_equal(m->history.per_user, 1);
    ac__user_t *u = user(m, "alice");
    emit(m, u, 10);
    emit(m, u, 10);
    assert_since(u, 0, 2, 2);
    assert_int_equal(m->history.frames, 1);
    mgr_free(m);
}

/* ---- append ---- */

static void test_user_without_events_has_no_history(void **st)
{
    ac__manager_t *m = mgr_new(10, 1 << 20);
    ac__user_t *u = user(m, "alice");
    assert_null(u->hist);
    assert_since_none(u, 0);
    mgr_free(m);
}

static void test_append_keeps_frames_in_order(void **st)
{
    ac__manager_t *m = mgr_new(10, 1 << 20);
    ac__user_t *u = user(m, "alice");
    ac__buf_t *f[3];
    for (int i = 0; i < 3; i++)
        f[i] = emit_held(m, u, 10);
    struct seen s = {0};
    ac__history_since(u, 0, on_frame, &s);
    assert_int_equal(s.n, 3);
    for (int i = 0; i < 3; i++) {
        assert_ptr_equal(s.buf[i], f[i]);
        assert_int_equal(s.seq[i], (uint64_t)i + 1);
    }
    for (int i = 0; i < 3; i++)
        ac__buf_unref(f[i]);
    mgr_free(m);
}

static void test_append_takes_a_reference(void **st)
{
    ac__manager_t *m = mgr_new(10, 1 << 20);
    ac__user_t *u = user(m, "alice");
    ac__buf_t *f = emit_held(m, u, 5);
    assert_int_equal(f->refs, 2);
    ac__buf_unref(f);
    assert_int_equal(f->refs, 1); /* history's own: still alive (ASan would say) */
    struct seen s = {0};
    ac__history_since(u, 0, on_frame, &s);
    assert_int_equal(s.n, 1);
    assert_ptr_equal(s.buf[0], f);
    assert_int_equal(s.buf[0]->len, 5);
    assert_memory_equal(s.buf[0]->data, "aaaaa", 5);
    mgr_free(m);
}

static void test_append_counts_bytes_and_frames(void **st)
{
    ac__manager_t *m = mgr_new(10, 1 << 20);
    ac__user_t *a = user(m, "alice");
    ac__user_t *b = user(m, "bob");
    emit(m, a, 10);
    emit(m, a, 20);
    emit(m, b, 30);
    assert_int_equal(m->history.bytes, 60);
    assert_int_equal(m->history.frames, 3);
    assert_int_equal(a->hist->bytes, 30);
    assert_int_equal(a->hist->count, 2);
    assert_int_equal(b->hist->bytes, 30);
    assert_int_equal(b->hist->count, 1);
    mgr_free(m);
}

static void test_append_keeps_users_apart(void **st)
{
    ac__manager_t *m = mgr_new(10, 1 << 20);
    ac__user_t *a = user(m, "alice");
    ac__user_t *b = user(m, "bob");
    emit(m, a, 1);
    emit(m, b, 1);
    emit(m, a, 1);
    emit(m, b, 1);
    emit(m, b, 1);
    assert_since(a, 0, 1, 2);
    assert_since(b, 0, 1, 3);
    mgr_free(m);
}

static void test_append_moves_user_to_lru_tail(void **st)
{
    ac__manager_t *m = mgr_new(10, 1 << 20);
    ac__user_t *a = user(m, "alice");
    ac__user_t *b = user(m, "bob");
    ac__user_t *c = user(m, "carol");
    emit(m, a, 1);
    emit(m, b, 1);
    emit(m, c, 1);
    emit(m, a, 1);
    assert_ptr_equal(m->history.lru_head, b->hist);
    assert_ptr_equal(b->hist->lru_next, c->hist);
    assert_ptr_equal(c->hist->lru_next, a->hist);
    assert_ptr_equal(m->history.lru_tail, a->hist);
    assert_null(a->hist->lru_next);
    assert_null(b->hist->lru_prev);
    assert_ptr_equal(a->hist->lru_prev, c->hist);
    assert_ptr_equal(a->hist->user, a);
    mgr_free(m);
}

/* ---- per-user cap ---- */

static void test_per_user_cap_drops_oldest(void **st)
{
    ac__manager_t *m = mgr_new(3, 1 << 20);
    ac__user_t *u = user(m, "alice");
    for (int i = 0; i < 5; i++)
        emit(m, u, 10 + (size_t)i); /* seqs 1..5, lens 10..14 */
    assert_since(u, 0, 3, 5);
    assert_int_equal(ac__history_oldest(u), 3);
    assert_int_equal(u->hist->count, 3);
    assert_int_equal(m->history.frames, 3);
    assert_int_equal(m->history.bytes, 12 + 13 + 14);
    assert_int_equal(u->hist->bytes, 12 + 13 + 14);
    mgr_free(m);
}

static void test_per_user_cap_releases_dropped_reference(void **st)
{
    ac__manager_t *m = mgr_new(2, 1 << 20);
    ac__user_t *u = user(m, "alice");
    ac__buf_t *f[3];
    for (int i = 0; i < 3; i++)
        f[i] = emit_held(m, u, 8);
    assert_int_equal(f[0]->refs, 1);
    assert_int_equal(f[1]->refs, 2);
    assert_int_equal(f[2]->refs, 2);
    for (int i = 0; i < 3; i++)
        ac__buf_unref(f[i]);
    mgr_free(m);
}

static void test_per_user_cap_is_per_user(void **st)
{
    ac__manager_t *m = mgr_new(2, 1 << 20);
    ac__user_t *a = user(m, "alice");
    ac__user_t *b = user(m, "bob");
    for (int i = 0; i < 4; i++)
        emit(m, a, 1);
    emit(m, b, 1);
    assert_since(a, 0, 3, 4);
    assert_since(b, 0, 1, 1);
    assert_int_equal(m->history.frames, 3);
    mgr_free(m);
}

static void test_per_user_cap_past_ring_growth_keeps_order(void **st)
{
    ac__manager_t *m = mgr_new(10, 1 << 20); /* ring grows 8 -> 10, then wraps */
    ac__user_t *u = user(m, "alice");
    for (int i = 0; i < 9; i++)
        emit(m, u, 1);
    assert_since(u, 0, 1, 9);
    for (int i = 0; i < 14; i++)
        emit(m, u, 1);
    assert_since(u, 0, 14, 23);
    assert_int_equal(ac__history_oldest(u), 14);
    assert_int_equal(m->history.frames, 10);
    assert_int_equal(m->history.bytes, 10);
    mgr_free(m);
}

static void test_per_user_cap_large_ring_wraps_many_times(void **st)
{
    ac__manager_t *m = mgr_new(100, 1 << 20);
    ac__user_t *u = user(m, "alice");
    for (int i = 0; i < 1037; i++)
        emit(m, u, 3);
    assert_since(u, 0, 938, 1037);
    assert_int_equal(ac__history_oldest(u), 938);
    assert_int_equal(m->history.frames, 100);
    assert_int_equal(m->history.bytes, 300);
    mgr_free(m);
}

static void test_ring_grows_only_up_to_per_user(void **st)
{
    ac__manager_t *m = mgr_new(10, 1 << 20);
    ac__user_t *u = user(m, "alice");
    for (int i = 0; i < 3; i++)
        emit(m, u, 1);
    assert_int_equal(u->hist->cap, 8); /* a user with few events costs little */
    for (int i = 0; i < 6; i++)
        emit(m, u, 1);
    assert_int_equal(u->hist->cap, 10);
    for (int i = 0; i < 30; i++)
        emit(m, u, 1);
    assert_int_equal(u->hist->cap, 10);
    assert_int_equal(u->hist->count, 10);
    mgr_free(m);
}

static void test_ring_growth_after_global_cap_drop_keeps_order(void **st)
{
    ac__manager_t *m = mgr_new(100, 50);
    ac__user_t *u = user(m, "alice");
    emit(m, u, 40);
    emit(m, u, 40); /* 80 > 50: seq 1 goes, the ring's head moves off slot 0 */
    assert_int_equal(u->hist->head, 1);
    for (int i = 0; i < 9; i++)
        emit(m, u, 1); /* seqs 3..11: the ring wraps, then grows from 8 */
    assert_int_equal(u->hist->cap, 16);
    assert_since(u, 0, 2, 11);
    assert_int_equal(ac__history_oldest(u), 2);
    assert_int_equal(m->history.bytes, 49);
    assert_int_equal(m->history.frames, 10);
    mgr_free(m);
}

/* ---- oldest and since ---- */

static void test_oldest_without_history_is_newest_plus_one(void **st)
{
    ac__manager_t *m = mgr_new(10, 1 << 20);
    ac__user_t *u = user(m, "alice");
    assert_int_equal(ac__history_oldest(u), 1);
    u->seq = 41;
    assert_int_equal(ac__history_oldest(u), 42);
    mgr_free(m);
}

static void test_oldest_is_first_retained_seq(void **st)
{
    ac__manager_t *m = mgr_new(10, 1 << 20);
    ac__user_t *u = user(m, "alice");
    u->seq = 99; /* a stream that already handed out 1..99 */
    emit(m, u, 1);
    emit(m, u, 1);
    assert_int_equal(ac__history_oldest(u), 100);
    mgr_free(m);
}

static void test_since_visits_only_frames_after(void **st)
{
    ac__manager_t *m = mgr_new(10, 1 << 20);
    ac__user_t *u = user(m, "alice");
    for (int i = 0; i < 5; i++)
        emit(m, u, 1);
    assert_since(u, 0, 1, 5);
    assert_since(u, 1, 2, 5);
    assert_since(u, 3, 4, 5);
    assert_since(u, 4, 5, 5);
    mgr_free(m);
}

static void test_since_newest_or_later_visits_nothing(void **st)
{
    ac__manager_t *m = mgr_new(10, 1 << 20);
    ac__user_t *u = user(m, "alice");
    for (int i = 0; i < 5; i++)
        emit(m, u, 1);
    assert_since_none(u, 5);
    assert_since_none(u, 6);
    assert_since_none(u, UINT64_MAX);
    mgr_free(m);
}

static void test_since_before_oldest_visits_all_retained(void **st)
{
    ac__manager_t *m = mgr_new(3, 1 << 20);
    ac__user_t *u = user(m, "alice");
    for (int i = 0; i < 8; i++)
        emit(m, u, 1);
    assert_since(u, 0, 6, 8);
    assert_since(u, 2, 6, 8);
    assert_since(u, 5, 6, 8);
    assert_since(u, 6, 7, 8);
    mgr_free(m);
}

/* ---- global byte cap ---- */

static void test_global_cap_takes_least_recently_appended_user_first(void **st)
{
    ac__manager_t *m = mgr_new(100, 100);
    ac__user_t *a = user(m, "alice");
    ac__user_t *b = user(m, "bob");
    ac__user_t *c = user(m, "carol");
    emit(m, a, 30);
    emit(m, b, 30);
    emit(m, c, 30);
    emit(m, a, 30); /* 120 > 100: bob (appended longest ago) pays, not alice */
    assert_null(b->hist);
    assert_int_equal(ac__history_oldest(b), 2);
    assert_since_none(b, 0);
    assert_since(a, 0, 1, 2);
    assert_since(c, 0, 1, 1);
    assert_int_equal(m->history.bytes, 90);
    assert_int_equal(m->history.frames, 3);
    assert_ptr_equal(m->history.lru_head, c->hist);
    assert_ptr_equal(m->history.lru_tail, a->hist);
    mgr_free(m);
}

static void test_global_cap_drops_victims_oldest_frames_first(void **st)
{
    ac__manager_t *m = mgr_new(100, 100);
    ac__user_t *a = user(m, "alice");
    ac__user_t *b = user(m, "bob");
    emit(m, a, 20);
    emit(m, a, 20);
    emit(m, a, 20);
    emit(m, b, 40);
    emit(m, b, 10); /* 110 > 100: alice loses seq 1 only */
    assert_since(a, 0, 2, 3);
    assert_int_equal(ac__history_oldest(a), 2);
    assert_since(b, 0, 1, 2);
    assert_int_equal(m->history.bytes, 90);
    assert_int_equal(m->history.frames, 4);
    assert_int_equal(a->hist->bytes, 40);
    mgr_free(m);
}

static void test_global_cap_exactly_reached_drops_nothing(void **st)
{
    ac__manager_t *m = mgr_new(100, 100);
    ac__user_t *a = user(m, "alice");
    ac__user_t *b = user(m, "bob");
    emit(m, a, 60);
    emit(m, b, 40);
    assert_int_equal(m->history.bytes, 100);
    assert_int_equal(m->history.frames, 2);
    assert_since(a, 0, 1, 1);
    assert_since(b, 0, 1, 1);
    mgr_free(m);
}

static void test_global_cap_spans_several_victims(void **st)
{
    ac__manager_t *m = mgr_new(100, 100);
    ac__user_t *a = user(m, "alice");
    ac__user_t *b = user(m, "bob");
    ac__user_t *c = user(m, "carol");
    emit(m, a, 25);
    emit(m, a, 25);
    emit(m, b, 25);
    emit(m, c, 25);
    emit(m, c, 70); /* 170: alice's two and bob's one go (95 left) */
    assert_null(a->hist);
    assert_null(b->hist);
    assert_since(c, 0, 1, 2);
    assert_int_equal(m->history.bytes, 95);
    assert_int_equal(m->history.frames, 2);
    assert_ptr_equal(m->history.lru_head, c->hist);
    assert_ptr_equal(m->history.lru_tail, c->hist);
    assert_null(c->hist->lru_prev);
    assert_null(c->hist->lru_next);
    mgr_free(m);
}

static void test_global_cap_sole_user_drops_own_oldest(void **st)
{
    ac__manager_t *m = mgr_new(100, 50);
    ac__user_t *u = user(m, "alice");
    emit(m, u, 20);
    emit(m, u, 20);
    emit(m, u, 20); /* 60 > 50 */
    assert_since(u, 0, 2, 3);
    assert_int_equal(m->history.bytes, 40);
    assert_int_equal(m->history.frames, 2);
    mgr_free(m);
}

static void test_global_cap_appended_user_keeps_newest_frame(void **st)
{
    ac__manager_t *m = mgr_new(100, 50);
    ac__user_t *a = user(m, "alice");
    ac__user_t *b = user(m, "bob");
    emit(m, a, 10);
    emit(m, a, 10);
    emit(m, b, 10);
    emit(m, b, 10);
    ac__buf_t *big = emit_held(m, b, 80); /* larger than the whole cap */
    assert_null(a->hist);
    assert_int_equal(b->hist->count, 1);
    assert_since(b, 0, 3, 3);
    assert_int_equal(big->refs, 2);
    assert_int_equal(m->history.bytes, 80);
    assert_int_equal(m->history.frames, 1);
    ac__buf_unref(big);
    mgr_free(m);
}

static void test_global_cap_releases_dropped_references(void **st)
{
    ac__manager_t *m = mgr_new(100, 30);
    ac__user_t *a = user(m, "alice");
    ac__user_t *b = user(m, "bob");
    ac__buf_t *fa = emit_held(m, a, 20);
    ac__buf_t *fb = emit_held(m, b, 20);
    assert_int_equal(fa->refs, 1);
    assert_int_equal(fb->refs, 2);
    ac__buf_unref(fa);
    ac__buf_unref(fb);
    mgr_free(m);
}

static void test_global_cap_victim_can_append_again(void **st)
{
    ac__manager_t *m = mgr_new(100, 50);
    ac__user_t *a = user(m, "alice");
    ac__user_t *b = user(m, "bob");
    emit(m, a, 30);
    emit(m, b, 30); /* alice dropped */
    assert_null(a->hist);
    emit(m, a, 30); /* bob dropped now */
    assert_null(b->hist);
    assert_since(a, 0, 2, 2);
    assert_int_equal(ac__history_oldest(b), 2);
    assert_int_equal(m->history.bytes, 30);
    assert_int_equal(m->history.frames, 1);
    assert_ptr_equal(m->history.lru_head->user, a);
    assert_ptr_equal(m->history.lru_tail->user, a);
    mgr_free(m);
}

/* ---- drop ---- */

static void test_drop_releases_references_and_counters(void **st)
{
    ac__manager_t *m = mgr_new(10, 1 << 20);
    ac__user_t *a = user(m, "alice");
    ac__user_t *b = user(m, "bob");
    ac__buf_t *f[3];
    for (int i = 0; i < 3; i++)
        f[i] = emit_held(m, a, 7);
    emit(m, b, 5);
    ac__history_drop(&m->history, a);
    for (int i = 0; i < 3; i++)
        assert_int_equal(f[i]->refs, 1);
    assert_null(a->hist);
    assert_int_equal(ac__history_oldest(a), 4);
    assert_since_none(a, 0);
    assert_int_equal(m->history.bytes, 5);
    assert_int_equal(m->history.frames, 1);
    assert_ptr_equal(m->history.lru_head->user, b);
    assert_ptr_equal(m->history.lru_tail->user, b);
    assert_null(m->history.lru_head->lru_next); /* alice's history is off the list */
    for (int i = 0; i < 3; i++)
        ac__buf_unref(f[i]);
    mgr_free(m);
}

static void test_drop_user_without_history_is_noop(void **st)
{
    ac__manager_t *m = mgr_new(10, 1 << 20);
    ac__user_t *a = user(m, "alice");
    ac__user_t *b = user(m, "bob");
    emit(m, b, 5);
    ac__history_drop(&m->history, a);
    assert_int_equal(m->history.bytes, 5);
    assert_int_equal(m->history.frames, 1);
    assert_ptr_equal(m->history.lru_head->user, b);
    assert_ptr_equal(m->history.lru_tail->user, b);
    mgr_free(m);
}

static void test_drop_middle_user_keeps_lru_linked(void **st)
{
    ac__manager_t *m = mgr_new(10, 1 << 20);
    ac__user_t *a = user(m, "alice");
    ac__user_t *b = user(m, "bob");
    ac__user_t *c = user(m, "carol");
    emit(m, a, 1);
    emit(m, b, 1);
    emit(m, c, 1);
    ac__history_drop(&m->history, b);
    assert_ptr_equal(m->history.lru_head->user, a);
    assert_ptr_equal(a->hist->lru_next, c->hist);
    assert_ptr_equal(c->hist->lru_prev, a->hist);
    assert_ptr_equal(m->history.lru_tail->user, c);
    mgr_free(m);
}

static void test_drop_then_append_starts_fresh(void **st)
{
    ac__manager_t *m = mgr_new(10, 1 << 20);
    ac__user_t *u = user(m, "alice");
    emit(m, u, 4);
    emit(m, u, 4);
    ac__history_drop(&m->history, u);
    emit(m, u, 6);
    assert_since(u, 0, 3, 3);
    assert_int_equal(ac__history_oldest(u), 3);
    assert_int_equal(m->history.bytes, 6);
    assert_int_equal(m->history.frames, 1);
    assert_ptr_equal(m->history.lru_head->user, u);
    mgr_free(m);
}

/* ---- through the manager ---- */

static void test_manager_expire_drops_history(void **st)
{
    ac__manager_t *m = mgr_new(10, 1 << 20);
    ac__user_t *a = ac__manager_user(m, "alice", 5, 0);
    ac__user_t *b = ac__manager_user(m, "bob", 3, 1000);
    ac__buf_t *fa = emit_held(m, a, 11);
    emit(m, b, 13);
    emit(m, a, 11);
    assert_int_equal(ac__manager_expire(m, 500, 500, 500), 1); /* alice only */
    assert_null(ac__manager_find_user(m, "alice", 5));
    assert_int_equal(fa->refs, 1);
    assert_int_equal(m->history.bytes, 13);
    assert_int_equal(m->history.frames, 1);
    assert_ptr_equal(m->history.lru_head->user, b);
    assert_ptr_equal(m->history.lru_tail->user, b);
    assert_null(b->hist->lru_prev);
    assert_null(b->hist->lru_next);
    ac__buf_unref(fa);
    mgr_free(m);
}

/* The history goes at history_ttl; the seq counter and epoch stay until seq_ttl, so the
 * next event continues the stream and a resume from 0 sees that events are missing. */
static void test_manager_expire_keeps_seq_past_history(void **st)
{
    ac__manager_t *m = mgr_new(10, 1 << 20);
    ac__user_t *a = ac__manager_user(m, "alice", 5, 0);
    uint32_t epoch = a->epoch;
    emit(m, a, 11);
    emit(m, a, 11);
    assert_int_equal(ac__manager_expire(m, 500, 500, 5000), 0);
    assert_ptr_equal(ac__manager_find_user(m, "alice", 5), a);
    assert_null(a->hist);
    assert_int_equal(m->history.bytes, 0);
    assert_int_equal(a->seq, 2);
    assert_int_equal(a->epoch, epoch);
    assert_int_equal(ac__history_oldest(a), 3); /* a resume from 0 is not whole */
    emit(m, a, 11);
    assert_int_equal(a->seq, 3);
    a->last_active = 600;
    assert_int_equal(ac__manager_expire(m, 5599, 500, 5000), 0);
    assert_int_equal(ac__manager_expire(m, 5600, 500, 5000), 1);
    assert_null(ac__manager_find_user(m, "alice", 5));
    mgr_free(m);
}

static void test_history_get_by_seq(void **st)
{
    ac__manager_t *m = mgr_new(3, 1 << 20);
    ac__user_t *u = ac__manager_user(m, "u", 1, 0);
    assert_null(ac__history_get(u, 1));
    for (int i = 0; i < 5; i++)
        emit(m, u, 4);
    assert_null(ac__history_get(u, 0));
    assert_null(ac__history_get(u, 2)); /* dropped past per_user */
    for (uint64_t q = 3; q <= 5; q++) {
        assert_non_null(ac__history_get(u, q));
        assert_int_equal(ac__history_get(u, q)->seq, q);
    }
    assert_null(ac__history_get(u, 6));
    /* A frame that failed to be retained leaves a gap: the others are still found. */
    u->seq++;
    emit(m, u, 4);
    assert_null(ac__history_get(u, 6));
    assert_int_equal(ac__history_get(u, 7)->seq, 7);
    assert_int_equal(ac__history_get(u, 5)->seq, 5);
    mgr_free(m);
}

static void test_manager_expire_then_global_cap_still_works(void **st)
{
    ac__manager_t *m = mgr_new(10, 40);
    ac__user_t *a = ac__manager_user(m, "alice", 5, 0);
    ac__user_t *b = ac__manager_user(m, "bob", 3, 1000);
    emit(m, a, 10);
    emit(m, b, 10);
    assert_int_equal(ac__manager_expire(m, 500, 500, 500), 1);
    emit(m, b, 20);
    emit(m, b, 20); /* 50 > 40: bob's oldest goes */
    assert_since(b, 0, 2, 3);
    assert_int_equal(m->history.bytes, 40);
    assert_int_equal(m->history.frames, 2);
    mgr_free(m);
}

static void test_manager_dispose_releases_all_history(void **st)
{
    ac__manager_t *m = mgr_new(10, 1 << 20);
    ac__user_t *a = user(m, "alice");
    ac__user_t *b = user(m, "bob");
    ac__buf_t *held[2];
    held[0] = emit_held(m, a, 9);
    emit(m, a, 9);
    held[1] = emit_held(m, b, 9);
    for (int i = 0; i < 12; i++)
        emit(m, b, 9);
    mgr_free(m); /* ASan: every ring and every frame history held is freed */
    assert_int_equal(held[0]->refs, 1);
    assert_int_equal(held[1]->refs, 1);
    ac__buf_unref(held[0]);
    ac__buf_unref(held[1]);
}

static void test_many_users_counters_stay_exact(void **st)
{
    enum { N = 2000, PER = 5 };
    ac__manager_t *m = mgr_new(PER, 1 << 30);
    char id[32];
    for (int round = 0; round < 7; round++) {
        for (int i = 0; i < N; i++) {
            snprintf(id, sizeof(id), "user-%d", i);
            emit(m, user(m, id), (size_t)(i % 13) + 1);
        }
    }
    uint64_t want_bytes = 0;
    for (int i = 0; i < N; i++)
        want_bytes += (uint64_t)PER * (uint64_t)((i % 13) + 1);
    assert_int_equal(m->history.frames, (uint64_t)N * PER);
    assert_int_equal(m->history.bytes, want_bytes);
    for (int i = 0; i < N; i += 97) {
        snprintf(id, sizeof(id), "user-%d", i);
        assert_since(user(m, id), 0, 3, 7);
    }
    mgr_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_store_init_sets_caps_and_zero_counters),
        cmocka_unit_test(test_store_init_per_user_zero_means_one),
        cmocka_unit_test(test_user_without_events_has_no_history),
        cmocka_unit_test(test_append_keeps_frames_in_order),
        cmocka_unit_test(test_append_takes_a_reference),
        cmocka_unit_test(test_append_counts_bytes_and_frames),
        cmocka_unit_test(test_append_keeps_users_apart),
        cmocka_unit_test(test_append_moves_user_to_lru_tail),
        cmocka_unit_test(test_per_user_cap_drops_oldest),
        cmocka_unit_test(test_per_user_cap_releases_dropped_reference),
        cmocka_unit_test(test_per_user_cap_is_per_user),
        cmocka_unit_test(test_per_user_cap_past_ring_growth_keeps_order),
        cmocka_unit_test(test_per_user_cap_large_ring_wraps_many_times),
        cmocka_unit_test(test_ring_grows_only_up_to_per_user),
        cmocka_unit_test(test_ring_growth_after_global_cap_drop_keeps_order),
        cmocka_unit_test(test_oldest_without_history_is_newest_plus_one),
        cmocka_unit_test(test_oldest_is_first_retained_seq),
        cmocka_unit_test(test_since_visits_only_frames_after),
        cmocka_unit_test(test_since_newest_or_later_visits_nothing),
        cmocka_unit_test(test_since_before_oldest_visits_all_retained),
        cmocka_unit_test(test_global_cap_takes_least_recently_appended_user_first),
        cmocka_unit_test(test_global_cap_drops_victims_oldest_frames_first),
        cmocka_unit_test(test_global_cap_exactly_reached_drops_nothing),
        cmocka_unit_test(test_global_cap_spans_several_victims),
        cmocka_unit_test(test_global_cap_sole_user_drops_own_oldest),
        cmocka_unit_test(test_global_cap_appended_user_keeps_newest_frame),
        cmocka_unit_test(test_global_cap_releases_dropped_references),
        cmocka_unit_test(test_global_cap_victim_can_append_again),
        cmocka_unit_test(test_drop_releases_references_and_counters),
        cmocka_unit_test(test_drop_user_without_history_is_noop),
        cmocka_unit_test(test_drop_middle_user_keeps_lru_linked),
        cmocka_unit_test(test_drop_then_append_starts_fresh),
        cmocka_unit_test(test_manager_expire_drops_history),
        cmocka_unit_test(test_manager_expire_then_global_cap_still_works),
        cmocka_unit_test(test_manager_expire_keeps_seq_past_history),
        cmocka_unit_test(test_history_get_by_seq),
        cmocka_unit_test(test_manager_dispose_releases_all_history),
        cmocka_unit_test(test_many_users_counters_stay_exact),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
