#!/usr/bin/env bash
# run.sh - pgfan's test command: ./tests/run.sh [--quick] [--suite NAME]
#
# Installs missing Debian packages (deploy/install-deps.sh), builds two
# configurations - `build` (debugoptimized, -Werror) and `build-asan`
# (debug, AddressSanitizer + UBSan, -Werror) - starts a throwaway
# PostgreSQL 15 (tests/harness/pg.sh) and runs `meson test` in each build
# against it. Prints the Check summary line of every test executable, the
# time of each phase, and ends with the line "N passed, N failed" (meson
# tests over both builds). Exits 1 if anything failed.
#
#   --quick        only the normal build (the valgrind pass still runs)
#   --suite NAME   passed to meson test (repeatable)
#
# CI runs exactly this (.ci/run). The server and temp dirs are removed on
# every exit, including Ctrl-C and SIGTERM.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd -P)

usage() {
    sed -n '2,16s/^# \{0,1\}//p' "$0"
    exit "$1"
}

QUICK=0
MESON_TEST_ARGS=()
while (($# > 0)); do
    case "$1" in
    --quick) QUICK=1 ;;
    --suite)
        (($# >= 2)) || usage 2
        MESON_TEST_ARGS+=(--suite "$2")
        shift
        ;;
    --suite=*) MESON_TEST_ARGS+=(--suite "${1#--suite=}") ;;
    -h | --help) usage 0 ;;
    *)
        echo "run.sh: unknown argument: $1" >&2
        usage 2
        ;;
    esac
    shift
done

BUILDS=(build)
((QUICK)) || BUILDS+=(build-asan)

PASSED=0
FAILED=0
SKIPPED=0
SUMMARY_PRINTED=0
PHASE=start
PHASE_T0=
PGDIR=
CHILD=
CHECK_LINES=()
BUILD_LINES=()
RUN_T0=$EPOCHREALTIME

# Seconds since $1 (an $EPOCHREALTIME value), one decimal.
since() {
    local now=$EPOCHREALTIME then=$1
    # The separator follows LC_NUMERIC; strip either kind.
    local tenths=$(((10#${now//[.,]/} - 10#${then//[.,]/}) / 100000))
    printf '%d.%d' $((tenths / 10)) $((tenths % 10))
}

phase() {
    if [[ -n "$PHASE_T0" ]]; then
        echo "== $PHASE: done in $(since "$PHASE_T0") s"
    fi
    PHASE=$1
    PHASE_T0=$EPOCHREALTIME
    [[ "$PHASE" == end ]] || echo "== $PHASE"
}

stop_pg() {
    if [[ -n "$PGDIR" ]]; then
        tests/harness/pg.sh stop "$PGDIR" >/dev/null ||
            echo "run.sh: could not stop the test server in $PGDIR cleanly" >&2
        PGDIR=
    fi
}

# shellcheck disable=SC2317 # invoked by the EXIT trap
# Runs on every exit. A run that dies before its summary still ends with a
# summary line, counting the broken phase as one failure.
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n "$CHILD" ]]; then
        kill -TERM "$CHILD" 2>/dev/null || true
        wait "$CHILD" 2>/dev/null || true
        CHILD=
    fi
    stop_pg
    if ((!SUMMARY_PRINTED)); then
        ((rc != 0)) || rc=1
        echo "run.sh: failed in phase \"$PHASE\" (exit status $rc) after $(since "$RUN_T0") s"
        echo "$PASSED passed, $((FAILED + 1)) failed"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Core files from abort_on_error would litter the tree.
ulimit -c 0

# meson setup, reconfiguring an existing build dir (new options apply) and
# wiping it when reconfiguring fails (e.g. after a meson upgrade).
setup_build() {
    local dir=$1
    shift
    if [[ -f "$dir/meson-private/coredata.dat" ]]; then
        meson setup --reconfigure "$dir" "$@" || meson setup --wipe "$dir" "$@"
    else
        meson setup "$dir" "$@"
    fi
}

build_options() {
    case "$1" in
    build) echo "--buildtype=debugoptimized -Dwerror=true" ;;
    build-asan) echo "--buildtype=debug -Dwerror=true -Db_sanitize=address,undefined -Db_lundef=false" ;;
    esac
}

# Prints "passed failed skipped" for a meson testlog.json, then one line per
# Check summary ("100%: Checks: 12, Failures: 0, Errors: 0") in the tests'
# output. meson needs python3, so it is there.
parse_testlog() {
    python3 - "$1" "$2" <<'EOF'
import json, re, sys

path, label = sys.argv[1], sys.argv[2]
passed = failed = skipped = 0
summaries = []
check_re = re.compile(r"\d+%: Checks: \d+, Failures: \d+, Errors: \d+")
try:
    with open(path, encoding="utf-8", errors="replace") as f:
        for raw in f:
            if not raw.strip():
                continue
            t = json.loads(raw)
            result = t.get("result")
            if result in ("OK", "EXPECTEDFAIL"):
                passed += 1
            elif result == "SKIP":
                skipped += 1
            else:  # FAIL, TIMEOUT, ERROR, UNEXPECTEDPASS, INTERRUPT
                failed += 1
            for out in (t.get("stdout") or "", t.get("stderr") or ""):
                for line in out.splitlines():
                    m = check_re.search(line)
                    if m:
                        summaries.append(f"{label} {t.get('name')}: {m.group(0)}")
except FileNotFoundError:
    pass
print(passed, failed, skipped)
for s in summaries:
    print(s)
EOF
}

