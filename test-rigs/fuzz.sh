#!/usr/bin/env bash
# Runs troika's cargo-fuzz targets (fuzz/) one after the other, each for a bounded time or
# number of executions, starting from the committed seeds, and prints per target what
# libFuzzer's final stats say: executions, crashes, coverage.
#
#   bash test-rigs/fuzz.sh                       # every target, SECONDS_PER_TARGET each
#   SECONDS_PER_TARGET=1800 RUNS=10000000 bash test-rigs/fuzz.sh journal checkpoint
#
# Env: SECONDS_PER_TARGET (default 120; always applied, also with RUNS), RUNS (executions
# per target; default none), NICE (default 19), LOG_DIR (default fuzz/logs/DATE-TIME),
# GROWN (where each target's grown corpus is kept, default fuzz/corpus: cargo-fuzz's own,
# not committed), RSS_LIMIT_MB (2048), MALLOC_LIMIT_MB (512: one bigger allocation is a
# finding), UNIT_TIMEOUT (s per input, default 20), MAX_LEN (libFuzzer -max_len),
# BUILD_TIMEOUT (s, default 1800). One libFuzzer process at a time, never -jobs/-workers.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FUZZ="$REPO/fuzz"
SECONDS_PER_TARGET="${SECONDS_PER_TARGET:-120}"
RUNS="${RUNS:-}"
NICE="${NICE:-19}"
LOG_DIR="${LOG_DIR:-$FUZZ/logs/$(date +%Y%m%d-%H%M%S)}"
GROWN="${GROWN:-$FUZZ/corpus}"
RSS_LIMIT_MB="${RSS_LIMIT_MB:-2048}"
MALLOC_LIMIT_MB="${MALLOC_LIMIT_MB:-512}"
UNIT_TIMEOUT="${UNIT_TIMEOUT:-20}"
MAX_LEN="${MAX_LEN:-}"
BUILD_TIMEOUT="${BUILD_TIMEOUT:-1800}"

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    timeout "$BUILD_TIMEOUT" nice -n "$NICE" cargo install --locked cargo-fuzz
fi

mkdir -p "$LOG_DIR" "$GROWN"
LOG_DIR="$(cd "$LOG_DIR" && pwd)"
GROWN="$(cd "$GROWN" && pwd)"
# `timeout` runs its command in a process group of its own, which Ctrl-C does not reach:
# every bounded step goes through `bounded`, and the traps stop the one running.
child=""
trap '[[ -n "$child" ]] && kill -INT -- "-$child" 2>/dev/null; exit 130' INT TERM

# bounded SECONDS LOG COMMAND...: runs COMMAND under nice, at most SECONDS (then SIGINT, and
# SIGKILL 30 s later), appending its output to LOG; returns its exit status.
bounded() {
    local limit="$1" log="$2" status=0
    shift 2
    timeout --signal=INT --kill-after=30 "$limit" nice -n "$NICE" "$@" >>"$log" 2>&1 &
    child=$!
    wait "$child" || status=$?
    child=""
    return "$status"
}

cd "$FUZZ"
if (($# > 0)); then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

# cargo-fuzz's default build: release, debug assertions and overflow checks, AddressSanitizer.
# Every target is built before any runs, and the runs use those binaries: a source change
# during the runs does not rebuild (nor eat a run's time).
echo "fuzz.sh: building ${targets[*]}" >&2
triple="$(rustc +nightly -vV | sed -n 's/^host: //p')"
for target in "${targets[@]}"; do
    bounded "$BUILD_TIMEOUT" "$LOG_DIR/build.log" cargo +nightly fuzz build "$target" || {
        echo "fuzz.sh: building $target failed; see $LOG_DIR/build.log" >&2
        exit 1
    }
done

# The last value of libFuzzer's `NAME: N` in log $1 (a status line or a final stat).
last_value() {
    grep -oE "$2:? +[0-9]+" "$1" | tail -n 1 | grep -oE '[0-9]+$' || echo "-"
}

rows=()
failed=0
for target in "${targets[@]}"; do
    seeds="$FUZZ/seeds/$target"
    grown="$GROWN/$target"
    artifacts="$FUZZ/artifacts/$target"
    log="$LOG_DIR/$target.log"
    mkdir -p "$seeds" "$grown" "$artifacts"
    before="$(find "$artifacts" -type f | sort)"
    args=(-max_total_time="$SECONDS_PER_TARGET" -print_final_stats=1 -timeout="$UNIT_TIMEOUT"
        -rss_limit_mb="$RSS_LIMIT_MB" -malloc_limit_mb="$MALLOC_LIMIT_MB"
        -artifact_prefix="$artifacts/")
    [[ -n "$RUNS" ]] && args+=(-runs="$RUNS")
    [[ -n "$MAX_LEN" ]] && args+=(-max_len="$MAX_LEN")
    echo "fuzz.sh: $target for ${SECONDS_PER_TARGET}s${RUNS:+ or $RUNS runs}; log $log" >&2
    start="$(date +%s)"
    # New inputs go to the first directory (the grown corpus), never to the seeds.
    status=0
    : >"$log"
    ASAN_OPTIONS="${ASAN_OPTIONS:-detect_odr_violation=0}" bounded \
        "$((SECONDS_PER_TARGET + 120))" "$log" \
        "$FUZZ/target/$triple/release/$target" "${args[@]}" "$grown" "$seeds" || status=$?
    secs="$(($(date +%s) - start))"
    new="$(comm -13 <(echo "$before") <(find "$artifacts" -type f | sort) | grep -v '^$' || true)"
    crashes="$(grep -c . <<<"$new" || true)"
    ((status != 0 || crashes > 0)) && failed=1
    rows+=("$(printf '%-13s %12s %6s %9s %7s %6s %7s %6s %6s' "$target" \
        "$(last_value "$log" 'stat::number_of_executed_units')" "$secs" \
        "$(last_value "$log" 'stat::average_exec_per_sec')" "$crashes" \
        "$(last_value "$log" 'cov')" "$(last_value "$log" 'ft')" \
        "$(last_value "$log" 'corp')" "$status")")
    if [[ -n "$new" ]]; then
        echo "fuzz.sh: $target found:" >&2
        sed 's/^/  /' <<<"$new" >&2
        grep -m 3 -E 'panicked at|ERROR: (AddressSanitizer|libFuzzer)' "$log" | sed 's/^/  /' >&2 || true
    fi
done

echo
echo "fuzz.sh: ${SECONDS_PER_TARGET}s${RUNS:+ or $RUNS runs} per target, logs in $LOG_DIR"
printf '%-13s %12s %6s %9s %7s %6s %7s %6s %6s\n' target executions secs "exec/s" crashes \
    cov ft corpus status
printf '%s\n' "${rows[@]}"
exit "$failed"
