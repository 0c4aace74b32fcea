/*
 * jobs: the hand-off between the thread that owns the RabbitMQ connection and the workers.
 * Deliveries go to the workers through a queue; verdicts (ack or nack) come back through
 * another, with a pipe to wake the owner's poll().
 */
#ifndef CALC_JOBS_H
#define CALC_JOBS_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    VERDICT_ACK,     /* done, or nothing to do: the message is gone */
    VERDICT_NACK,    /* reject without requeue: dead-letters to the retry queue */
    VERDICT_REQUEUE, /* reject with requeue: back to the work queue at once (clean stop) */
} verdict;

typedef struct job {
    uint64_t tag;        /* delivery tag on the connection it came from */
    uint64_t generation; /* which connection: tags of an older one are never acked */
    void *body;          /* owned by the job */
    size_t len;
    int redelivered;
    verdict verdict;
    struct job *next;
} job;

typedef struct job_queue {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    job *head, *tail;
    size_t len;
    int closed;
    int wake_fd[2]; /* written on every push when >= 0: for poll() */
} job_queue;

/* with_wakeup: also keep a non-blocking pipe that becomes readable on each push. */
void jobq_init(job_queue *q, int with_wakeup);
/* Frees the jobs still queued. */
void jobq_destroy(job_queue *q);
/* Appends j; the queue owns it until it is popped. */
void jobq_push(job_queue *q, job *j);
/* Blocks until a job arrives (the caller owns it) or the queue is closed and empty (NULL). */
job *jobq_pop(job_queue *q);
/* Never blocks; NULL when empty. Drains the wakeup pipe first. */
job *jobq_try_pop(job_queue *q);
/* Wakes every jobq_pop; once the queue is empty they return NULL. */
void jobq_close(job_queue *q);
size_t jobq_len(job_queue *q);
/* Frees j and its body; NULL is fine. */
void job_free(job *j);

#endif
