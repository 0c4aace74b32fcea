/*
 * The shape a plan must have before dbagent stores it: operators, operands, literals and delays
 * in range, children before parents, and a tree in which every node but the root is an operand
 * of exactly the parent it names.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "plan_shape.h"

#define MAX 8

/* A plan of up to MAX nodes built in place. */
typedef struct plan {
    Calc__V1__CreateExpressionRequest req;
    Calc__V1__PlanNode nodes[MAX];
    Calc__V1__PlanNode *ptrs[MAX];
    Calc__V1__Operand operands[MAX][2];
} plan;

static void plan_init(plan *p)
{
    memset(p, 0, sizeof *p);
    calc__v1__create_expression_request__init(&p->req);
    p->req.req_uid = "u";
    p->req.text = "t";
    p->req.nodes = p->ptrs;
}

static Calc__V1__Operand *value(plan *p, size_t i, int side, double v)
{
    Calc__V1__Operand *o = &p->operands[i][side];
    calc__v1__operand__init(o);
    o->kind_case = CALC__V1__OPERAND__KIND_VALUE;
    o->value = v;
    return o;
}

static Calc__V1__Operand *node(plan *p, size_t i, int side, int32_t child)
{
    Calc__V1__Operand *o = &p->operands[i][side];
    calc__v1__operand__init(o);
    o->kind_case = CALC__V1__OPERAND__KIND_NODE;
    o->node = child;
    return o;
}

/* Appends a node with operator op and parent; its operands are set by the caller. */
static Calc__V1__PlanNode *add(plan *p, const char *op, int32_t parent)
{
    size_t i = p->req.n_nodes++;
    Calc__V1__PlanNode *n = &p->nodes[i];
    calc__v1__plan_node__init(n);
    n->op = (char *)op;
    n->parent = parent;
    n->delay_ms = 100;
    p->ptrs[i] = n;
    return n;
}

/* 2 + 2 * 2: node 0 = 2 * 2, node 1 (root) = 2 + node 0. */
static void two_plus_two_times_two(plan *p)
{
    plan_init(p);
    Calc__V1__PlanNode *mul = add(p, "*", 1);
    mul->left = value(p, 0, 0, 2);
    mul->right = value(p, 0, 1, 2);
    Calc__V1__PlanNode *sum = add(p, "+", -1);
    sum->left = value(p, 1, 0, 2);
    sum->right = node(p, 1, 1, 0);
}

static void expect_error(plan *p, const char *want)
{
    char err[128] = "";
    assert_int_equal(plan_shape_check(&p->req, err, sizeof err), -1);
    assert_string_equal(err, want);
}

static void test_a_tree_and_a_lone_number_pass(void **state)
{
    (void)state;
    plan p;
    char err[128];
    two_plus_two_times_two(&p);
    assert_int_equal(plan_shape_check(&p.req, err, sizeof err), 0);

    /* (1+2) * (3+4): two leaves under one root, both operands nodes. */
    plan_init(&p);
    Calc__V1__PlanNode *a = add(&p, "+", 2);
    a->left = value(&p, 0, 0, 1);
    a->right = value(&p, 0, 1, 2);
    Calc__V1__PlanNode *b = add(&p, "+", 2);
    b->left = value(&p, 1, 0, 3);
    b->right = value(&p, 1, 1, 4);
    Calc__V1__PlanNode *root = add(&p, "*", -1);
    root->left = node(&p, 2, 0, 0);
    root->right = node(&p, 2, 1, 1);
    assert_int_equal(plan_shape_check(&p.req, err, sizeof err), 0);

    plan_init(&p); /* no nodes: a lone number */
    assert_int_equal(plan_shape_check(&p.req, err, sizeof err), 0);
}

