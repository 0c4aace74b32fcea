/*
 * route: matching a request's method and path against the route table (http.h's http_route),
 * with no server: which route serves it, which patterns know the path, what Allow says.
 */
#ifndef CALC_ROUTE_H
#define CALC_ROUTE_H

#include <stddef.h>
#include <stdint.h>

#include "http.h"

/* 1 when path matches pattern: exact; with HTTP_ID_SUFFIX standing for 1 to 18 digits (then *id
 * gets their value; left alone otherwise); or ending in HTTP_REST_SUFFIX, for one or more
 * characters of any kind. */
int route_path_matches(const char *pattern, const char *path, int64_t *id);

/* The index of the route serving method on path (n when none), with *id its {id}. *known gets
 * the first route whose pattern matches the path, whatever its method (n when none): a 405
 * rather than a 404. */
size_t route_find(const http_route *routes, size_t n, const char *method, const char *path,
                  int64_t *id, size_t *known);

/* Writes to out (cap bytes) the Allow header of route i's pattern: every method served on it,
 * in table order, separated by ", ". */
void route_allow(const http_route *routes, size_t n, size_t i, char *out, size_t cap);

#endif
