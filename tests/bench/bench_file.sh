#!/usr/bin/env bash
# bench_file.sh - pgfan's sinks against pg_recvlogical on the same WAL.
#
#   tests/bench/bench_file.sh [-n N] [--seed S] [--sink KIND[,KIND...]] [--results FILE]
#                             [--summary FILE] [--no-append] [-k]
#
# KIND: file, kafka, elasticsearch, aggregates or all (file + Kafka +
# Elasticsearch + the shop's aggregates). Several kinds drain the same WAL one
# after the other, each from a slot of its own.
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
#     --sink aggregates: the shop's five aggregates (deploy/shop/
#     aggregates.conf) in a schema of their own (agg_<kind>). An aggregate
#     skips what its history already holds, so pgfan is started once BEFORE
#     the workload to build them (on the seed data) and stopped again; its
#     slot is created first, the other slots after that history, so no
#     client sees the aggregate tables being filled. Checked afterwards:
#     gmv_daily EXCEPT ALL its GROUP BY over orders is empty both ways. The
#     CPU of the PostgreSQL backend applying the batches is reported.
#     --sink all: one pgfan with the file, Kafka, Elasticsearch and
#     aggregates sinks at once (the same helper processes as above).
# Every drain's pgfan is checked the same way: the file has exactly the
# workload's inserts, updates and deletes; the Kafka and Elasticsearch sinks
# counted N events in the status.
# Each client's CPU (user+sys) and peak RSS come from /usr/bin/time -v; its
# walsender's CPU is sampled from /proc. pgfan's wall time ends when the
# server has its confirmation (what its contract is about), so it includes
# the sink's fsync interval and the feedback delay.
#
# Prints a markdown table and appends it, with date, machine and N, to
# docs/bench/results.md (--results FILE elsewhere, --no-append not at all);
# --summary FILE also writes the numbers as key=value lines (read by
# bench_report.sh).
#
# Environment: PGFAN_BENCH_BIN (the pgfan binary; the mock broker is taken
# from the same build directory), BENCH_KAFKA_LINGER, PGFAN_BENCH_WRAP (a
# command prefix for pgfan, e.g. "valgrind --tool=callgrind ...": the drain's
# deadline grows 50-fold), PGFAN_BENCH_PERF=FILE (attach `perf record -e
# cpu-clock` to pgfan for each drain, FILE.<kind>), PGFAN_BENCH_PERF_STAT=FILE
# (`perf stat` of its system calls, FILE.<kind>; the tracepoints cost about a
# microsecond per call, so not together with PGFAN_BENCH_PERF). The summary's
# <kind>_perf_from is how many events pgfan had sent before perf attached.
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
SINKS=(file)
RESULTS=$ROOT/docs/bench/results.md
SUMMARY=""
APPEND=1
KEEP=0

