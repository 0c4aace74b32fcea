/*
 * mq_opts: how a program reaches RabbitMQ, checked once at start: the broker list of AMQP_URL
 * (one or more URLs separated by commas, tried in turn), TLS files for amqps:// and the queue type.
 * A setting the program could not honour (amqps:// without a CA, a file it cannot read, TLS
 * files with no amqps:// broker) is refused here, never ignored later.
 */
#ifndef CALC_MQ_OPTS_H
#define CALC_MQ_OPTS_H

#include <stddef.h>

#define MQ_MAX_BROKERS 16

typedef enum { MQ_QUEUE_CLASSIC, MQ_QUEUE_QUORUM } mq_queue_type;

typedef struct mq_opts {
    char *urls[MQ_MAX_BROKERS];  /* owned; each a valid amqp:// or amqps:// URL */
    char *names[MQ_MAX_BROKERS]; /* owned; "host:port" of each, for logs (no credentials) */
    size_t n_urls;
    int tls;            /* every URL is amqps:// (mixing the two schemes is refused) */
    const char *tls_ca; /* borrowed from the caller's configuration; NULL when unset */
    const char *tls_cert, *tls_key;
    mq_queue_type queue_type;
    int retry_ttl_ms;
} mq_opts;

/* The configuration entries (config.h) of the settings below, bound to the fields amqp_url,
 * amqp_queue_type, amqp_tls_ca, amqp_tls_cert and amqp_tls_key of *c. */
#define MQ_CONFIG(c)                                                                               \
    {"AMQP_URL",                                                                                   \
     CFG_SECRET,                                                                                   \
     "amqp://guest:guest@127.0.0.1:5672/%2f",                                                      \
     1,                                                                                            \
     8192,                                                                                         \
     "RabbitMQ URL (amqp://user:pass@host:port/vhost, amqps:// for TLS), or several separated"     \
     " by commas: the brokers of one cluster, tried in turn",                                      \
     &(c)->amqp_url},                                                                              \
        {"AMQP_QUEUE_TYPE",                                                                        \
         CFG_STR,                                                                                  \
         "classic",                                                                                \
         1,                                                                                        \
         16,                                                                                       \
         "classic, or quorum for a RabbitMQ cluster (must match every component)",                 \
         &(c)->amqp_queue_type},                                                                   \
        {"AMQP_TLS_CA",                                                                            \
         CFG_STR,                                                                                  \
         "",                                                                                       \
         0,                                                                                        \
         4096,                                                                                     \
         "CA file (PEM) that verifies the broker's certificate; required with amqps://",           \
         &(c)->amqp_tls_ca},                                                                       \
        {"AMQP_TLS_CERT",                                                                          \
         CFG_STR,                                                                                  \
         "",                                                                                       \
         0,                                                                                        \
         4096,                                                                                     \
         "client certificate (PEM) shown to the broker over amqps:// (with AMQP_TLS_KEY)",         \
         &(c)->amqp_tls_cert},                                                                     \
    {                                                                                              \
        "AMQP_TLS_KEY", CFG_STR, "", 0, 4096, "private key (PEM) of AMQP_TLS_CERT",                \
            &(c)->amqp_tls_key                                                                     \
    }

/* The raw settings, as the program's configuration table read them ("" means unset). */
typedef struct mq_settings {
    const char *url_list;   /* AMQP_URL */
    const char *queue_type; /* AMQP_QUEUE_TYPE: classic or quorum */
    const char *tls_ca;     /* AMQP_TLS_CA */
    const char *tls_cert;   /* AMQP_TLS_CERT */
    const char *tls_key;    /* AMQP_TLS_KEY */
    int retry_ttl_ms;       /* RETRY_TTL_MS */
} mq_settings;

/*
 * Splits list at commas (spaces around each URL are dropped) into o->urls and o->names.
 * Returns 0, or -1 with err naming AMQP_URL and the faulty entry (its position, never its
 * text, which may hold a password). o is left empty on failure.
 */
int mq_opts_parse_urls(mq_opts *o, const char *list, char *err, size_t errlen);

/*
 * Fills o from s and checks everything that can be checked without a broker, TLS files
 * included (they are loaded as OpenSSL would load them at connect). The strings of s must
 * outlive o. Returns 0, or -1 with err naming the variable and the problem; free with
 * mq_opts_free either way.
 */
int mq_opts_init(mq_opts *o, const mq_settings *s, char *err, size_t errlen);
void mq_opts_free(mq_opts *o);

/* The broker to try after broker i, round robin. */
size_t mq_opts_next(const mq_opts *o, size_t i);

const char *mq_queue_type_name(mq_queue_type t);

#endif
