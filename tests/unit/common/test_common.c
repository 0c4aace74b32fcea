/* Unit tests of common/: the capped buffer, the configuration table, the gRPC wrapper. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "buf.h"
#include "calc.pb-c.h"
#include "config.h"
#include "rpc.h"
#include "temp_file.h"

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

static void buf_consumed_bytes_free_room_under_the_cap(void **state)
{
    (void)state;
    buf b;
    buf_init(&b, 6);
    assert_int_equal(buf_add(&b, "abcdef", 6), 0);
    buf_consume(&b, 4);
    assert_string_equal(b.data, "ef");
    assert_int_equal(buf_add(&b, "ghij", 4), 0);
    assert_string_equal(b.data, "efghij");
    assert_int_equal(buf_add(&b, "k", 1), -1);
    buf_consume(&b, 6);
    assert_int_equal(b.len, 0);
    assert_string_equal(b.data, "");
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

/* States are numbered 0..MAX_STATES-1; busy[i] is set while a handler holds state i. */
#define MAX_STATES 8
static atomic_int n_states, n_states_freed, busy[MAX_STATES];

static void *state_init(void *arg)
{
    (void)arg;
    int *id = malloc(sizeof *id);
    *id = atomic_fetch_add(&n_states, 1);
    return id;
}

static void state_fini(void *state)
{
    free(state);
    atomic_fetch_add(&n_states_freed, 1);
}

/* Answers with the number of the state it was lent; fails if another handler holds it. */
static int state_handler(rpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
    (void)m;
    int id = *(int *)rpc_thread_state(ctx);
    if (atomic_exchange(&busy[id], 1))
        return rpc_fail(ctx, RPC_INTERNAL, "state %d lent twice", id);
    struct timespec ts = {.tv_nsec = 200 * 1000}; /* hold it a while, so calls overlap */
    nanosleep(&ts, NULL);
    atomic_store(&busy[id], 0);
    Calc__V1__ClaimNodeReply *rep = rpc_alloc(ctx, sizeof *rep);
    calc__v1__claim_node_reply__init(rep);
    rep->expression_id = id;
    rep->op = "";
    *resp = &rep->base;
    return RPC_OK;
}

static const rpc_method methods[] = {
    {"/calc.v1.DbAgent/ClaimNode", &calc__v1__claim_node_request__descriptor, echo_handler, 1},
    {"/calc.v1.DbAgent/CompleteNode", &calc__v1__claim_node_request__descriptor, state_handler, 0},
};

/* Port 0 is not reported back by the wrapper: use a fixed high port, retrying on clash. */
static rpc_server *start_server(rpc_server_config *sc, char *addr, size_t addrlen)
{
    char err[256];
    rpc_server *srv = NULL;
    for (int port = 47000 + (int)(getpid() % 1000); !srv && port < 49000; port += 7) {
        snprintf(addr, addrlen, "127.0.0.1:%d", port);
        sc->addr = addr;
        srv = rpc_server_start(sc, err, sizeof err);
    }
    assert_non_null(srv);
    return srv;
}

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

#define LIMITED_TOKEN "limited-token-0123456789"