run_tests() {
    local build=$1 rc=0 t0=$EPOCHREALTIME
    local log=$build/meson-logs/testlog.json
    local -a extra=() env=()

    # A stale log from an earlier run must not be counted.
    rm -f "$log"
    if [[ "$build" == build-asan ]]; then
        env=(ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
            UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1)
        extra=(--timeout-multiplier 3)
    fi
    # In the background so INT/TERM reach our trap at once (bash defers
    # traps until a foreground child exits).
    env PGFAN_TEST_BIN="$ROOT/$build/daemon/pgfan" "${env[@]}" \
        meson test -C "$build" --print-errorlogs --num-processes 2 \
        "${extra[@]}" "${MESON_TEST_ARGS[@]}" &
    CHILD=$!
    wait "$CHILD" || rc=$?
    CHILD=

    local -a out
    mapfile -t out < <(parse_testlog "$log" "$build")
    local p=0 f=0 s=0
    if [[ ${#out[@]} -gt 0 ]]; then
        read -r p f s <<<"${out[0]}"
        CHECK_LINES+=("${out[@]:1}")
    fi
    # meson itself failed (bad --suite, crash): count it.
    if ((rc != 0 && f == 0)); then
        echo "run.sh: meson test in $build exited with $rc but logged no failed test" >&2
        f=1
    fi
    # A --suite typo or a broken tests/meson.build must not pass silently.
    if ((p + f + s == 0)); then
        echo "run.sh: no tests ran in $build" >&2
        f=1
    fi
    PASSED=$((PASSED + p))
    FAILED=$((FAILED + f))
    SKIPPED=$((SKIPPED + s))
    BUILD_LINES+=("$build: $p passed, $f failed, $s skipped in $(since "$t0") s")
}

# The pure unit suites once more under valgrind (memcheck, leaks) in the
# normal build; suites that measure time or exhaust descriptors on purpose
# are left to the sanitizer build.
VALGRIND_TESTS=(common decoder values config envelope pipeline file_sink snapshot_rows)
run_valgrind() {
    local build=build rc=0 t0=$EPOCHREALTIME
    local log=$build/meson-logs/testlog-valgrind.json
    local -a out
    local p=0 f=0 s=0

    rm -f "$log"
    meson test -C "$build" --setup valgrind --print-errorlogs --num-processes 2 \
        "${VALGRIND_TESTS[@]}" &
    CHILD=$!
    wait "$CHILD" || rc=$?
    CHILD=
    mapfile -t out < <(parse_testlog "$log" "$build (valgrind)")
    if [[ ${#out[@]} -gt 0 ]]; then
        read -r p f s <<<"${out[0]}"
        CHECK_LINES+=("${out[@]:1}")
    fi
    if ((rc != 0 && f == 0)) || ((p + f + s == 0)); then
        echo "run.sh: valgrind run failed (exit $rc)" >&2
        f=$((f + 1))
    fi
    PASSED=$((PASSED + p))
    FAILED=$((FAILED + f))
    BUILD_LINES+=("$build (valgrind): $p passed, $f failed in $(since "$t0") s")
}

# Servers left by runs that were killed outright (SIGKILL skips traps).
stop_stale_servers() {
    local dir owner
    for dir in /tmp/pgfan-pg.*; do
        [[ -f "$dir/pgfan-pg.marker" ]] || continue
        if [[ -f "$dir/run.pid" ]]; then
            owner=$(cat "$dir/run.pid" 2>/dev/null || true)
            if [[ -n "$owner" ]] && kill -0 "$owner" 2>/dev/null; then
                continue
            fi
        elif [[ -z "$(find "$dir" -maxdepth 0 -mmin +60 2>/dev/null)" ]]; then
            # No owner recorded yet: another run may be starting it right now.
            continue
        fi
        echo "run.sh: stopping a test server left by an earlier run in $dir"
        tests/harness/pg.sh stop "$dir" >/dev/null || true
    done
    # Directories of failed tests (h_tmpdir) older than half a day.
    find /tmp -maxdepth 1 -name 'pgfan-test.*' -mmin +720 -exec rm -rf {} + 2>/dev/null || true
}

phase "dependencies"
deploy/install-deps.sh

for b in "${BUILDS[@]}"; do
    phase "configure $b"
    # shellcheck disable=SC2046 # options are single words
    setup_build "$b" $(build_options "$b")
    phase "compile $b"
    ninja -C "$b"
done

phase "start PostgreSQL"
stop_stale_servers
PGDIR=$(mktemp -d /tmp/pgfan-pg.XXXXXX)
tests/harness/pg.sh start "$PGDIR"
echo "$$" >"$PGDIR/run.pid"
set -a
# shellcheck disable=SC1091 # written by pg.sh
. "$PGDIR/env"
set +a
export PGFAN_TEST_SRCDIR=$ROOT

for b in "${BUILDS[@]}"; do
    phase "test $b"
    run_tests "$b"
done

if ((${#MESON_TEST_ARGS[@]} == 0)); then
    phase "valgrind build"
    run_valgrind
fi

phase "stop PostgreSQL"
stop_pg
phase end

echo
echo "== summary ($(since "$RUN_T0") s)"
for line in "${CHECK_LINES[@]}"; do
    echo "  $line"
done
for line in "${BUILD_LINES[@]}"; do
    echo "$line"
done
((SKIPPED == 0)) || echo "$SKIPPED skipped"
SUMMARY_PRINTED=1
echo "$PASSED passed, $FAILED failed"
((FAILED == 0)) || exit 1
exit 0
