#!/usr/bin/python3
"""GET /events benchmark on this machine, everything on loopback (not a test: run it by hand).

Starts a private PostgreSQL and RabbitMQ and the whole cluster (dbagent, one API, agents, zero
operator delays) with the system-test harness, then:
  1. makes --streams users and opens one stream for each against the one API instance (the
     per-address connection cap raised for it), and reports the API's RSS and thread count before
     and after: the memory per open stream;
  2. while they all stay open, submits --expressions expressions of --terms terms (each a chain
     of nodes) for --busy of those users, --rate per second, reads every stream with one selector,
     and reports the time from each node's completion (the event's at_ms: the start of the
     transaction that stored the node's value) to its event reaching the client, p50 and p99;
     every stream must get exactly its own user's events;
  3. prints the CPU steal of the run, from /proc/stat before and after.

    bench/stream/run.py [--bin build/release/bin] [--streams 1000] [--expressions 300]
                        [--terms 5] [--busy 100] [--rate 30]
"""

import argparse
import json
import os
import selectors
import socket
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "system"))


def proc_status(pid):
    """VmRSS (kB) and Threads of a process."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "Threads"):
                out[k] = int(v.split()[0])
    return out


class Reader:
    """One open stream, read without blocking: frames parsed as they come (chunked body)."""

    def __init__(self, sock, user):
        self.sock, self.user = sock, user
        self.raw = b""
        self.body = b""
        self.events = []  # (recv time ms, data)
        self.online = False

    def feed(self, now_ms):
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError(f"user {self.user}'s stream closed")
        self.raw += data
        self.parse(now_ms)

    def parse(self, now_ms):
        while b"\r\n" in self.raw:  # chunks
            size_line, rest = self.raw.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            if len(rest) < size + 2:
                break
            self.body += rest[:size]
            self.raw = rest[size + 2:]
        while b"\n\n" in self.body:
            block, self.body = self.body.split(b"\n\n", 1)
            fields = dict(line.split(": ", 1) for line in block.decode().split("\n") if not line.startswith(":"))
            if fields.get("event") == "online":
                self.online = True
            elif "data" in fields:
                self.events.append((now_ms, json.loads(fields["data"])))


def open_stream(port, token, user):
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(f"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(4096)
    head, rest = head.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200"), head
    r = Reader(s, user)
    r.raw = rest
    r.parse(time.time() * 1000)
    while not r.online:
        r.feed(time.time() * 1000)
    s.setblocking(False)
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "release", "bin"))
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--expressions", type=int, default=300)
    ap.add_argument("--terms", type=int, default=5)
    ap.add_argument("--busy", type=int, default=100, help="users that submit expressions")
    ap.add_argument("--rate", type=float, default=30, help="expressions per second")
    args = ap.parse_args()
    os.environ["CALC_BIN_DIR"] = os.path.abspath(args.bin)
    import harness  # after CALC_BIN_DIR is set
    import requests
    from api_helpers import claims, forge_jwt

    steal0, total0 = harness.cpu_ticks()
    root = harness.make_temp_root()
    servers = harness.Servers(root)
    cluster = None
    readers = []
    try:
        servers.start()
        cluster = harness.Cluster(servers, "bench-stream", env={
            "API_MAX_CONNECTIONS_PER_ADDRESS": str(args.streams + 64), "MAX_UNFINISHED": "1000000",
            "AGENT_MAX_PROCESSES": "8", "LOG_LEVEL": "warn"})
        cluster.setup_resources()
        cluster.start(agents=2)
        api = cluster.apis[0]
        # Users made in one statement and tokens signed here: a thousand argon2id hashes would
        # measure the password hashing instead.
        servers.psql(f"INSERT INTO users (login, password_hash) SELECT 'bench' || g, 'x'"
                     f" FROM generate_series(1, {args.streams}) g", db=cluster.db)
        ids = [int(x) for x in servers.psql("SELECT id FROM users WHERE login LIKE 'bench%' ORDER BY id",
                                            db=cluster.db).split()]
        secret = cluster.env["AUTH_SECRET"]
        tokens = {uid: forge_jwt(claims(uid, exp=int(time.time()) + 3600), secret) for uid in ids}

        before = proc_status(api.pid)
        t0 = time.monotonic()
        for uid in ids:
            readers.append(open_stream(api.port, tokens[uid], uid))
        opened_s = time.monotonic() - t0
        time.sleep(1)  # let the allocator settle before reading RSS
        after = proc_status(api.pid)
        metrics = requests.get(api.url + "/metrics", timeout=10).text
        print(f"{len(readers)} streams open in {opened_s:.1f} s; calc-api RSS {before['VmRSS']} kB -> "
              f"{after['VmRSS']} kB: {(after['VmRSS'] - before['VmRSS']) / len(readers):.1f} kB per stream; "
              f"threads {before['Threads']} -> {after['Threads']}")
        for line in metrics.splitlines():
            if line.startswith(("calc_event_streams ", "calc_event_stream_users ")):
                print("    " + line)

        sel = selectors.DefaultSelector()
        for r in readers:
            sel.register(r.sock, selectors.EVENT_READ, r)
        busy = ids[: args.busy]
        text = "+".join(str(i) for i in range(1, args.terms + 1))
        expected = {}

        def submit_all():
            """Posts at --rate from its own thread, so that reading the streams never waits."""
            session = requests.Session()
            start = time.monotonic()
            for k in range(args.expressions):
                time.sleep(max(0.0, start + k / args.rate - time.monotonic()))
                uid = busy[k % len(busy)]
                r = session.post(api.url + "/expression", json={"expression": text},
                                 headers={"Authorization": f"Bearer {tokens[uid]}"}, timeout=30)
                assert r.status_code == 200, r.text
                expected.setdefault(uid, set()).add(r.json()["expression"]["expression_id"])

        submitter = threading.Thread(target=submit_all)
        submitter.start()
        deadline = time.monotonic() + args.expressions / args.rate + 60
        finished = 0
        while finished < args.expressions and time.monotonic() < deadline:
            for key, _ in sel.select(0.2):
                r = key.data
                n = len(r.events)
                r.feed(time.time() * 1000)
                finished += sum(1 for _, d in r.events[n:] if d["kind"] == "finished")
        submitter.join()
        submitted = sum(len(v) for v in expected.values())
        lat = sorted(ms - d["at_ms"] for r in readers for ms, d in r.events if d["kind"] == "node")
        for r in readers:
            got = {d["expression_id"] for _, d in r.events}
            assert got == expected.get(r.user, set()), f"user {r.user}: got {got}, expected {expected.get(r.user)}"
        q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
        print(f"{submitted} expressions of {args.terms} terms ({args.terms - 1} nodes each) for {len(busy)} of the "
              f"users at {args.rate}/s, {finished} finished; node done -> event at the client over {len(lat)} node "
              f"events: p50 {q(0.5):.1f} ms, p99 {q(0.99):.1f} ms, max {lat[-1]:.1f} ms")
        metrics = requests.get(api.url + "/metrics", timeout=10).text
        for line in metrics.splitlines():
            if line.startswith(("calc_stream_", "calc_event_streams_cut_total ")):
                print("    " + line)
    finally:
        for r in readers:
            r.sock.close()
        harness.stop_private(servers, root, cluster)
        steal1, total1 = harness.cpu_ticks()
        if total1 > total0:
            print(f"CPU steal during the run: {100.0 * (steal1 - steal0) / (total1 - total0):.1f}%")


if __name__ == "__main__":
    main()
