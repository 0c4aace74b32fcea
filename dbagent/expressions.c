#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "db.h"
#include "handlers.h"
#include "mem.h"

#define EXPR_COLS                                                                                  \
    "id, user_id, req_uid, text, status, result, error, node_count, nodes_done, depth,"            \
    " critical_path_ms, to_ms(created_at), to_ms(started_at), to_ms(finished_at)"

static Calc__V1__Expression *expr_from_row(rpc_ctx *ctx, const PGresult *r, int row)
{
    Calc__V1__Expression *e = rpc_alloc(ctx, sizeof *e);
    calc__v1__expression__init(e);
    e->id = db_i64(r, row, 0);
    e->user_id = db_i64(r, row, 1);
    e->req_uid = rpc_strdup(ctx, db_str(r, row, 2));
    e->text = rpc_strdup(ctx, db_str(r, row, 3));
    e->status = rpc_strdup(ctx, db_str(r, row, 4));
    e->has_result = !db_null(r, row, 5);
    e->result = db_f64(r, row, 5);
    e->error = rpc_strdup(ctx, db_str(r, row, 6));
    e->node_count = (int32_t)db_i64(r, row, 7);
    e->nodes_done = (int32_t)db_i64(r, row, 8);
    e->depth = (int32_t)db_i64(r, row, 9);
    e->critical_path_ms = db_i64(r, row, 10);
    e->created_at_ms = db_i64(r, row, 11);
    e->started_at_ms = db_i64(r, row, 12);
    e->finished_at_ms = db_i64(r, row, 13);
    return e;
}

static int reply_expr(rpc_ctx *ctx, const PGresult *r, int created, ProtobufCMessage **resp)
{
    Calc__V1__ExpressionReply *rep = rpc_alloc(ctx, sizeof *rep);
    calc__v1__expression_reply__init(rep);
    rep->expression = expr_from_row(ctx, r, 0);
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
    PGresult *r = db_query(d, ctx,
                           "WITH s AS (UPDATE users SET event_seq = event_seq + 1 WHERE id = $1"
                           " RETURNING event_seq)"
                           " INSERT INTO events (user_id, seq, expression_id, kind, payload)"
                           " SELECT $1, event_seq, $2, $3, $4::jsonb FROM s",
                           4, p);
    if (!r)
        return db_failed(ctx);
    PQclear(r);
    return RPC_OK;
}

static int valid_op(const char *op)
{
    return op && op[0] && !op[1] && strchr("+-*/", op[0]);
}

/* Checks the plan's shape: indices in range, children before parents, one parent each. */
static int check_plan(rpc_ctx *ctx, const Calc__V1__CreateExpressionRequest *req)
{
    size_t n = req->n_nodes;
    if (n > 100000)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "too many nodes: %zu", n);
    for (size_t i = 0; i < n; i++) {
        const Calc__V1__PlanNode *pn = req->nodes[i];
        if (!valid_op(pn->op))
            return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "node %zu: bad operator", i);
        const Calc__V1__Operand *ops[2] = {pn->left, pn->right};
        for (int s = 0; s < 2; s++) {
            if (!ops[s] || ops[s]->kind_case == CALC__V1__OPERAND__KIND__NOT_SET)
                return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "node %zu: missing operand", i);
            if (ops[s]->kind_case == CALC__V1__OPERAND__KIND_NODE &&
                (ops[s]->node < 0 || (size_t)ops[s]->node >= i ||
                 req->nodes[ops[s]->node]->parent != (int32_t)i))
                return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "node %zu: bad child index", i);
            if (ops[s]->kind_case == CALC__V1__OPERAND__KIND_VALUE && !isfinite(ops[s]->value))
                return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "node %zu: non-finite literal", i);
        }
        if (pn->delay_ms < 0 || pn->delay_ms > 65535)
            return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "node %zu: delay out of range", i);
        int root = i + 1 == n;
        if (root ? pn->parent != -1 : (pn->parent <= (int32_t)i || (size_t)pn->parent >= n))
            return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "node %zu: bad parent index", i);
    }
    return RPC_OK;
}

/* Array literals for unnest(): one per column. */
enum {
    C_ID,
    C_OP,
    C_LN,
    C_LV,
    C_RN,
    C_RV,
    C_PARENT,
    C_SIDE,
    C_PENDING,
    C_STATE,
    C_DELAY,
    C_TAIL,
    NCOLS
};

