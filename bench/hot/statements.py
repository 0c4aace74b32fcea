#!/usr/bin/python3
"""Which statements dbagent runs per node, and their time in PostgreSQL (run it by hand).

Starts a private durable PostgreSQL with pg_stat_statements and a RabbitMQ, runs 50 expressions of
7 nodes to warm up, then 300 (run.py's throughput workload, 8 workers at zero delay), and prints
pg_stat_statements for those 300: calls, calls per node, total and per-node execution time
(wall time inside PostgreSQL, so it also holds waits for the CPU on a busy machine). Top-level
rows (toplevel = t) are the round trips from dbagent; the others run inside its functions.

    bench/hot/statements.py build/release/bin
"""
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

os.environ["PG_EXTRA_OPTS"] = "-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all"
import run  # noqa: E402 (beside this script; reads PG_EXTRA_OPTS when it starts PostgreSQL)

harness = run.harness
NODES = 300 * 7

REPORT = ("SELECT calls, round(calls / {n}.0, 3) per_node, round(total_exec_time::numeric, 1) ms,"
          " round((total_exec_time / {n})::numeric, 3) ms_node, toplevel,"
          " left(regexp_replace(query, '\\s+', ' ', 'g'), 110) q"
          " FROM pg_stat_statements ORDER BY toplevel DESC, total_exec_time DESC LIMIT 40")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    root = harness.make_temp_root()
    servers = run.DurableServers(root)
    b = run.Build("A", sys.argv[1], servers)
    try:
        servers.start()
        c = b.cluster("statements", 8)
        try:
            post = run.throughput_poster(c)

            def psql(sql):
                return subprocess.run([harness.SERVERS_CLI, "psql", servers.pg_dir, str(servers.pg_port), "-d", c.db,
                                       "-c", sql], check=True, capture_output=True, text=True).stdout

            with ThreadPoolExecutor(8) as pool:
                list(pool.map(post, range(50)))
            run.wait_idle(c)
            psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            psql("SELECT pg_stat_statements_reset()")
            t0 = time.perf_counter()
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(post, range(300)))
            run.wait_idle(c)
            print(f"{NODES} nodes in {time.perf_counter() - t0:.2f}s (wait_idle's own look is in the list)")
            print(psql(REPORT.format(n=NODES)))
        finally:
            c.close()
    finally:
        harness.stop_private(servers, root)


if __name__ == "__main__":
    main()
