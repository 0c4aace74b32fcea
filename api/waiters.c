#include "waiters.h"

#include <microhttpd.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api.h"
#include "dba.h"
#include "log.h"
#include "mem.h"
#include "methods.h"
#include "metrics.h"
#include "reads.h"
#include "rpc.h"
#include "timeutil.h"

#define LOOKUPS_PER_CALL 1000  /* what one GetExpressions takes */
#define WATCH_USERS_MAX  10000 /* what one WatchEvents takes (dbagent/watch.c) */
#define LINGER_MS        10000 /* a user stays in the watch this long after its last waiter */
#define RECENT_FINALS    256   /* the last expressions the watch heard become final */
/* A call to dbagent that does not answer holds a waiter whose wait ran out at most this long
 * after it ran out (plus a poll interval); the waiter then gets the reply it has. */
#define LATE_MAX_MS 1000
#define CALL_MIN_MS 100 /* what a call gets beyond its own wait however late a waiter is */

typedef struct waiter {
    http_req *r;
    int64_t deadline_ms;
    struct waiter *next;
} waiter;

/* A user in the watch: the waiters' users, and for LINGER_MS those that had one. */
typedef struct {
    int64_t user;
    int64_t after;     /* the seq of its events the watch stands at; -1: its head is not known */
    int in_flight;     /* the watch in flight covers it from after */
    int64_t last_used; /* monotonic ms: it had a waiter then */
} watched;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t came = PTHREAD_COND_INITIALIZER; /* a waiter, or the stop */
static waiter *waiting;                                /* under lock */
static int accepting;            /* under lock: waiters_add suspends only while set */
static int64_t n_waiting, polls; /* under lock */
/* The watch, under lock: its users; the thread waits in WatchEvents; it was told to end; a
 * waiter came whose expression the watch heard become final: look at once. */
static watched *watch_users;
static size_t n_users, cap_users;
static int in_watch, woken, look_now;
static int64_t watch_gen; /* moves when the watch in flight must end */
static int64_t recent[RECENT_FINALS];
static size_t recent_next;
static int64_t n_watches, n_event_looks;
static char watch_id[48];
static pthread_t thread;
static atomic_int stop;
static int64_t poll_interval_ms;
static waiters_reply_fn reply_with;

/*
 * The timeout of a call to dbagent that answers in busy_ms when all is well (a watch's wait; 0
 * for a look): busy_ms plus DBAGENT_TIMEOUT_MS, but ending LATE_MAX_MS after the earliest
 * waiter's wait runs out, so that a dbagent that hangs does not hold that waiter for one or two
 * full timeouts. Under lock.
 */
static int64_t call_timeout_locked(int64_t busy_ms)
{
    int64_t longest = busy_ms + api_cfg.dba_timeout_ms, t = longest;
    int64_t now = time_monotonic_ms();
    for (waiter *w = waiting; w; w = w->next)
        if (w->deadline_ms + LATE_MAX_MS - now < t)
            t = w->deadline_ms + LATE_MAX_MS - now;
    if (t < busy_ms + CALL_MIN_MS)
        t = busy_ms + CALL_MIN_MS;
    return t < longest ? t : longest;
}

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
    int timeout = (int)call_timeout_locked(0);
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
                     (ProtobufCMessage **)&rep, timeout, err, sizeof err);
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

/* Ends the watch in flight (gen is newer than its generation). */
static void wake_watch(int64_t gen)
{
    char err[256];
    if (dba_wake_watch(watch_id, gen, (int)api_cfg.dba_timeout_ms, err, sizeof err) != RPC_OK)
        log_warn("waiters: WakeWatch: %s (the watch in flight runs to its end)", err);
}

/* The new generation when the watch in flight must end (the caller wakes it after the lock),
 * else 0. Under lock. */
static int64_t end_watch_locked(void)
{
    if (!in_watch || woken)
        return 0;
    woken = 1;
    return ++watch_gen;
}

static watched *find_user_locked(int64_t user)
{
    for (size_t i = 0; i < n_users; i++)
        if (watch_users[i].user == user)
            return &watch_users[i];
    return NULL;
}

static int has_waiter_locked(int64_t user)
{
    for (waiter *w = waiting; w; w = w->next)
        if (w->r->user_id == user)
            return 1;
    return 0;
}

static int waited_on_locked(int64_t user, int64_t expression)
{
    for (waiter *w = waiting; w; w = w->next)
        if (w->r->user_id == user && w->r->path_id == expression)
            return 1;
    return 0;
}

/*
 * The positions of the watch (the users that had no waiter for LINGER_MS leave it first),
 * into pos (n_users of them), each marked in flight. Under lock.
 */
