"""calc-dbagent as a process: migrations (every up, every down, every up again; several dbagents
starting at once), PostgreSQL restarted or killed under a running dbagent, and a clean stop on
SIGTERM."""

import concurrent.futures as cf
import os
import subprocess
import time

import grpc
import pytest

import harness
from dba_client import DbaClient, RpcError, leaf, pb, plan_wide

SC = grpc.StatusCode
CLAIMED = 0
NEWEST = len([f for f in os.listdir(os.path.join(harness.SOURCE_DIR, "schema")) if f.endswith(".up.sql")])


def migrate(cl, *args):
    env = dict(os.environ)
    env.update(cl.env)
    return subprocess.run(
        [cl.binary("calc-dbagent"), "migrate", *args], env=env, capture_output=True, text=True, timeout=60
    )


def schema(cl):
    """Tables, columns, indexes and functions of the public schema, as text."""
    return cl.servers.psql(
        "SELECT 'col ' || table_name || '.' || column_name || ' ' || data_type || ' ' || coalesce(column_default, '')"
        " FROM information_schema.columns WHERE table_schema = 'public' AND table_name <> 'schema_migrations'"
        " UNION ALL SELECT 'idx ' || indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename <> 'schema_migrations'"
        " UNION ALL SELECT 'fn ' || oid::regprocedure::text || ' ' || provolatile::text || ' ' || md5(prosrc) FROM pg_proc WHERE pronamespace = 'public'::regnamespace"
        " UNION ALL SELECT 'con ' || conname || ' ' || pg_get_constraintdef(oid) FROM pg_constraint"
        "  WHERE connamespace = 'public'::regnamespace AND conrelid <> 'schema_migrations'::regclass"
        " ORDER BY 1",
        db=cl.db,
    )


def version(cl):
    r = migrate(cl, "status")
    assert r.returncode == 0, r.stderr
    return int(r.stdout.split()[2])


def test_migrations_every_up_every_down_every_up_again(bare_cluster):
    cl = bare_cluster
    assert version(cl) == 0
    empty = schema(cl)
    states = {0: empty}
    for v in range(1, NEWEST + 1):  # every up, one at a time
        r = migrate(cl, "up", str(v))
        assert r.returncode == 0, r.stdout + r.stderr
        assert version(cl) == v
        states[v] = schema(cl)
        assert states[v] != states[v - 1]
    for v in range(NEWEST - 1, -1, -1):  # every down, back to each earlier state exactly
        r = migrate(cl, "down", str(v))
        assert r.returncode == 0, r.stdout + r.stderr
        assert version(cl) == v and schema(cl) == states[v]
    r = migrate(cl, "up")  # every up again, at once
    assert r.returncode == 0, r.stdout + r.stderr
    assert version(cl) == NEWEST and schema(cl) == states[NEWEST]
    # Nonsense is refused and changes nothing.
    assert migrate(cl, "sideways").returncode == 64
    assert migrate(cl, "down", str(NEWEST + 1)).returncode == 64
    assert migrate(cl, "up", str(NEWEST + 1)).returncode == 64
    assert version(cl) == NEWEST
    # A dbagent on the migrated schema serves.
    p = cl.start_dbagent()
    c = DbaClient(cl.env["DBAGENT_ADDR"], cl.env["DBAGENT_TOKEN"])
    assert c.CreateUser(login="after-migrations", password_hash="h").user.id > 0
    c.close()
    assert "applied" not in p.log()  # nothing left to apply at start


def test_a_migration_under_a_running_dbagent(bare_cluster):
    """Another process migrates while a dbagent serves: a column type its prepared statement
    returns changes (004), and the dbagent prepares its statements again instead of failing."""
    cl = bare_cluster
    r = migrate(cl, "up", "3")
    assert r.returncode == 0, r.stdout + r.stderr
    p = cl.start_dbagent(DBAGENT_MIGRATE="0", DBAGENT_THREADS="1")
    c = DbaClient(cl.env["DBAGENT_ADDR"], cl.env["DBAGENT_TOKEN"])
    uid = c.CreateUser(login="early", password_hash="h").user.id
    e = c.CreateExpression(user_id=uid, req_uid="r", text="1+1", nodes=[leaf("+", 1, 1)]).expression
    assert c.GetExpression(user_id=uid, id=e.id).expression.status == "new"
    r = migrate(cl, "up")
    assert r.returncode == 0, r.stdout + r.stderr
    assert c.GetExpression(user_id=uid, id=e.id).expression.status == "new"
    assert "preparing them again" in p.log()
    c.close()


