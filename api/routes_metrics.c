/*
 * GET /metrics: this instance's counters, read from memory at every scrape, and the cluster's
 * gauges (expressions by status, unfinished nodes by state, live agents), which cost dbagent a
 * pass over the expressions table. Those are asked for at most once per METRICS_CACHE_MS per
 * instance, whatever the scrape rate: one scrape refreshes them while the others serve the
 * previous answer. With METRICS_TOKEN set, a scrape must present it as a bearer token.
 */
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api.h"
#include "cache.h"
#include "dba.h"
#include "dispatcher.h"
#include "log.h"
#include "mem.h"
#include "methods.h"
#include "metrics.h"
#include "reads.h"
#include "streams.h"
#include "waiters.h"
#include "timeutil.h"

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;        /* a refresh ended */
    char *text;               /* the gauges' Prometheus text, owned; NULL before the first answer */
    int64_t at_ms;            /* monotonic time text was fetched */
    int refreshing;           /* one scrape is asking dbagent */
    int failed;               /* the last refresh failed: text is no longer served */
    unsigned long long ended; /* refreshes ended, either way */
    unsigned long long refreshes;
} gauges = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, 0, 0, 0, 0, 0};

/* Expressions and unfinished nodes by state, appended to b. Returns the rpc code. */
static int state_gauges(buf *b, char *err, size_t errlen)
{
    Calc__V1__Empty req = CALC__V1__EMPTY__INIT;
    Calc__V1__StatsReply *rep = NULL;
    int rc = rpc_call(dba, DBA_GET_STATS, &req.base, &calc__v1__stats_reply__descriptor,
                      (ProtobufCMessage **)&rep, (int)api_cfg.dba_timeout_ms, err, errlen);
    if (rc != RPC_OK)
        return rc;
    char labels[128];
    metrics_family(b, "calc_expressions", "gauge", "Expressions by state.");
    for (size_t i = 0; i < rep->n_expressions; i++) {
        snprintf(labels, sizeof labels, "state=\"%s\"", rep->expressions[i]->state);
        metrics_i64(b, "calc_expressions", labels, (long long)rep->expressions[i]->count);
    }
    metrics_family(b, "calc_nodes", "gauge", "Unfinished nodes by state.");
    for (size_t i = 0; i < rep->n_nodes; i++) {
        snprintf(labels, sizeof labels, "state=\"%s\"", rep->nodes[i]->state);
        metrics_i64(b, "calc_nodes", labels, (long long)rep->nodes[i]->count);
    }
    protobuf_c_message_free_unpacked(&rep->base, NULL);
    return RPC_OK;
}

/* Live agents, appended to b. Returns the rpc code. */
static int agent_gauges(buf *b, char *err, size_t errlen)
{
    Calc__V1__ListAgentsRequest req = CALC__V1__LIST_AGENTS_REQUEST__INIT;
    req.alive_within_ms = (int32_t)api_cfg.heartbeat_timeout_ms;
    Calc__V1__ListAgentsReply *rep = NULL;
    int rc = rpc_call(dba, DBA_LIST_AGENTS, &req.base, &calc__v1__list_agents_reply__descriptor,
                      (ProtobufCMessage **)&rep, (int)api_cfg.dba_timeout_ms, err, errlen);
    if (rc != RPC_OK)
        return rc;
    int alive = 0;
    for (size_t i = 0; i < rep->n_agents; i++)
        alive += rep->agents[i]->alive;
    metrics_family(b, "calc_agents_alive", "gauge", "Agents whose last heartbeat is recent.");
    metrics_i64(b, "calc_agents_alive", NULL, alive);
    protobuf_c_message_free_unpacked(&rep->base, NULL);
    return RPC_OK;
}

/* The gauges from dbagent: a new string (the caller frees it), or NULL with *rc and err set. */
static char *fetch_gauges(int *rc, char *err, size_t errlen)
{
    buf b;
    buf_init(&b, 1 << 20);
    if ((*rc = state_gauges(&b, err, errlen)) != RPC_OK ||
        (*rc = agent_gauges(&b, err, errlen)) != RPC_OK) {
        buf_free(&b);
        return NULL;
    }
    return buf_take(&b);
}

/* The gauges may be served as they are: fetched, and the last refresh did not fail. */
static int servable_locked(void)
{
    return gauges.text && !gauges.failed;
}

static int fresh_locked(int64_t now)
{
    return servable_locked() && now - gauges.at_ms < api_cfg.metrics_cache_ms;
}

/* A copy of text and its age in seconds. */
static char *copy_locked(double *age_s)
{
    *age_s = (double)(time_monotonic_ms() - gauges.at_ms) / 1000.0;
    return xstrdup(gauges.text);
}

/*
 * A copy of the gauges, fresh within METRICS_CACHE_MS, or the previous answer while another scrape
 * refreshes them; *age_s is how old the copy is. NULL when dbagent failed (logged). A scrape with
 * nothing to serve meanwhile (none fetched yet, or the last refresh failed) waits for the refresh
 * under way and shares its outcome: a failed refresh fails its waiters too, rather than each
 * asking dbagent again, one after another.
 */
