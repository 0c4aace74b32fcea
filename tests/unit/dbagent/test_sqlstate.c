/* The one table from a PostgreSQL SQLSTATE to the gRPC status a dbagent call answers with. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "rpc.h"
#include "sqlstate.h"

static void test_whole_codes_before_their_class(void **state)
{
    (void)state;
    assert_int_equal(sqlstate_rpc_code("23505"), RPC_ALREADY_EXISTS);    /* unique_violation */
    assert_int_equal(sqlstate_rpc_code("23503"), RPC_NOT_FOUND);         /* foreign_key_violation */
    assert_int_equal(sqlstate_rpc_code("23514"), RPC_INVALID_ARGUMENT);  /* check_violation */
    assert_int_equal(sqlstate_rpc_code("57014"), RPC_DEADLINE_EXCEEDED); /* query_canceled */
    assert_int_equal(sqlstate_rpc_code("57P01"), RPC_UNAVAILABLE);       /* admin_shutdown */
    assert_int_equal(sqlstate_rpc_code("57P03"), RPC_UNAVAILABLE);       /* cannot_connect_now */
    /* calc_list_events: events below the reader's place were deleted */
    assert_int_equal(sqlstate_rpc_code("CL410"), RPC_OUT_OF_RANGE);
}

static void test_classes(void **state)
{
    (void)state;
    assert_int_equal(sqlstate_rpc_code("08006"), RPC_UNAVAILABLE);      /* connection_failure */
    assert_int_equal(sqlstate_rpc_code("22012"), RPC_INVALID_ARGUMENT); /* division_by_zero */
    assert_int_equal(sqlstate_rpc_code("22P02"), RPC_INVALID_ARGUMENT); /* bad text form */
    assert_int_equal(sqlstate_rpc_code("40001"), RPC_ABORTED);          /* serialization_failure */
    assert_int_equal(sqlstate_rpc_code("40P01"), RPC_ABORTED);          /* deadlock_detected */
}

static void test_no_code_and_unlisted_codes(void **state)
{
    (void)state;
    assert_int_equal(sqlstate_rpc_code(NULL), RPC_UNAVAILABLE);
    assert_int_equal(sqlstate_rpc_code("42P01"), RPC_INTERNAL); /* undefined_table */
    assert_int_equal(sqlstate_rpc_code("XX000"), RPC_INTERNAL);
    assert_int_equal(sqlstate_rpc_code(""), RPC_INTERNAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_whole_codes_before_their_class),
        cmocka_unit_test(test_classes),
        cmocka_unit_test(test_no_code_and_unlisted_codes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