def test_several_dbagents_start_at_once(bare_cluster):
    cl = bare_cluster
    procs = [cl.start_dbagent(name=f"dbagent-{i}", wait=False, DBAGENT_PORT=str(harness.free_port())) for i in range(4)]
    for p in procs:
        cl.wait_listening(p, p.port)
    rows = cl.servers.psql("SELECT version FROM schema_migrations ORDER BY 1", db=cl.db).split()
    assert rows == [str(v) for v in range(1, NEWEST + 1)]
    applied = sum(p.log().count("applied") for p in procs)
    assert applied == NEWEST, "each migration applied exactly once, under the advisory lock"
    clients = [DbaClient(f"127.0.0.1:{p.port}", cl.env["DBAGENT_TOKEN"]) for p in procs]
    uids = [c.CreateUser(login=f"u{i}", password_hash="h").user.id for i, c in enumerate(clients)]
    assert all(u > 0 for u in uids)
    # A long poll on one dbagent wakes when another one makes nodes ready (its NOTIFY).
    a, b = clients[0], clients[1]
    with cf.ThreadPoolExecutor(1) as ex:
        fut = ex.submit(a.TakeReady, max=10, wait_ms=8000)
        harness.wait_for(lambda: a.GetStats().long_polls_waiting > 0, 10, "the long poll to wait")
        t0 = time.monotonic()
        e = b.CreateExpression(user_id=uids[1], req_uid="x", text="x", nodes=plan_wide(2)).expression
        got = fut.result(15)
        assert time.monotonic() - t0 < 1.0, "woken by the other dbagent, not by the end of the wait"
    assert {t.expression_id for t in got.nodes} == {e.id}
    for c in clients:
        c.close()


def test_postgres_restart_unavailable_meanwhile_then_works(bare_cluster):
    cl = bare_cluster
    p = cl.start_dbagent(DBAGENT_THREADS="4")
    c = DbaClient(cl.env["DBAGENT_ADDR"], cl.env["DBAGENT_TOKEN"])
    uid = c.CreateUser(login="before", password_hash="h").user.id
    calls = [
        ("GetDurations", {}),
        ("ClaimNode", dict(node_id=1, epoch=1, agent="agent-a")),  # one round trip (pipeline)
        ("TakeReady", dict(max=10, wait_ms=1000)),  # the long poll
        ("CreateUser", dict(login="during", password_hash="h")),
        ("ListEvents", dict(user_id=uid)),
        # Transactions (BEGIN; SET LOCAL statement_timeout ... COMMIT):
        ("CancelExpression", dict(user_id=uid, id=1)),
        ("SetDurations", dict(user_id=uid, durations=[pb.Duration(op="+", ms=1)])),
        ("GetStats", {}),
        ("RotateRefreshToken", dict(old_hash="a", new_hash="b", expires_at_ms=1)),
    ]
    cl.servers.stop_postgres()
    try:
        for _ in range(3):  # every thread's connection notices, each time quickly
            for method, fields in calls:
                t0 = time.monotonic()
                with pytest.raises(RpcError) as e:
                    c.call(method, timeout=10, **fields)
                assert e.value.code == SC.UNAVAILABLE, e.value
                assert time.monotonic() - t0 < 2.0, f"{method} took {time.monotonic() - t0:.2f}s while PostgreSQL was down"
    finally:
        cl.servers.start_postgres()
    # Back without restarting dbagent: every thread reconnects by itself.
    harness.wait_for(lambda: c.code_of("GetDurations") == SC.OK, 30, "dbagent to reconnect")
    with cf.ThreadPoolExecutor(8) as ex:
        codes = list(ex.map(lambda i: c.code_of("FindUser", id=uid), range(32)))
    assert codes == [SC.OK] * 32
    assert c.CreateUser(login="after", password_hash="h").user.id > uid
    # Other dbagents' NOTIFYs reach this one again: a node another session makes ready (as
    # another dbagent would, with its NOTIFY) wakes a waiting long poll at once.
    harness.wait_for(lambda: "listening for calc_ready again" in p.log(), 30, "the listener to reconnect")
    c.CreateExpression(user_id=uid, req_uid="r", text="1+1", nodes=[leaf("+", 1, 1)])
    (t,) = c.TakeReady(max=10).nodes
    with cf.ThreadPoolExecutor(1) as ex:
        fut = ex.submit(c.TakeReady, max=10, wait_ms=8000)
        harness.wait_for(lambda: c.GetStats().long_polls_waiting > 0, 10, "the long poll to wait")
        t0 = time.monotonic()
        cl.servers.psql(f"UPDATE nodes SET state = 'ready', epoch = epoch + 1 WHERE id = {t.node_id};"
                        " NOTIFY calc_ready", db=cl.db)
        assert [n.node_id for n in fut.result(15).nodes] == [t.node_id]
        assert time.monotonic() - t0 < 1.0, "woken by the NOTIFY, not by the end of the wait"
    assert p.alive()
    c.close()


