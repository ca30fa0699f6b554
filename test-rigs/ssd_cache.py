"""The measurements of ssd-cache.sh (see its header); run through it, not alone.

Part 1, on the hardware-in-the-loop model (SSD 80 us reads, HDD 4 ms seek plus rotation):
  a hot volume of SET bytes (SSD cache enabled) and a cold one of the same size
  (`ssd_enabled: false`, so its reads always go to the drives once out of DRAM). Both are
  written, destaged, then the hot set is warmed by random reads. Then 4k random reads at
  qd1 on each: the share of blocks found in DRAM, in the SSD cache and on the drives (the
  node's own per-volume counters), and fio's latency percentiles, side by side.
Part 2, warm restart: the node is killed (-9) and started again; the hot set's hit ratio in
  the first WARM_CHECK seconds of reads after the restart against the ratio before.
Part 3, scan resistance, on a plain-file model with a small SSD cache: the hot set's hit
  ratio (DRAM + SSD) alone, then while a sequential read of 10x the SSD cache runs.
The DRAM index cost per cached block is read from /metrics.
"""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from unix_http import UnixHTTP  # noqa: E402

TROIKA = os.environ["TROIKA"]
WORK = os.environ["WORK"]
REPO = os.environ["REPO"]


def size_bytes(text):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    text = text.strip().upper()
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


SET = size_bytes(os.environ.get("SET", "1G"))
WARM_SECONDS = int(os.environ.get("WARM_SECONDS", "120"))
MEASURE_SECONDS = int(os.environ.get("MEASURE_SECONDS", "20"))
WARM_CHECK = int(os.environ.get("WARM_CHECK", "10"))
MODEL = os.environ.get("MODEL", os.path.join(REPO, "hw/sim-hil.toml"))


class Node:
    def __init__(self, name, model):
        self.data = os.path.join(WORK, name)
        self.model = model
        self.log = os.path.join(WORK, f"{name}.log")
        self.proc = None
        os.makedirs(self.data, exist_ok=True)

    def start(self):
        for f in ("troika.sock", "nbd.sock"):
            try:
                os.unlink(os.path.join(self.data, f))
            except FileNotFoundError:
                pass
        out = open(self.log, "a")
        started = time.time()
        self.proc = subprocess.Popen(
            [TROIKA, "serve", "--hw", self.model, "--data", self.data, "--nbd-listen", "none",
             "--mgmt-listen", "none", "--iscsi-listen", "none"], stdout=out, stderr=out)
        deadline = time.time() + 300
        while time.time() < deadline:
            if all(os.path.exists(os.path.join(self.data, s)) for s in ("troika.sock", "nbd.sock")):
                return time.time() - started
            if self.proc.poll() is not None:
                sys.exit(f"troika exited:\n{self.log_text()[-3000:]}")
            time.sleep(0.05)
        sys.exit(f"troika did not come up in 300 s:\n{self.log_text()[-3000:]}")

    def stop(self, kill=False):
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def log_text(self):
        with open(self.log) as f:
            return f.read()

    def request(self, method, target, body=None):
        conn = UnixHTTP(os.path.join(self.data, "troika.sock"))
        payload = json.dumps(body) if body is not None else None
        conn.request(method, target, body=payload, headers={"Content-Type": "application/json"})
        answer = conn.getresponse()
        text = answer.read().decode()
        if answer.status >= 300:
            sys.exit(f"{method} {target}: {answer.status} {text}")
        return text

    def rest(self, method, target, body=None):
        text = self.request(method, target, body)
        return json.loads(text)["result"] if text else None

    def metrics(self):
        """{(name, labels text): value} of /metrics."""
        samples = {}
        for line in self.request("GET", "/metrics").splitlines():
            match = re.match(r"^([a-z_]+)(\{[^}]*\})? (\S+)$", line)
            if match:
                samples[(match.group(1), match.group(2) or "")] = float(match.group(3))
        return samples

    def volume_sources(self, volume):
        """[dram, ssd, drives] blocks read so far from `volume`."""
        found = self.metrics()
        return [sum(v for (name, labels), v in found.items()
                    if name == "troika_volume_read_blocks_total" and f'volume="{volume}"' in labels
                    and f'source="{source}"' in labels) for source in ("dram", "ssd", "drives")]

    def uri(self, volume):
        return f"nbd+unix:///{volume}?socket={self.data}/nbd.sock"

    def wait_destaged(self, timeout=900):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.metrics().get(("troika_cache_dirty_bytes", ""), 1) == 0:
                return
            time.sleep(0.5)
        sys.exit("the cache did not destage in time")


