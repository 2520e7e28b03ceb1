/* Unit tests for src/core/manager.c: user records and their connection lists, the
 * per-user cap (oldest evicted) and the global cap, lookups, expiry of idle users, the
 * foreach walk and growth of the hash table. Connections are plain ac__mconn_t structs
 * on the stack: the manager never allocates or frees them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/manager.h"

static ac__manager_t *mgr_new(unsigned max_per_user, unsigned max_total)
{
    ac__manager_t *m = malloc(sizeof(*m));
    assert_non_null(m);
    assert_int_equal(ac__manager_init(m, max_per_user, max_total), 0);
    return m;
}

static void mgr_free(ac__manager_t *m)
{
    ac__manager_dispose(m);
    free(m);
}

static ac__user_t *user(ac__manager_t *m, const char *id, uint64_t now)
{
    ac__user_t *u = ac__manager_user(m, id, strlen(id), now);
    assert_non_null(u);
    return u;
}

static ac__user_t *find(const ac__manager_t *m, const char *id)
{
    return ac__manager_find_user(m, id, strlen(id));
}

/* Checks that u's list is exactly want[0..n), oldest first, linked both ways. */
static void assert_conns(const ac__user_t *u, ac__mconn_t *const *want, size_t n)
{
    assert_int_equal(u->nconns, n);
    if (n == 0) {
        assert_null(u->head);
        return;
    }
    assert_ptr_equal(u->head, want[0]);
    for (size_t i = 0; i < n; i++) {
        assert_ptr_equal(want[i]->user, u);
        assert_ptr_equal(want[i]->prev, i == 0 ? NULL : want[i - 1]);
        assert_ptr_equal(want[i]->next, i == n - 1 ? NULL : want[i + 1]);
    }
}

static void assert_detached(const ac__mconn_t *c)
{
    assert_null(c->user);
    assert_null(c->prev);
    assert_null(c->next);
}

/* ---- records and counters ---- */

static void test_init_is_empty(void **st)
{
    ac__manager_t *m = mgr_new(3, 100);
    assert_int_equal(m->nusers, 0);
    assert_int_equal(m->users_connected, 0);
    assert_int_equal(m->nconns, 0);
    assert_int_equal(m->max_per_user, 3);
    assert_int_equal(m->max_total, 100);
    assert_null(find(m, "alice"));
    mgr_free(m);
}

static void test_user_creates_record_with_seq_0(void **st)
{
    ac__manager_t *m = mgr_new(3, 100);
    ac__user_t *u = user(m, "alice", 1234);
    assert_string_equal(u->id, "alice");
    assert_int_equal(u->id_len, 5);
    assert_int_equal(u->seq, 0);
    assert_int_equal(u->nconns, 0);
    assert_int_equal(u->last_active, 1234);
    assert_null(u->head);
    assert_int_equal(m->nusers, 1);
    assert_int_equal(m->users_connected, 0);
    mgr_free(m);
}

static void test_user_returns_existing_record(void **st)
{
    ac__manager_t *m = mgr_new(3, 100);
    ac__user_t *u = user(m, "alice", 1);
    u->seq = 9;
    ac__user_t *again = user(m, "alice", 2);
    assert_ptr_equal(again, u);
    assert_int_equal(again->seq, 9);
    assert_int_equal(again->last_active, 1); /* a lookup is not activity */
    assert_int_equal(m->nusers, 1);
    mgr_free(m);
}

static void test_user_copies_id_not_borrowing_it(void **st)
{
    ac__manager_t *m = mgr_new(3, 100);
    char id[] = "bob";
    ac__user_t *u = ac__manager_user(m, id, 3, 0);
    id[0] = 'x';
    assert_string_equal(u->id, "bob");
    assert_ptr_equal(find(m, "bob"), u);
    assert_null(find(m, "xob"));
    mgr_free(m);
}

static void test_attach_links_and_counts_connection(void **st)
{
    ac__manager_t *m = mgr_new(3, 100);
    ac__user_t *u = user(m, "alice", 0);
    ac__mconn_t c = {0};
    assert_null(ac__manager_attach(m, u, &c));
    ac__mconn_t *want[] = {&c};
    assert_conns(u, want, 1);
    assert_int_equal(m->nconns, 1);
    assert_int_equal(m->users_connected, 1);
    assert_int_equal(m->nusers, 1);
    mgr_free(m);
}

static void test_attach_appends_newest_at_tail(void **st)
{
    ac__manager_t *m = mgr_new(5, 100);
    ac__user_t *u = user(m, "alice", 0);
    ac__mconn_t c[3] = {{0}};
    for (int i = 0; i < 3; i++)
        assert_null(ac__manager_attach(m, u, &c[i]));
    ac__mconn_t *want[] = {&c[0], &c[1], &c[2]};
    assert_conns(u, want, 3);
    assert_int_equal(m->nconns, 3);
    assert_int_equal(m->users_connected, 1);
    mgr_free(m);
}

