"""The routes the web page needs: the page and its files (headers, caching, 404), the plan
preview, an expression's nodes with their states and critical path (owner only), and refresh and
logout refused on another site's behalf. One cluster serves the module; each test has its own
users."""

import re

import pytest
import requests

from api_helpers import admin_client, error_of, module_cluster, new_user, set_delays, submit


@pytest.fixture(scope="module")
def cl(calc_session):
    c = module_cluster(calc_session, "web_api")
    try:
        yield c
    finally:
        c.close()


# ---- the page and its files --------------------------------------------------------------------


def test_the_page_and_its_files_are_served_with_a_strict_policy_and_etags(cl):
    url = cl.apis[0].url
    r = requests.get(f"{url}/", timeout=10)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    csp = r.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    # No inline script or style in the page itself: every script and sheet is a file of /ui/.
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", r.text)
    assert "<style" not in r.text and " style=" not in r.text
    assets = re.findall(r'(?:src|href)="(/ui/[^"]+)"', r.text)
    assert any(a.endswith(".js") for a in assets) and any(a.endswith(".css") for a in assets)
    types = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
    for path in assets:
        a = requests.get(url + path, timeout=10)
        assert a.status_code == 200, path
        ext = path[path.rindex("."):]
        assert a.headers["Content-Type"].startswith(types[ext]), path
        assert a.headers["X-Content-Type-Options"] == "nosniff"
        etag = a.headers["ETag"]
        assert re.fullmatch(r'"[0-9a-f]{32}"', etag)
        again = requests.get(url + path, headers={"If-None-Match": etag}, timeout=10)
        assert again.status_code == 304 and again.content == b""
        other = requests.get(url + path, headers={"If-None-Match": '"0"'}, timeout=10)
        assert other.status_code == 200 and other.content == a.content
    # The JavaScript modules import each other by path: every import is a file that exists.
    for path in (a for a in assets if a.endswith(".js")):
        for dep in re.findall(r'from "\./([^"]+)"', requests.get(url + path, timeout=10).text):
            assert requests.get(f"{url}/ui/js/{dep}", timeout=10).status_code == 200, dep


@pytest.mark.parametrize("path", ["/ui/nope.js", "/ui/%2e%2e/api.h", "/ui/js/", "/ui/", "/index.html"])
def test_an_unknown_file_is_a_404(cl, path):
    r = requests.get(cl.apis[0].url + path, timeout=10)
    error_of(r, 404)


# ---- the plan preview ---------------------------------------------------------------------------


def test_plan_preview_counts_times_and_draws_the_plan(cl):
    set_delays(cl, 100)
    api = new_user(cl)
    r = api.post("/api/v1/plan", json={"expression": "2+2*2"})
    assert r.status_code == 200, r.text
    p = r.json()
    assert p["node_count"] == 2 and p["depth"] == 2
    assert p["critical_path_ms"] == 200 and p["work_ms"] == 200
    assert p["delays"] == {"+": 100, "-": 100, "*": 100, "/": 100}
    mul, add = p["nodes"]
    assert mul["op"] == "*" and mul["operands"] == [{"value": 2}, {"value": 2}]
    assert add["op"] == "+" and {"node": mul["id"]} in add["operands"] and {"value": 2} in add["operands"]
    assert mul["parent"] == add["id"] and add["parent"] is None
    assert mul["critical"] and add["critical"] and add["start_ms"] == 100
    # Independent operations start together; only the longest chain is critical.
    p = api.post("/api/v1/plan", json={"expression": "(1+2)*(3+4+5)", "source_order": True}).json()
    assert p["node_count"] == 4 and p["critical_path_ms"] == 300 and p["work_ms"] == 400
    crit = [n for n in p["nodes"] if n["critical"]]
    assert len(crit) == 3 and [n for n in p["nodes"] if not n["critical"]][0]["operands"] == [
        {"value": 1}, {"value": 2}]
    # A lone number: no nodes, its value.
    p = api.post("/api/v1/plan", json={"expression": " 7 "}).json()
    assert p["node_count"] == 0 and p["nodes"] == [] and p["value"] == 7


