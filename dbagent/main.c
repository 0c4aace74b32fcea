/*
 * calc-dbagent: the system of record. The only PostgreSQL client of the cluster; serves the
 * DbAgent gRPC service to the API and the agents.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "batch.h"
#include "calc.pb-c.h"
#include "config.h"
#include "db.h"
#include "eventwake.h"
#include "handlers.h"
#include "log.h"
#include "mem.h"
#include "methods.h"
#include "migrations.h"
#include "ready.h"
#include "retention.h"
#include "rpc.h"
#include "timeutil.h"

static struct {
    const char *db_host, *db_port, *db_user, *db_password, *db_name, *db_sslmode, *db_session;
    const char *host, *token, *agent_token;
    rpc_tls tls;
    int64_t port, threads, batches, max_attempts, migrate;
    retention_settings retention;
} cfg;

static const cfg_entry config_table[] = {
    {"DB_HOST", CFG_STR, "127.0.0.1", 1, 1024,
     "PostgreSQL host, or several separated by commas (tried in turn; see DB_TARGET_SESSION_ATTRS)",
     &cfg.db_host},
    {"DB_PORT", CFG_STR, "5432", 1, 1024,
     "PostgreSQL port, or one per host of DB_HOST separated by commas", &cfg.db_port},
    {"DB_USERNAME", CFG_STR, "postgres", 1, 63, "PostgreSQL user", &cfg.db_user},
    {"DB_PASSWORD", CFG_SECRET, "", 0, 255, "PostgreSQL password", &cfg.db_password},
    {"DB_NAME", CFG_STR, "calculator_db", 1, 63, "PostgreSQL database", &cfg.db_name},
    {"DB_SSLMODE", CFG_STR, "disable", 1, 32, "libpq sslmode", &cfg.db_sslmode},
    {"DB_TARGET_SESSION_ATTRS", CFG_STR, "read-write", 1, 32,
     "libpq target_session_attrs: read-write connects only to a writable server, so of several"
     " hosts the primary is used",
     &cfg.db_session},
    {"DBAGENT_HOST", CFG_STR, "127.0.0.1", 1, 255,
     "address to serve gRPC on (0.0.0.0: every interface, for callers on other machines)",
     &cfg.host},
    {"DBAGENT_PORT", CFG_INT, "50051", 1, 65535, "port to serve gRPC on", &cfg.port},
    {"DBAGENT_TOKEN", CFG_SECRET, NULL, 16, 256, "token that may call every method (the API's)",
     &cfg.token},
    {"DBAGENT_AGENT_TOKEN", CFG_SECRET, "", 0, 256,
     "token that may call only what an agent needs: ClaimNode, CompleteNode, Heartbeat"
     " (none when empty; 16+ characters otherwise)",
     &cfg.agent_token},
    {"DBAGENT_TLS_CERT", CFG_STR, "", 0, 4096,
     "PEM certificate (chain) to serve gRPC over TLS with; plaintext is then refused",
     &cfg.tls.cert},
    {"DBAGENT_TLS_KEY", CFG_STR, "", 0, 4096, "PEM private key of DBAGENT_TLS_CERT", &cfg.tls.key},
    {"DBAGENT_TLS_CLIENT_CA", CFG_STR, "", 0, 4096,
     "PEM CA: callers must present a certificate it signed (mutual TLS; needs DBAGENT_TLS_CERT)",
     &cfg.tls.ca},
    {"DBAGENT_THREADS", CFG_INT, "16", 1, 256,
     "gRPC worker threads, one PostgreSQL connection each", &cfg.threads},
    {"DBAGENT_NODE_BATCHES", CFG_INT, "2", 1, 256,
     "transactions of ClaimNode/CompleteNode calls in PostgreSQL at once; calls that arrive"
     " meanwhile wait and go together in the next one",
     &cfg.batches},
    {"MAX_ATTEMPTS", CFG_INT, "5", 1, 1000, "claims of one node before it fails",
     &cfg.max_attempts},
    {"DBAGENT_MIGRATE", CFG_INT, "1", 0, 1, "apply pending migrations at start (1) or not (0)",
     &cfg.migrate},
    {"RETENTION_INTERVAL_MS", CFG_INT, "600000", 0, 86400000,
     "retention: a pass at start, then one every this many ms (0: nothing is ever deleted;"
     " else 100 or more); of several dbagents, one at a time runs it",
     &cfg.retention.interval_ms},
    {"RETENTION_EXPRESSIONS_S", CFG_INT, "2592000", 0, 315360000,
     "delete expressions finished longer ago than this, with their nodes and events (0: keep;"
     " else 60 or more)",
     &cfg.retention.expressions_s},
    {"RETENTION_AGENTS_S", CFG_INT, "86400", 0, 315360000,
     "delete agents silent this long and holding no running node (0: keep; else 60 or more)",
     &cfg.retention.agents_s},
    {"RETENTION_REFRESH_TOKENS_S", CFG_INT, "86400", 0, 315360000,
     "delete refresh tokens this long after they expired (0: keep)", &cfg.retention.tokens_s},
    {"RETENTION_BATCH", CFG_INT, "500", 1, 10000,
     "retention: rows deleted per transaction (an expression counts with its nodes)",
     &cfg.retention.batch},
    {"RETENTION_PAUSE_MS", CFG_INT, "100", 0, 60000, "retention: pause between two transactions",
     &cfg.retention.pause_ms},
};
#define N_CONFIG (sizeof config_table / sizeof config_table[0])

/* L: an agent's method, which DBAGENT_AGENT_TOKEN may call too. */
#define M(path, name, req)                                                                         \
    {                                                                                              \
        path, &calc__v1__##req##__descriptor, h_##name, 0                                          \
    }
