/*
 * metrics: a writer of the Prometheus text format (version 0.0.4) into a buf. Each family is
 * its HELP and TYPE lines followed by its samples:
 *
 *     metrics_family(b, "calc_nodes", "gauge", "Unfinished nodes by state.");
 *     metrics_i64(b, "calc_nodes", "state=\"ready\"", 3);
 */
#ifndef CALC_METRICS_H
#define CALC_METRICS_H

#include <stddef.h>

#include "buf.h"

/* "# HELP name help" and "# TYPE name type" (counter, gauge, histogram). */
void metrics_family(buf *b, const char *name, const char *type, const char *help);

/* One sample, "name{labels} value"; labels is what goes between the braces
 * (route="login",status="200"), or NULL for none. */
void metrics_u64(buf *b, const char *name, const char *labels, unsigned long long v);
void metrics_i64(buf *b, const char *name, const char *labels, long long v);
void metrics_f64(buf *b, const char *name, const char *labels, double v);

/*
 * The samples of one histogram series: name_bucket with le="bounds[i]" and counts[i] (each
 * already cumulative: the observations <= bounds[i]) for the n bounds, le="+Inf" with count,
 * then name_sum and name_count.
 */
void metrics_histogram(buf *b, const char *name, const char *labels, const double *bounds,
                       const unsigned long long *counts, size_t n, unsigned long long count,
                       double sum);

#endif
