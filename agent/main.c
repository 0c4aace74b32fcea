/*
 * calc-agent: computes the cluster's operation nodes. The main thread owns the RabbitMQ
 * connection (consumer.c); AGENT_MAX_PROCESSES workers claim, compute and complete nodes
 * (worker.c); a heartbeat thread reports to dbagent (heartbeat.c).
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent_cfg.h"
#include "consumer.h"
#include "heartbeat.h"
#include "jobs.h"
#include "log.h"
#include "mem.h"
#include "rpc.h"
#include "worker.h"

/* dbagent refuses this agent's token or certificate (sysexits.h's EX_NOPERM): a restart with
 * the same settings would not help. */
#define EXIT_REFUSED 77

/* Workers only wait and make calls: a small stack keeps many of them cheap. */
#define WORKER_STACK (256 * 1024)

/* Set by the signal handler, read by the consumer's loop. */
static atomic_int stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    atomic_store(&stop_requested, 1);
}

static int start_workers(pthread_t *threads, worker_arg *args, agent_shared *s, int n)
{
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, WORKER_STACK);
    int i = 0;
    for (; i < n; i++) {
        args[i] = (worker_arg){.shared = s, .index = i};
        int rc = pthread_create(&threads[i], &attr, worker_main, &args[i]);
        if (rc) {
            log_error("agent=%s: pthread_create worker %d: %s", s->name, i, strerror(rc));
            break;
        }
    }
    pthread_attr_destroy(&attr);
    return i;
}

int main(int argc, char **argv)
{
    static agent_cfg cfg;
    cfg_entry table[AGENT_CFG_ENTRIES];
    size_t n_table = agent_cfg_table(&cfg, table);
    const char *summary = "calc-agent: computes the cluster's operation nodes.\n"
                          "Consumes the RabbitMQ work queue with AGENT_MAX_PROCESSES workers; "
                          "claims and completes nodes through dbagent.";
    log_init("agent");
    cfg_init_or_exit(argc, argv, summary, table, n_table);
    char err[512];
    if (agent_cfg_load(&cfg, err, sizeof err) < 0) {
        fprintf(stderr, "%s: configuration: %s\n(see %s --help)\n", argv[0], err, argv[0]);
        mq_opts_free(&cfg.mq);
        return 64;
    }
    struct sigaction sa = {.sa_handler = on_signal}; /* no SA_RESTART: poll() returns at once */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    rpc_global_init();

    int rc = 1, workers = (int)cfg.workers, started = 0, hb_started = 0;
    job_queue todo, verdicts;
    jobq_init(&todo, 0);
    jobq_init(&verdicts, 1);
    hand in_hand;
    hand_init(&in_hand, workers);
    agent_shared s = {
        .name = cfg.name,
        .dba = rpc_client_open(cfg.dba_addr, cfg.dba_token, &cfg.dba_tls, err, sizeof err),
        .todo = &todo,
        .verdicts = &verdicts,
        .hand = &in_hand,
        .complete_retry_ms = cfg.complete_retry_ms,
        .call_timeout_ms = (int)cfg.call_timeout_ms,
        .health_file = cfg.health_file};
    pthread_t *threads = xcalloc((size_t)workers, sizeof *threads);
    worker_arg *args = xcalloc((size_t)workers, sizeof *args);
    heartbeat hb;
    consumer c;
    int e;
    consumer_init(&c, &s, &cfg);
    if (!s.dba) {
        log_error("agent=%s: dbagent %s: %s", cfg.name, cfg.dba_addr, err);
        goto out;
    }

    /* Before a single message: an agent dbagent refuses would only hand every message back. */
    e = heartbeat_check(&s, cfg.heartbeat_ms, err, sizeof err);
    if (worker_refused(e, err)) {
        worker_note_refusal(&s, "Heartbeat", e, err);
        rc = EXIT_REFUSED;
        goto out;
    }
    if (e != RPC_OK)
        log_warn(
            "agent=%s: dbagent %s does not answer yet (%s); consuming anyway: claims that fail "
            "meanwhile wait in the retry queue",
            cfg.name, cfg.dba_addr, err);
    e = heartbeat_start(&hb, &s, cfg.heartbeat_ms);
    if (e) {
        log_error("agent=%s: pthread_create heartbeat: %s", cfg.name, strerror(e));
        goto out;
    }
    hb_started = 1;
    started = start_workers(threads, args, &s, workers);
    if (started < workers)
        goto out;
    log_info("agent=%s: started with %d workers, dbagent %s, heartbeat every %lldms, %zu "
             "RabbitMQ broker(s)%s, %s queues",
             cfg.name, workers, cfg.dba_addr, (long long)cfg.heartbeat_ms, cfg.mq.n_urls,
             cfg.mq.tls ? " over TLS" : "", mq_queue_type_name(cfg.mq.queue_type));

    consumer_run(&c, &stop_requested);
    consumer_drain(&c);
    rc = atomic_load(&s.refused) ? EXIT_REFUSED : 0;
out:
    atomic_store(&s.draining, 1);
    atomic_store(&s.hard_stop, 1);
    jobq_close(&todo);
    for (int i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    if (hb_started)
        heartbeat_stop(&hb);
    rpc_client_free(s.dba);
    rpc_global_shutdown();
    jobq_destroy(&todo);
    jobq_destroy(&verdicts);
    hand_destroy(&in_hand);
    free(threads);
    free(args);
    mq_opts_free(&cfg.mq);
    unsigned long long nodes = s.stats.nodes, claims = s.stats.claims, done = s.stats.completions;
    log_info("agent=%s: stopped: %llu nodes computed (%llu continued from a completion, %llu of "
             "no delay run without a claim); %llu ClaimNode calls, mean %.2fms; %llu CompleteNode "
             "calls, mean %.2fms",
             cfg.name, nodes, (unsigned long long)s.stats.continued,
             (unsigned long long)s.stats.unclaimed, claims,
             claims ? (double)s.stats.claim_us / (double)claims / 1000 : 0.0, done,
             done ? (double)s.stats.complete_us / (double)done / 1000 : 0.0);
    return rc;
}
