"""GET /expression/{id}?wait=MS: the reply comes as soon as the expression is final, or with its
state when the wait runs out; waiting requests hold neither a thread nor a dbagent call each."""

import concurrent.futures as cf
import re
import signal
import time

import pytest
import requests

from api_helpers import error_of, new_user, submit

# Two HTTP threads: many waiting clients must not need more. Every client here is 127.0.0.1, so
# its connection cap is raised above the 200 waiters.
ENV = {"API_THREADS": "2", "API_WAIT_POLL_MS": "100", "API_MAX_CONNECTIONS_PER_ADDRESS": "1000"}


def metric(api, name):
    text = requests.get(api.base_url + "/metrics", timeout=10).text
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


@pytest.mark.cluster(agents=1, env=ENV)
def test_a_wait_answers_when_the_expression_is_final(cluster):
    cluster.admin_client().post("/duration", json={"+": 300, "*": 300}, check=True)
    api = new_user(cluster, "wait")
    eid = submit(api, "2+2*2")
    t0 = time.monotonic()
    r = api.get(f"/expression/{eid}?wait=20000", timeout=30)
    took = time.monotonic() - t0
    assert r.status_code == 200, r.text
    e = r.json()["expression"]
    assert e["status"] == "Ok" and e["result"] == 6, e
    # Two levels of 300 ms: it came when the result did (a poll period later at most), not at 20 s.
    assert 0.5 < took < 5, took
    # A final expression does not wait at all.
    t0 = time.monotonic()
    assert api.get(f"/expression/{eid}?wait=20000").json()["expression"]["status"] == "Ok"
    assert time.monotonic() - t0 < 1


# A poll period far longer than the operations: a reply that comes with the result was woken by
# its event, not by the poll.
SLOW_POLL = dict(ENV, API_WAIT_POLL_MS="5000")


