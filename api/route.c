#include "route.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int route_path_matches(const char *pattern, const char *path, int64_t *id)
{
    size_t plen = strlen(pattern), rest = strlen(HTTP_REST_SUFFIX);
    if (plen >= rest && !strcmp(pattern + plen - rest, HTTP_REST_SUFFIX))
        return strncmp(pattern, path, plen - rest) == 0 && path[plen - rest] != '\0';
    const char *brace = strstr(pattern, HTTP_ID_SUFFIX);
    if (!brace)
        return strcmp(pattern, path) == 0;
    size_t prefix = (size_t)(brace - pattern);
    if (strncmp(pattern, path, prefix) != 0)
        return 0;
    const char *digits = path + prefix, *after = digits;
    while (*after >= '0' && *after <= '9')
        after++;
    size_t n = (size_t)(after - digits);
    /* What follows the digits must be the pattern's text after {id}, exactly. */
    if (n == 0 || n > 18 || strcmp(after, brace + strlen(HTTP_ID_SUFFIX)) != 0)
        return 0;
    *id = strtoll(digits, NULL, 10);
    return 1;
}

size_t route_find(const http_route *routes, size_t n, const char *method, const char *path,
                  int64_t *id, size_t *known)
{
    *known = n;
    for (size_t i = 0; i < n; i++) {
        int64_t got = 0;
        if (!route_path_matches(routes[i].path, path, &got))
            continue;
        if (*known == n)
            *known = i;
        if (strcmp(routes[i].method, method) == 0) {
            *id = got;
            return i;
        }
    }
    return n;
}

void route_allow(const http_route *routes, size_t n, size_t i, char *out, size_t cap)
{
    size_t len = 0;
    out[0] = '\0';
    for (size_t j = 0; j < n && len < cap; j++) {
        if (strcmp(routes[i].path, routes[j].path) != 0)
            continue;
        int w = snprintf(out + len, cap - len, "%s%s", len ? ", " : "", routes[j].method);
        len = w < 0 ? cap : len + (size_t)w;
    }
}
