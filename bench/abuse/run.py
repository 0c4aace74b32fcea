#!/usr/bin/python3
"""The API under a password-guessing attack (not a test: run it by hand; loopback only).

Starts a private PostgreSQL and RabbitMQ, dbagent and one API (no agents) through the system-test
harness with the API's default limits, then in one run:
  1. a client polls its expressions (GET /expression, keep-alive) alone for --seconds;
  2. the same while wrk hammers POST /api/v1/login with wrong passwords over --connections
     keep-alive connections (a new login name per request) for --seconds;
and prints the poller's p50/p99 in both, the ratio of the p99s, what the attack got, and the CPU
steal of the run (from /proc/stat before and after). Every phase is bounded by --seconds.

    bench/abuse/run.py [--bin build/release/bin] [--seconds 10] [--connections 64]
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "system"))

ATTACK_LUA = """
local n = 0
request = function()
  n = n + 1
  local body = string.format('{"login":"guess%d_%d","password":"wrong-password"}', math.random(1, 1000000), n)
  return wrk.format("POST", "/api/v1/login", {["Content-Type"] = "application/json"}, body)
end
local counts = {}
response = function(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
end
done = function(summary, latency, requests)
  io.write(string.format("wrk: %d requests, %d errors (connect %d, read %d, timeout %d)\\n", summary.requests,
    summary.errors.status, summary.errors.connect, summary.errors.read, summary.errors.timeout))
end
"""


def poll(session, url, token, seconds, stop=None):
    """GET /expression as often as it answers (10 ms apart) for seconds; latencies in ms, sorted."""
    times, statuses = [], {}
    end = time.monotonic() + seconds
    while time.monotonic() < end and not (stop and stop.is_set()):
        t0 = time.perf_counter()
        r = session.get(f"{url}/expression?limit=20", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        times.append((time.perf_counter() - t0) * 1000)
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        time.sleep(0.01)
    times.sort()
    return times, statuses


def pct(times, q):
    return times[min(len(times) - 1, int(q * len(times)))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "release", "bin"))
    ap.add_argument("--seconds", type=int, default=10, help="length of each phase (1..60)")
    ap.add_argument("--connections", type=int, default=64)
    args = ap.parse_args()
    args.seconds = max(1, min(60, args.seconds))
    os.environ["CALC_BIN_DIR"] = os.path.abspath(args.bin)
    import harness  # after CALC_BIN_DIR is set

    root = harness.make_temp_root()
    servers = harness.Servers(root)
    cluster = None
    try:
        servers.start()
        cluster = harness.Cluster(servers, "bench-abuse", env={"LOG_LEVEL": "warn"})
        cluster.setup_resources()
        cluster.start(agents=0)
        api = cluster.api_client()
        api.register("poller", "password1")
        token = api.login()
        for i in range(20):
            api.post("/expression", json={"expression": f"{i}+1"}, check=True)
        url = cluster.apis[0].url
        script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
        script.write(ATTACK_LUA)
        script.close()

        steal0, total0 = harness.cpu_ticks()
        quiet, quiet_status = poll(api.session, url, token, args.seconds)
        attack = subprocess.Popen(["wrk", "-t2", f"-c{args.connections}", f"-d{args.seconds + 1}s", "-s", script.name,
                                   url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(0.5)  # let wrk open its connections: the poll below runs under the attack only
        loud, loud_status = poll(api.session, url, token, args.seconds - 0.5 if args.seconds > 1 else 0.5)
        out, _ = attack.communicate(timeout=args.seconds + 30)
        steal1, total1 = harness.cpu_ticks()
        os.unlink(script.name)

        rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        summary = re.search(r"^wrk: .*$", out, re.M)
        print(f"poller alone:        p50 {pct(quiet, 0.5):.2f} ms, p99 {pct(quiet, 0.99):.2f} ms "
              f"({len(quiet)} requests, statuses {quiet_status})")
        print(f"poller under attack: p50 {pct(loud, 0.5):.2f} ms, p99 {pct(loud, 0.99):.2f} ms "
              f"({len(loud)} requests, statuses {loud_status})")
        print(f"p99 ratio (attack / alone): {pct(loud, 0.99) / pct(quiet, 0.99):.2f} (target <= 3); "
              f"p50 ratio {pct(loud, 0.5) / pct(quiet, 0.5):.2f}")
        print(f"attack: {args.connections} connections, {rps.group(1) if rps else '?'} logins/s, "
              f"non-2xx {non2xx.group(1) if non2xx else 0}; {summary.group(0) if summary else out[-300:]}")
        login_stats = [l for l in harness.requests.get(f"{url}/metrics", timeout=10).text.splitlines()
                       if l.startswith("calc_http_requests_total") and "login" in l]
        print("API counts of login replies: " + "; ".join(l.split("{", 1)[1] for l in login_stats))
        print(f"CPU steal over the run: {steal1 - steal0} ticks of {total1 - total0} "
              f"({100.0 * (steal1 - steal0) / max(1, total1 - total0):.1f}%); load average now "
              f"{open('/proc/loadavg').read().split()[0]} on {os.cpu_count()} CPUs")
    finally:
        harness.stop_private(servers, root, cluster)


if __name__ == "__main__":
    main()
