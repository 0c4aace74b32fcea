/*
 * mq: the RabbitMQ side of the cluster over rabbitmq-c: one connection with one channel, the
 * topology of ARCHITECTURE.md, persistent publishing with confirms, and manual-ack consuming.
 *
 * rabbitmq-c is not thread-safe and never reconnects: a link belongs to one thread, and the
 * owner reconnects (mq_close + mq_connect) after any error.
 */
#ifndef CALC_MQ_H
#define CALC_MQ_H

#include <stddef.h>
#include <stdint.h>

#include "mq_opts.h"

#define MQ_WORK_QUEUE  "calc.work"
#define MQ_RETRY_QUEUE "calc.retry"

#define MQ_OK      0
#define MQ_ERR     -1 /* the link is broken: close it and reconnect */
#define MQ_TIMEOUT 1

typedef struct mq_link mq_link;

/*
 * Connects to broker i of o (over TLS for amqps://, verifying the broker's certificate and
 * name) and declares the topology: the durable work queue dead-letters to the retry queue,
 * which holds a message o->retry_ttl_ms and dead-letters it back; both of o->queue_type.
 * NULL with err set on failure.
 */
mq_link *mq_connect(const mq_opts *o, size_t i, char *err, size_t errlen);
/*
 * Tries each broker of o once, from *cursor on, round robin, and returns the first link made;
 * *cursor becomes that broker's index. NULL with err giving every broker's failure otherwise.
 * After a link dies its owner moves on with *cursor = mq_opts_next(o, *cursor).
 */
mq_link *mq_connect_any(const mq_opts *o, size_t *cursor, char *err, size_t errlen);
void mq_close(mq_link *l);
/* "host:port" of the broker the link is on (for logs). */
const char *mq_broker(const mq_link *l);

/* The socket, for poll(). */
int mq_fd(mq_link *l);

/* ---- publishing ---- */

/* Puts the channel in confirm mode. */
int mq_confirm_mode(mq_link *l, char *err, size_t errlen);
/* Publishes a persistent message to the work queue; *seq gets its confirm sequence number. */
int mq_publish(mq_link *l, const void *body, size_t len, uint64_t *seq, char *err, size_t errlen);
/*
 * Waits until every message up to seq is confirmed or timeout_ms passes. acked[i] (for message
 * first_seq + i, i < n) is set to 1 for an ack and -1 for a nack; unanswered ones stay 0.
 */
int mq_wait_confirms(mq_link *l, uint64_t first_seq, int8_t *acked, size_t n, int timeout_ms,
                     char *err, size_t errlen);

/* ---- consuming ---- */

typedef struct mq_delivery {
    uint64_t tag;
    void *body; /* owned by the caller: free() */
    size_t len;
    int redelivered;
} mq_delivery;

/* basic.qos with prefetch, then basic.consume on the work queue with manual acks. */
int mq_consume(mq_link *l, int prefetch, char *err, size_t errlen);
/*
 * basic.cancel of the consumer: the broker sends no new deliveries. Deliveries already on the
 * way are still returned by mq_next afterwards, and must be answered.
 */
int mq_cancel(mq_link *l, char *err, size_t errlen);
/* True when a delivery may be read without blocking (frames already buffered). */
int mq_has_buffered(mq_link *l);
/* Waits up to timeout_ms for a delivery: MQ_OK (d filled), MQ_TIMEOUT, or MQ_ERR. */
int mq_next(mq_link *l, int timeout_ms, mq_delivery *d, char *err, size_t errlen);
int mq_ack(mq_link *l, uint64_t tag);
/* Rejects without requeue, so the message dead-letters to the retry queue. */
int mq_nack(mq_link *l, uint64_t tag);
/* Rejects with requeue, so the message goes back to the work queue at once (clean stop). */
int mq_requeue(mq_link *l, uint64_t tag);

#endif
