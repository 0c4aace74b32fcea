/*
 * cache: the replies of finished expressions. A finished expression never changes again, so
 * its GET /expression/{id} reply can be served without asking dbagent, until retention may
 * delete it: from then on dbagent is asked again, and a deleted one is a 404 here as anywhere.
 * Fixed size (memory is bounded whatever is read); an entry belongs to one user, so isolation
 * holds.
 */
#ifndef CALC_CACHE_H
#define CALC_CACHE_H

#include <stdint.h>

#include "buf.h"

#define CACHE_SLOTS     16384
#define CACHE_MAX_REPLY 8192 /* longer replies are not kept */

/* A copy of the reply kept for (user, id) (free()), or NULL (also once its time is over). */
char *cache_get(int64_t user_id, int64_t id);
/* Keeps a copy of reply for (user, id) for for_ms from now (0: no end; under 0: not at all),
 * replacing whatever shared its slot. */
void cache_put(int64_t user_id, int64_t id, const char *reply, int64_t for_ms);
/* Appends calc_expression_cache_hits_total and calc_expression_cache_expired_total to b
 * (Prometheus text). */
void cache_metrics_write(buf *b);

#endif
