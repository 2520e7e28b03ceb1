/* Unit tests for src/core/idempotency.c: (user, key) -> seq within a window. Hits and
 * misses (the user/key separator keeps "ab"+"c" and "a"+"bc" apart), expiry at exactly
 * `at + window`, in insertion order, the count cap evicting the oldest, growth of the
 * table and dispose. Leaks are caught under ASan (make asan). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "agentcast.h"
#include "core/idempotency.h"

static void idem_init(ac__idem_t *t, uint64_t window, size_t max_count)
{
    assert_int_equal(ac__idem_init(t, window, max_count), 0);
}

static void put(ac__idem_t *t, const char *user, const char *key, uint64_t seq, uint64_t now)
{
    assert_int_equal(ac__idem_put(t, user, strlen(user), key, strlen(key), seq, now), 0);
}

static uint64_t get(ac__idem_t *t, const char *user, const char *key, uint64_t now)
{
    return ac__idem_get(t, user, strlen(user), key, strlen(key), now);
}

/* ---- init ---- */

static void test_init_is_empty(void **st)
{
    ac__idem_t t;
    idem_init(&t, 300, 1000);
    assert_int_equal(t.count, 0);
    assert_int_equal(t.window, 300);
    assert_int_equal(t.max_count, 1000);
    assert_null(t.oldest);
    assert_null(t.newest);
    assert_int_equal(get(&t, "alice", "k1", 0), 0);
    ac__idem_dispose(&t);
}

static void test_init_max_count_zero_means_one(void **st)
{
    ac__idem_t t;
    idem_init(&t, 300, 0);
    assert_int_equal(t.max_count, 1);
    put(&t, "alice", "k1", 1, 0);
    put(&t, "alice", "k2", 2, 0);
    assert_int_equal(t.count, 1);
    assert_int_equal(get(&t, "alice", "k1", 0), 0);
    assert_int_equal(get(&t, "alice", "k2", 0), 2);
    ac__idem_dispose(&t);
}

/* ---- hits and misses ---- */

static void test_put_then_get_hits(void **st)
{
    ac__idem_t t;
    idem_init(&t, 300, 1000);
    put(&t, "alice", "k-42", 17, 1000);
    assert_int_equal(get(&t, "alice", "k-42", 1000), 17);
    assert_int_equal(get(&t, "alice", "k-42", 1200), 17);
    assert_int_equal(t.count, 1);
    ac__idem_dispose(&t);
}

static void test_get_other_user_misses(void **st)
{
    ac__idem_t t;
    idem_init(&t, 300, 1000);
    put(&t, "alice", "k1", 5, 0);
    assert_int_equal(get(&t, "bob", "k1", 0), 0);
    assert_int_equal(get(&t, "alic", "k1", 0), 0);
    assert_int_equal(get(&t, "alice2", "k1", 0), 0);
    ac__idem_dispose(&t);
}

static void test_get_other_key_misses(void **st)
{
    ac__idem_t t;
    idem_init(&t, 300, 1000);
    put(&t, "alice", "k1", 5, 0);
    assert_int_equal(get(&t, "alice", "k2", 0), 0);
    assert_int_equal(get(&t, "alice", "k", 0), 0);
    assert_int_equal(get(&t, "alice", "k10", 0), 0);
    assert_int_equal(get(&t, "alice", "", 0), 0);
    ac__idem_dispose(&t);
}

static void test_separator_keeps_user_and_key_apart(void **st)
{
    ac__idem_t t;
    idem_init(&t, 300, 1000);
    put(&t, "ab", "c", 7, 0);
    assert_int_equal(get(&t, "a", "bc", 0), 0);
    assert_int_equal(get(&t, "abc", "", 0), 0);
    assert_int_equal(get(&t, "ab", "c", 0), 7);
    ac__idem_dispose(&t);
}

static void test_separator_keeps_user_and_key_apart_other_way(void **st)
{
    ac__idem_t t;
    idem_init(&t, 300, 1000);
    put(&t, "a", "bc", 8, 0);
    assert_int_equal(get(&t, "ab", "c", 0), 0);
    assert_int_equal(get(&t, "a", "bc", 0), 8);
    ac__idem_dispose(&t);
}

static void test_split_pairs_with_same_bytes_keep_own_seq(void **st)
{
    ac__idem_t t;
    idem_init(&t, 300, 1000);
    put(&t, "ab", "c", 7, 0);
    put(&t, "a", "bc", 8, 0);
    assert_int_equal(t.count, 2);
    assert_int_equal(get(&t, "ab", "c", 0), 7);
    assert_int_equal(get(&t, "a", "bc", 0), 8);
    ac__idem_dispose(&t);
}

static void test_same_key_for_two_users_keeps_own_seq(void **st)
{
    ac__idem_t t;
    idem_init(&t, 300, 1000);
    put(&t, "alice", "k1", 3, 0);
    put(&t, "bob", "k1", 4, 0);
    assert_int_equal(get(&t, "alice", "k1", 0), 3);
    assert_int_equal(get(&t, "bob", "k1", 0), 4);
    ac__idem_dispose(&t);
}

