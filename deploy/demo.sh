#!/usr/bin/env bash
# demo.sh - see pgfan stream a live shop into a file, Kafka, Elasticsearch and
# always-current KPI tables.
#
#   deploy/demo.sh [--once] [--seconds N] [--rate N] [--keep] [--build DIR]
#
# On a fresh Debian 12, as root: installs the missing packages
# (deploy/install-deps.sh), builds pgfan and the shop simulator (meson +
# ninja in ./build), starts a throwaway PostgreSQL 15 (tests/harness/pg.sh),
# loads 12 months of shop history with `pgfan-shop-sim history` (2000 stores,
# 30000 customers, 200000 orders), starts the Elasticsearch 8 test server
# (tests/es_server/es_server.py) and pgfan with deploy/demo.conf plus
# deploy/shop/aggregates.conf: the NDJSON file sink, Kafka through
# librdkafka's mock cluster, Elasticsearch and the aggregates, whose KPI
# views (deploy/shop/analytics_views.sql) it loads once pgfan made the tables.
# Then `pgfan-shop-sim live` plays the shop's API (orders created with their
# items, paid, shipped, delivered, cancelled, refunded; customers signing
# up) for --seconds (default 60) while the demo shows `pgfan status` and GMV
# by country every 5 s. Afterwards it waits until pgfan has confirmed
# everything and checks the sinks:
#   - the file holds exactly the row changes PostgreSQL decoded (a second
#     slot counts them);
#   - the aggregate gmv_daily equals the GROUP BY over the orders table;
#   - Elasticsearch holds one document per order that changed while pgfan ran.
#
# Without --once, PostgreSQL, pgfan and Elasticsearch stay up until Ctrl-C,
# so you can look around (the summary says how). Everything it started is
# stopped on exit, the throwaway cluster is deleted, and the run directory
# (config, logs, NDJSON) is deleted too unless --keep is given or something
# failed.
#
# Exit status: 0 on success (also after Ctrl-C once the demo is up),
# 1 with a message on stderr when something fails, 2 on bad arguments.

# The cleanup functions run from traps, which shellcheck cannot see.
# shellcheck disable=SC2317
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
PGSH=$ROOT/tests/harness/pg.sh
ES_SERVER=$ROOT/tests/es_server/es_server.py

BUILD=build
DURATION=60
RATE=500          # row changes per second the shop's API aims at
ONCE=0
KEEP=0
CATCHUP_TIMEOUT=120
STOP_TIMEOUT=75   # > pgfan's default shutdown_timeout (60 s)
# History size: loads in a few seconds here (about 650,000 rows).
HISTORY=(--months 12 --stores 2000 --customers 30000 --orders 200000 --seed 42)

usage() {
    cat <<EOF
usage: deploy/demo.sh [--once] [--seconds N] [--rate N] [--keep] [--build DIR]

  --once        stop by itself after the summary (default: keep running until Ctrl-C)
  --seconds N   run the live traffic for N seconds (default $DURATION)
  --rate N      aim at about N row changes per second (default $RATE)
  --keep        keep the run directory (config, logs, NDJSON output) at exit
  --build DIR   meson build directory, relative to the checkout (default $BUILD)
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
    --build)
        [[ $# -ge 2 && -n "$2" ]] || { echo "demo: --build needs a directory" >&2; usage >&2; exit 2; }
        BUILD=$2
        shift
        ;;
    -h | --help) usage; exit 0 ;;
    *) echo "demo: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

PGFAN=$ROOT/$BUILD/daemon/pgfan
SIM=$ROOT/$BUILD/tools/pgfan-shop-sim

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
LIVE_PID=""
ES_PID=""
PG_STARTED=0
READY=0       # the demo is up: Ctrl-C from now on is the normal way out
CLEANED=0

