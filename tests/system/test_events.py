"""GET /events: Server-Sent Events of a user's own events. A stream replays the log after its
position, says `online`, then goes live; resuming from any id gives every event once and in order;
a slow reader is held back and paced, not cut; the credential is a bearer token or a short-lived ticket; a
position retention deleted is answered 410; each API instance receives only the events of the
users whose streams it holds."""

import os
import random
import re
import subprocess
import time

import harness
import pytest
import requests

from api_helpers import error_of, new_user, submit
from dba_client import DbaClient
from sse import SseClosed, open_stream

KINDS = {"created", "started", "node", "finished", "failed", "cancelled"}
ENV = {"STREAM_KEEPALIVE_MS": "300", "STREAM_TICKET_TTL_S": "2", "API_MAX_CONNECTIONS_PER_ADDRESS": "512"}


def metric(url, name):
    text = requests.get(url + "/metrics", timeout=10).text
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


def wait_final(api, eid, timeout=60):
    r = api.get(f"/expression/{eid}?wait=20000", timeout=30)
    deadline = time.monotonic() + timeout
    while r.json()["expression"]["status"] not in ("Ok", "Error", "Cancelled"):
        assert time.monotonic() < deadline, r.text
        r = api.get(f"/expression/{eid}?wait=20000", timeout=30)
    return r.json()["expression"]


def read_until(stream, pred, timeout=30, what="events"):
    """Events (online markers included) until pred(events) holds; fails at the deadline."""
    got = []
    deadline = time.monotonic() + timeout
    for ev in stream.events(deadline):
        got.append(ev)
        if pred(got):
            return got
    raise AssertionError(f"no {what} within {timeout} s; got {[(e.get('id'), e['event']) for e in got]}")


def finished_count(n):
    return lambda evs: sum(e["event"] in ("finished", "failed", "cancelled") for e in evs) >= n


def all_events(url, token):
    """The user's whole log as the stream replays it: seq -> (kind, data)."""
    s = open_stream(url, token=token, after=0)
    try:
        got = read_until(s, lambda evs: evs[-1]["event"] == "online", what="the online marker")
    finally:
        s.close()
    return [e for e in got if e["event"] != "online"]


@pytest.mark.cluster(agents=1, env=ENV)
def test_replay_then_online_then_live_events(cluster):
    cluster.admin_client().post("/duration", json={"+": 50, "*": 50}, check=True)
    api = new_user(cluster, "live")
    eid = submit(api, "2+2*2")
    assert wait_final(api, eid)["result"] == 6
    s = open_stream(cluster.apis[0].url, token=api.token, after=0)
    try:
        assert s.status == 200 and s.headers["content-type"] == "text/event-stream"
        replay = read_until(s, lambda evs: evs[-1]["event"] == "online")
        kinds = [e["event"] for e in replay]
        assert kinds == ["created", "started", "node", "node", "finished", "online"], kinds
        seqs = [int(e["id"]) for e in replay[:-1]]
        assert seqs == list(range(1, 6))
        assert replay[-1]["id"] == "5" and replay[-1]["data"] == {"seq": 5}
        for e in replay[:-1]:
            d = e["data"]
            assert d["seq"] == int(e["id"]) and d["kind"] == e["event"] and d["expression_id"] == eid
            assert d["at_ms"] > 1_700_000_000_000
        nodes = [e["data"] for e in replay if e["event"] == "node"]
        assert sorted(n["value"] for n in nodes) == [4, 6] and all(n["node_id"] > 0 for n in nodes)
        assert replay[4]["data"]["result"] == 6
        # Live: a new expression's events come on the same stream, numbered on.
        t0 = time.monotonic()
        eid2 = submit(api, "1+2")
        live = read_until(s, finished_count(1))
        assert [e["event"] for e in live] == ["created", "started", "node", "finished"]
        assert [int(e["id"]) for e in live] == [6, 7, 8, 9]
        assert all(e["data"]["expression_id"] == eid2 for e in live)
        assert time.monotonic() - t0 < 10
        # Cancelled and failed expressions have their events too.
        cluster.admin_client().post("/duration", json={"+": 5000, "/": 10}, check=True)
        eid3 = submit(api, "1+1")
        assert api.delete(f"/expression/{eid3}").status_code == 200
        eid4 = submit(api, "1/0")
        got = read_until(s, lambda evs: {"cancelled", "failed"} <= {e["event"] for e in evs})
        assert {e["event"] for e in got} <= KINDS
        failed = [e["data"] for e in got if e["event"] == "failed"]
        assert failed[0]["expression_id"] == eid4 and "division by zero" in failed[0]["error"]
        assert [e["data"]["expression_id"] for e in got if e["event"] == "cancelled"] == [eid3]
    finally:
        s.close()


