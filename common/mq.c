#include "mq.h"

#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "mem.h"
#include "timeutil.h"

#define MQ_CHANNEL 1

struct mq_link {
    amqp_connection_state_t conn;
    const char *broker;     /* "host:port", borrowed from the mq_opts */
    char consumer_tag[256]; /* "" while not consuming */
};

static int reply_error(amqp_rpc_reply_t r, const char *what, char *err, size_t errlen)
{
    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
        return MQ_OK;
    case AMQP_RESPONSE_NONE:
        snprintf(err, errlen, "%s: no reply", what);
        break;
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        snprintf(err, errlen, "%s: %s", what, amqp_error_string2(r.library_error));
        break;
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
            amqp_connection_close_t *m = r.reply.decoded;
            snprintf(err, errlen, "%s: connection closed by the broker: %u %.*s", what,
                     m->reply_code, (int)m->reply_text.len, (const char *)m->reply_text.bytes);
        } else if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
            amqp_channel_close_t *m = r.reply.decoded;
            snprintf(err, errlen, "%s: channel closed by the broker: %u %.*s", what, m->reply_code,
                     (int)m->reply_text.len, (const char *)m->reply_text.bytes);
        } else {
            snprintf(err, errlen, "%s: broker error, method 0x%08x", what, r.reply.id);
        }
        break;
    }
    return MQ_ERR;
}

static amqp_table_entry_t entry_str(const char *key, const char *value)
{
    amqp_table_entry_t e;
    e.key = amqp_cstring_bytes(key);
    e.value.kind = AMQP_FIELD_KIND_UTF8;
    e.value.value.bytes = amqp_cstring_bytes(value);
    return e;
}

static amqp_table_entry_t entry_int(const char *key, int64_t value)
{
    amqp_table_entry_t e;
    e.key = amqp_cstring_bytes(key);
    e.value.kind = AMQP_FIELD_KIND_I64;
    e.value.value.i64 = value;
    return e;
}

/*
 * A declare whose arguments disagree with the existing queue closes the channel with 406
 * PRECONDITION_FAILED; the broker's text names the argument, ours says what to do about it.
 */
static void explain_mismatch(amqp_rpc_reply_t r, const char *queue, mq_queue_type type, char *err,
                             size_t errlen)
{
    if (r.reply_type != AMQP_RESPONSE_SERVER_EXCEPTION || r.reply.id != AMQP_CHANNEL_CLOSE_METHOD)
        return;
    amqp_channel_close_t *m = r.reply.decoded;
    if (m->reply_code != AMQP_PRECONDITION_FAILED)
        return;
    const char *text = m->reply_text.bytes;
    int len = (int)m->reply_text.len;
    if (memmem(text, (size_t)len, "x-queue-type", 12))
        snprintf(err, errlen,
                 "queue %s exists with another queue type than AMQP_QUEUE_TYPE=%s: set the type "
                 "it was created with, or delete the queue (broker: %.*s)",
                 queue, mq_queue_type_name(type), len, text);
    else
        snprintf(err, errlen,
                 "queue %s exists with other arguments than ours (RETRY_TTL_MS or "
                 "AMQP_QUEUE_TYPE differ from the component that created it; broker: %.*s)",
                 queue, len, text);
}

/* args has room for one more entry than n, the queue type. */
static int declare(mq_link *l, const char *queue, mq_queue_type type, amqp_table_entry_t *args,
                   int n, char *err, size_t errlen)
{
    /* Quorum queues are replicated over a majority of the cluster's nodes (RabbitMQ 3.10
     * supports dead-lettering and x-message-ttl on them, which is all we declare). */
    if (type == MQ_QUEUE_QUORUM)
        args[n++] = entry_str("x-queue-type", "quorum");
    /* Classic queues are declared as they always were, without x-queue-type. */
    amqp_queue_declare(l->conn, MQ_CHANNEL, amqp_cstring_bytes(queue), 0, 1, 0, 0,
                       (amqp_table_t){n, args});
    char what[128];
    snprintf(what, sizeof what, "queue.declare %s", queue);
    amqp_rpc_reply_t r = amqp_get_rpc_reply(l->conn);
    if (reply_error(r, what, err, errlen) == MQ_OK)
        return MQ_OK;
    explain_mismatch(r, queue, type, err, errlen);
    return MQ_ERR;
}

