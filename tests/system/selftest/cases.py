"""Cases for test_harness.py, run only in a nested pytest session (CALC_SELFTEST=1).

The file name does not match test_*.py, so the outer session never collects it by itself."""

import os
import time

import pytest

import harness

BINARIES = all(os.access(os.path.join(harness.BIN_DIR, b), os.X_OK) for b in ("calc-dbagent", "calc-api", "calc-agent"))


def stubborn(c):
    """A process group that ignores SIGTERM: teardown must escalate to SIGKILL."""
    p = c.start_process("stubborn", ["bash", "-c", 'trap "" TERM; sleep 600'], stop_timeout=1)
    p.expect_clean_exit = False
    return p


def test_passes(bare_cluster):
    s = bare_cluster.servers
    assert s.psql("SELECT 1", db=bare_cluster.db).strip() == "1"
    assert os.path.exists(os.path.join(s.rmq_dir, "rabbitmq.pid"))


def test_fails_deliberately(bare_cluster):
    stubborn(bare_cluster)
    if BINARIES:
        bare_cluster.start(agents=2)
    assert False, "deliberate failure: the outer test checks that nothing is left behind"


@pytest.mark.skipif(not os.environ.get("CALC_SELFTEST_READY_FILE"), reason="driven by test_harness.py")
def test_interrupted(bare_cluster):
    # Only the stubborn group: the real services' stop path is proven by test_fails_deliberately.
    stubborn(bare_cluster)
    with open(os.environ["CALC_SELFTEST_READY_FILE"], "w") as f:
        f.write(str(os.getpid()))
    time.sleep(600)  # the outer test signals this session long before
