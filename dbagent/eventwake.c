#include "eventwake.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ready.h"
#include "timeutil.h"

#define RING       4096 /* recent marks kept */
#define NOTIFY_MAX 256  /* distinct users one NOTIFY names; beyond, it says "*" */
#define KICKS      64   /* watches WakeWatch remembers */

typedef struct mark {
    int64_t user;
    uint64_t gen;
} mark;

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t gen;      /* the newest mark's */
    mark ring[RING];   /* ring[k % RING]: the k-th mark */
    uint64_t n_marks;  /* marks ever made */
    uint64_t lost_gen; /* the newest generation overwritten in the ring, or marked "all" */
    int released;
    int64_t owed[NOTIFY_MAX];
    int n_owed, owed_all;
    struct {
        char id[EVWAKE_WATCH_ID_MAX];
        int64_t gen;
    } kicks[KICKS];
    int next_kick;
} ew = {.mu = PTHREAD_MUTEX_INITIALIZER};

static atomic_llong users_signalled, watch_wakeups;

void evwake_init(void)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&ew.cv, &ca);
    pthread_condattr_destroy(&ca);
}

void evwake_release(void)
{
    pthread_mutex_lock(&ew.mu);
    ew.released = 1;
    pthread_cond_broadcast(&ew.cv);
    pthread_mutex_unlock(&ew.mu);
}

uint64_t evwake_generation(void)
{
    pthread_mutex_lock(&ew.mu);
    uint64_t g = ew.gen;
    pthread_mutex_unlock(&ew.mu);
    return g;
}

/* One generation for users[0..n). Under mu. */
static void mark_locked(const int64_t *users, int n)
{
    ew.gen++;
    for (int i = 0; i < n; i++) {
        mark *m = &ew.ring[ew.n_marks % RING];
        if (ew.n_marks >= RING && m->gen > ew.lost_gen)
            ew.lost_gen = m->gen;
        m->user = users[i];
        m->gen = ew.gen;
        ew.n_marks++;
    }
    pthread_cond_broadcast(&ew.cv);
}

static void owe_locked(int64_t user)
{
    if (ew.owed_all)
        return;
    for (int i = 0; i < ew.n_owed; i++)
        if (ew.owed[i] == user)
            return;
    if (ew.n_owed == NOTIFY_MAX)
        ew.owed_all = 1;
    else
        ew.owed[ew.n_owed++] = user;
}

void evwake_signal(const int64_t *users, int n)
{
    if (n <= 0)
        return;
    pthread_mutex_lock(&ew.mu);
    mark_locked(users, n);
    int poke = !ew.n_owed && !ew.owed_all;
    for (int i = 0; i < n; i++)
        owe_locked(users[i]);
    pthread_mutex_unlock(&ew.mu);
    atomic_fetch_add(&users_signalled, n);
    if (poke)
        ready_poke();
}

void evwake_mark(const int64_t *users, int n)
{
    pthread_mutex_lock(&ew.mu);
    mark_locked(users, n);
    pthread_mutex_unlock(&ew.mu);
}

void evwake_mark_all(void)
{
    pthread_mutex_lock(&ew.mu);
    ew.gen++;
    ew.lost_gen = ew.gen;
    pthread_cond_broadcast(&ew.cv);
    pthread_mutex_unlock(&ew.mu);
}

/* Under mu. */
static int kicked_locked(const char *watch_id, int64_t watch_gen)
{
    if (!watch_id[0])
        return 0;
    for (int i = 0; i < KICKS; i++)
        if (!strcmp(ew.kicks[i].id, watch_id))
            return ew.kicks[i].gen > watch_gen;
    return 0;
}

