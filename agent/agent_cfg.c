#include "agent_cfg.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

size_t agent_cfg_table(agent_cfg *c, cfg_entry *t)
{
    const cfg_entry table[AGENT_CFG_ENTRIES] = {
        {"AGENT_NAME", CFG_STR, "", 0, AGENT_NAME_MAX,
         "unique name of this agent: letters, digits, '.', '_', '-' (default: host-pid)",
         &c->name_env},
        {"AGENT_MAX_PROCESSES", CFG_INT, "4", 1, 1024,
         "workers: nodes computed at once (also the RabbitMQ prefetch)", &c->workers},
        MQ_CONFIG(c),
        {"DBAGENT_ADDR", CFG_STR, "127.0.0.1:50051", 1, 255, "dbagent address (host:port)",
         &c->dba_addr},
        {"DBAGENT_TOKEN", CFG_SECRET, NULL, 16, 256,
         "token for dbagent: its DBAGENT_AGENT_TOKEN (or, without one, its DBAGENT_TOKEN)",
         &c->dba_token},
        RPC_TLS_CLIENT_CONFIG("DBAGENT_TLS", &c->dba_tls),
        DBAGENT_TIMEOUT_CONFIG("deadline of one ClaimNode or CompleteNode call",
                               &c->call_timeout_ms),
        {"HEARTBEAT_INTERVAL_MS", CFG_INT, "500", 50, 600000,
         "heartbeat period (keep it well under the API's HEARTBEAT_TIMEOUT_MS)", &c->heartbeat_ms},
        {"RETRY_TTL_MS", CFG_INT, "20000", 1, 86400000,
         "time a message waits in the retry queue (must match every component)", &c->retry_ttl_ms},
        {"AGENT_GRACE_MS", CFG_INT, "30000", 0, 3600000,
         "on SIGTERM, time in-flight nodes get to finish before they are handed back",
         &c->grace_ms},
        {"COMPLETE_RETRY_MS", CFG_INT, "10000", 0, 3600000,
         "how long a computed result is retried against dbagent before its message is retried",
         &c->complete_retry_ms},
        {"AMQP_RECONNECT_MAX_MS", CFG_INT, "5000", 100, 600000,
         "cap of the exponential backoff between RabbitMQ connection attempts",
         &c->reconnect_max_ms},
        {"AGENT_HEALTH_FILE", CFG_STR, "", 0, 4096,
         "file whose time is set at each heartbeat dbagent answered while the agent consumes"
         " from RabbitMQ: a container healthcheck reads its age (none when empty)",
         &c->health_file},
    };
    memcpy(t, table, sizeof table);
    return AGENT_CFG_ENTRIES;
}

static int name_ok(const char *s)
{
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '.' || *s == '_' || *s == '-'))
            return 0;
    return 1;
}

int agent_cfg_load(agent_cfg *c, char *err, size_t errlen)
{
    cfg_entry t[AGENT_CFG_ENTRIES];
    size_t n = agent_cfg_table(c, t);
    memset(&c->mq, 0, sizeof c->mq); /* freeable whatever fails below */
    if (cfg_load(t, n, err, errlen) < 0)
        return -1;
    const char *name = c->name_env;
    if (name[0]) {
        if (!name_ok(name)) {
            snprintf(err, errlen, "AGENT_NAME: '%s' has a character other than a-z A-Z 0-9 . _ -",
                     name);
            return -1;
        }
        snprintf(c->name, sizeof c->name, "%s", name);
    } else {
        char host[64] = "agent";
        gethostname(host, sizeof host - 1);
        host[sizeof host - 1] = '\0';
        for (char *p = host; *p; p++)
            if (!name_ok((const char[]){*p, '\0'}))
                *p = '-';
        snprintf(c->name, sizeof c->name, "%s-%d", host, (int)getpid());
    }
    /* A typo here would otherwise show only as an endless reconnection loop. */
    if (rpc_tls_check(&c->dba_tls, 0, "DBAGENT_TLS", err, errlen) < 0)
        return -1;
    mq_settings ms = {.url_list = c->amqp_url,
                      .queue_type = c->amqp_queue_type,
                      .tls_ca = c->amqp_tls_ca,
                      .tls_cert = c->amqp_tls_cert,
                      .tls_key = c->amqp_tls_key,
                      .retry_ttl_ms = (int)c->retry_ttl_ms};
    return mq_opts_init(&c->mq, &ms, err, errlen);
}
