"""calc-agent against real RabbitMQ, PostgreSQL and dbagent (issue 5).

The worker bound, a crashed agent, a restarted broker, an absent dbagent (the retry queue), a clean
stop and a node that keeps failing. Node timings come from the nodes table (started_at is the claim,
finished_at the completion), never from sleeps in the test.
"""

import os
import re
import subprocess
import time

import pytest

import harness
from dbagent_helpers import end_transaction, hold_transaction
from proxy import CuttingProxy

OPS_ZERO = {"+": 0, "-": 0, "*": 0, "/": 0}


# --- helpers ---------------------------------------------------------------------------------------
def sql(cluster, query):
    """Rows of a query on the test's database, as lists of strings."""
    out = cluster.servers.psql(query, db=cluster.db)
    return [line.split("|") for line in out.splitlines() if line]


def set_durations(cluster, **ms):
    admin = cluster.admin_client()
    durations = dict(OPS_ZERO)
    durations.update({{"plus": "+", "minus": "-", "times": "*", "div": "/"}[k]: v for k, v in ms.items()})
    r = admin.post("/duration", json=durations)
    assert r.status_code == 200, r.text


def user(cluster, login="agentuser"):
    api = cluster.api_client()
    api.register(login, "password1")
    api.login()
    return api


def submit(api, text):
    r = api.post("/expression", json={"expression": text})
    assert r.status_code == 200, r.text
    return r.json()["expression"]["expression_id"]


def expression(api, eid):
    r = api.get(f"/expression/{eid}")
    assert r.status_code == 200, r.text
    return r.json()["expression"]


def wait_done(cluster, api, eids, timeout):
    """Waits until every expression is Ok or Error; returns {id: expression}."""
    done = {}

    def all_done():
        for eid in eids:
            if eid not in done:
                e = expression(api, eid)
                if e["status"] in ("Ok", "Error"):
                    done[eid] = e
        return len(done) == len(eids)

    cluster.wait_for(all_done, timeout, f"{len(eids)} expressions to finish ({len(done)} finished)", 0.1)
    return done


def agents(cluster):
    return [p for p in cluster.procs if p.name.startswith("agent")]


def wait_consuming(cluster, procs=None, timeout=30):
    """Every agent (or those given) has a consumer on the work queue."""
    for p in procs or agents(cluster):
        cluster.wait_for(lambda p=p: "consuming calc.work" in p.log() or cluster._check_alive(p), timeout,
                         f"{p.name} to consume")


def running_node(cluster, attempts=None):
    """(id, agent, attempts) of the first running node, or None."""
    extra = f" AND attempts = {attempts}" if attempts else ""
    rows = sql(cluster, f"SELECT id, agent, attempts FROM nodes WHERE state = 'running'{extra} ORDER BY id LIMIT 1")
    return (int(rows[0][0]), rows[0][1], int(rows[0][2])) if rows else None


def proc_named(cluster, name):
    return next(p for p in cluster.procs if p.name == name and p.alive())


