# shellcheck shell=bash
# Shared helpers for scripts/up, scripts/down, scripts/test and scripts/lib/servers.
# Sourced, never run. Every wait here is a poll with a deadline.

CALC_ROOT=${CALC_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}

log() { printf '%s %s\n' "[$(date +%H:%M:%S)]" "$*" >&2; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# now_ms: monotonic-enough wall clock in milliseconds, for deadlines.
now_ms() {
    local s
    s=$(date +%s%N)
    echo $((s / 1000000))
}

# wait_until SECONDS WHAT CMD...: run CMD every 0.2 s until it succeeds; fail after SECONDS.
wait_until() {
    local secs=$1 what=$2
    shift 2
    local deadline=$(($(now_ms) + secs * 1000))
    while :; do
        "$@" && return 0
        if (($(now_ms) >= deadline)); then
            log "timed out after ${secs}s waiting for $what"
            return 1
        fi
        sleep 0.2
    done
}

# port_listening PORT: true when something listens on TCP PORT (any address, IPv4 or IPv6).
# Reads /proc/net so it needs neither ss nor netstat.
port_listening() {
    local hex
    hex=$(printf '%04X' "$1")
    awk -v p=":$hex" 'NR > 1 && $4 == "0A" && substr($2, length($2) - 4) == p { found = 1 }
                      END { exit !found }' /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# pid_alive PID: the process exists and is not a zombie.
pid_alive() {
    local pid=$1 state
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    state=$(awk '/^State:/ { print $2 }' "/proc/$pid/status" 2>/dev/null) || return 1
    [[ -n $state && $state != Z ]]
}

# pid_argv0 PID: the first word of the process's command line.
pid_argv0() {
    local a
    a=$( { tr '\0' '\n' <"/proc/$1/cmdline" | head -n 1; } 2>/dev/null)
    [[ -n $a ]] || return 1
    printf '%s\n' "$a"
}

# pid_is PID PATTERN: PID is alive and its argv[0] (or its executable) matches the glob PATTERN.
pid_is() {
    local pid=$1 pattern=$2 a exe
    pid_alive "$pid" || return 1
    a=$(pid_argv0 "$pid") || return 1
    # shellcheck disable=SC2053
    [[ $a == $pattern ]] && return 0
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
    # shellcheck disable=SC2053
    [[ ${exe% (deleted)} == $pattern ]]
}

# read_pidfile FILE: print the pid stored on the first line of FILE.
read_pidfile() {
    local p
    [[ -r $1 ]] || return 1
    p=$(head -n 1 "$1" 2>/dev/null | tr -dc '0-9')
    [[ -n $p ]] || return 1
    echo "$p"
}

pid_gone() { ! pid_alive "$1"; }

# stop_pid PID SECONDS WHAT: SIGTERM, wait up to SECONDS for the process to go, then SIGKILL.
stop_pid() {
    local pid=$1 secs=$2 what=$3
    pid_alive "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    wait_until "$secs" "$what (pid $pid) to exit" pid_gone "$pid" && return 0
    log "$what (pid $pid) ignored SIGTERM for ${secs}s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    wait_until 10 "$what (pid $pid) to die" pid_gone "$pid" || true
}

# as_user USER CMD...: run CMD as USER without an extra process in between (setpriv execs).
as_user() {
    local user=$1
    shift
    setpriv --reuid="$user" --regid="$user" --init-groups -- "$@"
}

# check_reachable USER DIR: USER can reach DIR (every ancestor searchable); a clear error otherwise.
check_reachable() {
    local user=$1 dir=$2 d
    d=$dir
    while [[ $d != / && -n $d ]]; do
        if [[ -e $d ]] && ! as_user "$user" test -x "$d"; then
            die "the '$user' user cannot enter $d (needed to reach $dir); run 'chmod o+x $d' or put the project somewhere else"
        fi
        d=$(dirname "$d")
    done
}

# random_hex BYTES: 2*BYTES lowercase hex characters from the kernel's CSPRNG.
random_hex() {
    od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'
}

# write_secrets FILE HEADER: unless FILE exists, FILE (mode 600) with the cluster's secrets, new
# random values, after the comment lines of HEADER (scripts/up's .cluster/secrets.env and
# compose's .env). A file from before the agents had a token of their own gets one.
write_secrets() {
    local file=$1 header=$2
    if [[ ! -s $file ]]; then
        (
            umask 077
            {
                printf '%s\n' "$header" | sed 's/^/# /'
                echo "CALC_DB_PASSWORD=$(random_hex 16)"
                echo "CALC_RABBITMQ_PASSWORD=$(random_hex 16)"
                echo "CALC_DBAGENT_TOKEN=$(random_hex 24)"
                echo "CALC_DBAGENT_AGENT_TOKEN=$(random_hex 24)"
                echo "CALC_AUTH_SECRET=$(random_hex 32)"
                echo "CALC_ADMIN_LOGIN=admin"
                echo "CALC_ADMIN_PASSWORD=$(random_hex 12)"
            } >"$file"
        )
    fi
    grep -q '^CALC_DBAGENT_AGENT_TOKEN=' "$file" ||
        echo "CALC_DBAGENT_AGENT_TOKEN=$(random_hex 24)" >>"$file"
    chmod 600 "$file"
}
