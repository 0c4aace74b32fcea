#include "dba.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "api.h"
#include "log.h"
#include "methods.h"
#include "metrics.h"
#include "timeutil.h"

/* calc-api's configuration, defined here with the rest of the library so that unit tests link
 * without main.c, which fills it from the environment before anything else runs. */
api_config api_cfg;

rpc_client *dba;

int dba_open(const char *addr, const char *token, const rpc_tls *tls, char *err, size_t errlen)
{
    dba = rpc_client_open(addr, token, tls, err, errlen);
    return dba ? 0 : -1;
}

void dba_close(void)
{
    rpc_client_free(dba);
    dba = NULL;
}

/* The HTTP status of each dbagent failure a client can act on; any other means the data
 * service is unavailable to us (503). */
static const struct {
    int rpc;
    int http;
} rpc_http[] = {
    {RPC_INVALID_ARGUMENT, 400},    {RPC_NOT_FOUND, 404},          {RPC_ALREADY_EXISTS, 409},
    {RPC_FAILED_PRECONDITION, 409}, {RPC_RESOURCE_EXHAUSTED, 429},
};

int dba_http_status(int rpc_code)
{
    for (size_t i = 0; i < sizeof rpc_http / sizeof rpc_http[0]; i++)
        if (rpc_http[i].rpc == rpc_code)
            return rpc_http[i].http;
    return 503;
}

/* Calls that may run again after an ambiguous failure (the connection broke, so the first may have
 * committed) or an aborted transaction: reads, and writes that recognise their own retry (a
 * request id, a token hash or req_uid the caller chose) or whose second run changes nothing. The
 * rest (a cancel, a password change, a login attempt counted) answer 503 and the client decides. */
static const char *const repeatable[] = {
    DBA_FIND_USER,
    DBA_CREATE_USER,
    DBA_STORE_REFRESH_TOKEN,
    DBA_ROTATE_REFRESH_TOKEN,
    DBA_REVOKE_REFRESH_FAMILY,
    DBA_CREATE_EXPRESSION,
    DBA_GET_EXPRESSION,
    DBA_GET_EXPRESSIONS,
    DBA_LIST_EXPRESSIONS,
    DBA_GET_NODES,
    DBA_LIST_AGENTS,
    DBA_GET_DURATIONS,
    DBA_SET_DURATIONS,
    DBA_GET_STATS,
    DBA_LIST_EVENTS,
    DBA_WATCH_EVENTS,
};

/* The pauses before each retry: together about a second, what a dbagent restart or a broken
 * connection takes to mend, and never past one call's deadline in all. */
static const int retry_pause_ms[] = {50, 200, 750};

static atomic_ullong retries_total;

int dba_repeatable(const char *path, int rc)
{
    if (rc != RPC_UNAVAILABLE && rc != RPC_ABORTED)
        return 0;
    for (size_t i = 0; i < sizeof repeatable / sizeof repeatable[0]; i++)
        if (!strcmp(path, repeatable[i]))
            return 1;
    return 0;
}

int dba_call_until(const char *who, int64_t deadline, const char *path, const ProtobufCMessage *req,
                   const ProtobufCMessageDescriptor *desc, void *resp, char *err, size_t errlen)
{
    int rc;
    for (size_t retry = 0;; retry++) {
        int64_t left = deadline - time_monotonic_ms();
        rc = rpc_call(dba, path, req, desc, (ProtobufCMessage **)resp, (int)(left > 1 ? left : 1),
                      err, errlen);
        if (rc == RPC_OK || !dba_repeatable(path, rc) ||
            retry == sizeof retry_pause_ms / sizeof retry_pause_ms[0] ||
            time_monotonic_ms() + retry_pause_ms[retry] >= deadline)
            break;
        atomic_fetch_add(&retries_total, 1);
        log_info("%s: %s: %s (code %d): again in %dms", who, path, err, rc, retry_pause_ms[retry]);
        time_sleep_ms(retry_pause_ms[retry], NULL);
    }
    return rc;
}

int dba_call_quiet(const char *who, const char *path, const ProtobufCMessage *req,
                   const ProtobufCMessageDescriptor *desc, void *resp, char *err, size_t errlen)
{
    return dba_call_until(who, time_monotonic_ms() + api_cfg.dba_timeout_ms, path, req, desc, resp,
                          err, errlen);
}

int dba_call(http_req *r, const char *path, const ProtobufCMessage *req,
             const ProtobufCMessageDescriptor *desc, void *resp)
{
    char err[256], who[160];
    snprintf(who, sizeof who, "%s %s", r->method, r->path);
    int rc = dba_call_quiet(who, path, req, desc, resp, err, sizeof err);
    if (rc != RPC_OK)
        dba_reply_failure(r, path, rc, err);
    return rc;
}

void dba_metrics(buf *b)
{
    metrics_family(b, "calc_dbagent_retries_total", "counter",
                   "Calls to dbagent made again after a broken connection or an aborted "
                   "transaction (only those safe to repeat).");
    metrics_u64(b, "calc_dbagent_retries_total", NULL, atomic_load(&retries_total));
}

void dba_reply_failure(http_req *r, const char *path, int rc, const char *err)
{
    int status = dba_http_status(rc);
    if (status == 503) {
        log_warn("%s %s: %s: %s (code %d)", r->method, r->path, path, err, rc);
        http_error(r, 503, "the data service is unavailable, try again");
    } else {
        http_error(r, status, "%s", err);
    }
}

int dba_wake_watch(const char *watch_id, int64_t gen, int timeout_ms, char *err, size_t errlen)
{
    Calc__V1__WakeWatchRequest req = CALC__V1__WAKE_WATCH_REQUEST__INIT;
    req.watch_id = (char *)watch_id;
    req.watch_gen = gen;
    Calc__V1__Empty *rep = NULL;
    int rc = rpc_call(dba, DBA_WAKE_WATCH, &req.base, &calc__v1__empty__descriptor,
                      (ProtobufCMessage **)&rep, timeout_ms, err, errlen);
    if (rc == RPC_OK)
        protobuf_c_message_free_unpacked(&rep->base, NULL);
    return rc;
}
