#include "dba.h"

#include "api.h"
#include "log.h"

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

int dba_call(http_req *r, const char *path, const ProtobufCMessage *req,
             const ProtobufCMessageDescriptor *desc, void *resp)
{
    char err[256];
    int rc = rpc_call(dba, path, req, desc, (ProtobufCMessage **)resp, (int)api_cfg.dba_timeout_ms,
                      err, sizeof err);
    if (rc != RPC_OK)
        dba_reply_failure(r, path, rc, err);
    return rc;
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
