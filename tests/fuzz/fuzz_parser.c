/*
 * libFuzzer target for the parser and planner: parse + plan + eval + JSON of arbitrary bytes
 * under limits and delays taken from the input, checking the plan's promises on the way.
 * Input: an 8-byte header (see read_header), then the text. Shorter inputs are all text, under
 * the default limits.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "plan.h"
#include "plan_json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define HEADER 8

/* A broken promise is a crash for libFuzzer to report, with the input that caused it. */
#define REQUIRE(cond)                                                                              \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_parser: broken: %s\n", #cond);                                   \
            __builtin_trap();                                                                      \
        }                                                                                          \
    } while (0)

/* High bit set: the default; else a small limit, to reach every limit's error path. 0xff
 * lifts the limit far beyond what the text can reach: nothing may rely on the limits for
 * safety (no recursion, no fixed buffers). */
static void read_header(const uint8_t *h, plan_limits *lim, plan_durations *dur, int *source_order)
{
    plan_limits_default(lim);
    if (!(h[0] & 0x80))
        lim->max_text = h[0];
    else if (h[0] == 0xff)
        lim->max_text = (size_t)1 << 16;
    if (!(h[1] & 0x80))
        lim->max_nodes = h[1];
    else if (h[1] == 0xff)
        lim->max_nodes = (size_t)1 << 16;
    if (!(h[2] & 0x80))
        lim->max_depth = h[2];
    else if (h[2] == 0xff)
        lim->max_depth = SIZE_MAX;
    for (int i = 0; i < PLAN_NOPS; i++)
        dur->ms[i] = (uint32_t)h[3 + i] * 37;
    *source_order = h[7] & 1;
}

static void check_plan(const plan *p, const plan_limits *lim)
{
    REQUIRE(p->n_nodes <= lim->max_nodes);
    REQUIRE((p->n_nodes == 0) == (p->depth == 0) && p->depth <= p->n_nodes);
    REQUIRE(p->critical_path_ms <= p->source_critical_path_ms);
    for (size_t i = 0; i < p->n_nodes; i++) {
        const plan_node *n = &p->nodes[i];

        REQUIRE(!n->left.is_node || (n->left.node >= 0 && (size_t)n->left.node < i));
        REQUIRE(!n->right.is_node || (n->right.node >= 0 && (size_t)n->right.node < i));
        REQUIRE(i + 1 == p->n_nodes ? n->parent == -1 : (size_t)n->parent > i);
        REQUIRE(n->start_ms >= 0 && n->start_ms + n->tail_ms <= p->critical_path_ms);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static FILE *sink;
    plan_limits lim;
    plan_durations dur;
    int source_order = 0;
    plan *p = NULL, *s = NULL;
    plan_error err;

    if (sink == NULL)
        sink = fopen("/dev/null", "w");
    plan_limits_default(&lim);
    plan_durations_uniform(&dur, 1000);
    if (size >= HEADER) {
        read_header(data, &lim, &dur, &source_order);
        data += HEADER;
        size -= HEADER;
    }
    memset(&err, 0xAA, sizeof err); /* the error must be filled in completely */
    if (plan_build((const char *)data, size, &lim, &dur, source_order, &p, &err) != PLAN_OK) {
        REQUIRE(p == NULL);
        REQUIRE(err.position >= 1 && err.position <= size + 1);
        REQUIRE(memchr(err.message, '\0', sizeof err.message) != NULL && err.message[0] != '\0');
        if (sink)
            plan_json_write_error(sink, &err);
        return 0;
    }
    check_plan(p, &lim);
    (void)plan_eval(p);
    if (sink)
        plan_json_write(sink, p, 1);
    /* the other order must accept the same text with the same number of nodes */
    REQUIRE(plan_build((const char *)data, size, &lim, &dur, !source_order, &s, &err) == PLAN_OK);
    REQUIRE(s->n_nodes == p->n_nodes);
    REQUIRE(s->source_critical_path_ms == p->source_critical_path_ms);
    plan_free(s);
    plan_free(p);
    return 0;
}
