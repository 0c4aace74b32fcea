/* mq_opts: the broker list of AMQP_URL, the queue type and the TLS files, checked at start. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "mq_opts.h"
#include "temp_file.h"

static void test_one_url(void **state)
{
    (void)state;
    mq_opts o;
    char err[256] = "";
    assert_int_equal(mq_opts_parse_urls(&o, "amqp://u:p@127.0.0.1:5673/v", err, sizeof err), 0);
    assert_int_equal(o.n_urls, 1);
    assert_string_equal(o.urls[0], "amqp://u:p@127.0.0.1:5673/v");
    assert_string_equal(o.names[0], "127.0.0.1:5673");
    assert_false(o.tls);
    assert_int_equal(mq_opts_next(&o, 0), 0);
    mq_opts_free(&o);
}

static void test_list_with_spaces_and_default_ports(void **state)
{
    (void)state;
    mq_opts o;
    char err[256] = "";
    assert_int_equal(mq_opts_parse_urls(&o, " amqps://u:p@a/v ,amqps://u:p@b:6000/v,\tamqps://c ",
                                        err, sizeof err),
                     0);
    assert_int_equal(o.n_urls, 3);
    assert_string_equal(o.urls[0], "amqps://u:p@a/v");
    assert_string_equal(o.urls[2], "amqps://c");
    assert_string_equal(o.names[0], "a:5671");
    assert_string_equal(o.names[1], "b:6000");
    assert_true(o.tls);
    /* Round robin from the one after the failed broker. */
    assert_int_equal(mq_opts_next(&o, 0), 1);
    assert_int_equal(mq_opts_next(&o, 2), 0);
    mq_opts_free(&o);
}

static void parse_refused(const char *list, const char *words)
{
    mq_opts o;
    char err[256] = "";
    assert_int_equal(mq_opts_parse_urls(&o, list, err, sizeof err), -1);
    assert_int_equal(o.n_urls, 0);
    if (!strstr(err, "AMQP_URL") || !strstr(err, words))
        fail_msg("'%s': error '%s' should name AMQP_URL and say '%s'", list, err, words);
    /* The error never repeats the URL, which may hold a password. */
    assert_null(strstr(err, "secret"));
}

static void test_bad_lists_are_refused(void **state)
{
    (void)state;
    parse_refused("", "broker 1 of the comma-separated list is empty");
    parse_refused("amqp://u:secret@a/v,", "broker 2 of the comma-separated list is empty");
    parse_refused("amqp://u:secret@a/v, ,amqp://b", "broker 2");
    parse_refused("amqp://u:secret@a/v,http://b", "broker 2 is not a valid");
    parse_refused("amqp://u:secret@a/v,amqps://u:secret@b/v", "mixes amqp:// and amqps://");
    char many[2048] = "";
    for (int i = 0; i <= MQ_MAX_BROKERS; i++)
        strcat(many, i ? ",amqp://h" : "amqp://h");
    parse_refused(many, "more than");
}

static mq_settings settings(const char *urls)
{
    return (mq_settings){.url_list = urls,
                         .queue_type = "",
                         .tls_ca = "",
                         .tls_cert = "",
                         .tls_key = "",
                         .retry_ttl_ms = 1000};
}

static void init_refused(const mq_settings *s, const char *words)
{
    mq_opts o;
    char err[512] = "";
    assert_int_equal(mq_opts_init(&o, s, err, sizeof err), -1);
    mq_opts_free(&o);
    if (!strstr(err, words))
        fail_msg("error '%s' should say '%s'", err, words);
}

static void test_queue_type(void **state)
{
    (void)state;
    mq_opts o;
    char err[256] = "";
    mq_settings s = settings("amqp://h");
    assert_int_equal(mq_opts_init(&o, &s, err, sizeof err), 0);
    assert_int_equal(o.queue_type, MQ_QUEUE_CLASSIC);
    assert_int_equal(o.retry_ttl_ms, 1000);
    mq_opts_free(&o);
    s.queue_type = "quorum";
    assert_int_equal(mq_opts_init(&o, &s, err, sizeof err), 0);
    assert_int_equal(o.queue_type, MQ_QUEUE_QUORUM);
    assert_string_equal(mq_queue_type_name(o.queue_type), "quorum");
    mq_opts_free(&o);
    s.queue_type = "Quorum";
    init_refused(&s, "AMQP_QUEUE_TYPE: 'Quorum' is neither classic nor quorum");
}

/* A temporary file with the given content; the caller unlinks it. */
static void test_tls_settings(void **state)
{
    (void)state;
    char garbage[64], empty[64];
    temp_file(garbage, sizeof garbage, "not a certificate\n");
    temp_file(empty, sizeof empty, "");

    mq_settings s = settings("amqps://u:p@localhost/v");
    init_refused(&s, "AMQP_TLS_CA is required with amqps://");
    s.tls_ca = "/nonexistent/ca.pem";
    init_refused(&s, "AMQP_TLS_CA: cannot open /nonexistent/ca.pem: No such file");
    s.tls_ca = "/tmp";
    init_refused(&s, "AMQP_TLS_CA: cannot read /tmp");
    s.tls_ca = empty;
    init_refused(&s, "is empty");
    s.tls_ca = garbage;
    init_refused(&s, "AMQP_TLS_CA: ");
    init_refused(&s, "no PEM certificate");
    s.tls_cert = garbage;
    init_refused(&s, "AMQP_TLS_CERT is set without AMQP_TLS_KEY");
    s.tls_cert = "";
    s.tls_key = garbage;
    init_refused(&s, "AMQP_TLS_KEY is set without AMQP_TLS_CERT");

    /* TLS files with plain brokers would be ignored: refused instead. */
    s = settings("amqp://u:p@localhost/v");
    s.tls_ca = garbage;
    init_refused(&s, "AMQP_TLS_CA is set but AMQP_URL has no amqps:// broker");
    s.tls_ca = "";
    s.tls_key = garbage;
    init_refused(&s, "AMQP_TLS_KEY is set but");
    unlink(garbage);
    unlink(empty);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_url),
        cmocka_unit_test(test_list_with_spaces_and_default_ports),
        cmocka_unit_test(test_bad_lists_are_refused),
        cmocka_unit_test(test_queue_type),
        cmocka_unit_test(test_tls_settings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
