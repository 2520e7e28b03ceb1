/* Unit tests for src/broker/redis_uv.c without a Redis: the shard hash (fixed vectors shared
 * with tests/integration/redis_helpers.mjs's shardOf, an even spread, and consistency: growing
 * from n to n+1 shards moves users only onto the new shard, about 1/(n+1) of them) and the
 * parsing of one Redis URL (host, [v6], port, /DB, and every refusal naming the URL). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "broker/redis_uv.h"

static unsigned shard(const char *user, unsigned n)
{
    return ac__redis_shard_of(user, strlen(user), n);
}

/* ---- the shard hash ---- */

static void test_shard_vectors_match_the_tests_helper(void **st)
{
    /* node -e "...shardOf(u, n)" over n = 2, 3, 8, 64 */
    static const struct {
        const char *user;
        unsigned want[4];
    } v[] = {{"u1", {1, 1, 4, 55}},
             {"alice", {0, 0, 4, 4}},
             {"user-42", {0, 0, 0, 52}},
             {"", {1, 1, 1, 17}}};
    static const unsigned ns[4] = {2, 3, 8, 64};

    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        for (int k = 0; k < 4; k++)
            assert_int_equal(shard(v[i].user, ns[k]), v[i].want[k]);
    }
}

static void test_shard_one_is_always_zero(void **st)
{
    assert_int_equal(shard("anyone", 1), 0);
    assert_int_equal(shard("", 1), 0);
}

static void test_shard_spread_is_even(void **st)
{
    unsigned count[4] = {0};
    char id[32];

    for (int i = 0; i < 40000; i++) {
        snprintf(id, sizeof(id), "user-%d", i);
        count[shard(id, 4)]++;
    }
    for (int s = 0; s < 4; s++) {
        assert_true(count[s] > 9000);
        assert_true(count[s] < 11000);
    }
}

static void test_shard_growth_moves_only_to_the_new_shard(void **st)
{
    char id[32];

    for (unsigned n = 1; n < 8; n++) {
        unsigned moved = 0;
        for (int i = 0; i < 20000; i++) {
            snprintf(id, sizeof(id), "u%d", i);
            unsigned a = shard(id, n), b = shard(id, n + 1);
            if (a != b) {
                assert_int_equal(b, n);
                moved++;
            }
        }
        /* about 20000 / (n + 1) */
        assert_true(moved > 20000 / (n + 1) * 9 / 10);
        assert_true(moved < 20000 / (n + 1) * 11 / 10);
    }
}

/* ---- one URL ---- */

static int parse(const char *url, ac__redis_addr_t *a, char *why, size_t whylen)
{
    memset(a, 0, sizeof(*a));
    return ac__redis_addr_parse(url, strlen(url), a, why, whylen);
}

static void test_addr_host_port_db(void **st)
{
    ac__redis_addr_t a;
    char why[256] = "";

    assert_int_equal(parse("redis://10.0.0.5:6379", &a, why, sizeof(why)), 0);
    assert_string_equal(a.host, "10.0.0.5");
    assert_int_equal(a.port, 6379);
    assert_int_equal(a.db, 0);
    assert_int_equal(parse("redis://cache.local:7000/3", &a, why, sizeof(why)), 0);
    assert_string_equal(a.host, "cache.local");
    assert_int_equal(a.port, 7000);
    assert_int_equal(a.db, 3);
    assert_int_equal(parse("redis://[::1]:6380/1", &a, why, sizeof(why)), 0);
    assert_string_equal(a.host, "::1");
    assert_int_equal(a.port, 6380);
    assert_int_equal(a.db, 1);
}

static void test_addr_len_bounds_the_url(void **st)
{
    /* One URL of a comma-separated list: parsing stops at len. */
    const char *list = "redis://a:1/2,redis://b:3";
    ac__redis_addr_t a;
    char why[256];

    assert_int_equal(ac__redis_addr_parse(list, 13, &a, why, sizeof(why)), 0);
    assert_string_equal(a.host, "a");
    assert_int_equal(a.port, 1);
    assert_int_equal(a.db, 2);
    assert_int_equal(ac__redis_addr_parse(list + 14, strlen(list + 14), &a, why, sizeof(why)), 0);
    assert_string_equal(a.host, "b");
    assert_int_equal(a.port, 3);
}

static void test_addr_refusals_name_the_url(void **st)
{
    static const char *const bad[] = {"",
                                      "http://h:1",
                                      "redis://h",
                                      "redis://:6379",
                                      "redis://h:0",
                                      "redis://h:65536",
                                      "redis://h:12x",
                                      "redis://h:1/x",
                                      "redis://h:1/",
                                      "redis://[::1]6379",
                                      "redis://user:pw@h:1",
                                      "rediss://h:1"};
    ac__redis_addr_t a;
    char why[256];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        why[0] = '\0';
        assert_int_equal(parse(bad[i], &a, why, sizeof(why)), -1);
        assert_true(strncmp(why, "--broker: ", 10) == 0);
    }
    parse("redis://user:pw@h:1", &a, why, sizeof(why));
    assert_non_null(strstr(why, "AGENTCAST_REDIS_PASSWORD"));
    assert_null(strstr(why, "pw"));
    parse("redis://h:1/x", &a, why, sizeof(why));
    assert_non_null(strstr(why, "redis://h:1/x"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shard_vectors_match_the_tests_helper),
        cmocka_unit_test(test_shard_one_is_always_zero),
        cmocka_unit_test(test_shard_spread_is_even),
        cmocka_unit_test(test_shard_growth_moves_only_to_the_new_shard),
        cmocka_unit_test(test_addr_host_port_db),
        cmocka_unit_test(test_addr_len_bounds_the_url),
        cmocka_unit_test(test_addr_refusals_name_the_url),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
