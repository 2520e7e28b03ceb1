/* Unit tests for src/net/inbox.c: the bounded loop-to-loop queue and the per-turn outbox.
 * The threaded test runs producers on loops of their own and is also the ThreadSanitizer
 * case of `make tsan`. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "agentcast.h"
#include "net/inbox.h"

typedef struct tmsg_s {
    ac__msg_t m; /* first */
    unsigned from;
    unsigned seq;
} tmsg_t;

typedef struct sink_s {
    unsigned got[16];  /* per producer: messages run */
    unsigned next[16]; /* per producer: the seq expected next */
    unsigned closed;   /* handed back with AC_ECLOSED */
    unsigned disorder; /* messages out of their producer's order */
    unsigned total;
    unsigned want; /* stop the loop after this many */
    uv_timer_t *keepalive;
    ac__inbox_t *in;
    int inbox_closed;
} sink_t;

static void on_inbox_closed(ac__inbox_t *in)
{
    sink_t *k = in->arg;
    k->inbox_closed = 1;
}

static void run_msg(ac__msg_t *m, void *arg, int status)
{
    tmsg_t *t = (tmsg_t *)m;
    sink_t *k = arg;

    if (status != 0) {
        /* The outbox's cancel has no inbox, so no arg. */
        if (k != NULL)
            k->closed++;
        free(t);
        return;
    }
    if (t->seq != k->next[t->from])
        k->disorder++;
    k->next[t->from] = t->seq + 1;
    k->got[t->from]++;
    k->total++;
    free(t);
    if (k->want != 0 && k->total == k->want) {
        uv_timer_stop(k->keepalive);
        ac__inbox_close(k->in, on_inbox_closed);
    }
}

static tmsg_t *mk(unsigned from, unsigned seq)
{
    tmsg_t *t = calloc(1, sizeof(*t));
    assert_non_null(t);
    t->m.run = run_msg;
    t->from = from;
    t->seq = seq;
    return t;
}

static void close_loop(uv_loop_t *loop)
{
    uv_run(loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(loop), 0);
}

static void on_turn(uv_timer_t *t)
{
}

static void test_post_runs_each_message_once_in_order_on_the_loop(void **st)
{
    uv_loop_t loop;
    ac__inbox_t in;
    sink_t k = {0};
    tmsg_t *a = mk(0, 0), *b = mk(0, 1), *c = mk(0, 2);

    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(ac__inbox_init(&loop, &in, 8, &k), 0);
    a->m.next = &b->m;
    assert_int_equal(ac__inbox_post(&in, &a->m, &b->m, 2), 0);
    assert_int_equal(ac__inbox_post(&in, &c->m, &c->m, 1), 0);
    /* The inbox's handles do not keep the loop alive; a due timer makes one turn, and a
     * turn drains (uv_check). */
    uv_timer_t turn;
    uv_timer_init(&loop, &turn);
    uv_timer_start(&turn, on_turn, 0, 0);
    uv_run(&loop, UV_RUN_NOWAIT);
    assert_int_equal(k.total, 3);
    assert_int_equal(k.disorder, 0);
    uv_close((uv_handle_t *)&turn, NULL);
    ac__inbox_close(&in, on_inbox_closed);
    close_loop(&loop);
    assert_true(k.inbox_closed);
    ac__inbox_dispose(&in);
}

