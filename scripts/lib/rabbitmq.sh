# shellcheck shell=bash
# A private RabbitMQ node in a directory of our own, run as the rabbitmq user, with its own node
# name, epmd port and distribution port, so it never meets a system RabbitMQ (5672/4369/25672).
# Layout under DIR: home/ (erlang cookie), mnesia/, log/, epmd.pid, rabbitmq.pid, rabbitmq.conf,
# enabled_plugins, definitions.json, ports. Needs common.sh.
#
#   rmq_start DIR PORT DIST_PORT EPMD_PORT USER PASSWORD   start (users from a definitions file)
#   rmq_stop DIR                                             SIGTERM the node, then its epmd
#   rmq_running DIR                                          the node recorded in DIR is alive
#   rmq_ctl DIR ARGS...                                      rabbitmqctl against the node
#   rmq_add_vhost DIR VHOST USER                             a vhost with full rights for USER
#   rmq_definitions USER PASSWORD                            a definitions file with USER in it
#   rmq_join DIR SEED_DIR                                    make DIR's node a member of SEED_DIR's cluster
#
# Knobs of rmq_start for the nodes of one cluster, or a node with more listeners:
#   RMQ_COOKIE       the Erlang cookie of a new node (nodes of a cluster must share it)
#   RMQ_EPMD_SHARED  1: an epmd already listens on EPMD_PORT (another node's, of the same cluster,
#                    so the nodes find each other); this node starts none and stops none
#   RMQ_EXTRA_CONF   a file whose lines are added to rabbitmq.conf (a TLS listener, say)

RMQ_USER=${RMQ_USER:-rabbitmq}
RMQ_SCRIPTS=${RMQ_SCRIPTS:-/usr/lib/rabbitmq/bin}

# The node name is derived from the directory, so two private nodes never share a name.
rmq_nodename() {
    local h
    h=$(printf '%s' "$(realpath -m "$1")" | cksum | cut -d' ' -f1)
    echo "calc-$h@localhost"
}

rmq_pid() { read_pidfile "$1/rabbitmq.pid"; }
rmq_epmd_pid() { read_pidfile "$1/epmd.pid"; }

rmq_running() {
    local pid
    pid=$(rmq_pid "$1") || return 1
    pid_is "$pid" '*beam*'
}

# rmq_env DIR: the environment every rabbitmq script needs to find our node and nothing else.
rmq_env() {
    local dir=$1
    # shellcheck disable=SC1091
    . "$dir/ports"
    printf '%s\n' \
        "HOME=$dir/home" \
        "RABBITMQ_CONF_ENV_FILE=$dir/rabbitmq-env.conf" \
        "RABBITMQ_NODENAME=$(rmq_nodename "$dir")" \
        "RABBITMQ_USE_LONGNAME=false" \
        "RABBITMQ_NODE_IP_ADDRESS=127.0.0.1" \
        "RABBITMQ_NODE_PORT=$RMQ_PORT" \
        "RABBITMQ_DIST_PORT=$RMQ_DIST_PORT" \
        "ERL_EPMD_PORT=$RMQ_EPMD_PORT" \
        "ERL_EPMD_ADDRESS=127.0.0.1" \
        "RABBITMQ_MNESIA_BASE=$dir/mnesia" \
        "RABBITMQ_LOG_BASE=$dir/log" \
        "RABBITMQ_PID_FILE=$dir/rabbitmq.pid" \
        "RABBITMQ_CONFIG_FILE=$dir/rabbitmq.conf" \
        "RABBITMQ_ADVANCED_CONFIG_FILE=$dir/advanced.config" \
        "RABBITMQ_ENABLED_PLUGINS_FILE=$dir/enabled_plugins" \
        "RABBITMQ_PLUGINS_EXPAND_DIR=$dir/plugins-expand" \
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=-kernel inet_dist_use_interface {127,0,0,1}"
}

