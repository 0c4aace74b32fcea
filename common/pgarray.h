/*
 * pgarray: the text form of a PostgreSQL array, sent as one parameter ('{1,2,NULL}',
 * '{"a\"b",NULL}'), built one element at a time. One parameter carries any number of values,
 * so a statement keeps one shape however many rows it takes.
 */
#ifndef CALC_PGARRAY_H
#define CALC_PGARRAY_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

typedef struct pgarray {
    buf text;
    size_t n;   /* elements so far */
    int closed; /* pgarray_text was called: no more elements */
} pgarray;

void pgarray_init(pgarray *a);
void pgarray_free(pgarray *a);

void pgarray_i64(pgarray *a, int64_t v);
/* In numfmt_double's text, which reads back as the same float8. */
void pgarray_f64(pgarray *a, double v);
void pgarray_bool(pgarray *a, int v);
/* s in double quotes, with " and \ escaped; NULL: a SQL NULL. */
void pgarray_str(pgarray *a, const char *s);
void pgarray_null(pgarray *a);
/* n values at once. */
void pgarray_i64s(pgarray *a, const int64_t *v, size_t n);

/* Closes the array and returns its text, owned by a (valid until pgarray_free). */
const char *pgarray_text(pgarray *a);

#endif
