#include "streams.h"

#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "backoff.h"
#include "dba.h"
#include "log.h"
#include "mem.h"
#include "methods.h"
#include "metrics.h"
#include "rpc.h"
#include "timeutil.h"

#define BUCKETS       1024
#define NOT_IN_POLL   (-2)
#define FRAME_MAX     (64 * 1024) /* one event's frame; a node's error is bounded by dbagent */
#define TICK_MAX_MS   100
#define READ_BLOCK    (16 * 1024)
#define PAGE_MAX      200
#define FRAME_TYPICAL 1024 /* an event's frame is a few hundred bytes; an error's up to ~800 */
#define LIFETIME_NOTE ": this stream's lifetime is over: reopen it after your last id\n\n"

typedef struct hub_user hub_user;

struct stream {
    struct MHD_Connection *conn;
    int fd;
    int64_t user;
    int64_t pos;   /* the seq of the last event framed; under hb.mu once linked */
    int online;    /* the online marker is framed */
    int suspended; /* the reader suspended the connection; whoever appends resumes it */
    int ending;    /* no more frames: what is held is sent, then the stream ends */
    int cut;       /* a frame did not fit its cap: it ends now, what is held is dropped */
    int held; /* over half its cap: out of the polls until its client has read (see over_half) */
    buf out;  /* frames not yet sent, capped */
    int64_t keepalive_due, ends_at; /* monotonic ms */
    stream *prev, *next;            /* every stream */
    stream *next_of_user;
    hub_user *hu;
};

struct hub_user {
    int64_t user;
    stream *streams;
    int64_t poll_after; /* its position in the poll in flight, or NOT_IN_POLL */
    int poll_head;      /* the poll in flight asks for its head */
    hub_user *next;     /* in its bucket */
};

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* a user to watch, or the stop */
    pthread_cond_t tick_cv; /* a held stream was read down (CLOCK_MONOTONIC), or the stop */
    int drained;            /* a held stream was read down: the ticker lets it back in */
    stream *all;
    hub_user *table[BUCKETS];
    int n_streams, n_users;
    int64_t gen; /* moves when the poll must start again with new positions */
    int in_poll; /* the hub waits in WatchEvents */
    int accepting;
    int started;
    int page;
    streams_settings cfg;
    char watch_id[48];
    pthread_t hub, ticker;
} hb = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static atomic_int stop;
static atomic_llong n_opened, n_received, n_sent, n_wakeups, n_polls, n_cut, n_held;

/* ---- frames ---- */

/* Appends e's frame to b: id, event and one line of JSON with the payload's fields flattened.
 * Events written before nodes' events were named "node" read as "node_done" {"node", "value"}. */
static void event_frame(buf *b, const Calc__V1__Event *e)
{
    int legacy = !strcmp(e->kind, "node_done");
    const char *kind = legacy ? "node" : e->kind;
    json_t *o = json_pack("{s:I, s:I, s:s, s:I}", "seq", (json_int_t)e->seq, "expression_id",
                          (json_int_t)e->expression_id, "kind", kind, "at_ms",
                          (json_int_t)e->created_at_ms);
    json_t *payload = json_loads(e->payload, 0, NULL);
    const char *k;
    json_t *v;
    if (json_is_object(payload))
        json_object_foreach(payload, k, v)
        {
            const char *name = legacy && !strcmp(k, "node") ? "node_id" : k;
            if (!json_object_get(o, name))
                json_object_set(o, name, v);
        }
    json_decref(payload);
    char *data = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (buf_printf(b, "id: %lld\nevent: %s\ndata: %s\n\n", (long long)e->seq, kind, data) < 0)
        log_warn("streams: event %lld of %s is over %d bytes: not sent", (long long)e->seq, kind,
                 FRAME_MAX);
    free(data);
}

/* With the id of the position it marks: a client that got no event before it reconnects, its
 * EventSource sends that id back as Last-Event-ID, and misses nothing of the gap. */
static void online_frame(buf *b, int64_t seq)
{
    if (buf_printf(b, "id: %lld\nevent: online\ndata: {\"seq\":%lld}\n\n", (long long)seq,
                   (long long)seq) < 0)
        abort(); /* a few bytes under FRAME_MAX */
}

