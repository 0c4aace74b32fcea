#include "plan_shape.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static int valid_op(const char *op)
{
    return op && op[0] && !op[1] && strchr("+-*/", op[0]);
}

int plan_shape_check(const Calc__V1__CreateExpressionRequest *req, char *err, size_t errlen)
{
    size_t n = req->n_nodes;
    if (n > PLAN_SHAPE_MAX_NODES)
        return fail(err, errlen, "too many nodes: %zu", n);
    size_t operands = 0; /* operands that are nodes: each names its own child (checked below) */
    for (size_t i = 0; i < n; i++) {
        const Calc__V1__PlanNode *pn = req->nodes[i];
        if (!valid_op(pn->op))
            return fail(err, errlen, "node %zu: bad operator", i);
        const Calc__V1__Operand *ops[2] = {pn->left, pn->right};
        for (int s = 0; s < 2; s++) {
            if (!ops[s] || ops[s]->kind_case == CALC__V1__OPERAND__KIND__NOT_SET)
                return fail(err, errlen, "node %zu: missing operand", i);
            if (ops[s]->kind_case == CALC__V1__OPERAND__KIND_NODE &&
                (ops[s]->node < 0 || (size_t)ops[s]->node >= i ||
                 req->nodes[ops[s]->node]->parent != (int32_t)i))
                return fail(err, errlen, "node %zu: bad child index", i);
            if (ops[s]->kind_case == CALC__V1__OPERAND__KIND_VALUE && !isfinite(ops[s]->value))
                return fail(err, errlen, "node %zu: non-finite literal", i);
            operands += ops[s]->kind_case == CALC__V1__OPERAND__KIND_NODE;
        }
        if (ops[0]->kind_case == CALC__V1__OPERAND__KIND_NODE &&
            ops[1]->kind_case == CALC__V1__OPERAND__KIND_NODE && ops[0]->node == ops[1]->node)
            return fail(err, errlen, "node %zu: both operands are node %d", i, ops[0]->node);
        if (pn->delay_ms < 0 || pn->delay_ms > 65535)
            return fail(err, errlen, "node %zu: delay out of range", i);
        int root = i + 1 == n;
        if (root ? pn->parent != -1 : (pn->parent <= (int32_t)i || (size_t)pn->parent >= n))
            return fail(err, errlen, "node %zu: bad parent index", i);
    }
    /* A child is named only by the parent it names, and at most once there: so every non-root
     * node is an operand exactly when there are n - 1 node operands. Find the one left out. */
    if (n > 0 && operands != n - 1) {
        char *named = xcalloc(n, 1);
        for (size_t i = 0; i < n; i++) {
            const Calc__V1__Operand *ops[2] = {req->nodes[i]->left, req->nodes[i]->right};
            for (int s = 0; s < 2; s++)
                if (ops[s]->kind_case == CALC__V1__OPERAND__KIND_NODE)
                    named[ops[s]->node] = 1;
        }
        size_t orphan = 0;
        while (orphan + 1 < n && named[orphan])
            orphan++;
        free(named);
        return fail(err, errlen, "node %zu: not an operand of its parent %d", orphan,
                    req->nodes[orphan]->parent);
    }
    return 0;
}
