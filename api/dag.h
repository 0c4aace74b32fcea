/*
 * dag: the timing of a DAG of operation nodes with unlimited workers: each node's earliest start,
 * the finish of the whole (its critical path in ms), and the nodes on a longest path. The plan
 * preview times the parser's plan with it and GET /expression/{id}/nodes the stored nodes, each
 * with the delay it was accepted with, so both mark the same path the planner minimised.
 */
#ifndef CALC_DAG_H
#define CALC_DAG_H

#include <stddef.h>
#include <stdint.h>

#define DAG_OK  0
#define DAG_ERR -1

typedef struct dag_node {
    int32_t child[2]; /* the index of the node giving each operand; -1 for a number */
    int64_t delay_ms;
    /* filled by dag_time */
    int64_t start_ms; /* when both operands are known */
    int critical;     /* 1: on a path whose length is the finish */
} dag_node;

/*
 * Fills start_ms and critical of nodes[0..n) and *finish_ms. A node's children must come before
 * it (each child index lower than its own) and be nobody else's child; DAG_ERR otherwise, with
 * nothing marked critical.
 */
int dag_time(dag_node *nodes, size_t n, int64_t *finish_ms) __attribute__((warn_unused_result));

#endif