static void test_attach_gives_increasing_unique_ids(void **st)
{
    ac__manager_t *m = mgr_new(5, 100);
    ac__user_t *a = user(m, "alice", 0);
    ac__user_t *b = user(m, "bob", 0);
    ac__mconn_t c[4] = {{0}};
    ac__manager_attach(m, a, &c[0]);
    ac__manager_attach(m, b, &c[1]);
    ac__manager_attach(m, a, &c[2]);
    ac__manager_attach(m, b, &c[3]);
    assert_true(c[0].id != 0);
    for (int i = 1; i < 4; i++)
        assert_true(c[i].id > c[i - 1].id);
    mgr_free(m);
}

static void test_attach_two_users_counts_users_connected(void **st)
{
    ac__manager_t *m = mgr_new(3, 100);
    ac__user_t *a = user(m, "alice", 0);
    ac__user_t *b = user(m, "bob", 0);
    user(m, "carol", 0);
    ac__mconn_t c[3] = {{0}};
    ac__manager_attach(m, a, &c[0]);
    ac__manager_attach(m, a, &c[1]);
    ac__manager_attach(m, b, &c[2]);
    assert_int_equal(m->nusers, 3);
    assert_int_equal(m->users_connected, 2);
    assert_int_equal(m->nconns, 3);
    assert_int_equal(a->nconns, 2);
    assert_int_equal(b->nconns, 1);
    mgr_free(m);
}

static void test_detach_only_connection_resets_counters_keeps_record(void **st)
{
    ac__manager_t *m = mgr_new(3, 100);
    ac__user_t *u = user(m, "alice", 10);
    ac__mconn_t c = {0};
    ac__manager_attach(m, u, &c);
    ac__manager_detach(m, &c, 500);
    assert_detached(&c);
    assert_conns(u, NULL, 0);
    assert_int_equal(m->nconns, 0);
    assert_int_equal(m->users_connected, 0);
    assert_int_equal(m->nusers, 1);
    assert_ptr_equal(find(m, "alice"), u);
    assert_int_equal(u->last_active, 500);
    mgr_free(m);
}

static void test_detach_not_attached_is_noop(void **st)
{
    ac__manager_t *m = mgr_new(3, 100);
    ac__user_t *u = user(m, "alice", 10);
    ac__mconn_t a = {0}, b = {0};
    ac__manager_attach(m, u, &a);
    ac__manager_detach(m, &b, 500);
    ac__manager_detach(m, &a, 600);
    ac__manager_detach(m, &a, 700); /* twice */
    assert_int_equal(m->nconns, 0);
    assert_int_equal(m->users_connected, 0);
    assert_int_equal(u->nconns, 0);
    assert_int_equal(u->last_active, 600);
    mgr_free(m);
}

static void test_detach_head_keeps_list_consistent(void **st)
{
    ac__manager_t *m = mgr_new(5, 100);
    ac__user_t *u = user(m, "alice", 0);
    ac__mconn_t c[3] = {{0}};
    for (int i = 0; i < 3; i++)
        ac__manager_attach(m, u, &c[i]);
    ac__manager_detach(m, &c[0], 1);
    assert_detached(&c[0]);
    ac__mconn_t *want[] = {&c[1], &c[2]};
    assert_conns(u, want, 2);
    assert_int_equal(m->nconns, 2);
    assert_int_equal(m->users_connected, 1);
    mgr_free(m);
}

static void test_detach_middle_keeps_list_consistent(void **st)
{
    ac__manager_t *m = mgr_new(5, 100);
    ac__user_t *u = user(m, "alice", 0);
    ac__mconn_t c[3] = {{0}};
    for (int i = 0; i < 3; i++)
        ac__manager_attach(m, u, &c[i]);
    ac__manager_detach(m, &c[1], 1);
    assert_detached(&c[1]);
    ac__mconn_t *want[] = {&c[0], &c[2]};
    assert_conns(u, want, 2);
    assert_int_equal(m->nconns, 2);
    mgr_free(m);
}

static void test_detach_tail_keeps_list_consistent(void **st)
{
    ac__manager_t *m = mgr_new(5, 100);
    ac__user_t *u = user(m, "alice", 0);
    ac__mconn_t c[3] = {{0}};
    for (int i = 0; i < 3; i++)
        ac__manager_attach(m, u, &c[i]);
    ac__manager_detach(m, &c[2], 1);
    assert_detached(&c[2]);
    ac__mconn_t *want[] = {&c[0], &c[1]};
    assert_conns(u, want, 2);
    mgr_free(m);
}