static void rpc_round_trip_and_status_codes(void **state)
{
    (void)state;
    rpc_global_init();
    char err[256];
    rpc_server_config sc = {.methods = methods, .n_methods = 1, .threads = 2, .token = TOKEN};
    char addr[32];
    rpc_server *srv = start_server(&sc, addr, sizeof addr);
    /* A second server on a port in use fails, rather than sharing the port's connections. */
    assert_null(rpc_server_start(&sc, err, sizeof err));
    assert_non_null(strstr(err, "cannot listen on"));

    rpc_client *good = rpc_client_new(addr, TOKEN),
               *bad = rpc_client_new(addr, "wrong-token-000000");
    Calc__V1__ClaimNodeReply *rep = NULL;
    assert_int_equal(call(good, "/calc.v1.DbAgent/ClaimNode", 21, &rep, err), RPC_OK);
    assert_int_equal(rep->expression_id, 42);
    assert_int_equal(rep->attempt, 4);
    assert_string_equal(rep->op, "agent-x");
    /* gRPC's clocks are cached per operation: the timeout it sends may run a few ms long. */
    assert_true(rep->delay_ms > 0 && rep->delay_ms <= 5100);
    protobuf_c_message_free_unpacked(&rep->base, NULL);

    rep = NULL;
    assert_int_equal(call(good, "/calc.v1.DbAgent/ClaimNode", -1, &rep, err), RPC_NOT_FOUND);
    assert_string_equal(err, "no node -1");
    assert_null(rep);
    /* Unknown methods are answered each time, not only the first. */
    for (int i = 0; i < 3; i++)
        assert_int_equal(call(good, "/calc.v1.DbAgent/Nope", 1, &rep, err), RPC_UNIMPLEMENTED);
    assert_int_equal(call(bad, "/calc.v1.DbAgent/ClaimNode", 1, &rep, err), RPC_UNAUTHENTICATED);
    /* Without the token, an unknown method is refused as a known one is. */
    assert_int_equal(call(bad, "/calc.v1.DbAgent/Nope", 1, &rep, err), RPC_UNAUTHENTICATED);

    rpc_client_free(good);
    rpc_client_free(bad);
    rpc_server_stop(srv);

    /* A limited token: the methods marked limited, nothing else, not even the unknown ones. */
    sc.n_methods = 2;
    sc.limited_token = LIMITED_TOKEN;
    srv = start_server(&sc, addr, sizeof addr);
    rpc_client *full = rpc_client_new(addr, TOKEN), *limited = rpc_client_new(addr, LIMITED_TOKEN);
    assert_int_equal(call(limited, "/calc.v1.DbAgent/ClaimNode", 21, &rep, err), RPC_OK);
    protobuf_c_message_free_unpacked(&rep->base, NULL);
    rep = NULL;
    assert_int_equal(call(limited, "/calc.v1.DbAgent/CompleteNode", 1, &rep, err),
                     RPC_PERMISSION_DENIED);
    assert_string_equal(err, "this token may not call /calc.v1.DbAgent/CompleteNode");
    assert_int_equal(call(limited, "/calc.v1.DbAgent/Nope", 1, &rep, err), RPC_PERMISSION_DENIED);
    /* The full token passes where the limited one stopped (this handler needs no state). */
    assert_int_equal(call(full, "/calc.v1.DbAgent/Nope", 1, &rep, err), RPC_UNIMPLEMENTED);
    rpc_client_free(full);
    rpc_client_free(limited);
    rpc_server_stop(srv);

    /* With the server gone, a call fails fast with UNAVAILABLE instead of hanging. */
    rpc_client *orphan = rpc_client_new(addr, TOKEN);
    assert_int_equal(call(orphan, "/calc.v1.DbAgent/ClaimNode", 1, &rep, err), RPC_UNAVAILABLE);
    rpc_client_free(orphan);
    rpc_global_shutdown();
}

typedef struct caller {
    rpc_client *client;
    int failures;
} caller;

static void *call_many(void *p)
{
    caller *c = p;
    char err[256];
    for (int i = 0; i < 50; i++) {
        Calc__V1__ClaimNodeReply *rep = NULL;
        if (call(c->client, "/calc.v1.DbAgent/CompleteNode", 1, &rep, err) != RPC_OK) {
            fprintf(stderr, "call %d: %s\n", i, err);
            c->failures++;
        }
        if (rep)
            protobuf_c_message_free_unpacked(&rep->base, NULL);
    }
    return NULL;
}

