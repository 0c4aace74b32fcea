#include "ratelimit.h"

#include <pthread.h>
#include <string.h>

#define SLOTS     4096
#define LOGIN_CAP 64

typedef struct slot {
    char login[LOGIN_CAP + 1];
    int64_t failures[RATELIMIT_MAX_FAILURES]; /* a ring of failure times */
    int next;
} slot;

static slot table[SLOTS];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static uint32_t hash(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

static int recent(const slot *s, int64_t now)
{
    int n = 0;
    for (int i = 0; i < RATELIMIT_MAX_FAILURES; i++)
        n += s->failures[i] && now - s->failures[i] < RATELIMIT_WINDOW_MS;
    return n;
}

/* The slot of login, or NULL. Names longer than LOGIN_CAP never match (they are invalid). */
static slot *find(const char *login)
{
    slot *s = &table[hash(login) % SLOTS];
    return strcmp(s->login, login) == 0 ? s : NULL;
}

int ratelimit_blocked(const char *login, int64_t now)
{
    pthread_mutex_lock(&lock);
    slot *s = find(login);
    int blocked = s && recent(s, now) >= RATELIMIT_MAX_FAILURES;
    pthread_mutex_unlock(&lock);
    return blocked;
}

void ratelimit_failure(const char *login, int64_t now)
{
    if (strlen(login) > LOGIN_CAP)
        return;
    pthread_mutex_lock(&lock);
    slot *s = &table[hash(login) % SLOTS];
    /* A colliding login takes the slot only once its owner has nothing recent. */
    if (strcmp(s->login, login) != 0) {
        if (recent(s, now) > 0) {
            pthread_mutex_unlock(&lock);
            return;
        }
        memset(s, 0, sizeof *s);
        strcpy(s->login, login);
    }
    s->failures[s->next] = now;
    s->next = (s->next + 1) % RATELIMIT_MAX_FAILURES;
    pthread_mutex_unlock(&lock);
}

void ratelimit_success(const char *login)
{
    pthread_mutex_lock(&lock);
    slot *s = find(login);
    if (s)
        memset(s, 0, sizeof *s);
    pthread_mutex_unlock(&lock);
}
