"""The measurements of raid-rebuild.sh (see its header); run through it, not alone.

Starts `troika serve` nodes on generated models under $WORK, fills a volume with blocks that
name their LBA (a small NBD client here: magic + LBA at the start of every 4 KiB), fails a
drive with injected read EIO, and reads the rebuild time from the node's own log line
(`troika: rebuilt drive I (NAME): BYTES bytes in SECONDS s`).
"""

import json
import os
import re
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from unix_http import UnixHTTP  # noqa: E402

TROIKA = os.environ["TROIKA"]
WORK = os.environ["WORK"]
BLOCK = 4096
MAGIC = b"RAIDRIG!"
UNIT = 64 * 1024


def size_bytes(text):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    text = text.strip().upper()
    if text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


DATA = size_bytes(os.environ.get("DATA", "4G"))
DRIVE_COUNTS = [int(n) for n in os.environ.get("DRIVES", "12 24 48").split()]
ROUND_SECONDS = int(os.environ.get("ROUND_SECONDS", "5"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
SAMPLE = int(os.environ.get("SAMPLE", "200"))
HDD = '{ kind = "hdd", seek_us = 4000, rpm = 7200 }'


def mib(n):
    return f"{n >> 20}M"


def model(name, drives, latency):
    """An 8+2 model over `drives` NL-SAS sparse files with two drives' worth of spare."""
    # Room for DATA at 8/10 over N-2 drives' worth of data columns, doubled, in 64M steps.
    per_drive = max(256 << 20, -(-2 * DATA // (drives - 2) * 10 // 8 // (64 << 20)) * (64 << 20))
    lines = [
        f'name = "rig-{name}"',
        "controllers = 3",
        'dram_per_controller = "64M"',
        "",
        "[stripe]",
        "data = 8",
        "parity = 2",
        'unit = "64K"',
        "rows_per_segment = 16",
        "spare_drives = 2",
        "",
        "[[ssd]]",
        'name = "ssd0"',
        'path = "ssd0.img"',
        'size = "2G"',
    ]
    if latency:
        lines.append('latency = { kind = "ssd", read_us = 80, write_us = 30 }')
    for i in range(drives):
        lines += ["", "[[nlsas]]", f'name = "nlsas{i}"', f'path = "nlsas{i}.img"', f'size = "{mib(per_drive)}"']
        if latency:
            lines.append(f"latency = {HDD}")
    path = os.path.join(WORK, f"{name}.toml")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path, per_drive


class Node:
    def __init__(self, name, model_path):
        self.data = os.path.join(WORK, name)
        self.model = model_path
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
        self.proc = subprocess.Popen(
            [TROIKA, "serve", "--hw", self.model, "--data", self.data, "--nbd-listen", "none",
             "--mgmt-listen", "none", "--iscsi-listen", "none"],
            stdout=out, stderr=out)
        deadline = time.time() + 120
        while time.time() < deadline:
            if all(os.path.exists(os.path.join(self.data, s)) for s in ("troika.sock", "nbd.sock")):
                return
            if self.proc.poll() is not None:
                sys.exit(f"troika exited:\n{open(self.log).read()[-3000:]}")
            time.sleep(0.1)
        sys.exit(f"troika did not come up in 120 s:\n{open(self.log).read()[-3000:]}")

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

    def restart(self):
        self.stop()
        self.start()

    def cli(self, *args):
        subprocess.run([TROIKA, "--data", self.data, *args], check=True, stdout=subprocess.DEVNULL, timeout=300)

    def rest(self, method, target, body=None):
        conn = UnixHTTP(os.path.join(self.data, "troika.sock"))
        payload = json.dumps(body) if body is not None else None
        conn.request(method, target, body=payload, headers={"Content-Type": "application/json"})
        answer = conn.getresponse()
        text = answer.read().decode()
        if answer.status >= 300:
            sys.exit(f"{method} {target}: {answer.status} {text}")
        return json.loads(text) if text else None

    def fault(self, body):
        self.rest("POST", "/api/rest/faults?approved=true", body)

    def clear_faults(self):
        self.rest("DELETE", "/api/rest/faults?approved=true")

    def uri(self, volume):
        return f"nbd+unix:///{volume}?socket={self.data}/nbd.sock"

    def log_text(self):
        with open(self.log) as f:
            return f.read()

    def rebuilt(self, drive):
        """(bytes, seconds) of the node's `rebuilt drive` line for `drive`, if logged."""
        found = re.findall(rf"troika: rebuilt drive {drive} \(nlsas{drive}\): (\d+) bytes in ([0-9.]+) s",
                           self.log_text())
        return (int(found[-1][0]), float(found[-1][1])) if found else None

    def wait_rebuilt(self, drive, timeout=3600):
        deadline = time.time() + timeout
        while time.time() < deadline:
            done = self.rebuilt(drive)
            if done:
                return done
            time.sleep(0.2)
        sys.exit(f"drive {drive} not rebuilt in {timeout} s:\n{self.log_text()[-3000:]}")

    def wait_failed(self, drive, timeout=300):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if f"drive {drive} (nlsas{drive}) failed" in self.log_text():
                return
            time.sleep(0.1)
        sys.exit(f"drive {drive} did not fail in {timeout} s")


class Nbd:
    """A minimal NBD client (fixed newstyle, NBD_OPT_GO, simple replies)."""

    def __init__(self, path, export):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(600)
        self.s.connect(path)
        self.cookie = 0
        hello = self.recv(18)
        assert hello[:16] == b"NBDMAGICIHAVEOPT", hello
        self.s.sendall(struct.pack(">I", 3))
        name = export.encode()
        data = struct.pack(">I", len(name)) + name + struct.pack(">H", 0)
        self.s.sendall(b"IHAVEOPT" + struct.pack(">II", 7, len(data)) + data)
        while True:
            _magic, _opt, reply, length = struct.unpack(">QIII", self.recv(20))
            self.recv(length)
            if reply == 1:
                break
            if reply & 0x80000000:
                sys.exit(f"export {export} refused: {reply:#x}")

    def recv(self, n):
        buf = bytearray()
        while len(buf) < n:
            chunk = self.s.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("NBD server closed the connection")
            buf += chunk
        return bytes(buf)

    def request(self, command, offset, length, payload=b""):
        self.cookie += 1
        self.s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, command, self.cookie, offset, length) + payload)
        magic, error, _cookie = struct.unpack(">IIQ", self.recv(16))
        assert magic == 0x67446698
        return error

    def write(self, offset, payload):
        assert self.request(1, offset, len(payload), payload) == 0

    def read(self, offset, length):
        error = self.request(0, offset, length)
        if error:
            raise OSError(error, f"NBD read at {offset} failed")
        return self.recv(length)

    def flush(self):
        assert self.request(3, 0, 0) == 0

    def close(self):
        self.s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 2, 0, 0, 0))
        self.s.close()


