#include "xalloc.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static void die(const char *what, size_t count, size_t size)
{
    fprintf(stderr, "parser: %s of %zu x %zu bytes failed, aborting\n", what, count, size);
    abort();
}

void *plan__xmalloc(size_t count, size_t size)
{
    void *p;

    if (size != 0 && count > SIZE_MAX / size)
        die("malloc", count, size);
    /* malloc(0) may return NULL; ask for one byte so that NULL always means failure. */
    p = malloc(count * size != 0 ? count * size : 1);
    if (p == NULL)
        die("malloc", count, size);
    return p;
}

void *plan__xrealloc(void *p, size_t count, size_t size)
{
    void *q;

    if (size != 0 && count > SIZE_MAX / size)
        die("realloc", count, size);
    q = realloc(p, count * size != 0 ? count * size : 1);
    if (q == NULL)
        die("realloc", count, size);
    return q;
}
