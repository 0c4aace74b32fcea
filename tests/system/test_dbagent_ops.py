"""calc-dbagent as a process: migrations (every up, every down, every up again; several dbagents
starting at once), the SQL functions applied once per digest (an upgrade from every released
version), PostgreSQL restarted or killed under a running dbagent, and a clean stop on SIGTERM."""

import concurrent.futures as cf
import glob
import hashlib
import os
import re
import subprocess
import time

import grpc
import pytest

import harness
from dba_client import DbaClient, RpcError, leaf, pb, plan_wide
from dbagent_helpers import end_transaction, hold_transaction

SC = grpc.StatusCode
CLAIMED = 0
# The versions of schema/NNN_name.up.sql: numbers may skip (a branch reserves its own).
VERSIONS = sorted(int(f[:3]) for f in os.listdir(os.path.join(harness.SOURCE_DIR, "schema")) if f.endswith(".up.sql"))
NEWEST = VERSIONS[-1]
FUNCTION_FILES = sorted(glob.glob(os.path.join(harness.SOURCE_DIR, "schema", "functions", "*.sql")))
# What schema/embed.cmake records: the SHA-256 of the function files' text, in name order.
DIGEST = hashlib.sha256(b"".join(open(f, "rb").read() for f in FUNCTION_FILES)).hexdigest()
APPLIED = f"functions applied (digest {DIGEST[:12]})"


def migrate(cl, *args, **env_extra):
    env = dict(os.environ)
    env.update(cl.env)
    env.update(env_extra)
    return subprocess.run(
        [cl.binary("calc-dbagent"), "migrate", *args], env=env, capture_output=True, text=True, timeout=60
    )


def schema(cl, db=None):
    """Tables, columns, indexes, types and functions of the public schema, as text."""
    return cl.servers.psql(
        "SELECT 'col ' || table_name || '.' || column_name || ' ' || data_type || ' ' || coalesce(domain_name, '')"
        "       || ' ' || is_nullable || ' ' || coalesce(column_default, '')"
        " FROM information_schema.columns WHERE table_schema = 'public'"
        "  AND table_name NOT IN ('schema_migrations', 'schema_functions')"
        " UNION ALL SELECT 'idx ' || indexdef FROM pg_indexes WHERE schemaname = 'public'"
        "  AND tablename NOT IN ('schema_migrations', 'schema_functions')"
        " UNION ALL SELECT 'fn ' || oid::regprocedure::text || ' ' || pg_get_function_result(oid) || ' '"
        "       || provolatile::text || ' ' || md5(prosrc) || ' ' || coalesce(proconfig::text, '')"
        "  FROM pg_proc WHERE pronamespace = 'public'::regnamespace"
        " UNION ALL SELECT 'con ' || conname || ' ' || pg_get_constraintdef(oid) FROM pg_constraint"
        "  WHERE connamespace = 'public'::regnamespace"
        "   AND conrelid::regclass::text NOT IN ('schema_migrations', 'schema_functions')"
        " UNION ALL SELECT 'type ' || typname || ' ' || format_type(typbasetype, typtypmod) FROM pg_type"
        "  WHERE typnamespace = 'public'::regnamespace AND typtype = 'd'"
        " ORDER BY 1",
        db=db or cl.db,
    )


def functions_row(cl, db=None):
    return cl.servers.psql("SELECT digest, applied_at FROM schema_functions", db=db or cl.db).strip()


def version(cl):
    r = migrate(cl, "status")
    assert r.returncode == 0, r.stderr
    return int(r.stdout.split()[2])


def test_migrations_every_up_every_down_every_up_again(bare_cluster):
    cl = bare_cluster
    assert version(cl) == 0
    empty = schema(cl)
    states = {0: empty}
    for v in VERSIONS:  # every up, one at a time
        r = migrate(cl, "up", str(v))
        assert r.returncode == 0, r.stdout + r.stderr
        assert version(cl) == v
        states[v] = schema(cl)
        # The functions are written for the newest tables: there only.
        assert ("\nfn " in "\n" + states[v]) == (v == NEWEST), states[v]
    assert states[1] != states[0] and states[4] != states[3]
    for v in reversed([0] + VERSIONS[:-1]):  # every down, back to each earlier state exactly
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


