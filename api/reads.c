#include "reads.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "buf.h"
#include "dba.h"
#include "mem.h"
#include "methods.h"
#include "rpc.h"

#define MAX_BATCH  256 /* lookups per call (dbagent takes up to 1000) */
#define TIMEOUT_MS 5000

struct reads_batch {
    Calc__V1__ExpressionsReply *reply;
    int refs; /* lookups still reading the reply, under rs.mu */
};

/* One waiting lookup; it lives on its caller's stack. */
typedef struct lookup {
    int64_t user_id, id;
    pthread_cond_t cv;
    int done, rc;
    const Calc__V1__Expression *expr;
    reads_batch *batch;
    char err[256];
    struct lookup *next;
} lookup;

static struct {
    pthread_mutex_t mu;
    lookup *head, *tail; /* queued, not yet sent */
    int in_flight;
    uint64_t lookups, calls; /* for /metrics */
} rs = {.mu = PTHREAD_MUTEX_INITIALIZER};

static const Calc__V1__Expression *find(const Calc__V1__ExpressionsReply *rep, const lookup *l)
{
    for (size_t i = 0; i < rep->n_expressions; i++)
        if (rep->expressions[i]->id == l->id && rep->expressions[i]->user_id == l->user_id)
            return rep->expressions[i];
    return NULL;
}

/* Called with rs.mu held and no call in flight: sends the queue (up to MAX_BATCH) as one call,
 * with the lock released meanwhile, and hands every lookup of it its answer. */
static void send_batch_locked(void)
{
    lookup *batch = rs.head, *last = batch;
    int n = 1;
    while (last->next && n < MAX_BATCH) {
        last = last->next;
        n++;
    }
    rs.head = last->next;
    if (!rs.head)
        rs.tail = NULL;
    last->next = NULL;
    rs.in_flight = 1;
    rs.lookups += (uint64_t)n;
    rs.calls++;
    pthread_mutex_unlock(&rs.mu);

    int64_t users[MAX_BATCH], ids[MAX_BATCH];
    int k = 0;
    for (lookup *l = batch; l; l = l->next) {
        users[k] = l->user_id;
        ids[k++] = l->id;
    }
    Calc__V1__GetExpressionsRequest req = CALC__V1__GET_EXPRESSIONS_REQUEST__INIT;
    req.n_user_ids = req.n_ids = (size_t)k;
    req.user_ids = users;
    req.ids = ids;
    Calc__V1__ExpressionsReply *rep = NULL;
    char err[256];
    int rc = rpc_call(dba, DBA_GET_EXPRESSIONS, &req.base, &calc__v1__expressions_reply__descriptor,
                      (ProtobufCMessage **)&rep, TIMEOUT_MS, err, sizeof err);
    reads_batch *shared = NULL;
    if (rc == RPC_OK) {
        shared = xcalloc(1, sizeof *shared);
        shared->reply = rep;
    }

    pthread_mutex_lock(&rs.mu);
    for (lookup *l = batch, *next; l; l = next) {
        next = l->next;
        l->rc = rc;
        if (rc != RPC_OK) {
            snprintf(l->err, sizeof l->err, "%s", err);
        } else if ((l->expr = find(rep, l))) {
            l->batch = shared;
            shared->refs++;
        } else {
            l->rc = RPC_NOT_FOUND;
            snprintf(l->err, sizeof l->err, "no expression %lld", (long long)l->id);
        }
        l->done = 1;
        pthread_cond_signal(&l->cv);
    }
    if (shared && !shared->refs) {
        protobuf_c_message_free_unpacked(&rep->base, NULL);
        free(shared);
    }
    rs.in_flight = 0;
    /* The next queued lookup sends the next call. */
    if (rs.head)
        pthread_cond_signal(&rs.head->cv);
}

int reads_get(int64_t user_id, int64_t id, const Calc__V1__Expression **expr, reads_batch **batch,
              char *err, size_t errlen)
{
    lookup me = {.user_id = user_id, .id = id};
    pthread_cond_init(&me.cv, NULL);
    pthread_mutex_lock(&rs.mu);
    if (rs.tail)
        rs.tail->next = &me;
    else
        rs.head = &me;
    rs.tail = &me;
    while (!me.done) {
        if (!rs.in_flight)
            send_batch_locked();
        else
            pthread_cond_wait(&me.cv, &rs.mu);
    }
    pthread_mutex_unlock(&rs.mu);
    pthread_cond_destroy(&me.cv);
    *expr = me.expr;
    *batch = me.batch;
    if (me.rc != RPC_OK)
        snprintf(err, errlen, "%s", me.err);
    return me.rc;
}

void reads_release(reads_batch *batch)
{
    if (!batch)
        return;
    pthread_mutex_lock(&rs.mu);
    int last = --batch->refs == 0;
    pthread_mutex_unlock(&rs.mu);
    if (last) {
        protobuf_c_message_free_unpacked(&batch->reply->base, NULL);
        free(batch);
    }
}

void reads_metrics(buf *b)
{
    pthread_mutex_lock(&rs.mu);
    uint64_t lookups = rs.lookups, calls = rs.calls;
    pthread_mutex_unlock(&rs.mu);
    buf_printf(b,
               "# HELP calc_expression_reads_total GET /expression/{id} lookups sent to dbagent.\n"
               "# TYPE calc_expression_reads_total counter\ncalc_expression_reads_total %llu\n"
               "# HELP calc_expression_read_calls_total GetExpressions calls that carried them.\n"
               "# TYPE calc_expression_read_calls_total counter\n"
               "calc_expression_read_calls_total %llu\n",
               (unsigned long long)lookups, (unsigned long long)calls);
}