int evwake_wait(uint64_t seen, int64_t deadline_ms, const char *watch_id, int64_t watch_gen)
{
    pthread_mutex_lock(&ew.mu);
    while (ew.gen == seen && !ew.released && !kicked_locked(watch_id, watch_gen)) {
        int64_t left = deadline_ms - time_monotonic_ms();
        if (left <= 0)
            break;
        struct timespec ts = deadline_timespec(left);
        pthread_cond_timedwait(&ew.cv, &ew.mu, &ts);
    }
    int moved = ew.gen != seen && !ew.released;
    pthread_mutex_unlock(&ew.mu);
    return moved;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

int evwake_touched(uint64_t seen, const int64_t *users, int n, char *touched)
{
    static int64_t moved[RING]; /* under mu */
    int n_moved = 0, count = 0;
    pthread_mutex_lock(&ew.mu);
    int all = ew.lost_gen > seen;
    uint64_t first = ew.n_marks > RING ? ew.n_marks - RING : 0;
    /* Newest first: the marks after seen are at the end of the ring. */
    for (uint64_t k = ew.n_marks; !all && k > first; k--) {
        const mark *m = &ew.ring[(k - 1) % RING];
        if (m->gen <= seen)
            break;
        moved[n_moved++] = m->user;
    }
    qsort(moved, (size_t)n_moved, sizeof moved[0], cmp_i64);
    for (int i = 0; i < n; i++) {
        touched[i] = (char)(all || bsearch(&users[i], moved, (size_t)n_moved, sizeof moved[0],
                                           cmp_i64) != NULL);
        count += touched[i];
    }
    pthread_mutex_unlock(&ew.mu);
    return count;
}

void evwake_kick(const char *watch_id, int64_t watch_gen)
{
    pthread_mutex_lock(&ew.mu);
    int slot = -1;
    for (int i = 0; i < KICKS && slot < 0; i++)
        if (!strcmp(ew.kicks[i].id, watch_id))
            slot = i;
    if (slot < 0) {
        slot = ew.next_kick;
        ew.next_kick = (ew.next_kick + 1) % KICKS;
        snprintf(ew.kicks[slot].id, sizeof ew.kicks[slot].id, "%s", watch_id);
        ew.kicks[slot].gen = watch_gen;
    } else if (watch_gen > ew.kicks[slot].gen) {
        ew.kicks[slot].gen = watch_gen;
    }
    pthread_cond_broadcast(&ew.cv);
    pthread_mutex_unlock(&ew.mu);
}

int evwake_notify_owed(void)
{
    pthread_mutex_lock(&ew.mu);
    int owed = ew.n_owed > 0 || ew.owed_all;
    pthread_mutex_unlock(&ew.mu);
    return owed;
}

int evwake_take_notify(char *out, size_t cap)
{
    size_t len = 0;
    out[0] = '\0';
    pthread_mutex_lock(&ew.mu);
    int owed = ew.n_owed > 0 || ew.owed_all;
    for (int i = 0; i < ew.n_owed && !ew.owed_all; i++) {
        int w = snprintf(out + len, cap - len, "%s%lld", i ? "," : "", (long long)ew.owed[i]);
        if (w < 0 || (size_t)w >= cap - len)
            ew.owed_all = 1;
        else
            len += (size_t)w;
    }
    if (ew.owed_all)
        snprintf(out, cap, "*");
    ew.n_owed = 0;
    ew.owed_all = 0;
    pthread_mutex_unlock(&ew.mu);
    return owed;
}

void evwake_notify_failed(void)
{
    pthread_mutex_lock(&ew.mu);
    ew.owed_all = 1;
    pthread_mutex_unlock(&ew.mu);
}

void evwake_from_peer(const char *payload)
{
    int64_t users[NOTIFY_MAX];
    int n = 0;
    if (payload[0] == '*') {
        evwake_mark_all();
        return;
    }
    for (const char *p = payload; *p && n < NOTIFY_MAX;) {
        char *end;
        long long v = strtoll(p, &end, 10);
        if (end == p) {
            evwake_mark_all(); /* not ours to read: look at everyone */
            return;
        }
        users[n++] = v;
        p = *end == ',' ? end + 1 : end;
    }
    if (n)
        evwake_mark(users, n);
}

void evwake_count_wakeup(void)
{
    atomic_fetch_add(&watch_wakeups, 1);
}

void evwake_counts(int64_t *signalled, int64_t *wakeups)
{
    *signalled = atomic_load(&users_signalled);
    *wakeups = atomic_load(&watch_wakeups);
}