/* ---- one stream, under hb.mu ---- */

static void wake_locked(stream *s)
{
    if (s->suspended) {
        s->suspended = 0;
        MHD_resume_connection(s->conn);
    }
}

/* Over its cap: its client reads too slowly. The socket is shut down so that libmicrohttpd
 * closes the connection even while the client reads nothing. */
static void cut_locked(stream *s)
{
    if (s->cut)
        return;
    s->cut = s->ending = 1;
    buf_consume(&s->out, s->out.len);
    shutdown(s->fd, SHUT_RDWR);
    atomic_fetch_add(&n_cut, 1);
    log_info("streams: user %lld's stream cut at seq %lld: a frame over what is left of "
             "STREAM_BUFFER_BYTES=%lld",
             (long long)s->user, (long long)s->pos, (long long)hb.cfg.buffer_bytes);
    wake_locked(s);
}

/*
 * Flow control. A stream whose client has left more than half its cap unread is held: it is
 * given no more frames and left out of the polls, its position standing where it stopped. So
 * neither a replay nor a burst of live events overflows a slow client's stream, and a poll does
 * not come back at once for a stream that cannot take anything. When its client has read it
 * down to a quarter, the ticker lets it back into the polls, and the log gives it what it
 * missed meanwhile: a slow client is sent its events at the pace it reads them, and is not cut
 * for it. Only a frame bigger than what is left of the cap cuts a stream.
 */
static int over_half(const stream *s)
{
    return s->out.len > (size_t)hb.cfg.buffer_bytes / 2;
}

static void hold_locked(stream *s)
{
    if (!s->held)
        atomic_fetch_add(&n_held, 1);
    s->held = 1;
}

static int read_down(const stream *s)
{
    return s->out.len <= (size_t)hb.cfg.buffer_bytes / 4;
}

static void append_locked(stream *s, const char *data, size_t len)
{
    if (s->ending)
        return;
    if (buf_add(&s->out, data, len) < 0) {
        cut_locked(s);
        return;
    }
    s->keepalive_due = time_monotonic_ms() + hb.cfg.keepalive_ms;
    wake_locked(s);
}

static ssize_t read_stream(void *cls, uint64_t at, char *out, size_t max)
{
    stream *s = cls;
    (void)at;
    pthread_mutex_lock(&hb.mu);
    ssize_t n;
    if (s->cut) {
        n = MHD_CONTENT_READER_END_WITH_ERROR;
    } else if (s->out.len) {
        size_t take = s->out.len < max ? s->out.len : max;
        memcpy(out, s->out.data, take);
        buf_consume(&s->out, take);
        n = (ssize_t)take;
        if (s->held && read_down(s) && !hb.drained) {
            hb.drained = 1;
            pthread_cond_signal(&hb.tick_cv);
        }
    } else if (s->ending) {
        n = MHD_CONTENT_READER_END_OF_STREAM;
    } else {
        /* Nothing to send: libmicrohttpd would call again at once. Under the lock, so that an
         * append cannot miss the suspension. */
        s->suspended = 1;
        MHD_suspend_connection(s->conn);
        n = 0;
    }
    pthread_mutex_unlock(&hb.mu);
    return n;
}

/* ---- users ---- */

static hub_user **bucket(int64_t user)
{
    return &hb.table[(uint64_t)user % BUCKETS];
}

static hub_user *find_user(int64_t user)
{
    for (hub_user *u = *bucket(user); u; u = u->next)
        if (u->user == user)
            return u;
    return NULL;
}

static void free_stream(void *cls)
{
    stream *s = cls;
    pthread_mutex_lock(&hb.mu);
    if (s->hu) {
        *(s->prev ? &s->prev->next : &hb.all) = s->next;
        if (s->next)
            s->next->prev = s->prev;
        stream **p = &s->hu->streams;
        while (*p != s)
            p = &(*p)->next_of_user;
        *p = s->next_of_user;
        if (!s->hu->streams) {
            hub_user **q = bucket(s->user);
            while (*q != s->hu)
                q = &(*q)->next;
            *q = s->hu->next;
            free(s->hu);
            hb.n_users--;
        }
        hb.n_streams--;
    }
    pthread_mutex_unlock(&hb.mu);
    buf_free(&s->out);
    free(s);
}

