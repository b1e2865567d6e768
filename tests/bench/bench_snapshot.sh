#!/usr/bin/env bash
# bench_snapshot.sh - pgfan's initial snapshot into the file sink against a
# plain `COPY orders TO STDOUT` (psql) of the same table in the same run.
#
#   tests/bench/bench_snapshot.sh [-n N] [--workers W] [--results FILE] [--no-append] [-k]
#
# Not part of the pass/fail suite. Method:
#  1. a throwaway PostgreSQL 15 (tests/harness/pg.sh), fsync off, shared_buffers
#     1GB, autovacuum off;
#  2. the shop schema and seed data (deploy/shop), then N more orders from one
#     generate_series INSERT, VACUUM ANALYZE, CHECKPOINT;
#  3. `COPY orders TO STDOUT` through psql into a file, once to warm the cache,
#     then measured (wall time, rows/s);
#  4. `pgfan run` with snapshot = initial, snapshot_workers = W, the file sink
#     and tables = public.orders; measured until the log says the snapshot is
#     durable in the sink ("snapshot: done"), then SIGTERM. Its rows/s is rows
#     over the time from the start of the snapshot (slot created) to
#     durability, as pgfan logs it; CPU and peak RSS of the whole process come
#     from /usr/bin/time -v.
# Checks that pgfan wrote one line per row. Prints a markdown table and
# appends it, with date, machine and N, to docs/bench/results.md (--results
# FILE elsewhere, --no-append not at all).
#
# Needs: root or the postgres-capable harness (pg.sh), GNU time,
# build/daemon/pgfan (PGFAN_BENCH_BIN to use another). Disk: about 1 kB per
# row in /tmp.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
PGFAN=${PGFAN_BENCH_BIN:-$ROOT/build/daemon/pgfan}
PGSH=$ROOT/tests/harness/pg.sh

N=1000000
WORKERS=2
RESULTS=$ROOT/docs/bench/results.md
APPEND=1
KEEP=0

usage() {
    cat <<EOF
usage: tests/bench/bench_snapshot.sh [-n N] [--workers W] [--results FILE] [--no-append] [-k]

  -n N            orders added to the seed data (default $N)
  --workers W     [source] snapshot_workers (default $WORKERS)
  --results FILE  append the results there (default docs/bench/results.md)
  --no-append     print the table only
  -k, --keep      keep the run directory and do not stop PostgreSQL
EOF
}

die() {
    echo "bench: $*" >&2
    exit 1
}

while (($#)); do
    case "$1" in
    -n)
        [[ $# -ge 2 && "$2" =~ ^[0-9]+$ && "$2" -ge 1000 ]] || die "-n needs an integer >= 1000"
        N=$2
        shift
        ;;
    --workers)
        [[ $# -ge 2 && "$2" =~ ^[0-9]+$ && "$2" -ge 1 && "$2" -le 32 ]] || die "--workers needs 1..32"
        WORKERS=$2
        shift
        ;;
    --results)
        [[ $# -ge 2 ]] || die "--results needs a file"
        RESULTS=$2
        shift
        ;;
    --no-append) APPEND=0 ;;
    -k | --keep) KEEP=1 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "bench: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

log() {
    printf '[bench %s] %s\n' "$(date +%T)" "$*"
}

now() {
    date +%s.%N
}

fsub() {
    awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a - b }'
}

time_field() {
    sed -n "s/^[[:space:]]*$2: //p" "$1" | head -n 1
}

cpu_of() {
    awk -v u="$(time_field "$1" 'User time (seconds)')" -v s="$(time_field "$1" 'System time (seconds)')" \
        'BEGIN { printf "%.2f", u + s }'
}

rss_of() {
    awk -v k="$(time_field "$1" 'Maximum resident set size (kbytes)')" 'BEGIN { printf "%.1f", k / 1024 }'
}

# ---- prerequisites ----

if [[ ! -x /usr/bin/time ]]; then
    log "installing GNU time (/usr/bin/time is missing)"
    apt-get install -y -qq time </dev/null >/dev/null || die "could not install GNU time: apt-get install time"
fi
if [[ ! -x "$PGFAN" ]]; then
    log "building pgfan"
    (cd "$ROOT" && { [[ -f build/build.ninja ]] || meson setup build; } && ninja -C build) >&2 ||
        die "could not build pgfan"
fi
BUILD_DIR=$(cd "$(dirname "$PGFAN")/.." && pwd -P)
BUILD_INFO=$(python3 - "$BUILD_DIR/meson-info/intro-buildoptions.json" 2>/dev/null <<'EOF' || echo "build options unknown"
import json, sys
opts = {o["name"]: o["value"] for o in json.load(open(sys.argv[1]))}
print("buildtype=%s, b_sanitize=%s" % (opts.get("buildtype"), opts.get("b_sanitize")))
EOF
)
case "$BUILD_INFO" in
*b_sanitize=none* | "build options unknown") ;;
*) log "WARNING: pgfan is built with sanitizers ($BUILD_INFO): numbers are not representative" ;;
esac