static void test_detach_then_attach_again_appends_at_tail(void **st)
{
    ac__manager_t *m = mgr_new(5, 100);
    ac__user_t *u = user(m, "alice", 0);
    ac__mconn_t c[3] = {{0}};
    for (int i = 0; i < 3; i++)
        ac__manager_attach(m, u, &c[i]);
    uint64_t old_id = c[0].id;
    ac__manager_detach(m, &c[0], 1);
    assert_null(ac__manager_attach(m, u, &c[0]));
    assert_true(c[0].id > c[2].id);
    assert_true(c[0].id != old_id);
    ac__mconn_t *want[] = {&c[1], &c[2], &c[0]};
    assert_conns(u, want, 3);
    mgr_free(m);
}

static void test_detach_all_in_any_order_empties_user(void **st)
{
    ac__manager_t *m = mgr_new(5, 100);
    ac__user_t *u = user(m, "alice", 0);
    ac__mconn_t c[4] = {{0}};
    for (int i = 0; i < 4; i++)
        ac__manager_attach(m, u, &c[i]);
    static const int order[] = {2, 0, 3, 1};
    for (int i = 0; i < 4; i++)
        ac__manager_detach(m, &c[order[i]], 1);
    assert_conns(u, NULL, 0);
    assert_int_equal(m->nconns, 0);
    assert_int_equal(m->users_connected, 0);
    mgr_free(m);
}

/* ---- per-user cap ---- */

static void test_cap_fourth_attach_evicts_oldest(void **st)
{
    ac__manager_t *m = mgr_new(3, 100);
    ac__user_t *u = user(m, "alice", 0);
    ac__mconn_t c[4] = {{0}};
    for (int i = 0; i < 3; i++)
        assert_null(ac__manager_attach(m, u, &c[i]));
    assert_ptr_equal(ac__manager_attach(m, u, &c[3]), &c[0]);
    assert_detached(&c[0]);
    ac__mconn_t *want[] = {&c[1], &c[2], &c[3]};
    assert_conns(u, want, 3);
    assert_int_equal(m->nconns, 3);
    assert_int_equal(m->users_connected, 1);
    mgr_free(m);
}

static void test_cap_evicts_by_creation_order_repeatedly(void **st)
{
    ac__manager_t *m = mgr_new(3, 100);
    ac__user_t *u = user(m, "alice", 0);
    ac__mconn_t c[6] = {{0}};
    for (int i = 0; i < 3; i++)
        ac__manager_attach(m, u, &c[i]);
    for (int i = 3; i < 6; i++)
        assert_ptr_equal(ac__manager_attach(m, u, &c[i]), &c[i - 3]);
    ac__mconn_t *want[] = {&c[3], &c[4], &c[5]};
    assert_conns(u, want, 3);
    assert_int_equal(m->nconns, 3);
    mgr_free(m);
}

static void test_cap_after_detach_has_room_again(void **st)
{
    ac__manager_t *m = mgr_new(3, 100);
    ac__user_t *u = user(m, "alice", 0);
    ac__mconn_t c[4] = {{0}};
    for (int i = 0; i < 3; i++)
        ac__manager_attach(m, u, &c[i]);
    ac__manager_detach(m, &c[1], 1);
    assert_null(ac__manager_attach(m, u, &c[3]));
    ac__mconn_t *want[] = {&c[0], &c[2], &c[3]};
    assert_conns(u, want, 3);
    mgr_free(m);
}

static void test_cap_is_per_user(void **st)
{
    ac__manager_t *m = mgr_new(2, 100);
    ac__user_t *a = user(m, "alice", 0);
    ac__user_t *b = user(m, "bob", 0);
    ac__mconn_t ca[2] = {{0}}, cb[2] = {{0}};
    assert_null(ac__manager_attach(m, a, &ca[0]));
    assert_null(ac__manager_attach(m, a, &ca[1]));
    assert_null(ac__manager_attach(m, b, &cb[0]));
    assert_null(ac__manager_attach(m, b, &cb[1]));
    assert_int_equal(m->nconns, 4);
    mgr_free(m);
}

static void test_cap_zero_means_one(void **st)
{
    ac__manager_t *m = mgr_new(0, 100);
    ac__user_t *u = user(m, "alice", 0);
    ac__mconn_t c[2] = {{0}};
    assert_null(ac__manager_attach(m, u, &c[0]));
    assert_ptr_equal(ac__manager_attach(m, u, &c[1]), &c[0]);
    ac__mconn_t *want[] = {&c[1]};
    assert_conns(u, want, 1);
    mgr_free(m);
}

