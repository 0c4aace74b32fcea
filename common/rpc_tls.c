#include "rpc_tls.h"

#include <errno.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"

/* A certificate chain or a key is a few kilobytes; a bundle of CAs a few hundred. */
#define PEM_MAX (4 * 1024 * 1024)

static int given(const char *s)
{
    return s && s[0];
}

/* Reads a whole PEM file into a new NUL-terminated string (free it); it must hold a block whose
 * label ends with kind ("CERTIFICATE", "PRIVATE KEY"). NULL with err set. */
static char *read_pem(const char *path, const char *what, const char *kind, char *err,
                      size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s %s: %s", what, path, strerror(errno));
        return NULL;
    }
    char *buf = xmalloc(PEM_MAX + 1);
    size_t n = fread(buf, 1, PEM_MAX + 1, f);
    int bad = ferror(f);
    fclose(f);
    buf[n <= PEM_MAX ? n : PEM_MAX] = '\0';
    char end[64];
    snprintf(end, sizeof end, "%s-----", kind);
    const char *begin = strstr(buf, "-----BEGIN ");
    if (bad)
        snprintf(err, errlen, "%s %s cannot be read", what, path);
    else if (n > PEM_MAX)
        snprintf(err, errlen, "%s %s is over 4 MiB", what, path);
    else if (!begin || !strstr(begin, end))
        snprintf(err, errlen, "%s %s holds no PEM %s", what, path,
                 strcmp(kind, "CERTIFICATE") ? "private key" : "certificate");
    else
        return buf;
    free(buf);
    return NULL;
}

int rpc_tls_enabled(const rpc_tls *t, int server)
{
    return t && (server ? given(t->cert) : given(t->ca));
}

int rpc_tls_check(const rpc_tls *t, int server, const char *prefix, char *err, size_t errlen)
{
    if (!t)
        return 0;
    /* The variables' names: a server's own certificate is PREFIX_CERT, a client's
     * PREFIX_CLIENT_CERT, so one environment can hold both sides' settings. */
    char ca[64], cert[64], key[64];
    snprintf(ca, sizeof ca, "%s_%s", prefix, server ? "CLIENT_CA" : "CA");
    snprintf(cert, sizeof cert, "%s_%s", prefix, server ? "CERT" : "CLIENT_CERT");
    snprintf(key, sizeof key, "%s_%s", prefix, server ? "KEY" : "CLIENT_KEY");
    if (given(t->cert) != given(t->key)) {
        snprintf(err, errlen, "%s and %s go together: give both or neither", cert, key);
        return -1;
    }
    if (server && given(t->ca) && !given(t->cert)) {
        snprintf(err, errlen, "%s asks clients for certificates, which needs TLS: set %s and %s",
                 ca, cert, key);
        return -1;
    }
    if (!server && given(t->cert) && !given(t->ca)) {
        snprintf(err, errlen, "%s is for TLS, which %s turns on: set it too", cert, ca);
        return -1;
    }
    if (!server && given(t->server_name) && !given(t->ca)) {
        snprintf(err, errlen, "%s_SERVER_NAME is checked only over TLS, which %s turns on", prefix,
                 ca);
        return -1;
    }
    const char *files[3] = {t->ca, t->cert, t->key};
    const char *names[3] = {ca, cert, key};
    const char *kinds[3] = {"CERTIFICATE", "CERTIFICATE", "PRIVATE KEY"};
    for (int i = 0; i < 3; i++) {
        if (!given(files[i]))
            continue;
        char *pem = read_pem(files[i], names[i], kinds[i], err, errlen);
        if (!pem)
            return -1;
        free(pem);
    }
    return 0;
}

void *rpc_tls_credentials(const rpc_tls *t, int server, char *err, size_t errlen)
{
    if (!rpc_tls_enabled(t, server))
        return server ? (void *)grpc_insecure_server_credentials_create()
                      : (void *)grpc_insecure_credentials_create();
    char *ca = NULL, *cert = NULL, *key = NULL;
    void *creds = NULL;
    if (given(t->ca) && !(ca = read_pem(t->ca, "CA file", "CERTIFICATE", err, errlen)))
        goto out;
    if (given(t->cert) && (!(cert = read_pem(t->cert, "certificate", "CERTIFICATE", err, errlen)) ||
                           !(key = read_pem(t->key, "key", "PRIVATE KEY", err, errlen))))
        goto out;
    grpc_ssl_pem_key_cert_pair pair = {.private_key = key, .cert_chain = cert};
    if (server) {
        /* With a CA for clients, a client without a certificate it signed is refused. */
        creds = grpc_ssl_server_credentials_create_ex(
            ca, &pair, 1,
            ca ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
               : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
            NULL);
    } else {
        creds = grpc_ssl_credentials_create(ca, cert ? &pair : NULL, NULL, NULL);
    }
    if (!creds)
        snprintf(err, errlen, "gRPC refused the TLS settings");
out:
    /* gRPC copies what it keeps. A key is a secret: wiped before it is freed. */
    if (key)
        explicit_bzero(key, strlen(key));
    free(ca);
    free(cert);
    free(key);
    return creds;
}
