/* buf: a growable byte buffer with a cap, for anything whose size the outside world decides. */
#ifndef CALC_BUF_H
#define CALC_BUF_H

#include <stddef.h>

typedef struct buf {
    char *data; /* NUL-terminated; owned by the buf */
    size_t len, alloc, cap;
} buf;

void buf_init(buf *b, size_t cap);
void buf_free(buf *b);
/* Each returns 0, or -1 (and leaves b unchanged) when the result would exceed the cap. */
int buf_add(buf *b, const void *data, size_t len);
int buf_printf(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Drops the first n bytes (n <= len): what was sent of a buffer filled as a queue. */
void buf_consume(buf *b, size_t n);
/* Hands the data over to the caller (free()) and resets b. */
char *buf_take(buf *b);

#endif
