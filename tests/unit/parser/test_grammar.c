/* Grammar: which texts are expressions, their values, and the exact error for those that are
 * not (position and message, since users and the API tests read both). */
#include <float.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "plan.h"

typedef struct valid_case {
    const char *text;
    double value;
    size_t nodes;
} valid_case;

typedef struct invalid_case {
    const char *text;
    size_t position;
    const char *message;
} invalid_case;

static const valid_case valid[] = {
    {"1", 1, 0},
    {"1.5", 1.5, 0},
    {".5", 0.5, 0},
    {"5.", 5, 0},
    {"1e3", 1000, 0},
    {"2.5E-3", 2.5e-3, 0},
    {"1E+2", 100, 0},
    {"007", 7, 0},
    {"5", 5, 0},
    {"(-5)", -5, 0},
    {"((((5))))", 5, 0},
    {"-5", -5, 0},
    {"+5", 5, 0},
    {"--5", 5, 0},
    {"- - -5", -5, 0},
    {"-(-(5))", 5, 0},
    {"1e-400", 0, 0}, /* underflow is a representable number, only overflow is an error */
    {"1.7976931348623157e308", DBL_MAX, 0},
    {"2+3", 5, 1},
    {"2-3", -1, 1},
    {"2*3", 6, 1},
    {"7/2", 3.5, 1},
    {"2+3*4", 14, 2},
    {"(2+3)*4", 20, 2},
    {"2*3+4", 10, 2},
    {"10-4-3", 3, 2},
    {"100/10/5", 2, 2},
    {"2-(3-4)", 3, 2},
    {"2/(4/8)", 4, 2},
    {"2*-3", -6, 1},
    {"2--3", 5, 1},
    {"2+-3", -1, 1},
    {"2-+3", -1, 1},
    {"2*+3", 6, 1},
    {"-(1+2)", -3, 1},
    {"-(1-2)", 1, 1},
    {"-(2*3)", -6, 1},
    {"-(6/3)", -2, 1},
    {"-(1+2)*-(3+4)", 21, 3},
    {"-(-(1+2))", 3, 1},
    {"-1-2-3", -6, 2},
    {"-(1*2)-(3*4)", -14, 3},
    {" \t\n\r2 \t\n\r+ \t\n\r3 \t\n\r", 5, 1},
    {"( 2 + 3 ) * ( 4 - 1 )", 15, 3},
    {"1/0", INFINITY, 1},
    {"1.5e1*2", 30, 1},
    {"((1+2)*(3+4))/((5-6)*(7+8))", -1.4, 7},
};

static const invalid_case invalid[] = {
    {"2+", 3, "expected a number or '('"},
    {"(2+3", 5, "missing ')' for '(' at position 1"},
    {"((2+3)", 7, "missing ')' for '(' at position 1"},
    {"(1+(2+3", 8, "missing ')' for '(' at position 4"},
    {"2 3", 3, "expected an operator"},
    {"(2 3)", 4, "expected an operator or ')'"},
    {"", 1, "empty expression"},
    {"   \t\n", 1, "empty expression"},
    {"+", 2, "expected a number or '('"},
    {"-", 2, "expected a number or '('"},
    {"*2", 1, "expected a number or '('"},
    {"2**3", 3, "expected a number or '('"},
    {"2*/3", 3, "expected a number or '('"},
    {"()", 2, "expected a number or '('"},
    {"2)", 2, "')' without a matching '('"},
    {"(2))", 4, "')' without a matching '('"},
    {")", 1, "expected a number or '('"},
    {"2(3)", 2, "expected an operator"},
    {"(2)(3)", 4, "expected an operator"},
    {"0x10", 2, "expected an operator"},
    {"inf", 1, "expected a number or '('"},
    {"nan", 1, "expected a number or '('"},
    {"-inf", 2, "expected a number or '('"},
    {"1,5", 2, "expected an operator"},
    {"abc", 1, "expected a number or '('"},
    {"2+x", 3, "expected a number or '('"},
    {"2x", 2, "expected an operator"},
    {".", 1, "expected a number or '('"},
    {"1..2", 3, "expected an operator"},
    {"1.2.3", 4, "expected an operator"},
    {"1e", 3, "expected a digit in the exponent"},
    {"1e+", 4, "expected a digit in the exponent"},
    {"2.5E-x", 6, "expected a digit in the exponent"},
    {"1e5e5", 4, "expected an operator"},
    {"1e309", 1, "number out of the double range"},
    {"2+-1e999", 4, "number out of the double range"},
    {"2\v+3", 2, "invalid byte 0x0B"},
    {"2\f", 2, "invalid byte 0x0C"},
    {"2+\x7f", 3, "invalid byte 0x7F"},
    {"2+\xc3\xa9", 3, "invalid byte 0xC3"},
    {"1\xc2\xa0+2", 2, "invalid byte 0xC2"}, /* a non-breaking space */
};

