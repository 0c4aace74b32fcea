"""Black-box system-test harness: private servers and the real binaries, started and always stopped.

One `Servers` per pytest session: a private PostgreSQL and RabbitMQ on free loopback ports in a
temporary folder, started and stopped through scripts/lib/servers (the same code as scripts/up).
One `Cluster` per test: its own database and RabbitMQ vhost (so tests never see each other's data or
messages), and the processes it starts (calc-dbagent, calc-api, calc-agent, or anything else).

Every process is recorded in REGISTRY. Teardown stops each one (SIGTERM, a deadline, SIGKILL of its
process group) even when a test fails; an atexit hook and a watchdog cover an interrupted session.

Over 600 lines by choice: the registry, the watchdog, the servers and the clusters share one module
state (what was started, what must be stopped whatever happens), and every test imports only this.

Longer than 600 lines, and one module on purpose: the registry, the watchdog, the servers and the
clusters share one set of module state (what was started, what must be stopped), which a split would
have to pass between files; every test imports only this.
"""

import atexit
import ctypes
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import requests

SOURCE_DIR = os.environ.get("CALC_SOURCE_DIR") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", "..")
)
BIN_DIR = os.environ.get("CALC_BIN_DIR") or os.path.join(SOURCE_DIR, "build", "release", "bin")
SERVERS_CLI = os.path.join(SOURCE_DIR, "scripts", "lib", "servers")

# Time a service gets between SIGTERM and SIGKILL, and a cluster to become ready. Sanitizer builds
# are several times slower, so the deadlines are generous; they only matter when something is wrong.
STOP_TIMEOUT = 30.0
READY_TIMEOUT = 60.0


# What a sanitizer prints at the start of a report. A process that printed one fails its test,
# whatever its exit code: a report is a bug even when the process went on, or was killed.
SANITIZER_MARKS = ("WARNING: ThreadSanitizer", "ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


class ProcessDied(AssertionError):
    """A process the test relies on has exited: waiting longer cannot help."""


def wait_for(predicate, timeout, what, interval=0.05):
    """Poll predicate() until it returns something truthy, and return that; fail after timeout seconds.

    Exceptions from predicate count as "not yet" (the last one is named in the failure), except
    ProcessDied, which fails at once."""
    deadline = time.monotonic() + timeout
    last_error = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except ProcessDied as e:
            raise AssertionError(f"while waiting for {what}: {e}") from None
        except Exception as e:  # noqa: BLE001 - any other error means "not yet"
            last_error = e
        if time.monotonic() >= deadline:
            msg = f"timed out after {timeout}s waiting for {what}"
            if last_error is not None:
                msg += f" (last error: {last_error!r})"
            raise AssertionError(msg)
        time.sleep(interval)


_ports_given = set()


def free_port():
    """A loopback TCP port nobody listens on now, never the same one twice in a session."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _ports_given:
            _ports_given.add(port)
            return port
    raise RuntimeError("no free loopback port")


def tail(path, lines=40):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 256 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError as e:
        return f"(cannot read {path}: {e})"
    return "\n".join(text.splitlines()[-lines:])


_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def _child_setup():
    # A service dies with the pytest process that started it, even if pytest is SIGKILLed.
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class Proc:
    """One process the harness started, in its own process group, logging to log_path."""

    def __init__(self, name, argv, env, log_path, stop_timeout=STOP_TIMEOUT, cwd=None):
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.stop_timeout = stop_timeout
        # Set by a test that kills the process or expects it to fail, so teardown does not complain.
        self.expect_clean_exit = True
        self.stopped_by_harness = False
        self.exit_after_sigterm = None
        self._log = open(log_path, "ab")
        self.popen = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_child_setup,
        )
        self.pid = self.popen.pid
        REGISTRY.add(self)

    def __repr__(self):
        return f"<Proc {self.name} pid={self.pid} rc={self.popen.returncode}>"

    def alive(self):
        return self.popen.poll() is None

    @property
    def returncode(self):
        return self.popen.poll()

    def wait(self, timeout):
        """Wait for the process to exit by itself; return its exit code."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} (pid {self.pid}) still running after {timeout}s")

    def signal(self, sig):
        if self.alive():
            os.kill(self.pid, sig)

    def _kill_group(self):
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def terminate(self):
        """Send SIGTERM once; stop() then waits for the exit."""
        if self.alive() and not self.stopped_by_harness:
            self.stopped_by_harness = True
            os.kill(self.pid, signal.SIGTERM)

    def stop(self, timeout=None):
        """SIGTERM, wait up to timeout, then SIGKILL the whole group. Returns the exit code."""
        timeout = self.stop_timeout if timeout is None else timeout
        if self.alive():
            self.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                print(f"harness: {self.name} (pid {self.pid}) ignored SIGTERM for {timeout}s; SIGKILL", file=sys.stderr)
        if self.stopped_by_harness and self.exit_after_sigterm is None:
            self.exit_after_sigterm = self.popen.poll()  # None: it had to be killed
        self._kill_group()  # anything it left behind in its group
        self.popen.wait()
        if not self._log.closed:
            self._log.close()
        return self.popen.returncode

    def kill(self):
        """SIGKILL the process and its group, as a crash would; teardown will not complain."""
        self.expect_clean_exit = False
        self._kill_group()
        self.popen.wait()
        return self.popen.returncode

    def log(self):
        with open(self.log_path, "r", encoding="utf-8", errors="replace") as f:
            return f.read()

    def log_tail(self, lines=40):
        return tail(self.log_path, lines)

    def sanitizer_report(self):
        """The first line of a sanitizer report in the log, with what follows it, or None."""
        try:
            text = self.log()
        except OSError:
            return None
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if any(mark in line for mark in SANITIZER_MARKS):
                return "\n".join(lines[i : i + 30])
        return None

    def problem(self):
        """Why this process's end is a failure, or None: a sanitizer report, a crash, or anything
        but exit 0 on SIGTERM."""
        report = self.sanitizer_report()
        if report is not None:
            return f"{self.name} (pid {self.pid}) printed a sanitizer report:\n{report}"
        if not self.expect_clean_exit:
            return None
        rc = self.popen.poll()
        if rc is None:
            return None
        if not self.stopped_by_harness:
            return f"{self.name} (pid {self.pid}) exited on its own with {_describe(rc)}"
        if self.exit_after_sigterm is None:
            return f"{self.name} (pid {self.pid}) did not exit within {self.stop_timeout}s of SIGTERM"
        if self.exit_after_sigterm != 0:
            return f"{self.name} (pid {self.pid}) exited with {_describe(self.exit_after_sigterm)} after SIGTERM, not 0"
        return None


