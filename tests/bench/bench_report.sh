#!/usr/bin/env bash
# bench_report.sh - pgfan's benchmark report in one command: throughput,
# latency, snapshot and a profile, written to docs/bench/report.md with a
# chart (docs/bench/report.png).
#
#   tests/bench/bench_report.sh [-n N] [--all-n N] [--rate R] [--seconds T]
#                               [--sims K] [--snapshot-n N] [--profile-n N]
#                               [--callgrind-n N] [--out DIR] [-k]
#
# Not part of the pass/fail suite; run it as root on a quiet machine. Steps:
#  1. throughput: tests/bench/bench_file.sh -n N --sink file,all: one
#     workload (70/25/5 % inserts/updates/deletes on orders, 1-10-row
#     transactions plus three of N/10 rows), drained from three slots by
#     pg_recvlogical, pgfan with the file sink and pgfan with every sink
#     (file, Kafka mock broker and Elasticsearch test server in processes of
#     their own, the shop's aggregates). With --all-n M != N the all-sinks
#     path gets a second run of M changes (with its own pg_recvlogical).
#  2. latency: a throwaway PostgreSQL (same settings as bench_file.sh:
#     fsync off, synchronous_commit on), a small shop history
#     (pgfan-shop-sim history), pgfan with [status] metrics_listen, then
#     `pgfan-shop-sim live --rate R` for a warm-up of 10 s plus a window of
#     T s. The commit-to-durable quantiles come from the difference of two
#     scrapes of pgfan_commit_to_durable_seconds (/metrics) at the start and
#     the end of the window (after the last change is durable), so start-up
#     does not count. If one simulator does not reach 95 % of R, the window
#     is measured again with two simulators at R/2 each (seeds 7 and 8; the
#     all-sinks run then starts with two). --sims K fixes the number.
#     Once with the file sink, once with every sink.
#  3. snapshot: tests/bench/bench_snapshot.sh -n N (rows/s against COPY).
#  4. profile: bench_file.sh -n P --sink file with `perf record -e
#     cpu-clock` attached to pgfan; the top symbols by self time, as a share
#     of pgfan's CPU and as µs per change; the same again with `perf stat`
#     counting its system calls per change. Then bench_file.sh -n C --sink
#     file with pgfan under valgrind --tool=callgrind (instructions per
#     change, self and inclusive; about 1 min for the default 100k).
# Then writes DIR/report.md (default docs/bench), DIR/report.png (gnuplot,
# tests/bench/bench_report.gp) and DIR/report-data/*.dat.
#
# Environment: PGFAN_BENCH_BIN (default build/daemon/pgfan; the simulator
# and the mock broker come from the same build directory).
# Needs: GNU time, gnuplot (apt-get install gnuplot-nox; installed when
# missing), perf (optional: the profile is skipped without it), curl.

# shellcheck disable=SC2317 # functions called from traps
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
PGFAN=${PGFAN_BENCH_BIN:-$ROOT/build/daemon/pgfan}
PGSH=$ROOT/tests/harness/pg.sh
BENCH=$ROOT/tests/bench

N=1000000
ALL_N=""
RATE=5000
WINDOW=60
WARMUP=10
SNAP_N=1000000
PROF_N=200000
CG_N=100000
SIMS=0
OUT=$ROOT/docs/bench
KEEP=0

usage() {
    cat <<EOF
usage: tests/bench/bench_report.sh [-n N] [--all-n N] [--rate R] [--seconds T]
                                   [--sims K] [--snapshot-n N] [--profile-n N]
                                   [--callgrind-n N] [--out DIR] [-k]

  -n N              changes of the throughput workload (default $N)
  --all-n N         changes for the all-sinks path if not N (a second run)
  --rate R          latency: target row changes/s of the shop simulator (default $RATE)
  --seconds T       latency: measured window after a ${WARMUP} s warm-up (default $WINDOW)
  --sims K          latency: K simulators at R/K each (default: 1, then 2 if 1 falls short)
  --snapshot-n N    orders for bench_snapshot.sh (default $SNAP_N; 0 skips it)
  --profile-n N     changes of the perf run (default $PROF_N; 0 skips it)
  --callgrind-n N   changes of the callgrind run (default $CG_N; 0 skips it)
  --out DIR         where report.md, report.png and report-data/ go (default docs/bench)
  -k, --keep        keep the scratch directory
EOF
}

die() {
    echo "bench_report: $*" >&2
    exit 1
}

need_int() {
    [[ "$2" =~ ^[0-9]+$ ]] || die "$1 needs a whole number"
}

while (($#)); do
    case "$1" in
    -n | --all-n | --rate | --seconds | --sims | --snapshot-n | --profile-n | --callgrind-n | --out)
        [[ $# -ge 2 ]] || die "$1 needs a value"
        case "$1" in
        -n) need_int "$1" "$2"; N=$2 ;;
        --all-n) need_int "$1" "$2"; ALL_N=$2 ;;
        --rate) need_int "$1" "$2"; RATE=$2 ;;
        --seconds) need_int "$1" "$2"; WINDOW=$2 ;;
        --sims) need_int "$1" "$2"; SIMS=$2 ;;
        --snapshot-n) need_int "$1" "$2"; SNAP_N=$2 ;;
        --profile-n) need_int "$1" "$2"; PROF_N=$2 ;;
        --callgrind-n) need_int "$1" "$2"; CG_N=$2 ;;
        --out) OUT=$2 ;;
        esac
        shift
        ;;
    -k | --keep) KEEP=1 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "bench_report: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