@pytest.mark.cluster(agents=1, env=ENV)
def test_no_position_gets_online_then_only_new_events(cluster):
    api = new_user(cluster, "fresh")
    wait_final(api, submit(api, "1+1"))
    s = open_stream(cluster.apis[0].url, token=api.token)
    try:
        first = read_until(s, lambda evs: True)
        assert first[0]["event"] == "online" and first[0]["data"] == {"seq": 4}
        assert first[0]["id"] == "4", "an EventSource reconnecting before any event resumes after 4"
        submit(api, "3*3")
        live = read_until(s, finished_count(1))
        assert [int(e["id"]) for e in live] == [5, 6, 7, 8]
        # Idle, the stream carries keep-alive comments (STREAM_KEEPALIVE_MS=300).
        comments = [f["comment"] for f in s.frames(time.monotonic() + 1.5) if "comment" in f]
        assert comments and set(comments) == {"keep-alive"}
    finally:
        s.close()


@pytest.mark.cluster(agents=2, env=ENV)
def test_resume_at_random_points_has_no_gap_and_no_repeat(cluster):
    """Disconnect after a random number of events, again and again, while expressions run; resume
    from the last id (by header or by query); the events seen are exactly the log, in order."""
    cluster.admin_client().post("/duration", json={"+": 20, "-": 20, "*": 20, "/": 20}, check=True)
    api = new_user(cluster, "resume")
    rng = random.Random(int(os.environ.get("CALC_TEST_SEED", "18")))
    texts = ["+".join(str(i) for i in range(1, n)) for n in (5, 9, 17, 12, 7, 30)]
    seen, last, reconnects, i = [], 0, 0, 0
    deadline = time.monotonic() + 120
    while True:
        assert time.monotonic() < deadline, f"stuck at seq {last}"
        if i < len(texts) and rng.random() < 0.5:
            submit(api, texts[i])
            i += 1
        how = rng.choice(["header", "query"])
        s = open_stream(cluster.apis[0].url, token=api.token,
                        **({"last_id": last} if how == "header" else {"after": last}))
        assert s.status == 200, s.error
        want = rng.randint(1, 12)
        try:
            for ev in s.events(time.monotonic() + 3):
                if ev["event"] == "online":
                    assert ev["data"]["seq"] == last
                    continue
                seq = int(ev["id"])
                assert seq == last + 1, f"after {last} came {seq} ({how})"
                seen.append(ev)
                last = seq
                want -= 1
                if want == 0:
                    break
        finally:
            s.close()
        reconnects += 1
        if i == len(texts) and sum(e["event"] == "finished" for e in seen) == len(texts):
            break
    assert reconnects > 5
    whole = all_events(cluster.apis[0].url, api.token)
    assert [(e["id"], e["event"], e["data"]) for e in seen] == [(e["id"], e["event"], e["data"]) for e in whole]


