/*
 * libFuzzer target for calc-api's request handling: the real HTTP layer (libmicrohttpd, api/http.c)
 * with calc-api's own route table and handlers, fed each input as the raw bytes of a request on a
 * loopback connection. The input reaches the request line, the headers (cookies, Content-Length,
 * Authorization), the path matching and the JSON bodies of every route.
 *
 * Nothing answers at the dbagent address, so a handler that gets as far as calling dbagent gets
 * UNAVAILABLE, which must become a 503, never a crash. The two bytes "@T" in an input stand for a
 * valid access token (made at start), so the routes behind a login are reached too. Every reply
 * must be a well-formed HTTP status line with a status the API may send: a 5xx other than 503 (the
 * data service unavailable) is a defect.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "api.h"
#include "auth.h"
#include "dba.h"
#include "http.h"
#include "log.h"
#include "rpc.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REPLY_MAX  (256 * 1024)
#define WAIT_MS    1000
#define TOKEN_MARK "@T"

/* A broken promise is a crash for libFuzzer to report, with the input that caused it. */
#define REQUIRE(cond, ...)                                                                         \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_http: broken: %s: ", #cond);                                     \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            __builtin_trap();                                                                      \
        }                                                                                          \
    } while (0)

static struct sockaddr_in server;
static char *token; /* a valid access token of user 1 */

/* A loopback port nobody listens on now: bound, read back, closed. */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0) {
        perror("fuzz_http: free port");
        exit(1);
    }
    close(fd);
    return ntohs(a.sin_port);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    /* The defaults of every setting, but dbagent at a port where nothing listens, no admin (it
     * would wait for dbagent) and few threads. */
    setenv("DBAGENT_ADDR", "127.0.0.1:9", 1);
    setenv("DBAGENT_TOKEN", "fuzz-dbagent-token-0123456789", 1);
    setenv("DBAGENT_TIMEOUT_MS", "100", 1); /* the least: each call to it waits this long */
    setenv("AUTH_SECRET", "fuzz-secret-0123456789-0123456789-0123456789", 1);
    setenv("ADMIN_LOGIN", "", 1);
    setenv("API_THREADS", "2", 1);
    setenv("AUTH_ADDRESS_BUDGET", "1000000", 1); /* every input comes from one address */
    setenv("LOG_LEVEL", "error", 1);             /* every malformed request would log a line */
    log_init("api");
    char err[512];
    if (cfg_load(api_config_table, api_config_n, err, sizeof err) < 0 ||
        auth_init(api_cfg.secret, api_cfg.pepper, (int)api_cfg.access_ttl_s,
                  (int)api_cfg.max_hashing) < 0) {
        fprintf(stderr, "fuzz_http: configuration: %s\n", err);
        exit(1);
    }
    http_authenticate = auth_verify_access;
    token = auth_issue_access(1);
    rpc_global_init();
    if (dba_open(api_cfg.dba_addr, api_cfg.dba_token, &api_cfg.dba_tls, err, sizeof err) < 0) {
        fprintf(stderr, "fuzz_http: dbagent client: %s\n", err);
        exit(1);
    }
    int started = -1;
    for (int attempt = 0; attempt < 5 && started < 0; attempt++) {
        int port = free_port();
        http_limits limits = {.per_address = (int)api_cfg.per_address_connections,
                              .read_timeout_ms = api_cfg.read_timeout_s * 1000};
        started = http_start("127.0.0.1", port, (int)api_cfg.threads, &limits, api_routes,
                             api_n_routes, err, sizeof err);
        server = (struct sockaddr_in){.sin_family = AF_INET,
                                      .sin_port = htons((uint16_t)port),
                                      .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    }
    if (started < 0) {
        fprintf(stderr, "fuzz_http: %s\n", err);
        exit(1);
    }
    return 0;
}

/* The input with each TOKEN_MARK replaced by the token; *len gets its length (free()). */
static char *with_token(const uint8_t *data, size_t size, size_t *len)
{
    size_t tl = strlen(token), cap = size + 1;
    for (size_t i = 0; i + 1 < size; i++)
        if (!memcmp(data + i, TOKEN_MARK, 2))
            cap += tl;
    char *out = malloc(cap);
    size_t o = 0;
    for (size_t i = 0; i < size;) {
        if (i + 1 < size && !memcmp(data + i, TOKEN_MARK, 2)) {
            memcpy(out + o, token, tl);
            o += tl;
            i += 2;
        } else {
            out[o++] = (char)data[i++];
        }
    }
    *len = o;
    return out;
}

/* Reads until the server closes or the first reply's status line and headers are in; returns
 * the bytes read (0: closed, or nothing within WAIT_MS: libmicrohttpd keeps a connection whose
 * request never ended until its idle timeout, which is no defect of the handlers fuzzed here). */
static size_t read_reply(int fd, char *buf, size_t cap)
{
    size_t got = 0;
    while (got < cap - 1) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int rc = poll(&p, 1, WAIT_MS);
        if (rc == 0)
            break;
        if (rc < 0 && errno == EINTR)
            continue;
        ssize_t n = recv(fd, buf + got, cap - 1 - got, 0);
        if (n <= 0)
            break;
        got += (size_t)n;
        buf[got] = 0;
        if (strstr(buf, "\r\n\r\n"))
            break;
    }
    buf[got] = 0;
    return got;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t len;
    char *req = with_token(data, size, &len);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0 && connect(fd, (struct sockaddr *)&server, sizeof server) == 0, "connect: %s",
            strerror(errno));
    /* The whole request, then the end of it: a request that is not complete gets the server's
     * answer to a closed connection (nothing, or a 400). */
    for (size_t off = 0; off < len;) {
        ssize_t n = send(fd, req + off, len - off, MSG_NOSIGNAL);
        if (n <= 0)
            break; /* the server answered early (a 413) and closed */
        off += (size_t)n;
    }
    shutdown(fd, SHUT_WR);
    static char reply[REPLY_MAX];
    size_t got = read_reply(fd, reply, sizeof reply);
    close(fd);
    free(req);
    if (got == 0)
        return 0; /* nothing that reads as a request: libmicrohttpd closed the connection */
    int status = 0;
    REQUIRE(sscanf(reply, "HTTP/1.%*1[01] %3d ", &status) == 1, "not a status line: %.80s", reply);
    REQUIRE(status >= 100 && status < 600, "status %d", status);
    REQUIRE(status < 500 || status == 503 || status == 505,
            "status %d: only 503 (dbagent unreachable) and 505 (an HTTP version libmicrohttpd does "
            "not speak) may be 5xx",
            status);
    return 0;
}
