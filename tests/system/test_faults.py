"""Kill -9 of each server during a run: the API, dbagent, RabbitMQ, PostgreSQL, one at a time. Every
expression finishes with the right result, no node is applied twice, and the run takes at most
1.5x the same run without a fault, measured here, on one cluster for the whole module.

The workload: 600 expressions of 3 nodes at 200 ms per operation on 8 workers, about 45 s of work,
so that the time RabbitMQ takes to come back (about 12 s here, 16 s on a loaded machine, where a
400-expression run measured 1.52x) fits in the allowance. The victim is killed once a third of the
nodes are done and started again at once.
"""

import pytest

import harness
from api_helpers import module_cluster, new_user
from workload import check_applied_once, run_workload

N = 600


@pytest.fixture(scope="module")
def faults(calc_session):
    c = module_cluster(calc_session, "faults", agents=2,
                       env={"AGENT_MAX_PROCESSES": "4", "AMQP_RECONNECT_MAX_MS": "1000", "MAX_UNFINISHED": "100000"})
    try:
        r = c.admin_client().post("/duration", json={op: 200 for op in "+-*/"})
        assert r.status_code == 200, r.text
        api = new_user(c, "faults")
        run_workload(c, api, 8, 0)  # warm-up: connections, caches, the first claims
        clean_s, expected = run_workload(c, api, N, 1000)
        check_applied_once(c, expected)
        print(f"\n{N} expressions ({3 * N} nodes) without a fault: {clean_s:.1f} s")
        c.clean_s = clean_s
        yield c
    finally:
        c.close()


def named(cluster, prefix):
    return next(p for p in reversed(cluster.procs) if p.name.startswith(prefix) and p.alive())


def restart_killed(cluster, prefix):
    def fault():
        cluster.restart(named(cluster, prefix), kill=True)

    return fault


def kill_rabbitmq(cluster):
    def fault():
        cluster.servers.kill_rabbitmq()
        cluster.servers.start_rabbitmq()

    return fault


def kill_postgres(cluster):
    def fault():
        cluster.servers.kill_postgres()
        cluster.servers.start_postgres()

    return fault


FAULTS = {
    "api": lambda c: restart_killed(c, "api"),
    "dbagent": lambda c: restart_killed(c, "dbagent"),
    "rabbitmq": kill_rabbitmq,
    "postgres": kill_postgres,
}


@pytest.mark.parametrize("victim", list(FAULTS))
def test_kill_9_mid_run_loses_nothing_applies_once_and_costs_at_most_half_again(faults, victim):
    api = new_user(faults, f"f{victim}")
    tag = 2000 + 1000 * list(FAULTS).index(victim)
    fault_s, expected = run_workload(faults, api, N, tag, fault=FAULTS[victim](faults), timeout=180)
    print(f"\n{victim} killed mid-run: {fault_s:.1f} s against {faults.clean_s:.1f} s"
          f" (x{fault_s / faults.clean_s:.2f})")
    check_applied_once(faults, expected)
    assert fault_s <= 1.5 * faults.clean_s, f"{fault_s:.1f} s with the fault > 1.5 x {faults.clean_s:.1f} s"
    harness.wait_for(lambda: faults.api_client().get("/readyz").status_code == 200, 60, "the cluster to be ready")
