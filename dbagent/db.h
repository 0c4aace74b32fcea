/*
 * db: one PostgreSQL connection per gRPC worker thread, re-established when lost, and query
 * helpers that turn PostgreSQL failures into gRPC status codes on the current call.
 */
#ifndef CALC_DB_H
#define CALC_DB_H

#include <libpq-fe.h>
#include <stdint.h>

#include "rpc.h"

/* A statement prepared once per connection (PQprepare) and run by name afterwards. */
typedef struct db_stmt {
    const char *name;
    const char *sql;
    int nparams;
} db_stmt;

#define DB_MAX_PREPARED 32
#define DB_MAX_PARAMS   24

/* libpq connection keywords and their values, as given (PQconnectdbParams does the quoting, so
 * any password works). Both arrays end with a NULL. */
typedef struct db_params {
    const char *keys[DB_MAX_PARAMS + 1];
    const char *values[DB_MAX_PARAMS + 1];
    int n;
} db_params;

/* Appends key=value; both are kept, not copied. Aborts when the table is full (a fixed set of
 * keywords: a programming error). */
void db_params_add(db_params *p, const char *key, const char *value);

typedef struct db {
    PGconn *conn;
    const db_params *params; /* kept, not owned */
    /* The statements prepared on conn; emptied when conn is replaced. */
    const db_stmt *prepared[DB_MAX_PREPARED];
    int n_prepared;
    int64_t timeout_ms; /* statement_timeout set on conn; 0: not set yet */
    /* The last failure was a prepared statement whose result columns changed under it. */
    int plan_changed;
} db;

/* Thread state for the rpc server: arg is the const db_params to connect with. */
void *db_thread_init(void *params);
void db_thread_fini(void *state);

/* Opens a connection (NULL with err set on failure). */
PGconn *db_connect(const db_params *params, char *err, size_t errlen);

/*
 * Starts a transaction for the current call, reconnecting first when the connection is gone,
 * and applies the caller's deadline as the statement timeout. Returns 0, or rpc_fail(...)
 * (UNAVAILABLE when PostgreSQL cannot be reached).
 */
int db_begin(db *d, rpc_ctx *ctx);
int db_commit(db *d, rpc_ctx *ctx);
/* Rolls back when a transaction is open; safe to call on any path. */
void db_rollback(db *d);

/*
 * Runs one statement with text parameters (NULL entries are SQL NULLs). Returns the result
 * (PQclear it), or NULL after recording the failure on ctx with a fitting status code.
 */
PGresult *db_query(db *d, rpc_ctx *ctx, const char *sql, int n, const char *const *params);
/*
 * Runs one prepared statement as a transaction of its own, with the caller's deadline as its
 * statement timeout, in one round trip (libpq pipeline mode: set_config + the statement + Sync,
 * which PostgreSQL runs as one implicit transaction). Reconnects first when needed. Returns the
 * result (PQclear it), or NULL after recording the failure on ctx, as db_query.
 */
PGresult *db_call(db *d, rpc_ctx *ctx, const db_stmt *stmt, const char *const *params);

/* db_call with a time limit of its own (ms) instead of the caller's deadline. */
PGresult *db_call_within(db *d, rpc_ctx *ctx, const db_stmt *stmt, const char *const *params,
                         int64_t left_ms);

/* The status code the last failure of this call recorded (db_query, db_call...): rpc_status. */
int db_failed(rpc_ctx *ctx);

/* Field readers: NULL reads as 0 / 0.0 / "". */
int64_t db_i64(const PGresult *r, int row, int col);
double db_f64(const PGresult *r, int row, int col);
const char *db_str(const PGresult *r, int row, int col);
int db_null(const PGresult *r, int row, int col);

/* Array parameters: common/pgarray.h. */

/* Text forms of numbers for parameters; text must hold 32 bytes (NUMFMT_DOUBLE_LEN); a float8
 * is numfmt_double's shortest text that reads back as the same value. */
const char *db_fmt_i64(char *text, int64_t v);
const char *db_fmt_f64(char *text, double v);

#endif
