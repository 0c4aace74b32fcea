#include "heartbeat.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "calc.pb-c.h"
#include "log.h"
#include "mem.h"
#include "methods.h"
#include "timeutil.h"

/* Sets the health file's time to now (creating it), so its age says how long ago the agent was
 * last healthy. A failure is logged once per change, like the heartbeat's own. */
static void touch_health_file(heartbeat *hb)
{
    const char *path = hb->s->health_file;
    if (!path || !path[0])
        return;
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    int ok = fd >= 0 && futimens(fd, NULL) == 0, e = errno;
    if (fd >= 0)
        close(fd);
    if (!ok && !hb->health_failing)
        log_warn("agent=%s: AGENT_HEALTH_FILE %s: %s", hb->s->name, path, strerror(e));
    hb->health_failing = !ok;
}

/* One Heartbeat call with the nodes in hand (nodes: room for one per worker); returns its code,
 * with err set on a failure. */
static int send_beat(agent_shared *s, int64_t *nodes, int64_t interval_ms, int *busy, char *err,
                     size_t errlen)
{
    Calc__V1__HeartbeatRequest req = CALC__V1__HEARTBEAT_REQUEST__INIT;
    req.n_nodes = hand_snapshot(s->hand, nodes);
    req.nodes = nodes;
    req.agent = (char *)s->name;
    req.workers = s->hand->workers;
    req.busy = (int32_t)req.n_nodes;
    *busy = req.busy;
    Calc__V1__Empty *rep = NULL;
    int64_t timeout = interval_ms + 1000;
    int rc =
        rpc_call(s->dba, DBA_HEARTBEAT, &req.base, &calc__v1__empty__descriptor,
                 (ProtobufCMessage **)&rep, (int)(timeout > 10000 ? 10000 : timeout), err, errlen);
    hand_snapshot_done(s->hand);
    if (rc == RPC_OK)
        protobuf_c_message_free_unpacked(&rep->base, NULL);
    return rc;
}

int heartbeat_check(agent_shared *s, int64_t interval_ms, char *err, size_t errlen)
{
    int64_t *nodes = xcalloc((size_t)s->hand->workers, sizeof *nodes);
    int busy;
    int rc = send_beat(s, nodes, interval_ms, &busy, err, errlen);
    free(nodes);
    return rc;
}

static void beat(heartbeat *hb, int64_t *nodes)
{
    agent_shared *s = hb->s;
    char err[256];
    int busy;
    int rc = send_beat(s, nodes, hb->interval_ms, &busy, err, sizeof err);
    if (worker_refused(rc, err))
        worker_note_refusal(s, "Heartbeat", rc, err);
    if (rc == RPC_OK) {
        if (hb->failing)
            log_info("Heartbeat agent=%s: dbagent answers again", s->name);
        hb->failing = 0;
        if (atomic_load(&s->consuming))
            touch_health_file(hb);
    } else if (!hb->failing) {
        log_warn("Heartbeat agent=%s busy=%d: %s (code %d)", s->name, busy, err, rc);
        hb->failing = 1;
    }
}

static void *heartbeat_main(void *p)
{
    heartbeat *hb = p;
    int64_t *nodes = xcalloc((size_t)hb->s->hand->workers, sizeof *nodes);
    int64_t next = time_monotonic_ms();
    while (!atomic_load(&hb->stop)) {
        beat(hb, nodes);
        /* A fixed rate, not a fixed pause: a slow call does not stretch the period. */
        next += hb->interval_ms;
        int64_t now = time_monotonic_ms();
        if (next < now)
            next = now;
        time_sleep_ms(next - now, &hb->stop);
    }
    free(nodes);
    return NULL;
}

int heartbeat_start(heartbeat *hb, agent_shared *s, int64_t interval_ms)
{
    hb->s = s;
    hb->interval_ms = interval_ms;
    atomic_init(&hb->stop, 0);
    hb->failing = 0;
    hb->health_failing = 0;
    return pthread_create(&hb->thread, NULL, heartbeat_main, hb);
}

void heartbeat_stop(heartbeat *hb)
{
    atomic_store(&hb->stop, 1);
    pthread_join(hb->thread, NULL);
    int64_t *nodes = xcalloc((size_t)hb->s->hand->workers, sizeof *nodes);
    beat(hb, nodes);
    free(nodes);
}
