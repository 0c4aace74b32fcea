/*
 * Routing without a server: which route serves a method and path, the {id} it carries, a 405
 * (a pattern knows the path) rather than a 404, and the Allow header of a pattern.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "route.h"

static void handler(http_req *r)
{
    (void)r;
}

/* The shape of calc-api's table: exact paths, one pattern with an id, methods sharing a path. */
static const http_route routes[] = {
    {"POST", "/api/v1/login", handler, 0, "login"},
    {"POST", "/expression", handler, 1, "expression_create"},
    {"GET", "/expression", handler, 1, "expression_list"},
    {"GET", "/expression/" HTTP_ID_SUFFIX, handler, 1, "expression_get"},
    {"DELETE", "/expression/" HTTP_ID_SUFFIX, handler, 1, "expression_cancel"},
    {"GET", "/healthz", handler, 0, "healthz"},
};
#define N (sizeof routes / sizeof routes[0])

static void test_path_matching(void **state)
{
    (void)state;
    int64_t id = -1;
    assert_true(route_path_matches("/healthz", "/healthz", &id));
    assert_int_equal(id, -1); /* an exact pattern leaves the id alone */
    assert_false(route_path_matches("/healthz", "/healthz/", &id));
    assert_false(route_path_matches("/healthz", "/health", &id));
    assert_false(route_path_matches("/expression", "/Expression", &id));

    const char *p = "/expression/" HTTP_ID_SUFFIX;
    assert_true(route_path_matches(p, "/expression/42", &id));
    assert_int_equal(id, 42);
    assert_true(route_path_matches(p, "/expression/007", &id));
    assert_int_equal(id, 7);
    assert_true(route_path_matches(p, "/expression/999999999999999999", &id)); /* 18 digits */
    assert_int_equal(id, 999999999999999999LL);
    assert_false(route_path_matches(p, "/expression/9999999999999999999", &id)); /* 19 */
    assert_false(route_path_matches(p, "/expression/", &id));
    assert_false(route_path_matches(p, "/expression", &id));
    assert_false(route_path_matches(p, "/expression/-1", &id));
    assert_false(route_path_matches(p, "/expression/1a", &id));
    assert_false(route_path_matches(p, "/expression/1/", &id));
    assert_false(route_path_matches(p, "/expressions/1", &id));
}

static void test_find_by_method_and_path(void **state)
{
    (void)state;
    int64_t id = 0;
    size_t known;
    assert_int_equal(route_find(routes, N, "POST", "/expression", &id, &known), 1);
    assert_int_equal(route_find(routes, N, "GET", "/expression", &id, &known), 2);
    assert_int_equal(route_find(routes, N, "GET", "/expression/12", &id, &known), 3);
    assert_int_equal(id, 12);
    assert_int_equal(route_find(routes, N, "DELETE", "/expression/13", &id, &known), 4);
    assert_int_equal(id, 13);
    assert_int_equal(known, 3);
}

static void test_404_and_405(void **state)
{
    (void)state;
    int64_t id = 5;
    size_t known;
    assert_int_equal(route_find(routes, N, "GET", "/nowhere", &id, &known), N);
    assert_int_equal(known, N); /* 404 */
    assert_int_equal(id, 5);    /* untouched when nothing serves the request */

    assert_int_equal(route_find(routes, N, "PUT", "/expression/1", &id, &known), N);
    assert_int_equal(known, 3); /* 405: the first route of the pattern */
    assert_int_equal(route_find(routes, N, "GET", "/api/v1/login", &id, &known), N);
    assert_int_equal(known, 0);
    assert_int_equal(route_find(routes, N, "get", "/healthz", &id, &known), N); /* exact case */
    assert_int_equal(known, 5);
}

static void test_allow_lists_every_method_of_a_pattern(void **state)
{
    (void)state;
    char allow[64];
    route_allow(routes, N, 1, allow, sizeof allow);
    assert_string_equal(allow, "POST, GET");
    route_allow(routes, N, 4, allow, sizeof allow);
    assert_string_equal(allow, "GET, DELETE");
    route_allow(routes, N, 5, allow, sizeof allow);
    assert_string_equal(allow, "GET");

    char tiny[8]; /* cut, never overrun, and always terminated */
    route_allow(routes, N, 1, tiny, sizeof tiny);
    assert_string_equal(tiny, "POST, G");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_path_matching),
        cmocka_unit_test(test_find_by_method_and_path),
        cmocka_unit_test(test_404_and_405),
        cmocka_unit_test(test_allow_lists_every_method_of_a_pattern),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
