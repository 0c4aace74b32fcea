# shellcheck shell=bash
# The one list of Debian 12 packages the project needs to build, test and run locally.
# Sourced by scripts/up and scripts/test.

CALC_PACKAGES=(
    build-essential cmake pkg-config clang libclang-rt-14-dev clang-format
    libmicrohttpd-dev librabbitmq-dev libpq-dev libgrpc-dev protobuf-c-compiler libprotobuf-c-dev
    libjwt-dev libsodium-dev libjansson-dev libcmocka-dev
    postgresql rabbitmq-server
    python3-pytest python3-requests python3-grpcio python3-protobuf protobuf-compiler
    python3-jsonschema wrk
    curl procps util-linux openssl
)

# What the browser test (tests/browser) needs besides: a headless Chromium, its driver and the
# Python bindings that drive it. Only scripts/test installs them; a cluster runs without.
CALC_BROWSER_PACKAGES=(
    chromium chromium-driver python3-selenium
)

# What the compose test (tests/compose) needs besides: podman with runc, its netavark network
# stack (which drives iptables) and podman-compose, and debootstrap for the local base image.
CALC_CONTAINER_PACKAGES=(
    podman podman-compose runc netavark aardvark-dns iptables debootstrap
)

# missing_packages [PKG...]: print the packages of CALC_PACKAGES and PKG... that are not installed.
missing_packages() {
    local installed pkg all=("${CALC_PACKAGES[@]}" "$@")
    # One dpkg-query for the whole list; packages it does not know are simply absent from its output.
    installed=" $(dpkg-query -W -f='${Package}:${db:Status-Status} ' "${all[@]}" 2>/dev/null || true)"
    for pkg in "${all[@]}"; do
        [[ $installed == *" $pkg:installed "* ]] || echo "$pkg"
    done
}

# ensure_deps [PKG...]: install what is missing of CALC_PACKAGES and PKG...; a fast no-op
# (dpkg-query only) when all is present.
ensure_deps() {
    local missing
    mapfile -t missing < <(missing_packages "$@")
    ((${#missing[@]} == 0)) && return 0
    [[ $(id -u) == 0 ]] || die "missing packages (${missing[*]}); run as root so they can be installed"
    log "installing missing packages: ${missing[*]}"
    # Installing postgresql/rabbitmq-server must not start system services we would collide with:
    # policy-rc.d answering 101 tells invoke-rc.d to leave them alone. Ours run privately.
    local policy=/usr/sbin/policy-rc.d created_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        created_policy=1
    fi
    local rc=0
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null || rc=$?
    ((created_policy)) && rm -f "$policy"
    ((rc == 0)) || die "apt-get install failed (exit $rc) for: ${missing[*]}"
}