static int declare_topology(mq_link *l, const mq_opts *o, char *err, size_t errlen)
{
    amqp_table_entry_t work[3] = {entry_str("x-dead-letter-exchange", ""),
                                  entry_str("x-dead-letter-routing-key", MQ_RETRY_QUEUE)};
    amqp_table_entry_t retry[4] = {entry_str("x-dead-letter-exchange", ""),
                                   entry_str("x-dead-letter-routing-key", MQ_WORK_QUEUE),
                                   entry_int("x-message-ttl", o->retry_ttl_ms)};
    if (declare(l, MQ_WORK_QUEUE, o->queue_type, work, 2, err, errlen) != MQ_OK)
        return MQ_ERR;
    return declare(l, MQ_RETRY_QUEUE, o->queue_type, retry, 3, err, errlen);
}

/* A TLS socket that verifies the broker's certificate chain and its name against the URL. */
static amqp_socket_t *tls_socket(amqp_connection_state_t conn, const mq_opts *o, char *err,
                                 size_t errlen)
{
    amqp_socket_t *sock = amqp_ssl_socket_new(conn);
    if (!sock) {
        snprintf(err, errlen, "cannot create a TLS socket");
        return NULL;
    }
    amqp_ssl_socket_set_verify_peer(sock, 1);
    amqp_ssl_socket_set_verify_hostname(sock, 1);
    if (amqp_ssl_socket_set_cacert(sock, o->tls_ca) != AMQP_STATUS_OK) {
        snprintf(err, errlen, "AMQP_TLS_CA %s: cannot load", o->tls_ca);
        return NULL;
    }
    if (o->tls_cert && amqp_ssl_socket_set_key(sock, o->tls_cert, o->tls_key) != AMQP_STATUS_OK) {
        snprintf(err, errlen, "AMQP_TLS_CERT %s / AMQP_TLS_KEY %s: cannot load", o->tls_cert,
                 o->tls_key);
        return NULL;
    }
    return sock;
}

/* What a TLS failure most likely means, for the operator reading the log. */
static const char *tls_hint(int rc)
{
    switch (rc) {
    case AMQP_STATUS_SSL_PEER_VERIFY_FAILED:
        return " (the broker's certificate does not chain to AMQP_TLS_CA)";
    case AMQP_STATUS_SSL_HOSTNAME_VERIFY_FAILED:
        return " (the broker's certificate does not name the host of the URL)";
    case AMQP_STATUS_SSL_CONNECTION_FAILED:
        return " (is it a TLS port? does the broker accept AMQP_TLS_CERT?)";
    default:
        return "";
    }
}

mq_link *mq_connect(const mq_opts *o, size_t i, char *err, size_t errlen)
{
    struct amqp_connection_info ci;
    char *buf = xstrdup(o->urls[i]);
    mq_link *l = NULL;
    amqp_default_connection_info(&ci);
    if (amqp_parse_url(buf, &ci) != AMQP_STATUS_OK) {
        snprintf(err, errlen, "AMQP_URL broker %zu is not a valid amqp:// URL", i + 1);
        goto fail;
    }
    l = xcalloc(1, sizeof *l);
    l->broker = o->names[i];
    l->conn = amqp_new_connection();
    amqp_socket_t *sock =
        ci.ssl ? tls_socket(l->conn, o, err, errlen) : amqp_tcp_socket_new(l->conn);
    if (!sock)
        goto fail;
    struct timeval tv = {.tv_sec = 5};
    int rc = amqp_socket_open_noblock(sock, ci.host, ci.port, &tv);
    if (rc != AMQP_STATUS_OK) {
        snprintf(err, errlen, "%sconnect %s:%d: %s%s", ci.ssl ? "TLS " : "", ci.host, ci.port,
                 amqp_error_string2(rc), tls_hint(rc));
        goto fail;
    }
    /* A 30 s heartbeat: the owner calls into the library at least every few seconds. */
    amqp_rpc_reply_t r =
        amqp_login(l->conn, ci.vhost, 0, 131072, 30, AMQP_SASL_METHOD_PLAIN, ci.user, ci.password);
    if (reply_error(r, "login", err, errlen) != MQ_OK)
        goto fail;
    /* rabbitmq-c waits forever for a reply by default; a silent broker must not hang us. */
    struct timeval rpc_timeout = {.tv_sec = 10};
    amqp_set_rpc_timeout(l->conn, &rpc_timeout);
    amqp_channel_open(l->conn, MQ_CHANNEL);
    if (reply_error(amqp_get_rpc_reply(l->conn), "channel.open", err, errlen) != MQ_OK)
        goto fail;
    if (declare_topology(l, o, err, errlen) != MQ_OK)
        goto fail;
    free(buf);
    return l;
fail:
    free(buf);
    mq_close(l);
    return NULL;
}

