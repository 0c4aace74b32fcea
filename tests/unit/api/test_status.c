/* The one table from a dbagent status code to the HTTP status the API answers with, and which
 * failed calls the API makes again. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "dba.h"
#include "methods.h"

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

static void test_only_calls_safe_to_repeat_are_retried(void **state)
{
    (void)state;
    /* A broken connection or an aborted transaction: reads and calls with a request id. */
    const char *safe[] = {DBA_CREATE_USER, DBA_STORE_REFRESH_TOKEN, DBA_CREATE_EXPRESSION,
                          DBA_GET_EXPRESSION, DBA_ROTATE_REFRESH_TOKEN};
    for (size_t i = 0; i < sizeof safe / sizeof safe[0]; i++) {
        assert_true(dba_repeatable(safe[i], RPC_UNAVAILABLE));
        assert_true(dba_repeatable(safe[i], RPC_ABORTED));
        /* An answer, or a deadline that may still be running the call: never again. */
        assert_false(dba_repeatable(safe[i], RPC_ALREADY_EXISTS));
        assert_false(dba_repeatable(safe[i], RPC_DEADLINE_EXCEEDED));
        assert_false(dba_repeatable(safe[i], RPC_INVALID_ARGUMENT));
    }
    /* Counted or one-way: a second run would count twice or answer differently. */
    const char *once[] = {DBA_CANCEL_EXPRESSION, DBA_CHANGE_PASSWORD, DBA_LIMIT_LOGIN,
                          DBA_RECORD_LOGIN,      DBA_TAKE_READY,      "/calc.v1.DbAgent/Nope"};
    for (size_t i = 0; i < sizeof once / sizeof once[0]; i++)
        assert_false(dba_repeatable(once[i], RPC_UNAVAILABLE));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_failures_a_client_can_act_on),
        cmocka_unit_test(test_everything_else_is_unavailable),
        cmocka_unit_test(test_only_calls_safe_to_repeat_are_retried),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
