#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "eventwake.h"
#include "handlers.h"
#include "pgarray.h"
#include "plan_shape.h"
#include "ready.h"
#include "retention.h"
#include "mem.h"
#include "timeutil.h"

#define EXPR_COLS                                                                                  \
    "id, user_id, req_uid, text, status, result, error, node_count, nodes_done, depth,"            \
    " critical_path_ms, to_ms(created_at), to_ms(started_at), to_ms(finished_at), to_ms(now())"

/* The expression in row, whose EXPR_COLS start at column c (calc_create_expression's row has
 * them without the last, the time of the read: this dbagent's clock stands in for it). */
static Calc__V1__Expression *expr_from_row(rpc_ctx *ctx, const PGresult *r, int row, int c)
{
    Calc__V1__Expression *e = rpc_alloc(ctx, sizeof *e);
    calc__v1__expression__init(e);
    e->id = db_i64(r, row, c);
    e->user_id = db_i64(r, row, c + 1);
    e->req_uid = rpc_strdup(ctx, db_str(r, row, c + 2));
    e->text = rpc_strdup(ctx, db_str(r, row, c + 3));
    e->status = rpc_strdup(ctx, db_str(r, row, c + 4));
    e->has_result = !db_null(r, row, c + 5);
    e->result = db_f64(r, row, c + 5);
    e->error = rpc_strdup(ctx, db_str(r, row, c + 6));
    e->node_count = (int32_t)db_i64(r, row, c + 7);
    e->nodes_done = (int32_t)db_i64(r, row, c + 8);
    e->depth = (int32_t)db_i64(r, row, c + 9);
    e->critical_path_ms = db_i64(r, row, c + 10);
    e->created_at_ms = db_i64(r, row, c + 11);
    e->started_at_ms = db_i64(r, row, c + 12);
    e->finished_at_ms = db_i64(r, row, c + 13);
    int64_t now = PQnfields(r) > c + 14 ? db_i64(r, row, c + 14) : time_now_ms();
    e->retained_for_ms = retention_expression_left_ms(e->finished_at_ms, now);
    return e;
}

static int reply_expr(rpc_ctx *ctx, const PGresult *r, int created, ProtobufCMessage **resp)
{
    Calc__V1__ExpressionReply *rep = rpc_alloc(ctx, sizeof *rep);
    calc__v1__expression_reply__init(rep);
    rep->expression = expr_from_row(ctx, r, 0, 0);
    rep->created = created;
    *resp = &rep->base;
    return RPC_OK;
}

int event_append(db *d, rpc_ctx *ctx, int64_t user_id, int64_t expression_id, const char *kind,
                 const char *payload)
{
    char uid[32], eid[32];
    const char *p[] = {db_fmt_i64(uid, user_id),
                       expression_id ? db_fmt_i64(eid, expression_id) : NULL, kind, payload};
    PGresult *r = db_query(d, ctx, "SELECT calc_event($1, $2, $3, $4::jsonb)", 4, p);
    if (!r)
        return db_failed(ctx);
    PQclear(r);
    return RPC_OK;
}

/* The plan as the parallel arrays calc_create_expression takes: one per column. */
enum { C_OP, C_LN, C_LV, C_RN, C_RV, C_PARENT, C_DELAY, C_TAIL, NCOLS };

static void add_operand(pgarray *node_col, pgarray *value_col, const Calc__V1__Operand *o)
{
    if (o->kind_case == CALC__V1__OPERAND__KIND_NODE) {
        pgarray_i64(node_col, o->node);
        pgarray_null(value_col);
    } else {
        pgarray_null(node_col);
        pgarray_f64(value_col, o->value);
    }
}

static void plan_arrays(const Calc__V1__CreateExpressionRequest *req, pgarray col[NCOLS])
{
    for (int c = 0; c < NCOLS; c++)
        pgarray_init(&col[c]);
    for (size_t i = 0; i < req->n_nodes; i++) {
        const Calc__V1__PlanNode *pn = req->nodes[i];
        pgarray_str(&col[C_OP], pn->op);
        add_operand(&col[C_LN], &col[C_LV], pn->left);
        add_operand(&col[C_RN], &col[C_RV], pn->right);
        pgarray_i64(&col[C_PARENT], pn->parent);
        pgarray_i64(&col[C_DELAY], pn->delay_ms);
        pgarray_i64(&col[C_TAIL], pn->tail_ms);
    }
}

static const db_stmt create_stmt = {
    "create_expression",
    "SELECT * FROM calc_create_expression($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,"
    " $13, $14, $15, $16)",
    16};