LOCK_MARK = "/* test lock holder */"


def a_taken_node_behind_a_lock(cl, login, seconds):
    """A dbagent, its client, a user, an expression of one leaf taken (queued) and a psql session
    that holds the expression's row for `seconds`, so that claiming the leaf waits."""
    p = cl.start_dbagent(DBAGENT_THREADS="4")
    c = DbaClient(cl.env["DBAGENT_ADDR"], cl.env["DBAGENT_TOKEN"])
    uid = c.CreateUser(login=login, password_hash="h").user.id
    e = c.CreateExpression(user_id=uid, req_uid="r", text="1+1", nodes=[leaf("+", 1, 1)]).expression
    (t,) = c.TakeReady(max=10).nodes
    holder = subprocess.Popen(
        [harness.SERVERS_CLI, "psql", cl.servers.pg_dir, str(cl.servers.pg_port), "-d", cl.db, "-c",
         f"{LOCK_MARK} BEGIN; SELECT 1 FROM expressions WHERE id = {e.id} FOR UPDATE; SELECT pg_sleep({seconds}); COMMIT;"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    harness.wait_for(
        lambda: cl.servers.psql(f"SELECT count(*) FROM pg_stat_activity WHERE query LIKE '{LOCK_MARK}%' AND state = 'active'", db=cl.db).strip() != "0",
        10, "the lock holder")
    return p, c, uid, e, t, holder


def wait_claim_waits(cl):
    harness.wait_for(
        lambda: cl.servers.psql("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                                " AND application_name = 'calc-dbagent' AND wait_event_type = 'Lock'", db=cl.db).strip() != "0",
        10, "the claim to wait for the lock")


def test_postgres_crash_under_a_waiting_call_fails_it_fast_and_loses_nothing(bare_cluster):
    """PostgreSQL killed (SIGKILL, as a crash) while a claim waits inside it for a lock: the claim
    fails fast with UNAVAILABLE, nothing of it was kept, and after the restart it succeeds and the
    expression finishes."""
    cl = bare_cluster
    p, c, uid, e, t, holder = a_taken_node_behind_a_lock(cl, "crash", 60)
    killed = False
    try:
        with cf.ThreadPoolExecutor(1) as ex:
            claim = ex.submit(c.code_of, "ClaimNode", node_id=t.node_id, epoch=t.epoch, agent="agent-a", timeout=30)
            wait_claim_waits(cl)
            t0 = time.monotonic()
            cl.servers.kill_postgres()
            killed = True
            assert claim.result(10) == SC.UNAVAILABLE
            assert time.monotonic() - t0 < 5, "the claim must not wait out its deadline"
    finally:
        holder.kill()
        holder.wait()
        if killed:  # back even when an assertion above failed: later tests share this cluster
            cl.servers.start_postgres()
    harness.wait_for(lambda: c.code_of("GetDurations") == SC.OK, 30, "dbagent to reconnect")
    state, epoch, attempts = cl.servers.psql(f"SELECT state, epoch, attempts FROM nodes WHERE id = {t.node_id}", db=cl.db).strip().split("|")
    assert (state, int(epoch), int(attempts)) == ("queued", t.epoch, 0), "the lost claim kept nothing"
    assert c.ClaimNode(node_id=t.node_id, epoch=t.epoch, agent="agent-a").outcome == CLAIMED
    assert c.CompleteNode(node_id=t.node_id, epoch=t.epoch, agent="agent-a", value=2).expression_finished
    assert c.GetExpression(user_id=uid, id=e.id).expression.status == "ok"
    assert p.alive()
    c.close()


def test_sigterm_finishes_running_calls_then_exits_0(bare_cluster):
    cl = bare_cluster
    # A claim that has to wait: a psql session holds the expression's row for 2 s.
    p, c, uid, e, t, holder = a_taken_node_behind_a_lock(cl, "stopper", 2)
    try:
        with cf.ThreadPoolExecutor(2) as ex:
            claim = ex.submit(c.ClaimNode, node_id=t.node_id, epoch=t.epoch, agent="agent-a", timeout=15)
            poll = ex.submit(c.TakeReady, max=10, wait_ms=30000, timeout=40)
            wait_claim_waits(cl)
            harness.wait_for(lambda: c.GetStats().long_polls_waiting > 0, 10, "the long poll to wait")
            p.terminate()
            # No new call is accepted once the stop began...
            fresh = DbaClient(cl.env["DBAGENT_ADDR"], cl.env["DBAGENT_TOKEN"])
            harness.wait_for(lambda: fresh.code_of("GetDurations", timeout=1) == SC.UNAVAILABLE, 5, "new calls to be refused")
            fresh.close()
            # ...the long poll answers (empty) at once rather than holding the stop for 30 s...
            assert list(poll.result(5).nodes) == []
            assert p.alive(), "dbagent must wait for the running claim"
            # ...and the running claim finishes normally once the lock is free.
            assert claim.result(15).outcome == CLAIMED
    finally:
        holder.kill()
        holder.wait()
    assert p.wait(15) == 0
    assert "stopped" in p.log()
    c.close()


def test_sigterm_while_waiting_for_postgres_exits_0(bare_cluster):
    cl = bare_cluster
    p = cl.start_dbagent(wait=False, DB_PORT=str(harness.free_port()), DBAGENT_PORT=str(harness.free_port()))
    harness.wait_for(lambda: "waiting for PostgreSQL" in p.log(), 15, "dbagent to wait for PostgreSQL")
    p.terminate()
    assert p.wait(10) == 0
    assert "stopped before serving" in p.log()


def test_sigterm_while_waiting_for_the_migration_lock_exits_0(bare_cluster):
    """Another dbagent migrating (a psql session holding the migration lock): a dbagent starting
    meanwhile waits for it, and SIGTERM then stops it at once with exit 0."""
    cl = bare_cluster
    holder = subprocess.Popen(
        [harness.SERVERS_CLI, "psql", cl.servers.pg_dir, str(cl.servers.pg_port), "-d", cl.db, "-c",
         "SELECT pg_advisory_lock(x'7261746f7201'::bigint); SELECT pg_sleep(60);"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        harness.wait_for(lambda: cl.servers.psql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted", db=cl.db).strip() != "0",
                         10, "the lock holder")
        p = cl.start_dbagent(wait=False, DBAGENT_PORT=str(harness.free_port()))
        harness.wait_for(lambda: "waiting for another dbagent's migrations" in p.log(), 15, "dbagent to wait for the lock")
        assert holder.poll() is None, "the lock is still held"
        t0 = time.monotonic()
        p.terminate()
        assert p.wait(10) == 0
        assert time.monotonic() - t0 < 3, "stopped within the lock wait's half second, not when the lock came"
        assert "stopped before serving" in p.log()
    finally:
        holder.kill()
        holder.wait()


def test_a_password_with_quotes_backslashes_and_spaces_connects(bare_cluster):
    """The PostgreSQL password reaches libpq as it is: quotes, backslashes and spaces are not
    connection-string syntax. A role with such a password owns the database; dbagent migrates it
    and serves with that role, and a wrong password is refused."""
    cl = bare_cluster
    role = f"odd_{cl.db}"[:63]
    password = "it's a \\'pass\\\\word\" = x  'y'\\"
    sql_password = password.replace("'", "''")
    cl.servers.psql(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{sql_password}'")
    cl.servers.psql(f"ALTER DATABASE \"{cl.db}\" OWNER TO \"{role}\"")
    cl.servers.psql(f"ALTER SCHEMA public OWNER TO \"{role}\"", db=cl.db)

    p = cl.start_dbagent(DB_USERNAME=role, DB_PASSWORD=password)
    c = DbaClient(cl.env["DBAGENT_ADDR"], cl.env["DBAGENT_TOKEN"])
    user = c.CreateUser(login="quoted", password_hash="h").user
    assert c.FindUser(login="quoted").user.id == user.id
    assert cl.servers.psql("SELECT count(*) FROM schema_migrations", db=cl.db).strip() == str(NEWEST)
    cl.stop(p)

    env = dict(os.environ)
    env.update(cl.env)
    env.update(DB_USERNAME=role, DB_PASSWORD=password[:-1])
    r = subprocess.run([cl.binary("calc-dbagent"), "migrate", "status"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "password authentication failed" in r.stderr + r.stdout
