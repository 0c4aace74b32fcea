#include "migrations.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

/* Any constant shared by every dbagent: the lock that serialises migrations. */
#define MIGRATION_LOCK_KEY "7261746f7201"

/* The functions of schema public that no extension owns, as one DROP statement (NULL when there
 * are none) and their number. */
#define DROP_FUNCTIONS_SQL                                                                         \
    "SELECT string_agg(format('DROP %s %s;', CASE p.prokind WHEN 'p' THEN 'PROCEDURE'"             \
    "                                        ELSE 'FUNCTION' END, p.oid::regprocedure), ' '),"     \
    "       count(*)"                                                                              \
    "  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"                               \
    " WHERE n.nspname = 'public' AND p.prokind IN ('f', 'p')"                                      \
    "   AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass"           \
    "                      AND d.objid = p.oid AND d.deptype = 'e')"

/* A file of comments only (a migration that kept no statement) is an empty query. */
static int exec_ok(PGconn *conn, const char *sql, char *err, size_t errlen)
{
    PGresult *r = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(r);
    int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY;
    if (!ok)
        snprintf(err, errlen, "%s", PQerrorMessage(conn));
    PQclear(r);
    return ok ? 0 : -1;
}

int migrate_current(PGconn *conn, char *err, size_t errlen)
{
    if (exec_ok(conn,
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())",
                err, errlen) < 0)
        return -1;
    PGresult *r = PQexec(conn, "SELECT coalesce(max(version), 0) FROM schema_migrations");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        snprintf(err, errlen, "%s", PQerrorMessage(conn));
        PQclear(r);
        return -1;
    }
    int v = atoi(PQgetvalue(r, 0, 0));
    PQclear(r);
    return v;
}

static int step(PGconn *conn, const migration *m, int up, char *err, size_t errlen)
{
    char record[160];
    if (up)
        snprintf(record, sizeof record,
                 "INSERT INTO schema_migrations (version, name) VALUES (%d, '%s')", m->version,
                 m->name);
    else
        snprintf(record, sizeof record, "DELETE FROM schema_migrations WHERE version = %d",
                 m->version);
    if (exec_ok(conn, "BEGIN", err, errlen) < 0)
        return -1;
    if (exec_ok(conn, up ? m->up : m->down, err, errlen) < 0 ||
        exec_ok(conn, record, err, errlen) < 0) {
        char ignored[64];
        exec_ok(conn, "ROLLBACK", ignored, sizeof ignored);
        return -1;
    }
    if (exec_ok(conn, "COMMIT", err, errlen) < 0)
        return -1;
    log_info("migration %03d_%s %s", m->version, m->name, up ? "applied" : "reverted");
    return 0;
}

int migrate_functions_stored(PGconn *conn, char *out, size_t outlen, char *err, size_t errlen)
{
    out[0] = '\0';
    PGresult *r = PQexec(conn, "SELECT digest FROM schema_functions");
    int rc = 0;
    if (PQresultStatus(r) == PGRES_TUPLES_OK) {
        if (PQntuples(r) > 0)
            snprintf(out, outlen, "%s", PQgetvalue(r, 0, 0));
    } else {
        const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        if (!state || strcmp(state, "42P01")) { /* undefined_table: nothing recorded yet */
            snprintf(err, errlen, "%s", PQerrorMessage(conn));
            rc = -1;
        }
    }
    PQclear(r);
    return rc;
}

/* Inside a transaction: drops every function of schema public but extensions' and forgets the
 * digest. Sets *dropped to their number. */
static int drop_functions(PGconn *conn, int *dropped, char *err, size_t errlen)
{
    PGresult *r = PQexec(conn, DROP_FUNCTIONS_SQL);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        snprintf(err, errlen, "listing the functions: %s", PQerrorMessage(conn));
        PQclear(r);
        return -1;
    }
    *dropped = atoi(PQgetvalue(r, 0, 1));
    int rc = 0;
    if (*dropped > 0 && exec_ok(conn, PQgetvalue(r, 0, 0), err, errlen) < 0)
        rc = -1;
    PQclear(r);
    if (rc == 0)
        rc = exec_ok(conn, "DELETE FROM schema_functions", err, errlen);
    return rc;
}

static void rollback(PGconn *conn)
{
    char ignored[64];
    exec_ok(conn, "ROLLBACK", ignored, sizeof ignored);
}

/* Before going down: the functions are written for the newest tables only. */
static int functions_drop_all(PGconn *conn, char *err, size_t errlen)
{
    int dropped = 0;
    if (exec_ok(conn, "BEGIN", err, errlen) < 0)
        return -1;
    if (drop_functions(conn, &dropped, err, errlen) < 0) {
        rollback(conn);
        return -1;
    }
    if (exec_ok(conn, "COMMIT", err, errlen) < 0)
        return -1;
    if (dropped > 0)
        log_info("functions dropped (%d)", dropped);
    return 0;
}

