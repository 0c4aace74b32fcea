#include "ratelimit.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "api.h"
#include "dba.h"
#include "log.h"
#include "methods.h"
#include "timeutil.h"

/*
 * Refusals already given, until they lapse: an address over its budget stays over until its
 * window ends, and a locked login stays locked until its oldest failure leaves the window (it
 * cannot succeed meanwhile, so nothing clears it early). Answering those from here gives the
 * same answer dbagent would, without a round trip: a flood from one address costs the database
 * one call per window, not one per request. Only refusals are kept; a slot taken by another key
 * just means asking dbagent again.
 */
#define REFUSAL_SLOTS 1024
#define REFUSAL_KEY   (HTTP_ADDRESS_MAX + 80)

static struct refusal {
    char key[REFUSAL_KEY]; /* "a <address>" or "l <login>" */
    int64_t until_ms;      /* monotonic */
} refusals[REFUSAL_SLOTS];
static pthread_mutex_t refusals_lock = PTHREAD_MUTEX_INITIALIZER;

static size_t refusal_slot(const char *key)
{
    uint32_t h = 2166136261u;
    for (; *key; key++)
        h = (h ^ (unsigned char)*key) * 16777619u;
    return h % REFUSAL_SLOTS;
}

/* Milliseconds left of a refusal of key, 0 when none is kept. */
static int64_t refused_for(const char *key, int64_t now)
{
    struct refusal *f = &refusals[refusal_slot(key)];
    int64_t left = 0;
    pthread_mutex_lock(&refusals_lock);
    if (f->until_ms > now && strcmp(f->key, key) == 0)
        left = f->until_ms - now;
    pthread_mutex_unlock(&refusals_lock);
    return left;
}

static void refuse(const char *key, int64_t until)
{
    struct refusal *f = &refusals[refusal_slot(key)];
    pthread_mutex_lock(&refusals_lock);
    snprintf(f->key, sizeof f->key, "%s", key);
    f->until_ms = until;
    pthread_mutex_unlock(&refusals_lock);
}

static int reply_refused(http_req *r, const char *login, int64_t after_ms)
{
    r->retry_after_s = after_ms > 1000 ? (int)((after_ms + 999) / 1000) : 1;
    r->hold_ms = RATELIMIT_HOLD_MS;
    if (login)
        http_error(r, 429, "too many failed logins for '%s': wait %d s", login, r->retry_after_s);
    else
        http_error(r, 429, "too many login and register attempts from %s: wait %d s", r->address,
                   r->retry_after_s);
    return -1;
}

int ratelimit_admit(http_req *r, const char *login)
{
    char addr_key[REFUSAL_KEY], login_key[REFUSAL_KEY];
    snprintf(addr_key, sizeof addr_key, "a %s", r->address);
    snprintf(login_key, sizeof login_key, "l %s", login ? login : "");
    int64_t now = time_monotonic_ms(), left;
    if ((left = refused_for(addr_key, now)) > 0)
        return reply_refused(r, NULL, left);
    if (login && (left = refused_for(login_key, now)) > 0)
        return reply_refused(r, login, left);
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
    int locked = verdict == CALC__V1__LIMIT_LOGIN_REPLY__VERDICT__LOGIN_LOCKED;
    refuse(locked ? login_key : addr_key, now + after_ms);
    return reply_refused(r, locked ? login : NULL, after_ms);
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
