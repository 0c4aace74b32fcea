/*
 * bench-dbagent: the cost of the agents' hot path, ClaimNode + CompleteNode, against a running
 * calc-dbagent. Run by hand (see README.md), never from ctest: the machine is shared and noisy.
 *
 * Setup (not timed): one user, expressions of 64 independent leaves each (a balanced tree, so a
 * completion also fills a parent and sometimes makes it ready, as in real use), and TakeReady
 * to move the leaves to queued with their epochs. Then each client thread runs claim+complete
 * pairs on its share of the leaves.
 *
 * Each client has a connection of its own, as each agent has (--shared-channel: one connection
 * for all, as the benchmark had until the figures of "calls that share a transaction").
 *
 * Usage: bench-dbagent [--clients N] [--pairs N] [--users N] [--shared-channel]
 *   defaults: 16 clients, 8000 pairs, 1 user (the worst case: every completion appends an event
 *   to the same user's sequence, which serialises them).
 * Environment: DBAGENT_ADDR (127.0.0.1:50051), DBAGENT_TOKEN (required).
 */
#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "calc.pb-c.h"
#include "mem.h"
#include "methods.h"
#include "rpc.h"
#include "timeutil.h"

#define LEAVES     64 /* per expression */
#define TIMEOUT_MS 10000

/* The clients' connections: client i uses conns[i % n_conns]. */
static rpc_client **conns;
static int n_conns;

typedef struct bench_job {
    rpc_client *client;
    const Calc__V1__TakenNode *nodes;
    size_t n;
    double *lat_us; /* one per pair, filled by the thread */
    int failures;
} bench_job;

static void die(const char *what, const char *err)
{
    fprintf(stderr, "bench-dbagent: %s: %s\n", what, err);
    exit(1);
}

/* CPU seconds used so far by the processes of this machine that are PostgreSQL, calc-dbagent and
 * this benchmark: the cost per pair, which the machine's other load disturbs less than the
 * throughput. Valid for a phase in which no process of theirs exits. Then the whole machine's. */
enum { CPU_PG, CPU_DBAGENT, CPU_BENCH, CPU_BUSY, CPU_IDLE, CPU_STEAL, CPU_KINDS };

/* The whole machine from /proc/stat, in seconds: busy (any process, ours included), idle (with
 * I/O wait) and stolen by the hypervisor for other virtual machines. */
static void machine_snapshot(double out[CPU_KINDS])
{
    unsigned long long v[8] = {0};
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return;
    int got = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                     &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (got != 8)
        return;
    double tick = (double)sysconf(_SC_CLK_TCK);
    out[CPU_BUSY] = (double)(v[0] + v[1] + v[2] + v[5] + v[6]) / tick;
    out[CPU_IDLE] = (double)(v[3] + v[4]) / tick;
    out[CPU_STEAL] = (double)v[7] / tick;
}

static void cpu_snapshot(double out[CPU_KINDS])
{
    memset(out, 0, CPU_KINDS * sizeof *out);
    DIR *dir = opendir("/proc");
    if (!dir)
        return;
    long tick = sysconf(_SC_CLK_TCK);
    struct dirent *de;
    while ((de = readdir(dir))) {
        char path[300], line[1024];
        snprintf(path, sizeof path, "/proc/%s/stat", de->d_name);
        FILE *f = de->d_name[0] >= '1' && de->d_name[0] <= '9' ? fopen(path, "r") : NULL;
        if (!f)
            continue;
        size_t n = fread(line, 1, sizeof line - 1, f);
        fclose(f);
        line[n] = '\0';
        char *open = strchr(line, '('), *close = strrchr(line, ')');
        if (!open || !close)
            continue;
        *close = '\0';
        int kind = !strcmp(open + 1, "postgres")       ? CPU_PG
                   : !strcmp(open + 1, "calc-dbagent") ? CPU_DBAGENT
                   : atoi(de->d_name) == getpid()      ? CPU_BENCH
                                                       : -1;
        unsigned long utime = 0, stime = 0;
        /* After the name: state, then fields 4..13, then utime (14) and stime (15). */
        if (kind >= 0 && sscanf(close + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
                                &utime, &stime) == 2)
            out[kind] += (double)(utime + stime) / (double)tick;
    }
    closedir(dir);
    machine_snapshot(out);
}