def test_plan_preview_names_the_position_of_a_syntax_error(cl):
    api = new_user(cl)
    body = error_of(api.post("/api/v1/plan", json={"expression": "2+*2"}), 400)
    assert body["position"] == 3
    # The same answer POST /expression gives.
    same = error_of(api.post("/expression", json={"expression": "2+*2"}), 400)
    assert same["position"] == body["position"] and same["error"] == body["error"]
    assert error_of(api.post("/api/v1/plan", json={"expression": "(1"}), 400)["position"] == 3
    assert "expression" in error_of(api.post("/api/v1/plan", json={}), 400)["error"]
    assert "source_order" in error_of(
        api.post("/api/v1/plan", json={"expression": "1", "source_order": 1}), 400)["error"]
    error_of(api.post("/api/v1/plan", data="[1]"), 400)
    error_of(requests.post(cl.apis[0].url + "/api/v1/plan", json={"expression": "1"}, timeout=10), 401)


# ---- an expression's nodes ----------------------------------------------------------------------


def test_nodes_show_states_values_and_the_critical_path(cl):
    set_delays(cl, 0)
    api = new_user(cl)
    eid = submit(api, "(1+2)*(3+4+5)", source_order=True)

    def done():
        r = api.get(f"/expression/{eid}/nodes")
        assert r.status_code == 200, r.text
        return r.json() if r.json()["expression"]["status"] == "Ok" else None

    body = cl.wait_for(done, 30, "the expression done")
    assert body["expression"]["result"] == 36 and body["expression"]["expression_id"] == eid
    nodes = {n["id"]: n for n in body["nodes"]}
    assert len(nodes) == 4 and all(n["state"] == "done" for n in nodes.values())
    root = [n for n in nodes.values() if n["parent"] is None]
    assert len(root) == 1 and root[0]["value"] == 36 and root[0]["op"] == "*"
    for n in nodes.values():
        for o in n["operands"]:
            if "node" in o:  # a node's operand names its child, with the child's value
                assert nodes[o["node"]]["parent"] == n["id"] and o["value"] == nodes[o["node"]]["value"]
        assert n["agent"] and n["attempts"] >= 1 and n["error"] is None
    # Zero delays: every path is as long as the longest.
    assert all(n["critical"] for n in nodes.values()) and body["critical_path_ms"] == 0


def test_nodes_of_a_running_expression_and_the_critical_path_under_delays(cl):
    set_delays(cl, 300)
    api = new_user(cl)
    eid = submit(api, "1+2+3*4", source_order=True)
    body = api.get(f"/expression/{eid}/nodes").json()
    assert {n["state"] for n in body["nodes"]} <= {"blocked", "ready", "queued", "running", "done"}
    assert body["critical_path_ms"] == 600
    by_op = {n["op"]: n for n in body["nodes"]}
    # (1+2) and 3*4 both start at once; either ends at 300, then the root: all on a longest path.
    assert by_op["*"]["start_ms"] == 0 and all(n["critical"] for n in body["nodes"])
    seen = set()

    def finished():
        b = api.get(f"/expression/{eid}/nodes").json()
        seen.update(n["state"] for n in b["nodes"])
        return b["expression"]["status"] == "Ok"

    cl.wait_for(finished, 30, "the expression done", interval=0.05)
    assert "running" in seen and "done" in seen
    set_delays(cl, 0)


def test_nodes_are_the_owners_only(cl):
    set_delays(cl, 0)
    owner, other = new_user(cl), new_user(cl)
    eid = submit(owner, "1+1")
    assert owner.get(f"/expression/{eid}/nodes").status_code == 200
    error_of(other.get(f"/expression/{eid}/nodes"), 404)
    error_of(owner.get("/expression/999999999/nodes"), 404)
    error_of(owner.get(f"/expression/{eid}/nodes/"), 404)
    error_of(owner.post(f"/expression/{eid}/nodes"), 405)
    error_of(requests.get(f"{cl.apis[0].url}/expression/{eid}/nodes", timeout=10), 401)
    # A lone number has no nodes, and is done.
    lone = submit(owner, "42")
    body = owner.get(f"/expression/{lone}/nodes").json()
    assert body["nodes"] == [] and body["expression"]["result"] == 42


