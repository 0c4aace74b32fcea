#include "lexer.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"

void plan__set_error(plan_error *err, size_t off, const char *fmt, ...)
{
    va_list ap;

    err->position = off + 1;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
}

void plan__lexer_init(plan__lexer *lx, const char *text, size_t len)
{
    lx->text = text;
    lx->len = len;
    lx->off = 0;
    lx->numbuf = NULL;
    lx->numcap = 0;
}

void plan__lexer_done(plan__lexer *lx)
{
    free(lx->numbuf);
    lx->numbuf = NULL;
    lx->numcap = 0;
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static int at_digit(const plan__lexer *lx, size_t off)
{
    return off < lx->len && is_digit(lx->text[off]);
}

static size_t skip_digits(const plan__lexer *lx, size_t off)
{
    while (at_digit(lx, off))
        off++;
    return off;
}

/*
 * Scans digits [. digits] | . digits, then an optional exponent. The caller has checked that the
 * token starts with a digit or with '.' followed by a digit.
 */
static int lex_number(plan__lexer *lx, plan__token *tok, plan_error *err)
{
    size_t start = lx->off, end = skip_digits(lx, lx->off), n;
    double v;

    if (end < lx->len && lx->text[end] == '.')
        end = skip_digits(lx, end + 1);
    if (end < lx->len && (lx->text[end] == 'e' || lx->text[end] == 'E')) {
        size_t e = end + 1;

        if (e < lx->len && (lx->text[e] == '+' || lx->text[e] == '-'))
            e++;
        if (!at_digit(lx, e)) {
            plan__set_error(err, e, "expected a digit in the exponent");
            return PLAN_ERR;
        }
        end = skip_digits(lx, e);
    }
    n = end - start;
    /* strtod needs a NUL-terminated copy; the text itself may not be terminated. */
    if (n + 1 > lx->numcap) {
        lx->numcap = n + 1 > 64 ? n + 1 : 64;
        lx->numbuf = xreallocarray(lx->numbuf, lx->numcap, 1);
    }
    memcpy(lx->numbuf, lx->text + start, n);
    lx->numbuf[n] = '\0';
    v = strtod(lx->numbuf, NULL);
    /* Overflow gives HUGE_VAL; underflow to zero or a subnormal is still a number we can hold. */
    if (isinf(v)) {
        plan__set_error(err, start, "number out of the double range");
        return PLAN_ERR;
    }
    tok->kind = PLAN_TOK_NUM;
    tok->off = start;
    tok->value = v;
    lx->off = end;
    return PLAN_OK;
}

int plan__lex_next(plan__lexer *lx, plan__token *tok, plan_error *err)
{
    unsigned char c;

    while (lx->off < lx->len) {
        c = (unsigned char)lx->text[lx->off];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            break;
        lx->off++;
    }
    tok->off = lx->off;
    tok->value = 0;
    if (lx->off == lx->len) {
        tok->kind = PLAN_TOK_END;
        return PLAN_OK;
    }
    c = (unsigned char)lx->text[lx->off];
    if (is_digit((char)c) || (c == '.' && at_digit(lx, lx->off + 1)))
        return lex_number(lx, tok, err);
    /* Bytes that cannot appear in any expression get their own message: the user may not see
     * them at all (a NUL, a non-breaking space, a stray control character). */
    if (c < 0x20 || c > 0x7e) {
        plan__set_error(err, lx->off, "invalid byte 0x%02X", c);
        return PLAN_ERR;
    }
    switch (c) {
    case '+':
        tok->kind = PLAN_TOK_ADD;
        break;
    case '-':
        tok->kind = PLAN_TOK_SUB;
        break;
    case '*':
        tok->kind = PLAN_TOK_MUL;
        break;
    case '/':
        tok->kind = PLAN_TOK_DIV;
        break;
    case '(':
        tok->kind = PLAN_TOK_LPAREN;
        break;
    case ')':
        tok->kind = PLAN_TOK_RPAREN;
        break;
    default:
        tok->kind = PLAN_TOK_OTHER;
        break;
    }
    lx->off++;
    return PLAN_OK;
}
