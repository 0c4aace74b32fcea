"""The links between services, as they cross a network: gRPC over TLS (mutual when asked), the
agent's token that may call only an agent's methods, an agent that dbagent refuses, and dbagent
given several PostgreSQL hosts. Certificates come from scripts/tls-certs, made per test."""

import os
import subprocess

import grpc
import pytest

import harness
from dba_client import METHODS, DbaClient, RpcError

AGENT_METHODS = {"ClaimNode", "CompleteNode", "Heartbeat"}


def certs(cluster, *names, local=True):
    """A CA under the test's log folder and a certificate for each name, also valid for localhost and
    127.0.0.1 unless local is False."""
    d = os.path.join(cluster.log_dir, "tls")
    for n in names:
        subprocess.run([os.path.join(harness.SOURCE_DIR, "scripts", "tls-certs"), d, n,
                        *(("localhost", "127.0.0.1") if local else ())], check=True, capture_output=True)
    return d


def code(client, method, token=None):
    """The status code of one call of method with an empty request."""
    try:
        client.call(method, token=token, timeout=10)
        return grpc.StatusCode.OK
    except RpcError as e:
        return e.code


def exits_with(proc, code, timeout=30):
    """proc exits by itself with code (an exit the test expects, so teardown does not flag it)."""
    proc.expect_clean_exit = False
    rc = proc.wait(timeout)
    assert rc == code, f"{proc.name}: exit {rc}, not {code}\n{proc.log_tail()}"


def retire(cluster, proc):
    """Stops proc for good, checking it exits 0; the cluster then no longer waits on it."""
    assert cluster.stop(proc) == 0
    proc.expect_clean_exit = False


def user(cluster, login="linkuser"):
    api = cluster.api_client()
    api.register(login, "password1")
    api.login()
    return api


def finish(cluster, api, text, timeout=60):
    eid = api.post("/expression", json={"expression": text}, check=True).json()["expression"]["expression_id"]

    def final():
        e = api.get(f"/expression/{eid}").json()["expression"]
        return e["status"] in ("Ok", "Error") and e

    return cluster.wait_for(final, timeout, f"{text} to finish")


# --- least privilege ------------------------------------------------------------------------------
def test_each_method_with_each_token(bare_cluster):
    cl = bare_cluster
    cl.setup_resources()
    agent_token = "agent-token-" + "7" * 20
    cl.start_dbagent(DBAGENT_AGENT_TOKEN=agent_token)
    c = DbaClient(cl.env["DBAGENT_ADDR"], cl.env["DBAGENT_TOKEN"])
    try:
        assert set(METHODS) >= AGENT_METHODS
        for m in sorted(METHODS):
            with_api = code(c, m)
            with_agent = code(c, m, token=agent_token)
            with_nothing = code(c, m, token="wrong-token-0123456789")
            denied = (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)
            assert with_api not in denied, f"{m} with the API's token: {with_api}"
            if m in AGENT_METHODS:
                assert with_agent not in denied, f"{m} with the agent token: {with_agent}"
            else:
                assert with_agent == grpc.StatusCode.PERMISSION_DENIED, f"{m} with the agent token: {with_agent}"
            assert with_nothing == grpc.StatusCode.UNAUTHENTICATED, f"{m} with a wrong token: {with_nothing}"
        # The attack the agent token closes: storing a refresh token for the admin.
        with pytest.raises(RpcError) as e:
            c.call("StoreRefreshToken", token=agent_token, user_id=1, token_hash="x" * 64, family="f",
                   expires_at_ms=4102444800000)
        assert e.value.code == grpc.StatusCode.PERMISSION_DENIED
        assert "may not call /calc.v1.DbAgent/StoreRefreshToken" in e.value.details
    finally:
        c.close()


