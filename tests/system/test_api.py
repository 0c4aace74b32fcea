"""The HTTP API: the reference README's requests, authentication, bad input, idempotency,
isolation and the OpenAPI document. One cluster serves the whole module; each test has its own
users."""

import json
import os
import re
import socket
import subprocess
import threading

import jsonschema
import pytest
import requests

from api_helpers import claims, error_of, expression, forge_jwt, module_cluster, new_user, submit
from dba_client import DbaClient


@pytest.fixture(scope="module")
def cl(calc_session):
    # No replay grace: a rotated token presented again is always a reuse here (the grace has its
    # tests in test_sessions.py).
    c = module_cluster(calc_session, "api", env={"REFRESH_REUSE_GRACE_MS": "0"})
    try:
        yield c
    finally:
        c.close()


# ---- the reference README, request by request ----------------------------------------------------


def test_reference_readme_requests_work_as_documented(cl):
    url = cl.apis[0].url
    # Its example password "1+2+3+4" is too short: a clear 400 naming the minimum.
    r = requests.post(f"{url}/api/v1/register", headers={"Content-Type": "application/json"},
                      data='{\n    "login": "user22",\n    "password": "1+2+3+4"\n}')
    assert "at least" in error_of(r, 400)["error"] or "8 to 128" in r.json()["error"]

    r = requests.post(f"{url}/api/v1/register", headers={"Content-Type": "application/json"},
                      data='{\n    "login": "user22",\n    "password": "1+2+3+4+5"\n}')
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"id", "status"} and body["status"] == 200 and isinstance(body["id"], int)

    r = requests.post(f"{url}/api/v1/login", headers={"Content-Type": "application/json"},
                      data='{\n    "login": "user22",\n    "password": "1+2+3+4+5"\n}')
    assert r.status_code == 200 and set(r.json()) == {"accessToken"}
    access = r.json()["accessToken"]
    refresh = r.cookies["refresh-token"]
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie

    # curl --request POST .../refresh --header 'Cookie: refresh-token=...' --data ''
    r = requests.post(f"{url}/api/v1/refresh", headers={"Cookie": f"refresh-token={refresh}"}, data="")
    assert r.status_code == 200 and set(r.json()) == {"accessToken"}
    access, refresh = r.json()["accessToken"], r.cookies["refresh-token"]

    auth = {"Authorization": f"Bearer {access}", "Cookie": f"refresh-token={refresh}"}
    r = requests.post(f"{url}/expression", headers=dict(auth, **{"Content-Type": "application/json"}),
                      data='{\n    "req_uid": "23332e",\n    "expression": "1+2+3+4"\n}')
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == 200
    e = body["expression"]
    for field in ("expression_id", "user_id", "req_uid", "expression_value", "result", "status",
                  "error_msg", "created_at", "eval_started_at", "eval_finished_at"):
        assert field in e
    assert e["req_uid"] == "23332e" and e["expression_value"] == "1+2+3+4"
    eid = e["expression_id"]

    def done():
        r = requests.get(f"{url}/expression", headers=auth, data="")
        assert r.status_code == 200
        mine = [x for x in r.json()["expressions"] if x["expression_id"] == eid]
        return mine and mine[0]["status"] == "Ok" and mine[0]

    cl.wait_for(done, 30, "1+2+3+4 to finish")
    e = done()
    assert e["result"] == 10 and e["error_msg"] == ""
    for field in ("created_at", "eval_started_at", "eval_finished_at"):
        assert len(e[field]) == 20 and e[field].endswith("Z")  # "2024-04-19T19:27:03Z"

    admin = cl.admin_client()
    r = requests.post(f"{url}/duration", headers={"Authorization": f"Bearer {admin.token}",
                                                  "Content-Type": "application/json"},
                      data='{\n    "+":1000,\n    "-":1000,\n    "*":1000,\n    "/":10000\n}')
    assert r.status_code == 200, r.text
    r = requests.get(f"{url}/duration", headers={"Authorization": f"Bearer {access}"}, data="")
    assert r.status_code == 200 and r.json()["status"] == 200
    got = {d["operation_name"]: d for d in r.json()["operation_durations"]}
    assert [d["operation_name"] for d in r.json()["operation_durations"]] == ["+", "-", "*", "/"]
    assert {k: v["operation_duration_ms"] for k, v in got.items()} == {"+": 1000, "-": 1000, "*": 1000, "/": 10000}
    assert all(d["created_at"] and d["updated_at"] for d in got.values())
    admin.post("/duration", json={"+": 0, "-": 0, "*": 0, "/": 0}, check=True)

    r = requests.get(f"{url}/agent", headers=auth)
    assert r.status_code == 200 and r.json()["status"] == 200
    agents = r.json()["agents"]
    assert {a["agent_unique_name"] for a in agents} == {"agent-1", "agent-2"}
    assert all(a["created_at"] and a["last_heartbeat_at"] and a["alive"] for a in agents)
    assert all(a["workers"] == 4 for a in agents)


