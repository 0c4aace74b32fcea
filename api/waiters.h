/*
 * waiters: GET /expression/{id}?wait=MS without a thread or a dbagent call per waiting client.
 * A waiting request keeps the reply it would get now, and its connection is suspended
 * (libmicrohttpd polls it no more). One thread watches the events of the waiters' users (one
 * WatchEvents long poll, as the event streams do) and looks at every waiting expression of this
 * API instance with one GetExpressions call (for up to 1000 at a time) as soon as an event says
 * one of them became final, and at least once per WAIT_POLL_MS; a waiter whose expression became
 * final, or whose wait ran out, gets its reply replaced by the newest and its connection resumed,
 * and http.c sends the reply then. Without WatchEvents answering, it looks once per WAIT_POLL_MS.
 */
#ifndef CALC_WAITERS_H
#define CALC_WAITERS_H

#include <stdint.h>

#include "calc.pb-c.h"
#include "http.h"

#define WAITERS_MAX_WAIT_MS 30000

/* Writes the reply for e to r (the route's own, so a waiter's reply is the one it would get). */
typedef void (*waiters_reply_fn)(http_req *r, const Calc__V1__Expression *e);

/* Starts the thread; poll_ms at most between looks. Returns 0, or -1 when it cannot start. */
int waiters_start(int64_t poll_ms, waiters_reply_fn reply);
/*
 * From r's access handler, r's reply already written: suspends r's connection until r->path_id
 * of r->user_id is final or until deadline_ms (monotonic). Returns 0, or -1 (nothing done: send
 * the reply now) when the waiters are not running.
 */
int waiters_add(http_req *r, int64_t deadline_ms);
/* Resumes every waiter with the reply it has and stops the thread: libmicrohttpd must not stop
 * with a connection suspended. Nothing happens when the thread never started. */
void waiters_stop(void);
/* Appends calc_waiters (waiting now), calc_waiter_polls_total, calc_waiter_watches_total and
 * calc_waiter_event_looks_total to b (Prometheus text). */
void waiters_metrics(buf *b);

#endif