/* ---- global cap ---- */

static void test_full_when_nconns_reaches_max_total(void **st)
{
    ac__manager_t *m = mgr_new(5, 2);
    ac__user_t *a = user(m, "alice", 0);
    ac__user_t *b = user(m, "bob", 0);
    ac__mconn_t c[2] = {{0}};
    assert_false(ac__manager_full(m));
    ac__manager_attach(m, a, &c[0]);
    assert_false(ac__manager_full(m));
    ac__manager_attach(m, b, &c[1]);
    assert_true(ac__manager_full(m));
    ac__manager_detach(m, &c[0], 1);
    assert_false(ac__manager_full(m));
    mgr_free(m);
}

static void test_full_not_changed_by_eviction(void **st)
{
    ac__manager_t *m = mgr_new(1, 2);
    ac__user_t *a = user(m, "alice", 0);
    ac__mconn_t c[2] = {{0}};
    ac__manager_attach(m, a, &c[0]);
    ac__manager_attach(m, a, &c[1]); /* evicts c[0]: still one attached */
    assert_int_equal(m->nconns, 1);
    assert_false(ac__manager_full(m));
    mgr_free(m);
}

static void test_full_with_max_total_zero(void **st)
{
    ac__manager_t *m = mgr_new(5, 0);
    assert_true(ac__manager_full(m));
    mgr_free(m);
}

/* ---- lookups ---- */

static void test_find_user_hit_and_miss(void **st)
{
    ac__manager_t *m = mgr_new(3, 100);
    ac__user_t *a = user(m, "alice", 0);
    ac__user_t *b = user(m, "bob", 0);
    assert_ptr_equal(find(m, "alice"), a);
    assert_ptr_equal(find(m, "bob"), b);
    assert_null(find(m, "carol"));
    assert_null(ac__manager_find_user(m, "alice", 0));
    mgr_free(m);
}

static void test_find_user_uses_len_not_nul(void **st)
{
    ac__manager_t *m = mgr_new(3, 100);
    ac__user_t *a = user(m, "alice", 0);
    assert_ptr_equal(ac__manager_find_user(m, "alice-and-more", 5), a);
    assert_null(ac__manager_find_user(m, "alice", 4));
    mgr_free(m);
}

static void test_find_conn_hit(void **st)
{
    ac__manager_t *m = mgr_new(3, 100);
    ac__user_t *u = user(m, "alice", 0);
    ac__mconn_t c[3] = {{0}};
    for (int i = 0; i < 3; i++)
        ac__manager_attach(m, u, &c[i]);
    for (int i = 0; i < 3; i++)
        assert_ptr_equal(ac__manager_find_conn(u, c[i].id), &c[i]);
    mgr_free(m);
}

static void test_find_conn_miss(void **st)
{
    ac__manager_t *m = mgr_new(3, 100);
    ac__user_t *u = user(m, "alice", 0);
    ac__mconn_t c = {0};
    assert_null(ac__manager_find_conn(u, 1));
    ac__manager_attach(m, u, &c);
    assert_null(ac__manager_find_conn(u, c.id + 1));
    assert_null(ac__manager_find_conn(u, 0));
    mgr_free(m);
}

static void test_find_conn_of_other_user_is_miss(void **st)
{
    ac__manager_t *m = mgr_new(3, 100);
    ac__user_t *a = user(m, "alice", 0);
    ac__user_t *b = user(m, "bob", 0);
    ac__mconn_t ca = {0}, cb = {0};
    ac__manager_attach(m, a, &ca);
    ac__manager_attach(m, b, &cb);
    assert_null(ac__manager_find_conn(a, cb.id));
    assert_null(ac__manager_find_conn(b, ca.id));
    mgr_free(m);
}

static void test_find_conn_after_detach_is_miss(void **st)
{
    ac__manager_t *m = mgr_new(3, 100);
    ac__user_t *u = user(m, "alice", 0);
    ac__mconn_t c = {0};
    ac__manager_attach(m, u, &c);
    uint64_t id = c.id;
    ac__manager_detach(m, &c, 1);
    assert_null(ac__manager_find_conn(u, id));
    mgr_free(m);
}

/* ---- user ids ---- */

static void test_user_id_empty_is_refused(void **st)
{
    ac__manager_t *m = mgr_new(3, 100);
    assert_null(ac__manager_user(m, "", 0, 0));
    assert_int_equal(m->nusers, 0);
    mgr_free(m);
}