/* Where the machine's time went between two snapshots, as shares of it. */
static void print_machine(const double a[CPU_KINDS], const double b[CPU_KINDS])
{
    double ours = 0, all = 0;
    for (int k = CPU_PG; k <= CPU_BENCH; k++)
        ours += b[k] - a[k];
    for (int k = CPU_BUSY; k <= CPU_STEAL; k++)
        all += b[k] - a[k];
    if (all <= 0)
        return;
    /* Per-process and machine counters are read at slightly different moments: ours can come out
     * above the machine's busy time, and the shares would then add up to more than 100 %. */
    double busy = b[CPU_BUSY] - a[CPU_BUSY];
    if (ours > busy)
        ours = busy;
    printf("            machine: these processes %.0f%%, other processes %.0f%%, idle %.0f%%,"
           " stolen %.0f%%\n",
           100 * ours / all, 100 * (busy - ours) / all, 100 * (b[CPU_IDLE] - a[CPU_IDLE]) / all,
           100 * (b[CPU_STEAL] - a[CPU_STEAL]) / all);
}

static int64_t make_user(rpc_client *c)
{
    char login[64], err[256];
    snprintf(login, sizeof login, "bench-%ld-%ld-%d", (long)time(NULL), (long)getpid(), rand());
    Calc__V1__CreateUserRequest req = CALC__V1__CREATE_USER_REQUEST__INIT;
    req.login = login;
    req.password_hash = "$argon2id$bench";
    Calc__V1__UserReply *rep = NULL;
    if (rpc_call(c, DBA_CREATE_USER, &req.base, &calc__v1__user_reply__descriptor,
                 (ProtobufCMessage **)&rep, TIMEOUT_MS, err, sizeof err) != RPC_OK)
        die("CreateUser", err);
    int64_t id = rep->user->id;
    protobuf_c_message_free_unpacked(&rep->base, NULL);
    return id;
}

/* One expression: LEAVES leaves of literals, then the levels above them, root last. */
static void make_expression(rpc_client *c, int64_t user, int k)
{
    enum { N = 2 * LEAVES - 1 };
    Calc__V1__PlanNode pn[N], *pp[N];
    Calc__V1__Operand ops[2 * N];
    int level_start = 0, level_n = LEAVES, next = LEAVES;
    for (int i = 0; i < N; i++) {
        calc__v1__plan_node__init(&pn[i]);
        pn[i].op = "+";
        pn[i].left = &ops[2 * i];
        pn[i].right = &ops[2 * i + 1];
        calc__v1__operand__init(pn[i].left);
        calc__v1__operand__init(pn[i].right);
        pn[i].parent = -1;
        pp[i] = &pn[i];
    }
    for (int i = 0; i < LEAVES; i++) {
        pn[i].left->kind_case = pn[i].right->kind_case = CALC__V1__OPERAND__KIND_VALUE;
        pn[i].left->value = i;
        pn[i].right->value = 1;
        pn[i].tail_ms = 7;
    }
    while (level_n > 1) {
        for (int j = 0; j < level_n / 2; j++, next++) {
            int a = level_start + 2 * j, b = a + 1;
            pn[next].left->kind_case = pn[next].right->kind_case = CALC__V1__OPERAND__KIND_NODE;
            pn[next].left->node = a;
            pn[next].right->node = b;
            pn[a].parent = pn[b].parent = next;
        }
        level_start += level_n;
        level_n /= 2;
    }
    char uid[32], err[256];
    snprintf(uid, sizeof uid, "bench-%d", k);
    Calc__V1__CreateExpressionRequest req = CALC__V1__CREATE_EXPRESSION_REQUEST__INIT;
    req.user_id = user;
    req.req_uid = uid;
    req.text = "bench";
    req.n_nodes = N;
    req.nodes = pp;
    Calc__V1__ExpressionReply *rep = NULL;
    if (rpc_call(c, DBA_CREATE_EXPRESSION, &req.base, &calc__v1__expression_reply__descriptor,
                 (ProtobufCMessage **)&rep, TIMEOUT_MS, err, sizeof err) != RPC_OK)
        die("CreateExpression", err);
    protobuf_c_message_free_unpacked(&rep->base, NULL);
}

