/*
 * migrations: the schema/ migrations and schema/functions/ embedded at build time, and the runner
 * that applies them.
 */
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

/* One SQL function, from schema/functions/<name>.sql. */
typedef struct schema_function {
    const char *name;
    const char *sql;
} schema_function;

/* Generated from schema/ by schema/embed.cmake, in version order. */
extern const migration migrations[];
extern const int n_migrations;
/* Generated from schema/functions/, in name order, with the hex SHA-256 of their text joined. */
extern const schema_function schema_functions[];
extern const int n_schema_functions;
extern const char schema_functions_digest[];

/*
 * Brings the schema to target_version (-1: the newest), applying ups or downs in order, each in
 * its own transaction, under an advisory lock so that several dbagents may start at once. While
 * another holds the lock it waits, and gives up when *stop (if stop is not NULL) becomes
 * non-zero. Going down drops the functions first; at the newest version the functions are
 * replaced by the embedded ones when the digest recorded in schema_functions differs (one
 * transaction). Returns 0, or -1 with err set.
 */
int migrate_to(PGconn *conn, int target_version, const volatile sig_atomic_t *stop, char *err,
               size_t errlen);
/* The version now applied (0: none), or -1 with err set. */
int migrate_current(PGconn *conn, char *err, size_t errlen);
/*
 * Copies into out the functions digest recorded in the database ("" when none is, or there is no
 * schema_functions table). Changes nothing. Returns 0, or -1 with err set.
 */
int migrate_functions_stored(PGconn *conn, char *out, size_t outlen, char *err, size_t errlen);

#endif
