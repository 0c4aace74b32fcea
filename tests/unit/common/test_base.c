/* Unit tests of calc_base: the allocation policy (common/mem) and number text (common/numfmt). */
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "mem.h"
#include "numfmt.h"

static const char *fmt(double v)
{
    static char b[NUMFMT_DOUBLE_LEN];
    return numfmt_double(b, sizeof b, v);
}

static void numbers_take_the_shortest_text_that_reads_back(void **state)
{
    (void)state;
    assert_string_equal(fmt(6), "6");
    assert_string_equal(fmt(-2.5), "-2.5");
    assert_string_equal(fmt(0.1), "0.1");
    assert_string_equal(fmt(0.1 + 0.2), "0.30000000000000004");
    assert_string_equal(fmt(1e300), "1e+300");
    assert_string_equal(fmt(-0.0), "-0");
    assert_string_equal(fmt(123456789012345.0), "123456789012345");
    assert_string_equal(fmt(1e15), "1e+15");
    assert_string_equal(fmt(INFINITY), "inf");
    assert_string_equal(fmt(-INFINITY), "-inf");
    double hard[] = {1.0 / 3, 2.0 / 3, 5e-324, 1.7976931348623157e308, 9007199254740993.0, M_PI};
    for (size_t i = 0; i < sizeof hard / sizeof hard[0]; i++)
        assert_true(strtod(fmt(hard[i]), NULL) == hard[i]);
    /* Integers below 1e15 read as plain digits, as %.0f writes them. */
    char want[64];
    for (double v = 1; v < 1e15; v = v * 7 + 3) {
        snprintf(want, sizeof want, "%.0f", v);
        assert_string_equal(fmt(v), want);
    }
}

static void numbers_fit_the_documented_room(void **state)
{
    (void)state;
    char b[NUMFMT_DOUBLE_LEN];
    assert_true(strlen(numfmt_double(b, sizeof b, -2.2250738585072014e-308)) < sizeof b);
    assert_true(strlen(numfmt_double(b, sizeof b, -1.2345678901234567e-300)) < sizeof b);
}

static void arrays_are_allocated_and_grown(void **state)
{
    (void)state;
    int *a = xmallocarray(4, sizeof *a);
    for (int i = 0; i < 4; i++)
        a[i] = i;
    a = xreallocarray(a, 1000, sizeof *a);
    assert_int_equal(a[3], 3);
    a[999] = 999;
    free(a);
    free(xmallocarray(0, 8)); /* never NULL, even for nothing */
    char *s = xasprintf("%s-%d", "node", 7);
    assert_string_equal(s, "node-7");
    free(s);
    s = xstrndup("abcdef", 3);
    assert_string_equal(s, "abc");
    free(s);
}

/* Runs f in a child: the allocation policy aborts rather than return a short buffer. */
static int aborts(void (*f)(void))
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        fclose(stderr); /* the expected message is noise here */
        f();
        _exit(0);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    return WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT;
}

static void overflow_malloc(void)
{
    free(xmallocarray(SIZE_MAX / 2, 3));
}

static void overflow_realloc(void)
{
    free(xreallocarray(NULL, 3, SIZE_MAX / 2));
}

static void an_overflowing_size_aborts(void **state)
{
    (void)state;
    assert_true(aborts(overflow_malloc));
    assert_true(aborts(overflow_realloc));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(numbers_take_the_shortest_text_that_reads_back),
        cmocka_unit_test(numbers_fit_the_documented_room),
        cmocka_unit_test(arrays_are_allocated_and_grown),
        cmocka_unit_test(an_overflowing_size_aborts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
