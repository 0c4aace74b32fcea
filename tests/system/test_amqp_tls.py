"""amqps:// really is TLS (issue 16): a RabbitMQ node with a TLS listener that requires a client
certificate, certificates made for the test by openssl (a throwaway CA, a server certificate for
localhost, a client certificate), the API and an agent working over it, and agents that must not
connect: a CA that did not sign the broker's certificate, a host name the certificate does not
name.
"""

import os
import secrets
import socket
import subprocess

import pytest

import harness
from rabbit_nodes import RabbitNodes


def openssl(*args, cwd):
    r = subprocess.run(["openssl"] + list(args), cwd=cwd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"openssl {' '.join(args)}: {r.stderr}"


def make_pki(folder):
    """ca.pem (+ ca.key), server.pem/key for DNS:localhost only, client.pem/key, and other-ca.pem,
    a CA that signed nothing we use. EC keys: quick to make."""
    os.makedirs(folder, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca in ("ca", "other-ca"):
        openssl("req", "-x509", *ec, "-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-days", "2",
                "-subj", f"/CN=calc test {ca}", cwd=folder)
    for name, ext in (("server", "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n"),
                      ("client", "extendedKeyUsage=clientAuth\n")):
        with open(os.path.join(folder, f"{name}.ext"), "w") as f:
            f.write(ext)
        openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN=calc-{name}", cwd=folder)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=folder)
    # The broker runs as the rabbitmq user: it must read its key (a throwaway one).
    for f in os.listdir(folder):
        os.chmod(os.path.join(folder, f), 0o644)
    files = {"ca": "ca.pem", "other_ca": "other-ca.pem", "server": "server.pem", "server_key": "server.key",
             "client": "client.pem", "client_key": "client.key"}
    return {k: os.path.join(folder, v) for k, v in files.items()}


@pytest.fixture(scope="module")
def tls_node(calc_session):
    root = os.path.join(calc_session.root, "rabbit-tls")
    os.makedirs(root, exist_ok=True)
    os.chmod(root, 0o755)
    pki = make_pki(os.path.join(root, "pki"))
    nodes = None

    def conf(i):
        return (f"listeners.ssl.default = 127.0.0.1:{nodes.extra_ports[i]}\n"
                f"ssl_options.cacertfile = {pki['ca']}\n"
                f"ssl_options.certfile = {pki['server']}\n"
                f"ssl_options.keyfile = {pki['server_key']}\n"
                "ssl_options.verify = verify_peer\n"
                "ssl_options.fail_if_no_peer_cert = true\n")

    nodes = RabbitNodes(root, count=1, extra_conf=conf)
    nodes.pki = pki
    nodes.tls_port = nodes.extra_ports[0]
    try:
        nodes.start()
        harness.wait_for(lambda: _listening(nodes.tls_port), 30, "the TLS listener")
        yield nodes
    finally:
        nodes.stop()


def _listening(port):
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


def tls_env(node, vhost, host="localhost", ca=None):
    return {
        "AMQP_URL": node.url(0, vhost, scheme="amqps", host=host, port=node.tls_port),
        "AMQP_TLS_CA": ca or node.pki["ca"],
        "AMQP_TLS_CERT": node.pki["client"],
        "AMQP_TLS_KEY": node.pki["client_key"],
    }


@pytest.fixture
def tls_cluster(calc_session, tls_node, request):
    c = harness.Cluster(calc_session, request.node.name)
    try:
        c.setup_resources()
        c.tls_vhost = tls_node.create_vhost(f"tls-{secrets.token_hex(3)}")
        c.env.update(tls_env(tls_node, c.tls_vhost))
        yield c
    finally:
        c.close()


def test_api_and_agent_work_over_amqps_and_every_connection_is_tls(tls_cluster, tls_node):
    c = tls_cluster
    c.start(agents=1)
    agent = next(p for p in c.procs if p.name == "agent-1")
    c.wait_for(lambda: "consuming calc.work on RabbitMQ localhost:" in agent.log(), 30, "the agent to consume")
    api = c.api_client()
    api.register("tlsuser", "password1")
    api.login()
    eids = [api.post("/expression", json={"expression": f"{i}*2+1"}).json()["expression"]["expression_id"]
            for i in range(5)]

    def done():
        return all(api.get(f"/expression/{e}").json()["expression"]["status"] == "Ok" for e in eids)

    c.wait_for(done, 60, "the expressions to finish over amqps")
    for i, e in enumerate(eids):
        assert api.get(f"/expression/{e}").json()["expression"]["result"] == i * 2 + 1
    assert f"dispatcher: connected to RabbitMQ localhost:{tls_node.tls_port}" in c.apis[0].log()
    rows = tls_node.rabbitmqctl(0, "list_connections", "-p", c.tls_vhost, "--no-table-headers",
                                "port", "ssl", "peer_cert_subject").splitlines()
    rows = [r.split("\t") for r in rows if r.strip()]
    assert len(rows) == 2, rows  # the dispatcher's and the agent's
    for port, ssl, subject in rows:
        assert port == str(tls_node.tls_port) and ssl == "true" and "calc-client" in subject, rows


def test_agent_with_a_wrong_ca_or_host_name_refuses_the_broker_and_keeps_retrying(tls_cluster, tls_node):
    c = tls_cluster
    c.start_dbagent()
    wrong_ca = c.start_agent("agent-wrong-ca", AMQP_TLS_CA=tls_node.pki["other_ca"])
    # The certificate names localhost only: 127.0.0.1 is another name, refused by hostname checking.
    wrong_host = c.start_agent("agent-wrong-host", **{k: v for k, v in tls_env(tls_node, c.tls_vhost, host="127.0.0.1").items()
                                                      if k == "AMQP_URL"})
    for p, why, hint in ((wrong_ca, "SSL peer cert verification failed", "does not chain to AMQP_TLS_CA"),
                         (wrong_host, "SSL hostname verification failed", "does not name the host of the URL")):
        c.wait_for(lambda p=p, why=why: p.log().count(why) >= 2, 30, f"{p.name} to refuse the broker twice ({why})")
        assert "next attempt in" in p.log() and hint in p.log()
        assert "consuming" not in p.log() and p.alive()


def test_settings_that_cannot_be_honoured_are_refused_at_start(tls_node, tmp_path):
    base = {"PATH": os.environ.get("PATH", ""), "DBAGENT_TOKEN": "t" * 32, "AUTH_SECRET": "s" * 40}
    url = tls_node.url(0, "/", scheme="amqps", host="localhost", port=tls_node.tls_port)
    unreadable = str(tmp_path / "missing.pem")
    cases = [
        (dict(AMQP_URL=url), "AMQP_TLS_CA is required"),
        (dict(AMQP_URL=url, AMQP_TLS_CA=unreadable), f"AMQP_TLS_CA: cannot open {unreadable}"),
        (dict(AMQP_URL=url, AMQP_TLS_CA=tls_node.pki["ca"], AMQP_TLS_CERT=tls_node.pki["client"]),
         "AMQP_TLS_CERT is set without AMQP_TLS_KEY"),
        (dict(AMQP_URL=url, AMQP_TLS_CA=tls_node.pki["ca"], AMQP_TLS_CERT=unreadable, AMQP_TLS_KEY=tls_node.pki["client_key"]),
         "AMQP_TLS_CERT: cannot open"),
        (dict(AMQP_URL=url, AMQP_TLS_CA=tls_node.pki["ca"], AMQP_TLS_CERT=tls_node.pki["client"],
              AMQP_TLS_KEY=tls_node.pki["server_key"]), "AMQP_TLS_CERT/AMQP_TLS_KEY"),
        (dict(AMQP_TLS_CA=tls_node.pki["ca"]), "AMQP_TLS_CA is set but AMQP_URL has no amqps://"),
        (dict(AMQP_URL=url + ",amqp://u:p@127.0.0.1:1/v", AMQP_TLS_CA=tls_node.pki["ca"]), "mixes amqp:// and amqps://"),
        (dict(AMQP_QUEUE_TYPE="stream"), "AMQP_QUEUE_TYPE"),
    ]
    for program in ("calc-agent", "calc-api"):
        binary = os.path.join(harness.BIN_DIR, program)
        r = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=30)
        for name in ("AMQP_URL", "AMQP_QUEUE_TYPE", "AMQP_TLS_CA", "AMQP_TLS_CERT", "AMQP_TLS_KEY"):
            assert name in r.stdout, (program, name)
        for env, words in cases:
            r = subprocess.run([binary], env=dict(base, **env), capture_output=True, text=True, timeout=30)
            assert r.returncode == 64 and words in r.stderr, (program, env, r.returncode, r.stderr)
