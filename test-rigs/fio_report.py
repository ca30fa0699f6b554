#!/usr/bin/env python3
"""Summarise fio --output-format=json results.

Usage:
  fio_report.py table JOB_TITLE BASELINE_LABEL LABEL=FILE.json [LABEL=FILE.json ...]
      One table: target, direction, IOPS, MiB/s, p50 and p99 completion latency (µs), and
      the ratios baseline/target of IOPS and p50 (so "troika/peer" when the baseline is
      troika). Mixed jobs get one row per direction.
  fio_report.py summary FILE.json
      One line per direction: IOPS, MiB/s, p50/p99/max clat (µs).
  fio_report.py iopslog FILE_iops.1.log [BUCKET_SECONDS]
      IOPS over time from a fio --write_iops_log file (log_avg_msec set), in buckets.
"""

import json
import sys


def load(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    start = text.find("{")  # fio may print notes before the JSON document
    if start < 0:
        raise SystemExit(f"{path}: no JSON in fio output")
    return json.loads(text[start:])


def directions(doc):
    """Per direction with I/O: (dir, iops, MiB/s, p50 µs, p99 µs, max µs, errors)."""
    out = []
    for job in doc["jobs"]:
        for d in ("read", "write"):
            s = job[d]
            if s["total_ios"] == 0 and s["io_bytes"] == 0:
                continue
            pct = s["clat_ns"].get("percentile", {})
            out.append(
                (
                    d,
                    s["iops"],
                    s["bw_bytes"] / 2**20,
                    pct.get("50.000000", float("nan")) / 1000,
                    pct.get("99.000000", float("nan")) / 1000,
                    s["clat_ns"]["max"] / 1000,
                    job.get("error", 0),
                )
            )
    return out


def ratio(a, b):
    if b == 0 or a != a or b != b:
        return "-"
    return f"{a / b:.2f}"


def table(title, baseline, pairs):
    results = {}
    order = []
    for pair in pairs:
        label, path = pair.split("=", 1)
        order.append(label)
        try:
            results[label] = {d[0]: d for d in directions(load(path))}
        except (OSError, ValueError, KeyError, SystemExit) as err:
            results[label] = {}
            print(f"  ({label}: no result: {err})")
    base = results.get(baseline, {})
    print(f"== {title}")
    head = f"{'target':<12} {'dir':<5} {'IOPS':>10} {'MiB/s':>9} {'p50 µs':>9} {'p99 µs':>9} {baseline + '/peer IOPS':>17} {baseline + '/peer p50':>16}"
    print(head)
    print("-" * len(head))
    for label in order:
        if not results[label]:
            print(f"{label:<12} {'FAILED':<5}")
            continue
        for d, iops, mib, p50, p99, _mx, err in results[label].values():
            b = base.get(d)
            r_iops = ratio(b[1], iops) if b and label != baseline else "-"
            r_p50 = ratio(b[3], p50) if b and label != baseline else "-"
            flag = f"  (fio error {err})" if err else ""
            print(f"{label:<12} {d:<5} {iops:>10.0f} {mib:>9.1f} {p50:>9.1f} {p99:>9.1f} {r_iops:>17} {r_p50:>16}{flag}")
    print()


def summary(path):
    for d, iops, mib, p50, p99, mx, err in directions(load(path)):
        flag = f" fio_error={err}" if err else ""
        print(f"{d}: IOPS {iops:.0f}  MiB/s {mib:.1f}  clat p50 {p50:.1f} µs  p99 {p99:.1f} µs  max {mx:.0f} µs{flag}")


def iopslog(path, bucket_s=5.0):
    buckets = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = [p.strip() for p in line.split(",")]
            if len(parts) < 2 or not parts[0].isdigit():
                continue
            t_ms, value = int(parts[0]), float(parts[1])
            key = int(t_ms / 1000 / bucket_s)
            buckets.setdefault(key, []).append(value)
    if not buckets:
        print("(empty IOPS log)")
        return
    print(f"{'t (s)':>11} {'IOPS avg':>10} {'min 1s':>9} {'max 1s':>9}")
    for key in sorted(buckets):
        vals = buckets[key]
        lo, hi = key * bucket_s, (key + 1) * bucket_s
        print(f"{lo:>5.0f}-{hi:<5.0f} {sum(vals) / len(vals):>10.0f} {min(vals):>9.0f} {max(vals):>9.0f}")


def main(argv):
    if len(argv) >= 4 and argv[1] == "table":
        table(argv[2], argv[3], argv[4:])
    elif len(argv) == 3 and argv[1] == "summary":
        summary(argv[2])
    elif len(argv) in (3, 4) and argv[1] == "iopslog":
        iopslog(argv[2], float(argv[3]) if len(argv) == 4 else 5.0)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
