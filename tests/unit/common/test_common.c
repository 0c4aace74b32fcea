/* Unit tests of common/: the capped buffer, the configuration table, the gRPC wrapper. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <unistd.h>

#include <cmocka.h>

#include "buf.h"
#include "calc.pb-c.h"
#include "config.h"
#include "rpc.h"

static void buf_respects_its_cap(void **state)
{
    (void)state;
    buf b;
    buf_init(&b, 8);
    assert_int_equal(buf_add(&b, "1234", 4), 0);
    assert_int_equal(buf_printf(&b, "%d", 5678), 0);
    assert_string_equal(b.data, "12345678");
    assert_int_equal(buf_add(&b, "9", 1), -1);
    assert_int_equal(buf_printf(&b, "x"), -1);
    assert_int_equal(b.len, 8);
    char *s = buf_take(&b);
    assert_string_equal(s, "12345678");
    assert_int_equal(b.len, 0);
    free(s);
    buf_free(&b);
}

static int64_t cfg_n;
static const char *cfg_s, *cfg_secret;
static const cfg_entry table[] = {
    {"CALC_TEST_N", CFG_INT, "5", 1, 10, "a number", &cfg_n},
    {"CALC_TEST_S", CFG_STR, "abc", 1, 4, "a string", &cfg_s},
    {"CALC_TEST_SECRET", CFG_SECRET, NULL, 16, 64, "a secret", &cfg_secret},
};

static void config_validates_every_entry(void **state)
{
    (void)state;
    char err[256];
    unsetenv("CALC_TEST_N");
    unsetenv("CALC_TEST_S");
    unsetenv("CALC_TEST_SECRET");
    assert_int_equal(cfg_load(table, 3, err, sizeof err), -1);
    assert_non_null(strstr(err, "CALC_TEST_SECRET is required"));

    setenv("CALC_TEST_SECRET", "short", 1);
    assert_int_equal(cfg_load(table, 3, err, sizeof err), -1);
    assert_non_null(strstr(err, "CALC_TEST_SECRET: length 5"));

    setenv("CALC_TEST_SECRET", "0123456789abcdef", 1);
    assert_int_equal(cfg_load(table, 3, err, sizeof err), 0);
    assert_int_equal(cfg_n, 5);
    assert_string_equal(cfg_s, "abc");

    setenv("CALC_TEST_N", "11", 1);
    assert_int_equal(cfg_load(table, 3, err, sizeof err), -1);
    assert_non_null(strstr(err, "CALC_TEST_N: 11 is out of range 1..10"));
    setenv("CALC_TEST_N", "7x", 1);
    assert_int_equal(cfg_load(table, 3, err, sizeof err), -1);
    assert_non_null(strstr(err, "not an integer"));
    setenv("CALC_TEST_N", "7", 1);
    assert_int_equal(cfg_load(table, 3, err, sizeof err), 0);
    assert_int_equal(cfg_n, 7);
}

/* ---- the gRPC wrapper, server and client in one process ---- */

#define TOKEN "unit-test-token-0123"

static int echo_handler(rpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
    const Calc__V1__ClaimNodeRequest *req = (const void *)m;
    if (req->node_id < 0)
        return rpc_fail(ctx, RPC_NOT_FOUND, "no node %lld", (long long)req->node_id);
    Calc__V1__ClaimNodeReply *rep = rpc_alloc(ctx, sizeof *rep);
    calc__v1__claim_node_reply__init(rep);
    rep->expression_id = req->node_id * 2;
    rep->attempt = req->epoch + 1;
    rep->op = rpc_strdup(ctx, req->agent);
    /* The caller's deadline is visible to the handler. */
    rep->delay_ms = (int32_t)rpc_time_left_ms(ctx);
    *resp = &rep->base;
    return RPC_OK;
}

static const rpc_method methods[] = {
    {"/calc.v1.DbAgent/ClaimNode", &calc__v1__claim_node_request__descriptor, echo_handler},
};

static int call(rpc_client *c, const char *path, int64_t node, Calc__V1__ClaimNodeReply **rep,
                char *err)
{
    Calc__V1__ClaimNodeRequest req = CALC__V1__CLAIM_NODE_REQUEST__INIT;
    req.node_id = node;
    req.epoch = 3;
    req.agent = "agent-x";
    return rpc_call(c, path, &req.base, &calc__v1__claim_node_reply__descriptor,
                    (ProtobufCMessage **)rep, 5000, err, 256);
}

static void rpc_round_trip_and_status_codes(void **state)
{
    (void)state;
    rpc_global_init();
    char err[256];
    rpc_server_config sc = {
        .addr = "127.0.0.1:0", .methods = methods, .n_methods = 1, .threads = 2, .token = TOKEN};
    /* Port 0 is not reported back by the wrapper: use a fixed high port, retrying on clash. */
    rpc_server *srv = NULL;
    char addr[32];
    for (int port = 47000 + (int)(getpid() % 1000); !srv && port < 49000; port += 7) {
        snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
        sc.addr = addr;
        srv = rpc_server_start(&sc, err, sizeof err);
    }
    assert_non_null(srv);

    rpc_client *good = rpc_client_new(addr, TOKEN),
               *bad = rpc_client_new(addr, "wrong-token-000000");
    Calc__V1__ClaimNodeReply *rep = NULL;
    assert_int_equal(call(good, "/calc.v1.DbAgent/ClaimNode", 21, &rep, err), RPC_OK);
    assert_int_equal(rep->expression_id, 42);
    assert_int_equal(rep->attempt, 4);
    assert_string_equal(rep->op, "agent-x");
    assert_true(rep->delay_ms > 0 && rep->delay_ms <= 5000);
    protobuf_c_message_free_unpacked(&rep->base, NULL);

    rep = NULL;
    assert_int_equal(call(good, "/calc.v1.DbAgent/ClaimNode", -1, &rep, err), RPC_NOT_FOUND);
    assert_string_equal(err, "no node -1");
    assert_null(rep);
    assert_int_equal(call(good, "/calc.v1.DbAgent/Nope", 1, &rep, err), RPC_UNIMPLEMENTED);
    assert_int_equal(call(bad, "/calc.v1.DbAgent/ClaimNode", 1, &rep, err), RPC_UNAUTHENTICATED);

    rpc_client_free(good);
    rpc_client_free(bad);
    rpc_server_stop(srv);

    /* With the server gone, a call fails fast with UNAVAILABLE instead of hanging. */
    rpc_client *orphan = rpc_client_new(addr, TOKEN);
    assert_int_equal(call(orphan, "/calc.v1.DbAgent/ClaimNode", 1, &rep, err), RPC_UNAVAILABLE);
    rpc_client_free(orphan);
    rpc_global_shutdown();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(buf_respects_its_cap),
        cmocka_unit_test(config_validates_every_entry),
        cmocka_unit_test(rpc_round_trip_and_status_codes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
