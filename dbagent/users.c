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
    "INSERT INTO users (login, password_hash, is_admin, request_id)"
    " VALUES ($1, $2, $3, nullif($4, '')) ON CONFLICT (login) DO NOTHING RETURNING " USER_COLS,
    4};
/* A statement of its own (its own snapshot): it sees a user that a first call, still running when
 * the insert above began, committed since. */
static const db_stmt user_by_request_stmt = {
    "user_by_request", "SELECT " USER_COLS " FROM users WHERE login = $1 AND request_id = $2", 2};

/* A login that is taken answers ALREADY_EXISTS, unless the same request took it: a retry of a call
 * whose reply was lost gets the user it made. */
int h_create_user(rpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
    const Calc__V1__CreateUserRequest *req = (const void *)m;
    if (!req->login[0] || !req->password_hash[0])
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "login and password_hash are required");
    db *d = rpc_thread_state(ctx);
    const char *p[] = {req->login, req->password_hash, req->is_admin ? "t" : "f", req->request_id};
    PGresult *r = db_call(d, ctx, &create_user_stmt, p);
    if (r && PQntuples(r) == 0 && req->request_id[0]) {
        PQclear(r);
        const char *again[] = {req->login, req->request_id};
        r = db_call(d, ctx, &user_by_request_stmt, again);
    }
    char taken[160];
    snprintf(taken, sizeof taken, "login '%.100s' is taken", req->login);
    return user_or(ctx, r, resp, RPC_ALREADY_EXISTS, taken);
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

/* The configured password wins: changing ADMIN_PASSWORD and restarting resets it. With $3 the
 * password changed, and every session the admin had ends with it. */
static const db_stmt ensure_admin_stmt = {
    "ensure_admin",
    "WITH u AS (INSERT INTO users (login, password_hash, is_admin) VALUES ($1, $2, true)"
    " ON CONFLICT (login) DO UPDATE SET is_admin = true, password_hash = EXCLUDED.password_hash"
    " RETURNING " USER_COLS "),"
    " r AS (UPDATE refresh_tokens SET revoked = true WHERE $3::boolean AND NOT revoked"
    " AND user_id = (SELECT id FROM u))"
    " SELECT * FROM u",
    3};

int h_ensure_admin(rpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
    const Calc__V1__EnsureAdminRequest *req = (const void *)m;
    if (!req->login[0] || !req->password_hash[0])
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "login and password_hash are required");
    const char *p[] = {req->login, req->password_hash, req->revoke_sessions ? "t" : "f"};
    return user_or(ctx, db_call(rpc_thread_state(ctx), ctx, &ensure_admin_stmt, p), resp,
                   RPC_INTERNAL, "the admin was not stored");
}

/* A family that names no end of its own ends with its first token. The token's hash is the
 * request's id: a retry of a stored token inserts nothing, and the second statement (its own
 * snapshot, so it sees a first call that committed while this one waited) finds it stored. */
static const db_stmt store_token_stmt = {
    "store_refresh_token",
    "INSERT INTO refresh_tokens (token_hash, user_id, family, expires_at, family_expires_at)"
    " VALUES ($1, $2, $3, to_timestamp($4::bigint / 1000.0),"
    " to_timestamp(CASE WHEN $5::bigint > 0 THEN $5::bigint ELSE $4::bigint END / 1000.0))"
    " ON CONFLICT (token_hash) DO NOTHING RETURNING 1",
    5};
static const db_stmt stored_token_stmt = {
    "stored_refresh_token",
    "SELECT 1 FROM refresh_tokens WHERE token_hash = $1 AND user_id = $2 AND family = $3", 3};

int h_store_refresh_token(rpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
    const Calc__V1__StoreRefreshTokenRequest *req = (const void *)m;
    if (!req->token_hash[0])
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "token_hash is required");
    char uid[32], exp[32], fexp[32];
    /* A new family is named by its first token. */
    const char *family = req->family[0] ? req->family : req->token_hash;
    const char *p[] = {req->token_hash, db_fmt_i64(uid, req->user_id), family,
                       db_fmt_i64(exp, req->expires_at_ms),
                       db_fmt_i64(fexp, req->family_expires_at_ms)};
    db *d = rpc_thread_state(ctx);
    PGresult *r = db_call(d, ctx, &store_token_stmt, p);
    if (r && PQntuples(r) == 0) {
        PQclear(r);
        r = db_call(d, ctx, &stored_token_stmt, p);
    }
    if (!r)
        return db_failed(ctx);
    int stored = PQntuples(r);
    PQclear(r);
    if (!stored)
        return rpc_fail(ctx, RPC_ALREADY_EXISTS, "that token hash is stored for another session");
    Calc__V1__StoreRefreshTokenReply *rep = rpc_alloc(ctx, sizeof *rep);
    calc__v1__store_refresh_token_reply__init(rep);
    rep->family = rpc_strdup(ctx, family);
    *resp = &rep->base;
    return RPC_OK;
}

