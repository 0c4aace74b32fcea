/*
 * bench-parser: time of plan_build (parse + source-order plan + reassociated plan) on ~4 KB
 * expressions of several shapes, and its growth from 1 KB to 64 KB to show O(n log n).
 * Run by hand, never from ctest: the machine is shared and timings are noisy.
 * Usage: bench-parser [--iterations N]   (default 2000 per shape at 4 KB)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "plan.h"

typedef struct text {
    char *s;
    size_t len, cap;
} text;

static void put(text *t, const char *s)
{
    size_t n = strlen(s);

    if (t->len + n + 1 > t->cap) {
        t->cap = (t->len + n + 1) * 2;
        t->s = realloc(t->s, t->cap);
        if (t->s == NULL)
            abort();
    }
    memcpy(t->s + t->len, s, n + 1);
    t->len += n;
}

/* "1234+5678-..." : one long +/- chain, the case reassociation flattens the most. */
static void flat(text *t, size_t target)
{
    char buf[32];

    for (unsigned i = 0; t->len < target - 8; i++) {
        snprintf(buf, sizeof buf, "%s%u", i ? (i % 3 ? "+" : "-") : "", 1000 + (i * 7919) % 9000);
        put(t, buf);
    }
}

/* "(12.5*3-4/7)+(...)..." : products inside sums inside parentheses, as people write them. */
static void mixed(text *t, size_t target)
{
    char buf[64];

    for (unsigned i = 0; t->len < target - 40; i++) {
        snprintf(buf, sizeof buf, "%s(%u.5*%u-%u/(%u+%u.25e1))", i ? (i % 2 ? "+" : "*") : "",
                 i % 97 + 1, i % 13 + 2, i % 31 + 3, i % 7 + 1, i % 5 + 1);
        put(t, buf);
    }
}

/* Blocks nested 90 deep (under the default limit of 100), alternating sums and products:
 * the deepest chain structure the planner sees at the default limits. */
static void deep(text *t, size_t target)
{
    char buf[32];

    for (unsigned b = 0; t->len < target - 90 * 8; b++) {
        if (b)
            put(t, "+");
        for (unsigned i = 0; i < 90; i++) {
            snprintf(buf, sizeof buf, "%u%c(", i + 1, "+*-/"[i % 4]);
            put(t, buf);
        }
        put(t, "7");
        for (unsigned i = 0; i < 90; i++)
            put(t, ")");
    }
}

static double now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

typedef struct result {
    double mean_us, median_us, min_us; /* min: the least disturbed run, steadiest when shared */
    size_t nodes;
    int64_t critical, source_critical;
} result;

static result measure(const text *t, const plan_limits *lim, int source_order, int iterations)
{
    plan_durations dur;
    double *samples = malloc((size_t)iterations * sizeof *samples), sum = 0;
    result r = {0};
    plan_error err;

    plan_durations_uniform(&dur, 1000);
    for (int i = -iterations / 10; i < iterations; i++) { /* the first tenth warms up */
        plan *p = NULL;
        double t0 = now_ns();

        if (plan_build(t->s, t->len, lim, &dur, source_order, &p, &err) != PLAN_OK) {
            fprintf(stderr, "bench-parser: error at %zu: %s\n", err.position, err.message);
            exit(1);
        }
        if (i >= 0) {
            samples[i] = (now_ns() - t0) / 1e3;
            sum += samples[i];
        }
        r.nodes = p->n_nodes;
        r.critical = p->critical_path_ms;
        r.source_critical = p->source_critical_path_ms;
        plan_free(p);
    }
    qsort(samples, (size_t)iterations, sizeof *samples, cmp_double);
    r.mean_us = sum / iterations;
    r.median_us = samples[iterations / 2];
    r.min_us = samples[0];
    free(samples);
    return r;
}

typedef void (*shape_fn)(text *, size_t);

int main(int argc, char **argv)
{
    static const struct {
        const char *name;
        shape_fn fn;
    } shapes[] = {{"flat", flat}, {"mixed", mixed}, {"deep", deep}};
    int iterations = 2000;
    plan_limits lim;

    if (argc == 3 && strcmp(argv[1], "--iterations") == 0 && atoi(argv[2]) > 0) {
        iterations = atoi(argv[2]);
    } else if (argc != 1) {
        fprintf(stderr, "usage: bench-parser [--iterations N]\n");
        return 64;
    }
    plan_limits_default(&lim);
    printf("plan_build at the default limits, %d iterations each (us per call)\n", iterations);
    printf("%-6s %6s %6s %9s %9s %9s %12s %12s %11s\n", "shape", "bytes", "nodes", "mean", "median",
           "min", "source-only", "critical ms", "source ms");
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        text t = {0};
        result r, so;

        shapes[s].fn(&t, 4096);
        r = measure(&t, &lim, 0, iterations);
        so = measure(&t, &lim, 1, iterations);
        printf("%-6s %6zu %6zu %9.1f %9.1f %9.1f %12.1f %12lld %11lld\n", shapes[s].name, t.len,
               r.nodes, r.mean_us, r.median_us, r.min_us, so.median_us, (long long)r.critical,
               (long long)r.source_critical);
        free(t.s);
    }

    /* Growth: the per-node cost should rise only with log n. */
    lim.max_text = (size_t)1 << 20;
    lim.max_nodes = (size_t)1 << 20;
    printf("\nscaling, limits raised (us per call; ns per node and ns / log2 n from the min)\n");
    printf("%-6s %6s %6s %9s %9s %9s %12s\n", "shape", "KB", "nodes", "median", "min", "ns/node",
           "ns/(n lg n)");
    for (size_t s = 0; s < 2; s++) {
        for (size_t kb = 1; kb <= 64; kb *= 2) {
            text t = {0};
            result r;
            int it = (int)(iterations * 4 / kb) + 20;

            shapes[s].fn(&t, kb * 1024);
            r = measure(&t, &lim, 0, it);
            printf("%-6s %6zu %6zu %9.1f %9.1f %9.1f %12.2f\n", shapes[s].name, kb, r.nodes,
                   r.median_us, r.min_us, r.min_us * 1e3 / (double)r.nodes,
                   r.min_us * 1e3 / ((double)r.nodes * log2((double)r.nodes)));
            free(t.s);
        }
    }
    return 0;
}