rmq_ctl() {
    local dir=$1 envs
    shift
    dir=$(realpath -m "$dir")
    mapfile -t envs < <(rmq_env "$dir")
    (cd "$dir" && as_user "$RMQ_USER" env "${envs[@]}" "$RMQ_SCRIPTS/rabbitmqctl" -q "$@")
}

# rmq_password_hash PASSWORD: RabbitMQ's rabbit_password_hashing_sha256 format,
# base64(salt ++ sha256(salt ++ password)) with a 4-byte salt.
rmq_password_hash() {
    local salt hash
    hex2bin() { printf '%b' "$(printf '%s' "$1" | sed 's/../\\x&/g')"; }
    salt=$(random_hex 4)
    hash=$({ hex2bin "$salt"; printf '%s' "$1"; } | sha256sum | cut -c1-64)
    { hex2bin "$salt"; hex2bin "$hash"; } | base64 -w0
}

# rmq_definitions USER PASSWORD: a definitions file (JSON) with vhost / and USER, an administrator
# with every right on it. The password is stored only as its hash.
rmq_definitions() {
    local user=$1 hash
    hash=$(rmq_password_hash "$2")
    cat <<JSON
{"vhosts":[{"name":"/"}],
 "users":[{"name":"$user","password_hash":"$hash","hashing_algorithm":"rabbit_password_hashing_sha256","tags":["administrator"]}],
 "permissions":[{"user":"$user","vhost":"/","configure":".*","write":".*","read":".*"}]}
JSON
}

rmq_port_free() {
    local port=$1 var=$2 what=$3
    port_listening "$port" && die "port $port ($what) is already in use by another program; choose another port ($var)"
    return 0
}

