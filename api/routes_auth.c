#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api.h"
#include "auth.h"
#include "dba.h"
#include "log.h"
#include "mem.h"
#include "methods.h"
#include "ratelimit.h"
#include "timeutil.h"

#define LOGIN_MIN    3
#define LOGIN_MAX    64
#define PASSWORD_MIN 8
#define PASSWORD_MAX 128

/* Reads "login" and "password" from the body; replies 400 naming the field on a problem. */
static json_t *credentials(http_req *r, const char **login, const char **password)
{
    json_t *body = http_body_object(r);
    if (!body)
        return NULL;
    json_t *l = json_object_get(body, "login"), *p = json_object_get(body, "password");
    if (!json_is_string(l))
        http_error(r, 400, "field 'login' is required and must be a string");
    else if (!json_is_string(p))
        http_error(r, 400, "field 'password' is required and must be a string");
    else {
        *login = json_string_value(l);
        *password = json_string_value(p);
        return body;
    }
    json_decref(body);
    return NULL;
}

static int valid_login(const char *s)
{
    size_t n = strlen(s);
    if (n < LOGIN_MIN || n > LOGIN_MAX)
        return 0;
    for (; *s; s++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-", *s))
            return 0;
    return 1;
}

/* The 503 when every hashing slot is taken: nothing waits for one (see auth.h). */
#define HASHING_BUSY "every password hashing slot is busy: try again in a second"

/* Characters, not bytes: the body is valid UTF-8 (jansson checked it). */
static size_t utf8_length(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

/* Replies 400 when password's length is out of bounds; returns 1 when it did. */
static int weak_password(http_req *r, const char *field, const char *password)
{
    size_t plen = utf8_length(password);
    if (plen >= PASSWORD_MIN && plen <= PASSWORD_MAX)
        return 0;
    http_error(r, 400, "field '%s' must have %d to %d characters (it has %zu)", field, PASSWORD_MIN,
               PASSWORD_MAX, plen);
    return 1;
}

void route_register(http_req *r)
{
    const char *login, *password;
    json_t *body = credentials(r, &login, &password);
    if (!body)
        return;
    char hash[AUTH_HASH_MAX];
    int rc;
    if (!valid_login(login)) {
        http_error(r, 400, "field 'login' must have %d to %d characters of A-Z a-z 0-9 _ . -",
                   LOGIN_MIN, LOGIN_MAX);
    } else if (weak_password(r, "password", password)) {
        /* replied */
    } else if (ratelimit_admit(r, NULL) != 0) {
        /* replied: 429 or 503 */
    } else if ((rc = auth_hash_password(password, hash)) != 0) {
        http_error(r, 503, "%s", rc == AUTH_BUSY ? HASHING_BUSY : "cannot hash the password now");
    } else {
        Calc__V1__CreateUserRequest req = CALC__V1__CREATE_USER_REQUEST__INIT;
        req.login = (char *)login;
        req.password_hash = hash;
        char request_id[AUTH_REQUEST_ID_HEX];
        auth_request_id(request_id);
        req.request_id = request_id; /* a retry in dba_call gets the user, not "login taken" */
        Calc__V1__UserReply *rep = NULL;
        if (dba_call(r, DBA_CREATE_USER, &req.base, &calc__v1__user_reply__descriptor, &rep) ==
            RPC_OK) {
            log_info("user=%lld registered", (long long)rep->user->id);
            http_json(r, 200,
                      json_pack("{s:I, s:i}", "id", (json_int_t)rep->user->id, "status", 200));
            protobuf_c_message_free_unpacked(&rep->base, NULL);
        }
    }
    json_decref(body);
}

/* The refresh-token cookie's attributes: sent only by the browser to us, never read by scripts;
 * with COOKIE_SECURE, only over HTTPS. */
#define COOKIE_ATTRS "Path=/; HttpOnly; SameSite=Strict"

static const char *cookie_secure(void)
{
    return api_cfg.cookie_secure ? "; Secure" : "";
}

/* A new family's times: its first token's expiry and the family's end (ms since the epoch). */
static void family_times(int64_t *expires_ms, int64_t *family_ms)
{
    int64_t now = time_now_ms();
    int64_t ttl = api_cfg.refresh_ttl_s < api_cfg.refresh_max_age_s ? api_cfg.refresh_ttl_s
                                                                    : api_cfg.refresh_max_age_s;
    *expires_ms = now + ttl * 1000;
    *family_ms = now + api_cfg.refresh_max_age_s * 1000;
}

/* Replies with a new access token for user_id and sets refresh_token as the cookie, which the
 * browser keeps until expires_ms (rounded up to a second: 0 would delete it). */
static void reply_tokens(http_req *r, int64_t user_id, const char *refresh_token,
                         int64_t expires_ms)
{
    char *access = auth_issue_access(user_id);
    if (!access) {
        http_error(r, 503, "cannot issue a token now, try again");
        return;
    }
    int64_t left_ms = expires_ms - time_now_ms();
    long long max_age = left_ms > 0 ? (left_ms + 999) / 1000 : 1;
    r->set_cookie = xasprintf("refresh-token=%s; Max-Age=%lld; " COOKIE_ATTRS "%s", refresh_token,
                              max_age, cookie_secure());
    http_json(r, 200, json_pack("{s:s}", "accessToken", access));
    free(access);
}

/* Starts a refresh-token family for a login, then replies with both tokens. */
static void issue_tokens(http_req *r, int64_t user_id)
{
    char token[AUTH_TOKEN_HEX], hash[AUTH_TOKEN_HEX];
    auth_new_refresh(token, hash);
    Calc__V1__StoreRefreshTokenRequest req = CALC__V1__STORE_REFRESH_TOKEN_REQUEST__INIT;
    req.user_id = user_id;
    req.token_hash = hash;
    family_times(&req.expires_at_ms, &req.family_expires_at_ms);
    Calc__V1__StoreRefreshTokenReply *rep = NULL;
    if (dba_call(r, DBA_STORE_REFRESH_TOKEN, &req.base,
                 &calc__v1__store_refresh_token_reply__descriptor, &rep) != RPC_OK)
        return;
    protobuf_c_message_free_unpacked(&rep->base, NULL);
    reply_tokens(r, user_id, token, req.expires_at_ms);
}

void route_login(http_req *r)
{
    const char *login, *password;
    json_t *body = credentials(r, &login, &password);
    if (!body)
        return;
    /* Only a valid login can have failures counted: no user has any other. */
    int valid = valid_login(login);
    if (ratelimit_admit(r, valid ? login : NULL) != 0) {
        json_decref(body);
        return;
    }
    Calc__V1__FindUserRequest req = CALC__V1__FIND_USER_REQUEST__INIT;
    req.login = (char *)login;
    Calc__V1__UserReply *rep = NULL;
    char err[256];
    int rc = valid ? dba_call_quiet("login", DBA_FIND_USER, &req.base,
                                    &calc__v1__user_reply__descriptor, &rep, err, sizeof err)
                   : RPC_NOT_FOUND;
    if (rc != RPC_OK && rc != RPC_NOT_FOUND) {
        dba_reply_failure(r, DBA_FIND_USER, rc, err);
    } else {
        /* An unknown login costs the same hashing as a wrong password: no timing hint. */
        int ok = auth_check_password(rep ? rep->user->password_hash : NULL, password);
        if (ok == AUTH_BUSY) {
            http_error(r, 503, HASHING_BUSY);
        } else if (rep && ok) {
            ratelimit_outcome(r, login, 1);
            issue_tokens(r, rep->user->id);
        } else {
            if (valid)
                ratelimit_outcome(r, login, 0);
            http_error(r, 401, "wrong login or password");
        }
    }
    if (rep)
        protobuf_c_message_free_unpacked(&rep->base, NULL);
    json_decref(body);
}

void route_refresh(http_req *r)
{
    if (!http_same_site(r))
        return;
    const char *token = http_cookie(r, "refresh-token");
    if (!token || strlen(token) != AUTH_TOKEN_HEX - 1) {
        http_error(r, 401, "missing or malformed refresh-token cookie");
        return;
    }
    char old_hash[AUTH_TOKEN_HEX], new_token[AUTH_TOKEN_HEX], new_hash[AUTH_TOKEN_HEX];
    auth_hash_refresh(token, old_hash);
    /* Derived, not random: a retry of this refresh names the same successor (the grace). */
    auth_successor_refresh(token, new_token, new_hash);
    Calc__V1__RotateRefreshTokenRequest req = CALC__V1__ROTATE_REFRESH_TOKEN_REQUEST__INIT;
    req.old_hash = old_hash;
    req.new_hash = new_hash;
    req.expires_at_ms = time_now_ms() + api_cfg.refresh_ttl_s * 1000;
    req.grace_ms = (int32_t)api_cfg.refresh_grace_ms;
    Calc__V1__RotateRefreshTokenReply *rep = NULL;
    if (dba_call(r, DBA_ROTATE_REFRESH_TOKEN, &req.base,
                 &calc__v1__rotate_refresh_token_reply__descriptor, &rep) != RPC_OK)
        return;
    /* A dbagent older than the family's end answers no expiry: the one asked for holds. */
    int64_t expires_ms = rep->expires_at_ms ? rep->expires_at_ms : req.expires_at_ms;
    if (rep->outcome == CALC__V1__ROTATE_REFRESH_TOKEN_REPLY__OUTCOME__ROTATED) {
        reply_tokens(r, rep->user_id, new_token, expires_ms);
    } else if (rep->outcome == CALC__V1__ROTATE_REFRESH_TOKEN_REPLY__OUTCOME__REPLAYED) {
        log_info("user=%lld: a refresh retried within the grace gets the same new token",
                 (long long)rep->user_id);
        reply_tokens(r, rep->user_id, new_token, expires_ms);
    } else if (rep->outcome == CALC__V1__ROTATE_REFRESH_TOKEN_REPLY__OUTCOME__REUSED) {
        log_warn("user=%lld: a rotated refresh token was presented again: family revoked",
                 (long long)rep->user_id);
        http_error(r, 401, "refresh token already used: every session of this login is revoked");
    } else {
        http_error(r, 401, "unknown or expired refresh token");
    }
    protobuf_c_message_free_unpacked(&rep->base, NULL);
}

void route_logout(http_req *r)
{
    if (!http_same_site(r))
        return;
    const char *token = http_cookie(r, "refresh-token");
    if (token && strlen(token) == AUTH_TOKEN_HEX - 1) {
        char hash[AUTH_TOKEN_HEX];
        auth_hash_refresh(token, hash);
        Calc__V1__RevokeRefreshFamilyRequest req = CALC__V1__REVOKE_REFRESH_FAMILY_REQUEST__INIT;
        req.token_hash = hash;
        Calc__V1__Empty *rep = NULL;
        if (dba_call(r, DBA_REVOKE_REFRESH_FAMILY, &req.base, &calc__v1__empty__descriptor, &rep) !=
            RPC_OK)
            return;
        protobuf_c_message_free_unpacked(&rep->base, NULL);
    }
    r->set_cookie = xasprintf("refresh-token=; Max-Age=0; " COOKIE_ATTRS "%s", cookie_secure());
    http_json(r, 200, json_pack("{s:i}", "status", 200));
}

/* Reads the string field name of body into *out; replies 400 naming it when it is not one. */
static int string_field(http_req *r, json_t *body, const char *name, const char **out)
{
    json_t *v = json_object_get(body, name);
    if (json_is_string(v)) {
        *out = json_string_value(v);
        return 1;
    }
    http_error(r, 400, "field '%s' is required and must be a string", name);
    return 0;
}

/* Stores hash as user's password (in place of old_hash), revokes every session of the user and
 * starts a new one for the caller; replies with its tokens. */
static void store_new_password(http_req *r, int64_t user_id, const char *old_hash, const char *hash)
{
    char token[AUTH_TOKEN_HEX], token_hash[AUTH_TOKEN_HEX];
    auth_new_refresh(token, token_hash);
    Calc__V1__ChangePasswordRequest req = CALC__V1__CHANGE_PASSWORD_REQUEST__INIT;
    req.user_id = user_id;
    req.old_password_hash = (char *)old_hash;
    req.new_password_hash = (char *)hash;
    req.token_hash = token_hash;
    family_times(&req.expires_at_ms, &req.family_expires_at_ms);
    Calc__V1__Empty *rep = NULL;
    if (dba_call(r, DBA_CHANGE_PASSWORD, &req.base, &calc__v1__empty__descriptor, &rep) != RPC_OK)
        return;
    protobuf_c_message_free_unpacked(&rep->base, NULL);
    log_info("user=%lld changed the password: every other session is revoked", (long long)user_id);
    reply_tokens(r, user_id, token, req.expires_at_ms);
}

/*
 * The caller's new password, given the old one. A wrong old password counts as a failed login of
 * the user's login (same limit, 429), so a stolen access token cannot guess it quickly.
 */
void route_password(http_req *r)
{
    json_t *body = http_body_object(r);
    if (!body)
        return;
    const char *old_pw, *new_pw;
    Calc__V1__UserReply *rep = NULL;
    char hash[AUTH_HASH_MAX];
    if (!string_field(r, body, "old_password", &old_pw) ||
        !string_field(r, body, "new_password", &new_pw) || weak_password(r, "new_password", new_pw))
        goto out;
    Calc__V1__FindUserRequest find = CALC__V1__FIND_USER_REQUEST__INIT;
    find.id = r->user_id;
    char err[256];
    int rc = dba_call_quiet("password change", DBA_FIND_USER, &find.base,
                            &calc__v1__user_reply__descriptor, &rep, err, sizeof err);
    if (rc == RPC_NOT_FOUND) {
        http_error(r, 401, "the user of this access token no longer exists");
        goto out;
    }
    if (rc != RPC_OK) {
        dba_reply_failure(r, DBA_FIND_USER, rc, err);
        goto out;
    }
    const char *login = rep->user->login;
    int ok;
    if (ratelimit_admit(r, login) != 0) {
        /* replied: 429 or 503 */
    } else if ((ok = auth_check_password(rep->user->password_hash, old_pw)) == AUTH_BUSY) {
        http_error(r, 503, HASHING_BUSY);
    } else if (!ok) {
        ratelimit_outcome(r, login, 0);
        http_error(r, 403, "field 'old_password' does not match the current password");
    } else if ((rc = auth_hash_password(new_pw, hash)) != 0) {
        http_error(r, 503, "%s", rc == AUTH_BUSY ? HASHING_BUSY : "cannot hash the password now");
    } else {
        ratelimit_outcome(r, login, 1);
        store_new_password(r, r->user_id, rep->user->password_hash, hash);
    }
out:
    if (rep)
        protobuf_c_message_free_unpacked(&rep->base, NULL);
    json_decref(body);
}

void route_me(http_req *r)
{
    Calc__V1__FindUserRequest req = CALC__V1__FIND_USER_REQUEST__INIT;
    req.id = r->user_id;
    Calc__V1__UserReply *rep = NULL;
    if (dba_call(r, DBA_FIND_USER, &req.base, &calc__v1__user_reply__descriptor, &rep) != RPC_OK)
        return;
    http_json(r, 200,
              json_pack("{s:I, s:s, s:b, s:i}", "id", (json_int_t)rep->user->id, "login",
                        rep->user->login, "admin", rep->user->is_admin, "status", 200));
    protobuf_c_message_free_unpacked(&rep->base, NULL);
}