# What a database of an older release holds besides its tables: that release's functions. These
# stand in for them (same names and arguments, other results and bodies) from the version that
# brought each in, plus one no release of this schema has; the new dbagent must replace them all.
STAND_INS = {
    1: ["CREATE FUNCTION to_ms(t timestamptz) RETURNS bigint LANGUAGE sql IMMUTABLE"
        " AS $$ SELECT coalesce((extract(epoch FROM t) * 1000)::bigint, 0) $$",
        "CREATE FUNCTION calc_retired(integer) RETURNS integer LANGUAGE sql AS $$ SELECT $1 $$"],
    2: ["CREATE FUNCTION calc_event(bigint, bigint, text, jsonb) RETURNS bigint LANGUAGE plpgsql"
        " AS $$ BEGIN RAISE EXCEPTION 'stand-in'; END $$",
        "CREATE FUNCTION calc_fail_expression(bigint, text) RETURNS boolean LANGUAGE plpgsql"
        " AS $$ BEGIN RAISE EXCEPTION 'stand-in'; END $$",
        "CREATE FUNCTION calc_claim(bigint, integer, text, integer, OUT outcome integer) LANGUAGE plpgsql"
        " AS $$ BEGIN RAISE EXCEPTION 'stand-in'; END $$",
        "CREATE FUNCTION calc_complete(bigint, integer, text, double precision, text,"
        " OUT outcome integer, OUT finished boolean) LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'stand-in'; END $$"],
    3: ["CREATE FUNCTION calc_create_expression(bigint, text, text, double precision, integer, bigint, integer,"
        " text[], integer[], double precision[], integer[], double precision[], integer[], integer[], bigint[])"
        " RETURNS integer LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'stand-in'; END $$"],
    4: ["CREATE FUNCTION calc_number_events(bigint) RETURNS integer LANGUAGE plpgsql"
        " AS $$ BEGIN RAISE EXCEPTION 'stand-in'; END $$",
        "CREATE FUNCTION calc_list_events(bigint, bigint, integer) RETURNS SETOF text LANGUAGE plpgsql"
        " AS $$ BEGIN RAISE EXCEPTION 'stand-in'; END $$"],
    5: ["CREATE FUNCTION calc_node_batch(boolean[], bigint[], integer[], text[], double precision[], text[],"
        " integer) RETURNS SETOF integer LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'stand-in'; END $$"],
}


def install_stand_ins(cl, db, version):
    """The tables of `version` as the new migrations left them become what an older release left:
    its functions, and no schema_functions (up to the newest version, the new ones were applied)."""
    ours = cl.servers.psql("SELECT string_agg(format('DROP FUNCTION %s', oid::regprocedure), '; ') FROM pg_proc"
                           " WHERE pronamespace = 'public'::regnamespace", db=db).strip()
    sql = [ours] if ours else []
    sql.append("DROP TABLE schema_functions")
    sql += [s for v in sorted(STAND_INS) if v <= version for s in STAND_INS[v]]
    cl.servers.psql("; ".join(sql), db=db)


