#include "plan.h"

#include <stdlib.h>

#include "lexer.h"
#include "parse.h"
#include "planner.h"
#include "mem.h"

void plan_limits_default(plan_limits *limits)
{
    limits->max_text = 4096;
    limits->max_nodes = 1000;
    limits->max_depth = 100;
}

void plan_durations_uniform(plan_durations *dur, uint32_t ms)
{
    for (int i = 0; i < PLAN_NOPS; i++)
        dur->ms[i] = ms;
}

int plan_build(const char *text, size_t len, const plan_limits *limits, const plan_durations *dur,
               int source_order, plan **out, plan_error *err)
{
    plan_limits lim;
    plan_durations d;
    plan__ast ast = {0};
    plan__draft src = {0}, re = {0}, *keep;
    plan *p;
    int rc = PLAN_ERR;

    *out = NULL;
    if (limits)
        lim = *limits;
    else
        plan_limits_default(&lim);
    if (dur)
        d = *dur;
    else
        plan_durations_uniform(&d, 1000);
    /* The cap is checked before a single byte is read. */
    if (len > lim.max_text) {
        plan__set_error(err, lim.max_text, "expression too long: %zu bytes (limit %zu)", len,
                        lim.max_text);
        goto out;
    }
    if (plan__parse(text, len, &lim, &ast, err) != PLAN_OK)
        goto out;
    plan__draft_source(&ast, &d, &src);
    keep = &src;
    if (!source_order && ast.n_binops > 1) {
        plan__draft_reassoc(&ast, &d, &re);
        /* Reassociation may round differently, so it must earn its place by finishing sooner. */
        if (re.critical_path_ms < src.critical_path_ms)
            keep = &re;
    }
    p = xmallocarray(1, sizeof *p);
    p->nodes = keep->nodes;
    p->n_nodes = keep->n;
    p->depth = keep->depth;
    p->critical_path_ms = keep->critical_path_ms;
    p->value = keep->value;
    p->reassociated = keep == &re;
    p->source_critical_path_ms = src.critical_path_ms;
    keep->nodes = NULL;
    *out = p;
    rc = PLAN_OK;
out:
    plan__draft_free(&src);
    plan__draft_free(&re);
    plan__ast_free(&ast);
    return rc;
}

static double operand_value(const plan_operand *o, const double *results)
{
    return o->is_node ? results[o->node] : o->value;
}

double plan_eval(const plan *p)
{
    double *r, v;

    if (p->n_nodes == 0)
        return p->value;
    r = xmallocarray(p->n_nodes, sizeof *r);
    for (size_t i = 0; i < p->n_nodes; i++) {
        const plan_node *n = &p->nodes[i];
        double a = operand_value(&n->left, r), b = operand_value(&n->right, r);

        switch (n->op) {
        case PLAN_ADD:
            r[i] = a + b;
            break;
        case PLAN_SUB:
            r[i] = a - b;
            break;
        case PLAN_MUL:
            r[i] = a * b;
            break;
        default:
            r[i] = a / b;
            break;
        }
    }
    v = r[p->n_nodes - 1];
    free(r);
    return v;
}

void plan_free(plan *p)
{
    if (p == NULL)
        return;
    free(p->nodes);
    free(p);
}