@pytest.mark.cluster(agents=1, env=ENV)
def test_credentials_a_ticket_or_a_bearer_token(cluster):
    url = cluster.apis[0].url
    api = new_user(cluster, "cred")
    # Missing, malformed, forged, or the wrong kind of credential: 401 with a JSON error.
    for path, headers in [("/events", {}), ("/events?ticket=nonsense", {}), ("/events?ticket=1.2.abc", {}),
                          ("/events", {"Authorization": "Bearer not-a-token"}),
                          ("/events", {"Authorization": "Basic abc"})]:
        body = error_of(requests.get(url + path, headers=headers, timeout=10), 401)
        assert "ticket" in body["error"] or "token" in body["error"], body
    # A ticket needs a login; it is no access token.
    error_of(requests.post(url + "/api/v1/events/ticket", timeout=10), 401)
    r = api.post("/api/v1/events/ticket", check=True).json()
    assert r["expires_in"] == 2 and r["ticket"]
    error_of(requests.get(url + "/expression", headers={"Authorization": f"Bearer {r['ticket']}"}, timeout=10), 401)
    # Another user's id under this ticket's signature is refused.
    forged = "9" + r["ticket"]
    error_of(requests.get(url + "/events", params={"ticket": forged}, timeout=10), 401)
    # The ticket opens the stream, for its own user.
    wait_final(api, submit(api, "1+1"))
    s = open_stream(url, ticket=r["ticket"], after=0)
    try:
        assert s.status == 200
        got = read_until(s, lambda evs: evs[-1]["event"] == "online")
        assert [e["event"] for e in got] == ["created", "started", "node", "finished", "online"]
    finally:
        s.close()
    # Expired (STREAM_TICKET_TTL_S=2): refused. (A stream that opens is closed at once.)
    def refused():
        s = open_stream(url, ticket=r["ticket"])
        s.close()
        return s.status == 401 and s.error

    body = cluster.wait_for(refused, 10, "the ticket to expire")
    assert "expired" in body["error"]
    # Bad positions: 400 naming the problem.
    for q in ("after=-1", "after=x", "after=", "after=99999"):
        body = error_of(requests.get(url + "/events?" + q, headers={"Authorization": f"Bearer {api.token}"}, timeout=10), 400)
        assert "after" in body["error"] or "past your last event" in body["error"], body
    body = error_of(requests.get(url + "/events", headers={"Authorization": f"Bearer {api.token}", "Last-Event-ID": "z"},
                                 timeout=10), 400)
    assert "Last-Event-ID" in body["error"]


@pytest.mark.cluster(agents=1, env=ENV)
def test_a_position_retention_deleted_gets_410(cluster):
    api = new_user(cluster, "gone")
    wait_final(api, submit(api, "1+1"))
    wait_final(api, submit(api, "2+2"))
    uid = api.get(f"/expression").json()["expressions"][0]["user_id"]
    all_events(cluster.apis[0].url, api.token)  # numbers them: 8 events
    # As retention leaves it after deleting the first expression's events.
    cluster.servers.psql(f"UPDATE users SET events_purged_seq = 4 WHERE id = {uid}", db=cluster.db)
    r = requests.get(cluster.apis[0].url + "/events?after=2", headers={"Authorization": f"Bearer {api.token}"}, timeout=10)
    body = error_of(r, 410)
    assert body["reload_after"] == 4 and "after seq 4" in body["error"]
    s = open_stream(cluster.apis[0].url, token=api.token, last_id=4)
    try:
        got = read_until(s, lambda evs: evs[-1]["event"] == "online")
        assert [int(e["id"]) for e in got[:-1]] == [5, 6, 7, 8]
    finally:
        s.close()


