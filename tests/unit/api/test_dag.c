/*
 * The timing of a DAG (api/dag.c): hand-made shapes, the refusal of a malformed one, and, over
 * many generated expressions and delays, agreement with the parser's own start times and
 * critical path, so the page marks the path the planner minimised.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dag.h"
#include "plan.h"

#define LEAF -1

static void test_a_chain_and_a_fork(void **state)
{
    (void)state;
    /* (a*b) + c: the product, then the sum. */
    dag_node chain[] = {{{LEAF, LEAF}, 300, 0, 0}, {{0, LEAF}, 100, 0, 0}};
    int64_t finish = -1;
    assert_int_equal(dag_time(chain, 2, &finish), DAG_OK);
    assert_int_equal(finish, 400);
    assert_int_equal(chain[1].start_ms, 300);
    assert_true(chain[0].critical && chain[1].critical);

    /* (a+b) * (c/d): the division is longer, so only it and the root are critical. */
    dag_node fork[] = {{{LEAF, LEAF}, 100, 0, 0}, {{LEAF, LEAF}, 500, 0, 0}, {{0, 1}, 200, 0, 0}};
    assert_int_equal(dag_time(fork, 3, &finish), DAG_OK);
    assert_int_equal(finish, 700);
    assert_int_equal(fork[2].start_ms, 500);
    assert_false(fork[0].critical);
    assert_true(fork[1].critical && fork[2].critical);

    /* A tie marks both paths. */
    fork[0].delay_ms = 500;
    assert_int_equal(dag_time(fork, 3, &finish), DAG_OK);
    assert_true(fork[0].critical && fork[1].critical && fork[2].critical);

    /* Nothing at all. */
    assert_int_equal(dag_time(NULL, 0, &finish), DAG_OK);
    assert_int_equal(finish, 0);
}

static void test_a_malformed_graph_is_refused_and_marks_nothing(void **state)
{
    (void)state;
    int64_t finish;
    /* A child after its parent. */
    dag_node later[] = {{{1, LEAF}, 1, 0, 0}, {{LEAF, LEAF}, 1, 0, 0}};
    assert_int_equal(dag_time(later, 2, &finish), DAG_ERR);
    assert_false(later[0].critical || later[1].critical);
    /* A node that is its own child. */
    dag_node self[] = {{{0, LEAF}, 1, 0, 0}};
    assert_int_equal(dag_time(self, 1, &finish), DAG_ERR);
    /* A child with two parents. */
    dag_node shared[] = {{{LEAF, LEAF}, 1, 0, 0}, {{0, LEAF}, 1, 0, 0}, {{0, 1}, 1, 0, 0}};
    assert_int_equal(dag_time(shared, 3, &finish), DAG_ERR);
    assert_false(shared[0].critical || shared[1].critical || shared[2].critical);
}

/* A random expression of about n operators with parentheses: the caller frees it. */
static char *random_text(unsigned *seed, int n)
{
    size_t cap = (size_t)n * 16 + 16, len = 0;
    char *s = malloc(cap);
    int open = 0;
    for (int i = 0; i <= n; i++) {
        if (i < n && rand_r(seed) % 4 == 0) {
            s[len++] = '(';
            open++;
        }
        len += (size_t)snprintf(s + len, cap - len, "%d", 1 + rand_r(seed) % 9);
        while (open && rand_r(seed) % 3 == 0) {
            s[len++] = ')';
            open--;
        }
        if (i < n)
            s[len++] = "+-*/"[rand_r(seed) % 4];
    }
    while (open--)
        s[len++] = ')';
    s[len] = '\0';
    return s;
}

static void test_agrees_with_the_planner(void **state)
{
    (void)state;
    unsigned seed = 18;
    for (int round = 0; round < 2000; round++) {
        plan_durations dur;
        for (int op = 0; op < PLAN_NOPS; op++)
            dur.ms[op] = (uint32_t)(rand_r(&seed) % 4 * 100);
        char *text = random_text(&seed, 1 + rand_r(&seed) % 30);
        plan *p = NULL;
        plan_error err;
        if (plan_build(text, strlen(text), NULL, &dur, round % 2, &p, &err) != PLAN_OK)
            fail_msg("'%s': %s at %zu", text, err.message, err.position);
        size_t n = p->n_nodes;
        dag_node *t = calloc(n + 1, sizeof *t);
        for (size_t i = 0; i < n; i++) {
            t[i].child[0] = p->nodes[i].left.is_node ? p->nodes[i].left.node : LEAF;
            t[i].child[1] = p->nodes[i].right.is_node ? p->nodes[i].right.node : LEAF;
            t[i].delay_ms = dur.ms[p->nodes[i].op];
        }
        int64_t finish = -1;
        assert_int_equal(dag_time(t, n, &finish), DAG_OK);
        assert_int_equal(finish, p->critical_path_ms);
        for (size_t i = 0; i < n; i++) {
            assert_int_equal(t[i].start_ms, p->nodes[i].start_ms);
            /* On a longest path exactly when its start plus what remains from it is the whole. */
            assert_int_equal(t[i].critical,
                             p->nodes[i].start_ms + p->nodes[i].tail_ms == p->critical_path_ms);
        }
        if (n)
            assert_true(t[n - 1].critical); /* the root always is */
        free(t);
        plan_free(p);
        free(text);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_chain_and_a_fork),
        cmocka_unit_test(test_a_malformed_graph_is_refused_and_marks_nothing),
        cmocka_unit_test(test_agrees_with_the_planner),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
