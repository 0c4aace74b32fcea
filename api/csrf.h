/*
 * csrf: whether a request that a cookie authenticates comes from the page's own site. A browser
 * names the page that sent a request in Origin (and, lately, Sec-Fetch-Site); a request from
 * another site is refused even though the cookie is SameSite=Strict, which older browsers and
 * some same-site set-ups do not honour. A request with neither header (curl, scripts) is not a
 * browser's cross-site request and passes.
 */
#ifndef CALC_CSRF_H
#define CALC_CSRF_H

#include <stddef.h>

/*
 * 1 when a request with these headers (each NULL when absent) may use its cookie: no
 * Sec-Fetch-Site of "cross-site", and an Origin, if any, naming the host and port of Host (a
 * scheme's default port may be left out of either). 0 otherwise, with why (why_len bytes) saying
 * what was refused.
 */
int csrf_same_origin(const char *origin, const char *host, const char *fetch_site, char *why,
                     size_t why_len);

#endif