#define L(path, name, req)                                                                         \
    {                                                                                              \
        path, &calc__v1__##req##__descriptor, h_##name, 1                                          \
    }
static const rpc_method methods[] = {
    M(DBA_CREATE_USER, create_user, create_user_request),
    M(DBA_FIND_USER, find_user, find_user_request),
    M(DBA_ENSURE_ADMIN, ensure_admin, ensure_admin_request),
    M(DBA_STORE_REFRESH_TOKEN, store_refresh_token, store_refresh_token_request),
    M(DBA_ROTATE_REFRESH_TOKEN, rotate_refresh_token, rotate_refresh_token_request),
    M(DBA_REVOKE_REFRESH_FAMILY, revoke_refresh_family, revoke_refresh_family_request),
    M(DBA_CREATE_EXPRESSION, create_expression, create_expression_request),
    M(DBA_GET_EXPRESSION, get_expression, get_expression_request),
    M(DBA_GET_EXPRESSIONS, get_expressions, get_expressions_request),
    M(DBA_LIST_EXPRESSIONS, list_expressions, list_expressions_request),
    M(DBA_CANCEL_EXPRESSION, cancel_expression, get_expression_request),
    M(DBA_TAKE_READY, take_ready, take_ready_request),
    M(DBA_MARK_QUEUED, mark_queued, mark_queued_request),
    L(DBA_CLAIM_NODE, claim_node, claim_node_request),
    L(DBA_COMPLETE_NODE, complete_node, complete_node_request),
    M(DBA_REQUEUE_STALE, requeue_stale, requeue_stale_request),
    L(DBA_HEARTBEAT, heartbeat, heartbeat_request),
    M(DBA_LIST_AGENTS, list_agents, list_agents_request),
    M(DBA_GET_DURATIONS, get_durations, empty),
    M(DBA_GET_STATS, get_stats, empty),
    M(DBA_SET_DURATIONS, set_durations, set_durations_request),
    M(DBA_LIST_EVENTS, list_events, list_events_request),
    M(DBA_CHANGE_PASSWORD, change_password, change_password_request),
    M(DBA_LIMIT_LOGIN, limit_login, limit_login_request),
    M(DBA_RECORD_LOGIN, record_login, record_login_request),
    M(DBA_WATCH_EVENTS, watch_events, watch_events_request),
    M(DBA_WAKE_WATCH, wake_watch, wake_watch_request),
    M(DBA_GET_NODES, get_nodes, get_expression_request),
};
#undef M
#undef L

/* Number of comma-separated items of s. */
static int list_len(const char *s)
{
    int n = 1;
    for (; *s; s++)
        n += *s == ',';
    return n;
}

