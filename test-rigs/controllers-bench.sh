#!/usr/bin/env bash
# Controllers (issue 4) benchmark: what three controllers cost and gain. See test-rigs/README.md.
#
# latency: 4k randwrite and randread at iodepth 1, troika with one controller
#          (hw/bench-1ctl.toml, 1 x 768M DRAM) against troika with three (hw/dev.toml,
#          3 x 256M), each over NBD on loopback TCP (controller port 1), alternating for
#          ROUNDS rounds; per round and median: IOPS, p50, p99 and the 3-ctl/1-ctl ratios.
# curve:   4k randread iodepth 32 per connection on 1, 2, 3 connections (connection i on
#          controller port i) of the three-controller troika, interleaved with nbdkit null on
#          the same connection counts; aggregate IOPS and N/1 ratios of each.
#
# Env: RUNTIME (s per fio run, default 8), ROUNDS (latency rounds, default 3), CURVE_ROUNDS
# (default 1), SIZE (volume, default 256M, must fit the 768M cache), SECTIONS (subset of
# "latency curve"), RAMP (fio ramp_time s, default 1), SETTLE (max s to wait for troika's
# dirty data to reach zero before each run, default 60), KEEP_JSON=DIR (copy fio's JSON).
set -euo pipefail
[[ -n "${DEBUG:-}" ]] && set -x
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RUNTIME="${RUNTIME:-8}"
ROUNDS="${ROUNDS:-3}"
CURVE_ROUNDS="${CURVE_ROUNDS:-1}"
SIZE="${SIZE:-256M}"
SECTIONS="${SECTIONS:-latency curve}"
RAMP="${RAMP:-1}"
SETTLE="${SETTLE:-60}"
HW1="$REPO/hw/bench-1ctl.toml"
HW3="$REPO/hw/dev.toml"
REPORT="$RIGS_DIR/controllers_report.py"
RESULTS="$WORK/results.tsv"
: >"$RESULTS"

for section in $SECTIONS; do
    case "$section" in
        latency | curve) ;;
        *) echo "unknown section $section (SECTIONS is a subset of \"latency curve\")" >&2; exit 2 ;;
    esac
done
for knob in RUNTIME ROUNDS CURVE_ROUNDS RAMP SETTLE; do
    if ! [[ "${!knob}" =~ ^[0-9]+$ ]] || ((${!knob} > 3600)); then
        echo "$knob must be a whole number of at most 3600 (got ${!knob})" >&2
        exit 2
    fi
done
want() { [[ " $SECTIONS " == *" $1 "* ]]; }

