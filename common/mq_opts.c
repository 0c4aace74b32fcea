#include "mq_opts.h"

#include <amqp.h>
#include <amqp_ssl_socket.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Parses one URL; fills *name ("host:port") and *tls. 0, or -1 when it is not an AMQP URL. */
static int parse_one(const char *url, char **name, int *tls)
{
    struct amqp_connection_info ci;
    char *buf = xstrdup(url);
    amqp_default_connection_info(&ci);
    int rc = amqp_parse_url(buf, &ci) == AMQP_STATUS_OK ? 0 : -1;
    if (rc == 0) {
        *name = xasprintf("%s:%d", ci.host, ci.port);
        *tls = ci.ssl;
    }
    free(buf);
    return rc;
}

int mq_opts_parse_urls(mq_opts *o, const char *list, char *err, size_t errlen)
{
    memset(o->urls, 0, sizeof o->urls);
    memset(o->names, 0, sizeof o->names);
    o->n_urls = 0;
    o->tls = 0;
    int plain = 0, secure = 0;
    const char *p = list;
    for (;;) {
        const char *end = strchr(p, ',');
        if (!end)
            end = p + strlen(p);
        const char *a = p, *b = end;
        while (a < b && is_space(*a))
            a++;
        while (b > a && is_space(b[-1]))
            b--;
        size_t pos = o->n_urls + 1;
        if (a == b) {
            snprintf(err, errlen, "AMQP_URL: broker %zu of the comma-separated list is empty", pos);
            goto fail;
        }
        if (o->n_urls == MQ_MAX_BROKERS) {
            snprintf(err, errlen, "AMQP_URL: more than %d brokers", MQ_MAX_BROKERS);
            goto fail;
        }
        char *url = xstrndup(a, (size_t)(b - a));
        int tls = 0;
        o->urls[o->n_urls] = url;
        if (parse_one(url, &o->names[o->n_urls], &tls) < 0) {
            snprintf(err, errlen,
                     "AMQP_URL: broker %zu is not a valid amqp:// or amqps:// "
                     "user:pass@host:port/vhost URL",
                     pos);
            o->n_urls++;
            goto fail;
        }
        o->n_urls++;
        secure += tls;
        plain += !tls;
        if (!*end)
            break;
        p = end + 1;
    }
    /* A failover from a TLS broker to a plain one would silently drop the encryption. */
    if (plain && secure) {
        snprintf(err, errlen,
                 "AMQP_URL mixes amqp:// and amqps:// brokers: use one scheme for all");
        goto fail;
    }
    o->tls = secure > 0;
    return 0;
fail:
    mq_opts_free(o);
    return -1;
}

/* The file can be opened and read by this process (not a directory, not unreadable). */
static int readable(const char *var, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open %s: %s", var, path, strerror(errno));
        return -1;
    }
    char byte;
    size_t got = fread(&byte, 1, 1, f);
    int bad = ferror(f), e = errno;
    fclose(f);
    if (bad) {
        snprintf(err, errlen, "%s: cannot read %s: %s", var, path, strerror(e));
        return -1;
    }
    if (!got) {
        snprintf(err, errlen, "%s: %s is empty", var, path);
        return -1;
    }
    return 0;
}

/* Loads the files into a throwaway TLS socket, as each connection will: bad PEM fails now. */
static int tls_files_load(const mq_opts *o, char *err, size_t errlen)
{
    amqp_connection_state_t conn = amqp_new_connection();
    amqp_socket_t *sock = amqp_ssl_socket_new(conn);
    int rc = -1;
    if (!sock) {
        snprintf(err, errlen, "AMQP_TLS_CA: cannot create a TLS socket");
        goto out;
    }
    if (amqp_ssl_socket_set_cacert(sock, o->tls_ca) != AMQP_STATUS_OK) {
        snprintf(err, errlen, "AMQP_TLS_CA: %s holds no PEM certificate OpenSSL can load",
                 o->tls_ca);
        goto out;
    }
    if (o->tls_cert && amqp_ssl_socket_set_key(sock, o->tls_cert, o->tls_key) != AMQP_STATUS_OK) {
        snprintf(err, errlen,
                 "AMQP_TLS_CERT/AMQP_TLS_KEY: %s and %s are not a PEM certificate and its "
                 "private key",
                 o->tls_cert, o->tls_key);
        goto out;
    }
    rc = 0;
out:
    amqp_destroy_connection(conn);
    return rc;
}

static int tls_check(mq_opts *o, const mq_settings *s, char *err, size_t errlen)
{
    o->tls_ca = s->tls_ca && s->tls_ca[0] ? s->tls_ca : NULL;
    o->tls_cert = s->tls_cert && s->tls_cert[0] ? s->tls_cert : NULL;
    o->tls_key = s->tls_key && s->tls_key[0] ? s->tls_key : NULL;
    if (!o->tls) {
        /* TLS files with plain brokers would be ignored: the user meant TLS and did not get it. */
        const char *set = o->tls_ca     ? "AMQP_TLS_CA"
                          : o->tls_cert ? "AMQP_TLS_CERT"
                          : o->tls_key  ? "AMQP_TLS_KEY"
                                        : NULL;
        if (set) {
            snprintf(err, errlen, "%s is set but AMQP_URL has no amqps:// broker", set);
            return -1;
        }
        return 0;
    }
    if (!o->tls_ca) {
        snprintf(err, errlen,
                 "AMQP_TLS_CA is required with amqps://: the CA file that signed the broker's "
                 "certificate");
        return -1;
    }
    if (!o->tls_cert != !o->tls_key) {
        snprintf(err, errlen, "%s is set without %s: give both or neither",
                 o->tls_cert ? "AMQP_TLS_CERT" : "AMQP_TLS_KEY",
                 o->tls_cert ? "AMQP_TLS_KEY" : "AMQP_TLS_CERT");
        return -1;
    }
    if (readable("AMQP_TLS_CA", o->tls_ca, err, errlen) < 0)
        return -1;
    if (o->tls_cert && (readable("AMQP_TLS_CERT", o->tls_cert, err, errlen) < 0 ||
                        readable("AMQP_TLS_KEY", o->tls_key, err, errlen) < 0))
        return -1;
    return tls_files_load(o, err, errlen);
}

int mq_opts_init(mq_opts *o, const mq_settings *s, char *err, size_t errlen)
{
    memset(o, 0, sizeof *o);
    o->retry_ttl_ms = s->retry_ttl_ms;
    if (!s->queue_type || !s->queue_type[0] || !strcmp(s->queue_type, "classic")) {
        o->queue_type = MQ_QUEUE_CLASSIC;
    } else if (!strcmp(s->queue_type, "quorum")) {
        o->queue_type = MQ_QUEUE_QUORUM;
    } else {
        snprintf(err, errlen, "AMQP_QUEUE_TYPE: '%s' is neither classic nor quorum", s->queue_type);
        return -1;
    }
    if (mq_opts_parse_urls(o, s->url_list, err, errlen) < 0)
        return -1;
    return tls_check(o, s, err, errlen);
}

void mq_opts_free(mq_opts *o)
{
    for (size_t i = 0; i < MQ_MAX_BROKERS; i++) {
        free(o->urls[i]);
        free(o->names[i]);
        o->urls[i] = o->names[i] = NULL;
    }
    o->n_urls = 0;
}

size_t mq_opts_next(const mq_opts *o, size_t i)
{
    return o->n_urls ? (i + 1) % o->n_urls : 0;
}

const char *mq_queue_type_name(mq_queue_type t)
{
    return t == MQ_QUEUE_QUORUM ? "quorum" : "classic";
}
