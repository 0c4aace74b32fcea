#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "dba.h"
#include "dispatcher.h"
#include "mem.h"
#include "methods.h"

static void reply_durations(http_req *r, const Calc__V1__DurationsReply *rep)
{
    json_t *list = json_array();
    for (size_t i = 0; i < rep->n_durations; i++) {
        const Calc__V1__Duration *d = rep->durations[i];
        json_array_append_new(list, json_pack("{s:s, s:i, s:o, s:o}", "operation_name", d->op,
                                              "operation_duration_ms", d->ms, "created_at",
                                              api_time(d->created_at_ms), "updated_at",
                                              api_time(d->updated_at_ms)));
    }
    http_json(r, 200, json_pack("{s:o, s:i}", "operation_durations", list, "status", 200));
}

void route_duration_get(http_req *r)
{
    Calc__V1__Empty req = CALC__V1__EMPTY__INIT;
    Calc__V1__DurationsReply *rep = NULL;
    if (dba_call(r, DBA_GET_DURATIONS, &req.base, &calc__v1__durations_reply__descriptor, &rep) !=
        RPC_OK)
        return;
    reply_durations(r, rep);
    protobuf_c_message_free_unpacked(&rep->base, NULL);
}

static int is_admin(http_req *r)
{
    Calc__V1__FindUserRequest req = CALC__V1__FIND_USER_REQUEST__INIT;
    req.id = r->user_id;
    Calc__V1__UserReply *rep = NULL;
    if (dba_call(r, DBA_FIND_USER, &req.base, &calc__v1__user_reply__descriptor, &rep) != RPC_OK)
        return -1;
    int admin = rep->user->is_admin;
    protobuf_c_message_free_unpacked(&rep->base, NULL);
    return admin;
}

void route_duration_set(http_req *r)
{
    json_t *body = http_body_object(r);
    if (!body)
        return;
    Calc__V1__Duration items[4], *ptrs[4];
    size_t n = 0;
    const char *key;
    json_t *value;
    json_object_foreach(body, key, value)
    {
        if (strlen(key) != 1 || !strchr("+-*/", key[0])) {
            http_error(r, 400, "unknown operator '%s': use +, -, * or /", key);
            goto out;
        }
        if (!json_is_integer(value) || json_integer_value(value) < 0 ||
            json_integer_value(value) > 65535) {
            http_error(r, 400, "field '%s' must be an integer number of ms from 0 to 65535", key);
            goto out;
        }
        calc__v1__duration__init(&items[n]);
        items[n].op = (char *)key;
        items[n].ms = (int32_t)json_integer_value(value);
        ptrs[n] = &items[n];
        n++;
    }
    if (n == 0) {
        http_error(r, 400, "give at least one of '+', '-', '*', '/' with a delay in ms");
        goto out;
    }
    int admin = is_admin(r);
    if (admin < 0)
        goto out;
    if (!admin) {
        http_error(r, 403, "only an admin may change operation durations");
        goto out;
    }
    Calc__V1__SetDurationsRequest req = CALC__V1__SET_DURATIONS_REQUEST__INIT;
    req.user_id = r->user_id;
    req.n_durations = n;
    req.durations = ptrs;
    Calc__V1__DurationsReply *rep = NULL;
    int rc =
        dba_call(r, DBA_SET_DURATIONS, &req.base, &calc__v1__durations_reply__descriptor, &rep);
    /* Changed, or perhaps (a failure after the commit): creates here read them anew. */
    expression_durations_changed();
    if (rc == RPC_OK) {
        reply_durations(r, rep);
        protobuf_c_message_free_unpacked(&rep->base, NULL);
    }
out:
    json_decref(body);
}

static Calc__V1__ListAgentsReply *list_agents(http_req *r)
{
    Calc__V1__ListAgentsRequest req = CALC__V1__LIST_AGENTS_REQUEST__INIT;
    req.alive_within_ms = (int32_t)api_cfg.heartbeat_timeout_ms;
    Calc__V1__ListAgentsReply *rep = NULL;
    if (dba_call(r, DBA_LIST_AGENTS, &req.base, &calc__v1__list_agents_reply__descriptor, &rep) !=
        RPC_OK)
        return NULL;
    return rep;
}

void route_agents(http_req *r)
{
    Calc__V1__ListAgentsReply *rep = list_agents(r);
    if (!rep)
        return;
    json_t *list = json_array();
    for (size_t i = 0; i < rep->n_agents; i++) {
        const Calc__V1__Agent *a = rep->agents[i];
        json_array_append_new(list,
                              json_pack("{s:s, s:o, s:o, s:b, s:i, s:i}", "agent_unique_name",
                                        a->name, "created_at", api_time(a->created_at_ms),
                                        "last_heartbeat_at", api_time(a->last_heartbeat_at_ms),
                                        "alive", a->alive, "workers", a->workers, "busy", a->busy));
    }
    http_json(r, 200, json_pack("{s:o, s:i}", "agents", list, "status", 200));
    protobuf_c_message_free_unpacked(&rep->base, NULL);
}

void route_healthz(http_req *r)
{
    http_json(r, 200, json_pack("{s:s, s:i}", "state", "alive", "status", 200));
}

void route_readyz(http_req *r)
{
    Calc__V1__Empty req = CALC__V1__EMPTY__INIT;
    Calc__V1__DurationsReply *rep = NULL;
    char err[256];
    int db_ok = rpc_call(dba, DBA_GET_DURATIONS, &req.base, &calc__v1__durations_reply__descriptor,
                         (ProtobufCMessage **)&rep, 2000, err, sizeof err) == RPC_OK;
    if (rep)
        protobuf_c_message_free_unpacked(&rep->base, NULL);
    int mq_ok = dispatcher_connected();
    int ready = db_ok && mq_ok;
    http_json(r, ready ? 200 : 503,
              json_pack("{s:s, s:s, s:s, s:i}", "state", ready ? "ready" : "not ready", "dbagent",
                        db_ok ? "ok" : "unreachable", "rabbitmq", mq_ok ? "ok" : "unreachable",
                        "status", ready ? 200 : 503));
}

void route_openapi(http_req *r)
{
    http_text(r, 200, xstrdup(openapi_json), "application/json");
}
