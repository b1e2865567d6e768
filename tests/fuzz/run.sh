#!/usr/bin/env bash
# run.sh - build the libFuzzer targets and run each one for a while.
#
#   tests/fuzz/run.sh [--seconds N] [--jobs J] [TARGET ...]
#
# Targets: decoder (one wal2json message), config (a configuration file),
# status (a status document as `pgfan status` reads it), esbulk (an
# Elasticsearch bulk answer as the Elasticsearch sink reads it), json (the
# JSON tokenizer against the jsmn-based parser it replaced, kept in
# tests/fuzz/json_reference.c: same verdict, same tokens). Each is built with
# clang -fsanitize=fuzzer,address,undefined into build-fuzz/, replays the
# inputs kept in tests/fuzz/regressions/TARGET/ (every crash found is added
# there and becomes a regression test), then fuzzes for N seconds (default
# 20) starting from seeds made of the golden files (tests/data/wal2json,
# tests/data/config, deploy/pgfan.conf.example, tests/fuzz/seeds/{status,esbulk};
# json: the wal2json lines, the esbulk bodies without their count byte and
# tests/fuzz/seeds/json), with tests/fuzz/TARGET.dict when there is one.
# A crash is copied to tests/fuzz/regressions/TARGET/ and fails the run.
# The long run documented in the README: --seconds 3600.
#
# Last line: "N passed, N failed" (one per target).
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$(pwd -P)
SECONDS_EACH=20
TARGETS=()
while (($# > 0)); do
    case "$1" in
    --seconds) SECONDS_EACH=$2; shift ;;
    -h | --help) sed -n '2,22s/^# \{0,1\}//p' "$0"; exit 0 ;;
    decoder | config | status | esbulk | json) TARGETS+=("$1") ;;
    *) echo "run.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done
((${#TARGETS[@]})) || TARGETS=(decoder config status esbulk json)

command -v clang >/dev/null || { echo "fuzz: clang is missing (deploy/install-deps.sh installs it)" >&2; exit 1; }
OUT=$ROOT/build-fuzz
mkdir -p "$OUT"
CFLAGS=(-std=c11 -D_GNU_SOURCE '-DPGFAN_VERSION="fuzz"' -g -O1 -fno-omit-frame-pointer
    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -I/usr/include/postgresql)
COMMON=(common/*.c)

sources() {
    case "$1" in
    decoder) echo decoder/change.c decoder/json.c decoder/values.c decoder/wal2json.c ;;
    config) echo config/*.c ;;
    status) echo daemon/status_client.c ;;
    esbulk) echo sinks/es_response.c decoder/json.c ;;
    json) echo decoder/json.c tests/fuzz/json_reference.c ;;
    esac
}

seed() { # seed TARGET DIR
    local t=$1 dir=$2 i=0 f line
    mkdir -p "$dir"
    case "$t" in
    decoder | json)
        for f in tests/data/wal2json/*.in; do
            while IFS= read -r line; do
                i=$((i + 1))
                printf '%s' "$line" >"$dir/seed-$i"
            done <"$f"
        done
        if [[ $t == json ]]; then
            for f in tests/fuzz/seeds/esbulk/*; do
                tail -c +2 "$f" >"$dir/esbulk-$(basename "$f")"
            done
            cp tests/fuzz/seeds/json/* "$dir/"
        fi ;;
    config) cp tests/data/config/*.conf deploy/pgfan.conf.example "$dir/" ;;
    status) cp tests/fuzz/seeds/status/* "$dir/" ;;
    esbulk) cp tests/fuzz/seeds/esbulk/* "$dir/" ;;
    esac
}

passed=0
failed=0
for t in "${TARGETS[@]}"; do
    bin=$OUT/fuzz_$t
    # shellcheck disable=SC2046
    clang "${CFLAGS[@]}" -o "$bin" "tests/fuzz/fuzz_$t.c" $(sources "$t") "${COMMON[@]}" -lm
    seed "$t" "$OUT/seeds-$t"
    mkdir -p "$OUT/corpus-$t" "$OUT/crash-$t"
    regress=(tests/fuzz/regressions/$t/*)
    regress=("${regress[@]/*\/.keep/}")
    log=$OUT/fuzz_$t.log
    dict=()
    [[ -f tests/fuzz/$t.dict ]] && dict=("-dict=tests/fuzz/$t.dict")
    ok=1
    # Regressions first: each kept input must run clean.
    for r in "${regress[@]}"; do
        [[ -n "$r" && -f "$r" ]] || continue
        "$bin" "$r" >>"$log" 2>&1 || { echo "fuzz $t: regression $r fails"; ok=0; }
    done
    if ((ok)); then
        if ! PGFAN_FUZZ=1 "$bin" -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 \
            -print_final_stats=1 -artifact_prefix="$OUT/crash-$t/" "${dict[@]}" \
            "$OUT/corpus-$t" "$OUT/seeds-$t" >"$log" 2>&1; then
            ok=0
            for c in "$OUT/crash-$t"/*; do
                [[ -f "$c" ]] && cp "$c" "tests/fuzz/regressions/$t/" && echo "fuzz $t: new crash kept as tests/fuzz/regressions/$t/$(basename "$c")"
            done
            tail -n 40 "$log"
        fi
    fi
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    if ((ok)); then
        passed=$((passed + 1))
        echo "fuzz $t: ok, $execs executions in ${SECONDS_EACH}s, 0 crashes"
    else
        failed=$((failed + 1))
        echo "fuzz $t: FAILED (log: $log)"
    fi
done
echo "$passed passed, $failed failed"
((failed == 0))
