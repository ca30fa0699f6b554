#!/usr/bin/env bash
# Sustained 4k random writes far beyond troika's DRAM cache on the CI model (96M of cache):
# write amplification, IOPS over time and the process RSS against the DRAM budget.
# See test-rigs/README.md.
#
# Env: IO_SIZE (bytes of 4k random writes after the fill, default 512M = 5.3x the cache),
# MAX_RUNTIME (cap on that phase in s, default 600), BUCKET (IOPS table bucket, s, default 5),
# DRAIN (s to wait afterwards for dirty data to destage, default 30), POOL_SIZE (400M),
# VOL_SIZE (256M).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

IO_SIZE="${IO_SIZE:-512M}"
MAX_RUNTIME="${MAX_RUNTIME:-600}"
BUCKET="${BUCKET:-5}"
DRAIN="${DRAIN:-30}"
POOL_SIZE="${POOL_SIZE:-400M}"
VOL_SIZE="${VOL_SIZE:-256M}"
REPORT="$RIGS_DIR/fio_report.py"
DATA="$WORK/data"
NAMES="troika_host_blocks_written_total troika_media_blocks_written_total troika_media_rows_written_total troika_cleaner_relocated_blocks_total troika_cache_dirty_bytes"

start_troika "$DATA" "$WORK/troika.log" --hw "$REPO/hw/ci.toml"
"$TROIKA" --data "$DATA" pool create P --size "$POOL_SIZE" >/dev/null
"$TROIKA" --data "$DATA" vol create V --pool P --size "$VOL_SIZE" >/dev/null
URI="nbd+unix:///V?socket=$DATA/nbd.sock"
CAPACITY="$(metric "$DATA" troika_cache_capacity_bytes)"
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$TROIKA_PID/status" 2>/dev/null || true; }
RSS_IDLE="$(rss_kb)"
alive() { kill -0 "$TROIKA_PID" 2>/dev/null; }

# Sampler: RSS every 0.2 s, counters every 1 s, while the flag file exists and troika
# lives; bounded to MAX_RUNTIME + 900 s.
sampler() {
    local i limit=$(((MAX_RUNTIME + 900) * 5)) rss
    for ((i = 0; i < limit; i++)); do
        [[ -e "$WORK/sampling" ]] && alive || break
        rss="$(rss_kb)"
        [[ -n "$rss" ]] && echo "$(date +%s.%N) $rss" >>"$WORK/rss.samples"
        if ((i % 5 == 0)); then
            echo "$(date +%s.%N) $(metrics_line "$DATA" $NAMES)" >>"$WORK/metrics.samples"
        fi
        sleep 0.2
    done
}
# snapshot: the counters now, or the last sample taken while troika still answered.
snapshot() {
    local now
    now="$(metrics_line "$DATA" $NAMES)"
    if [[ "$now" == *NaN* ]]; then
        now="$(grep -v NaN "$WORK/metrics.samples" 2>/dev/null | tail -1 | cut -d' ' -f2-)"
        echo "note: troika did not answer /metrics; using its last sample ($now)" >&2
    fi
    echo "$now"
}

touch "$WORK/sampling"
sampler &
SAMPLER_PID=$!
PIDS+=("$SAMPLER_PID")

echo "sustained-write: hw/ci.toml, pool $POOL_SIZE, volume $VOL_SIZE, DRAM cache $((CAPACITY >> 20)) MiB, $(nproc) CPUs"
T0=$(date +%s.%N)
S0="$(snapshot)"
timeout 600 fio --name=fill --ioengine=nbd --uri="$URI" --rw=write --bs=1M --iodepth=8 \
    --output-format=json --output="$WORK/fill.json" >"$WORK/fill.out" 2>&1 ||
    { echo "fill failed:"; tail -5 "$WORK/fill.out"; }
S1="$(snapshot)"
T1=$(date +%s.%N)
echo "fill ($VOL_SIZE sequential 1M qd8, $(echo "$T1 - $T0" | bc | xargs printf '%.1f') s):"
python3 "$REPORT" summary "$WORK/fill.json" | sed 's/^/  /'

echo
echo "random write: 4k qd32, io_size $IO_SIZE (cap ${MAX_RUNTIME}s), starting at t=$(echo "$T1 - $T0" | bc | xargs printf '%.1f') s"
fio_rc=0
timeout $((MAX_RUNTIME + 120)) fio --name=randwrite --ioengine=nbd --uri="$URI" --rw=randwrite \
    --bs=4k --iodepth=32 --io_size="$IO_SIZE" --runtime="$MAX_RUNTIME" --norandommap \
    --randrepeat=0 --write_iops_log="$WORK/rw" --log_avg_msec=1000 \
    --output-format=json --output="$WORK/rw.json" >"$WORK/rw.out" 2>&1 || fio_rc=$?
