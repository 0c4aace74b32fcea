"""calc-dbagent's transactions of node calls (calls that arrive together share one, refused
ones alone, at most 64, a failed one retried call by call) and the indexes and lock order its
statements use, against a real PostgreSQL; the dbagent and helpers are test_dbagent.py's."""

import concurrent.futures as cf
import os
import subprocess

import pytest

import harness
from dba_client import DbaClient, RpcError, pb, plan_2_plus_2_times_2, plan_wide
from dbagent_helpers import (CLAIMED, FAILED, MAX_ATTEMPTS, SC, answer, create, dba, events, expr, hold_lock,
                             new_user, node_state, refusal, release, run_node, take, waiting_dbagent_backends)


# ---- calls that share a transaction -------------------------------------------------------------


@pytest.fixture
def dba_one_batch(dba):
    """A second dbagent on the same database that sends one transaction of node calls at a time
    (DBAGENT_NODE_BATCHES=1): while one is held up, every other call waits and goes in the next."""
    cl = dba.cluster
    p = cl.start_dbagent(name="dbagent-one-batch", DBAGENT_PORT=str(harness.free_port()), DBAGENT_NODE_BATCHES="1",
                         DBAGENT_THREADS="70", MAX_ATTEMPTS=str(MAX_ATTEMPTS))
    c = DbaClient(f"127.0.0.1:{p.port}", cl.env["DBAGENT_TOKEN"])
    c.proc = p
    try:
        yield c
    finally:
        c.close()
        cl.stop(p)


def call_later(ex, c, method, timeout, **fields):
    """Starts a call; its future gives the reply or the RpcError."""
    def go():
        try:
            return c.call(method, timeout=timeout, **fields)
        except RpcError as e:
            return e
    return ex.submit(go)


def blocked_expression(dba, one, n):
    """A user; two running nodes (claimed through one) of an expression whose row a psql session
    holds locked, so that completing either waits; and n taken leaves of another expression."""
    u = new_user(dba)
    blocker = create(dba, u.id, plan_wide(2)).expression
    running = take(dba, blocker.id, 2)
    for t in running:
        assert answer(one, "ClaimNode", node_id=t.node_id, epoch=t.epoch, agent="agent-a") == "claimed"
    e = create(dba, u.id, plan_wide(n)).expression
    nodes = take(dba, e.id, n)
    holder = hold_lock(dba, f"SELECT 1 FROM expressions WHERE id = {blocker.id} FOR UPDATE", 60)
    return u, running, e, nodes, holder


def stuck_completion(ex, dba, one, t, timeout):
    """Starts completing t (a node of the locked expression) through one, and waits until the call
    waits for the lock: one's only transaction of node calls is then in PostgreSQL, held up."""
    f = call_later(ex, one, "CompleteNode", timeout, node_id=t.node_id, epoch=t.epoch, agent="agent-a", value=1)
    harness.wait_for(lambda: waiting_dbagent_backends(dba) == 1, 10, "the completion to wait for the lock")
    return f


def claims_behind_a_stuck_call(dba, one, n):
    """n claims sent through one while its only transaction waits for a lock, then the lock freed:
    returns (the claims' replies, one's stats before they were sent, the expression, its user)."""
    u, (b0, _), e, nodes, holder = blocked_expression(dba, one, n)
    try:
        with cf.ThreadPoolExecutor(n + 2) as ex:
            first = stuck_completion(ex, dba, one, b0, 30)
            before = one.GetStats()
            claims = [call_later(ex, one, "ClaimNode", 30, node_id=t.node_id, epoch=t.epoch, agent="agent-b") for t in nodes]
            harness.wait_for(lambda: one.GetStats().node_calls_waiting == n, 10, f"the {n} claims to wait")
            release(dba, holder)
            assert isinstance(first.result(30), pb.CompleteNodeReply)
            outs = [f.result(30) for f in claims]
    finally:
        release(dba, holder)
    assert [o.outcome for o in outs] == [CLAIMED] * n, outs
    return outs, before, nodes, e, u


