/*
 * agent_cfg: calc-agent's configuration, one table (name, type, default, bounds, help) read from
 * the environment and validated at start; --help prints it.
 */
#ifndef CALC_AGENT_CFG_H
#define CALC_AGENT_CFG_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "rpc_tls.h"
#include "mq_opts.h"

#define AGENT_NAME_MAX 128

#define AGENT_CFG_ENTRIES 20

typedef struct agent_cfg {
    char name[AGENT_NAME_MAX + 1]; /* AGENT_NAME, or host-pid when unset */
    const char *name_env;          /* AGENT_NAME as given ("" when unset) */
    const char *amqp_url;          /* points into the environment (or the table's default) */
    const char *amqp_queue_type;   /* AMQP_QUEUE_TYPE as given */
    const char *amqp_tls_ca, *amqp_tls_cert, *amqp_tls_key; /* "" when unset */
    const char *dba_addr;
    const char *dba_token;
    rpc_tls dba_tls;      /* DBAGENT_TLS_*: TLS to dbagent when its CA is set */
    int64_t workers;      /* AGENT_MAX_PROCESSES: nodes computed at once, and the prefetch */
    int64_t heartbeat_ms; /* HEARTBEAT_INTERVAL_MS */
    int64_t retry_ttl_ms; /* RETRY_TTL_MS, declared on the retry queue */
    int64_t grace_ms;     /* AGENT_GRACE_MS: on SIGTERM, time in-flight nodes get */
    int64_t
        complete_retry_ms;    /* COMPLETE_RETRY_MS: a computed result waits this long for dbagent */
    int64_t call_timeout_ms;  /* DBAGENT_TIMEOUT_MS: deadline of one ClaimNode/CompleteNode */
    int64_t reconnect_max_ms; /* AMQP_RECONNECT_MAX_MS: cap of the reconnection backoff */
    const char *health_file;  /* AGENT_HEALTH_FILE: touched while healthy; "" for none */
    mq_opts mq;               /* the brokers, TLS and queue type, checked; mq_opts_free at exit */
} agent_cfg;

/* Fills t (AGENT_CFG_ENTRIES entries) with the table bound to c's fields; returns its length. */
size_t agent_cfg_table(agent_cfg *c, cfg_entry *t);

/*
 * Loads c from the environment and checks what the table cannot (the name's characters,
 * the AMQP brokers, TLS files and queue type, into c->mq).
 * Returns 0, or -1 with err naming the variable and the problem. c->mq is freed by
 * mq_opts_free(&c->mq) either way.
 */
int agent_cfg_load(agent_cfg *c, char *err, size_t errlen);

#endif
