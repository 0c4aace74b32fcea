/*
 * ratelimit: the limits on login and register, kept by dbagent in PostgreSQL (LimitLogin,
 * RecordLogin; table login_limits) so that every API instance gives the same answer and each
 * login and each address has its own exact count. Checked before any password is hashed.
 */
#ifndef CALC_RATELIMIT_H
#define CALC_RATELIMIT_H

#include "http.h"

/* A login with this many failures within the window is locked (429) until the oldest of them
 * leaves it, even with the right password. */
#define RATELIMIT_MAX_FAILURES 5
#define RATELIMIT_WINDOW_MS    60000
/* A refusal (429) is sent this long after the request, without holding a thread (holdback.h):
 * a client that comes straight back is slowed to one attempt per connection per this long. */
#define RATELIMIT_HOLD_MS 1000

/*
 * Counts an attempt from r's client address against its budget (AUTH_ADDRESS_BUDGET per
 * AUTH_ADDRESS_WINDOW_S) and, when login is not NULL, looks whether that login is locked.
 * Returns 0 when the attempt may go on; otherwise it has replied to r (429 with Retry-After, or
 * 503 when dbagent cannot answer) and returns -1.
 */
int ratelimit_admit(http_req *r, const char *login) __attribute__((warn_unused_result));
/* The outcome of login's password check: a failure counts for the window, a success clears the
 * login's failures. A failure to record is logged, not replied. */
void ratelimit_outcome(http_req *r, const char *login, int succeeded);

#endif
