#include "holdback.h"

#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "mem.h"
#include "timeutil.h"

#define TICK_MS 20

typedef struct held {
    struct MHD_Connection *conn;
    int64_t due_ms; /* monotonic */
    struct held *next;
} held;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static held *holding; /* under lock */
static int accepting; /* under lock: holdback_add suspends only while set */
static pthread_t thread;
static atomic_int stop;

/* Resumes and frees the held connections due by now (all when now < 0). */
static void resume_due(int64_t now)
{
    pthread_mutex_lock(&lock);
    for (held **p = &holding; *p;) {
        held *h = *p;
        if (now >= 0 && h->due_ms > now) {
            p = &h->next;
            continue;
        }
        *p = h->next;
        MHD_resume_connection(h->conn);
        free(h);
    }
    pthread_mutex_unlock(&lock);
}

static void *run(void *arg)
{
    (void)arg;
    while (!atomic_load(&stop)) {
        time_sleep_ms(TICK_MS, &stop);
        resume_due(time_monotonic_ms());
    }
    return NULL;
}

int holdback_start(void)
{
    atomic_store(&stop, 0);
    if (pthread_create(&thread, NULL, run, NULL) != 0)
        return -1;
    pthread_mutex_lock(&lock);
    accepting = 1;
    pthread_mutex_unlock(&lock);
    return 0;
}

int holdback_add(struct MHD_Connection *conn, int64_t ms)
{
    held *h = xcalloc(1, sizeof *h);
    h->conn = conn;
    h->due_ms = deadline_after_ms(ms);
    pthread_mutex_lock(&lock);
    if (!accepting) {
        pthread_mutex_unlock(&lock);
        free(h);
        return -1;
    }
    /* Under the lock: the thread cannot resume it before it is suspended. */
    MHD_suspend_connection(conn);
    h->next = holding;
    holding = h;
    pthread_mutex_unlock(&lock);
    return 0;
}

void holdback_stop(void)
{
    pthread_mutex_lock(&lock);
    int was = accepting;
    accepting = 0;
    pthread_mutex_unlock(&lock);
    if (!was)
        return;
    atomic_store(&stop, 1);
    pthread_join(thread, NULL);
    resume_due(-1);
}
