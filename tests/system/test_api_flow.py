"""The API's work flow: cancellation, the per-user limit of unfinished expressions, two API
instances sharing the work, RabbitMQ being down while expressions are accepted, and SIGTERM."""

import signal
import threading

import pytest
import requests

from api_helpers import expression, new_user, submit


def nodes(cluster, sql_where="true"):
    out = cluster.servers.psql(f"SELECT id, state, epoch, attempts FROM nodes WHERE {sql_where} ORDER BY id",
                               db=cluster.db)
    return [line.split("|") for line in out.split()]


def test_cancel_stops_the_remaining_nodes(cluster):
    admin = cluster.admin_client()
    admin.post("/duration", json={"+": 1500}, check=True)
    api = new_user(cluster, "cancel")
    eid = submit(api, "1+1+1+1+1+1")
    r = api.delete(f"/expression/{eid}")
    assert r.status_code == 200 and r.json()["expression"]["status"] == "Cancelled"
    assert all(state in ("cancelled", "done") for _, state, _, _ in nodes(cluster))
    r = api.delete(f"/expression/{eid}")
    assert r.status_code == 409 and "already" in r.json()["error"]
    # An agent holding one of its nodes gets a stale answer when it completes: nothing changes.
    assert expression(api, eid)["status"] == "Cancelled"


@pytest.mark.cluster(agents=0)
def test_more_than_a_thousand_unfinished_expressions_get_429(cluster):
    api = new_user(cluster, "many")
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {api.token}"
    url = api.base_url + "/expression"
    for i in range(1000):
        r = s.post(url, json={"expression": f"{i}+1"})
        assert r.status_code == 200, r.text
    r = s.post(url, json={"expression": "1+1"})
    assert r.status_code == 429 and "unfinished" in r.json()["error"]
    # Another user is not affected.
    other = new_user(cluster, "few")
    assert other.post("/expression", json={"expression": "1+1"}).status_code == 200


@pytest.mark.cluster(agents=0)
def test_concurrent_reads_of_many_users_each_get_their_own(cluster):
    """Concurrent GETs of unfinished expressions go to dbagent together (api/reads.c): every
    request still gets its own expression, and another user's id stays a 404."""
    users = [new_user(cluster, f"reader{i}") for i in range(4)]
    owned = [(u, submit(u, f"{i}+{j}"), f"{i}+{j}") for i, u in enumerate(users) for j in range(5)]
    problems = []

    def reader(k):
        s = requests.Session()
        for n in range(60):
            me = users[(k + n) % len(users)]
            other, eid, text = owned[(k * 7 + n) % len(owned)]
            r = s.get(f"{me.base_url}/expression/{eid}", headers={"Authorization": f"Bearer {me.token}"}, timeout=10)
            if other is me:
                e = r.json().get("expression", {}) if r.status_code == 200 else {}
                if (e.get("expression_id"), e.get("expression_value"), e.get("status")) != (eid, text, "New"):
                    problems.append((r.status_code, r.text))
            elif r.status_code != 404:
                problems.append((r.status_code, r.text))

    def metric(name):
        text = requests.get(f"{users[0].base_url}/metrics", timeout=10).text
        return int(next(line.split()[1] for line in text.splitlines() if line.startswith(name + " ")))

    lookups, calls = metric("calc_expression_reads_total"), metric("calc_expression_read_calls_total")
    threads = [threading.Thread(target=reader, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not problems, problems[:3]
    lookups, calls = metric("calc_expression_reads_total") - lookups, metric("calc_expression_read_calls_total") - calls
    assert lookups == 16 * 60 and calls < lookups, f"{lookups} lookups in {calls} calls: none went together"


def test_two_api_instances_share_the_work_without_double_dispatch(cluster):
    second = cluster.start_api()
    a = new_user(cluster, "first")
    b = new_user(cluster, "second", api=second)
    ids = [(a, submit(a, "(1+2)*(3+4)-5/5")) for _ in range(10)]
    ids += [(b, submit(b, "(1+2)*(3+4)-5/5")) for _ in range(10)]
    for api, eid in ids:
        cluster.wait_for(lambda: expression(api, eid)["status"] == "Ok", 30, f"expression {eid}")
        assert expression(api, eid)["result"] == 20
    # Every node was dispatched exactly once: a node taken by both dispatchers would carry epoch 2.
    assert {(n[2], n[3]) for n in nodes(cluster)} == {("1", "1")}


@pytest.mark.cluster(agents=1)
def test_expressions_accepted_while_rabbitmq_is_down_finish_once_it_is_back(cluster):
    api = new_user(cluster, "outage")
    servers = cluster.servers
    servers.stop_rabbitmq()
    try:
        ids = [submit(api, "2*3+4") for _ in range(3)]
        assert all(expression(api, eid)["status"] == "New" for eid in ids)
        r = requests.get(cluster.apis[0].url + "/readyz")
        assert r.status_code == 503 and r.json()["rabbitmq"] == "unreachable"
    finally:
        servers.start_rabbitmq()
    for eid in ids:
        cluster.wait_for(lambda: expression(api, eid)["status"] == "Ok", 60, f"expression {eid}")
        assert expression(api, eid)["result"] == 10


# One hashing slot per loading thread: a login that found the pool full would get 503 at once.
@pytest.mark.cluster(env={"MAX_CONCURRENT_HASHING": "4"})
def test_sigterm_finishes_requests_in_flight_and_exits_0(cluster):
    api_proc = cluster.apis[0]
    url = api_proc.url
    api = new_user(cluster, "term")
    outcomes, stop = [], threading.Event()

    def load():
        s = requests.Session()
        while not stop.is_set():
            try:
                r = s.post(url + "/api/v1/login", json={"login": api.credentials[0], "password": "password1"},
                           timeout=10)
                outcomes.append(r.status_code)
            except requests.ConnectionError as e:
                # Refused: the listener is closed. Anything else (a reset mid-request) is a failure.
                outcomes.append("refused" if "refused" in str(e).lower() else f"broken: {e}")
                if "refused" in str(e).lower():
                    return

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    cluster.wait_for(lambda: len(outcomes) >= 8, 20, "load to run")
    api_proc.signal(signal.SIGTERM)
    rc = api_proc.wait(30)
    api_proc.expect_clean_exit = False  # this test stopped it and checks the exit code itself
    stop.set()
    for t in threads:
        t.join(30)
    assert rc == 0
    assert all(o in (200, 429, "refused") for o in outcomes), outcomes
    assert 200 in outcomes


@pytest.mark.cluster(agents=0, env={"ACCESS_TOKEN_TTL_S": "10"})
def test_an_access_token_stops_working_when_it_expires(cluster):
    api = new_user(cluster, "ttl")
    # Accepted once: from then on the API remembers the token as verified; its expiry still counts.
    assert api.get("/expression").status_code == 200
    cluster.wait_for(lambda: api.get("/expression").status_code == 401, 20, "the token to expire")
    assert "expired" in api.get("/expression").json()["error"]
