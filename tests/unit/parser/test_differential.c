/*
 * Differential test: random expressions from a fixed seed, each built as a tree here, printed as
 * text, and evaluated by plain recursion over that tree. The parser and planner see only the
 * text. Checked per expression:
 *   - the source-order plan's value equals the reference exactly (the folds it makes for unary
 *     minus are exact in IEEE arithmetic);
 *   - the reassociated plan's value is within 1e-9 of the reference, relative to the
 *     expression's magnitude (see magnitude()), because reassociation rounds differently;
 *   - both plans have one node per binary operator and pass check_plan;
 *   - the kept plan's critical path is never longer than the source-order one.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "plan.h"
#include "plan_check.h"

#define N_CASES   5000
#define MAX_OPS   120
#define TOLERANCE 1e-9

typedef enum { G_ADD, G_SUB, G_MUL, G_DIV, G_NUM, G_NEG } gkind;

typedef struct gnode {
    gkind kind;
    int left, right;
    double value;
    char lit[32];
} gnode;

typedef struct gen {
    uint64_t rng;
    gnode nodes[4 * MAX_OPS + 16];
    int n;
    int binops;
    char *text;
    size_t len, cap;
} gen;

static uint32_t rnd(gen *g, uint32_t n)
{
    /* xorshift64*: fixed seed, same expressions on every machine */
    g->rng ^= g->rng >> 12;
    g->rng ^= g->rng << 25;
    g->rng ^= g->rng >> 27;
    return (uint32_t)((g->rng * 2685821657736338717ULL) >> 33) % n;
}

static int add_node(gen *g, gkind kind, int l, int r)
{
    g->nodes[g->n] = (gnode){.kind = kind, .left = l, .right = r};
    return g->n++;
}

/* A literal in one of the grammar's spellings; its value is what strtod makes of it, which is
 * also what the parser gets. Zero is rare so that division by zero stays rare. */
static int gen_literal(gen *g)
{
    int i = add_node(g, G_NUM, -1, -1);
    char *s = g->nodes[i].lit;
    /* one rnd() per statement: the order of evaluation of operands and arguments is
     * unspecified, and gcc and clang differ, which would change the cases per compiler */
    unsigned m = rnd(g, 1000), f, e, sign;

    m += rnd(g, 50) ? 1 : 0;
    f = rnd(g, 1000);
    e = rnd(g, 9);
    sign = rnd(g, 2);

    switch (rnd(g, 7)) {
    case 0:
    case 1:
        snprintf(s, sizeof g->nodes[i].lit, "%u", m);
        break;
    case 2:
        snprintf(s, sizeof g->nodes[i].lit, "%u.%u", m, f);
        break;
    case 3:
        snprintf(s, sizeof g->nodes[i].lit, ".%u", f + 1);
        break;
    case 4:
        snprintf(s, sizeof g->nodes[i].lit, "%u.", m);
        break;
    case 5:
        snprintf(s, sizeof g->nodes[i].lit, "%u.%ue%d", m, f, (int)e - 4);
        break;
    default:
        snprintf(s, sizeof g->nodes[i].lit, "%uE%s%u", m, sign ? "-" : "+", e % 4);
        break;
    }
    g->nodes[i].value = strtod(s, NULL);
    return i;
}

/* A tree with exactly ops binary operators. Operators tend to keep their parent's precedence
 * class, which makes the long chains that reassociation works on. */
static int gen_tree(gen *g, int ops, int depth, int cls)
{
    int k, op, l, r;

    if (depth < 12 && rnd(g, 100) < 8) {
        l = gen_tree(g, ops, depth + 1, cls);
        return add_node(g, G_NEG, l, -1);
    }
    if (ops == 0)
        return gen_literal(g);
    if (rnd(g, 100) >= 70 || depth >= 24)
        cls = (int)rnd(g, 2);
    op = cls * 2 + (int)rnd(g, 2);
    /* mostly lopsided splits: chains, as people write them */
    k = rnd(g, 3) ? (rnd(g, 2) ? ops - 1 : 0) : (int)rnd(g, (uint32_t)ops);
    g->binops++;
    l = gen_tree(g, k, depth + 1, cls);
    r = gen_tree(g, ops - 1 - k, depth + 1, cls);
    return add_node(g, (gkind)op, l, r);
}

static void put(gen *g, const char *s)
{
    size_t n = strlen(s);

    if (g->len + n + 1 > g->cap) {
        g->cap = (g->len + n + 1) * 2;
        g->text = realloc(g->text, g->cap);
    }
    memcpy(g->text + g->len, s, n + 1);
    g->len += n;
}

static void space(gen *g)
{
    static const char *ws[] = {" ", "\t", "\n", "\r\n", "  "};

    if (rnd(g, 100) < 15)
        put(g, ws[rnd(g, 5)]);
}

static int prec(gkind k)
{
    return k == G_ADD || k == G_SUB ? 1 : k == G_MUL || k == G_DIV ? 2 : 3;
}

/* Prints with the parentheses the tree needs (left-associative operators, so an equal
 * precedence on the right needs them) and some it does not. */
static void print(gen *g, int i, int outer, int right)
{
    const gnode *x = &g->nodes[i];
    int p = prec(x->kind), paren = p < outer || (right && p == outer) || rnd(g, 100) < 8;

    if (rnd(g, 100) < 4)
        put(g, "+"), space(g); /* a unary plus changes nothing */
    if (paren)
        put(g, "("), space(g);
    if (x->kind == G_NUM) {
        put(g, x->lit);
    } else if (x->kind == G_NEG) {
        put(g, "-");
        space(g);
        print(g, x->left, 3, 0);
    } else {
        print(g, x->left, p, 0);
        space(g);
        put(g, (const char *[]){"+", "-", "*", "/"}[x->kind]);
        space(g);
        print(g, x->right, p, 1);
    }
    space(g);
    if (paren)
        put(g, ")"), space(g);
}

