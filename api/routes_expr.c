#include <microhttpd.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api.h"
#include "cache.h"
#include "dba.h"
#include "log.h"
#include "mem.h"
#include "methods.h"
#include "metrics.h"
#include "reads.h"
#include "plan.h"
#include "timeutil.h"
#include "waiters.h"

#define REQ_UID_MAX 128

json_t *api_time(int64_t ms)
{
    if (ms <= 0)
        return json_null();
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    char s[32];
    strftime(s, sizeof s, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return json_string(s);
}

static const char *status_word(const char *status)
{
    if (!strcmp(status, "new"))
        return "New";
    if (!strcmp(status, "in_progress"))
        return "In Progress";
    if (!strcmp(status, "ok"))
        return "Ok";
    if (!strcmp(status, "error"))
        return "Error";
    return "Cancelled";
}

/* A value as the reference project writes it: 6, not 6.0, when it is a whole number. */
json_t *number_json(double v)
{
    /* The range check comes first: casting a larger double to an integer is undefined. */
    if (v > -9007199254740992.0 && v < 9007199254740992.0 && v == (double)(json_int_t)v)
        return json_integer((json_int_t)v);
    return json_real(v);
}

/* A time in ms since the epoch, or JSON null for 0 (not yet). */
static json_t *ms_or_null(int64_t ms)
{
    return ms > 0 ? json_integer((json_int_t)ms) : json_null();
}

/* The reference README's fields, then ours (the times again in ms: the page measures with them). */
json_t *expression_json(const Calc__V1__Expression *e)
{
    json_t *j = json_pack(
        "{s:I, s:I, s:s, s:s, s:o, s:s, s:s, s:o, s:o, s:o, s:i, s:i, s:i, s:I}", "expression_id",
        (json_int_t)e->id, "user_id", (json_int_t)e->user_id, "req_uid", e->req_uid,
        "expression_value", e->text, "result", e->has_result ? number_json(e->result) : json_null(),
        "status", status_word(e->status), "error_msg", e->error, "created_at",
        api_time(e->created_at_ms), "eval_started_at", api_time(e->started_at_ms),
        "eval_finished_at", api_time(e->finished_at_ms), "node_count", e->node_count, "nodes_done",
        e->nodes_done, "depth", e->depth, "critical_path_ms", (json_int_t)e->critical_path_ms);
    json_object_set_new(j, "created_at_ms", ms_or_null(e->created_at_ms));
    json_object_set_new(j, "eval_started_at_ms", ms_or_null(e->started_at_ms));
    json_object_set_new(j, "eval_finished_at_ms", ms_or_null(e->finished_at_ms));
    return j;
}

static void reply_expression(http_req *r, const Calc__V1__Expression *e)
{
    http_json(r, 200, json_pack("{s:o, s:i}", "expression", expression_json(e), "status", 200));
}

/*
 * The delays last read from dbagent. A create plans with them instead of asking dbagent first
 * (a round trip on every POST), and sends them along: dbagent creates nothing when they are not
 * the delays in force (another API instance changed them), and the create plans again with the
 * delays read anew. Only while dbagent says it checks them (an older one does not).
 */
static struct {
    pthread_mutex_t mu;
    int known;   /* d was read from dbagent, and not changed here since */
    int checked; /* the last create's reply said its delays were checked */
    plan_durations d;
    unsigned long long reads, refused; /* for /metrics */
} kept_delays = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* 1 with *d the delays kept, when a create may plan with them. */
static int delays_kept(plan_durations *d)
{
    pthread_mutex_lock(&kept_delays.mu);
    int ok = kept_delays.known && kept_delays.checked;
    if (ok)
        *d = kept_delays.d;
    pthread_mutex_unlock(&kept_delays.mu);
    return ok;
}

static void delays_checked(int checked)
{
    pthread_mutex_lock(&kept_delays.mu);
    kept_delays.checked = checked;
    pthread_mutex_unlock(&kept_delays.mu);
}

void expression_durations_changed(void)
{
    pthread_mutex_lock(&kept_delays.mu);
    kept_delays.known = 0;
    pthread_mutex_unlock(&kept_delays.mu);
}

int expression_durations(http_req *r, plan_durations *d)
{
    Calc__V1__Empty req = CALC__V1__EMPTY__INIT;
    Calc__V1__DurationsReply *rep = NULL;
    if (dba_call(r, DBA_GET_DURATIONS, &req.base, &calc__v1__durations_reply__descriptor, &rep) !=
        RPC_OK)
        return -1;
    memset(d, 0, sizeof *d);
    for (size_t i = 0; i < rep->n_durations; i++) {
        const char *ops = "+-*/", *at = strchr(ops, rep->durations[i]->op[0]);
        if (at && rep->durations[i]->op[0])
            d->ms[at - ops] = (uint32_t)rep->durations[i]->ms;
    }
    protobuf_c_message_free_unpacked(&rep->base, NULL);
    pthread_mutex_lock(&kept_delays.mu);
    kept_delays.d = *d;
    kept_delays.known = 1;
    kept_delays.reads++;
    pthread_mutex_unlock(&kept_delays.mu);
    return 0;
}

void expression_metrics(buf *b)
{
    pthread_mutex_lock(&kept_delays.mu);
    unsigned long long reads = kept_delays.reads, refused = kept_delays.refused;
    pthread_mutex_unlock(&kept_delays.mu);
    metrics_family(b, "calc_delays_reads_total", "counter",
                   "Reads of the operator delays from dbagent to plan with (creates plan with the "
                   "delays read last while dbagent checks them).");
    metrics_u64(b, "calc_delays_reads_total", NULL, reads);
    metrics_family(b, "calc_plans_refused_total", "counter",
                   "Creates refused by dbagent because the operator delays had changed since "
                   "they were read; each was planned again with the delays read anew.");
    metrics_u64(b, "calc_plans_refused_total", NULL, refused);
}

static void fill_operand(Calc__V1__Operand *o, const plan_operand *po)
{
    calc__v1__operand__init(o);
    if (po->is_node) {
        o->kind_case = CALC__V1__OPERAND__KIND_NODE;
        o->node = po->node;
    } else {
        o->kind_case = CALC__V1__OPERAND__KIND_VALUE;
        o->value = po->value;
    }
}

int expression_plan(http_req *r, const char *text, int source_order, int kept, plan_durations *dur,
                    plan **out)
{
    *out = NULL;
    if (!(kept && delays_kept(dur)) && expression_durations(r, dur) < 0)
        return -1;
    plan_limits lim = {.max_text = (size_t)api_cfg.max_text,
                       .max_nodes = (size_t)api_cfg.max_nodes,
                       .max_depth = (size_t)api_cfg.max_depth};
    plan_error perr;
    if (plan_build(text, strlen(text), &lim, dur, source_order, out, &perr) != PLAN_OK) {
        http_json(r, 400,
                  json_pack("{s:s, s:I, s:i}", "error", perr.message, "position",
                            (json_int_t)perr.position, "status", 400));
        return -1;
    }
    return 0;
}

/* Plans and creates once; 1 when dbagent refused the plan's delays as stale (nothing replied),
 * else 0 (replied). */
static int create_once(http_req *r, const char *text, const char *req_uid, int source_order,
                       int kept, int last)
{
    plan_durations dur;
    plan *p = NULL;
    if (expression_plan(r, text, source_order, kept, &dur, &p) < 0)
        return 0;
    size_t n = p->n_nodes;
    Calc__V1__PlanNode *nodes = xcalloc(n + 1, sizeof *nodes);
    Calc__V1__PlanNode **ptrs = xcalloc(n + 1, sizeof *ptrs);
    Calc__V1__Operand *operands = xcalloc(2 * n + 1, sizeof *operands);
    static const char *op_text[PLAN_NOPS] = {"+", "-", "*", "/"};
    for (size_t i = 0; i < n; i++) {
        const plan_node *pn = &p->nodes[i];
        calc__v1__plan_node__init(&nodes[i]);
        nodes[i].op = (char *)op_text[pn->op];
        fill_operand(&operands[2 * i], &pn->left);
        fill_operand(&operands[2 * i + 1], &pn->right);
        nodes[i].left = &operands[2 * i];
        nodes[i].right = &operands[2 * i + 1];
        nodes[i].parent = pn->parent;
        nodes[i].tail_ms = pn->tail_ms;
        nodes[i].delay_ms = (int32_t)dur.ms[pn->op];
        ptrs[i] = &nodes[i];
    }
    int32_t planned[PLAN_NOPS];
    for (int op = 0; op < PLAN_NOPS; op++)
        planned[op] = (int32_t)dur.ms[op];
    Calc__V1__CreateExpressionRequest req = CALC__V1__CREATE_EXPRESSION_REQUEST__INIT;
    req.user_id = r->user_id;
    req.req_uid = (char *)req_uid;
    req.text = (char *)text;
    req.n_nodes = n;
    req.nodes = ptrs;
    req.value = p->value;
    req.depth = (int32_t)p->depth;
    req.critical_path_ms = p->critical_path_ms;
    req.max_unfinished = (int32_t)api_cfg.max_unfinished;
    req.n_planned_delays = PLAN_NOPS;
    req.planned_delays = planned;
    Calc__V1__ExpressionReply *rep = NULL;
    char err[256];
    int stale = 0;
    int rc = dba_call_quiet("POST /api/v1/expression", DBA_CREATE_EXPRESSION, &req.base,
                            &calc__v1__expression_reply__descriptor, &rep, err, sizeof err);
    if (rc == RPC_OK) {
        delays_checked(rep->delays_checked);
        if (rep->created)
            log_info("user=%lld expression=%lld accepted: %zu nodes, critical path %lld ms",
                     (long long)r->user_id, (long long)rep->expression->id, n,
                     (long long)p->critical_path_ms);
        reply_expression(r, rep->expression);
        protobuf_c_message_free_unpacked(&rep->base, NULL);
    } else if (rc == RPC_FAILED_PRECONDITION && !last) {
        stale = 1;
        pthread_mutex_lock(&kept_delays.mu);
        kept_delays.refused++;
        pthread_mutex_unlock(&kept_delays.mu);
    } else {
        dba_reply_failure(r, DBA_CREATE_EXPRESSION, rc, err);
    }
    free(operands);
    free(ptrs);
    free(nodes);
    plan_free(p);
    return stale;
}

/* With the delays kept first; after a refusal, with the delays read anew (a refusal then means
 * they changed again meanwhile: a 409 after the third). */
static void create(http_req *r, const char *text, const char *req_uid, int source_order)
{
    for (int attempt = 0; attempt < 3; attempt++)
        if (!create_once(r, text, req_uid, source_order, attempt == 0, attempt == 2))
            return;
}

int expression_fields(http_req *r, json_t *body, const char **text, int *source_order)
{
    json_t *expr = json_object_get(body, "expression");
    json_t *so = json_object_get(body, "source_order");
    if (!json_is_string(expr))
        http_error(r, 400, "field 'expression' is required and must be a string");
    else if (so && !json_is_boolean(so))
        http_error(r, 400, "field 'source_order' must be true or false");
    else if (memchr(json_string_value(expr), '\0', json_string_length(expr)))
        http_error(r, 400, "field 'expression' must not contain NUL characters");
    else {
        *text = json_string_value(expr);
        *source_order = so && json_is_true(so);
        return 0;
    }
    return -1;
}

void route_expression_create(http_req *r)
{
    json_t *body = http_body_object(r);
    if (!body)
        return;
    json_t *uid = json_object_get(body, "req_uid");
    const char *text;
    int source_order;
    char generated[33];
    if (expression_fields(r, body, &text, &source_order) < 0) {
        /* replied */
    } else if (uid && !json_is_null(uid) &&
               (!json_is_string(uid) || json_string_length(uid) == 0 ||
                json_string_length(uid) > REQ_UID_MAX)) {
        http_error(r, 400, "field 'req_uid' must be a string of 1 to %d characters", REQ_UID_MAX);
    } else {
        const char *req_uid = json_string_value(uid);
        if (!req_uid) {
            unsigned char raw[16];
            randombytes_buf(raw, sizeof raw);
            sodium_bin2hex(generated, sizeof generated, raw, sizeof raw);
            req_uid = generated;
        }
        create(r, text, req_uid, source_order);
    }
    json_decref(body);
}

void route_expression_list(http_req *r)
{
    Calc__V1__ListExpressionsRequest req = CALC__V1__LIST_EXPRESSIONS_REQUEST__INIT;
    req.user_id = r->user_id;
    const char *limit = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "limit");
    const char *cursor = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "cursor");
    char *end = NULL;
    if (limit) {
        long v = strtol(limit, &end, 10);
        if (*end || v < 1 || v > 1000) {
            http_error(r, 400, "query parameter 'limit' must be 1..1000");
            return;
        }
        req.limit = (int32_t)v;
    }
    if (cursor) {
        long long v = strtoll(cursor, &end, 10);
        if (*end || v < 1) {
            http_error(r, 400, "query parameter 'cursor' must be a positive integer");
            return;
        }
        req.before_id = v;
    }
    Calc__V1__ListExpressionsReply *rep = NULL;
    if (dba_call(r, DBA_LIST_EXPRESSIONS, &req.base, &calc__v1__list_expressions_reply__descriptor,
                 &rep) != RPC_OK)
        return;
    json_t *list = json_array();
    for (size_t i = 0; i < rep->n_expressions; i++)
        json_array_append_new(list, expression_json(rep->expressions[i]));
    http_json(r, 200,
              json_pack("{s:o, s:o, s:i}", "expressions", list, "next_cursor",
                        rep->next_before_id ? json_integer(rep->next_before_id) : json_null(),
                        "status", 200));
    protobuf_c_message_free_unpacked(&rep->base, NULL);
}