T2=$(date +%s.%N)
S2="$(snapshot)"
if [[ $fio_rc -ne 0 ]]; then
    echo "  fio exited $fio_rc:"
    { grep -E 'error|err=' "$WORK/rw.out" || tail -3 "$WORK/rw.out"; } | head -5 | sed 's/^/    /'
fi
python3 "$REPORT" summary "$WORK/rw.json" | sed 's/^/  /' || true
echo "  elapsed $(echo "$T2 - $T1" | bc | xargs printf '%.1f') s"
if ! alive; then
    echo "  troika is no longer running; its log:"
    sed 's/^/    /' "$WORK/troika.log"
fi
echo
echo "IOPS over time (${BUCKET}s buckets of fio's 1 s averages):"
python3 "$REPORT" iopslog "$(ls "$WORK"/rw_iops*.log 2>/dev/null | head -1)" "$BUCKET" || echo "  (no IOPS log)"

# Let the cache drain (bounded) to see what destaging the rest costs.
for ((i = 0; i < DRAIN * 2; i++)); do
    alive || break
    [[ "$(metric "$DATA" troika_cache_dirty_bytes)" == 0 ]] && break
    sleep 0.5
done
S3="$(snapshot)"
rm -f "$WORK/sampling"
wait "$SAMPLER_PID" 2>/dev/null || true

echo
echo "counters over time (host/media blocks are cumulative; from 1 s samples, every ${BUCKET} s):"
awk -v t0="$T0" -v every="$BUCKET" 'BEGIN { printf "%8s %10s %12s %8s %10s %10s\n", "t (s)", "host blk", "media blk", "rows", "relocated", "dirty MiB" }
    $2 != "NaN" { t = $1 - t0; if (t >= next_t) { printf "%8.1f %10d %12d %8d %10d %10.1f\n", t, $2, $3, $4, $5, $6 / 1048576; next_t = t + every } }' \
    "$WORK/metrics.samples"

echo
echo "write amplification (4 KiB blocks; a row is 6 units x 16 blocks = 96 media blocks incl. P, Q, summary):"
python3 - "$S0" "$S1" "$S2" "$S3" <<'PY'
import sys
def parse(s):
    try:
        return [float(x) for x in s.split()]
    except ValueError:
        return [float("nan")] * 5
s0, s1, s2, s3 = (parse(a) for a in sys.argv[1:5])
rows = [("fill", s0, s1), ("random (at end of load)", s1, s2), ("random (after drain wait)", s1, s3), ("whole run", s0, s3)]
print(f"{'phase':<27} {'host blk':>10} {'media user blk':>15} {'rows':>8} {'relocated':>10} {'WA rows*96/host':>16} {'WA user/host':>13} {'dirty MiB at end':>17}")
for name, a, b in rows:
    if len(a) < 5 or len(b) < 5:
        print(f"{name:<27} (no data)"); continue
    host, media, rws, rel = (b[i] - a[i] for i in range(4))
    wa_rows = rws * 96 / host if host else float("nan")
    wa_user = media / host if host else float("nan")
    print(f"{name:<27} {host:>10.0f} {media:>15.0f} {rws:>8.0f} {rel:>10.0f} {wa_rows:>16.2f} {wa_user:>13.2f} {b[4] / 2**20:>17.1f}")
PY

echo
echo "RSS of troika (VmRSS, sampled every 0.2 s from start to the end of the drain wait):"
python3 - "$WORK/rss.samples" "$CAPACITY" "${RSS_IDLE:-0}" <<'PY'
import sys
vals = []
for line in open(sys.argv[1]):
    parts = line.split()
    if len(parts) == 2 and parts[1].isdigit():
        vals.append(int(parts[1]))
cap, idle = int(sys.argv[2]), int(sys.argv[3])
if not vals:
    print("  no samples"); sys.exit(0)
mx = max(vals)
print(f"  samples {len(vals)}; idle before load {idle / 1024:.1f} MiB; max {mx / 1024:.1f} MiB; last {vals[-1] / 1024:.1f} MiB")
print(f"  DRAM cache budget (troika_cache_capacity_bytes) {cap / 2**20:.1f} MiB; max RSS / budget {mx * 1024 / cap:.2f}; max RSS - budget {(mx * 1024 - cap) / 2**20:.1f} MiB")
PY
if alive && grep -qiE 'panic|error|failed' "$WORK/troika.log"; then
    echo "troika log has errors:" && grep -iE 'panic|error|failed' "$WORK/troika.log" | head -20
fi