static void test_get_uses_lengths_not_nul(void **st)
{
    ac__idem_t t;
    idem_init(&t, 300, 1000);
    put(&t, "alice", "k1", 9, 0);
    assert_int_equal(ac__idem_get(&t, "alice-x", 5, "k1-y", 2, 0), 9);
    assert_int_equal(ac__idem_get(&t, "alice", 4, "k1", 2, 0), 0);
    assert_int_equal(ac__idem_get(&t, "alice", 5, "k1", 1, 0), 0);
    ac__idem_dispose(&t);
}

static void test_put_copies_user_and_key(void **st)
{
    ac__idem_t t;
    idem_init(&t, 300, 1000);
    char u[] = "alice", k[] = "k1";
    put(&t, u, k, 6, 0);
    u[0] = 'x';
    k[0] = 'x';
    assert_int_equal(get(&t, "alice", "k1", 0), 6);
    assert_int_equal(get(&t, "xlice", "x1", 0), 0);
    ac__idem_dispose(&t);
}

/* ---- expiry ---- */

static void test_get_hits_until_just_before_window_ends(void **st)
{
    ac__idem_t t;
    idem_init(&t, 50, 1000);
    put(&t, "alice", "k1", 5, 100);
    assert_int_equal(get(&t, "alice", "k1", 149), 5);
    assert_int_equal(t.count, 1);
    ac__idem_dispose(&t);
}

static void test_get_misses_exactly_at_window_end(void **st)
{
    ac__idem_t t;
    idem_init(&t, 50, 1000);
    put(&t, "alice", "k1", 5, 100);
    assert_int_equal(get(&t, "alice", "k1", 150), 0);
    assert_int_equal(t.count, 0);
    assert_null(t.oldest);
    assert_null(t.newest);
    ac__idem_dispose(&t);
}

static void test_expire_removes_exactly_at_window_end(void **st)
{
    ac__idem_t t;
    idem_init(&t, 50, 1000);
    put(&t, "alice", "k1", 5, 100);
    ac__idem_expire(&t, 149);
    assert_int_equal(t.count, 1);
    ac__idem_expire(&t, 150);
    assert_int_equal(t.count, 0);
    assert_null(t.oldest);
    assert_null(t.newest);
    ac__idem_dispose(&t);
}

static void test_expire_in_insertion_order(void **st)
{
    ac__idem_t t;
    idem_init(&t, 100, 1000);
    put(&t, "alice", "k0", 1, 0);
    put(&t, "bob", "k1", 2, 10);
    put(&t, "alice", "k2", 3, 20);
    ac__idem_expire(&t, 109);
    assert_int_equal(t.count, 2);
    assert_int_equal(get(&t, "alice", "k0", 109), 0);
    assert_int_equal(get(&t, "bob", "k1", 109), 2);
    assert_int_equal(get(&t, "alice", "k2", 109), 3);
    ac__idem_expire(&t, 110);
    assert_int_equal(t.count, 1);
    assert_int_equal(get(&t, "bob", "k1", 110), 0);
    assert_int_equal(get(&t, "alice", "k2", 110), 3);
    ac__idem_expire(&t, 120);
    assert_int_equal(t.count, 0);
    assert_null(t.oldest);
    assert_null(t.newest);
    ac__idem_dispose(&t);
}

static void test_get_expires_older_entries_too(void **st)
{
    ac__idem_t t;
    idem_init(&t, 100, 1000);
    put(&t, "alice", "k0", 1, 0);
    put(&t, "alice", "k1", 2, 50);
    put(&t, "alice", "k2", 3, 90);
    assert_int_equal(get(&t, "alice", "k2", 150), 3);
    assert_int_equal(t.count, 1);
    ac__idem_dispose(&t);
}

static void test_put_after_everything_expired_works(void **st)
{
    ac__idem_t t;
    idem_init(&t, 10, 1000);
    put(&t, "alice", "k0", 1, 0);
    put(&t, "alice", "k1", 2, 0);
    ac__idem_expire(&t, 10);
    assert_int_equal(t.count, 0);
    put(&t, "alice", "k2", 3, 20);
    put(&t, "alice", "k3", 4, 21);
    assert_int_equal(t.count, 2);
    assert_int_equal(get(&t, "alice", "k2", 25), 3);
    assert_int_equal(get(&t, "alice", "k3", 25), 4);
    ac__idem_expire(&t, 30);
    assert_int_equal(t.count, 1);
    assert_int_equal(get(&t, "alice", "k3", 30), 4);
    ac__idem_dispose(&t);
}

/* ---- count cap ---- */

static void test_cap_evicts_oldest(void **st)
{
    ac__idem_t t;
    idem_init(&t, 1000, 3);
    put(&t, "alice", "k0", 1, 0);
    put(&t, "alice", "k1", 2, 1);
    put(&t, "bob", "k2", 3, 2);
    put(&t, "alice", "k3", 4, 3);
    assert_int_equal(t.count, 3);
    assert_int_equal(get(&t, "alice", "k0", 3), 0);
    assert_int_equal(get(&t, "alice", "k1", 3), 2);
    assert_int_equal(get(&t, "bob", "k2", 3), 3);
    assert_int_equal(get(&t, "alice", "k3", 3), 4);
    ac__idem_dispose(&t);
}

