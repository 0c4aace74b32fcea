/*
 * planner: AST to operation nodes, either in source order or reassociated under the operator
 * delays, with the timing fields (start, tail, depth, critical path) filled in. Never evaluates
 * an operation: every binary operator of the text becomes exactly one node, and unary minus is
 * folded into a literal or an operator's shape (a - b <-> b - a, a + b -> (-a) - b) for free.
 */
#ifndef CALC_PLAN_PLANNER_H
#define CALC_PLAN_PLANNER_H

#include "parse.h"
#include "plan.h"

typedef struct plan__draft {
    plan_node *nodes; /* owned; plan__draft_free or hand over to a plan */
    size_t n;         /* always ast->n_binops */
    double value;     /* the lone number when n == 0 */
    size_t depth;
    int64_t critical_path_ms;
} plan__draft;

/* The operations as written, left to right. */
void plan__draft_source(const plan__ast *a, const plan_durations *dur, plan__draft *out);

/* Each +/- chain as (sum of positive terms) - (sum of negative terms) and each * / chain as
 * (product of numerators) / (product of denominators), every sum and product joined earliest
 * ready first. */
void plan__draft_reassoc(const plan__ast *a, const plan_durations *dur, plan__draft *out);

void plan__draft_free(plan__draft *d);

#endif