def test_agent_token_must_differ_and_be_long(bare_cluster):
    cl = bare_cluster
    cl.setup_resources()
    for i, (value, says) in enumerate(((cl.env["DBAGENT_TOKEN"], "must differ"), ("short", "16 or more"))):
        p = cl.start_dbagent(name=f"dbagent-bad-{i}", wait=False, DBAGENT_AGENT_TOKEN=value)
        exits_with(p, 64)
        assert says in p.log()


def test_dbagent_listens_on_loopback_unless_told_otherwise():
    out = subprocess.run([os.path.join(harness.BIN_DIR, "calc-dbagent"), "--help"], capture_output=True,
                         text=True, env=dict(os.environ, DBAGENT_TOKEN="x" * 20))
    lines = out.stdout.splitlines()
    i = next(i for i, ln in enumerate(lines) if ln.lstrip().startswith("DBAGENT_HOST"))
    assert lines[i + 1].strip() == "default 127.0.0.1", lines[i:i + 2]


# --- TLS --------------------------------------------------------------------------------------------
def test_mutual_tls_on_every_grpc_link_and_strangers_refused(bare_cluster):
    cl = bare_cluster
    cl.setup_resources()
    # dbagent's certificate names "dbagent" only, not the address it is reached at: the API and
    # the agent connect only because DBAGENT_TLS_SERVER_NAME says which name to expect.
    d = certs(cl, "dbagent", "api", "agent", local=False)
    other = os.path.join(cl.log_dir, "other-tls")
    subprocess.run([os.path.join(harness.SOURCE_DIR, "scripts", "tls-certs"), other, "intruder", "127.0.0.1"],
                   check=True, capture_output=True)
    agent_token = "agent-token-" + "5" * 20
    cl.start_dbagent(DBAGENT_TLS_CERT=f"{d}/dbagent.pem", DBAGENT_TLS_KEY=f"{d}/dbagent.key",
                     DBAGENT_TLS_CLIENT_CA=f"{d}/ca.pem", DBAGENT_AGENT_TOKEN=agent_token)
    dbagent = next(p for p in cl.procs if p.name == "dbagent")
    cl.wait_for(lambda: "mutual TLS" in dbagent.log(), 30, "dbagent to say it serves mutual TLS")
    api = cl.start_api(DBAGENT_TLS_CA=f"{d}/ca.pem", DBAGENT_TLS_CLIENT_CERT=f"{d}/api.pem",
                       DBAGENT_TLS_CLIENT_KEY=f"{d}/api.key", DBAGENT_TLS_SERVER_NAME="dbagent")
    agent = cl.start_agent(DBAGENT_TOKEN=agent_token, DBAGENT_TLS_CA=f"{d}/ca.pem",
                           DBAGENT_TLS_CLIENT_CERT=f"{d}/agent.pem", DBAGENT_TLS_CLIENT_KEY=f"{d}/agent.key",
                           DBAGENT_TLS_SERVER_NAME="dbagent")
    e = finish(cl, user(cl), "2 + 2 * 2")
    assert e["status"] == "Ok" and e["result"] == 6
    assert "applied" in agent.log()

    addr, token = cl.env["DBAGENT_ADDR"], cl.env["DBAGENT_TOKEN"]
    mine = dict(ca=f"{d}/ca.pem", cert=f"{d}/api.pem", key=f"{d}/api.key")
    clients = {
        "plaintext": DbaClient(addr, token),
        "no client certificate": DbaClient(addr, token, ca=f"{d}/ca.pem", server_name="dbagent"),
        "another CA's certificate": DbaClient(addr, token, ca=f"{d}/ca.pem", cert=f"{other}/intruder.pem",
                                              key=f"{other}/intruder.key", server_name="dbagent"),
        "another CA trusted": DbaClient(addr, token, ca=f"{other}/ca.pem", cert=f"{d}/api.pem", key=f"{d}/api.key",
                                        server_name="dbagent"),
        "the address, not the name dbagent's certificate carries": DbaClient(addr, token, **mine),
    }
    member = DbaClient(addr, token, server_name="dbagent", **mine)
    try:
        for what, c in clients.items():
            assert code(c, "GetDurations") == grpc.StatusCode.UNAVAILABLE, what
        assert code(member, "GetDurations") == grpc.StatusCode.OK
    finally:
        for c in list(clients.values()) + [member]:
            c.close()


