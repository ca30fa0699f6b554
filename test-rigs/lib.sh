# shellcheck shell=bash
# Shared helpers for the test rigs; sourced, not run. Callers set `set -euo pipefail`.
#
# Provides: REPO, TROIKA, WORK (a temp dir removed on exit), start_troika, stop_troika,
# metric, wait_for_socket, and an EXIT trap that kills every server started here.

RIGS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$RIGS_DIR/.." && pwd)"
TROIKA="${TROIKA:-$REPO/target/release/troika}"
PIDS=()

if [[ ! -x "$TROIKA" ]]; then
    echo "building $TROIKA" >&2
    (cd "$REPO" && cargo build --release --quiet)
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/troika-rig.XXXXXX")"

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        # Bounded: troika destages and checkpoints on SIGTERM; give it 20 s, then -9.
        local i
        for ((i = 0; i < 200; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Waits (at most $2 seconds, default 30) for unix socket $1 to appear.
wait_for_socket() {
    local sock="$1" limit="${2:-30}" i
    for ((i = 0; i < limit * 10; i++)); do
        [[ -S "$sock" ]] && return 0
        sleep 0.1
    done
    echo "timed out waiting for $sock" >&2
    return 1
}

# start_troika DATA_DIR LOG [--hw FILE]: starts `troika serve` in the background with NBD only
# on DATA_DIR/nbd.sock (or also on TCP: NBD_LISTEN=ADDR[,ADDR...] start_troika ... --nbd-open,
# since a TCP client without TLS sees no export otherwise); sets TROIKA_PID. TLS on TCP is
# troika's default (`require`; plain TCP under --nbd-open) unless NBD_TLS=off|on|require.
start_troika() {
    local data="$1" log="$2"
    shift 2
    mkdir -p "$data"
    rm -f "$data/troika.sock" "$data/nbd.sock"
    "$TROIKA" serve --data "$data" --nbd-listen "${NBD_LISTEN:-none}" ${NBD_TLS:+--nbd-tls "$NBD_TLS"} "$@" >>"$log" 2>&1 &
    TROIKA_PID=$!
    PIDS+=("$TROIKA_PID")
    if ! wait_for_socket "$data/troika.sock" 60 || ! wait_for_socket "$data/nbd.sock" 10; then
        echo "troika did not come up; its log:" >&2
        cat "$log" >&2
        return 1
    fi
}

# stop_troika PID: SIGTERM and wait (bounded), then SIGKILL.
stop_troika() {
    local pid="$1" i
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 300; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# metric DATA_DIR NAME: prints the value of an unlabelled counter/gauge from /metrics.
# Prints NaN when the value (or troika) is not there.
metric() {
    { curl -s --max-time 5 --unix-socket "$1/troika.sock" http://x/metrics 2>/dev/null || true; } |
        awk -v name="$2" '$1 == name { print $2; found = 1 } END { if (!found) print "NaN" }'
}

# metrics_line DATA_DIR NAME...: the values of several metrics from one scrape, space-separated.
metrics_line() {
    local data="$1"
    shift
    { curl -s --max-time 5 --unix-socket "$data/troika.sock" http://x/metrics 2>/dev/null || true; } |
        awk -v names="$*" 'BEGIN { n = split(names, want, " ") }
            { v[$1] = $2 }
            END { for (i = 1; i <= n; i++) printf "%s%s", (i > 1 ? " " : ""), ((want[i] in v) ? v[want[i]] : "NaN"); print "" }'
}