/* Takes every ready node: returns an array of n (free each with free(), then the array). */
static Calc__V1__TakenNode *take_all(rpc_client *c, size_t want, size_t *n)
{
    Calc__V1__TakenNode *out = xcalloc(want, sizeof *out);
    *n = 0;
    while (*n < want) {
        char err[256];
        Calc__V1__TakeReadyRequest req = CALC__V1__TAKE_READY_REQUEST__INIT;
        req.max = 1000;
        Calc__V1__TakeReadyReply *rep = NULL;
        if (rpc_call(c, DBA_TAKE_READY, &req.base, &calc__v1__take_ready_reply__descriptor,
                     (ProtobufCMessage **)&rep, TIMEOUT_MS, err, sizeof err) != RPC_OK)
            die("TakeReady", err);
        size_t got = rep->n_nodes;
        for (size_t i = 0; i < got && *n < want; i++)
            out[(*n)++] = *rep->nodes[i];
        protobuf_c_message_free_unpacked(&rep->base, NULL);
        if (got == 0)
            break;
    }
    return out;
}

static int pair(rpc_client *c, const Calc__V1__TakenNode *t)
{
    char err[256];
    Calc__V1__ClaimNodeRequest cr = CALC__V1__CLAIM_NODE_REQUEST__INIT;
    cr.node_id = t->node_id;
    cr.epoch = t->epoch;
    cr.agent = "bench-agent";
    Calc__V1__ClaimNodeReply *claim = NULL;
    if (rpc_call(c, DBA_CLAIM_NODE, &cr.base, &calc__v1__claim_node_reply__descriptor,
                 (ProtobufCMessage **)&claim, TIMEOUT_MS, err, sizeof err) != RPC_OK) {
        fprintf(stderr, "ClaimNode node=%lld: %s\n", (long long)t->node_id, err);
        return -1;
    }
    int claimed = claim->outcome == CALC__V1__CLAIM_NODE_REPLY__OUTCOME__CLAIMED;
    double v = claim->left + claim->right;
    protobuf_c_message_free_unpacked(&claim->base, NULL);
    if (!claimed)
        return -1;
    Calc__V1__CompleteNodeRequest dr = CALC__V1__COMPLETE_NODE_REQUEST__INIT;
    dr.node_id = t->node_id;
    dr.epoch = t->epoch;
    dr.agent = "bench-agent";
    dr.outcome_case = CALC__V1__COMPLETE_NODE_REQUEST__OUTCOME_VALUE;
    dr.value = v;
    Calc__V1__CompleteNodeReply *done = NULL;
    if (rpc_call(c, DBA_COMPLETE_NODE, &dr.base, &calc__v1__complete_node_reply__descriptor,
                 (ProtobufCMessage **)&done, TIMEOUT_MS, err, sizeof err) != RPC_OK) {
        fprintf(stderr, "CompleteNode node=%lld: %s\n", (long long)t->node_id, err);
        return -1;
    }
    protobuf_c_message_free_unpacked(&done->base, NULL);
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* A call dbagent answers without PostgreSQL (a ClaimNode it rejects as invalid): the gRPC cost
 * alone. */
static double grpc_only_call(rpc_client *c)
{
    char err[256];
    Calc__V1__ClaimNodeRequest cr = CALC__V1__CLAIM_NODE_REQUEST__INIT;
    cr.agent = "";
    ProtobufCMessage *rep = NULL;
    double t0 = (double)time_monotonic_us();
    if (rpc_call(c, DBA_CLAIM_NODE, &cr.base, &calc__v1__claim_node_reply__descriptor, &rep,
                 TIMEOUT_MS, err, sizeof err) == RPC_OK)
        protobuf_c_message_free_unpacked(rep, NULL);
    return (double)time_monotonic_us() - t0;
}

typedef struct grpc_job {
    rpc_client *client;
    int n;
} grpc_job;

static void *grpc_only_thread(void *p)
{
    grpc_job *j = p;
    for (int i = 0; i < j->n; i++)
        grpc_only_call(j->client);
    return NULL;
}

/* This process's CPU time so far, in seconds: its own figure when two benches share a machine. */
static double self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
           ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) / 1e6;
}

/* The transport alone: the median of n calls one after another, then 4n calls from `clients`
 * threads at once, with the CPU each side spends per call. */