def test_tls_settings_that_cannot_be_honoured_are_refused_at_start(bare_cluster):
    cl = bare_cluster
    cl.setup_resources()
    d = certs(cl, "dbagent")
    cases = [
        ("calc-dbagent", {"DBAGENT_TLS_CERT": f"{d}/dbagent.pem"}, "DBAGENT_TLS_CERT and DBAGENT_TLS_KEY go together"),
        ("calc-dbagent", {"DBAGENT_TLS_CLIENT_CA": f"{d}/ca.pem"}, "needs TLS"),
        ("calc-dbagent", {"DBAGENT_TLS_CERT": "/nonexistent.pem", "DBAGENT_TLS_KEY": f"{d}/dbagent.key"},
         "DBAGENT_TLS_CERT /nonexistent.pem"),
        ("calc-api", {"DBAGENT_TLS_CA": f"{d}/ca.key.missing"}, "DBAGENT_TLS_CA"),
        ("calc-api", {"DBAGENT_TLS_CLIENT_CERT": f"{d}/dbagent.pem", "DBAGENT_TLS_CLIENT_KEY": f"{d}/dbagent.key"},
         "DBAGENT_TLS_CA turns on"),
        ("calc-agent", {"DBAGENT_TLS_SERVER_NAME": "dbagent"}, "only over TLS"),
        ("calc-agent", {"DBAGENT_TLS_CA": f"{d}/ca.srl"}, "holds no PEM certificate"),
        ("calc-agent", {"DBAGENT_TLS_CA": f"{d}/dbagent.key"}, "holds no PEM certificate"),
        ("calc-dbagent", {"DBAGENT_TLS_CERT": f"{d}/dbagent.pem", "DBAGENT_TLS_KEY": f"{d}/dbagent.pem"},
         "holds no PEM private key"),
    ]
    for i, (prog, env, says) in enumerate(cases):
        p = cl.start_process(f"bad-{i}", [cl.binary(prog)], env)
        exits_with(p, 64)
        assert says in p.log(), f"{prog} {env}: {p.log()}"


# --- an agent dbagent refuses -----------------------------------------------------------------------
def test_an_agent_refused_at_start_exits_before_consuming(bare_cluster):
    cl = bare_cluster
    cl.setup_resources()
    d = certs(cl, "dbagent")
    other = os.path.join(cl.log_dir, "other-tls")
    subprocess.run([os.path.join(harness.SOURCE_DIR, "scripts", "tls-certs"), other, "x"], check=True,
                   capture_output=True)
    cl.start_dbagent(DBAGENT_TLS_CERT=f"{d}/dbagent.pem", DBAGENT_TLS_KEY=f"{d}/dbagent.key",
                     DBAGENT_AGENT_TOKEN="agent-token-" + "3" * 20)
    for name, env, says in (
        ("wrong-token", {"DBAGENT_TLS_CA": f"{d}/ca.pem", "DBAGENT_TOKEN": "not-this-cluster-token"},
         "missing or wrong service token"),
        ("wrong-ca", {"DBAGENT_TLS_CA": f"{other}/ca.pem", "DBAGENT_TOKEN": "agent-token-" + "3" * 20},
         "handshake failed"),
    ):
        p = cl.start_agent(name, **env)
        exits_with(p, 77)
        log = p.log()
        assert "dbagent refuses this agent" in log and says in log, log
        assert "consuming" not in log, log