usage() {
    cat <<EOF
usage: tests/bench/bench_file.sh [-n N] [--seed S] [--sink KIND[,KIND...]] [--results FILE]
                                 [--summary FILE] [--no-append] [-k]

  -n N            row changes in the workload (default $N)
  --seed S        workload seed, -1..1 (default $SEED)
  --sink KINDS    pgfan's sinks, comma-separated; each drains the WAL in turn:
                  file (default), kafka (a mock broker process), elasticsearch
                  (the test server, a Python process), aggregates (the shop's
                  aggregates, deploy/shop/aggregates.conf) or all (all four in
                  one pgfan)
  --results FILE  append the results there (default docs/bench/results.md)
  --summary FILE  also write the results as key=value lines there
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
        [[ $# -ge 2 && -n "$2" ]] || die "--sink needs file, kafka, elasticsearch, aggregates or all"
        IFS=, read -r -a SINKS <<<"$2"
        for k in "${SINKS[@]}"; do
            [[ "$k" =~ ^(file|kafka|elasticsearch|aggregates|all)$ ]] ||
                die "--sink: \"$k\" is not file, kafka, elasticsearch, aggregates or all"
            [[ "$(printf '%s\n' "${SINKS[@]}" | grep -cx "$k")" == 1 ]] || die "--sink: $k twice"
        done
        ((${#SINKS[@]})) || die "--sink needs at least one kind"
        shift
        ;;
    --summary)
        [[ $# -ge 2 ]] || die "--summary needs a file"
        SUMMARY=$2
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

BUILD_DIR=$(cd "$(dirname "$PGFAN")/.." && pwd -P)
# What kind of binary is measured: a sanitizer or -O0 build is not a benchmark.
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

RUN=$(mktemp -d /tmp/pgfan-bench.XXXXXX)
chmod 755 "$RUN"
PG_STARTED=0
TIME_PID=""
CLIENT_PID=""
BROKER_PID=""
ES_PID=""
PERF_PID=""
PERF_STAT_PID=""
# system calls counted with PGFAN_BENCH_PERF (those of pgfan's hot path)
PERF_SYSCALLS=raw_syscalls:sys_enter
for sc in epoll_wait epoll_ctl recvfrom sendto read write pwrite64 fdatasync fsync; do
    PERF_SYSCALLS+=,syscalls:sys_enter_$sc
done

# Stops the mock broker and the Elasticsearch test server if they run.
stop_helpers() {
    local p
    for p in "$PERF_PID" "$PERF_STAT_PID" "$BROKER_PID" "$ES_PID"; do
        [[ -n "$p" ]] || continue
        kill -TERM "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    PERF_PID="" PERF_STAT_PID="" BROKER_PID="" ES_PID=""
}

cleanup() {
    local rc=$?
    trap - INT TERM
    if [[ -n "$CLIENT_PID" ]]; then
        kill -TERM "$CLIENT_PID" 2>/dev/null || true
    fi
    if [[ -n "$TIME_PID" ]]; then
        wait "$TIME_PID" 2>/dev/null || true
    fi
    stop_helpers
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

# Rough disk check: WAL ~1 kB and each output ~1 kB per change, with margin
# (one output at a time: each is deleted after its drain).
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

# ---- measuring a client ----

DSN="host=127.0.0.1 port=$PGPORT user=postgres dbname=shop"

# Reads utime+stime (clock ticks) of pid $1 into the variable named $2 while
# the process exists; called in the polling loops (bash builtins only: no fork).
read_ticks() {
    local -n ticks_out=$2
    local stat rest
    [[ -n "$1" ]] || return 0
    { read -r stat <"/proc/$1/stat"; } 2>/dev/null || return 0
    rest=${stat##*) }
    # fields after "pid (comm) ": state is field 3, utime 14, stime 15
    local -a f
    read -r -a f <<<"$rest"
    # shellcheck disable=SC2034 # a nameref: sets the caller's variable
    ticks_out=$((f[11] + f[12]))
}

# Sums the scheduler statistics of every thread of pid $1 into the variables
# named $2 (ns on a CPU) and $3 (ns runnable but waiting for a CPU):
# /proc/PID/task/*/schedstat. A process whose on-CPU plus waiting time is
# close to the wall time wanted a CPU all along: it was CPU-bound, even when
# the machine's load left it only part of a core.
sched_sum() {
    local -n cpu_out=$2 wait_out=$3
    local f line
    local -a v
    cpu_out=0 wait_out=0
    [[ -n "$1" ]] || return 0
    for f in /proc/"$1"/task/*/schedstat; do
        { read -r line <"$f"; } 2>/dev/null || continue
        read -r -a v <<<"$line"
        cpu_out=$((cpu_out + v[0])) wait_out=$((wait_out + v[1]))
    done
}

# "on CPU X s + waiting for a CPU Y s = Z % of the W s drain" (summed over
# threads: above 100 % when several threads wanted a CPU at once)
busy_note() {
    awk -v c="$1" -v w="$2" -v wall="$3" 'BEGIN {
        printf "on a CPU %.1f s + runnable but waiting for one %.1f s = %.0f %% of the %.1f s drain",
            c / 1e9, w / 1e9, 100 * (c + w) / 1e9 / wall, wall }'
}

WS_PID=""
WS_TICKS=0
sample_walsender() {
    read_ticks "$WS_PID" WS_TICKS
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

# ticks -> seconds with one decimal
ticks_s() {
    awk -v t="$1" -v hz="$CLK_TCK" 'BEGIN { printf "%.1f", t / hz }'
}

# ---- pgfan's sinks and their helper processes ----

# What a kind of drain writes to: "file kafka elasticsearch aggregates" or one of them.
sinks_of() {
    if [[ "$1" == all ]]; then echo "file kafka elasticsearch aggregates"; else echo "$1"; fi
}

has_sink() {
    [[ " $(sinks_of "$1") " == *" $2 "* ]]
}

# librdkafka's mock cluster in a process of its own; sets BROKER_PID, BOOTSTRAP.
start_broker() {
    local mock=$BUILD_DIR/tests/mock_broker
    [[ -x "$mock" ]] || ninja -C "$BUILD_DIR" tests/mock_broker >&2 || die "could not build $mock"
    rm -f "$RUN/bootstrap"
    "$mock" "$RUN/bootstrap" 1 bench.public.orders:64 2>"$RUN/broker.log" &
    BROKER_PID=$!
    for _ in $(seq 100); do
        [[ -s "$RUN/bootstrap" ]] && break
        sleep 0.1
    done
    [[ -s "$RUN/bootstrap" ]] || die "the mock broker did not start (log: $RUN/broker.log)"
    BOOTSTRAP=$(cat "$RUN/bootstrap")
}

# The Elasticsearch test server (Python); sets ES_PID, ES_PORT.
start_es() {
    rm -f "$RUN/es.port"
    python3 "$ROOT/tests/es_server/es_server.py" --port 0 --port-file "$RUN/es.port" \
        2>"$RUN/es.log" &
    ES_PID=$!
    for _ in $(seq 100); do
        [[ -s "$RUN/es.port" ]] && break
        sleep 0.1
    done
    [[ -s "$RUN/es.port" ]] || die "the Elasticsearch test server did not start (log: $RUN/es.log)"
    ES_PORT=$(cat "$RUN/es.port")
}

# write_conf KIND FILE [prepare]: pgfan's configuration for a drain; with
# "prepare" only the aggregates sink (to build their history before the workload).
write_conf() {
    local kind=$1 conf=$2 prepare=${3:-}
    cat >"$conf" <<EOF
[source]
dsn = $DSN application_name=pgfan-bench
slot = bench_pgfan_$kind
tables = public.orders

[status]
socket = $RUN/pgfan-$kind.sock

[log]
level = info

EOF
    if [[ -z "$prepare" ]] && has_sink "$kind" file; then
        printf '[sink.file]\npath = %s\nfsync_interval = 100ms\n\n' "$RUN/pgfan-$kind.ndjson" >>"$conf"
    fi
    if [[ -z "$prepare" ]] && has_sink "$kind" kafka; then
        printf '[sink.kafka]\nbrokers = %s\ntopic_prefix = bench\nlinger = %s\n\n' \
            "$BOOTSTRAP" "${BENCH_KAFKA_LINGER:-5ms}" >>"$conf"
    fi
    if [[ -z "$prepare" ]] && has_sink "$kind" elasticsearch; then
        printf '[sink.elasticsearch]\nurl = http://127.0.0.1:%s\nindex.public.orders = orders-{created_at:%%Y.%%m.%%d}\nreplicas = 0\ndead_letter = %s\n\n' \
            "$ES_PORT" "$RUN/es-dead-$kind.ndjson" >>"$conf"
    fi
    if has_sink "$kind" aggregates; then
        # the shop's aggregates in a schema of this drain's own, applied by a
        # connection the walsender sampling can tell apart
        sed -e "s/^schema = analytics\$/schema = agg_$kind\ndsn = $DSN application_name=pgfan-bench-agg/" \
            "$ROOT/deploy/shop/aggregates.conf" >>"$conf"
        grep -q "^schema = agg_$kind\$" "$conf" ||
            die "could not set the schema in deploy/shop/aggregates.conf (no line 'schema = analytics')"
    fi
    "$PGFAN" check-config -c "$conf" >/dev/null || die "pgfan rejected $conf"
}

# start_pgfan CONF LOG TIMEFILE: pgfan under GNU time; sets TIME_PID, CLIENT_PID.
start_pgfan() {
    local conf=$1 logf=$2 timefile=$3 start_s=$SECONDS
    local -a wrap=()
    [[ -z "${PGFAN_BENCH_WRAP:-}" ]] || read -r -a wrap <<<"$PGFAN_BENCH_WRAP"
    /usr/bin/time -v -o "$timefile" "${wrap[@]}" "$PGFAN" run -c "$conf" 2>"$logf" &
    TIME_PID=$!
    # pgfan is time's only child.
    while [[ -z "$CLIENT_PID" ]]; do
        CLIENT_PID=$(awk '{ print $1 }' "/proc/$TIME_PID/task/$TIME_PID/children" 2>/dev/null || true)
        [[ -n "$CLIENT_PID" ]] && break
        kill -0 "$TIME_PID" 2>/dev/null || { cat "$logf" >&2; die "pgfan exited at once"; }
        ((SECONDS - start_s < 10)) || die "could not find pgfan's pid under /usr/bin/time ($TIME_PID)"
        sleep 0.05
    done
}

# stop_pgfan LOG: SIGTERM; pgfan must exit 0.
stop_pgfan() {
    local rc=0
    kill -TERM "$CLIENT_PID"
    wait "$TIME_PID" || rc=$?
    TIME_PID=""
    CLIENT_PID=""
    ((rc == 0)) || { tail -n 20 "$1" >&2; die "pgfan exited with status $rc after SIGTERM (expected 0)"; }
}

# prepare_aggregates KIND: builds the aggregates' history (seed data) before
# the workload, so that the drain applies every change of the workload.
prepare_aggregates() {
    local kind=$1
    local conf=$RUN/pgfan-$kind-prepare.conf logf=$RUN/pgfan-$kind-prepare.log
    local deadline=$((SECONDS + 120))
    write_conf "$kind" "$conf" prepare
    start_pgfan "$conf" "$logf" "$RUN/pgfan-$kind-prepare.time"
    until grep -q 'sink.aggregates: ready' "$logf"; do
        kill -0 "$CLIENT_PID" 2>/dev/null || { tail -n 20 "$logf" >&2; CLIENT_PID=""; die "pgfan exited while building the aggregates"; }
        ((SECONDS < deadline)) || die "the aggregates were not ready within 120 s (log: $logf)"
        sleep 0.1
    done
    stop_pgfan "$logf"
    log "$kind: aggregates built on the seed data ($(grep -c 'history computed' "$logf") tables)"
}

# ---- 2. schema, data, slots, workload ----

log "loading the shop schema and seed data"
"${PSQL[@]}" -d postgres -c 'CREATE DATABASE shop'
"${PSQL[@]}" -d shop -f "$ROOT/deploy/shop/schema.sql" -f "$ROOT/deploy/shop/seed.sql" \
    -f "$ROOT/deploy/shop/workload.sql" >/dev/null
"${PSQL[@]}" -d shop -c 'CHECKPOINT'

# Slots of drains with aggregates first: their history is built (and stopped)
# before the other slots exist, so no other client decodes it.
for k in "${SINKS[@]}"; do
    if has_sink "$k" aggregates; then
        "${PSQL[@]}" -d shop -At -c "SELECT pg_create_logical_replication_slot('bench_pgfan_$k', 'wal2json')" >/dev/null
        prepare_aggregates "$k"
    fi
done
"${PSQL[@]}" -d shop -At -c "SELECT pg_create_logical_replication_slot('bench_recv', 'wal2json')" >/dev/null
for k in "${SINKS[@]}"; do
    has_sink "$k" aggregates ||
        "${PSQL[@]}" -d shop -At -c "SELECT pg_create_logical_replication_slot('bench_pgfan_$k', 'wal2json')" >/dev/null
done
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

# ---- 3. pg_recvlogical ----

NDRAINS=$((1 + ${#SINKS[@]}))
log "drain 1/$NDRAINS: pg_recvlogical"
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

for v in $(compgen -e | grep '^PGFAN_' || true); do
    [[ "$v" == PGFAN_BENCH_* ]] || unset "$v"
done
end_int=$(lsn_int "$ENDPOS")
# Bounded by the slowest plausible rate (500 changes/s) plus startup.
deadline_s=$((60 + N / 500))
[[ -z "${PGFAN_BENCH_WRAP:-}" ]] || deadline_s=$((deadline_s * 50))
FAILS=()
NOTES=""

# A field of one sink's object in the status JSON ($STATUS_JSON).
sink_field() {
    sed -n 's/.*"name":"'"$1"'"[^}]*"'"$2"'":\([0-9]*\).*/\1/p' <<<"$STATUS_JSON"
}

# With several sinks: which one holds the confirmation back at this poll, i.e.
# has the only lowest durable LSN ($STATUS_JSON; builtins only). Counts polls
# in HOLD[sink] and HOLD_POLLS.
declare -A HOLD
HOLD_POLLS=0
track_holdback() {
    local rest=$STATUS_JSON name v min=-1 minname="" ties=0
    local re='"name":"([a-z]+)","state":"[^"]*","durable_lsn":"([0-9A-Fa-f]+)/([0-9A-Fa-f]+)"'
    while [[ "$rest" =~ $re ]]; do
        name=${BASH_REMATCH[1]}
        v=$(((16#${BASH_REMATCH[2]} << 32) + 16#${BASH_REMATCH[3]}))
        if ((min < 0 || v < min)); then
            min=$v minname=$name ties=0
        elif ((v == min)); then
            ties=1
        fi
        rest=${rest#*"${BASH_REMATCH[0]}"}
    done
    [[ -n "$minname" ]] || return 0
    HOLD_POLLS=$((HOLD_POLLS + 1))
    ((ties)) || HOLD[$minname]=$((${HOLD[$minname]:-0} + 1))
}

# gmv_daily (agg_KIND) EXCEPT ALL its GROUP BY over orders, both ways: rows that differ.
check_aggregates() {
    "${PSQL[@]}" -d shop -At -c "
        WITH want AS (SELECT (created_at AT TIME ZONE 'UTC')::date AS day, store_id, currency,
                             count(*) AS orders, sum(total_amount) AS gmv
                      FROM orders WHERE status <> 'cancelled' GROUP BY 1, 2, 3),
             have AS (SELECT day, store_id, currency, orders, gmv FROM agg_$1.gmv_daily)
        SELECT (SELECT count(*) FROM (SELECT * FROM want EXCEPT ALL SELECT * FROM have) a)
             + (SELECT count(*) FROM (SELECT * FROM have EXCEPT ALL SELECT * FROM want) b)"
}

# drain_pgfan KIND I: drains slot bench_pgfan_KIND; results in R[KIND.*].
drain_pgfan() {
    local c=$1 i=$2
    local conf=$RUN/pgfan-$c.conf logf=$RUN/pgfan-$c.log timefile=$RUN/pgfan-$c.time
    local out=$RUN/pgfan-$c.ndjson sock=$RUN/pgfan-$c.sock
    local t0 t1 start_s confirmed es0=0 es1=0 br0=0 br1=0 agg_pid="" agg_ticks=0 agg0=0 s ev
    local es_c0=0 es_w0=0 es_c1=0 es_w1=0 pg_c=0 pg_w=0 ws_c=0 ws_w=0 has_agg=0
    has_sink "$c" aggregates && has_agg=1 # no fork in the polling loop
    HOLD=()
    HOLD_POLLS=0

    log "drain $i/$NDRAINS: pgfan ($c: $(sinks_of "$c"))"
    if has_sink "$c" kafka; then start_broker; read_ticks "$BROKER_PID" br0; fi
    if has_sink "$c" elasticsearch; then
        start_es
        read_ticks "$ES_PID" es0
        sched_sum "$ES_PID" es_c0 es_w0
    fi
    write_conf "$c" "$conf"
    has_sink "$c" file || : >"$out" # no file output: record() reads its size

    t0=$(now)
    start_pgfan "$conf" "$logf" "$timefile"
    start_s=$SECONDS
    WS_PID=""
    WS_TICKS=0
    if [[ -n "${PGFAN_BENCH_PERF:-}" ]]; then
        perf record -q -e cpu-clock -F 4999 -p "$CLIENT_PID" -o "$PGFAN_BENCH_PERF.$c" \
            2>"$RUN/perf-$c.log" &
        PERF_PID=$!
    fi
    if [[ -n "${PGFAN_BENCH_PERF_STAT:-}" ]]; then
        perf stat -x, -e "$PERF_SYSCALLS" -p "$CLIENT_PID" -o "$PGFAN_BENCH_PERF_STAT.$c" \
            2>"$RUN/perf-stat-$c.log" &
        PERF_STAT_PID=$!
    fi
    if [[ -n "${PGFAN_BENCH_PERF:-}${PGFAN_BENCH_PERF_STAT:-}" ]]; then
        # perf attaches within a moment: the events pgfan had before are not profiled
        sleep 0.3
        STATUS_JSON=$("$PGFAN" status -s "$sock" --json 2>/dev/null || true)
        R[$c.perf_from]=$(sed -n 's/.*"events":\([0-9]*\).*/\1/p' <<<"$STATUS_JSON" | head -n 1)
    fi
    # `pgfan status` is cheap (no fork of psql, no backend): poll it; then make
    # sure the server has the confirmation too.
    while :; do
        if ! kill -0 "$CLIENT_PID" 2>/dev/null; then
            tail -n 20 "$logf" >&2
            CLIENT_PID=""
            die "pgfan exited before confirming $ENDPOS (log: $logf)"
        fi
        ((SECONDS - start_s < deadline_s)) ||
            { tail -n 5 "$logf" >&2; die "pgfan did not confirm $ENDPOS within ${deadline_s}s"; }
        [[ -n "$WS_PID" ]] || find_walsender "bench_pgfan_$c"
        sample_walsender
        if ((has_agg)); then
            if [[ -z "$agg_pid" ]]; then
                agg_pid=$("${PSQL[@]}" -d shop -At -c "SELECT pid FROM pg_stat_activity
                    WHERE application_name = 'pgfan-bench-agg' ORDER BY backend_start DESC LIMIT 1")
                read_ticks "$agg_pid" agg0
            fi
            read_ticks "$agg_pid" agg_ticks
        fi
        STATUS_JSON=$("$PGFAN" status -s "$sock" --json 2>/dev/null || true)
        [[ "$c" != all ]] || track_holdback
        confirmed=$(sed -n 's/.*"confirmed_lsn":"\([0-9A-Fa-f]*\/[0-9A-Fa-f]*\)".*/\1/p' <<<"$STATUS_JSON" || true)
        if [[ -n "$confirmed" ]] && (($(lsn_int "$confirmed") >= end_int)); then
            if [[ "$("${PSQL[@]}" -d shop -At -c "SELECT confirmed_flush_lsn >= '$ENDPOS'
                    FROM pg_replication_slots WHERE slot_name = 'bench_pgfan_$c'")" == t ]]; then
                break
            fi
        fi
        sleep 0.1
    done
    t1=$(now)
    sample_walsender
    [[ -z "$agg_pid" ]] || read_ticks "$agg_pid" agg_ticks
    [[ -z "$ES_PID" ]] || read_ticks "$ES_PID" es1
    [[ -z "$ES_PID" ]] || sched_sum "$ES_PID" es_c1 es_w1
    sched_sum "$CLIENT_PID" pg_c pg_w
    sched_sum "$WS_PID" ws_c ws_w
    [[ -z "$BROKER_PID" ]] || read_ticks "$BROKER_PID" br1
    for p in "$PERF_PID" "$PERF_STAT_PID"; do
        [[ -n "$p" ]] || continue
        kill -INT "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    PERF_PID="" PERF_STAT_PID=""
    stop_pgfan "$logf"
    record "$c" "$timefile" "$(fsub "$t1" "$t0")" "$out"
    if has_sink "$c" file; then
        R[$c.last]=$(fsub "$(stat -c %.9Y "$out")" "$t0")
        R[$c.ins]=$(grep -c '"op":"c"' "$out" || true)
        R[$c.upd]=$(grep -c '"op":"u"' "$out" || true)
        R[$c.del]=$(grep -c '"op":"d"' "$out" || true)
    else
        # no file: delivery is what the confirmation waits for. The status
        # has the sink's accepted row events and delivered bytes (Kafka:
        # deletes also produce a tombstone record; Elasticsearch: bulk
        # request bodies).
        R[$c.last]=n/a
        ev=$(sink_field "$c" events)
        R[$c.bytes]=$(sink_field "$c" bytes)
        R[$c.lines]=${ev:-0}
        if [[ "${ev:-0}" == "$N" ]]; then
            R[$c.ins]=$N_INS R[$c.upd]=$N_UPD R[$c.del]=$N_DEL
        else
            R[$c.ins]="${ev:-0} events" R[$c.upd]='?' R[$c.del]='?'
        fi
    fi
    for s in kafka elasticsearch; do
        if has_sink "$c" "$s" && [[ "$c" == all ]]; then
            ev=$(sink_field "$s" events)
            [[ "$ev" == "$N" ]] || FAILS+=("$c: the $s sink counted ${ev:-no} events for $N changes")
        fi
    done
    local note="" wall=${R[$c.wall]}
    R[$c.pgfan_busy]=$(busy_note "$pg_c" "$pg_w" "$wall")
    R[$c.ws_busy]=$(busy_note "$ws_c" "$ws_w" "$wall")
    note+=" pgfan (all threads): ${R[$c.pgfan_busy]}; its walsender: ${R[$c.ws_busy]}."
    if has_sink "$c" elasticsearch; then
        R[$c.es_cpu]=$(ticks_s $((es1 - es0)))
        note+=" The Elasticsearch test server (one Python process) used ${R[$c.es_cpu]}s of CPU"
        R[$c.es_busy]=$(busy_note $((es_c1 - es_c0)) $((es_w1 - es_w0)) "$wall")
        note+=" (its live threads: ${R[$c.es_busy]})."
    fi
    if has_sink "$c" kafka; then
        R[$c.broker_cpu]=$(ticks_s $((br1 - br0)))
        note+=" The mock Kafka broker used ${R[$c.broker_cpu]}s of CPU."
    fi
    if has_sink "$c" aggregates; then
        R[$c.agg_cpu]=$(ticks_s $((agg_ticks - agg0)))
        note+=" The PostgreSQL backend applying the aggregates used ${R[$c.agg_cpu]}s of CPU."
        R[$c.agg_diff]=$(check_aggregates "$c")
        [[ "${R[$c.agg_diff]}" == 0 ]] ||
            FAILS+=("$c: agg_$c.gmv_daily differs from its GROUP BY over orders in ${R[$c.agg_diff]} rows")
    fi
    if [[ "$c" == all ]] && ((HOLD_POLLS)); then
        note+=" Polls (every 0.1 s) in which one sink alone had the lowest durable position:"
        for s in file kafka elasticsearch aggregates; do
            R[$c.hold_$s]=$(awk -v h="${HOLD[$s]:-0}" -v n="$HOLD_POLLS" 'BEGIN { printf "%.0f", 100 * h / n }')
            note+=" $s ${R[$c.hold_$s]} %,"
        done
        note="${note%,} of $HOLD_POLLS."
    fi
    stop_helpers
    [[ -z "$note" ]] || NOTES+="
pgfan ($c), ${wall}s drain:$note"
    log "pgfan ($c): ${wall}s to confirmation (last event written at +${R[$c.last]}s), ${R[$c.lines]} lines.$note"
    ((KEEP)) || rm -f "$out"
}

i=2
for k in "${SINKS[@]}"; do
    drain_pgfan "$k" "$i"
    i=$((i + 1))
done

# ---- 5. check and report ----

for c in recv "${SINKS[@]}"; do
    if [[ "${R[$c.ins]} ${R[$c.upd]} ${R[$c.del]}" != "$N_INS $N_UPD $N_DEL" ]]; then
        FAILS+=("$c saw ${R[$c.ins]} inserts, ${R[$c.upd]} updates, ${R[$c.del]} deletes; the workload made $N_INS, $N_UPD, $N_DEL")
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

sink_label() {
    case "$1" in
    all) echo "pgfan (all sinks: file, kafka, elasticsearch, aggregates)" ;;
    aggregates) echo "pgfan (aggregates sink, 5 aggregates)" ;;
    *) echo "pgfan ($1 sink)" ;;
    esac
}

MACHINE="$(nproc) x$(grep -m 1 'model name' /proc/cpuinfo | cut -d: -f2), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)"
COMMIT=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)
SINK_LIST=$(IFS=,; echo "${SINKS[*]}")
LAST_WRITES=""
for k in "${SINKS[@]}"; do
    [[ "${R[$k.last]}" == n/a ]] || LAST_WRITES+=" $k: last event written at +${R[$k.last]}s."
done
TABLE=$(
    echo "| client | wall s | changes/s | ratio to pg_recvlogical | CPU s (user+sys) | CPU µs/change | walsender CPU s | peak RSS MB | output MB | lines |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    row recv pg_recvlogical
    for k in "${SINKS[@]}"; do
        row "$k" "$(sink_label "$k")"
    done
)
REPORT=$(
    cat <<EOF
## $(date -u '+%Y-%m-%d %H:%M UTC') - bench_file.sh, N=$N, pgfan sink: ${SINK_LIST//,/, }

Machine: $MACHINE; PostgreSQL $PG_VERSION; pgfan $COMMIT ($BUILD_INFO).
Workload: bench_workload($N, $SEED): $N_INS inserts, $N_UPD updates, $N_DEL deletes on orders,
${WORKLOAD_S}s to generate; $WAL_BYTES bytes of WAL. pgfan's wall time ends at the slot's
confirmed_flush_lsn >= ENDPOS.$LAST_WRITES$NOTES

$TABLE
EOF
)
echo
echo "$REPORT"
echo

if [[ -n "$SUMMARY" ]]; then
    {
        printf 'n=%s\nseed=%s\nins=%s\nupd=%s\ndel=%s\nworkload_s=%s\nwal_bytes=%s\n' \
            "$N" "$SEED" "$N_INS" "$N_UPD" "$N_DEL" "$WORKLOAD_S" "$WAL_BYTES"
        printf 'pg_version=%s\nmachine=%s\ncommit=%s\nbuild_info=%s\nsinks=%s\nok=%s\n' \
            "$PG_VERSION" "$MACHINE" "$COMMIT" "$BUILD_INFO" "$SINK_LIST" "$((${#FAILS[@]} == 0))"
        for key in "${!R[@]}"; do
            printf '%s=%s\n' "${key/./_}" "${R[$key]}"
        done | sort
    } >"$SUMMARY"
fi

if ((${#FAILS[@]})); then
    printf 'bench: %s\n' "${FAILS[@]}" >&2
    die "the clients did not see the workload's changes: results not appended"
fi
if ((APPEND)); then
    mkdir -p "$(dirname "$RESULTS")"
    if [[ ! -s "$RESULTS" ]]; then
        printf '# Benchmark results\n\nAppended by the scripts in tests/bench/ (see docs/bench/README.md).\n' >"$RESULTS"
    fi
    printf '\n%s\n' "$REPORT" >>"$RESULTS"
    log "appended to $RESULTS"
fi
