#include "http.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "csrf.h"
#include "holdback.h"
#include "log.h"
#include "mem.h"
#include "metrics.h"
#include "readguard.h"
#include "route.h"
#include "streams.h"
#include "timeutil.h"
#include "waiters.h"

int64_t (*http_authenticate)(const char *token, char *err, size_t errlen);

static struct MHD_Daemon *daemon_handle;
static atomic_int active_requests; /* begun and not yet completed: drained on stop */
static atomic_int stopping;        /* replies then close their connection */
static const http_route *routes;
static size_t n_routes;

/* ---- metrics: counts by route and status, latency histogram by route ---- */

static const int tracked_status[] = {200, 400, 401, 403, 404, 405, 409, 413, 429, 500, 503};
#define N_STATUS (sizeof tracked_status / sizeof tracked_status[0] + 1)
static const double latency_buckets[] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5};
#define N_BUCKETS  (sizeof latency_buckets / sizeof latency_buckets[0])
#define MAX_ROUTES 64

static struct {
    atomic_ullong by_status[N_STATUS];
    atomic_ullong buckets[N_BUCKETS];
    atomic_ullong count;
    atomic_ullong sum_us;
} route_stats[MAX_ROUTES + 1]; /* the last slot: unmatched paths */

static void record(size_t route, int status, int64_t us)
{
    size_t s = N_STATUS - 1;
    for (size_t i = 0; i < N_STATUS - 1; i++)
        if (tracked_status[i] == status)
            s = i;
    atomic_fetch_add(&route_stats[route].by_status[s], 1);
    for (size_t b = 0; b < N_BUCKETS; b++)
        if ((double)us / 1e6 <= latency_buckets[b])
            atomic_fetch_add(&route_stats[route].buckets[b], 1);
    atomic_fetch_add(&route_stats[route].count, 1);
    atomic_fetch_add(&route_stats[route].sum_us, (unsigned long long)us);
}

void http_metrics(buf *b)
{
    char labels[160];
    metrics_family(b, "calc_http_requests_total", "counter", "HTTP requests by route and status.");
    for (size_t r = 0; r <= n_routes; r++) {
        const char *name = r < n_routes ? routes[r].name : "unmatched";
        for (size_t s = 0; s < N_STATUS; s++) {
            unsigned long long v = atomic_load(&route_stats[r].by_status[s]);
            if (!v)
                continue;
            if (s < N_STATUS - 1)
                snprintf(labels, sizeof labels, "route=\"%s\",status=\"%d\"", name,
                         tracked_status[s]);
            else
                snprintf(labels, sizeof labels, "route=\"%s\",status=\"other\"", name);
            metrics_u64(b, "calc_http_requests_total", labels, v);
        }
    }
    metrics_family(b, "calc_http_request_duration_seconds", "histogram",
                   "HTTP request latency by route.");
    for (size_t r = 0; r <= n_routes; r++) {
        const char *name = r < n_routes ? routes[r].name : "unmatched";
        unsigned long long count = atomic_load(&route_stats[r].count), counts[N_BUCKETS];
        if (!count)
            continue;
        for (size_t i = 0; i < N_BUCKETS; i++)
            counts[i] = atomic_load(&route_stats[r].buckets[i]);
        snprintf(labels, sizeof labels, "route=\"%s\"", name);
        metrics_histogram(b, "calc_http_request_duration_seconds", labels, latency_buckets, counts,
                          N_BUCKETS, count, (double)atomic_load(&route_stats[r].sum_us) / 1e6);
    }
}

/* ---- replies ---- */

void http_json(http_req *r, int status, json_t *json)
{
    free(r->reply);
    r->status = status;
    r->reply = json_dumps(json, JSON_COMPACT);
    json_decref(json);
}

void http_text(http_req *r, int status, char *text, const char *content_type)
{
    free(r->reply);
    r->status = status;
    r->reply = text;
    r->content_type = content_type;
}

/* The length of the well-formed UTF-8 sequence at s (no overlong form, no surrogate, at most
 * U+10FFFF: what a JSON string may hold), 0 when there is none. */
