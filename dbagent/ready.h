/*
 * ready: wakes TakeReady long polls when nodes become ready.
 *
 * A handler whose committed transaction made nodes ready calls ready_signal(): the callers
 * waiting in this process wake at once, and one thread with its own PostgreSQL connection sends
 * NOTIFY calc_ready for the other dbagents. That thread sends one NOTIFY at a time, so a burst
 * of completions costs one notifying commit, not one each: PostgreSQL runs notifying commits one
 * after another under a database-wide lock. It also LISTENs, and turns the other dbagents'
 * notifications into local wake-ups. It sends and receives eventwake.h's NOTIFY calc_events
 * (the users whose events committed) the same way, in the same statement. Both are sent only
 * while another dbagent's listener is connected: a lone dbagent sends none, and once it has seen
 * that nobody listens it runs no statement for them until another listener says hello.
 *
 * Waiting is by generation: read ready_generation() before looking for ready nodes; if none
 * were found, ready_wait() returns once the generation moved, so a node made ready between the
 * look and the wait is never missed. Workers set free (a completion, a heartbeat) move a second
 * generation, the room's: only a look that found nodes ready but no room for them waits for it
 * too (ready_wait_room), so completions that make nothing ready wake no long poll that has
 * nothing to take.
 */
#ifndef CALC_READY_H
#define CALC_READY_H

#include <stdint.h>

#include "db.h"

/* Starts the listening thread; params are kept, not copied, until ready_stop(). */
void ready_start(const db_params *params);
/* Wakes every waiter for good (calls to ready_wait return at once from now on). */
void ready_release_waiters(void);
/* Stops the thread and closes its connection. */
void ready_stop(void);

/* The generation of nodes made ready; *room, the room's (one read of both). */
uint64_t ready_generation(uint64_t *room);
/* Wakes the thread to send what is owed (eventwake.h's NOTIFY calc_events). */
void ready_poke(void);
/* After the commit that made nodes ready. */
void ready_signal(void);
/* Room for more work (a worker set free): moves the room's generation, which wakes this
 * process's ready_wait_room callers only; not news for the other dbagents. */
void ready_bump_room(void);
/* Waits until the generation is no longer seen or until deadline (monotonic ms). 1: it moved. */
int ready_wait(uint64_t seen, int64_t deadline_ms);
/* The same, or until the room's generation is no longer seen_room. 1: either moved. */
int ready_wait_room(uint64_t seen, uint64_t seen_room, int64_t deadline_ms);
/* Waits of either kind that ended because a generation moved, since start. */
int64_t ready_wakeups(void);
/* Callers inside ready_wait now (for the statistics). */
int ready_waiting(void);
/* NOTIFY statements sent since start (none while no other dbagent listens). */
int64_t ready_notify_statements(void);

#endif
