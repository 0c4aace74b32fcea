"""The walking skeleton: one expression through every component of the architecture.

HTTP API -> parser -> dbagent (gRPC) -> PostgreSQL -> dispatcher -> RabbitMQ -> agent ->
dbagent -> GET /expression shows the result.
"""


def expression(api, eid):
    r = api.get(f"/expression/{eid}")
    assert r.status_code == 200, r.text
    return r.json()["expression"]


def test_two_plus_two_times_two_is_six(cluster):
    api = cluster.api_client()
    r = api.register("user22", "password1")
    assert r.status_code == 200 and r.json()["status"] == 200 and r.json()["id"] > 0
    api.login()
    r = api.post("/expression", json={"req_uid": "23332e", "expression": "2+2*2"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == 200
    e = body["expression"]
    assert e["expression_value"] == "2+2*2" and e["req_uid"] == "23332e"
    assert e["status"] in ("New", "In Progress", "Ok")
    assert e["node_count"] == 2
    eid = e["expression_id"]

    cluster.wait_for(lambda: expression(api, eid)["status"] == "Ok", 30, "2+2*2 to finish")
    done = expression(api, eid)
    assert done["result"] == 6
    # Written as the reference project writes it: a whole number without a fraction.
    assert '"result":6,' in api.get(f"/expression/{eid}").text
    assert done["nodes_done"] == 2 and done["error_msg"] == ""
    assert done["eval_started_at"] and done["eval_finished_at"]

    listed = api.get("/expression").json()
    assert [x["expression_id"] for x in listed["expressions"]] == [eid]


def test_division_by_zero_fails_the_expression(cluster):
    api = cluster.api_client()
    api.register("divider", "password1")
    api.login()
    eid = api.post("/expression", json={"expression": "1 + 2 / (3 - 3)"}).json()["expression"][
        "expression_id"]
    cluster.wait_for(lambda: expression(api, eid)["status"] == "Error", 30, "the expression to fail")
    assert "division by zero" in expression(api, eid)["error_msg"]


def test_a_lone_number_is_done_at_once(cluster):
    api = cluster.api_client()
    api.register("lonely", "password1")
    api.login()
    e = api.post("/expression", json={"expression": "(-5)"}).json()["expression"]
    assert e["status"] == "Ok" and e["result"] == -5 and e["node_count"] == 0
