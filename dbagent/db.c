#include "db.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "log.h"
#include "numfmt.h"
#include "mem.h"
#include "sqlstate.h"

void db_params_add(db_params *p, const char *key, const char *value)
{
    if (p->n == DB_MAX_PARAMS) {
        log_error("db: more than %d connection parameters (adding %s)", DB_MAX_PARAMS, key);
        abort();
    }
    p->keys[p->n] = key;
    p->values[p->n] = value;
    p->n++;
    p->keys[p->n] = NULL;
    p->values[p->n] = NULL;
}

PGconn *db_connect(const db_params *params, char *err, size_t errlen)
{
    /* expand_dbname 0: a value is only ever a value, never parsed as a connection string. */
    PGconn *c = PQconnectdbParams(params->keys, params->values, 0);
    if (PQstatus(c) != CONNECTION_OK) {
        snprintf(err, errlen, "%s", PQerrorMessage(c));
        size_t n = strlen(err);
        while (n && (err[n - 1] == '\n' || err[n - 1] == ' '))
            err[--n] = '\0';
        PQfinish(c);
        return NULL;
    }
    return c;
}

void *db_thread_init(void *params)
{
    db *d = xcalloc(1, sizeof *d);
    d->params = params;
    char err[256];
    d->conn = db_connect(d->params, err, sizeof err);
    if (!d->conn)
        log_warn("PostgreSQL not reachable yet: %s", err);
    return d;
}

void db_thread_fini(void *state)
{
    db *d = state;
    if (d->conn)
        PQfinish(d->conn);
    free(d);
}

static int ensure_connected(db *d, rpc_ctx *ctx)
{
    if (d->conn && PQstatus(d->conn) == CONNECTION_OK)
        return RPC_OK;
    if (d->conn)
        PQfinish(d->conn);
    d->n_prepared = 0;
    d->timeout_ms = 0;
    char err[256];
    d->conn = db_connect(d->params, err, sizeof err);
    if (!d->conn)
        return rpc_fail(ctx, RPC_UNAVAILABLE, "database unavailable: %s", err);
    log_info("PostgreSQL connection established");
    return RPC_OK;
}

static int record_failure(db *d, rpc_ctx *ctx, const PGresult *r, const char *what);

static int code_for(db *d, const PGresult *r)
{
    if (PQstatus(d->conn) != CONNECTION_OK)
        return RPC_UNAVAILABLE;
    return sqlstate_rpc_code(r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL);
}