def test_upgrade_from_every_released_version(bare_cluster):
    """A database left at each released version 1..6 by an older dbagent (its tables, its rows and
    its functions) becomes, under the new dbagent, the schema a fresh install has, with its rows
    kept and working."""
    cl = bare_cluster
    assert migrate(cl, "up").returncode == 0
    fresh = schema(cl)
    assert "fn calc_claim_locks_expression(" in fresh and "fn calc_retired" not in fresh
    for v in VERSIONS:
        db = cl.create_db(f"upgrade_from_{v}")
        env = dict(cl.servers.db_env(db))
        r = migrate(cl, "up", str(v), **env)
        assert r.returncode == 0, r.stdout + r.stderr
        install_stand_ins(cl, db, v)
        cl.servers.psql(
            "INSERT INTO users (id, login, password_hash, event_seq) VALUES (1000, 'old', 'h', 1);"
            " INSERT INTO expressions (id, user_id, req_uid, text, status, node_count)"
            "  VALUES (2000, 1000, 'r', '1+2', 'new', 1);"
            # From version 12 a node carries its user; before, the upgrade fills it in.
            + (" INSERT INTO nodes (id, expression_id, user_id, op, left_value, right_value, pending, state, delay_ms,"
               "  tail_ms, ready_at) VALUES (3000, 2000, 1000, '+', 1, 2, 0, 'ready', 0, 0, now());" if v >= 12 else
               " INSERT INTO nodes (id, expression_id, op, left_value, right_value, pending, state, delay_ms, tail_ms,"
               "  ready_at) VALUES (3000, 2000, '+', 1, 2, 0, 'ready', 0, 0, now());")
            + " INSERT INTO events (user_id, seq, expression_id, kind) VALUES (1000, 1, 2000, 'created')",
            db=db,
        )
        port = harness.free_port()
        p = cl.start_dbagent(name=f"dbagent-from-{v}", DBAGENT_PORT=str(port), **env)
        assert APPLIED in p.log(), p.log()
        assert schema(cl, db) == fresh, f"from version {v}"
        assert functions_row(cl, db).split("|")[0] == DIGEST
        c = DbaClient(f"127.0.0.1:{port}", cl.env["DBAGENT_TOKEN"])
        assert c.GetExpression(user_id=1000, id=2000).expression.status == "new"
        (t,) = c.TakeReady(max=10).nodes
        assert t.node_id == 3000
        assert c.ClaimNode(node_id=3000, epoch=t.epoch, agent="agent-a").outcome == CLAIMED
        assert c.CompleteNode(node_id=3000, epoch=t.epoch, agent="agent-a", value=3).expression_finished
        assert c.GetExpression(user_id=1000, id=2000).expression.result == 3
        events = c.ListEvents(user_id=1000).events
        assert [(e.seq, e.kind) for e in events] == [(1, "created"), (2, "started"), (3, "node"), (4, "finished")]
        c.close()
        assert cl.stop(p) == 0


def test_functions_applied_once_per_digest(bare_cluster):
    """The functions are applied when the recorded digest is not the binary's, once: dbagents
    starting later do nothing, and one serving meanwhile keeps working when another applies."""
    cl = bare_cluster
    has_pgcrypto = cl.servers.psql("SELECT count(*) FROM pg_available_extensions WHERE name = 'pgcrypto'").strip() == "1"
    if has_pgcrypto:  # an extension's functions in public are not ours to drop
        cl.servers.psql("CREATE EXTENSION pgcrypto", db=cl.db)
    p = cl.start_dbagent()
    assert p.log().count("functions applied (") == 1 and APPLIED in p.log()
    row = functions_row(cl)
    assert row.split("|")[0] == DIGEST
    assert migrate(cl, "status").stdout.splitlines()[1] == f"functions digest {DIGEST}, built {DIGEST}"
    q = cl.start_dbagent(name="dbagent-2", DBAGENT_PORT=str(harness.free_port()))
    assert "applied" not in q.log()
    assert functions_row(cl) == row, "the same digest: nothing done"
    assert cl.stop(q) == 0

    c = DbaClient(cl.env["DBAGENT_ADDR"], cl.env["DBAGENT_TOKEN"])
    uid = c.CreateUser(login="steady", password_hash="h").user.id

    def one_expression(req_uid):
        e = c.CreateExpression(user_id=uid, req_uid=req_uid, text="1+1", nodes=[leaf("+", 1, 1)]).expression
        (t,) = c.TakeReady(max=10).nodes
        assert c.ClaimNode(node_id=t.node_id, epoch=t.epoch, agent="agent-a").outcome == CLAIMED
        assert c.CompleteNode(node_id=t.node_id, epoch=t.epoch, agent="agent-a", value=2).expression_finished
        assert c.GetExpression(user_id=uid, id=e.id).expression.status == "ok"
        return [ev.kind for ev in c.ListEvents(user_id=uid).events]

    assert one_expression("a") == ["created", "started", "node", "finished"]
    # Another release's functions recorded: a dbagent told not to migrate only says so.
    cl.servers.psql("UPDATE schema_functions SET digest = 'another'", db=cl.db)
    assert migrate(cl, "status").stdout.splitlines()[1] == f"functions digest another, built {DIGEST}"
    q = cl.start_dbagent(name="dbagent-3", DBAGENT_PORT=str(harness.free_port()), DBAGENT_MIGRATE="0")
    assert "are not this dbagent's" in q.log() and "functions applied" not in q.log()
    assert functions_row(cl).split("|")[0] == "another"
    assert cl.stop(q) == 0
    # Applied again (every function dropped and created) under the serving dbagent, whose
    # prepared statements name the functions that were dropped: its calls still work.
    r = migrate(cl, "up")
    assert r.returncode == 0 and APPLIED in r.stdout + r.stderr, r.stdout + r.stderr
    assert functions_row(cl).split("|")[0] == DIGEST
    assert one_expression("b")[-4:] == ["created", "started", "node", "finished"]
    if has_pgcrypto:
        assert cl.servers.psql("SELECT count(*) FROM pg_proc WHERE proname = 'gen_random_uuid'"
                               " AND pronamespace = 'public'::regnamespace", db=cl.db).strip() == "1"
    assert p.alive()
    c.close()


