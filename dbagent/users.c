#include <stdio.h>
#include <string.h>

#include "db.h"
#include "handlers.h"

#define USER_COLS "id, login, password_hash, is_admin, to_ms(created_at)"

static Calc__V1__User *user_from_row(rpc_ctx *ctx, const PGresult *r, int row)
{
    Calc__V1__User *u = rpc_alloc(ctx, sizeof *u);
    calc__v1__user__init(u);
    u->id = db_i64(r, row, 0);
    u->login = rpc_strdup(ctx, db_str(r, row, 1));
    u->password_hash = rpc_strdup(ctx, db_str(r, row, 2));
    u->is_admin = db_str(r, row, 3)[0] == 't';
    u->created_at_ms = db_i64(r, row, 4);
    return u;
}

static int reply_user(rpc_ctx *ctx, const PGresult *r, ProtobufCMessage **resp)
{
    Calc__V1__UserReply *rep = rpc_alloc(ctx, sizeof *rep);
    calc__v1__user_reply__init(rep);
    rep->user = user_from_row(ctx, r, 0);
    *resp = &rep->base;
    return RPC_OK;
}

/* Replies with the user in r (a result of USER_COLS, NULL after a failure); when r has no row,
 * fails with empty_code and empty_msg. Clears r. */
static int user_or(rpc_ctx *ctx, PGresult *r, ProtobufCMessage **resp, int empty_code,
                   const char *empty_msg)
{
    if (!r)
        return db_failed(ctx);
    int rc = RPC_OK;
    if (PQntuples(r) == 0)
        rc = rpc_fail(ctx, empty_code, "%s", empty_msg);
    else
        reply_user(ctx, r, resp);
    PQclear(r);
    return rc;
}

static const db_stmt create_user_stmt = {
    "create_user",
    "INSERT INTO users (login, password_hash, is_admin) VALUES ($1, $2, $3)"
    " ON CONFLICT (login) DO NOTHING RETURNING " USER_COLS,
    3};

int h_create_user(rpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
    const Calc__V1__CreateUserRequest *req = (const void *)m;
    if (!req->login[0] || !req->password_hash[0])
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "login and password_hash are required");
    const char *p[] = {req->login, req->password_hash, req->is_admin ? "t" : "f"};
    char taken[160];
    snprintf(taken, sizeof taken, "login '%.100s' is taken", req->login);
    return user_or(ctx, db_call(rpc_thread_state(ctx), ctx, &create_user_stmt, p), resp,
                   RPC_ALREADY_EXISTS, taken);
}

/* Two statements, so each lookup uses its own index. */
static const db_stmt user_by_login_stmt = {"user_by_login",
                                           "SELECT " USER_COLS " FROM users WHERE login = $1", 1};
static const db_stmt user_by_id_stmt = {"user_by_id",
                                        "SELECT " USER_COLS " FROM users WHERE id = $1", 1};

int h_find_user(rpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
    const Calc__V1__FindUserRequest *req = (const void *)m;
    char id[32];
    const char *p[] = {req->login[0] ? req->login : db_fmt_i64(id, req->id)};
    PGresult *r = db_call(rpc_thread_state(ctx), ctx,
                          req->login[0] ? &user_by_login_stmt : &user_by_id_stmt, p);
    return user_or(ctx, r, resp, RPC_NOT_FOUND, "no such user");
}

/* The configured password wins: changing ADMIN_PASSWORD and restarting resets it. */
static const db_stmt ensure_admin_stmt = {
    "ensure_admin",
    "INSERT INTO users (login, password_hash, is_admin) VALUES ($1, $2, true)"
    " ON CONFLICT (login) DO UPDATE SET is_admin = true, password_hash = EXCLUDED.password_hash"
    " RETURNING " USER_COLS,
    2};

int h_ensure_admin(rpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
    const Calc__V1__EnsureAdminRequest *req = (const void *)m;
    if (!req->login[0] || !req->password_hash[0])
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "login and password_hash are required");
    const char *p[] = {req->login, req->password_hash};
    return user_or(ctx, db_call(rpc_thread_state(ctx), ctx, &ensure_admin_stmt, p), resp,
                   RPC_INTERNAL, "the admin was not stored");
}

static const db_stmt store_token_stmt = {
    "store_refresh_token",
    "INSERT INTO refresh_tokens (token_hash, user_id, family, expires_at)"
    " VALUES ($1, $2, $3, to_timestamp($4::bigint / 1000.0))",
    4};