def _describe(rc):
    if rc is not None and rc < 0:
        return f"signal {signal.Signals(-rc).name}"
    return f"exit code {rc}"


class Registry:
    """Every process started in this pytest process, so nothing escapes teardown."""

    def __init__(self):
        self.procs = []
        self.servers = []

    def add(self, proc):
        self.procs.append(proc)

    def kill_everything(self):
        for p in reversed(self.procs):
            if p.popen.poll() is None:
                p._kill_group()
        for s in list(self.servers):
            try:
                s.stop()
            except AssertionError as e:
                print(f"harness: {e}", file=sys.stderr)


REGISTRY = Registry()
atexit.register(REGISTRY.kill_everything)


def stop_private(servers, root, cluster=None):
    """Stops what a benchmark started by hand: its cluster, its servers, anything still running,
    and deletes its folder."""
    if cluster:
        cluster.close()
    servers.stop()
    REGISTRY.kill_everything()
    remove_tree(root)


def _run_servers(args, log_path, stdin_text=None, timeout=180, env=None):
    """Run scripts/lib/servers ARGS, appending its output to log_path; fail with that output."""
    with open(log_path, "ab") as log:
        log.write(f"$ servers {' '.join(args)}\n".encode())
        log.flush()
        try:
            r = subprocess.run(
                [SERVERS_CLI] + list(args),
                input=(stdin_text + "\n").encode() if stdin_text is not None else None,
                stdin=None if stdin_text is not None else subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                env=env,
            )
        except subprocess.TimeoutExpired:
            raise AssertionError(f"servers {args[0]} took more than {timeout}s; log:\n{tail(log_path)}")
    if r.returncode != 0:
        raise AssertionError(f"servers {' '.join(args)} failed ({r.returncode}); log:\n{tail(log_path)}")