static void test_user_id_over_max_is_refused(void **st)
{
    ac__manager_t *m = mgr_new(3, 100);
    char id[AC__USER_ID_MAX + 1];
    memset(id, 'u', sizeof(id));
    assert_null(ac__manager_user(m, id, AC__USER_ID_MAX + 1, 0));
    assert_int_equal(m->nusers, 0);
    mgr_free(m);
}

static void test_user_id_at_max_is_accepted(void **st)
{
    ac__manager_t *m = mgr_new(3, 100);
    char id[AC__USER_ID_MAX];
    memset(id, 'u', sizeof(id));
    ac__user_t *u = ac__manager_user(m, id, AC__USER_ID_MAX, 0);
    assert_non_null(u);
    assert_int_equal(u->id_len, AC__USER_ID_MAX);
    assert_memory_equal(u->id, id, AC__USER_ID_MAX);
    assert_int_equal(u->id[AC__USER_ID_MAX], '\0');
    assert_ptr_equal(ac__manager_find_user(m, id, AC__USER_ID_MAX), u);
    mgr_free(m);
}

static void test_user_ids_sharing_a_prefix_are_distinct(void **st)
{
    ac__manager_t *m = mgr_new(3, 100);
    ac__user_t *a = user(m, "alice", 0);
    ac__user_t *a2 = user(m, "alice2", 0);
    ac__user_t *al = user(m, "alic", 0);
    assert_ptr_not_equal(a, a2);
    assert_ptr_not_equal(a, al);
    assert_ptr_not_equal(a2, al);
    assert_int_equal(m->nusers, 3);
    assert_ptr_equal(find(m, "alice"), a);
    assert_ptr_equal(find(m, "alice2"), a2);
    assert_ptr_equal(find(m, "alic"), al);
    mgr_free(m);
}

static void test_user_ids_differing_in_last_byte_are_distinct(void **st)
{
    ac__manager_t *m = mgr_new(3, 100);
    char x[AC__USER_ID_MAX], y[AC__USER_ID_MAX];
    memset(x, 'k', sizeof(x));
    memcpy(y, x, sizeof(y));
    y[AC__USER_ID_MAX - 1] = 'l';
    ac__user_t *ux = ac__manager_user(m, x, sizeof(x), 0);
    ac__user_t *uy = ac__manager_user(m, y, sizeof(y), 0);
    assert_non_null(ux);
    assert_non_null(uy);
    assert_ptr_not_equal(ux, uy);
    assert_ptr_equal(ac__manager_find_user(m, x, sizeof(x)), ux);
    assert_ptr_equal(ac__manager_find_user(m, y, sizeof(y)), uy);
    ac__user_t *abc = user(m, "abc", 0);
    ac__user_t *abd = user(m, "abd", 0);
    assert_ptr_not_equal(abc, abd);
    assert_ptr_equal(find(m, "abc"), abc);
    assert_ptr_equal(find(m, "abd"), abd);
    assert_int_equal(m->nusers, 4);
    mgr_free(m);
}

static void test_user_id_with_embedded_nul_is_distinct(void **st)
{
    ac__manager_t *m = mgr_new(3, 100);
    ac__user_t *a = ac__manager_user(m, "ab", 2, 0);
    ac__user_t *b = ac__manager_user(m, "ab\0c", 4, 0);
    assert_non_null(a);
    assert_non_null(b);
    assert_ptr_not_equal(a, b);
    assert_ptr_equal(ac__manager_find_user(m, "ab\0c", 4), b);
    mgr_free(m);
}

/* ---- expiry ---- */

static void test_expire_keeps_user_before_ttl(void **st)
{
    ac__manager_t *m = mgr_new(3, 100);
    ac__user_t *u = user(m, "alice", 0);
    ac__mconn_t c = {0};
    ac__manager_attach(m, u, &c);
    ac__manager_detach(m, &c, 1000);
    assert_int_equal(ac__manager_expire(m, 1499, 500, 500), 0);
    assert_ptr_equal(find(m, "alice"), u);
    assert_int_equal(m->nusers, 1);
    mgr_free(m);
}

static void test_expire_removes_user_at_ttl(void **st)
{
    ac__manager_t *m = mgr_new(3, 100);
    ac__user_t *u = user(m, "alice", 0);
    ac__mconn_t c = {0};
    ac__manager_attach(m, u, &c);
    ac__manager_detach(m, &c, 1000);
    assert_int_equal(ac__manager_expire(m, 1500, 500, 500), 1);
    assert_null(find(m, "alice"));
    assert_int_equal(m->nusers, 0);
    mgr_free(m);
}

static void test_expire_never_removes_connected_user(void **st)
{
    ac__manager_t *m = mgr_new(3, 100);
    ac__user_t *u = user(m, "alice", 0);
    ac__mconn_t c = {0};
    ac__manager_attach(m, u, &c);
    assert_int_equal(ac__manager_expire(m, 1000000, 1, 1), 0);
    assert_ptr_equal(find(m, "alice"), u);
    assert_int_equal(m->users_connected, 1);
    mgr_free(m);
}

