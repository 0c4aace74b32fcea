"""The harness itself: a session that fails, is interrupted or is killed leaves no process behind.

Each test runs a nested pytest session on selftest/cases.py whose temporary folder carries a unique
marker, then scans /proc for any process whose command line, working directory or environment
mentions that marker."""

import glob
import os
import signal
import subprocess
import tempfile
import uuid

import pytest

import harness

# The harness does not depend on how the services were compiled: scripts/test runs these nested
# sessions in one of its two builds only.
pytestmark = pytest.mark.skipif(
    bool(os.environ.get("CALC_SKIP_HARNESS_SELFTEST")), reason="CALC_SKIP_HARNESS_SELFTEST is set"
)

HERE = os.path.dirname(os.path.abspath(__file__))
CASES = os.path.join(HERE, "selftest", "cases.py")


def processes_mentioning(marker):
    """(pid, where, command line) of every live process that refers to marker."""
    found = []
    needle = marker.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        base = f"/proc/{entry}"
        try:
            with open(f"{base}/cmdline", "rb") as f:
                cmdline = f.read()
            if not cmdline:  # a kernel thread or a zombie: nothing left to stop
                continue
            where = []
            if needle in cmdline:
                where.append("cmdline")
            if marker in os.readlink(f"{base}/cwd"):
                where.append("cwd")
            with open(f"{base}/environ", "rb") as f:
                if needle in f.read():
                    where.append("environ")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if where:
            found.append((int(entry), ",".join(where), cmdline.replace(b"\0", b" ").decode(errors="replace")[:200]))
    return found