def test_down_numbers_unread_events_without_the_functions(bare_cluster):
    """Below 004 every event has a number: going down numbers the unread ones in plain SQL (the
    functions are dropped before any down migration runs), as reading them would have."""
    cl = bare_cluster
    p = cl.start_dbagent()
    c = DbaClient(cl.env["DBAGENT_ADDR"], cl.env["DBAGENT_TOKEN"])
    a = c.CreateUser(login="a", password_hash="h").user.id
    b = c.CreateUser(login="b", password_hash="h").user.id
    c.CreateExpression(user_id=a, req_uid="1", text="1", nodes=[], value=1)
    assert [e.seq for e in c.ListEvents(user_id=a).events] == [1]
    c.CreateExpression(user_id=a, req_uid="2", text="2", nodes=[], value=2)
    c.CreateExpression(user_id=a, req_uid="3", text="3", nodes=[], value=3)
    c.CreateExpression(user_id=b, req_uid="1", text="1", nodes=[], value=1)
    c.close()
    assert cl.stop(p) == 0
    r = migrate(cl, "down", "3")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "functions dropped" in r.stdout + r.stderr
    rows = cl.servers.psql("SELECT e.user_id, e.seq, e.payload->>'result' FROM events e ORDER BY 1, 2", db=cl.db).split()
    assert rows == [f"{a}|1|1", f"{a}|2|2", f"{a}|3|3", f"{b}|1|1"]
    seqs = cl.servers.psql("SELECT id, event_seq FROM users ORDER BY id", db=cl.db).split()
    assert seqs == [f"{a}|3", f"{b}|1"]
    assert cl.servers.psql("SELECT count(*) FROM pg_proc WHERE pronamespace = 'public'::regnamespace", db=cl.db).strip() == "0"
    r = migrate(cl, "up")
    assert r.returncode == 0 and APPLIED in r.stdout + r.stderr, r.stdout + r.stderr


def test_a_migration_under_a_running_dbagent(bare_cluster):
    """Another process migrates while a dbagent serves: a column type its prepared statement
    returns changes (004) and the functions it calls are replaced, and the dbagent prepares its
    statements again instead of failing."""
    cl = bare_cluster
    r = migrate(cl, "up", "3")
    assert r.returncode == 0, r.stdout + r.stderr
    # The release at 3 had its functions; GetExpression needs to_ms of them.
    install_stand_ins(cl, cl.db, 1)
    cl.servers.psql("INSERT INTO users (id, login, password_hash) VALUES (7, 'early', 'h');"
                    " INSERT INTO expressions (id, user_id, req_uid, text, status, node_count)"
                    "  VALUES (70, 7, 'r', '1+1', 'new', 1)", db=cl.db)
    p = cl.start_dbagent(DBAGENT_MIGRATE="0", DBAGENT_THREADS="1")
    assert "are not this dbagent's" in p.log()
    c = DbaClient(cl.env["DBAGENT_ADDR"], cl.env["DBAGENT_TOKEN"])
    assert c.GetExpression(user_id=7, id=70).expression.status == "new"
    r = migrate(cl, "up")
    assert r.returncode == 0, r.stdout + r.stderr
    assert c.GetExpression(user_id=7, id=70).expression.status == "new"
    assert "preparing them again" in p.log()
    e = c.CreateExpression(user_id=7, req_uid="s", text="1+1", nodes=[leaf("+", 1, 1)]).expression
    assert c.GetExpression(user_id=7, id=e.id).expression.status == "new"
    c.close()