def _kill_and_wait(pid, expected, timeout=30):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if expected.encode() not in f.read():
                raise AssertionError(f"pid {pid} is not {expected}")
    except (OSError, TypeError):
        raise AssertionError(f"{expected} is not running (pid {pid})")
    os.kill(pid, signal.SIGKILL)

    def gone():
        try:
            with open(f"/proc/{pid}/status") as f:
                return any(line.startswith("State:") and "Z" in line for line in f)
        except FileNotFoundError:
            return True

    wait_for(gone, timeout, f"{expected} (pid {pid}) to die")


def cpu_ticks():
    """The "cpu" line of /proc/stat: (steal, total) in clock ticks, for the benchmarks' CPU steal."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return fields[7], sum(fields[:8])


def cpu_by_program():
    """{program name: CPU seconds used so far} over every process on the machine (from /proc),
    for the benchmarks' profiles."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        out[name] = out.get(name, 0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def make_temp_root():
    """A temporary folder the postgres and rabbitmq users can enter (pytest's own is 0700)."""
    base = os.environ.get("CALC_TEST_TMPDIR") or "/tmp"
    os.makedirs(base, mode=0o755, exist_ok=True)
    path = tempfile.mkdtemp(prefix="calc-systest-", dir=base)
    os.chmod(path, 0o755)
    return path


