#!/usr/bin/env bash
# raid-rebuild.sh: InfiniRAID rebuild figures (issue 16, "What it must reach"), in one run.
#
# Prints one table with:
#   1. rebuild time of the same DATA written (default 4G) with N = 12, 24, 48 drives on
#      HDD-latency models (8+2 rows, spare 2, like hw/sim-hil.toml's drives), and the
#      speed-up against the ideal 1/N (efficiency = (t12 / tN) / (N / 12));
#   2. on plain files (24 drives): rebuild time of DATA against fio reading DATA once from
#      the survivors' files (O_DIRECT, one job per survivor, all at once);
#   3. host 4k random read IOPS and p99 (fio nbd engine, qd 16) while a drive rebuilds
#      against idle, rounds interleaved (idle, rebuilding, idle, ...; medians), on the
#      24-drive HDD model;
#   4. read latency p50 of blocks on a failed drive (reconstructed from parity, cache cold,
#      the rebuild held back by delayed writes) against healthy reads of the same blocks
#      (cache cold), on the 12-drive HDD model.
#
# Settings (environment): DATA (default 4G; e.g. DATA=256M to scale down), DRIVES
# (default "12 24 48"), ROUND_SECONDS (default 5), ROUNDS (default 3), SAMPLE (blocks for
# part 4, default 200). Every fio run and wait is bounded (timeout); nodes are killed on exit.
#
# Not in the default test suite.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

command -v fio >/dev/null || { echo "raid-rebuild.sh needs fio (with its nbd engine)" >&2; exit 1; }

export TROIKA WORK
exec python3 "$RIGS_DIR/raid_rebuild.py"
