#!/usr/bin/env bash
# bench_file.sh - pgfan's file sink against pg_recvlogical on the same WAL.
#
#   tests/bench/bench_file.sh [-n N] [--seed S] [--sink file|kafka|elasticsearch] [--results FILE] [--no-append] [-k]
#
# Not part of the pass/fail suite. Method (reference/baseline.md section 4):
#  1. a throwaway PostgreSQL 15 (tests/harness/pg.sh) tuned for the run:
#     fsync off (commits still wait for their WAL write), shared_buffers 1GB, max_wal_size 16GB, checkpoint_timeout 1h,
#     autovacuum off, logical_decoding_work_mem 64MB;
#  2. the shop schema and seed data (deploy/shop), CHECKPOINT;
#  3. two wal2json slots created BEFORE the workload, so both clients decode
#     exactly the same WAL from scratch;
#  4. CALL bench_workload(N): 70% INSERT, 25% UPDATE, 5% DELETE on orders,
#     mostly 1-10-row transactions (deploy/shop/workload.sql);
#  5. ENDPOS = pg_current_wal_lsn(), VACUUM ANALYZE orders, CHECKPOINT
#     (nothing runs in the background during the drains);
#  6. drain slot 1 with pg_recvlogical --endpos ENDPOS --no-loop -f FILE
#     (format-version=2, include-lsn, include-xids, include-timestamp,
#     include-pk; TCP 127.0.0.1);
#  7. drain slot 2 with `pgfan run` (file sink, tables = public.orders, TCP
#     127.0.0.1) until the slot's confirmed_flush_lsn >= ENDPOS, then SIGTERM.
#     --sink kafka: the Kafka sink instead, producing to librdkafka's mock
#     cluster in a process of its own (build/tests/mock_broker, one broker,
#     topic bench.public.orders with 64 partitions; the mock keeps only the
#     last ~5 MiB per partition, which is fine: nothing reads it back). The
#     changes are counted from pgfan's status (sink events), not a file.
#     BENCH_KAFKA_LINGER=50ms sets the sink's linger (default 5ms).
#     --sink elasticsearch: the Elasticsearch sink against the test server
#     (tests/es_server/es_server.py, a Python process of its own, daily
#     indices by created_at); its CPU time is reported, to show whether it
#     was the bottleneck.
# Each client's CPU (user+sys) and peak RSS come from /usr/bin/time -v; its
# walsender's CPU is sampled from /proc. pgfan's wall time ends when the
# server has its confirmation (what its contract is about), so it includes
# the sink's fsync interval and the feedback delay.
#
# Prints a markdown table and appends it, with date, machine and N, to
# docs/bench/results.md (--results FILE elsewhere, --no-append not at all).
# Checks that both clients saw exactly the workload's inserts, updates and
# deletes; exits 1 (and appends nothing) when they did not.
#
# Needs: root or the postgres-capable harness (pg.sh), GNU time
# (apt-get install time), build/daemon/pgfan (built here if missing).
# Disk: about 3 kB per change in /tmp (WAL + two outputs; the first output
# is deleted before the second drain).

# Functions called from traps are invisible to shellcheck.
# shellcheck disable=SC2317
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
PGFAN=${PGFAN_BENCH_BIN:-$ROOT/build/daemon/pgfan}
PGSH=$ROOT/tests/harness/pg.sh

N=1000000
SEED=0.42
SINK=file
RESULTS=$ROOT/docs/bench/results.md
APPEND=1
KEEP=0

usage() {
    cat <<EOF
usage: tests/bench/bench_file.sh [-n N] [--seed S] [--results FILE] [--no-append] [-k]

  -n N            row changes in the workload (default $N)
  --seed S        workload seed, -1..1 (default $SEED)
  --sink S        pgfan's sink: file (default), kafka (a mock broker process) or
                  elasticsearch (the test server, a Python process)
  --results FILE  append the results there (default docs/bench/results.md)
  --no-append     print the table only
  -k, --keep      keep the run directory (outputs, logs) and do not stop PostgreSQL
EOF
}

die() {
    echo "bench: $*" >&2
    exit 1
}

