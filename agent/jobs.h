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

typedef enum { VERDICT_ACK, VERDICT_NACK, VERDICT_REQUEUE } verdict;

typedef struct job {
    uint64_t tag;        /* delivery tag on the connection it came from */
    uint64_t generation; /* which connection: tags of an older one are never acked */
    void *body;          /* owned by the job */
    size_t len;
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

void jobq_init(job_queue *q, int with_wakeup);
void jobq_destroy(job_queue *q);
void jobq_push(job_queue *q, job *j);
/* Blocks until a job arrives or the queue is closed (then NULL). */
job *jobq_pop(job_queue *q);
/* Never blocks; NULL when empty. Drains the wakeup pipe. */
job *jobq_try_pop(job_queue *q);
void jobq_close(job_queue *q);
void job_free(job *j);

#endif
