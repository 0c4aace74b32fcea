#include "retention.h"

#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backoff.h"
#include "log.h"
#include "timeutil.h"

/* pg_try_advisory_lock key of the pass ("retain" in hex); the migrations use another. */
#define RETENTION_LOCK_KEY "72657461696e"
/* Users looked up at a time for events to delete. */
#define RETENTION_USERS_PAGE 100

static struct {
    const db_params *params;
    const retention_settings *s;
    atomic_int stop;
    atomic_llong passes, deleted, skipped;
    pthread_t thread;
    int started;
} rt;

/* What one pass deleted, by kind, for its log line. */
typedef struct pass_counts {
    long long expressions, events, tokens, agents;
} pass_counts;

/* Runs sql with text parameters and reads the first column of the first row as a number into
 * *out (when out is set). Returns 0, or -1 after logging what failed. */
static int run(PGconn *c, const char *what, const char *sql, int n, const char *const *p,
               long long *out)
{
    PGresult *r = PQexecParams(c, sql, n, NULL, p, NULL, NULL, 0);
    int ok = PQresultStatus(r) == PGRES_TUPLES_OK || PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok) {
        char *msg = PQresultErrorMessage(r);
        size_t len = strlen(msg);
        while (len && msg[len - 1] == '\n')
            len--;
        log_warn("retention: %s: %.*s", what, (int)len, msg);
    } else if (out) {
        *out = PQntuples(r) && !PQgetisnull(r, 0, 0) ? atoll(PQgetvalue(r, 0, 0)) : 0;
    }
    PQclear(r);
    return ok ? 0 : -1;
}

/* Calls fn(age, batch) until it deletes nothing, pausing between batches. Returns 0, or -1. */
static int drain(PGconn *c, const char *fn, int64_t age_s, long long *total)
{
    char sql[96], age[32], lim[32];
    snprintf(sql, sizeof sql, "SELECT %s($1, $2)", fn);
    snprintf(age, sizeof age, "%lld", (long long)age_s);
    snprintf(lim, sizeof lim, "%lld", (long long)rt.s->batch);
    const char *p[] = {age, lim};
    while (!atomic_load(&rt.stop)) {
        long long n = 0;
        if (run(c, fn, sql, 2, p, &n) < 0)
            return -1;
        *total += n;
        if (n == 0)
            break;
        atomic_fetch_add(&rt.deleted, n);
        time_sleep_ms(rt.s->pause_ms, &rt.stop);
    }
    return 0;
}

/* The events of each user that has old ones, user by user. Returns 0, or -1. */
static int drain_events(PGconn *c, long long *total)
{
    char age[32], lim[32], page[32], after[32] = "0";
    snprintf(age, sizeof age, "%lld", (long long)rt.s->expressions_s);
    snprintf(lim, sizeof lim, "%lld", (long long)rt.s->batch);
    snprintf(page, sizeof page, "%d", RETENTION_USERS_PAGE);
    while (!atomic_load(&rt.stop)) {
        const char *p[] = {after, age, page};
        PGresult *r = PQexecParams(c, "SELECT calc_retain_event_users($1, $2, $3)", 3, NULL, p,
                                   NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            log_warn("retention: calc_retain_event_users: %s", PQresultErrorMessage(r));
            PQclear(r);
            return -1;
        }
        int users = PQntuples(r);
        for (int i = 0; i < users && !atomic_load(&rt.stop); i++) {
            const char *q[] = {PQgetvalue(r, i, 0), age, lim};
            long long n;
            do {
                if (run(c, "calc_retain_events", "SELECT calc_retain_events($1, $2, $3)", 3, q,
                        &n) < 0) {
                    PQclear(r);
                    return -1;
                }
                *total += n;
                atomic_fetch_add(&rt.deleted, n);
                if (n)
                    time_sleep_ms(rt.s->pause_ms, &rt.stop);
            } while (n == rt.s->batch && !atomic_load(&rt.stop));
        }
        if (users)
            snprintf(after, sizeof after, "%s", PQgetvalue(r, users - 1, 0));
        PQclear(r);
        if (users < RETENTION_USERS_PAGE)
            break;
    }
    return 0;
}

/* One pass, when this dbagent gets the lock. Returns 0 (done, or another dbagent's turn), or
 * -1 when a statement failed. */
