"""A reply lost after its commit. calc-api reaches dbagent through a relay that drops every connection
at once while a call waits in PostgreSQL behind a lock the test holds; dbagent's statement goes on and
commits after the test lets go, but its reply has nowhere to go. The caller makes the call again with
the same request id, and the retry answers what the first call did instead of doing it twice."""
import threading
import time

import pytest
import requests

from dbagent_helpers import end_transaction, hold_transaction
from proxy import CuttingProxy
from workload import sql


def hold(cluster, statement):
    return hold_transaction(cluster, statement, 60)


def waiting(cluster, like):
    """How many dbagent statements matching like wait for a lock."""
    return int(sql(cluster, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'calc-dbagent'"
                            f" AND wait_event_type = 'Lock' AND query LIKE '{like}'")[0][0])


def retries(api):
    r = requests.get(api.url + "/metrics", timeout=5)
    assert r.status_code == 200, r.text
    text = r.text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("calc_dbagent_retries_total"))


@pytest.fixture
def relayed(bare_cluster):
    """dbagent, and calc-api reaching it only through the relay; no agents yet."""
    c = bare_cluster
    c.start_dbagent()
    relay = CuttingProxy(c.dbagent_port)
    try:
        c.api = c.start_api(DBAGENT_ADDR=relay.addr)
        c.relay = relay
        yield c
    finally:
        relay.close()


@pytest.mark.cluster(env={"DBAGENT_TIMEOUT_MS": "20000"})
def test_a_registration_whose_reply_was_lost_gets_its_user_not_login_taken(relayed):
    c = relayed
    holder = hold(c, "INSERT INTO users (login, password_hash) VALUES ('lost', 'x')")  # the login, uncommitted
    answer = {}
    t = threading.Thread(target=lambda: answer.update(r=c.api_client().register("lost", "password1", check=False)))
    t.start()
    try:
        c.wait_for(lambda: waiting(c, "%INSERT INTO users%") == 1, 10, "the registration to wait for the login")
        # The reply's way back is gone; calc-api's retry waits in the relay until the first call,
        # which dbagent still runs, has made the user.
        assert c.relay.cut(hold=True) >= 1
        end_transaction(c, holder)
        c.wait_for(lambda: sql(c, "SELECT count(*) FROM users WHERE login = 'lost'")[0][0] == "1", 10,
                   "the first call to commit")
        c.wait_for(lambda: c.relay.held, 10, "calc-api to make the call again")
    finally:
        c.relay.resume()
        end_transaction(c, holder)
        t.join(30)
    r = answer["r"]
    assert r.status_code == 200, r.text  # without the request id: 409, login 'lost' is taken
    assert retries(c.api) >= 1
    assert sql(c, "SELECT id FROM users WHERE login = 'lost'") == [[str(r.json()["id"])]]
    c.api_client().login("lost", "password1")


@pytest.mark.cluster(env={"HEARTBEAT_TIMEOUT_MS": "60000", "UNPUBLISHED_TIMEOUT_MS": "600000",
                          "DBAGENT_TIMEOUT_MS": "20000"})
def test_a_take_whose_reply_was_lost_is_published_at_once(relayed):
    """Without the take's id its nodes would wait in queued for UNPUBLISHED_TIMEOUT_MS (10 minutes
    here); with it, the dispatcher's retry gets them and publishes them."""
    c = relayed
    c.start_agent()
    api = c.api_client()
    api.register("taker", "password1")
    api.login()
    c.wait_for(lambda: sql(c, "SELECT count(*) FROM agents")[0][0] == "1", 30, "the agent's heartbeat")
    # Every take reads the live agents' capacity: with the table locked, the take of the new
    # node waits there after its id's lock.
    holder = hold(c, "LOCK TABLE agents IN ACCESS EXCLUSIVE MODE")
    try:
        r = api.post("/expression", json={"expression": "2+3"})
        assert r.status_code == 200, r.text
        eid = r.json()["expression"]["expression_id"]
        c.wait_for(lambda: waiting(c, "%calc_take_ready%") == 1, 10, "the take to wait")
        assert c.relay.cut() >= 1
        c.wait_for(lambda: waiting(c, "%calc_take_ready%") == 2, 10, "the dispatcher's retry")
    finally:
        end_transaction(c, holder)
    started = time.monotonic()
    c.wait_for(lambda: sql(c, f"SELECT status FROM expressions WHERE id = {eid}")[0][0] == "ok", 30,
               "the expression to finish")
    assert time.monotonic() - started < 10
    [(take_id, epoch, attempts)] = sql(c, f"SELECT take_id, epoch, attempts FROM nodes WHERE expression_id = {eid}")
    assert take_id and (epoch, attempts) == ("1", "1"), "taken once, run once"