# ---- authentication and roles ----------------------------------------------------------------


def test_register_validates_and_refuses_a_taken_login(cl):
    api = cl.api_client()
    assert "login" in error_of(api.register("ab", "password1", check=False), 400)["error"]
    assert "login" in error_of(api.register("bad login!", "password1", check=False), 400)["error"]
    assert "password" in error_of(api.register("okname", "x" * 129, check=False), 400)["error"]
    assert api.register("taken_name", "password1", check=False).status_code == 200
    assert "taken" in error_of(api.register("taken_name", "password2", check=False), 409)["error"]


def test_wrong_login_and_wrong_password_look_the_same_and_are_rate_limited(cl):
    api = cl.api_client()
    api.register("limited", "password1")
    wrong_pw = api.post("/api/v1/login", json={"login": "limited", "password": "nope-nope"})
    no_user = api.post("/api/v1/login", json={"login": "nobody-here", "password": "nope-nope"})
    assert error_of(wrong_pw, 401) == error_of(no_user, 401)
    for _ in range(4):
        error_of(api.post("/api/v1/login", json={"login": "limited", "password": "nope-nope"}), 401)
    # Five failures in a minute: even the right password waits now.
    error_of(api.post("/api/v1/login", json={"login": "limited", "password": "password1"}), 429)


def test_bad_access_tokens_get_401(cl):
    api = new_user(cl, "tok")
    uid = api.get("/expression").status_code == 200 and api.post(
        "/expression", json={"expression": "1"}).json()["expression"]["user_id"]
    secret = cl.env["AUTH_SECRET"]
    bad = {
        "missing": None,
        "garbage": "not-a-jwt",
        "tampered": api.token[:-2] + ("AA" if not api.token.endswith("AA") else "BB"),
        "expired": forge_jwt(claims(uid, exp=1, iat=0), secret),
        "alg none": forge_jwt(claims(uid), secret, alg="none"),
        "other algorithm": forge_jwt(claims(uid), secret, alg="HS512"),
        "wrong issuer": forge_jwt(claims(uid, iss="someone-else"), secret),
        "wrong key": forge_jwt(claims(uid), "x" * 40),
    }
    for what, token in bad.items():
        headers = {"Authorization": f"Bearer {token}"} if token else {"Authorization": ""}
        r = requests.get(cl.apis[0].url + "/expression", headers=headers)
        assert r.status_code == 401, f"{what}: {r.status_code} {r.text}"
    # The same forging with the right key and claims is accepted: the checks above are real.
    good = forge_jwt(claims(uid), secret)
    assert requests.get(cl.apis[0].url + "/expression", headers={"Authorization": f"Bearer {good}"}).status_code == 200


def test_refresh_rotates_and_a_reused_token_revokes_the_family(cl):
    api = new_user(cl, "rot")
    first = api.session.cookies["refresh-token"]
    r = api.post("/api/v1/refresh")
    assert r.status_code == 200
    second = api.session.cookies["refresh-token"]
    assert second != first
    # The first token again: someone has a copy; the whole family goes.
    error_of(requests.post(api.base_url + "/api/v1/refresh", cookies={"refresh-token": first}), 401)
    error_of(requests.post(api.base_url + "/api/v1/refresh", cookies={"refresh-token": second}), 401)