def test_several_dbagents_start_at_once(bare_cluster):
    cl = bare_cluster
    procs = [cl.start_dbagent(name=f"dbagent-{i}", wait=False, DBAGENT_PORT=str(harness.free_port())) for i in range(4)]
    for p in procs:
        cl.wait_listening(p, p.port)
    rows = cl.servers.psql("SELECT version FROM schema_migrations ORDER BY 1", db=cl.db).split()
    assert rows == [str(v) for v in VERSIONS]
    applied = sum(p.log().count("applied") for p in procs)
    assert applied == len(VERSIONS) + 1, "each migration and the functions applied exactly once, under the advisory lock"
    assert sum(p.log().count(APPLIED) for p in procs) == 1
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


# The shared advisory lock a dbagent's listening connection holds (dbagent/ready.c).
LISTENER_LOCK = "pg_advisory_lock_shared(1667329123, 1819505774)"


def listen_while(cl, as_dbagent, seconds, act):
    """A psql session that LISTENs on calc_ready and calc_events (as a dbagent's listener when
    as_dbagent: holding the listeners' lock, and saying hello) for `seconds`, with act() run while
    it listens; returns the channels of the notifications it received."""
    sleep = f"SELECT pg_sleep({seconds}) /* {'dbagent' if as_dbagent else 'plain'} listener */"
    listen = ["LISTEN calc_ready", "LISTEN calc_events"]
    cmds = ([f"SELECT {LISTENER_LOCK}"] + listen + ["NOTIFY calc_hello"] if as_dbagent else listen) + [sleep]
    args = [harness.SERVERS_CLI, "psql", cl.servers.pg_dir, str(cl.servers.pg_port), "-d", cl.db]
    for c in cmds:
        args += ["-c", c]
    psql = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        harness.wait_for(
            lambda: cl.servers.psql(f"SELECT count(*) FROM pg_stat_activity WHERE query = '{sleep}'", db=cl.db).strip() == "1",
            10, "the listener to listen")
        act()
        out, _ = psql.communicate(timeout=seconds + 30)
    finally:
        if psql.poll() is None:
            psql.kill()
            psql.wait()
    assert psql.returncode == 0, out
    return sorted(set(re.findall(r'notification "(calc_\w+)"', out)))


def test_a_lone_dbagent_sends_no_notify(bare_cluster):
    """NOTIFY calc_ready and calc_events are for other dbagents; each is a transaction with an id
    and a commit record, so a dbagent sends them only while another dbagent's listener (a session
    holding the listeners' shared advisory lock) is connected. A session that merely listens hears
    nothing. Once a statement found nobody listening, later commits cost no statement at all,
    until a listener says hello: it then gets both notifications at once, for everything it may
    have missed, and those of later commits."""
    cl = bare_cluster
    cl.start_dbagent()
    c = DbaClient(cl.env["DBAGENT_ADDR"], cl.env["DBAGENT_TOKEN"])
    uid = c.CreateUser(login="lone", password_hash="h").user.id
    # The creation makes a node ready and appends an event: both would be owed to a peer.
    create = lambda k: c.CreateExpression(user_id=uid, req_uid=f"r{k}", text="1+1", nodes=[leaf("+", 1, 1)])
    assert listen_while(cl, False, 3, lambda: create(1)) == []
    before = c.GetStats().notify_statements
    assert before >= 1  # the one that found nobody
    for k in range(10, 15):
        create(k)
    assert listen_while(cl, True, 3, lambda: None) == ["calc_events", "calc_ready"]
    assert c.GetStats().notify_statements == before + 1, "alone, the five creations cost no statement"
    assert listen_while(cl, True, 3, lambda: create(2)) == ["calc_events", "calc_ready"]
    c.close()


