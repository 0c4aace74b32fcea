/*
 * calc-plan: prints the plan of an expression as JSON, to show why an expression takes the
 * time it takes and to test the planner from outside. Exit: 0 plan printed, 2 invalid
 * expression (JSON error on stdout), 64 bad usage (message on stderr).
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plan.h"
#include "plan_json.h"

#define EXIT_INVALID 2
#define EXIT_USAGE   64

typedef struct config {
    plan_limits limits;
    plan_durations dur;
    int source_order;
    int eval;
    int help;
} config;

typedef enum { OPT_FLAG, OPT_SIZE, OPT_DURATIONS } opt_type;

/* The one table of options: name, type, bounds, help. Defaults come from config_default. */
typedef struct option {
    const char *name;
    opt_type type;
    size_t min, max;
    const char *help;
} option;

static const option options[] = {
    {"--durations", OPT_DURATIONS, 0, 3600000,
     "operator delays in ms, e.g. '+=1000,-=1000,*=1000,/=1000'; unnamed ones stay 1000"},
    {"--source-order", OPT_FLAG, 0, 0, "keep the operations in source order (no reassociation)"},
    {"--eval", OPT_FLAG, 0, 0, "also evaluate the plan locally and print \"value\""},
    {"--max-text", OPT_SIZE, 0, (size_t)1 << 26, "limit on the text in bytes (default 4096)"},
    {"--max-nodes", OPT_SIZE, 0, (size_t)1 << 24, "limit on operation nodes (default 1000)"},
    {"--max-depth", OPT_SIZE, 0, (size_t)1 << 24, "limit on parenthesis nesting (default 100)"},
    {"--help", OPT_FLAG, 0, 0, "print this help"},
};
#define N_OPTIONS (sizeof options / sizeof options[0])

static void usage(FILE *f)
{
    fprintf(f, "usage: calc-plan [options] [--] 'EXPR'\n"
               "Prints the plan of EXPR as JSON. Exit 0: plan printed; 2: invalid expression\n"
               "(JSON error with the position on stdout); 64: bad usage.\n\noptions:\n");
    for (size_t i = 0; i < N_OPTIONS; i++) {
        if (options[i].type == OPT_FLAG)
            fprintf(f, "  %-16s %s\n", options[i].name, options[i].help);
        else
            fprintf(f, "  %-16s %s [%zu..%zu]\n", options[i].name, options[i].help, options[i].min,
                    options[i].max);
    }
}

static int parse_size(const char *s, size_t min, size_t max, size_t *out)
{
    char *end;
    unsigned long long v;

    if (*s < '0' || *s > '9')
        return -1;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return -1;
    *out = (size_t)v;
    return 0;
}

/* "+=1000,*=2000": each item names an operator and its delay. */
static int parse_durations(const char *s, const option *o, plan_durations *dur)
{
    static const char ops[] = "+-*/";
    char buf[32];

    while (*s) {
        size_t n = strcspn(s, ","), ms;
        const char *op;

        if (n < 3 || n >= sizeof buf || s[1] != '=' || (op = strchr(ops, s[0])) == NULL) {
            fprintf(stderr,
                    "calc-plan: --durations: bad item '%.*s', want OP=MS with OP one of "
                    "+ - * /\n",
                    (int)n, s);
            return -1;
        }
        memcpy(buf, s + 2, n - 2);
        buf[n - 2] = '\0';
        if (parse_size(buf, o->min, o->max, &ms) != 0) {
            fprintf(stderr, "calc-plan: --durations: '%.*s': delay must be %zu..%zu ms\n", (int)n,
                    s, o->min, o->max);
            return -1;
        }
        dur->ms[op - ops] = (uint32_t)ms;
        s += n;
        if (*s == ',')
            s++;
    }
    return 0;
}

static int apply(config *c, const option *o, const char *value)
{
    size_t v;

    if (o->type == OPT_DURATIONS)
        return parse_durations(value, o, &c->dur);
    if (parse_size(value, o->min, o->max, &v) != 0) {
        fprintf(stderr, "calc-plan: %s: '%s' is not a number in %zu..%zu\n", o->name, value, o->min,
                o->max);
        return -1;
    }
    if (strcmp(o->name, "--max-text") == 0)
        c->limits.max_text = v;
    else if (strcmp(o->name, "--max-nodes") == 0)
        c->limits.max_nodes = v;
    else
        c->limits.max_depth = v;
    return 0;
}

static const option *find_option(const char *arg, size_t namelen)
{
    for (size_t i = 0; i < N_OPTIONS; i++)
        if (strlen(options[i].name) == namelen && strncmp(options[i].name, arg, namelen) == 0)
            return &options[i];
    return NULL;
}

/* Anything not starting with "--" is the expression, so '-5+3' needs no "--" before it. */
static int parse_args(int argc, char **argv, config *c, const char **expr)
{
    int i, only_expr = 0;

    *expr = NULL;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *eq, *value;
        const option *o;

        /* "--5" is a double negation, not an option: options start with "--" and a letter. */
        if (only_expr || strncmp(a, "--", 2) != 0 ||
            (a[2] != '\0' && !isalpha((unsigned char)a[2]))) {
            if (*expr != NULL) {
                fprintf(stderr, "calc-plan: more than one expression; quote EXPR\n");
                return -1;
            }
            *expr = a;
            continue;
        }
        if (a[2] == '\0') {
            only_expr = 1;
            continue;
        }
        eq = strchr(a, '=');
        o = find_option(a, eq ? (size_t)(eq - a) : strlen(a));
        if (o == NULL) {
            fprintf(stderr, "calc-plan: unknown option '%s'\n", a);
            return -1;
        }
        if (o->type == OPT_FLAG) {
            if (eq) {
                fprintf(stderr, "calc-plan: %s takes no value\n", o->name);
                return -1;
            }
            if (strcmp(o->name, "--source-order") == 0)
                c->source_order = 1;
            else if (strcmp(o->name, "--eval") == 0)
                c->eval = 1;
            else
                c->help = 1;
            continue;
        }
        if (eq) {
            value = eq + 1;
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else {
            fprintf(stderr, "calc-plan: %s needs a value\n", o->name);
            return -1;
        }
        if (apply(c, o, value) != 0)
            return -1;
    }
    if (*expr == NULL && !c->help) {
        fprintf(stderr, "calc-plan: no expression given\n");
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    config c = {0};
    const char *expr;
    plan *p = NULL;
    plan_error err;

    plan_limits_default(&c.limits);
    plan_durations_uniform(&c.dur, 1000);
    if (parse_args(argc, argv, &c, &expr) != 0) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (c.help) {
        usage(stdout);
        return 0;
    }
    if (plan_build(expr, strlen(expr), &c.limits, &c.dur, c.source_order, &p, &err) != PLAN_OK) {
        plan_json_write_error(stdout, &err);
        return EXIT_INVALID;
    }
    plan_json_write(stdout, p, c.eval);
    plan_free(p);
    return 0;
}