static void test_full_inbox_refuses_a_batch_whole(void **st)
{
    uv_loop_t loop;
    ac__inbox_t in;
    sink_t k = {0};
    tmsg_t *t[6];
    ac__inbox_stats_t s;

    for (unsigned i = 0; i < 6; i++)
        t[i] = mk(0, i);
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(ac__inbox_init(&loop, &in, 4, &k), 0);
    t[0]->m.next = &t[1]->m;
    t[1]->m.next = &t[2]->m;
    assert_int_equal(ac__inbox_post(&in, &t[0]->m, &t[2]->m, 3), 0);
    t[3]->m.next = &t[4]->m;
    assert_int_equal(ac__inbox_post(&in, &t[3]->m, &t[4]->m, 2), AC_EBUSY);
    ac__inbox_drain(&in);
    assert_int_equal(k.total, 3);
    assert_int_equal(ac__inbox_post(&in, &t[3]->m, &t[4]->m, 2), 0);
    assert_int_equal(ac__inbox_post(&in, &t[5]->m, &t[5]->m, 1), 0);
    ac__inbox_drain(&in);
    assert_int_equal(k.total, 6);
    assert_int_equal(k.disorder, 0);
    ac__inbox_stats(&in, &s);
    assert_int_equal(s.posted, 6);
    assert_int_equal(s.refused, 2);
    assert_int_equal(s.batches, 2);
    assert_int_equal(s.max_batch, 3);
    ac__inbox_close(&in, NULL);
    close_loop(&loop);
    ac__inbox_dispose(&in);
}

static void test_close_hands_back_what_is_queued_and_refuses_more(void **st)
{
    uv_loop_t loop;
    ac__inbox_t in;
    sink_t k = {0};
    tmsg_t *a = mk(0, 0), *b = mk(0, 1);

    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(ac__inbox_init(&loop, &in, 8, &k), 0);
    assert_int_equal(ac__inbox_post(&in, &a->m, &a->m, 1), 0);
    ac__inbox_close(&in, on_inbox_closed);
    assert_int_equal(k.closed, 1);
    assert_int_equal(k.total, 0);
    assert_int_equal(ac__inbox_post(&in, &b->m, &b->m, 1), AC_ECLOSED);
    free(b);
    close_loop(&loop);
    assert_true(k.inbox_closed);
    ac__inbox_dispose(&in);
}

static void test_outbox_keeps_its_batch_while_the_inbox_is_full(void **st)
{
    uv_loop_t loop;
    ac__inbox_t in;
    ac__outbox_t o;
    sink_t k = {0};

    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(ac__inbox_init(&loop, &in, 4, &k), 0);
    ac__outbox_init(&o, &in);
    assert_int_equal(ac__outbox_flush(&o), 0); /* empty */
    for (unsigned i = 0; i < 3; i++)
        ac__outbox_push(&o, &mk(0, i)->m);
    assert_int_equal(ac__outbox_flush(&o), 0);
    assert_int_equal(o.n, 0);
    for (unsigned i = 3; i < 6; i++)
        ac__outbox_push(&o, &mk(0, i)->m);
    assert_int_equal(ac__outbox_flush(&o), AC_EBUSY);
    assert_int_equal(o.n, 3);
    ac__inbox_drain(&in);
    assert_int_equal(ac__outbox_flush(&o), 0);
    ac__inbox_drain(&in);
    assert_int_equal(k.total, 6);
    assert_int_equal(k.disorder, 0);
    ac__outbox_push(&o, &mk(0, 6)->m);
    ac__inbox_close(&in, NULL);
    assert_int_equal(ac__outbox_flush(&o), AC_ECLOSED);
    ac__outbox_cancel(&o); /* frees it */
    assert_int_equal(o.n, 0);
    close_loop(&loop);
    ac__inbox_dispose(&in);
}

/* ---- producers on loops of their own ---- */

#define NPROD 4
#define PER_PROD 20000
#define BURST 37

typedef struct prod_s {
    unsigned id;
    unsigned sent; /* pushed into the outbox */
    unsigned busy; /* flushes refused (the inbox was full) */
    uv_loop_t loop;
    uv_idle_t work;
    uv_check_t flush;
    ac__outbox_t out;
    uv_thread_t thread;
} prod_t;

static void on_prod_work(uv_idle_t *h)
{
    prod_t *p = h->data;

    /* One burst per turn, while the last one is out. */
    if (p->out.n > 0)
        return;
    for (unsigned i = 0; i < BURST && p->sent < PER_PROD; i++)
        ac__outbox_push(&p->out, &mk(p->id, p->sent++)->m);
}

