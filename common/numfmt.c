#include "numfmt.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>

char *numfmt_double(char *buf, size_t len, double v)
{
    assert(buf && len > 0);
    /* 17 significant digits always read back; fewer read better when they suffice. */
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, len, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    return buf;
}
