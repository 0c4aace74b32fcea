/*
 * The DAG of an expression for the web page: POST /api/v1/plan previews the plan of a text before
 * it is sent, GET /expression/{id}/nodes shows the stored nodes with their states. Both draw the
 * same node shape and mark the critical path with dag.h.
 */
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "dag.h"
#include "dba.h"
#include "log.h"
#include "mem.h"
#include "methods.h"

static const char *const op_text[PLAN_NOPS] = {"+", "-", "*", "/"};

/* {"value": v} for a number; {"node": id} for a node's result, with its value once known. */
static json_t *operand_json(int64_t node, int has_value, double value)
{
    json_t *o = json_object();
    if (node)
        json_object_set_new(o, "node", json_integer(node));
    if (has_value)
        json_object_set_new(o, "value", number_json(value));
    return o;
}

/* The fields every node has, planned or stored: parent 0 is the root's none. */
static json_t *node_json(int64_t id, const char *op, json_t *left, json_t *right, int64_t parent,
                         const dag_node *t)
{
    return json_pack("{s:I, s:s, s:[o, o], s:o, s:I, s:I, s:b}", "id", (json_int_t)id, "op", op,
                     "operands", left, right, "parent", parent ? json_integer(parent) : json_null(),
                     "delay_ms", (json_int_t)t->delay_ms, "start_ms", (json_int_t)t->start_ms,
                     "critical", t->critical);
}

/* The plan's nodes are numbered from 1 in the reply (their index + 1), so 0 can mean "none". */
static void reply_plan(http_req *r, const plan *p, const plan_durations *dur)
{
    size_t n = p->n_nodes;
    dag_node *t = xcalloc(n + 1, sizeof *t);
    int64_t work_ms = 0, finish_ms = 0;
    for (size_t i = 0; i < n; i++) {
        const plan_node *pn = &p->nodes[i];
        t[i].child[0] = pn->left.is_node ? pn->left.node : -1;
        t[i].child[1] = pn->right.is_node ? pn->right.node : -1;
        t[i].delay_ms = dur->ms[pn->op];
        work_ms += t[i].delay_ms;
    }
    if (dag_time(t, n, &finish_ms) != DAG_OK)
        log_error("user=%lld: the planner's nodes are out of order", (long long)r->user_id);
    json_t *nodes = json_array();
    for (size_t i = 0; i < n; i++) {
        const plan_node *pn = &p->nodes[i];
        json_t *left = operand_json(pn->left.is_node ? pn->left.node + 1 : 0, !pn->left.is_node,
                                    pn->left.value);
        json_t *right = operand_json(pn->right.is_node ? pn->right.node + 1 : 0, !pn->right.is_node,
                                     pn->right.value);
        json_array_append_new(
            nodes, node_json((int64_t)i + 1, op_text[pn->op], left, right, pn->parent + 1, &t[i]));
    }
    json_t *delays = json_object();
    for (int op = 0; op < PLAN_NOPS; op++)
        json_object_set_new(delays, op_text[op], json_integer(dur->ms[op]));
    http_json(r, 200,
              json_pack("{s:i, s:i, s:I, s:I, s:b, s:o, s:o, s:o, s:i}", "node_count", (int)n,
                        "depth", (int)p->depth, "critical_path_ms", (json_int_t)p->critical_path_ms,
                        "work_ms", (json_int_t)work_ms, "reassociated", p->reassociated, "value",
                        n ? json_null() : number_json(p->value), "delays", delays, "nodes", nodes,
                        "status", 200));
    free(t);
}

void route_plan_preview(http_req *r)
{
    json_t *body = http_body_object(r);
    if (!body)
        return;
    const char *text;
    int source_order;
    plan_durations dur;
    plan *p = NULL;
    if (expression_fields(r, body, &text, &source_order) == 0 &&
        expression_plan(r, text, source_order, 0, &dur, &p) == 0)
        reply_plan(r, p, &dur);
    plan_free(p);
    json_decref(body);
}

/* The index of node id among nodes (sorted by id), or `self` when it is not there: dag_time
 * refuses a child that is not before its parent. */
static int32_t index_of(Calc__V1__NodeView **nodes, size_t n, int64_t id, size_t self)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (nodes[mid]->id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && nodes[lo]->id == id ? (int32_t)lo : (int32_t)self;
}

static json_t *stored_node_json(const Calc__V1__NodeView *v, const dag_node *t)
{
    json_t *j =
        node_json(v->id, v->op, operand_json(v->left_node, v->has_left_value, v->left_value),
                  operand_json(v->right_node, v->has_right_value, v->right_value), v->parent_id, t);
    json_object_set_new(j, "state", json_string(v->state));
    json_object_set_new(j, "value", v->has_result ? number_json(v->result) : json_null());
    json_object_set_new(j, "error", v->error[0] ? json_string(v->error) : json_null());
    json_object_set_new(j, "agent", v->agent[0] ? json_string(v->agent) : json_null());
    json_object_set_new(j, "attempts", json_integer(v->attempts));
    return j;
}

void route_expression_nodes(http_req *r)
{
    Calc__V1__GetExpressionRequest req = CALC__V1__GET_EXPRESSION_REQUEST__INIT;
    req.user_id = r->user_id;
    req.id = r->path_id;
    Calc__V1__NodesReply *rep = NULL;
    if (dba_call(r, DBA_GET_NODES, &req.base, &calc__v1__nodes_reply__descriptor, &rep) != RPC_OK)
        return;
    size_t n = rep->n_nodes;
    dag_node *t = xcalloc(n + 1, sizeof *t);
    for (size_t i = 0; i < n; i++) {
        const Calc__V1__NodeView *v = rep->nodes[i];
        t[i].child[0] = v->left_node ? index_of(rep->nodes, n, v->left_node, i) : -1;
        t[i].child[1] = v->right_node ? index_of(rep->nodes, n, v->right_node, i) : -1;
        t[i].delay_ms = v->delay_ms;
    }
    int64_t finish_ms = 0;
    if (dag_time(t, n, &finish_ms) != DAG_OK)
        log_error("user=%lld expression=%lld: stored nodes do not form a tree in id order",
                  (long long)r->user_id, (long long)r->path_id);
    json_t *nodes = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(nodes, stored_node_json(rep->nodes[i], &t[i]));
    http_json(r, 200,
              json_pack("{s:o, s:o, s:I, s:i}", "expression", expression_json(rep->expression),
                        "nodes", nodes, "critical_path_ms", (json_int_t)finish_ms, "status", 200));
    free(t);
    protobuf_c_message_free_unpacked(&rep->base, NULL);
}
