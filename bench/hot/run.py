#!/usr/bin/python3
"""The hot path of two builds, side by side in one run (run it by hand; not a test).

One private PostgreSQL (durable: fsync and full-page writes on) and one RabbitMQ serve both builds;
each build gets a fresh database and vhost per round, and the builds take turns (A, B, A, B, ...),
so a slow minute of the machine falls on both. Only one build's processes run at a time.

For each build it prints
  - per level of a chain of 10 dependent operations at zero delay: WAL flushes
    (pg_stat_wal.wal_sync), write transactions (transaction ids assigned), broker messages
    (RabbitMQ's global counter of messages received), and the chain's time;
  - 2+2*2 at zero delay, POST to readable result, p50 and p99: read by polling GET (what every
    build offers); on a build with GET /expression/{id}?wait, by one such request; and, on a
    build with the event stream, as its `finished` event is pushed on a GET /events opened
    beforehand (how a client that wants results at once reads them);
  - 300 expressions of 7 nodes at zero delay on 8 workers: nodes per second, and WAL flushes, write
    transactions and broker messages per node;
  - the makespan of a 64-term sum at 100 ms per operation on 32 workers, over its critical path
    (6 levels: 0.6 s): the median of five, after one that warms the cluster up.
The counters are the same on any machine; the times are not, so read them as the ratio between the
two builds of the same run. The CPU steal of the run is printed from /proc/stat.

    bench/hot/run.py --a build/release/bin --b OLD/build/release/bin [--rounds 2] [--samples 200]
"""

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "system"))

import harness  # noqa: E402
from workload import chain  # noqa: E402

ZERO = {"+": 0, "-": 0, "*": 0, "/": 0}


class DurableServers(harness.Servers):
    """The harness's servers, but PostgreSQL keeps its durability: the figures are for a cluster
    that keeps what it accepted."""

    def start_postgres(self):
        harness._run_servers(["start-pg", self.pg_dir, str(self.pg_port)], self.log_path,
                             env=dict(os.environ, PG_UNSAFE_NO_FSYNC="0"))


def steal_and_total():
    with open("/proc/stat") as f:
        cpu = [int(x) for x in f.readline().split()[1:]]
    return cpu[7] if len(cpu) > 7 else 0, sum(cpu)


class Counters:
    """WAL flushes, write transactions and broker messages, whole-server counters read before and
    after a phase (only one build runs at a time)."""

    def __init__(self, servers):
        self.servers = servers

    def read(self):
        time.sleep(1.2)  # PostgreSQL publishes its statistics at most once a second
        wal = int(self.servers.psql("SELECT wal_sync FROM pg_stat_wal").strip())
        xid = int(self.servers.psql("SELECT txid_current()").strip())
        out = self.servers.rabbitmqctl("eval", "maps:get(messages_received_total, maps:get([{protocol, amqp091}], "
                                               "rabbit_global_counters:overview())).")
        return wal, xid, int(out.strip())

    def delta(self, before):
        after = self.read()
        # txid_current() itself takes one transaction id per read.
        return after[0] - before[0], after[1] - before[1] - 1, after[2] - before[2]


class Build:
    def __init__(self, label, bin_dir, servers):
        self.label, self.bin_dir, self.servers = label, os.path.abspath(bin_dir), servers
        self.figures = {}

    def add(self, key, value):
        self.figures.setdefault(key, []).append(value)

    def cluster(self, name, workers):
        harness.BIN_DIR = self.bin_dir
        c = harness.Cluster(self.servers, f"{self.label}-{name}",
                            env={"MAX_UNFINISHED": "1000000", "AGENT_MAX_PROCESSES": str(workers),
                                 "API_MAX_CONNECTIONS_PER_ADDRESS": "1024"})
        c.setup_resources()
        c.start(agents=1)
        return c


def set_delays(cluster, ms):
    r = cluster.admin_client().post("/duration", json={op: ms for op in ZERO})
    assert r.status_code == 200, r.text


def user(cluster):
    api = cluster.api_client()
    name = f"bench{os.getpid()}{time.monotonic_ns() % 100000}"
    api.register(name, "password1")
    api.login()
    return api


THROUGHPUT_TEXT = "1+2+3+4+5+6+7+8"  # 7 nodes


