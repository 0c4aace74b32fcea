#!/usr/bin/env bash
# Runs bench-dbagent against a private PostgreSQL (started in a temporary folder with the same
# scripts/lib/servers code as scripts/up) and a calc-dbagent, then stops both. Run as root.
#
#   bench/dbagent/run.sh [BIN_DIR] [bench-dbagent options...]
#   BIN_DIR defaults to build/release/bin. Extra environment passes to calc-dbagent
#   (e.g. DBAGENT_THREADS=8).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bin=${1:-$root/build/release/bin}
(($# > 0)) && shift
servers=$root/scripts/lib/servers
tmp=$(mktemp -d /tmp/calc-bench-XXXXXX)
chmod 755 "$tmp"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pg_port=$(free_port)
dba_port=$(free_port)
password=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
dba_pid=
cleanup() {
    [[ -n $dba_pid ]] && kill -TERM "$dba_pid" 2>/dev/null && wait "$dba_pid" || true
    "$servers" stop-pg "$tmp/postgres" >/dev/null 2>&1 || true
    rm -rf "$tmp"
}
trap cleanup EXIT
"$servers" start-pg "$tmp/postgres" "$pg_port" >"$tmp/servers.log" 2>&1
echo "$password" | "$servers" pg-ensure-db "$tmp/postgres" "$pg_port" bench calc >>"$tmp/servers.log" 2>&1
export DB_HOST=127.0.0.1 DB_PORT=$pg_port DB_USERNAME=calc DB_PASSWORD=$password DB_NAME=bench
export DBAGENT_HOST=127.0.0.1 DBAGENT_PORT=$dba_port DBAGENT_TOKEN=$token
"$bin/calc-dbagent" >"$tmp/dbagent.log" 2>&1 &
dba_pid=$!
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$dba_port") 2>/dev/null && break
    sleep 0.1
done
DBAGENT_ADDR=127.0.0.1:$dba_port "$bin/bench-dbagent" "$@"