int h_create_expression(rpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
    const Calc__V1__CreateExpressionRequest *req = (const void *)m;
    db *d = rpc_thread_state(ctx);
    if (!req->req_uid[0] || !req->text[0])
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "req_uid and text are required");
    char err[128];
    if (plan_shape_check(req, err, sizeof err) != 0)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "%s", err);
    if (req->n_planned_delays != 0 && req->n_planned_delays != 4)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT,
                        "planned_delays must hold 4 delays (+ - * /) or none, not %zu",
                        req->n_planned_delays);
    pgarray col[NCOLS], delays;
    plan_arrays(req, col);
    pgarray_init(&delays);
    for (size_t i = 0; i < req->n_planned_delays; i++)
        pgarray_i64(&delays, req->planned_delays[i]);
    char uid[32], value[32], depth[32], cp[32], maxu[32];
    const char *p[16] = {db_fmt_i64(uid, req->user_id),
                         req->req_uid,
                         req->text,
                         db_fmt_f64(value, req->value),
                         db_fmt_i64(depth, req->depth),
                         db_fmt_i64(cp, req->critical_path_ms),
                         db_fmt_i64(maxu, req->max_unfinished)};
    for (int c = 0; c < NCOLS; c++)
        p[7 + c] = pgarray_text(&col[c]);
    p[7 + NCOLS] = req->n_planned_delays ? pgarray_text(&delays) : NULL;
    PGresult *r = db_call(d, ctx, &create_stmt, p);
    for (int c = 0; c < NCOLS; c++)
        pgarray_free(&col[c]);
    pgarray_free(&delays);
    if (!r)
        return db_failed(ctx);
    int rc;
    switch (db_i64(r, 0, 0)) {
    case 0:
    case 1: {
        Calc__V1__ExpressionReply *rep = rpc_alloc(ctx, sizeof *rep);
        calc__v1__expression_reply__init(rep);
        rep->expression = expr_from_row(ctx, r, 0, 2);
        rep->created = db_i64(r, 0, 0) == 0;
        rep->delays_checked = req->n_planned_delays > 0;
        /* A new plan always has leaves of two numbers: the dispatchers have work. (An existing
         * one that is still new may be a create whose reply was lost and which db_call
         * retried: wake them too, a wake-up too many costs one look.) */
        if (rep->expression->node_count > 0 &&
            (rep->created || !strcmp(rep->expression->status, "new")))
            ready_signal();
        /* created (and finished, for a lone number); a retried create wakes a look too many */
        evwake_signal(&rep->expression->user_id, 1);
        *resp = &rep->base;
        rc = RPC_OK;
        break;
    }
    case 2:
        rc = rpc_fail(ctx, RPC_ALREADY_EXISTS, "req_uid '%s' already names another expression",
                      req->req_uid);
        break;
    case 3:
        rc = rpc_fail(ctx, RPC_RESOURCE_EXHAUSTED,
                      "too many unfinished expressions (%lld, the limit is %d)",
                      (long long)db_i64(r, 0, 1), req->max_unfinished);
        break;
    case 5:
        rc = rpc_fail(ctx, RPC_FAILED_PRECONDITION,
                      "the operator delays changed since the plan was made: plan again");
        break;
    default:
        rc = rpc_fail(ctx, RPC_NOT_FOUND, "no user %lld", (long long)req->user_id);
        break;
    }
    PQclear(r);
    return rc;
}

static const db_stmt get_expression_stmt = {
    "get_expression", "SELECT " EXPR_COLS " FROM expressions WHERE id = $2 AND user_id = $1", 2};

int h_get_expression(rpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
    const Calc__V1__GetExpressionRequest *req = (const void *)m;
    db *d = rpc_thread_state(ctx);
    char uid[32], id[32];
    const char *p[] = {db_fmt_i64(uid, req->user_id), db_fmt_i64(id, req->id)};
    PGresult *r = db_call(d, ctx, &get_expression_stmt, p);
    if (!r)
        return db_failed(ctx);
    int rc = RPC_OK;
    /* Another user's expression is as absent as a missing one. */
    if (PQntuples(r) == 0)
        rc = rpc_fail(ctx, RPC_NOT_FOUND, "no expression %lld", (long long)req->id);
    else
        reply_expr(ctx, r, 0, resp);
    PQclear(r);
    return rc;
}

#define MAX_LOOKUPS 1000

