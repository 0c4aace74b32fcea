#include "waiters.h"

#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "dba.h"
#include "log.h"
#include "mem.h"
#include "methods.h"
#include "metrics.h"
#include "reads.h"
#include "rpc.h"
#include "timeutil.h"

#define LOOKUPS_PER_CALL 1000 /* what one GetExpressions takes */

typedef struct waiter {
    http_req *r;
    int64_t deadline_ms;
    struct waiter *next;
} waiter;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static waiter *waiting;          /* under lock */
static int accepting;            /* under lock: waiters_add suspends only while set */
static int64_t n_waiting, polls; /* under lock */
static pthread_t thread;
static atomic_int stop;
static int64_t poll_interval_ms;
static waiters_reply_fn reply_with;

/* Takes out of the list and resumes w. Under lock. */
static void resume(waiter **p)
{
    waiter *w = *p;
    *p = w->next;
    n_waiting--;
    MHD_resume_connection(w->r->conn);
    free(w);
}

/*
 * One look: the first LOOKUPS_PER_CALL waiters (newest first; the rest are looked at in the
 * same pass, a call per LOOKUPS_PER_CALL) in one GetExpressions each. The call runs without the
 * lock: waiters added meanwhile wait for the next look, and only this thread removes any.
 */
static void look(void)
{
    int64_t users[LOOKUPS_PER_CALL], ids[LOOKUPS_PER_CALL];
    pthread_mutex_lock(&lock);
    waiter *from = waiting;
    pthread_mutex_unlock(&lock);
    while (from) {
        int n = 0;
        waiter *w = from;
        for (; w && n < LOOKUPS_PER_CALL; w = w->next, n++) {
            users[n] = w->r->user_id;
            ids[n] = w->r->path_id;
        }
        waiter *next_from = w;
        Calc__V1__GetExpressionsRequest req = CALC__V1__GET_EXPRESSIONS_REQUEST__INIT;
        req.n_user_ids = req.n_ids = (size_t)n;
        req.user_ids = users;
        req.ids = ids;
        Calc__V1__ExpressionsReply *rep = NULL;
        char err[256];
        int rc =
            rpc_call(dba, DBA_GET_EXPRESSIONS, &req.base, &calc__v1__expressions_reply__descriptor,
                     (ProtobufCMessage **)&rep, (int)api_cfg.dba_timeout_ms, err, sizeof err);
        int64_t now = time_monotonic_ms();
        pthread_mutex_lock(&lock);
        polls++;
        /* The n waiters looked at are the run from `from`; new ones went in before `waiting`. */
        waiter **p = &waiting;
        while (*p != from)
            p = &(*p)->next;
        for (int k = 0; k < n; k++) {
            http_req *r = (*p)->r;
            const Calc__V1__Expression *e =
                rc == RPC_OK ? reads_find(rep, r->user_id, r->path_id) : NULL;
            if (e && (expression_is_final(e->status) || now >= (*p)->deadline_ms)) {
                reply_with(r, e);
            } else if (rc == RPC_OK && !e) {
                http_error(r, 404, "no expression %lld", (long long)r->path_id);
            } else if (now < (*p)->deadline_ms) {
                p = &(*p)->next; /* not final yet, or dbagent did not answer: looked at again */
                continue;
            } /* else: the wait ran out with dbagent not answering: the reply it had */
            resume(p);
        }
        pthread_mutex_unlock(&lock);
        if (rep)
            protobuf_c_message_free_unpacked(&rep->base, NULL);
        if (rc != RPC_OK)
            log_warn("waiters: GetExpressions of %d: %s", n, err);
        from = next_from;
    }
}

static void *run(void *arg)
{
    (void)arg;
    while (!atomic_load(&stop)) {
        time_sleep_ms(poll_interval_ms, &stop);
        if (!atomic_load(&stop))
            look();
    }
    return NULL;
}

int waiters_start(int64_t poll_ms, waiters_reply_fn reply)
{
    poll_interval_ms = poll_ms;
    reply_with = reply;
    atomic_store(&stop, 0);
    if (pthread_create(&thread, NULL, run, NULL) != 0)
        return -1;
    pthread_mutex_lock(&lock);
    accepting = 1;
    pthread_mutex_unlock(&lock);
    return 0;
}

int waiters_add(http_req *r, int64_t deadline_ms)
{
    waiter *w = xcalloc(1, sizeof *w);
    w->r = r;
    w->deadline_ms = deadline_ms;
    pthread_mutex_lock(&lock);
    if (!accepting) {
        pthread_mutex_unlock(&lock);
        free(w);
        return -1;
    }
    /* Under the lock: the thread cannot resume it before it is suspended. */
    MHD_suspend_connection(r->conn);
    w->next = waiting;
    waiting = w;
    n_waiting++;
    pthread_mutex_unlock(&lock);
    return 0;
}

void waiters_stop(void)
{
    pthread_mutex_lock(&lock);
    int was = accepting;
    accepting = 0;
    pthread_mutex_unlock(&lock);
    if (!was)
        return;
    atomic_store(&stop, 1);
    pthread_join(thread, NULL);
    pthread_mutex_lock(&lock);
    while (waiting)
        resume(&waiting);
    pthread_mutex_unlock(&lock);
}

void waiters_metrics(buf *b)
{
    pthread_mutex_lock(&lock);
    int64_t now = n_waiting, looks = polls;
    pthread_mutex_unlock(&lock);
    metrics_family(b, "calc_waiters", "gauge",
                   "GET /expression/{id}?wait requests of this API waiting now");
    metrics_i64(b, "calc_waiters", NULL, (long long)now);
    metrics_family(b, "calc_waiter_polls_total", "counter",
                   "GetExpressions calls made for every waiting request together");
    metrics_i64(b, "calc_waiter_polls_total", NULL, (long long)looks);
}