# ---- cross-site requests ------------------------------------------------------------------------


def test_refresh_and_logout_are_refused_on_another_sites_behalf(cl):
    url = cl.apis[0].url
    host = url.split("//")[1]
    api = new_user(cl)
    for path in ("/api/v1/refresh", "/api/v1/logout"):
        for headers in ({"Origin": "http://evil.example"},
                        {"Origin": f"http://{host}.evil.example"},
                        {"Origin": "null"},
                        {"Origin": f"http://{host.split(':')[0]}:1"},  # another port
                        {"Sec-Fetch-Site": "cross-site"},
                        {"Origin": url, "Sec-Fetch-Site": "cross-site"}):
            body = error_of(api.post(path, headers=headers), 403)
            assert "site" in body["error"] or "origin" in body["error"], body
    # Still signed in: the refused requests neither rotated nor revoked the cookie.
    r = api.post("/api/v1/refresh", headers={"Origin": url, "Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 200, r.text
    # The host's case and an explicit default port do not matter.
    r = api.post("/api/v1/refresh", headers={"Origin": url.upper().replace("HTTP://", "http://")})
    assert r.status_code == 200, r.text
    # No Origin at all (curl, scripts): as before.
    assert api.post("/api/v1/refresh").status_code == 200
    assert api.post("/api/v1/logout", headers={"Origin": url}).status_code == 200
    error_of(api.post("/api/v1/refresh"), 401)


# ---- who am I, and the document ----------------------------------------------------------------


def test_me_says_who_and_whether_admin(cl):
    api = new_user(cl)
    me = api.get("/api/v1/me").json()
    assert me["login"] == api.credentials[0] and me["admin"] is False and me["id"] > 0
    assert admin_client(cl).get("/api/v1/me").json()["admin"] is True
    error_of(requests.get(cl.apis[0].url + "/api/v1/me", timeout=10), 401)


def test_openapi_documents_the_new_routes_and_replies_match(cl):
    import jsonschema

    url = cl.apis[0].url
    spec = requests.get(url + "/openapi.json", timeout=10).json()
    resolver = jsonschema.RefResolver.from_schema(spec)

    def check(r, path, method):
        resp = spec["paths"][path][method]["responses"][str(r.status_code)]
        schema = resp["content"]["application/json"]["schema"]
        jsonschema.validate(r.json(), schema, resolver=resolver, cls=jsonschema.Draft202012Validator)

    set_delays(cl, 0)
    api = new_user(cl)
    check(api.get("/api/v1/me"), "/api/v1/me", "get")
    check(api.post("/api/v1/plan", json={"expression": "1+2*3"}), "/api/v1/plan", "post")
    check(api.post("/api/v1/plan", json={"expression": "5"}), "/api/v1/plan", "post")
    check(api.post("/api/v1/plan", json={"expression": "1+"}), "/api/v1/plan", "post")
    eid = submit(api, "1+2*3")
    check(api.get(f"/expression/{eid}/nodes"), "/expression/{id}/nodes", "get")
    cl.wait_for(lambda: api.get(f"/expression/{eid}").json()["expression"]["status"] == "Ok", 30, "done")
    check(api.get(f"/expression/{eid}/nodes"), "/expression/{id}/nodes", "get")
    check(api.get(f"/expression/{eid}"), "/expression/{id}", "get")
    check(api.get("/expression/99999999/nodes"), "/expression/{id}/nodes", "get")
    check(api.post("/api/v1/refresh", headers={"Origin": "http://evil.example"}), "/api/v1/refresh", "post")
    e = api.get(f"/expression/{eid}").json()["expression"]
    assert e["created_at_ms"] <= e["eval_started_at_ms"] <= e["eval_finished_at_ms"]
