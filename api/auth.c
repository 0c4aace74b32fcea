#include "auth.h"

#include <jwt.h>
#include <pthread.h>
#include <semaphore.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mem.h"

/* argon2id's cost per password. The HTTP fuzz target alone builds with the least cost argon2id
 * allows (CALC_FUZZ_CHEAP_HASH), so that it spends its time on the request handling around it. */
#ifdef CALC_FUZZ_CHEAP_HASH
#define AUTH_PWHASH_OPS crypto_pwhash_OPSLIMIT_MIN
#define AUTH_PWHASH_MEM crypto_pwhash_MEMLIMIT_MIN
#else
#define AUTH_PWHASH_OPS crypto_pwhash_OPSLIMIT_INTERACTIVE
#define AUTH_PWHASH_MEM crypto_pwhash_MEMLIMIT_INTERACTIVE
#endif

#define AUTH_ISSUER "calc-api"

static const char *secret, *pepper;
static int access_ttl;
static sem_t hashing; /* argon2id takes 64 MiB and tens of ms: bound how many run at once */
static int hashing_made;
static char dummy_hash[AUTH_HASH_MAX]; /* checked against for unknown logins */
static pthread_once_t dummy_once = PTHREAD_ONCE_INIT;
/* Keys the digests of verified access tokens (below); random per process. */
static unsigned char verified_hash_key[crypto_generichash_KEYBYTES];
/* Keys the derivation of a refresh token's successor; from the secret, so every instance agrees. */
static unsigned char successor_key[crypto_generichash_KEYBYTES];
/* Keys the MAC of event-stream tickets; from the secret, so any instance accepts another's. */
static unsigned char ticket_key[crypto_auth_hmacsha256_KEYBYTES];

static int hash_now(const char *pw, char out[AUTH_HASH_MAX])
{
    return crypto_pwhash_str(out, pw, strlen(pw), AUTH_PWHASH_OPS, AUTH_PWHASH_MEM);
}

/* Made on first need, not at start: hashing takes a noticeable part of a second. Runs inside a
 * hashing slot the caller holds. */
static void make_dummy_hash(void)
{
    char random_password[AUTH_TOKEN_HEX], unused[AUTH_TOKEN_HEX];
    auth_new_refresh(random_password, unused);
    if (hash_now(random_password, dummy_hash) != 0)
        abort();
}

/* A slot of the hashing pool, taken without waiting: a request thread that waited here would
 * hold its connection and its thread while the pool is busy, so /healthz and every other route
 * would queue behind a burst of logins. No free slot: the caller answers 503 at once. */
static int take_slot(void)
{
    return sem_trywait(&hashing) == 0 ? 0 : AUTH_BUSY;
}

int auth_init(const char *s, const char *p, int ttl, int max_hashing)
{
    if (sodium_init() < 0)
        return -1;
    secret = s;
    pepper = p;
    access_ttl = ttl;
    randombytes_buf(verified_hash_key, sizeof verified_hash_key);
    /* A subkey of its own (context "refresh_"), not the JWT key itself: the two uses never mix. */
    unsigned char master[crypto_kdf_KEYBYTES];
    crypto_generichash(master, sizeof master, (const unsigned char *)s, strlen(s), NULL, 0);
    crypto_kdf_derive_from_key(successor_key, sizeof successor_key, 1, "refresh_", master);
    crypto_kdf_derive_from_key(ticket_key, sizeof ticket_key, 2, "evticket", master);
    sodium_memzero(master, sizeof master);
    /* Called again (unit tests try several secrets) while nothing hashes: a new bound. */
    if (hashing_made)
        sem_destroy(&hashing);
    hashing_made = 1;
    return sem_init(&hashing, 0, (unsigned)max_hashing);
}

/* With a pepper the password is first keyed with it, so a stolen table alone is not enough. */
static void peppered(const char *password, char out[crypto_auth_hmacsha256_BYTES * 2 + 1],
                     const char **use)
{
    if (!pepper[0]) {
        *use = password;
        return;
    }
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, (const unsigned char *)pepper, strlen(pepper));
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)password, strlen(password));
    crypto_auth_hmacsha256_final(&st, mac);
    sodium_bin2hex(out, crypto_auth_hmacsha256_BYTES * 2 + 1, mac, sizeof mac);
    *use = out;
}

int auth_hash_password(const char *password, char out[AUTH_HASH_MAX])
{
    char pep[crypto_auth_hmacsha256_BYTES * 2 + 1];
    const char *pw;
    peppered(password, pep, &pw);
    if (take_slot() != 0)
        return AUTH_BUSY;
    int rc = hash_now(pw, out) == 0 ? 0 : AUTH_FAILED;
    sem_post(&hashing);
    return rc;
}

