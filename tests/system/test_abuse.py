"""Hostile clients: the password hashing pool full (503 at once, /healthz unaffected), the budget
of login and register attempts per address, the login limiter's exact counts shared through
dbagent (a colliding login of the old fixed table, two API instances), the per-address connection
cap, a client that trickles its request, and an oversized body announced with Expect; and dbagent's
LimitLogin/RecordLogin under concurrent calls."""

import concurrent.futures as cf
import json
import re
import select
import socket
import threading
import time

import grpc
import pytest
import requests

import harness
from dba_client import DbaClient, RpcError, pb


def hostport(api):
    host, port = api.url.split("//")[1].split(":")
    return host, int(port)


def login(api, name, password="password1"):
    return requests.post(f"{api.url}/api/v1/login", json={"login": name, "password": password}, timeout=10)


def register(api, name, password="password1"):
    return requests.post(f"{api.url}/api/v1/register", json={"login": name, "password": password}, timeout=10)


def old_slot(login_name):
    """The slot the old in-process limiter (api/ratelimit.c before login_limits) gave a login: FNV-1a
    of its bytes, mod 4096."""
    h = 2166136261
    for b in login_name.encode():
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h % 4096


def colliding_logins(prefix):
    seen = {}
    for i in range(100000):
        name = f"{prefix}{i}"
        s = old_slot(name)
        if s in seen:
            return seen[s], name
        seen[s] = name
    raise AssertionError("no collision found")


@pytest.mark.cluster(agents=0, env={"MAX_CONCURRENT_HASHING": "1", "API_THREADS": "32", "AUTH_ADDRESS_BUDGET": "1000"})
def test_a_full_hashing_pool_is_503_at_once_and_healthz_does_not_wait(cluster):
    api = cluster.apis[0]
    n = 24
    start = threading.Barrier(n + 1)
    results = []
    lock = threading.Lock()

    def attempt(i):
        start.wait()
        t0 = time.monotonic()
        r = login(api, f"nobody{i}", "wrong-password")
        with lock:
            results.append((r.status_code, r.headers.get("Retry-After"), time.monotonic() - t0, r.json()))

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    start.wait()
    health = []
    while any(t.is_alive() for t in threads):
        t0 = time.monotonic()
        r = requests.get(f"{api.url}/healthz", timeout=10)
        health.append((r.status_code, time.monotonic() - t0))
    for t in threads:
        t.join()
    statuses = sorted(s for s, *_ in results)
    assert set(statuses) <= {401, 503}, results
    assert 401 in statuses and 503 in statuses, statuses
    hash_time = max(d for s, _, d, _ in results if s == 401)
    for status, after, elapsed, body in results:
        if status == 503:
            assert after == "1" and "hashing" in body["error"], body
    # A 503 does not wait for a slot: the fastest answers came back before one hash could end.
    fastest_503 = min(d for s, _, d, _ in results if s == 503)
    assert fastest_503 < hash_time, (fastest_503, hash_time)
    assert health and all(s == 200 for s, _ in health), health
    assert max(d for _, d in health) < 1.0, health


