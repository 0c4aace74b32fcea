/*
 * lexer: splits expression text into tokens. Numbers are checked against the grammar here
 * (strtod alone would accept hex, inf and nan) and converted with strtod, so the process must
 * keep the C locale for LC_NUMERIC (the default unless it calls setlocale).
 */
#ifndef CALC_PLAN_LEXER_H
#define CALC_PLAN_LEXER_H

#include "plan.h"

/* ADD..DIV are consecutive and in plan_op's order: the parser maps them by subtraction. */
typedef enum {
    PLAN_TOK_NUM,
    PLAN_TOK_ADD,
    PLAN_TOK_SUB,
    PLAN_TOK_MUL,
    PLAN_TOK_DIV,
    PLAN_TOK_LPAREN,
    PLAN_TOK_RPAREN,
    PLAN_TOK_END,
    PLAN_TOK_OTHER /* a printable character that starts no token; the parser says what it expected
                    */
} plan__tok_kind;

typedef struct plan__token {
    plan__tok_kind kind;
    size_t off;   /* 0-based offset of the first byte; text length for PLAN_TOK_END */
    double value; /* PLAN_TOK_NUM only */
} plan__token;

typedef struct plan__lexer {
    const char *text; /* borrowed, need not be NUL-terminated */
    size_t len;
    size_t off;
    char *numbuf; /* owned scratch for strtod; plan__lexer_done frees it */
    size_t numcap;
} plan__lexer;

void plan__lexer_init(plan__lexer *lx, const char *text, size_t len);
void plan__lexer_done(plan__lexer *lx);

/* Reads the next token. PLAN_ERR on a malformed number or a byte that can never be part of an
 * expression (control characters, NUL, non-ASCII); *err then names the position. */
int plan__lex_next(plan__lexer *lx, plan__token *tok, plan_error *err);

/* Fills *err with a 1-based position from a 0-based offset. */
void plan__set_error(plan_error *err, size_t off, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
