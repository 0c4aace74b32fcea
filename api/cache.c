#include "cache.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"
#include "metrics.h"
#include "timeutil.h"

#define STRIPES 64

typedef struct slot {
    int64_t user_id, id;
    int64_t until_ms; /* retention may delete it from then on (monotonic); 0: never */
    char *reply;
} slot;

static slot slots[CACHE_SLOTS];
static pthread_mutex_t locks[STRIPES];
static pthread_once_t once = PTHREAD_ONCE_INIT;
static atomic_ullong hits, expired;

static void init_locks(void)
{
    for (int i = 0; i < STRIPES; i++)
        pthread_mutex_init(&locks[i], NULL);
}

static size_t index_of(int64_t id)
{
    uint64_t h = (uint64_t)id * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 32) % CACHE_SLOTS;
}

char *cache_get(int64_t user_id, int64_t id)
{
    pthread_once(&once, init_locks);
    size_t i = index_of(id);
    pthread_mutex_t *lock = &locks[i % STRIPES];
    char *copy = NULL, *over = NULL;
    pthread_mutex_lock(lock);
    if (slots[i].reply && slots[i].id == id && slots[i].user_id == user_id) {
        if (slots[i].until_ms && time_monotonic_ms() >= slots[i].until_ms) {
            over = slots[i].reply; /* retention may have deleted it: dbagent says */
            slots[i] = (slot){0};
        } else {
            copy = xstrdup(slots[i].reply);
        }
    }
    pthread_mutex_unlock(lock);
    if (over) {
        free(over);
        atomic_fetch_add(&expired, 1);
    }
    if (copy)
        atomic_fetch_add(&hits, 1);
    return copy;
}

void cache_put(int64_t user_id, int64_t id, const char *reply, int64_t for_ms)
{
    if (strlen(reply) > CACHE_MAX_REPLY || for_ms < 0)
        return;
    int64_t until_ms = for_ms ? time_monotonic_ms() + for_ms : 0;
    pthread_once(&once, init_locks);
    size_t i = index_of(id);
    char *copy = xstrdup(reply), *old;
    pthread_mutex_t *lock = &locks[i % STRIPES];
    pthread_mutex_lock(lock);
    old = slots[i].reply;
    slots[i] = (slot){.user_id = user_id, .id = id, .until_ms = until_ms, .reply = copy};
    pthread_mutex_unlock(lock);
    free(old);
}

void cache_metrics_write(buf *b)
{
    metrics_family(b, "calc_expression_cache_hits_total", "counter",
                   "GET /expression/{id} answered from this instance's cache of finished ones");
    metrics_u64(b, "calc_expression_cache_hits_total", NULL, atomic_load(&hits));
    metrics_family(b, "calc_expression_cache_expired_total", "counter",
                   "Cached finished expressions dropped because retention may delete them now");
    metrics_u64(b, "calc_expression_cache_expired_total", NULL, atomic_load(&expired));
}
