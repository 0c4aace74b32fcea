/* migrations: the schema/ migrations embedded at build time, and the runner that applies them. */
#ifndef CALC_MIGRATIONS_H
#define CALC_MIGRATIONS_H

#include <libpq-fe.h>
#include <signal.h>
#include <stddef.h>

typedef struct migration {
    int version;
    const char *name;
    const char *up;
    const char *down;
} migration;

/* Generated from schema/ by schema/embed.cmake, in version order. */
extern const migration migrations[];
extern const int n_migrations;

/*
 * Brings the schema to target_version (-1: the newest), applying ups or downs in order, each in
 * its own transaction, under an advisory lock so that several dbagents may start at once. While
 * another holds the lock it waits, and gives up when *stop (if stop is not NULL) becomes
 * non-zero. Returns 0, or -1 with err set.
 */
int migrate_to(PGconn *conn, int target_version, const volatile sig_atomic_t *stop, char *err,
               size_t errlen);
/* The version now applied (0: none), or -1 with err set. */
int migrate_current(PGconn *conn, char *err, size_t errlen);

#endif