@pytest.mark.cluster(agents=1, env=dict(ENV, STREAM_BUFFER_BYTES="4096"))
def test_a_slow_reader_is_held_back_not_cut_and_gets_every_event_at_its_pace(cluster):
    """A client that reads nothing while hundreds of events come is given no more than half its
    cap and left out of the polls (they do not spin for it); when it reads, the log gives it the
    rest on the same connection: every event once, in order, then live ones. A replay of the whole
    log through the same small buffer is paced the same way."""
    url = cluster.apis[0].url
    api = new_user(cluster, "slow")
    s = open_stream(url, token=api.token, rcvbuf=2048)
    assert s.status == 200
    cluster.wait_for(lambda: metric(url, "calc_event_streams") == 1, 10, "the stream to be open")
    # It reads nothing more while a long expression's hundreds of events are produced.
    first = submit(api, "+".join(["1"] * 400))
    assert wait_final(api, first)["result"] == 400
    assert metric(url, "calc_event_streams_held_total") >= 1
    assert metric(url, "calc_event_streams_cut_total") == 0
    assert metric(url, "calc_event_streams") == 1
    # Held, its user is in no poll: more events while it still reads nothing cost none.
    polls = metric(url, "calc_stream_watch_polls_total")
    second = submit(api, "2+3")
    assert wait_final(api, second)["result"] == 5
    assert metric(url, "calc_stream_watch_polls_total") == polls
    try:
        got = read_until(s, finished_count(2), timeout=60)
        third = submit(api, "2*3")  # and then live, on the same connection
        got += read_until(s, finished_count(1), timeout=30)
    finally:
        s.close()
    events = [e for e in got if e["event"] != "online"]
    assert [int(e["id"]) for e in events] == list(range(1, len(events) + 1))
    by_expression = [e["data"]["expression_id"] for e in events]
    assert by_expression == [first] * 402 + [second] * 4 + [third] * 4
    kinds = [e["event"] for e in events]
    assert kinds[:2] == ["created", "started"] and kinds.count("node") == 399 + 2
    assert [kinds[401], kinds[405], kinds[409]] == ["finished"] * 3
    # The whole log again, replayed through the same small buffer by a client that reads it all.
    replay = open_stream(url, token=api.token, after=0, rcvbuf=2048)
    try:
        again = read_until(replay, lambda evs: evs[-1]["event"] == "online", timeout=60, what="the replay")
    finally:
        replay.close()
    assert [int(e["id"]) for e in again[:-1]] == list(range(1, len(events) + 1))
    assert again[-1]["data"] == {"seq": len(events)}
    assert metric(url, "calc_event_streams_cut_total") == 0
    cluster.wait_for(lambda: metric(url, "calc_event_streams") == 0, 10, "the streams to be gone")


@pytest.mark.cluster(agents=1, env=ENV)
def test_two_instances_each_receive_only_their_users_events(cluster):
    api1 = cluster.apis[0]
    api2 = cluster.start_api()
    a = new_user(cluster, "on-one", api=api1)
    b = new_user(cluster, "on-two", api=api2)
    sa = open_stream(api1.url, token=a.token)
    sb = open_stream(api2.url, token=b.token)
    try:
        for s in (sa, sb):
            assert read_until(s, lambda evs: True)[0]["event"] == "online"
        a_ids = [submit(a, "1+2+3") for _ in range(3)]
        b_ids = [submit(b, "4*5") for _ in range(2)]
        got_a = read_until(sa, finished_count(3))
        got_b = read_until(sb, finished_count(2))
        assert {e["data"]["expression_id"] for e in got_a} == set(a_ids)
        assert {e["data"]["expression_id"] for e in got_b} == set(b_ids)
        assert len(got_a) == 3 * 5 and len(got_b) == 2 * 4
        # Each instance received from dbagent only its own user's events.
        assert metric(api1.url, "calc_stream_events_received_total") == len(got_a)
        assert metric(api2.url, "calc_stream_events_received_total") == len(got_b)
        assert metric(api1.url, "calc_stream_events_sent_total") == len(got_a)
        assert metric(api1.url, "calc_event_streams") == 1 and metric(api2.url, "calc_event_stream_users") == 1
        assert metric(api1.url, "calc_stream_user_wakeups_total") >= 1
    finally:
        sa.close()
        sb.close()
    cluster.wait_for(lambda: metric(api1.url, "calc_event_streams") == 0, 10, "the stream to be gone")