static size_t positions_locked(Calc__V1__WatchPosition *pos, int64_t now)
{
    size_t n = 0;
    for (size_t i = 0; i < n_users; i++) {
        if (now - watch_users[i].last_used > LINGER_MS) {
            if (!has_waiter_locked(watch_users[i].user))
                continue;
            watch_users[i].last_used = now; /* a wait longer than LINGER_MS */
        }
        watch_users[n] = watch_users[i];
        watch_users[n].in_flight = n < WATCH_USERS_MAX;
        if (watch_users[n].in_flight) {
            calc__v1__watch_position__init(&pos[n]);
            pos[n].user_id = watch_users[n].user;
            pos[n].after_seq = watch_users[n].after;
        }
        n++;
    }
    n_users = n;
    return n < WATCH_USERS_MAX ? n : WATCH_USERS_MAX;
}

static int is_final_kind(const char *kind)
{
    return !strcmp(kind, "finished") || !strcmp(kind, "failed") || !strcmp(kind, "cancelled");
}

/*
 * One WatchEvents over the watch's users, from where each stands, for at most wait_ms (at once
 * when a user's head is asked for, or a look is due already). Returns 1 when an expression
 * waited on became final or a user joined the watch (look now: its expression may have become
 * final before its head), 0 when not, -1 when dbagent did not answer.
 */
static int watch(int64_t wait_ms, char *err, size_t errlen)
{
    pthread_mutex_lock(&lock);
    if (atomic_load(&stop)) {
        pthread_mutex_unlock(&lock); /* waiters_stop found no watch to end: none starts */
        return 0;
    }
    if (look_now)
        wait_ms = 0;
    Calc__V1__WatchPosition *pos = xcalloc(n_users ? n_users : 1, sizeof *pos);
    Calc__V1__WatchPosition **ptr = xcalloc(n_users ? n_users : 1, sizeof *ptr);
    size_t n = positions_locked(pos, time_monotonic_ms());
    int joined = 0;
    for (size_t i = 0; i < n; i++) {
        ptr[i] = &pos[i];
        joined |= pos[i].after_seq < 0;
    }
    int64_t gen = watch_gen;
    in_watch = 1;
    woken = 0;
    n_watches++;
    int timeout = (int)call_timeout_locked(wait_ms);
    pthread_mutex_unlock(&lock);

    Calc__V1__WatchEventsRequest req = CALC__V1__WATCH_EVENTS_REQUEST__INIT;
    req.n_positions = n;
    req.positions = ptr;
    req.wait_ms = (int32_t)wait_ms;
    req.watch_id = watch_id;
    req.watch_gen = gen;
    Calc__V1__WatchEventsReply *rep = NULL;
    int rc = rpc_call(dba, DBA_WATCH_EVENTS, &req.base, &calc__v1__watch_events_reply__descriptor,
                      (ProtobufCMessage **)&rep, timeout, err, errlen);
    int final = 0;
    pthread_mutex_lock(&lock);
    in_watch = 0;
    if (rc == RPC_OK) {
        /* A head places only a user that asked for it: another's events past the reply's
         * limit per user come in the next reply, and the head would skip them. */
        for (size_t i = 0; i < rep->n_heads; i++) {
            watched *u = find_user_locked(rep->heads[i]->user_id);
            if (u && u->in_flight && u->after < 0)
                u->after = rep->heads[i]->head_seq;
        }
        for (size_t i = 0; i < rep->n_events; i++) {
            const Calc__V1__Event *e = rep->events[i]->event;
            int64_t user = rep->events[i]->user_id;
            watched *u = find_user_locked(user);
            if (u && u->in_flight && e->seq > u->after)
                u->after = e->seq;
            if (is_final_kind(e->kind)) {
                final |= waited_on_locked(user, e->expression_id);
                recent[recent_next++ % RECENT_FINALS] = e->expression_id;
            }
        }
    }
    for (size_t i = 0; i < n_users; i++)
        watch_users[i].in_flight = 0;
    pthread_mutex_unlock(&lock);
    if (rep)
        protobuf_c_message_free_unpacked(&rep->base, NULL);
    free(pos);
    free(ptr);
    return rc != RPC_OK ? -1 : final || joined;
}

/*
 * Until the stop: a WatchEvents over the waiters' users (and those that linger), and a look at
 * every waiter when an expression waited on became final, when a user joined the watch, and at
 * least once per poll interval (for the waits that run out). Without an answer from
 * WatchEvents, a look per poll interval, as without events.
 */
