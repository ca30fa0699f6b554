#!/usr/bin/env bash
# ssd-cache.sh: the SSD read cache's figures (issue 17, "What it must reach"), in one run.
#
# Prints:
#   1. on hw/sim-hil.toml (SSD 80 us, HDD 4 ms + rotation): a SET-byte (default 1G) hot set
#      after warm-up, 4k random reads at qd1: the DRAM / SSD / drives shares of the blocks
#      read (the node's own per-volume counters) and fio's p50/p90/p99/p99.9, beside a cold
#      volume of the same size with `ssd_enabled: false` (its reads are the misses);
#   2. warm restart: after kill -9, the hot set's hit ratio in the first WARM_CHECK seconds
#      (default 10) against the ratio before;
#   3. scan resistance on a plain-file model (SSD cache SCAN_CACHE, default 256M): the hot
#      set's hit ratio alone and while a sequential read of 10x the SSD cache runs.
#
# Settings (environment): SET, WARM_SECONDS (default 120), MEASURE_SECONDS (default 20),
# WARM_CHECK, SCAN_CACHE, MODEL (default hw/sim-hil.toml), PARTS (default "1 3").
# Every fio run is bounded (timeout); nodes are killed on exit. Not in the default suite.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

command -v fio >/dev/null || { echo "ssd-cache.sh needs fio (with its nbd engine)" >&2; exit 1; }

export TROIKA WORK REPO
exec python3 "$RIGS_DIR/ssd_cache.py"
