/* The route table of calc-api: method, path, handler, whether a token is needed, metric name. */
#include "api.h"

const http_route api_routes[] = {
    {"POST", "/api/v1/register", route_register, 0, "register"},
    {"POST", "/api/v1/login", route_login, 0, "login"},
    {"POST", "/api/v1/refresh", route_refresh, 0, "refresh"},
    {"POST", "/api/v1/logout", route_logout, 0, "logout"},
    {"POST", "/api/v1/password", route_password, 1, "password"},
    {"POST", "/expression", route_expression_create, 1, "expression_create"},
    {"GET", "/expression", route_expression_list, 1, "expression_list"},
    {"GET", "/expression/" HTTP_ID_SUFFIX, route_expression_get, 1, "expression_get"},
    {"DELETE", "/expression/" HTTP_ID_SUFFIX, route_expression_cancel, 1, "expression_cancel"},
    {"GET", "/duration", route_duration_get, 1, "duration_get"},
    {"POST", "/duration", route_duration_set, 1, "duration_set"},
    {"GET", "/agent", route_agents, 1, "agent_list"},
    {"POST", "/api/v1/events/ticket", route_events_ticket, 1, "events_ticket"},
    {"GET", "/events", route_events, 0, "events"}, /* a ticket or a bearer token: its own check */
    {"GET", "/healthz", route_healthz, 0, "healthz"},
    {"GET", "/readyz", route_readyz, 0, "readyz"},
    {"GET", "/metrics", route_metrics, 0, "metrics"},
    {"GET", "/openapi.json", route_openapi, 0, "openapi"},
    {"GET", "/api/v1/me", route_me, 1, "me"},
    {"POST", "/api/v1/plan", route_plan_preview, 1, "plan_preview"},
    {"GET", "/expression/" HTTP_ID_SUFFIX "/nodes", route_expression_nodes, 1, "expression_nodes"},
    {"GET", "/", route_ui_page, 0, "ui_page"},
    {"GET", "/ui/" HTTP_REST_SUFFIX, route_ui_asset, 0, "ui_asset"},
};

const size_t api_n_routes = sizeof api_routes / sizeof api_routes[0];
