#!/usr/bin/env python3
"""The CPU each process spends per node, for two builds in turns (run it by hand).

Runs run.py's throughput workload (300 expressions of 7 nodes, 8 workers, zero delay, after 50 to
warm up) on a private durable PostgreSQL and RabbitMQ, A then B, `--rounds` times, and prints for
each round the nodes per second and the CPU time (user + system, from /proc/<pid>/stat before and
after) of every process of the machine per node, grouped by name, this script's own (the client)
apart. Throughput at zero delay is bound by CPU on a small machine, so the sum per node says how
far a build can go whatever the machine's noise: 2 cores give at most 2 / (ms per node) nodes per ms.

    bench/hot/cpu.py --a build/release/bin --b /tmp/old/build/release/bin [--rounds 2]
"""
import argparse
import os
import resource
import time
from concurrent.futures import ThreadPoolExecutor

# run.py sits beside this script, so on the path already; it puts tests/system there too.
import run as hot
from run import harness

TICK = os.sysconf("SC_CLK_TCK")
EXPRESSIONS, NODES_EACH = 300, 7


def cpu_by_pid():
    """{pid: (name, seconds of CPU)} of every process but this one."""
    out, me = {}, str(os.getpid())
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or pid == me:
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                st = f.read()
        except OSError:
            continue  # gone meanwhile
        name = st[st.index("(") + 1:st.rindex(")")]
        fields = st[st.rindex(")") + 2:].split()
        out[pid] = (name, (int(fields[11]) + int(fields[12])) / TICK)
    return out


def own_cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def measure(build):
    c = build.cluster("cpu", 8)
    try:
        post = hot.throughput_poster(c)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(post, range(50)))
        hot.wait_idle(c)
        before, mine, t0 = cpu_by_pid(), own_cpu(), time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(post, range(EXPRESSIONS)))
        hot.wait_idle(c)
        took = time.perf_counter() - t0
        after, mine = cpu_by_pid(), own_cpu() - mine
    finally:
        c.close()
    nodes = EXPRESSIONS * NODES_EACH
    by_name = {}
    for pid, (name, t) in after.items():
        by_name[name] = by_name.get(name, 0.0) + t - before.get(pid, (name, 0.0))[1]
    by_name["the client (this script)"] = mine
    return nodes / took, {k: v * 1000 / nodes for k, v in by_name.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", required=True, help="bin folder of build A")
    ap.add_argument("--b", required=True, help="bin folder of build B")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    servers = hot.DurableServers(harness.make_temp_root())
    try:
        servers.start()
        steal0, total0 = hot.steal_and_total()
        for r in range(args.rounds):
            for label, bin_dir in (("A", args.a), ("B", args.b)):
                rate, per_node = measure(hot.Build(label, bin_dir, servers))
                shown = {k: v for k, v in per_node.items() if v >= 0.005}
                print(f"round {r + 1}, {label} ({bin_dir}): {rate:.0f} nodes/s, "
                      f"{sum(shown.values()):.3f} ms of CPU per node", flush=True)
                for name, ms in sorted(shown.items(), key=lambda kv: -kv[1]):
                    print(f"    {name:32s} {ms:.3f}")
        steal1, total1 = hot.steal_and_total()
        print(f"CPU steal of the run {100.0 * (steal1 - steal0) / max(1, total1 - total0):.2f}%")
    finally:
        servers.stop()


if __name__ == "__main__":
    main()