# ---- cleanup ----

RUN=$(mktemp -d /tmp/pgfan-bench-snap.XXXXXX)
chmod 755 "$RUN"
PG_STARTED=0
TIME_PID=""
CLIENT_PID=""

cleanup() {
    local rc=$?
    trap - INT TERM
    if [[ -n "$CLIENT_PID" ]]; then
        kill -TERM "$CLIENT_PID" 2>/dev/null || true
    fi
    if [[ -n "$TIME_PID" ]]; then
        wait "$TIME_PID" 2>/dev/null || true
    fi
    if ((KEEP)); then
        echo "bench: kept $RUN (PostgreSQL still running; stop it with: $PGSH stop $RUN/pg)"
    else
        if ((PG_STARTED)); then
            "$PGSH" stop "$RUN/pg" || echo "bench: could not stop PostgreSQL in $RUN/pg" >&2
        fi
        rm -rf "$RUN"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

need_kb=$((N + 1024 * 1024))
avail_kb=$(df -Pk "$RUN" | awk 'NR == 2 { print $4 }')
((avail_kb > need_kb)) || die "not enough space in $RUN: ${avail_kb} kB free, about ${need_kb} kB needed"

# ---- 1. PostgreSQL ----

log "starting a throwaway PostgreSQL"
PG_STARTED=1
"$PGSH" start "$RUN/pg" >/dev/null || die "could not start PostgreSQL"
set -a
# shellcheck disable=SC1091
. "$RUN/pg/env"
set +a
PSQL=(psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PGPORT" -U postgres)
"${PSQL[@]}" -d postgres -c "ALTER SYSTEM SET fsync = off" \
    -c "ALTER SYSTEM SET shared_buffers = '1GB'" \
    -c "ALTER SYSTEM SET max_wal_size = '16GB'" \
    -c "ALTER SYSTEM SET checkpoint_timeout = '1h'" \
    -c "ALTER SYSTEM SET autovacuum = off" || die "could not tune PostgreSQL"
"$PGSH" restart "$RUN/pg" || die "could not restart PostgreSQL with the benchmark settings"
PG_VERSION=$("${PSQL[@]}" -d postgres -At -c 'SHOW server_version')

# ---- 2. the shop with N more orders ----

log "loading the shop schema and seed data, then $N orders"
"${PSQL[@]}" -d postgres -c 'CREATE DATABASE shop'
"${PSQL[@]}" -d shop -f "$ROOT/deploy/shop/schema.sql" -f "$ROOT/deploy/shop/seed.sql" >/dev/null
t0=$(now)
"${PSQL[@]}" -d shop -c "INSERT INTO orders (store_id, customer_id, status, total_amount, currency,
        created_at, updated_at)
    SELECT 1 + i % 200, 1 + i % 5000, (ARRAY['pending', 'paid', 'shipped', 'delivered'])[1 + i % 4],
        (i % 100000) / 100.0, 'EUR', timestamptz '2026-01-01' + i * interval '7 seconds',
        timestamptz '2026-01-01' + i * interval '9 seconds'
    FROM generate_series(1, $N) i" -c 'VACUUM ANALYZE orders' -c 'CHECKPOINT'
log "loaded in $(fsub "$(now)" "$t0")s"
ROWS=$("${PSQL[@]}" -d shop -At -c 'SELECT count(*) FROM orders')
TABLE_MB=$("${PSQL[@]}" -d shop -At -c "SELECT round(pg_relation_size('orders') / 1048576.0, 1)")

# ---- 3. plain COPY ----

log "COPY orders TO STDOUT (psql), warm-up then measured"
"${PSQL[@]}" -d shop -c 'COPY orders TO STDOUT' >"$RUN/copy.txt"
t0=$(now)
/usr/bin/time -v -o "$RUN/copy.time" "${PSQL[@]}" -d shop -c 'COPY orders TO STDOUT' >"$RUN/copy.txt"
COPY_S=$(fsub "$(now)" "$t0")
COPY_LINES=$(wc -l <"$RUN/copy.txt")
[[ "$COPY_LINES" == "$ROWS" ]] || die "COPY wrote $COPY_LINES lines for $ROWS rows"
COPY_MB=$(awk -v b="$(stat -c %s "$RUN/copy.txt")" 'BEGIN { printf "%.1f", b / 1e6 }')
rm -f "$RUN/copy.txt"
log "COPY: ${COPY_S}s"

# ---- 4. pgfan ----

cat >"$RUN/pgfan.conf" <<EOF
[source]
dsn = host=127.0.0.1 port=$PGPORT user=postgres dbname=shop application_name=pgfan-bench
slot = bench_snapshot
tables = public.orders
snapshot = initial
snapshot_workers = $WORKERS
state_dir = $RUN

[status]
socket = $RUN/pgfan.sock

[log]
level = info

[sink.file]
path = $RUN/pgfan.ndjson
fsync_interval = 100ms
EOF
for v in $(compgen -e | grep '^PGFAN_' || true); do
    unset "$v"
done
"$PGFAN" check-config -c "$RUN/pgfan.conf" >/dev/null || die "pgfan rejected $RUN/pgfan.conf"

log "pgfan: snapshot = initial, $WORKERS worker(s)"
t0=$(now)
/usr/bin/time -v -o "$RUN/pgfan.time" "$PGFAN" run -c "$RUN/pgfan.conf" 2>"$RUN/pgfan.log" &
TIME_PID=$!
start_s=$SECONDS
while [[ -z "$CLIENT_PID" ]]; do
    CLIENT_PID=$(awk '{ print $1 }' "/proc/$TIME_PID/task/$TIME_PID/children" 2>/dev/null || true)
    [[ -n "$CLIENT_PID" ]] && break
    kill -0 "$TIME_PID" 2>/dev/null || { cat "$RUN/pgfan.log" >&2; die "pgfan exited at once"; }
    ((SECONDS - start_s < 10)) || die "could not find pgfan's pid under /usr/bin/time ($TIME_PID)"
    sleep 0.05
done
deadline_s=$((120 + N / 20000))
until grep -q 'snapshot: done' "$RUN/pgfan.log"; do
    kill -0 "$CLIENT_PID" 2>/dev/null || { tail -n 20 "$RUN/pgfan.log" >&2; CLIENT_PID=""; die "pgfan exited during the snapshot"; }
    ((SECONDS - start_s < deadline_s)) || { tail -n 5 "$RUN/pgfan.log" >&2; die "no snapshot within ${deadline_s}s"; }
    sleep 0.05
done
PGFAN_WALL=$(fsub "$(now)" "$t0")
kill -TERM "$CLIENT_PID"
rc=0
wait "$TIME_PID" || rc=$?
TIME_PID=""
CLIENT_PID=""
((rc == 0)) || { tail -n 20 "$RUN/pgfan.log" >&2; die "pgfan exited with status $rc after SIGTERM (expected 0)"; }
# "snapshot: read R rows of 1 table in S s" and "snapshot: done: R rows ... after S s"
READ_S=$(sed -n 's/.*snapshot: read [0-9]* rows of [0-9]* tables\{0,1\} in \([0-9.]*\) s.*/\1/p' "$RUN/pgfan.log")
DONE_S=$(sed -n 's/.*snapshot: done: [0-9]* rows .* after \([0-9.]*\) s.*/\1/p' "$RUN/pgfan.log")
LINES=$(wc -l <"$RUN/pgfan.ndjson")
R_LINES=$(grep -c '"op":"r"' "$RUN/pgfan.ndjson" || true)
OUT_MB=$(awk -v b="$(stat -c %s "$RUN/pgfan.ndjson")" 'BEGIN { printf "%.1f", b / 1e6 }')
((KEEP)) || rm -f "$RUN/pgfan.ndjson"
[[ "$LINES" == "$ROWS" && "$R_LINES" == "$ROWS" ]] ||
    die "pgfan wrote $LINES lines ($R_LINES op r) for $ROWS rows: results not appended"
log "pgfan: read in ${READ_S}s, durable after ${DONE_S}s, process ${PGFAN_WALL}s"

# ---- 5. report ----

MACHINE="$(nproc) x$(grep -m 1 'model name' /proc/cpuinfo | cut -d: -f2), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)"
COMMIT=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)
row() {
    awk -v name="$1" -v rows="$ROWS" -v s="$2" -v ref="$COPY_S" -v cpu="$3" -v rss="$4" -v mb="$5" 'BEGIN {
        printf "| %s | %.2f | %d | %.2f | %s | %s | %s |\n", name, s, rows / s, ref / s, cpu, rss, mb
    }'
}
TABLE=$(
    echo "| reader | wall s | rows/s | ratio to COPY | CPU s (user+sys) | peak RSS MB | output MB |"
    echo "| --- | --- | --- | --- | --- | --- | --- |"
    # shellcheck disable=SC2016 # backquotes for markdown, not a command
    row 'psql `COPY orders TO STDOUT`' "$COPY_S" "$(cpu_of "$RUN/copy.time")" "$(rss_of "$RUN/copy.time")" "$COPY_MB"
    row "pgfan snapshot, $WORKERS worker(s), file sink (to durable)" "$DONE_S" "$(cpu_of "$RUN/pgfan.time")" \
        "$(rss_of "$RUN/pgfan.time")" "$OUT_MB"
)
REPORT=$(
    cat <<EOF
## $(date -u '+%Y-%m-%d %H:%M UTC') - bench_snapshot.sh, N=$N, snapshot_workers=$WORKERS

Machine: $MACHINE; PostgreSQL $PG_VERSION; pgfan $COMMIT ($BUILD_INFO).
Table: the shop's orders, $ROWS rows ($N from generate_series after seed.sql), $TABLE_MB MB.
pgfan's time runs from the snapshot's start (slot created) to "durable in every sink" as it logs
it (all rows read after ${READ_S}s); the whole process, connect to durable, took ${PGFAN_WALL}s.
Its CPU and RSS are the whole process's (SIGTERM right after).

$TABLE
EOF
)
echo
echo "$REPORT"
echo
if ((APPEND)); then
    mkdir -p "$(dirname "$RESULTS")"
    if [[ ! -s "$RESULTS" ]]; then
        printf '# Benchmark results\n\nAppended by the scripts in tests/bench/ (see docs/bench/README.md).\n' >"$RESULTS"
    fi
    printf '\n%s\n' "$REPORT" >>"$RESULTS"
    log "appended to $RESULTS"
fi
