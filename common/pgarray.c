#include "pgarray.h"

#include <assert.h>
#include <inttypes.h>

#include "numfmt.h"

void pgarray_init(pgarray *a)
{
    /* Callers bound the element count (each RPC checks its own); the text follows from it. */
    buf_init(&a->text, SIZE_MAX);
    buf_add(&a->text, "{", 1);
    a->n = 0;
    a->closed = 0;
}

void pgarray_free(pgarray *a)
{
    buf_free(&a->text);
}

/* The separator before the next element. */
static void next(pgarray *a)
{
    assert(!a->closed);
    if (a->n++)
        buf_add(&a->text, ",", 1);
}

void pgarray_i64(pgarray *a, int64_t v)
{
    next(a);
    buf_printf(&a->text, "%" PRId64, v);
}

void pgarray_f64(pgarray *a, double v)
{
    char num[NUMFMT_DOUBLE_LEN];
    next(a);
    buf_printf(&a->text, "%s", numfmt_double(num, sizeof num, v));
}

void pgarray_bool(pgarray *a, int v)
{
    next(a);
    buf_add(&a->text, v ? "t" : "f", 1);
}

void pgarray_str(pgarray *a, const char *s)
{
    if (!s) {
        pgarray_null(a);
        return;
    }
    next(a);
    buf_add(&a->text, "\"", 1);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            buf_add(&a->text, "\\", 1);
        buf_add(&a->text, s, 1);
    }
    buf_add(&a->text, "\"", 1);
}

void pgarray_null(pgarray *a)
{
    next(a);
    buf_add(&a->text, "NULL", 4);
}

void pgarray_i64s(pgarray *a, const int64_t *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        pgarray_i64(a, v[i]);
}

const char *pgarray_text(pgarray *a)
{
    if (!a->closed) {
        buf_add(&a->text, "}", 1);
        a->closed = 1;
    }
    return a->text.data;
}
