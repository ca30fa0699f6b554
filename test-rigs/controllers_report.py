#!/usr/bin/env python3
"""Markdown tables for test-rigs/controllers-bench.sh.

Usage:
  controllers_report.py latency RESULTS.tsv TITLE
  controllers_report.py curve RESULTS.tsv TITLE

RESULTS.tsv has one line per fio run: section, round, test, target, connections, JSON path
(tab-separated). A run whose JSON is missing or unreadable shows as FAILED.

latency: per test (4k randwrite/randread qd1) and round, IOPS and p50/p99 total latency
(fio's lat, submission to completion, with --lat_percentiles=1; else clat) of targets `1ctl` and `3ctl` and the ratios 3ctl/1ctl, then the median of each column (the
ratio medians are medians of the per-round ratios, so drift between rounds cancels).

curve: per round and connection count, the aggregate IOPS of `troika` and `nbdkit-null` and
each one's ratio to its own 1-connection IOPS of the same round, then the medians, then
whether troika loses less than nbdkit going from 1 to the most connections.
"""

import os
import statistics
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the work tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fio_report import load  # noqa: E402


def result(path, direction):
    """(IOPS summed over jobs, p50 µs, p99 µs of the total latency, fio error) or None."""
    try:
        doc = load(path)
    except (OSError, ValueError, SystemExit):
        return None
    iops = 0.0
    p50 = p99 = float("nan")
    most = -1
    error = 0
    for job in doc.get("jobs", []):
        s = job[direction]
        iops += s["iops"]
        error = error or job.get("error", 0)
        if s["total_ios"] > most:  # with --group_reporting there is one job
            most = s["total_ios"]
            # Total latency (submission + completion; fio's nbd engine sends the request at
            # submission) when fio ran with --lat_percentiles=1, else completion latency.
            pct = s.get("lat_ns", {}).get("percentile") or s["clat_ns"].get("percentile", {})
            p50 = pct.get("50.000000", float("nan")) / 1000
            p99 = pct.get("99.000000", float("nan")) / 1000
    if most <= 0:
        return None
    return iops, p50, p99, error


def rows(path):
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) == 6:
                section, rnd, test, target, conns, json_path = parts
                yield section, int(rnd), test, target, int(conns), json_path


def direction_of(test):
    return "write" if "write" in test else "read"


def div(a, b):
    if a is None or b is None or b == 0 or a != a or b != b:
        return None
    return a / b


def median(values):
    values = [v for v in values if v is not None and v == v]
    return statistics.median(values) if values else None


def fmt(value, digits=0):
    if value is None or value != value:
        return "–"
    return f"{value:,.{digits}f}"


