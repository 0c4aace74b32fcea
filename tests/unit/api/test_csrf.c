/*
 * The cross-site check of the cookie routes (api/csrf.c): which Origin and Sec-Fetch-Site
 * headers may use the refresh cookie, for a browser on this site, another site, or no browser.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "csrf.h"

static int allowed(const char *origin, const char *host, const char *site)
{
    char why[200] = "";
    int ok = csrf_same_origin(origin, host, site, why, sizeof why);
    /* A refusal always says why; a pass says nothing. */
    assert_int_equal(ok, why[0] == '\0');
    return ok;
}

static void test_no_browser_headers_pass(void **state)
{
    (void)state;
    assert_true(allowed(NULL, "api:8080", NULL)); /* curl, scripts */
    assert_true(allowed(NULL, NULL, NULL));
    assert_true(allowed(NULL, "api:8080", "none")); /* typed in the address bar */
}

static void test_the_same_site_passes(void **state)
{
    (void)state;
    assert_true(allowed("http://api:8080", "api:8080", "same-origin"));
    assert_true(allowed("http://API:8080", "api:8080", NULL));            /* hosts ignore case */
    assert_true(allowed("http://calc.example", "calc.example:80", NULL)); /* default ports */
    assert_true(allowed("http://calc.example:80", "calc.example", NULL));
    assert_true(allowed("https://calc.example", "calc.example", NULL)); /* behind a TLS proxy */
    assert_true(allowed("https://calc.example:443", "calc.example", NULL));
    assert_true(allowed("http://[::1]:8080", "[::1]:8080", NULL));
    assert_true(allowed("http://[::1]", "[::1]:80", NULL));
}

static void test_another_site_is_refused(void **state)
{
    (void)state;
    assert_false(allowed("http://evil.example", "api:8080", NULL));
    assert_false(allowed("http://api:8081", "api:8080", NULL));              /* another port */
    assert_false(allowed("http://api:8080.evil.example", "api:8080", NULL)); /* a prefix */
    assert_false(allowed("http://api", "api:8080", NULL));
    assert_false(allowed("https://calc.example", "calc.example:80", NULL)); /* 443 is not 80 */
    assert_false(allowed("null", "api:8080", NULL));                        /* a sandboxed page */
    assert_false(allowed("http://api:8080/", "api:8080", NULL)); /* no path in an origin */
    assert_false(allowed("ftp://api:8080", "api:8080", NULL));
    assert_false(allowed("http://", "", NULL));
    assert_false(allowed("", "api:8080", NULL));
    assert_false(allowed("http://api:8080", NULL, NULL)); /* nothing to compare with */
    /* The browser's own word wins over a matching Origin. */
    assert_false(allowed("http://api:8080", "api:8080", "cross-site"));
    assert_false(allowed(NULL, "api:8080", "Cross-Site"));
    assert_true(allowed(NULL, "api:8080", "same-site"));
}

static void test_long_headers_are_refused_not_overrun(void **state)
{
    (void)state;
    char origin[1024], host[1024];
    memset(origin, 'a', sizeof origin);
    memcpy(origin, "http://", 7);
    origin[sizeof origin - 1] = '\0';
    memset(host, 'a', sizeof host);
    host[sizeof host - 1] = '\0';
    assert_false(allowed(origin, host + 7, NULL));
    char why[8]; /* a short buffer gets a cut, terminated reason */
    assert_false(csrf_same_origin("http://x", "y", NULL, why, sizeof why));
    assert_int_equal(strlen(why), sizeof why - 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_browser_headers_pass),
        cmocka_unit_test(test_the_same_site_passes),
        cmocka_unit_test(test_another_site_is_refused),
        cmocka_unit_test(test_long_headers_are_refused_not_overrun),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