while (($#)); do
    case "$1" in
    -n)
        [[ $# -ge 2 && "$2" =~ ^[0-9]+$ && "$2" -ge 100 ]] || die "-n needs an integer >= 100"
        N=$2
        shift
        ;;
    --seed)
        [[ $# -ge 2 ]] || die "--seed needs a value"
        SEED=$2
        shift
        ;;
    --sink)
        [[ $# -ge 2 && ( "$2" == file || "$2" == kafka || "$2" == elasticsearch ) ]] ||
            die "--sink needs file, kafka or elasticsearch"
        SINK=$2
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

# a - b with 3 decimals
fsub() {
    awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a - b }'
}

# LSN "X/Y" -> integer
lsn_int() {
    local hi=${1%/*} lo=${1#*/}
    echo $(((16#$hi << 32) + 16#$lo))
}

# ---- prerequisites ----

if [[ ! -x /usr/bin/time ]]; then
    log "installing GNU time (/usr/bin/time is missing)"
    apt-get install -y -qq time </dev/null >/dev/null || die "could not install GNU time: apt-get install time"
fi
command -v pg_recvlogical >/dev/null || die "could not find pg_recvlogical: install postgresql-client-15"
if [[ ! -x "$PGFAN" ]]; then
    log "building pgfan"
    (cd "$ROOT" && { [[ -f build/build.ninja ]] || meson setup build; } && ninja -C build) >&2 ||
        die "could not build pgfan"
fi

# What kind of binary is measured: a sanitizer or -O0 build is not a benchmark.
BUILD_INFO=$(python3 - "$ROOT/build/meson-info/intro-buildoptions.json" 2>/dev/null <<'EOF' || echo "build options unknown"
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

RUN=$(mktemp -d /tmp/pgfan-bench.XXXXXX)
chmod 755 "$RUN"
PG_STARTED=0
TIME_PID=""
CLIENT_PID=""
BROKER_PID=""

cleanup() {
    local rc=$?
    trap - INT TERM
    if [[ -n "$CLIENT_PID" ]]; then
        kill -TERM "$CLIENT_PID" 2>/dev/null || true
    fi
    if [[ -n "$TIME_PID" ]]; then
        wait "$TIME_PID" 2>/dev/null || true
    fi
    if [[ -n "$BROKER_PID" ]]; then
        kill -TERM "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
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

# Rough disk check: WAL ~1 kB and each output ~1 kB per change, with margin.
need_kb=$((N * 3 + 1024 * 1024))
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
    -c "ALTER SYSTEM SET synchronous_commit = on" \
    -c "ALTER SYSTEM SET full_page_writes = off" \
    -c "ALTER SYSTEM SET shared_buffers = '1GB'" \
    -c "ALTER SYSTEM SET max_wal_size = '16GB'" \
    -c "ALTER SYSTEM SET min_wal_size = '2GB'" \
    -c "ALTER SYSTEM SET checkpoint_timeout = '1h'" \
    -c "ALTER SYSTEM SET autovacuum = off" \
    -c "ALTER SYSTEM SET logical_decoding_work_mem = '64MB'" \
    -c "ALTER SYSTEM SET wal_sender_timeout = '60s'" ||
    die "could not tune PostgreSQL"
"$PGSH" restart "$RUN/pg" || die "could not restart PostgreSQL with the benchmark settings"
[[ "$("${PSQL[@]}" -d postgres -At -c 'SHOW shared_buffers')" == 1GB ]] ||
    die "could not apply the benchmark settings (shared_buffers is not 1GB after the restart)"
PG_VERSION=$("${PSQL[@]}" -d postgres -At -c 'SHOW server_version')

# ---- 2. schema, data, slots, workload ----

log "loading the shop schema and seed data"
"${PSQL[@]}" -d postgres -c 'CREATE DATABASE shop'
"${PSQL[@]}" -d shop -f "$ROOT/deploy/shop/schema.sql" -f "$ROOT/deploy/shop/seed.sql" \
    -f "$ROOT/deploy/shop/workload.sql" >/dev/null
"${PSQL[@]}" -d shop -c 'CHECKPOINT'

"${PSQL[@]}" -d shop -At -c "SELECT pg_create_logical_replication_slot('bench_recv', 'wal2json')" \
    -c "SELECT pg_create_logical_replication_slot('bench_pgfan', 'wal2json')" >/dev/null
START_LSN=$("${PSQL[@]}" -d shop -At -c 'SELECT pg_current_wal_lsn()')

log "workload: CALL bench_workload($N, $SEED)"
t0=$(now)
"${PSQL[@]}" -d shop -c "CALL bench_workload($N, $SEED)" 2>"$RUN/workload.log" ||
    { cat "$RUN/workload.log" >&2; die "the workload failed"; }
t1=$(now)
WORKLOAD_S=$(fsub "$t1" "$t0")
sed -n 's/^NOTICE: *//p' "$RUN/workload.log"
# The insert position: with asynchronous commit the write position can lag
# behind the last commits (and sit in the middle of a record).
ENDPOS=$("${PSQL[@]}" -d shop -At -c 'SELECT pg_current_wal_insert_lsn()')
WAL_BYTES=$("${PSQL[@]}" -d shop -At -c "SELECT pg_wal_lsn_diff('$ENDPOS', '$START_LSN')")
# round(n * 0.70) and round(n * 0.25), as bench_workload computes them
N_INS=$(((N * 70 + 50) / 100))
N_UPD=$(((N * 25 + 50) / 100))
N_DEL=$((N - N_INS - N_UPD))
log "workload took ${WORKLOAD_S}s; ENDPOS $ENDPOS; WAL $WAL_BYTES bytes"
"${PSQL[@]}" -d shop -c 'VACUUM ANALYZE orders' -c 'CHECKPOINT'

# ---- measuring a client ----

# Reads utime+stime (clock ticks) of a pid into WS_TICKS while it exists;
# called in the polling loops (bash builtins only: no fork).
WS_PID=""
WS_TICKS=0
sample_walsender() {
    local stat rest
    [[ -n "$WS_PID" ]] || return 0
    { read -r stat <"/proc/$WS_PID/stat"; } 2>/dev/null || return 0
    rest=${stat##*) }
    # fields after "pid (comm) ": state is field 3, utime 14, stime 15
    local -a f
    read -r -a f <<<"$rest"
    WS_TICKS=$((f[11] + f[12]))
}

find_walsender() {
    local slot=$1
    WS_PID=$("${PSQL[@]}" -d shop -At -c \
        "SELECT active_pid FROM pg_replication_slots WHERE slot_name = '$slot' AND active")
}

# Fields of a GNU time -v report.
time_field() {
    sed -n "s/^[[:space:]]*$2: //p" "$1" | head -n 1
}

CLK_TCK=$(getconf CLK_TCK)
declare -A R   # results: R[client.key]

record() {
    local c=$1 timefile=$2 wall=$3 out=$4
    R[$c.wall]=$wall
    R[$c.cpu]=$(awk -v u="$(time_field "$timefile" 'User time (seconds)')" \
        -v s="$(time_field "$timefile" 'System time (seconds)')" 'BEGIN { printf "%.2f", u + s }')
    R[$c.rss]=$(awk -v k="$(time_field "$timefile" 'Maximum resident set size (kbytes)')" \
        'BEGIN { printf "%.1f", k / 1024 }')
    R[$c.ws]=$(awk -v t="$WS_TICKS" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", t / hz }')
    R[$c.bytes]=$(stat -c %s "$out")
    R[$c.lines]=$(wc -l <"$out")
}

# ---- 3. pg_recvlogical ----

DSN="host=127.0.0.1 port=$PGPORT user=postgres dbname=shop"
log "drain 1/2: pg_recvlogical"
t0=$(now)
/usr/bin/time -v -o "$RUN/recv.time" pg_recvlogical -d "$DSN" --slot bench_recv --start \
    --endpos "$ENDPOS" --no-loop -f "$RUN/recv.ndjson" \
    -o format-version=2 -o include-lsn=1 -o include-xids=1 -o include-timestamp=1 -o include-pk=1 \
    2>"$RUN/recv.log" &
TIME_PID=$!
WS_PID=""
WS_TICKS=0
while kill -0 "$TIME_PID" 2>/dev/null; do
    [[ -n "$WS_PID" ]] || find_walsender bench_recv
    sample_walsender
    sleep 0.1
done
rc=0
wait "$TIME_PID" || rc=$?
TIME_PID=""
t1=$(now)
((rc == 0)) || { cat "$RUN/recv.log" >&2; die "pg_recvlogical failed (status $rc)"; }
# time's own clock is more precise than the 0.1 s polling above: h:mm:ss or m:ss.ss
recv_wall=$(time_field "$RUN/recv.time" 'Elapsed (wall clock) time (h:mm:ss or m:ss)' |
    awk -F: '{ printf "%.3f", NF == 3 ? $1 * 3600 + $2 * 60 + $3 : $1 * 60 + $2 }')
record recv "$RUN/recv.time" "${recv_wall:-$(fsub "$t1" "$t0")}" "$RUN/recv.ndjson"
R[recv.ins]=$(grep -c '"action":"I"' "$RUN/recv.ndjson" || true)
R[recv.upd]=$(grep -c '"action":"U"' "$RUN/recv.ndjson" || true)
R[recv.del]=$(grep -c '"action":"D"' "$RUN/recv.ndjson" || true)
log "pg_recvlogical: ${R[recv.wall]}s, ${R[recv.lines]} lines"
((KEEP)) || rm -f "$RUN/recv.ndjson"

# ---- 4. pgfan ----

log "drain 2/2: pgfan"
cat >"$RUN/pgfan.conf" <<EOF
[source]
dsn = $DSN application_name=pgfan-bench
slot = bench_pgfan
tables = public.orders

[status]
socket = $RUN/pgfan.sock

[log]
level = info

EOF
if [[ "$SINK" == kafka ]]; then
    MOCK_BROKER=$ROOT/build/tests/mock_broker
    [[ -x "$MOCK_BROKER" ]] || (cd "$ROOT" && ninja -C build tests/mock_broker) >&2 ||
        die "could not build $MOCK_BROKER"
    "$MOCK_BROKER" "$RUN/bootstrap" 1 bench.public.orders:64 2>"$RUN/broker.log" &
    BROKER_PID=$!
    for _ in $(seq 100); do
        [[ -s "$RUN/bootstrap" ]] && break
        sleep 0.1
    done
    [[ -s "$RUN/bootstrap" ]] || die "the mock broker did not start (log: $RUN/broker.log)"
    printf '[sink.kafka]\nbrokers = %s\ntopic_prefix = bench\nlinger = %s\n' \
        "$(cat "$RUN/bootstrap")" "${BENCH_KAFKA_LINGER:-5ms}" >>"$RUN/pgfan.conf"
    : >"$RUN/pgfan.ndjson" # no file output: record() reads its size
elif [[ "$SINK" == elasticsearch ]]; then
    python3 "$ROOT/tests/es_server/es_server.py" --port 0 --port-file "$RUN/es.port" \
        2>"$RUN/es.log" &
    BROKER_PID=$!
    for _ in $(seq 100); do
        [[ -s "$RUN/es.port" ]] && break
        sleep 0.1
    done
    [[ -s "$RUN/es.port" ]] || die "the Elasticsearch test server did not start (log: $RUN/es.log)"
    printf '[sink.elasticsearch]\nurl = http://127.0.0.1:%s\nindex.public.orders = orders-{created_at:%%Y.%%m.%%d}\nreplicas = 0\ndead_letter = %s\n' \
        "$(cat "$RUN/es.port")" "$RUN/es-dead.ndjson" >>"$RUN/pgfan.conf"
    ES_TICKS0=$(awk '{ print $14 + $15 }' "/proc/$BROKER_PID/stat")
    : >"$RUN/pgfan.ndjson"
else
    printf '[sink.file]\npath = %s\nfsync_interval = 100ms\n' "$RUN/pgfan.ndjson" >>"$RUN/pgfan.conf"
fi
for v in $(compgen -e | grep '^PGFAN_' || true); do
    unset "$v"
done
"$PGFAN" check-config -c "$RUN/pgfan.conf" >/dev/null || die "pgfan rejected $RUN/pgfan.conf"

end_int=$(lsn_int "$ENDPOS")
# Bounded by the slowest plausible rate (500 changes/s) plus startup.
deadline_s=$((60 + N / 500))
t0=$(now)
/usr/bin/time -v -o "$RUN/pgfan.time" "$PGFAN" run -c "$RUN/pgfan.conf" 2>"$RUN/pgfan.log" &
TIME_PID=$!
WS_PID=""
WS_TICKS=0
start_s=$SECONDS
# pgfan is time's only child.
while [[ -z "$CLIENT_PID" ]]; do
    CLIENT_PID=$(awk '{ print $1 }' "/proc/$TIME_PID/task/$TIME_PID/children" 2>/dev/null || true)
    [[ -n "$CLIENT_PID" ]] && break
    kill -0 "$TIME_PID" 2>/dev/null || { cat "$RUN/pgfan.log" >&2; die "pgfan exited at once"; }
    ((SECONDS - start_s < 10)) || die "could not find pgfan's pid under /usr/bin/time ($TIME_PID)"
    sleep 0.05
done

# `pgfan status` is cheap (no fork of psql, no backend): poll it; then make
# sure the server has the confirmation too.
while :; do
    if ! kill -0 "$CLIENT_PID" 2>/dev/null; then
        tail -n 20 "$RUN/pgfan.log" >&2
        CLIENT_PID=""
        die "pgfan exited before confirming $ENDPOS (log: $RUN/pgfan.log)"
    fi
    ((SECONDS - start_s < deadline_s)) ||
        { tail -n 5 "$RUN/pgfan.log" >&2; die "pgfan did not confirm $ENDPOS within ${deadline_s}s"; }
    [[ -n "$WS_PID" ]] || find_walsender bench_pgfan
    sample_walsender
    STATUS_JSON=$("$PGFAN" status -s "$RUN/pgfan.sock" --json 2>/dev/null || true)
    confirmed=$(sed -n 's/.*"confirmed_lsn":"\([0-9A-Fa-f]*\/[0-9A-Fa-f]*\)".*/\1/p' <<<"$STATUS_JSON" || true)
    if [[ -n "$confirmed" ]] && (($(lsn_int "$confirmed") >= end_int)); then
        if [[ "$("${PSQL[@]}" -d shop -At -c "SELECT confirmed_flush_lsn >= '$ENDPOS'
                FROM pg_replication_slots WHERE slot_name = 'bench_pgfan'")" == t ]]; then
            break
        fi
    fi
    sleep 0.1
done
t1=$(now)
sample_walsender
kill -TERM "$CLIENT_PID"
rc=0
wait "$TIME_PID" || rc=$?
TIME_PID=""
CLIENT_PID=""
((rc == 0)) || { tail -n 20 "$RUN/pgfan.log" >&2; die "pgfan exited with status $rc after SIGTERM (expected 0)"; }
record pgfan "$RUN/pgfan.time" "$(fsub "$t1" "$t0")" "$RUN/pgfan.ndjson"
if [[ "$SINK" != file ]]; then
    LAST_WRITE_S=n/a # no file: delivery is what the confirmation waits for
else
    LAST_WRITE_S=$(fsub "$(stat -c %.9Y "$RUN/pgfan.ndjson")" "$t0")
fi
if [[ "$SINK" != file ]]; then
    # The status has the sink's accepted row events and delivered bytes
    # (Kafka: deletes also produce a tombstone record; Elasticsearch: bulk
    # request bodies).
    events=$(sed -n 's/.*"name":"'"$SINK"'"[^}]*"events":\([0-9]*\).*/\1/p' <<<"$STATUS_JSON")
    R[pgfan.bytes]=$(sed -n 's/.*"name":"'"$SINK"'"[^}]*"bytes":\([0-9]*\).*/\1/p' <<<"$STATUS_JSON")
    R[pgfan.lines]=${events:-0}
    if [[ "${events:-0}" == "$N" ]]; then
        R[pgfan.ins]=$N_INS R[pgfan.upd]=$N_UPD R[pgfan.del]=$N_DEL
    else
        R[pgfan.ins]="${events:-0} events" R[pgfan.upd]=? R[pgfan.del]=?
    fi
else
    R[pgfan.ins]=$(grep -c '"op":"c"' "$RUN/pgfan.ndjson" || true)
    R[pgfan.upd]=$(grep -c '"op":"u"' "$RUN/pgfan.ndjson" || true)
    R[pgfan.del]=$(grep -c '"op":"d"' "$RUN/pgfan.ndjson" || true)
fi
ES_NOTE=""
if [[ "$SINK" == elasticsearch ]]; then
    es_cpu=$(awk -v t0="$ES_TICKS0" -v hz="$(getconf CLK_TCK)" '{ printf "%.1f", ($14 + $15 - t0) / hz }' \
        "/proc/$BROKER_PID/stat")
    ES_NOTE="The Elasticsearch test server (one Python process) used ${es_cpu}s of CPU during pgfan's ${R[pgfan.wall]}s drain."
    log "$ES_NOTE"
fi
log "pgfan: ${R[pgfan.wall]}s to confirmation (last event written at +${LAST_WRITE_S}s), ${R[pgfan.lines]} lines"

# ---- 5. check and report ----

ok=1
for c in recv pgfan; do
    if [[ "${R[$c.ins]} ${R[$c.upd]} ${R[$c.del]}" != "$N_INS $N_UPD $N_DEL" ]]; then
        echo "bench: $c saw ${R[$c.ins]} inserts, ${R[$c.upd]} updates, ${R[$c.del]} deletes;" \
            "the workload made $N_INS, $N_UPD, $N_DEL" >&2
        ok=0
    fi
done

row() {
    local c=$1 name=$2
    awk -v name="$name" -v n="$N" -v wall="${R[$c.wall]}" -v cpu="${R[$c.cpu]}" \
        -v ws="${R[$c.ws]}" -v rss="${R[$c.rss]}" -v bytes="${R[$c.bytes]}" \
        -v lines="${R[$c.lines]}" -v ref="${R[recv.wall]}" 'BEGIN {
        printf "| %s | %.2f | %d | %.2f | %.2f | %.1f | %.2f | %.1f | %.1f | %d |\n",
            name, wall, n / wall, ref / wall, cpu, cpu * 1e6 / n, ws, rss, bytes / 1e6, lines
    }'
}

MACHINE="$(nproc) x$(grep -m 1 'model name' /proc/cpuinfo | cut -d: -f2), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)"
COMMIT=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)
TABLE=$(
    echo "| client | wall s | changes/s | ratio to pg_recvlogical | CPU s (user+sys) | CPU µs/change | walsender CPU s | peak RSS MB | output MB | lines |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    row recv pg_recvlogical
    row pgfan "pgfan ($SINK sink)"
)
REPORT=$(
    cat <<EOF
## $(date -u '+%Y-%m-%d %H:%M UTC') - bench_file.sh, N=$N, pgfan sink: $SINK

Machine: $MACHINE; PostgreSQL $PG_VERSION; pgfan $COMMIT ($BUILD_INFO).
Workload: bench_workload($N, $SEED): $N_INS inserts, $N_UPD updates, $N_DEL deletes on orders,
${WORKLOAD_S}s to generate; $WAL_BYTES bytes of WAL. pgfan's wall time ends at the slot's
confirmed_flush_lsn >= ENDPOS (last event written at +${LAST_WRITE_S}s). $ES_NOTE

$TABLE
EOF
)
echo
echo "$REPORT"
echo

((ok)) || die "the clients did not see the workload's changes: results not appended"
if ((APPEND)); then
    mkdir -p "$(dirname "$RESULTS")"
    if [[ ! -s "$RESULTS" ]]; then
        printf '# Benchmark results\n\nAppended by the scripts in tests/bench/ (see docs/bench/README.md).\n' >"$RESULTS"
    fi
    printf '\n%s\n' "$REPORT" >>"$RESULTS"
    log "appended to $RESULTS"
fi
