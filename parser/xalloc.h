/*
 * xalloc: the parser's out-of-memory policy, the same as the rest of the project: allocation
 * failures abort. Private to the parser so that the library keeps no dependencies.
 */
#ifndef CALC_PLAN_XALLOC_H
#define CALC_PLAN_XALLOC_H

#include <stddef.h>

/* Each returns memory owned by the caller (free()); none returns NULL. count * size must not
 * overflow: both abort if it would. */
void *plan__xmalloc(size_t count, size_t size);
void *plan__xrealloc(void *p, size_t count, size_t size);

#endif
