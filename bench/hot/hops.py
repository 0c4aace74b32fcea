#!/usr/bin/env python3
"""Where the latency of `2+2*2` goes, hop by hop.

Runs `2+2*2` at zero delay one at a time on a private durable PostgreSQL and RabbitMQ (one agent,
8 workers), as run.py's latency figure does (POST, then GET until Ok), and prints the median and
p90 of each hop over the samples, in ms:

    created..queued     the create's transaction start to the dispatcher's take (its start)
    queued..claimed     publish, broker, delivery and the agent's claim (its transaction start)
    claimed..completed  the claim's commit and reply, the work, the completion call (its start)
    continued..done     the root, continued inside that completion, to its own completion
    done..read          the last completion's commit, then the client's GETs until it reads Ok
    POST                the client's POST round trip
    total               POST to reading Ok: run.py's figure

PostgreSQL's times are transaction starts (now()) on one clock; the client's are its own, tied to
PostgreSQL's by the POST's end. The first 10 samples warm up and are left out.

    bench/hot/hops.py build/release/bin [--samples 100]
"""
import argparse
import os
import statistics
import time

# run.py sits beside this script, so on the path already; it puts tests/system there too.
import run as hot
from run import harness

WARM = 10

# One row per expression: its leaf's queued, claimed and completed, its root's completion and the
# expression's end, in ms after the expression's creation.
HOPS = """
SELECT e.id,
       extract(epoch FROM leaf.queued_at - e.created_at) * 1000,
       extract(epoch FROM leaf.started_at - e.created_at) * 1000,
       extract(epoch FROM leaf.finished_at - e.created_at) * 1000,
       extract(epoch FROM root.finished_at - e.created_at) * 1000
  FROM expressions e
  JOIN nodes leaf ON leaf.expression_id = e.id AND leaf.parent_id IS NOT NULL
  JOIN nodes root ON root.expression_id = e.id AND root.parent_id IS NULL
 WHERE e.id IN ({ids}) ORDER BY e.id
"""


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bin_dir")
    ap.add_argument("--samples", type=int, default=100)
    args = ap.parse_args()
    steal0, total0 = hot.steal_and_total()
    root = harness.make_temp_root()
    servers = hot.DurableServers(root)
    try:
        servers.start()
        c = hot.Build("A", os.path.abspath(args.bin_dir), servers).cluster("hops", 8)
        try:
            hot.set_delays(c, 0)
            api = hot.user(c)
            s, url = api.session, api.base_url
            auth = {"Authorization": f"Bearer {api.token}"}
            client = {}
            for _ in range(WARM + args.samples):
                t0 = time.perf_counter()
                r = s.post(url + "/expression", json={"expression": "2+2*2"}, headers=auth)
                t1 = time.perf_counter()
                eid = r.json()["expression"]["expression_id"]
                while s.get(f"{url}/expression/{eid}", headers=auth).json()["expression"]["status"] != "Ok":
                    pass
                client[eid] = ((t1 - t0) * 1000, (time.perf_counter() - t0) * 1000)
            ids = sorted(client)[WARM:]
            rows = c.servers.psql(HOPS.format(ids=",".join(map(str, ids))), db=c.db).splitlines()
            hops = {k: [] for k in ("created..queued", "queued..claimed", "claimed..completed",
                                    "continued..done", "done..read", "POST", "total")}
            for line in rows:
                eid, queued, claimed, completed, done = line.split("|")
                queued, claimed, completed, done = map(float, (queued, claimed, completed, done))
                post, total = client[int(eid)]
                hops["created..queued"].append(queued)
                hops["queued..claimed"].append(claimed - queued)
                hops["claimed..completed"].append(completed - claimed)
                hops["continued..done"].append(done - completed)
                # The create's transaction starts a little after the POST's; counting from the
                # POST's start puts that difference here as well.
                hops["done..read"].append(total - done)
                hops["POST"].append(post)
                hops["total"].append(total)
        finally:
            c.close()
    finally:
        harness.stop_private(servers, root)
    steal1, total1 = hot.steal_and_total()
    print(f"{len(ids)} samples of 2+2*2 at zero delay; CPU steal {100.0 * (steal1 - steal0) / max(1, total1 - total0):.2f}%")
    print(f"  {'hop':<20} {'p50 ms':>7} {'p90 ms':>7}")
    for k, xs in hops.items():
        print(f"  {k:<20} {statistics.median(xs):7.2f} {pct(xs, 0.9):7.2f}")


if __name__ == "__main__":
    main()