def test_calls_that_wait_go_in_one_transaction(dba, dba_one_batch):
    """Calls that arrive while a transaction of node calls is in PostgreSQL wait, and all go in the
    next one; each gets its own answer, as if it had gone alone."""
    one = dba_one_batch
    outs, before, nodes, e, u = claims_behind_a_stuck_call(dba, one, 8)
    assert {(o.op, o.left, o.right) for o in outs} == {("+", float(i), 1.0) for i in range(8)}
    after = one.GetStats()
    assert after.node_calls - before.node_calls == 9
    assert after.node_transactions - before.node_transactions == 2, "the first call, then the 8 claims together"
    assert after.node_calls_waiting == 0
    # The expression runs to its end through the same dbagent: completions share transactions too.
    with cf.ThreadPoolExecutor(8) as ex:
        list(ex.map(lambda t: one.CompleteNode(node_id=t.node_id, epoch=t.epoch, agent="agent-b", value=t.node_id), nodes))
    while True:
        ready = [t for t in dba.TakeReady(max=100).nodes if t.expression_id == e.id]
        if not ready:
            break
        for t in ready:
            run_node(one, t, agent="agent-b")
    got = expr(dba, u.id, e.id)
    assert got.status == "ok" and got.nodes_done == 15
    assert got.result == sum(t.node_id for t in nodes) + 0.0


def test_stale_calls_in_a_shared_transaction_are_refused_alone(dba, dba_one_batch):
    """Stale calls that share a transaction with good ones get their own FAILED_PRECONDITION and
    change nothing, while the transaction commits the others."""
    one = dba_one_batch
    u, (b0, _), e, nodes, holder = blocked_expression(dba, one, 4)
    for t in nodes[2:]:
        assert answer(one, "ClaimNode", node_id=t.node_id, epoch=t.epoch, agent="agent-b") == "claimed"
    try:
        with cf.ThreadPoolExecutor(6) as ex:
            first = stuck_completion(ex, dba, one, b0, 30)
            before = one.GetStats()
            calls = [
                call_later(ex, one, "ClaimNode", 30, node_id=nodes[0].node_id, epoch=nodes[0].epoch, agent="agent-b"),
                call_later(ex, one, "ClaimNode", 30, node_id=nodes[1].node_id, epoch=nodes[1].epoch + 1, agent="agent-b"),
                call_later(ex, one, "CompleteNode", 30, node_id=nodes[2].node_id, epoch=nodes[2].epoch, agent="agent-c", value=9),
                call_later(ex, one, "CompleteNode", 30, node_id=nodes[3].node_id, epoch=nodes[3].epoch, agent="agent-b", value=3),
            ]
            harness.wait_for(lambda: one.GetStats().node_calls_waiting == 4, 10, "the 4 calls to wait")
            release(dba, holder)
            assert isinstance(first.result(30), pb.CompleteNodeReply)
            claimed, stale_claim, stale_completion, applied = (f.result(30) for f in calls)
    finally:
        release(dba, holder)
    assert claimed.outcome == CLAIMED
    assert refusal(stale_claim) == "stale" and refusal(stale_completion) == "stale"
    assert isinstance(applied, pb.CompleteNodeReply)
    after = one.GetStats()
    assert after.node_transactions - before.node_transactions == 2, "the first call, then the 4 together"
    rows = [dba.psql(f"SELECT state, epoch, attempts, coalesce(agent, ''), coalesce(result::text, '') FROM nodes"
                     f" WHERE id = {t.node_id}").strip() for t in nodes]
    assert rows == [f"running|{nodes[0].epoch}|1|agent-b|", f"queued|{nodes[1].epoch}|0||",
                    f"running|{nodes[2].epoch}|1|agent-b|", f"done|{nodes[3].epoch}|1|agent-b|3"], rows
    assert expr(dba, u.id, e.id).nodes_done == 1


def test_a_transaction_carries_at_most_64_calls(dba, dba_one_batch):
    """66 calls wait behind a held-up transaction: the next carries the oldest 64, then 2 go."""
    one = dba_one_batch
    _, before, _, _, _ = claims_behind_a_stuck_call(dba, one, 66)
    after = one.GetStats()
    assert after.node_calls - before.node_calls == 67
    assert after.node_transactions - before.node_transactions == 3, "the first call, 64 claims, 2 claims"


