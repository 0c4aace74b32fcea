#include "parse.h"

#include <stdlib.h>

#include "lexer.h"
#include "mem.h"

/* An entry of the operator stack: a pending binary operator or an open parenthesis. */
typedef struct opentry {
    int is_paren; /* 1: '(' */
    int neg;      /* '(' only: an odd number of unary minus signs stood before it */
    plan_op op;   /* binary operator only */
    size_t off;   /* '(' only: where it stands, for "missing ')'" */
} opentry;

typedef struct parser {
    plan__ast *ast;
    opentry *ops;
    size_t n_ops, cap_ops;
    int32_t *vals; /* operand stack: AST indices */
    size_t n_vals, cap_vals;
} parser;

static int32_t ast_push(plan__ast *a, plan__ast_kind kind, int32_t l, int32_t r, double v)
{
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 64;
        a->nodes = xreallocarray(a->nodes, a->cap, sizeof *a->nodes);
    }
    a->nodes[a->n] = (plan__ast_node){.kind = kind, .left = l, .right = r, .value = v};
    return (int32_t)a->n++;
}

static void push_val(parser *p, int32_t v)
{
    if (p->n_vals == p->cap_vals) {
        p->cap_vals = p->cap_vals ? p->cap_vals * 2 : 64;
        p->vals = xreallocarray(p->vals, p->cap_vals, sizeof *p->vals);
    }
    p->vals[p->n_vals++] = v;
}

static void push_op(parser *p, opentry e)
{
    if (p->n_ops == p->cap_ops) {
        p->cap_ops = p->cap_ops ? p->cap_ops * 2 : 64;
        p->ops = xreallocarray(p->ops, p->cap_ops, sizeof *p->ops);
    }
    p->ops[p->n_ops++] = e;
}

static int prec(plan_op op)
{
    return op == PLAN_MUL || op == PLAN_DIV ? 2 : 1;
}

/* Pops one binary operator and its two operands into an AST node. The grammar guarantees the
 * operands are there: an operator is pushed only after an operand and before another. */
static void reduce(parser *p)
{
    plan_op op = p->ops[--p->n_ops].op;
    int32_t r = p->vals[--p->n_vals];
    int32_t l = p->vals[--p->n_vals];

    push_val(p, ast_push(p->ast, (plan__ast_kind)op, l, r, 0));
}

static void reduce_while(parser *p, int min_prec)
{
    while (p->n_ops > 0 && !p->ops[p->n_ops - 1].is_paren &&
           prec(p->ops[p->n_ops - 1].op) >= min_prec)
        reduce(p);
}

/* Applies a unary minus to the operand on top: a literal takes the sign, a double negation
 * cancels, anything else gets one NEG that the planner folds away. */
static void negate_top(parser *p)
{
    int32_t v = p->vals[p->n_vals - 1];
    plan__ast_node *n = &p->ast->nodes[v];

    if (n->kind == PLAN_AST_NUM)
        n->value = -n->value;
    else if (n->kind == PLAN_AST_NEG)
        p->vals[p->n_vals - 1] = n->left;
    else
        p->vals[p->n_vals - 1] = ast_push(p->ast, PLAN_AST_NEG, v, -1, 0);
}

/* A token where an operand (number, '(' or unary sign) must come. Sets *expect_operand. */
static int on_operand(parser *p, const plan_limits *lim, const plan__token *t, int *neg,
                      size_t *depth, int *expect_operand, plan_error *err)
{
    switch (t->kind) {
    case PLAN_TOK_ADD:
        return PLAN_OK;
    case PLAN_TOK_SUB:
        *neg = !*neg;
        return PLAN_OK;
    case PLAN_TOK_NUM:
        push_val(p, ast_push(p->ast, PLAN_AST_NUM, -1, -1, *neg ? -t->value : t->value));
        *neg = 0;
        *expect_operand = 0;
        return PLAN_OK;
    case PLAN_TOK_LPAREN:
        if (++*depth > lim->max_depth) {
            plan__set_error(err, t->off, "parentheses nested too deeply (limit %zu)",
                            lim->max_depth);
            return PLAN_ERR;
        }
        push_op(p, (opentry){.is_paren = 1, .neg = *neg, .off = t->off});
        *neg = 0;
        return PLAN_OK;
    default:
        plan__set_error(err, t->off, "expected a number or '('");
        return PLAN_ERR;
    }
}

/* A token where an operator, ')' or the end must come. Sets *done at the end. */
static int on_operator(parser *p, const plan_limits *lim, const plan__token *t, size_t *depth,
                       int *expect_operand, int *done, plan_error *err)
{
    plan_op op;

    switch (t->kind) {
    case PLAN_TOK_ADD:
    case PLAN_TOK_SUB:
    case PLAN_TOK_MUL:
    case PLAN_TOK_DIV:
        op = (plan_op)(t->kind - PLAN_TOK_ADD);
        if (++p->ast->n_binops > lim->max_nodes) {
            plan__set_error(err, t->off, "too many operations (limit %zu)", lim->max_nodes);
            return PLAN_ERR;
        }
        reduce_while(p, prec(op));
        push_op(p, (opentry){.op = op});
        *expect_operand = 1;
        return PLAN_OK;
    case PLAN_TOK_RPAREN:
        reduce_while(p, 0);
        if (p->n_ops == 0) {
            plan__set_error(err, t->off, "')' without a matching '('");
            return PLAN_ERR;
        }
        if (p->ops[--p->n_ops].neg)
            negate_top(p);
        --*depth;
        return PLAN_OK;
    case PLAN_TOK_END:
        reduce_while(p, 0);
        if (p->n_ops > 0) {
            plan__set_error(err, t->off, "missing ')' for '(' at position %zu",
                            p->ops[p->n_ops - 1].off + 1);
            return PLAN_ERR;
        }
        *done = 1;
        return PLAN_OK;
    default:
        plan__set_error(err, t->off,
                        *depth > 0 ? "expected an operator or ')'" : "expected an operator");
        return PLAN_ERR;
    }
}

int plan__parse(const char *text, size_t len, const plan_limits *lim, plan__ast *ast,
                plan_error *err)
{
    parser p = {.ast = ast};
    plan__lexer lx;
    plan__token t;
    size_t depth = 0;
    int expect_operand = 1, neg = 0, done = 0, any = 0, rc = PLAN_ERR;

    ast->nodes = NULL;
    ast->n = ast->cap = 0;
    ast->root = -1;
    ast->n_binops = 0;
    plan__lexer_init(&lx, text, len);
    while (!done) {
        if (plan__lex_next(&lx, &t, err) != PLAN_OK)
            goto out;
        if (t.kind == PLAN_TOK_END && !any) {
            plan__set_error(err, 0, "empty expression");
            goto out;
        }
        any = 1;
        if (expect_operand) {
            if (on_operand(&p, lim, &t, &neg, &depth, &expect_operand, err) != PLAN_OK)
                goto out;
        } else if (on_operator(&p, lim, &t, &depth, &expect_operand, &done, err) != PLAN_OK) {
            goto out;
        }
    }
    ast->root = p.vals[0];
    rc = PLAN_OK;
out:
    plan__lexer_done(&lx);
    free(p.ops);
    free(p.vals);
    return rc;
}

void plan__ast_free(plan__ast *ast)
{
    free(ast->nodes);
    ast->nodes = NULL;
    ast->n = ast->cap = 0;
}
