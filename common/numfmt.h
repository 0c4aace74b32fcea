/* numfmt: numbers as text for people and for other programs. */
#ifndef CALC_NUMFMT_H
#define CALC_NUMFMT_H

#include <stddef.h>

/* Room for any double numfmt_double writes, with its NUL. */
#define NUMFMT_DOUBLE_LEN 32

/*
 * Writes v to buf (len bytes, NUMFMT_DOUBLE_LEN is enough) in the shortest of %.15g, %.16g and
 * %.17g that reads back as the same double: 6, 0.1, 0.30000000000000004, 1e+300. Not-finite
 * values come out as printf writes them (inf, nan). Returns buf.
 */
char *numfmt_double(char *buf, size_t len, double v);

#endif
