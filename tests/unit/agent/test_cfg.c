/* calc-agent's configuration: defaults, bounds, and the errors that name the variable. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "agent_cfg.h"

static const char *const vars[] = {
    "AGENT_NAME",
    "AGENT_MAX_PROCESSES",
    "AMQP_URL",
    "AMQP_QUEUE_TYPE",
    "AMQP_TLS_CA",
    "AMQP_TLS_CERT",
    "AMQP_TLS_KEY",
    "DBAGENT_ADDR",
    "DBAGENT_TOKEN",
    "DBAGENT_TLS_CA",
    "DBAGENT_TLS_CLIENT_CERT",
    "DBAGENT_TLS_CLIENT_KEY",
    "DBAGENT_TLS_SERVER_NAME",
    "DBAGENT_TIMEOUT_MS",
    "HEARTBEAT_INTERVAL_MS",
    "RETRY_TTL_MS",
    "AGENT_GRACE_MS",
    "COMPLETE_RETRY_MS",
    "AMQP_RECONNECT_MAX_MS",
    "AGENT_HEALTH_FILE",
};

static int setup(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        unsetenv(vars[i]);
    setenv("DBAGENT_TOKEN", "0123456789abcdef0123", 1);
    return 0;
}

static void test_defaults(void **state)
{
    (void)state;
    agent_cfg c;
    char err[256] = "";
    assert_int_equal(agent_cfg_load(&c, err, sizeof err), 0);
    assert_int_equal(c.workers, 4);
    assert_int_equal(c.heartbeat_ms, 500);
    assert_int_equal(c.retry_ttl_ms, 20000);
    assert_int_equal(c.grace_ms, 30000);
    assert_string_equal(c.dba_addr, "127.0.0.1:50051");
    assert_string_equal(c.health_file, "");
    assert_int_equal(c.mq.n_urls, 1);
    assert_int_equal(c.mq.queue_type, MQ_QUEUE_CLASSIC);
    assert_false(c.mq.tls);
    /* No AGENT_NAME: host-pid, which is unique per machine. */
    char suffix[32];
    snprintf(suffix, sizeof suffix, "-%d", (int)getpid());
    size_t n = strlen(c.name), m = strlen(suffix);
    assert_true(n > m && !strcmp(c.name + n - m, suffix));
    mq_opts_free(&c.mq);
}

static void test_values_are_read(void **state)
{
    (void)state;
    setenv("AGENT_NAME", "agent-7.b_c", 1);
    setenv("AGENT_MAX_PROCESSES", "32", 1);
    setenv("HEARTBEAT_INTERVAL_MS", "200", 1);
    setenv("RETRY_TTL_MS", "1500", 1);
    setenv("AMQP_URL", "amqp://u:p@127.0.0.1:5673/v", 1);
    agent_cfg c;
    char err[256] = "";
    assert_int_equal(agent_cfg_load(&c, err, sizeof err), 0);
    assert_string_equal(c.name, "agent-7.b_c");
    assert_int_equal(c.workers, 32);
    assert_int_equal(c.heartbeat_ms, 200);
    assert_int_equal(c.retry_ttl_ms, 1500);
    assert_string_equal(c.amqp_url, "amqp://u:p@127.0.0.1:5673/v");
    mq_opts_free(&c.mq);
}

static void test_several_brokers_and_quorum_queues(void **state)
{
    (void)state;
    setenv("AMQP_URL", "amqp://u:p@127.0.0.1:5673/v, amqp://u:p@127.0.0.2:5674/v", 1);
    setenv("AMQP_QUEUE_TYPE", "quorum", 1);
    agent_cfg c;
    char err[256] = "";
    assert_int_equal(agent_cfg_load(&c, err, sizeof err), 0);
    assert_int_equal(c.mq.n_urls, 2);
    assert_string_equal(c.mq.names[1], "127.0.0.2:5674");
    assert_int_equal(c.mq.queue_type, MQ_QUEUE_QUORUM);
    mq_opts_free(&c.mq);
}

static void refused(const char *var, const char *value, const char *words)
{
    if (value)
        setenv(var, value, 1);
    else
        unsetenv(var);
    agent_cfg c;
    char err[256] = "";
    assert_int_equal(agent_cfg_load(&c, err, sizeof err), -1);
    mq_opts_free(&c.mq);
    if (!strstr(err, var) || !strstr(err, words))
        fail_msg("%s=%s: error '%s' should name the variable and say '%s'", var,
                 value ? value : "(unset)", err, words);
    setup(NULL);
}

static void test_bad_values_are_refused(void **state)
{
    (void)state;
    refused("AGENT_MAX_PROCESSES", "0", "out of range");
    refused("AGENT_MAX_PROCESSES", "1025", "out of range");
    refused("AGENT_MAX_PROCESSES", "four", "not an integer");
    refused("AGENT_MAX_PROCESSES", "4x", "not an integer");
    refused("HEARTBEAT_INTERVAL_MS", "10", "out of range");
    refused("RETRY_TTL_MS", "0", "out of range");
    refused("AGENT_GRACE_MS", "-1", "out of range");
    refused("AGENT_NAME", "two words", "character");
    refused("AGENT_NAME", "x/y", "character");
    refused("AMQP_URL", "http://host", "not a valid");
    refused("AMQP_URL", "amqp://a:b@h/v,,amqp://a:b@i/v", "empty");
    refused("AMQP_QUEUE_TYPE", "stream", "neither classic nor quorum");
    refused("AMQP_TLS_CA", "/nonexistent/ca.pem", "no amqps://");
    refused("DBAGENT_TOKEN", NULL, "required");
    refused("DBAGENT_TOKEN", "short", "length");
    refused("DBAGENT_TLS_CA", "/nonexistent/ca.pem", "No such file");
    refused("DBAGENT_TLS_CLIENT_CERT", "/etc/hostname", "go together");
    refused("DBAGENT_TLS_SERVER_NAME", "db.example", "only over TLS");
    char long_name[AGENT_NAME_MAX + 2];
    memset(long_name, 'a', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    refused("AGENT_NAME", long_name, "length");
}

static void test_table_lists_every_variable(void **state)
{
    (void)state;
    agent_cfg c;
    cfg_entry t[AGENT_CFG_ENTRIES];
    size_t n = agent_cfg_table(&c, t);
    assert_int_equal(n, sizeof vars / sizeof vars[0]);
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(t[i].name, vars[i]);
        assert_non_null(t[i].help);
        assert_true(strlen(t[i].help) > 10);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_defaults, setup),
        cmocka_unit_test_setup(test_values_are_read, setup),
        cmocka_unit_test_setup(test_several_brokers_and_quorum_queues, setup),
        cmocka_unit_test_setup(test_bad_values_are_refused, setup),
        cmocka_unit_test_setup(test_table_lists_every_variable, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