static const db_stmt get_expressions_stmt = {
    "get_expressions", "SELECT " EXPR_COLS " FROM expressions WHERE id = ANY($1::bigint[])", 1};

/* The primary key finds the rows; a row whose (user, id) pair was not asked for is left out,
 * so a lookup never returns another user's expression. */
int h_get_expressions(rpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
    const Calc__V1__GetExpressionsRequest *req = (const void *)m;
    db *d = rpc_thread_state(ctx);
    if (req->n_ids != req->n_user_ids || req->n_ids > MAX_LOOKUPS)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT,
                        "%zu ids and %zu user_ids: one user each, at most %d", req->n_ids,
                        req->n_user_ids, MAX_LOOKUPS);
    pgarray ids;
    pgarray_init(&ids);
    pgarray_i64s(&ids, req->ids, req->n_ids);
    const char *p[] = {pgarray_text(&ids)};
    PGresult *r = db_call(d, ctx, &get_expressions_stmt, p);
    pgarray_free(&ids);
    if (!r)
        return db_failed(ctx);
    int n = PQntuples(r);
    Calc__V1__ExpressionsReply *rep = rpc_alloc(ctx, sizeof *rep);
    calc__v1__expressions_reply__init(rep);
    rep->expressions = rpc_alloc(ctx, (size_t)(n + 1) * sizeof *rep->expressions);
    for (int row = 0; row < n; row++) {
        int64_t id = db_i64(r, row, 0), user = db_i64(r, row, 1);
        for (size_t i = 0; i < req->n_ids; i++) {
            if (req->ids[i] == id && req->user_ids[i] == user) {
                rep->expressions[rep->n_expressions++] = expr_from_row(ctx, r, row, 0);
                break;
            }
        }
    }
    PQclear(r);
    *resp = &rep->base;
    return RPC_OK;
}

/* A plain range on (user_id, id DESC): the index gives the page in order. */
static const db_stmt list_expressions_stmt = {"list_expressions",
                                              "SELECT " EXPR_COLS " FROM expressions"
                                              " WHERE user_id = $1 AND id < $2"
                                              " ORDER BY id DESC LIMIT $3",
                                              3};

int h_list_expressions(rpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
    const Calc__V1__ListExpressionsRequest *req = (const void *)m;
    db *d = rpc_thread_state(ctx);
    int limit = req->limit > 0 && req->limit <= 1000 ? req->limit : 100;
    char uid[32], before[32], lim[32];
    const char *p[] = {db_fmt_i64(uid, req->user_id),
                       db_fmt_i64(before, req->before_id > 0 ? req->before_id : INT64_MAX),
                       db_fmt_i64(lim, limit + 1)};
    PGresult *r = db_call(d, ctx, &list_expressions_stmt, p);
    if (!r)
        return db_failed(ctx);
    int n = PQntuples(r);
    Calc__V1__ListExpressionsReply *rep = rpc_alloc(ctx, sizeof *rep);
    calc__v1__list_expressions_reply__init(rep);
    rep->n_expressions = (size_t)(n > limit ? limit : n);
    rep->expressions = rpc_alloc(ctx, (rep->n_expressions + 1) * sizeof *rep->expressions);
    for (size_t i = 0; i < rep->n_expressions; i++)
        rep->expressions[i] = expr_from_row(ctx, r, (int)i, 0);
    if (n > limit)
        rep->next_before_id = rep->expressions[limit - 1]->id;
    PQclear(r);
    *resp = &rep->base;
    return RPC_OK;
}

