#!/usr/bin/python3
"""API benchmarks on this machine, everything on loopback (not a test: run it by hand).

Starts a private PostgreSQL and RabbitMQ and the whole cluster (dbagent, one API, agents) with the
system-test harness, then measures:
  1. GET /expression/{id} with keep-alive (wrk), requests/s and latency: of a finished expression
     (its reply comes from the API's cache of final replies) and of an unfinished one (every
     request goes through dbagent and PostgreSQL);
  2. POST /expression {"expression":"2+2*2"} (wrk), requests/s: accepted with the agents paused
     (SIGSTOP: the API, dbagent and dispatcher alone), and sustained with the agents computing
     (the whole cluster on the same two cores), from one user and from many;
  3. with zero operator delays, 2+2*2 from POST to the result being readable (Ok), p50 and p99.

    bench/api/run.py [--bin build/release/bin] [--seconds 10] [--connections 32] [--samples 500]
                     [--only get|post|latency]
"""

import argparse
import os
import re
import signal
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


CPU_NAMES = ("calc-api", "calc-dbagent", "postgres", "wrk")


def cpu_seconds():
    """CPU seconds used so far by the processes named in CPU_NAMES."""
    import harness

    used = harness.cpu_by_program()
    return {name: used.get(name, 0.0) for name in CPU_NAMES}


def wrk_with_cpu(url, seconds, connections, threads, script):
    """wrk, plus the CPU each process spent per request (ms): a steadier figure than requests/s
    on a shared machine."""
    import resource

    child = lambda: (lambda r: r.ru_utime + r.ru_stime)(resource.getrusage(resource.RUSAGE_CHILDREN))
    before = cpu_seconds()
    before["wrk"] = child()
    rps, bad, lat = wrk(url, seconds, connections, threads, script)
    after = cpu_seconds()
    after["wrk"] = child()
    n = rps * seconds
    per = ", ".join(f"{k} {(after[k] - before[k]) * 1e3 / n:.3f}" for k in CPU_NAMES) if n else "-"
    return rps, bad, lat, per


def lua(tokens, method, body=None, paths=None):
    """A wrk script sending method (and body) with the users' tokens in turn, to paths in turn
    (the URL's path when None)."""
    f = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
    f.write(f'wrk.method = "{method}"\n')
    if body:
        f.write('wrk.headers["Content-Type"] = "application/json"\n')
        f.write(f"wrk.body = '{body}'\n")
    f.write("local tokens = {" + ",".join(f'"{t}"' for t in tokens) + "}\n")
    f.write("local paths = {" + ",".join(f'"{p}"' for p in paths or []) + "}\n")
    f.write("local i, j = 0, 0\n")
    f.write("request = function()\n  i = i % #tokens + 1\n"
            '  wrk.headers["Authorization"] = "Bearer " .. tokens[i]\n'
            "  if #paths == 0 then return wrk.format() end\n"
            "  j = j % #paths + 1\n"
            "  return wrk.format(nil, paths[j])\nend\n")
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
    ap.add_argument("--unfinished", type=int, default=64, help="distinct unfinished expressions to GET in turn")
    ap.add_argument("--only", choices=("get", "post", "latency"), help="run one part only")
    args = ap.parse_args()
    run = lambda part: args.only in (None, part)
    os.environ["CALC_BIN_DIR"] = os.path.abspath(args.bin)
    import harness  # after CALC_BIN_DIR is set

    root = harness.make_temp_root()
    servers = harness.Servers(root)
    cluster = None
    try:
        servers.start()
        cluster = harness.Cluster(servers, "bench", env={"MAX_UNFINISHED": "1000000", "AGENT_MAX_PROCESSES": "8", "AGENT_GRACE_MS": "1000",
                                                         "LOG_LEVEL": "warn"})
        cluster.setup_resources()
        cluster.start(agents=args.agents)
        api = cluster.api_client()
        api.register("bench", "password1")
        token = api.login()
        eid = api.post("/expression", json={"expression": "2+2*2"}).json()["expression"]["expression_id"]
        url = cluster.apis[0].url

        harness.wait_for(lambda: api.get(f"/expression/{eid}").json()["expression"]["status"] == "Ok", 30, "2+2*2")
        admin = cluster.admin_client()
        admin.post("/duration", json={"+": 65535}, check=True)
        slow = [api.post("/expression", json={"expression": "1+1"}).json()["expression"]["expression_id"]
                for _ in range(args.unfinished)]
        admin.post("/duration", json={"+": 0}, check=True)
        for what, targets in (("finished, cached", [eid]), (f"{len(slow)} unfinished, through dbagent", slow)):
            if not run("get"):
                break
            rps, bad, lat, per = wrk_with_cpu(f"{url}/expression/{targets[0]}", args.seconds, args.connections,
                                              args.threads, lua([token], "GET", paths=[f"/expression/{t}" for t in targets]))
            print(f"GET /expression/{{id}} ({what}): {rps:.0f} requests/s, p50 {lat.get('50')}, "
                  f"p99 {lat.get('99')}, non-2xx {bad} ({args.connections} keep-alive connections)\n"
                  f"    CPU per request (ms): {per}")
        # One user's creations are serialised by design (per-user event order); many users in parallel.
        tokens = []
        for i in range(args.users):
            u = cluster.api_client()
            u.register(f"bench{i}", "password1")
            tokens.append(u.login())
        agents = [p for p in cluster.procs if p.name.startswith("agent")]
        for paused in (False, True) if run("post") else ():
            for p in agents:
                os.kill(p.pid, signal.SIGSTOP if paused else signal.SIGCONT)
            mode = "accepted, agents paused" if paused else "sustained, agents computing"
            for who, toks in (("1 user", [token]), (f"{args.users} users", tokens)):
                rps, bad, lat = wrk(f"{url}/expression", args.seconds, args.connections, args.threads,
                                    lua(toks, "POST", '{"expression":"2+2*2"}'))
                print(f"POST /expression ({mode}, {who}): {rps:.0f} requests/s, p50 {lat.get('50')}, "
                      f"p99 {lat.get('99')}, non-2xx {bad}")
        for p in agents:
            os.kill(p.pid, signal.SIGCONT)

        if not run("latency"):
            return
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
        harness.stop_private(servers, root, cluster)


if __name__ == "__main__":
    main()