def test_a_transaction_that_fails_runs_each_call_alone(dba, dba_one_batch):
    """A shared transaction that fails (here: one call in it outlives its deadline behind a lock)
    commits nothing; every call in it runs again alone, so only that call fails."""
    one = dba_one_batch
    _, (b0, b1), _, nodes, holder = blocked_expression(dba, one, 4)
    try:
        with cf.ThreadPoolExecutor(8) as ex:
            first = stuck_completion(ex, dba, one, b0, 4)
            claims = [call_later(ex, one, "ClaimNode", 60, node_id=t.node_id, epoch=t.epoch, agent="agent-b") for t in nodes]
            doomed = call_later(ex, one, "CompleteNode", 8, node_id=b1.node_id, epoch=b1.epoch, agent="agent-a", value=2)
            harness.wait_for(lambda: one.GetStats().node_calls_waiting == 5, 10, "the 5 calls to wait")
            assert first.result(30).code == SC.DEADLINE_EXCEEDED
            assert doomed.result(30).code == SC.DEADLINE_EXCEEDED
            outs = [f.result(60) for f in claims]
    finally:
        release(dba, holder)
    assert [o.outcome for o in outs] == [CLAIMED] * 4, outs
    # The failed transaction's claims were undone: each node was claimed once, by its rerun.
    assert dba.psql(f"SELECT array_agg(attempts ORDER BY id) FROM nodes WHERE id IN ({','.join(str(t.node_id) for t in nodes)})").strip() == "{1,1,1,1}"
    assert [node_state(dba, t.node_id)[0] for t in (b0, b1)] == ["running", "running"]
    assert "failed together" in one.proc.log()


# ---- indexes -----------------------------------------------------------------------------------

HOT_QUERIES = {
    "take: the next user with ready work": "SELECT user_id FROM nodes WHERE state = 'ready' AND user_id > 5 ORDER BY user_id LIMIT 1",
    "take: a user's ready nodes, longest tail first": "SELECT id FROM nodes WHERE state = 'ready' AND user_id = 900000 ORDER BY tail_ms DESC, id LIMIT 100",
    "queued and running, each by its index": "SELECT user_id FROM nodes WHERE state = 'queued' UNION ALL SELECT user_id FROM nodes WHERE state = 'running'",
    "claim / complete by id": "SELECT * FROM nodes WHERE id = 12345",
    "nodes of an expression": "SELECT * FROM nodes WHERE expression_id = 1234",
    "queued too long": "SELECT id FROM nodes WHERE state = 'queued' AND queued_at < now() - interval '30 s'",
    "running nodes": "SELECT n.id FROM nodes n LEFT JOIN agents a ON a.name = n.agent WHERE n.state = 'running' AND (greatest(a.last_heartbeat_at, n.started_at) < now() - interval '10 s' OR (a.last_heartbeat_at > n.started_at + interval '10 s' AND n.id <> ALL (a.nodes)))",
    "events after seq": "SELECT * FROM events WHERE user_id = 900000 AND seq > 100 ORDER BY seq LIMIT 100",
    "events to number": "SELECT id FROM events WHERE user_id = 900000 AND seq IS NULL ORDER BY id",
    "expressions newest first": "SELECT * FROM expressions WHERE user_id = 7 ORDER BY id DESC LIMIT 20",
}


RETENTION_QUERIES = {
    "finished long ago": "SELECT id FROM expressions WHERE status IN ('ok', 'error', 'cancelled')"
                         " AND finished_at < now() - interval '30 days' ORDER BY finished_at LIMIT 500",
    "a user's oldest event": "SELECT created_at FROM events WHERE user_id = 900000 ORDER BY seq LIMIT 1",
    "a user's oldest numbered events": "SELECT seq FROM events WHERE user_id = 900000 AND seq IS NOT NULL"
                                       " ORDER BY seq LIMIT 500",
    "delete a user's oldest events": "DELETE FROM events WHERE user_id = 900000 AND seq <= 500",
    "running nodes of an agent": "SELECT 1 FROM nodes WHERE state = 'running' AND agent = 'agent-x'",
    "expired refresh tokens": "SELECT token_hash FROM refresh_tokens WHERE expires_at < now() ORDER BY expires_at"
                              " LIMIT 500",
}