def fio_json(args, timeout):
    out = subprocess.run(["timeout", str(timeout), "fio", "--output-format=json", *args],
                         capture_output=True, text=True, cwd=WORK)
    if out.returncode != 0:
        sys.exit(f"fio failed: {out.stdout[-2000:]}{out.stderr[-2000:]}")
    return json.loads(out.stdout[out.stdout.index("{"):])


def fill(node, volume, size):
    fio_json(["--name=fill", "--ioengine=nbd", f"--uri={node.uri(volume)}", "--rw=write", "--bs=1M",
              "--iodepth=8", f"--size={size}"], 3600)


def randread(node, volume, size, seconds, depth, percentiles=False):
    args = ["--name=rr", "--ioengine=nbd", f"--uri={node.uri(volume)}", "--rw=randread", "--bs=4k",
            f"--iodepth={depth}", f"--size={size}", "--time_based", f"--runtime={seconds}",
            "--norandommap", f"--randseed={int(time.time() * 1000) % 1000003}"]
    if percentiles:
        args.append("--percentile_list=50:90:99:99.9")
    return fio_json(args, seconds + 300)["jobs"][0]["read"]


def shares(before, after):
    delta = [a - b for a, b in zip(after, before)]
    total = sum(delta) or 1
    return [d / total for d in delta], sum(delta)


def make_volumes(node, names_and_ssd, size):
    pool = node.rest("POST", "/api/rest/pools", {"name": "P", "physical_capacity": size * len(names_and_ssd) + (256 << 20)})
    for name, ssd in names_and_ssd:
        node.rest("POST", "/api/rest/volumes", {"name": name, "pool_id": pool["id"], "size": size, "ssd_enabled": ssd})


def percentile_row(label, read, split):
    pct = read["clat_ns"]["percentile"]
    us = lambda key: pct[key] / 1e3  # noqa: E731
    return (f"| {label} | {read['iops']:.0f} | {us('50.000000'):.0f} | {us('90.000000'):.0f} | "
            f"{us('99.000000'):.0f} | {us('99.900000'):.0f} | {split[0] * 100:.1f}% | {split[1] * 100:.1f}% | "
            f"{split[2] * 100:.1f}% |")


def part_hit_ratio_and_latency():
    node = Node("hil", MODEL)
    node.start()
    make_volumes(node, [("hot", True), ("cold", False)], SET)
    started = time.time()
    fill(node, "hot", SET)
    fill(node, "cold", SET)
    node.wait_destaged()
    print(f"  wrote and destaged 2 x {SET >> 20} MiB in {time.time() - started:.0f} s", file=sys.stderr)
    started = time.time()
    warm = randread(node, "hot", SET, WARM_SECONDS, 32)
    print(f"  warm-up: {warm['iops']:.0f} IOPS over {time.time() - started:.0f} s", file=sys.stderr)
    rows = []
    ratios = {}
    for volume in ("hot", "cold"):
        before = node.volume_sources(volume)
        read = randread(node, volume, SET, MEASURE_SECONDS, 1, percentiles=True)
        split, blocks = shares(before, node.volume_sources(volume))
        ratios[volume] = split
        rows.append(percentile_row(f"{volume} ({'SSD cache on' if volume == 'hot' else 'ssd_enabled false'})", read, split))
    index = node.metrics().get(("troika_ssd_cache_index_bytes_per_block", ""), float("nan"))
    cached = sum(v for (name, _), v in node.metrics().items() if name == "troika_ssd_cache_cached_bytes")
    print(f"\n## 1. {SET >> 20} MiB random read set on {os.path.basename(MODEL)}: 4k reads at qd1, {MEASURE_SECONDS} s each\n")
    print("| volume | IOPS | p50 µs | p90 µs | p99 µs | p99.9 µs | DRAM | SSD | drives |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|")
    for row in rows:
        print(row)
    hot = ratios["hot"]
    print(f"\nDRAM+SSD hit ratio of the hot set: {(hot[0] + hot[1]) * 100:.1f}%; SSD cache holds "
          f"{cached / (1 << 20):.0f} MiB; index {index:.1f} B of DRAM per cached block")

    # Part 2: warm restart after kill -9.
    node.stop(kill=True)
    ready = node.start()
    before = node.volume_sources("hot")
    randread(node, "hot", SET, WARM_CHECK, 32)
    split, blocks = shares(before, node.volume_sources("hot"))
    restored = re.findall(r"SSD read cache[^\n]*", node.log_text())
    print(f"\n## 2. Warm restart (kill -9, then {WARM_CHECK} s of 4k random reads at qd32 on the hot set)\n")
    print(f"- node ready {ready:.1f} s after start; {restored[-1] if restored else 'no SSD cache line in the log'}")
    before_ratio = hot[0] + hot[1]
    after_ratio = split[0] + split[1]
    print(f"- hit ratio before {before_ratio * 100:.1f}%, in the first {WARM_CHECK} s after: {after_ratio * 100:.1f}% "
          f"(DRAM {split[0] * 100:.1f}%, SSD {split[1] * 100:.1f}%, {blocks:.0f} blocks) = "
          f"{after_ratio / before_ratio * 100:.0f}% of before")
    node.stop()