# Five free loopback ports (3 for the 3-controller troika, 1 for the 1-controller one, 1 for
# nbdkit). The kernel picks them; they are released just before the servers bind them.
read -r -a PORTS <<<"$(python3 -c '
import socket
socks = [socket.socket() for _ in range(5)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
')"
PORTS3=("${PORTS[@]:0:3}")
PORT1="${PORTS[3]}"
PORT_NBDKIT="${PORTS[4]}"

# Waits (at most $2 s, default 30) until something accepts on 127.0.0.1:$1.
wait_for_tcp() {
    local port="$1" limit="${2:-30}" i
    for ((i = 0; i < limit * 10; i++)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "timed out waiting for 127.0.0.1:$port" >&2
    return 1
}

# setup_troika NAME HW PORT...: troika on WORK/NAME with its NBD ports on loopback, a pool and
# volume V of SIZE, written once sequentially (1M, qd8) so reads hit data.
setup_troika() {
    local name="$1" hw="$2" listen
    # BASELINE_TROIKA: another build (e.g. the First-light data path, before mirroring) for
    # the 1-controller side; bash's dynamic scope hands it to start_troika.
    local TROIKA="$TROIKA"
    if [[ "$name" == troika-1ctl && -n "${BASELINE_TROIKA:-}" ]]; then
        TROIKA="$BASELINE_TROIKA"
    fi
    shift 2
    listen="$(printf '127.0.0.1:%s,' "$@")"
    # --nbd-open: fio connects over TCP without TLS, so the volumes must be open to
    # anonymous clients (benchmarking on loopback only).
    NBD_LISTEN="${listen%,}" start_troika "$WORK/$name" "$WORK/$name.log" --hw "$hw" --mgmt-listen none \
        --nbd-open
    "$TROIKA" --data "$WORK/$name" pool create P --size 3G >/dev/null
    "$TROIKA" --data "$WORK/$name" vol create V --pool P --size "$SIZE" >/dev/null
    if ! timeout 300 fio --name=fill --ioengine=nbd --uri="nbd://127.0.0.1:$1/V" --rw=write --bs=1M \
        --iodepth=8 --output-format=json --output="$WORK/fill.$name.json" >"$WORK/fill.out" 2>&1; then
        echo "fill of $name failed:" >&2 && tail -5 "$WORK/fill.out" >&2
        exit 1
    fi
}

TROIKAS=()
declare -A TROIKA_PIDS
if want latency; then
    setup_troika troika-1ctl "$HW1" "$PORT1"
    TROIKAS+=(troika-1ctl)
    TROIKA_PIDS[troika-1ctl]="$TROIKA_PID"
fi
setup_troika troika-3ctl "$HW3" "${PORTS3[@]}"
TROIKAS+=(troika-3ctl)
TROIKA_PIDS[troika-3ctl]="$TROIKA_PID"
if want curve; then
    nbdkit -f -i 127.0.0.1 -p "$PORT_NBDKIT" null size="$SIZE" >"$WORK/nbdkit.log" 2>&1 &
    PIDS+=("$!")
    wait_for_tcp "$PORT_NBDKIT"
fi

# Before every measured run: every troika has destaged its dirty data (its destage thread
# writes everything out after 0.5 s without host I/O), so no run pays for the previous one's
# writes, whichever server they went to. Bounded by SETTLE seconds.
settle() {
    local name i dirty
    for name in "${TROIKAS[@]}"; do
        for ((i = 0; i < SETTLE * 5; i++)); do
            dirty="$(metric "$WORK/$name" troika_cache_dirty_bytes)"
            [[ "$dirty" == 0 ]] && break
            sleep 0.2
        done
        [[ "$dirty" == 0 ]] || echo "  ($name still has $dirty dirty bytes after ${SETTLE}s)" >&2
    done
    sleep 0.5
}

# run_fio SECTION ROUND TEST TARGET RW IODEPTH URI...: one fio run, one job per URI (each its
# own NBD connection), reported as a group; records the result in RESULTS.
run_fio() {
    local section="$1" round="$2" test="$3" target="$4" rw="$5" iodepth="$6"
    shift 6
    local out="$WORK/$section.$round.$test.$target.$#.json" args i=0 uri
    args=(--ioengine=nbd --rw="$rw" --bs=4k --iodepth="$iodepth" --time_based
        --runtime="$RUNTIME" --ramp_time="$RAMP" --norandommap --randrepeat=0 --lat_percentiles=1
        --group_reporting
        --output-format=json --output="$out")
    for uri in "$@"; do
        i=$((i + 1))
        args+=(--name="c$i" --uri="$uri")
    done
    settle
    if ! timeout $((RUNTIME + RAMP + 60)) fio "${args[@]}" >"$WORK/fio.out" 2>&1; then
        echo "  $test on $target ($# connections) failed:" >&2 && tail -5 "$WORK/fio.out" >&2
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$section" "$round" "$test" "$target" "$#" "$out" >>"$RESULTS"
    if [[ -n "${KEEP_JSON:-}" ]]; then
        mkdir -p "$KEEP_JSON" && cp "$out" "$KEEP_JSON"/
    fi
}

echo "controllers-bench: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg) at the start;" \
    "volume $SIZE, ${RUNTIME}s per run (+${RAMP}s ramp), sections: $SECTIONS" >&2

status=0
if want latency; then
    # Each round runs both tests on both models; the model that goes first alternates.
    for ((round = 1; round <= ROUNDS; round++)); do
        if ((round % 2)); then order=(1ctl 3ctl); else order=(3ctl 1ctl); fi
        for test in 4k-randwrite-qd1 4k-randread-qd1; do
            rw="${test#4k-}" && rw="${rw%-qd1}"
            for config in "${order[@]}"; do
                if [[ "$config" == 1ctl ]]; then port="$PORT1"; else port="${PORTS3[0]}"; fi
                run_fio latency "$round" "$test" "$config" "$rw" 1 "nbd://127.0.0.1:$port/V"
            done
        done
        echo "  latency round $round of $ROUNDS done (load average $(cut -d" " -f1 /proc/loadavg))" >&2
    done
fi
if want curve; then
    for ((round = 1; round <= CURVE_ROUNDS; round++)); do
        for connections in 1 2 3; do
            # troika and nbdkit interleave per connection count; which goes first alternates.
            if ((connections % 2)); then order=(troika nbdkit-null); else order=(nbdkit-null troika); fi
            for target in "${order[@]}"; do
                uris=()
                for ((c = 0; c < connections; c++)); do
                    if [[ "$target" == troika ]]; then
                        uris+=("nbd://127.0.0.1:${PORTS3[c]}/V")
                    else
                        uris+=("nbd://127.0.0.1:$PORT_NBDKIT/")
                    fi
                done
                run_fio curve "$round" 4k-randread-qd32 "$target" randread 32 "${uris[@]}"
            done
        done
        echo "  curve round $round of $CURVE_ROUNDS done (load average $(cut -d" " -f1 /proc/loadavg))" >&2
    done
fi

echo
if want latency; then
    python3 "$REPORT" latency "$RESULTS" \
        "4k qd1 latency: 1 controller (hw/bench-1ctl.toml, 1×768M) vs 3 controllers (hw/dev.toml, 3×256M); NBD TCP to controller port 1, $SIZE volume, ${RUNTIME}s runs, rounds: $ROUNDS" ||
        status=1
fi
if want curve; then
    python3 "$REPORT" curve "$RESULTS" \
        "4k randread qd32 per connection, 1–3 connections: troika (3 controllers, connection i on controller port i) vs nbdkit null; $SIZE, ${RUNTIME}s runs, rounds: $CURVE_ROUNDS" ||
        status=1
fi

echo "Machine: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg) at the end."
for name in "${TROIKAS[@]}"; do
    pid="${TROIKA_PIDS[$name]}"
    ops="$(curl -s --max-time 5 --unix-socket "$WORK/$name/troika.sock" http://x/metrics 2>/dev/null |
        awk '/^troika_controller_(read|write)_ops_total\{/ {
                match($1, /controller="[0-9]+"/); c = substr($1, RSTART + 12, RLENGTH - 13)
                kind = ($1 ~ /read/) ? "r" : "w"; v[c] = v[c] " " kind "=" $2 }
             END { for (c = 1; c in v; c++) printf "controller %s:%s; ", c, v[c] }')"
    echo "$name: ${ops:-no per-controller counters} RSS $(awk '/VmRSS/ {print $2, $3}' "/proc/$pid/status" 2>/dev/null || echo '?')"
    if grep -qiE 'panic|error' "$WORK/$name.log"; then
        echo "$name log has errors:" && grep -iE 'panic|error' "$WORK/$name.log" | head -10
        status=1
    fi
done
exit "$status"
