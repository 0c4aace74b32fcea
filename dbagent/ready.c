#include "ready.h"

#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backoff.h"
#include "db.h"
#include "eventwake.h"
#include "log.h"
#include "timeutil.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;  /* generation moved, or waiters released */
    uint64_t gen;       /* under mu: moves when nodes may have become ready */
    uint64_t room;      /* under mu: moves when workers may have been set free */
    int64_t wakeups;    /* under mu: waits that ended because gen or room moved */
    int waiting;        /* callers inside ready_wait, under mu */
    int released;       /* under mu */
    int notify_pending; /* a NOTIFY is owed to the other dbagents, under mu */
    int stopping;       /* under mu */
    int wake[2];        /* pipe: wakes the thread for a NOTIFY or the stop */
    const db_params *params;
    pthread_t thread;
    int started;
} rd = {.mu = PTHREAD_MUTEX_INITIALIZER, .wake = {-1, -1}};

static void bump_locked(void)
{
    rd.gen++;
    pthread_cond_broadcast(&rd.cv);
}

static void bump(void)
{
    pthread_mutex_lock(&rd.mu);
    bump_locked();
    pthread_mutex_unlock(&rd.mu);
}

static void poke_thread(void)
{
    if (rd.wake[1] >= 0) {
        ssize_t n = write(rd.wake[1], "x", 1);
        (void)n; /* a full pipe already holds a wake-up */
    }
}

uint64_t ready_generation(uint64_t *room)
{
    pthread_mutex_lock(&rd.mu);
    uint64_t g = rd.gen;
    *room = rd.room;
    pthread_mutex_unlock(&rd.mu);
    return g;
}

void ready_poke(void)
{
    poke_thread();
}

void ready_bump_room(void)
{
    pthread_mutex_lock(&rd.mu);
    rd.room++;
    pthread_cond_broadcast(&rd.cv);
    pthread_mutex_unlock(&rd.mu);
}

void ready_signal(void)
{
    pthread_mutex_lock(&rd.mu);
    bump_locked();
    int poke = !rd.notify_pending;
    rd.notify_pending = 1;
    pthread_mutex_unlock(&rd.mu);
    if (poke)
        poke_thread();
}

/* Until gen moves from seen, or (with want_room) room from seen_room, or the deadline. */
static int wait_for(uint64_t seen, int want_room, uint64_t seen_room, int64_t deadline_ms)
{
    pthread_mutex_lock(&rd.mu);
    rd.waiting++;
    while (rd.gen == seen && !(want_room && rd.room != seen_room) && !rd.released) {
        int64_t left = deadline_ms - time_monotonic_ms();
        if (left <= 0)
            break;
        struct timespec ts = deadline_timespec(left);
        pthread_cond_timedwait(&rd.cv, &rd.mu, &ts);
    }
    int moved = (rd.gen != seen || (want_room && rd.room != seen_room)) && !rd.released;
    rd.wakeups += moved;
    rd.waiting--;
    pthread_mutex_unlock(&rd.mu);
    return moved;
}

int ready_wait(uint64_t seen, int64_t deadline_ms)
{
    return wait_for(seen, 0, 0, deadline_ms);
}

int ready_wait_room(uint64_t seen, uint64_t seen_room, int64_t deadline_ms)
{
    return wait_for(seen, 1, seen_room, deadline_ms);
}

int64_t ready_wakeups(void)
{
    pthread_mutex_lock(&rd.mu);
    int64_t n = rd.wakeups;
    pthread_mutex_unlock(&rd.mu);
    return n;
}

int ready_waiting(void)
{
    pthread_mutex_lock(&rd.mu);
    int n = rd.waiting;
    pthread_mutex_unlock(&rd.mu);
    return n;
}

void ready_release_waiters(void)
{
    pthread_mutex_lock(&rd.mu);
    rd.released = 1;
    pthread_cond_broadcast(&rd.cv);
    pthread_mutex_unlock(&rd.mu);
}

/* Waits for the wake pipe up to ms (or forever when ms < 0), and also for fd when fd >= 0.
 * Returns the revents of fd. */
static short wait_fds(int fd, int ms)
{
    struct pollfd p[2] = {{.fd = rd.wake[0], .events = POLLIN}, {.fd = fd, .events = POLLIN}};
    if (poll(p, fd >= 0 ? 2 : 1, ms) < 0 && errno != EINTR)
        log_warn("ready: poll: %s", strerror(errno));
    if (p[0].revents) {
        char sink[64];
        while (read(rd.wake[0], sink, sizeof sink) > 0) {
        }
    }
    return fd >= 0 ? p[1].revents : 0;
}

