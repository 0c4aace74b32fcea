/*
 * eventwake: wakes the WatchEvents long polls when events of their users commit.
 *
 * A handler whose committed transaction appended events calls evwake_signal() with their users:
 * the watches waiting in this process that hold one of those users look again at once, and the
 * ready thread (ready.h) sends NOTIFY calc_events, '<user ids>' for the other dbagents, outside
 * any transaction and coalesced (one NOTIFY carries the users of every commit since the last).
 * The other dbagents' notifications come back through evwake_mark().
 *
 * Which users moved is kept in a ring of recent marks, each with a generation. A watch reads
 * evwake_generation() before it looks, waits with evwake_wait(), then asks evwake_touched()
 * which of its users moved since: only those are read again. When the ring has lost marks newer
 * than a watch's generation (or a notification may have been missed), every user counts as
 * moved: a wake-up too many costs one look, a missed one would cost an event's latency.
 */
#ifndef CALC_EVENTWAKE_H
#define CALC_EVENTWAKE_H

#include <stddef.h>
#include <stdint.h>

#define EVWAKE_WATCH_ID_MAX 64 /* a watch id's length, NUL included */

/* Before any other call. */
void evwake_init(void);
/* Every waiting watch returns, and every later wait returns at once (stop). */
void evwake_release(void);

uint64_t evwake_generation(void);
/* After the commit that appended events of users[0..n): local watches wake, a NOTIFY is owed. */
void evwake_signal(const int64_t *users, int n);
/* Users another dbagent notified about: local watches wake. */
void evwake_mark(const int64_t *users, int n);
/* Notifications may have been missed (the listening connection was lost): every user moved. */
void evwake_mark_all(void);

/*
 * Waits until the generation is no longer seen, or WakeWatch named watch_id with a generation
 * above watch_gen, or deadline (monotonic ms), or the release. Returns 1 when the generation
 * moved, 0 otherwise.
 */
int evwake_wait(uint64_t seen, int64_t deadline_ms, const char *watch_id, int64_t watch_gen);
/* Sets touched[i] for each of users[0..n) marked after generation seen; returns how many. */
int evwake_touched(uint64_t seen, const int64_t *users, int n, char *touched);
/* WakeWatch: the watch watch_id waiting with a generation under watch_gen returns now (or its
 * next wait does, when it is not waiting yet). */
void evwake_kick(const char *watch_id, int64_t watch_gen);

/* For the ready thread: 1 when a NOTIFY calc_events is owed. */
int evwake_notify_owed(void);
/* Takes the owed payload into out (comma-separated user ids, or "*" for every user); 0 when
 * nothing is owed. */
int evwake_take_notify(char *out, size_t cap);
/* The NOTIFY of a taken payload failed: it is owed again (as "*"). */
void evwake_notify_failed(void);
/* A NOTIFY payload from another dbagent. */
void evwake_from_peer(const char *payload);

/* GetStats: users signalled after commits here, and watches that waited and found events. */
void evwake_count_wakeup(void);
void evwake_counts(int64_t *users_signalled, int64_t *watch_wakeups);

#endif
