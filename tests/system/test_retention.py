"""Retention: dbagent deletes expressions finished long ago (with their nodes and events), refresh
tokens long expired and agents long silent, in small batches, while a real agent computes other
expressions; ListEvents tells a reader whose place was deleted to reload; one dbagent of a
database runs it at a time (an advisory lock)."""

import os
import re
import subprocess

import pytest
import requests

import harness
from api_helpers import expression, new_user, submit
from dba_client import DbaClient, RpcError

import grpc

SC = grpc.StatusCode
LOCK_KEY = "x'72657461696e'::bigint"  # dbagent/retention.c: RETENTION_LOCK_KEY
# A pass every 200 ms, in batches of 5 rows; anything older than an hour goes.
FAST = {
    "RETENTION_INTERVAL_MS": "200",
    "RETENTION_EXPRESSIONS_S": "3600",
    "RETENTION_AGENTS_S": "3600",
    "RETENTION_REFRESH_TOKENS_S": "3600",
    "RETENTION_BATCH": "5",
    "RETENTION_PAUSE_MS": "10",
}


def ids(xs):
    return "ARRAY[" + ",".join(str(x) for x in xs) + "]::bigint[]"


def metric(api, name):
    m = re.search(rf"^{name} (\S+)$", requests.get(api.base_url + "/metrics", timeout=10).text, re.M)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


def count(cl, sql):
    return int(cl.servers.psql(sql, db=cl.db).strip())


def wait_ok(cl, api, eid, value, timeout=60):
    def done():
        e = expression(api, eid)
        assert e["status"] not in ("Error", "Cancelled"), e
        return e["status"] == "Ok" and e

    e = cl.wait_for(done, timeout, f"expression {eid}")
    assert e["result"] == value, e