int auth_check_password(const char *hash, const char *password)
{
    int known = hash != NULL;
    if (take_slot() != 0)
        return AUTH_BUSY;
    if (!known) {
        pthread_once(&dummy_once, make_dummy_hash);
        hash = dummy_hash;
    }
    char pep[crypto_auth_hmacsha256_BYTES * 2 + 1];
    const char *pw;
    peppered(password, pep, &pw);
    int ok = crypto_pwhash_str_verify(hash, pw, strlen(pw)) == 0;
    sem_post(&hashing);
    return ok && known;
}

char *auth_issue_access(int64_t user_id)
{
    jwt_t *jwt = NULL;
    char *out = NULL;
    if (jwt_new(&jwt))
        return NULL;
    time_t now = time(NULL);
    char sub[32];
    snprintf(sub, sizeof sub, "%lld", (long long)user_id);
    if (jwt_set_alg(jwt, JWT_ALG_HS256, (const unsigned char *)secret, (int)strlen(secret)) ||
        jwt_add_grant(jwt, "iss", AUTH_ISSUER) || jwt_add_grant(jwt, "sub", sub) ||
        jwt_add_grant_int(jwt, "userId", user_id) || jwt_add_grant_int(jwt, "iat", now) ||
        jwt_add_grant_int(jwt, "exp", now + access_ttl))
        goto out;
    out = jwt_encode_str(jwt);
out:
    jwt_free(jwt);
    return out;
}

/*
 * Tokens already verified, with their subject and expiry: a client sends the same token with
 * every request for up to ACCESS_TOKEN_TTL_S, and decoding it each time (base64, JSON, HMAC)
 * is a tenth of a GET's CPU. Fixed size; an entry is used only until its exp. An entry holds
 * a keyed BLAKE2b digest of the token, not the token: the table gives away no usable token,
 * its slots cannot be aimed at from outside (the key is random per process), and digests are
 * compared in constant time.
 */
#define VERIFIED_SLOTS 4096

typedef struct verified_key {
    unsigned char digest[crypto_generichash_BYTES];
} verified_key;

static struct verified {
    verified_key key;
    int64_t uid;
    long exp;
} verified[VERIFIED_SLOTS];
static pthread_mutex_t verified_lock = PTHREAD_MUTEX_INITIALIZER;

static verified_key verified_key_of(const char *token)
{
    verified_key k;
    crypto_generichash(k.digest, sizeof k.digest, (const unsigned char *)token, strlen(token),
                       verified_hash_key, sizeof verified_hash_key);
    return k;
}

static size_t verified_slot(const verified_key *k)
{
    uint32_t h;
    memcpy(&h, k->digest, sizeof h);
    return h % VERIFIED_SLOTS;
}

static int64_t verified_get(const char *token, time_t now)
{
    verified_key k = verified_key_of(token);
    size_t i = verified_slot(&k);
    int64_t uid = 0;
    pthread_mutex_lock(&verified_lock);
    if (verified[i].exp > now && sodium_memcmp(verified[i].key.digest, k.digest, sizeof k) == 0)
        uid = verified[i].uid;
    pthread_mutex_unlock(&verified_lock);
    return uid;
}

static void verified_put(const char *token, int64_t uid, long exp)
{
    verified_key k = verified_key_of(token);
    size_t i = verified_slot(&k);
    pthread_mutex_lock(&verified_lock);
    verified[i].key = k;
    verified[i].uid = uid;
    verified[i].exp = exp;
    pthread_mutex_unlock(&verified_lock);
}

static int64_t verify(const char *token, char *err, size_t errlen);

int64_t auth_verify_access(const char *token, char *err, size_t errlen)
{
    int64_t uid = verified_get(token, time(NULL));
    return uid ? uid : verify(token, err, errlen);
}

