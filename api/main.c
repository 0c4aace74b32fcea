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
#include "streams.h"
#include "timeutil.h"
#include "waiters.h"

/* Set by the signal handler; read by main and by ensure_admin's pauses. A lock-free atomic is
 * async-signal-safe. */
static atomic_int stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    atomic_store(&stop_requested, 1);
}

/* One call to dbagent at start, retried while dbagent cannot answer; RPC_CANCELLED when told to
 * stop meanwhile. Any other failure but RPC_NOT_FOUND is logged. */
static int call_at_start(const char *path, const ProtobufCMessage *req,
                         const ProtobufCMessageDescriptor *desc, Calc__V1__UserReply **rep)
{
    backoff pause;
    backoff_init(&pause, 100, 2000);
    while (!atomic_load(&stop_requested)) {
        char err[256];
        int rc = rpc_call(dba, path, req, desc, (ProtobufCMessage **)rep,
                          (int)api_cfg.dba_timeout_ms, err, sizeof err);
        if (rc != RPC_UNAVAILABLE && rc != RPC_DEADLINE_EXCEEDED) {
            if (rc != RPC_OK && rc != RPC_NOT_FOUND)
                log_error("%s: %s", path, err);
            return rc;
        }
        log_warn("waiting for dbagent: %s", err);
        backoff_sleep(&pause, &stop_requested);
    }
    return RPC_CANCELLED;
}

/* Makes sure the configured admin exists with the configured password. When that password is
 * not the stored one (ADMIN_PASSWORD changed), the admin's sessions are revoked too; an
 * unchanged password keeps its hash and the sessions. */
static int ensure_admin(void)
{
    if (!api_cfg.admin_login[0])
        return 0;
    if (strlen(api_cfg.admin_password) < 8) {
        log_error("ADMIN_PASSWORD must have at least 8 characters");
        return -1;
    }
    Calc__V1__FindUserRequest find = CALC__V1__FIND_USER_REQUEST__INIT;
    find.login = (char *)api_cfg.admin_login;
    Calc__V1__UserReply *found = NULL, *rep = NULL;
    int rc = call_at_start(DBA_FIND_USER, &find.base, &calc__v1__user_reply__descriptor, &found);
    if (rc != RPC_OK && rc != RPC_NOT_FOUND)
        return -1;
    char hash[AUTH_HASH_MAX];
    Calc__V1__EnsureAdminRequest req = CALC__V1__ENSURE_ADMIN_REQUEST__INIT;
    req.login = (char *)api_cfg.admin_login;
    req.password_hash = hash;
    /* Nothing else hashes before the API serves: a slot is free. */
    if (found && auth_check_password(found->user->password_hash, api_cfg.admin_password) == 1) {
        snprintf(hash, sizeof hash, "%s", found->user->password_hash);
    } else if (auth_hash_password(api_cfg.admin_password, hash) != 0) {
        log_error("cannot hash ADMIN_PASSWORD");
        rc = -1;
        goto out;
    } else {
        req.revoke_sessions = found != NULL;
    }
    rc = call_at_start(DBA_ENSURE_ADMIN, &req.base, &calc__v1__user_reply__descriptor, &rep);
    if (rc == RPC_OK) {
        log_info("admin '%s' is user %lld%s", api_cfg.admin_login, (long long)rep->user->id,
                 req.revoke_sessions ? ": ADMIN_PASSWORD changed, its sessions are revoked" : "");
        protobuf_c_message_free_unpacked(&rep->base, NULL);
    }
out:
    if (found)
        protobuf_c_message_free_unpacked(&found->base, NULL);
    return rc == RPC_OK ? 0 : -1;
}

int main(int argc, char **argv)
{
    log_init("api");
    cfg_init_or_exit(argc, argv, "calc-api\nThe HTTP API of the arithmetic cluster.",
                     api_config_table, api_config_n);
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
    if (api_cfg.metrics_token[0] && strlen(api_cfg.metrics_token) < 16) {
        fprintf(stderr,
                "%s: configuration: METRICS_TOKEN must have 16 or more characters (or be empty)\n"
                "(see %s --help)\n",
                argv[0], argv[0]);
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
    streams_settings ss = {.keepalive_ms = api_cfg.stream_keepalive_ms,
                           .buffer_bytes = api_cfg.stream_buffer_bytes,
                           .lifetime_ms = api_cfg.stream_lifetime_s * 1000,
                           .watch_wait_ms = api_cfg.stream_watch_wait_ms,
                           .dba_timeout_ms = api_cfg.dba_timeout_ms};
    if (streams_start(&ss) < 0) {
        log_error("cannot start the threads of the event streams");
        goto out;
    }
    http_limits limits = {.per_address = (int)api_cfg.per_address_connections,
                          .read_timeout_ms = api_cfg.read_timeout_s * 1000};
    if (http_start(api_cfg.host, (int)api_cfg.port, (int)api_cfg.threads, &limits, api_routes,
                   api_n_routes, err, sizeof err) < 0) {
        log_error("%s", err);
        streams_stop();
        goto out;
    }
    if (waiters_start(api_cfg.wait_poll_ms, route_expression_reply) < 0) {
        log_error("cannot start the thread of waiting requests");
        http_stop();
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
