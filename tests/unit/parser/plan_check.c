#include "plan_check.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

static int64_t ready_of(const plan_operand *o, const int64_t *finish)
{
    return o->is_node ? finish[o->node] : 0;
}

void check_plan(const plan *p, const plan_durations *d, const char *what)
{
    size_t n = p->n_nodes, depth = 0;
    int64_t *finish, *level;
    int *uses;

    if (n == 0) {
        if (p->depth != 0 || p->critical_path_ms != 0)
            fail_msg("%s: lone number with depth %zu, critical path %lld", what, p->depth,
                     (long long)p->critical_path_ms);
        return;
    }
    finish = calloc(n, sizeof *finish);
    level = calloc(n, sizeof *level);
    uses = calloc(n, sizeof *uses);
    for (size_t i = 0; i < n; i++) {
        const plan_node *x = &p->nodes[i];
        const plan_operand *side[2] = {&x->left, &x->right};
        int64_t start = 0;

        if (x->op < PLAN_ADD || x->op > PLAN_DIV)
            fail_msg("%s: node %zu has op %d", what, i, (int)x->op);
        for (int s = 0; s < 2; s++) {
            int32_t c = side[s]->node;

            if (!side[s]->is_node)
                continue;
            if (c < 0 || (size_t)c >= i)
                fail_msg("%s: node %zu uses node %d, which does not come before it", what, i,
                         (int)c);
            if (p->nodes[c].parent != (int32_t)i || p->nodes[c].parent_side != s)
                fail_msg("%s: node %d says parent %d side %d, but it is side %d of %zu", what,
                         (int)c, (int)p->nodes[c].parent, p->nodes[c].parent_side, s, i);
            uses[c]++;
            if (ready_of(side[s], finish) > start)
                start = ready_of(side[s], finish);
        }
        if (x->start_ms != start)
            fail_msg("%s: node %zu start %lld, want %lld", what, i, (long long)x->start_ms,
                     (long long)start);
        finish[i] = start + d->ms[x->op];
    }
    for (size_t i = 0; i + 1 < n; i++)
        if (uses[i] != 1)
            fail_msg("%s: node %zu is used %d times", what, i, uses[i]);
    if (p->nodes[n - 1].parent != -1)
        fail_msg("%s: the root (last node) has parent %d", what, (int)p->nodes[n - 1].parent);
    if (p->critical_path_ms != finish[n - 1])
        fail_msg("%s: critical path %lld, want %lld", what, (long long)p->critical_path_ms,
                 (long long)finish[n - 1]);
    for (size_t i = n; i-- > 0;) {
        const plan_node *x = &p->nodes[i];
        int64_t tail = d->ms[x->op] + (x->parent >= 0 ? p->nodes[x->parent].tail_ms : 0);

        level[i] = x->parent >= 0 ? level[x->parent] + 1 : 1;
        if ((size_t)level[i] > depth)
            depth = (size_t)level[i];
        if (x->tail_ms != tail)
            fail_msg("%s: node %zu tail %lld, want %lld", what, i, (long long)x->tail_ms,
                     (long long)tail);
        /* No path through a node can be longer than the critical path. */
        if (x->start_ms + x->tail_ms > p->critical_path_ms)
            fail_msg("%s: node %zu start+tail %lld beyond the critical path", what, i,
                     (long long)(x->start_ms + x->tail_ms));
    }
    if (p->depth != depth)
        fail_msg("%s: depth %zu, want %zu", what, p->depth, depth);
    free(finish);
    free(level);
    free(uses);
}
