/*
 * readguard: a deadline on reading each request. libmicrohttpd's connection timeout counts only
 * silence, so a client that sends one byte of headers or body every few seconds would hold its
 * connection (and its place under the per-address cap) for ever. Here a connection must deliver
 * a whole request within the read timeout of opening or of its previous reply; a thread looks
 * every tenth of the timeout and shuts down the sockets past it, which libmicrohttpd then closes.
 */
#ifndef CALC_READGUARD_H
#define CALC_READGUARD_H

#include <stdint.h>

typedef struct readguard readguard;

/* Starts the watching thread. Returns 0, or -1 when it cannot start. */
int readguard_start(int64_t timeout_ms);
/* Stops the thread; connections still open are left alone. */
void readguard_stop(void);

/* A connection opened on fd: its first request must be read within the timeout. The entry is
 * freed by readguard_close. */
readguard *readguard_open(int fd);
void readguard_close(readguard *g);
/* The request is read whole: no deadline while it is served. */
void readguard_read(readguard *g);
/* Its reply is sent: the next request must be read within the timeout from now. */
void readguard_replied(readguard *g);

#endif
