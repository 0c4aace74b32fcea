/*
 * http: the HTTP layer over libmicrohttpd: request bodies with a cap (413 before reading
 * more), a route table with 404 and 405 + Allow, bearer authentication, and JSON replies.
 */
#ifndef CALC_HTTP_H
#define CALC_HTTP_H

#include <jansson.h>
#include <stdint.h>

#include "buf.h"

#define HTTP_MAX_BODY (64 * 1024)
/* An idle connection is closed after this long (seconds). */
#define HTTP_CONNECTION_TIMEOUT_S 60
#define HTTP_ADDRESS_MAX          64 /* the text of a client address, NUL included */
#define HTTP_MAX_EXTRA_HEADERS    6  /* headers a handler may add to its reply */

/* What one client may hold: connections from one address at once, and the time to send a whole
 * request (see readguard.h). */
typedef struct http_limits {
    int per_address;
    int64_t read_timeout_ms;
} http_limits;

typedef struct http_req {
    struct MHD_Connection *conn;
    const char *method;
    const char *path;
    char address[HTTP_ADDRESS_MAX]; /* the client's, as text */
    struct readguard *guard;        /* the connection's read deadline */
    buf body;
    int too_large;
    int64_t user_id; /* set for routes that need a login */
    int64_t path_id; /* the {id} of "/expression/{id}" */
    /* the reply */
    int status;
    char *reply;      /* JSON text, owned */
    char *set_cookie; /* owned */
    const char *allow;
    const char *content_type; /* NULL: application/json */
    int retry_after_s;        /* > 0: sent as Retry-After (a 503 gets 1 anyway) */
    const char *extra[HTTP_MAX_EXTRA_HEADERS][2]; /* name, value: see http_add_header */
    int n_extra;
    int hold_ms; /* > 0: the reply goes this long later (see holdback.h) */
    int held;
    int64_t wait_until_ms; /* > 0: the reply waits (monotonic deadline) for a change (waiters.h) */
    struct stream *stream; /* set: the reply is this event stream (streams.h), not reply */
    int64_t start_us;
} http_req;

typedef void (*http_handler)(http_req *r);

typedef struct http_route {
    const char *method;
    const char *path; /* exact, with HTTP_ID_SUFFIX for a numeric id, or ending in
                         HTTP_REST_SUFFIX (see route.h) */
    http_handler handler;
    int auth;         /* 1: needs a valid access token */
    const char *name; /* for metrics */
} http_route;

#define HTTP_ID_SUFFIX "{id}"
/* A pattern ending in this matches any path that starts with the text before it and goes on. */
#define HTTP_REST_SUFFIX "*"

/* Starts serving on host:port with threads threads. Returns 0, or -1 with err set. */
int http_start(const char *host, int port, int threads, const http_limits *limits,
               const http_route *routes, size_t n, char *err, size_t errlen);
/* Stops accepting, finishes the requests in flight, stops the threads. */
void http_stop(void);

/* Replies: json is stolen. */
void http_json(http_req *r, int status, json_t *json);
/* {"error": msg, "status": status} */
void http_error(http_req *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A non-JSON reply; text is stolen. */
void http_text(http_req *r, int status, char *text, const char *content_type);
/* Adds a header to the reply. name and value are kept, not copied: they must outlive the request
 * (string literals, or data built at start). Past HTTP_MAX_EXTRA_HEADERS it aborts: a fixed
 * number of handlers add fixed sets. */
void http_add_header(http_req *r, const char *name, const char *value);
/* Reads a header or a cookie; NULL when absent. Valid during the request. */
const char *http_header(http_req *r, const char *name);
const char *http_cookie(http_req *r, const char *name);
/* For a route that a cookie authenticates: 1 when the request comes from this site or from no
 * browser page at all (csrf.h); otherwise replies 403 and returns 0. */
int http_same_site(http_req *r);
/* Parses the body as a JSON object; on failure replies 400 and returns NULL. */
json_t *http_body_object(http_req *r);

/* Prometheus text of request counts and latencies, appended to b. */
void http_metrics(buf *b);

/* Set by main: the function that turns a bearer token into a user id (0 on failure). */
extern int64_t (*http_authenticate)(const char *token, char *err, size_t errlen);

#endif