@pytest.mark.cluster(env={"DBAGENT_TIMEOUT_MS": "4000", "METRICS_CACHE_MS": "0"})
def test_with_dbagent_gone_a_read_retries_within_its_deadline_and_a_cancel_not_at_all(bare_cluster):
    """calc-api makes a call safe to repeat again after UNAVAILABLE (50, 200 and 750 ms later),
    all within one DBAGENT_TIMEOUT_MS, then answers 503; a cancel is never made twice. /metrics
    still answers, with the instance's counters and calc_gauges_up 0."""
    c = bare_cluster
    dbagent = c.start_dbagent()
    c.api = c.start_api()
    api = c.api_client()
    api.register("budget", "password1")
    api.login()
    eid = api.post("/expression", json={"expression": "1+2"}).json()["expression"]["expression_id"]
    assert "calc_gauges_up 1" in requests.get(c.api.url + "/metrics", timeout=5).text
    c.stop(dbagent)
    assert "calc_gauges_up 0" in requests.get(c.api.url + "/metrics", timeout=5).text
    before = retries(c.api)
    t0 = time.monotonic()
    r = api.get(f"/expression/{eid}")
    took = time.monotonic() - t0
    assert r.status_code == 503 and r.json()["error"], r.text
    assert retries(c.api) - before == 3
    assert 1.0 <= took < 4.0 + 1.0, took  # the three pauses, and within the call's deadline
    before = retries(c.api)
    r = api.delete(f"/expression/{eid}")
    assert r.status_code == 503 and r.json()["error"], r.text
    assert retries(c.api) == before


@pytest.mark.cluster(env={"DBAGENT_TIMEOUT_MS": "2000", "METRICS_CACHE_MS": "100"})
def test_with_dbagent_stuck_reads_and_scrapes_answer_within_one_deadline(bare_cluster):
    """dbagent answers nothing while a lock holds the expressions table. Reads of one expression go
    to dbagent one call at a time: a read that waited for the call before its own still answers
    within one DBAGENT_TIMEOUT_MS of its request, not after a whole deadline of its own. A scrape of
    /metrics with no gauges to serve waits for the refresh under way and shares its failure: it
    answers 200 without the gauges then, instead of asking dbagent again after that one failed.

    Each second request starts once the first one's statement waits on the lock: an HTTP worker
    thread that is inside a handler accepts no new connection, so the second is not queued behind
    the first on one thread."""
    c = bare_cluster
    c.start_dbagent()
    c.api = c.start_api()
    api = c.api_client()
    api.register("stuck", "password1")
    api.login()
    eid = api.post("/expression", json={"expression": "1+2"}).json()["expression"]["expression_id"]
    # This API was just started and nothing has scraped it: it holds no gauges yet.
    deadline = 2.0
    got = {}

    def read(name):
        t0 = time.monotonic()
        r = api.get(f"/expression/{eid}")
        got[name] = (r.status_code, time.monotonic() - t0)

    def scrape(name):
        t0 = time.monotonic()
        r = requests.get(c.api.url + "/metrics", timeout=20)
        got[name] = (r.status_code, "calc_gauges_up 0" in r.text, time.monotonic() - t0)

    def in_turn(fn, first_waits_in):
        one = threading.Thread(target=fn, args=("first",))
        one.start()
        c.wait_for(lambda: waiting(c, first_waits_in) == 1, 10, "the first call to wait on the lock")
        two = threading.Thread(target=fn, args=("second",))
        two.start()
        for t in (one, two):
            t.join(30)

    holder = hold(c, "LOCK TABLE expressions IN ACCESS EXCLUSIVE MODE")
    try:
        in_turn(read, "%FROM expressions WHERE id = ANY%")
        reads = dict(got)
        got.clear()
        in_turn(scrape, "%FROM expressions GROUP BY status%")
        scrapes = dict(got)
    finally:
        end_transaction(c, holder)
    # The second read waited for the first's call, then had what was left of its own deadline
    # (a whole one more would be about 3 s).
    for name in ("first", "second"):
        assert reads[name][0] == 503 and reads[name][1] < deadline + 0.5, reads
    # The second scrape answered with the first's failure (asking again would be about 4 s).
    for name in ("first", "second"):
        status, up0, took = scrapes[name]
        assert status == 200 and up0 and took < deadline + 0.5, scrapes
    c.wait_for(lambda: api.get(f"/expression/{eid}").status_code == 200, 30, "reads to work again")
    c.wait_for(lambda: "calc_gauges_up 1" in requests.get(c.api.url + "/metrics", timeout=5).text, 30,
               "the gauges to come back")
