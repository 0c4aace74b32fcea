"""compose.yaml brought up for real with podman-compose: images built from the repository on a
Debian base image, three agents, the README's walkthrough through the published API port, 200
expressions through an agent killed and PostgreSQL restarted, then `down` and `up` with every user
and expression still there. Everything the test created is removed at the end, failed or not,
except the base image, which is kept as a cache (the output says when it was reused).

Run by CTest with the label `compose` (scripts/test runs it in the Release tier).
"""

import math
import os
import random
import secrets
import subprocess
import sys
import tempfile
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "system"))
sys.path.insert(0, HERE)
import harness  # noqa: E402
from containers import BASE_IMAGE, Engine, Project, copy_tree  # noqa: E402

SOURCE_DIR = os.environ.get("CALC_SOURCE_DIR") or os.path.abspath(os.path.join(HERE, "..", ".."))
AGENTS = 3
READY_TIMEOUT = 300  # a first RabbitMQ boot on a busy 2-core machine takes up to a minute
FINISH_TIMEOUT = 300


def read_env_file(path):
    values = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                k, v = line.split("=", 1)
                values[k] = v
    return values


@pytest.fixture
def workdir():
    root = tempfile.mkdtemp(prefix="calc-compose-", dir="/var/tmp")
    yield root
    subprocess.run(["rm", "-rf", root], check=False)


# ---- scripts/compose-env ---------------------------------------------------------------------------


def test_compose_env_writes_private_secrets_once(workdir):
    src = os.path.join(workdir, "src")
    copy_tree(SOURCE_DIR, src)
    script = os.path.join(src, "scripts", "compose-env")
    r = subprocess.run([script], capture_output=True, text=True, check=True)
    env_file = os.path.join(src, ".env")
    assert os.stat(env_file).st_mode & 0o777 == 0o600
    first = read_env_file(env_file)
    for k in ("CALC_DB_PASSWORD", "CALC_RABBITMQ_PASSWORD", "CALC_DBAGENT_TOKEN", "CALC_DBAGENT_AGENT_TOKEN",
              "CALC_AUTH_SECRET", "CALC_ADMIN_PASSWORD"):
        assert len(first[k]) >= 16 and all(c in "0123456789abcdef" for c in first[k]), k
    assert len({first["CALC_AUTH_SECRET"], first["CALC_DBAGENT_TOKEN"], first["CALC_DBAGENT_AGENT_TOKEN"]}) == 3
    assert f"admin password: {first['CALC_ADMIN_PASSWORD']}" in r.stdout
    # A second run keeps the file: the volumes' passwords must keep matching it.
    subprocess.run([script], capture_output=True, check=True)
    assert read_env_file(env_file) == first
    r = subprocess.run([script, "--show"], capture_output=True, text=True, check=True)
    assert first["CALC_ADMIN_PASSWORD"] in r.stdout
    os.unlink(env_file)
    r = subprocess.run([script, "--show"], capture_output=True, text=True)
    assert r.returncode != 0 and "no " in r.stderr and not os.path.exists(env_file)


# ---- the cluster in containers ---------------------------------------------------------------------


def expressions(rng, n):
    """n expressions of mixed shapes, with the value Python computes for each (None: an error)."""
    out = []
    for i in range(n):
        shape = i % 8
        nums = [rng.randint(1, 9) for _ in range(8)]
        a, b, c, d, e, f, g, h = nums
        text = [
            f"{a} + {b} * {c}",
            f"({a} + {b}) * ({c} - {d}) / {e}",
            " + ".join(str(x) for x in nums),
            f"-{a} * ({b} + -{c}) - {d} / ({e} + {f})",
            f"(({a} + {b}) * {c} + {d}) * ({e} - {f} * {g}) / {h}",
            f"{a}.5 * {b} - {c} * {d} + {e} * {f} - {g} / {h}",
            " * ".join(str(x) for x in nums[:5]) + f" / {f}",
            f"{a} / ({b} - {b})" if i % 40 == 7 else f"{a} - ({b} - ({c} - ({d} - {e})))",
        ][shape]
        try:
            value = eval(text, {"__builtins__": {}})  # the same precedence and unary minus
        except ZeroDivisionError:
            value = None
        out.append((text, value))
    return out