int h_store_refresh_token(rpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
    const Calc__V1__StoreRefreshTokenRequest *req = (const void *)m;
    if (!req->token_hash[0])
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "token_hash is required");
    char uid[32], exp[32];
    /* A new family is named by its first token. */
    const char *family = req->family[0] ? req->family : req->token_hash;
    const char *p[] = {req->token_hash, db_fmt_i64(uid, req->user_id), family,
                       db_fmt_i64(exp, req->expires_at_ms)};
    PGresult *r = db_call(rpc_thread_state(ctx), ctx, &store_token_stmt, p);
    if (!r)
        return db_failed(ctx);
    PQclear(r);
    Calc__V1__StoreRefreshTokenReply *rep = rpc_alloc(ctx, sizeof *rep);
    calc__v1__store_refresh_token_reply__init(rep);
    rep->family = rpc_strdup(ctx, family);
    *resp = &rep->base;
    return RPC_OK;
}

int h_rotate_refresh_token(rpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
    const Calc__V1__RotateRefreshTokenRequest *req = (const void *)m;
    db *d = rpc_thread_state(ctx);
    if (!req->old_hash[0] || !req->new_hash[0])
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "old_hash and new_hash are required");
    Calc__V1__RotateRefreshTokenReply *rep = rpc_alloc(ctx, sizeof *rep);
    calc__v1__rotate_refresh_token_reply__init(rep);
    *resp = &rep->base;
    int rc = db_begin(d, ctx);
    if (rc)
        return rc;
    const char *p1[] = {req->old_hash};
    PGresult *r = db_query(d, ctx,
                           "SELECT user_id, family, revoked OR replaced_by IS NOT NULL,"
                           " expires_at < now() FROM refresh_tokens WHERE token_hash = $1"
                           " FOR UPDATE",
                           1, p1);
    if (!r)
        goto fail;
    if (PQntuples(r) == 0 || db_str(r, 0, 3)[0] == 't') {
        PQclear(r);
        rep->outcome = CALC__V1__ROTATE_REFRESH_TOKEN_REPLY__OUTCOME__UNKNOWN;
        return db_commit(d, ctx);
    }
    rep->user_id = db_i64(r, 0, 0);
    char *family = rpc_strdup(ctx, db_str(r, 0, 1));
    int reused = db_str(r, 0, 2)[0] == 't';
    PQclear(r);
    const char *p2[] = {family};
    if (reused) {
        /* A rotated token came back: someone holds a copy. Revoke the whole family. */
        r = db_query(d, ctx, "UPDATE refresh_tokens SET revoked = true WHERE family = $1", 1, p2);
        if (!r)
            goto fail;
        PQclear(r);
        rep->outcome = CALC__V1__ROTATE_REFRESH_TOKEN_REPLY__OUTCOME__REUSED;
        return db_commit(d, ctx);
    }
    char uid[32], exp[32];
    const char *p3[] = {req->new_hash, db_fmt_i64(uid, rep->user_id), family,
                        db_fmt_i64(exp, req->expires_at_ms), req->old_hash};
    r = db_query(d, ctx,
                 "WITH n AS (INSERT INTO refresh_tokens (token_hash, user_id, family, expires_at)"
                 " VALUES ($1, $2, $3, to_timestamp($4::bigint / 1000.0)))"
                 " UPDATE refresh_tokens SET replaced_by = $1 WHERE token_hash = $5",
                 5, p3);
    if (!r)
        goto fail;
    PQclear(r);
    rep->outcome = CALC__V1__ROTATE_REFRESH_TOKEN_REPLY__OUTCOME__ROTATED;
    return db_commit(d, ctx);
fail:
    db_rollback(d);
    return db_failed(ctx);
}

static const db_stmt revoke_family_stmt = {
    "revoke_refresh_family",
    "UPDATE refresh_tokens SET revoked = true"
    " WHERE family = (SELECT family FROM refresh_tokens WHERE token_hash = $1)",
    1};

int h_revoke_refresh_family(rpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
    const Calc__V1__RevokeRefreshFamilyRequest *req = (const void *)m;
    const char *p[] = {req->token_hash};
    PGresult *r = db_call(rpc_thread_state(ctx), ctx, &revoke_family_stmt, p);
    if (!r)
        return db_failed(ctx);
    PQclear(r);
    *resp = empty_reply(ctx);
    return RPC_OK;
}