@pytest.mark.cluster(agents=0, env={"AUTH_ADDRESS_BUDGET": "6", "AUTH_ADDRESS_WINDOW_S": "60", "API_THREADS": "1"})
def test_an_address_over_its_budget_gets_429_before_any_hash(cluster):
    api = cluster.apis[0]
    assert register(api, "budgeted").status_code == 200
    for i in range(5):
        assert login(api, f"stranger{i}", "wrong-password").status_code == 401
    # The 7th attempt of this address in the window, whatever its login or route.
    for r in (login(api, "budgeted"), register(api, "another")):
        assert r.status_code == 429, r.text
        assert "attempts from 127.0.0.1" in r.json()["error"]
        assert 1 <= int(r.headers["Retry-After"]) <= 60
        assert r.elapsed.total_seconds() >= 0.9  # held back a second
    # Refusals held back hold no thread: with one HTTP thread, /healthz answers meanwhile.
    refused = []
    threads = [threading.Thread(target=lambda i=i: refused.append(login(api, f"late{i}").status_code)) for i in range(4)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    harness.wait_for(lambda: "login" in api_metrics(api, 'status="429"', 5), 5, "the refusals to be counted")
    h0 = time.monotonic()
    assert requests.get(f"{api.url}/healthz", timeout=10).status_code == 200
    assert time.monotonic() - h0 < 0.5
    for t in threads:
        t.join()
    assert refused == [429] * 4 and time.monotonic() - t0 >= 0.9


def api_metrics(api, needle, at_least):
    """The login route's request count with needle in its labels, as text, when it is at least
    at_least ("" otherwise)."""
    for line in requests.get(f"{api.url}/metrics", timeout=5).text.splitlines():
        if line.startswith("calc_http_requests_total") and 'route="login"' in line and needle in line:
            if float(line.split()[-1]) >= at_least:
                return line
    return ""


@pytest.mark.cluster(agents=0)
def test_a_colliding_login_no_longer_hides_the_victims_failures(cluster):
    """The old table kept one login per slot: with a colliding login's recent failure in it, the
    victim's failures were not counted, so guessing its password was never stopped."""
    api = cluster.apis[0]
    collider, victim = colliding_logins("victim")
    assert old_slot(collider) == old_slot(victim) and collider != victim
    assert register(api, victim).status_code == 200
    assert login(api, collider, "wrong-password").status_code == 401  # the collider's slot first
    for _ in range(5):
        assert login(api, victim, "wrong-password").status_code == 401
    r = login(api, victim)  # the right password, but locked
    assert r.status_code == 429 and "failed logins" in r.json()["error"], r.text
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    # The collider has one failure of its own: not locked.
    assert login(api, collider, "wrong-password").status_code == 401
    rows = cluster.servers.psql("SELECT key, cardinality(failures) FROM login_limits WHERE key LIKE 'login %'"
                                " ORDER BY 1", db=cluster.db).splitlines()
    assert rows == sorted([f"login {collider}|2", f"login {victim}|5"]), rows


@pytest.mark.cluster(agents=0)
def test_failures_on_one_api_lock_the_login_on_another(cluster):
    a = cluster.apis[0]
    b = cluster.start_api()
    assert register(a, "shared").status_code == 200
    assert login(b, "shared").status_code == 200
    for i in range(5):
        assert login(a, "shared", f"wrong-{i}-pass").status_code == 401
    r = login(b, "shared")
    assert r.status_code == 429 and "failed logins for 'shared'" in r.json()["error"], r.text
    # Another login is not affected, on either instance.
    assert register(b, "unshared").status_code == 200
    assert login(a, "unshared").status_code == 200


def healthz_over(sock):
    """GET /healthz on a kept-alive socket; the whole reply (headers and Content-Length body)."""
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(1024)
        assert chunk, f"closed after {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    while len(body) < length:
        chunk = sock.recv(1024)
        assert chunk, f"closed after {data!r}"
        body += chunk
    return head + b"\r\n\r\n" + body


@pytest.mark.cluster(agents=0, env={"API_MAX_CONNECTIONS_PER_ADDRESS": "4"})
def test_an_address_holds_at_most_its_connection_cap(cluster):
    api = cluster.apis[0]
    host, port = hostport(api)
    held = []
    try:
        for _ in range(4):
            held.append(socket.create_connection((host, port), timeout=5))
            # Answered, so accepted and counted: a connection still in the listen backlog is not
            # counted yet, and on a slow machine the fifth could be accepted before it.
            assert healthz_over(held[-1]).startswith(b"HTTP/1.1 200")
        with socket.create_connection((host, port), timeout=5) as extra:
            try:
                extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                reply = extra.recv(1024)
            except (ConnectionResetError, BrokenPipeError):
                reply = b""
            assert reply == b"", reply  # closed unanswered
        # The held ones are still served.
        assert healthz_over(held[0]).startswith(b"HTTP/1.1 200")
    finally:
        for s in held:
            s.close()
    # Once they are closed, the address may connect again.
    harness.wait_for(lambda: requests.get(f"{api.url}/healthz", timeout=2).status_code == 200, 10,
                     "a new connection once the held ones are closed")


def trickle_until_cut(host, port, head, step=b"x", interval=0.2, limit=15.0):
    """Sends head, then step every interval until the server closes; returns the seconds from the
    connection's opening to the close (or fails after limit)."""
    s = socket.create_connection((host, port), timeout=5)
    t0 = time.monotonic()
    try:
        s.sendall(head)
        while time.monotonic() - t0 < limit:
            readable, _, _ = select.select([s], [], [], interval)
            if readable:
                try:
                    data = s.recv(4096)
                except ConnectionResetError:
                    data = b""
                assert data == b"", data  # no reply: cut while reading
                return time.monotonic() - t0
            try:
                s.sendall(step)
            except (BrokenPipeError, ConnectionResetError):
                return time.monotonic() - t0
        raise AssertionError(f"still open after {limit} s of trickling")
    finally:
        s.close()


@pytest.mark.cluster(agents=0, env={"API_REQUEST_READ_TIMEOUT_S": "2"})
def test_a_client_trickling_its_headers_or_body_is_cut(cluster):
    api = cluster.apis[0]
    host, port = hostport(api)
    # Headers that never end: one byte of a header line every 0.2 s.
    took = trickle_until_cut(host, port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    assert 1.8 <= took <= 4.0, took
    # A body that never ends.
    took = trickle_until_cut(host, port, b"POST /api/v1/login HTTP/1.1\r\nHost: x\r\n"
                             b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
    assert 1.8 <= took <= 4.0, took
    # A prompt client on a kept-alive connection is served request after request, past the timeout.
    with requests.Session() as s:
        for _ in range(3):
            assert s.get(f"{api.url}/healthz", timeout=5).status_code == 200
            time.sleep(1)  # a pause between requests, under the timeout: not a synchronisation
    assert "no whole request within 2000 ms" in api.log()


@pytest.mark.cluster(agents=0)
def test_an_oversized_login_body_with_expect_gets_413_and_no_100_continue(cluster):
    host, port = hostport(cluster.apis[0])
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(b"POST /api/v1/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 1000000\r\nExpect: 100-continue\r\n\r\n")
        reply = b""
        while True:
            chunk = s.recv(65536)  # bounded by the socket's 10 s timeout
            if not chunk:
                break
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b"100 Continue" not in reply
    assert json.loads(body)["status"] == 413


def limit(c, address, login="", budget=1000, window_ms=60000, **kw):
    return c.LimitLogin(address=address, login=login, address_budget=budget, address_window_ms=window_ms,
                        max_failures=kw.get("max_failures", 5), failure_window_ms=kw.get("failure_window_ms", 60000))


def test_limit_login_counts_concurrent_attempts_exactly_and_prunes_old_rows(bare_cluster):
    cl = bare_cluster
    cl.start_dbagent()
    c = DbaClient(cl.env["DBAGENT_ADDR"], cl.env["DBAGENT_TOKEN"])
    # Nonsense is refused by name.
    for fields in (dict(address=""), dict(address="a" * 300), dict(address="x", budget=0)):
        with pytest.raises(RpcError) as e:
            limit(c, **fields)
        assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(RpcError) as e:
        c.RecordLogin(login="x", succeeded=False, max_failures=0, failure_window_ms=1)
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT and "max_failures" in e.value.details
    # 64 attempts at once from one address with a budget of 20: exactly 20 are allowed.
    with cf.ThreadPoolExecutor(16) as ex:
        verdicts = list(ex.map(lambda i: limit(c, "10.0.0.1", budget=20).verdict, range(64)))
    assert verdicts.count(pb.LimitLoginReply.ALLOWED) == 20
    assert verdicts.count(pb.LimitLoginReply.ADDRESS_OVER_BUDGET) == 44
    # Failures of one login at once: every one counted, the login locked after the fifth.
    with cf.ThreadPoolExecutor(8) as ex:
        list(ex.map(lambda i: c.RecordLogin(login="racer", succeeded=False, max_failures=5, failure_window_ms=60000),
                    range(8)))
    r = limit(c, "10.0.0.2", login="racer")
    assert r.verdict == pb.LimitLoginReply.LOGIN_LOCKED and 59000 < r.retry_after_ms <= 60000
    c.RecordLogin(login="racer", succeeded=True, max_failures=5, failure_window_ms=60000)
    assert limit(c, "10.0.0.2", login="racer").verdict == pb.LimitLoginReply.ALLOWED
    # Rows whose window has passed are pruned by later calls: the table holds one window's keys.
    for i in range(40):
        limit(c, f"10.1.0.{i}", window_ms=5000)
    count = lambda: int(cl.servers.psql("SELECT count(*) FROM login_limits", db=cl.db).strip())
    assert count() >= 40
    harness.wait_for(lambda: limit(c, "10.0.0.3") and count() <= 5, 30, "expired rows to be pruned", interval=0.5)
    c.close()
