/*
 * sqlstate: the one table from a PostgreSQL failure (its SQLSTATE) to the gRPC status code a
 * call answers with.
 */
#ifndef CALC_SQLSTATE_H
#define CALC_SQLSTATE_H

/* The RPC_* code for sqlstate (five characters, e.g. "23505"); NULL, when the failure carried
 * none (the connection broke), is RPC_UNAVAILABLE. Anything unlisted is RPC_INTERNAL. */
int sqlstate_rpc_code(const char *sqlstate);

#endif
