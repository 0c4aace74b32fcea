# shellcheck shell=bash
# A private PostgreSQL cluster in a directory of our own, run as the postgres user.
# Layout under DIR: data/ (PGDATA), run/ (unix socket), postgres.log. Needs common.sh.
#
#   pg_start DIR PORT        initdb on first use, start, wait until it accepts connections
#   pg_stop DIR              pg_ctl stop -m fast (then SIGKILL after a deadline)
#   pg_running DIR           the postmaster recorded in DIR is alive
#   pg_psql DIR PORT ARGS... psql as the superuser over the private socket
#   pg_ensure_db DIR PORT DB ROLE PASSWORD   role (password kept in sync) and database it owns

PG_USER=${PG_USER:-postgres}

pg_bindir() {
    local d
    if command -v pg_config >/dev/null && d=$(pg_config --bindir 2>/dev/null) && [[ -x $d/initdb ]]; then
        echo "$d"
        return
    fi
    # Debian puts the server binaries in a versioned directory; take the newest one.
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        [[ -x $d/initdb ]] && echo "$d" && return
    done
    die "PostgreSQL server binaries not found (is the postgresql package installed?)"
}

# pg_sockdir DIR: where the unix socket lives: DIR/run, or, when that path would be too long for a
# unix socket (108 bytes), a short directory in /tmp named after DIR.
pg_sockdir() {
    local dir=$1
    if ((${#dir} <= 80)); then
        echo "$dir/run"
    else
        echo "/tmp/calc-pg-$(printf '%s' "$dir" | cksum | cut -d' ' -f1)"
    fi
}

pg_pid() {
    read_pidfile "$1/data/postmaster.pid"
}

pg_running() {
    local pid
    pid=$(pg_pid "$1") || return 1
    pid_is "$pid" '*postgres*'
}

# pg_leftovers DIR: a crashed postmaster not yet reaped, or its backends still running (their cwd
# is the data directory); PostgreSQL refuses to start over them.
pg_leftovers() {
    local dir=$1 pid d
    pid=$(pg_pid "$dir") && [[ -e /proc/$pid ]] && return 0
    for d in /proc/[0-9]*; do
        [[ $(readlink "$d/cwd" 2>/dev/null) == "$dir/data" ]] && return 0
    done
    return 1
}
pg_no_leftovers() { ! pg_leftovers "$1"; }

pg_ready() {
    local dir=$1 port=$2
    as_user "$PG_USER" "$(pg_bindir)/pg_isready" -q -h "$(pg_sockdir "$dir")" -p "$port" -U "$PG_USER" -d postgres
}

# PostgreSQL keeps its durability (fsync, full-page writes) unless PG_UNSAFE_NO_FSYNC=1: then an OS
# crash or a power loss can lose commits already acknowledged (accepted expressions, results) and can
# corrupt the database. A crash of PostgreSQL alone loses nothing either way (synchronous_commit
# stays on). The test harness opts out, for speed, on its throw-away servers.
pg_fsync_wanted() {
    case ${PG_UNSAFE_NO_FSYNC:-0} in
    0) echo on ;;
    1) echo off ;;
    *) die "PG_UNSAFE_NO_FSYNC must be 0 or 1, not '${PG_UNSAFE_NO_FSYNC}'" ;;
    esac
}