static void grpc_only(rpc_client *c, int n, int clients)
{
    double *lat = xcalloc((size_t)n, sizeof *lat);
    for (int i = 0; i < n; i++)
        lat[i] = grpc_only_call(c);
    qsort(lat, (size_t)n, sizeof *lat, cmp_double);
    double median = lat[n / 2];
    free(lat);
    pthread_t *th = xcalloc((size_t)clients, sizeof *th);
    grpc_job *jobs = xcalloc((size_t)clients, sizeof *jobs);
    double cpu0[CPU_KINDS], cpu1[CPU_KINDS];
    cpu_snapshot(cpu0);
    double self0 = self_cpu_s(), t0 = (double)time_monotonic_us();
    for (int i = 0; i < clients; i++) {
        jobs[i].client = conns[i % n_conns];
        jobs[i].n = 4 * n / clients > 0 ? 4 * n / clients : 1;
        pthread_create(&th[i], NULL, grpc_only_thread, &jobs[i]);
    }
    for (int i = 0; i < clients; i++)
        pthread_join(th[i], NULL);
    double secs = ((double)time_monotonic_us() - t0) / 1e6, self = self_cpu_s() - self0;
    cpu_snapshot(cpu1);
    double calls = (double)jobs[0].n * clients;
    free(jobs);
    free(th);
    printf("grpc only (a call answered without PostgreSQL): median=%.3f ms;"
           " %d clients: %.0f calls/s\n"
           "            CPU per call: calc-dbagent %.3f ms, this client %.3f ms"
           " (this process alone %.3f ms)\n",
           median / 1e3, clients, calls / secs,
           (cpu1[CPU_DBAGENT] - cpu0[CPU_DBAGENT]) * 1e3 / calls,
           (cpu1[CPU_BENCH] - cpu0[CPU_BENCH]) * 1e3 / calls, self * 1e3 / calls);
}

static void *bench_thread(void *p)
{
    bench_job *j = p;
    for (size_t i = 0; i < j->n; i++) {
        double t0 = (double)time_monotonic_us();
        if (pair(j->client, &j->nodes[i]) < 0)
            j->failures++;
        j->lat_us[i] = (double)time_monotonic_us() - t0;
    }
    return NULL;
}

/* dbagent's ClaimNode/CompleteNode calls and the transactions they took, so far. */
static void node_counts(rpc_client *c, int64_t *calls, int64_t *transactions)
{
    Calc__V1__Empty req = CALC__V1__EMPTY__INIT;
    Calc__V1__StatsReply *rep = NULL;
    char err[256];
    *calls = *transactions = 0;
    if (rpc_call(c, DBA_GET_STATS, &req.base, &calc__v1__stats_reply__descriptor,
                 (ProtobufCMessage **)&rep, TIMEOUT_MS, err, sizeof err) != RPC_OK)
        die("GetStats", err);
    *calls = rep->node_calls;
    *transactions = rep->node_transactions;
    protobuf_c_message_free_unpacked(&rep->base, NULL);
}