@pytest.mark.cluster(agents=1, env=FAST)
def test_old_rows_go_and_nothing_in_flight_is_touched(cluster):
    cl = cluster
    dba = DbaClient(cl.env["DBAGENT_ADDR"], cl.env["DBAGENT_TOKEN"])
    a, b, c = new_user(cl, "a"), new_user(cl, "b"), new_user(cl, "c")
    # A's history: 12 expressions, one after the other (so their events do not interleave),
    # finished; the last one stays young.
    old = []
    for i in range(12):
        old.append(submit(a, f"{i} + 1"))
        wait_ok(cl, a, old[-1], i + 1)
    uid_a = expression(a, old[0])["user_id"]
    seen = dba.ListEvents(user_id=uid_a, after_seq=0, limit=1000).events  # numbers them
    assert len(seen) >= 12 * 3
    # C's: one expression whose events nobody ever read (not numbered yet).
    c_old = submit(c, "5 + 5")
    wait_ok(cl, c, c_old, 10)
    uid_c = expression(c, c_old)["user_id"]
    # Work in flight: slow operations, a real agent.
    admin = cl.admin_client()
    assert admin.post("/duration", json={"+": 400, "*": 400}).status_code == 200
    live_a = [submit(a, "(1 + 2) * (3 + 4)") for _ in range(3)]
    live_b = [submit(b, f"({i} + 2) * (3 + 4)") for i in range(3)]
    uid_b = expression(b, live_b[0])["user_id"]
    gone = old[:-1] + [c_old]
    assert count(cl, f"SELECT count(*) FROM nodes WHERE expression_id = ANY({ids(gone)})") == len(gone)
    # Age everything at once: A's old ones and C's finished two hours ago; B's first expression,
    # still in flight, was created two hours ago; B's refresh tokens expired two hours ago; one
    # agent was last seen two hours ago and one ten minutes ago.
    cl.servers.psql(
        f"UPDATE expressions SET created_at = now() - interval '2 hours',"
        f" finished_at = now() - interval '2 hours' WHERE id = ANY({ids(gone)});"
        f" UPDATE events SET created_at = now() - interval '2 hours'"
        f" WHERE expression_id = ANY({ids(gone + live_b[:1])});"
        f" UPDATE expressions SET created_at = now() - interval '2 hours' WHERE id = {live_b[0]};"
        f" UPDATE refresh_tokens SET expires_at = now() - interval '2 hours' WHERE user_id = {uid_b};"
        " INSERT INTO agents (name, last_heartbeat_at) VALUES"
        " ('long-gone', now() - interval '2 hours'), ('lately-gone', now() - interval '10 minutes')",
        db=cl.db,
    )

    def cleaned():
        return (
            count(cl, f"SELECT count(*) FROM expressions WHERE id = ANY({ids(gone)})") == 0
            and count(cl, f"SELECT count(*) FROM events WHERE expression_id = ANY({ids(gone)})") == 0
            and count(cl, f"SELECT count(*) FROM refresh_tokens WHERE user_id = {uid_b}") == 0
            and count(cl, "SELECT count(*) FROM agents WHERE name = 'long-gone'") == 0
        )

    cl.wait_for(cleaned, 30, "retention to delete the old rows")
    assert count(cl, f"SELECT count(*) FROM nodes WHERE expression_id = ANY({ids(gone)})") == 0
    # Everything in flight finishes, right.
    for eid in live_a:
        wait_ok(cl, a, eid, 21)
    for i, eid in enumerate(live_b):
        wait_ok(cl, b, eid, (i + 2) * 7)
    # What is young or in flight stayed: the last of A's, B's old-looking one and its events,
    # A's and C's refresh tokens, the agent seen ten minutes ago and the live one.
    wait_ok(cl, a, old[-1], 12)
    assert count(cl, f"SELECT count(*) FROM events WHERE expression_id = {live_b[0]}") >= 3
    assert count(cl, f"SELECT count(*) FROM refresh_tokens WHERE user_id IN ({uid_a}, {uid_c})") >= 2
    assert count(cl, "SELECT count(*) FROM agents WHERE name IN ('lately-gone', 'agent-1')") == 2
    # A reader resuming below what was deleted is told to reload; after it, reads on.
    purged = count(cl, f"SELECT events_purged_seq FROM users WHERE id = {uid_a}")
    assert purged >= 11 * 3
    with pytest.raises(RpcError) as e:
        dba.ListEvents(user_id=uid_a, after_seq=seen[0].seq, limit=1000)
    assert e.value.code == SC.OUT_OF_RANGE and f"up to seq {purged} were deleted" in e.value.details
    assert "reload" in e.value.details
    rest = dba.ListEvents(user_id=uid_a, after_seq=purged, limit=1000).events
    seqs = [ev.seq for ev in rest]
    assert seqs == list(range(purged + 1, purged + 1 + len(seqs))), seqs
    assert {ev.expression_id for ev in rest} == {old[-1], *live_a}
    # Numbering goes on above the last number: nothing given twice, no gap.
    new = submit(a, "20 + 1")
    wait_ok(cl, a, new, 21)
    more = dba.ListEvents(user_id=uid_a, after_seq=seqs[-1], limit=1000).events
    assert [ev.seq for ev in more] == list(range(seqs[-1] + 1, seqs[-1] + 1 + len(more))) and more
    assert {ev.expression_id for ev in more} == {new}
    # C's events were numbered before they went: a read from the start must reload too.
    assert count(cl, f"SELECT events_purged_seq FROM users WHERE id = {uid_c}") >= 3
    assert dba.code_of("ListEvents", user_id=uid_c, after_seq=0, limit=10) == SC.OUT_OF_RANGE
    stats = dba.GetStats()
    assert stats.retention_passes > 0 and stats.retention_deleted >= len(gone) + 3 * len(gone) + 2
    log = cl.procs[0].log()
    assert "retention: deleted" in log
    dba.close()


