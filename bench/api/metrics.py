#!/usr/bin/python3
"""What GET /metrics costs with a long history (not a test: run it by hand).

Starts a private PostgreSQL and RabbitMQ, dbagent and two API instances (METRICS_CACHE_MS=0 and
the default 5000) with the system-test harness, loads N finished expressions, and measures:
  1. one GetStats call (the pass over the expressions table behind the gauges), mean of 20;
  2. a scrape storm, 8 clients × 25 scrapes, against each instance: wall time, scrapes/s, and the
     GetStats calls it cost (dbagent's own count).

    bench/api/metrics.py [--bin build/release/bin] [--expressions 1000000]
"""

import argparse
import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "system"))


def storm(dba, url, clients=8, each=25):
    import requests

    def one():
        s = requests.Session()
        for _ in range(each):
            assert s.get(url + "/metrics", timeout=60).status_code == 200

    threads = [threading.Thread(target=one) for _ in range(clients)]
    before = dba.GetStats().stats_calls
    t = time.monotonic()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.monotonic() - t
    return wall, dba.GetStats().stats_calls - before - 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "release", "bin"))
    ap.add_argument("--expressions", type=int, default=1000000)
    args = ap.parse_args()
    os.environ["CALC_BIN_DIR"] = os.path.abspath(args.bin)
    import harness  # after CALC_BIN_DIR is set
    from dba_client import DbaClient

    root = harness.make_temp_root()
    servers = harness.Servers(root)
    cluster = dba = None
    try:
        servers.start()
        cluster = harness.Cluster(servers, "bench-metrics", env={"LOG_LEVEL": "warn"})
        cluster.setup_resources()
        cluster.start_dbagent()
        every = cluster.start_api(METRICS_CACHE_MS="0")
        cached = cluster.start_api()
        dba = DbaClient(cluster.env["DBAGENT_ADDR"], cluster.env["DBAGENT_TOKEN"])
        cluster.servers.psql(
            "INSERT INTO users (id, login, password_hash) VALUES (900000, 'bulk', 'x');"
            " INSERT INTO expressions (user_id, req_uid, text, status, node_count, finished_at)"
            f" SELECT 900000, 'b' || g, '1+1', 'ok', 1, now() FROM generate_series(1, {args.expressions}) g;"
            " ANALYZE expressions",
            db=cluster.db,
        )
        cluster.servers.psql("VACUUM expressions", db=cluster.db)
        for _ in range(3):
            dba.GetStats()
        t = time.monotonic()
        for _ in range(20):
            dba.GetStats()
        print(f"GetStats with {args.expressions} expressions: {(time.monotonic() - t) / 20 * 1000:.1f} ms per call")
        for name, api in (("METRICS_CACHE_MS=0", every), ("METRICS_CACHE_MS=5000", cached)):
            wall, calls = storm(dba, api.url)
            print(f"200 scrapes (8 clients), {name}: {wall:.2f} s, {200 / wall:.0f} scrapes/s, {calls} GetStats")
    finally:
        if dba:
            dba.close()
        harness.stop_private(servers, root, cluster)


if __name__ == "__main__":
    main()
