#include "ratelimit.h"

#include "api.h"
#include "dba.h"
#include "log.h"
#include "methods.h"

int ratelimit_admit(http_req *r, const char *login)
{
    Calc__V1__LimitLoginRequest req = CALC__V1__LIMIT_LOGIN_REQUEST__INIT;
    req.address = r->address;
    req.login = login ? (char *)login : "";
    req.address_budget = (int32_t)api_cfg.auth_budget;
    req.address_window_ms = (int32_t)(api_cfg.auth_window_s * 1000);
    req.max_failures = RATELIMIT_MAX_FAILURES;
    req.failure_window_ms = RATELIMIT_WINDOW_MS;
    Calc__V1__LimitLoginReply *rep = NULL;
    if (dba_call(r, DBA_LIMIT_LOGIN, &req.base, &calc__v1__limit_login_reply__descriptor, &rep) !=
        RPC_OK)
        return -1;
    int64_t after_ms = rep->retry_after_ms;
    Calc__V1__LimitLoginReply__Verdict verdict = rep->verdict;
    protobuf_c_message_free_unpacked(&rep->base, NULL);
    if (verdict == CALC__V1__LIMIT_LOGIN_REPLY__VERDICT__ALLOWED)
        return 0;
    r->retry_after_s = after_ms > 1000 ? (int)((after_ms + 999) / 1000) : 1;
    if (verdict == CALC__V1__LIMIT_LOGIN_REPLY__VERDICT__LOGIN_LOCKED)
        http_error(r, 429, "too many failed logins for '%s': wait %d s", login, r->retry_after_s);
    else
        http_error(r, 429, "too many login and register attempts from %s: wait %d s", r->address,
                   r->retry_after_s);
    return -1;
}

void ratelimit_outcome(http_req *r, const char *login, int succeeded)
{
    Calc__V1__RecordLoginRequest req = CALC__V1__RECORD_LOGIN_REQUEST__INIT;
    req.login = (char *)login;
    req.succeeded = succeeded;
    req.max_failures = RATELIMIT_MAX_FAILURES;
    req.failure_window_ms = RATELIMIT_WINDOW_MS;
    Calc__V1__Empty *rep = NULL;
    char err[256];
    int rc = rpc_call(dba, DBA_RECORD_LOGIN, &req.base, &calc__v1__empty__descriptor,
                      (ProtobufCMessage **)&rep, (int)api_cfg.dba_timeout_ms, err, sizeof err);
    if (rc == RPC_OK)
        protobuf_c_message_free_unpacked(&rep->base, NULL);
    else
        log_warn("%s %s: RecordLogin login=%s: %s (code %d)", r->method, r->path, login, err, rc);
}
