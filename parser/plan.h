/*
 * plan: turns the text of an arithmetic expression into the DAG of operation nodes that the
 * cluster executes. Pure code: no I/O, no globals, thread-safe.
 */
#ifndef CALC_PLAN_H
#define CALC_PLAN_H

#include <stddef.h>
#include <stdint.h>

#define PLAN_OK  0
#define PLAN_ERR -1

/* Operators, in the order used to index plan_durations.ms. */
typedef enum { PLAN_ADD = 0, PLAN_SUB = 1, PLAN_MUL = 2, PLAN_DIV = 3 } plan_op;
#define PLAN_NOPS 4

typedef struct plan_limits {
    size_t max_text;  /* bytes of text; default 4096 */
    size_t max_nodes; /* operation nodes; default 1000 */
    size_t max_depth; /* parenthesis nesting; default 100 */
} plan_limits;

typedef struct plan_durations {
    uint32_t ms[PLAN_NOPS]; /* delay of each operator, indexed by plan_op */
} plan_durations;

typedef struct plan_operand {
    int is_node;  /* 1: the result of nodes[node]; 0: the literal value */
    int32_t node; /* index into plan.nodes, valid when is_node */
    double value; /* valid when !is_node */
} plan_operand;

typedef struct plan_node {
    plan_op op;
    plan_operand left, right;
    int32_t parent;   /* index of the node that consumes this result; -1 for the root */
    int parent_side;  /* 0: this node is the parent's left operand, 1: its right */
    int64_t start_ms; /* earliest start with unlimited workers */
    int64_t tail_ms;  /* own delay plus the longest path from here to the end of the root */
} plan_node;

typedef struct plan {
    plan_node *nodes; /* children always come before their parent; the root is last */
    size_t n_nodes;
    size_t depth;             /* nodes on the longest root-to-leaf chain; 0 when n_nodes == 0 */
    int64_t critical_path_ms; /* finish time of the root with unlimited workers */
    double value;             /* the expression's value when n_nodes == 0 (a lone number) */
    int reassociated;         /* 1 when the reassociated plan was kept, 0 for source order */
    int64_t source_critical_path_ms; /* critical path of the source-order plan, for comparison */
} plan;

typedef struct plan_error {
    size_t position;   /* 1-based byte position of the problem in the text */
    char message[160]; /* what was expected, e.g. "expected a number or '('" */
} plan_error;

/* The defaults named above. */
void plan_limits_default(plan_limits *limits);

/* Every operator delay set to ms (the CLI's default is 1000). */
void plan_durations_uniform(plan_durations *dur, uint32_t ms);

/*
 * Parses text (len bytes, need not be NUL-terminated) and plans it under the given delays.
 * source_order != 0 keeps the operations in source order (no reassociation).
 * limits == NULL means plan_limits_default(); dur == NULL means 1000 ms for every operator.
 * On PLAN_OK *out is a new plan owned by the caller (plan_free). On PLAN_ERR *err says why and
 * *out is NULL.
 */
int plan_build(const char *text, size_t len, const plan_limits *limits, const plan_durations *dur,
               int source_order, plan **out, plan_error *err);

/* Evaluates the plan locally in double precision, as the agents would. */
double plan_eval(const plan *p);

void plan_free(plan *p);

#endif
