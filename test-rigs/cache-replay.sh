#!/usr/bin/env bash
# cache-replay.sh: the SSD read cache's policy replay (issue 17). Builds
# troika-cache-replay and runs it: every policy (S3-FIFO, the chosen one; ARC and LRU, the
# baselines; CLOCK) over the same traces at several cache sizes, printing a Markdown table
# of hit ratios and index bytes per cached block, and whether the chosen policy is >= LRU
# and within 1 point of ARC on each row (exit status 1 when a row misses).
#
# Usage:
#   test-rigs/cache-replay.sh                      # every synthetic mix, 1%, 5%, 10%
#   test-rigs/cache-replay.sh --trace hm_0.csv     # an MSR Cambridge or plain CSV trace
#   test-rigs/cache-replay.sh --mix zipf-0.8 --sizes 2%,20% --requests 5000000
#   test-rigs/cache-replay.sh --generate scan --out scan.csv
# Any argument goes to the binary (see --help).
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
(cd "$REPO" && cargo build --release --quiet --bin troika-cache-replay)
exec "$REPO/target/release/troika-cache-replay" "$@"
