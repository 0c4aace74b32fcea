#include "csrf.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#define HOSTPORT_MAX 256

/* host[:port] without the port when it is the scheme's default one; 0 when it does not fit. */
static int without_default_port(const char *hostport, size_t len, const char *default_port,
                                char *out)
{
    if (len >= HOSTPORT_MAX)
        return 0;
    memcpy(out, hostport, len);
    out[len] = '\0';
    char *colon = strrchr(out, ':');
    /* An IPv6 literal's colons are inside brackets: only a colon after "]" starts a port. */
    if (colon && (!strchr(out, ']') || colon > strchr(out, ']')) &&
        !strcmp(colon + 1, default_port))
        *colon = '\0';
    return 1;
}

int csrf_same_origin(const char *origin, const char *host, const char *fetch_site, char *why,
                     size_t why_len)
{
    if (fetch_site && !strcasecmp(fetch_site, "cross-site")) {
        snprintf(why, why_len, "a cross-site request (Sec-Fetch-Site: cross-site)");
        return 0;
    }
    if (!origin)
        return 1;
    const char *default_port = NULL, *rest = NULL;
    if (!strncasecmp(origin, "http://", 7)) {
        default_port = "80";
        rest = origin + 7;
    } else if (!strncasecmp(origin, "https://", 8)) {
        default_port = "443";
        rest = origin + 8;
    }
    char from[HOSTPORT_MAX], to[HOSTPORT_MAX];
    /* An origin is scheme://host[:port], nothing after; "null" (a sandboxed page, a redirect
     * across sites) names no site at all. */
    if (!rest || !*rest || strchr(rest, '/') ||
        !without_default_port(rest, strlen(rest), default_port, from)) {
        snprintf(why, why_len, "a request from origin '%.64s', not this site", origin);
        return 0;
    }
    if (!host || !without_default_port(host, strlen(host), default_port, to) ||
        strcasecmp(from, to) != 0) {
        snprintf(why, why_len, "a request from origin '%.64s', not this site (%.64s)", origin,
                 host ? host : "no Host header");
        return 0;
    }
    return 1;
}