def max_overlap(intervals):
    """The largest number of [start, end) intervals open at one moment."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    best = cur = 0
    for _, d in events:  # an end sorts before a start at the same instant
        cur += d
        best = max(best, cur)
    return best


# --- the worker bound ------------------------------------------------------------------------------
@pytest.mark.cluster(agents=2, env={"AGENT_MAX_PROCESSES": "4"})
def test_worker_bound_holds_and_two_agents_run_eight_at_once(cluster):
    set_durations(cluster, plus=400)
    wait_consuming(cluster)
    api = user(cluster)
    eids = [submit(api, f"{i}+1000") for i in range(16)]
    done = wait_done(cluster, api, eids, 60)
    for i, eid in enumerate(eids):
        assert done[eid]["status"] == "Ok" and done[eid]["result"] == i + 1000

    rows = sql(cluster, "SELECT agent, extract(epoch FROM started_at) * 1000, extract(epoch FROM finished_at) * 1000"
                        " FROM nodes WHERE state = 'done'")
    assert len(rows) == 16
    per_agent = {}
    for agent, start, end in rows:
        per_agent.setdefault(agent, []).append((float(start), float(end)))
    assert set(per_agent) == {"agent-1", "agent-2"}
    for agent, intervals in per_agent.items():
        assert max_overlap(intervals) <= 4, f"{agent} ran more than AGENT_MAX_PROCESSES nodes at once"
    everything = [iv for ivs in per_agent.values() for iv in ivs]
    assert max_overlap(everything) == 8, "two agents of 4 workers should run 8 nodes at once"


# --- a crashed agent -------------------------------------------------------------------------------
@pytest.mark.cluster(agents=2)
def test_kill_9_mid_node_another_agent_recomputes_it(cluster):
    set_durations(cluster, times=1500)
    wait_consuming(cluster)
    api = user(cluster)
    eid = submit(api, "6*7")
    node, holder, _ = cluster.wait_for(lambda: running_node(cluster), 30, "the node to run")
    proc_named(cluster, holder).kill()

    e = wait_done(cluster, api, [eid], 30)[eid]
    assert e["status"] == "Ok" and e["result"] == 42
    [(state, agent, epoch, attempts)] = sql(cluster, f"SELECT state, agent, epoch, attempts FROM nodes WHERE id = {node}")
    assert state == "done"
    assert agent != holder, "the survivor must have recomputed the node"
    assert int(epoch) >= 2 and int(attempts) == 2


# --- the broker restarted --------------------------------------------------------------------------
@pytest.mark.cluster(agents=2, env={"AMQP_RECONNECT_MAX_MS": "1000"})
def test_rabbitmq_restarted_mid_run_every_expression_finishes(cluster):
    set_durations(cluster, plus=300, times=300)
    wait_consuming(cluster)
    api = user(cluster)
    texts = [f"{i}+1+2*3+4*{i}" for i in range(12)]  # 4 nodes each, 3 levels
    eids = [submit(api, t) for t in texts]
    cluster.wait_for(lambda: int(sql(cluster, "SELECT count(*) FROM nodes WHERE state = 'done'")[0][0]) >= 4, 30,
                     "some nodes to finish")
    cluster.servers.stop_rabbitmq()
    for p in agents(cluster):
        cluster.wait_for(lambda p=p: "RabbitMQ connection lost" in p.log(), 30, f"{p.name} to notice")
    cluster.servers.start_rabbitmq()

    done = wait_done(cluster, api, eids, 90)
    for i, eid in enumerate(eids):
        assert done[eid]["status"] == "Ok", done[eid]
        assert done[eid]["result"] == i + 1 + 6 + 4 * i
    for p in agents(cluster):
        assert "connection 2)" in p.log(), f"{p.name} did not reconnect"


# --- dbagent away longer than RETRY_TTL_MS ---------------------------------------------------------
@pytest.mark.cluster(agents=1, env={"AGENT_MAX_PROCESSES": "1", "RETRY_TTL_MS": "1000", "COMPLETE_RETRY_MS": "30000"})
def test_dbagent_away_longer_than_retry_ttl_messages_pass_through_the_retry_queue(cluster):
    set_durations(cluster, plus=300)
    wait_consuming(cluster)
    api = user(cluster)
    eids = [submit(api, f"{i}+0.5") for i in range(8)]
    cluster.wait_for(lambda: int(sql(cluster, "SELECT count(*) FROM nodes WHERE state = 'done'")[0][0]) >= 1, 30,
                     "a node to finish")
    dbagent = proc_named(cluster, "dbagent")
    assert cluster.stop(dbagent) == 0
    # A second agent joins during the outage: its claims fail and its messages go to the retry
    # queue, come back after RETRY_TTL_MS, fail again... (agent-1 holds its node and retries the
    # completion meanwhile).
    second = cluster.start_agent(AGENT_MAX_PROCESSES="4")
    nacked = re.compile(r"node=(\d+) epoch=\d+ agent=agent-2: ClaimNode: .*: to the retry queue")

    def came_back():
        seen = {}
        for n in nacked.findall(second.log()):
            seen[n] = seen.get(n, 0) + 1
        return any(v >= 2 for v in seen.values())

    cluster.wait_for(lambda: cluster.servers.queue_counts(cluster.vhost).get("calc.retry", 0) > 0, 30,
                     "messages in the retry queue")
    cluster.wait_for(came_back, 30, "a message to come back from the retry queue and be nacked again")
    cluster.restart(dbagent)

    done = wait_done(cluster, api, eids, 60)
    for i, eid in enumerate(eids):
        assert done[eid]["status"] == "Ok" and done[eid]["result"] == i + 0.5
    cluster.wait_for(lambda: cluster.servers.queue_counts(cluster.vhost) == {"calc.work": 0, "calc.retry": 0}, 30,
                     "both queues to be empty")


# --- the health file of a container healthcheck -----------------------------------------------------
@pytest.mark.cluster(agents=0)
def test_health_file_is_fresh_only_while_dbagent_answers_and_the_queue_is_consumed(cluster):
    def health(name):
        return os.path.join(cluster.log_dir, f"{name}.health")

    def mtime(path):
        return os.stat(path).st_mtime_ns if os.path.exists(path) else 0

    good = cluster.start_agent("agent-good", AGENT_HEALTH_FILE=health("good"), HEARTBEAT_INTERVAL_MS="100")
    first = cluster.wait_for(lambda: mtime(health("good")), 30, "the healthy agent's health file")
    cluster.wait_for(lambda: mtime(health("good")) > first, 10, "the health file to be touched again")

    # Heartbeats answered, but no RabbitMQ: alive for the cluster, not healthy as a worker.
    no_broker = cluster.start_agent("agent-nobroker", AGENT_HEALTH_FILE=health("nobroker"),
                                    HEARTBEAT_INTERVAL_MS="100",
                                    AMQP_URL=f"amqp://calc:calc@127.0.0.1:{harness.free_port()}/%2f")
    admin = cluster.admin_client()

    def listed_alive():
        return any(a["agent_unique_name"] == "agent-nobroker" and a["alive"]
                   for a in admin.get("/agent").json()["agents"])

    cluster.wait_for(listed_alive, 30, "agent-nobroker's heartbeats")
    cluster.wait_for(lambda: "next attempt" in no_broker.log(), 30, "agent-nobroker's failed connection")
    assert not os.path.exists(health("nobroker"))

    # dbagent away: heartbeats fail, and the file goes stale until it is back.
    dbagent = proc_named(cluster, "dbagent")
    assert cluster.stop(dbagent) == 0
    cluster.wait_for(lambda: time.time() - mtime(health("good")) / 1e9 > 1.0, 15,
                     "the health file to go stale without dbagent")
    stale = mtime(health("good"))
    cluster.restart(dbagent)
    cluster.wait_for(lambda: mtime(health("good")) > stale, 30, "the health file to be fresh again")

    # A token dbagent refuses: the agent exits before it consumes, and is never healthy.
    refused = cluster.start_agent("agent-refused", AGENT_HEALTH_FILE=health("refused"),
                                  DBAGENT_TOKEN="not-the-token-of-this-cluster")
    refused.expect_clean_exit = False
    assert refused.wait(30) == 77
    assert not os.path.exists(health("refused"))
    assert good.alive()


# --- a clean stop ----------------------------------------------------------------------------------
@pytest.mark.cluster(agents=1, env={"AGENT_MAX_PROCESSES": "1"})
def test_sigterm_mid_node_finishes_it_exits_0_and_loses_nothing(cluster):
    set_durations(cluster, times=1500)
    wait_consuming(cluster)
    api = user(cluster)
    first = submit(api, "6*7")
    node, holder, _ = cluster.wait_for(lambda: running_node(cluster), 30, "the node to run")
    second = submit(api, "2*3")  # waits in the queue: the only worker is busy
    # The heartbeat lists the node in hand (dbagent hands back running nodes a heartbeat omits).
    cluster.wait_for(lambda: sql(cluster, f"SELECT busy FROM agents WHERE name = '{holder}'"
                                          f" AND {node} = ANY(nodes)") == [["1"]], 10, "the heartbeat to list the node")
    agent = proc_named(cluster, holder)
    assert cluster.stop(agent) == 0
    [(state, by, attempts)] = sql(cluster, f"SELECT state, agent, attempts FROM nodes WHERE id = {node}")
    assert (state, by, attempts) == ("done", holder, "1"), "the stopping agent must finish its node"
    assert expression(api, first)["result"] == 42
    assert sql(cluster, f"SELECT busy, nodes FROM agents WHERE name = '{holder}'") == [["0", "{}"]]

    cluster.start_agent()
    done = wait_done(cluster, api, [first, second], 30)
    assert done[second]["status"] == "Ok" and done[second]["result"] == 6


# --- nodes of no delay ----------------------------------------------------------------------------
@pytest.mark.cluster(agents=1)
def test_nodes_of_no_delay_run_without_a_claim_and_complete_once(cluster):
    """A node of no delay comes with its operation and operands and runs without a ClaimNode: its
    completion at the message's epoch proves the lease, counts the one attempt and starts the
    expression. A node with a delay is still claimed first."""
    set_durations(cluster)
    wait_consuming(cluster)
    api = user(cluster, "nowait")
    eids = [submit(api, t) for t in ("2+2*2", "(1+2)*(3+4)", "8/4-1", "1/0")]
    done = wait_done(cluster, api, eids, 60)
    assert [done[e]["status"] for e in eids] == ["Ok", "Ok", "Ok", "Error"]
    assert [done[e].get("result") for e in eids[:3]] == [6, 21, 1]
    ids = ",".join(map(str, eids))
    assert sql(cluster, f"SELECT DISTINCT state, attempts, agent IS NOT NULL, started_at IS NOT NULL"
                        f" FROM nodes WHERE expression_id IN ({ids}) ORDER BY 1") == [["done", "1", "t", "t"],
                                                                                     ["failed", "1", "t", "t"]]
    assert sql(cluster, f"SELECT count(*) FROM expressions WHERE id IN ({ids}) AND started_at IS NOT NULL"
                        f" AND finished_at >= started_at") == [["4"]]
    assert sql(cluster, f"SELECT count(DISTINCT expression_id) FROM events WHERE expression_id IN ({ids})"
                        f" AND kind = 'started'") == [["4"]]
    set_durations(cluster, times=20)
    last = submit(api, "3*3+1")
    assert wait_done(cluster, api, [last], 30)[last]["result"] == 10
    [agent] = agents(cluster)
    assert cluster.stop(agent) == 0
    line = next(l for l in agent.log().splitlines() if "stopped:" in l)
    # 5 dispatched leaves of no delay, then 3*3 with a delay: the one claim.
    assert re.search(r"\b5 of no delay run without a claim\); 1 ClaimNode calls", line), line


@pytest.mark.cluster(agents=0)
def test_a_redelivered_node_of_no_delay_is_claimed_first_so_its_attempt_counts(cluster):
    """A node of no delay runs without a claim, but a copy the broker delivers again (the agent that
    held it died) is claimed first: the claim counts the attempt, so a node whose running kills its
    agents fails at MAX_ATTEMPTS instead of going round the agents for ever."""
    set_durations(cluster)
    relay = CuttingProxy(cluster.dbagent_port)
    try:
        # Its completion will wait in the relay, retried for a minute: the node stays in its hands.
        first = cluster.start_agent(DBAGENT_ADDR=relay.addr, DBAGENT_TIMEOUT_MS="300", COMPLETE_RETRY_MS="60000")
        wait_consuming(cluster, [first])
        api = user(cluster, "redelivered")
        assert wait_done(cluster, api, [submit(api, "1+1")], 30)  # it is live and takes work
        relay.cut(hold=True)
        eid = submit(api, "2+3")
        [[node]] = sql(cluster, f"SELECT id FROM nodes WHERE expression_id = {eid}")
        cluster.wait_for(lambda: f"CompleteNode node={node} " in first.log(), 30, "the completion to be retried")
        cluster.kill(first)  # the broker delivers its message again
    finally:
        relay.close()
    second = cluster.start_agent()
    assert wait_done(cluster, api, [eid], 30)[eid]["result"] == 5
    assert sql(cluster, f"SELECT state, attempts, agent FROM nodes WHERE id = {node}") == [["done", "1", second.name]]
    assert cluster.stop(second) == 0
    line = next(l for l in second.log().splitlines() if "stopped:" in l)
    assert re.search(r"\b0 of no delay run without a claim\); 1 ClaimNode calls", line), line


# --- the delay runs from the message, not from the claim ------------------------------------------
@pytest.mark.cluster(agents=0)
def test_a_claim_that_waits_runs_inside_the_nodes_delay_not_before_it(cluster):
    """A worker counts a node's delay from when it took the message up: time its claim spends on the
    way, here held up a second on the expression's row (the first claim of an expression locks it),
    is time the operation has already run, not time added to it."""
    set_durations(cluster, times=1500)
    api = user(cluster, "slowclaim")
    eid = submit(api, "6*7")  # no agent yet: the node waits in PostgreSQL
    holder = hold_transaction(cluster, f"SELECT 1 FROM expressions WHERE id = {eid} FOR UPDATE", 60)
    try:
        cluster.start_agent()
        waited = ("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'calc-dbagent'"
                  " AND wait_event_type = 'Lock' AND now() - query_start > interval '1 second'")
        cluster.wait_for(lambda: sql(cluster, waited) == [["1"]], 30, "the claim to wait a second")
    finally:
        end_transaction(cluster, holder)
    assert wait_done(cluster, api, [eid], 30)[eid]["result"] == 42
    # started_at is the claim's transaction's start, before it waited for the row.
    [[ms, attempts]] = sql(cluster, "SELECT round(extract(epoch FROM finished_at - started_at) * 1000), attempts"
                                    f" FROM nodes WHERE expression_id = {eid}")
    assert attempts == "1"
    assert 1400 <= float(ms) < 2200, f"claim to completion took {ms} ms for a delay of 1500 ms"


# --- a node cancelled in an agent's hands ---------------------------------------------------------
@pytest.mark.cluster(agents=1, env={"AGENT_MAX_PROCESSES": "1"})
def test_a_node_cancelled_in_hand_is_refused_as_stale_and_its_message_dropped(cluster):
    """dbagent refuses the completion (FAILED_PRECONDITION, "stale: ..."), which changes nothing;
    the agent acks the message instead of sending it to the retry queue."""
    set_durations(cluster, times=5000)  # the node is still in hand when the cancel comes
    wait_consuming(cluster)
    api = user(cluster)
    eid = submit(api, "6*7")
    node, holder, _ = cluster.wait_for(lambda: running_node(cluster), 30, "the node to run")
    assert api.delete(f"/expression/{eid}").status_code == 200
    agent = proc_named(cluster, holder)

    def refused():
        return [l for l in agent.log().splitlines() if f"node={node} " in l and "stale: not applied" in l]
    cluster.wait_for(refused, 30, "the completion to be refused")
    assert sql(cluster, f"SELECT state, result IS NULL FROM nodes WHERE id = {node}") == [["cancelled", "t"]]
    assert expression(api, eid)["status"] == "Cancelled"
    # The worker is free and the message gone: the next expression runs, and the node never returns.
    second = submit(api, "2*3")
    assert wait_done(cluster, api, [second], 30)[second]["result"] == 6
    assert not [l for l in agent.log().splitlines() if "to the retry queue" in l]
    assert sum(f"node={node} " in l for l in agent.log().splitlines()) == 1


# --- a node that keeps failing ---------------------------------------------------------------------
@pytest.mark.cluster(agents=1, env={"MAX_ATTEMPTS": "2"})
def test_a_node_that_keeps_failing_fails_after_max_attempts_not_a_loop(cluster):
    set_durations(cluster, times=1500)
    wait_consuming(cluster)
    api = user(cluster)
    eid = submit(api, "6*7")
    for attempt in (1, 2):
        node, holder, _ = cluster.wait_for(lambda: running_node(cluster, attempt), 30, f"claim {attempt}")
        proc_named(cluster, holder).kill()  # a crash in the middle of the node, every time
        cluster.start_agent()

    e = wait_done(cluster, api, [eid], 30)[eid]
    assert e["status"] == "Error" and "2 attempts" in e["error_msg"], e
    [(state, attempts, error)] = sql(cluster, f"SELECT state, attempts, error FROM nodes WHERE id = {node}")
    assert state == "failed" and int(attempts) == 3 and "2 attempts" in error
    last = agents(cluster)[-1]
    cluster.wait_for(lambda: "failed: too many attempts" in last.log(), 10, "the last agent to drop the message")


# --- configuration ---------------------------------------------------------------------------------
def test_help_lists_the_configuration_and_bad_values_are_refused():
    binary = os.path.join(harness.BIN_DIR, "calc-agent")
    r = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0
    for name in ("AGENT_NAME", "AGENT_MAX_PROCESSES", "AMQP_URL", "DBAGENT_ADDR", "DBAGENT_TOKEN",
                 "HEARTBEAT_INTERVAL_MS", "RETRY_TTL_MS", "AGENT_GRACE_MS", "COMPLETE_RETRY_MS"):
        assert name in r.stdout
    env = {"PATH": os.environ.get("PATH", ""), "DBAGENT_TOKEN": "t" * 32}
    for bad, word in ((dict(AGENT_MAX_PROCESSES="0"), "AGENT_MAX_PROCESSES"),
                      (dict(HEARTBEAT_INTERVAL_MS="soon"), "HEARTBEAT_INTERVAL_MS"),
                      (dict(AGENT_NAME="two words"), "AGENT_NAME"),
                      (dict(AMQP_URL="http://x"), "AMQP_URL"),
                      (dict(DBAGENT_TOKEN=""), "DBAGENT_TOKEN")):
        r = subprocess.run([binary], env=dict(env, **bad), capture_output=True, text=True, timeout=30)
        assert r.returncode == 64 and word in r.stderr, (bad, r.stderr)
