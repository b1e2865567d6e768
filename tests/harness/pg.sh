#!/usr/bin/env bash
# pg.sh - a throwaway PostgreSQL 15 for pgfan's integration tests.
#
#   pg.sh start DIR     initdb + start a fresh cluster in DIR/data, print its env
#   pg.sh stop DIR      stop it (fast, then immediate, then SIGKILL) and rm -rf DIR
#   pg.sh restart DIR   restart the cluster in DIR on the same port
#   pg.sh env DIR       print DIR/env
#
# The server listens on 127.0.0.1 on a free port and on a unix socket in DIR,
# with wal_level=logical, trust authentication (also for replication) and
# wal2json allowed as an output plugin. Nothing is kept: `start` wipes any
# leftovers of an earlier (crashed) cluster in DIR first, killing processes
# still running in its data directory.
#
# DIR/env holds KEY=VALUE lines (PGHOST, PGPORT, PGUSER, PGDATABASE and the
# PGFAN_TEST_* names the C harness reads); load it with
#   set -a; . DIR/env; set +a
#
# As root the server runs as the `postgres` OS user (PostgreSQL refuses
# root), so DIR is chowned to it and must be reachable by it (/tmp is).
set -euo pipefail

readonly MARKER=pgfan-pg.marker

die() {
    echo "pg.sh: $*" >&2
    exit 1
}

usage() {
    echo "usage: pg.sh start|stop|restart|env DIR" >&2
    exit 2
}

# Server binaries: Debian keeps them off PATH, under pg_config --bindir.
# /usr/local/bin symlinks that some images carry are deliberately not used.
find_bindir() {
    local dir=""
    if command -v pg_config >/dev/null 2>&1; then
        dir=$(pg_config --bindir 2>/dev/null || true)
    fi
    if [[ -z "$dir" || ! -x "$dir/initdb" ]]; then
        dir=/usr/lib/postgresql/15/bin
    fi
    [[ -x "$dir/initdb" && -x "$dir/pg_ctl" && -x "$dir/postgres" ]] ||
        die "could not find the PostgreSQL 15 server binaries in $dir: install postgresql-15"
    BINDIR=$dir
}

# Runs a server command as the cluster's owner, with a clean PG* environment
# and a working directory that owner can enter.
as_owner() {
    (
        cd "$DIR"
        unset PGHOST PGPORT PGUSER PGDATABASE PGDATA PGOPTIONS PGSERVICE PGPASSWORD
        if [[ $(id -u) -eq 0 ]]; then
            exec runuser -u postgres -- "$@"
        else
            exec "$@"
        fi
    )
}

# True when something accepts connections on 127.0.0.1:$1 or the kernel has
# a listener on it. bash's /dev/tcp needs no extra tools; ss, when present,
# also sees listeners bound to other addresses.
port_busy() {
    local port=$1
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        return 0
    fi
    if command -v ss >/dev/null 2>&1 &&
        [[ -n "$(ss -Hltn "sport = :$port" 2>/dev/null)" ]]; then
        return 0
    fi
    return 1
}

# A free port below the usual ephemeral range (32768+), so outgoing
# connections of other processes do not take it between probe and start.
pick_port() {
    local port i
    for ((i = 0; i < 200; i++)); do
        port=$((20000 + RANDOM % 12000))
        if ! port_busy "$port"; then
            echo "$port"
            return 0
        fi
    done
    die "could not find a free port: 200 random ports in 20000-31999 were busy"
}

# Pids of the processes whose working directory is $1: the postmaster and
# all its children chdir to the data directory, nothing else does.
pids_in() {
    # find complains about processes that vanish while it walks /proc.
    { find /proc -mindepth 2 -maxdepth 2 -name cwd -lname "$1" -printf '%h\n' 2>/dev/null || true; } |
        sed 's|^/proc/||'
}

# SIGKILLs whatever still runs in the data directory (a postmaster that
# ignored pg_ctl, or children orphaned by a postmaster killed with -9) and
# waits, bounded, until they are gone.
kill_leftovers() {
    local data=$1 pids i
    [[ -d "$data" ]] || return 0
    data=$(cd "$data" && pwd -P)
    pids=$(pids_in "$data")
    [[ -n "$pids" ]] || return 0
    # shellcheck disable=SC2086 # one pid per word
    kill -KILL $pids 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        [[ -n "$(pids_in "$data")" ]] || return 0
        sleep 0.05
    done
    echo "pg.sh: processes still running in $data: $(pids_in "$data" | tr '\n' ' ')" >&2
}

# Stops whatever runs in DIR/data, however it was left.
stop_cluster() {
    local data=$DIR/data
    [[ -d "$data" ]] || return 0
    if [[ -f "$data/postmaster.pid" ]]; then
        as_owner "$BINDIR/pg_ctl" stop -D "$data" -m fast -w -t 30 >/dev/null 2>&1 ||
            as_owner "$BINDIR/pg_ctl" stop -D "$data" -m immediate -w -t 10 >/dev/null 2>&1 ||
            true
    fi
    kill_leftovers "$data"
}

# DIR must be ours before anything in it is deleted.
check_ours() {
    [[ "$DIR" != "/" ]] || die "refusing to use / as the cluster directory"
    if [[ -d "$DIR" && ! -f "$DIR/$MARKER" ]] &&
        [[ -n "$(ls -A "$DIR" 2>/dev/null)" ]]; then
        die "refusing to wipe $DIR: not empty and not made by pg.sh (no $MARKER)"
    fi
}

