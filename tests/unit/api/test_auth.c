/* Refresh-token successors: the same for every instance with one secret, another with another
 * secret, never the token itself, and each with its SHA-256 as the hash dbagent stores. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "auth.h"

#define SECRET_A "an-auth-secret-of-thirty-two-bytes-at-least-a"
#define SECRET_B "an-auth-secret-of-thirty-two-bytes-at-least-b"

static void successor(const char *secret, const char *token, char next[AUTH_TOKEN_HEX],
                      char hash[AUTH_TOKEN_HEX])
{
    assert_int_equal(auth_init(secret, "", 900, 1), 0);
    auth_successor_refresh(token, next, hash);
}

static void test_one_secret_one_successor(void **state)
{
    (void)state;
    char token[AUTH_TOKEN_HEX], unused[AUTH_TOKEN_HEX];
    char n1[AUTH_TOKEN_HEX], h1[AUTH_TOKEN_HEX], n2[AUTH_TOKEN_HEX], h2[AUTH_TOKEN_HEX];
    auth_new_refresh(token, unused);
    successor(SECRET_A, token, n1, h1);
    successor(SECRET_A, token, n2, h2); /* another instance, same secret */
    assert_string_equal(n1, n2);
    assert_string_equal(h1, h2);
    assert_int_equal(strlen(n1), AUTH_TOKEN_HEX - 1);
    assert_string_not_equal(n1, token);
    char expect[AUTH_TOKEN_HEX];
    auth_hash_refresh(n1, expect);
    assert_string_equal(h1, expect);
}

static void test_another_secret_or_token_another_successor(void **state)
{
    (void)state;
    char t1[AUTH_TOKEN_HEX], t2[AUTH_TOKEN_HEX], unused[AUTH_TOKEN_HEX];
    char a[AUTH_TOKEN_HEX], b[AUTH_TOKEN_HEX], c[AUTH_TOKEN_HEX], h[AUTH_TOKEN_HEX];
    auth_new_refresh(t1, unused);
    auth_new_refresh(t2, unused);
    successor(SECRET_A, t1, a, h);
    successor(SECRET_B, t1, b, h);
    successor(SECRET_A, t2, c, h);
    assert_string_not_equal(a, b);
    assert_string_not_equal(a, c);
    /* A chain does not come back on itself in its first steps. */
    char next[AUTH_TOKEN_HEX];
    successor(SECRET_A, a, next, h);
    assert_string_not_equal(next, a);
    assert_string_not_equal(next, t1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_secret_one_successor),
        cmocka_unit_test(test_another_secret_or_token_another_successor),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