PGresult *db_query(db *d, rpc_ctx *ctx, const char *sql, int n, const char *const *params)
{
    PGresult *r = PQexecParams(d->conn, sql, n, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
        return r;
    int code = code_for(d, r);
    char msg[256];
    snprintf(msg, sizeof msg, "%s", PQerrorMessage(d->conn));
    size_t len = strlen(msg);
    while (len && msg[len - 1] == '\n')
        msg[--len] = '\0';
    if (code == RPC_INTERNAL)
        log_error("query failed: %s (%.80s)", msg, sql);
    rpc_fail(ctx, code, "database: %s", msg);
    PQclear(r);
    return NULL;
}

/* Records the failure of a result (NULL: of the connection) on ctx; returns the code. */
static int record_failure(db *d, rpc_ctx *ctx, const PGresult *r, const char *what)
{
    int code = code_for(d, r);
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    d->plan_changed =
        state && !strcmp(state, "0A000"); /* "cached plan must not change result type" */
    char msg[256];
    const char *m = r ? PQresultErrorMessage(r) : "";
    snprintf(msg, sizeof msg, "%s", m && m[0] ? m : PQerrorMessage(d->conn));
    size_t len = strlen(msg);
    while (len && (msg[len - 1] == '\n' || msg[len - 1] == ' '))
        msg[--len] = '\0';
    if (code == RPC_INTERNAL)
        log_error("%s failed: %s", what, msg);
    return rpc_fail(ctx, code, "database: %s", msg);
}

static int prepare(db *d, rpc_ctx *ctx, const db_stmt *stmt)
{
    for (int i = 0; i < d->n_prepared; i++)
        if (d->prepared[i] == stmt)
            return RPC_OK;
    PGresult *r = PQprepare(d->conn, stmt->name, stmt->sql, stmt->nparams, NULL);
    int rc = PQresultStatus(r) == PGRES_COMMAND_OK ? RPC_OK : record_failure(d, ctx, r, stmt->name);
    PQclear(r);
    if (rc == RPC_OK && d->n_prepared < DB_MAX_PREPARED)
        d->prepared[d->n_prepared++] = stmt;
    return rc;
}

/*
 * Sends [set_config +] stmt + Sync; returns stmt's result, or NULL with the failure recorded.
 * The session's statement_timeout is changed only when it would outlast the caller's deadline
 * (left_ms) or cut it below half: most calls then cost one statement, not two.
 */
static PGresult *call_once(db *d, rpc_ctx *ctx, const db_stmt *stmt, const char *const *params,
                           int64_t left_ms)
{
    PGresult *out = NULL;
    int rc = prepare(d, ctx, stmt);
    if (rc)
        return NULL;
    int64_t want = left_ms * 3 / 4 > 0 ? left_ms * 3 / 4 : 1;
    int set_timeout =
        !(d->timeout_ms > 0 && d->timeout_ms <= left_ms && d->timeout_ms * 2 >= left_ms);
    char timeout[32];
    snprintf(timeout, sizeof timeout, "%lld", (long long)want);
    int stmt_index = set_timeout ? 1 : 0;
    if (!PQenterPipelineMode(d->conn)) {
        record_failure(d, ctx, NULL, stmt->name);
        return NULL;
    }
    const char *tp[] = {timeout};
    if (set_timeout)
        d->timeout_ms = 0; /* unknown until the set_config below is known to have worked */
    int sent = (!set_timeout ||
                PQsendQueryParams(d->conn, "SELECT set_config('statement_timeout', $1, false)", 1,
                                  NULL, tp, NULL, NULL, 0)) &&
               PQsendQueryPrepared(d->conn, stmt->name, stmt->nparams, params, NULL, NULL, 0) &&
               PQpipelineSync(d->conn);
    int failed = !sent;
    if (!sent)
        record_failure(d, ctx, NULL, stmt->name);
    /* Read every result up to the Sync: [set_config,] stmt, each followed by a NULL; a
     * statement after a failed one comes back PGRES_PIPELINE_ABORTED. */
    for (int index = 0; sent && index <= stmt_index + 1;) {
        PGresult *r = PQgetResult(d->conn);
        if (!r) {
            if (PQstatus(d->conn) != CONNECTION_OK) {
                if (!failed)
                    record_failure(d, ctx, NULL, stmt->name);
                failed = 1;
                break;
            }
            index++;
            continue;
        }
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_PIPELINE_SYNC) {
            PQclear(r);
            break;
        }
        if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
            if (!failed)
                record_failure(d, ctx, st == PGRES_PIPELINE_ABORTED ? NULL : r, stmt->name);
            failed = 1;
            PQclear(r);
        } else if (index == stmt_index && !out) {
            out = r;
        } else {
            PQclear(r);
        }
    }
    if (PQstatus(d->conn) == CONNECTION_OK)
        PQexitPipelineMode(d->conn);
    if (failed && out) {
        PQclear(out);
        out = NULL;
    }
    if (set_timeout && !failed)
        d->timeout_ms = want;
    return out;
}

PGresult *db_call(db *d, rpc_ctx *ctx, const db_stmt *stmt, const char *const *params)
{
    int64_t left = rpc_time_left_ms(ctx);
    if (left == 0) {
        rpc_fail(ctx, RPC_DEADLINE_EXCEEDED, "deadline passed before start");
        return NULL;
    }
    return db_call_within(d, ctx, stmt, params, left < 0 ? 30000 : left);
}

