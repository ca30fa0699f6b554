#!/usr/bin/env bash
# kill -9 troika in the middle of a write load with periodic flushes, restart it, and time
# its recovery from media. See test-rigs/README.md.
#
# Env: ROUNDS (default 5), KILL_AFTER (base seconds of load before the kill, default 4; round
# i waits KILL_AFTER + i % 3), FSYNC (fio --fsync, default 32), VOL_SIZE (256M).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS="${ROUNDS:-5}"
KILL_AFTER="${KILL_AFTER:-4}"
FSYNC="${FSYNC:-32}"
VOL_SIZE="${VOL_SIZE:-256M}"
DATA="$WORK/data"
LOG="$WORK/troika.log"
URI="nbd+unix:///V?socket=$DATA/nbd.sock"

start_troika "$DATA" "$LOG" --hw "$REPO/hw/ci.toml"
"$TROIKA" --data "$DATA" pool create P --size 400M >/dev/null
"$TROIKA" --data "$DATA" vol create V --pool P --size "$VOL_SIZE" >/dev/null
echo "crash-recovery: hw/ci.toml, volume $VOL_SIZE, $ROUNDS rounds, 4k randwrite qd32 with fsync every $FSYNC writes ($(nproc) CPUs)"
timeout 600 fio --name=fill --ioengine=nbd --uri="$URI" --rw=write --bs=1M --iodepth=8 \
    --output-format=terse >/dev/null 2>"$WORK/fill.err" || { echo "fill failed:"; cat "$WORK/fill.err"; }

printf '%-6s %-8s %-12s %-10s %-8s %s\n' round "load s" "host blk(1)" "dirty MiB" "ms" "recovery line"
times=()
for ((round = 1; round <= ROUNDS; round++)); do
    load_s=$((KILL_AFTER + round % 3))
    timeout 300 fio --name=crash --ioengine=nbd --uri="$URI" --rw=randwrite --bs=4k --iodepth=32 \
        --fsync="$FSYNC" --time_based --runtime=120 --norandommap --randrepeat=0 \
        --output-format=terse >"$WORK/fio.$round.out" 2>&1 &
    fio_pid=$!
    PIDS+=("$fio_pid")
    sleep "$load_s"
    host="$(metric "$DATA" troika_host_blocks_written_total)"
    dirty="$(metric "$DATA" troika_cache_dirty_bytes)"
    kill -KILL "$TROIKA_PID"
    wait "$TROIKA_PID" 2>/dev/null || true
    # fio sees its connection drop and exits with an error; bounded by `timeout` above.
    wait "$fio_pid" 2>/dev/null || true
    mark=$(wc -l <"$LOG")
    start_troika "$DATA" "$LOG" --hw "$REPO/hw/ci.toml"
    line="$(tail -n +"$((mark + 1))" "$LOG" | grep -m1 'recovered from media in' || true)"
    if [[ -z "$line" ]]; then
        echo "round $round: no recovery line; log since restart:"
        tail -n +"$((mark + 1))" "$LOG"
        continue
    fi
    ms="$(sed -E 's/.*recovered from media in ([0-9]+) ms.*/\1/' <<<"$line")"
    times+=("$ms")
    printf '%-6s %-8s %-12s %-10s %-8s %s\n' "$round" "$load_s" "$host" \
        "$(awk -v d="$dirty" 'BEGIN { printf "%.1f", d / 1048576 }')" "$ms" "${line#troika: }"
    # The volume must still be there and readable end to end after recovery.
    if ! timeout 120 nbdcopy "$URI" null: 2>"$WORK/copy.err"; then
        echo "  round $round: reading the whole volume back after recovery failed:"
        cat "$WORK/copy.err"
    fi
done

echo "(1) troika_host_blocks_written_total just before the kill; the counter restarts at 0 with the process."
echo
if [[ ${#times[@]} -gt 0 ]]; then
    printf '%s\n' "${times[@]}" | sort -n | awk '{ v[NR] = $1 } END {
        med = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf "recovery time over %d rounds: min %d ms, median %s ms, max %d ms\n", NR, v[1], med, v[NR] }'
else
    echo "no recovery was timed"
fi
if grep -qiE 'panic' "$LOG"; then
    echo "troika log has panics:" && grep -iE 'panic' "$LOG" | head -20
fi