def test_concurrent_takes_share_the_agents_room(bare_cluster):
    """Two dispatchers (API instances) woken at once must not both count the same free workers:
    takes count the room one after another. (The room and the pick are two statements: the later
    take's pick saw the earlier one's nodes queued and took as many again, 4 where 2 fit.) A lock
    on agents holds the takes at the room count, then lets them go; the live agent has 2 workers
    and nothing may run ahead."""
    cl = bare_cluster
    cl.start_dbagent()
    c = DbaClient(cl.env["DBAGENT_ADDR"], cl.env["DBAGENT_TOKEN"])
    uid = c.CreateUser(login="roomy", password_hash="h").user.id
    c.CreateExpression(user_id=uid, req_uid="r1", text="wide", nodes=plan_wide(8))
    c.Heartbeat(agent="agent-r", workers=2, busy=0, nodes=[])
    take = dict(max=10, live_within_ms=60000, ahead_percent=0, wait_ms=0)
    waiting = ("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'calc-dbagent'"
               " AND wait_event_type = 'Lock'")
    holder = hold_transaction(cl, "LOCK TABLE agents IN ACCESS EXCLUSIVE MODE", 60)
    try:
        with cf.ThreadPoolExecutor(2) as ex:
            calls = [ex.submit(c.TakeReady, **take) for _ in range(2)]
            harness.wait_for(lambda: cl.servers.psql(waiting, db=cl.db).strip() == "2", 10, "both takes to wait")
            end_transaction(cl, holder)
            holder = None
            taken = [len(f.result(20).nodes) for f in calls]
    finally:
        if holder:
            end_transaction(cl, holder)
    assert sorted(taken) == [0, 2], taken
    c.close()


def test_a_notify_that_fails_on_a_sound_connection_is_tried_again_after_pauses(bare_cluster):
    """A NOTIFY statement can fail while its connection is fine (a full notification queue; here,
    pg_notify revoked from the cluster's role). dbagent keeps the connection and the NOTIFY owed,
    and tries again after growing pauses, instead of reconnecting at once, over and over (each new
    listening connection makes every local poll and watch look again)."""
    cl = bare_cluster
    p = cl.start_dbagent()
    c = DbaClient(cl.env["DBAGENT_ADDR"], cl.env["DBAGENT_TOKEN"])
    uid = c.CreateUser(login="refused", password_hash="h").user.id
    revoke = "REVOKE EXECUTE ON FUNCTION pg_notify(text, text) FROM PUBLIC"
    cl.servers.psql(revoke, db=cl.db)
    try:
        c.CreateExpression(user_id=uid, req_uid="r1", text="1+1", nodes=[leaf("+", 1, 1)])
        t0 = time.monotonic()
        harness.wait_for(lambda: p.log().count("ready: NOTIFY:") >= 4, 20, "four tries of the NOTIFY")
        took = time.monotonic() - t0
    finally:
        cl.servers.psql(revoke.replace("REVOKE", "GRANT").replace("FROM", "TO"), db=cl.db)
    log = p.log()
    assert "lost the listening connection" not in log, log[-3000:]
    # The pauses before the 2nd, 3rd and 4th: 0.1, 0.2 and 0.4 s (the 1st may precede t0 a little).
    assert took >= 0.6, f"four tries in {took:.2f}s"
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
    # The take committed without waiting for the WAL flush (a take lost in a crash only puts its
    # node back to ready); this test is about the claim, so the take is flushed before the crash.
    cl.servers.psql("CHECKPOINT", db=cl.db)
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
        # Killing the client does not end its backend's pg_sleep: end it, and the lock with it.
        cl.servers.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND query LIKE '%pg_advisory_lock%'"
                        " AND pid <> pg_backend_pid()", db=cl.db)


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
    assert cl.servers.psql("SELECT count(*) FROM schema_migrations", db=cl.db).strip() == str(len(VERSIONS))
    cl.stop(p)

    env = dict(os.environ)
    env.update(cl.env)
    env.update(DB_USERNAME=role, DB_PASSWORD=password[:-1])
    r = subprocess.run([cl.binary("calc-dbagent"), "migrate", "status"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "password authentication failed" in r.stderr + r.stdout