PGresult *db_call_within(db *d, rpc_ctx *ctx, const db_stmt *stmt, const char *const *params,
                         int64_t left_ms)
{
    if (ensure_connected(d, ctx) != RPC_OK)
        return NULL;
    d->plan_changed = 0;
    PGresult *r = call_once(d, ctx, stmt, params, left_ms);
    /* Another dbagent migrated the schema under our prepared statements (a column's type or a
     * function's result changed): prepare them again, once. */
    if (!r && d->plan_changed && PQstatus(d->conn) == CONNECTION_OK) {
        log_info("%s: the schema changed under the prepared statements: preparing them again",
                 stmt->name);
        PQclear(PQexec(d->conn, "DEALLOCATE ALL"));
        d->n_prepared = 0;
        r = call_once(d, ctx, stmt, params, left_ms);
    }
    /* A connection that died while idle is noticed here (the server's last words may still
     * read as a result on a connection libpq calls OK): try once more on a new one. */
    if (!r && rpc_status(ctx) == RPC_UNAVAILABLE) {
        PQfinish(d->conn);
        d->conn = NULL;
        if (ensure_connected(d, ctx) == RPC_OK)
            r = call_once(d, ctx, stmt, params, left_ms);
    }
    return r;
}

int db_failed(rpc_ctx *ctx)
{
    return rpc_status(ctx);
}

int db_begin(db *d, rpc_ctx *ctx)
{
    int rc = ensure_connected(d, ctx);
    if (rc != RPC_OK)
        return rc;
    int64_t left = rpc_time_left_ms(ctx);
    if (left == 0)
        return rpc_fail(ctx, RPC_DEADLINE_EXCEEDED, "deadline passed before start");
    char sql[96];
    /* The caller's deadline bounds every statement of the call; no deadline: 30 s. */
    snprintf(sql, sizeof sql, "BEGIN; SET LOCAL statement_timeout = %lld",
             (long long)(left < 0 ? 30000 : left));
    PGresult *r = PQexec(d->conn, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && code_for(d, r) == RPC_UNAVAILABLE) {
        /* A connection that died while idle is noticed here: try once more on a new one. */
        PQclear(r);
        if ((rc = ensure_connected(d, ctx)) != RPC_OK)
            return rc;
        r = PQexec(d->conn, sql);
    }
    rc = PQresultStatus(r) == PGRES_COMMAND_OK ? RPC_OK : record_failure(d, ctx, r, "BEGIN");
    PQclear(r);
    if (rc)
        db_rollback(d); /* BEGIN may have worked and SET failed: no transaction stays open */
    return rc;
}

int db_commit(db *d, rpc_ctx *ctx)
{
    PGresult *r = db_query(d, ctx, "COMMIT", 0, NULL);
    if (!r)
        return db_failed(ctx);
    PQclear(r);
    return RPC_OK;
}

void db_rollback(db *d)
{
    if (!d->conn || PQstatus(d->conn) != CONNECTION_OK)
        return;
    if (PQtransactionStatus(d->conn) == PQTRANS_IDLE)
        return;
    PQclear(PQexec(d->conn, "ROLLBACK"));
}

int64_t db_i64(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? 0 : strtoll(PQgetvalue(r, row, col), NULL, 10);
}

double db_f64(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? 0.0 : strtod(PQgetvalue(r, row, col), NULL);
}

const char *db_str(const PGresult *r, int row, int col)
{
    return PQgetvalue(r, row, col);
}

int db_null(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col);
}

const char *db_fmt_i64(char *text, int64_t v)
{
    snprintf(text, 32, "%lld", (long long)v);
    return text;
}

const char *db_fmt_f64(char *text, double v)
{
    return numfmt_double(text, 32, v);
}