static double eval(const gen *g, int i)
{
    const gnode *x = &g->nodes[i];

    switch (x->kind) {
    case G_NUM:
        return x->value;
    case G_NEG:
        return -eval(g, x->left);
    case G_ADD:
        return eval(g, x->left) + eval(g, x->right);
    case G_SUB:
        return eval(g, x->left) - eval(g, x->right);
    case G_MUL:
        return eval(g, x->left) * eval(g, x->right);
    default:
        return eval(g, x->left) / eval(g, x->right);
    }
}

/*
 * A first-order bound on how much the value can move when every intermediate result is
 * perturbed by a relative eps: the true error of any evaluation order is about
 * eps * magnitude. Sums add magnitudes (so cancellation does not shrink the bound), products
 * multiply them, and a quotient also carries the divisor's own condition. A relative check on
 * a cancelled result would be meaningless; this one stays honest about it.
 */
static double magnitude(const gen *g, int i)
{
    const gnode *x = &g->nodes[i];
    double l, r, rv;

    switch (x->kind) {
    case G_NUM:
        return fabs(x->value);
    case G_NEG:
        return magnitude(g, x->left);
    case G_ADD:
    case G_SUB:
        return magnitude(g, x->left) + magnitude(g, x->right);
    case G_MUL:
        return magnitude(g, x->left) * magnitude(g, x->right);
    default:
        l = magnitude(g, x->left);
        r = magnitude(g, x->right);
        rv = fabs(eval(g, x->right));
        return l / rv * (1 + r / rv);
    }
}

typedef struct stats {
    int reassociated, skipped, well_conditioned;
} stats;

static void one_case(gen *g, int c, stats *st)
{
    plan_limits lim = {.max_text = 1 << 20, .max_nodes = 1 << 16, .max_depth = 1000};
    plan_durations d;
    plan *p = NULL, *s = NULL;
    plan_error err;
    double ref, mag, vp, vs;
    char what[64];
    int root, ops;

    g->n = 0;
    g->binops = 0;
    g->len = 0;
    ops = (int)rnd(g, MAX_OPS + 1);
    root = gen_tree(g, ops, 0, (int)rnd(g, 2));
    space(g);
    print(g, root, 0, 0);
    for (int k = 0; k < PLAN_NOPS; k++)
        d.ms[k] = rnd(g, 4) ? rnd(g, 5000) + 1 : rnd(g, 3); /* sometimes (almost) free */
    snprintf(what, sizeof what, "case %d", c);
    if (plan_build(g->text, g->len, &lim, &d, 0, &p, &err) != PLAN_OK ||
        plan_build(g->text, g->len, &lim, &d, 1, &s, &err) != PLAN_OK)
        fail_msg("%s: '%s': error at %zu: %s", what, g->text, err.position, err.message);
    check_plan(p, &d, what);
    check_plan(s, &d, what);
    if (p->n_nodes != (size_t)g->binops || s->n_nodes != (size_t)g->binops)
        fail_msg("%s: '%s': %zu and %zu nodes for %d operators", what, g->text, p->n_nodes,
                 s->n_nodes, g->binops);
    if (p->critical_path_ms > s->critical_path_ms ||
        p->source_critical_path_ms != s->critical_path_ms)
        fail_msg("%s: '%s': critical path %lld, source order %lld", what, g->text,
                 (long long)p->critical_path_ms, (long long)s->critical_path_ms);
    st->reassociated += p->reassociated;
    ref = eval(g, root);
    mag = magnitude(g, root);
    vp = plan_eval(p);
    vs = plan_eval(s);
    if (!isfinite(ref) || !isfinite(mag)) {
        /* division by zero or overflow: the two orders may disagree on inf vs nan */
        st->skipped++;
        goto out;
    }
    if (vs != ref)
        fail_msg("%s: '%s': source-order value %.17g, reference %.17g", what, g->text, vs, ref);
    if (!(fabs(vp - ref) <= TOLERANCE * mag))
        fail_msg("%s: '%s': reassociated value %.17g, reference %.17g (magnitude %g)", what,
                 g->text, vp, ref, mag);
    /* how often the check above was as strict as a plain relative 1e-9 (within 1000x) */
    if (mag <= 1e3 * fabs(ref))
        st->well_conditioned++;
out:
    plan_free(p);
    plan_free(s);
}

static void test_differential(void **state)
{
    gen *g = calloc(1, sizeof *g);
    stats st = {0};

    (void)state;
    g->rng = 0x9E3779B97F4A7C15ULL;
    for (int c = 0; c < N_CASES; c++)
        one_case(g, c, &st);
    printf("differential: %d cases, %d reassociated, %d skipped (not finite), %d "
           "well-conditioned\n",
           N_CASES, st.reassociated, st.skipped, st.well_conditioned);
    /* the test must exercise what it claims to: reassociation, and mostly strict checks */
    assert_true(st.reassociated > N_CASES / 4);
    assert_true(st.skipped < N_CASES / 20);
    assert_true(st.well_conditioned > N_CASES / 2);
    free(g->text);
    free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_differential),
    };

    return cmocka_run_group_tests_name("parser_differential", tests, NULL, NULL);
}
