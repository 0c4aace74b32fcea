#!/usr/bin/python3
"""API benchmarks on this machine, everything on loopback (not a test: run it by hand).

Starts a private PostgreSQL and RabbitMQ and the whole cluster (dbagent, one API, agents) with the
system-test harness, then measures:
  1. GET /expression/{id} with keep-alive (wrk), requests/s and latency;
  2. POST /expression {"expression":"2+2*2"} (wrk), requests/s;
  3. with zero operator delays, 2+2*2 from POST to the result being readable (Ok), p50 and p99.

    bench/api/run.py [--bin build/release/bin] [--seconds 10] [--connections 32] [--samples 500]
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "system"))


def wrk(url, seconds, connections, threads, script=None):
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if script:
        cmd += ["-s", script]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
    return rps, int(non2xx.group(1)) if non2xx else 0, lat


def lua(tokens, method, body=None):
    """A wrk script sending method (and body) with the users' tokens in turn."""
    f = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
    f.write(f'wrk.method = "{method}"\n')
    if body:
        f.write('wrk.headers["Content-Type"] = "application/json"\n')
        f.write(f"wrk.body = '{body}'\n")
    f.write("local tokens = {" + ",".join(f'"{t}"' for t in tokens) + "}\n")
    f.write("local i = 0\n")
    f.write("request = function()\n  i = i % #tokens + 1\n"
            '  wrk.headers["Authorization"] = "Bearer " .. tokens[i]\n'
            "  return wrk.format()\nend\n")
    f.close()
    return f.name


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "release", "bin"))
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--agents", type=int, default=2)
    ap.add_argument("--users", type=int, default=32)
    args = ap.parse_args()
    os.environ["CALC_BIN_DIR"] = os.path.abspath(args.bin)
    import harness  # after CALC_BIN_DIR is set

    root = harness.make_temp_root()
    servers = harness.Servers(root)
    cluster = None
    try:
        servers.start()
        cluster = harness.Cluster(servers, "bench", env={"MAX_UNFINISHED": "1000000", "AGENT_MAX_PROCESSES": "8",
                                                         "LOG_LEVEL": "warn"})
        cluster.setup_resources()
        cluster.start(agents=args.agents)
        api = cluster.api_client()
        api.register("bench", "password1")
        token = api.login()
        eid = api.post("/expression", json={"expression": "2+2*2"}).json()["expression"]["expression_id"]
        url = cluster.apis[0].url

        rps, bad, lat = wrk(f"{url}/expression/{eid}", args.seconds, args.connections, args.threads,
                            lua([token], "GET"))
        print(f"GET /expression/{{id}}: {rps:.0f} requests/s, p50 {lat.get('50')}, p99 {lat.get('99')}, "
              f"non-2xx {bad} ({args.connections} keep-alive connections)")
        # One user's creations are serialised by design (per-user event order); many users in parallel.
        tokens = []
        for i in range(args.users):
            u = cluster.api_client()
            u.register(f"bench{i}", "password1")
            tokens.append(u.login())
        for who, toks in (("1 user", [token]), (f"{args.users} users", tokens)):
            rps, bad, lat = wrk(f"{url}/expression", args.seconds, args.connections, args.threads,
                                lua(toks, "POST", '{"expression":"2+2*2"}'))
            print(f"POST /expression ({who}): {rps:.0f} requests/s, p50 {lat.get('50')}, p99 {lat.get('99')}, "
                  f"non-2xx {bad}")

        # Let the backlog of the POST run drain before measuring latency.
        def idle():
            out = servers.psql("SELECT count(*) FROM expressions WHERE status IN ('new','in_progress')", db=cluster.db)
            return int(out.strip()) == 0
        harness.wait_for(idle, 600, "the POST backlog to drain", interval=0.5)

        s = api.session
        times = []
        for _ in range(args.samples):
            t0 = time.perf_counter()
            eid = s.post(url + "/expression", json={"expression": "2+2*2"},
                         headers={"Authorization": f"Bearer {token}"}).json()["expression"]["expression_id"]
            while True:
                e = s.get(f"{url}/expression/{eid}", headers={"Authorization": f"Bearer {token}"}).json()["expression"]
                if e["status"] == "Ok":
                    break
            times.append((time.perf_counter() - t0) * 1000)
        times.sort()
        p = lambda q: times[min(len(times) - 1, int(q * len(times)))]
        print(f"2+2*2 POST to readable result: p50 {p(0.5):.1f} ms, p99 {p(0.99):.1f} ms, "
              f"mean {statistics.mean(times):.1f} ms over {len(times)} samples")
    finally:
        if cluster:
            cluster.close()
        servers.stop()
        harness.REGISTRY.kill_everything()
        harness.remove_tree(root)


if __name__ == "__main__":
    main()