static int stopping(void)
{
    pthread_mutex_lock(&rd.mu);
    int s = rd.stopping;
    pthread_mutex_unlock(&rd.mu);
    return s;
}

/*
 * Whether another dbagent listens, as the listening thread (alone reading and writing this) last
 * learned it: from the result of its last NOTIFY statement, or from a peer's hello. While none
 * does, an owed NOTIFY is dropped without a statement: it would have sent nothing.
 */
static enum { PEERS_UNKNOWN, PEERS_NONE, PEERS_SOME } peers = PEERS_UNKNOWN;
static atomic_llong notify_statements;

int64_t ready_notify_statements(void)
{
    return atomic_load(&notify_statements);
}

/* A dbagent started listening (its hello), perhaps after the commits whose NOTIFYs were dropped
 * since its start, and after its own look at everything: every notification is owed to it. */
static void peer_arrived(void)
{
    peers = PEERS_SOME;
    evwake_notify_failed(); /* the next calc_events says "everyone" */
    pthread_mutex_lock(&rd.mu);
    rd.notify_pending = 1;
    pthread_mutex_unlock(&rd.mu);
}

/* Notifications from other backends move the generation (calc_ready), wake the watches of the
 * users they name (calc_events) or announce a new listener (calc_hello); our own come back too and
 * are skipped. */
static void drain_notifications(PGconn *c)
{
    int others = 0, hello = 0, self = PQbackendPID(c);
    PGnotify *nf;
    while ((nf = PQnotifies(c))) {
        if (nf->be_pid != self) {
            if (!strcmp(nf->relname, "calc_events"))
                evwake_from_peer(nf->extra);
            else if (!strcmp(nf->relname, "calc_hello"))
                hello = 1;
            else
                others = 1;
        }
        PQfreemem(nf);
    }
    if (others)
        bump();
    if (hello)
        peer_arrived();
}

/*
 * NOTIFYs are sent only while another dbagent listens: a NOTIFY is a transaction with an id and a
 * commit record of its own, one per burst of commits, which a lone dbagent would pay for nobody.
 * Each listening connection holds a shared advisory lock for its whole session (the two-key form:
 * not the one-key space of the take ids and the migration and retention locks); the sender's
 * pg_try_advisory_xact_lock in exclusive mode fails exactly when some other session holds it
 * (a session's own locks never conflict with each other), and costs no transaction id. The check
 * runs after the commits it reports on, so a dbagent that starts listening later is not owed
 * them: once it listens it looks again at everything (listen_main) and sees those commits.
 *
 * A lone dbagent does not even run that statement (one per burst of commits, most of this
 * thread's work): once a statement found nobody listening, owed NOTIFYs are dropped until a
 * hello comes. A listening connection says hello (NOTIFY calc_hello) in the transaction that
 * takes the lock and LISTENs, before its first look at everything; a commit whose NOTIFY was
 * dropped after that look is covered by the notification of everything owed to the newcomer on
 * its hello. A statement that found nobody ran before the newcomer's lock, so its hello comes
 * after that result.
 */
#define LISTENER_LOCK "1667329123, 1819505774" /* "calc", "lstn" */

/* A connection that listens on calc_ready and calc_events, or NULL. */
static PGconn *connect_listening(char *err, size_t errlen)
{
    PGconn *c = db_connect(rd.params, err, errlen);
    if (!c)
        return NULL;
    PGresult *r = PQexec(c, "SET application_name = 'calc-dbagent-listener';"
                            "SELECT pg_advisory_lock_shared(" LISTENER_LOCK ");"
                            "LISTEN calc_ready; LISTEN calc_events; LISTEN calc_hello;"
                            "NOTIFY calc_hello");
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok)
        snprintf(err, errlen, "LISTEN calc_ready, calc_events, calc_hello: %s", PQerrorMessage(c));
    PQclear(r);
    if (!ok) {
        PQfinish(c);
        return NULL;
    }
    return c;
}

/* Both notifications in one statement, sent only when another dbagent listens: otherwise the
 * statement only reads, and PostgreSQL gives it no transaction id. */
static const char notify_sql[] = "SELECT CASE WHEN $1 <> '' THEN pg_notify('calc_events', $1) END,"
                                 "       CASE WHEN $2 THEN pg_notify('calc_ready', '') END"
                                 " WHERE NOT pg_try_advisory_xact_lock(" LISTENER_LOCK ")";