rmq_amqp_ready() {
    port_listening "$1" && (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

rmq_start() {
    local dir=$1 port=$2 dist_port=$3 epmd_port=$4 user=$5 password=$6 envs
    dir=$(realpath -m "$dir")
    mkdir -p "$dir"
    chown "$RMQ_USER:" "$dir"
    chmod 750 "$dir"
    check_reachable "$RMQ_USER" "$dir"
    if rmq_running "$dir"; then
        # shellcheck disable=SC1091
        . "$dir/ports"
        [[ $RMQ_PORT == "$port" ]] || die "the RabbitMQ node in $dir already runs on port $RMQ_PORT, not $port; stop it first"
        wait_until 60 "RabbitMQ on port $port" rmq_amqp_ready "$port" ||
            die "RabbitMQ in $dir is running but not answering on port $port (see $dir/log)"
        return 0
    fi
    rmq_port_free "$port" RABBITMQ_PORT "RabbitMQ AMQP"
    rmq_port_free "$dist_port" RABBITMQ_DIST_PORT "RabbitMQ distribution"

    mkdir -p "$dir/home" "$dir/mnesia" "$dir/log" "$dir/plugins-expand"
    printf 'RMQ_PORT=%s\nRMQ_DIST_PORT=%s\nRMQ_EPMD_PORT=%s\n' "$port" "$dist_port" "$epmd_port" >"$dir/ports"
    : >"$dir/rabbitmq-env.conf"
    # No plugins: nothing we use needs them, and each one slows the boot.
    echo '[].' >"$dir/enabled_plugins"
    echo '[].' >"$dir/advanced.config"
    if [[ ! -s $dir/home/.erlang.cookie ]]; then
        if [[ -n ${RMQ_COOKIE:-} ]]; then
            printf '%s' "$RMQ_COOKIE" >"$dir/home/.erlang.cookie"
        else
            random_hex 20 | tr 'a-f' 'A-F' >"$dir/home/.erlang.cookie"
        fi
    fi
    chmod 400 "$dir/home/.erlang.cookie"
    # The user comes from a definitions file imported at every boot: no slow rabbitmqctl calls,
    # and the password always matches the one we hold. The default guest user is never created.
    rmq_definitions "$user" "$password" >"$dir/definitions.json"
    chmod 600 "$dir/definitions.json"
    cat >"$dir/rabbitmq.conf" <<CONF
listeners.tcp.1 = 127.0.0.1:$port
load_definitions = $dir/definitions.json
log.file.level = info
log.console = false
CONF
    if [[ -n ${RMQ_EXTRA_CONF:-} ]]; then
        cat "$RMQ_EXTRA_CONF" >>"$dir/rabbitmq.conf" || die "cannot read RMQ_EXTRA_CONF $RMQ_EXTRA_CONF"
    fi
    chown -R "$RMQ_USER:" "$dir"

    mapfile -t envs < <(rmq_env "$dir")
    # Our own epmd, on our own port and loopback only, with a pid we know so stop can end it;
    # or, for the second and later nodes of a cluster, the first node's.
    if [[ ${RMQ_EPMD_SHARED:-} == 1 ]]; then
        port_listening "$epmd_port" || die "RMQ_EPMD_SHARED=1 but no epmd listens on port $epmd_port"
    elif ! { pid=$(rmq_epmd_pid "$dir") && pid_is "$pid" '*epmd*'; }; then
        rmq_port_free "$epmd_port" RABBITMQ_EPMD_PORT "RabbitMQ epmd"
        (cd "$dir" && exec setsid env "${envs[@]}" setpriv --reuid="$RMQ_USER" --regid="$RMQ_USER" --init-groups -- \
            epmd -port "$epmd_port" -address 127.0.0.1 </dev/null >>"$dir/log/epmd.log" 2>&1) &
        echo $! >"$dir/epmd.pid"
        wait_until 10 "epmd on port $epmd_port" port_listening "$epmd_port" ||
            { cat "$dir/log/epmd.log" >&2; die "epmd did not start on port $epmd_port"; }
    fi
    log "RabbitMQ: starting node $(rmq_nodename "$dir") on port $port"
    (cd "$dir" && exec setsid env "${envs[@]}" setpriv --reuid="$RMQ_USER" --regid="$RMQ_USER" --init-groups -- \
        "$RMQ_SCRIPTS/rabbitmq-server" </dev/null >>"$dir/log/stdout.log" 2>&1) &
    local starter=$!
    if ! wait_until 90 "RabbitMQ on port $port" rmq_amqp_ready "$port"; then
        tail -n 30 "$dir/log/stdout.log" >&2
        kill -TERM "$starter" 2>/dev/null || true
        die "RabbitMQ failed to start in $dir (port $port); logs in $dir/log"
    fi
    wait_until 10 "RabbitMQ pid file" rmq_running "$dir" ||
        die "RabbitMQ answers on port $port but wrote no pid file in $dir"
}

rmq_stop() {
    local dir=$1 pid
    dir=$(realpath -m "$dir")
    if rmq_running "$dir"; then
        pid=$(rmq_pid "$dir")
        # The node shuts down cleanly on SIGTERM; rabbitmqctl stop would cost a CLI boot.
        stop_pid "$pid" 60 "RabbitMQ"
    fi
    if pid=$(rmq_epmd_pid "$dir") && pid_is "$pid" '*epmd*'; then
        stop_pid "$pid" 10 "epmd"
    fi
    rm -f "$dir/rabbitmq.pid" "$dir/epmd.pid"
}

rmq_add_vhost() {
    local dir=$1 vhost=$2 user=$3
    rmq_ctl "$dir" add_vhost "$vhost" >/dev/null 2>&1 || true
    rmq_ctl "$dir" set_permissions -p "$vhost" "$user" '.*' '.*' '.*' >/dev/null
}

# rmq_join DIR SEED_DIR: DIR's node leaves its own (fresh) cluster and joins SEED_DIR's. Both nodes
# share a cookie and an epmd (see rmq_start's knobs). Users and vhosts come from the seed.
rmq_join() {
    local dir=$1 seed=$2
    rmq_ctl "$dir" stop_app >/dev/null
    rmq_ctl "$dir" join_cluster "$(rmq_nodename "$seed")" >/dev/null
    rmq_ctl "$dir" start_app >/dev/null
}
