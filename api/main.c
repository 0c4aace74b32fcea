/*
 * calc-api: the HTTP API. Accepts expressions, plans them and stores them through dbagent;
 * its dispatcher sends ready nodes to RabbitMQ and its monitor takes work back from silent
 * agents.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api.h"
#include "auth.h"
#include "backoff.h"
#include "config.h"
#include "dba.h"
#include "dispatcher.h"
#include "log.h"
#include "methods.h"
#include "rpc.h"
#include "timeutil.h"

static const cfg_entry config_table[] = {
    {"API_HOST", CFG_STR, "0.0.0.0", 1, 64, "address to serve HTTP on", &api_cfg.host},
    {"API_PORT", CFG_INT, "8080", 1, 65535, "port to serve HTTP on", &api_cfg.port},
    {"API_THREADS", CFG_INT, "16", 1, 256, "HTTP worker threads", &api_cfg.threads},
    {"DBAGENT_ADDR", CFG_STR, "127.0.0.1:50051", 1, 255, "dbagent address (host:port)",
     &api_cfg.dba_addr},
    {"DBAGENT_TOKEN", CFG_SECRET, NULL, 16, 256, "token for dbagent (its DBAGENT_TOKEN)",
     &api_cfg.dba_token},
    RPC_TLS_CLIENT_CONFIG("DBAGENT_TLS", &api_cfg.dba_tls),
    DBAGENT_TIMEOUT_CONFIG("deadline of one call to dbagent (under the HTTP connection timeout)",
                           &api_cfg.dba_timeout_ms),
    MQ_CONFIG(&api_cfg),
    {"AUTH_SECRET", CFG_SECRET, NULL, 32, 1024, "HS256 key for access tokens", &api_cfg.secret},
    {"AUTH_SALT", CFG_SECRET, "", 0, 1024, "pepper mixed into every password hash",
     &api_cfg.pepper},
    {"ADMIN_LOGIN", CFG_STR, "", 0, 64, "the first admin's login (none when empty)",
     &api_cfg.admin_login},
    {"ADMIN_PASSWORD", CFG_SECRET, "", 0, 128, "the first admin's password",
     &api_cfg.admin_password},
    {"ACCESS_TOKEN_TTL_S", CFG_INT, "900", 10, 86400, "access token lifetime",
     &api_cfg.access_ttl_s},
    {"REFRESH_TOKEN_TTL_S", CFG_INT, "2592000", 60, 31536000, "refresh token lifetime",
     &api_cfg.refresh_ttl_s},
    {"MAX_CONCURRENT_HASHING", CFG_INT, "2", 1, 64, "password hashes computed at once",
     &api_cfg.max_hashing},
    {"AUTH_ADDRESS_BUDGET", CFG_INT, "120", 1, 1000000,
     "login and register attempts one client address may make per AUTH_ADDRESS_WINDOW_S (429"
     " beyond; counted in PostgreSQL, shared by every API)",
     &api_cfg.auth_budget},
    {"AUTH_ADDRESS_WINDOW_S", CFG_INT, "60", 1, 86400, "the window of AUTH_ADDRESS_BUDGET",
     &api_cfg.auth_window_s},
    {"API_MAX_CONNECTIONS_PER_ADDRESS", CFG_INT, "128", 1, 4096,
     "HTTP connections one client address may hold at once (more are refused)",
     &api_cfg.per_address_connections},
    {"API_REQUEST_READ_TIMEOUT_S", CFG_INT, "10", 1, 59,
     "a connection must send a whole request (headers and body) within this long of opening or"
     " of its previous reply, or it is closed",
     &api_cfg.read_timeout_s},
    {"HEARTBEAT_TIMEOUT_MS", CFG_INT, "10000", 100, 3600000,
     "an agent silent this long loses its running nodes", &api_cfg.heartbeat_timeout_ms},
    {"QUEUED_TIMEOUT_MS", CFG_INT, "120000", 100, 86400000,
     "a queued node nobody claimed this long is dispatched again", &api_cfg.queued_timeout_ms},
    {"MONITOR_INTERVAL_MS", CFG_INT, "1000", 50, 600000, "how often the monitor looks",
     &api_cfg.monitor_interval_ms},
    {"RETRY_TTL_MS", CFG_INT, "20000", 0, 86400000,
     "time a message waits in the retry queue (must match every component)", &api_cfg.retry_ttl_ms},
    {"EXPR_MAX_LENGTH", CFG_INT, "4096", 1, 1048576, "longest expression text in bytes",
     &api_cfg.max_text},
    {"EXPR_MAX_NODES", CFG_INT, "1000", 1, 100000, "most operations in one expression",
     &api_cfg.max_nodes},
    {"EXPR_MAX_DEPTH", CFG_INT, "100", 1, 10000, "deepest parenthesis nesting", &api_cfg.max_depth},
    {"MAX_UNFINISHED", CFG_INT, "1000", 1, 1000000, "unfinished expressions one user may have",
     &api_cfg.max_unfinished},
};
#define N_CONFIG (sizeof config_table / sizeof config_table[0])

/* Set by the signal handler; read by main and by ensure_admin's pauses. A lock-free atomic is
 * async-signal-safe. */
