#!/usr/bin/env bash
# demo.sh - see pgfan stream a live shop's changes into an NDJSON file.
#
#   deploy/demo.sh [--once] [--seconds N] [--rate N] [--keep]
#
# On a fresh Debian 12, as root: installs the missing packages
# (deploy/install-deps.sh), builds pgfan (meson + ninja in ./build), starts a
# throwaway PostgreSQL 15 (tests/harness/pg.sh), loads the shop
# (deploy/shop/*.sql), starts pgfan with deploy/demo.conf, runs a live
# workload for --seconds (default 60) while showing `pgfan status`, the
# number of events written and the last one every 5 s, then waits until
# pgfan has confirmed everything the workload wrote and prints a summary.
# It also checks that the file holds exactly the row changes PostgreSQL
# decoded (a second slot counts them).
#
# Without --once, PostgreSQL and pgfan stay up until Ctrl-C, so you can
# look around (the summary says how). Everything it started is stopped on
# exit, the throwaway cluster is deleted, and the run directory (config,
# log, NDJSON) is deleted too unless --keep is given or something failed.
#
# Exit status: 0 on success (also after Ctrl-C once the demo is up),
# non-zero with a message on stderr otherwise.

# The cleanup functions run from traps, which shellcheck cannot see.
# shellcheck disable=SC2317
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
PGFAN=$ROOT/build/daemon/pgfan
PGSH=$ROOT/tests/harness/pg.sh

DURATION=60
RATE=500          # changes per second the workload aims at
ONCE=0
KEEP=0
CATCHUP_TIMEOUT=120
STOP_TIMEOUT=75   # > pgfan's default shutdown_timeout (60 s)

usage() {
    cat <<EOF
usage: deploy/demo.sh [--once] [--seconds N] [--rate N] [--keep]

  --once        stop by itself after the summary (default: keep running until Ctrl-C)
  --seconds N   run the live workload for N seconds (default $DURATION)
  --rate N      aim at about N row changes per second (default $RATE)
  --keep        keep the run directory (config, pgfan log, NDJSON output) at exit
EOF
}

die() {
    echo "demo: $*" >&2
    exit 1
}

while (($#)); do
    case "$1" in
    --once) ONCE=1 ;;
    --keep) KEEP=1 ;;
    --seconds | --rate)
        [[ $# -ge 2 && "$2" =~ ^[0-9]+$ && "$2" -gt 0 ]] ||
            { echo "demo: $1 needs a positive integer" >&2; usage >&2; exit 2; }
        if [[ "$1" == --seconds ]]; then DURATION=$2; else RATE=$2; fi
        shift
        ;;
    -h | --help) usage; exit 0 ;;
    *) echo "demo: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

say() {
    printf '\n\033[1m== %s\033[0m\n' "$*"
}

