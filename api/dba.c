#include "dba.h"

#include "api.h"
#include "log.h"

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

static int http_status_for(int code)
{
    switch (code) {
    case RPC_INVALID_ARGUMENT:
        return 400;
    case RPC_NOT_FOUND:
        return 404;
    case RPC_ALREADY_EXISTS:
    case RPC_FAILED_PRECONDITION:
        return 409;
    case RPC_RESOURCE_EXHAUSTED:
        return 429;
    default:
        return 503;
    }
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
    int status = http_status_for(rc);
    if (status == 503) {
        log_warn("%s %s: %s: %s (code %d)", r->method, r->path, path, err, rc);
        http_error(r, 503, "the data service is unavailable, try again");
    } else {
        http_error(r, status, "%s", err);
    }
}
