/*
 * parse: text to AST with an explicit operator stack (shunting-yard), so neither long chains nor
 * deep nesting recurse. Unary signs are folded here: into a literal when one follows, otherwise
 * into a single NEG around a parenthesised group; the planner folds NEG away without a node.
 */
#ifndef CALC_PLAN_PARSE_H
#define CALC_PLAN_PARSE_H

#include <stdint.h>

#include "plan.h"

/* The binary kinds share plan_op's values so that the planner can copy them across. */
typedef enum {
    PLAN_AST_ADD = PLAN_ADD,
    PLAN_AST_SUB = PLAN_SUB,
    PLAN_AST_MUL = PLAN_MUL,
    PLAN_AST_DIV = PLAN_DIV,
    PLAN_AST_NUM,
    PLAN_AST_NEG /* child in left; never wraps a NUM or another NEG */
} plan__ast_kind;

typedef struct plan__ast_node {
    plan__ast_kind kind;
    int32_t left, right; /* indices into plan__ast.nodes; -1 when unused */
    double value;        /* PLAN_AST_NUM only */
} plan__ast_node;

typedef struct plan__ast {
    plan__ast_node *nodes; /* owned; plan__ast_free releases it */
    size_t n, cap;
    int32_t root;
    size_t n_binops; /* binary operators in the text: the node count of every plan */
} plan__ast;

/* Parses text under limits. On PLAN_OK *ast holds the
 * tree; on PLAN_ERR *err says why. Either way the caller calls plan__ast_free. */
int plan__parse(const char *text, size_t len, const plan_limits *limits, plan__ast *ast,
                plan_error *err);

void plan__ast_free(plan__ast *ast);

#endif
