/*
 * GET /events (Server-Sent Events of the user's own events, streams.h) and
 * POST /api/v1/events/ticket (the short-lived credential a browser's EventSource puts in the URL,
 * since it cannot send a header).
 */
#include <errno.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api.h"
#include "auth.h"
#include "dba.h"
#include "methods.h"
#include "streams.h"

void route_events_ticket(http_req *r)
{
    char *t = auth_issue_ticket(r->user_id, (int)api_cfg.stream_ticket_ttl_s);
    http_json(r, 200,
              json_pack("{s:s, s:I, s:i}", "ticket", t, "expires_in",
                        (json_int_t)api_cfg.stream_ticket_ttl_s, "status", 200));
    free(t);
}

/* The user of the request's credential: a bearer access token, else ?ticket=. 0 once replied. */
static int64_t events_user(http_req *r)
{
    const char *h = http_header(r, "Authorization");
    const char *ticket = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "ticket");
    char err[128] = "";
    int64_t uid;
    if (h && strncasecmp(h, "Bearer ", 7) == 0) {
        if ((uid = http_authenticate(h + 7, err, sizeof err)) <= 0)
            http_error(r, 401, "invalid access token: %s", err);
    } else if (ticket) {
        if ((uid = auth_verify_ticket(ticket, err, sizeof err)) <= 0)
            http_error(r, 401, "invalid ticket: %s; get a new one from POST /api/v1/events/ticket",
                       err);
    } else {
        uid = 0;
        http_error(r, 401,
                   "an access token (Authorization: Bearer) or a ticket (?ticket= from POST "
                   "/api/v1/events/ticket) is required");
    }
    return uid > 0 ? uid : 0;
}

/* The position to resume after: Last-Event-ID (an EventSource reconnecting sends it), else
 * ?after=N; -1 for none (live events only). -2 once replied (malformed). */
static int64_t events_position(http_req *r)
{
    const char *name = "Last-Event-ID";
    const char *v = http_header(r, name);
    if (!v || !*v) {
        name = "after";
        v = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
    }
    if (!v)
        return -1;
    char *end = NULL;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (!*v || *end || errno || n < 0) {
        http_error(r, 400, "%s must be an event seq (0 or more)", name);
        return -2;
    }
    return n;
}

void route_events(http_req *r)
{
    if (!(r->user_id = events_user(r)))
        return;
    int64_t after = events_position(r);
    if (after == -2)
        return;
    /* The first look: the head, what retention deleted, the first page after the position. */
    Calc__V1__WatchPosition pos = CALC__V1__WATCH_POSITION__INIT;
    Calc__V1__WatchPosition *ptr = &pos;
    pos.user_id = r->user_id;
    pos.after_seq = after;
    pos.want_head = 1;
    Calc__V1__WatchEventsRequest req = CALC__V1__WATCH_EVENTS_REQUEST__INIT;
    req.n_positions = 1;
    req.positions = &ptr;
    req.limit = streams_page();
    Calc__V1__WatchEventsReply *rep = NULL;
    if (dba_call(r, DBA_WATCH_EVENTS, &req.base, &calc__v1__watch_events_reply__descriptor, &rep) !=
        RPC_OK)
        return;
    int64_t head = 0, purged = 0;
    for (size_t i = 0; i < rep->n_heads; i++) {
        head = rep->heads[i]->head_seq;
        purged = rep->heads[i]->purged_seq;
    }
    if (rep->n_heads == 0) {
        http_error(r, 401, "the credential names no user"); /* signed, yet no such user */
    } else if (after >= 0 && after < purged) {
        char msg[160];
        snprintf(msg, sizeof msg,
                 "events up to seq %lld were deleted: reload your state, then resume after seq "
                 "%lld",
                 (long long)purged, (long long)purged);
        http_json(r, 410,
                  json_pack("{s:s, s:I, s:i}", "error", msg, "reload_after", (json_int_t)purged,
                            "status", 410));
    } else if (after > head) {
        http_error(r, 400, "position %lld is past your last event (%lld)", (long long)after,
                   (long long)head);
    } else if (!streams_open(r, after, rep)) {
        http_error(r, 503, "the server is stopping; reconnect");
    }
    protobuf_c_message_free_unpacked(&rep->base, NULL);
}