# No agent: the only event is `created`, committed by dbagent 2.
@pytest.mark.cluster(agents=0, env=ENV)
def test_events_committed_by_another_dbagent_wake_the_poll_at_once(cluster):
    """API 1 talks to dbagent 1, API 2 to dbagent 2. An expression created through API 2 commits
    its event at dbagent 2; dbagent 2's NOTIFY calc_events wakes dbagent 1's waiting WatchEvents
    for that user, so API 1's stream gets it at once, not when its poll times out (25 s)."""
    port = harness.free_port()
    cluster.start_dbagent(name="dbagent-2", DBAGENT_PORT=str(port))
    api2 = cluster.start_api(DBAGENT_ADDR=f"127.0.0.1:{port}")
    dba1 = DbaClient(cluster.env["DBAGENT_ADDR"], cluster.env["DBAGENT_TOKEN"])
    a = new_user(cluster, "two-dbagents")
    s = open_stream(cluster.apis[0].url, token=a.token)
    try:
        assert read_until(s, lambda evs: True)[0]["event"] == "online"
        other = cluster.api_client(api2)
        other.token = a.token
        # Each after the previous one's event came: the poll has asked again and waits by then.
        for n in range(3):
            t0 = time.monotonic()
            eid = submit(other, "1+2")
            got = read_until(s, lambda evs: True, timeout=10)
            took = time.monotonic() - t0
            assert got[0]["event"] == "created" and got[0]["data"]["expression_id"] == eid and took < 3, (got, took)
        # Dbagent 1 committed no event itself: its waiting poll was woken by dbagent 2's NOTIFY.
        stats = dba1.GetStats()
        assert stats.event_users_signalled == 0
        assert stats.event_watch_wakeups >= 1
    finally:
        s.close()
        dba1.close()


# QUEUED_TIMEOUT_MS: a node whose TakeReady reply the kill lost is dispatched again soon.
@pytest.mark.cluster(agents=1, env=dict(ENV, STREAM_WATCH_WAIT_MS="2000", QUEUED_TIMEOUT_MS="2000"))
def test_a_dbagent_restart_loses_no_event_of_an_open_stream(cluster):
    """The stream stays open across a dbagent restart; the events committed while the API's poll
    was down (and those of an expression in flight at the kill) come after it, by position."""
    api = new_user(cluster, "restart")
    s = open_stream(cluster.apis[0].url, token=api.token)
    try:
        assert read_until(s, lambda evs: True)[0]["event"] == "online"
        eid = submit(api, "1+1")
        got = read_until(s, finished_count(1))
        eid2 = submit(api, "2+2")
        dba = [p for p in cluster.procs if p.name == "dbagent"][-1]
        cluster.restart(dba, kill=True)
        cluster.wait_ready()  # the API reaches the new dbagent
        eid3 = submit(api, "3+3")
        got += read_until(s, finished_count(2), timeout=60)
        assert [int(e["id"]) for e in got] == list(range(1, 13))
        assert {e["data"]["expression_id"] for e in got} == {eid, eid2, eid3}
    finally:
        s.close()


@pytest.mark.cluster(agents=1, env=dict(ENV, STREAM_MAX_LIFETIME_S="5"))
def test_a_stream_ends_at_its_lifetime_and_sigterm_ends_the_rest(cluster):
    api = new_user(cluster, "life")
    s = open_stream(cluster.apis[0].url, token=api.token)
    t0 = time.monotonic()
    with pytest.raises(SseClosed):
        for f in s.frames(time.monotonic() + 15):
            pass
    assert 4 < time.monotonic() - t0 < 10
    s.close()
    # Streams open at SIGTERM end and the API exits 0 at once (the harness checks the exit).
    s = open_stream(cluster.apis[0].url, token=api.token)
    read_until(s, lambda evs: True)
    api_proc = cluster.apis[0]
    t0 = time.monotonic()
    assert cluster.stop(api_proc) == 0
    assert time.monotonic() - t0 < 5
    s.close()


def test_stream_settings_are_checked_at_start(bare_cluster):
    cl = bare_cluster
    cl.setup_resources()
    for name, value in [("STREAM_KEEPALIVE_MS", "60000"), ("STREAM_BUFFER_BYTES", "100"),
                        ("STREAM_TICKET_TTL_S", "61"), ("STREAM_MAX_LIFETIME_S", "x")]:
        env = dict(os.environ, **cl.env, **{name: value})
        r = subprocess.run([cl.binary("calc-api")], env=env, capture_output=True, text=True, timeout=30)
        assert r.returncode == 64 and name in r.stderr, r.stderr