def walkthrough(url, admin_login, admin_password):
    """The README's curl walkthrough, request by request, through the published port."""
    import requests

    r = requests.post(f"{url}/api/v1/register", json={"login": "user22", "password": "correct horse"},
                      timeout=30)
    assert r.status_code == 200 and r.json()["status"] == 200, r.text
    s = requests.Session()
    r = s.post(f"{url}/api/v1/login", json={"login": "user22", "password": "correct horse"}, timeout=30)
    assert r.status_code == 200 and "refresh-token" in s.cookies, r.text
    auth = {"Authorization": f"Bearer {r.json()['accessToken']}"}
    r = s.post(f"{url}/expression", headers=auth, json={"req_uid": "23332e", "expression": "2 + 2 * 2"},
               timeout=30)
    assert r.status_code == 200, r.text
    e = r.json()["expression"]
    assert e["status"] == "New" and e["node_count"] == 2 and e["depth"] == 2, e
    eid = e["expression_id"]

    def done():
        x = s.get(f"{url}/expression/{eid}", headers=auth, timeout=30).json()["expression"]
        return x["status"] == "Ok" and x

    assert harness.wait_for(done, 60, "2 + 2 * 2 to finish")["result"] == 6
    listed = s.get(f"{url}/expression", headers=auth, timeout=30).json()["expressions"]
    assert [x["expression_id"] for x in listed] == [eid]
    r = s.post(f"{url}/api/v1/refresh", timeout=30)
    assert r.status_code == 200 and r.json()["accessToken"], r.text
    auth = {"Authorization": f"Bearer {r.json()['accessToken']}"}
    r = s.get(f"{url}/duration", headers=auth, timeout=30)
    assert r.status_code == 200, r.text
    assert s.post(f"{url}/duration", headers=auth, json={"+": 1}, timeout=30).status_code == 403
    r = requests.post(f"{url}/api/v1/login", json={"login": admin_login, "password": admin_password},
                      timeout=30)
    assert r.status_code == 200, f"the admin of .env cannot log in: {r.text}"
    admin = {"Authorization": f"Bearer {r.json()['accessToken']}"}
    # Small delays for the run that follows, long enough that 200 expressions (about 1,100 nodes)
    # keep 12 workers busy for about 10 s: the faults land mid-run.
    r = requests.post(f"{url}/duration", headers=admin, json={"+": 100, "-": 100, "*": 150, "/": 150},
                      timeout=30)
    assert r.status_code == 200, r.text
    agents = s.get(f"{url}/agent", headers=auth, timeout=30).json()
    alive = [a for a in agents["agents"] if a["alive"]]
    assert len(alive) == AGENTS, agents
    for path in ("/healthz", "/readyz", "/metrics"):
        assert requests.get(url + path, timeout=30).status_code == 200, path
    return s, auth, eid


def list_all(session, url, auth):
    r = session.get(f"{url}/expression?limit=1000", headers=auth, timeout=30)
    assert r.status_code == 200, r.text
    return {x["expression_id"]: x for x in r.json()["expressions"]}


def check_results(submitted, listed):
    wrong = []
    for eid, (text, value) in submitted.items():
        x = listed.get(eid)
        if x is None:
            wrong.append(f"{eid} {text!r}: missing")
        elif value is None:
            if x["status"] != "Error" or "zero" not in x["error_msg"]:
                wrong.append(f"{eid} {text!r}: {x['status']} {x['error_msg']!r}, not a division-by-zero Error")
        elif x["status"] != "Ok" or not math.isclose(x["result"], value, rel_tol=1e-9, abs_tol=1e-9):
            wrong.append(f"{eid} {text!r}: {x['status']} {x['result']} (expected {value})")
    assert not wrong, f"{len(wrong)} wrong: " + "; ".join(wrong[:10])