static void add_operand(buf *node_col, buf *value_col, const Calc__V1__Operand *o,
                        const int64_t *ids, int first)
{
    const char *sep = first ? "" : ",";
    if (o->kind_case == CALC__V1__OPERAND__KIND_NODE) {
        buf_printf(node_col, "%s%lld", sep, (long long)ids[o->node]);
        buf_printf(value_col, "%sNULL", sep);
    } else {
        buf_printf(node_col, "%sNULL", sep);
        buf_printf(value_col, "%s%.17g", sep, o->value);
    }
}

static int insert_nodes(db *d, rpc_ctx *ctx, const Calc__V1__CreateExpressionRequest *req,
                        int64_t expr_id, int *any_ready)
{
    size_t n = req->n_nodes;
    char nbuf[32], eid[32];
    const char *p0[] = {db_fmt_i64(nbuf, (int64_t)n)};
    PGresult *r = db_query(d, ctx,
                           "SELECT nextval('nodes_id_seq') FROM generate_series(1, $1::int)"
                           " ORDER BY 1",
                           1, p0);
    if (!r)
        return db_failed(ctx);
    int64_t *ids = xmalloc(n * sizeof *ids);
    for (size_t i = 0; i < n; i++)
        ids[i] = db_i64(r, (int)i, 0);
    PQclear(r);

    buf col[NCOLS];
    for (int c = 0; c < NCOLS; c++) {
        buf_init(&col[c], SIZE_MAX);
        buf_add(&col[c], "{", 1);
    }
    *any_ready = 0;
    for (size_t i = 0; i < n; i++) {
        const Calc__V1__PlanNode *pn = req->nodes[i];
        const char *sep = i ? "," : "";
        int pending = (pn->left->kind_case == CALC__V1__OPERAND__KIND_NODE) +
                      (pn->right->kind_case == CALC__V1__OPERAND__KIND_NODE);
        *any_ready |= pending == 0;
        buf_printf(&col[C_ID], "%s%lld", sep, (long long)ids[i]);
        buf_printf(&col[C_OP], "%s\"%s\"", sep, pn->op);
        add_operand(&col[C_LN], &col[C_LV], pn->left, ids, i == 0);
        add_operand(&col[C_RN], &col[C_RV], pn->right, ids, i == 0);
        if (pn->parent < 0) {
            buf_printf(&col[C_PARENT], "%sNULL", sep);
            buf_printf(&col[C_SIDE], "%sNULL", sep);
        } else {
            const Calc__V1__PlanNode *par = req->nodes[pn->parent];
            int side = !(par->left->kind_case == CALC__V1__OPERAND__KIND_NODE &&
                         par->left->node == (int32_t)i);
            buf_printf(&col[C_PARENT], "%s%lld", sep, (long long)ids[pn->parent]);
            buf_printf(&col[C_SIDE], "%s%d", sep, side);
        }
        buf_printf(&col[C_PENDING], "%s%d", sep, pending);
        buf_printf(&col[C_STATE], "%s%s", sep, pending ? "blocked" : "ready");
        buf_printf(&col[C_DELAY], "%s%d", sep, pn->delay_ms);
        buf_printf(&col[C_TAIL], "%s%lld", sep, (long long)pn->tail_ms);
    }
    const char *p[NCOLS + 1];
    for (int c = 0; c < NCOLS; c++) {
        buf_add(&col[c], "}", 1);
        p[c] = col[c].data;
    }
    p[NCOLS] = db_fmt_i64(eid, expr_id);
    r = db_query(d, ctx,
                 "INSERT INTO nodes (id, expression_id, op, left_node, left_value, right_node,"
                 " right_value, parent_id, parent_side, pending, state, delay_ms, tail_ms,"
                 " ready_at)"
                 " SELECT u.id, $13, u.op, u.ln, u.lv, u.rn, u.rv, u.parent, u.side, u.pending,"
                 " u.state, u.delay, u.tail, CASE WHEN u.state = 'ready' THEN now() END"
                 " FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::float8[],"
                 " $5::bigint[], $6::float8[], $7::bigint[], $8::smallint[], $9::smallint[],"
                 " $10::text[], $11::int[], $12::bigint[])"
                 " AS u(id, op, ln, lv, rn, rv, parent, side, pending, state, delay, tail)",
                 NCOLS + 1, p);
    for (int c = 0; c < NCOLS; c++)
        buf_free(&col[c]);
    free(ids);
    if (!r)
        return db_failed(ctx);
    PQclear(r);
    return RPC_OK;
}

