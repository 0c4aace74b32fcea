"""calc-dbagent as a process: migrations (every up, every down, every up again; several dbagents
starting at once), PostgreSQL restarted under a running dbagent, and a clean stop on SIGTERM."""

import concurrent.futures as cf
import os
import subprocess
import time

import grpc
import pytest

import harness
from dba_client import DbaClient, RpcError

SC = grpc.StatusCode
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
        " UNION ALL SELECT 'fn ' || oid::regprocedure::text FROM pg_proc WHERE pronamespace = 'public'::regnamespace"
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


def test_several_dbagents_start_at_once(bare_cluster):
    cl = bare_cluster
    procs = [cl.start_dbagent(name=f"dbagent-{i}", wait=False, DBAGENT_PORT=str(harness.free_port())) for i in range(4)]
    for p in procs:
        cl.wait_listening(p, p.port)
    rows = cl.servers.psql("SELECT version FROM schema_migrations ORDER BY 1", db=cl.db).split()
    assert rows == [str(v) for v in range(1, NEWEST + 1)]
    applied = sum(p.log().count("applied") for p in procs)
    assert applied == NEWEST, "each migration applied exactly once, under the advisory lock"
    for i, p in enumerate(procs):
        c = DbaClient(f"127.0.0.1:{p.port}", cl.env["DBAGENT_TOKEN"])
        assert c.CreateUser(login=f"u{i}", password_hash="h").user.id > 0
        c.close()


def test_postgres_restart_unavailable_meanwhile_then_works(bare_cluster):
    cl = bare_cluster
    p = cl.start_dbagent(DBAGENT_THREADS="4")
    c = DbaClient(cl.env["DBAGENT_ADDR"], cl.env["DBAGENT_TOKEN"])
    uid = c.CreateUser(login="before", password_hash="h").user.id
    calls = [
        ("GetDurations", {}),  # a transaction (BEGIN ... COMMIT)
        ("ClaimNode", dict(node_id=1, epoch=1, agent="agent-a")),  # one round trip (pipeline)
        ("TakeReady", dict(max=10, wait_ms=1000)),  # the long poll
        ("CreateUser", dict(login="during", password_hash="h")),
        ("ListEvents", dict(user_id=uid)),
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
    assert p.alive()
    c.close()


def test_sigterm_finishes_running_calls_then_exits_0(bare_cluster):
    cl = bare_cluster
    p = cl.start_dbagent(DBAGENT_THREADS="4")
    c = DbaClient(cl.env["DBAGENT_ADDR"], cl.env["DBAGENT_TOKEN"])
    c.GetDurations()
    with cf.ThreadPoolExecutor(1) as ex:
        t0 = time.monotonic()
        running = ex.submit(c.TakeReady, max=10, wait_ms=2500)
        harness.wait_for(
            lambda: cl.servers.psql(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND query LIKE '/* calc: listening */%' AND state = 'idle'",
                db=cl.db,
            ).strip() != "0",
            10,
            "the long poll to wait",
        )
        p.terminate()
        # No new call is accepted once the stop began...
        fresh = DbaClient(cl.env["DBAGENT_ADDR"], cl.env["DBAGENT_TOKEN"])
        harness.wait_for(lambda: fresh.code_of("GetDurations", timeout=1) == SC.UNAVAILABLE, 5, "new calls to be refused")
        fresh.close()
        assert p.alive(), "dbagent must wait for the running call"
        # ...and the running one finishes normally.
        assert list(running.result(15).nodes) == []
        assert time.monotonic() - t0 >= 2.4
    assert p.wait(15) == 0
    assert "stopped" in p.log()
    c.close()
