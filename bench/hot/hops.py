#!/usr/bin/env python3
"""Where the latency of `2+2*2` goes, hop by hop.

Runs `2+2*2` at zero delay one at a time on a private durable PostgreSQL and RabbitMQ (one agent,
8 workers), as run.py's latency figure does, and prints the median and p90 of each hop over the
samples, in ms. The client reads the result by polling (POST, then GET until Ok, as run.py), or with
--pushed from its `finished` event on a GET /events it keeps open (a build that has the stream):

    POST..created       the client's POST to the create's transaction start: HTTP, the API, the
                        RPC to dbagent
    created..queued     the create's transaction start to the dispatcher's take (its start)
    queued..claimed     publish, broker, delivery and the agent's claim (its transaction start;
                        a node of no delay is claimed by its completion on a build that does so)
    claimed..completed  the claim's commit and reply, the work, the completion call (its start)
    continued..done     the root, continued inside that completion, to its own completion
    done..read          the last completion's transaction start to the client reading Ok (its
                        commit, then the GETs, or the event's way to the client)
    POST                the client's POST round trip
    total               POST to reading Ok: run.py's figure

PostgreSQL's times are transaction starts (now()); the client's are time.time(), the same clock on
the same machine. The first 10 samples warm up and are left out.

    bench/hot/hops.py build/release/bin [--samples 100] [--pushed]
"""
import argparse
import os
import statistics
import time

# run.py sits beside this script, so on the path already; it puts tests/system there too.
import run as hot
from run import harness

WARM = 10

# One row per expression: its creation (ms since the epoch), then its leaf's queued, claimed and
# completed and its root's completion, in ms after the creation.
HOPS = """
SELECT e.id, extract(epoch FROM e.created_at) * 1000,
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
    ap.add_argument("--pushed", action="store_true", help="read the result from GET /events")
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
            stream = hot.EventStream.open(url, api.token) if args.pushed else None
            assert stream or not args.pushed, "this build has no GET /events"
            client = {}
            for _ in range(WARM + args.samples):
                t0 = time.time()
                r = s.post(url + "/expression", json={"expression": "2+2*2"}, headers=auth)
                t1 = time.time()
                eid = r.json()["expression"]["expression_id"]
                if stream:
                    stream.until_finished(eid)
                else:
                    while s.get(f"{url}/expression/{eid}", headers=auth).json()["expression"]["status"] != "Ok":
                        pass
                client[eid] = (t0 * 1000, t1 * 1000, time.time() * 1000)
            if stream:
                stream.close()
            ids = sorted(client)[WARM:]
            rows = c.servers.psql(HOPS.format(ids=",".join(map(str, ids))), db=c.db).splitlines()
            hops = {k: [] for k in ("POST..created", "created..queued", "queued..claimed", "claimed..completed",
                                    "continued..done", "done..read", "POST", "total")}
            for line in rows:
                eid, created, queued, claimed, completed, done = line.split("|")
                created, queued, claimed, completed, done = map(float, (created, queued, claimed, completed, done))
                sent, answered, read = client[int(eid)]
                hops["POST..created"].append(created - sent)
                hops["created..queued"].append(queued)
                hops["queued..claimed"].append(claimed - queued)
                hops["claimed..completed"].append(completed - claimed)
                hops["continued..done"].append(done - completed)
                hops["done..read"].append(read - created - done)
                hops["POST"].append(answered - sent)
                hops["total"].append(read - sent)
        finally:
            c.close()
    finally:
        harness.stop_private(servers, root)
    steal1, total1 = hot.steal_and_total()
    print(f"{len(ids)} samples of 2+2*2 at zero delay, read {'pushed' if args.pushed else 'polled'}; CPU steal {100.0 * (steal1 - steal0) / max(1, total1 - total0):.2f}%")
    print(f"  {'hop':<20} {'p50 ms':>7} {'p90 ms':>7}")
    for k, xs in hops.items():
        print(f"  {k:<20} {statistics.median(xs):7.2f} {pct(xs, 0.9):7.2f}")


if __name__ == "__main__":
    main()