static int pass(PGconn *c)
{
    PGresult *r = PQexec(c, "SELECT pg_try_advisory_lock(x'" RETENTION_LOCK_KEY "'::bigint)");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        log_warn("retention: pg_try_advisory_lock: %s", PQresultErrorMessage(r));
        PQclear(r);
        return -1;
    }
    int mine = PQgetvalue(r, 0, 0)[0] == 't';
    PQclear(r);
    if (!mine) {
        if (atomic_fetch_add(&rt.skipped, 1) == 0)
            log_info("retention: another dbagent holds the lock: it runs the passes meanwhile");
        return 0;
    }
    pass_counts n = {0};
    int rc = 0;
    if (rt.s->expressions_s)
        rc = drain(c, "calc_retain_expressions", rt.s->expressions_s, &n.expressions);
    if (!rc && rt.s->expressions_s)
        rc = drain_events(c, &n.events);
    if (!rc && rt.s->tokens_s)
        rc = drain(c, "calc_retain_refresh_tokens", rt.s->tokens_s, &n.tokens);
    if (!rc && rt.s->agents_s)
        rc = drain(c, "calc_retain_agents", rt.s->agents_s, &n.agents);
    run(c, "pg_advisory_unlock", "SELECT pg_advisory_unlock(x'" RETENTION_LOCK_KEY "'::bigint)", 0,
        NULL, NULL);
    if (rc)
        return -1;
    atomic_fetch_add(&rt.passes, 1);
    if (n.expressions || n.events || n.tokens || n.agents)
        log_info("retention: deleted %lld expressions (with their nodes), %lld events, %lld "
                 "refresh tokens, %lld agents",
                 n.expressions, n.events, n.tokens, n.agents);
    return 0;
}

/* A connection whose statements give up rather than wait long: a batch that would wait for a
 * lock fails and the next pass tries again. */
static PGconn *connect_session(char *err, size_t errlen)
{
    PGconn *c = db_connect(rt.params, err, errlen);
    if (!c)
        return NULL;
    PGresult *r = PQexec(c, "SET statement_timeout = '60s'; SET lock_timeout = '2s';"
                            " SET application_name = 'calc-dbagent retention'");
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok)
        snprintf(err, errlen, "session settings: %s", PQerrorMessage(c));
    PQclear(r);
    if (!ok) {
        PQfinish(c);
        return NULL;
    }
    return c;
}

static void *retention_main(void *arg)
{
    (void)arg;
    PGconn *c = NULL;
    backoff pause;
    backoff_init(&pause, 1000, 60000);
    int warned = 0;
    while (!atomic_load(&rt.stop)) {
        if (!c) {
            char err[256];
            c = connect_session(err, sizeof err);
            if (!c) {
                if (!warned++)
                    log_warn("retention: cannot connect to PostgreSQL (retrying): %s", err);
                backoff_sleep(&pause, &rt.stop);
                continue;
            }
            warned = 0;
            backoff_reset(&pause);
        }
        if (pass(c) < 0 && PQstatus(c) != CONNECTION_OK) {
            PQfinish(c); /* the session's lock went with it */
            c = NULL;
        }
        time_sleep_ms(rt.s->interval_ms, &rt.stop);
    }
    if (c)
        PQfinish(c);
    return NULL;
}

/* How long a finished expression is kept, in ms; 0: for ever. Set before the server's threads
 * start, read by them. */
static int64_t expressions_keep_ms;

int64_t retention_expression_left_ms(int64_t finished_at_ms, int64_t now_ms)
{
    if (finished_at_ms <= 0 || expressions_keep_ms <= 0)
        return 0;
    int64_t left = finished_at_ms + expressions_keep_ms - now_ms;
    return left > 0 ? left : -1;
}

void retention_start(const db_params *params, const retention_settings *s)
{
    expressions_keep_ms = s->interval_ms && s->expressions_s ? s->expressions_s * 1000 : 0;
    if (!s->interval_ms) {
        log_info("retention: off (RETENTION_INTERVAL_MS=0)");
        return;
    }
    rt.params = params;
    rt.s = s;
    atomic_store(&rt.stop, 0);
    rt.started = pthread_create(&rt.thread, NULL, retention_main, NULL) == 0;
    if (!rt.started)
        log_error("retention: cannot start its thread: nothing will be deleted");
}

void retention_stop(void)
{
    atomic_store(&rt.stop, 1);
    if (rt.started)
        pthread_join(rt.thread, NULL);
    rt.started = 0;
}

void retention_counts(int64_t *passes, int64_t *deleted, int64_t *skipped)
{
    *passes = atomic_load(&rt.passes);
    *deleted = atomic_load(&rt.deleted);
    *skipped = atomic_load(&rt.skipped);
}
