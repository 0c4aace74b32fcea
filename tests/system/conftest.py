"""Fixtures of the system tests (see harness.py).

    calc_session   session: a temporary folder with a private PostgreSQL and RabbitMQ (harness.Servers)
    bare_cluster   per test: its own database and vhost, no process started (harness.Cluster)
    cluster        per test: bare_cluster + dbagent, one API and 2 agents, ready (/readyz answers 200)

    @pytest.mark.cluster(agents=3, env={"AGENT_MAX_PROCESSES": "1"})   options of `cluster`

Example:
    api = cluster.api_client()
    api.register("user22", "password1")
    api.login()
    eid = api.post("/expression", json={"expression": "2+2*2"}).json()["expression"]["expression_id"]
    cluster.wait_for(lambda: api.get(f"/expression/{eid}").json()["expression"]["status"] == "Ok",
                     30, "expression done")

On a failure the tails of the logs of the processes the test started are added to the report.
The temporary folder is deleted after a session without failures (CALC_TEST_KEEP=1 keeps it).
"""

import os
import signal
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

# The selftest cases are run only by test_harness.py, in a nested session of their own.
collect_ignore = [] if os.environ.get("CALC_SELFTEST") else ["selftest"]

_signalled = False


def _on_signal(signum, frame):
    # SIGTERM/SIGHUP become KeyboardInterrupt, so pytest runs every finalizer as for Ctrl-C.
    # Later signals are ignored so they cannot cut the teardown short (it has its own deadlines).
    global _signalled
    if _signalled:
        return
    _signalled = True
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def pytest_configure(config):
    config.addinivalue_line("markers", "cluster(agents=2, env=None): options of the cluster fixture")
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, _on_signal)


@pytest.fixture(scope="session")
def calc_session(request):
    root = harness.make_temp_root()
    servers = harness.Servers(root)
    try:
        servers.start()
        yield servers
    finally:
        try:
            servers.stop()
        finally:
            harness.REGISTRY.kill_everything()
            failed = request.session.testsfailed or _signalled
            if failed or os.environ.get("CALC_TEST_KEEP"):
                print(f"\nharness: logs and data kept in {root}", file=sys.stderr)
            else:
                harness.remove_tree(root)


def _cluster_options(request):
    m = request.node.get_closest_marker("cluster")
    kw = dict(m.kwargs) if m else {}
    return kw.get("agents", 2), kw.get("env") or {}


@pytest.fixture
def bare_cluster(request, calc_session):
    _, env = _cluster_options(request)
    c = harness.Cluster(calc_session, request.node.name, env=env)
    try:
        c.setup_resources()
        yield c
    finally:
        c.close()


@pytest.fixture
def cluster(request, bare_cluster):
    agents, _ = _cluster_options(request)
    return bare_cluster.start(agents=agents)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    item.calc_first_proc = len(harness.REGISTRY.procs)
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        procs = harness.REGISTRY.procs[getattr(item, "calc_first_proc", 0) :]
        if procs:
            report.sections.append(("service logs (last lines)", harness.log_tails(procs)))