/* A handler's state is its own while it runs; a lone caller's calls reuse one warm state. */
static void rpc_states_are_lent_one_call_at_a_time(void **state)
{
    (void)state;
    rpc_global_init();
    char err[256];
    rpc_server_config sc = {.methods = methods,
                            .n_methods = 2,
                            .threads = 4,
                            .token = TOKEN,
                            .thread_init = state_init,
                            .thread_fini = state_fini};
    char addr[32];
    rpc_server *srv = start_server(&sc, addr, sizeof addr);
    rpc_client *one = rpc_client_new(addr, TOKEN);

    int64_t first = -1;
    for (int i = 0; i < 20; i++) {
        Calc__V1__ClaimNodeReply *rep = NULL;
        assert_int_equal(call(one, "/calc.v1.DbAgent/CompleteNode", 1, &rep, err), RPC_OK);
        if (first < 0)
            first = rep->expression_id;
        assert_int_equal(rep->expression_id, first);
        protobuf_c_message_free_unpacked(&rep->base, NULL);
    }

    /* More callers than workers, each on its own connection, as agents are. */
    enum { CALLERS = 8 };
    caller callers[CALLERS];
    pthread_t threads[CALLERS];
    for (int i = 0; i < CALLERS; i++) {
        callers[i] = (caller){.client = rpc_client_new(addr, TOKEN)};
        pthread_create(&threads[i], NULL, call_many, &callers[i]);
    }
    for (int i = 0; i < CALLERS; i++) {
        pthread_join(threads[i], NULL);
        assert_int_equal(callers[i].failures, 0);
        rpc_client_free(callers[i].client);
    }

    rpc_client_free(one);
    rpc_server_stop(srv);
    assert_int_equal(atomic_load(&n_states), 4);
    assert_int_equal(atomic_load(&n_states_freed), 4);
    rpc_global_shutdown();
}

typedef struct sharer {
    rpc_client *client;
    int first_node, failures;
} sharer;

/* Each call's answer must be its own: the echo handler answers node n with expression 2n. */
static void *share_calls(void *p)
{
    sharer *s = p;
    char err[256];
    /* The same method under another string: found by its text. */
    char *path = strdup("/calc.v1.DbAgent/ClaimNode");
    for (int i = 0; i < 100; i++) {
        int64_t node = s->first_node + i;
        Calc__V1__ClaimNodeReply *rep = NULL;
        int rc = call(s->client, i % 2 ? path : "/calc.v1.DbAgent/ClaimNode", node, &rep, err);
        if (rc != RPC_OK || rep->expression_id != 2 * node)
            s->failures++;
        if (rep)
            protobuf_c_message_free_unpacked(&rep->base, NULL);
        /* A failed call gives its queue back clean as well. */
        if (i % 10 == 0 &&
            call(s->client, "/calc.v1.DbAgent/Nope", node, &rep, err) != RPC_UNIMPLEMENTED)
            s->failures++;
    }
    free(path);
    return NULL;
}

/* One client shared by several threads, as an agent's workers share theirs. */
static void rpc_client_shared_by_threads(void **state)
{
    (void)state;
    rpc_global_init();
    rpc_server_config sc = {.methods = methods, .n_methods = 1, .threads = 2, .token = TOKEN};
    char addr[32];
    rpc_server *srv = start_server(&sc, addr, sizeof addr);
    rpc_client *shared = rpc_client_new(addr, TOKEN);
    enum { SHARERS = 8 };
    sharer sharers[SHARERS];
    pthread_t threads[SHARERS];
    for (int i = 0; i < SHARERS; i++) {
        sharers[i] = (sharer){.client = shared, .first_node = 1000 * (i + 1)};
        pthread_create(&threads[i], NULL, share_calls, &sharers[i]);
    }
    for (int i = 0; i < SHARERS; i++) {
        pthread_join(threads[i], NULL);
        assert_int_equal(sharers[i].failures, 0);
    }
    rpc_client_free(shared);
    rpc_server_stop(srv);
    rpc_global_shutdown();
}

