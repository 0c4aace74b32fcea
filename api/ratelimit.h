/*
 * ratelimit: failed logins per login name in a sliding minute, in a fixed-size table (memory is
 * bounded whatever logins attackers try).
 */
#ifndef CALC_RATELIMIT_H
#define CALC_RATELIMIT_H

#include <stdint.h>

#define RATELIMIT_MAX_FAILURES 5
#define RATELIMIT_WINDOW_MS    60000

/* 1 when login already has RATELIMIT_MAX_FAILURES failures within the window ending at now_ms. */
int ratelimit_blocked(const char *login, int64_t now_ms);
void ratelimit_failure(const char *login, int64_t now_ms);
/* A successful login clears the count. */
void ratelimit_success(const char *login);

#endif