/* What the table's bounds cannot say: returns 0, or -1 with err set. */
static int check_config(char *err, size_t errlen)
{
    int hosts = list_len(cfg.db_host), ports = list_len(cfg.db_port);
    for (const char *p = cfg.db_port; *p;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 1 || v > 65535 || (*end && *end != ',')) {
            snprintf(err, errlen, "DB_PORT '%s' is not a port or a comma-separated list of ports",
                     cfg.db_port);
            return -1;
        }
        p = *end ? end + 1 : end;
    }
    if (ports != 1 && ports != hosts) {
        snprintf(err, errlen,
                 "DB_PORT has %d ports for the %d hosts of DB_HOST: give one for all, "
                 "or one per host",
                 ports, hosts);
        return -1;
    }
    size_t n = strlen(cfg.agent_token);
    if (n && n < 16) {
        snprintf(err, errlen, "DBAGENT_AGENT_TOKEN must have 16 or more characters");
        return -1;
    }
    if (n && !strcmp(cfg.agent_token, cfg.token)) {
        snprintf(err, errlen,
                 "DBAGENT_AGENT_TOKEN must differ from DBAGENT_TOKEN, or an agent "
                 "could call every method");
        return -1;
    }
    if (cfg.retention.interval_ms && cfg.retention.interval_ms < 100) {
        snprintf(err, errlen, "RETENTION_INTERVAL_MS must be 0 (off) or 100 or more");
        return -1;
    }
    /* Younger than a minute could take an agent's row between two of its heartbeats, or an
     * expression from a client that has not yet read its result. */
    const struct {
        const char *name;
        int64_t v;
    } ages[] = {{"RETENTION_EXPRESSIONS_S", cfg.retention.expressions_s},
                {"RETENTION_AGENTS_S", cfg.retention.agents_s}};
    for (size_t i = 0; i < sizeof ages / sizeof ages[0]; i++)
        if (ages[i].v && ages[i].v < 60) {
            snprintf(err, errlen, "%s must be 0 (keep) or 60 or more", ages[i].name);
            return -1;
        }
    return rpc_tls_check(&cfg.tls, 1, "DBAGENT_TLS", err, errlen);
}

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

/* The connection keywords of every PostgreSQL session this process opens; values as configured
 * (libpq takes them as they are: no quoting). */
static void build_db_params(db_params *p)
{
    db_params_add(p, "host", cfg.db_host);
    db_params_add(p, "port", cfg.db_port);
    db_params_add(p, "user", cfg.db_user);
    if (cfg.db_password[0])
        db_params_add(p, "password", cfg.db_password);
    db_params_add(p, "dbname", cfg.db_name);
    db_params_add(p, "sslmode", cfg.db_sslmode);
    db_params_add(p, "target_session_attrs", cfg.db_session);
    db_params_add(p, "connect_timeout", "3");
    db_params_add(p, "application_name", "calc-dbagent");
    /* A PostgreSQL host that vanishes (power, network) answers nothing, not even a reset: TCP
     * alone would hold a waiting call for many minutes. Unacknowledged data gives up after 5 s,
     * and a connection silent for 10 s is probed 3 times 2 s apart, so a call on a dead
     * connection fails UNAVAILABLE within about 16 s and the next one reconnects. */
    db_params_add(p, "keepalives_idle", "10");
    db_params_add(p, "keepalives_interval", "2");
    db_params_add(p, "keepalives_count", "3");
    db_params_add(p, "tcp_user_timeout", "5000");
    /* NOTICEs ("already exists, skipping") would go to stderr outside our log format. */
    db_params_add(p, "options", "-c client_min_messages=warning");
}

/* `calc-dbagent migrate [up [N] | down N | status]`: up to the newest (or N), down to N. */
static int run_migrate(int argc, char **argv, const db_params *params)
{
    char err[512];
    PGconn *c = db_connect(params, err, sizeof err);
    if (!c) {
        log_error("migrate: cannot connect to PostgreSQL: %s", err);
        return 1;
    }
    int rc = 0, target = -1;
    const char *what = argc > 2 ? argv[2] : "up";
    if (!strcmp(what, "down")) {
        target = argc > 3 ? atoi(argv[3]) : 0;
    } else if (!strcmp(what, "status")) {
        char stored[80];
        int v = migrate_current(c, err, sizeof err);
        if (v >= 0 && migrate_functions_stored(c, stored, sizeof stored, err, sizeof err) < 0)
            v = -1;
        PQfinish(c);
        if (v < 0) {
            log_error("migrate status: %s", err);
            return 1;
        }
        printf("schema version %d of %d\n", v,
               n_migrations ? migrations[n_migrations - 1].version : 0);
        printf("functions digest %s, built %s\n", stored[0] ? stored : "none",
               schema_functions_digest);
        return 0;
    } else if (!strcmp(what, "up")) {
        target = argc > 3 ? atoi(argv[3]) : -1;
    } else {
        fprintf(stderr, "usage: %s migrate [up [VERSION] | down VERSION | status]\n", argv[0]);
        PQfinish(c);
        return 64;
    }
    int newest = n_migrations ? migrations[n_migrations - 1].version : 0;
    int cur = migrate_current(c, err, sizeof err);
    int up = !strcmp(what, "up");
    if (cur < 0) {
        log_error("migrate: %s", err);
        PQfinish(c);
        return 1;
    }
    if (up && target < 0)
        target = newest;
    if (target < 0 || target > newest || (up ? target < cur : target > cur)) {
        log_error("migrate %s %d: the schema is at version %d of %d", what, target, cur, newest);
        PQfinish(c);
        return 64;
    }
    if (migrate_to(c, target, NULL, err, sizeof err) < 0) {
        log_error("migrate: %s", err);
        rc = 1;
    }
    PQfinish(c);
    return rc;
}

