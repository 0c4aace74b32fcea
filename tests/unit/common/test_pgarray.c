/* Unit tests of common/pgarray: the text form of PostgreSQL array parameters. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "pgarray.h"

static void an_empty_array_is_braces(void **state)
{
    (void)state;
    pgarray a;
    pgarray_init(&a);
    assert_string_equal(pgarray_text(&a), "{}");
    assert_string_equal(pgarray_text(&a), "{}"); /* closing twice changes nothing */
    pgarray_free(&a);
}

static void numbers_and_nulls(void **state)
{
    (void)state;
    pgarray a;
    pgarray_init(&a);
    pgarray_i64(&a, 1);
    pgarray_null(&a);
    pgarray_i64(&a, INT64_MIN);
    pgarray_f64(&a, 0.1 + 0.2);
    pgarray_f64(&a, -2.5);
    pgarray_bool(&a, 1);
    pgarray_bool(&a, 0);
    assert_string_equal(pgarray_text(&a),
                        "{1,NULL,-9223372036854775808,0.30000000000000004,-2.5,t,f}");
    assert_int_equal(a.n, 7);
    pgarray_free(&a);

    int64_t v[] = {3, 2, 1};
    pgarray_init(&a);
    pgarray_i64s(&a, v, 3);
    assert_string_equal(pgarray_text(&a), "{3,2,1}");
    pgarray_free(&a);
}

static void strings_are_quoted_and_escaped(void **state)
{
    (void)state;
    pgarray a;
    pgarray_init(&a);
    pgarray_str(&a, "+");
    pgarray_str(&a, "say \"hi\" \\ bye");
    pgarray_str(&a, NULL);
    pgarray_str(&a, "");
    pgarray_str(&a, "NULL"); /* quoted: the string, not a SQL NULL */
    assert_string_equal(pgarray_text(&a), "{\"+\",\"say \\\"hi\\\" \\\\ bye\",NULL,\"\",\"NULL\"}");
    pgarray_free(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(an_empty_array_is_braces),
        cmocka_unit_test(numbers_and_nulls),
        cmocka_unit_test(strings_are_quoted_and_escaped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