/* 1 when the poll in flight does not serve s: it does not cover its position (or its head).
 * Under mu. */
static int poll_misses_locked(const stream *s)
{
    const hub_user *u = s->hu;
    return u->poll_after == NOT_IN_POLL || s->pos < u->poll_after || (!s->online && !u->poll_head);
}

/* Tells dbagent to end the poll in flight (its positions are older than gen). */
static void wake_poll(int64_t gen)
{
    char err[256];
    if (dba_wake_watch(hb.watch_id, gen, (int)hb.cfg.dba_timeout_ms, err, sizeof err) != RPC_OK)
        log_warn("streams: WakeWatch: %s (new streams wait for the poll in flight to end)", err);
}

stream *streams_open(http_req *r, int64_t after, const Calc__V1__WatchEventsReply *rep)
{
    stream *s = xcalloc(1, sizeof *s);
    s->conn = r->conn;
    s->user = r->user_id;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    s->fd = ci ? ci->connect_fd : -1;
    buf_init(&s->out, (size_t)hb.cfg.buffer_bytes);
    int64_t head = 0;
    for (size_t i = 0; i < rep->n_heads; i++)
        if (rep->heads[i]->user_id == s->user && rep->heads[i]->head_seq > head)
            head = rep->heads[i]->head_seq;
    s->pos = after < 0 ? head : after;
    /* The first page, as far as it fits: the hub carries on from the last that did. */
    size_t framed = 0;
    buf frame;
    buf_init(&frame, FRAME_MAX);
    for (; framed < rep->n_events; framed++) {
        const Calc__V1__Event *e = rep->events[framed]->event;
        if (e->seq != s->pos + 1)
            break;
        event_frame(&frame, e);
        if (buf_add(&s->out, frame.data, frame.len) < 0)
            break;
        buf_consume(&frame, frame.len);
        s->pos = e->seq;
    }
    if (framed == rep->n_events && rep->n_events < (size_t)hb.page && s->pos >= head) {
        online_frame(&frame, s->pos);
        s->online = buf_add(&s->out, frame.data, frame.len) == 0;
    }
    buf_free(&frame);
    /* The kernel's send buffer would otherwise hold megabytes the cap does not count. */
    int sndbuf = (int)hb.cfg.buffer_bytes;
    if (s->fd >= 0)
        setsockopt(s->fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    int64_t now = time_monotonic_ms();
    s->keepalive_due = now + hb.cfg.keepalive_ms;
    s->ends_at = now + hb.cfg.lifetime_ms;

    pthread_mutex_lock(&hb.mu);
    if (!hb.accepting) {
        pthread_mutex_unlock(&hb.mu);
        buf_free(&s->out);
        free(s);
        return NULL;
    }
    s->next = hb.all;
    if (hb.all)
        hb.all->prev = s;
    hb.all = s;
    hub_user *u = find_user(s->user);
    if (!u) {
        u = xcalloc(1, sizeof *u);
        u->user = s->user;
        u->poll_after = NOT_IN_POLL;
        u->next = *bucket(s->user);
        *bucket(s->user) = u;
        hb.n_users++;
    }
    s->hu = u;
    s->next_of_user = u->streams;
    u->streams = s;
    hb.n_streams++;
    int restart = poll_misses_locked(s);
    int64_t gen = restart ? ++hb.gen : 0;
    int in_poll = hb.in_poll;
    pthread_cond_broadcast(&hb.cv);
    pthread_mutex_unlock(&hb.mu);
    atomic_fetch_add(&n_opened, 1);
    if (restart && in_poll)
        wake_poll(gen);
    r->stream = s;
    r->status = 200;
    return s;
}

struct MHD_Response *streams_response(stream *s)
{
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, READ_BLOCK,
                                                                  read_stream, s, free_stream);
    MHD_add_response_header(resp, "Content-Type", "text/event-stream");
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no"); /* proxies: pass frames at once */
    return resp;
}