pg_start() {
    local dir=$1 port=$2 bin
    pg_fsync_wanted >/dev/null
    dir=$(realpath -m "$dir")
    bin=$(pg_bindir)
    mkdir -p "$dir"
    chown "$PG_USER:" "$dir"
    chmod 700 "$dir"
    check_reachable "$PG_USER" "$dir"
    if pg_running "$dir"; then
        wait_until 30 "PostgreSQL in $dir to accept connections" pg_ready "$dir" "$port" ||
            die "PostgreSQL in $dir is running but not answering on port $port (see $dir/postgres.log)"
        local fsync
        fsync=$(pg_psql "$dir" "$port" -d postgres -Atc "SHOW fsync")
        [[ $fsync == "$(pg_fsync_wanted)" ]] && return 0
        # Started with the other durability: restarted with the one asked for now.
        log "PostgreSQL in $dir runs with fsync=$fsync: restarting it with fsync=$(pg_fsync_wanted)"
        pg_stop "$dir"
    fi
    wait_until 30 "the processes of a crashed PostgreSQL in $dir to go" pg_no_leftovers "$dir" || true
    port_listening "$port" && die "port $port (PostgreSQL) is already in use by another program; choose another port (PG_PORT)"
    if [[ ! -s $dir/data/PG_VERSION ]]; then
        log "PostgreSQL: initdb in $dir/data"
        as_user "$PG_USER" "$bin/initdb" -D "$dir/data" -U "$PG_USER" -E UTF8 --locale=C.UTF-8 \
            --auth-local=peer --auth-host=scram-sha-256 2>&1 | as_user "$PG_USER" tee "$dir/initdb.log" >/dev/null ||
            { tail -n 20 "$dir/initdb.log" >&2; die "initdb failed in $dir/data"; }
    fi
    local sockdir
    sockdir=$(pg_sockdir "$dir")
    mkdir -p "$sockdir"
    chown "$PG_USER:" "$sockdir"
    chmod 755 "$sockdir"
    # Settings on the command line, so a changed port or directory needs no config rewrite.
    # Durable unless PG_UNSAFE_NO_FSYNC=1 (see pg_fsync_wanted).
    local opts="-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories='$sockdir'"
    opts+=" -c max_connections=200 -c fsync=$(pg_fsync_wanted)"
    [[ $(pg_fsync_wanted) == on ]] || opts+=" -c full_page_writes=off"
    # PG_EXTRA_OPTS: more settings, later ones winning (another listen address, TLS, ...).
    opts+=" ${PG_EXTRA_OPTS:-}"
    as_user "$PG_USER" "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -o "$opts" -w -t 60 -s start ||
        { tail -n 30 "$dir/postgres.log" >&2; die "PostgreSQL failed to start in $dir (port $port)"; }
    wait_until 30 "PostgreSQL on port $port" pg_ready "$dir" "$port" ||
        { tail -n 30 "$dir/postgres.log" >&2; die "PostgreSQL did not become ready on port $port"; }
}

pg_stop() {
    local dir=$1 pid
    dir=$(realpath -m "$dir")
    pg_running "$dir" || return 0
    pid=$(pg_pid "$dir")
    as_user "$PG_USER" "$(pg_bindir)/pg_ctl" -D "$dir/data" -m fast -w -t 30 -s stop ||
        stop_pid "$pid" 10 "PostgreSQL"
    wait_until 10 "PostgreSQL (pid $pid) to exit" pid_gone "$pid" || kill -KILL "$pid" 2>/dev/null || true
    [[ $(pg_sockdir "$dir") == /tmp/calc-pg-* ]] && rm -rf "$(pg_sockdir "$dir")"
    return 0
}

pg_psql() {
    local dir=$1 port=$2
    shift 2
    dir=$(realpath -m "$dir")
    as_user "$PG_USER" "$(pg_bindir)/psql" -X -q -v ON_ERROR_STOP=1 -h "$(pg_sockdir "$dir")" -p "$port" -U "$PG_USER" "$@"
}

# sql_literal S: S as a single-quoted SQL string literal.
sql_literal() {
    local s=${1//\'/\'\'}
    printf "'%s'" "$s"
}

pg_ensure_db() {
    local dir=$1 port=$2 db=$3 role=$4 password=$5
    [[ $db =~ ^[a-z_][a-z0-9_]*$ && $role =~ ^[a-z_][a-z0-9_]*$ ]] ||
        die "database and role names must be lowercase identifiers: '$db' '$role'"
    # The password goes in on stdin, never on a command line another user could read.
    pg_psql "$dir" "$port" -d postgres <<SQL >/dev/null
SELECT format('CREATE ROLE %I LOGIN', '$role') WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$role')
\gexec
ALTER ROLE $role LOGIN PASSWORD $(sql_literal "$password");
SELECT format('CREATE DATABASE %I OWNER %I', '$db', '$role') WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '$db')
\gexec
SQL
}
