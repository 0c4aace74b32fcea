# shellcheck shell=bash
# The local cluster's layout under .cluster/, shared by scripts/up and scripts/down.
# Needs common.sh.

CLUSTER_DIR=$CALC_ROOT/.cluster
CLUSTER_RUN=$CLUSTER_DIR/run
CLUSTER_LOGS=$CLUSTER_DIR/logs
CLUSTER_SECRETS=$CLUSTER_DIR/secrets.env
CLUSTER_PG=$CLUSTER_DIR/postgres
CLUSTER_RMQ=$CLUSTER_DIR/rabbitmq
RELEASE_BIN=$CALC_ROOT/build/release/bin

# service_pid NAME: the pid of our running service NAME (pid file + the expected binary), or fail.
service_pid() {
    local name=$1 pid
    pid=$(read_pidfile "$CLUSTER_RUN/$name.pid") || return 1
    pid_is "$pid" "$(service_bin "$name")" || return 1
    echo "$pid"
}

service_bin() {
    case $1 in
    dbagent) echo "$RELEASE_BIN/calc-dbagent" ;;
    api) echo "$RELEASE_BIN/calc-api" ;;
    agent-*) echo "$RELEASE_BIN/calc-agent" ;;
    *) return 1 ;;
    esac
}

# service_names: every service that has a pid file, in stopping order: agents (they hand their work
# back through dbagent), then the API, then dbagent.
service_names() {
    local f
    for f in "$CLUSTER_RUN"/agent-*.pid "$CLUSTER_RUN"/api.pid "$CLUSTER_RUN"/dbagent.pid; do
        [[ -e $f ]] || continue
        f=${f##*/}
        echo "${f%.pid}"
    done
}
