/* worker_compute: the arithmetic in double precision, and the errors that fail a node. */
#include <float.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "worker.h"

static double ok(const char *op, double l, double r)
{
    double out = NAN;
    const char *err = NULL;
    assert_int_equal(worker_compute(op, l, r, &out, &err), 0);
    assert_null(err);
    return out;
}

static const char *fails(const char *op, double l, double r)
{
    double out = 12345;
    const char *err = NULL;
    assert_int_equal(worker_compute(op, l, r, &out, &err), -1);
    assert_non_null(err);
    assert_true(out == 12345); /* untouched */
    return err;
}

static void test_operators(void **state)
{
    (void)state;
    assert_true(ok("+", 2, 2) == 4);
    assert_true(ok("-", 2, 5) == -3);
    assert_true(ok("*", 2.5, 4) == 10);
    assert_true(ok("/", 1, 4) == 0.25);
    assert_true(ok("+", 0.1, 0.2) == 0.1 + 0.2); /* double precision, no rounding of ours */
    assert_true(ok("/", 0, 5) == 0);
    assert_true(ok("*", -0.0, 5) == 0);
}

static void test_division_by_zero(void **state)
{
    (void)state;
    assert_string_equal(fails("/", 1, 0), "division by zero");
    assert_string_equal(fails("/", 0, 0), "division by zero");
    assert_string_equal(fails("/", 1, -0.0), "division by zero");
}

static void test_non_finite(void **state)
{
    (void)state;
    assert_string_equal(fails("*", DBL_MAX, 2), "the result is not a finite number");
    assert_string_equal(fails("+", DBL_MAX, DBL_MAX), "the result is not a finite number");
    assert_string_equal(fails("-", -DBL_MAX, DBL_MAX), "the result is not a finite number");
    assert_string_equal(fails("/", DBL_MAX, 1e-300), "the result is not a finite number");
    assert_string_equal(fails("+", INFINITY, 1), "the result is not a finite number");
    assert_string_equal(fails("*", NAN, 1), "the result is not a finite number");
    /* Underflow to zero is a finite result. */
    assert_true(ok("*", 1e-300, 1e-300) == 0);
}

static void test_unknown_operator(void **state)
{
    (void)state;
    assert_string_equal(fails("%", 1, 2), "unknown operator");
    assert_string_equal(fails("", 1, 2), "unknown operator");
    assert_string_equal(fails("++", 1, 2), "unknown operator");
    assert_string_equal(fails(NULL, 1, 2), "unknown operator");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_operators),
        cmocka_unit_test(test_division_by_zero),
        cmocka_unit_test(test_non_finite),
        cmocka_unit_test(test_unknown_operator),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
