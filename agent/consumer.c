#include "consumer.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>

#include "log.h"
#include "mem.h"
#include "timeutil.h"

#define BACKOFF_FIRST_MS 100
/* The owner wakes at least this often, so rabbitmq-c can send and check AMQP heartbeats. */
#define IDLE_WAKE_MS 1000

void consumer_init(consumer *c, agent_shared *s, const agent_cfg *cfg)
{
    c->s = s;
    c->cfg = cfg;
    c->link = NULL;
    c->broker = 0;
    c->generation = 0;
    c->outstanding = 0;
    backoff_init(&c->reconnect, BACKOFF_FIRST_MS, cfg->reconnect_max_ms);
}

static void drop_link(consumer *c, const char *why)
{
    log_warn("agent=%s: RabbitMQ connection lost to %s: %s: the broker requeues our %d unanswered "
             "deliveries",
             c->s->name, mq_broker(c->link), why, c->outstanding);
    mq_close(c->link);
    c->link = NULL;
    /* Its node may be gone for good: the next connection starts with the broker after it. */
    c->broker = mq_opts_next(&c->cfg->mq, c->broker);
    atomic_store(&c->s->consuming, 0);
    /* Deliveries no worker started yet: the broker requeues them with the connection. */
    job *j;
    while ((j = jobq_try_pop(c->s->todo))) {
        job_free(j);
        c->outstanding--;
    }
}

/* Sends the verdicts the workers handed back; those of an older connection are dropped. */
static void send_verdicts(consumer *c)
{
    job *j;
    while ((j = jobq_try_pop(c->s->verdicts))) {
        c->outstanding--;
        if (c->link && j->generation == c->generation) {
            int rc = j->verdict == VERDICT_ACK    ? mq_ack(c->link, j->tag)
                     : j->verdict == VERDICT_NACK ? mq_nack(c->link, j->tag)
                                                  : mq_requeue(c->link, j->tag);
            if (rc != MQ_OK)
                drop_link(c, "cannot send an ack or nack");
        }
        job_free(j);
    }
}

static int connect_link(consumer *c)
{
    char err[1024];
    c->link = mq_connect_any(&c->cfg->mq, &c->broker, err, sizeof err);
    if (c->link && mq_consume(c->link, (int)c->cfg->workers, err, sizeof err) != MQ_OK) {
        mq_close(c->link);
        c->link = NULL;
    }
    if (!c->link) {
        log_warn("agent=%s: RabbitMQ: %s: next attempt in %lldms", c->s->name, err,
                 (long long)backoff_peek(&c->reconnect));
        return -1;
    }
    c->generation++;
    backoff_reset(&c->reconnect);
    atomic_store(&c->s->consuming, 1);
    log_info("agent=%s: consuming %s on RabbitMQ %s (broker %zu of %zu) with %lld workers "
             "(prefetch %lld, connection %llu)",
             c->s->name, MQ_WORK_QUEUE, mq_broker(c->link), c->broker + 1, c->cfg->mq.n_urls,
             (long long)c->cfg->workers, (long long)c->cfg->workers,
             (unsigned long long)c->generation);
    return 0;
}

/* Told to stop, or refused by dbagent: either way no new delivery is taken. */
static int stopping(const consumer *c, const atomic_int *stop)
{
    return atomic_load(stop) || atomic_load(&c->s->refused);
}

/* Waits up to ms for a verdict or a stop, sending verdicts as they come. */
static void pause_ms(consumer *c, int64_t ms, const atomic_int *stop)
{
    int64_t end = time_monotonic_ms() + ms;
    for (int64_t left = ms; left > 0 && !stopping(c, stop); left = end - time_monotonic_ms()) {
        struct pollfd pfd = {.fd = c->s->verdicts->wake_fd[0], .events = POLLIN};
        poll(&pfd, 1, (int)left);
        send_verdicts(c);
    }
}

/* Reads one delivery if there is one: hands it to the workers, or back when stopping. */
static void read_delivery(consumer *c, int hand_back)
{
    mq_delivery d;
    char err[256];
    int rc = mq_next(c->link, 0, &d, err, sizeof err);
    if (rc == MQ_ERR) {
        drop_link(c, err);
        return;
    }
    if (rc != MQ_OK)
        return;
    if (hand_back) {
        /* Sent before the broker saw our basic.cancel: another agent takes it. */
        if (mq_requeue(c->link, d.tag) != MQ_OK)
            drop_link(c, "cannot requeue");
        free(d.body);
        return;
    }
    job *j = xcalloc(1, sizeof *j);
    j->tag = d.tag;
    j->generation = c->generation;
    j->body = d.body;
    j->len = d.len;
    j->redelivered = d.redelivered;
    c->outstanding++;
    jobq_push(c->s->todo, j);
}

/* One turn of the loop: waits for the socket or a verdict (up to wait_ms), then reads. */
static void turn(consumer *c, int wait_ms, int hand_back)
{
    if (!mq_has_buffered(c->link)) {
        struct pollfd pfd[2] = {{.fd = mq_fd(c->link), .events = POLLIN},
                                {.fd = c->s->verdicts->wake_fd[0], .events = POLLIN}};
        int n = poll(pfd, 2, wait_ms);
        if (n < 0 && errno != EINTR) {
            drop_link(c, "poll failed");
            return;
        }
        /* A verdict only: send it first (the caller's loop does), then come back. */
        if (n > 0 && !(pfd[0].revents & (POLLIN | POLLHUP | POLLERR)))
            return;
        /* n == 0: idle; still call into rabbitmq-c so it sends a heartbeat when one is due. */
    }
    read_delivery(c, hand_back);
}

void consumer_run(consumer *c, const atomic_int *stop)
{
    while (!stopping(c, stop)) {
        send_verdicts(c);
        if (!c->link && connect_link(c) < 0) {
            /* Verdicts keep flowing during the pause, so it is not backoff_sleep. */
            pause_ms(c, backoff_next(&c->reconnect), stop);
            continue;
        }
        turn(c, IDLE_WAKE_MS, 0);
    }
}

void consumer_drain(consumer *c)
{
    agent_shared *s = c->s;
    char err[256];
    atomic_store(&s->draining, 1);
    if (c->link && mq_cancel(c->link, err, sizeof err) != MQ_OK)
        drop_link(c, err);
    /* Deliveries no worker has started go back at once, for another agent to take. */
    job *j;
    int handed_back = 0;
    while ((j = jobq_try_pop(s->todo))) {
        j->verdict = VERDICT_REQUEUE;
        jobq_push(s->verdicts, j);
        handed_back++;
    }
    log_info("agent=%s: stopping: %d nodes running, %d deliveries handed back, grace %lldms",
             s->name, c->outstanding - handed_back, handed_back, (long long)c->cfg->grace_ms);
    int64_t deadline = time_monotonic_ms() + c->cfg->grace_ms;
    for (;;) {
        send_verdicts(c);
        if (c->outstanding <= 0)
            break;
        if (!atomic_load(&s->hard_stop) && time_monotonic_ms() >= deadline) {
            log_warn("agent=%s: grace period over: interrupting %d nodes", s->name, c->outstanding);
            atomic_store(&s->hard_stop, 1);
        }
        if (c->link) {
            turn(c, 100, 1);
        } else {
            struct pollfd pfd = {.fd = s->verdicts->wake_fd[0], .events = POLLIN};
            poll(&pfd, 1, 100);
        }
    }
    if (c->link) {
        mq_close(c->link);
        c->link = NULL;
        atomic_store(&s->consuming, 0);
    }
}