static void test_cap_evicts_in_insertion_order_repeatedly(void **st)
{
    enum { CAP = 4, N = 11 };
    ac__idem_t t;
    idem_init(&t, 1000, CAP);
    char key[16];
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        put(&t, "alice", key, (uint64_t)i + 1, 0);
        assert_int_equal(t.count, i + 1 < CAP ? i + 1 : CAP);
    }
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        assert_int_equal(get(&t, "alice", key, 0), i >= N - CAP ? (uint64_t)i + 1 : 0);
    }
    ac__idem_dispose(&t);
}

/* ---- scale ---- */

static void test_many_entries_grow_table_and_stay_findable(void **st)
{
    enum { N = 50000 };
    ac__idem_t t;
    idem_init(&t, 1000000, 100000);
    size_t initial_buckets = t.nbuckets;
    char user[32], key[32];
    for (int i = 0; i < N; i++) {
        snprintf(user, sizeof(user), "user-%d", i % 101);
        snprintf(key, sizeof(key), "key-%d", i);
        put(&t, user, key, (uint64_t)i + 1, (uint64_t)i);
    }
    assert_int_equal(t.count, N);
    assert_true(t.nbuckets > initial_buckets);
    assert_true(t.nbuckets >= N);
    assert_int_equal(t.nbuckets & (t.nbuckets - 1), 0);
    for (int i = 0; i < N; i++) {
        snprintf(user, sizeof(user), "user-%d", i % 101);
        snprintf(key, sizeof(key), "key-%d", i);
        assert_int_equal(get(&t, user, key, N), (uint64_t)i + 1);
    }
    snprintf(key, sizeof(key), "key-%d", N);
    assert_int_equal(get(&t, "user-0", key, N), 0);
    assert_int_equal(get(&t, "user-1", "key-0", N), 0); /* key-0 is user-0's */
    ac__idem_dispose(&t);
}

static void test_many_entries_expire_after_growth(void **st)
{
    enum { N = 50000 };
    ac__idem_t t;
    idem_init(&t, 1000, 100000);
    char key[32];
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof(key), "key-%d", i);
        put(&t, "alice", key, (uint64_t)i + 1, (uint64_t)i);
    }
    ac__idem_expire(&t, N / 2 + 1000); /* entries put at 0..N/2 are due */
    assert_int_equal(t.count, N / 2 - 1);
    snprintf(key, sizeof(key), "key-%d", N / 2);
    assert_int_equal(get(&t, "alice", key, N / 2 + 1000), 0);
    snprintf(key, sizeof(key), "key-%d", N / 2 + 1);
    assert_int_equal(get(&t, "alice", key, N / 2 + 1000), N / 2 + 2);
    ac__idem_expire(&t, N + 1000);
    assert_int_equal(t.count, 0);
    assert_null(t.oldest);
    assert_null(t.newest);
    ac__idem_dispose(&t);
}

/* ---- dispose ---- */

static void test_dispose_frees_all(void **st)
{
    ac__idem_t t;
    idem_init(&t, 1000, 5000);
    char key[32];
    for (int i = 0; i < 3000; i++) {
        snprintf(key, sizeof(key), "key-%d", i);
        put(&t, "alice", key, (uint64_t)i + 1, 0);
    }
    ac__idem_dispose(&t); /* ASan: every entry and the table freed */
    assert_null(t.buckets);
    assert_int_equal(t.nbuckets, 0);
    assert_int_equal(t.count, 0);
    assert_null(t.oldest);
    assert_null(t.newest);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_is_empty),
        cmocka_unit_test(test_init_max_count_zero_means_one),
        cmocka_unit_test(test_put_then_get_hits),
        cmocka_unit_test(test_get_other_user_misses),
        cmocka_unit_test(test_get_other_key_misses),
        cmocka_unit_test(test_separator_keeps_user_and_key_apart),
        cmocka_unit_test(test_separator_keeps_user_and_key_apart_other_way),
        cmocka_unit_test(test_split_pairs_with_same_bytes_keep_own_seq),
        cmocka_unit_test(test_same_key_for_two_users_keeps_own_seq),
        cmocka_unit_test(test_get_uses_lengths_not_nul),
        cmocka_unit_test(test_put_copies_user_and_key),
        cmocka_unit_test(test_get_hits_until_just_before_window_ends),
        cmocka_unit_test(test_get_misses_exactly_at_window_end),
        cmocka_unit_test(test_expire_removes_exactly_at_window_end),
        cmocka_unit_test(test_expire_in_insertion_order),
        cmocka_unit_test(test_get_expires_older_entries_too),
        cmocka_unit_test(test_put_after_everything_expired_works),
        cmocka_unit_test(test_cap_evicts_oldest),
        cmocka_unit_test(test_cap_evicts_in_insertion_order_repeatedly),
        cmocka_unit_test(test_many_entries_grow_table_and_stay_findable),
        cmocka_unit_test(test_many_entries_expire_after_growth),
        cmocka_unit_test(test_dispose_frees_all),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
