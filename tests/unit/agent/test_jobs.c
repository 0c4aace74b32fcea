/* The job queues between the connection owner and the workers: order, blocking, close, wakeup. */
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "jobs.h"
#include "mem.h"

static job *new_job(uint64_t tag)
{
    job *j = xcalloc(1, sizeof *j);
    j->tag = tag;
    j->body = xstrdup("body");
    j->len = 4;
    return j;
}

static void test_fifo(void **state)
{
    (void)state;
    job_queue q;
    jobq_init(&q, 0);
    assert_null(jobq_try_pop(&q));
    for (uint64_t t = 1; t <= 5; t++)
        jobq_push(&q, new_job(t));
    assert_int_equal(jobq_len(&q), 5);
    for (uint64_t t = 1; t <= 5; t++) {
        job *j = t % 2 ? jobq_pop(&q) : jobq_try_pop(&q);
        assert_non_null(j);
        assert_int_equal(j->tag, t);
        job_free(j);
    }
    assert_null(jobq_try_pop(&q));
    assert_int_equal(jobq_len(&q), 0);
    jobq_destroy(&q);
}

static void test_destroy_frees_what_is_left(void **state)
{
    (void)state;
    job_queue q;
    jobq_init(&q, 1);
    jobq_push(&q, new_job(1));
    jobq_push(&q, new_job(2));
    jobq_destroy(&q); /* LeakSanitizer checks the rest */
    job_free(NULL);
}

static void test_wakeup_pipe(void **state)
{
    (void)state;
    job_queue q;
    jobq_init(&q, 1);
    struct pollfd pfd = {.fd = q.wake_fd[0], .events = POLLIN};
    assert_int_equal(poll(&pfd, 1, 0), 0);
    for (int i = 0; i < 1000; i++) /* more than a pipe holds, never blocks */
        jobq_push(&q, new_job((uint64_t)i));
    assert_int_equal(poll(&pfd, 1, 0), 1);
    job *j = jobq_try_pop(&q); /* drains the pipe */
    job_free(j);
    assert_int_equal(poll(&pfd, 1, 0), 0);
    jobq_destroy(&q);
}

typedef struct consumer_arg {
    job_queue *q;
    uint64_t sum;
    int count;
} consumer_arg;

static void *consume(void *p)
{
    consumer_arg *a = p;
    job *j;
    while ((j = jobq_pop(a->q))) {
        a->sum += j->tag;
        a->count++;
        job_free(j);
    }
    return NULL;
}

static void test_close_wakes_blocked_poppers_after_the_last_job(void **state)
{
    (void)state;
    job_queue q;
    jobq_init(&q, 0);
    enum { THREADS = 4, JOBS = 2000 };
    pthread_t t[THREADS];
    consumer_arg args[THREADS];
    for (int i = 0; i < THREADS; i++) {
        args[i] = (consumer_arg){.q = &q};
        pthread_create(&t[i], NULL, consume, &args[i]);
    }
    for (uint64_t tag = 1; tag <= JOBS; tag++)
        jobq_push(&q, new_job(tag));
    jobq_close(&q);
    uint64_t sum = 0;
    int count = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        sum += args[i].sum;
        count += args[i].count;
    }
    /* Every job popped exactly once, even those pushed before the close. */
    assert_int_equal(count, JOBS);
    assert_int_equal(sum, (uint64_t)JOBS * (JOBS + 1) / 2);
    assert_null(jobq_pop(&q));
    jobq_destroy(&q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fifo),
        cmocka_unit_test(test_destroy_frees_what_is_left),
        cmocka_unit_test(test_wakeup_pipe),
        cmocka_unit_test(test_close_wakes_blocked_poppers_after_the_last_job),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