/* Sends the owed NOTIFYs, if any; 0 when the connection failed (they stay owed). */
static int send_owed_notify(PGconn *c)
{
    char events[8000]; /* under PostgreSQL's limit on a payload */
    int owe_events = evwake_take_notify(events, sizeof events);
    pthread_mutex_lock(&rd.mu);
    int owe_ready = rd.notify_pending;
    rd.notify_pending = 0;
    pthread_mutex_unlock(&rd.mu);
    if (!owe_events && !owe_ready)
        return 1;
    if (peers == PEERS_NONE)
        return 1; /* nobody to tell: the statement would send nothing */
    const char *p[] = {owe_events ? events : "", owe_ready ? "t" : "f"};
    PGresult *r = PQexecParams(c, notify_sql, 2, NULL, p, NULL, NULL, 0);
    atomic_fetch_add(&notify_statements, 1);
    int ok = PQresultStatus(r) == PGRES_TUPLES_OK;
    /* A row when another listener holds the lock (before the hellos drained below). */
    if (ok)
        peers = PQntuples(r) > 0 ? PEERS_SOME : PEERS_NONE;
    PQclear(r);
    if (!ok) {
        if (owe_events)
            evwake_notify_failed();
        if (owe_ready) {
            pthread_mutex_lock(&rd.mu);
            rd.notify_pending = 1;
            pthread_mutex_unlock(&rd.mu);
        }
    }
    drain_notifications(c);
    return ok;
}

static void *listen_main(void *arg)
{
    (void)arg;
    PGconn *c = NULL;
    int warned = 0;
    backoff pause;
    backoff_init(&pause, BACKOFF_MIN_MS, BACKOFF_MAX_MS);
    while (!stopping()) {
        if (!c) {
            char err[256];
            c = connect_listening(err, sizeof err);
            if (!c) {
                if (!warned++)
                    log_warn("ready: cannot listen for calc_ready (retrying): %s", err);
                /* Not backoff_sleep: the stop pipe wakes wait_fds. */
                int64_t until = deadline_after_ms(backoff_next(&pause)), left;
                while (!stopping() && (left = deadline_left_ms(until)) > 0)
                    wait_fds(-1, (int)left);
                continue;
            }
            if (warned)
                log_info("ready: listening for calc_ready again");
            warned = 0;
            /* Hellos sent while we were not listening are lost: the next statement asks. */
            peers = PEERS_UNKNOWN;
            backoff_reset(&pause);
            /* Notifications sent while we were not listening are lost: look again. */
            bump();
            evwake_mark_all();
        }
        /* A NOTIFY still owed (its connection failed) is sent now, not after the next event:
         * the pipe poke that asked for it may be long gone. */
        pthread_mutex_lock(&rd.mu);
        int owed = rd.notify_pending || evwake_notify_owed();
        pthread_mutex_unlock(&rd.mu);
        short ev = wait_fds(PQsocket(c), owed ? 0 : -1);
        int ok = 1;
        if (ev) {
            ok = PQconsumeInput(c);
            drain_notifications(c);
        }
        int sent = ok && send_owed_notify(c);
        if (!ok || PQstatus(c) != CONNECTION_OK) {
            log_warn("ready: lost the listening connection: %s", PQerrorMessage(c));
            PQfinish(c);
            c = NULL;
        } else if (!sent) {
            /* The statement failed on a sound connection (a full notification queue, say): the
             * NOTIFY stays owed and is tried again after a pause, not at once and not over a new
             * connection, whose start makes every local poll and watch look again. */
            int64_t ms = backoff_next(&pause);
            log_warn("ready: NOTIFY: %s: again in %lldms", PQerrorMessage(c), (long long)ms);
            int64_t until = deadline_after_ms(ms), left;
            while (!stopping() && (left = deadline_left_ms(until)) > 0)
                if (wait_fds(PQsocket(c), (int)left)) {
                    if (!PQconsumeInput(c))
                        break; /* the next round sees the connection's state */
                    drain_notifications(c);
                }
        } else {
            backoff_reset(&pause);
        }
    }
    if (c)
        PQfinish(c);
    return NULL;
}

void ready_start(const db_params *params)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&rd.cv, &ca);
    pthread_condattr_destroy(&ca);
    if (pipe2(rd.wake, O_NONBLOCK | O_CLOEXEC) < 0) {
        log_error("ready: pipe2: %s", strerror(errno));
        abort();
    }
    rd.params = params;
    rd.started = pthread_create(&rd.thread, NULL, listen_main, NULL) == 0;
    if (!rd.started)
        log_error("ready: cannot start the listening thread: other dbagents' nodes wake us late");
}

void ready_stop(void)
{
    ready_release_waiters();
    pthread_mutex_lock(&rd.mu);
    rd.stopping = 1;
    pthread_mutex_unlock(&rd.mu);
    poke_thread();
    if (rd.started)
        pthread_join(rd.thread, NULL);
    rd.started = 0;
    close(rd.wake[0]);
    close(rd.wake[1]);
    rd.wake[0] = rd.wake[1] = -1;
    pthread_cond_destroy(&rd.cv);
}