@pytest.mark.cluster(agents=1, env=dict(FAST, RETENTION_EXPRESSIONS_S="60"))
def test_a_finished_expression_the_api_cached_is_a_404_once_retention_deleted_it(cluster):
    """The API serves a finished expression's GET from its cache, but only until retention may
    delete it (dbagent says when): after that it asks dbagent again, which no longer has it. The
    shortest retention there is (60 s) has to pass, so this test takes a minute."""
    cl = cluster
    api = new_user(cl, "cached")
    eid = submit(api, "6 * 7")
    wait_ok(cl, api, eid, 42)
    assert expression(api, eid)["result"] == 42  # kept in the cache now
    hits = metric(api, "calc_expression_cache_hits_total")
    assert expression(api, eid)["result"] == 42
    assert metric(api, "calc_expression_cache_hits_total") == hits + 1  # served from it
    # dbagent says how long is left, as a duration (the API counts it on its own clock).
    dba = DbaClient(cl.env["DBAGENT_ADDR"], cl.env["DBAGENT_TOKEN"])
    try:
        uid = count(cl, f"SELECT user_id FROM expressions WHERE id = {eid}")
        left = dba.GetExpression(user_id=uid, id=eid).expression.retained_for_ms
        age = float(cl.servers.psql(f"SELECT extract(epoch FROM now() - finished_at) * 1000 FROM expressions"
                                    f" WHERE id = {eid}", db=cl.db).strip())
    finally:
        dba.close()
    assert 0 < left <= 60000 and abs(left - (60000 - age)) < 5000, (left, age)

    def gone():
        r = api.get(f"/expression/{eid}")
        assert r.status_code in (200, 404), r.text
        return r.status_code == 404
    cl.wait_for(gone, 90, "the expression to be gone for the API as for dbagent", 0.5)
    assert metric(api, "calc_expression_cache_expired_total") == 1  # dropped at its time
    assert count(cl, f"SELECT count(*) FROM expressions WHERE id = {eid}") == 0
    assert api.get("/expression").json()["expressions"] == []


@pytest.mark.cluster(env=FAST)
def test_one_dbagent_at_a_time(bare_cluster):
    """While another session holds the retention lock, a dbagent skips its passes and deletes
    nothing; once the lock is free, it runs them."""
    cl = bare_cluster
    p = cl.start_dbagent()
    dba = DbaClient(cl.env["DBAGENT_ADDR"], cl.env["DBAGENT_TOKEN"])
    cl.wait_for(lambda: dba.GetStats().retention_passes > 0, 10, "a first pass")
    holder = subprocess.Popen(
        [harness.SERVERS_CLI, "psql", cl.servers.pg_dir, str(cl.servers.pg_port), "-d", cl.db, "-At"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        holder.stdin.write(f"SELECT pg_advisory_lock({LOCK_KEY});\n")
        holder.stdin.flush()
        held = (
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = 'psql'"
            " AND a.datname = current_database()"
        )
        cl.wait_for(lambda: count(cl, held) == 1, 10, "the lock to be held")
        cl.servers.psql(
            "INSERT INTO agents (name, last_heartbeat_at) VALUES ('long-gone', now() - interval '2 hours')",
            db=cl.db,
        )
        before = dba.GetStats()
        cl.wait_for(lambda: dba.GetStats().retention_skipped >= before.retention_skipped + 3, 10, "skipped passes")
        after = dba.GetStats()
        assert after.retention_passes <= before.retention_passes + 1  # one may have been running
        assert count(cl, "SELECT count(*) FROM agents WHERE name = 'long-gone'") == 1
        assert "another dbagent holds the lock" in p.log()
        holder.stdin.write(f"SELECT pg_advisory_unlock({LOCK_KEY});\n\\q\n")
        holder.stdin.flush()
        holder.wait(timeout=10)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    cl.wait_for(lambda: count(cl, "SELECT count(*) FROM agents WHERE name = 'long-gone'") == 0, 10, "the pass")
    dba.close()


@pytest.mark.parametrize(
    "setting",
    [
        {"RETENTION_INTERVAL_MS": "50"},
        {"RETENTION_EXPRESSIONS_S": "30"},
        {"RETENTION_AGENTS_S": "1"},
        {"RETENTION_BATCH": "0"},
        {"RETENTION_REFRESH_TOKENS_S": "-1"},
    ],
)
def test_a_setting_it_cannot_honour_stops_it_at_start(setting):
    env = dict(os.environ, DBAGENT_TOKEN="x" * 32, **setting)
    r = subprocess.run(
        [os.path.join(harness.BIN_DIR, "calc-dbagent")], env=env, capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 64, r.stderr
    assert next(iter(setting)) in r.stderr
