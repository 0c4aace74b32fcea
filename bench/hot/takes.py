#!/usr/bin/env python3
"""How many takes (calc_take_ready) the dispatcher runs, per expression and at rest (run by hand).

For each bin folder in turn, on a private durable PostgreSQL with pg_stat_statements and a
RabbitMQ (one agent of 8 workers, heartbeat every 200 ms, zero delays), counts the top-level
calc_take_ready calls: in 5 s of rest, over 200 `2+2*2` one at a time (POST, then GET until Ok),
and over five 64-term sums. Counts, not times: they do not depend on the machine's noise.

    bench/hot/takes.py build/release/bin [OTHER_BIN ...]
"""
import os
import sys
import time

os.environ["PG_EXTRA_OPTS"] = "-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all"
import run as hot  # noqa: E402 (beside this script; reads PG_EXTRA_OPTS when it starts PostgreSQL)

harness = hot.harness
REST_S = 5
SMALL = 200
SUMS = 5


def takes(c):
    # This statement names calc_take_ready too: it is left out by its own text.
    return int(c.servers.psql("SELECT coalesce(sum(calls), 0) FROM pg_stat_statements"
                              " WHERE toplevel AND query LIKE '%calc_take_ready(%'"
                              " AND query NOT LIKE '%pg_stat_statements%'", db=c.db).strip())


def measure(label, bin_dir, servers):
    c = hot.Build(label, bin_dir, servers).cluster("takes", 8)
    try:
        c.servers.psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements", db=c.db)
        hot.set_delays(c, 0)
        api = hot.user(c)
        s, url = api.session, api.base_url
        auth = {"Authorization": f"Bearer {api.token}"}

        def run(text):
            eid = s.post(url + "/expression", json={"expression": text}, headers=auth).json()["expression"]["expression_id"]
            while s.get(f"{url}/expression/{eid}", headers=auth).json()["expression"]["status"] != "Ok":
                pass

        run("2+2*2")  # warm
        t0 = takes(c)
        time.sleep(REST_S)  # the rest being measured
        rest = (takes(c) - t0) / REST_S
        t0, w0 = takes(c), time.monotonic()
        for _ in range(SMALL):
            run("2+2*2")
        small, took = (takes(c) - t0) / SMALL, time.monotonic() - w0
        t0 = takes(c)
        for _ in range(SUMS):
            run("+".join(str(i) for i in range(1, 65)))
        sums = (takes(c) - t0) / SUMS
        print(f"{label}: {rest:.1f} takes a second at rest; {small:.2f} per 2+2*2 ({took:.1f} s for"
              f" {SMALL}, so about {rest * took / SMALL:.2f} of them from the rest); {sums:.1f} per"
              f" 64-term sum at zero delay")
    finally:
        c.close()


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    root = harness.make_temp_root()
    servers = hot.DurableServers(root)
    try:
        servers.start()
        for bin_dir in sys.argv[1:]:
            measure(bin_dir, os.path.abspath(bin_dir), servers)
    finally:
        harness.stop_private(servers, root)


if __name__ == "__main__":
    main()
