/* LimitLogin and RecordLogin: the login limiter's counts in table login_limits, through the SQL
 * functions calc_login_limit and calc_login_record (schema/functions/). */
#include <stdio.h>
#include <string.h>

#include "db.h"
#include "handlers.h"

#define LOGIN_KEY_MAX 256 /* an address or a login: longer is a caller's bug */

static const db_stmt limit_stmt = {
    "login_limit", "SELECT verdict, retry_after_ms FROM calc_login_limit($1, $2, $3, $4, $5, $6)",
    6};
static const db_stmt record_stmt = {"login_record", "SELECT calc_login_record($1, $2, $3, $4)", 4};

static int check_limits(rpc_ctx *ctx, int32_t max_failures, int32_t window_ms)
{
    if (max_failures < 1 || window_ms < 1)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT,
                        "max_failures and failure_window_ms must be positive");
    return RPC_OK;
}

int h_limit_login(rpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
    const Calc__V1__LimitLoginRequest *req = (const void *)m;
    if (!req->address[0] || strlen(req->address) > LOGIN_KEY_MAX ||
        strlen(req->login) > LOGIN_KEY_MAX)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT,
                        "address is required; address and login have at most %d bytes",
                        LOGIN_KEY_MAX);
    if (req->address_budget < 1 || req->address_window_ms < 1)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT,
                        "address_budget and address_window_ms must be positive");
    int rc = check_limits(ctx, req->max_failures, req->failure_window_ms);
    if (rc != RPC_OK)
        return rc;
    char budget[32], awin[32], maxf[32], fwin[32];
    const char *p[] = {req->address,
                       req->login,
                       db_fmt_i64(budget, req->address_budget),
                       db_fmt_i64(awin, req->address_window_ms),
                       db_fmt_i64(maxf, req->max_failures),
                       db_fmt_i64(fwin, req->failure_window_ms)};
    PGresult *r = db_call(rpc_thread_state(ctx), ctx, &limit_stmt, p);
    if (!r)
        return db_failed(ctx);
    Calc__V1__LimitLoginReply *rep = rpc_alloc(ctx, sizeof *rep);
    calc__v1__limit_login_reply__init(rep);
    rep->verdict = (Calc__V1__LimitLoginReply__Verdict)db_i64(r, 0, 0);
    rep->retry_after_ms = db_i64(r, 0, 1);
    PQclear(r);
    *resp = &rep->base;
    return RPC_OK;
}

int h_record_login(rpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
    const Calc__V1__RecordLoginRequest *req = (const void *)m;
    if (!req->login[0] || strlen(req->login) > LOGIN_KEY_MAX)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "login is required (at most %d bytes)",
                        LOGIN_KEY_MAX);
    int rc = check_limits(ctx, req->max_failures, req->failure_window_ms);
    if (rc != RPC_OK)
        return rc;
    char maxf[32], fwin[32];
    const char *p[] = {req->login, req->succeeded ? "t" : "f", db_fmt_i64(maxf, req->max_failures),
                       db_fmt_i64(fwin, req->failure_window_ms)};
    PGresult *r = db_call(rpc_thread_state(ctx), ctx, &record_stmt, p);
    if (!r)
        return db_failed(ctx);
    PQclear(r);
    *resp = empty_reply(ctx);
    return RPC_OK;
}