def timed_wait(api, eid):
    t0 = time.monotonic()
    r = api.get(f"/expression/{eid}?wait=20000", timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["expression"], time.monotonic() - t0


@pytest.mark.cluster(agents=1, env=SLOW_POLL)
def test_a_wait_is_answered_by_the_final_event_not_at_the_next_poll(cluster):
    """Each result reaches its waiter when it is stored, with the poll period at 5 s: the first
    waiter of a user, the next ones of the same user, and one of another user that comes while
    the watch waits on the first user's events (it ends that watch and starts one with both)."""
    cluster.admin_client().post("/duration", json={"+": 200, "*": 200, "-": 10000}, check=True)
    api = new_user(cluster, "waitev")
    looks0 = metric(api, "calc_waiter_event_looks_total")
    for _ in range(3):
        e, took = timed_wait(api, submit(api, "2+2*2"))
        assert e["status"] == "Ok" and e["result"] == 6, e
        assert 0.35 < took < 2, took  # two levels of 200 ms, then at once; not 5 s later
    assert metric(api, "calc_waiter_event_looks_total") >= looks0 + 3

    # The first user waits on a long expression: its watch stays in flight.
    other = new_user(cluster, "waitev2")
    with cf.ThreadPoolExecutor(2) as ex:
        long_wait = ex.submit(timed_wait, api, submit(api, "9-1"))
        cluster.wait_for(lambda: metric(api, "calc_waiters") == 1, 10, "the long wait to start")
        e, took = timed_wait(other, submit(other, "3*3"))
        assert e["status"] == "Ok" and e["result"] == 9, e
        assert 0.15 < took < 2, took
        e, took = long_wait.result(30)
    assert e["status"] == "Ok" and e["result"] == 8, e
    assert 9.5 < took < 13, took


@pytest.mark.cluster(agents=1, env=ENV)
def test_a_wait_that_runs_out_answers_with_the_current_state(cluster):
    cluster.admin_client().post("/duration", json={"+": 10000}, check=True)
    api = new_user(cluster, "waitout")
    eid = submit(api, "1+1")
    t0 = time.monotonic()
    r = api.get(f"/expression/{eid}?wait=700")
    took = time.monotonic() - t0
    assert r.status_code == 200, r.text
    assert r.json()["expression"]["status"] in ("New", "In Progress"), r.text
    assert 0.6 < took < 3, took
    # wait=0 is a plain read.
    t0 = time.monotonic()
    assert api.get(f"/expression/{eid}?wait=0").status_code == 200
    assert time.monotonic() - t0 < 1


@pytest.mark.cluster(agents=0, env=dict(ENV, DBAGENT_TIMEOUT_MS="10000"))
def test_a_wait_runs_out_about_on_time_while_dbagent_does_not_answer(cluster):
    """A dbagent that stops answering (SIGSTOP) while a request waits holds it at most about a
    second past its wait (api/waiters.c, LATE_MAX_MS), and the request gets the state it had; the
    call in flight used to hold it for its whole DBAGENT_TIMEOUT_MS (10 s here)."""
    api = new_user(cluster, "waitstuck")
    eid = submit(api, "1+1")
    dbagent = next(p for p in cluster.procs if p.name == "dbagent")
    with cf.ThreadPoolExecutor(1) as ex:
        t0 = time.monotonic()
        f = ex.submit(api.get, f"/expression/{eid}?wait=2000", timeout=60)
        cluster.wait_for(lambda: metric(api, "calc_waiters") == 1, 10, "the request to wait")
        dbagent.signal(signal.SIGSTOP)
        try:
            r = f.result(30)
            took = time.monotonic() - t0
        finally:
            dbagent.signal(signal.SIGCONT)
    assert r.status_code == 200 and r.json()["expression"]["status"] == "New", r.text
    # 2 s of wait, then at most 1 s of grace, a poll interval and the last call's 100 ms.
    assert 1.9 < took < 4.5, took
    assert metric(api, "calc_waiters") == 0
    # dbagent answers again, and so do waits.
    cluster.wait_for(lambda: api.get(f"/expression/{eid}").status_code == 200, 30, "dbagent to answer again")
    t0 = time.monotonic()
    r = api.get(f"/expression/{eid}?wait=300")
    assert r.status_code == 200 and r.json()["expression"]["status"] == "New", r.text
    assert 0.25 < time.monotonic() - t0 < 3


@pytest.mark.cluster(agents=0, env=ENV)
def test_a_bad_wait_is_400_and_an_unknown_expression_404(cluster):
    api = new_user(cluster, "waitbad")
    eid = submit(api, "1+1")
    for bad in ("-1", "30001", "abc", "", "1.5", "99999999999999999999"):
        body = error_of(api.get(f"/expression/{eid}?wait={bad}"), 400)
        assert "'wait'" in body["error"], body
    error_of(api.get(f"/expression/{eid + 1000}?wait=1000"), 404)
    # Another user's expression is absent for them, waiting or not.
    other = new_user(cluster, "waitother")
    error_of(other.get(f"/expression/{eid}?wait=1000"), 404)


@pytest.mark.cluster(agents=0, env=ENV)
def test_many_waiters_hold_no_thread_and_share_one_call_per_poll(cluster):
    """200 clients wait on 200 unfinished expressions with 2 HTTP threads: /healthz and plain
    reads still answer at once, the waiters cost about one GetExpressions per poll period in
    all, and each gets its expression when its wait runs out."""
    api = new_user(cluster, "many")
    ids = [submit(api, f"{i}+1") for i in range(200)]
    polls0 = metric(api, "calc_waiter_polls_total")
    wait_ms = 3000

    def wait_for(eid):
        s = requests.Session()
        r = s.get(f"{api.base_url}/expression/{eid}?wait={wait_ms}",
                  headers={"Authorization": f"Bearer {api.token}"}, timeout=30)
        return r.status_code, r.json()["expression"]["expression_id"]

    with cf.ThreadPoolExecutor(200) as ex:
        t0 = time.monotonic()
        futures = [ex.submit(wait_for, eid) for eid in ids]
        cluster.wait_for(lambda: metric(api, "calc_waiters") == 200, 10, "200 waiting requests")
        for _ in range(5):
            t = time.monotonic()
            assert requests.get(api.base_url + "/healthz", timeout=5).status_code == 200
            assert api.get(f"/expression/{ids[0]}").status_code == 200
            assert time.monotonic() - t < 1
        got = [f.result(30) for f in futures]
        took = time.monotonic() - t0
    assert sorted(got) == sorted((200, eid) for eid in ids)
    assert took < wait_ms / 1000 + 5, took
    polls = metric(api, "calc_waiter_polls_total") - polls0
    # One call per 100 ms for all of them together (1000 lookups fit in one), not one per waiter.
    assert polls <= took * 10 + 5, (polls, took)
    assert polls < 200
    assert metric(api, "calc_waiters") == 0


@pytest.mark.cluster(agents=0, env=ENV)
def test_sigterm_answers_the_waiters_with_what_they_have_and_exits_0(cluster):
    api_proc = cluster.apis[0]
    api = new_user(cluster, "waitterm")
    eid = submit(api, "1+1")
    with cf.ThreadPoolExecutor(1) as ex:
        f = ex.submit(api.get, f"/expression/{eid}?wait=30000", timeout=60)
        cluster.wait_for(lambda: metric(api, "calc_waiters") == 1, 10, "the request to wait")
        t0 = time.monotonic()
        api_proc.signal(signal.SIGTERM)
        r = f.result(30)
        assert time.monotonic() - t0 < 5, "answered at the stop, not when its wait ran out"
    assert r.status_code == 200 and r.json()["expression"]["status"] == "New", r.text
    assert api_proc.wait(30) == 0
    api_proc.expect_clean_exit = False  # this test stopped it and checks the exit code itself