/* Runs `pairs` pairs over `clients` threads; prints median, p99 and throughput. */
static int run(rpc_client *c, const int64_t *users, int n_users, int clients, size_t pairs,
               int *expr_seq)
{
    size_t n_expr = (pairs + LEAVES - 1) / LEAVES;
    /* In creation order, so each client's share of the nodes belongs to few users. */
    for (size_t i = 0; i < n_expr; i++)
        make_expression(c, users[i * (size_t)n_users / n_expr], (*expr_seq)++);
    size_t n = 0;
    Calc__V1__TakenNode *nodes = take_all(c, pairs, &n);
    if (n < pairs)
        fprintf(stderr, "bench-dbagent: only %zu ready nodes (wanted %zu)\n", n, pairs);
    double *lat = xcalloc(n ? n : 1, sizeof *lat);
    bench_job *jobs = xcalloc((size_t)clients, sizeof *jobs);
    pthread_t *th = xcalloc((size_t)clients, sizeof *th);
    size_t per = n / (size_t)clients, off = 0;
    for (int i = 0; i < clients; i++) {
        jobs[i].client = conns[i % n_conns];
        jobs[i].nodes = nodes + off;
        jobs[i].n = per + ((size_t)i < n % (size_t)clients);
        jobs[i].lat_us = lat + off;
        off += jobs[i].n;
    }
    double cpu0[CPU_KINDS], cpu1[CPU_KINDS];
    int64_t calls0, tx0, calls1, tx1;
    node_counts(c, &calls0, &tx0);
    cpu_snapshot(cpu0);
    double t0 = (double)time_monotonic_us();
    for (int i = 0; i < clients; i++)
        pthread_create(&th[i], NULL, bench_thread, &jobs[i]);
    int failures = 0;
    for (int i = 0; i < clients; i++) {
        pthread_join(th[i], NULL);
        failures += jobs[i].failures;
    }
    double secs = ((double)time_monotonic_us() - t0) / 1e6;
    cpu_snapshot(cpu1);
    node_counts(c, &calls1, &tx1);
    qsort(lat, n, sizeof *lat, cmp_double);
    printf("clients=%-3d pairs=%-6zu median=%.3f ms  p99=%.3f ms  throughput=%.0f pairs/s"
           "  failures=%d\n",
           clients, n, n ? lat[n / 2] / 1e3 : 0.0, n ? lat[n * 99 / 100] / 1e3 : 0.0,
           (double)n / secs, failures);
    if (n)
        printf("            CPU per pair: PostgreSQL %.3f ms, calc-dbagent %.3f ms, this client"
               " %.3f ms\n",
               (cpu1[CPU_PG] - cpu0[CPU_PG]) * 1e3 / (double)n,
               (cpu1[CPU_DBAGENT] - cpu0[CPU_DBAGENT]) * 1e3 / (double)n,
               (cpu1[CPU_BENCH] - cpu0[CPU_BENCH]) * 1e3 / (double)n);
    print_machine(cpu0, cpu1);
    if (tx1 > tx0)
        printf("            calls per PostgreSQL transaction: %.2f\n",
               (double)(calls1 - calls0) / (double)(tx1 - tx0));
    free(th);
    free(jobs);
    free(lat);
    free(nodes);
    return failures ? 1 : 0;
}

int main(int argc, char **argv)
{
    int clients = 16, n_users = 1, shared = 0, transport_calls = 0;
    size_t pairs = 8000;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--clients") && i + 1 < argc)
            clients = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--users") && i + 1 < argc)
            n_users = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--pairs") && i + 1 < argc)
            pairs = (size_t)atol(argv[++i]);
        else if (!strcmp(argv[i], "--shared-channel"))
            shared = 1;
        else if (!strcmp(argv[i], "--grpc-only") && i + 1 < argc)
            transport_calls = atoi(argv[++i]);
        else {
            fprintf(stderr,
                    "usage: %s [--clients N] [--pairs N] [--users N] [--shared-channel]"
                    " [--grpc-only N]\n"
                    "env: DBAGENT_ADDR (127.0.0.1:50051), DBAGENT_TOKEN\n",
                    argv[0]);
            return 64;
        }
    }
    const char *addr = getenv("DBAGENT_ADDR"), *token = getenv("DBAGENT_TOKEN");
    if (!token || !token[0])
        die("configuration", "DBAGENT_TOKEN is not set");
    if (clients < 1 || pairs < 1 || n_users < 1 || n_users > 1000)
        die("configuration", "--clients, --pairs and --users (at most 1000) must be positive");
    srand((unsigned)time(NULL));
    rpc_global_init();
    if (!addr || !addr[0])
        addr = "127.0.0.1:50051";
    rpc_client *c = rpc_client_new(addr, token);
    n_conns = shared ? 1 : clients;
    conns = xcalloc((size_t)n_conns, sizeof *conns);
    conns[0] = c;
    for (int i = 1; i < n_conns; i++)
        conns[i] = rpc_client_new(addr, token);
    int64_t *users = xcalloc((size_t)n_users, sizeof *users);
    for (int i = 0; i < n_users; i++)
        users[i] = make_user(c);
    int seq = 0, rc = 0;
    if (transport_calls > 0) {
        /* The transport alone, long enough to compare two client builds run at once. */
        grpc_only(c, transport_calls, clients);
        goto out;
    }
    /* Warm up the connections of the dbagent's threads, then one client, then many. */
    rc |= run(c, users, n_users, clients, (size_t)clients * 20, &seq);
    printf("(above: warm-up)\n");
    grpc_only(c, 2000, clients);
    rc |= run(c, users, 1, 1, pairs / 4 ? pairs / 4 : 1, &seq);
    rc |= run(c, users, n_users, clients, pairs, &seq);
out:
    free(users);
    for (int i = 0; i < n_conns; i++)
        rpc_client_free(conns[i]);
    free(conns);
    rpc_global_shutdown();
    return rc;
}
