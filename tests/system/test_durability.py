"""The local cluster's PostgreSQL is durable unless asked otherwise (scripts/lib/pg.sh, used by
scripts/up): fsync and full-page writes on by default; PG_UNSAFE_NO_FSYNC=1 (scripts/up
--unsafe-no-fsync) turns them off; a running server with the other setting is restarted with the
one asked for, keeping its data; a value it cannot honour stops it before anything starts."""

import os
import subprocess

import harness

CLI = harness.SERVERS_CLI


def servers(*args, unsafe=None, check=True):
    env = dict(os.environ)
    env.pop("PG_UNSAFE_NO_FSYNC", None)
    if unsafe is not None:
        env["PG_UNSAFE_NO_FSYNC"] = unsafe
    return subprocess.run([CLI, *args], env=env, check=check, capture_output=True, text=True, timeout=120)


def settings(pg_dir, port):
    sql = "SELECT current_setting('fsync') || ' ' || current_setting('full_page_writes')"
    return servers("psql", pg_dir, str(port), "-Atc", sql).stdout.strip()


def test_postgres_is_durable_unless_told_otherwise(calc_session):
    pg_dir = os.path.join(calc_session.root, "pg-durability")
    port = harness.free_port()
    try:
        servers("start-pg", pg_dir, str(port))
        assert settings(pg_dir, port) == "on on"
        servers("psql", pg_dir, str(port), "-c", "CREATE TABLE kept (x int); INSERT INTO kept VALUES (7)")

        # Asked for the other durability while running: restarted with it, data kept.
        r = servers("start-pg", pg_dir, str(port), unsafe="1")
        assert "restarting it with fsync=off" in r.stdout + r.stderr
        assert settings(pg_dir, port) == "off off"
        assert servers("psql", pg_dir, str(port), "-Atc", "SELECT x FROM kept").stdout.strip() == "7"

        # Back to the default.
        servers("start-pg", pg_dir, str(port))
        assert settings(pg_dir, port) == "on on"

        # The same again changes nothing.
        r = servers("start-pg", pg_dir, str(port))
        assert "restarting" not in r.stdout + r.stderr

        r = servers("start-pg", pg_dir, str(port), unsafe="yes", check=False)
        assert r.returncode != 0
        assert "PG_UNSAFE_NO_FSYNC must be 0 or 1, not 'yes'" in r.stdout + r.stderr
        assert settings(pg_dir, port) == "on on"  # left as it was
    finally:
        servers("stop-pg", pg_dir, check=False)