static void *run(void *arg)
{
    (void)arg;
    int64_t last_look = time_monotonic_ms();
    int failing = 0;
    while (!atomic_load(&stop)) {
        pthread_mutex_lock(&lock);
        /* The watch goes on while users linger: a user's next waiter then finds it where its
         * events are, instead of waiting for it to catch up. */
        while (!waiting && !n_users && !atomic_load(&stop))
            pthread_cond_wait(&came, &lock);
        pthread_mutex_unlock(&lock);
        if (atomic_load(&stop))
            break;
        /* Every waiter is looked at within a poll interval of the last look, whatever events
         * end the watches between. */
        int64_t wait_ms = last_look + poll_interval_ms - time_monotonic_ms();
        char err[256];
        int now = watch(wait_ms > 0 ? wait_ms : 0, err, sizeof err);
        if (now < 0) {
            if (!failing++)
                log_warn("waiters: WatchEvents: %s (looking every %lld ms meanwhile)", err,
                         (long long)poll_interval_ms);
            time_sleep_ms(poll_interval_ms, &stop);
        } else if (failing) {
            log_info("waiters: WatchEvents answers again");
            failing = 0;
        }
        if (atomic_load(&stop))
            break;
        pthread_mutex_lock(&lock);
        int early = now > 0 || look_now;
        look_now = 0;
        n_event_looks += early;
        pthread_mutex_unlock(&lock);
        if (early || now < 0 || time_monotonic_ms() - last_look >= poll_interval_ms) {
            look();
            last_look = time_monotonic_ms();
        }
    }
    return NULL;
}

int waiters_start(int64_t poll_ms, waiters_reply_fn reply)
{
    poll_interval_ms = poll_ms;
    reply_with = reply;
    unsigned char rnd[8];
    randombytes_buf(rnd, sizeof rnd);
    char hex[sizeof rnd * 2 + 1];
    sodium_bin2hex(hex, sizeof hex, rnd, sizeof rnd);
    snprintf(watch_id, sizeof watch_id, "waiters-%d-%s", (int)getpid(), hex);
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
    int64_t gen = 0;
    watched *u = find_user_locked(r->user_id);
    if (!u) {
        /* A user new to the watch: the watch starts again with it, from its head, and then
         * looks (its expression may have become final between this request's read and then). */
        if (n_users == cap_users) {
            cap_users = cap_users ? cap_users * 2 : 16;
            watch_users = xrealloc(watch_users, cap_users * sizeof *watch_users);
        }
        u = &watch_users[n_users++];
        *u = (watched){.user = r->user_id, .after = -1};
        gen = end_watch_locked();
    } else {
        /* In the watch: it hears the expression's final event, unless it heard it already,
         * between this request's read and now. */
        for (size_t i = 0; i < RECENT_FINALS && !look_now; i++)
            if (recent[i] == r->path_id)
                look_now = 1;
        if (look_now)
            gen = end_watch_locked();
    }
    u->last_used = time_monotonic_ms();
    pthread_cond_signal(&came);
    pthread_mutex_unlock(&lock);
    if (gen)
        wake_watch(gen);
    return 0;
}

void waiters_stop(void)
{
    pthread_mutex_lock(&lock);
    int was = accepting;
    accepting = 0;
    int64_t gen = 0;
    if (was) {
        atomic_store(&stop, 1);
        pthread_cond_broadcast(&came);
        gen = end_watch_locked();
    }
    pthread_mutex_unlock(&lock);
    if (!was)
        return;
    if (gen)
        wake_watch(gen); /* not to wait for its poll interval */
    pthread_join(thread, NULL);
    pthread_mutex_lock(&lock);
    while (waiting)
        resume(&waiting);
    free(watch_users);
    watch_users = NULL;
    n_users = cap_users = 0;
    pthread_mutex_unlock(&lock);
}

void waiters_metrics(buf *b)
{
    pthread_mutex_lock(&lock);
    int64_t now = n_waiting, looks = polls, watches = n_watches, woken_looks = n_event_looks;
    pthread_mutex_unlock(&lock);
    metrics_family(b, "calc_waiters", "gauge",
                   "GET /expression/{id}?wait requests of this API waiting now");
    metrics_i64(b, "calc_waiters", NULL, (long long)now);
    metrics_family(b, "calc_waiter_polls_total", "counter",
                   "GetExpressions calls made for every waiting request together");
    metrics_i64(b, "calc_waiter_polls_total", NULL, (long long)looks);
    metrics_family(b, "calc_waiter_watches_total", "counter",
                   "WatchEvents calls over the users of the waiting requests");
    metrics_i64(b, "calc_waiter_watches_total", NULL, (long long)watches);
    metrics_family(b, "calc_waiter_event_looks_total", "counter",
                   "GetExpressions calls made because an event said an expression became final");
    metrics_i64(b, "calc_waiter_event_looks_total", NULL, (long long)woken_looks);
}