int h_create_expression(rpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
    const Calc__V1__CreateExpressionRequest *req = (const void *)m;
    db *d = rpc_thread_state(ctx);
    if (!req->req_uid[0] || !req->text[0])
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "req_uid and text are required");
    int rc = check_plan(ctx, req);
    if (rc)
        return rc;
    if ((rc = db_begin(d, ctx)))
        return rc;
    char uid[32];
    db_fmt_i64(uid, req->user_id);
    /* The user's row lock serialises this user's creations: one expression per req_uid. */
    const char *p1[] = {uid};
    PGresult *r = db_query(d, ctx, "SELECT 1 FROM users WHERE id = $1 FOR UPDATE", 1, p1);
    if (!r)
        goto fail;
    int found = PQntuples(r);
    PQclear(r);
    if (!found) {
        rc = rpc_fail(ctx, RPC_NOT_FOUND, "no user %lld", (long long)req->user_id);
        goto out;
    }
    const char *p2[] = {uid, req->req_uid};
    r = db_query(
        d, ctx, "SELECT " EXPR_COLS " FROM expressions WHERE user_id = $1 AND req_uid = $2", 2, p2);
    if (!r)
        goto fail;
    if (PQntuples(r) > 0) {
        if (strcmp(db_str(r, 0, 3), req->text) != 0)
            rc = rpc_fail(ctx, RPC_ALREADY_EXISTS, "req_uid '%s' already names another expression",
                          req->req_uid);
        else
            rc = reply_expr(ctx, r, 0, resp);
        PQclear(r);
        goto out;
    }
    PQclear(r);
    if (req->max_unfinished > 0) {
        r = db_query(d, ctx,
                     "SELECT count(*) FROM expressions WHERE user_id = $1"
                     " AND status IN ('new', 'in_progress')",
                     1, p1);
        if (!r)
            goto fail;
        int64_t unfinished = db_i64(r, 0, 0);
        PQclear(r);
        if (unfinished >= req->max_unfinished) {
            rc = rpc_fail(ctx, RPC_RESOURCE_EXHAUSTED,
                          "too many unfinished expressions (%lld, the limit is %d)",
                          (long long)unfinished, req->max_unfinished);
            goto out;
        }
    }
    char nn[32], depth[32], cp[32], value[32];
    int lone = req->n_nodes == 0;
    const char *p3[] = {uid,
                        req->req_uid,
                        req->text,
                        lone ? "ok" : "new",
                        lone ? db_fmt_f64(value, req->value) : NULL,
                        db_fmt_i64(nn, (int64_t)req->n_nodes),
                        db_fmt_i64(depth, req->depth),
                        db_fmt_i64(cp, req->critical_path_ms)};
    r = db_query(d, ctx,
                 "INSERT INTO expressions (user_id, req_uid, text, status, result, node_count,"
                 " depth, critical_path_ms, started_at, finished_at)"
                 " VALUES ($1, $2, $3, $4, $5, $6, $7, $8,"
                 " CASE WHEN $4 = 'ok' THEN now() END, CASE WHEN $4 = 'ok' THEN now() END)"
                 " RETURNING " EXPR_COLS,
                 8, p3);
    if (!r)
        goto fail;
    reply_expr(ctx, r, 1, resp);
    PQclear(r);
    int64_t eid = ((Calc__V1__ExpressionReply *)*resp)->expression->id;
    int any_ready = 0;
    if (!lone && (rc = insert_nodes(d, ctx, req, eid, &any_ready)))
        goto out;
    if ((rc = event_append(d, ctx, req->user_id, eid, lone ? "finished" : "created", "{}")))
        goto out;
    if (any_ready) {
        r = db_query(d, ctx, "NOTIFY calc_ready", 0, NULL);
        if (!r)
            goto fail;
        PQclear(r);
    }
    return db_commit(d, ctx);
fail:
    rc = db_failed(ctx);
out:
    db_rollback(d);
    if (rc == RPC_OK)
        return RPC_OK;
    *resp = NULL;
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
        rep->expressions[i] = expr_from_row(ctx, r, (int)i);
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
    /* The lock order of every writer: expression, then its nodes, then the user (the event). */
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
    return db_commit(d, ctx);
fail:
    rc = db_failed(ctx);
out:
    db_rollback(d);
    *resp = NULL;
    return rc;
}