def test_hot_paths_use_indexes(dba):
    """With 200k finished nodes and 200k events, no hot query scans nodes or events sequentially,
    and no statement of retention scans a table sequentially."""
    dba.psql(
        """
        INSERT INTO users (id, login, password_hash) VALUES (900000, 'bulk', 'x');
        INSERT INTO expressions (id, user_id, req_uid, text, status, node_count)
            SELECT 900000 + g, 900000, 'bulk' || g, 'x', 'ok', 10 FROM generate_series(1, 20000) g;
        INSERT INTO nodes (expression_id, user_id, op, pending, state, delay_ms, tail_ms, result, agent)
            SELECT 900000 + g / 10 + 1, 900000, '+', 0, 'done', 0, g % 100, 1, 'agent-x' FROM generate_series(0, 199999) g;
        INSERT INTO events (user_id, seq, expression_id, kind)
            SELECT 900000, g, 900001, 'node_done' FROM generate_series(1, 200000) g;
        INSERT INTO refresh_tokens (token_hash, user_id, family, expires_at, family_expires_at)
            SELECT 'bulk' || g, 900000, 'bulk', now() + g * interval '1 s', now() + interval '30 days'
            FROM generate_series(1, 20000) g;
        ANALYZE nodes; ANALYZE events; ANALYZE expressions; ANALYZE refresh_tokens;
        """
    )
    plans = {}
    for name, q in HOT_QUERIES.items():
        plan = dba.psql(f"EXPLAIN {q}")
        plans[name] = plan
        assert "Seq Scan on nodes" not in plan and "Seq Scan on events" not in plan, f"{name}:\n{plan}"
    # Retention's statements (schema/functions/calc_retain_*.sql) read no table whole either.
    for name, q in RETENTION_QUERIES.items():
        plan = dba.psql(f"EXPLAIN {q}")
        plans[name] = plan
        assert "Seq Scan" not in plan, f"{name}:\n{plan}"
    for name, plan in plans.items():
        print(f"-- {name}\n{plan}")
    statements_dbagent_runs_use_indexes(dba)


def statements_dbagent_runs_use_indexes(dba):
    """The statements dbagent itself runs, functions' statements included, logged with their plans
    by auto_explain in a dbagent started for it: none scans nodes or events sequentially."""
    cl = dba.cluster
    log_path = os.path.join(cl.servers.pg_dir, "postgres.log")
    settings = {"session_preload_libraries": "'auto_explain'", "auto_explain.log_min_duration": "0",
                "auto_explain.log_nested_statements": "on"}
    # From another database: were the library not to load, no session of this one could reset it.
    in_postgres = lambda sql: cl.servers.psql(sql, db="postgres")  # noqa: E731
    p = None
    try:
        in_postgres("; ".join(f"ALTER DATABASE {cl.db} SET {k} = {v}" for k, v in settings.items()))
        log_from = os.path.getsize(log_path)
        # One transaction of node calls at a time, so that claims sent behind a held-up one share
        # the next (calc_node_batch).
        p = cl.start_dbagent(name="dbagent-explained", DBAGENT_PORT=str(harness.free_port()), DBAGENT_THREADS="16",
                             DBAGENT_NODE_BATCHES="1", MAX_ATTEMPTS=str(MAX_ATTEMPTS))
        x = DbaClient(f"127.0.0.1:{p.port}", cl.env["DBAGENT_TOKEN"])
        try:
            u = new_user(x)
            e = create(x, u.id, plan_2_plus_2_times_2()).expression
            while expr(x, u.id, e.id).status != "ok":
                for t in take(x, e.id):
                    run_node(x, t)
            events(x, u.id)
            x.ListExpressions(user_id=u.id, limit=10)
            x.GetExpressions(user_ids=[u.id], ids=[e.id])
            # Calls sent together, a failed publish, a requeue, a heartbeat and a cancel.
            _, before, _, e2, u2 = claims_behind_a_stuck_call(dba, x, 4)
            assert x.GetStats().node_transactions - before.node_transactions == 2, "the 4 claims went together"
            e3 = create(x, u2.id, plan_wide(2)).expression
            x.MarkQueued(failed=take(x, e3.id, 2)[:1])
            x.RequeueStale(heartbeat_timeout_ms=60000, queued_timeout_ms=1)
            x.Heartbeat(agent="agent-e", workers=1)
            x.CancelExpression(user_id=u2.id, id=e2.id)
            events(x, u2.id)
        finally:
            x.close()
    finally:
        in_postgres("; ".join(f"ALTER DATABASE {cl.db} RESET {k}" for k in settings))
        if p:
            cl.stop(p)
    with open(log_path, errors="replace") as f:
        f.seek(log_from)
        logged = f.read()
    assert logged.count("Query Text:") >= 30, "auto_explain logged the statements"
    for called in ("calc_claim", "calc_complete", "calc_node_batch", "calc_create_expression", "calc_number_events",
                   "UPDATE nodes"):
        assert called in logged, called
    for bad in ("Seq Scan on nodes", "Seq Scan on events"):
        assert bad not in logged, logged[max(0, logged.index(bad) - 3000):logged.index(bad) + 200]