static void test_expire_uses_creation_time_for_never_connected_user(void **st)
{
    ac__manager_t *m = mgr_new(3, 100);
    user(m, "alice", 200);
    assert_int_equal(ac__manager_expire(m, 299, 100, 100), 0);
    assert_int_equal(ac__manager_expire(m, 300, 100, 100), 1);
    assert_null(find(m, "alice"));
    mgr_free(m);
}

static void test_expire_removes_only_idle_users(void **st)
{
    ac__manager_t *m = mgr_new(3, 100);
    ac__user_t *conn_old = user(m, "connected-old", 0);
    ac__user_t *idle_old = user(m, "idle-old", 0);
    ac__user_t *idle_new = user(m, "idle-new", 0);
    ac__mconn_t c[3] = {{0}};
    ac__manager_attach(m, conn_old, &c[0]);
    ac__manager_attach(m, idle_old, &c[1]);
    ac__manager_attach(m, idle_new, &c[2]);
    ac__manager_detach(m, &c[1], 100);
    ac__manager_detach(m, &c[2], 900);
    assert_int_equal(ac__manager_expire(m, 1000, 500, 500), 1);
    assert_ptr_equal(find(m, "connected-old"), conn_old);
    assert_null(find(m, "idle-old"));
    assert_ptr_equal(find(m, "idle-new"), idle_new);
    assert_int_equal(m->nusers, 2);
    assert_int_equal(m->users_connected, 1);
    assert_int_equal(m->nconns, 1);
    mgr_free(m);
}

static void test_expire_counts_every_removed_user(void **st)
{
    ac__manager_t *m = mgr_new(3, 100);
    char id[32];
    for (int i = 0; i < 3000; i++) {
        snprintf(id, sizeof(id), "user-%d", i);
        user(m, id, (uint64_t)(i % 2 == 0 ? 0 : 100));
    }
    assert_int_equal(ac__manager_expire(m, 50, 50, 50), 1500);
    assert_int_equal(m->nusers, 1500);
    for (int i = 0; i < 3000; i++) {
        snprintf(id, sizeof(id), "user-%d", i);
        if (i % 2 == 0)
            assert_null(find(m, id));
        else
            assert_non_null(find(m, id));
    }
    mgr_free(m);
}

static void test_expire_then_recreate_gives_seq_0_and_new_epoch(void **st)
{
    ac__manager_t *m = mgr_new(3, 100);
    ac__user_t *u = user(m, "alice", 0);
    u->seq = 42;
    uint32_t old_epoch = u->epoch;
    assert_int_equal(ac__manager_expire(m, 10, 10, 10), 1);
    ac__user_t *again = user(m, "alice", 20);
    assert_int_equal(again->seq, 0);
    assert_int_equal(again->last_active, 20);
    assert_int_not_equal(again->epoch, old_epoch);
    char s[9];
    ac__user_epoch_str(again, s);
    assert_int_equal(strlen(s), 8);
    assert_int_equal(strspn(s, "0123456789abcdef"), 8);
    char want[9];
    snprintf(want, sizeof(want), "%08x", (unsigned)again->epoch);
    assert_string_equal(s, want);
    mgr_free(m);
}

static void test_epoch_str_is_8_lowercase_hex_digits(void **st)
{
    ac__manager_t *m = mgr_new(3, 100);
    ac__user_t *u = user(m, "alice", 0);
    char s[9];
    u->epoch = 0x0badf00du;
    ac__user_epoch_str(u, s);
    assert_string_equal(s, "0badf00d");
    u->epoch = 0;
    ac__user_epoch_str(u, s);
    assert_string_equal(s, "00000000");
    u->epoch = 0xffffffffu;
    ac__user_epoch_str(u, s);
    assert_string_equal(s, "ffffffff");
    mgr_free(m);
}

static void test_epochs_differ_between_users(void **st)
{
    ac__manager_t *m = mgr_new(3, 100);
    ac__user_t *a = user(m, "alice", 0);
    ac__user_t *b = user(m, "bob", 0);
    assert_int_not_equal(a->epoch, b->epoch);
    mgr_free(m);
}

/* ---- foreach ---- */

struct visit {
    ac__mconn_t *conns;
    int n;
    int counts[16];
    int calls;
    ac__manager_t *m; /* set to detach each visited connection */
};