/* The rules (replay grace, reuse, the family's end) are in calc_rotate_refresh. */
static const db_stmt rotate_token_stmt = {
    "rotate_refresh_token",
    "SELECT o_outcome, o_user, o_expires_ms FROM calc_rotate_refresh($1, $2,"
    " to_timestamp($3::bigint / 1000.0), $4::integer)",
    4};

static const struct {
    const char *word;
    Calc__V1__RotateRefreshTokenReply__Outcome outcome;
} rotate_outcomes[] = {
    {"rotated", CALC__V1__ROTATE_REFRESH_TOKEN_REPLY__OUTCOME__ROTATED},
    {"replayed", CALC__V1__ROTATE_REFRESH_TOKEN_REPLY__OUTCOME__REPLAYED},
    {"reused", CALC__V1__ROTATE_REFRESH_TOKEN_REPLY__OUTCOME__REUSED},
    {"unknown", CALC__V1__ROTATE_REFRESH_TOKEN_REPLY__OUTCOME__UNKNOWN},
};

int h_rotate_refresh_token(rpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
    const Calc__V1__RotateRefreshTokenRequest *req = (const void *)m;
    if (!req->old_hash[0] || !req->new_hash[0])
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "old_hash and new_hash are required");
    if (req->grace_ms < 0)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "grace_ms must not be negative");
    char exp[32], grace[32];
    const char *p[] = {req->old_hash, req->new_hash, db_fmt_i64(exp, req->expires_at_ms),
                       db_fmt_i64(grace, req->grace_ms)};
    PGresult *r = db_call(rpc_thread_state(ctx), ctx, &rotate_token_stmt, p);
    if (!r)
        return db_failed(ctx);
    Calc__V1__RotateRefreshTokenReply *rep = rpc_alloc(ctx, sizeof *rep);
    calc__v1__rotate_refresh_token_reply__init(rep);
    const char *word = db_str(r, 0, 0);
    rep->outcome = CALC__V1__ROTATE_REFRESH_TOKEN_REPLY__OUTCOME__UNKNOWN;
    for (size_t i = 0; i < sizeof rotate_outcomes / sizeof rotate_outcomes[0]; i++)
        if (!strcmp(word, rotate_outcomes[i].word))
            rep->outcome = rotate_outcomes[i].outcome;
    rep->user_id = db_i64(r, 0, 1);
    rep->expires_at_ms = db_i64(r, 0, 2);
    PQclear(r);
    *resp = &rep->base;
    return RPC_OK;
}

static const db_stmt change_password_stmt = {
    "change_password",
    "SELECT calc_change_password($1, $2, $3, $4, to_timestamp($5::bigint / 1000.0),"
    " to_timestamp($6::bigint / 1000.0))",
    6};

int h_change_password(rpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
    const Calc__V1__ChangePasswordRequest *req = (const void *)m;
    if (req->user_id <= 0 || !req->old_password_hash[0] || !req->new_password_hash[0] ||
        !req->token_hash[0] || req->expires_at_ms <= 0 || req->family_expires_at_ms <= 0)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT,
                        "user_id, both password hashes, token_hash and both expiries are required");
    char uid[32], exp[32], fexp[32];
    const char *p[] = {db_fmt_i64(uid, req->user_id),
                       req->old_password_hash,
                       req->new_password_hash,
                       req->token_hash,
                       db_fmt_i64(exp, req->expires_at_ms),
                       db_fmt_i64(fexp, req->family_expires_at_ms)};
    PGresult *r = db_call(rpc_thread_state(ctx), ctx, &change_password_stmt, p);
    if (!r)
        return db_failed(ctx);
    int changed = db_str(r, 0, 0)[0] == 't';
    PQclear(r);
    if (!changed)
        return rpc_fail(ctx, RPC_FAILED_PRECONDITION,
                        "the password was changed meanwhile: log in again");
    *resp = empty_reply(ctx);
    return RPC_OK;
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