def test_a_batch_locks_an_expression_before_its_nodes(dba, dba_one_batch):
    """Two claims of one started expression share a transaction: A's locks its node alone, B's is a
    last attempt, which may fail the expression and so locks it. The batch takes the expression
    first: a session that holds the expression and then wants A's node, as a cancel does, waits for
    nothing the batch holds, and no deadlock ends either side."""
    one = dba_one_batch
    u, (b0, _), e, nodes, holder = blocked_expression(dba, one, 3)
    a, b, c = sorted(nodes, key=lambda t: t.node_id)  # A's claim would come first in node order
    assert answer(dba, "ClaimNode", node_id=c.node_id, epoch=c.epoch, agent="agent-c") == "claimed"  # started
    dba.psql(f"UPDATE nodes SET attempts = {MAX_ATTEMPTS} WHERE id = {b.node_id}")
    # The cancel's stand-in: holds the expression, waits (with a deadline) until the batch waits for
    # a lock, then asks for A's node. Its own deadlock_timeout is long: were there a cycle, the
    # batch's backend (1 s) would be the one ended, and the batch would fail as a whole.
    # (pg_stat_clear_snapshot: within a transaction, pg_stat_activity is otherwise read once.)
    wait_for_batch = ("DO $w$ BEGIN FOR i IN 1..3000 LOOP EXIT WHEN EXISTS (SELECT 1 FROM pg_stat_activity"
                      " WHERE application_name = 'calc-dbagent' AND wait_event_type = 'Lock'"
                      " AND query LIKE '%calc_node_batch%'); PERFORM pg_sleep(0.01); PERFORM pg_stat_clear_snapshot(); END LOOP; END $w$")
    canceller = None
    try:
        with cf.ThreadPoolExecutor(4) as ex:
            first = stuck_completion(ex, dba, one, b0, 30)
            claims = [call_later(ex, one, "ClaimNode", 30, node_id=t.node_id, epoch=t.epoch, agent="agent-b") for t in (a, b)]
            harness.wait_for(lambda: one.GetStats().node_calls_waiting == 2, 10, "the 2 claims to wait")
            before, log_from = one.GetStats(), len(one.proc.log())  # the log file outlives the fixture
            canceller = subprocess.Popen(
                [harness.SERVERS_CLI, "psql", dba.cluster.servers.pg_dir, str(dba.cluster.servers.pg_port), "-d", dba.cluster.db,
                 "-v", "ON_ERROR_STOP=1", "-c",
                 f"BEGIN; SET LOCAL deadlock_timeout = '60s'; SELECT 1 FROM expressions WHERE id = {e.id} FOR NO KEY UPDATE;"
                 f" {wait_for_batch}; SELECT 1 FROM nodes WHERE id = {a.node_id} FOR UPDATE; COMMIT;"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            # In its waiting loop, so it holds the expression.
            harness.wait_for(lambda: dba.psql("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%wait_event_type%calc_node_batch%'"
                                              " AND wait_event = 'PgSleep' AND pid <> pg_backend_pid()").strip() != "0",
                             10, "the canceller to hold the expression")
            release(dba, holder)
            assert isinstance(first.result(30), pb.CompleteNodeReply)
            assert canceller.wait(30) == 0
            got_a, got_b = (f.result(30) for f in claims)
    finally:
        release(dba, holder)
        if canceller and canceller.poll() is None:
            canceller.kill()
            canceller.wait()
    # B's last attempt failed the expression, which cancelled A: the answers a lone B, then a lone
    # A, would get, from one transaction that nobody ended.
    assert got_b.outcome == FAILED and refusal(got_a) == "cancelled", (got_b, got_a)
    after = one.GetStats()
    assert after.node_calls - before.node_calls == 3
    assert after.node_transactions - before.node_transactions == 2, "the first call, then the claims together, not rerun alone"
    assert "failed together" not in one.proc.log()[log_from:]
    assert expr(dba, u.id, e.id).status == "error"