/* TLS settings are checked before anything starts, and err names the variable at fault. */
static void rpc_tls_settings_are_checked(void **state)
{
    (void)state;
    char err[256], pem[64], junk[64];
    char keyf[64];
    temp_file(pem, sizeof pem, "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
    temp_file(keyf, sizeof keyf, "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n");
    temp_file(junk, sizeof junk, "not a certificate\n");
    rpc_tls none = {0};
    assert_int_equal(rpc_tls_check(&none, 1, "X", err, sizeof err), 0);
    assert_int_equal(rpc_tls_check(&none, 0, "X", err, sizeof err), 0);
    assert_false(rpc_tls_enabled(&none, 1) || rpc_tls_enabled(&none, 0));

    rpc_tls server = {.cert = pem, .key = keyf, .ca = pem};
    assert_int_equal(rpc_tls_check(&server, 1, "X", err, sizeof err), 0);
    assert_true(rpc_tls_enabled(&server, 1));
    rpc_tls client = {.ca = pem, .cert = pem, .key = keyf, .server_name = "db.example"};
    assert_int_equal(rpc_tls_check(&client, 0, "X", err, sizeof err), 0);
    assert_true(rpc_tls_enabled(&client, 0));

    struct {
        rpc_tls t;
        int server;
        const char *says;
    } bad[] = {
        {{.cert = pem}, 1, "X_CERT and X_KEY go together"},
        {{.key = keyf}, 1, "X_CERT and X_KEY go together"},
        {{.ca = pem}, 1, "X_CLIENT_CA asks clients for certificates, which needs TLS"},
        {{.cert = pem, .key = keyf}, 0, "X_CLIENT_CERT is for TLS, which X_CA turns on"},
        {{.server_name = "db"}, 0, "X_SERVER_NAME is checked only over TLS"},
        {{.cert = "/nonexistent/cert.pem", .key = keyf},
         1,
         "X_CERT /nonexistent/cert.pem: No such"},
        {{.cert = pem, .key = junk}, 1, "X_KEY " /* path */},
        {{.cert = pem, .key = pem}, 1, "holds no PEM private key"},
        {{.cert = keyf, .key = keyf}, 1, "X_CERT "},
        {{.ca = junk}, 0, "holds no PEM certificate"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        assert_int_equal(rpc_tls_check(&bad[i].t, bad[i].server, "X", err, sizeof err), -1);
        if (!strstr(err, bad[i].says))
            fail_msg("case %zu: '%s' does not say '%s'", i, err, bad[i].says);
    }
    /* A client whose files vanished after the check fails to open, with the reason. */
    rpc_global_init();
    rpc_tls gone = {.ca = "/nonexistent/ca.pem"};
    assert_null(rpc_client_open("127.0.0.1:1", TOKEN, &gone, err, sizeof err));
    assert_non_null(strstr(err, "/nonexistent/ca.pem"));
    rpc_global_shutdown();
    unlink(pem);
    unlink(keyf);
    unlink(junk);
}

/* Runs scripts/tls-certs DIR NAME [names]; asserts it worked. */
static void make_cert(const char *dir, const char *name, const char *names)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s/scripts/tls-certs' '%s' %s %s >/dev/null", CALC_SOURCE_DIR, dir,
             name, names);
    assert_int_equal(system(cmd), 0);
}

/* gRPC over TLS: the right CA passes, plaintext and a stranger's CA do not; with a CA for
 * clients, only a client with a certificate it signed gets in. */