static size_t utf8_len(const unsigned char *s)
{
    unsigned c = s[0];
    size_t n;
    unsigned min;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        n = 2, min = 0x80;
    else if (c >= 0xe0 && c <= 0xef)
        n = 3, min = 0x800;
    else if (c >= 0xf0 && c <= 0xf4)
        n = 4, min = 0x10000;
    else
        return 0;
    unsigned cp = c & (0x3f >> (n - 1));
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0; /* also stops at the terminating NUL */
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

/* Messages quote what a client sent (a header, a path): each control character and each byte
 * that is not well-formed UTF-8 becomes '?', so the message always makes a JSON string. */
static void printable_text(char *s)
{
    for (unsigned char *p = (unsigned char *)s; *p;) {
        size_t n = utf8_len(p);
        if (n == 0 || (n == 1 && (*p < 0x20 || *p == 0x7f))) {
            *p++ = '?';
            continue;
        }
        p += n;
    }
}

void http_error(http_req *r, int status, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    printable_text(msg);
    http_json(r, status, json_pack("{s:s, s:i}", "error", msg, "status", status));
}

void http_add_header(http_req *r, const char *name, const char *value)
{
    if (r->n_extra >= HTTP_MAX_EXTRA_HEADERS)
        abort(); /* a handler's fixed set outgrew the cap: a programming error */
    r->extra[r->n_extra][0] = name;
    r->extra[r->n_extra][1] = value;
    r->n_extra++;
}

const char *http_header(http_req *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

const char *http_cookie(http_req *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_COOKIE_KIND, name);
}

int http_same_site(http_req *r)
{
    char why[200];
    if (csrf_same_origin(http_header(r, "Origin"), http_header(r, "Host"),
                         http_header(r, "Sec-Fetch-Site"), why, sizeof why))
        return 1;
    http_error(r, 403, "%s: the refresh-token cookie is not used on another site's behalf", why);
    return 0;
}

json_t *http_body_object(http_req *r)
{
    if (r->body.len == 0) {
        http_error(r, 400, "the request body must be a JSON object");
        return NULL;
    }
    json_error_t e;
    json_t *j = json_loadb(r->body.data, r->body.len, JSON_REJECT_DUPLICATES, &e);
    if (!j) {
        http_error(r, 400, "malformed JSON at line %d, column %d: %s", e.line, e.column, e.text);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        http_error(r, 400, "the request body must be a JSON object");
        return NULL;
    }
    return j;
}

/* ---- routing ---- */

/* The Allow header of each route's path: every method served on that pattern. Made once at
 * start, read by every thread. */
static char allow_of[MAX_ROUTES][64];

static void build_allow(void)
{
    for (size_t i = 0; i < n_routes; i++)
        route_allow(routes, n_routes, i, allow_of[i], sizeof allow_of[i]);
}

/* Runs the request; returns the index of the matched route (n_routes when none). */
static size_t dispatch(http_req *r)
{
    size_t known;
    size_t found = route_find(routes, n_routes, r->method, r->path, &r->path_id, &known);
    if (found == n_routes) {
        if (known == n_routes) {
            http_error(r, 404, "no route %s", r->path);
            return found;
        }
        r->allow = allow_of[known];
        http_error(r, 405, "method %s is not allowed on %s; allowed: %s", r->method, r->path,
                   r->allow);
        return found;
    }
    const http_route *rt = &routes[found];
    if (r->too_large) {
        http_error(r, 413, "the request body exceeds %d bytes", HTTP_MAX_BODY);
        return found;
    }
    if (rt->auth) {
        const char *h = http_header(r, "Authorization");
        if (!h || strncasecmp(h, "Bearer ", 7) != 0) {
            http_error(r, 401, "missing bearer token in the Authorization header");
            return found;
        }
        char err[128] = "";
        r->user_id = http_authenticate(h + 7, err, sizeof err);
        if (r->user_id <= 0) {
            http_error(r, 401, "invalid access token: %s", err);
            return found;
        }
    }
    rt->handler(r);
    if (!r->reply && !r->stream)
        http_error(r, 500, "the handler gave no reply");
    return found;
}

static enum MHD_Result send_reply(http_req *r)
{
    if (r->stream) {
        struct MHD_Response *resp = streams_response(r->stream);
        enum MHD_Result ret = MHD_queue_response(r->conn, MHD_HTTP_OK, resp);
        MHD_destroy_response(resp);
        return ret;
    }
    const char *body = r->reply ? r->reply : "";
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
    MHD_add_response_header(resp, "Content-Type",
                            r->content_type ? r->content_type : "application/json");
    /* No reply is ever to be read as another type than the one it names. */
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    for (int i = 0; i < r->n_extra; i++)
        MHD_add_response_header(resp, r->extra[i][0], r->extra[i][1]);
    if (r->set_cookie)
        MHD_add_response_header(resp, "Set-Cookie", r->set_cookie);
    if (r->allow)
        MHD_add_response_header(resp, "Allow", r->allow);
    if (r->retry_after_s > 0 || r->status == 503) {
        char after[16];
        snprintf(after, sizeof after, "%d", r->retry_after_s > 0 ? r->retry_after_s : 1);
        MHD_add_response_header(resp, "Retry-After", after);
    }
    if (atomic_load(&stopping))
        MHD_add_response_header(resp, "Connection", "close");
    enum MHD_Result ret = MHD_queue_response(r->conn, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* The client's address and the connection's read deadline, into r. */
static void client_of(struct MHD_Connection *conn, http_req *r)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = ci ? ci->client_addr : NULL;
    snprintf(r->address, sizeof r->address, "unknown");
    if (sa && sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, r->address,
                  sizeof r->address);
    else if (sa && sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, r->address,
                  sizeof r->address);
    ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    r->guard = ci ? ci->socket_context : NULL;
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    (void)cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        *socket_context = ci ? readguard_open(ci->connect_fd) : NULL;
    } else {
        readguard_close(*socket_context);
        *socket_context = NULL;
    }
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    (void)cls;
    (void)version;
    http_req *r = *con_cls;
    if (!r) {
        r = xcalloc(1, sizeof *r);
        r->conn = conn;
        r->method = method;
        r->path = url;
        r->start_us = time_monotonic_us();
        atomic_fetch_add(&active_requests, 1);
        buf_init(&r->body, HTTP_MAX_BODY);
        client_of(conn, r);
        *con_cls = r;
        /* A declared length over the cap is answered now, before any of the body is read: a
         * reply queued on the first call means libmicrohttpd sends no "100 Continue" to a
         * client that waits for one, reads no body, and closes the connection after the
         * reply. */
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
        if (!cl || strtoull(cl, NULL, 10) <= HTTP_MAX_BODY)
            return MHD_YES;
        r->too_large = 1;
    } else if (*upload_data_size) {
        if (!r->too_large && buf_add(&r->body, upload_data, *upload_data_size) < 0)
            r->too_large = 1;
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (r->held) /* resumed: its time is up */
        return send_reply(r);
    readguard_read(r->guard);
    size_t route = dispatch(r);
    record(route, r->status, time_monotonic_us() - r->start_us);
    if (r->wait_until_ms > 0) {
        /* Set first: once suspended, another thread may resume it and run this again. */
        r->held = 1;
        if (waiters_add(r, r->wait_until_ms) == 0)
            return MHD_YES;
        r->held = 0; /* not waiting: the reply it has goes now */
    }
    if (r->hold_ms > 0 && holdback_add(conn, r->hold_ms) == 0) {
        r->held = 1;
        return MHD_YES;
    }
    return send_reply(r);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    (void)toe;
    http_req *r = *con_cls;
    if (!r)
        return;
    atomic_fetch_sub(&active_requests, 1);
    readguard_replied(r->guard);
    buf_free(&r->body);
    free(r->reply);
    free(r->set_cookie);
    free(r);
    *con_cls = NULL;
}

static void on_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && msg[n - 1] == '\n')
        msg[--n] = '\0';
    log_warn("http: %s", msg);
}

