#include "migrations.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

/* Any constant shared by every dbagent: the lock that serialises migrations. */
#define MIGRATION_LOCK_KEY "7261746f7201"

static int exec_ok(PGconn *conn, const char *sql, char *err, size_t errlen)
{
    PGresult *r = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(r);
    int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
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
    int cur = migrate_current(conn, err, errlen);
    if (cur < 0)
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
    rc = 0;
out:;
    char ignored[64];
    exec_ok(conn, "SELECT pg_advisory_unlock(x'" MIGRATION_LOCK_KEY "'::bigint)", ignored,
            sizeof ignored);
    return rc;
}
