/*
 * calc-agent: computes nodes. One thread owns the RabbitMQ connection (rabbitmq-c is not
 * thread-safe); AGENT_MAX_PROCESSES workers compute; a heartbeat thread reports to dbagent.
 */
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "calc.pb-c.h"
#include "config.h"
#include "jobs.h"
#include "log.h"
#include "mem.h"
#include "methods.h"
#include "mq.h"
#include "rpc.h"
#include "timeutil.h"
#include "worker.h"

static struct {
    const char *name, *amqp_url, *dba_addr, *dba_token;
    int64_t workers, heartbeat_ms, retry_ttl_ms, grace_ms, complete_retry_ms;
} cfg;

static const cfg_entry config_table[] = {
    {"AGENT_NAME", CFG_STR, "", 0, 128, "unique name of this agent (default: host-pid)", &cfg.name},
    {"AGENT_MAX_PROCESSES", CFG_INT, "4", 1, 1024, "workers: nodes computed at once", &cfg.workers},
    {"AMQP_URL", CFG_SECRET, "amqp://guest:guest@127.0.0.1:5672/%2f", 1, 1024,
     "RabbitMQ URL (amqp://user:pass@host:port/vhost)", &cfg.amqp_url},
    {"DBAGENT_ADDR", CFG_STR, "127.0.0.1:50051", 1, 255, "dbagent address (host:port)",
     &cfg.dba_addr},
    {"DBAGENT_TOKEN", CFG_SECRET, NULL, 16, 256, "shared token for dbagent", &cfg.dba_token},
    {"HEARTBEAT_INTERVAL_MS", CFG_INT, "1000", 50, 600000, "heartbeat period", &cfg.heartbeat_ms},
    {"RETRY_TTL_MS", CFG_INT, "20000", 0, 86400000,
     "time a message waits in the retry queue (must match every component)", &cfg.retry_ttl_ms},
    {"AGENT_GRACE_MS", CFG_INT, "30000", 0, 3600000,
     "on SIGTERM, time in-flight nodes get to finish", &cfg.grace_ms},
    {"COMPLETE_RETRY_MS", CFG_INT, "10000", 0, 3600000,
     "how long a computed result waits for dbagent before the message is retried",
     &cfg.complete_retry_ms},
};
#define N_CONFIG (sizeof config_table / sizeof config_table[0])

static volatile sig_atomic_t stop_requested;
static volatile int heartbeat_stop;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void *heartbeat_main(void *p)
{
    agent_shared *s = p;
    while (!heartbeat_stop) {
        Calc__V1__HeartbeatRequest req = CALC__V1__HEARTBEAT_REQUEST__INIT;
        int64_t nodes[1024];
        size_t n = 0;
        pthread_mutex_lock(&s->lock);
        for (int i = 0; i < s->workers && n < 1024; i++)
            if (s->in_hand[i])
                nodes[n++] = s->in_hand[i];
        pthread_mutex_unlock(&s->lock);
        req.agent = (char *)s->name;
        req.workers = s->workers;
        req.busy = (int32_t)n;
        req.n_nodes = n;
        req.nodes = nodes;
        Calc__V1__Empty *rep = NULL;
        char err[256];
        int rc = rpc_call(s->dba, DBA_HEARTBEAT, &req.base, &calc__v1__empty__descriptor,
                          (ProtobufCMessage **)&rep, (int)cfg.heartbeat_ms + 1000, err, sizeof err);
        if (rc == RPC_OK)
            protobuf_c_message_free_unpacked(&rep->base, NULL);
        else
            log_warn("Heartbeat agent=%s: %s", s->name, err);
        time_sleep_ms(cfg.heartbeat_ms, &heartbeat_stop);
    }
    return NULL;
}

typedef struct owner {
    agent_shared *s;
    mq_link *link;
    uint64_t generation;
    int in_flight; /* deliveries of the current connection not yet answered */
} owner;

/* Sends the verdicts the workers have handed back; tags of older connections are dropped. */
static void send_verdicts(owner *o)
{
    job *j;
    while ((j = jobq_try_pop(o->s->verdicts))) {
        if (o->link && j->generation == o->generation) {
            int rc = j->verdict == VERDICT_ACK    ? mq_ack(o->link, j->tag)
                     : j->verdict == VERDICT_NACK ? mq_nack(o->link, j->tag)
                                                  : mq_requeue(o->link, j->tag);
            if (rc != MQ_OK)
                log_warn("agent=%s: cannot answer delivery %llu: the broker will redeliver it",
                         o->s->name, (unsigned long long)j->tag);
            o->in_flight--;
        }
        job_free(j);
    }
}

static void drop_link(owner *o, const char *why)
{
    log_warn("agent=%s: RabbitMQ connection lost: %s", o->s->name, why);
    mq_close(o->link);
    o->link = NULL;
    o->in_flight = 0; /* the broker requeues what we held; those tags are dead */
}

