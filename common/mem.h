/*
 * mem: the one out-of-memory policy of the project: allocation failures abort the process. Part
 * of calc_base, which depends on nothing but libc, so the parser library uses it too.
 */
#ifndef CALC_MEM_H
#define CALC_MEM_H

#include <stddef.h>

/* Each returns memory owned by the caller (free()); none returns NULL. */
void *xmalloc(size_t n);
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *p, size_t n);
/* count elements of size bytes each; aborts when count * size overflows. */
void *xmallocarray(size_t count, size_t size);
void *xreallocarray(void *p, size_t count, size_t size);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
/* printf into a new string. */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
