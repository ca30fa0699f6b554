#!/usr/bin/env python3
"""Snapshot benchmark (issue 5): what snapshots cost, measured in one run on one node.

Sections (SECTIONS env, default all, in this order):
  create   snapshot creation time, p50/p99 over N snapshots (SNAPS, default 2000), of a 1 GiB volume
           written whole and of a 1 TiB thin volume with 20 GiB written (WRITTEN_GIB);
           the two alternate, so both see the same machine.
  many     10,000 snapshots (MANY) of one 4 GiB volume (MANY_GIB), taken while a few blocks change
           between batches; then 4k random read and write IOPS (fio, nbd engine, iodepth 16)
           on that live volume and on a twin volume with no snapshots, both at once (one
           fio job each) for ROUNDS rounds; metadata memory per snapshot from the node's RSS
           and map bytes.
           The snapshots stay (DELETE_MANY=1 times deleting them all).
  restore  restore time of a 100 GiB thin volume and of a 1 GiB one, each from a snapshot
           taken before 256 MiB of it was overwritten; the data is checked after each.
  delete   deleting a snapshot that alone holds 10 GiB (UNIQUE_GIB): the pool's allocated
           space before and after, and the time until it is back, with 4k random read IOPS of
           another volume (BUSY_GIB, default 4 GiB, above the DRAM cache) logged every 50 ms
           by fio while idle, during the DELETE and the reclaim, and in the 2 s after it.

The node runs hw/bench-snap.toml in a temporary directory. Prints one table per section
and a JSON summary line at the end. Timings on a shared machine are noisy: compare figures
taken in the same run, side by side.
"""

import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from unix_http import UnixHTTP  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TROIKA = os.environ.get("TROIKA", os.path.join(REPO, "target/release/troika"))
HW = os.path.join(REPO, "hw/bench-snap.toml")
SECTIONS = os.environ.get("SECTIONS", "create many restore delete").split()
SNAPS = int(os.environ.get("SNAPS", "2000"))
WRITTEN_GIB = int(os.environ.get("WRITTEN_GIB", "20"))
MANY = int(os.environ.get("MANY", "10000"))
ROUNDS = int(os.environ.get("ROUNDS", "4"))
RUNTIME = int(os.environ.get("RUNTIME", "8"))
UNIQUE_GIB = int(os.environ.get("UNIQUE_GIB", "10"))
# The volume read while a snapshot's space is reclaimed (the "delete" section).
BUSY_GIB = int(os.environ.get("BUSY_GIB", "4"))
# Size of the two volumes of the "many" section. Larger than the node's DRAM cache (3 x
# 512 MiB), random reads miss the cache in every round, so the map lookups are measured
# rather than which volume the cache happened to keep.
MANY_GIB = int(os.environ.get("MANY_GIB", "4"))
GIB = 1 << 30


