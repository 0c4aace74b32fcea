/* Unit tests of common/batcher: calls that arrive together are sent together, a lone call goes
 * at once, and every call gets its own answer. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "batcher.h"
#include "timeutil.h"

typedef struct call {
    int in, out;
    int leader; /* the thread index whose send carried it */
} call;

static atomic_int sends_running, most_running, largest;
static atomic_int send_ms; /* how long one send takes */

static void send_squares(void *arg, void **calls, int n)
{
    int now = atomic_fetch_add(&sends_running, 1) + 1;
    for (int m = atomic_load(&most_running); now > m;)
        if (atomic_compare_exchange_weak(&most_running, &m, now))
            break;
    for (int l = atomic_load(&largest); n > l;)
        if (atomic_compare_exchange_weak(&largest, &l, n))
            break;
    time_sleep_ms(atomic_load(&send_ms), NULL);
    for (int i = 0; i < n; i++) {
        call *c = calls[i];
        c->out = c->in * c->in;
        c->leader = *(const int *)arg;
    }
    atomic_fetch_sub(&sends_running, 1);
}

static void reset(int ms)
{
    atomic_store(&sends_running, 0);
    atomic_store(&most_running, 0);
    atomic_store(&largest, 0);
    atomic_store(&send_ms, ms);
}

static void a_lone_call_goes_alone(void **state)
{
    (void)state;
    reset(0);
    batcher b = BATCHER_INIT(8, 1, send_squares);
    int me = 7;
    call c = {.in = 12};
    batcher_run(&b, &c, &me);
    assert_int_equal(c.out, 144);
    assert_int_equal(c.leader, 7);
    int64_t calls, sends;
    int32_t waiting;
    batcher_counts(&b, &calls, &sends, &waiting);
    assert_int_equal(calls, 1);
    assert_int_equal(sends, 1);
    assert_int_equal(waiting, 0);
}

#define THREADS 32
#define ROUNDS  20

typedef struct runner {
    batcher *b;
    int index;
    int wrong;
} runner;

static void *run_calls(void *p)
{
    runner *r = p;
    for (int k = 0; k < ROUNDS; k++) {
        call c = {.in = r->index * 1000 + k};
        batcher_run(r->b, &c, &r->index);
        r->wrong += c.out != c.in * c.in;
    }
    return NULL;
}

static void run_threads(batcher *b)
{
    pthread_t t[THREADS];
    runner r[THREADS];
    for (int i = 0; i < THREADS; i++) {
        r[i] = (runner){.b = b, .index = i};
        assert_int_equal(pthread_create(&t[i], NULL, run_calls, &r[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(r[i].wrong, 0);
    }
}

static void calls_that_arrive_together_share_a_send(void **state)
{
    (void)state;
    reset(2);
    batcher b = BATCHER_INIT(8, 1, send_squares);
    run_threads(&b);
    int64_t calls, sends;
    int32_t waiting;
    batcher_counts(&b, &calls, &sends, &waiting);
    assert_int_equal(calls, THREADS * ROUNDS);
    assert_int_equal(waiting, 0);
    assert_true(sends < calls); /* some shared */
    assert_int_equal(atomic_load(&most_running), 1);
    assert_true(atomic_load(&largest) > 1);
    assert_true(atomic_load(&largest) <= 8); /* never over max_batch */
}

static void several_sends_run_at_once_up_to_the_limit(void **state)
{
    (void)state;
    reset(2);
    batcher b = BATCHER_INIT(4, 1, send_squares);
    batcher_set_max_in_flight(&b, 3);
    run_threads(&b);
    int64_t calls, sends;
    int32_t waiting;
    batcher_counts(&b, &calls, &sends, &waiting);
    assert_int_equal(calls, THREADS * ROUNDS);
    assert_true(atomic_load(&most_running) >= 2);
    assert_true(atomic_load(&most_running) <= 3);
    assert_true(atomic_load(&largest) <= 4);
}

/* Sends wait for their turn: the k-th send to start runs once opened > k. */
static atomic_int tickets, opened;

static void send_in_turn(void *arg, void **calls, int n)
{
    (void)arg;
    int ticket = atomic_fetch_add(&tickets, 1);
    atomic_fetch_add(&sends_running, 1);
    while (atomic_load(&opened) <= ticket)
        time_sleep_ms(1, NULL);
    for (int i = 0; i < n; i++) {
        call *c = calls[i];
        c->out = c->in * c->in;
    }
    atomic_fetch_sub(&sends_running, 1);
}

typedef struct one {
    batcher *b;
    call c;
    pthread_t t;
} one;

static void *run_one(void *p)
{
    one *o = p;
    batcher_run(o->b, &o->c, NULL);
    return NULL;
}

/* 1 once cond() holds, 0 if it does not within ms. */
static int within(int (*cond)(void), int ms)
{
    for (int64_t end = time_monotonic_ms() + ms; time_monotonic_ms() < end;) {
        if (cond())
            return 1;
        time_sleep_ms(1, NULL);
    }
    return cond();
}

static batcher *watched;
static int five_wait(void)
{
    int64_t calls, sends;
    int32_t waiting;
    batcher_counts(watched, &calls, &sends, &waiting);
    return waiting == 5;
}
static int two_sending(void)
{
    return atomic_load(&sends_running) == 2;
}

static void calls_left_behind_a_full_batch_use_a_free_place_at_once(void **state)
{
    (void)state;
    reset(0);
    atomic_store(&tickets, 0);
    atomic_store(&opened, 0);
    /* One place while the calls queue: the first call's send holds it and five wait. */
    batcher b = BATCHER_INIT(2, 1, send_in_turn);
    watched = &b;
    one calls[6];
    for (int i = 0; i < 6; i++) {
        calls[i] = (one){.b = &b, .c = {.in = i + 2}};
        assert_int_equal(pthread_create(&calls[i].t, NULL, run_one, &calls[i]), 0);
    }
    assert_true(within(five_wait, 5000));
    /* Two places from now on; the first send ends, and its place goes to the oldest waiting
     * call, which takes two; the three left must lead the free place now. */
    batcher_set_max_in_flight(&b, 2);
    atomic_store(&opened, 1);
    int both = within(two_sending, 3000);
    atomic_store(&opened, 1000);
    for (int i = 0; i < 6; i++) {
        pthread_join(calls[i].t, NULL);
        assert_int_equal(calls[i].c.out, calls[i].c.in * calls[i].c.in);
    }
    assert_true(both);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_lone_call_goes_alone),
        cmocka_unit_test(calls_that_arrive_together_share_a_send),
        cmocka_unit_test(several_sends_run_at_once_up_to_the_limit),
        cmocka_unit_test(calls_left_behind_a_full_batch_use_a_free_place_at_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
