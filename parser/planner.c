#include "planner.h"

#include <stdio.h>
#include <stdlib.h>

#include "mem.h"

/* An operand being built: where its value comes from and when it is ready. */
typedef struct val {
    plan_operand o;
    int64_t ready;
    uint32_t
        seq; /* creation order: ties on ready time go to the earlier, which keeps source order */
} val;

/* A term of a sum or a factor of a product. */
typedef struct item {
    int32_t ast;
    int flag;   /* sum: subtracted; product: divided by */
    int negate; /* emit the subtree negated (to fold a sign that had nowhere else to go) */
    val v;
} item;

/* A heap entry: an operand's ready time and tie-breaker, and where the operand is. */
typedef struct hent {
    int64_t ready;
    uint32_t seq;
    uint32_t slot;
} hent;

typedef struct work {
    int32_t ast;
    int flag;
} work;

/* A sum or product being built: its items are items[base, base + cnt), the first next done. */
typedef struct chain {
    size_t base, cnt, next;
    int sum_mode;
} chain;

typedef struct builder {
    const plan__ast *a;
    const plan_durations *dur;
    plan_node *nodes; /* exactly a->n_binops of them */
    int64_t *ready;
    size_t n, cap;
    work *work;    /* collect()'s stack; collect never nests */
    item *items;   /* a stack of the term lists of the chains being built, one above the other */
    chain *chains; /* the chains being built, outermost first */
    hent *heap;    /* join()'s heap; join never nests */
    size_t n_items;
    uint32_t seq;
} builder;

/* A broken invariant here is a bug in this file, not bad input: stop loudly. */
static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "planner: internal error: %s\n", what);
        abort();
    }
}

static void builder_init(builder *b, const plan__ast *a, const plan_durations *dur)
{
    b->a = a;
    b->dur = dur;
    b->cap = a->n_binops;
    b->n = 0;
    b->nodes = xmallocarray(b->cap, sizeof *b->nodes);
    b->ready = xmallocarray(b->cap, sizeof *b->ready);
    b->work = NULL;
    b->items = NULL;
    b->chains = NULL;
    b->heap = NULL;
    b->n_items = 0;
    b->seq = 0;
}

static val literal(builder *b, double v)
{
    return (val){.o = {.is_node = 0, .node = -1, .value = v}, .ready = 0, .seq = b->seq++};
}

static val new_node(builder *b, plan_op op, val l, val r)
{
    size_t i = b->n++;

    check(i < b->cap, "more nodes than binary operators");
    b->nodes[i] = (plan_node){.op = op, .left = l.o, .right = r.o, .parent = -1};
    b->ready[i] = (l.ready > r.ready ? l.ready : r.ready) + b->dur->ms[op];
    return (val){.o = {.is_node = 1, .node = (int32_t)i}, .ready = b->ready[i], .seq = b->seq++};
}

/*
 * Negates an operand in place without adding a node, by descending until a literal or a
 * subtraction takes the sign: -(x - y) = y - x, -(x + y) = (-x) - y, -(x * y) = (-x) * y.
 * All three are exact in IEEE arithmetic, so the source-order plan keeps the AST's value.
 */
static void negate_operand(builder *b, plan_operand *o)
{
    while (o->is_node) {
        plan_node *n = &b->nodes[o->node];
        plan_operand t;

        switch (n->op) {
        case PLAN_SUB:
            t = n->left, n->left = n->right, n->right = t;
            return;
        case PLAN_ADD:
            n->op = PLAN_SUB;
            if (!n->right.is_node) { /* -(x + c) = (-c) - x: the literal takes the sign */
                t = n->left, n->left = n->right, n->right = t;
            }
            o = &n->left;
            break;
        default:
            o = n->right.is_node ? &n->left : &n->right;
            break;
        }
    }
    o->value = -o->value;
}

/* Times, parents and depth from the finished node array; hands the nodes over to *out. */
static void finalize(builder *b, val result, plan__draft *out)
{
    plan_node *nodes = b->nodes;
    const uint32_t *ms = b->dur->ms;
    size_t i, n = b->n;

    check(n == b->cap, "fewer nodes than binary operators");
    out->nodes = nodes;
    out->n = n;
    out->value = result.o.is_node ? 0 : result.o.value;
    out->depth = 0;
    out->critical_path_ms = 0;
    if (n == 0)
        goto out;
    check(result.o.is_node && (size_t)result.o.node == n - 1, "the root is not last");
    for (i = 0; i < n; i++) {
        const plan_operand *side[2] = {&nodes[i].left, &nodes[i].right};
        int64_t start = 0;

        nodes[i].parent = -1;
        for (int s = 0; s < 2; s++) {
            plan_node *c;

            if (!side[s]->is_node)
                continue;
            check(side[s]->node >= 0 && (size_t)side[s]->node < i, "a child after its parent");
            c = &nodes[side[s]->node];
            check(c->parent == -1, "a node with two parents");
            c->parent = (int32_t)i;
            c->parent_side = s;
            if (c->start_ms + ms[c->op] > start)
                start = c->start_ms + ms[c->op];
        }
        nodes[i].start_ms = start;
    }
    out->critical_path_ms = nodes[n - 1].start_ms + ms[nodes[n - 1].op];
    /* Backwards, parents first: the tail and the level (reusing ready[] as scratch). */
    nodes[n - 1].parent_side = 0;
    nodes[n - 1].tail_ms = ms[nodes[n - 1].op];
    b->ready[n - 1] = 1;
    out->depth = 1;
    for (i = n - 1; i-- > 0;) {
        int32_t p = nodes[i].parent;

        check(p > (int32_t)i, "a node without a parent");
        nodes[i].tail_ms = ms[nodes[i].op] + nodes[p].tail_ms;
        b->ready[i] = b->ready[p] + 1;
        if ((size_t)b->ready[i] > out->depth)
            out->depth = (size_t)b->ready[i];
    }
out:
    b->nodes = NULL;
    free(b->ready);
    free(b->work);
    free(b->items);
    free(b->chains);
    free(b->heap);
}

