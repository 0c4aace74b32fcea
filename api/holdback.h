/*
 * holdback: replies held back for a while without holding a thread. A client refused by a limit
 * would otherwise come straight back for its next refusal, and a flood of refusals costs the CPU
 * other clients need; a held connection is suspended (libmicrohttpd polls it no more) and resumed
 * when its time is up, and its reply goes then. At most one per connection, so an address holds
 * at most its connection cap of them.
 */
#ifndef CALC_HOLDBACK_H
#define CALC_HOLDBACK_H

#include <stdint.h>

struct MHD_Connection;

/* Starts the thread that resumes held connections. Returns 0, or -1 when it cannot start. */
int holdback_start(void);
/*
 * From conn's access handler: suspends conn and resumes it ms from now (within 20 ms more); the
 * handler is then called again. Returns 0, or -1 (nothing done) once holdback_stop has run.
 */
int holdback_add(struct MHD_Connection *conn, int64_t ms);
/* Resumes every held connection now and stops the thread: libmicrohttpd must not be stopped
 * with a connection suspended. */
void holdback_stop(void);

#endif