stop_live() {
    [[ -n "$LIVE_PID" ]] || return 0
    kill -TERM "$LIVE_PID" 2>/dev/null || true
    wait "$LIVE_PID" 2>/dev/null || true
    LIVE_PID=""
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

stop_es() {
    [[ -n "$ES_PID" ]] || return 0
    kill -TERM "$ES_PID" 2>/dev/null || true
    wait "$ES_PID" 2>/dev/null || true
    ES_PID=""
}

cleanup() {
    local rc=$? pgfan_rc=0
    ((CLEANED)) && return 0
    CLEANED=1
    trap - INT TERM
    stop_live
    if [[ -n "$PGFAN_PID" ]]; then
        echo "demo: stopping pgfan (SIGTERM)"
        stop_pgfan || pgfan_rc=$?
        if ((pgfan_rc != 0)); then
            echo "demo: pgfan exited with status $pgfan_rc on SIGTERM (expected 0); see $RUN/pgfan.log" >&2
            tail -n 20 "$RUN/pgfan.log" >&2 || true
            ((rc != 0)) || rc=1
        fi
    fi
    stop_es
    if ((PG_STARTED)); then
        echo "demo: stopping PostgreSQL"
        "$PGSH" stop "$RUN/pg" || echo "demo: could not stop the PostgreSQL in $RUN/pg" >&2
    fi
    if [[ -n "$RUN" && -d "$RUN" ]]; then
        if ((rc == 0 && !KEEP)); then
            rm -rf "$RUN"
        else
            echo "demo: run directory kept: $RUN (config, pgfan.log, live.log, out/changes.ndjson)"
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

# Fails the demo with pgfan's last log lines when pgfan is gone.
check_pgfan_alive() {
    kill -0 "$PGFAN_PID" 2>/dev/null && return 0
    PGFAN_PID=""
    tail -n 20 "$RUN/pgfan.log" >&2
    die "pgfan exited $1 (log: $RUN/pgfan.log)"
}

# GET (or POST with -p) on the Elasticsearch test server; prints the body.
es() {
    local method=GET
    if [[ "$1" == -p ]]; then method=POST; shift; fi
    python3 - "$ES_URL$1" "$method" <<'EOF'
import sys, urllib.request
req = urllib.request.Request(sys.argv[1], method=sys.argv[2])
with urllib.request.urlopen(req, timeout=30) as r:
    sys.stdout.write(r.read().decode())
EOF
}

# ---- 1. packages and build ----

say "1/7 packages"
"$ROOT/deploy/install-deps.sh" || die "could not install the build dependencies (see above)"

RUN=$(mktemp -d /tmp/pgfan-demo.XXXXXX)
chmod 755 "$RUN"      # the postgres user must reach $RUN/pg
mkdir -p "$RUN/out"

say "2/7 build"
(
    cd "$ROOT"
    if [[ ! -f $BUILD/build.ninja ]]; then
        meson setup "$BUILD"
    fi
    ninja -C "$BUILD"
) >"$RUN/build.log" 2>&1 || {
    tail -n 30 "$RUN/build.log" >&2
    die "could not build pgfan (full log: $RUN/build.log)"
}
[[ -x "$PGFAN" ]] || die "could not find $PGFAN after the build"
[[ -x "$SIM" ]] || die "could not find $SIM after the build"
"$PGFAN" --version

# ---- 2. PostgreSQL + shop history ----

say "3/7 PostgreSQL and 12 months of shop history"
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
SHOP_DSN="host=$PGHOST port=$PGPORT user=$PGUSER dbname=shop"
"${PSQL[@]}" -d postgres -c 'CREATE DATABASE shop' || die "could not create database shop"
"${PSQL[@]}" -d shop -f "$ROOT/deploy/shop/schema.sql" >/dev/null ||
    die "could not load deploy/shop/schema.sql"
"$SIM" history --dsn "$SHOP_DSN" "${HISTORY[@]}" || die "could not load the shop's history (see above)"
# Elasticsearch writes whole documents: tables with text columns need the
# old row in UPDATEs (schema.sql sets FULL on orders and order_items).
"${PSQL[@]}" -d shop -c "ALTER TABLE countries REPLICA IDENTITY FULL;
    ALTER TABLE stores REPLICA IDENTITY FULL; ALTER TABLE customers REPLICA IDENTITY FULL;
    ALTER TABLE products REPLICA IDENTITY FULL" || die "could not set REPLICA IDENTITY FULL"
echo "PostgreSQL 15 on 127.0.0.1:$PGPORT (data in $RUN/pg)"

# ---- 3. Elasticsearch test server ----

say "4/7 Elasticsearch 8 test server"
python3 "$ES_SERVER" --port 0 --port-file "$RUN/es.port" >"$RUN/es.log" 2>&1 &
ES_PID=$!
deadline=$((SECONDS + 30))
until [[ -s "$RUN/es.port" ]]; do
    kill -0 "$ES_PID" 2>/dev/null || { ES_PID=""; cat "$RUN/es.log" >&2; die "the Elasticsearch test server exited"; }
    ((SECONDS < deadline)) || die "the Elasticsearch test server wrote no port within 30 s ($RUN/es.log)"
    sleep 0.1
done
ES_URL="http://127.0.0.1:$(cat "$RUN/es.port")"
echo "Elasticsearch test server at $ES_URL, pid $ES_PID, log $RUN/es.log"

# ---- 4. pgfan ----

say "5/7 pgfan: file, Kafka (mock cluster), Elasticsearch, aggregates"
CONF=$RUN/pgfan.conf
OUT=$RUN/out/changes.ndjson
SOCK=$RUN/pgfan.sock
DSN="$SHOP_DSN application_name=pgfan-demo"
{
    sed -e "s|@DSN@|$DSN|" -e "s|@OUT@|$OUT|" -e "s|@SOCKET@|$SOCK|" -e "s|@ES_URL@|$ES_URL|" \
        "$ROOT/deploy/demo.conf"
    echo
    cat "$ROOT/deploy/shop/aggregates.conf"
} >"$CONF"
"$PGFAN" check-config -c "$CONF" >"$RUN/check-config.txt" ||
    die "pgfan rejected the generated config $CONF"

# A second slot sees the same WAL: at the end it tells how many row changes
# PostgreSQL decoded, to compare with the file.
"${PSQL[@]}" -d shop -At -c \
    "SELECT 'check slot at ' || lsn FROM pg_create_logical_replication_slot('demo_check', 'wal2json')"

"$PGFAN" run -c "$CONF" 2>"$RUN/pgfan.log" &
PGFAN_PID=$!
echo "pgfan running, pid $PGFAN_PID, log $RUN/pgfan.log"

# Changes made before the slot exists are not captured: wait until pgfan
# has created it and streams from it, and until the aggregates are computed
# from the history.
deadline=$((SECONDS + 60))
until [[ "$("${PSQL[@]}" -d shop -At -c \
    "SELECT active FROM pg_replication_slots WHERE slot_name = 'pgfan'")" == t ]] &&
    "$PGFAN" status -s "$SOCK" --json >/dev/null 2>&1 &&
    grep -q 'sink.aggregates: ready' "$RUN/pgfan.log"; do
    check_pgfan_alive "during startup"
    if ((SECONDS >= deadline)); then
        tail -n 20 "$RUN/pgfan.log" >&2
        die "pgfan is not streaming with its aggregates ready after 60 s (log: $RUN/pgfan.log)"
    fi
    sleep 0.2
done
grep -h 'sink.aggregates: ready' "$RUN/pgfan.log" | sed 's/^[^ ]* //' | head -n 1
"${PSQL[@]}" -d shop -f "$ROOT/deploy/shop/analytics_views.sql" >/dev/null ||
    die "could not load deploy/shop/analytics_views.sql"
echo "pgfan is streaming from slot \"pgfan\"; KPI views loaded (analytics.*)"

# ---- 5. live traffic ----

say "6/7 live traffic: ${DURATION}s at about $RATE row changes/s (pgfan-shop-sim live)"
"$SIM" live --dsn "$SHOP_DSN application_name=shop-api" --rate "$RATE" --seconds "$DURATION" \
    --seed 7 >"$RUN/live.log" 2>&1 &
LIVE_PID=$!

GMV_SQL="SELECT country, currency, orders, gmv, pct_of_currency_total AS \"% of currency\"
         FROM analytics.gmv_by_country ORDER BY orders DESC LIMIT 8"

COHORT_SQL="SELECT * FROM (SELECT * FROM analytics.store_cohort_table ORDER BY cohort DESC
            LIMIT 6) c ORDER BY cohort"

show_progress() {
    echo "--- $(date +%T)"
    "$PGFAN" status -s "$SOCK" || echo "(pgfan status failed)"
    echo "events in $OUT: $(wc -l <"$OUT" 2>/dev/null || echo 0)"
    echo "shop API: $(grep '^live: ' "$RUN/live.log" | tail -n 1 | cut -c7-)"
    echo "GMV by country (analytics.gmv_by_country, top 8 of 20 by orders):"
    "${PSQL[@]}" -d shop -c "$GMV_SQL" || echo "(query failed)"
    echo "Store cohorts, retention % by month since the first order (analytics.store_cohort_table, last 6):"
    "${PSQL[@]}" -d shop -c "$COHORT_SQL" || echo "(query failed)"
}

while kill -0 "$LIVE_PID" 2>/dev/null; do
    # 5 s between displays, but notice the end of the traffic sooner
    for ((t = 0; t < 10; t++)); do
        kill -0 "$LIVE_PID" 2>/dev/null || break
        sleep 0.5
    done
    check_pgfan_alive "while the live traffic ran"
    show_progress
done
live_rc=0
wait "$LIVE_PID" || live_rc=$?
LIVE_PID=""
((live_rc == 0)) || { tail -n 5 "$RUN/live.log" >&2; die "the live traffic failed (status $live_rc; $RUN/live.log)"; }

# ---- 6. catch up and check ----

say "7/7 catching up and checking the sinks"
# The insert position: the test cluster commits asynchronously, so the
# write position (pg_current_wal_lsn) can lag behind the last commits.
END_LSN=$("${PSQL[@]}" -d shop -At -c 'SELECT pg_current_wal_insert_lsn()')
echo "traffic done; server WAL at $END_LSN; waiting for pgfan to confirm it (at most ${CATCHUP_TIMEOUT}s)"
end_int=$(lsn_int "$END_LSN")
deadline=$((SECONDS + CATCHUP_TIMEOUT))
confirmed=""
while :; do
    confirmed=$("$PGFAN" status -s "$SOCK" --json 2>/dev/null |
        sed -n 's/.*"confirmed_lsn":"\([0-9A-Fa-f]*\/[0-9A-Fa-f]*\)".*/\1/p' || true)
    if [[ -n "$confirmed" ]] && (($(lsn_int "$confirmed") >= end_int)); then
        break
    fi
    check_pgfan_alive "while catching up"
    if ((SECONDS >= deadline)); then
        "$PGFAN" status -s "$SOCK" >&2 || true
        die "pgfan confirmed ${confirmed:-nothing} after ${CATCHUP_TIMEOUT}s, not $END_LSN"
    fi
    sleep 0.2
done
echo "pgfan confirmed $confirmed >= $END_LSN: every sink holds everything"
"$PGFAN" status -s "$SOCK"

# File: exactly what PostgreSQL decoded for the same tables up to END_LSN.
count() { grep -c "$1" "$OUT" 2>/dev/null || true; }
total=$(wc -l <"$OUT")
n_c=$(count '"op":"c"')
n_u=$(count '"op":"u"')
n_d=$(count '"op":"d"')
n_t=$(count '"op":"t"')
echo
echo "file: $total events (inserts c=$n_c, updates u=$n_u, deletes d=$n_d, truncates t=$n_t)"
echo "per table:"
grep -o '"table":"[^"]*"' "$OUT" | sort | uniq -c | sed 's/"table"://; s/"//g' || true
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
echo "check: the file matches what PostgreSQL decoded"

# Aggregates: gmv_daily equals the batch GROUP BY it declares (both ways).
agg_diff=$("${PSQL[@]}" -d shop -At -c "
    WITH batch AS (
        SELECT (created_at AT TIME ZONE 'UTC')::date AS day, store_id, currency,
               count(*) AS orders, sum(total_amount) AS gmv
        FROM orders WHERE status <> 'cancelled' GROUP BY 1, 2, 3),
    kept AS (SELECT day, store_id, currency, orders, gmv FROM analytics.gmv_daily)
    SELECT (SELECT count(*) FROM (TABLE kept EXCEPT ALL TABLE batch) a)
         + (SELECT count(*) FROM (TABLE batch EXCEPT ALL TABLE kept) b)")
agg_rows=$("${PSQL[@]}" -d shop -At -c "SELECT count(*) FROM analytics.gmv_daily")
[[ "$agg_diff" == 0 ]] || die "analytics.gmv_daily differs from the GROUP BY over orders in $agg_diff rows"
echo "check: analytics.gmv_daily ($agg_rows rows) equals its GROUP BY over the orders table"

# Elasticsearch: one live document per order that changed while pgfan ran.
es -p /orders/_refresh >/dev/null || die "could not refresh the orders indices"
es_orders=$(es /orders/_count | python3 -c 'import json, sys; print(json.load(sys.stdin)["count"])')
file_orders=$(python3 - "$OUT" <<'EOF'
import json, sys
ids = set()
with open(sys.argv[1]) as f:
    for line in f:
        e = json.loads(line)
        if e["source"]["table"] == "orders":
            ids.add((e.get("after") or e.get("before"))["id"])
print(len(ids))
EOF
)
[[ "$es_orders" == "$file_orders" ]] ||
    die "Elasticsearch holds $es_orders orders, the file changed $file_orders distinct orders"
echo "check: Elasticsearch holds $es_orders order documents, one per order the file saw change"

# Kafka: the same events through pgfan's mock cluster (brokers = mock:3).
KAFKA=$(sed -n 's/.*read it with: kcat -b \([^ ]*\) .*/\1/p' "$RUN/pgfan.log" | tail -n 1)
if [[ -n "$KAFKA" ]] && command -v kcat >/dev/null; then
    n_kafka=$(timeout 30 kcat -b "$KAFKA" -C -t shop.public.orders -e -q -f '%k\n' 2>/dev/null | wc -l || true)
    echo "Kafka (mock cluster at $KAFKA): $n_kafka messages in topic shop.public.orders"
fi

echo
echo "GMV by country, all 20 (analytics.gmv_by_country):"
"${PSQL[@]}" -d shop -c "SELECT * FROM analytics.gmv_by_country ORDER BY currency, gmv DESC"
echo "Store cohort retention, % of each month's new stores still selling k months later (analytics.store_cohort_table):"
"${PSQL[@]}" -d shop -c "SELECT * FROM analytics.store_cohort_table ORDER BY cohort"

cat <<EOF

Where to look:
  events:    $OUT
             (tail -f, or: tail -n 1 $OUT | python3 -m json.tool)
  kafka:     kcat -b ${KAFKA:-<address in the pgfan log>} -C -t shop.public.orders -e -f '%k %s\n'
             (also shop.public.order_items, shop.public.customers, ...)
  KPIs:      psql "$SHOP_DSN" -c 'SELECT * FROM analytics.gmv_by_country ORDER BY currency, gmv DESC'
             psql "$SHOP_DSN" -c 'SELECT * FROM analytics.store_cohort_table ORDER BY cohort'
             psql "$SHOP_DSN" -c 'SELECT * FROM analytics.top_stores(10)'
             psql "$SHOP_DSN" -c '\dv analytics.*'      (every view: deploy/shop/analytics_views.sql)
  search:    curl -s '$ES_URL/_cat/indices?v&s=index'
             curl -s '$ES_URL/orders/_count'
             curl -s '$ES_URL/orders/_search?q=status:refunded&size=3' | python3 -m json.tool
             curl -s '$ES_URL/customers-live/_search?q=name:silva&size=3' | python3 -m json.tool
  status:    $PGFAN status -s $SOCK [--json]
  traffic:   $SIM live --dsn "$SHOP_DSN" --rate 200
  logs:      $RUN/pgfan.log, $RUN/live.log, $RUN/es.log
  config:    $CONF
EOF

if ((ONCE)); then
    echo
    echo "demo: done (--once)"
    exit 0
fi

READY=1
echo
echo "pgfan, PostgreSQL and Elasticsearch keep running; press Ctrl-C to stop them and clean up."
pgfan_rc=0
wait "$PGFAN_PID" || pgfan_rc=$?
# Only reached when pgfan stopped by itself.
PGFAN_PID=""
tail -n 20 "$RUN/pgfan.log" >&2
die "pgfan exited unexpectedly (status $pgfan_rc; log: $RUN/pgfan.log)"