mq_link *mq_connect_any(const mq_opts *o, size_t *cursor, char *err, size_t errlen)
{
    size_t used = 0;
    err[0] = '\0';
    for (size_t k = 0; k < o->n_urls; k++) {
        size_t i = (*cursor + k) % o->n_urls;
        char one[512];
        mq_link *l = mq_connect(o, i, one, sizeof one);
        if (l) {
            *cursor = i;
            return l;
        }
        /* Every broker's reason, in the order tried, as far as err holds them. */
        if (used < errlen) {
            int n =
                snprintf(err + used, errlen - used, "%s%s: %s", used ? "; " : "", o->names[i], one);
            used += n > 0 ? (size_t)n : 0;
        }
    }
    return NULL;
}

void mq_close(mq_link *l)
{
    if (!l)
        return;
    /* A broken connection is simply dropped; a healthy one is closed politely. */
    if (amqp_get_socket(l->conn) && amqp_get_sockfd(l->conn) >= 0) {
        struct timeval quick = {.tv_sec = 1};
        amqp_set_rpc_timeout(l->conn, &quick);
        amqp_channel_close(l->conn, MQ_CHANNEL, AMQP_REPLY_SUCCESS);
        amqp_connection_close(l->conn, AMQP_REPLY_SUCCESS);
    }
    amqp_destroy_connection(l->conn);
    free(l);
}

const char *mq_broker(const mq_link *l)
{
    return l->broker;
}

int mq_fd(mq_link *l)
{
    return amqp_get_sockfd(l->conn);
}

int mq_confirm_mode(mq_link *l, char *err, size_t errlen)
{
    amqp_confirm_select(l->conn, MQ_CHANNEL);
    return reply_error(amqp_get_rpc_reply(l->conn), "confirm.select", err, errlen);
}

int mq_publish(mq_link *l, const void *body, size_t len, uint64_t *seq, char *err, size_t errlen)
{
    amqp_basic_properties_t props;
    memset(&props, 0, sizeof props);
    props._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_CONTENT_TYPE_FLAG;
    props.delivery_mode = AMQP_DELIVERY_PERSISTENT;
    props.content_type = amqp_cstring_bytes("application/x-protobuf");
    amqp_bytes_t b = {.len = len, .bytes = (void *)body};
    int rc = amqp_basic_publish(l->conn, MQ_CHANNEL, amqp_cstring_bytes(""),
                                amqp_cstring_bytes(MQ_WORK_QUEUE), 0, 0, &props, b);
    if (rc != AMQP_STATUS_OK) {
        snprintf(err, errlen, "basic.publish: %s", amqp_error_string2(rc));
        return MQ_ERR;
    }
    (*seq)++;
    return MQ_OK;
}

static void mark(int8_t *acked, uint64_t first, size_t n, uint64_t tag, int multiple, int8_t v)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t s = first + i;
        if ((s == tag || (multiple && s < tag)) && acked[i] == 0)
            acked[i] = v;
    }
}

int mq_wait_confirms(mq_link *l, uint64_t first_seq, int8_t *acked, size_t n, int timeout_ms,
                     char *err, size_t errlen)
{
    int64_t deadline = time_monotonic_ms() + timeout_ms;
    for (;;) {
        size_t open = 0;
        for (size_t i = 0; i < n; i++)
            open += acked[i] == 0;
        if (!open)
            return MQ_OK;
        int64_t left = deadline - time_monotonic_ms();
        if (left <= 0)
            return MQ_TIMEOUT;
        struct timeval tv = {.tv_sec = left / 1000, .tv_usec = (left % 1000) * 1000};
        amqp_frame_t f;
        int rc = amqp_simple_wait_frame_noblock(l->conn, &f, &tv);
        if (rc == AMQP_STATUS_TIMEOUT)
            return MQ_TIMEOUT;
        if (rc != AMQP_STATUS_OK) {
            snprintf(err, errlen, "waiting for confirms: %s", amqp_error_string2(rc));
            return MQ_ERR;
        }
        if (f.frame_type != AMQP_FRAME_METHOD)
            continue;
        if (f.payload.method.id == AMQP_BASIC_ACK_METHOD) {
            amqp_basic_ack_t *a = f.payload.method.decoded;
            mark(acked, first_seq, n, a->delivery_tag, a->multiple, 1);
        } else if (f.payload.method.id == AMQP_BASIC_NACK_METHOD) {
            amqp_basic_nack_t *a = f.payload.method.decoded;
            mark(acked, first_seq, n, a->delivery_tag, a->multiple, -1);
        } else if (f.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD ||
                   f.payload.method.id == AMQP_CONNECTION_CLOSE_METHOD) {
            snprintf(err, errlen, "waiting for confirms: the broker closed the channel");
            return MQ_ERR;
        }
    }
}

