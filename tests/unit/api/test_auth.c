/* Refresh-token successors: the same for every instance with one secret, another with another
 * secret, never the token itself, and each with its SHA-256 as the hash dbagent stores. Event
 * stream tickets: accepted by any instance with the secret, refused when altered, expired, or
 * made under another secret; an access token is no ticket. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
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

static void test_a_ticket_names_its_user_until_it_expires(void **state)
{
    (void)state;
    char err[64];
    assert_int_equal(auth_init(SECRET_A, "", 900, 1), 0);
    char *t = auth_issue_ticket(42, 30);
    assert_int_equal(auth_verify_ticket(t, err, sizeof err), 42);
    /* Another user's id with the same MAC: refused. */
    char forged[256];
    snprintf(forged, sizeof forged, "43%s", strchr(t, '.'));
    assert_int_equal(auth_verify_ticket(forged, err, sizeof err), 0);
    assert_string_equal(err, "bad ticket signature");
    /* Another secret: refused. */
    assert_int_equal(auth_init(SECRET_B, "", 900, 1), 0);
    assert_int_equal(auth_verify_ticket(t, err, sizeof err), 0);
    free(t);
    /* Expired (issued with a lifetime already over). */
    t = auth_issue_ticket(42, -1);
    assert_int_equal(auth_verify_ticket(t, err, sizeof err), 0);
    assert_string_equal(err, "expired ticket");
    free(t);
    /* An access token is no ticket, nor is garbage. */
    char *access = auth_issue_access(42);
    assert_int_equal(auth_verify_ticket(access, err, sizeof err), 0);
    free(access);
    assert_int_equal(auth_verify_ticket("", err, sizeof err), 0);
    assert_int_equal(auth_verify_ticket("1.2.", err, sizeof err), 0);
    assert_string_equal(err, "malformed ticket");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_secret_one_successor),
        cmocka_unit_test(test_another_secret_or_token_another_successor),
        cmocka_unit_test(test_a_ticket_names_its_user_until_it_expires),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
