/*
 * plan_shape: the checks a plan passes before it is stored. Indices in range, children before
 * parents, and a tree: every node but the root is an operand of exactly one node, the parent it
 * names. (A node named as an operand twice, or by no one, would leave its parent waiting for
 * ever or filled wrongly.) Operators, literals and delays are checked too.
 */
#ifndef CALC_PLAN_SHAPE_H
#define CALC_PLAN_SHAPE_H

#include <stddef.h>

#include "calc.pb-c.h"

#define PLAN_SHAPE_MAX_NODES 100000

/* 0 when req's plan has a valid shape; -1 with err naming the first node at fault. */
int plan_shape_check(const Calc__V1__CreateExpressionRequest *req, char *err, size_t errlen);

#endif
