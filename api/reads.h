/*
 * reads: GET /expression/{id} lookups gathered into GetExpressions calls by a batcher
 * (common/batcher.h) with one call in flight.
 *
 * With no call in flight, a lookup goes at once, alone: a lone request waits for nothing (there is
 * no timer). While a call is in flight, the lookups that arrive queue, and the first of them to
 * see it return sends the whole queue in the next call. Under load one gRPC call and one
 * PostgreSQL statement serve many requests; the cost of each on both sides is shared.
 */
#ifndef CALC_READS_H
#define CALC_READS_H

#include <stddef.h>
#include <stdint.h>

#include "calc.pb-c.h"

typedef struct reads_batch reads_batch;

/*
 * Looks up expression id of user. RPC_OK: *expr is it, valid until reads_release(*batch).
 * RPC_NOT_FOUND: no such expression of this user. Any other rpc code: the call failed (err says
 * why); *batch is NULL then.
 */
int reads_get(int64_t user_id, int64_t id, const Calc__V1__Expression **expr, reads_batch **batch,
              char *err, size_t errlen);
void reads_release(reads_batch *batch);
/* The expression id of user_id in a GetExpressions reply, or NULL when the reply lacks it. */
const Calc__V1__Expression *reads_find(const Calc__V1__ExpressionsReply *rep, int64_t user_id,
                                       int64_t id);

/* Appends the lookups and the calls that carried them to b, in the Prometheus text format. */
struct buf;
void reads_metrics(struct buf *b);

#endif