/* ---- the hub ---- */

/* The positions of every watched user, into req (memory from the caller's arrays). Under mu. */
static size_t positions_locked(Calc__V1__WatchPosition *pos, Calc__V1__WatchPosition **ptr,
                               size_t cap)
{
    size_t n = 0;
    for (int b = 0; b < BUCKETS; b++)
        for (hub_user *u = hb.table[b]; u && n < cap; u = u->next) {
            int64_t after = INT64_MAX;
            int head = 0;
            for (stream *s = u->streams; s; s = s->next_of_user) {
                if (s->ending)
                    continue;
                if (s->held || over_half(s)) {
                    hold_locked(s);
                    continue;
                }
                if (s->pos < after)
                    after = s->pos;
                head |= !s->online;
            }
            if (after == INT64_MAX)
                continue; /* only ending streams */
            calc__v1__watch_position__init(&pos[n]);
            pos[n].user_id = u->user;
            pos[n].after_seq = after;
            pos[n].want_head = head;
            u->poll_after = after;
            u->poll_head = head;
            ptr[n] = &pos[n];
            n++;
        }
    return n;
}

static void poll_ended_locked(void)
{
    hb.in_poll = 0;
    for (int b = 0; b < BUCKETS; b++)
        for (hub_user *u = hb.table[b]; u; u = u->next)
            u->poll_after = NOT_IN_POLL;
}

/* The reply's events and heads, to the streams of their users. Under mu; frames[i] is the
 * frame of rep->events[i]. */
static void deliver_locked(const Calc__V1__WatchEventsReply *rep, buf *frames)
{
    int64_t last_user = 0;
    for (size_t i = 0; i < rep->n_events; i++) {
        const Calc__V1__UserEvent *ue = rep->events[i];
        if (ue->user_id != last_user)
            atomic_fetch_add(&n_wakeups, 1);
        last_user = ue->user_id;
        hub_user *u = find_user(ue->user_id);
        for (stream *s = u ? u->streams : NULL; s; s = s->next_of_user) {
            /* Just after its position, or not now: one that opened lower than this poll asked
             * gets the events between in the next. */
            if (s->ending || s->held || ue->event->seq != s->pos + 1)
                continue;
            if (over_half(s)) {
                hold_locked(s); /* the rest comes from the log once its client has read */
                continue;
            }
            append_locked(s, frames[i].data, frames[i].len);
            if (s->cut)
                continue; /* over its cap: nothing more goes to it */
            s->pos = ue->event->seq;
            atomic_fetch_add(&n_sent, 1);
        }
    }
    atomic_fetch_add(&n_received, (long long)rep->n_events);
    buf online;
    buf_init(&online, FRAME_MAX);
    for (size_t i = 0; i < rep->n_heads; i++) {
        const Calc__V1__UserHead *h = rep->heads[i];
        hub_user *u = find_user(h->user_id);
        for (stream *s = u ? u->streams : NULL; s; s = s->next_of_user) {
            if (s->ending || s->held)
                continue; /* a held stream hears its heads when it is back in the polls */
            if (s->pos < h->purged_seq) {
                /* Retention deleted events it has not had: its client reopens and hears 410. */
                s->ending = 1;
                wake_locked(s);
            } else if (!s->online && s->pos >= h->head_seq) {
                online_frame(&online, s->pos);
                append_locked(s, online.data, online.len);
                buf_consume(&online, online.len);
                s->online = 1;
            }
        }
    }
    buf_free(&online);
}