FILLER = os.urandom(BLOCK - 16)


def fill(node, volume, size):
    """Writes `size` bytes of blocks naming their LBA, 1 MiB per request; returns seconds."""
    started = time.time()
    client = Nbd(os.path.join(node.data, "nbd.sock"), volume)
    per = (1 << 20) // BLOCK
    for first in range(0, size // BLOCK, per):
        client.write(first * BLOCK, b"".join(MAGIC + struct.pack("<Q", lba) + FILLER for lba in range(first, first + per)))
    client.flush()
    client.close()
    return time.time() - started


def setup(name, drives, latency):
    path, per_drive = model(name, drives, latency)
    node = Node(name, path)
    node.start()
    node.cli("pool", "create", "P", "--size", mib(DATA + DATA // 4 + (64 << 20)))
    node.cli("vol", "create", "V", "--pool", "P", "--size", mib(DATA))
    seconds = fill(node, "V", DATA)
    node.restart()  # destaged, cache cold
    print(f"  {name}: {drives} drives of {mib(per_drive)}, {mib(DATA)} written in {seconds:.1f} s", file=sys.stderr)
    return node


def fail_drive(node, drive, volume="V", lbas=None):
    """Fails `drive` by read EIO: reads blocks (the given LBAs, or the volume's start) until
    the drive is failed."""
    node.fault({"device": f"nlsas{drive}", "op": "read", "error": "EIO"})
    client = Nbd(os.path.join(node.data, "nbd.sock"), volume)
    offsets = [lba * BLOCK for lba in lbas] if lbas else range(0, min(DATA, 256 << 20), 1 << 20)
    length = BLOCK if lbas else 1 << 20
    for offset in offsets:
        client.read(offset, length)
        if f"drive {drive} (nlsas{drive}) failed" in node.log_text():
            break
    client.close()
    node.wait_failed(drive)


def fio_json(args, timeout):
    out = subprocess.run(["timeout", str(timeout), "fio", "--output-format=json", *args],
                         capture_output=True, text=True, cwd=WORK)
    if out.returncode != 0:
        sys.exit(f"fio failed: {out.stdout[-2000:]}{out.stderr[-2000:]}")
    return json.loads(out.stdout[out.stdout.index("{"):])


def randread_round(node):
    """IOPS and p99 (ms) of ROUND_SECONDS of 4k random reads at qd 16 over the volume."""
    result = fio_json(["--name=rr", "--ioengine=nbd", f"--uri={node.uri('V')}", "--rw=randread", "--bs=4k",
                       "--iodepth=16", f"--size={DATA}", "--time_based", f"--runtime={ROUND_SECONDS}",
                       "--norandommap", f"--randseed={int(time.time())}"], ROUND_SECONDS + 120)
    read = result["jobs"][0]["read"]
    p99 = read["clat_ns"]["percentile"]["99.000000"] / 1e6
    return read["iops"], p99


def part_drive_counts():
    times = {}
    nodes = {}
    for n in DRIVE_COUNTS:
        node = setup(f"hdd{n}", n, True)
        fail_drive(node, 0)
        moved, seconds = node.wait_rebuilt(0)
        times[n] = (moved, seconds)
        print(f"  hdd{n}: rebuilt {moved} bytes in {seconds:.1f} s", file=sys.stderr)
        nodes[n] = node
    return times, nodes


def part_plain():
    n = 24
    node = setup("plain24", n, False)
    fail_drive(node, 0)
    moved, seconds = node.wait_rebuilt(0)
    node.stop()
    subprocess.run(["sync"], check=True)
    per = -(-DATA // (n - 1) // (1 << 20)) * (1 << 20)
    jobs = []
    for i in range(1, n):
        jobs += [f"--name=s{i}", f"--filename={node.data}/nlsas{i}.img", "--rw=read", "--bs=1M", "--direct=1",
                 "--ioengine=psync", f"--size={per}"]
    started = time.time()
    fio_json(jobs, 3600)
    read_seconds = time.time() - started
    return moved, seconds, read_seconds


def part_host_reads(node):
    """Rounds interleaved on one node: idle, during drive 1's rebuild, idle, ..."""
    idle, busy = [], []
    idle.append(randread_round(node))
    fail_drive(node, 1)
    for _ in range(ROUNDS):
        if node.rebuilt(1):
            break
        busy.append(randread_round(node))
    node.wait_rebuilt(1)
    for _ in range(max(ROUNDS - 1, 1)):
        idle.append(randread_round(node))
    return idle, busy


def scan_drive(node, drive, per_drive):
    """LBAs of the volume's blocks on `drive`'s file (node stopped), one per 64K unit."""
    found = []
    with open(os.path.join(node.data, f"nlsas{drive}.img"), "rb") as f:
        for unit in range(per_drive // UNIT):
            data = f.read(UNIT)
            if len(data) < BLOCK:
                break
            if data[:8] == MAGIC:
                found.append(struct.unpack("<Q", data[8:16])[0])
    return found


def timed_reads(node, lbas):
    client = Nbd(os.path.join(node.data, "nbd.sock"), "V")
    times = []
    for lba in lbas:
        started = time.perf_counter()
        client.read(lba * BLOCK, BLOCK)
        times.append((time.perf_counter() - started) * 1e3)
    client.close()
    return times


def part_degraded_read(node, per_drive):
    """p50 of cold reads of blocks on drive 2, healthy then reconstructed."""
    node.stop()
    lbas = scan_drive(node, 2, per_drive)
    sample, trigger = lbas[: SAMPLE], lbas[SAMPLE: SAMPLE + 64]
    node.start()
    healthy = timed_reads(node, sample)
    node.restart()
    # Hold the rebuild back (its spare writes wait), so the sample is read by reconstruction.
    drives = len([f for f in os.listdir(node.data) if re.fullmatch(r"nlsas\d+\.img", f)])
    for i in range(drives):
        node.fault({"device": f"nlsas{i}", "op": "write", "delay_ms": 600000})
    fail_drive(node, 2, lbas=trigger)
    degraded = timed_reads(node, sample)
    node.stop(kill=True)
    return statistics.median(healthy), statistics.median(degraded), len(sample)


def main():
    print(f"raid-rebuild: DATA={mib(DATA)} DRIVES={DRIVE_COUNTS} ROUND_SECONDS={ROUND_SECONDS} ROUNDS={ROUNDS}",
          file=sys.stderr)
    nodes = {}
    try:
        times, nodes = part_drive_counts()
        base_n = DRIVE_COUNTS[0]
        rows = []
        for n in DRIVE_COUNTS:
            moved, seconds = times[n]
            speedup = times[base_n][1] / seconds if seconds else float("nan")
            ideal = n / base_n
            rows.append((f"rebuild, {n} HDD-latency drives", f"{seconds:.1f} s ({moved / 1e6:.0f} MB)",
                         f"speed-up {speedup:.2f}x vs ideal {ideal:.2f}x: {speedup / ideal:.2f} of ideal"))
        host_node = nodes.get(24) or nodes[DRIVE_COUNTS[-1]]
        idle, busy = part_host_reads(host_node)
        host_node.stop(kill=True)
        idle_iops = statistics.median(i for i, _ in idle)
        idle_p99 = statistics.median(p for _, p in idle)
        busy_iops = statistics.median(i for i, _ in busy) if busy else float("nan")
        busy_p99 = statistics.median(p for _, p in busy) if busy else float("nan")
        rows.append(("host 4k randread qd16 idle", f"{idle_iops:.0f} IOPS, p99 {idle_p99:.1f} ms",
                     f"median of {len(idle)} rounds"))
        rows.append(("host 4k randread qd16 rebuilding", f"{busy_iops:.0f} IOPS, p99 {busy_p99:.1f} ms",
                     f"median of {len(busy)} rounds: IOPS {busy_iops / idle_iops:.2f}x, p99 {busy_p99 / idle_p99:.2f}x"))
        first = nodes[DRIVE_COUNTS[0]]
        _, per_drive = model(f"hdd{DRIVE_COUNTS[0]}", DRIVE_COUNTS[0], True)
        healthy, degraded, count = part_degraded_read(first, per_drive)
        rows.append(("cold 4k read of blocks on a drive", f"healthy p50 {healthy:.2f} ms, degraded p50 {degraded:.2f} ms",
                     f"{count} blocks: degraded/healthy {degraded / healthy:.2f}x"))
        for node in nodes.values():
            node.stop(kill=True)
        moved, seconds, read_seconds = part_plain()
        rows.append(("plain files, 24 drives", f"rebuild {seconds:.1f} s, read once {read_seconds:.1f} s",
                     f"rebuild/read {seconds / read_seconds:.2f}x ({moved / 1e6:.0f} MB moved)"))
    finally:
        for node in nodes.values():
            node.stop(kill=True)
    width = max(len(r[0]) for r in rows)
    middle = max(len(r[1]) for r in rows)
    print(f"\nInfiniRAID rebuild figures, DATA = {mib(DATA)} written")
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:<{middle}}  {note}")


if __name__ == "__main__":
    main()