ALL_N=${ALL_N:-$N}
((N >= 100 && ALL_N >= 100)) || die "-n and --all-n need at least 100"
((RATE >= 2 && WINDOW >= 5)) || die "--rate needs at least 2 and --seconds at least 5"
((SIMS <= 8)) || die "--sims: at most 8"

log() {
    printf '[report %s] %s\n' "$(date +%T)" "$*"
}

now() {
    date +%s.%N
}

fsub() {
    awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a - b }'
}

# ---- prerequisites ----

[[ -x "$PGFAN" ]] || die "could not find $PGFAN: build it (meson setup build && ninja -C build) or set PGFAN_BENCH_BIN"
export PGFAN_BENCH_BIN=$PGFAN # for bench_file.sh and bench_snapshot.sh
BUILD_DIR=$(cd "$(dirname "$PGFAN")/.." && pwd -P)
SIM=$BUILD_DIR/tools/pgfan-shop-sim
MOCK=$BUILD_DIR/tests/mock_broker
# The report is stamped with the tree's commit: measure a binary built from it.
BUILD_NOTE=""
if ! ninja -C "$BUILD_DIR" daemon/pgfan tools/pgfan-shop-sim tests/mock_broker >/tmp/pgfan-report-build.log 2>&1; then
    log "WARNING: could not rebuild $BUILD_DIR (see /tmp/pgfan-report-build.log): measuring the binaries as they are"
    BUILD_NOTE=" **The binaries were not rebuilt from this tree (the build failed): they may be older than the commit.**"
fi
[[ -x "$SIM" && -x "$MOCK" ]] || die "could not build $SIM and $MOCK"
if ! command -v gnuplot >/dev/null; then
    log "installing gnuplot (apt-get install gnuplot-nox)"
    apt-get install -y -qq gnuplot-nox </dev/null >/dev/null || die "could not install gnuplot: apt-get install gnuplot-nox"
fi
command -v curl >/dev/null || die "could not find curl: apt-get install curl"
HAVE_PERF=0
if ((PROF_N)) && command -v perf >/dev/null && perf record -q -e cpu-clock -o /dev/null -- true 2>/dev/null; then
    HAVE_PERF=1
fi

RUN=$(mktemp -d /tmp/pgfan-report.XXXXXX)
chmod 755 "$RUN"
PG_STARTED=0
PGFAN_PID=""
HELPER_PIDS=()
SIM_PIDS=()

stop_pids() {
    local p
    for p in "$@"; do
        [[ -n "$p" ]] || continue
        kill -TERM "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
}

