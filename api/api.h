/* api: the configuration and the route handlers of calc-api. */
#ifndef CALC_API_H
#define CALC_API_H

#include <stddef.h>
#include <stdint.h>

#include "calc.pb-c.h"
#include "config.h"
#include "http.h"
#include "rpc_tls.h"
#include "mq_opts.h"
#include "plan.h"

typedef struct api_config {
    rpc_tls dba_tls;
    const char *host, *dba_addr, *dba_token, *amqp_url, *secret, *pepper, *admin_login,
        *admin_password, *amqp_queue_type, *amqp_tls_ca, *amqp_tls_cert, *amqp_tls_key,
        *metrics_token;
    int64_t port, threads, access_ttl_s, refresh_ttl_s, max_hashing, heartbeat_timeout_ms,
        queued_timeout_ms, unpublished_timeout_ms, monitor_interval_ms, dispatch_ahead,
        retry_ttl_ms, max_text, max_nodes, max_depth, max_unfinished, dba_timeout_ms, wait_poll_ms,
        refresh_max_age_s, refresh_grace_ms, cookie_secure, metrics_cache_ms, auth_budget,
        auth_window_s, per_address_connections, read_timeout_s, stream_keepalive_ms,
        stream_buffer_bytes, stream_lifetime_s, stream_ticket_ttl_s, stream_watch_wait_ms;
    mq_opts mq; /* AMQP_* checked at start: the brokers, TLS files and queue type */
} api_config;

extern api_config api_cfg;

/* config.c: every setting of calc-api, filling api_cfg when loaded (common/config.h). */
extern const cfg_entry api_config_table[];
extern const size_t api_config_n;

/* routes.c: every route calc-api serves, in matching order. */
extern const http_route api_routes[];
extern const size_t api_n_routes;

/* routes_auth.c */
void route_register(http_req *r);
void route_login(http_req *r);
void route_refresh(http_req *r);
void route_logout(http_req *r);
void route_password(http_req *r);
/* GET /api/v1/me: the caller's id, login and whether an admin (the page shows what it may do). */
void route_me(http_req *r);
/* routes_expr.c */
void route_expression_create(http_req *r);
void route_expression_list(http_req *r);
/* The reply of GET /expression/{id} for e (cached once final); waiters.c replies with it too. */
void route_expression_reply(http_req *r, const Calc__V1__Expression *e);
/* 1 when an expression's status (dbagent's word) is final: ok, error or cancelled. */
int expression_is_final(const char *status);
void route_expression_get(http_req *r);
void route_expression_cancel(http_req *r);
/* An expression as its routes show it (the reference README's fields, then ours); new. */
json_t *expression_json(const Calc__V1__Expression *e);
/* A value as the reference project writes it: 6, not 6.0, when it is a whole number; new. */
json_t *number_json(double v);
/* Reads "expression" and "source_order" of a request body: 0, or -1 after a 400 naming the
 * field. *text lives as long as body. */
int expression_fields(http_req *r, json_t *body, const char **text, int *source_order);
/* The operator delays in force now, read from dbagent into *d (and kept for expression_plan): 0,
 * or -1 after replying with dbagent's failure. */
int expression_durations(http_req *r, plan_durations *d);
/* Forgets the delays kept: they were just changed. */
void expression_durations_changed(void);
/* calc_delays_reads_total, calc_plans_refused_total. */
void expression_metrics(buf *b);
/* Plans text (into *dur the delays used): 0 with *out the plan (plan_free it), or -1 after
 * replying (a 400 with the 1-based position of a syntax error, or dbagent's failure). With kept,
 * under the delays last read when dbagent checks a create's delays (so a plan made with stale
 * ones is refused); else under the delays in force now. */
int expression_plan(http_req *r, const char *text, int source_order, int kept, plan_durations *dur,
                    plan **out);
/* routes_dag.c */
void route_plan_preview(http_req *r);
void route_expression_nodes(http_req *r);
/* routes_ui.c */
void route_ui_page(http_req *r);
void route_ui_asset(http_req *r);
/* routes_cluster.c */
void route_duration_get(http_req *r);
void route_duration_set(http_req *r);
void route_agents(http_req *r);
void route_healthz(http_req *r);
void route_readyz(http_req *r);
void route_openapi(http_req *r);
/* routes_events.c */
void route_events(http_req *r);
void route_events_ticket(http_req *r);
/* routes_metrics.c */
void route_metrics(http_req *r);

/* api/openapi.json, embedded at build time. */
extern const char openapi_json[];

/* "2024-04-19T19:27:03Z", or JSON null for 0. */
json_t *api_time(int64_t ms);

#endif