/* With DBAGENT_MIGRATE=0: says so when the database's functions are not this binary's. */
static void check_functions_at_start(const db_params *params)
{
    char err[512], stored[80];
    PGconn *c = db_connect(params, err, sizeof err);
    if (!c)
        return; /* the serving threads report it */
    if (migrate_functions_stored(c, stored, sizeof stored, err, sizeof err) < 0)
        log_warn("cannot read the functions digest: %s", err);
    else if (strcmp(stored, schema_functions_digest))
        log_warn("the database's functions (digest %.12s) are not this dbagent's (digest %.12s) and"
                 " DBAGENT_MIGRATE=0: left as they are (calc-dbagent migrate replaces them)",
                 stored[0] ? stored : "none", schema_functions_digest);
    PQfinish(c);
}

/* Applies pending migrations, waiting (bounded) for PostgreSQL to accept connections. */
static int migrate_at_start(const db_params *params)
{
    char err[512];
    for (int attempt = 0; attempt < 60 && !stop_requested; attempt++) {
        PGconn *c = db_connect(params, err, sizeof err);
        if (c) {
            int rc = migrate_to(c, -1, &stop_requested, err, sizeof err);
            PQfinish(c);
            if (rc < 0 && !stop_requested)
                log_error("migrations failed: %s", err);
            return rc;
        }
        log_warn("waiting for PostgreSQL: %s", err);
        time_sleep_ms(1000, NULL);
    }
    return -1;
}

int main(int argc, char **argv)
{
    log_init("dbagent");
    cfg_init_or_exit(argc, argv,
                     "calc-dbagent [migrate [up [VERSION] | down VERSION | status]]\n"
                     "Serves the DbAgent gRPC service over PostgreSQL.",
                     config_table, N_CONFIG);
    char err[512];
    if (check_config(err, sizeof err) < 0) {
        fprintf(stderr, "%s: configuration: %s\n(see %s --help)\n", argv[0], err, argv[0]);
        return 64;
    }
    handler_cfg.max_attempts = (int)cfg.max_attempts;
    node_batch_configure((int)cfg.batches);
    static db_params params; /* read by the server's threads until they are joined */
    build_db_params(&params);
    if (argc > 1 && !strcmp(argv[1], "migrate")) {
        int rc = run_migrate(argc, argv, &params);
        return rc;
    }

    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (!cfg.migrate)
        check_functions_at_start(&params);
    else if (migrate_at_start(&params) < 0) {
        /* Told to stop while waiting for PostgreSQL or for another dbagent's migrations: a
         * clean stop, not a failure. */
        if (stop_requested)
            log_info("stopped before serving");
        return stop_requested ? 0 : 1;
    }

    evwake_init();
    ready_start(&params);
    retention_start(&params, &cfg.retention);
    rpc_global_init();
    char addr[300];
    snprintf(addr, sizeof addr, "%s:%lld", cfg.host, (long long)cfg.port);
    rpc_server_config sc = {.addr = addr,
                            .methods = methods,
                            .n_methods = sizeof methods / sizeof methods[0],
                            .threads = (int)cfg.threads,
                            .token = cfg.token,
                            .limited_token = cfg.agent_token,
                            .tls = &cfg.tls,
                            .thread_init = db_thread_init,
                            .thread_fini = db_thread_fini,
                            .arg = &params};
    rpc_server *srv = rpc_server_start(&sc, err, sizeof err);
    if (!srv) {
        log_error("%s", err);
        retention_stop();
        ready_stop();
        rpc_global_shutdown();
        return 1;
    }
    log_info("serving on %s with %lld threads, %s%s", addr, (long long)cfg.threads,
             !rpc_tls_enabled(&cfg.tls, 1) ? "plaintext"
             : cfg.tls.ca[0]               ? "mutual TLS"
                                           : "TLS",
             cfg.agent_token[0] ? ", agent token for agents' methods" : "");
    while (!stop_requested)
        time_sleep_ms(100, NULL);
    log_info("stopping: finishing the calls in progress");
    /* Long polls answer now (empty) instead of holding the stop for their whole wait. */
    ready_release_waiters();
    evwake_release();
    rpc_server_stop(srv);
    retention_stop();
    ready_stop();
    rpc_global_shutdown();
    log_info("stopped");
    return 0;
}