# LSN "X/Y" -> integer (bash arithmetic is 64-bit).
lsn_int() {
    local hi=${1%/*} lo=${1#*/}
    echo $(((16#$hi << 32) + 16#$lo))
}

# ---- cleanup: stop what we started, newest first ----

RUN=""
PGFAN_PID=""
WORKLOAD_PID=""
PG_STARTED=0
READY=0       # the demo is up: Ctrl-C from now on is the normal way out
CLEANED=0

stop_workload() {
    [[ -n "$WORKLOAD_PID" ]] || return 0
    kill -TERM "$WORKLOAD_PID" 2>/dev/null || true
    wait "$WORKLOAD_PID" 2>/dev/null || true
    WORKLOAD_PID=""
}

# SIGTERM = drain + clean stop; returns pgfan's exit status.
stop_pgfan() {
    [[ -n "$PGFAN_PID" ]] || return 0
    local pid=$PGFAN_PID status=0 deadline=$((SECONDS + STOP_TIMEOUT))
    PGFAN_PID=""
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "demo: pgfan did not stop within ${STOP_TIMEOUT}s of SIGTERM; killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || status=$?
    return "$status"
}

cleanup() {
    local rc=$? pgfan_rc=0
    ((CLEANED)) && return 0
    CLEANED=1
    trap - INT TERM
    stop_workload
    if [[ -n "$PGFAN_PID" ]]; then
        echo "demo: stopping pgfan (SIGTERM)"
        stop_pgfan || pgfan_rc=$?
        if ((pgfan_rc != 0)); then
            echo "demo: pgfan exited with status $pgfan_rc on SIGTERM (expected 0); see $RUN/pgfan.log" >&2
            tail -n 20 "$RUN/pgfan.log" >&2 || true
            ((rc != 0)) || rc=1
        fi
    fi
    if ((PG_STARTED)); then
        echo "demo: stopping PostgreSQL"
        "$PGSH" stop "$RUN/pg" || echo "demo: could not stop the PostgreSQL in $RUN/pg" >&2
    fi
    if [[ -n "$RUN" && -d "$RUN" ]]; then
        if ((rc == 0 && !KEEP)); then
            rm -rf "$RUN"
        else
            echo "demo: run directory kept: $RUN (config, pgfan.log, out/changes.ndjson)"
        fi
    fi
    exit "$rc"
}

on_signal() {
    echo
    if ((READY)); then
        echo "demo: interrupted; shutting down"
        exit 0
    fi
    echo "demo: interrupted before the demo was up" >&2
    exit 130
}

trap cleanup EXIT
trap on_signal INT TERM

# ---- 1. packages and build ----

say "1/6 packages"
"$ROOT/deploy/install-deps.sh" || die "could not install the build dependencies (see above)"

RUN=$(mktemp -d /tmp/pgfan-demo.XXXXXX)
chmod 755 "$RUN"      # the postgres user must reach $RUN/pg
mkdir -p "$RUN/out"

say "2/6 build"
(
    cd "$ROOT"
    if [[ ! -f build/build.ninja ]]; then
        meson setup build
    fi
    ninja -C build
) >"$RUN/build.log" 2>&1 || {
    tail -n 30 "$RUN/build.log" >&2
    die "could not build pgfan (full log: $RUN/build.log)"
}
[[ -x "$PGFAN" ]] || die "could not find $PGFAN after the build"
"$PGFAN" --version

# ---- 2. PostgreSQL + shop ----

say "3/6 PostgreSQL and the shop database"
PG_STARTED=1
"$PGSH" start "$RUN/pg" >/dev/null || die "could not start a throwaway PostgreSQL (see above)"
set -a
# shellcheck disable=SC1091
. "$RUN/pg/env"
set +a
# A user's own PGFAN_* overrides would point the demo elsewhere; log level may stay.
for v in $(compgen -e | grep -E '^PGFAN_(SOURCE|STATUS|SINK)_' || true); do
    unset "$v"
done

PSQL=(psql -X -q -v ON_ERROR_STOP=1)
"${PSQL[@]}" -d postgres -c 'CREATE DATABASE shop' || die "could not create database shop"
"${PSQL[@]}" -d shop -f "$ROOT/deploy/shop/schema.sql" -f "$ROOT/deploy/shop/seed.sql" \
    -f "$ROOT/deploy/shop/workload.sql" >/dev/null || die "could not load the shop schema and data"
"${PSQL[@]}" -d shop -At -F ' ' -c "
    SELECT 'loaded:', (SELECT count(*) FROM stores) || ' stores,',
           (SELECT count(*) FROM customers) || ' customers,',
           (SELECT count(*) FROM products) || ' products,',
           (SELECT count(*) FROM orders) || ' orders,',
           (SELECT count(*) FROM order_items) || ' order items'"
echo "PostgreSQL 15 on 127.0.0.1:$PGPORT (data in $RUN/pg)"

# ---- 3. pgfan ----

say "4/6 pgfan"
CONF=$RUN/pgfan.conf
OUT=$RUN/out/changes.ndjson
SOCK=$RUN/pgfan.sock
DSN="host=$PGHOST port=$PGPORT user=$PGUSER dbname=shop application_name=pgfan-demo"
sed -e "s|@DSN@|$DSN|" -e "s|@OUT@|$OUT|" -e "s|@SOCKET@|$SOCK|" \
    "$ROOT/deploy/demo.conf" >"$CONF"
"$PGFAN" check-config -c "$CONF" || die "pgfan rejected the generated config $CONF"

# A second slot sees the same WAL: at the end it tells how many row changes
# PostgreSQL decoded, to compare with the file.
"${PSQL[@]}" -d shop -At -c \
    "SELECT 'check slot at ' || lsn FROM pg_create_logical_replication_slot('demo_check', 'wal2json')"

"$PGFAN" run -c "$CONF" 2>"$RUN/pgfan.log" &
PGFAN_PID=$!
echo "pgfan running, pid $PGFAN_PID, log $RUN/pgfan.log"

# Changes made before the slot exists are not captured: wait until pgfan
# has created it and streams from it.
deadline=$((SECONDS + 30))
until [[ "$("${PSQL[@]}" -d shop -At -c \
    "SELECT active FROM pg_replication_slots WHERE slot_name = 'pgfan'")" == t ]] &&
    "$PGFAN" status -s "$SOCK" --json >/dev/null 2>&1; do
    if ! kill -0 "$PGFAN_PID" 2>/dev/null; then
        tail -n 20 "$RUN/pgfan.log" >&2
        PGFAN_PID=""
        die "pgfan exited during startup (log: $RUN/pgfan.log)"
    fi
    if ((SECONDS >= deadline)); then
        tail -n 20 "$RUN/pgfan.log" >&2
        die "pgfan is not streaming from slot \"pgfan\" after 30 s (log: $RUN/pgfan.log)"
    fi
    sleep 0.2
done
echo "pgfan is streaming from slot \"pgfan\""

# ---- 4. live workload ----

say "5/6 live workload: ${DURATION}s at about $RATE changes/s"
BATCH=$(((RATE + 4) / 5))
(
    trap 'exit 0' TERM
    # A batch every 200 ms, on a fixed schedule (nanoseconds): the time a
    # CALL takes is not added to the period.
    start=$(date +%s%N)
    end=$((start + DURATION * 1000000000))
    i=0
    while (($(date +%s%N) < end)); do
        i=$((i + 1))
        # a new seed per batch (setseed range is -1..1)
        "${PSQL[@]}" -d shop -c "CALL shop_workload($BATCH, 0.$(printf '%05d' $((i % 100000))))" ||
            exit 1
        wait_ns=$((start + i * 200000000 - $(date +%s%N)))
        if ((wait_ns > 0)); then
            sleep "$(printf '%d.%09d' $((wait_ns / 1000000000)) $((wait_ns % 1000000000)))"
        fi
    done
) &
WORKLOAD_PID=$!

show_progress() {
    local lines
    echo "--- $(date +%T)"
    "$PGFAN" status -s "$SOCK" || echo "(pgfan status failed)"
    lines=$(wc -l <"$OUT" 2>/dev/null || echo 0)
    echo "events in $OUT: $lines"
    if ((lines > 0)); then
        echo "last: $(tail -n 1 "$OUT" | cut -c1-200)"
    fi
}

while kill -0 "$WORKLOAD_PID" 2>/dev/null; do
    # 5 s between displays, but notice the end of the workload sooner
    for ((t = 0; t < 10; t++)); do
        kill -0 "$WORKLOAD_PID" 2>/dev/null || break
        sleep 0.5
    done
    kill -0 "$PGFAN_PID" 2>/dev/null || {
        PGFAN_PID=""
        tail -n 20 "$RUN/pgfan.log" >&2
        die "pgfan exited while the workload ran (log: $RUN/pgfan.log)"
    }
    show_progress
done
wl_rc=0
wait "$WORKLOAD_PID" || wl_rc=$?
WORKLOAD_PID=""
((wl_rc == 0)) || die "the workload failed (status $wl_rc)"

# ---- 5. catch up ----

say "6/6 catching up"
# The insert position: the test cluster commits asynchronously, so the
# write position (pg_current_wal_lsn) can lag behind the last commits.
END_LSN=$("${PSQL[@]}" -d shop -At -c 'SELECT pg_current_wal_insert_lsn()')
echo "workload done; server WAL at $END_LSN; waiting for pgfan to confirm it (at most ${CATCHUP_TIMEOUT}s)"
end_int=$(lsn_int "$END_LSN")
deadline=$((SECONDS + CATCHUP_TIMEOUT))
confirmed=""
while :; do
    confirmed=$("$PGFAN" status -s "$SOCK" --json 2>/dev/null |
        sed -n 's/.*"confirmed_lsn":"\([0-9A-Fa-f]*\/[0-9A-Fa-f]*\)".*/\1/p' || true)
    if [[ -n "$confirmed" ]] && (($(lsn_int "$confirmed") >= end_int)); then
        break
    fi
    if ! kill -0 "$PGFAN_PID" 2>/dev/null; then
        PGFAN_PID=""
        tail -n 20 "$RUN/pgfan.log" >&2
        die "pgfan exited while catching up (log: $RUN/pgfan.log)"
    fi
    if ((SECONDS >= deadline)); then
        "$PGFAN" status -s "$SOCK" >&2 || true
        die "pgfan confirmed ${confirmed:-nothing} after ${CATCHUP_TIMEOUT}s, not $END_LSN"
    fi
    sleep 0.2
done
echo "pgfan confirmed $confirmed >= $END_LSN"
"$PGFAN" status -s "$SOCK"

# ---- summary ----

count() { grep -c "$1" "$OUT" 2>/dev/null || true; }
total=$(wc -l <"$OUT")
n_c=$(count '"op":"c"')
n_u=$(count '"op":"u"')
n_d=$(count '"op":"d"')
n_t=$(count '"op":"t"')
echo
echo "events written: $total (inserts c=$n_c, updates u=$n_u, deletes d=$n_d, truncates t=$n_t)"
echo "per table:"
grep -o '"table":"[^"]*"' "$OUT" | sort | uniq -c | sed 's/"table"://; s/"//g' || true

# What PostgreSQL decoded for the same tables up to END_LSN.
read -r pg_i pg_u pg_d < <("${PSQL[@]}" -d shop -At -F ' ' -c "
    SELECT count(*) FILTER (WHERE a = 'I'), count(*) FILTER (WHERE a = 'U'), count(*) FILTER (WHERE a = 'D')
    FROM (SELECT data::json->>'action' AS a
          FROM pg_logical_slot_peek_changes('demo_check', '$END_LSN', NULL, 'format-version', '2',
               'add-tables', 'public.orders,public.order_items,public.customers,public.stores,public.products,public.countries')) c")
"${PSQL[@]}" -d shop -c "SELECT pg_drop_replication_slot('demo_check')" >/dev/null
echo "PostgreSQL decoded: $pg_i inserts, $pg_u updates, $pg_d deletes"
if [[ "$n_c $n_u $n_d" != "$pg_i $pg_u $pg_d" ]]; then
    die "the file does not match what PostgreSQL decoded (c/u/d $n_c/$n_u/$n_d vs $pg_i/$pg_u/$pg_d)"
fi
((total > 0)) || die "pgfan wrote no events"
echo "the file matches what PostgreSQL decoded"

# The same events in Kafka: pgfan runs librdkafka's mock cluster (brokers = mock:3).
KAFKA=$(sed -n 's/.*read it with: kcat -b \([^ ]*\) .*/\1/p' "$RUN/pgfan.log" | tail -n 1)
if [[ -n "$KAFKA" ]] && command -v kcat >/dev/null; then
    n_kafka=$(timeout 30 kcat -b "$KAFKA" -C -t shop.public.orders -e -q -f '%k\n' 2>/dev/null | wc -l || true)
    echo "Kafka (mock cluster at $KAFKA): $n_kafka messages in topic shop.public.orders" \
        "(changes of orders, plus a tombstone after each delete)"
fi

cat <<EOF

Where to look:
  events:   $OUT            (tail -f, or: tail -n 1 $OUT | python3 -m json.tool)
  status:   $PGFAN status -s $SOCK [--json]
  database: psql "host=$PGHOST port=$PGPORT user=$PGUSER dbname=shop"
  more traffic: psql "host=$PGHOST port=$PGPORT user=$PGUSER dbname=shop" -c "CALL shop_workload(1000, 0.5)"
  kafka:    kcat -b ${KAFKA:-<address in the pgfan log>} -C -t shop.public.orders -e -f '%k %s\n'   (also shop.public.order_items, ...)
  pgfan log: $RUN/pgfan.log
  config:    $CONF
EOF

if ((ONCE)); then
    echo
    echo "demo: done (--once)"
    exit 0
fi

READY=1
echo
echo "pgfan and PostgreSQL keep running; press Ctrl-C to stop them and clean up."
pgfan_rc=0
wait "$PGFAN_PID" || pgfan_rc=$?
# Only reached when pgfan stopped by itself.
PGFAN_PID=""
tail -n 20 "$RUN/pgfan.log" >&2
die "pgfan exited unexpectedly (status $pgfan_rc; log: $RUN/pgfan.log)"