def test_compose_cluster_survives_faults_and_restarts(workdir):
    engine = Engine(workdir)
    engine.ensure_base_image(SOURCE_DIR)
    images_before = engine.image_ids()
    src = os.path.join(workdir, "src")
    copy_tree(SOURCE_DIR, src)
    subprocess.run([os.path.join(src, "scripts", "compose-env")], check=True, capture_output=True)
    secrets_env = read_env_file(os.path.join(src, ".env"))
    api_port = harness.free_port()
    tag = "test-" + secrets.token_hex(4)
    project = Project(engine, "calct" + secrets.token_hex(3), src, {
        "BASE": BASE_IMAGE,
        "CALC_IMAGE_TAG": tag,
        "CALC_AGENTS": str(AGENTS),
        "API_PUBLISH": f"127.0.0.1:{api_port}",
        "DBAGENT_PUBLISH": f"127.0.0.1:{harness.free_port()}",
        "RABBITMQ_PUBLISH": f"127.0.0.1:{harness.free_port()}",
        # Faults below: a message of a failed call waits 2 s, not 20, before it is retried.
        "RETRY_TTL_MS": "2000",
    })
    url = f"http://127.0.0.1:{api_port}"
    failed = True
    try:
        t0 = time.monotonic()
        project.compose("build")
        print(f"compose test: images built in {time.monotonic() - t0:.0f}s")
        t0 = time.monotonic()
        project.compose("up", "-d")
        names = project.containers()
        assert len(names) == 4 + AGENTS, names
        project.wait_healthy(names, READY_TIMEOUT)
        print(f"compose test: {len(names)} containers up and healthy in {time.monotonic() - t0:.0f}s")

        session, auth, first = walkthrough(url, secrets_env["CALC_ADMIN_LOGIN"],
                                           secrets_env["CALC_ADMIN_PASSWORD"])

        seed = random.randrange(1 << 30)
        print(f"compose test: expressions from seed {seed}")
        submitted = {}
        for text, value in expressions(random.Random(seed), 200):
            r = session.post(f"{url}/expression", headers=auth, json={"expression": text}, timeout=30)
            assert r.status_code == 200, r.text
            submitted[r.json()["expression"]["expression_id"]] = (text, value)

        def finished():
            return sum(x["status"] in ("Ok", "Error") for x in list_all(session, url, auth).values())

        # Mid-run: an agent dies without a word, then PostgreSQL restarts under everything.
        harness.wait_for(lambda: finished() >= 40, 120, "40 expressions to finish", interval=0.2)
        engine.run("podman", "kill", project.container("agent", 2))
        assert finished() < 180, "the run ended before the faults; make the expressions slower"
        engine.run("podman", "restart", "-t", "20", project.container("postgres"))
        t0 = time.monotonic()
        harness.wait_for(lambda: finished() == len(submitted) + 1, FINISH_TIMEOUT,
                         "every expression to finish", interval=1.0)
        print(f"compose test: all {len(submitted)} expressions finished {time.monotonic() - t0:.0f}s "
              "after the PostgreSQL restart")
        listed = list_all(session, url, auth)
        check_results(submitted, listed)
        assert listed[first]["result"] == 6

        # stop: every program gets its stop signal as PID 1 and exits 0 (the killed agent aside).
        project.compose("stop")
        killed = project.container("agent", 2)
        codes = {n: engine.output("podman", "inspect", "-f", "{{.State.ExitCode}}", n).strip()
                 for n in project.containers() if n != killed}
        assert codes and set(codes.values()) == {"0"}, f"not a clean stop: {codes}"

        # down + up: containers and network go, the volumes stay, and so does everything in them.
        volumes = project.volumes()
        assert len(volumes) == 2, volumes
        project.compose("down")
        assert project.containers() == []
        assert project.volumes() == volumes
        project.compose("up", "-d")
        project.wait_healthy(project.containers(), READY_TIMEOUT)
        again = harness.ApiClient(url, timeout=30)
        again.login("user22", "correct horse")
        r = again.get("/expression?limit=1000", check=True)
        after = {x["expression_id"]: x for x in r.json()["expressions"]}
        assert after == listed, "expressions changed across down and up"
        eid = again.post("/expression", json={"expression": "(1 + 2) * 3"}, check=True).json()[
            "expression"]["expression_id"]
        done = harness.wait_for(lambda: again.get(f"/expression/{eid}").json()["expression"]["status"] == "Ok",
                                60, "an expression after down and up")
        assert done and again.get(f"/expression/{eid}").json()["expression"]["result"] == 9
        failed = False
    finally:
        if failed:
            print(project.logs(lines=40))
        t0 = time.monotonic()
        project.remove_everything(images_before, tag)
        print(f"compose test: removed containers, network, volumes and images in {time.monotonic() - t0:.0f}s")