int http_start(const char *host, int port, int threads, const http_limits *limits,
               const http_route *rt, size_t n, char *err, size_t errlen)
{
    routes = rt;
    n_routes = n < MAX_ROUTES ? n : MAX_ROUTES;
    build_allow();
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        snprintf(err, errlen, "API_HOST '%s' is not an IPv4 address", host);
        return -1;
    }
    /* Before the first connection: each gets its deadline from the timeout set here. */
    if (readguard_start(limits->read_timeout_ms) < 0) {
        snprintf(err, errlen, "cannot start the request read deadline thread");
        return -1;
    }
    if (holdback_start() < 0) {
        readguard_stop();
        snprintf(err, errlen, "cannot start the held replies thread");
        return -1;
    }
    daemon_handle = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG | MHD_USE_ITC |
            MHD_ALLOW_SUSPEND_RESUME,
        (uint16_t)port, NULL, NULL, on_request, NULL, MHD_OPTION_EXTERNAL_LOGGER, on_log, NULL,
        MHD_OPTION_SOCK_ADDR, &addr, MHD_OPTION_THREAD_POOL_SIZE, (unsigned)threads,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)HTTP_CONNECTION_TIMEOUT_S, MHD_OPTION_CONNECTION_LIMIT, (unsigned)4096,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)limits->per_address,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, NULL, MHD_OPTION_END);
    if (!daemon_handle) {
        holdback_stop();
        readguard_stop();
        snprintf(err, errlen, "cannot listen on %s:%d (address in use?)", host, port);
        return -1;
    }
    return 0;
}

void http_stop(void)
{
    if (!daemon_handle)
        return;
    /* Stop accepting first, then let the requests in flight finish (bounded), then close. */
    atomic_store(&stopping, 1);
    MHD_socket listen_fd = MHD_quiesce_daemon(daemon_handle);
    if (listen_fd != MHD_INVALID_SOCKET)
        close(listen_fd);
    waiters_stop(); /* the waiting requests get the replies they have now */
    streams_stop(); /* the streams send what they hold and end */
    /* Keep-alive clients may still send on their connections: each gets its reply with
     * "Connection: close", so the count reaches zero. */
    for (int i = 0; i < 100 && atomic_load(&active_requests) > 0; i++)
        time_sleep_ms(100, NULL);
    holdback_stop(); /* libmicrohttpd must not stop with a connection suspended */
    MHD_stop_daemon(daemon_handle);
    daemon_handle = NULL;
    readguard_stop();
}