static atomic_int stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    atomic_store(&stop_requested, 1);
}

/* Makes sure the configured admin exists; retried until dbagent answers. */
static int ensure_admin(void)
{
    if (!api_cfg.admin_login[0])
        return 0;
    if (strlen(api_cfg.admin_password) < 8) {
        log_error("ADMIN_PASSWORD must have at least 8 characters");
        return -1;
    }
    char hash[AUTH_HASH_MAX];
    /* Nothing else hashes before the API serves: a slot is free. */
    if (auth_hash_password(api_cfg.admin_password, hash) != 0) {
        log_error("cannot hash ADMIN_PASSWORD");
        return -1;
    }
    Calc__V1__EnsureAdminRequest req = CALC__V1__ENSURE_ADMIN_REQUEST__INIT;
    req.login = (char *)api_cfg.admin_login;
    req.password_hash = hash;
    backoff pause;
    backoff_init(&pause, 100, 2000);
    while (!atomic_load(&stop_requested)) {
        Calc__V1__UserReply *rep = NULL;
        char err[256];
        int rc = rpc_call(dba, DBA_ENSURE_ADMIN, &req.base, &calc__v1__user_reply__descriptor,
                          (ProtobufCMessage **)&rep, (int)api_cfg.dba_timeout_ms, err, sizeof err);
        if (rc == RPC_OK) {
            log_info("admin '%s' is user %lld", api_cfg.admin_login, (long long)rep->user->id);
            protobuf_c_message_free_unpacked(&rep->base, NULL);
            return 0;
        }
        if (rc != RPC_UNAVAILABLE && rc != RPC_DEADLINE_EXCEEDED) {
            log_error("EnsureAdmin: %s", err);
            return -1;
        }
        log_warn("waiting for dbagent: %s", err);
        backoff_sleep(&pause, &stop_requested);
    }
    return -1;
}

int main(int argc, char **argv)
{
    log_init("api");
    cfg_init_or_exit(argc, argv, "calc-api\nThe HTTP API of the arithmetic cluster.", config_table,
                     N_CONFIG);
    char err[512];
    mq_settings ms = {.url_list = api_cfg.amqp_url,
                      .queue_type = api_cfg.amqp_queue_type,
                      .tls_ca = api_cfg.amqp_tls_ca,
                      .tls_cert = api_cfg.amqp_tls_cert,
                      .tls_key = api_cfg.amqp_tls_key,
                      .retry_ttl_ms = (int)api_cfg.retry_ttl_ms};
    /* Checked before anything starts: a setting we cannot honour must not wait for use. */
    if (api_cfg.dba_timeout_ms >= HTTP_CONNECTION_TIMEOUT_S * 1000) {
        fprintf(stderr,
                "%s: configuration: DBAGENT_TIMEOUT_MS=%lld: must be under the HTTP connection "
                "timeout (%d s), or a reply could find its client gone\n(see %s --help)\n",
                argv[0], (long long)api_cfg.dba_timeout_ms, HTTP_CONNECTION_TIMEOUT_S, argv[0]);
        return 64;
    }
    if (rpc_tls_check(&api_cfg.dba_tls, 0, "DBAGENT_TLS", err, sizeof err) < 0 ||
        mq_opts_init(&api_cfg.mq, &ms, err, sizeof err) < 0) {
        fprintf(stderr, "%s: configuration: %s\n(see %s --help)\n", argv[0], err, argv[0]);
        mq_opts_free(&api_cfg.mq);
        return 64;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (auth_init(api_cfg.secret, api_cfg.pepper, (int)api_cfg.access_ttl_s,
                  (int)api_cfg.max_hashing) < 0) {
        log_error("cannot initialise libsodium");
        return 1;
    }
    http_authenticate = auth_verify_access;
    rpc_global_init();
    int rc = 1;
    if (dba_open(api_cfg.dba_addr, api_cfg.dba_token, &api_cfg.dba_tls, err, sizeof err) < 0) {
        log_error("dbagent %s: %s", api_cfg.dba_addr, err);
        goto out;
    }
    if (ensure_admin() < 0) {
        /* Told to stop while waiting for dbagent: a clean stop, not a failure. */
        if (atomic_load(&stop_requested))
            rc = 0;
        goto out;
    }
    http_limits limits = {.per_address = (int)api_cfg.per_address_connections,
                          .read_timeout_ms = api_cfg.read_timeout_s * 1000};
    if (http_start(api_cfg.host, (int)api_cfg.port, (int)api_cfg.threads, &limits, api_routes,
                   api_n_routes, err, sizeof err) < 0) {
        log_error("%s", err);
        goto out;
    }
    dispatcher_start();
    monitor_start();
    log_info("serving HTTP on %s:%lld", api_cfg.host, (long long)api_cfg.port);
    while (!atomic_load(&stop_requested))
        time_sleep_ms(100, &stop_requested);
    log_info("stopping: finishing the requests in flight");
    http_stop();
    dispatcher_stop();
    monitor_stop();
    rc = 0;
out:
    dba_close();
    rpc_global_shutdown();
    mq_opts_free(&api_cfg.mq);
    log_info("stopped");
    return rc;
}