/* The full check: signature, algorithm, issuer, times, subject. */
static int64_t verify(const char *token, char *err, size_t errlen)
{
    jwt_t *jwt = NULL;
    int64_t uid = 0;
    if (strlen(token) > 4096) {
        snprintf(err, errlen, "too long");
        return 0;
    }
    if (jwt_decode(&jwt, token, (const unsigned char *)secret, (int)strlen(secret)) || !jwt) {
        snprintf(err, errlen, "bad signature or format");
        return 0;
    }
    /* libjwt accepts "alg":"none" without checking anything: the algorithm is pinned here. */
    if (jwt_get_alg(jwt) != JWT_ALG_HS256) {
        snprintf(err, errlen, "algorithm not allowed");
        goto out;
    }
    const char *iss = jwt_get_grant(jwt, "iss");
    const char *sub = jwt_get_grant(jwt, "sub");
    long exp = jwt_get_grant_int(jwt, "exp");
    long iat = jwt_get_grant_int(jwt, "iat");
    time_t now = time(NULL);
    if (!iss || strcmp(iss, AUTH_ISSUER) != 0) {
        snprintf(err, errlen, "wrong issuer");
        goto out;
    }
    if (exp <= 0 || exp <= now) {
        snprintf(err, errlen, "expired");
        goto out;
    }
    if (iat <= 0 || iat > now + 60) {
        snprintf(err, errlen, "issued in the future");
        goto out;
    }
    char *end = NULL;
    long long id = sub ? strtoll(sub, &end, 10) : 0;
    if (!sub || *end || id <= 0) {
        snprintf(err, errlen, "no subject");
        goto out;
    }
    uid = id;
    verified_put(token, uid, exp);
out:
    jwt_free(jwt);
    return uid;
}

void auth_new_refresh(char token[AUTH_TOKEN_HEX], char hash[AUTH_TOKEN_HEX])
{
    unsigned char raw[32];
    randombytes_buf(raw, sizeof raw);
    sodium_bin2hex(token, AUTH_TOKEN_HEX, raw, sizeof raw);
    auth_hash_refresh(token, hash);
}

void auth_request_id(char id[AUTH_REQUEST_ID_HEX])
{
    unsigned char raw[16];
    randombytes_buf(raw, sizeof raw);
    sodium_bin2hex(id, AUTH_REQUEST_ID_HEX, raw, sizeof raw);
}

void auth_hash_refresh(const char *token, char hash[AUTH_TOKEN_HEX])
{
    unsigned char h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(h, (const unsigned char *)token, strlen(token));
    sodium_bin2hex(hash, AUTH_TOKEN_HEX, h, sizeof h);
}

void auth_successor_refresh(const char *token, char next[AUTH_TOKEN_HEX], char hash[AUTH_TOKEN_HEX])
{
    unsigned char raw[32];
    crypto_generichash(raw, sizeof raw, (const unsigned char *)token, strlen(token), successor_key,
                       sizeof successor_key);
    sodium_bin2hex(next, AUTH_TOKEN_HEX, raw, sizeof raw);
    auth_hash_refresh(next, hash);
}

/* The hex HMAC of a ticket's "<user>.<expiry>" under ticket_key. */
static void ticket_mac(const char *claims, size_t len,
                       char hex[crypto_auth_hmacsha256_BYTES * 2 + 1])
{
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    crypto_auth_hmacsha256(mac, (const unsigned char *)claims, len, ticket_key);
    sodium_bin2hex(hex, crypto_auth_hmacsha256_BYTES * 2 + 1, mac, sizeof mac);
}

char *auth_issue_ticket(int64_t user_id, int ttl_s)
{
    char claims[64], hex[crypto_auth_hmacsha256_BYTES * 2 + 1];
    int n = snprintf(claims, sizeof claims, "%lld.%lld", (long long)user_id,
                     (long long)time(NULL) + ttl_s);
    ticket_mac(claims, (size_t)n, hex);
    size_t cap = sizeof claims + 1 + sizeof hex;
    char *t = xmalloc(cap);
    snprintf(t, cap, "%s.%s", claims, hex);
    return t;
}

int64_t auth_verify_ticket(const char *ticket, char *err, size_t errlen)
{
    char hex[crypto_auth_hmacsha256_BYTES * 2 + 1];
    const char *dot = strrchr(ticket, '.');
    char *end;
    long long uid = strtoll(ticket, &end, 10);
    long long exp = *end == '.' ? strtoll(end + 1, &end, 10) : 0;
    if (!dot || end != dot || uid <= 0 || exp <= 0 || strlen(dot + 1) != sizeof hex - 1) {
        snprintf(err, errlen, "malformed ticket");
        return 0;
    }
    ticket_mac(ticket, (size_t)(dot - ticket), hex);
    if (sodium_memcmp(hex, dot + 1, sizeof hex - 1) != 0) {
        snprintf(err, errlen, "bad ticket signature");
        return 0;
    }
    if (exp <= (long long)time(NULL)) {
        snprintf(err, errlen, "expired ticket");
        return 0;
    }
    return uid;
}
