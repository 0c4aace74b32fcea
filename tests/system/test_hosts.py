"""The cluster on four hosts, with TLS on every link between them.

Four network namespaces on one bridge stand for four machines: `db` (PostgreSQL), `broker`
(RabbitMQ), `core` (dbagent and the API) and `workers` (two agents). PostgreSQL takes only TLS
connections from the network (hostssl) and dbagent verifies it (verify-full); RabbitMQ listens on
the network with TLS only and asks for client certificates; dbagent serves mutual TLS and gives the
agents a token of their own. The test reaches the API from outside, like a user, and shows that a
client without the CA, one without a certificate and the agent token on an API-only method are
refused. Every namespace and link is removed at the end, also after a failure.
"""

import os
import secrets
import shutil
import socket
import subprocess

import grpc
import pytest

import harness
from dba_client import DbaClient, RpcError
from netns import Hosts

CLI = harness.SERVERS_CLI


def tls_certs(d, name, *names):
    subprocess.run([os.path.join(harness.SOURCE_DIR, "scripts", "tls-certs"), d, name, *names], check=True,
                   capture_output=True)
    return f"{d}/{name}.pem", f"{d}/{name}.key"


def listening(addr, port):
    with socket.create_connection((addr, port), timeout=1):
        return True


def run(argv, **kw):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=180, **kw)
    if r.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: exit {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return r.stdout


@pytest.fixture
def hosts():
    h = Hosts(secrets.token_hex(3), ["db", "broker", "core", "workers"])
    try:
        yield h
    finally:
        h.remove()
        assert h.leftovers() == [], f"namespaces or links left behind: {h.leftovers()}"


def test_four_hosts_with_tls_on_every_link(bare_cluster, hosts):
    cl = bare_cluster
    root = cl.log_dir
    pki = os.path.join(root, "pki")
    db_addr, broker_addr, core_addr = hosts.addr("db"), hosts.addr("broker"), hosts.addr("core")
    ca = f"{pki}/ca.pem"
    # Each certificate names its host (the hosts resolve each other's names) and its address.
    db_cert = tls_certs(pki, "db", db_addr)
    broker_cert = tls_certs(pki, "broker", broker_addr)
    dbagent_cert = tls_certs(pki, "core", core_addr)
    api_cert = tls_certs(pki, "api")
    agent_cert = tls_certs(pki, "agent")

    db_password, amqp_password = secrets.token_hex(12), secrets.token_hex(12)
    token, agent_token = secrets.token_hex(20), secrets.token_hex(20)
    pg_dir, rmq_dir = os.path.join(root, "pg"), os.path.join(root, "rabbitmq")
    pg_port, amqp_port, amqps_port = harness.free_port(), harness.free_port(), harness.free_port()
    started = []
    try:
        # --- db: PostgreSQL, TLS only from the network ---------------------------------------------
        os.makedirs(f"{pg_dir}/tls")
        for src, dst in ((db_cert[0], "server.pem"), (db_cert[1], "server.key")):
            shutil.copy(src, f"{pg_dir}/tls/{dst}")
        shutil.chown(f"{pg_dir}/tls", "postgres")
        for f in ("server.pem", "server.key"):
            shutil.chown(f"{pg_dir}/tls/{f}", "postgres")
        os.chmod(f"{pg_dir}/tls/server.key", 0o600)
        opts = (f"-c listen_addresses='127.0.0.1,{db_addr}' -c ssl=on -c ssl_cert_file={pg_dir}/tls/server.pem"
                f" -c ssl_key_file={pg_dir}/tls/server.key")
        run(hosts.wrap("db", [CLI, "start-pg", pg_dir, str(pg_port)]), env=dict(os.environ, PG_EXTRA_OPTS=opts))
        started.append(("pg", pg_dir))
        with open(f"{pg_dir}/data/pg_hba.conf", "a") as f:
            f.write(f"hostssl all all {hosts.subnet}.0/24 scram-sha-256\n")
        run([CLI, "psql", pg_dir, str(pg_port), "-c", "SELECT pg_reload_conf()"])
        run([CLI, "pg-ensure-db", pg_dir, str(pg_port), "calc", "calc"], input=db_password + "\n")

        # --- broker: RabbitMQ, TLS with client certificates on the network --------------------------
        os.makedirs(f"{rmq_dir}/tls")
        for src in (ca, *broker_cert):
            shutil.copy(src, f"{rmq_dir}/tls/")
        extra = os.path.join(root, "rabbitmq-tls.conf")
        with open(extra, "w") as f:
            f.write(f"listeners.ssl.default = {broker_addr}:{amqps_port}\n"
                    f"ssl_options.cacertfile = {rmq_dir}/tls/ca.pem\n"
                    f"ssl_options.certfile = {rmq_dir}/tls/broker.pem\n"
                    f"ssl_options.keyfile = {rmq_dir}/tls/broker.key\n"
                    "ssl_options.verify = verify_peer\n"
                    "ssl_options.fail_if_no_peer_cert = true\n")
        run(hosts.wrap("broker", [CLI, "start-rabbitmq", rmq_dir, str(amqp_port), str(harness.free_port()),
                                  str(harness.free_port()), "calc"]),
            input=amqp_password + "\n", env=dict(os.environ, RMQ_EXTRA_CONF=extra))
        started.append(("rabbitmq", rmq_dir))
        harness.wait_for(lambda: listening(broker_addr, amqps_port), 60, "RabbitMQ's TLS listener")

        # --- core: dbagent and the API ---------------------------------------------------------------
        dbagent_port, api_port = harness.free_port(), harness.free_port()
        amqp = {"AMQP_URL": f"amqps://calc:{amqp_password}@broker:{amqps_port}/%2f", "AMQP_TLS_CA": ca}
        dbagent = cl.start_process("dbagent", hosts.wrap("core", [cl.binary("calc-dbagent")]), {
            "DB_HOST": "db", "DB_PORT": pg_port, "DB_USERNAME": "calc", "DB_PASSWORD": db_password,
            "DB_NAME": "calc", "DB_SSLMODE": "verify-full", "PGSSLROOTCERT": ca,
            "DBAGENT_HOST": core_addr, "DBAGENT_PORT": dbagent_port, "DBAGENT_TOKEN": token,
            "DBAGENT_AGENT_TOKEN": agent_token, "DBAGENT_TLS_CERT": dbagent_cert[0],
            "DBAGENT_TLS_KEY": dbagent_cert[1], "DBAGENT_TLS_CLIENT_CA": ca})
        harness.wait_for(lambda: cl._check_alive(dbagent) or listening(core_addr, dbagent_port), 60,
                         "dbagent on core")
        dba_tls = {"DBAGENT_ADDR": f"core:{dbagent_port}", "DBAGENT_TLS_CA": ca}
        api = cl.start_process("api", hosts.wrap("core", [cl.binary("calc-api")]), dict(
            dba_tls, **amqp, API_HOST=core_addr, API_PORT=api_port, DBAGENT_TOKEN=token,
            DBAGENT_TLS_CLIENT_CERT=api_cert[0], DBAGENT_TLS_CLIENT_KEY=api_cert[1],
            AMQP_TLS_CERT=api_cert[0], AMQP_TLS_KEY=api_cert[1]))
        url = f"http://{core_addr}:{api_port}"
        client = harness.ApiClient(url)
        harness.wait_for(lambda: cl._check_alive(api) or client.get("/readyz").status_code == 200, 60,
                         "the API on core to be ready")

        # --- workers: two agents ---------------------------------------------------------------------
        agents = [
            cl.start_process(f"worker-{i}", hosts.wrap("workers", [cl.binary("calc-agent")]), dict(
                dba_tls, **amqp, AGENT_NAME=f"worker-{i}", DBAGENT_TOKEN=agent_token,
                DBAGENT_TLS_CLIENT_CERT=agent_cert[0], DBAGENT_TLS_CLIENT_KEY=agent_cert[1],
                AMQP_TLS_CERT=agent_cert[0], AMQP_TLS_KEY=agent_cert[1]))
            for i in (1, 2)]
        for a in agents:
            harness.wait_for(lambda a=a: cl._check_alive(a) or "consuming" in a.log(), 60, f"{a.name} to consume")

        # --- expressions through the API, from outside ----------------------------------------------
        client.register("hostsuser", "password1")
        client.login()
        texts = {f"{i} + {i} * 2 - (1 + 1) / 2": i + i * 2 - 1 for i in range(1, 11)}
        ids = {client.post("/expression", json={"expression": t}, check=True).json()["expression"][
            "expression_id"]: v for t, v in texts.items()}

        def all_done():
            listed = client.get("/expression?limit=100").json()["expressions"]
            done = {x["expression_id"]: x for x in listed if x["status"] in ("Ok", "Error")}
            return len(done) == len(ids) and done

        done = harness.wait_for(all_done, 60, "the expressions to finish")
        for eid, value in ids.items():
            assert done[eid]["status"] == "Ok" and done[eid]["result"] == value, done[eid]
        computed_by = run([CLI, "psql", pg_dir, str(pg_port), "-d", "calc", "-At", "-c",
                           "SELECT DISTINCT agent FROM nodes ORDER BY 1"]).split()
        assert computed_by and set(computed_by) <= {"worker-1", "worker-2"}, computed_by
        assert sum("applied" in a.log() for a in agents) >= 1

        # --- refusals --------------------------------------------------------------------------------
        target = f"{core_addr}:{dbagent_port}"
        strangers = {
            "no CA (plaintext)": DbaClient(target, token),
            "the CA but no client certificate": DbaClient(target, token, ca=ca),
        }
        agent_client = DbaClient(target, agent_token, ca=ca, cert=agent_cert[0], key=agent_cert[1])
        api_client = DbaClient(target, token, ca=ca, cert=api_cert[0], key=api_cert[1])
        try:
            for what, c in strangers.items():
                with pytest.raises(RpcError) as e:
                    c.GetDurations(timeout=10)
                assert e.value.code == grpc.StatusCode.UNAVAILABLE, what
            with pytest.raises(RpcError) as e:
                agent_client.CreateUser(login="mallory", password_hash="h", timeout=10)
            assert e.value.code == grpc.StatusCode.PERMISSION_DENIED
            agent_client.Heartbeat(agent="worker-probe", workers=1, timeout=10)
            assert api_client.FindUser(login="hostsuser", timeout=10).user.id > 0
        finally:
            for c in [*strangers.values(), agent_client, api_client]:
                c.close()
        # PostgreSQL and RabbitMQ take nothing in clear text from the network.
        r = subprocess.run(["psql", f"host={db_addr} port={pg_port} user=calc dbname=calc sslmode=disable",
                            "-c", "SELECT 1"], env=dict(os.environ, PGPASSWORD=db_password),
                           capture_output=True, text=True, timeout=30)
        assert r.returncode != 0 and "no encryption" in r.stderr, r.stderr
        with pytest.raises(OSError):
            listening(broker_addr, amqp_port)
    finally:
        for p in reversed(cl.procs):
            p.stop()
        for kind, d in reversed(started):
            subprocess.run([CLI, "stop-pg" if kind == "pg" else "stop-rabbitmq", d], capture_output=True,
                           timeout=120)
