/*
 * Routing without a server, over calc-api's own route table: which route serves a method and
 * path, the {id} it carries, a 405 (a pattern knows the path) rather than a 404, the Allow header.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "api.h"
#include "route.h"

/* calc-api's own table (api/routes.c); a route by its metric name. */
#define N api_n_routes

static size_t named(const char *name)
{
    for (size_t i = 0; i < N; i++)
        if (!strcmp(api_routes[i].name, name))
            return i;
    fail_msg("no route named %s", name);
    return N;
}

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

    /* Text after {id} must follow the digits exactly. */
    const char *q = "/expression/" HTTP_ID_SUFFIX "/nodes";
    id = -1;
    assert_true(route_path_matches(q, "/expression/31/nodes", &id));
    assert_int_equal(id, 31);
    assert_false(route_path_matches(q, "/expression/31", &id));
    assert_false(route_path_matches(q, "/expression/31/nodes/", &id));
    assert_false(route_path_matches(q, "/expression/31/node", &id));
    assert_false(route_path_matches(q, "/expression//nodes", &id));
    assert_false(route_path_matches(q, "/expression/3x/nodes", &id));
    assert_false(route_path_matches(q, "/expression/1234567890123456789/nodes", &id)); /* 19 */
    assert_false(route_path_matches(p, "/expression/31/nodes", &id));

    /* A rest pattern: its prefix and at least one more character, of any kind. */
    const char *rest = "/ui/" HTTP_REST_SUFFIX;
    id = -1;
    assert_true(route_path_matches(rest, "/ui/js/app.js", &id));
    assert_true(route_path_matches(rest, "/ui/../x", &id));
    assert_int_equal(id, -1);
    assert_false(route_path_matches(rest, "/ui/", &id));
    assert_false(route_path_matches(rest, "/ui", &id));
    assert_false(route_path_matches(rest, "/uix/a", &id));
}

static void test_find_by_method_and_path(void **state)
{
    (void)state;
    int64_t id = 0;
    size_t known;
    assert_int_equal(route_find(api_routes, N, "POST", "/expression", &id, &known),
                     named("expression_create"));
    assert_int_equal(route_find(api_routes, N, "GET", "/expression", &id, &known),
                     named("expression_list"));
    assert_int_equal(route_find(api_routes, N, "GET", "/expression/12", &id, &known),
                     named("expression_get"));
    assert_int_equal(id, 12);
    assert_int_equal(route_find(api_routes, N, "DELETE", "/expression/13", &id, &known),
                     named("expression_cancel"));
    assert_int_equal(id, 13);
    assert_int_equal(known, named("expression_get"));
    assert_int_equal(route_find(api_routes, N, "POST", "/api/v1/login", &id, &known),
                     named("login"));
    assert_int_equal(route_find(api_routes, N, "GET", "/openapi.json", &id, &known),
                     named("openapi"));
}

static void test_404_and_405(void **state)
{
    (void)state;
    int64_t id = 5;
    size_t known;
    assert_int_equal(route_find(api_routes, N, "GET", "/nowhere", &id, &known), N);
    assert_int_equal(known, N); /* 404 */
    assert_int_equal(id, 5);    /* untouched when nothing serves the request */

    assert_int_equal(route_find(api_routes, N, "PUT", "/expression/1", &id, &known), N);
    assert_int_equal(known, named("expression_get")); /* 405: the first route of the pattern */
    assert_int_equal(route_find(api_routes, N, "GET", "/api/v1/login", &id, &known), N);
    assert_int_equal(known, named("login"));
    assert_int_equal(route_find(api_routes, N, "get", "/healthz", &id, &known), N); /* exact */
    assert_int_equal(known, named("healthz"));
}

static void test_every_route_is_reachable_and_needs_what_it_says(void **state)
{
    (void)state;
    for (size_t i = 0; i < N; i++) {
        const char *pattern = api_routes[i].path;
        size_t len = strlen(pattern), suffix = strlen(HTTP_ID_SUFFIX);
        char path[128];
        const char *brace = strstr(pattern, HTTP_ID_SUFFIX);
        size_t rest = strlen(HTTP_REST_SUFFIX);
        if (brace)
            snprintf(path, sizeof path, "%.*s7%s", (int)(brace - pattern), pattern, brace + suffix);
        else if (len >= rest && !strcmp(pattern + len - rest, HTTP_REST_SUFFIX))
            snprintf(path, sizeof path, "%.*sx", (int)(len - rest), pattern);
        else
            snprintf(path, sizeof path, "%s", pattern);
        int64_t id = 0;
        size_t known;
        assert_int_equal(route_find(api_routes, N, api_routes[i].method, path, &id, &known), i);
    }
    /* The reference API's public routes need no token; every expression route does. */
    assert_false(api_routes[named("register")].auth);
    assert_false(api_routes[named("login")].auth);
    assert_true(api_routes[named("expression_create")].auth);
    assert_true(api_routes[named("expression_get")].auth);
    assert_true(api_routes[named("expression_nodes")].auth);
    assert_true(api_routes[named("plan_preview")].auth);
    assert_false(api_routes[named("ui_page")].auth); /* the page loads before anyone signs in */
    assert_false(api_routes[named("ui_asset")].auth);
}

static void test_the_page_and_the_nodes_route(void **state)
{
    (void)state;
    int64_t id = 0;
    size_t known;
    assert_int_equal(route_find(api_routes, N, "GET", "/", &id, &known), named("ui_page"));
    assert_int_equal(route_find(api_routes, N, "GET", "/ui/js/app.js", &id, &known),
                     named("ui_asset"));
    assert_int_equal(route_find(api_routes, N, "GET", "/expression/9/nodes", &id, &known),
                     named("expression_nodes"));
    assert_int_equal(id, 9);
    /* The nodes of an expression are not the expression: GET /expression/{id} still is. */
    assert_int_equal(route_find(api_routes, N, "GET", "/expression/9", &id, &known),
                     named("expression_get"));
    assert_int_equal(route_find(api_routes, N, "DELETE", "/expression/9/nodes", &id, &known), N);
    assert_int_equal(known, named("expression_nodes")); /* 405 */
}

static void test_allow_lists_every_method_of_a_pattern(void **state)
{
    (void)state;
    char allow[64];
    route_allow(api_routes, N, named("expression_list"), allow, sizeof allow);
    assert_string_equal(allow, "POST, GET");
    route_allow(api_routes, N, named("expression_cancel"), allow, sizeof allow);
    assert_string_equal(allow, "GET, DELETE");
    route_allow(api_routes, N, named("healthz"), allow, sizeof allow);
    assert_string_equal(allow, "GET");

    char tiny[8]; /* cut, never overrun, and always terminated */
    route_allow(api_routes, N, named("expression_create"), tiny, sizeof tiny);
    assert_string_equal(tiny, "POST, G");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_path_matching),
        cmocka_unit_test(test_find_by_method_and_path),
        cmocka_unit_test(test_404_and_405),
        cmocka_unit_test(test_every_route_is_reachable_and_needs_what_it_says),
        cmocka_unit_test(test_allow_lists_every_method_of_a_pattern),
        cmocka_unit_test(test_the_page_and_the_nodes_route),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
