#include "sqlstate.h"

#include <stddef.h>
#include <string.h>

#include "rpc.h"

/* A whole SQLSTATE, or a class (its first two characters). Whole codes come first: the first
 * row that matches wins. */
static const struct {
    const char *state;
    int code;
} sqlstate_codes[] = {
    {"57014", RPC_DEADLINE_EXCEEDED}, /* statement timeout: the caller's deadline */
    {"23505", RPC_ALREADY_EXISTS},
    {"23503", RPC_NOT_FOUND},   /* a row a foreign key names is missing: no such user */
    {"57P01", RPC_UNAVAILABLE}, /* admin shutdown */
    {"57P03", RPC_UNAVAILABLE}, /* cannot connect now (starting up) */
    {"08", RPC_UNAVAILABLE},    /* connection exception */
    {"22", RPC_INVALID_ARGUMENT},
    {"23", RPC_INVALID_ARGUMENT},
    {"40", RPC_ABORTED}, /* a deadlock or a serialization failure: the caller may retry */
    /* calc_list_events: the reader's place is below what retention deleted */
    {"CL410", RPC_OUT_OF_RANGE},
};

int sqlstate_rpc_code(const char *sqlstate)
{
    if (!sqlstate)
        return RPC_UNAVAILABLE;
    for (size_t i = 0; i < sizeof sqlstate_codes / sizeof sqlstate_codes[0]; i++) {
        const char *s = sqlstate_codes[i].state;
        if (!strncmp(sqlstate, s, strlen(s)))
            return sqlstate_codes[i].code;
    }
    return RPC_INTERNAL;
}
