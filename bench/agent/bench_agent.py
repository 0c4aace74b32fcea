#!/usr/bin/env python3
"""calc-agent benchmarks (run by hand, never by ctest; see README.md).

    bench_agent.py throughput [--workers 8] [--expressions 50] [--terms 200]
        Starts a private PostgreSQL and RabbitMQ (as the system tests do), dbagent, one API and one
        agent, sets every operator delay to 0, submits the expressions (sums of `terms` numbers, so
        terms-1 nodes each, half of them independent at first) and measures nodes per second from the
        nodes' own timestamps: count / (last finished_at - first started_at).
    bench_agent.py rss [--workers 32] [--seconds 5]
        Starts an agent with that many workers against dbagent and RabbitMQ, lets it idle (connected,
        heartbeating), and reads VmRSS and VmHWM from /proc/PID/status.

CALC_BIN_DIR picks the binaries (default build/release/bin); run as root, like the system tests.
"""

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "system"))
import harness  # noqa: E402


def sql(cluster, query):
    return [line.split("|") for line in cluster.servers.psql(query, db=cluster.db).splitlines() if line]


def proc_status(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            fields[k] = v.strip()
    return fields


def cpu_report(before, after, seconds):
    used = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    top = sorted(((v, k) for k, v in used.items() if v > 0.05), reverse=True)[:8]
    return ", ".join(f"{k} {v:.1f}s ({100 * v / seconds:.0f}%)" for v, k in top)


def throughput(args, servers):
    env = {"AGENT_MAX_PROCESSES": str(args.workers), "HEARTBEAT_INTERVAL_MS": "1000",
           "MAX_UNFINISHED": "100000", "HEARTBEAT_TIMEOUT_MS": "10000"}
    cluster = harness.Cluster(servers, "bench-throughput", env=env)
    try:
        cluster.setup_resources()
        cluster.start(agents=1)
        admin = cluster.admin_client()
        admin.post("/duration", json={"+": 0, "-": 0, "*": 0, "/": 0}, check=True)
        users = []
        for u in range(args.users):
            api = cluster.api_client()
            api.register(f"bench{u}", "password1")
            api.login()
            users.append(api)
        text = "+".join(str(i % 10 + 1) for i in range(args.terms))
        expected = sum(i % 10 + 1 for i in range(args.terms))
        cpu0 = harness.cpu_by_program()
        t0 = time.monotonic()
        eids = [users[i % len(users)].post("/expression", json={"expression": text}, check=True)
                .json()["expression"]["expression_id"] for i in range(args.expressions)]
        t_submit = time.monotonic() - t0
        n_nodes = args.expressions * (args.terms - 1)

        def finished():
            return int(sql(cluster, "SELECT count(*) FROM expressions WHERE status IN ('ok', 'error')")[0][0]) == len(eids)

        harness.wait_for(finished, 600, "every expression to finish", interval=0.2)
        wall = time.monotonic() - t0
        cpu = cpu_report(cpu0, harness.cpu_by_program(), wall)
        bad = sql(cluster, f"SELECT count(*) FROM expressions WHERE status <> 'ok' OR result <> {expected}")[0][0]
        [(count, first, last, retries)] = sql(
            cluster,
            "SELECT count(*), extract(epoch FROM min(started_at)), extract(epoch FROM max(finished_at)),"
            " count(*) FILTER (WHERE attempts > 1) FROM nodes WHERE state = 'done'")
        span = float(last) - float(first)
        # Where the time goes: claim-to-completion inside the agent vs ready-to-claim (dispatch).
        [(run_ms, wait_ms)] = sql(
            cluster,
            "SELECT avg(extract(epoch FROM finished_at - started_at)) * 1000,"
            " avg(extract(epoch FROM started_at - ready_at)) * 1000 FROM nodes WHERE state = 'done'")
        print(f"workers={args.workers} users={args.users} expressions={args.expressions} nodes={count} (expected {n_nodes})"
              f" wrong_results={bad} reclaimed={retries}")
        print(f"submit {t_submit:.2f}s; nodes' span {span:.2f}s; wall {wall:.2f}s")
        print(f"throughput {int(count) / span:.0f} nodes/s (from the nodes' timestamps)")
        print(f"mean claim->completion {float(run_ms):.2f} ms; mean ready->claim {float(wait_ms):.2f} ms")
        print(f"CPU during the run (2 cores = 200%): {cpu}")
        ok = int(bad) == 0 and int(count) == n_nodes
    finally:
        cluster.close()
    for p in cluster.procs:
        if p.name.startswith("agent"):
            print("agent's own profile:", [line for line in p.log().splitlines() if "stopped:" in line][-1].split(": ", 2)[-1])
    return 0 if ok else 1


def rss(args, servers):
    cluster = harness.Cluster(servers, "bench-rss", env={"AGENT_MAX_PROCESSES": str(args.workers)})
    try:
        cluster.setup_resources()
        cluster.start_dbagent()
        agent = cluster.start_agent()
        harness.wait_for(lambda: "consuming calc.work" in agent.log(), 30, "the agent to consume")
        time.sleep(args.seconds)  # idle on purpose: this measures an idle agent
        st = proc_status(agent.pid)
        print(f"workers={args.workers} threads={st['Threads']} VmRSS={st['VmRSS']} VmHWM={st['VmHWM']}"
              f" VmSize={st['VmSize']}")
        return 0 if int(st["VmRSS"].split()[0]) < 16 * 1024 else 1
    finally:
        cluster.close()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--workers", type=int, default=8)
    t.add_argument("--expressions", type=int, default=50)
    t.add_argument("--terms", type=int, default=200)
    t.add_argument("--users", type=int, default=1, help="expressions are spread over this many users")
    r = sub.add_parser("rss")
    r.add_argument("--workers", type=int, default=32)
    r.add_argument("--seconds", type=float, default=5)
    args = p.parse_args()
    root = harness.make_temp_root()
    servers = harness.Servers(root)
    try:
        servers.start()
        return throughput(args, servers) if args.what == "throughput" else rss(args, servers)
    finally:
        servers.stop()
        harness.REGISTRY.kill_everything()
        harness.remove_tree(root)  # the servers' data: some 200 MB a run


if __name__ == "__main__":
    sys.exit(main())
