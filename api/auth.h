/*
 * auth: passwords (argon2id through libsodium, a bounded number at once, never waited for), access
 * tokens (JWT HS256 through libjwt, algorithm pinned, exp/iat/iss/sub checked) and refresh tokens
 * (256 random bits at a login, each successor derived from its predecessor; stored only as a
 * SHA-256).
 */
#ifndef CALC_AUTH_H
#define CALC_AUTH_H

#include <stddef.h>
#include <stdint.h>

#define AUTH_HASH_MAX  128 /* >= crypto_pwhash_STRBYTES */
#define AUTH_TOKEN_HEX 65  /* 64 hex characters and a NUL */

/* secret: >= 32 bytes; pepper may be empty. Both are kept, not copied. */
int auth_init(const char *secret, const char *pepper, int access_ttl_s, int max_hashing);

/* Failures of the password functions. AUTH_BUSY: every hashing slot (max_hashing) is taken;
 * nothing was computed and the caller should answer 503 rather than wait. */
#define AUTH_FAILED (-1)
#define AUTH_BUSY   (-2)

/* 0 with the argon2id string in out, AUTH_BUSY, or AUTH_FAILED (out of memory). */
int auth_hash_password(const char *password, char out[AUTH_HASH_MAX])
    __attribute__((warn_unused_result));
/* 1 when password matches hash, 0 when not, AUTH_BUSY when no hashing slot is free. A NULL
 * hash (unknown login) costs the same and fails. */
int auth_check_password(const char *hash, const char *password) __attribute__((warn_unused_result));

/* A new access token for user_id (free()). */
char *auth_issue_access(int64_t user_id);
/* The user id the token names, or 0 with err set. */
int64_t auth_verify_access(const char *token, char *err, size_t errlen);

/* A new refresh token and its hash, both hex. */
void auth_new_refresh(char token[AUTH_TOKEN_HEX], char hash[AUTH_TOKEN_HEX]);
/* A new random request id (32 hex characters), the same for every retry of one call. */
#define AUTH_REQUEST_ID_HEX 33
void auth_request_id(char id[AUTH_REQUEST_ID_HEX]);
void auth_hash_refresh(const char *token, char hash[AUTH_TOKEN_HEX]);
/*
 * The token that replaces token when it rotates, and its hash: a keyed BLAKE2b of token under a
 * key derived from the secret. Every API instance computes the same successor, so a refresh
 * retried after a lost reply can be given the same new token without storing it; without the
 * secret the successor cannot be told from random.
 */
void auth_successor_refresh(const char *token, char next[AUTH_TOKEN_HEX],
                            char hash[AUTH_TOKEN_HEX]);

/*
 * A ticket for GET /events (a browser's EventSource cannot send a header): "<user>.<expiry in
 * unix seconds>.<hex HMAC-SHA256 of both under a key derived from the secret>", valid ttl_s.
 * It opens event streams only: it is no access token, and an access token is no ticket.
 * Returns a new string (free()).
 */
char *auth_issue_ticket(int64_t user_id, int ttl_s);
/* The user id the ticket names, or 0 with err set (malformed, bad signature, expired). */
int64_t auth_verify_ticket(const char *ticket, char *err, size_t errlen);

#endif
