/* plan_check: the invariants every plan promises, recomputed independently of the planner. */
#ifndef CALC_TEST_PLAN_CHECK_H
#define CALC_TEST_PLAN_CHECK_H

#include "plan.h"

/* Fails the current cmocka test, naming what, unless: children come before parents and the
 * root is last; parent and parent_side match the operands; every node but the root has one
 * parent; start_ms, tail_ms, depth and critical_path_ms match a fresh computation under d. */
void check_plan(const plan *p, const plan_durations *d, const char *what);

#endif