static int build(const char *text, size_t len, const plan_limits *lim, plan **p, plan_error *err)
{
    plan_durations d;

    plan_durations_uniform(&d, 1000);
    memset(err, 0, sizeof *err);
    return plan_build(text, len, lim, &d, 0, p, err);
}

static void test_valid(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof valid / sizeof valid[0]; i++) {
        const valid_case *c = &valid[i];
        plan *p = NULL;
        plan_error err;
        int rc = build(c->text, strlen(c->text), NULL, &p, &err);

        if (rc != PLAN_OK)
            fail_msg("'%s': unexpected error at %zu: %s", c->text, err.position, err.message);
        assert_int_equal(p->n_nodes, c->nodes);
        if (!(plan_eval(p) == c->value || fabs(plan_eval(p) - c->value) <= 1e-12 * fabs(c->value)))
            fail_msg("'%s': value %.17g, want %.17g", c->text, plan_eval(p), c->value);
        if (c->nodes == 0)
            assert_true(p->value == c->value);
        plan_free(p);
    }
}

static void test_invalid(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof invalid / sizeof invalid[0]; i++) {
        const invalid_case *c = &invalid[i];
        plan *p = (plan *)&p; /* must come back NULL */
        plan_error err;
        int rc = build(c->text, strlen(c->text), NULL, &p, &err);

        if (rc != PLAN_ERR)
            fail_msg("'%s': accepted", c->text);
        assert_null(p);
        if (err.position != c->position || strcmp(err.message, c->message) != 0)
            fail_msg("'%s': got %zu \"%s\", want %zu \"%s\"", c->text, err.position, err.message,
                     c->position, c->message);
    }
}

/* A NUL is a byte like any other to plan_build, which takes a length. */
static void test_nul_byte(void **state)
{
    plan *p = NULL;
    plan_error err;

    (void)state;
    assert_int_equal(build("2+\0"
                           "3",
                           4, NULL, &p, &err),
                     PLAN_ERR);
    assert_int_equal(err.position, 3);
    assert_string_equal(err.message, "invalid byte 0x00");
    /* and the text need not be terminated: only len bytes are read */
    assert_int_equal(build("2+3+4", 3, NULL, &p, &err), PLAN_OK);
    assert_true(plan_eval(p) == 5);
    plan_free(p);
}

static void test_limit_text(void **state)
{
    plan_limits lim;
    plan *p = NULL;
    plan_error err;
    char *big = malloc(4097);

    (void)state;
    plan_limits_default(&lim);
    assert_int_equal(lim.max_text, 4096);
    assert_int_equal(lim.max_nodes, 1000);
    assert_int_equal(lim.max_depth, 100);
    /* 4096 bytes: a long literal padded with spaces is fine, one more byte is not */
    memset(big, ' ', 4097);
    big[0] = '1';
    assert_int_equal(build(big, 4096, NULL, &p, &err), PLAN_OK);
    plan_free(p);
    assert_int_equal(build(big, 4097, NULL, &p, &err), PLAN_ERR);
    assert_int_equal(err.position, 4097);
    assert_string_equal(err.message, "expression too long: 4097 bytes (limit 4096)");
    lim.max_text = 3;
    assert_int_equal(build("1+2", 3, &lim, &p, &err), PLAN_OK);
    plan_free(p);
    assert_int_equal(build("1+23", 4, &lim, &p, &err), PLAN_ERR);
    assert_string_equal(err.message, "expression too long: 4 bytes (limit 3)");
    free(big);
}

static void test_limit_nodes(void **state)
{
    plan_limits lim;
    plan *p = NULL;
    plan_error err;

    (void)state;
    plan_limits_default(&lim);
    lim.max_nodes = 3;
    /* unary signs and parentheses cost no node */
    assert_int_equal(build("-(1+-2)*(3--4)", 14, &lim, &p, &err), PLAN_OK);
    assert_int_equal(p->n_nodes, 3);
    plan_free(p);
    assert_int_equal(build("1+2+3+4+5", 9, &lim, &p, &err), PLAN_ERR);
    assert_int_equal(err.position, 8);
    assert_string_equal(err.message, "too many operations (limit 3)");
    lim.max_nodes = 0;
    assert_int_equal(build("7", 1, &lim, &p, &err), PLAN_OK);
    plan_free(p);
    assert_int_equal(build("7*1", 3, &lim, &p, &err), PLAN_ERR);
    assert_string_equal(err.message, "too many operations (limit 0)");
}