def test_logout_revokes_the_refresh_token(cl):
    api = new_user(cl, "out")
    token = api.session.cookies["refresh-token"]
    r = api.post("/api/v1/logout")
    assert r.status_code == 200 and "Max-Age=0" in r.headers["Set-Cookie"]
    error_of(requests.post(api.base_url + "/api/v1/refresh", cookies={"refresh-token": token}), 401)


def test_only_an_admin_changes_durations(cl):
    api = new_user(cl, "plain")
    error_of(api.post("/duration", json={"+": 5}), 403)
    admin = cl.admin_client()
    r = admin.post("/duration", json={"*": 7})
    assert r.status_code == 200
    assert {d["operation_name"]: d["operation_duration_ms"] for d in r.json()["operation_durations"]}["*"] == 7
    admin.post("/duration", json={"*": 0}, check=True)


def test_a_create_keeps_the_delays_in_force_when_another_instance_changed_them(cl):
    """An API instance plans with the delays it read last; when another instance changed them
    since, dbagent refuses that plan and this one plans again with the delays in force: the
    expression keeps those, and the request still gets its 200."""
    api = new_user(cl, "delays")
    first = submit(api, "1+1")  # this instance now holds the delays in force (all 0)

    def counts():
        text = requests.get(api.base_url + "/metrics", timeout=10).text
        return [int(re.search(rf"^{name} (\d+)$", text, re.M).group(1))
                for name in ("calc_delays_reads_total", "calc_plans_refused_total")]

    before = counts()
    submit(api, "1+2")
    assert counts() == before, "a create plans with the delays it holds, without reading them"
    changed = False
    try:
        # What another instance's POST /duration does, behind this one's back.
        cl.servers.psql("UPDATE operation_durations SET ms = 30 WHERE op IN ('+', '*')", db=cl.db)
        changed = True
        eid = submit(api, "2+2*2")
        assert counts() == [before[0] + 1, before[1] + 1], "refused once, then read anew"
        rows = cl.servers.psql(f"SELECT op, delay_ms, tail_ms FROM nodes WHERE expression_id = {eid} ORDER BY id",
                               db=cl.db).split()
        assert rows == ["*|30|60", "+|30|30"], rows
        assert expression(api, eid)["critical_path_ms"] == 60
        cl.wait_for(lambda: expression(api, eid)["status"] == "Ok", 30, "2+2*2")
        assert expression(api, eid)["result"] == 6
    finally:
        if changed:
            cl.servers.psql("UPDATE operation_durations SET ms = 0 WHERE op IN ('+', '*')", db=cl.db)
    assert expression(api, first)["expression_value"] == "1+1"


def test_another_users_expression_is_not_found(cl):
    alice, bob = new_user(cl, "alice"), new_user(cl, "bob")
    eid = submit(alice, "1+1")
    error_of(bob.get(f"/expression/{eid}"), 404)
    # Finished and read by its owner, its reply is in the API's cache: still not bob's.
    cl.wait_for(lambda: expression(alice, eid)["status"] == "Ok", 30, "1+1")
    error_of(bob.get(f"/expression/{eid}"), 404)
    error_of(bob.delete(f"/expression/{eid}"), 404)
    assert all(e["expression_id"] != eid for e in bob.get("/expression").json()["expressions"])
    assert expression(alice, eid)["expression_value"] == "1+1"


# ---- bad input ---------------------------------------------------------------------------------