static void on_visit(ac__mconn_t *c, void *arg)
{
    struct visit *v = arg;
    ptrdiff_t i = c - v->conns;
    assert_true(i >= 0 && i < v->n);
    v->counts[i]++;
    v->calls++;
    if (v->m != NULL)
        ac__manager_detach(v->m, c, 7);
}

static void test_foreach_visits_every_attached_connection_once(void **st)
{
    ac__manager_t *m = mgr_new(5, 100);
    ac__user_t *a = user(m, "alice", 0);
    ac__user_t *b = user(m, "bob", 0);
    ac__user_t *c = user(m, "carol", 0);
    user(m, "dave", 0); /* no connections */
    ac__mconn_t conns[7] = {{0}};
    ac__manager_attach(m, a, &conns[0]);
    ac__manager_attach(m, b, &conns[1]);
    ac__manager_attach(m, b, &conns[2]);
    ac__manager_attach(m, c, &conns[3]);
    ac__manager_attach(m, c, &conns[4]);
    ac__manager_attach(m, c, &conns[5]);
    /* conns[6] is never attached. */
    struct visit v = {.conns = conns, .n = 7};
    ac__manager_foreach(m, on_visit, &v);
    assert_int_equal(v.calls, 6);
    for (int i = 0; i < 6; i++)
        assert_int_equal(v.counts[i], 1);
    assert_int_equal(v.counts[6], 0);
    mgr_free(m);
}

/* The ping round's slices: every connection exactly once over all slices, whatever the
 * number of slices (1, a few, more slices than users, as many as buckets). */
static void test_foreach_slices_cover_every_connection_once(void **st)
{
    static const unsigned nslices[] = {1, 3, 7, 16, 1024};
    ac__manager_t *m = mgr_new(5, 100);
    ac__mconn_t conns[16] = {{0}};
    char id[8];

    for (int i = 0; i < 16; i++) {
        snprintf(id, sizeof(id), "u%d", i % 11);
        ac__manager_attach(m, user(m, id, 0), &conns[i]);
    }
    for (size_t k = 0; k < sizeof(nslices) / sizeof(nslices[0]); k++) {
        struct visit v = {.conns = conns, .n = 16};
        for (unsigned sl = 0; sl < nslices[k]; sl++)
            ac__manager_foreach_slice(m, sl, nslices[k], on_visit, &v);
        assert_int_equal(v.calls, 16);
        for (int i = 0; i < 16; i++)
            assert_int_equal(v.counts[i], 1);
    }
    mgr_free(m);
}

static void test_foreach_on_empty_manager_calls_nothing(void **st)
{
    ac__manager_t *m = mgr_new(5, 100);
    user(m, "alice", 0);
    struct visit v = {.conns = NULL, .n = 0};
    ac__manager_foreach(m, on_visit, &v);
    assert_int_equal(v.calls, 0);
    mgr_free(m);
}

static void test_foreach_tolerates_detaching_current(void **st)
{
    ac__manager_t *m = mgr_new(5, 100);
    ac__user_t *a = user(m, "alice", 0);
    ac__user_t *b = user(m, "bob", 0);
    ac__mconn_t conns[5] = {{0}};
    for (int i = 0; i < 3; i++)
        ac__manager_attach(m, a, &conns[i]);
    for (int i = 3; i < 5; i++)
        ac__manager_attach(m, b, &conns[i]);
    struct visit v = {.conns = conns, .n = 5, .m = m};
    ac__manager_foreach(m, on_visit, &v);
    assert_int_equal(v.calls, 5);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(v.counts[i], 1);
        assert_detached(&conns[i]);
    }
    assert_int_equal(m->nconns, 0);
    assert_int_equal(m->users_connected, 0);
    assert_int_equal(m->nusers, 2);
    assert_conns(a, NULL, 0);
    assert_conns(b, NULL, 0);
    assert_int_equal(a->last_active, 7);
    mgr_free(m);
}

/* ---- scale ---- */

static void test_many_users_grow_table_and_stay_findable(void **st)
{
    enum { N = 50000 };
    ac__manager_t *m = mgr_new(3, N);
    ac__mconn_t *conns = calloc(N, sizeof(*conns));
    assert_non_null(conns);
    char id[32];
    size_t initial_buckets = m->nbuckets;
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof(id), "user-%d", i);
        ac__user_t *u = user(m, id, 0);
        assert_null(ac__manager_attach(m, u, &conns[i]));
    }
    assert_int_equal(m->nusers, N);
    assert_int_equal(m->users_connected, N);
    assert_int_equal(m->nconns, N);
    assert_true(ac__manager_full(m));
    assert_true(m->nbuckets > initial_buckets);
    assert_true(m->nbuckets >= N);
    assert_int_equal(m->nbuckets & (m->nbuckets - 1), 0);
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof(id), "user-%d", i);
        ac__user_t *u = find(m, id);
        assert_non_null(u);
        assert_string_equal(u->id, id);
        assert_ptr_equal(u->head, &conns[i]);
        assert_ptr_equal(ac__manager_find_conn(u, conns[i].id), &conns[i]);
    }
    snprintf(id, sizeof(id), "user-%d", N);
    assert_null(find(m, id));
    mgr_free(m);
    free(conns);
}

