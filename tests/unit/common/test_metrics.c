/* Unit tests of common/metrics: the Prometheus text format. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "metrics.h"

static void families_and_samples(void **state)
{
    (void)state;
    buf b;
    buf_init(&b, 4096);
    metrics_family(&b, "calc_nodes", "gauge", "Unfinished nodes by state.");
    metrics_i64(&b, "calc_nodes", "state=\"ready\"", 3);
    metrics_i64(&b, "calc_nodes", NULL, -1);
    metrics_u64(&b, "calc_total", "", 18446744073709551615ULL);
    metrics_f64(&b, "calc_ratio", "a=\"1\",b=\"2\"", 0.25);
    assert_string_equal(b.data, "# HELP calc_nodes Unfinished nodes by state.\n"
                                "# TYPE calc_nodes gauge\n"
                                "calc_nodes{state=\"ready\"} 3\n"
                                "calc_nodes -1\n"
                                "calc_total 18446744073709551615\n"
                                "calc_ratio{a=\"1\",b=\"2\"} 0.25\n");
    buf_free(&b);
}

static void histograms(void **state)
{
    (void)state;
    buf b;
    buf_init(&b, 4096);
    const double bounds[] = {0.001, 0.5, 5};
    const unsigned long long counts[] = {1, 3, 9}; /* 9: read after the count moved on */
    metrics_histogram(&b, "lat_seconds", "route=\"login\"", bounds, counts, 3, 4, 1.5);
    metrics_histogram(&b, "d_seconds", NULL, bounds, counts, 2, 3, 0.125);
    assert_string_equal(b.data, "lat_seconds_bucket{route=\"login\",le=\"0.001\"} 1\n"
                                "lat_seconds_bucket{route=\"login\",le=\"0.5\"} 3\n"
                                "lat_seconds_bucket{route=\"login\",le=\"5\"} 4\n"
                                "lat_seconds_bucket{route=\"login\",le=\"+Inf\"} 4\n"
                                "lat_seconds_sum{route=\"login\"} 1.5\n"
                                "lat_seconds_count{route=\"login\"} 4\n"
                                "d_seconds_bucket{le=\"0.001\"} 1\n"
                                "d_seconds_bucket{le=\"0.5\"} 3\n"
                                "d_seconds_bucket{le=\"+Inf\"} 3\n"
                                "d_seconds_sum 0.125\n"
                                "d_seconds_count 3\n");
    buf_free(&b);
}

static void a_full_buffer_keeps_whole_lines(void **state)
{
    (void)state;
    buf b;
    buf_init(&b, 40);
    metrics_family(&b, "calc_a_rather_long_metric_name", "counter", "Something counted.");
    metrics_u64(&b, "x", NULL, 1);
    assert_string_equal(b.data, "x 1\n");
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(families_and_samples),
        cmocka_unit_test(histograms),
        cmocka_unit_test(a_full_buffer_keeps_whole_lines),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