/* At the newest version: replaces every function by the embedded ones, in one transaction, when
 * the recorded digest is not this binary's. Callers hold the migration lock, so dbagents starting
 * together apply them once. */
static int functions_apply(PGconn *conn, char *err, size_t errlen)
{
    char stored[80];
    if (migrate_functions_stored(conn, stored, sizeof stored, err, errlen) < 0)
        return -1;
    if (!strcmp(stored, schema_functions_digest))
        return 0;
    int dropped = 0;
    if (exec_ok(conn, "BEGIN", err, errlen) < 0)
        return -1;
    if (drop_functions(conn, &dropped, err, errlen) < 0)
        goto fail;
    for (int i = 0; i < n_schema_functions; i++) {
        char why[400];
        if (exec_ok(conn, schema_functions[i].sql, why, sizeof why) < 0) {
            snprintf(err, errlen, "function %s: %s", schema_functions[i].name, why);
            goto fail;
        }
    }
    char record[160];
    snprintf(record, sizeof record, "INSERT INTO schema_functions (digest) VALUES ('%s')",
             schema_functions_digest);
    if (exec_ok(conn, record, err, errlen) < 0)
        goto fail;
    if (exec_ok(conn, "COMMIT", err, errlen) < 0)
        return -1;
    log_info("functions applied (digest %.12s)", schema_functions_digest);
    return 0;
fail:
    rollback(conn);
    return -1;
}

/* Takes the migration lock, waiting for it half a second at a time (lock_timeout) so that a stop
 * request is seen while another dbagent migrates: a blocked libpq call would not return for a
 * signal. */
static int take_lock(PGconn *conn, const volatile sig_atomic_t *stop, char *err, size_t errlen)
{
    if (exec_ok(conn, "SET lock_timeout = 500", err, errlen) < 0)
        return -1;
    int rc = -1, waited = 0;
    while (!(stop && *stop)) {
        PGresult *r = PQexec(conn, "SELECT pg_advisory_lock(x'" MIGRATION_LOCK_KEY "'::bigint)");
        const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        int busy = state && !strcmp(state, "55P03"); /* lock_not_available: lock_timeout */
        if (PQresultStatus(r) == PGRES_TUPLES_OK)
            rc = 0;
        else if (!busy)
            snprintf(err, errlen, "%s", PQerrorMessage(conn));
        PQclear(r);
        if (!busy)
            break;
        if (!waited++)
            log_info("waiting for another dbagent's migrations");
    }
    if (rc < 0 && stop && *stop)
        snprintf(err, errlen, "stopped while waiting for the migration lock");
    char ignored[64];
    exec_ok(conn, "RESET lock_timeout", ignored, sizeof ignored);
    return rc;
}

int migrate_to(PGconn *conn, int target, const volatile sig_atomic_t *stop, char *err,
               size_t errlen)
{
    if (target < 0)
        target = n_migrations ? migrations[n_migrations - 1].version : 0;
    if (take_lock(conn, stop, err, errlen) < 0)
        return -1;
    int rc = -1;
    int newest = n_migrations ? migrations[n_migrations - 1].version : 0;
    int cur = migrate_current(conn, err, errlen);
    if (cur < 0)
        goto out;
    if (exec_ok(conn,
                "CREATE TABLE IF NOT EXISTS schema_functions ("
                " digest text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
                err, errlen) < 0)
        goto out;
    if (cur > newest) {
        /* A newer dbagent's schema: its functions are left as they are. */
        log_warn("schema version %d is newer than this dbagent's %d: nothing applied", cur, newest);
        rc = 0;
        goto out;
    }
    if (target < cur && functions_drop_all(conn, err, errlen) < 0)
        goto out;
    for (int i = 0; i < n_migrations && cur < target; i++) {
        const migration *m = &migrations[i];
        if (m->version > cur && m->version <= target) {
            if (step(conn, m, 1, err, errlen) < 0)
                goto out;
            cur = m->version;
        }
    }
    for (int i = n_migrations - 1; i >= 0 && cur > target; i--) {
        const migration *m = &migrations[i];
        if (m->version <= cur && m->version > target) {
            if (step(conn, m, 0, err, errlen) < 0)
                goto out;
            cur = i > 0 ? migrations[i - 1].version : 0;
        }
    }
    if (cur == newest && target == newest && functions_apply(conn, err, errlen) < 0)
        goto out;
    rc = 0;
out:;
    char ignored[64];
    exec_ok(conn, "SELECT pg_advisory_unlock(x'" MIGRATION_LOCK_KEY "'::bigint)", ignored,
            sizeof ignored);
    return rc;
}