cleanup() {
    local rc=$?
    trap - INT TERM
    stop_pids "${SIM_PIDS[@]}" "$PGFAN_PID" "${HELPER_PIDS[@]}"
    if ((PG_STARTED)); then
        "$PGSH" stop "$RUN/pg" >/dev/null 2>&1 || echo "bench_report: could not stop PostgreSQL in $RUN/pg" >&2
    fi
    if ((KEEP)); then
        echo "bench_report: kept $RUN"
    else
        rm -rf "$RUN"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

T_START=$(now)
LOADS=() # the 1-minute load average at each step

# note_load STEP
note_load() {
    LOADS+=("$(cut -d' ' -f1 /proc/loadavg) ($1)")
}
mkdir -p "$RUN/data"

# key=value files written by bench_file.sh --summary: get FILE KEY
get() {
    sed -n "s/^$2=//p" "$1" | head -n 1
}

# ---- 1. throughput ----

throughput() {
    if ((ALL_N == N)); then
        log "1/4 throughput: bench_file.sh -n $N --sink file,all"
        "$BENCH/bench_file.sh" -n "$N" --sink file,all --no-append --summary "$RUN/tp.kv" \
            >"$RUN/tp.log" 2>&1 || { tail -n 30 "$RUN/tp.log" >&2; die "bench_file.sh failed (log: $RUN/tp.log)"; }
        cp "$RUN/tp.kv" "$RUN/tp-all.kv"
    else
        log "1/4 throughput: bench_file.sh -n $N --sink file, then -n $ALL_N --sink all"
        "$BENCH/bench_file.sh" -n "$N" --sink file --no-append --summary "$RUN/tp.kv" \
            >"$RUN/tp.log" 2>&1 || { tail -n 30 "$RUN/tp.log" >&2; die "bench_file.sh failed (log: $RUN/tp.log)"; }
        "$BENCH/bench_file.sh" -n "$ALL_N" --sink all --no-append --summary "$RUN/tp-all.kv" \
            >"$RUN/tp-all.log" 2>&1 || { tail -n 30 "$RUN/tp-all.log" >&2; die "bench_file.sh failed (log: $RUN/tp-all.log)"; }
    fi
    grep -h '^\[bench' "$RUN/tp.log" "$RUN"/tp-all.log 2>/dev/null | grep -E 'pg_recvlogical:|pgfan \(' || true
}

# ---- 2. latency ----

PSQL=()
DSN=""

latency_pg() {
    log "2/4 latency: a throwaway PostgreSQL and a small shop history"
    PG_STARTED=1
    "$PGSH" start "$RUN/pg" >/dev/null || die "could not start PostgreSQL"
    local port
    port=$(sed -n 's/^PGPORT=//p' "$RUN/pg/env")
    PSQL=(psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres)
    DSN="host=127.0.0.1 port=$port user=postgres dbname=shop"
    # bench_file.sh's settings: commits wait for their WAL write (so the
    # walsender sees them at once) but nothing is fsynced
    "${PSQL[@]}" -d postgres -c "ALTER SYSTEM SET fsync = off" \
        -c "ALTER SYSTEM SET synchronous_commit = on" \
        -c "ALTER SYSTEM SET full_page_writes = off" \
        -c "ALTER SYSTEM SET shared_buffers = '1GB'" \
        -c "ALTER SYSTEM SET max_wal_size = '16GB'" \
        -c "ALTER SYSTEM SET checkpoint_timeout = '1h'" \
        -c "ALTER SYSTEM SET wal_sender_timeout = '60s'" >/dev/null || die "could not tune PostgreSQL"
    "$PGSH" restart "$RUN/pg" >/dev/null || die "could not restart PostgreSQL"
    "${PSQL[@]}" -d postgres -c 'CREATE DATABASE shop'
    "${PSQL[@]}" -d shop -f "$ROOT/deploy/shop/schema.sql" >/dev/null
    "$SIM" history --dsn "$DSN" --months 3 --stores 300 --customers 5000 --orders 30000 \
        --seed 42 >"$RUN/history.log" 2>&1 || { cat "$RUN/history.log" >&2; die "pgfan-shop-sim history failed"; }
    # Elasticsearch writes whole documents: customers has text columns
    # (orders and order_items are FULL in schema.sql).
    "${PSQL[@]}" -d shop -c 'ALTER TABLE customers REPLICA IDENTITY FULL' -c 'VACUUM ANALYZE' -c 'CHECKPOINT'
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Starts the mock broker and the ES test server; sets BOOTSTRAP, ES_PORT, ES_PID.
start_helpers() {
    rm -f "$RUN/bootstrap" "$RUN/es.port"
    "$MOCK" "$RUN/bootstrap" 1 lat.public.orders:8 lat.public.order_items:8 lat.public.customers:8 \
        2>"$RUN/broker.log" &
    HELPER_PIDS+=($!)
    python3 "$ROOT/tests/es_server/es_server.py" --port 0 --port-file "$RUN/es.port" 2>"$RUN/es.log" &
    ES_PID=$!
    HELPER_PIDS+=("$ES_PID")
    local deadline=$((SECONDS + 30))
    until [[ -s "$RUN/bootstrap" && -s "$RUN/es.port" ]]; do
        ((SECONDS < deadline)) || die "the mock broker or the ES test server did not start ($RUN/broker.log, $RUN/es.log)"
        sleep 0.1
    done
    BOOTSTRAP=$(cat "$RUN/bootstrap")
    ES_PORT=$(cat "$RUN/es.port")
}

# latency_conf KIND PORT: pgfan's configuration for a latency run.
latency_conf() {
    local kind=$1 port=$2 conf=$RUN/lat-$1.conf
    cat >"$conf" <<EOF
[source]
dsn = $DSN application_name=pgfan-latency
slot = lat_$kind
tables = public.orders, public.order_items, public.customers

[status]
socket = $RUN/lat-$kind.sock
metrics_listen = 127.0.0.1:$port

[log]
level = info

[sink.file]
path = $RUN/lat-$kind.ndjson

EOF
    if [[ "$kind" == all ]]; then
        cat >>"$conf" <<EOF
[sink.kafka]
brokers = $BOOTSTRAP
topic_prefix = lat

[sink.elasticsearch]
url = http://127.0.0.1:$ES_PORT
index.public.orders = orders-{created_at:%Y.%m.%d}
replicas = 0
dead_letter = $RUN/lat-es-dead.ndjson

EOF
        sed "s/^schema = analytics\$/schema = agg_lat/" "$ROOT/deploy/shop/aggregates.conf" >>"$conf"
    fi
    "$PGFAN" check-config -c "$conf" >/dev/null || die "pgfan rejected $conf"
}

status_json() {
    "$PGFAN" status -s "$RUN/lat-$1.sock" --json 2>/dev/null || true
}

json_num() { # json_num JSON KEY: the first "KEY":number
    sed -n 's/.*"'"$2"'":\([0-9.]*\).*/\1/p' <<<"$1" | head -n 1
}

lsn_int() {
    local hi=${1%/*} lo=${1#*/}
    echo $(((16#$hi << 32) + 16#$lo))
}

# Per-thread scheduler statistics of a pid: "cpu_ns wait_ns".
sched_of() {
    cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{ c += $1; w += $2 } END { printf "%.0f %.0f\n", c, w }'
}

# scrape KIND PREFIX: /metrics, the status JSON, the time and pgfan's and the
# ES server's scheduler statistics into $RUN/PREFIX.*
scrape() {
    local kind=$1 p=$RUN/$2
    now >"$p.time"
    curl -sf "http://127.0.0.1:$METRICS_PORT/metrics" >"$p.metrics" || die "could not scrape /metrics on port $METRICS_PORT"
    status_json "$kind" >"$p.status"
    sched_of "$PGFAN_PID" >"$p.sched"
    if [[ "$kind" == all ]]; then sched_of "$ES_PID" >"$p.es"; else echo "0 0" >"$p.es"; fi
}

# One measured window with NSIMS simulators at RATE/NSIMS each. Results in
# $RUN/lat-KIND-NSIMS.kv.
latency_window() {
    local kind=$1 nsims=$2 tag=lat-$1-$2 i end_lsn deadline js recv_lsn inflight
    local per=$((RATE / nsims))
    SIM_PIDS=()
    for ((i = 0; i < nsims; i++)); do
        "$SIM" live --dsn "$DSN application_name=shop-sim" --rate "$per" --seconds $((WARMUP + WINDOW)) \
            --seed $((7 + i)) >"$RUN/$tag-sim$i.log" 2>&1 &
        SIM_PIDS+=($!)
    done
    sleep "$WARMUP"
    scrape "$kind" "$tag-a"
    for p in "${SIM_PIDS[@]}"; do
        wait "$p" || die "pgfan-shop-sim live failed ($RUN/$tag-sim*.log)"
    done
    SIM_PIDS=()
    now >"$RUN/$tag-simend.time"
    # everything the simulators committed is durable in every sink
    end_lsn=$("${PSQL[@]}" -d shop -At -c 'SELECT pg_current_wal_flush_lsn()')
    deadline=$((SECONDS + 120))
    while :; do
        js=$(status_json "$kind")
        recv_lsn=$(sed -n 's/.*"received_lsn":"\([0-9A-Fa-f]*\/[0-9A-Fa-f]*\)".*/\1/p' <<<"$js")
        inflight=$(json_num "$js" inflight_transactions)
        if [[ -n "$recv_lsn" && "$inflight" == 0 ]] && (($(lsn_int "$recv_lsn") >= $(lsn_int "$end_lsn"))); then
            break
        fi
        kill -0 "$PGFAN_PID" 2>/dev/null || die "pgfan exited during the latency run ($RUN/lat-$kind.log)"
        ((SECONDS < deadline)) || die "pgfan did not make the simulators' changes durable within 120 s"
        sleep 0.2
    done
    scrape "$kind" "$tag-b"
    python3 - "$RUN/$tag" "$nsims" "$RATE" >"$RUN/$tag.kv" <<'EOF'
import json, re, sys
p, nsims, rate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def metrics(f):
    buckets, changes = {}, 0.0
    for line in open(f):
        m = re.match(r'pgfan_commit_to_durable_seconds_bucket\{le="([^"]+)"\} (\S+)', line)
        if m:
            buckets[float("inf") if m.group(1) == "+Inf" else float(m.group(1))] = float(m.group(2))
        m = re.match(r'pgfan_changes_total\{[^}]*\} (\S+)', line)
        if m:
            changes += float(m.group(1))
    return buckets, changes
(ba, ca), (bb, cb) = metrics(p + "-a.metrics"), metrics(p + "-b.metrics")
ta, tb = float(open(p + "-a.time").read()), float(open(p + "-b.time").read())
tend = float(open(p + "-simend.time").read())
sa, sb = (json.load(open(p + s + ".status"))["commit_to_durable"] for s in ("-a", "-b"))
bounds = sorted(bb)
cum = [bb[b] - ba.get(b, 0) for b in bounds]
counts = [cum[0]] + [cum[i] - cum[i - 1] for i in range(1, len(cum))]
n = cum[-1]
# the window's largest time: exact when it raised the lifetime maximum,
# else at most the lifetime maximum and within the highest non-empty bucket
top = max((i for i, c in enumerate(counts) if c > 0), default=0)
if sb["max_seconds"] > sa["max_seconds"]:
    wmax, exact = sb["max_seconds"], True
else:
    hi = bounds[top] if bounds[top] != float("inf") else sa["max_seconds"]
    wmax, exact = min(sa["max_seconds"], hi), False
def quantile(q):  # as pipeline_latency_quantile / histogram_quantile
    rank, below, lower = q * n, 0.0, 0.0
    for i, b in enumerate(bounds):
        upper = wmax if b == float("inf") else b
        if counts[i] > 0 and below + counts[i] >= rank:
            upper = max(upper, lower)
            return min(lower + (upper - lower) * (rank - below) / counts[i], wmax)
        below += counts[i]
        lower = b
    return wmax
def sched(f):
    c, w = open(f).read().split()
    return int(c), int(w)
(pca, pwa), (pcb, pwb) = sched(p + "-a.sched"), sched(p + "-b.sched")
(eca, ewa), (ecb, ewb) = sched(p + "-a.es"), sched(p + "-b.es")
changes = cb - ca
out = {
    "sims": nsims, "target": rate, "window_s": round(tend - ta, 1), "changes": int(changes),
    "rate": round(changes / (tend - ta)), "transactions": int(n),
    "p50_ms": round(quantile(0.5) * 1000, 1), "p99_ms": round(quantile(0.99) * 1000, 1),
    "max_ms": round(wmax * 1000, 1), "max_exact": int(exact),
    "pgfan_cpu_us": round((pcb - pca) / 1000 / changes, 1) if changes else 0,
    "pgfan_cpu_share": round((pcb - pca) / 1e9 / (tb - ta) * 100),
    "es_cpu_share": round((ecb - eca) / 1e9 / (tb - ta) * 100),
    "es_wait_share": round((ewb - ewa) / 1e9 / (tb - ta) * 100),
    "buckets": " ".join("%g:%d" % (b, c) for b, c in zip(bounds, counts) if c),
}
for k, v in out.items():
    print("%s=%s" % (k, v))
EOF
    local behind
    behind=$(cat "$RUN/$tag"-sim*.log | grep -c 'BEHIND' || true)
    echo "behind_seconds=$behind" >>"$RUN/$tag.kv"
    log "latency ($kind, $nsims simulator(s)): $(tr '\n' ' ' <"$RUN/$tag.kv")"
}

LAT_SIMS=1

# latency_run KIND: pgfan with the file sink (file) or every sink (all).
latency_run() {
    local kind=$1 rate deadline
    log "latency: pgfan with $([[ $kind == all ]] && echo 'every sink' || echo 'the file sink'), $RATE changes/s"
    ES_PID=""
    [[ "$kind" != all ]] || start_helpers
    METRICS_PORT=$(free_port)
    latency_conf "$kind" "$METRICS_PORT"
    "$PGFAN" run -c "$RUN/lat-$kind.conf" 2>"$RUN/lat-$kind.log" &
    PGFAN_PID=$!
    deadline=$((SECONDS + 120))
    until [[ "$(status_json "$kind")" == *'"state":"streaming"'* ]] &&
        { [[ "$kind" != all ]] || { grep -q 'sink.aggregates: ready' "$RUN/lat-$kind.log" &&
            grep -q 'index templates ready' "$RUN/lat-$kind.log"; }; }; do
        kill -0 "$PGFAN_PID" 2>/dev/null || { tail -n 20 "$RUN/lat-$kind.log" >&2; PGFAN_PID=""; die "pgfan exited at start"; }
        ((SECONDS < deadline)) || die "pgfan was not streaming with every sink ready within 120 s ($RUN/lat-$kind.log)"
        sleep 0.2
    done
    if ((SIMS)); then
        latency_window "$kind" "$SIMS"
        cp "$RUN/lat-$kind-$SIMS.kv" "$RUN/lat-$kind.kv"
    else
        latency_window "$kind" "$LAT_SIMS"
        cp "$RUN/lat-$kind-$LAT_SIMS.kv" "$RUN/lat-$kind.kv"
        rate=$(get "$RUN/lat-$kind-$LAT_SIMS.kv" rate)
        if ((LAT_SIMS == 1 && rate * 100 < RATE * 95)); then
            log "one simulator reached $rate changes/s of $RATE: measuring again with two at $((RATE / 2)) each"
            LAT_SIMS=2
            latency_window "$kind" 2
            cp "$RUN/lat-$kind-2.kv" "$RUN/lat-$kind.kv"
        fi
    fi
    echo "rss_mb=$(awk '/VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$PGFAN_PID/status")" >>"$RUN/lat-$kind.kv"
    stop_pids "$PGFAN_PID"
    PGFAN_PID=""
    stop_pids "${HELPER_PIDS[@]}"
    HELPER_PIDS=()
    rm -f "$RUN/lat-$kind.ndjson"
}

# ---- 3. snapshot ----

snapshot() {
    log "3/4 snapshot: bench_snapshot.sh -n $SNAP_N"
    "$BENCH/bench_snapshot.sh" -n "$SNAP_N" --no-append >"$RUN/snap.log" 2>&1 ||
        { tail -n 30 "$RUN/snap.log" >&2; die "bench_snapshot.sh failed (log: $RUN/snap.log)"; }
    # | reader | wall s | rows/s | ratio to COPY | CPU s | peak RSS MB | output MB |
    grep '^| psql\|^| pgfan snapshot' "$RUN/snap.log" >"$RUN/snap.rows" || die "no table in $RUN/snap.log"
    grep '^Table:' "$RUN/snap.log" | head -n 1 >"$RUN/snap.table" || true
}

# ---- 4. profile ----

perf_profile() {
    log "4/4 profile: bench_file.sh -n $PROF_N --sink file with perf record -e cpu-clock attached"
    PGFAN_BENCH_PERF=$RUN/perf.data "$BENCH/bench_file.sh" -n "$PROF_N" --sink file --no-append \
        --summary "$RUN/prof.kv" >"$RUN/prof.log" 2>&1 ||
        { tail -n 30 "$RUN/prof.log" >&2; die "bench_file.sh (profile) failed (log: $RUN/prof.log)"; }
    perf report -i "$RUN/perf.data.file" --stdio --no-children --sort dso,sym -q --percent-limit 0.7 \
        2>/dev/null | sed '/^$/d' >"$RUN/perf.top" || die "perf report failed"
    perf report -i "$RUN/perf.data.file" --stdio --no-children --sort dso -q 2>/dev/null |
        sed '/^$/d' >"$RUN/perf.dso" || true
    # system calls per change: a run of its own (the tracepoints slow pgfan down)
    PGFAN_BENCH_PERF_STAT=$RUN/perf.stat "$BENCH/bench_file.sh" -n "$PROF_N" --sink file --no-append \
        --summary "$RUN/stat.kv" >"$RUN/stat.log" 2>&1 ||
        { tail -n 30 "$RUN/stat.log" >&2; die "bench_file.sh (system calls) failed (log: $RUN/stat.log)"; }
}

# Lines "Ir (pct%)  file:function [object]" of callgrind_annotate, objects only.
cg_lines() {
    callgrind_annotate "--inclusive=$1" --auto=no "$RUN/callgrind.out" 2>/dev/null |
        sed -n '/file:function/,$p' | grep -E '^ *[0-9,]+ +\( *[0-9.]+%\) +[^ ].*\[' || true
}

callgrind_profile() {
    log "4/4 profile: bench_file.sh -n $CG_N --sink file with pgfan under valgrind --tool=callgrind"
    PGFAN_BENCH_WRAP="valgrind --tool=callgrind --callgrind-out-file=$RUN/callgrind.out" \
        "$BENCH/bench_file.sh" -n "$CG_N" --sink file --no-append --summary "$RUN/cg.kv" \
        >"$RUN/cg.log" 2>&1 || { tail -n 30 "$RUN/cg.log" >&2; die "the callgrind run failed (log: $RUN/cg.log)"; }
    cg_lines no | head -n 16 >"$RUN/cg.self"
    # inclusive, without the frames every sample passes through
    cg_lines yes | grep -vE ':(\(below main\)|__libc_start_main[^ ]*|main|cmd_run_or_check|daemon_run|loop_run_once|on_socket|drain_stream) \[' |
        head -n 14 >"$RUN/cg.incl"
    callgrind_annotate --auto=no "$RUN/callgrind.out" 2>/dev/null | sed -n 's/^ *\([0-9,]*\) .*PROGRAM TOTALS.*/\1/p' |
        tr -d , >"$RUN/cg.total"
}

note_load start
throughput
note_load "after the throughput"
latency_pg
latency_run file
note_load "after the file latency"
latency_run all
note_load "after the all-sinks latency"
"$PGSH" stop "$RUN/pg" >/dev/null || true
PG_STARTED=0
((SNAP_N == 0)) || snapshot
note_load "before the profile"
if ((HAVE_PERF)); then
    perf_profile
elif ((PROF_N)); then
    log "4/4 perf profile skipped: perf does not work here (try: apt-get install linux-perf)"
fi
HAVE_CG=0
if ((CG_N)) && command -v valgrind >/dev/null && command -v callgrind_annotate >/dev/null; then
    callgrind_profile
    HAVE_CG=1
elif ((CG_N)); then
    log "callgrind skipped: apt-get install valgrind"
fi

# ---- report ----

T_END=$(now)
TOTAL_S=$(fsub "$T_END" "$T_START")
note_load end
LOAD_LIST=$(IFS=,; echo "${LOADS[*]}")
KV=$RUN/tp.kv
AKV=$RUN/tp-all.kv
mkdir -p "$OUT/report-data"

# throughput rows: label kvfile client
tp_row() {
    local kv=$1 c=$2 label=$3 n
    n=$(get "$kv" n)
    awk -v label="$label" -v n="$n" -v wall="$(get "$kv" "${c}_wall")" -v ref="$(get "$kv" recv_wall)" \
        -v cpu="$(get "$kv" "${c}_cpu")" -v rss="$(get "$kv" "${c}_rss")" 'BEGIN {
        printf "| %s | %d | %.1f | %d | %.2f | %.1f | %.1f |\n", label, n, wall, n / wall, ref / wall,
            cpu * 1e6 / n, rss }'
}
cps() {
    awk -v n="$(get "$1" n)" -v w="$(get "$1" "$2_wall")" 'BEGIN { printf "%d", n / w }'
}

{
    echo "pg_recvlogical $(cps "$KV" recv)"
    echo "\"pgfan, file sink\" $(cps "$KV" file)"
    [[ "$ALL_N" == "$N" ]] || echo "\"pg_recvlogical (run 2)\" $(cps "$AKV" recv)"
    echo "\"pgfan, every sink\" $(cps "$AKV" all)"
} >"$OUT/report-data/throughput.dat"
{
    for k in file all; do
        printf '"%s" %s %s %s\n' "$([[ $k == all ]] && echo 'every sink' || echo 'file sink')" \
            "$(get "$RUN/lat-$k.kv" p50_ms)" "$(get "$RUN/lat-$k.kv" p99_ms)" "$(get "$RUN/lat-$k.kv" max_ms)"
    done
} >"$OUT/report-data/latency.dat"
STAMP=$(date -u '+%Y-%m-%d %H:%M UTC')
gnuplot -e "tp='$OUT/report-data/throughput.dat'; lat='$OUT/report-data/latency.dat'; out='$OUT/report.png'; stamp='$STAMP, $(get "$KV" machine)'" \
    "$BENCH/bench_report.gp" || die "gnuplot failed"

lat_row() {
    local k=$1 kv=$RUN/lat-$1.kv label=$2 le=""
    [[ "$(get "$kv" max_exact)" == 1 ]] || le="≤ "
    printf '| %s | %s | %s | %s (%s s behind) | %s | %s | %s | %s%s | %s | %s |\n' "$label" "$RATE" \
        "$(get "$kv" rate)" "$(get "$kv" sims)" "$(get "$kv" behind_seconds)" "$(get "$kv" transactions)" \
        "$(get "$kv" p50_ms)" "$(get "$kv" p99_ms)" "$le" "$(get "$kv" max_ms)" \
        "$(get "$kv" pgfan_cpu_us)" "$(get "$kv" rss_mb)"
}

# callgrind lines -> | function | file | share | instructions per change |
cg_rows() {
    awk -v n="$CG_N" '{
        ir = $1; gsub(/,/, "", ir)
        match($0, /\( *[0-9.]+%\)/); pct = substr($0, RSTART, RLENGTH); gsub(/[()% ]/, "", pct)
        loc = $0; sub(/^ *[0-9,]+ +\( *[0-9.]+%\) +/, "", loc); sub(/ \[.*$/, "", loc)
        fn = loc; sub(/^.*:/, "", fn); file = loc; sub(/:[^:]*$/, "", file)
        sub(/^.*\.\.\//, "", file); sub(/^\.\//, "", file)
        printf "| `%s` | %s | %s %% | %.0f |\n", fn, file, pct, ir / n }' "$1"
}

# perf lines: "  12.34%  pgfan  [.] symbol" -> | symbol | dso | share | µs/change |
perf_rows() {
    local us_total=$1
    awk -v us="$us_total" '{
        pct = $1; sub(/%/, "", pct); dso = $2; $1 = ""; $2 = ""; $3 = ""; sym = $0
        gsub(/^ +| +$/, "", sym); gsub(/\|/, "\\|", sym)
        printf "| `%s` | %s | %.1f %% | %.2f |\n", sym, dso, pct, pct / 100 * us }' "$RUN/perf.top"
}

ES_BUSY=$(get "$AKV" all_es_busy)
ES_SHARE=$(sed -n 's/.* = \([0-9]*\) % of.*/\1/p' <<<"$ES_BUSY")
HOLD_ES=$(get "$AKV" all_hold_elasticsearch)
if [[ -n "$ES_SHARE" && -n "$HOLD_ES" ]] && ((ES_SHARE >= 75 && HOLD_ES >= 50)); then
    ES_VERDICT="**The Python Elasticsearch test server is the bottleneck of this path**: it held the confirmation back in ${HOLD_ES} % of the polls and wanted a CPU almost all along ($ES_BUSY). Against a real cluster expect the cluster's indexing rate."
elif [[ -n "$HOLD_ES" ]] && ((HOLD_ES >= 50)); then
    ES_VERDICT="The Elasticsearch sink held the confirmation back in ${HOLD_ES} % of the polls, but its test server did not want a CPU all along ($ES_BUSY): the bulk round trips (batch_linger 200 ms, max_in_flight 2) bound this path."
else
    ES_VERDICT="The Elasticsearch sink held the confirmation back in ${HOLD_ES:-?} % of the polls ($ES_BUSY)."
fi

PERF_SECTION="(no profile: perf was not available or --profile-n 0)"
if ((HAVE_PERF)) && [[ -s "$RUN/perf.top" ]]; then
    PROF_US=$(awk -v c="$(get "$RUN/prof.kv" file_cpu)" -v n="$(get "$RUN/prof.kv" n)" 'BEGIN { printf "%.2f", c * 1e6 / n }')
    SYSCALLS=""
    if [[ -s "$RUN/perf.stat.file" ]]; then
        # perf stat -x, lines: count,unit,event,...; per change of those after perf attached
        SYSCALLS=$(awk -F, -v n=$(($(get "$RUN/stat.kv" n) - $(get "$RUN/stat.kv" file_perf_from))) '
            $3 ~ /sys_enter/ && $1 ~ /^[0-9]+$/ {
                name = $3; sub(/^.*sys_enter_?/, "", name); if (name == "") name = "all system calls"
                printf "%s%s %.2f", (k++ ? ", " : ""), name, $1 / n }' "$RUN/perf.stat.file")
        SYSCALLS=$'\n'"System calls per change (\`perf stat\` of the syscall tracepoints, a second drain of $(get "$RUN/stat.kv" n) changes): $SYSCALLS."
    fi
    PERF_SECTION=$(
        cat <<EOF
\`perf record -e cpu-clock -F 4999\` attached to pgfan (file sink) during a $(get "$RUN/prof.kv" n)-change
drain of the same workload: $(get "$RUN/prof.kv" file_cpu) s of CPU, **$PROF_US µs per change**; every symbol
above 0.7 % of pgfan's samples, self time; µs/change = share × $PROF_US. Kernel symbols are the
system calls (socket reads, epoll, file writes, fsync); on this VM a timer sample taken in the
kernel often lands on \`pvm_irq_enable\` (interrupts re-enabled), so read that line as "in a
system call" rather than as one function.

| symbol | object | share of pgfan's CPU | µs per change |
| --- | --- | --- | --- |
$(perf_rows "$PROF_US")

By object: $(awk '{ printf "%s%s %s", (NR > 1 ? ", " : ""), $2, $1 }' "$RUN/perf.dso").
$SYSCALLS
EOF
    )
fi
if ((HAVE_CG)) && [[ -s "$RUN/cg.self" ]]; then
    CG_SECTION=$(
        cat <<EOF
\`valgrind --tool=callgrind\` on pgfan (file sink) for a $CG_N-change drain of the same workload:
$(awk -v t="$(cat "$RUN/cg.total")" -v n="$CG_N" 'BEGIN { printf "%.0f", t / n }') instructions per change in all (start-up included, about 1 %). Self cost of the top
functions (\`callgrind_annotate --inclusive=no\`):

| function | file | share of instructions | instructions per change |
| --- | --- | --- | --- |
$(cg_rows "$RUN/cg.self")

Inclusive (the function and what it calls), below the event loop:

| function | file | share of instructions | instructions per change |
| --- | --- | --- | --- |
$(cg_rows "$RUN/cg.incl")
EOF
    )
    if [[ "$PERF_SECTION" == "(no profile"* ]]; then
        PERF_SECTION=$CG_SECTION
    else
        PERF_SECTION+=$'\n\n'"$CG_SECTION"
    fi
fi

SNAP_SECTION="(skipped: --snapshot-n 0)"
if ((SNAP_N)); then
    SNAP_SECTION=$(
        cat <<EOF
\`tests/bench/bench_snapshot.sh -n $SNAP_N\` (snapshot = initial, 2 workers, file sink; time to durable):
$(cat "$RUN/snap.table")

| reader | wall s | rows/s | ratio to COPY | CPU s (user+sys) | peak RSS MB | output MB |
| --- | --- | --- | --- | --- | --- | --- |
$(cat "$RUN/snap.rows")
EOF
    )
fi

TWO_RUNS=""
[[ "$ALL_N" == "$N" ]] || TWO_RUNS=" The all-sinks path ran $ALL_N changes in a second run (its ratio is to that run's pg_recvlogical, $(cps "$AKV" recv) changes/s)."

# shellcheck disable=SC2016 # backquotes for markdown, not commands
TP_ROWS=$(
    tp_row "$KV" recv '`pg_recvlogical` (raw wal2json to a file)'
    tp_row "$KV" file "pgfan, file sink (fsync every 100 ms)"
    tp_row "$AKV" all "pgfan, every sink: file + Kafka + Elasticsearch + 5 aggregates"
)

cat >"$OUT/report.md" <<EOF
# pgfan benchmark report

Generated by \`tests/bench/bench_report.sh\` on $STAMP in $(awk -v s="$TOTAL_S" 'BEGIN { printf "%d min %d s", s / 60, s % 60 }').
Machine: $(get "$KV" machine) ($(nproc) CPUs). 1-minute load average along the run:
${LOAD_LIST//,/, }. Other work shares this machine: numbers vary by ±15 % or more between
runs, more when the load exceeds the 2 CPUs (see "waiting for a CPU" below).
PostgreSQL $(get "$KV" pg_version), wal2json $(dpkg-query -W -f '${Version}' postgresql-15-wal2json 2>/dev/null || echo '?'), TCP loopback.
pgfan $(get "$KV" commit) ($(get "$KV" build_info)).$BUILD_NOTE

![changes/s per path and commit-to-durable latency](report.png)

## Throughput

\`tests/bench/bench_file.sh\`: $(get "$KV" n) row changes on \`orders\` ($(get "$KV" ins) inserts, $(get "$KV" upd) updates,
$(get "$KV" del) deletes; 1-10-row transactions plus three of $(($(get "$KV" n) / 10)) rows; $(awk -v b="$(get "$KV" wal_bytes)" 'BEGIN { printf "%.0f", b / 1e6 }') MB of WAL),
decoded from slots created before the workload, drained one after the other. A pgfan path ends
when the slot's \`confirmed_flush_lsn\` reaches the end position (durable in every sink).$TWO_RUNS

| path | changes | wall s | changes/s | ratio to pg_recvlogical | client CPU µs/change | peak RSS MB |
| --- | --- | --- | --- | --- | --- | --- |
$TP_ROWS

Who limited each path (\`/proc/PID/task/*/schedstat\`, summed over threads: time on a CPU plus
time runnable but waiting for one, as a share of the drain; near or above 100 % means CPU-bound,
even when the machine's load left it only part of a core):

- pgfan, file sink: pgfan $(get "$KV" file_pgfan_busy); its walsender $(get "$KV" file_ws_busy).
- pgfan, every sink: pgfan $(get "$AKV" all_pgfan_busy); its walsender $(get "$AKV" all_ws_busy).

Every sink: the Kafka mock broker (\`build/tests/mock_broker\`, 64 partitions) and the Elasticsearch
test server (\`tests/es_server/es_server.py\`, daily indices) run as processes of their own; the
aggregates are the shop's five (\`deploy/shop/aggregates.conf\`), built on the seed data before the
workload, and checked afterwards (\`gmv_daily\` EXCEPT ALL its GROUP BY: $(get "$AKV" all_agg_diff) rows differ).
Helpers during the all-sinks drain: Elasticsearch test server $(get "$AKV" all_es_cpu) s of CPU, mock broker
$(get "$AKV" all_broker_cpu) s, the PostgreSQL backend applying the aggregates $(get "$AKV" all_agg_cpu) s.
Sink holding the confirmation back (alone lowest durable position, share of 0.1 s polls): file
$(get "$AKV" all_hold_file) %, Kafka $(get "$AKV" all_hold_kafka) %, Elasticsearch ${HOLD_ES:-?} %, aggregates $(get "$AKV" all_hold_aggregates) %.
$ES_VERDICT

## Latency: commit to durable in every sink

\`pgfan-shop-sim live --rate $RATE\` (the shop's API: orders with items, payments, shipments,
refunds, sign-ups on orders, order_items and customers) against a shop of 3 months of history;
pgfan streams those three tables. Quantiles of \`pgfan_commit_to_durable_seconds\` over a ${WINDOW} s
window after a ${WARMUP} s warm-up, from the difference of two \`/metrics\` scrapes (start of the window,
and after the simulators' last change was durable), interpolated within the histogram's buckets
(1, 2.5, 5, 10, 25, 50, 100, 250, 500 ms, 1 s, ...) as Prometheus' \`histogram_quantile\` does. The
maximum is the status JSON's \`max_seconds\` when the window raised it, else a bound (≤). Sinks at
their defaults: file \`fsync_interval = 100ms\`, Kafka \`linger = 5ms\`, Elasticsearch
\`batch_linger = 200ms\`, aggregates \`batch_linger = 200ms\`. Commits wait for their WAL write
(\`synchronous_commit = on\`, \`fsync = off\`).

| sinks | target changes/s | achieved changes/s | simulators (seconds BEHIND, whole run) | transactions | p50 ms | p99 ms | max ms | pgfan CPU µs/change | pgfan peak RSS MB |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
$(lat_row file "file")
$(lat_row all "file + Kafka + Elasticsearch + aggregates")

Buckets (upper bound in s: transactions) in the window: file: $(get "$RUN/lat-file.kv" buckets); every sink: $(get "$RUN/lat-all.kv" buckets).
pgfan used $(get "$RUN/lat-file.kv" pgfan_cpu_share) % (file) and $(get "$RUN/lat-all.kv" pgfan_cpu_share) % (every sink) of a core during the window; the
Elasticsearch test server $(get "$RUN/lat-all.kv" es_cpu_share) % on a CPU and $(get "$RUN/lat-all.kv" es_wait_share) % waiting for one.

## Initial snapshot

$SNAP_SECTION

## Profile of the hot path (file sink)

$PERF_SECTION

Raw logs of this run are not kept (\`-k\` keeps them); the numbers behind the chart are in
[\`report-data/\`](report-data/).
EOF

log "wrote $OUT/report.md and $OUT/report.png in ${TOTAL_S}s"