void plan__draft_source(const plan__ast *a, const plan_durations *dur, plan__draft *out)
{
    /* Iterative post-order: a 16k-term chain is a 16k-deep left spine. */
    typedef struct frame {
        int32_t ast;
        int visited;
    } frame;
    builder b;
    frame *st = xmallocarray(2 * a->n + 1, sizeof *st);
    val *vs = xmallocarray(a->n + 1, sizeof *vs);
    size_t ns = 0, nv = 0;

    builder_init(&b, a, dur);
    st[ns++] = (frame){a->root, 0};
    while (ns > 0) {
        frame f = st[--ns];
        const plan__ast_node *x = &a->nodes[f.ast];

        if (x->kind == PLAN_AST_NUM) {
            vs[nv++] = literal(&b, x->value);
        } else if (f.visited && x->kind == PLAN_AST_NEG) {
            negate_operand(&b, &vs[nv - 1].o);
        } else if (f.visited) {
            val r = vs[--nv], l = vs[--nv];

            vs[nv++] = new_node(&b, (plan_op)x->kind, l, r);
        } else {
            st[ns++] = (frame){f.ast, 1};
            if (x->kind != PLAN_AST_NEG)
                st[ns++] = (frame){x->right, 0};
            st[ns++] = (frame){x->left, 0};
        }
    }
    check(nv == 1, "operands left over");
    finalize(&b, vs[0], out);
    free(st);
    free(vs);
}

/* ---- reassociation ---- */

static int earlier(const hent *x, const hent *y)
{
    return x->ready < y->ready || (x->ready == y->ready && x->seq < y->seq);
}

/* Moves e down from the hole at i; heap entries are small so that this, the planner's
 * hottest loop, moves 16 bytes per level instead of whole items. */
static void sift_down(hent *h, size_t n, size_t i, hent e)
{
    for (;;) {
        size_t c = 2 * i + 1;

        if (c >= n)
            break;
        if (c + 1 < n && earlier(&h[c + 1], &h[c]))
            c++;
        if (!earlier(&h[c], &e))
            break;
        h[i] = h[c];
        i = c;
    }
    h[i] = e;
}

/* Joins the k >= 1 operands in items[0, k) with op, always the two ready earliest: a min-heap,
 * O(k log k). With equal ready times this is a balanced tree, so 64 terms take 6 levels. */
static val join(builder *b, item *items, size_t k, plan_op op)
{
    hent *h = b->heap;

    for (size_t i = 0; i < k; i++)
        h[i] = (hent){items[i].v.ready, items[i].v.seq, (uint32_t)i};
    for (size_t i = k / 2; i-- > 0;)
        sift_down(h, k, i, h[i]);
    while (k > 1) {
        hent first = h[0], second;
        val v;

        k--;
        sift_down(h, k, 0, h[k]);
        second = h[0];
        /* The joined operand takes the second one's slot and goes back into the heap. */
        v = new_node(b, op, items[first.slot].v, items[second.slot].v);
        items[second.slot].v = v;
        sift_down(h, k, 0, (hent){v.ready, v.seq, second.slot});
    }
    return items[h[0].slot].v;
}

/* Appends the terms (sum_mode) or factors of the chain rooted at root to the item stack,
 * flattening nested chains of the same kind and pushing signs inwards. In product mode an odd
 * number of NEG toggles *neg. Returns the number of items. */
static size_t collect(builder *b, int32_t root, int sum_mode, int flag, int *neg)
{
    size_t nw = 0, start = b->n_items;

    b->work[nw++] = (work){root, flag};
    while (nw > 0) {
        work w = b->work[--nw];
        const plan__ast_node *x = &b->a->nodes[w.ast];
        int is_add = x->kind == PLAN_AST_ADD || x->kind == PLAN_AST_SUB;
        int is_mul = x->kind == PLAN_AST_MUL || x->kind == PLAN_AST_DIV;

        if (x->kind == PLAN_AST_NEG) {
            if (!sum_mode)
                *neg = !*neg;
            b->work[nw++] = (work){x->left, sum_mode ? !w.flag : w.flag};
        } else if (sum_mode ? is_add : is_mul) {
            int flips = x->kind == PLAN_AST_SUB || x->kind == PLAN_AST_DIV;

            /* Right first so the left comes off the stack first: items in source order. */
            b->work[nw++] = (work){x->right, flips ? !w.flag : w.flag};
            b->work[nw++] = (work){x->left, w.flag};
        } else {
            b->items[b->n_items++] = (item){.ast = w.ast, .flag = w.flag};
        }
    }
    return b->n_items - start;
}