static void test_operators_operands_literals_and_delays(void **state)
{
    (void)state;
    plan p;
    const char *bad_ops[] = {"", "%", "++", "x"};
    for (size_t i = 0; i < sizeof bad_ops / sizeof bad_ops[0]; i++) {
        two_plus_two_times_two(&p);
        p.nodes[1].op = (char *)bad_ops[i];
        expect_error(&p, "node 1: bad operator");
    }

    two_plus_two_times_two(&p);
    p.nodes[0].right = NULL;
    expect_error(&p, "node 0: missing operand");
    two_plus_two_times_two(&p);
    p.operands[0][0].kind_case = CALC__V1__OPERAND__KIND__NOT_SET;
    expect_error(&p, "node 0: missing operand");

    two_plus_two_times_two(&p);
    p.operands[0][1].value = INFINITY;
    expect_error(&p, "node 0: non-finite literal");
    two_plus_two_times_two(&p);
    p.operands[1][0].value = NAN;
    expect_error(&p, "node 1: non-finite literal");

    two_plus_two_times_two(&p);
    p.nodes[0].delay_ms = -1;
    expect_error(&p, "node 0: delay out of range");
    two_plus_two_times_two(&p);
    p.nodes[1].delay_ms = 65536;
    expect_error(&p, "node 1: delay out of range");
    two_plus_two_times_two(&p);
    p.nodes[1].delay_ms = 65535;
    char err[128];
    assert_int_equal(plan_shape_check(&p.req, err, sizeof err), 0);
}

static void test_indices_must_make_a_tree(void **state)
{
    (void)state;
    plan p;

    two_plus_two_times_two(&p); /* a child after its parent */
    node(&p, 1, 1, 1);
    expect_error(&p, "node 1: bad child index");
    two_plus_two_times_two(&p);
    node(&p, 1, 1, -1);
    expect_error(&p, "node 1: bad child index");

    two_plus_two_times_two(&p); /* the root has a parent */
    p.nodes[1].parent = 0;
    expect_error(&p, "node 1: bad parent index");
    two_plus_two_times_two(&p); /* a parent out of range */
    p.nodes[0].parent = 2;
    expect_error(&p, "node 0: bad parent index");
    two_plus_two_times_two(&p); /* a parent before its child */
    p.nodes[0].parent = 0;
    expect_error(&p, "node 0: bad parent index");

    /* A child named by a node that is not the parent it names. */
    plan_init(&p);
    Calc__V1__PlanNode *a = add(&p, "+", 2);
    a->left = value(&p, 0, 0, 1);
    a->right = value(&p, 0, 1, 2);
    Calc__V1__PlanNode *b = add(&p, "-", 2);
    b->left = node(&p, 1, 0, 0);
    b->right = value(&p, 1, 1, 4);
    Calc__V1__PlanNode *root = add(&p, "*", -1);
    root->left = node(&p, 2, 0, 1);
    root->right = value(&p, 2, 1, 5);
    expect_error(&p, "node 1: bad child index");

    /* The same child twice in one node. */
    plan_init(&p);
    a = add(&p, "+", 1);
    a->left = value(&p, 0, 0, 1);
    a->right = value(&p, 0, 1, 2);
    root = add(&p, "*", -1);
    root->left = node(&p, 1, 0, 0);
    root->right = node(&p, 1, 1, 0);
    expect_error(&p, "node 1: both operands are node 0");

    /* A node nobody names: its parent would wait for ever. */
    plan_init(&p);
    a = add(&p, "+", 2);
    a->left = value(&p, 0, 0, 1);
    a->right = value(&p, 0, 1, 2);
    b = add(&p, "+", 2);
    b->left = value(&p, 1, 0, 3);
    b->right = value(&p, 1, 1, 4);
    root = add(&p, "*", -1);
    root->left = node(&p, 2, 0, 1);
    root->right = value(&p, 2, 1, 5);
    expect_error(&p, "node 0: not an operand of its parent 2");
}

static void test_too_many_nodes(void **state)
{
    (void)state;
    Calc__V1__CreateExpressionRequest req = CALC__V1__CREATE_EXPRESSION_REQUEST__INIT;
    req.n_nodes = PLAN_SHAPE_MAX_NODES + 1; /* refused before any node is read */
    char err[128];
    assert_int_equal(plan_shape_check(&req, err, sizeof err), -1);
    assert_string_equal(err, "too many nodes: 100001");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_tree_and_a_lone_number_pass),
        cmocka_unit_test(test_operators_operands_literals_and_delays),
        cmocka_unit_test(test_indices_must_make_a_tree),
        cmocka_unit_test(test_too_many_nodes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