class Servers:
    """The session's private PostgreSQL and RabbitMQ, under root/."""

    def __init__(self, root):
        self.root = root
        self.pg_dir = os.path.join(root, "postgres")
        self.rmq_dir = os.path.join(root, "rabbitmq")
        self.log_path = os.path.join(root, "servers.log")
        self.pg_port = free_port()
        self.amqp_port = free_port()
        self.dist_port = free_port()
        self.epmd_port = free_port()
        self.db_user = "calc"
        self.db_password = secrets.token_hex(16)
        self.amqp_user = "calc"
        self.amqp_password = secrets.token_hex(16)
        self._watchdog = None
        self._started = False
        self._dbs = set()

    def start(self):
        if os.geteuid() != 0:
            raise AssertionError("the system tests run as root: they run servers as the postgres and rabbitmq users")
        if not os.access(SERVERS_CLI, os.X_OK):
            raise AssertionError(f"{SERVERS_CLI} is missing or not executable")
        REGISTRY.servers.append(self)
        self._started = True
        self._start_watchdog()
        t0 = time.monotonic()
        self.start_postgres()
        t1 = time.monotonic()
        self.start_rabbitmq()
        t2 = time.monotonic()
        print(f"harness: PostgreSQL up in {t1 - t0:.1f}s, RabbitMQ in {t2 - t1:.1f}s, under {self.root}", file=sys.stderr)

    def _start_watchdog(self):
        # If this pytest process dies without its teardown (SIGKILL), stop the servers anyway, then
        # kill whatever still runs in the temporary folder (every process we start has its cwd there).
        script = r"""
            tail --pid="$1" -f /dev/null
            "$2" stop-rabbitmq "$3/rabbitmq" >/dev/null 2>&1
            "$2" stop-pg "$3/postgres" >/dev/null 2>&1
            for d in /proc/[0-9]*; do
                case $(readlink "$d/cwd" 2>/dev/null) in "$3"|"$3"/*) kill -KILL "${d#/proc/}" 2>/dev/null ;; esac
            done
        """
        self._watchdog = subprocess.Popen(
            ["bash", "-c", script, "calc-watchdog", str(os.getpid()), SERVERS_CLI, self.root],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def stop(self):
        """Stop both servers; safe to call twice."""
        if not self._started:
            return
        self._started = False
        if self._watchdog is not None:
            try:
                os.killpg(self._watchdog.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._watchdog.wait()
        errors = []
        for args in (["stop-rabbitmq", self.rmq_dir], ["stop-pg", self.pg_dir]):
            try:
                _run_servers(args, self.log_path)
            except AssertionError as e:
                errors.append(str(e))
        if self in REGISTRY.servers:
            REGISTRY.servers.remove(self)
        if errors:
            raise AssertionError("; ".join(errors))

    # --- for tests that stop or crash a server and bring it back (same ports, same data) -----------
    def _pid(self, path):
        try:
            with open(path) as f:
                return int(f.readline())
        except (OSError, ValueError):
            return None

    def postgres_pid(self):
        return self._pid(os.path.join(self.pg_dir, "data", "postmaster.pid"))

    def rabbitmq_pid(self):
        return self._pid(os.path.join(self.rmq_dir, "rabbitmq.pid"))

    def start_postgres(self):
        # Throw-away servers: no fsync (an OS crash would end the session anyway).
        _run_servers(["start-pg", self.pg_dir, str(self.pg_port)], self.log_path,
                     env=dict(os.environ, PG_UNSAFE_NO_FSYNC="1"))

    def stop_postgres(self):
        _run_servers(["stop-pg", self.pg_dir], self.log_path)

    def kill_postgres(self):
        """SIGKILL the postmaster, as a crash would (its backends follow)."""
        _kill_and_wait(self.postgres_pid(), "postgres")

    def start_rabbitmq(self):
        _run_servers(
            ["start-rabbitmq", self.rmq_dir, str(self.amqp_port), str(self.dist_port), str(self.epmd_port), self.amqp_user],
            self.log_path,
            stdin_text=self.amqp_password,
        )

    def stop_rabbitmq(self):
        _run_servers(["stop-rabbitmq", self.rmq_dir], self.log_path)

    def kill_rabbitmq(self):
        """SIGKILL the RabbitMQ node, as a crash would (its epmd stays, as it would on a real host)."""
        _kill_and_wait(self.rabbitmq_pid(), "beam")

    def rabbitmqctl(self, *args, timeout=60):
        """Run rabbitmqctl against the session's RabbitMQ node; return its output."""
        r = subprocess.run(
            [SERVERS_CLI, "rabbitmqctl", self.rmq_dir] + [str(a) for a in args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if r.returncode != 0:
            raise AssertionError(f"rabbitmqctl {' '.join(map(str, args))} failed: {r.stderr.strip()}")
        return r.stdout

    def queue_counts(self, vhost):
        """{queue: messages (ready + unacknowledged)} of vhost, from rabbitmqctl list_queues."""
        out = self.rabbitmqctl("list_queues", "-p", vhost, "--no-table-headers", "name", "messages")
        counts = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                counts[parts[0]] = int(parts[1])
        return counts

    def psql(self, sql, db="postgres"):
        """Run SQL as the superuser; return psql's unaligned output."""
        r = subprocess.run(
            [SERVERS_CLI, "psql", self.pg_dir, str(self.pg_port), "-d", db, "-At", "-c", sql],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if r.returncode != 0:
            raise AssertionError(f"psql failed: {r.stderr.strip()}")
        return r.stdout

    def create_db(self, name):
        """A new, empty database owned by the calc role; returns its name (made unique if taken)."""
        base = re.sub(r"[^a-z0-9_]", "_", name.lower())[:40].strip("_") or "db"
        if not re.match(r"[a-z_]", base):
            base = "t_" + base
        name, n = base, 1
        while name in self._dbs:
            n += 1
            name = f"{base}_{n}"
        self._dbs.add(name)
        _run_servers(
            ["pg-ensure-db", self.pg_dir, str(self.pg_port), name, self.db_user], self.log_path, stdin_text=self.db_password
        )
        return name

    def create_vhost(self, name):
        _run_servers(["rabbitmq-add-vhost", self.rmq_dir, name, self.amqp_user], self.log_path)
        return name

    def amqp_url(self, vhost="/"):
        quoted = requests.utils.quote(vhost, safe="")
        return f"amqp://{self.amqp_user}:{self.amqp_password}@127.0.0.1:{self.amqp_port}/{quoted}"

    def db_env(self, db):
        return {
            "DB_HOST": "127.0.0.1",
            "DB_PORT": str(self.pg_port),
            "DB_USERNAME": self.db_user,
            "DB_PASSWORD": self.db_password,
            "DB_NAME": db,
            "DB_SSLMODE": "disable",
        }


class ApiError(AssertionError):
    pass


class ApiClient:
    """HTTP client for one user: a requests session; login() keeps the access token for later calls."""

    def __init__(self, base_url, timeout=10.0):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.token = None
        self.credentials = None

    def request(self, method, path, check=False, **kw):
        kw.setdefault("timeout", self.timeout)
        headers = dict(kw.pop("headers", None) or {})
        if self.token and "Authorization" not in headers:
            headers["Authorization"] = f"Bearer {self.token}"
        r = self.session.request(method, self.base_url + path, headers=headers, **kw)
        if check and not 200 <= r.status_code < 300:
            raise ApiError(f"{method} {path} -> {r.status_code}: {r.text[:500]}")
        return r

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, **kw):
        return self.request("POST", path, **kw)

    def put(self, path, **kw):
        return self.request("PUT", path, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    def register(self, login, password, check=True):
        self.credentials = (login, password)
        return self.post("/api/v1/register", json={"login": login, "password": password}, check=check)

    def login(self, login=None, password=None):
        """Log in (by default as the last registered user); keep and return the access token."""
        if login is None:
            login, password = self.credentials
        self.credentials = (login, password)
        r = self.post("/api/v1/login", json={"login": login, "password": password}, check=True)
        self.token = r.json()["accessToken"]
        return self.token


class Cluster:
    """The processes of one test, against its own database and vhost on the session's servers."""

    def __init__(self, servers, name, env=None):
        self.servers = servers
        self.name = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:60]
        self.log_dir = os.path.join(servers.root, "logs", self.name)
        n = 1
        while os.path.exists(self.log_dir):
            n += 1
            self.log_dir = os.path.join(servers.root, "logs", f"{self.name}-{n}")
        os.makedirs(self.log_dir)
        self.procs = []
        self.apis = []
        self.db = None
        self.vhost = None
        self.dbagent_port = None
        self.admin_login = "admin"
        self.admin_password = secrets.token_hex(12)
        self.env = {
            "DBAGENT_TOKEN": secrets.token_hex(24),
            "AUTH_SECRET": secrets.token_hex(32),
            "ADMIN_LOGIN": self.admin_login,
            "ADMIN_PASSWORD": self.admin_password,
            "AGENT_MAX_PROCESSES": "4",
            "HEARTBEAT_INTERVAL_MS": "200",
            "HEARTBEAT_TIMEOUT_MS": "2000",
            "RETRY_TTL_MS": "2000",
        }
        self.env.update(env or {})
        self.wait_for = wait_for

    # --- resources -------------------------------------------------------------------------------
    def create_db(self, name=None):
        """A fresh database on the session's PostgreSQL (owned by the role the services use)."""
        return self.servers.create_db(name or self.name)

    def setup_resources(self):
        self.db = self.create_db(self.name)
        self.vhost = self.servers.create_vhost(f"{self.name}-{secrets.token_hex(3)}")
        self.dbagent_port = free_port()
        self.env.update(self.servers.db_env(self.db))
        self.env["AMQP_URL"] = self.servers.amqp_url(self.vhost)
        self.env["DBAGENT_HOST"] = "127.0.0.1"
        self.env["DBAGENT_PORT"] = str(self.dbagent_port)
        self.env["DBAGENT_ADDR"] = f"127.0.0.1:{self.dbagent_port}"

    # --- processes -------------------------------------------------------------------------------
    def start_process(self, name, argv, env=None, stop_timeout=STOP_TIMEOUT):
        """Start any program with the cluster's environment (plus env); it is stopped at teardown."""
        full_env = dict(os.environ)
        full_env.update(self.env)
        full_env.update({k: str(v) for k, v in (env or {}).items()})
        log_path = os.path.join(self.log_dir, f"{name}.log")
        p = Proc(name, argv, full_env, log_path, stop_timeout=stop_timeout, cwd=self.log_dir)
        self.procs.append(p)
        return p

    def binary(self, name):
        path = os.path.join(BIN_DIR, name)
        if not os.access(path, os.X_OK):
            raise AssertionError(f"{path} is not built (CALC_BIN_DIR={BIN_DIR})")
        return path

    def start_dbagent(self, name="dbagent", wait=True, **env):
        port = int(env.get("DBAGENT_PORT", self.dbagent_port))
        p = self.start_process(name, [self.binary("calc-dbagent")], env)
        p.port = port
        if wait:
            self.wait_listening(p, port)
        return p

    def start_api(self, name=None, wait=True, **env):
        name = name or ("api" if not self.apis else f"api-{len(self.apis) + 1}")
        port = int(env.pop("API_PORT", 0)) or free_port()
        env.setdefault("API_HOST", "127.0.0.1")
        p = self.start_process(name, [self.binary("calc-api")], dict(env, API_PORT=port))
        p.port = port
        p.url = f"http://127.0.0.1:{port}"
        self.apis.append(p)
        if wait:
            self.wait_ready(p)
        return p

    def start_agent(self, name=None, **env):
        n = sum(1 for p in self.procs if p.name.startswith("agent-")) + 1
        name = name or f"agent-{n}"
        env.setdefault("AGENT_NAME", name)
        return self.start_process(name, [self.binary("calc-agent")], env)

    def start(self, agents=2):
        """dbagent, one API and `agents` agents; returns when the API answers /readyz."""
        self.start_dbagent()
        api = self.start_api(wait=False)
        for _ in range(agents):
            self.start_agent()
        self.wait_ready(api)
        return self

    def wait_listening(self, proc, port, timeout=READY_TIMEOUT):
        def up():
            self._check_alive(proc)
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True

        wait_for(up, timeout, f"{proc.name} to listen on port {port}")

    def wait_ready(self, api=None, timeout=READY_TIMEOUT):
        api = api or self.apis[0]

        def ready():
            for p in self.procs:
                self._check_alive(p)
            return requests.get(api.url + "/readyz", timeout=2).status_code == 200

        wait_for(ready, timeout, f"{api.name} /readyz to answer 200")

    def _check_alive(self, proc):
        if proc.expect_clean_exit and not proc.alive():
            raise ProcessDied(f"{proc.name} exited with {_describe(proc.returncode)}; log:\n{proc.log_tail()}")

    def restart(self, proc, kill=False, wait=True):
        """Stop (or SIGKILL) proc and start the same program with the same environment and port;
        the log continues in the same file. Returns the new Proc."""
        if kill:
            proc.kill()
        else:
            proc.stop()
        new = Proc(proc.name, proc.argv, proc.env, proc.log_path, stop_timeout=proc.stop_timeout, cwd=self.log_dir)
        self.procs.append(new)
        for attr in ("port", "url"):
            if hasattr(proc, attr):
                setattr(new, attr, getattr(proc, attr))
        if proc in self.apis:
            self.apis[self.apis.index(proc)] = new
            if wait:
                self.wait_ready(new)
        elif wait and hasattr(proc, "port"):
            self.wait_listening(new, proc.port)
        return new

    def stop(self, proc, timeout=None):
        """SIGTERM (then SIGKILL after the deadline); returns the exit code."""
        return proc.stop(timeout)

    def kill(self, proc):
        return proc.kill()

    def api_client(self, api=None):
        api = api or self.apis[0]
        return ApiClient(api.url)

    def admin_client(self, api=None):
        c = self.api_client(api)
        c.login(self.admin_login, self.admin_password)
        return c

    def close(self):
        """Stop every process (agents, then APIs, then the rest); fail if one did not stop cleanly."""

        def order(p):
            return 0 if p.name.startswith("agent") else 1 if p in self.apis else 2

        tiers = {}
        for p in self.procs:
            tiers.setdefault(order(p), []).append(p)
        for key in sorted(tiers):
            for p in tiers[key]:  # all of a tier get SIGTERM at once; their grace periods overlap
                p.terminate()
            for p in tiers[key]:
                p.stop()
        problems = [msg for msg in (p.problem() for p in self.procs) if msg]
        if problems:
            details = "\n".join(
                f"--- {p.name}: {p.log_path} ---\n{p.log_tail(30)}" for p in self.procs if p.problem()
            )
            raise AssertionError("unclean stop:\n  " + "\n  ".join(problems) + "\n" + details)


def log_tails(procs, lines=40):
    """The last lines of each process's log, for a failure report."""
    out = []
    for p in procs:
        state = "running" if p.alive() else _describe(p.returncode)
        out.append(f"--- {p.name} (pid {p.pid}, {state}): {p.log_path} ---\n{p.log_tail(lines)}")
    return "\n".join(out)


def remove_tree(path):
    shutil.rmtree(path, ignore_errors=True)
