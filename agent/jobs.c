#include "jobs.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

void jobq_init(job_queue *q, int with_wakeup)
{
    pthread_mutex_init(&q->lock, NULL);
    pthread_cond_init(&q->cond, NULL);
    q->head = q->tail = NULL;
    q->len = 0;
    q->closed = 0;
    q->wake_fd[0] = q->wake_fd[1] = -1;
    if (with_wakeup && pipe2(q->wake_fd, O_NONBLOCK | O_CLOEXEC) < 0)
        abort();
}

void jobq_destroy(job_queue *q)
{
    job *j;
    while ((j = jobq_try_pop(q)))
        job_free(j);
    if (q->wake_fd[0] >= 0) {
        close(q->wake_fd[0]);
        close(q->wake_fd[1]);
    }
    pthread_mutex_destroy(&q->lock);
    pthread_cond_destroy(&q->cond);
}

void jobq_push(job_queue *q, job *j)
{
    j->next = NULL;
    pthread_mutex_lock(&q->lock);
    if (q->tail)
        q->tail->next = j;
    else
        q->head = j;
    q->tail = j;
    q->len++;
    pthread_cond_signal(&q->cond);
    pthread_mutex_unlock(&q->lock);
    if (q->wake_fd[1] >= 0) {
        char c = 1;
        /* A full pipe already means "wake up". */
        ssize_t ignored = write(q->wake_fd[1], &c, 1);
        (void)ignored;
    }
}

static job *take_head(job_queue *q)
{
    job *j = q->head;
    if (j) {
        q->head = j->next;
        if (!q->head)
            q->tail = NULL;
        q->len--;
    }
    return j;
}

job *jobq_pop(job_queue *q)
{
    pthread_mutex_lock(&q->lock);
    while (!q->head && !q->closed)
        pthread_cond_wait(&q->cond, &q->lock);
    job *j = take_head(q);
    pthread_mutex_unlock(&q->lock);
    return j;
}

job *jobq_try_pop(job_queue *q)
{
    if (q->wake_fd[0] >= 0) {
        char drain[64];
        while (read(q->wake_fd[0], drain, sizeof drain) > 0)
            ;
    }
    pthread_mutex_lock(&q->lock);
    job *j = take_head(q);
    pthread_mutex_unlock(&q->lock);
    return j;
}

void jobq_close(job_queue *q)
{
    pthread_mutex_lock(&q->lock);
    q->closed = 1;
    pthread_cond_broadcast(&q->cond);
    pthread_mutex_unlock(&q->lock);
}

size_t jobq_len(job_queue *q)
{
    pthread_mutex_lock(&q->lock);
    size_t n = q->len;
    pthread_mutex_unlock(&q->lock);
    return n;
}

void job_free(job *j)
{
    if (!j)
        return;
    free(j->body);
    free(j);
}
