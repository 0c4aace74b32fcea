#include "readguard.h"

#include <pthread.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <sys/socket.h>

#include "log.h"
#include "mem.h"
#include "timeutil.h"

struct readguard {
    int fd;
    int64_t deadline_ms; /* monotonic; 0 while a read request is served */
    int cut;             /* shut down once already */
    readguard *prev, *next;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static readguard *open_list; /* every open connection, under lock */
static int64_t timeout;
static pthread_t watcher;
static atomic_int stop, running;

readguard *readguard_open(int fd)
{
    readguard *g = xcalloc(1, sizeof *g);
    g->fd = fd;
    pthread_mutex_lock(&lock);
    g->deadline_ms = deadline_after_ms(timeout);
    g->next = open_list;
    if (open_list)
        open_list->prev = g;
    open_list = g;
    pthread_mutex_unlock(&lock);
    return g;
}

/* libmicrohttpd calls this before it closes fd, so the watcher never shuts down a reused fd. */
void readguard_close(readguard *g)
{
    if (!g)
        return;
    pthread_mutex_lock(&lock);
    if (g->prev)
        g->prev->next = g->next;
    else
        open_list = g->next;
    if (g->next)
        g->next->prev = g->prev;
    pthread_mutex_unlock(&lock);
    free(g);
}

void readguard_read(readguard *g)
{
    if (!g)
        return;
    pthread_mutex_lock(&lock);
    g->deadline_ms = 0;
    pthread_mutex_unlock(&lock);
}

void readguard_replied(readguard *g)
{
    if (!g)
        return;
    pthread_mutex_lock(&lock);
    g->deadline_ms = deadline_after_ms(timeout);
    pthread_mutex_unlock(&lock);
}

static void *watch(void *arg)
{
    (void)arg;
    while (!atomic_load(&stop)) {
        time_sleep_ms(timeout / 10 > 0 ? timeout / 10 : 1, &stop);
        int64_t now = time_monotonic_ms();
        int cut = 0;
        pthread_mutex_lock(&lock);
        for (readguard *g = open_list; g; g = g->next) {
            if (g->cut || !g->deadline_ms || now < g->deadline_ms)
                continue;
            /* Not close(): the fd stays libmicrohttpd's; it sees the end and closes it. */
            shutdown(g->fd, SHUT_RDWR);
            g->cut = 1;
            cut++;
        }
        pthread_mutex_unlock(&lock);
        if (cut)
            log_warn("http: %d connection(s) closed: no whole request within %lld ms", cut,
                     (long long)timeout);
    }
    return NULL;
}

int readguard_start(int64_t timeout_ms)
{
    timeout = timeout_ms;
    atomic_store(&stop, 0);
    if (pthread_create(&watcher, NULL, watch, NULL) != 0)
        return -1;
    atomic_store(&running, 1);
    return 0;
}

void readguard_stop(void)
{
    if (!atomic_exchange(&running, 0))
        return;
    atomic_store(&stop, 1);
    pthread_join(watcher, NULL);
}