static void test_limit_nodes_default(void **state)
{
    char *text = malloc(4096);
    size_t n = 0;
    plan *p = NULL;
    plan_error err;

    (void)state;
    for (int i = 0; i < 1002; i++) /* "1+1+...": 1001 operators in 2003 bytes */
        n += (size_t)snprintf(text + n, 4096 - n, "%s1", i ? "+" : "");
    assert_int_equal(build(text, n, NULL, &p, &err), PLAN_ERR);
    assert_int_equal(err.position, 2002);
    assert_string_equal(err.message, "too many operations (limit 1000)");
    /* 1000 operators is fine */
    assert_int_equal(build(text, n - 2, NULL, &p, &err), PLAN_OK);
    assert_int_equal(p->n_nodes, 1000);
    plan_free(p);
    free(text);
}

static void test_limit_depth(void **state)
{
    char text[512];
    plan_limits lim;
    plan *p = NULL;
    plan_error err;
    size_t n = 0;

    (void)state;
    for (int i = 0; i < 101; i++)
        text[n++] = '(';
    text[n++] = '1';
    for (int i = 0; i < 101; i++)
        text[n++] = ')';
    assert_int_equal(build(text, n, NULL, &p, &err), PLAN_ERR);
    assert_int_equal(err.position, 101);
    assert_string_equal(err.message, "parentheses nested too deeply (limit 100)");
    /* 100 levels are fine, and so are many levels that are not nested */
    assert_int_equal(build(text + 1, n - 2, NULL, &p, &err), PLAN_OK);
    plan_free(p);
    plan_limits_default(&lim);
    lim.max_depth = 1;
    assert_int_equal(build("(1)+(2)*(3)", 11, &lim, &p, &err), PLAN_OK);
    plan_free(p);
    assert_int_equal(build("(1)+((2))", 9, &lim, &p, &err), PLAN_ERR);
    assert_int_equal(err.position, 6);
    assert_string_equal(err.message, "parentheses nested too deeply (limit 1)");
    lim.max_depth = 0;
    assert_int_equal(build("(1)", 3, &lim, &p, &err), PLAN_ERR);
    assert_string_equal(err.message, "parentheses nested too deeply (limit 0)");
}

/* Nothing recurses on the C stack, so a nesting far beyond the default limit is only a
 * matter of the limit: 100000 levels alternating sums and products (the planner's deepest
 * case) plan under ASan too, and the text's own limit is then the only bound. */
static void test_deep_nesting(void **state)
{
    size_t levels = 100000, n = 0, i;
    char *text = malloc(5 * levels + 16);
    plan_limits lim = {.max_text = 1 << 20, .max_nodes = 1 << 20, .max_depth = (size_t)-1};
    plan *p = NULL;
    plan_error err;

    (void)state;
    /* 1+(1*-(1+(1*-(...)))) */
    for (i = 0; i < levels; i++) {
        memcpy(text + n, i % 2 ? "1*-(" : "1+(", i % 2 ? 4 : 3);
        n += i % 2 ? 4 : 3;
    }
    text[n++] = '1';
    for (i = 0; i < levels; i++)
        text[n++] = ')';
    assert_int_equal(build(text, n, &lim, &p, &err), PLAN_OK);
    assert_int_equal(p->n_nodes, levels);
    assert_int_equal(p->depth, levels);
    plan_free(p);
    lim.max_depth = levels - 1;
    assert_int_equal(build(text, n, &lim, &p, &err), PLAN_ERR);
    assert_string_equal(err.message, "parentheses nested too deeply (limit 99999)");
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),       cmocka_unit_test(test_invalid),
        cmocka_unit_test(test_nul_byte),    cmocka_unit_test(test_limit_text),
        cmocka_unit_test(test_limit_nodes), cmocka_unit_test(test_limit_nodes_default),
        cmocka_unit_test(test_limit_depth), cmocka_unit_test(test_deep_nesting),
    };

    return cmocka_run_group_tests_name("parser_grammar", tests, NULL, NULL);
}