class Nested:
    """A nested pytest session whose temporary folder is under a unique marker."""

    def __init__(self):
        self.base = tempfile.mkdtemp(prefix="calc-harness-", dir="/tmp")
        os.chmod(self.base, 0o755)
        self.marker = f"selftest-{uuid.uuid4().hex[:12]}"
        self.tmp = os.path.join(self.base, self.marker)
        self.ready_file = os.path.join(self.base, "ready")
        self.out_path = os.path.join(self.base, "nested.out")

    def start(self, *args, env=None):
        full_env = dict(os.environ, CALC_TEST_TMPDIR=self.tmp, CALC_SELFTEST="1")
        full_env.update(env or {})
        argv = [
            "/usr/bin/python3", "-m", "pytest", "-q", "-p", "no:cacheprovider",
            f"--rootdir={HERE}", f"--confcutdir={HERE}", CASES, *args,
        ]
        self.out = open(self.out_path, "wb")
        self.proc = subprocess.Popen(
            argv, cwd=harness.SOURCE_DIR, env=full_env, stdin=subprocess.DEVNULL, stdout=self.out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        return self.proc

    def wait(self, timeout=300):
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise AssertionError(f"nested session still running after {timeout}s:\n{self.output()}")
        self.out.close()
        return rc

    def output(self):
        return harness.tail(self.out_path, 80)

    def assert_nothing_left(self, timeout=30):
        left = []

        def gone():
            left[:] = processes_mentioning(self.marker)
            return not left

        try:
            harness.wait_for(gone, timeout, f"every process of {self.tmp} to end")
        except AssertionError:
            raise AssertionError(
                "processes left behind by the nested session:\n  "
                + "\n  ".join(f"pid {p} ({w}): {c}" for p, w, c in left)
                + f"\nnested output:\n{self.output()}"
            ) from None
        roots = glob.glob(os.path.join(self.tmp, "calc-systest-*"))
        assert roots, f"the nested session made no temporary folder under {self.tmp}:\n{self.output()}"
        for root in roots:
            assert os.path.isdir(os.path.join(root, "postgres", "data")), "PostgreSQL never ran"
            assert not os.path.exists(os.path.join(root, "postgres", "data", "postmaster.pid")), "PostgreSQL still has a pid file"
            assert not os.path.exists(os.path.join(root, "rabbitmq", "rabbitmq.pid")), "RabbitMQ still has a pid file"

    def cleanup(self):
        # Whatever the assertions said, never leave the nested session's processes on the machine.
        if getattr(self, "proc", None) and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        for pid, _, _ in processes_mentioning(self.marker):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        harness.remove_tree(self.base)


@pytest.fixture
def nested():
    n = Nested()
    try:
        yield n
    finally:
        n.cleanup()


def test_failing_session_leaves_nothing(nested):
    nested.start("-k", "passes or fails_deliberately")
    rc = nested.wait()
    out = nested.output()
    assert rc == 1, f"expected exit code 1 (tests failed), got {rc}:\n{out}"
    assert "1 failed, 1 passed" in out, out
    assert "deliberate failure" in out, out
    assert "service logs (last lines)" in out, "a failure report must carry the service log tails:\n" + out
    nested.assert_nothing_left()


def _wait_until_inside_test(nested):
    def inside():
        if nested.proc.poll() is not None:
            raise harness.ProcessDied(f"nested session exited with {nested.proc.returncode}:\n{nested.output()}")
        return os.path.exists(nested.ready_file)

    harness.wait_for(inside, 180, "the nested session to reach its test")


def test_interrupted_session_leaves_nothing(nested):
    nested.start("-k", "interrupted", env={"CALC_SELFTEST_READY_FILE": nested.ready_file})
    _wait_until_inside_test(nested)
    nested.proc.send_signal(signal.SIGTERM)
    rc = nested.wait(timeout=180)
    assert rc != 0, nested.output()
    nested.assert_nothing_left()


def test_killed_session_leaves_nothing(nested):
    # SIGKILL: no teardown runs; the services die with their parent and the watchdog stops the servers.
    nested.start("-k", "interrupted", env={"CALC_SELFTEST_READY_FILE": nested.ready_file})
    _wait_until_inside_test(nested)
    nested.proc.send_signal(signal.SIGKILL)
    nested.wait(timeout=30)
    nested.assert_nothing_left(timeout=90)


def test_servers_come_back_after_a_crash(bare_cluster):
    # Tests of invariant 1 crash and restart the session's servers; the data must survive.
    s = bare_cluster.servers
    s.psql("CREATE TABLE survivor (x int); INSERT INTO survivor VALUES (42)", db=bare_cluster.db)
    s.kill_postgres()
    s.start_postgres()
    assert s.psql("SELECT x FROM survivor", db=bare_cluster.db).strip() == "42"

    s.kill_rabbitmq()
    s.start_rabbitmq()
    vhosts = subprocess.run(
        [harness.SERVERS_CLI, "rabbitmqctl", s.rmq_dir, "list_vhosts"], capture_output=True, text=True, timeout=60
    )
    assert bare_cluster.vhost in vhosts.stdout.split(), vhosts.stdout + vhosts.stderr


def test_a_sanitizer_report_fails_the_test(bare_cluster):
    """A process that printed a sanitizer report is a failure even when it exits 0 on SIGTERM, or
    was killed on purpose."""
    cl = bare_cluster
    for i, mark in enumerate(harness.SANITIZER_MARKS):
        script = f'echo "==1==" ; echo "{mark} something"; trap "exit 0" TERM; sleep 600 & wait'
        p = cl.start_process(f"reporter-{i}", ["bash", "-c", script])
        harness.wait_for(lambda: mark in p.log(), 10, "the report to be printed")
        assert p.stop() == 0
        assert "printed a sanitizer report" in (p.problem() or ""), p.problem()
        p.expect_clean_exit = False
        assert "printed a sanitizer report" in (p.problem() or ""), p.problem()
        cl.procs.remove(p)  # checked here: the teardown must not fail on it
    quiet = cl.start_process("quiet", ["bash", "-c", 'echo "all fine"; trap "exit 0" TERM; sleep 600 & wait'])
    harness.wait_for(lambda: "all fine" in quiet.log(), 10, "the line to be printed")
    assert quiet.stop() == 0 and quiet.problem() is None