static void *hub_main(void *arg)
{
    (void)arg;
    backoff pause;
    backoff_init(&pause, 100, 2000);
    int failing = 0;
    while (!atomic_load(&stop)) {
        pthread_mutex_lock(&hb.mu);
        while (!atomic_load(&stop) && hb.n_users == 0)
            pthread_cond_wait(&hb.cv, &hb.mu);
        size_t cap = (size_t)hb.n_users;
        Calc__V1__WatchPosition *pos = xcalloc(cap ? cap : 1, sizeof *pos);
        Calc__V1__WatchPosition **ptr = xcalloc(cap ? cap : 1, sizeof *ptr);
        Calc__V1__WatchEventsRequest req = CALC__V1__WATCH_EVENTS_REQUEST__INIT;
        req.n_positions = positions_locked(pos, ptr, cap);
        req.positions = ptr;
        req.watch_id = hb.watch_id;
        req.watch_gen = hb.gen;
        req.wait_ms = (int32_t)hb.cfg.watch_wait_ms;
        req.limit = hb.page;
        hb.in_poll = 1;
        pthread_mutex_unlock(&hb.mu);

        Calc__V1__WatchEventsReply *rep = NULL;
        char err[256];
        int rc = RPC_OK;
        if (req.n_positions && !atomic_load(&stop)) {
            rc = rpc_call(dba, DBA_WATCH_EVENTS, &req.base,
                          &calc__v1__watch_events_reply__descriptor, (ProtobufCMessage **)&rep,
                          (int)(hb.cfg.watch_wait_ms + hb.cfg.dba_timeout_ms), err, sizeof err);
            atomic_fetch_add(&n_polls, 1);
        } else {
            time_sleep_ms(TICK_MAX_MS, &stop); /* only ending streams: they go soon */
        }
        buf *frames = NULL;
        if (rep) {
            frames = xcalloc(rep->n_events + 1, sizeof *frames);
            for (size_t i = 0; i < rep->n_events; i++) {
                buf_init(&frames[i], FRAME_MAX);
                event_frame(&frames[i], rep->events[i]->event);
            }
        }
        pthread_mutex_lock(&hb.mu);
        poll_ended_locked();
        if (rep)
            deliver_locked(rep, frames);
        pthread_mutex_unlock(&hb.mu);
        for (size_t i = 0; rep && i < rep->n_events; i++)
            buf_free(&frames[i]);
        free(frames);
        free(pos);
        free(ptr);
        if (rep)
            protobuf_c_message_free_unpacked(&rep->base, NULL);
        if (rc != RPC_OK) {
            /* Nothing is lost: the positions stay, and the next poll starts from them. */
            if (!failing++)
                log_warn("streams: WatchEvents: %s (retrying)", err);
            backoff_sleep(&pause, &stop);
        } else {
            if (failing)
                log_info("streams: WatchEvents answers again");
            failing = 0;
            backoff_reset(&pause);
        }
    }
    return NULL;
}

/* ---- keep-alives and lifetimes ---- */

/* Lets a held stream that was read down back into the polls; 1 when the poll in flight does
 * not cover it and must start again. Under mu. */
static int release_locked(stream *s)
{
    s->held = 0;
    return poll_misses_locked(s);
}

static void *ticker_main(void *arg)
{
    (void)arg;
    int64_t tick = hb.cfg.keepalive_ms / 2 < TICK_MAX_MS ? hb.cfg.keepalive_ms / 2 : TICK_MAX_MS;
    static const char keepalive[] = ": keep-alive\n\n";
    pthread_mutex_lock(&hb.mu);
    while (!atomic_load(&stop)) {
        /* Every tick, and at once when a held stream was read down. */
        if (!hb.drained) {
            struct timespec ts = deadline_timespec(tick);
            pthread_cond_timedwait(&hb.tick_cv, &hb.mu, &ts);
        }
        hb.drained = 0;
        int64_t now = time_monotonic_ms();
        int restart = 0;
        for (stream *s = hb.all; s; s = s->next) {
            if (s->ending)
                continue;
            if (s->held && read_down(s))
                restart |= release_locked(s);
            if (now >= s->ends_at) {
                append_locked(s, LIFETIME_NOTE, sizeof LIFETIME_NOTE - 1);
                s->ending = 1;
                wake_locked(s);
            } else if (now >= s->keepalive_due && s->out.len == 0) {
                /* Only to an idle stream: one with frames waiting is not idle. */
                append_locked(s, keepalive, sizeof keepalive - 1);
            }
        }
        if (restart) {
            int64_t gen = ++hb.gen;
            int in_poll = hb.in_poll;
            pthread_cond_broadcast(&hb.cv);
            pthread_mutex_unlock(&hb.mu);
            if (in_poll)
                wake_poll(gen);
            pthread_mutex_lock(&hb.mu);
        }
    }
    pthread_mutex_unlock(&hb.mu);
    return NULL;
}

