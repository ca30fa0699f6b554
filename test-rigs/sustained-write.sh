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
COUNTERS="troika_host_blocks_written_total troika_media_blocks_written_total troika_media_rows_written_total troika_cleaner_relocated_blocks_total"

start_troika "$DATA" "$WORK/troika.log" --hw "$REPO/hw/ci.toml"
"$TROIKA" --data "$DATA" pool create P --size "$POOL_SIZE" >/dev/null
"$TROIKA" --data "$DATA" vol create V --pool P --size "$VOL_SIZE" >/dev/null
URI="nbd+unix:///V?socket=$DATA/nbd.sock"
CAPACITY="$(metric "$DATA" troika_cache_capacity_bytes)"
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$TROIKA_PID/status" 2>/dev/null || echo 0; }
RSS_IDLE="$(rss_kb)"

# snapshot NAME: stores the counters in associative array NAME.
declare -A S0 S1 S2 S3
snapshot() {
    local -n into="$1"
    local name
    for name in $COUNTERS troika_cache_dirty_bytes; do
        into[$name]="$(metric "$DATA" "$name")"
    done
}

# RSS sampler: every 0.2 s while the flag file exists; bounded to MAX_RUNTIME + 600 s.
rss_sampler() {
    local i limit=$(((MAX_RUNTIME + 600) * 5))
    for ((i = 0; i < limit; i++)); do
        [[ -e "$WORK/sampling" ]] || break
        echo "$(date +%s.%N) $(rss_kb)" >>"$WORK/rss.samples"
        sleep 0.2
    done
}
touch "$WORK/sampling"
rss_sampler &
PIDS+=("$!")
SAMPLER_PID=$!

echo "sustained-write: hw/ci.toml, pool $POOL_SIZE, volume $VOL_SIZE, DRAM cache $((CAPACITY >> 20)) MiB, $(nproc) CPUs"
snapshot S0
t0=$(date +%s.%N)
timeout 600 fio --name=fill --ioengine=nbd --uri="$URI" --rw=write --bs=1M --iodepth=8 \
    --output-format=json --output="$WORK/fill.json" >"$WORK/fill.out" 2>&1 ||
    { echo "fill failed:"; tail -5 "$WORK/fill.out"; }
snapshot S1
echo "fill ($VOL_SIZE sequential 1M qd8, $(printf '%.1f' "$(echo "$(date +%s.%N) - $t0" | bc)") s):"
python3 "$REPORT" summary "$WORK/fill.json" | sed 's/^/  /'

echo
echo "random write: 4k qd32, io_size $IO_SIZE (cap ${MAX_RUNTIME}s)"
t0=$(date +%s.%N)
fio_rc=0
timeout $((MAX_RUNTIME + 120)) fio --name=randwrite --ioengine=nbd --uri="$URI" --rw=randwrite \
    --bs=4k --iodepth=32 --io_size="$IO_SIZE" --runtime="$MAX_RUNTIME" --norandommap \
    --randrepeat=0 --write_iops_log="$WORK/rw" --log_avg_msec=1000 \
    --output-format=json --output="$WORK/rw.json" >"$WORK/rw.out" 2>&1 || fio_rc=$?
elapsed=$(echo "$(date +%s.%N) - $t0" | bc)
snapshot S2
[[ $fio_rc -eq 0 ]] || { echo "  fio exited $fio_rc:"; tail -5 "$WORK/rw.out" | sed 's/^/  /'; }
python3 "$REPORT" summary "$WORK/rw.json" | sed 's/^/  /'
echo "  elapsed $(printf '%.1f' "$elapsed") s"
echo
echo "IOPS over time (${BUCKET}s buckets of fio's 1 s averages):"
python3 "$REPORT" iopslog "$(ls "$WORK"/rw_iops*.log | head -1)" "$BUCKET"

# Let the cache drain (bounded) to see what destaging the rest costs.
for ((i = 0; i < DRAIN * 2; i++)); do
    [[ "$(metric "$DATA" troika_cache_dirty_bytes)" == 0 ]] && break
    sleep 0.5