def test_a_token_refused_later_hands_the_messages_back_and_stops(bare_cluster):
    cl = bare_cluster
    cl.setup_resources()
    old, new = "agent-token-old-" + "1" * 16, "agent-token-new-" + "2" * 16
    dbagent = cl.start_dbagent(DBAGENT_AGENT_TOKEN=old)
    # A monitor that waits a minute for silent agents: the messages counted below can only be the
    # ones agent-old handed back, never a re-dispatch of the node it held.
    api = cl.start_api(HEARTBEAT_TIMEOUT_MS="60000")
    admin = cl.admin_client()
    assert admin.post("/duration", json={"+": 3000, "-": 0, "*": 0, "/": 0}).status_code == 200
    agent = cl.start_agent("agent-old", DBAGENT_TOKEN=old, AGENT_MAX_PROCESSES="1", HEARTBEAT_INTERVAL_MS="100")
    client = user(cl)
    eid = client.post("/expression", json={"expression": "(1 + 2) + (3 + 4)"}, check=True).json()["expression"][
        "expression_id"]
    cl.wait_for(lambda: int(cl.servers.psql("SELECT count(*) FROM nodes WHERE state = 'running'", db=cl.db)) > 0,
                30, "a node running on agent-old")
    # The token is rotated: dbagent now takes only the new one.
    retire(cl, dbagent)
    dbagent = cl.start_dbagent(DBAGENT_AGENT_TOKEN=new)
    exits_with(agent, 77, timeout=60)
    log = agent.log()
    assert "dbagent refuses this agent" in log and "message handed back" in log, log
    # Both leaves' messages are back in the work queue: requeued, not acked away, not nacked to
    # the retry queue.
    assert cl.servers.queue_counts(cl.vhost) == {"calc.work": 2, "calc.retry": 0}
    # An API that takes silent agents' nodes back sooner, and an agent with the new token.
    retire(cl, api)
    client = harness.ApiClient(cl.start_api("api-2", HEARTBEAT_TIMEOUT_MS="2000").url)
    client.login("linkuser", "password1")
    cl.start_agent("agent-new", DBAGENT_TOKEN=new)
    e = cl.wait_for(lambda: (x := client.get(f"/expression/{eid}").json()["expression"])["status"] == "Ok" and x, 60,
                    "the expression to finish on the new agent")
    assert e["result"] == 10


# --- PostgreSQL with several hosts ------------------------------------------------------------------
def test_dbagent_reaches_the_writable_one_of_two_postgres_hosts(bare_cluster):
    cl = bare_cluster
    cl.setup_resources()
    servers = cl.servers
    ro_dir = os.path.join(cl.log_dir, "pg-readonly")
    ro_port = harness.free_port()
    cli = harness.SERVERS_CLI
    subprocess.run([cli, "start-pg", ro_dir, str(ro_port)], check=True, capture_output=True)
    try:
        # The same role and database, so only being read-only sets it apart.
        subprocess.run([cli, "pg-ensure-db", ro_dir, str(ro_port), cl.db, servers.db_user], check=True,
                       input=servers.db_password + "\n", text=True, capture_output=True)
        for sql in ("ALTER SYSTEM SET default_transaction_read_only = on", "SELECT pg_reload_conf()"):
            subprocess.run([cli, "psql", ro_dir, str(ro_port), "-c", sql], check=True, capture_output=True)
        primary = cl.env["DB_PORT"]
        cl.start_dbagent(DB_HOST="127.0.0.1,127.0.0.1", DB_PORT=f"{ro_port},{primary}",
                         DB_TARGET_SESSION_ATTRS="read-write")
        c = DbaClient(cl.env["DBAGENT_ADDR"], cl.env["DBAGENT_TOKEN"])
        uid = c.CreateUser(login="multihost", password_hash="h").user.id
        assert c.FindUser(login="multihost").user.id == uid
        c.close()
        tables = subprocess.run([cli, "psql", ro_dir, str(ro_port), "-d", cl.db, "-Atc",
                                 "SELECT count(*) FROM pg_tables WHERE tablename = 'nodes'"],
                                check=True, capture_output=True, text=True).stdout.strip()
        assert tables == "0", "dbagent migrated the read-only server"
    finally:
        subprocess.run([cli, "stop-pg", ro_dir], check=False, capture_output=True)
