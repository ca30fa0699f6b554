#!/usr/bin/env bash
# fault-overhead.sh: what fault injection costs while it is off, against a build without it.
#
# Runs two nodes at once on the default model, BASE (a build without fault injection,
# TROIKA_BASE=path, required: the same commit built with `--features
# without-fault-injection`, which compiles the ring's one branch out) and the current build
# (TROIKA, default target/release/troika),
# each with a volume filled once. Then, for ROUNDS rounds (default 5), runs each workload on
# both nodes one after the other, alternating which goes first (ABBA), RUNTIME seconds each
# (default 10), and prints per workload the median IOPS of each and the ratio
# current/base (1.00 = no cost).
#
# Workloads: 4k random reads qd32 from the DRAM cache (CACHED, a 256M volume: the io layer is
# not touched, so this shows the cost on the path hosts see), and 4k random reads qd32 that
# miss DRAM (MISS, a 2G volume over the 768M cache: every read goes through the io ring and
# its one fault branch).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

BASE="${TROIKA_BASE:?set TROIKA_BASE to a troika binary built with --features without-fault-injection}"
ROUNDS="${ROUNDS:-5}"
RUNTIME="${RUNTIME:-10}"

start_one() {
    local name="$1" bin="$2"
    TROIKA="$bin" start_troika "$WORK/$name" "$WORK/$name.log" --mgmt-listen none --iscsi-listen none
    "$bin" --data "$WORK/$name" pool create P --size 3G >/dev/null
    "$bin" --data "$WORK/$name" vol create cached --pool P --size 256M >/dev/null
    "$bin" --data "$WORK/$name" vol create miss --pool P --size 2G >/dev/null
    local vol
    for vol in cached miss; do
        timeout 600 fio --name=fill --ioengine=nbd --uri="nbd+unix:///$vol?socket=$WORK/$name/nbd.sock" \
            --rw=write --bs=1M --iodepth=8 --size=100% --output-format=terse >/dev/null
    done
}

start_one base "$BASE"
start_one current "$TROIKA"

run_fio() {
    local name="$1" vol="$2"
    timeout $((RUNTIME + 60)) fio --name=r --ioengine=nbd \
        --uri="nbd+unix:///$vol?socket=$WORK/$name/nbd.sock" --rw=randread --bs=4k \
        --iodepth=32 --norandommap --time_based --runtime="$RUNTIME" --output-format=json |
        python3 -c 'import json,sys; t=sys.stdin.read(); print(round(json.loads(t[t.index("{"):])["jobs"][0]["read"]["iops"]))'
}

for vol in cached miss; do
    base_iops=()
    current_iops=()
    for ((round = 0; round < ROUNDS; round++)); do
        if ((round % 2 == 0)); then order=(base current); else order=(current base); fi
        for name in "${order[@]}"; do
            iops=$(run_fio "$name" "$vol")
            if [[ "$name" == base ]]; then base_iops+=("$iops"); else current_iops+=("$iops"); fi
        done
    done
    python3 - "$vol" "${base_iops[*]}" "${current_iops[*]}" <<'PY'
import statistics, sys
vol, base, cur = sys.argv[1], [int(x) for x in sys.argv[2].split()], [int(x) for x in sys.argv[3].split()]
b, c = statistics.median(base), statistics.median(cur)
print(f"4k randread qd32 {vol:6s}: base {b:9.0f} IOPS  current {c:9.0f} IOPS  current/base {c / b:.3f}   rounds base {base} current {cur}")
PY
done