int expression_is_final(const char *status)
{
    return !strcmp(status, "ok") || !strcmp(status, "error") || !strcmp(status, "cancelled");
}

/* Replies with e, and remembers the reply when it is final: it never changes again (until
 * retention may delete it). */
void route_expression_reply(http_req *r, const Calc__V1__Expression *e)
{
    reply_expression(r, e);
    if (expression_is_final(e->status))
        cache_put(r->user_id, r->path_id, r->reply, e->retained_for_ms);
}

void route_expression_get(http_req *r)
{
    /* ?wait=MS: a reply that is not final waits up to MS for the expression to be (waiters.h). */
    const char *wait = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "wait");
    long wait_ms = 0;
    if (wait) {
        char *end = NULL;
        wait_ms = strtol(wait, &end, 10);
        if (!*wait || *end || wait_ms < 0 || wait_ms > WAITERS_MAX_WAIT_MS) {
            http_error(r, 400, "query parameter 'wait' must be 0..%d (milliseconds)",
                       WAITERS_MAX_WAIT_MS);
            return;
        }
    }
    /* A finished expression never changes: its reply is served from the cache. */
    char *cached = cache_get(r->user_id, r->path_id);
    if (cached) {
        http_text(r, 200, cached, NULL);
        return;
    }
    /* Otherwise the lookup goes with the other requests' of the moment (reads.h). */
    const Calc__V1__Expression *e = NULL;
    reads_batch *batch = NULL;
    char err[256];
    int rc = reads_get(r->user_id, r->path_id, &e, &batch, err, sizeof err);
    if (rc != RPC_OK) {
        dba_reply_failure(r, DBA_GET_EXPRESSIONS, rc, err);
        return;
    }
    route_expression_reply(r, e);
    if (wait_ms > 0 && !expression_is_final(e->status))
        r->wait_until_ms = deadline_after_ms(wait_ms);
    reads_release(batch);
}

void route_expression_cancel(http_req *r)
{
    Calc__V1__GetExpressionRequest req = CALC__V1__GET_EXPRESSION_REQUEST__INIT;
    req.user_id = r->user_id;
    req.id = r->path_id;
    Calc__V1__ExpressionReply *rep = NULL;
    if (dba_call(r, DBA_CANCEL_EXPRESSION, &req.base, &calc__v1__expression_reply__descriptor,
                 &rep) != RPC_OK)
        return;
    route_expression_reply(r, rep->expression);
    protobuf_c_message_free_unpacked(&rep->base, NULL);
}
