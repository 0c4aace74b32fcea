/* Plan shapes: node count, depth, critical path, tails, the choice between the reassociated
 * and the source-order plan, and unary minus folding. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "plan.h"
#include "plan_check.h"

static plan_durations durations(uint32_t add, uint32_t sub, uint32_t mul, uint32_t div)
{
    plan_durations d = {{add, sub, mul, div}};

    return d;
}

/* Builds text and checks every invariant; the test fails on a parse error. */
static plan *build(const char *text, const plan_durations *d, int source_order)
{
    plan_limits lim = {.max_text = 1 << 20, .max_nodes = 1 << 16, .max_depth = 1000};
    plan *p = NULL;
    plan_error err;

    if (plan_build(text, strlen(text), &lim, d, source_order, &p, &err) != PLAN_OK)
        fail_msg("'%s': error at %zu: %s", text, err.position, err.message);
    check_plan(p, d, text);
    return p;
}

/* "1+2+...+n" or with another operator; the caller frees. */
static char *chain(int n, const char *op)
{
    char *s = malloc((size_t)n * 8 + 1);
    size_t len = 0;

    for (int i = 1; i <= n; i++)
        len += (size_t)sprintf(s + len, "%s%d", i > 1 ? op : "", i);
    return s;
}

static void test_lone_number(void **state)
{
    plan_durations d = durations(1000, 1000, 1000, 1000);
    plan *p = build("(-(2.5))", &d, 0);

    (void)state;
    assert_int_equal(p->n_nodes, 0);
    assert_int_equal(p->depth, 0);
    assert_int_equal(p->critical_path_ms, 0);
    assert_true(p->value == -2.5 && plan_eval(p) == -2.5);
    plan_free(p);
}

static void test_sum_of_64_terms(void **state)
{
    plan_durations d = durations(1000, 1000, 1000, 1000);
    char *text = chain(64, "+");
    plan *p = build(text, &d, 0), *s = build(text, &d, 1);

    (void)state;
    assert_int_equal(p->n_nodes, 63);
    assert_int_equal(p->depth, 6);
    assert_int_equal(p->critical_path_ms, 6000);
    assert_int_equal(p->source_critical_path_ms, 63000);
    assert_true(p->reassociated);
    assert_true(plan_eval(p) == 2080);
    /* the option keeps the text's order */
    assert_int_equal(s->n_nodes, 63);
    assert_int_equal(s->depth, 63);
    assert_int_equal(s->critical_path_ms, 63000);
    assert_false(s->reassociated);
    assert_true(plan_eval(s) == 2080);
    /* the first node in source order is 1+2 and the root is last */
    assert_true(s->nodes[0].left.value == 1 && s->nodes[0].right.value == 2);
    assert_int_equal(s->nodes[62].parent, -1);
    /* tails: the deepest node of the chain carries the whole path */
    assert_int_equal(s->nodes[0].tail_ms, 63000);
    assert_int_equal(s->nodes[62].tail_ms, 1000);
    assert_int_equal(p->nodes[0].tail_ms, 6000);
    plan_free(p);
    plan_free(s);
    free(text);
}

static void test_products(void **state)
{
    plan_durations d = durations(1000, 1000, 1000, 1000);
    plan *p = build("2*3*4*5/6/7/8/9", &d, 0);

    (void)state;
    /* (2*3*4*5) / (6*7*8*9): two balanced products and one division */
    assert_int_equal(p->n_nodes, 7);
    assert_int_equal(p->depth, 3);
    assert_int_equal(p->critical_path_ms, 3000);
    assert_int_equal(p->source_critical_path_ms, 7000);
    assert_int_equal(p->nodes[6].op, PLAN_DIV);
    assert_true(fabs(plan_eval(p) - 120.0 / 3024.0) < 1e-15);
    plan_free(p);
    /* a/(b/c) flattens to (a*c)/b */
    p = build("(1*2)/(3/(4*5))", &d, 0);
    assert_int_equal(p->n_nodes, 4);
    assert_true(fabs(plan_eval(p) - 2.0 / (3.0 / 20.0)) < 1e-12);
    plan_free(p);
}

static void test_ready_times(void **state)
{
    plan_durations d = durations(1000, 1000, 1000, 1000);
    /* the sum is ready at 3000; 9*10 is joined first, while the sum is still running */
    plan *p = build("(1+2+3+4+5+6+7+8)*9*10", &d, 0);

    (void)state;
    assert_int_equal(p->n_nodes, 9);
    assert_int_equal(p->critical_path_ms, 4000);
    assert_int_equal(p->source_critical_path_ms, 9000);
    assert_true(plan_eval(p) == 3240);
    plan_free(p);
}

