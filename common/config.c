#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int parse_int(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end != '\0')
        return -1;
    *out = v;
    return 0;
}

int cfg_load(const cfg_entry *table, size_t n, char *err, size_t errlen)
{
    for (size_t i = 0; i < n; i++) {
        const cfg_entry *e = &table[i];
        const char *v = getenv(e->name);
        if (!v || !*v)
            v = e->def;
        if (!v) {
            snprintf(err, errlen, "%s is required: %s", e->name, e->help);
            return -1;
        }
        if (e->type == CFG_INT) {
            int64_t x;
            if (parse_int(v, &x) < 0) {
                snprintf(err, errlen, "%s: '%s' is not an integer", e->name, v);
                return -1;
            }
            if (x < e->min || x > e->max) {
                snprintf(err, errlen, "%s: %lld is out of range %lld..%lld", e->name, (long long)x,
                         (long long)e->min, (long long)e->max);
                return -1;
            }
            *(int64_t *)e->dest = x;
        } else {
            size_t len = strlen(v);
            if ((int64_t)len < e->min || (int64_t)len > e->max) {
                snprintf(err, errlen, "%s: length %zu is out of range %lld..%lld", e->name, len,
                         (long long)e->min, (long long)e->max);
                return -1;
            }
            *(const char **)e->dest = v;
        }
    }
    return 0;
}

void cfg_usage(const char *prog, const char *summary, const cfg_entry *table, size_t n)
{
    (void)prog;
    printf("usage: %s\n\nConfiguration (environment variables):\n", summary);
    for (size_t i = 0; i < n; i++) {
        const cfg_entry *e = &table[i];
        printf("  %-22s %s\n", e->name, e->help);
        if (e->type == CFG_INT)
            printf("  %-22s default %s, %lld..%lld\n", "", e->def ? e->def : "(required)",
                   (long long)e->min, (long long)e->max);
        else if (e->type == CFG_SECRET && !e->def)
            printf("  %-22s required, at least %lld characters, never printed\n", "",
                   (long long)e->min);
        else if (e->type == CFG_SECRET)
            printf("  %-22s optional, never printed\n", "");
        else
            printf("  %-22s default %s\n", "", e->def ? e->def : "(required)");
    }
}

void cfg_init_or_exit(int argc, char **argv, const char *summary, const cfg_entry *table, size_t n)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            cfg_usage(argv[0], summary, table, n);
            exit(0);
        }
    }
    char err[512];
    if (cfg_load(table, n, err, sizeof err) < 0) {
        fprintf(stderr, "%s: configuration: %s\n(see %s --help)\n", argv[0], err, argv[0]);
        exit(64);
    }
}