class Node:
    def __init__(self, data):
        self.data = data
        self.log = open(os.path.join(data, "serve.log"), "ab")
        self.proc = subprocess.Popen(
            [TROIKA, "serve", "--hw", HW, "--data", data, "--nbd-listen", "none",
             "--mgmt-listen", "none"],
            stdout=self.log, stderr=self.log)
        deadline = time.time() + 120
        while not (os.path.exists(self.sock("troika.sock")) and os.path.exists(self.sock("nbd.sock"))):
            if time.time() > deadline or self.proc.poll() is not None:
                raise SystemExit("troika did not come up; see " + os.path.join(data, "serve.log"))
            time.sleep(0.1)
        self.conn = UnixHTTP(self.sock("troika.sock"))

    def sock(self, name):
        return os.path.join(self.data, name)

    def uri(self, export):
        return f"nbd+unix:///{export}?socket={self.sock('nbd.sock')}"

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body)
        headers = {"content-type": "application/json"} if data is not None else {}
        try:
            self.conn.request(method, path, body=data, headers=headers)
            response = self.conn.getresponse()
            text = response.read()
        except (http.client.HTTPException, OSError):
            self.conn.close()
            self.conn = UnixHTTP(self.sock("troika.sock"))
            self.conn.request(method, path, body=data, headers=headers)
            response = self.conn.getresponse()
            text = response.read()
        answer = json.loads(text)
        if response.status >= 300:
            raise RuntimeError(f"{method} {path}: {response.status} {answer.get('error')}")
        return answer["result"]

    def timed(self, method, path, body=None):
        started = time.perf_counter()
        result = self.call(method, path, body)
        return result, (time.perf_counter() - started) * 1000

    def rss_bytes(self):
        with open(f"/proc/{self.proc.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def metric(self, name):
        self.conn.request("GET", "/metrics")
        response = self.conn.getresponse()
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return 0.0

    def dirty_bytes(self):
        return sum(c["dirty_bytes"] + c["mirror_bytes"] for c in self.call("GET", "/api/rest/controllers"))

    def settle(self, limit=300):
        deadline = time.time() + limit
        while self.dirty_bytes() > 0 and time.time() < deadline:
            time.sleep(0.5)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def fio(uri, rw, runtime, size=None, bs="4k", iodepth=16, extra=()):
    cmd = ["fio", "--name=job", "--ioengine=nbd", f"--uri={uri}", f"--rw={rw}", f"--bs={bs}",
           f"--iodepth={iodepth}", "--output-format=json", "--group_reporting"]
    if runtime:
        cmd += [f"--runtime={runtime}", "--time_based", "--ramp_time=1"]
    if size:
        cmd += [f"--size={size}"]
    cmd += list(extra)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    job = json.loads(out[out.index("{"):])["jobs"][0]
    return job


def fio_side_by_side(uris, rw, runtime, size, bs="4k", iodepth=16):
    """One fio run with a job per volume, all started together: each job meets the same
    machine, drives and host caches at the same moment. Returns each job's IOPS."""
    cmd = ["fio", "--ioengine=nbd", f"--rw={rw}", f"--bs={bs}", f"--iodepth={iodepth}",
           f"--size={size}", f"--runtime={runtime}", "--time_based", "--ramp_time=1",
           "--output-format=json"]
    for name, uri in uris:
        cmd += [f"--name={name}", f"--uri={uri}"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    jobs = json.loads(out[out.index("{"):])["jobs"]
    return {job["jobname"]: iops(job) for job in jobs}


def iops(job):
    return job["read"]["iops"] + job["write"]["iops"]


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def table(title, header, rows):
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(str(cell) for cell in row) + " |")
    sys.stdout.flush()


def volume(node, pool, name, size):
    return node.call("POST", "/api/rest/volumes", {"name": name, "pool_id": pool, "size": size})["id"]


def delete(node, vid):
    node.call("DELETE", f"/api/rest/volumes/{vid}?approved=true")


def wait_pool(node, pool, below, limit=600):
    deadline = time.time() + limit
    while time.time() < deadline:
        allocated = node.call("GET", f"/api/rest/pools/{pool}")["allocated_physical_space"]
        if allocated <= below:
            return allocated
        time.sleep(0.05)
    return node.call("GET", f"/api/rest/pools/{pool}")["allocated_physical_space"]


def section_create(node, pool, summary):
    small = volume(node, pool, "small", GIB)
    big = volume(node, pool, "big", 1 << 40)
    fio(node.uri("small"), "write", 0, size="1G", bs="1M", iodepth=8)
    fio(node.uri("big"), "write", 0, size=f"{WRITTEN_GIB}G", bs="1M", iodepth=8)
    node.settle()
    times = {"small": [], "big": []}
    for index in range(SNAPS):
        for name, vid in (("small", small), ("big", big)):
            _, ms = node.timed("POST", "/api/rest/volumes",
                               {"name": f"{name}-s{index}", "parent_id": vid})
            times[name].append(ms)
    rows = []
    for name, label in (("small", "1 GiB volume, 1 GiB written"),
                        ("big", f"1 TiB thin volume, {WRITTEN_GIB} GiB written")):
        values = times[name]
        rows.append([label, len(values), f"{statistics.median(values):.2f}", f"{pct(values, 99):.2f}",
                     f"{max(values):.2f}"])
        summary[f"create_{name}_p50_ms"] = statistics.median(values)
        summary[f"create_{name}_p99_ms"] = pct(values, 99)
    ratio = summary["create_big_p99_ms"] / summary["create_small_p99_ms"]
    rows.append(["big/small p99 ratio", "", "", f"{ratio:.2f}", ""])
    summary["create_p99_ratio"] = ratio
    table("Snapshot creation (REST call round trip, ms)", ["volume", "snapshots", "p50", "p99", "max"], rows)
    for index in range(SNAPS):
        for name in ("small", "big"):
            snap = node.call("GET", f"/api/rest/volumes?name=eq:{name}-s{index}")[0]
            delete(node, snap["id"])
    delete(node, big)
    delete(node, small)
    wait_pool(node, pool, 0)


def section_many(node, pool, summary):
    live = volume(node, pool, "live", MANY_GIB * GIB)
    twin = volume(node, pool, "twin", MANY_GIB * GIB)
    # Filled in alternating 256 MiB pieces, so both volumes' blocks lie alike across
    # the drives' segments (filled one after the other, the second one sat in later
    # segments and in fresher host caches, which the IOPS below would then compare).
    piece = 256 << 20
    for offset in range(0, MANY_GIB * GIB, piece):
        for name in ("live", "twin"):
            fio(node.uri(name), "write", 0, size=piece, bs="1M", iodepth=8,
                extra=(f"--offset={offset}",))
    node.settle()
    rss_before = node.rss_bytes()
    maps_before = node.metric("troika_map_bytes")
    started = time.time()
    create_ms = []
    for index in range(MANY):
        _, ms = node.timed("POST", "/api/rest/volumes", {"name": f"m{index}", "parent_id": live})
        create_ms.append(ms)
        if index % 500 == 499:
            # A few blocks change between batches: the snapshots do not all share one tree.
            fio(node.uri("live"), "randwrite", 0, size=f"{MANY_GIB}G", bs="4k", iodepth=4,
                extra=("--number_ios=256", f"--randseed={index}"))
    took = time.time() - started
    node.settle()
    rss_after = node.rss_bytes()
    maps_after = node.metric("troika_map_bytes")
    per_snapshot = (rss_after - rss_before) / MANY
    rows = []
    results = {"live": {"randread": [], "randwrite": []}, "twin": {"randread": [], "randwrite": []}}
    # Both volumes run at once, each with its own fio job at the same queue depth: run one
    # after the other, the virtual disks' and host caches' swings between runs (up to 30%
    # here) outweighed any difference the snapshots make. At once, a volume whose path
    # cost more would get the smaller share.
    for _ in range(ROUNDS):
        for rw in ("randread", "randwrite"):
            pair = fio_side_by_side([(name, node.uri(name)) for name in ("live", "twin")],
                                    rw, RUNTIME, f"{MANY_GIB}G")
            for name in ("live", "twin"):
                results[name][rw].append(pair[name])
    for rw in ("randread", "randwrite"):
        with_snaps = sum(results["live"][rw]) / len(results["live"][rw])
        without = sum(results["twin"][rw]) / len(results["twin"][rw])
        rows.append([rw, f"{with_snaps:,.0f}", f"{without:,.0f}", f"{with_snaps / without:.3f}",
                     " / ".join(f"{a:,.0f}:{b:,.0f}" for a, b in zip(results["live"][rw], results["twin"][rw]))])
        summary[f"many_{rw}_ratio"] = with_snaps / without
    table(f"4k IOPS, iodepth 16 each, both volumes at once, {ROUNDS} rounds x {RUNTIME} s: a volume with {MANY} snapshots vs one with none",
          ["test", f"{MANY} snapshots (mean)", "no snapshots (mean)", "ratio", "per round (snaps:none)"], rows)
    table("Taking them", ["snapshots", "total s", "p50 ms", "p99 ms", "RSS growth", "RSS per snapshot",
                          "map bytes growth", "map bytes per snapshot"],
          [[MANY, f"{took:.1f}", f"{statistics.median(create_ms):.2f}", f"{pct(create_ms, 99):.2f}",
            f"{(rss_after - rss_before) / 2**20:.1f} MiB", f"{per_snapshot:,.0f}",
            f"{(maps_after - maps_before) / 2**20:.1f} MiB", f"{(maps_after - maps_before) / MANY:,.0f}"]])
    summary["many_map_bytes_per_snapshot"] = (maps_after - maps_before) / MANY
    summary["many_bytes_per_snapshot"] = per_snapshot
    summary["many_create_p99_ms"] = pct(create_ms, 99)
    delete(node, twin)
    if os.environ.get("DELETE_MANY"):
        # Off unless asked for: the later sections then run beside 10,000 snapshots.
        started = time.time()
        delete_ms = []
        for index in range(MANY):
            _, ms = node.timed("DELETE", f"/api/rest/volumes/{live + 2 + index}?approved=true")
            delete_ms.append(ms)
        took = time.time() - started
        delete(node, live)
        wait_pool(node, pool, 0)
        reclaimed = time.time() - started
        table("Deleting them", ["snapshots", "DELETE calls s", "p50 ms", "p99 ms", "until the pool is empty s"],
              [[MANY, f"{took:.1f}", f"{statistics.median(delete_ms):.2f}", f"{pct(delete_ms, 99):.2f}",
                f"{reclaimed:.1f}"]])
        summary["many_delete_s"] = took


def section_restore(node, pool, summary):
    rows = []
    for name, size in (("r100g", 100 * GIB), ("r1g", GIB)):
        vid = volume(node, pool, name, size)
        fio(node.uri(name), "write", 0, size="256M", bs="1M", iodepth=8,
            extra=("--verify=crc32c", "--do_verify=0", "--verify_state_save=0", "--randseed=7"))
        snap = node.call("POST", "/api/rest/volumes", {"name": f"{name}-snap", "parent_id": vid})["id"]
        fio(node.uri(name), "write", 0, size="256M", bs="1M", iodepth=8, extra=("--buffer_pattern=0x5a",))
        _, ms = node.timed("POST", f"/api/rest/volumes/{vid}/restore?approved=true", snap)
        check = subprocess.run(
            ["fio", "--name=job", "--ioengine=nbd", f"--uri={node.uri(name)}", "--rw=write", "--bs=1M",
             "--size=256M", "--iodepth=8", "--verify=crc32c", "--verify_only", "--randseed=7",
             "--verify_state_load=0", "--output-format=json"],
            capture_output=True, text=True)
        verified = "yes" if check.returncode == 0 else f"NO ({check.stderr.strip()[:80]})"
        rows.append([f"{size // GIB} GiB", f"{ms:.2f}", verified])
        summary[f"restore_{name}_ms"] = ms
        delete(node, snap)
        delete(node, vid)
    table("Restore (REST call round trip)", ["volume", "ms", "data is the snapshot's"], rows)
    wait_pool(node, pool, 0)


def section_delete(node, pool, summary):
    holder = volume(node, pool, "holder", (UNIQUE_GIB + 1) * GIB)
    # Larger than the DRAM cache, so its random reads keep missing and looking the map up
    # (what the reclaim could slow down), and its IOPS do not climb as the cache warms.
    busy = volume(node, pool, "busy", BUSY_GIB * GIB)
    fio(node.uri("busy"), "write", 0, size=f"{BUSY_GIB}G", bs="1M", iodepth=8)
    fio(node.uri("holder"), "write", 0, size=f"{UNIQUE_GIB}G", bs="1M", iodepth=8)
    snap = node.call("POST", "/api/rest/volumes", {"name": "holder-snap", "parent_id": holder})["id"]
    fio(node.uri("holder"), "write", 0, size=f"{UNIQUE_GIB}G", bs="1M", iodepth=8, extra=("--buffer_pattern=0x77",))
    node.settle()
    unique = node.call("GET", f"/api/rest/volumes/{snap}")["unique_size"]
    before = node.call("GET", f"/api/rest/pools/{pool}")["allocated_physical_space"]

    # One fio run across idle, the DELETE and the reclaim, logging IOPS every 50 ms. "Idle"
    # is the RUNTIME seconds before the DELETE (after RUNTIME seconds of warm-up); "during"
    # every sample whose window overlaps the DELETE call and the reclaim; "after" the
    # 2 seconds from the DELETE.
    log_prefix = os.path.join(node.data, "reclaim")
    interval = 0.05
    proc = subprocess.Popen(
        ["fio", "--name=job", "--ioengine=nbd", f"--uri={node.uri('busy')}", "--rw=randread", "--bs=4k",
         "--iodepth=16", f"--size={BUSY_GIB}G", "--runtime=600", "--time_based",
         f"--write_iops_log={log_prefix}", f"--log_avg_msec={int(interval * 1000)}", "--output-format=json"],
        stdout=subprocess.PIPE, text=True)
    fio_started = time.time()
    time.sleep(2 * RUNTIME)
    # What else the node did around the DELETE (checkpoints, rows written by destage or
    # the cleaner) goes into the summary: candidates for a dip that outlasts the reclaim.
    watched = ("troika_checkpoints_total", "troika_media_rows_written_total")
    counters_before = {name: node.metric(name) for name in watched}
    deleted_at = time.time()
    delete(node, snap)
    after = wait_pool(node, pool, before - unique + (64 << 20), limit=600)
    reclaimed_at = time.time()
    reclaim_s = reclaimed_at - deleted_at
    time.sleep(3)
    counters = {name: node.metric(name) - counters_before[name] for name in watched}
    proc.terminate()
    proc.communicate()
    samples = []
    with open(log_prefix + "_iops.1.log") as log:
        for line in log:
            fields = [field.strip() for field in line.split(",")]
            samples.append((fio_started + int(fields[0]) / 1000, float(fields[1])))
    idle_samples = [value for at, value in samples if deleted_at - RUNTIME < at <= deleted_at]
    during_samples = [value for at, value in samples
                      if at > deleted_at and at - interval < reclaimed_at]
    after_samples = [value for at, value in samples if deleted_at < at <= deleted_at + 2]
    idle = statistics.mean(idle_samples) if idle_samples else 0.0
    during = statistics.mean(during_samples) if during_samples else 0.0
    after_two = statistics.mean(after_samples) if after_samples else 0.0
    rows = [[f"{unique / GIB:.2f} GiB", f"{before / GIB:.2f} GiB", f"{after / GIB:.2f} GiB", f"{reclaim_s:.2f}",
             f"{idle:,.0f}", f"{during:,.0f} ({len(during_samples)} samples)", f"{during / idle:.2f}",
             f"{after_two:,.0f}", f"{after_two / idle:.2f}"]]
    table(f"Deleting a snapshot that alone holds the space (4k randread iodepth 16 on another, {BUSY_GIB} GiB "
          "volume; IOPS per 50 ms, means)",
          ["unique", "pool before", "pool after", "reclaim s (DELETE to space back)", f"idle IOPS ({RUNTIME} s before)",
           "IOPS during DELETE + reclaim", "ratio", "IOPS in the 2 s from the DELETE", "ratio"], rows)
    summary.update(delete_unique_gib=unique / GIB, delete_reclaim_s=reclaim_s,
                   delete_iops_ratio=during / idle, delete_iops_2s_ratio=after_two / idle,
                   delete_samples=len(during_samples),
                   delete_checkpoints=counters["troika_checkpoints_total"],
                   delete_media_rows_written=counters["troika_media_rows_written_total"])
    delete(node, holder)
    delete(node, busy)


def main():
    for tool in ("fio",):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is needed")
    data = tempfile.mkdtemp(prefix="troika-snapbench.")
    node = Node(data)
    summary = {}
    try:
        system = node.call("GET", "/api/rest/system")
        pool = node.call("POST", "/api/rest/pools",
                         {"name": "bench", "physical_capacity": system["free_physical_capacity"] // GIB * GIB,
                          "virtual_capacity": 4 << 40})["id"]
        for section in SECTIONS:
            {"create": section_create, "many": section_many, "restore": section_restore,
             "delete": section_delete}[section](node, pool, summary)
        print("\nsummary " + json.dumps(summary, sort_keys=True))
    finally:
        node.stop()
        if os.environ.get("KEEP"):
            print("data kept in", data)
        else:
            shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