SCAN_MODEL = """name = "rig-scan"
controllers = 3
dram_per_controller = "16M"

[stripe]
data = 4
parity = 2
unit = "64K"
rows_per_segment = 16

[[ssd]]
name = "ssd0"
path = "ssd0.img"
size = "1G"

[[ssd]]
name = "ssd1"
path = "ssd1.img"
size = "{cache}"
role = "cache"

""" + "".join(f"""[[nlsas]]
name = "nlsas{i}"
path = "nlsas{i}.img"
size = "2G"

""" for i in range(6))


def hot_ratio(node, seconds):
    before = node.volume_sources("hot")
    randread(node, "hot", HOT_SCAN, seconds, 4)
    split, _ = shares(before, node.volume_sources("hot"))
    return split[0] + split[1]


CACHE_SCAN = size_bytes(os.environ.get("SCAN_CACHE", "256M"))
HOT_SCAN = CACHE_SCAN // 2


def part_scan():
    path = os.path.join(WORK, "scan.toml")
    with open(path, "w") as f:
        f.write(SCAN_MODEL.format(cache=f"{CACHE_SCAN >> 20}M"))
    node = Node("scan", path)
    node.start()
    scan_size = 10 * CACHE_SCAN
    pool = node.rest("POST", "/api/rest/pools", {"name": "P", "physical_capacity": scan_size + HOT_SCAN + (256 << 20)})
    node.rest("POST", "/api/rest/volumes", {"name": "hot", "pool_id": pool["id"], "size": HOT_SCAN})
    node.rest("POST", "/api/rest/volumes", {"name": "scan", "pool_id": pool["id"], "size": scan_size})
    fill(node, "hot", HOT_SCAN)
    fill(node, "scan", scan_size)
    node.wait_destaged()
    randread(node, "hot", HOT_SCAN, 30, 16)
    alone = hot_ratio(node, 15)
    scan_done = threading.Event()

    def scan():
        fio_json(["--name=scan", "--ioengine=nbd", f"--uri={node.uri('scan')}", "--rw=read", "--bs=1M",
                  "--iodepth=4", f"--size={scan_size}"], 1800)
        scan_done.set()

    scanner = threading.Thread(target=scan)
    started = time.time()
    before = node.volume_sources("hot")
    scanner.start()
    while not scan_done.is_set() and time.time() - started < 1800:
        randread(node, "hot", HOT_SCAN, 3, 4)
    scanner.join()
    split, _ = shares(before, node.volume_sources("hot"))
    during = split[0] + split[1]
    bypassed = node.metrics().get(("troika_ssd_cache_bypassed_total", ""), float("nan"))
    print(f"\n## 3. Scan resistance ({HOT_SCAN >> 20} MiB hot set, 4k random reads qd4; SSD cache "
          f"{CACHE_SCAN >> 20} MiB, DRAM 48 MiB; sequential 1M reads of {scan_size >> 20} MiB)\n")
    print(f"- hot set DRAM+SSD hit ratio alone: {alone * 100:.1f}%; during the scan: {during * 100:.1f}% "
          f"({(alone - during) * 100:+.1f} points lost); scan took {time.time() - started:.0f} s; "
          f"{bypassed:.0f} blocks bypassed the SSD cache")
    node.stop()


if __name__ == "__main__":
    parts = os.environ.get("PARTS", "1 3").split()
    if "1" in parts:
        part_hit_ratio_and_latency()
    if "3" in parts:
        part_scan()