static void rpc_tls_round_trips(void **state)
{
    (void)state;
    char dir[] = "/tmp/calc-test-rpc-tls-XXXXXX", other[] = "/tmp/calc-test-rpc-tls2-XXXXXX";
    assert_non_null(mkdtemp(dir));
    assert_non_null(mkdtemp(other));
    make_cert(dir, "server", "localhost 127.0.0.1");
    make_cert(dir, "client", "");
    make_cert(other, "stranger", "localhost 127.0.0.1");
    char ca[128], cert[128], key[128], ccert[128], ckey[128], stranger_ca[128], scert[128],
        skey[128];
    snprintf(ca, sizeof ca, "%s/ca.pem", dir);
    snprintf(cert, sizeof cert, "%s/server.pem", dir);
    snprintf(key, sizeof key, "%s/server.key", dir);
    snprintf(ccert, sizeof ccert, "%s/client.pem", dir);
    snprintf(ckey, sizeof ckey, "%s/client.key", dir);
    snprintf(stranger_ca, sizeof stranger_ca, "%s/ca.pem", other);
    snprintf(scert, sizeof scert, "%s/stranger.pem", other);
    snprintf(skey, sizeof skey, "%s/stranger.key", other);

    rpc_global_init();
    char err[256], addr[32];
    Calc__V1__ClaimNodeReply *rep = NULL;
    rpc_tls server_tls = {.cert = cert, .key = key};
    rpc_server_config sc = {
        .methods = methods, .n_methods = 1, .threads = 2, .token = TOKEN, .tls = &server_tls};
    rpc_server *srv = start_server(&sc, addr, sizeof addr);
    rpc_tls good_tls = {.ca = ca}, stranger_tls = {.ca = stranger_ca};
    rpc_client *good = rpc_client_open(addr, TOKEN, &good_tls, err, sizeof err),
               *plain = rpc_client_new(addr, TOKEN),
               *fooled = rpc_client_open(addr, TOKEN, &stranger_tls, err, sizeof err);
    assert_non_null(good);
    assert_non_null(fooled);
    assert_int_equal(call(good, "/calc.v1.DbAgent/ClaimNode", 21, &rep, err), RPC_OK);
    protobuf_c_message_free_unpacked(&rep->base, NULL);
    rep = NULL;
    assert_int_equal(call(plain, "/calc.v1.DbAgent/ClaimNode", 21, &rep, err), RPC_UNAVAILABLE);
    assert_int_equal(call(fooled, "/calc.v1.DbAgent/ClaimNode", 21, &rep, err), RPC_UNAVAILABLE);
    fprintf(stderr, "a stranger's CA: %s\n", err);
    rpc_client_free(good);
    rpc_client_free(plain);
    rpc_client_free(fooled);
    rpc_server_stop(srv);

    /* Mutual TLS. */
    server_tls.ca = ca;
    srv = start_server(&sc, addr, sizeof addr);
    rpc_tls with_cert = {.ca = ca, .cert = ccert, .key = ckey},
            strangers_cert = {.ca = ca, .cert = scert, .key = skey};
    rpc_client *member = rpc_client_open(addr, TOKEN, &with_cert, err, sizeof err),
               *anonymous = rpc_client_open(addr, TOKEN, &good_tls, err, sizeof err),
               *intruder = rpc_client_open(addr, TOKEN, &strangers_cert, err, sizeof err);
    assert_int_equal(call(member, "/calc.v1.DbAgent/ClaimNode", 21, &rep, err), RPC_OK);
    protobuf_c_message_free_unpacked(&rep->base, NULL);
    rep = NULL;
    assert_int_equal(call(anonymous, "/calc.v1.DbAgent/ClaimNode", 21, &rep, err), RPC_UNAVAILABLE);
    fprintf(stderr, "no client certificate: %s\n", err);
    assert_int_equal(call(intruder, "/calc.v1.DbAgent/ClaimNode", 21, &rep, err), RPC_UNAVAILABLE);
    rpc_client_free(member);
    rpc_client_free(anonymous);
    rpc_client_free(intruder);
    rpc_server_stop(srv);
    rpc_global_shutdown();
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s'", dir, other);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(buf_respects_its_cap),
        cmocka_unit_test(buf_consumed_bytes_free_room_under_the_cap),
        cmocka_unit_test(config_validates_every_entry),
        cmocka_unit_test(rpc_round_trip_and_status_codes),
        cmocka_unit_test(rpc_states_are_lent_one_call_at_a_time),
        cmocka_unit_test(rpc_client_shared_by_threads),
        cmocka_unit_test(rpc_tls_settings_are_checked),
        cmocka_unit_test(rpc_tls_round_trips),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
