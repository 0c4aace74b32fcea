"""RabbitMQ across machines (issue 16): a 3-node cluster with quorum queues, the API and the agents
given every broker's URL, and the node the dispatcher is on killed mid-run.

The cluster's nodes are started once for the module (rabbit_nodes.py); the database, dbagent, API
and agents are the test's own (harness.Cluster), on a vhost of their own on the cluster.
"""

import os
import re
import secrets

import pytest

import harness
from rabbit_nodes import RabbitNodes
from workload import check_applied_once, run_workload

OPS = {"+": 0, "-": 0, "*": 0, "/": 0}


@pytest.fixture(scope="module")
def rabbit3(calc_session):
    nodes = RabbitNodes(os.path.join(calc_session.root, "rabbit-cluster"), count=3)
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.stop()


def sql(cluster, query):
    out = cluster.servers.psql(query, db=cluster.db)
    return [line.split("|") for line in out.splitlines() if line]


def set_durations(cluster, **ms):
    r = cluster.admin_client().post("/duration", json=dict(OPS, **ms))
    assert r.status_code == 200, r.text


def submit(api, text):
    r = api.post("/expression", json={"expression": text})
    assert r.status_code == 200, r.text
    return r.json()["expression"]["expression_id"]


def broker_port_of_api(api):
    """The port of the broker the dispatcher's current connection is on, from its log."""
    found = re.findall(r"dispatcher: connected to RabbitMQ 127\.0\.0\.1:(\d+)", api.log())
    return int(found[-1]) if found else None


def test_broker_of_the_dispatcher_killed_mid_run_quorum_queues_lose_nothing_and_stay_fast(
        calc_session, rabbit3, request):
    c = harness.Cluster(calc_session, request.node.name,
                        env={"AMQP_QUEUE_TYPE": "quorum", "AMQP_RECONNECT_MAX_MS": "1000"})
    try:
        c.setup_resources()
        vhost = rabbit3.create_vhost(f"quorum-{secrets.token_hex(3)}")
        c.env["AMQP_URL"] = rabbit3.urls(vhost)
        c.start_dbagent()
        api_proc = c.start_api(wait=False)
        # The second agent lists the brokers in another order, so the connections are spread.
        agents = [c.start_agent(), c.start_agent(AMQP_URL=rabbit3.urls(vhost, order=[1, 2, 0]))]
        c.wait_ready(api_proc)
        for a in agents:
            c.wait_for(lambda a=a: "consuming calc.work on RabbitMQ" in a.log(), 30, f"{a.name} to consume")
        types = rabbit3.rabbitmqctl(0, "list_queues", "-p", vhost, "--no-table-headers", "name", "type")
        assert sorted(types.split()) == sorted(["calc.work", "quorum", "calc.retry", "quorum"]), types

        set_durations(c, **{"+": 200, "*": 200})
        api = c.api_client()
        api.register("quorumuser", "password1")
        api.login()
        n = 150
        run_workload(c, api, 8, 0)  # warm-up: connections, caches, the first claims
        clean_s, expected = run_workload(c, api, n, 1000)
        check_applied_once(c, expected)

        port = broker_port_of_api(api_proc)
        assert port in rabbit3.ports, f"the API's log does not name its broker ({port})"
        victim = rabbit3.node_of_port(port)
        fault_s, expected = run_workload(c, api, n, 2000, fault=lambda: rabbit3.kill_node(victim))
        print(f"\nworkload of {n} expressions ({3 * n} nodes): {clean_s:.1f}s without fault,"
              f" {fault_s:.1f}s with broker node {victim} killed (x{fault_s / clean_s:.2f})")
        check_applied_once(c, expected)
        new_port = broker_port_of_api(api_proc)
        assert new_port != port and new_port in rabbit3.ports, "the dispatcher did not move to another broker"
        assert f"RabbitMQ connection lost to 127.0.0.1:{port}" in api_proc.log()
        assert fault_s <= 1.5 * clean_s, f"{fault_s:.1f}s with the fault > 1.5 x {clean_s:.1f}s without"
    finally:
        c.close()


@pytest.mark.cluster(agents=0)
def test_a_queue_type_that_differs_from_the_existing_queue_is_named_in_the_log(bare_cluster):
    """On the session's single broker: the first agent creates classic queues; an agent configured
    for quorum queues gets PRECONDITION_FAILED, says which queue and that the type differs, and
    keeps retrying (an operator may delete the queue)."""
    c = bare_cluster
    c.start_dbagent()
    classic = c.start_agent()
    c.wait_for(lambda: "consuming calc.work" in classic.log(), 30, "the classic agent to consume")
    quorum = c.start_agent("agent-quorum", AMQP_QUEUE_TYPE="quorum")
    words = "queue calc.work exists with another queue type than AMQP_QUEUE_TYPE=quorum"
    c.wait_for(lambda: quorum.log().count(words) >= 2, 30, "the quorum agent to name the clash twice")
    assert "PRECONDITION_FAILED" in quorum.log() and "consuming" not in quorum.log()
    types = c.servers.rabbitmqctl("list_queues", "-p", c.vhost, "--no-table-headers", "name", "type")
    assert sorted(types.split()) == sorted(["calc.work", "classic", "calc.retry", "classic"]), types