write_conf() {
    local data=$DIR/data port=$1
    cat >>"$data/postgresql.conf" <<EOF

# --- pgfan test cluster (tests/harness/pg.sh) ---
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$DIR'
wal_level = logical
max_replication_slots = 20
max_wal_senders = 20
wal_sender_timeout = 10s
fsync = off
synchronous_commit = off
# Asynchronous commits reach walsenders only once the WAL writer flushes
# them: flush often so tests see changes within milliseconds.
wal_writer_delay = 10ms
full_page_writes = off
shared_buffers = 128MB
max_connections = 100
log_line_prefix = '%m [%p] %q%a '
EOF
    # 15.19+ refuses output plugins not listed here (wal2json included);
    # older minors refuse to start with the unknown setting.
    if as_owner "$BINDIR/postgres" -C output_plugin_libraries -D "$data" >/dev/null 2>&1; then
        echo "output_plugin_libraries = 'pgoutput, test_decoding, wal2json'" >>"$data/postgresql.conf"
    fi

    cat >"$data/pg_hba.conf" <<EOF
# pgfan test cluster: loopback only, no passwords
local   all             all                     trust
host    all             all     127.0.0.1/32    trust
local   replication     all                     trust
host    replication     all     127.0.0.1/32    trust
EOF
}

write_env() {
    local port=$1
    cat >"$DIR/env.tmp" <<EOF
PGHOST=127.0.0.1
PGPORT=$port
PGUSER=postgres
PGDATABASE=postgres
PGFAN_TEST_PGHOST=127.0.0.1
PGFAN_TEST_PGPORT=$port
PGFAN_TEST_PGUSER=postgres
PGFAN_TEST_PGSOCKDIR=$DIR
PGFAN_TEST_PGDATA=$DIR/data
PGFAN_TEST_PGLOG=$DIR/postgres.log
PGFAN_TEST_PGBIN=$BINDIR
EOF
    chmod 644 "$DIR/env.tmp"
    mv "$DIR/env.tmp" "$DIR/env"
}

wait_ready() {
    local port=$1 i
    for ((i = 0; i < 300; i++)); do
        if "$BINDIR/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -t 1; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# pg_ctl start (the port is in postgresql.conf); returns pg_ctl's status,
# the log tells why.
start_server() {
    as_owner "$BINDIR/pg_ctl" start -D "$DIR/data" -l "$DIR/postgres.log" -w -t 60 >/dev/null 2>&1
}

show_log() {
    if [[ -f "$DIR/postgres.log" ]]; then
        echo "pg.sh: last lines of $DIR/postgres.log:" >&2
        tail -n 20 "$DIR/postgres.log" >&2
    fi
}

cmd_start() {
    check_ours
    mkdir -p "$DIR"
    DIR=$(cd "$DIR" && pwd -P)
    touch "$DIR/$MARKER"
    stop_cluster
    rm -rf "$DIR/data" "$DIR/env" "$DIR/postgres.log" "$DIR"/.s.PGSQL.*

    if [[ $(id -u) -eq 0 ]]; then
        id postgres >/dev/null 2>&1 || die "could not find the postgres OS user: install postgresql-15"
        chown postgres: "$DIR"
        chmod 755 "$DIR"
        runuser -u postgres -- test -w "$DIR" ||
            die "could not use $DIR: the postgres user cannot write there (put it under /tmp)"
    fi

    if ! as_owner "$BINDIR/initdb" -D "$DIR/data" -U postgres --auth=trust \
        --encoding=UTF8 --no-locale --no-sync >"$DIR/initdb.log" 2>&1; then
        cat "$DIR/initdb.log" >&2
        die "could not initialize the cluster in $DIR/data"
    fi

    local port attempt
    for attempt in 1 2 3; do
        port=$(pick_port)
        # The port goes into postgresql.conf; rewrite it on a retry.
        if ((attempt == 1)); then
            write_conf "$port"
        else
            sed -i "s/^port = .*/port = $port/" "$DIR/data/postgresql.conf"
        fi
        if start_server; then
            break
        fi
        # Someone took the port between probe and start: try another one.
        if ((attempt == 3)) || ! grep -q "could not bind\|Address already in use" "$DIR/postgres.log" 2>/dev/null; then
            show_log
            stop_cluster
            die "could not start PostgreSQL in $DIR/data"
        fi
    done
    if ! wait_ready "$port"; then
        show_log
        stop_cluster
        die "could not connect to PostgreSQL on 127.0.0.1:$port: not ready after 30 s"
    fi
    write_env "$port"
    cat "$DIR/env"
}

cmd_stop() {
    [[ -d "$DIR" ]] || return 0
    DIR=$(cd "$DIR" && pwd -P)
    check_ours
    stop_cluster
    rm -rf "$DIR"
}

cmd_restart() {
    [[ -f "$DIR/env" ]] || die "could not restart: no cluster in $DIR (run pg.sh start first)"
    DIR=$(cd "$DIR" && pwd -P)
    local port
    port=$(sed -n 's/^PGPORT=//p' "$DIR/env")
    as_owner "$BINDIR/pg_ctl" stop -D "$DIR/data" -m fast -w -t 30 >/dev/null 2>&1 || true
    kill_leftovers "$DIR/data"
    if ! start_server || ! wait_ready "$port"; then
        show_log
        die "could not restart PostgreSQL in $DIR/data"
    fi
}

cmd_env() {
    [[ -f "$DIR/env" ]] || die "could not read $DIR/env: no cluster started there"
    cat "$DIR/env"
}

(($# == 2)) || usage
[[ -n "$2" ]] || usage
DIR=$2
find_bindir

case "$1" in
start) cmd_start ;;
stop) cmd_stop ;;
restart) cmd_restart ;;
env) cmd_env ;;
*) usage ;;
esac
