#!/usr/bin/env bash
# install-deps.sh - install the Debian 12 packages pgfan needs to build and test.
#
# Installs only what is missing: each package is checked with dpkg-query
# first, `apt-get update` runs once and only when something must be
# installed. Idempotent; on a machine that has everything it prints one line.
# Needs root only when something is missing.
set -euo pipefail

PACKAGES=(
    build-essential pkg-config meson ninja-build
    libpq-dev postgresql-15 postgresql-15-wal2json postgresql-client-15
    check libjsmn-dev
    librdkafka-dev kcat libcurl4-openssl-dev zlib1g-dev libssl-dev libsystemd-dev
    systemd python3-yaml groff-base    # tests/deploy: systemd-analyze, manifests, man page
    clang libclang-rt-14-dev valgrind
    prometheus                         # tests/integration: promtool check metrics
)

missing=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    if [[ "$status" != "install ok installed" ]]; then
        missing+=("$pkg")
    fi
done

if ((${#missing[@]} == 0)); then
    echo "install-deps: all ${#PACKAGES[@]} packages present"
    exit 0
fi

echo "install-deps: missing: ${missing[*]}"
if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps: could not install packages: not running as root" >&2
    echo "HINT: run as root, or: sudo apt-get install ${missing[*]}" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# Mirrors on CI machines fail now and then; a retry costs little.
for attempt in 1 2 3; do
    if apt-get update -qq && apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${missing[@]}" </dev/null; then
        echo "install-deps: installed ${missing[*]}"
        exit 0
    fi
    echo "install-deps: apt-get failed (attempt $attempt of 3)" >&2
done
echo "install-deps: could not install packages: apt-get failed 3 times: ${missing[*]}" >&2
exit 1