static void on_prod_flush(uv_check_t *h)
{
    prod_t *p = h->data;
    int r = ac__outbox_flush(&p->out);

    if (r == AC_EBUSY)
        p->busy++;
    assert_true(r == 0 || r == AC_EBUSY);
    if (p->sent == PER_PROD && p->out.n == 0) {
        uv_close((uv_handle_t *)&p->work, NULL);
        uv_close((uv_handle_t *)&p->flush, NULL);
    }
}

static void prod_main(void *arg)
{
    prod_t *p = arg;

    uv_run(&p->loop, UV_RUN_DEFAULT);
}

static void on_keepalive(uv_timer_t *t)
{
    fail_msg("the producers did not finish within 600 s");
}

static void test_producers_on_other_loops_deliver_each_message_once_in_order(void **st)
{
    uv_loop_t loop;
    uv_timer_t keepalive;
    ac__inbox_t in;
    sink_t k = {0};
    prod_t *prods = calloc(NPROD, sizeof(*prods));
    ac__inbox_stats_t s;

    assert_non_null(prods);
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(ac__inbox_init(&loop, &in, 64, &k), 0);
    /* Keeps the consumer's loop alive (and asleep between wakes) until all arrived. */
    uv_timer_init(&loop, &keepalive);
    uv_timer_start(&keepalive, on_keepalive, 600000, 0);
    k.keepalive = &keepalive;
    k.in = &in;
    k.want = NPROD * PER_PROD;
    for (unsigned i = 0; i < NPROD; i++) {
        prod_t *p = &prods[i];
        p->id = i;
        assert_int_equal(uv_loop_init(&p->loop), 0);
        uv_idle_init(&p->loop, &p->work);
        p->work.data = p;
        uv_idle_start(&p->work, on_prod_work);
        uv_check_init(&p->loop, &p->flush);
        p->flush.data = p;
        uv_check_start(&p->flush, on_prod_flush);
        ac__outbox_init(&p->out, &in);
        assert_int_equal(uv_thread_create(&p->thread, prod_main, p), 0);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    for (unsigned i = 0; i < NPROD; i++) {
        uv_thread_join(&prods[i].thread);
        assert_int_equal(uv_loop_close(&prods[i].loop), 0);
    }
    uv_close((uv_handle_t *)&keepalive, NULL);
    close_loop(&loop);
    assert_true(k.inbox_closed);
    assert_int_equal(k.total, NPROD * PER_PROD);
    assert_int_equal(k.disorder, 0);
    for (unsigned i = 0; i < NPROD; i++)
        assert_int_equal(k.got[i], PER_PROD);
    ac__inbox_stats(&in, &s);
    assert_int_equal(s.posted, NPROD * PER_PROD);
    /* Every accepted flush either woke the loop or found it awake. */
    assert_true(s.wakes + s.elided >= (NPROD * PER_PROD) / BURST);
    assert_true(s.max_batch <= 64);
    print_message("inbox: %u producers x %u: %llu wakes, %llu elided, %llu drains, "
                  "max batch %llu, %llu refused\n",
                  NPROD, PER_PROD, (unsigned long long)s.wakes, (unsigned long long)s.elided,
                  (unsigned long long)s.batches, (unsigned long long)s.max_batch,
                  (unsigned long long)s.refused);
    ac__inbox_dispose(&in);
    free(prods);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_post_runs_each_message_once_in_order_on_the_loop),
        cmocka_unit_test(test_full_inbox_refuses_a_batch_whole),
        cmocka_unit_test(test_close_hands_back_what_is_queued_and_refuses_more),
        cmocka_unit_test(test_outbox_keeps_its_batch_while_the_inbox_is_full),
        cmocka_unit_test(test_producers_on_other_loops_deliver_each_message_once_in_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
