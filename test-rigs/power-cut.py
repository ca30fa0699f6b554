#!/usr/bin/env python3
"""Power-cut rig: runs the power-cut crash test (tests/power_cut.rs) for many cycles.

The test drives two NBD writers and one iSCSI writer against the real binary on a model
whose devices have simulated volatile write caches, cuts the power at random moments
(during destage, checkpoints, cleaning, a controller failover, snapshot creation),
restarts, and checks every block against the flush oracle. This rig runs it in batches
of BATCH cycles with a new seed each, until CYCLES cycles are done or DEADLINE seconds
have passed, and reports:

  cycles run, batches failed (each failure prints the test's own report: the block,
  its expected versions and the cut's seed), and the node's recovery time p50/p99/max.

A failed batch means flushed writes were lost or a block came back torn or foreign: the
test stops at the first wrong block and names it.

Usage: python3 test-rigs/power-cut.py   (env CYCLES=1000 BATCH=50 DEADLINE=5400 SEED=1)
"""

import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CYCLES = int(os.environ.get("CYCLES", "1000"))
BATCH = int(os.environ.get("BATCH", "50"))
DEADLINE = float(os.environ.get("DEADLINE", "5400"))
SEED = int(os.environ.get("SEED", "1"))


def percentile(values, p):
    if not values:
        return 0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-p * len(ordered) // 100))))
    return ordered[rank - 1]


def main():
    subprocess.run(
        ["cargo", "test", "--release", "--test", "power_cut", "--no-run"],
        cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    started = time.monotonic()
    done = 0
    failed = []
    times = []
    batch_index = 0
    while done < CYCLES and time.monotonic() - started < DEADLINE:
        cycles = min(BATCH, CYCLES - done)
        seed = SEED * 1_000_003 + batch_index
        env = dict(os.environ, TROIKA_POWER_CUT_CYCLES=str(cycles),
                   TROIKA_POWER_CUT_SEED=str(seed))
        remaining = max(60.0, DEADLINE - (time.monotonic() - started) + 120)
        try:
            run = subprocess.run(
                ["cargo", "test", "--release", "--test", "power_cut", "--", "--nocapture"],
                cwd=ROOT, env=env, capture_output=True, text=True, timeout=remaining)
            output = run.stdout + run.stderr
            ok = run.returncode == 0
        except subprocess.TimeoutExpired as expired:
            output = f"batch timed out after {expired.timeout:.0f} s"
            ok = False
        match = re.search(r"recovery times \(ms\): ([0-9 ]*)", output)
        batch_times = [int(t) for t in match.group(1).split()] if match else []
        times.extend(batch_times)
        done += cycles
        batch_index += 1
        if not ok:
            failed.append(seed)
            print(f"batch seed {seed}: FAILED\n{output[-6000:]}", flush=True)
        else:
            print(f"batch seed {seed}: {cycles} cycles ok, recovery max "
                  f"{max(batch_times) if batch_times else 0} ms "
                  f"({done}/{CYCLES}, {time.monotonic() - started:.0f} s)", flush=True)
    print()
    print(f"power-cut rig: {done} cycles in {time.monotonic() - started:.0f} s, "
          f"{len(failed)} failed batches {failed}")
    print(f"recovery time over {len(times)} restarts: p50 {percentile(times, 50)} ms, "
          f"p99 {percentile(times, 99)} ms, max {max(times) if times else 0} ms")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