def test_a_declared_body_over_the_cap_gets_413_before_it_is_sent(cl):
    """The 413 comes from the headers alone: to a client that waits for "100 Continue" (it never
    comes), and to one that sends nothing more after its headers."""
    url = cl.apis[0].url
    host, port = url.split("//")[1].split(":")
    for expect in ("Expect: 100-continue\r\n", ""):
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall((f"POST /expression HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                       f"Content-Length: {10 * 1024 * 1024}\r\n{expect}\r\n").encode())
            reply = b""
            while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
                chunk = s.recv(65536)  # the socket's 10 s timeout bounds the wait
                if not chunk:
                    break
                reply += chunk
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 413"), (expect, reply[:200])
        assert b"100 Continue" not in reply
        assert json.loads(body)["error"].startswith("the request body exceeds"), body


def test_bad_bodies_get_4xx_naming_the_problem(cl):
    api = new_user(cl, "input")
    post = lambda data, **kw: api.post("/expression", data=data, headers={"Content-Type": "application/json"}, **kw)
    assert "exceeds" in error_of(post("{" + " " * (64 * 1024) + "}"), 413)["error"]
    assert "JSON" in error_of(post("{not json"), 400)["error"]
    assert "JSON" in error_of(post(b'{"expression": "1+\xff"}'), 400)["error"]  # invalid UTF-8
    assert "object" in error_of(post("[1, 2]"), 400)["error"]
    assert "object" in error_of(post(""), 400)["error"]
    assert "'expression'" in error_of(post("{}"), 400)["error"]
    assert "'expression'" in error_of(post('{"expression": 5}'), 400)["error"]
    assert "'req_uid'" in error_of(post('{"expression": "1+1", "req_uid": 7}'), 400)["error"]
    assert "'req_uid'" in error_of(post('{"expression": "1+1", "req_uid": ""}'), 400)["error"]
    assert "'login'" in error_of(api.post("/api/v1/login", json={"password": "x"}), 400)["error"]
    assert "'password'" in error_of(api.post("/api/v1/register", json={"login": "abc", "password": 1}), 400)["error"]


def test_expression_errors_carry_the_position(cl):
    api = new_user(cl, "pos")
    cases = {"2+": (3, "expected a number or '('"), "(2+3": (None, "missing ')'"), "2 3": (3, "expected an operator")}
    for text, (pos, words) in cases.items():
        body = error_of(api.post("/expression", json={"expression": text}), 400)
        assert words in body["error"], body
        if pos:
            assert body["position"] == pos, body
    body = error_of(api.post("/expression", json={"expression": "1+" * 3000 + "1"}), 400)
    assert body["position"] >= 1


def test_bad_durations_get_400(cl):
    admin = cl.admin_client()
    for bad in ({"+": -1}, {"+": 65536}, {"%": 5}, {"+": "fast"}, {"+": 1.5}, {}):
        error_of(admin.post("/duration", json=bad), 400)


def test_unknown_route_is_404_and_wrong_method_405_with_allow(cl):
    api = new_user(cl, "routes")
    error_of(api.get("/nope"), 404)
    r = api.put("/expression")
    error_of(r, 405)
    assert set(r.headers["Allow"].split(", ")) == {"GET", "POST"}
    r = api.post("/expression/5")
    error_of(r, 405)
    assert set(r.headers["Allow"].split(", ")) == {"GET", "DELETE"}


# ---- idempotency ---------------------------------------------------------------------------------


def test_req_uid_is_idempotent_per_user(cl):
    api, other = new_user(cl, "idem"), new_user(cl, "idem")
    a = submit(api, "1+2", req_uid="same")
    assert submit(api, "1+2", req_uid="same") == a
    assert "req_uid" in error_of(api.post("/expression", json={"req_uid": "same", "expression": "1+3"}), 409)["error"]
    # Another user may use the same req_uid.
    assert submit(other, "1+3", req_uid="same") != a


def test_concurrent_duplicates_make_one_expression(cl):
    api = new_user(cl, "dup")
    ids, errors = [], []

    def post():
        try:
            s = requests.Session()
            r = s.post(api.base_url + "/expression", json={"req_uid": "race", "expression": "4*4"},
                       headers={"Authorization": f"Bearer {api.token}"}, timeout=10)
            ids.append(r.json()["expression"]["expression_id"])
        except Exception as e:  # reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=post) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(ids) == 12 and len(set(ids)) == 1
    assert len(api.get("/expression").json()["expressions"]) == 1


def test_list_is_newest_first_with_a_cursor(cl):
    api = new_user(cl, "page")
    ids = [submit(api, f"{i}+1") for i in range(5)]
    page1 = api.get("/expression?limit=2").json()
    assert [e["expression_id"] for e in page1["expressions"]] == ids[::-1][:2]
    page2 = api.get(f"/expression?limit=2&cursor={page1['next_cursor']}").json()
    assert [e["expression_id"] for e in page2["expressions"]] == ids[::-1][2:4]
    page3 = api.get(f"/expression?limit=2&cursor={page2['next_cursor']}").json()
    assert [e["expression_id"] for e in page3["expressions"]] == ids[:1] and page3["next_cursor"] is None
    error_of(api.get("/expression?limit=0"), 400)
    error_of(api.get("/expression?cursor=abc"), 400)


# ---- operations ------------------------------------------------------------------------------


def test_health_readiness_and_metrics(cl):
    url = cl.apis[0].url
    api = new_user(cl, "metrics")
    eid = submit(api, "6/3")
    cl.wait_for(lambda: expression(api, eid)["status"] == "Ok", 30, "6/3")
    assert requests.get(url + "/healthz").json()["status"] == 200
    assert requests.get(url + "/readyz").json() == {"state": "ready", "dbagent": "ok", "rabbitmq": "ok", "status": 200}
    m = requests.get(url + "/metrics")
    assert m.status_code == 200 and m.headers["Content-Type"].startswith("text/plain")
    # The gauges may come from a scrape of up to METRICS_CACHE_MS ago, before 6/3 finished.
    cl.wait_for(lambda: 'calc_expressions{state="ok"} 0' not in requests.get(url + "/metrics").text, 15,
                "the gauges to count 6/3")
    text = requests.get(url + "/metrics").text
    for name in ("calc_http_requests_total{", "calc_http_request_duration_seconds_bucket{",
                 "calc_nodes_dispatched_total", "calc_agents_alive 2", "calc_dispatch_latency_seconds_bucket{",
                 'calc_expressions{state="ok"}', 'calc_expressions{state="new"}', 'calc_nodes{state="ready"}'):
        assert name in text, name
    samples = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert int(samples['calc_expressions{state="ok"}']) >= 1
    assert int(samples["calc_dispatch_latency_seconds_count"]) >= 1


def gauge(text, name):
    return int(next(line.rsplit(" ", 1)[1] for line in text.splitlines() if line.startswith(name + " ")))


def test_a_scrape_storm_asks_dbagent_once_per_cache_period(cl):
    """The cluster's gauges cost dbagent a pass over the expressions table: an instance asks for
    them at most once per METRICS_CACHE_MS however many scrapes come (dbagent counts its
    GetStats calls); with 0 it asks at every scrape."""
    dba = DbaClient(cl.env["DBAGENT_ADDR"], cl.env["DBAGENT_TOKEN"])
    cached = cl.start_api(METRICS_CACHE_MS="60000")
    every = cl.start_api(METRICS_CACHE_MS="0")
    problems = []

    def scrape(url, n):
        s = requests.Session()
        for _ in range(n):
            r = s.get(url + "/metrics", timeout=10)
            if r.status_code != 200 or 'calc_expressions{state="ok"}' not in r.text:
                problems.append((r.status_code, r.text[:200]))

    before = dba.GetStats().stats_calls
    threads = [threading.Thread(target=scrape, args=(cached.url, 25)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not problems, problems[:3]
    calls = dba.GetStats().stats_calls - before - 1  # less our own
    assert calls == 1, f"200 scrapes asked dbagent {calls} times"
    text = requests.get(cached.url + "/metrics", timeout=10).text
    assert gauge(text, "calc_gauges_refreshes_total") == 1
    assert 0 <= float(next(line.split()[1] for line in text.splitlines()
                            if line.startswith("calc_gauges_age_seconds "))) < 60
    before = dba.GetStats().stats_calls
    scrape(every.url, 5)
    assert not problems, problems[:3]
    assert dba.GetStats().stats_calls - before - 1 == 5
    assert gauge(requests.get(every.url + "/metrics", timeout=10).text, "calc_gauges_refreshes_total") == 6
    dba.close()


def test_cached_gauges_follow_the_cluster_once_stale(cl):
    api = new_user(cl, "gauges")
    quick = cl.start_api(METRICS_CACHE_MS="300")
    ok = gauge(requests.get(quick.url + "/metrics", timeout=10).text, 'calc_expressions{state="ok"}')
    eid = submit(api, "40+2")
    cl.wait_for(lambda: expression(api, eid)["status"] == "Ok", 30, "40+2")
    cl.wait_for(lambda: gauge(requests.get(quick.url + "/metrics", timeout=10).text,
                              'calc_expressions{state="ok"}') > ok, 10, "the gauge to count it")


def test_metrics_token_is_required_when_set(cl):
    token = "metrics-" + "k" * 24
    guarded = cl.start_api(METRICS_TOKEN=token)
    user = new_user(cl, "scraper")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {token}x"},
                    {"Authorization": f"Bearer {token[:-1]}"}, {"Authorization": f"Basic {token}"},
                    {"Authorization": f"Bearer {user.token}"}):
        error_of(requests.get(guarded.url + "/metrics", headers=headers, timeout=10), 401)
    r = requests.get(guarded.url + "/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert r.status_code == 200 and "calc_http_requests_total{" in r.text
    # Other routes are not guarded by it, and an instance without it serves anyone.
    assert requests.get(guarded.url + "/healthz", timeout=10).status_code == 200
    assert requests.get(cl.apis[0].url + "/metrics", timeout=10).status_code == 200
    # A token too short to be a secret is refused at start.
    env = dict(os.environ, **cl.env, METRICS_TOKEN="short")
    r = subprocess.run([cl.binary("calc-api")], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 64 and "METRICS_TOKEN" in r.stderr, r.stderr


def test_openapi_describes_every_route_and_responses_match(cl):
    url = cl.apis[0].url
    spec = requests.get(url + "/openapi.json").json()
    assert spec["openapi"].startswith("3.1")
    # Every path of the document answers, and the methods it answers (the 405's Allow) are
    # exactly the documented ones.
    for path, ops in spec["paths"].items():
        concrete = path.replace("{id}", "1")
        r = requests.request("PATCH", url + concrete)
        assert r.status_code == 405, path
        assert set(r.headers["Allow"].split(", ")) == {m.upper() for m in ops}, path
    # Paths outside the document do not answer.
    for path in ("/api/v1/users", "/expressions", "/expression/x", "/admin"):
        assert requests.get(url + path).status_code == 404, path

    resolver = jsonschema.RefResolver.from_schema(spec)

    def check(r, path, method):
        resp = spec["paths"][path][method]["responses"][str(r.status_code)]
        schema = resp["content"]["application/json"]["schema"]
        jsonschema.validate(r.json(), schema, resolver=resolver, cls=jsonschema.Draft202012Validator)

    api = cl.api_client()
    check(api.register("schema_user", "password1", check=False), "/api/v1/register", "post")
    check(api.post("/api/v1/login", json={"login": "schema_user", "password": "password1"}), "/api/v1/login", "post")
    api.login()
    eid = submit(api, "2*3")
    check(api.post("/expression", json={"expression": "2*3"}), "/expression", "post")
    check(api.post("/expression", json={"expression": "2*"}), "/expression", "post")
    cl.wait_for(lambda: expression(api, eid)["status"] == "Ok", 30, "2*3")
    check(api.get(f"/expression/{eid}"), "/expression/{id}", "get")
    check(api.get("/expression/999999"), "/expression/{id}", "get")
    check(api.get("/expression"), "/expression", "get")
    check(api.delete(f"/expression/{eid}"), "/expression/{id}", "delete")
    check(api.get("/duration"), "/duration", "get")
    check(api.post("/duration", json={"+": 1}), "/duration", "post")
    check(api.get("/agent"), "/agent", "get")
    check(requests.get(url + "/healthz"), "/healthz", "get")
    check(requests.get(url + "/readyz"), "/readyz", "get")
    check(api.post("/api/v1/refresh"), "/api/v1/refresh", "post")
    check(api.post("/api/v1/logout"), "/api/v1/logout", "post")
