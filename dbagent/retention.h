/*
 * retention: deletes what the cluster no longer needs, a little at a time. One thread with its
 * own PostgreSQL connection runs a pass at start and then every interval: expressions finished
 * long ago with their nodes and events, refresh tokens long expired, agents long silent. Each
 * batch is one short transaction of a schema/functions/calc_retain_*.sql function, with a pause
 * between batches; rows someone holds are skipped, so the hot paths never wait for it. Of the
 * dbagents of a cluster, the one holding a PostgreSQL advisory lock runs a pass; the others skip
 * theirs.
 */
#ifndef CALC_RETENTION_H
#define CALC_RETENTION_H

#include <stdint.h>

#include "db.h"

typedef struct retention_settings {
    int64_t interval_ms;   /* between passes; 0: no retention at all */
    int64_t expressions_s; /* finished expressions (nodes, events) older than this; 0: kept */
    int64_t agents_s;      /* agents silent this long; 0: kept */
    int64_t tokens_s;      /* refresh tokens this long past their expiry; 0: kept */
    int64_t batch;         /* rows per transaction */
    int64_t pause_ms;      /* between two transactions */
} retention_settings;

/* Starts the thread unless s->interval_ms is 0; params and s are kept, not copied. */
void retention_start(const db_params *params, const retention_settings *s);
/* How long from now_ms until retention may delete an expression that finished at finished_at_ms
 * (both PostgreSQL's, ms since the epoch), under the settings retention_start was given: at
 * least 1; -1 when it may already; 0 when it is not finished, or kept for ever. */
int64_t retention_expression_left_ms(int64_t finished_at_ms, int64_t now_ms);
/* Stops the thread (a batch in PostgreSQL finishes first) and closes its connection. */
void retention_stop(void);
/* Passes this dbagent completed while holding the lock, the rows they deleted, and the passes
 * it skipped because another session held the lock. */
void retention_counts(int64_t *passes, int64_t *deleted, int64_t *skipped);

#endif
