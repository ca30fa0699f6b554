#!/usr/bin/env bash
# Compares troika with nbdkit memory, nbdkit file and qemu-nbd over NBD on unix sockets,
# with fio's nbd engine, on the same job matrix. See test-rigs/README.md.
#
# Env: RUNTIME (s per job, default 10), SIZE (volume size, default 512M, must fit troika's
# 768M DRAM cache), TARGETS (subset of "troika nbdkit-mem nbdkit-file qemu-nbd", plus
# "troika-before" with BEFORE=PATH: another troika binary, e.g. the build before a
# refactoring, run side by side), JOBS (subset of job names below), KEEP_JSON=DIR (copy
# the fio JSON there).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RUNTIME="${RUNTIME:-10}"
SIZE="${SIZE:-512M}"
TARGETS="${TARGETS:-troika nbdkit-mem nbdkit-file qemu-nbd}"
ALL_JOBS="4k-randread-qd1 4k-randread-qd32 4k-randwrite-qd1 4k-randwrite-qd32 1m-seqread-qd8 1m-seqwrite-qd8 64k-randrw70-qd16"
JOBS="${JOBS:-$ALL_JOBS}"
REPORT="$RIGS_DIR/fio_report.py"

job_args() {
    case "$1" in
        4k-randread-qd1) echo "--rw=randread --bs=4k --iodepth=1" ;;
        4k-randread-qd32) echo "--rw=randread --bs=4k --iodepth=32" ;;
        4k-randwrite-qd1) echo "--rw=randwrite --bs=4k --iodepth=1" ;;
        4k-randwrite-qd32) echo "--rw=randwrite --bs=4k --iodepth=32" ;;
        1m-seqread-qd8) echo "--rw=read --bs=1M --iodepth=8" ;;
        1m-seqwrite-qd8) echo "--rw=write --bs=1M --iodepth=8" ;;
        64k-randrw70-qd16) echo "--rw=randrw --rwmixread=70 --bs=64k --iodepth=16" ;;
        *) echo "unknown job $1" >&2; return 1 ;;
    esac
}

declare -A URI
for target in $TARGETS; do
    case "$target" in
        troika)
            start_troika "$WORK/troika" "$WORK/troika.log"
            "$TROIKA" --data "$WORK/troika" pool create P --size 3G >/dev/null
            "$TROIKA" --data "$WORK/troika" vol create V --pool P --size "$SIZE" >/dev/null
            URI[$target]="nbd+unix:///V?socket=$WORK/troika/nbd.sock"
            ;;
        troika-before)
            [[ -x "${BEFORE:-}" ]] || { echo "troika-before needs BEFORE=path to a troika binary" >&2; exit 2; }
            after_pid="${TROIKA_PID:-}"
            TROIKA="$BEFORE" start_troika "$WORK/before" "$WORK/before.log" --mgmt-listen none --iscsi-listen none
            BEFORE_PID=$TROIKA_PID
            TROIKA_PID=$after_pid
            "$BEFORE" --data "$WORK/before" pool create P --size 3G >/dev/null
            "$BEFORE" --data "$WORK/before" vol create V --pool P --size "$SIZE" >/dev/null
            URI[$target]="nbd+unix:///V?socket=$WORK/before/nbd.sock"
            ;;
        nbdkit-mem)
            nbdkit -f -U "$WORK/mem.sock" memory "$SIZE" &
            PIDS+=("$!")
            wait_for_socket "$WORK/mem.sock"
            URI[$target]="nbd+unix:///?socket=$WORK/mem.sock"
            ;;
        nbdkit-file)
            truncate -s "$SIZE" "$WORK/nbdkit-file.img"
            nbdkit -f -U "$WORK/file.sock" file file="$WORK/nbdkit-file.img" &
            PIDS+=("$!")
            wait_for_socket "$WORK/file.sock"
            URI[$target]="nbd+unix:///?socket=$WORK/file.sock"
            ;;
        qemu-nbd)
            truncate -s "$SIZE" "$WORK/qemu.img"
            qemu-nbd -t -e 0 -f raw -k "$WORK/qemu.sock" "$WORK/qemu.img" &
            PIDS+=("$!")
            wait_for_socket "$WORK/qemu.sock"
            URI[$target]="nbd+unix:///?socket=$WORK/qemu.sock"
            ;;
        *) echo "unknown target $target" >&2; exit 2 ;;
    esac
done

baseline="${TARGETS%% *}"
echo "fio-peers: size $SIZE, runtime ${RUNTIME}s per job, targets: $TARGETS ($(nproc) CPUs)"
echo

for job in $JOBS; do
    read -r -a args <<<"$(job_args "$job")"
    pairs=()
    for target in $TARGETS; do
        uri="${URI[$target]}"
        # Fill: the whole device written once, sequentially, so reads hit written data.
        if ! timeout 600 fio --name=fill --ioengine=nbd --uri="$uri" --rw=write --bs=1M \
            --iodepth=8 --output-format=json --output="$WORK/fill.json" >"$WORK/fill.out" 2>&1; then
            echo "  fill of $target failed:" && tail -5 "$WORK/fill.out"
        fi
        out="$WORK/$job.$target.json"
        if ! timeout $((RUNTIME + 120)) fio --name="$job" --ioengine=nbd --uri="$uri" "${args[@]}" \
            --time_based --runtime="$RUNTIME" --norandommap --randrepeat=0 \
            --output-format=json --output="$out" >"$WORK/fio.out" 2>&1; then
            echo "  $job on $target failed:" && tail -5 "$WORK/fio.out"
        fi
        pairs+=("$target=$out")
    done
    python3 "$REPORT" table "$job (${RUNTIME}s, after a full sequential fill)" "$baseline" "${pairs[@]}"
    if [[ -n "${KEEP_JSON:-}" ]]; then
        mkdir -p "$KEEP_JSON" && cp "$WORK"/"$job".*.json "$KEEP_JSON"/ 2>/dev/null || true
    fi
done

if [[ " $TARGETS " == *" troika "* ]]; then
    echo "troika counters at the end:"
    for name in troika_host_blocks_written_total troika_media_blocks_written_total \
        troika_media_rows_written_total troika_cleaner_relocated_blocks_total \
        troika_cache_dirty_bytes troika_cache_capacity_bytes; do
        printf '  %-40s %s\n' "$name" "$(metric "$WORK/troika" "$name")"
    done
    echo "troika RSS at the end: $(awk '/VmRSS/ {print $2, $3}' "/proc/$TROIKA_PID/status" 2>/dev/null || echo '?')"
    if [[ -n "${BEFORE_PID:-}" ]]; then
        echo "troika-before RSS at the end: $(awk '/VmRSS/ {print $2, $3}' "/proc/$BEFORE_PID/status" 2>/dev/null || echo '?')"
    fi
    if grep -qiE 'panic|error' "$WORK/troika.log"; then
        echo "troika log has errors:" && grep -iE 'panic|error' "$WORK/troika.log" | head -20
    fi
fi