def throughput_poster(cluster):
    """Sets zero delays and returns post(_), which sends THROUGHPUT_TEXT as a new user (for a pool's map)."""
    set_delays(cluster, 0)
    api = user(cluster)
    auth = {"Authorization": f"Bearer {api.token}"}

    def post(_):
        r = api.session.post(api.base_url + "/expression", json={"expression": THROUGHPUT_TEXT}, headers=auth)
        assert r.status_code == 200, r.text

    return post


class EventStream:
    """GET /events, read frame by frame; None from open() on a build without it."""

    @classmethod
    def open(cls, base_url, token):
        u = urllib.parse.urlsplit(base_url)
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        conn.request("GET", "/events", headers={"Authorization": f"Bearer {token}"})
        resp = conn.getresponse()
        if resp.status != 200:
            conn.close()
            return None
        s = cls()
        s.conn, s.resp = conn, resp
        while s.next_event()[0] != "online":
            pass
        return s

    def next_event(self):
        """(kind, data) of the next frame with an event line (keep-alives are skipped)."""
        kind, data = None, None
        while True:
            line = self.resp.readline()
            assert line, "the event stream ended"
            line = line.decode().rstrip("\n")
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
            elif not line and kind:
                return kind, data

    def until_finished(self, eid):
        while True:
            kind, data = self.next_event()
            if data and data.get("expression_id") == eid:
                assert kind != "failed" and kind != "cancelled", data
                if kind == "finished":
                    return

    def close(self):
        self.conn.close()