/* The first literal among the items, else the first item: where a sign costs nothing. */
static size_t pick_for_sign(const builder *b, size_t base, size_t cnt)
{
    for (size_t i = base; i < base + cnt; i++)
        if (b->a->nodes[b->items[i].ast].kind == PLAN_AST_NUM)
            return i;
    return base;
}

/* Collects the chain at x and decides where its sign goes; its items are then emitted one by
 * one (by emit) before chain_finish joins them. */
static void chain_start(builder *b, chain *c, int32_t x, int negate)
{
    const plan__ast_node *n = &b->a->nodes[x];
    size_t i;
    int neg = 0, any_pos = 0;

    c->sum_mode = n->kind == PLAN_AST_ADD || n->kind == PLAN_AST_SUB;
    c->base = c->next = b->n_items;
    c->cnt = collect(b, x, c->sum_mode, c->sum_mode && negate, &neg);
    for (i = c->base; i < c->base + c->cnt; i++)
        any_pos |= !b->items[i].flag;
    if (c->sum_mode && !any_pos) {
        /* -a - b: no positive term, so one term takes the sign: (-a) - b. */
        i = pick_for_sign(b, c->base, c->cnt);
        b->items[i].flag = 0;
        b->items[i].negate = 1;
    } else if (!c->sum_mode && (neg ^ negate)) {
        /* -(a*b): a literal factor takes the sign, else a parenthesised sum flips its terms.
         * Factors are only literals and sums, since products are flattened. */
        b->items[pick_for_sign(b, c->base, c->cnt)].negate = 1;
    }
}

/* (sum of positive terms) - (sum of negative terms), or numerators / denominators. */
static val chain_finish(builder *b, const chain *c)
{
    plan_op join_op = c->sum_mode ? PLAN_ADD : PLAN_MUL;
    size_t npos = 0;
    val res;

    /* Positive terms (numerators) first; order is irrelevant since ties go by seq. */
    for (size_t i = c->base; i < c->base + c->cnt; i++) {
        if (!b->items[i].flag) {
            item t = b->items[i];

            b->items[i] = b->items[c->base + npos];
            b->items[c->base + npos++] = t;
        }
    }
    res = join(b, b->items + c->base, npos, join_op);
    if (npos < c->cnt) {
        val rest = join(b, b->items + c->base + npos, c->cnt - npos, join_op);

        res = new_node(b, c->sum_mode ? PLAN_SUB : PLAN_DIV, res, rest);
    }
    b->n_items = c->base;
    return res;
}

/*
 * Emits the subtree at x (negated if asked). Chains nest one inside another's items, a sum in
 * a product in a sum..., as deep as the parentheses; an explicit stack of chains keeps that
 * off the C stack, so no nesting limit is needed for safety.
 */
static val emit(builder *b, int32_t x, int negate)
{
    size_t depth = 0;
    val v;

    while (b->a->nodes[x].kind == PLAN_AST_NEG) {
        x = b->a->nodes[x].left;
        negate = !negate;
    }
    if (b->a->nodes[x].kind == PLAN_AST_NUM)
        return literal(b, negate ? -b->a->nodes[x].value : b->a->nodes[x].value);
    chain_start(b, &b->chains[depth++], x, negate);
    for (;;) {
        chain *c = &b->chains[depth - 1];

        if (c->next < c->base + c->cnt) {
            /* Items are literals or chains of the other kind: collect unwrapped every NEG. */
            item *it = &b->items[c->next];
            const plan__ast_node *n = &b->a->nodes[it->ast];

            if (n->kind == PLAN_AST_NUM) {
                it->v = literal(b, it->negate ? -n->value : n->value);
                c->next++;
            } else {
                chain_start(b, &b->chains[depth++], it->ast, it->negate);
            }
            continue;
        }
        v = chain_finish(b, c);
        if (--depth == 0)
            return v;
        c = &b->chains[depth - 1];
        b->items[c->next++].v = v;
    }
}

void plan__draft_reassoc(const plan__ast *a, const plan_durations *dur, plan__draft *out)
{
    builder b;
    val res;

    builder_init(&b, a, dur);
    /* Every AST node is pushed on the work stack at most once, is an item of at most one live
     * chain and roots at most one chain, so no array ever grows (and pointers stay valid). */
    b.work = xmallocarray(a->n + 1, sizeof *b.work);
    b.items = xmallocarray(a->n + 1, sizeof *b.items);
    b.chains = xmallocarray(a->n + 1, sizeof *b.chains);
    b.heap = xmallocarray(a->n + 1, sizeof *b.heap);
    res = emit(&b, a->root, 0);
    finalize(&b, res, out);
}

void plan__draft_free(plan__draft *d)
{
    free(d->nodes);
    d->nodes = NULL;
    d->n = 0;
}