static void test_durations_decide(void **state)
{
    plan_durations slow_sub = durations(1000, 5000, 1000, 1000);
    plan_durations cheap_sub = durations(10000, 1, 1000, 1000);
    plan_durations slow_div = durations(1000, 1000, 1000, 10000);
    plan *p;

    (void)state;
    /* 1 - (2+3+4+5+6): one slow subtraction instead of five */
    p = build("1-2-3-4-5-6", &slow_sub, 0);
    assert_true(p->reassociated);
    assert_int_equal(p->critical_path_ms, 3000 + 5000);
    assert_int_equal(p->source_critical_path_ms, 25000);
    assert_true(plan_eval(p) == -19);
    plan_free(p);
    /* with '+' this slow the sum would lose: the source order is kept */
    p = build("1-2-3-4", &cheap_sub, 0);
    assert_false(p->reassociated);
    assert_int_equal(p->critical_path_ms, 3);
    plan_free(p);
    /* a / (b*c*d): one slow division */
    p = build("1/2/3/4", &slow_div, 0);
    assert_true(p->reassociated);
    assert_int_equal(p->critical_path_ms, 2000 + 10000);
    plan_free(p);
}

static void test_source_kept_when_not_worse(void **state)
{
    plan_durations d = durations(1000, 1000, 1000, 1000);
    plan_durations zero = durations(0, 0, 0, 0);
    char *text = chain(16, "+");
    plan *p;

    (void)state;
    p = build("(1+2)+(3+4)", &d, 0);
    assert_false(p->reassociated);
    assert_int_equal(p->critical_path_ms, 2000);
    plan_free(p);
    p = build("1+2", &d, 0);
    assert_false(p->reassociated);
    plan_free(p);
    /* with free operators nothing finishes sooner, so nothing moves */
    p = build(text, &zero, 0);
    assert_false(p->reassociated);
    assert_int_equal(p->critical_path_ms, 0);
    assert_int_equal(p->depth, 15);
    plan_free(p);
    free(text);
}

static void test_unary_folding(void **state)
{
    static const struct {
        const char *text;
        size_t nodes;
        double value;
    } cases[] = {
        {"-(1+2)", 1, -3},
        {"-(1-2)", 1, 1},
        {"-(2*3)", 1, -6},
        {"-(2*(3+4))", 2, -14},
        {"2*-(3+4)", 2, -14},
        {"-(1+2+3+4)", 3, -10},
        {"-1-2-3-4", 3, -10},
        {"-(1*2)-(3*4)-(5*6)", 5, -44},
        {"-((1+2)*(3+4))-((5+6)*(7+8))", 7, -186},
        {"-(-(1+2)*-(3+4))", 3, -21},
        {"-(1+2)/-(3+4)*-(5+6)", 5, -33.0 / 7.0},
        {"0-(-(1-2)-(3-4))", 4, -2},
    };
    plan_durations d = durations(1000, 1000, 1000, 1000);

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        for (int so = 0; so < 2; so++) {
            plan *p = build(cases[i].text, &d, so);

            if (p->n_nodes != cases[i].nodes ||
                fabs(plan_eval(p) - cases[i].value) > 1e-12 * fabs(cases[i].value))
                fail_msg("'%s' (source order %d): %zu nodes, value %.17g; want %zu, %.17g",
                         cases[i].text, so, p->n_nodes, plan_eval(p), cases[i].nodes,
                         cases[i].value);
            plan_free(p);
        }
    }
}

static void test_children_before_parents(void **state)
{
    plan_durations d = durations(700, 1300, 2100, 3900);
    const char *text = "((1+2)*(3-4)/(5+6*7) - 8/(9-10)*11) * (12+13+14-15) / -(16*17-18)";
    plan *p = build(text, &d, 0), *s = build(text, &d, 1);

    (void)state;
    /* check_plan already verified order and links; here both plans agree on the count */
    assert_int_equal(p->n_nodes, 17);
    assert_int_equal(s->n_nodes, 17);
    assert_true(p->critical_path_ms <= s->critical_path_ms);
    assert_int_equal(p->source_critical_path_ms, s->critical_path_ms);
    assert_true(fabs(plan_eval(p) - plan_eval(s)) <= 1e-12 * fabs(plan_eval(s)));
    plan_free(p);
    plan_free(s);
}

static void test_deterministic(void **state)
{
    plan_durations d = durations(1000, 2000, 3000, 4000);
    const char *text = "1+2*3-4/5+6*7*8-9+10/11/12-13";
    plan *a = build(text, &d, 0), *b = build(text, &d, 0);

    (void)state;
    assert_int_equal(a->n_nodes, b->n_nodes);
    assert_memory_equal(a->nodes, b->nodes, a->n_nodes * sizeof *a->nodes);
    plan_free(a);
    plan_free(b);
}

static void test_null_arguments(void **state)
{
    plan *p = NULL;
    plan_error err;

    (void)state;
    /* default limits and 1000 ms for every operator */
    assert_int_equal(plan_build("1+2+3+4", 7, NULL, NULL, 0, &p, &err), PLAN_OK);
    assert_int_equal(p->critical_path_ms, 2000);
    plan_free(p);
    plan_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lone_number),      cmocka_unit_test(test_sum_of_64_terms),
        cmocka_unit_test(test_products),         cmocka_unit_test(test_ready_times),
        cmocka_unit_test(test_durations_decide), cmocka_unit_test(test_source_kept_when_not_worse),
        cmocka_unit_test(test_unary_folding),    cmocka_unit_test(test_children_before_parents),
        cmocka_unit_test(test_deterministic),    cmocka_unit_test(test_null_arguments),
    };

    return cmocka_run_group_tests_name("parser_plan", tests, NULL, NULL);
}
