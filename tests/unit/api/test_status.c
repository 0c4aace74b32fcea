/* The one table from a dbagent status code to the HTTP status the API answers with. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "dba.h"

static void test_failures_a_client_can_act_on(void **state)
{
    (void)state;
    assert_int_equal(dba_http_status(RPC_INVALID_ARGUMENT), 400);
    assert_int_equal(dba_http_status(RPC_NOT_FOUND), 404);
    assert_int_equal(dba_http_status(RPC_ALREADY_EXISTS), 409);
    assert_int_equal(dba_http_status(RPC_FAILED_PRECONDITION), 409);
    assert_int_equal(dba_http_status(RPC_RESOURCE_EXHAUSTED), 429);
}

static void test_everything_else_is_unavailable(void **state)
{
    (void)state;
    const int others[] = {
        RPC_CANCELLED,     RPC_UNKNOWN,  RPC_DEADLINE_EXCEEDED, RPC_PERMISSION_DENIED, RPC_ABORTED,
        RPC_UNIMPLEMENTED, RPC_INTERNAL, RPC_UNAVAILABLE,       RPC_UNAUTHENTICATED,   99};
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++)
        assert_int_equal(dba_http_status(others[i]), 503);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_failures_a_client_can_act_on),
        cmocka_unit_test(test_everything_else_is_unavailable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