done
snapshot S3
rm -f "$WORK/sampling"
wait "$SAMPLER_PID" 2>/dev/null || true

echo
echo "write amplification (blocks of 4 KiB; row = 6 units x 16 blocks = 96 media blocks incl. P, Q, summary):"
python3 - "$COUNTERS" <<PY
import sys
names = "$COUNTERS".split()
s0 = dict(zip(names, "${S0[troika_host_blocks_written_total]} ${S0[troika_media_blocks_written_total]} ${S0[troika_media_rows_written_total]} ${S0[troika_cleaner_relocated_blocks_total]}".split()))
s1 = dict(zip(names, "${S1[troika_host_blocks_written_total]} ${S1[troika_media_blocks_written_total]} ${S1[troika_media_rows_written_total]} ${S1[troika_cleaner_relocated_blocks_total]}".split()))
s2 = dict(zip(names, "${S2[troika_host_blocks_written_total]} ${S2[troika_media_blocks_written_total]} ${S2[troika_media_rows_written_total]} ${S2[troika_cleaner_relocated_blocks_total]}".split()))
s3 = dict(zip(names, "${S3[troika_host_blocks_written_total]} ${S3[troika_media_blocks_written_total]} ${S3[troika_media_rows_written_total]} ${S3[troika_cleaner_relocated_blocks_total]}".split()))
dirty = {"fill": "${S1[troika_cache_dirty_bytes]}", "rand": "${S2[troika_cache_dirty_bytes]}", "drain": "${S3[troika_cache_dirty_bytes]}"}
def f(x):
    try: return float(x)
    except ValueError: return float("nan")
rows = [("fill", s0, s1, dirty["fill"]), ("random (at end of load)", s1, s2, dirty["rand"]),
        ("random (after drain wait)", s1, s3, dirty["drain"]), ("whole run", s0, s3, dirty["drain"])]
print(f"{'phase':<27} {'host blk':>10} {'media user blk':>15} {'rows':>8} {'relocated':>10} {'WA rows*96/host':>16} {'WA user/host':>13} {'dirty MiB':>10}")
for name, a, b, d in rows:
    host = f(b[names[0]]) - f(a[names[0]])
    media = f(b[names[1]]) - f(a[names[1]])
    rws = f(b[names[2]]) - f(a[names[2]])
    rel = f(b[names[3]]) - f(a[names[3]])
    wa_rows = rws * 96 / host if host else float("nan")
    wa_user = media / host if host else float("nan")
    print(f"{name:<27} {host:>10.0f} {media:>15.0f} {rws:>8.0f} {rel:>10.0f} {wa_rows:>16.2f} {wa_user:>13.2f} {f(d)/2**20:>10.1f}")
PY

echo
echo "RSS of troika (VmRSS, sampled every 0.2 s during fill + random write):"
python3 - "$WORK/rss.samples" "$CAPACITY" "$RSS_IDLE" <<'PY'
import sys
vals = [int(l.split()[1]) for l in open(sys.argv[1]) if len(l.split()) == 2 and l.split()[1].isdigit()]
cap = int(sys.argv[2]); idle = int(sys.argv[3])
if not vals:
    print("  no samples"); sys.exit(0)
mx = max(vals)
print(f"  samples {len(vals)}, idle before load {idle/1024:.1f} MiB, max {mx/1024:.1f} MiB, last {vals[-1]/1024:.1f} MiB")
print(f"  DRAM cache budget (troika_cache_capacity_bytes) {cap/2**20:.1f} MiB; max RSS / budget = {mx*1024/cap:.2f}; (max RSS - budget) = {(mx*1024-cap)/2**20:.1f} MiB")
PY
if grep -qiE 'panic|error' "$WORK/troika.log"; then
    echo "troika log has errors:" && grep -iE 'panic|error' "$WORK/troika.log" | head -20
fi
