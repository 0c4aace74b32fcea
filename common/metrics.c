#include "metrics.h"

#include <assert.h>
#include <stdio.h>

#include "numfmt.h"

void metrics_family(buf *b, const char *name, const char *type, const char *help)
{
    buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One line, "name<suffix>{labels} value", in one write: a full buffer never holds half a line. */
static void sample(buf *b, const char *name, const char *suffix, const char *labels,
                   const char *value)
{
    if (labels && labels[0])
        buf_printf(b, "%s%s{%s} %s\n", name, suffix, labels, value);
    else
        buf_printf(b, "%s%s %s\n", name, suffix, value);
}

void metrics_u64(buf *b, const char *name, const char *labels, unsigned long long v)
{
    char num[24];
    snprintf(num, sizeof num, "%llu", v);
    sample(b, name, "", labels, num);
}

void metrics_i64(buf *b, const char *name, const char *labels, long long v)
{
    char num[24];
    snprintf(num, sizeof num, "%lld", v);
    sample(b, name, "", labels, num);
}

void metrics_f64(buf *b, const char *name, const char *labels, double v)
{
    char num[NUMFMT_DOUBLE_LEN];
    sample(b, name, "", labels, numfmt_double(num, sizeof num, v));
}

static void bucket(buf *b, const char *name, const char *labels, const char *le,
                   unsigned long long v)
{
    int has = labels && labels[0];
    buf_printf(b, "%s_bucket{%s%sle=\"%s\"} %llu\n", name, has ? labels : "", has ? "," : "", le,
               v);
}

void metrics_histogram(buf *b, const char *name, const char *labels, const double *bounds,
                       const unsigned long long *counts, size_t n, unsigned long long count,
                       double sum)
{
    char num[NUMFMT_DOUBLE_LEN];
    for (size_t i = 0; i < n; i++) {
        /* Cumulative, and read one by one from counters that keep moving: never above count. */
        assert(i == 0 || bounds[i] > bounds[i - 1]);
        bucket(b, name, labels, numfmt_double(num, sizeof num, bounds[i]),
               counts[i] < count ? counts[i] : count);
    }
    bucket(b, name, labels, "+Inf", count);
    sample(b, name, "_sum", labels, numfmt_double(num, sizeof num, sum));
    snprintf(num, sizeof num, "%llu", count);
    sample(b, name, "_count", labels, num);
}