int h_cancel_expression(rpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
    const Calc__V1__GetExpressionRequest *req = (const void *)m;
    db *d = rpc_thread_state(ctx);
    int rc = db_begin(d, ctx);
    if (rc)
        return rc;
    char uid[32], id[32];
    const char *p[] = {db_fmt_i64(uid, req->user_id), db_fmt_i64(id, req->id)};
    /* The lock order of every writer: the expression, then its nodes. */
    PGresult *r = db_query(d, ctx,
                           "UPDATE expressions SET status = 'cancelled', finished_at = now()"
                           " WHERE id = $2 AND user_id = $1 AND status IN ('new', 'in_progress')"
                           " RETURNING " EXPR_COLS,
                           2, p);
    if (!r)
        goto fail;
    if (PQntuples(r) == 0) {
        PQclear(r);
        r = db_query(d, ctx, "SELECT status FROM expressions WHERE id = $2 AND user_id = $1", 2, p);
        if (!r)
            goto fail;
        if (PQntuples(r) == 0)
            rc = rpc_fail(ctx, RPC_NOT_FOUND, "no expression %lld", (long long)req->id);
        else
            rc = rpc_fail(ctx, RPC_FAILED_PRECONDITION, "expression %lld is already %s",
                          (long long)req->id, db_str(r, 0, 0));
        PQclear(r);
        db_rollback(d);
        return rc;
    }
    reply_expr(ctx, r, 0, resp);
    PQclear(r);
    r = db_query(
        d, ctx,
        "UPDATE nodes SET state = 'cancelled', finished_at = now() WHERE expression_id = $1"
        " AND state IN ('blocked', 'ready', 'queued', 'running')",
        1, (const char *[]){id});
    if (!r)
        goto fail;
    PQclear(r);
    if ((rc = event_append(d, ctx, req->user_id, req->id, "cancelled", "{}")))
        goto out;
    if ((rc = db_commit(d, ctx)) == RPC_OK)
        evwake_signal(&req->user_id, 1);
    return rc;
fail:
    rc = db_failed(ctx);
out:
    db_rollback(d);
    *resp = NULL;
    return rc;
}

#define NODE_COLS                                                                                  \
    "n.id, n.op, n.left_node, n.left_value, n.right_node, n.right_value, n.parent_id, n.state,"    \
    " n.result, n.error, n.delay_ms, n.agent, n.attempts"
enum { N_COLS = 13 };

/* The node in row, whose NODE_COLS start at column c. */
static Calc__V1__NodeView *node_from_row(rpc_ctx *ctx, const PGresult *r, int row, int c)
{
    Calc__V1__NodeView *v = rpc_alloc(ctx, sizeof *v);
    calc__v1__node_view__init(v);
    v->id = db_i64(r, row, c);
    v->op = rpc_strdup(ctx, db_str(r, row, c + 1));
    v->left_node = db_i64(r, row, c + 2);
    v->has_left_value = !db_null(r, row, c + 3);
    v->left_value = db_f64(r, row, c + 3);
    v->right_node = db_i64(r, row, c + 4);
    v->has_right_value = !db_null(r, row, c + 5);
    v->right_value = db_f64(r, row, c + 5);
    v->parent_id = db_i64(r, row, c + 6);
    v->state = rpc_strdup(ctx, db_str(r, row, c + 7));
    v->has_result = !db_null(r, row, c + 8);
    v->result = db_f64(r, row, c + 8);
    v->error = rpc_strdup(ctx, db_str(r, row, c + 9));
    v->delay_ms = (int32_t)db_i64(r, row, c + 10);
    v->agent = rpc_strdup(ctx, db_str(r, row, c + 11));
    v->attempts = (int32_t)db_i64(r, row, c + 12);
    return v;
}

/* One statement, so the expression and its nodes are one snapshot; the left join keeps the
 * expression of a lone number, which has no nodes (one row of NULL node columns). */
static const db_stmt get_nodes_stmt = {"get_nodes",
                                       "SELECT x.*, " NODE_COLS " FROM (SELECT " EXPR_COLS
                                       " FROM expressions WHERE id = $2 AND user_id = $1) x"
                                       " LEFT JOIN nodes n ON n.expression_id = x.id ORDER BY n.id",
                                       2};

int h_get_nodes(rpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
    const Calc__V1__GetExpressionRequest *req = (const void *)m;
    db *d = rpc_thread_state(ctx);
    char uid[32], id[32];
    const char *p[] = {db_fmt_i64(uid, req->user_id), db_fmt_i64(id, req->id)};
    PGresult *r = db_call(d, ctx, &get_nodes_stmt, p);
    if (!r)
        return db_failed(ctx);
    int n = PQntuples(r);
    /* Another user's expression is as absent as a missing one. */
    if (n == 0) {
        PQclear(r);
        return rpc_fail(ctx, RPC_NOT_FOUND, "no expression %lld", (long long)req->id);
    }
    Calc__V1__NodesReply *rep = rpc_alloc(ctx, sizeof *rep);
    calc__v1__nodes_reply__init(rep);
    rep->expression = expr_from_row(ctx, r, 0, 0);
    rep->nodes = rpc_alloc(ctx, (size_t)(n + 1) * sizeof *rep->nodes);
    int c = PQnfields(r) - N_COLS;
    for (int row = 0; row < n; row++)
        if (!db_null(r, row, c))
            rep->nodes[rep->n_nodes++] = node_from_row(ctx, r, row, c);
    PQclear(r);
    *resp = &rep->base;
    return RPC_OK;
}