int streams_page(void)
{
    return hb.page;
}

int streams_start(const streams_settings *settings)
{
    hb.cfg = *settings;
    int64_t fit = settings->buffer_bytes / FRAME_TYPICAL;
    hb.page = fit < 1 ? 1 : fit > PAGE_MAX ? PAGE_MAX : (int)fit;
    unsigned char r[8];
    randombytes_buf(r, sizeof r);
    char hex[sizeof r * 2 + 1];
    sodium_bin2hex(hex, sizeof hex, r, sizeof r);
    snprintf(hb.watch_id, sizeof hb.watch_id, "api-%d-%s", (int)getpid(), hex);
    atomic_store(&stop, 0);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&hb.tick_cv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&hb.hub, NULL, hub_main, NULL) != 0)
        return -1;
    if (pthread_create(&hb.ticker, NULL, ticker_main, NULL) != 0) {
        atomic_store(&stop, 1);
        pthread_mutex_lock(&hb.mu);
        pthread_cond_broadcast(&hb.cv);
        pthread_mutex_unlock(&hb.mu);
        pthread_join(hb.hub, NULL);
        return -1;
    }
    pthread_mutex_lock(&hb.mu);
    hb.accepting = hb.started = 1;
    pthread_mutex_unlock(&hb.mu);
    return 0;
}

void streams_stop(void)
{
    pthread_mutex_lock(&hb.mu);
    int was = hb.started;
    hb.accepting = hb.started = 0;
    atomic_store(&stop, 1);
    for (stream *s = hb.all; s; s = s->next) {
        s->ending = 1;
        wake_locked(s);
    }
    int64_t gen = ++hb.gen;
    int in_poll = hb.in_poll;
    pthread_cond_broadcast(&hb.cv);
    if (was)
        pthread_cond_broadcast(&hb.tick_cv);
    pthread_mutex_unlock(&hb.mu);
    if (!was)
        return;
    if (in_poll)
        wake_poll(gen);
    pthread_join(hb.hub, NULL);
    pthread_join(hb.ticker, NULL);
}

void streams_metrics(buf *b)
{
    pthread_mutex_lock(&hb.mu);
    int streams = hb.n_streams, users = hb.n_users;
    pthread_mutex_unlock(&hb.mu);
    static const struct {
        const char *name, *type, *help;
    } fam[] = {
        {"calc_event_streams", "gauge", "GET /events streams open on this API instance"},
        {"calc_event_stream_users", "gauge", "users with a stream open here (watched in one poll)"},
        {"calc_event_streams_opened_total", "counter", "GET /events streams opened here"},
        {"calc_stream_watch_polls_total", "counter", "WatchEvents long polls this instance made"},
        {"calc_stream_user_wakeups_total", "counter",
         "users whose new events a WatchEvents reply brought to this instance"},
        {"calc_stream_events_received_total", "counter",
         "events WatchEvents brought to this instance (only its streams' users')"},
        {"calc_stream_events_sent_total", "counter",
         "event frames queued to this instance's streams"},
        {"calc_event_streams_held_total", "counter",
         "times a stream was held back because its client had not read half of "
         "STREAM_BUFFER_BYTES"},
        {"calc_event_streams_cut_total", "counter",
         "streams closed because a frame did not fit what was left of STREAM_BUFFER_BYTES"},
    };
    long long v[] = {streams,
                     users,
                     atomic_load(&n_opened),
                     atomic_load(&n_polls),
                     atomic_load(&n_wakeups),
                     atomic_load(&n_received),
                     atomic_load(&n_sent),
                     atomic_load(&n_held),
                     atomic_load(&n_cut)};
    for (size_t i = 0; i < sizeof fam / sizeof fam[0]; i++) {
        metrics_family(b, fam[i].name, fam[i].type, fam[i].help);
        metrics_i64(b, fam[i].name, NULL, v[i]);
    }
}