int mq_consume(mq_link *l, int prefetch, char *err, size_t errlen)
{
    amqp_basic_qos(l->conn, MQ_CHANNEL, 0, (uint16_t)prefetch, 0);
    if (reply_error(amqp_get_rpc_reply(l->conn), "basic.qos", err, errlen) != MQ_OK)
        return MQ_ERR;
    amqp_basic_consume_ok_t *ok =
        amqp_basic_consume(l->conn, MQ_CHANNEL, amqp_cstring_bytes(MQ_WORK_QUEUE), amqp_empty_bytes,
                           0, 0, 0, amqp_empty_table);
    if (reply_error(amqp_get_rpc_reply(l->conn), "basic.consume", err, errlen) != MQ_OK)
        return MQ_ERR;
    snprintf(l->consumer_tag, sizeof l->consumer_tag, "%.*s", (int)ok->consumer_tag.len,
             (const char *)ok->consumer_tag.bytes);
    return MQ_OK;
}

int mq_cancel(mq_link *l, char *err, size_t errlen)
{
    if (!l->consumer_tag[0])
        return MQ_OK;
    /* Deliveries that arrive before cancel-ok are queued by rabbitmq-c for mq_next. */
    amqp_basic_cancel(l->conn, MQ_CHANNEL, amqp_cstring_bytes(l->consumer_tag));
    l->consumer_tag[0] = '\0';
    return reply_error(amqp_get_rpc_reply(l->conn), "basic.cancel", err, errlen);
}

int mq_has_buffered(mq_link *l)
{
    return amqp_frames_enqueued(l->conn) || amqp_data_in_buffer(l->conn);
}

int mq_next(mq_link *l, int timeout_ms, mq_delivery *d, char *err, size_t errlen)
{
    amqp_envelope_t env;
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    amqp_maybe_release_buffers(l->conn);
    amqp_rpc_reply_t r = amqp_consume_message(l->conn, &env, &tv, 0);
    if (r.reply_type == AMQP_RESPONSE_NORMAL) {
        d->tag = env.delivery_tag;
        d->len = env.message.body.len;
        d->body = xmalloc(d->len);
        memcpy(d->body, env.message.body.bytes, d->len);
        d->redelivered = env.redelivered;
        amqp_destroy_envelope(&env);
        return MQ_OK;
    }
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && r.library_error == AMQP_STATUS_TIMEOUT)
        return MQ_TIMEOUT;
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
        r.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
        /* Something other than a delivery: read it; a close means the link is gone. */
        amqp_frame_t f;
        struct timeval zero = {0, 0};
        if (amqp_simple_wait_frame_noblock(l->conn, &f, &zero) != AMQP_STATUS_OK)
            return MQ_TIMEOUT;
        if (f.frame_type == AMQP_FRAME_METHOD &&
            (f.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD ||
             f.payload.method.id == AMQP_CONNECTION_CLOSE_METHOD)) {
            snprintf(err, errlen, "the broker closed the channel");
            return MQ_ERR;
        }
        /* The queue went away under us: only a new connection (which redeclares it) helps. */
        if (f.frame_type == AMQP_FRAME_METHOD && f.payload.method.id == AMQP_BASIC_CANCEL_METHOD) {
            snprintf(err, errlen, "the broker cancelled the consumer");
            return MQ_ERR;
        }
        return MQ_TIMEOUT;
    }
    return reply_error(r, "consume", err, errlen);
}

int mq_ack(mq_link *l, uint64_t tag)
{
    return amqp_basic_ack(l->conn, MQ_CHANNEL, tag, 0) == AMQP_STATUS_OK ? MQ_OK : MQ_ERR;
}

int mq_nack(mq_link *l, uint64_t tag)
{
    return amqp_basic_nack(l->conn, MQ_CHANNEL, tag, 0, 0) == AMQP_STATUS_OK ? MQ_OK : MQ_ERR;
}

int mq_requeue(mq_link *l, uint64_t tag)
{
    return amqp_basic_nack(l->conn, MQ_CHANNEL, tag, 0, 1) == AMQP_STATUS_OK ? MQ_OK : MQ_ERR;
}