/* ---- dispose ---- */

static void test_dispose_unlinks_attached_connections(void **st)
{
    ac__manager_t *m = mgr_new(5, 100);
    ac__user_t *a = user(m, "alice", 0);
    ac__user_t *b = user(m, "bob", 0);
    user(m, "carol", 0);
    ac__mconn_t c[3] = {{0}};
    ac__manager_attach(m, a, &c[0]);
    ac__manager_attach(m, a, &c[1]);
    ac__manager_attach(m, b, &c[2]);
    mgr_free(m); /* ASan: every user record freed */
    for (int i = 0; i < 3; i++)
        assert_null(c[i].user);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_is_empty),
        cmocka_unit_test(test_user_creates_record_with_seq_0),
        cmocka_unit_test(test_user_returns_existing_record),
        cmocka_unit_test(test_user_copies_id_not_borrowing_it),
        cmocka_unit_test(test_attach_links_and_counts_connection),
        cmocka_unit_test(test_attach_appends_newest_at_tail),
        cmocka_unit_test(test_attach_gives_increasing_unique_ids),
        cmocka_unit_test(test_attach_two_users_counts_users_connected),
        cmocka_unit_test(test_detach_only_connection_resets_counters_keeps_record),
        cmocka_unit_test(test_detach_not_attached_is_noop),
        cmocka_unit_test(test_detach_head_keeps_list_consistent),
        cmocka_unit_test(test_detach_middle_keeps_list_consistent),
        cmocka_unit_test(test_detach_tail_keeps_list_consistent),
        cmocka_unit_test(test_detach_then_attach_again_appends_at_tail),
        cmocka_unit_test(test_detach_all_in_any_order_empties_user),
        cmocka_unit_test(test_cap_fourth_attach_evicts_oldest),
        cmocka_unit_test(test_cap_evicts_by_creation_order_repeatedly),
        cmocka_unit_test(test_cap_after_detach_has_room_again),
        cmocka_unit_test(test_cap_is_per_user),
        cmocka_unit_test(test_cap_zero_means_one),
        cmocka_unit_test(test_full_when_nconns_reaches_max_total),
        cmocka_unit_test(test_full_not_changed_by_eviction),
        cmocka_unit_test(test_full_with_max_total_zero),
        cmocka_unit_test(test_find_user_hit_and_miss),
        cmocka_unit_test(test_find_user_uses_len_not_nul),
        cmocka_unit_test(test_find_conn_hit),
        cmocka_unit_test(test_find_conn_miss),
        cmocka_unit_test(test_find_conn_of_other_user_is_miss),
        cmocka_unit_test(test_find_conn_after_detach_is_miss),
        cmocka_unit_test(test_user_id_empty_is_refused),
        cmocka_unit_test(test_user_id_over_max_is_refused),
        cmocka_unit_test(test_user_id_at_max_is_accepted),
        cmocka_unit_test(test_user_ids_sharing_a_prefix_are_distinct),
        cmocka_unit_test(test_user_ids_differing_in_last_byte_are_distinct),
        cmocka_unit_test(test_user_id_with_embedded_nul_is_distinct),
        cmocka_unit_test(test_expire_keeps_user_before_ttl),
        cmocka_unit_test(test_expire_removes_user_at_ttl),
        cmocka_unit_test(test_expire_never_removes_connected_user),
        cmocka_unit_test(test_expire_uses_creation_time_for_never_connected_user),
        cmocka_unit_test(test_expire_removes_only_idle_users),
        cmocka_unit_test(test_expire_counts_every_removed_user),
        cmocka_unit_test(test_expire_then_recreate_gives_seq_0_and_new_epoch),
        cmocka_unit_test(test_epoch_str_is_8_lowercase_hex_digits),
        cmocka_unit_test(test_epochs_differ_between_users),
        cmocka_unit_test(test_foreach_visits_every_attached_connection_once),
        cmocka_unit_test(test_foreach_slices_cover_every_connection_once),
        cmocka_unit_test(test_foreach_on_empty_manager_calls_nothing),
        cmocka_unit_test(test_foreach_tolerates_detaching_current),
        cmocka_unit_test(test_many_users_grow_table_and_stay_findable),
        cmocka_unit_test(test_dispose_unlinks_attached_connections),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