def percentiles(b, label, times):
    times.sort()
    b.add(f"{label} p50 ms", times[len(times) // 2])
    b.add(f"{label} p99 ms", times[min(len(times) - 1, int(0.99 * len(times)))])


def wait_idle(cluster, timeout=600):
    """Until no expression is unfinished, asked every 10 ms on one psql session: a new psql (and
    the shell around it) for each look would cost the cluster under test about a tenth of the
    machine's CPU while it runs."""
    look = subprocess.Popen([harness.SERVERS_CLI, "psql", cluster.servers.pg_dir, str(cluster.servers.pg_port),
                             "-d", cluster.db, "-At"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            bufsize=1)
    try:
        def idle():
            look.stdin.write("SELECT count(*) FROM expressions WHERE status IN ('new','in_progress');\n")
            look.stdin.flush()
            line = look.stdout.readline()
            assert line, "psql ended"
            return int(line) == 0

        harness.wait_for(idle, timeout, "every expression to finish", interval=0.01)
    finally:
        look.stdin.close()
        look.wait(timeout=30)


def run_zero_delay(b, args):
    c = b.cluster("zero", 8)
    try:
        set_delays(c, 0)
        api = user(c)
        s, url = api.session, api.base_url
        auth = {"Authorization": f"Bearer {api.token}"}

        def post(text):
            r = s.post(url + "/expression", json={"expression": text}, headers=auth)
            assert r.status_code == 200, r.text
            return r.json()["expression"]["expression_id"]

        def until_ok(eid):
            while s.get(f"{url}/expression/{eid}", headers=auth).json()["expression"]["status"] != "Ok":
                pass

        until_ok(post("2+2*2"))  # warm

        # A chain, one at a time.
        text, _ = chain(10)
        counters = Counters(b.servers)
        before = counters.read()
        t0 = time.perf_counter()
        chains = 20
        for _ in range(chains):
            until_ok(post(text))
        chain_ms = (time.perf_counter() - t0) * 1000 / chains
        wal, xacts, msgs = counters.delta(before)
        levels = chains * 10
        b.add("chain: WAL flushes per level", wal / levels)
        b.add("chain: write transactions per level", xacts / levels)
        b.add("chain: broker messages per level", msgs / levels)
        b.add("chain of 10: ms", chain_ms)

        # 2+2*2, POST to readable: polled, then pushed (only this client's events are on the stream).
        times = []
        for _ in range(args.samples):
            t0 = time.perf_counter()
            until_ok(post("2+2*2"))
            times.append((time.perf_counter() - t0) * 1000)
        percentiles(b, "2+2*2 polled", times)
        if "calc_waiters " in s.get(url + "/metrics").text:
            times = []
            for _ in range(args.samples):
                t0 = time.perf_counter()
                r = s.get(f"{url}/expression/{post('2+2*2')}?wait=10000", headers=auth)
                assert r.json()["expression"]["status"] == "Ok", r.text
                times.append((time.perf_counter() - t0) * 1000)
            percentiles(b, "2+2*2 waited", times)
        stream = EventStream.open(url, api.token)
        if stream:
            try:
                times = []
                for _ in range(args.samples):
                    t0 = time.perf_counter()
                    stream.until_finished(post("2+2*2"))
                    times.append((time.perf_counter() - t0) * 1000)
                percentiles(b, "2+2*2 pushed", times)
            finally:
                stream.close()

        # Throughput: 300 expressions of 7 nodes.
        before = counters.read()
        t0 = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda _: post(THROUGHPUT_TEXT), range(300)))
        wait_idle(c)
        took = time.perf_counter() - t0
        wal, xacts, msgs = counters.delta(before)
        nodes = 300 * 7
        b.add("throughput: nodes/s", nodes / took)
        b.add("throughput: WAL flushes per node", wal / nodes)
        b.add("throughput: write transactions per node", xacts / nodes)
        b.add("throughput: broker messages per node", msgs / nodes)
    finally:
        c.close()


def run_makespan(b):
    c = b.cluster("makespan", 32)
    try:
        set_delays(c, 100)
        api = user(c)
        text = "+".join(str(i) for i in range(1, 65))
        spans = []
        # The first run of a new cluster is 30-100 ms slower than the next ones, whichever the build
        # (dbagent's sessions plan their statements, connections warm up): it warms up, as the
        # latency's first 2+2*2 does, and is left out; the median of the next five counts.
        for i in range(6):
            eid = api.post("/expression", json={"expression": text}).json()["expression"]["expression_id"]
            wait_idle(c, 60)
            ms = float(c.servers.psql(f"SELECT extract(epoch FROM finished_at - created_at) * 1000 FROM expressions"
                                      f" WHERE id = {eid}", db=c.db).strip())
            if i:
                spans.append(ms)
        b.add("64-term sum: makespan / 0.6 s bound", statistics.median(spans) / 600.0)
    finally:
        c.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", required=True, help="bin folder of build A (this one)")
    ap.add_argument("--b", required=True, help="bin folder of build B (the one to compare with)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--samples", type=int, default=200)
    args = ap.parse_args()

    root = harness.make_temp_root()
    servers = DurableServers(root)
    steal0, total0 = steal_and_total()
    builds = [Build("A", args.a, servers), Build("B", args.b, servers)]
    try:
        servers.start()
        assert servers.psql("SHOW fsync").strip() == "on"
        for r in range(args.rounds):
            for b in builds if r % 2 == 0 else reversed(builds):
                print(f"round {r + 1}: build {b.label} ({b.bin_dir})", file=sys.stderr)
                run_zero_delay(b, args)
                run_makespan(b)
    finally:
        harness.stop_private(servers, root)
    steal1, total1 = steal_and_total()
    steal = 100.0 * (steal1 - steal0) / max(1, total1 - total0)

    a, b = builds
    print(f"A = {a.bin_dir}\nB = {b.bin_dir}\nrounds {args.rounds}, medians; CPU steal of the run {steal:.2f}%\n")
    print(f"{'':44} {'A':>10} {'B':>10} {'A/B':>7}")
    for key in a.figures:
        va, vb = statistics.median(a.figures[key]), statistics.median(b.figures.get(key, [float('nan')]))
        ratio = va / vb if vb else float("nan")
        print(f"{key:44} {va:10.2f} {vb:10.2f} {ratio:7.2f}")
    # Each build read the fastest way it offers (B has no event stream and no ?wait: it is polled).
    for q in ("p50", "p99"):
        keys = [f"2+2*2 {how} {q} ms" for how in ("polled", "waited", "pushed")]
        best = [min(statistics.median(x.figures[k]) for k in keys if k in x.figures) for x in builds]
        print(f"{'2+2*2 ' + q + ' ms, fastest read of each':44} {best[0]:10.2f} {best[1]:10.2f} "
              f"{best[0] / best[1]:7.2f}")


if __name__ == "__main__":
    main()
