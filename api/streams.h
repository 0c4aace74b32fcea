/*
 * streams: the open GET /events streams of this API instance, without a thread each.
 *
 * A stream is a buffer of Server-Sent Events frames with a cap, and its per-user position (the
 * last seq it was given). libmicrohttpd sends it through a content-reader callback; when the
 * buffer is empty the callback suspends the connection, and whoever appends a frame resumes it.
 *
 * One hub thread holds one WatchEvents long poll to dbagent for every user with a stream here:
 * its position is the lowest of its streams', so dbagent returns only those users' events (and
 * this instance receives nobody else's). Each event goes to the streams of its user whose
 * position is just below it: every stream gets every event once and in order, whatever
 * position it opened at. A stream that opens for a user the poll does not cover, or below it,
 * wakes the poll (WakeWatch) so that it starts again with it at once.
 *
 * A ticker thread appends keep-alive comments to idle streams and ends those past their
 * lifetime. A stream whose unsent bytes would pass the cap is cut: its socket is shut down, and
 * its client resumes from its last id.
 */
#ifndef CALC_STREAMS_H
#define CALC_STREAMS_H

#include <stdint.h>

#include "buf.h"
#include "calc.pb-c.h"
#include "http.h"

typedef struct streams_settings {
    int64_t keepalive_ms;  /* a comment after this long without a frame */
    int64_t buffer_bytes;  /* unsent bytes one stream may hold */
    int64_t lifetime_ms;   /* a stream ends this long after it opened */
    int64_t watch_wait_ms; /* the hub's long poll */
    int64_t dba_timeout_ms;
} streams_settings;

/* Events one look gives per user (the handler's first page, and each of the hub's): up to 200,
 * fewer under a small STREAM_BUFFER_BYTES, so that a page fits a stream's buffer whole. */
int streams_page(void);

typedef struct stream stream;

/* Starts the hub and the ticker; settings are copied. Returns 0, or -1. */
int streams_start(const streams_settings *settings);
/* Ends every stream (they finish sending what they hold and close), and stops the threads.
 * Nothing happens when they never started. */
void streams_stop(void);

/*
 * The stream of r (GET /events of user r->user_id), given its first look: the events after
 * its position `after` (rep->events, all of r's user) and its head. Frames for those events go
 * in first, then `online` when the look had fewer than a page. The hub carries on from there.
 * r->stream is set; NULL when streams are not running (stopping).
 */
stream *streams_open(http_req *r, int64_t after, const Calc__V1__WatchEventsReply *rep);
/* The reply of a stream: a response from a content reader (http.c queues it with status 200). */
struct MHD_Response *streams_response(stream *s);

/* Prometheus text: streams open, users watched, events received and sent, wake-ups, cuts. */
void streams_metrics(buf *b);

#endif
