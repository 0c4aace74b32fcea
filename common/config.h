/*
 * config: each program describes its configuration as one table (name, type, default, bounds,
 * help). cfg_load reads the environment and validates every entry; cfg_usage prints the table.
 */
#ifndef CALC_CONFIG_H
#define CALC_CONFIG_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    CFG_INT,    /* int64_t *dest, within [min, max] */
    CFG_STR,    /* const char **dest; min/max bound the length */
    CFG_SECRET, /* like CFG_STR, but never printed */
} cfg_type;

typedef struct cfg_entry {
    const char *name; /* the environment variable */
    cfg_type type;
    const char *def; /* default as text; NULL: required */
    int64_t min, max;
    const char *help;
    void *dest;
} cfg_entry;

/*
 * DBAGENT_TIMEOUT_MS, the deadline of one call to dbagent, as the API and the agent both read
 * it: one default and one range for every caller. help says which calls it bounds.
 */
#define DBAGENT_TIMEOUT_DEFAULT_MS 5000
#define DBAGENT_TIMEOUT_CONFIG(help, dest)                                                         \
    {                                                                                              \
        "DBAGENT_TIMEOUT_MS", CFG_INT, CFG_TEXT(DBAGENT_TIMEOUT_DEFAULT_MS), 100, 600000, help,    \
            dest                                                                                   \
    }
#define CFG_TEXT(x)  CFG_TEXT_(x)
#define CFG_TEXT_(x) #x

/*
 * Loads every entry from the environment (or its default). Strings point into the environment
 * or into the table's defaults, so they live as long as the process. On an invalid or missing
 * value returns -1 with err naming the variable and the problem.
 */
int cfg_load(const cfg_entry *table, size_t n, char *err, size_t errlen);

/* Prints usage, the table with defaults and bounds, to stdout. */
void cfg_usage(const char *prog, const char *summary, const cfg_entry *table, size_t n);

/*
 * The common start of every main(): handles --help, loads the table, and on error prints it
 * and exits 64. Returns only when the configuration is valid.
 */
void cfg_init_or_exit(int argc, char **argv, const char *summary, const cfg_entry *table, size_t n);

#endif
