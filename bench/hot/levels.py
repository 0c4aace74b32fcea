#!/usr/bin/env python3
"""Where the makespan of the 64-term sum goes, level by level.

Runs `1+2+...+64` (63 nodes, 6 levels) at 100 ms per operation on one agent of 32 workers, on a
private durable PostgreSQL and RabbitMQ, and prints for each level (nodes with the same remaining
path) when its nodes became ready, were queued, started and finished, in ms after the expression
was created (PostgreSQL's now(): a transaction's start). A level's finish minus its start, less the
100 ms of the operation, is what the cluster adds per level; the first level's start is the cost of
dispatch.

    bench/hot/levels.py build/release/bin [--repeat 3]
"""
import argparse
import os

# run.py sits beside this script, so on the path already; it puts tests/system there too.
import run as hot
from run import harness

TIMELINE = """
WITH e AS (SELECT created_at AS t0, finished_at AS t1 FROM expressions WHERE id = {eid})
SELECT n.tail_ms, count(*), round(extract(epoch FROM e.t1 - e.t0) * 1000),
       round(extract(epoch FROM min(n.ready_at) - e.t0) * 1000),
       round(extract(epoch FROM max(n.ready_at) - e.t0) * 1000),
       coalesce(round(extract(epoch FROM max(n.queued_at) - e.t0) * 1000)::text, '-'),
       round(extract(epoch FROM min(n.started_at) - e.t0) * 1000),
       round(extract(epoch FROM max(n.started_at) - e.t0) * 1000),
       round(extract(epoch FROM min(n.finished_at) - e.t0) * 1000),
       round(extract(epoch FROM max(n.finished_at) - e.t0) * 1000)
  FROM nodes n, e WHERE n.expression_id = {eid}
 GROUP BY n.tail_ms, e.t0, e.t1 ORDER BY n.tail_ms DESC
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bin_dir")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    root = harness.make_temp_root()
    servers = hot.DurableServers(root)
    try:
        servers.start()
        c = hot.Build("A", os.path.abspath(args.bin_dir), servers).cluster("levels", 32)
        try:
            hot.set_delays(c, 100)
            api = hot.user(c)
            text = "+".join(str(i) for i in range(1, 65))
            for _ in range(args.repeat):
                eid = api.post("/expression", json={"expression": text}).json()["expression"]["expression_id"]
                hot.wait_idle(c, 60)
                rows = [line.split("|") for line in c.servers.psql(TIMELINE.format(eid=eid), db=c.db).splitlines()]
                print(f"expression {eid}: makespan {rows[0][2]} ms ({float(rows[0][2]) / 600:.2f} of the 0.6 s bound)")
                print(f"  {'level':>5} {'nodes':>5} {'ready':>11} {'queued':>6} {'started':>11} {'finished':>11}")
                for i, r in enumerate(rows):
                    print(f"  {i + 1:5} {r[1]:>5} {r[3]:>5}..{r[4]:>5} {r[5]:>6} {r[6]:>5}..{r[7]:>5} {r[8]:>5}..{r[9]:>5}")
        finally:
            c.close()
    finally:
        harness.stop_private(servers, root)


if __name__ == "__main__":
    main()