def latency(path, title):
    runs = {}
    tests = []
    rounds = set()
    for section, rnd, test, target, _conns, json_path in rows(path):
        if section != "latency":
            continue
        if test not in tests:
            tests.append(test)
        rounds.add(rnd)
        runs[(test, rnd, target)] = result(json_path, direction_of(test))
    print(f"### {title}")
    print()
    print(
        "| test | round | 1-ctl IOPS | 1-ctl p50 µs | 1-ctl p99 µs "
        "| 3-ctl IOPS | 3-ctl p50 µs | 3-ctl p99 µs | 3/1 IOPS | 3/1 p50 | 3/1 p99 |"
    )
    print("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    failed = False
    for test in tests:
        cols = {k: [] for k in ("i1", "a1", "b1", "i3", "a3", "b3", "ri", "ra", "rb")}
        for rnd in sorted(rounds):
            one = runs.get((test, rnd, "1ctl"))
            three = runs.get((test, rnd, "3ctl"))
            values = {}
            for key, res in (("1", one), ("3", three)):
                values["i" + key], values["a" + key], values["b" + key] = (
                    res[:3] if res else (None, None, None)
                )
            values["ri"] = div(values["i3"], values["i1"])
            values["ra"] = div(values["a3"], values["a1"])
            values["rb"] = div(values["b3"], values["b1"])
            for key, value in values.items():
                cols[key].append(value)
            note = ""
            for name, res in (("1-ctl", one), ("3-ctl", three)):
                if res is None:
                    note += f" ({name} FAILED)"
                    failed = True
                elif res[3]:
                    note += f" ({name} fio error {res[3]})"
                    failed = True
            print(
                f"| {test}{note} | {rnd} | {fmt(values['i1'])} | {fmt(values['a1'], 1)} "
                f"| {fmt(values['b1'], 1)} | {fmt(values['i3'])} | {fmt(values['a3'], 1)} "
                f"| {fmt(values['b3'], 1)} | {fmt(values['ri'], 2)} | {fmt(values['ra'], 2)} "
                f"| {fmt(values['rb'], 2)} |"
            )
        m = {key: median(values) for key, values in cols.items()}
        print(
            f"| **{test}** | **median** | {fmt(m['i1'])} | {fmt(m['a1'], 1)} | {fmt(m['b1'], 1)} "
            f"| {fmt(m['i3'])} | {fmt(m['a3'], 1)} | {fmt(m['b3'], 1)} "
            f"| **{fmt(m['ri'], 2)}** | **{fmt(m['ra'], 2)}** | **{fmt(m['rb'], 2)}** |"
        )
    print()
    print(
        "Latency: fio's total latency (submission to completion). 3/1 = 3-controller value / "
        "1-controller value, per round; the median row's ratios are medians of the per-round "
        "ratios. IOPS ratio > 1 and latency ratio < 1: 3 controllers faster."
    )
    print()
    return failed


def curve(path, title):
    iops = {}
    conns_seen = set()
    rounds = set()
    errors = {}
    targets = ["troika", "nbdkit-null"]
    for section, rnd, _test, target, conns, json_path in rows(path):
        if section != "curve":
            continue
        res = result(json_path, "read")
        iops[(rnd, target, conns)] = res[0] if res else None
        if res is None or res[3]:
            errors[(rnd, target, conns)] = "FAILED" if res is None else f"fio error {res[3]}"
        conns_seen.add(conns)
        rounds.add(rnd)
    conns_list = sorted(conns_seen)
    print(f"### {title}")
    print()
    print("| round | connections | troika IOPS | troika N/1 | nbdkit null IOPS | nbdkit N/1 | troika/nbdkit |")
    print("|---|--:|--:|--:|--:|--:|--:|")
    per = {(t, n): [] for t in targets for n in conns_list}
    ratios = {(t, n): [] for t in targets for n in conns_list}
    for rnd in sorted(rounds):
        for n in conns_list:
            cells = []
            for target in targets:
                value = iops.get((rnd, target, n))
                base = iops.get((rnd, target, conns_list[0]))
                r = div(value, base)
                per[(target, n)].append(value)
                ratios[(target, n)].append(r)
                flag = f" ({errors[(rnd, target, n)]})" if (rnd, target, n) in errors else ""
                cells += [fmt(value) + flag, fmt(r, 2)]
            rel = div(iops.get((rnd, "troika", n)), iops.get((rnd, "nbdkit-null", n)))
            print(f"| {rnd} | {n} | {' | '.join(cells)} | {fmt(rel, 2)} |")
    if len(rounds) > 1:
        for n in conns_list:
            cells = []
            for target in targets:
                cells += [fmt(median(per[(target, n)])), fmt(median(ratios[(target, n)]), 2)]
            rel = div(median(per[("troika", n)]), median(per[("nbdkit-null", n)]))
            print(f"| **median** | {n} | {' | '.join(cells)} | {fmt(rel, 2)} |")
    print()
    print(
        f"N/1 = aggregate IOPS at N connections / IOPS at {conns_list[0] if conns_list else 1} "
        "connection, same target, same round (the median row: median of the per-round ratios)."
    )
    if conns_list:
        top = conns_list[-1]
        t = median(ratios[("troika", top)])
        k = median(ratios[("nbdkit-null", top)])
        if t is not None and k is not None:
            verdict = "met" if t > k else "NOT met"
            print(
                f"{top}/{conns_list[0]} connections: troika {t:.2f}, nbdkit null {k:.2f}; "
                f"requirement (troika loses less than nbdkit null going from {conns_list[0]} to "
                f"{top} connections, i.e. a higher ratio) {verdict}"
                + (
                    " (one round: on a busy machine single runs move by 2x; CURVE_ROUNDS=3 "
                    "gives medians)."
                    if len(rounds) == 1
                    else "."
                )
            )
    print()
    return bool(errors)


def main(argv):
    if len(argv) == 4 and argv[1] in ("latency", "curve"):
        failed = (latency if argv[1] == "latency" else curve)(argv[2], argv[3])
        return 1 if failed else 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