static int connect_link(owner *o)
{
    char err[256];
    o->link = mq_connect(cfg.amqp_url, (int)cfg.retry_ttl_ms, err, sizeof err);
    if (o->link && mq_consume(o->link, (int)cfg.workers, err, sizeof err) != MQ_OK) {
        mq_close(o->link);
        o->link = NULL;
    }
    if (!o->link) {
        log_warn("agent=%s: RabbitMQ: %s", o->s->name, err);
        return -1;
    }
    o->generation++;
    log_info("agent=%s: consuming %s with %lld workers", o->s->name, MQ_WORK_QUEUE,
             (long long)cfg.workers);
    return 0;
}

/* Reads deliveries and hands them to workers until a stop is requested. */
static void consume_loop(owner *o)
{
    int64_t backoff = 100;
    while (!stop_requested) {
        send_verdicts(o);
        if (!o->link) {
            if (connect_link(o) < 0) {
                time_sleep_ms(backoff, (volatile int *)&stop_requested);
                backoff = backoff * 2 > 5000 ? 5000 : backoff * 2;
                continue;
            }
            backoff = 100;
        }
        if (!mq_has_buffered(o->link)) {
            struct pollfd pfd[2] = {{.fd = mq_fd(o->link), .events = POLLIN},
                                    {.fd = o->s->verdicts->wake_fd[0], .events = POLLIN}};
            /* Wake at least every second so AMQP heartbeats are serviced. */
            poll(pfd, 2, 1000);
            if (!(pfd[0].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
        }
        mq_delivery d;
        char err[256];
        int rc = mq_next(o->link, 0, &d, err, sizeof err);
        if (rc == MQ_ERR) {
            drop_link(o, err);
            continue;
        }
        if (rc == MQ_TIMEOUT)
            continue;
        job *j = xcalloc(1, sizeof *j);
        j->tag = d.tag;
        j->generation = o->generation;
        j->body = d.body;
        j->len = d.len;
        o->in_flight++;
        jobq_push(o->s->todo, j);
    }
}

/* SIGTERM: no new deliveries; queued ones go back; running ones get the grace period. */
static void drain(owner *o)
{
    job *j;
    while ((j = jobq_try_pop(o->s->todo))) {
        j->verdict = VERDICT_REQUEUE;
        jobq_push(o->s->verdicts, j);
    }
    int64_t deadline = time_monotonic_ms() + cfg.grace_ms;
    while (o->link && o->in_flight > 0) {
        if (time_monotonic_ms() >= deadline && !o->s->hard_stop) {
            log_warn("agent=%s: grace period over: handing back %d nodes", o->s->name,
                     o->in_flight);
            o->s->hard_stop = 1;
        }
        send_verdicts(o);
        struct pollfd pfd = {.fd = o->s->verdicts->wake_fd[0], .events = POLLIN};
        poll(&pfd, 1, 100);
    }
    o->s->hard_stop = 1;
}

int main(int argc, char **argv)
{
    log_init("agent");
    cfg_init_or_exit(argc, argv, "calc-agent\nComputes the cluster's operation nodes.",
                     config_table, N_CONFIG);
    char default_name[300];
    if (!cfg.name[0]) {
        char host[256] = "agent";
        gethostname(host, sizeof host - 1);
        snprintf(default_name, sizeof default_name, "%s-%d", host, (int)getpid());
        cfg.name = default_name;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    rpc_global_init();

    job_queue todo, verdicts;
    jobq_init(&todo, 0);
    jobq_init(&verdicts, 1);
    agent_shared s = {.name = cfg.name,
                      .dba = rpc_client_new(cfg.dba_addr, cfg.dba_token),
                      .todo = &todo,
                      .verdicts = &verdicts,
                      .complete_retry_ms = cfg.complete_retry_ms,
                      .workers = (int)cfg.workers};
    pthread_mutex_init(&s.lock, NULL);
    s.in_hand = xcalloc((size_t)cfg.workers, sizeof *s.in_hand);

    pthread_t hb, *threads = xcalloc((size_t)cfg.workers, sizeof *threads);
    worker_arg *args = xcalloc((size_t)cfg.workers, sizeof *args);
    pthread_create(&hb, NULL, heartbeat_main, &s);
    for (int i = 0; i < cfg.workers; i++) {
        args[i] = (worker_arg){.shared = &s, .index = i};
        pthread_create(&threads[i], NULL, worker_main, &args[i]);
    }
    log_info("agent=%s: started with %lld workers", cfg.name, (long long)cfg.workers);

    owner o = {.s = &s};
    consume_loop(&o);
    log_info("agent=%s: stopping", cfg.name);
    drain(&o);
    jobq_close(&todo);
    for (int i = 0; i < cfg.workers; i++)
        pthread_join(threads[i], NULL);
    send_verdicts(&o);
    heartbeat_stop = 1;
    pthread_join(hb, NULL);
    if (o.link)
        mq_close(o.link);

    rpc_client_free(s.dba);
    rpc_global_shutdown();
    jobq_destroy(&todo);
    jobq_destroy(&verdicts);
    pthread_mutex_destroy(&s.lock);
    free(s.in_hand);
    free(threads);
    free(args);
    log_info("agent=%s: stopped", cfg.name);
    return 0;
}