static char *gauges_get(double *age_s)
{
    int rc = RPC_OK;
    char err[256];
    *age_s = 0;
    if (!api_cfg.metrics_cache_ms) {
        char *text = fetch_gauges(&rc, err, sizeof err);
        if (!text) {
            log_warn("GET /metrics: %s: %s (code %d): the cluster's gauges are left out",
                     DBA_GET_STATS, err, rc);
            return NULL;
        }
        pthread_mutex_lock(&gauges.mu);
        gauges.refreshes++;
        pthread_mutex_unlock(&gauges.mu);
        return text;
    }
    pthread_mutex_lock(&gauges.mu);
    unsigned long long seen = gauges.ended;
    while (gauges.refreshing && !servable_locked() && gauges.ended == seen)
        pthread_cond_wait(&gauges.cv, &gauges.mu);
    if (fresh_locked(time_monotonic_ms()) || (gauges.refreshing && servable_locked())) {
        char *copy = copy_locked(age_s);
        pthread_mutex_unlock(&gauges.mu);
        return copy;
    }
    if (gauges.ended != seen) {
        /* The refresh this scrape waited for failed. */
        pthread_mutex_unlock(&gauges.mu);
        return NULL;
    }
    gauges.refreshing = 1;
    pthread_mutex_unlock(&gauges.mu);
    char *text = fetch_gauges(&rc, err, sizeof err);
    pthread_mutex_lock(&gauges.mu);
    gauges.refreshing = 0;
    gauges.ended++;
    gauges.failed = !text;
    char *copy = NULL;
    if (text) {
        free(gauges.text);
        gauges.text = text;
        gauges.at_ms = time_monotonic_ms();
        gauges.refreshes++;
        copy = copy_locked(age_s);
    }
    pthread_cond_broadcast(&gauges.cv);
    pthread_mutex_unlock(&gauges.mu);
    if (!copy)
        log_warn("GET /metrics: %s: %s (code %d): the cluster's gauges are left out", DBA_GET_STATS,
                 err, rc);
    return copy;
}

/* How often the gauges were fetched, and, when this answer has them, how old they are. */
static void cache_metrics(buf *b, int have_gauges, double age_s)
{
    pthread_mutex_lock(&gauges.mu);
    unsigned long long refreshes = gauges.refreshes;
    pthread_mutex_unlock(&gauges.mu);
    metrics_family(b, "calc_gauges_refreshes_total", "counter",
                   "Times this instance asked dbagent for the cluster's gauges.");
    metrics_u64(b, "calc_gauges_refreshes_total", NULL, refreshes);
    if (!have_gauges)
        return;
    /* Without a cache (METRICS_CACHE_MS=0) the gauges are fetched for this answer: age 0. */
    metrics_family(b, "calc_gauges_age_seconds", "gauge",
                   "Age of the cluster's gauges in this answer (METRICS_CACHE_MS bounds it).");
    metrics_f64(b, "calc_gauges_age_seconds", NULL, age_s);
}

/* With METRICS_TOKEN set: 1 when r carries it as a bearer token, else replies 401 and returns
 * 0. The tokens are compared as BLAKE2b digests, in constant time, so neither their bytes nor
 * their lengths show in the time taken. */
static int authorized(http_req *r)
{
    const char *want = api_cfg.metrics_token;
    if (!want[0])
        return 1;
    const char *h = http_header(r, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0) {
        http_error(r, 401, "metrics need the METRICS_TOKEN as a bearer token in Authorization");
        return 0;
    }
    unsigned char a[crypto_generichash_BYTES], b[crypto_generichash_BYTES];
    crypto_generichash(a, sizeof a, (const unsigned char *)h + 7, strlen(h + 7), NULL, 0);
    crypto_generichash(b, sizeof b, (const unsigned char *)want, strlen(want), NULL, 0);
    if (sodium_memcmp(a, b, sizeof a) != 0) {
        http_error(r, 401, "wrong metrics token");
        return 0;
    }
    return 1;
}

void route_metrics(http_req *r)
{
    if (!authorized(r))
        return;
    /* Without dbagent the instance's own counters still answer (they matter most then), and
     * calc_gauges_up says the cluster's gauges are missing. */
    double age_s;
    char *cluster = gauges_get(&age_s);
    buf b;
    buf_init(&b, 1 << 20);
    http_metrics(&b);
    dba_metrics(&b);
    expression_metrics(&b);
    dispatcher_metrics(&b);
    reads_metrics(&b);
    waiters_metrics(&b);
    streams_metrics(&b);
    cache_metrics_write(&b);
    cache_metrics(&b, cluster != NULL, age_s);
    metrics_family(&b, "calc_gauges_up", "gauge",
                   "1 when this answer has the cluster's gauges from dbagent, 0 when it failed.");
    metrics_i64(&b, "calc_gauges_up", NULL, cluster != NULL);
    if (cluster && buf_add(&b, cluster, strlen(cluster)) < 0) {
        buf_free(&b);
        free(cluster);
        http_error(r, 500, "metrics text over its 1 MiB cap");
        return;
    }
    free(cluster);
    http_text(r, 200, buf_take(&b), "text/plain; version=0.0.4");
}
