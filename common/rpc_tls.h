/*
 * rpc_tls: the TLS settings of a gRPC link, checked at start and turned into gRPC credentials.
 *
 * Server: cert + key turn TLS on (plaintext is then refused); ca, when set, makes it mutual:
 * a client must present a certificate signed by that CA.
 * Client: ca turns TLS on and is the CA the server's certificate must be signed by; cert + key
 * are the client's own certificate, for a server that asks for one; server_name is the name the
 * server's certificate must carry when it is not the host of the target.
 */
#ifndef CALC_RPC_TLS_H
#define CALC_RPC_TLS_H

#include <stddef.h>

typedef struct rpc_tls {
    const char *ca;          /* PEM file; NULL or "" for none */
    const char *cert;        /* PEM file; NULL or "" for none */
    const char *key;         /* PEM file; NULL or "" for none */
    const char *server_name; /* client only; NULL or "" for the target's host */
} rpc_tls;

/* The configuration entries (config.h) of a client's settings t, named after PREFIX. */
#define RPC_TLS_CLIENT_CONFIG(PREFIX, t)                                                           \
    {                                                                                              \
        PREFIX "_CA",                                                                              \
        CFG_STR,                                                                                   \
        "",                                                                                        \
        0,                                                                                         \
        4096,                                                                                      \
        "PEM CA that signed the server's certificate: turns TLS on; plaintext otherwise",          \
        &(t)->ca},                                                                                 \
        {PREFIX "_CLIENT_CERT",                                                                    \
         CFG_STR,                                                                                  \
         "",                                                                                       \
         0,                                                                                        \
         4096,                                                                                     \
         "PEM certificate to present, for a server that asks for one (mutual TLS)",                \
         &(t)->cert},                                                                              \
        {PREFIX "_CLIENT_KEY",                                                                     \
         CFG_STR,                                                                                  \
         "",                                                                                       \
         0,                                                                                        \
         4096,                                                                                     \
         "PEM private key of " PREFIX "_CLIENT_CERT",                                              \
         &(t)->key},                                                                               \
    {                                                                                              \
        PREFIX "_SERVER_NAME", CFG_STR, "", 0, 255,                                                \
            "name the server's certificate must carry, when not the host of the address",          \
            &(t)->server_name                                                                      \
    }

/* True when the settings turn TLS on: cert for a server, ca for a client. */
int rpc_tls_enabled(const rpc_tls *t, int server);

/*
 * Checks the settings of a server (server != 0) or a client before anything starts: the files
 * needed are given, readable and hold PEM, and no setting is given that cannot be honoured
 * (a key without its certificate, a client certificate without TLS). err names the variables
 * after prefix: a server's PREFIX_CERT, PREFIX_KEY and PREFIX_CLIENT_CA; a client's PREFIX_CA,
 * PREFIX_CLIENT_CERT, PREFIX_CLIENT_KEY and PREFIX_SERVER_NAME. Returns 0, or -1 with err set.
 */
int rpc_tls_check(const rpc_tls *t, int server, const char *prefix, char *err, size_t errlen);

/*
 * The gRPC credentials for the settings (plaintext ones when TLS is off), as an opaque pointer:
 * a grpc_server_credentials * (server) or grpc_channel_credentials * (client), owned by the
 * caller. NULL with err set when a file cannot be read.
 */
void *rpc_tls_credentials(const rpc_tls *t, int server, char *err, size_t errlen);

#endif
