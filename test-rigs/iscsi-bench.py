#!/usr/bin/env python3
"""iSCSI benchmark (issue 6): troika's iSCSI target beside tgt (tgtd on a file of the same
size), measured in one run on this machine.

Sections (SECTIONS env, default all, in this order):
  perf     4k random reads with iscsi-perf (32 in flight, PERF_SECONDS each) against both
           targets, alternating which runs first over ROUNDS rounds (even); IOPS averages.
  seq      sequential 256 KiB over the whole LU with `qemu-img bench` (depth 8; needs
           qemu-block-extra's iscsi driver): a first write that fills (allocates) the LU, a
           second write over the filled LU, then a read; MiB/s on both.
  cu       iscsi-test-cu --dataloss -t ALL on both: real passes (not counting skips),
           skips, failures.

Both LUs are SIZE_MIB (default 1024) and written whole before `perf`, so neither reads
holes. troika runs hw/bench-snap.toml in a temporary directory with portals from
TROIKA_PORT (3300); tgtd listens on TGT_PORT (3310). Needs root for tgtd. Prints one table
per section and a JSON summary line.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from unix_http import UnixHTTP  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TROIKA = os.environ.get("TROIKA", os.path.join(REPO, "target/release/troika"))
HW = os.path.join(REPO, "hw/bench-snap.toml")
SECTIONS = os.environ.get("SECTIONS", "perf seq cu").split()
SIZE_MIB = int(os.environ.get("SIZE_MIB", "1024"))
ROUNDS = int(os.environ.get("ROUNDS", "4"))
if ROUNDS % 2:
    raise SystemExit("ROUNDS must be even: each target runs first in half the rounds")
PERF_SECONDS = int(os.environ.get("PERF_SECONDS", "10"))
TROIKA_PORT = int(os.environ.get("TROIKA_PORT", "3300"))
TGT_PORT = int(os.environ.get("TGT_PORT", "3310"))
INITIATOR = "iqn.2026-11.io.troika:bench"
TEST_INITIATORS = [
    "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test",
    "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test-2",
]
TGT_IQN = "iqn.2026-11.io.troika:tgt-bench"


class Troika:
    def __init__(self, data):
        self.data = data
        os.makedirs(data, exist_ok=True)
        self.log_path = os.path.join(data, "serve.log")
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [TROIKA, "serve", "--hw", HW, "--data", data, "--nbd-listen", "none",
             "--mgmt-listen", "none", "--iscsi-listen", f"127.0.0.1:{TROIKA_PORT}"],
            stdout=log, stderr=log)
        deadline = time.time() + 120
        while self.target() is None:
            if time.time() > deadline or self.proc.poll() is not None:
                raise SystemExit("troika did not come up; see " + self.log_path)
            time.sleep(0.1)
        self.conn = UnixHTTP(os.path.join(data, "troika.sock"))

    def target(self):
        try:
            text = open(self.log_path).read()
        except OSError:
            return None
        found = re.search(r"iSCSI target (\S+)", text)
        return found.group(1) if found else None

    def api(self, method, path, body=None):
        self.conn.request(method, path, body=json.dumps(body) if body is not None else None,
                          headers={"Content-Type": "application/json"})
        answer = json.loads(self.conn.getresponse().read() or b"null")
        if answer.get("error"):
            raise SystemExit(f"{method} {path}: {answer['error']}")
        return answer["result"]

    def setup(self):
        system = self.api("GET", "/api/rest/system")
        gib = 1 << 30
        pool = self.api("POST", "/api/rest/pools", {
            "name": "bench", "physical_capacity": system["free_physical_capacity"] // gib * gib,
            "virtual_capacity": 4 << 40})
        volume = self.api("POST", "/api/rest/volumes", {
            "name": "lu1", "pool_id": pool["id"], "size": SIZE_MIB << 20,
            "provtype": "THIN"})
        host = self.api("POST", "/api/rest/hosts", {"name": "bench"})
        for initiator in [INITIATOR] + TEST_INITIATORS:
            self.api("POST", f"/api/rest/hosts/{host['id']}/ports",
                     {"type": "ISCSI", "address": initiator})
        self.api("POST", f"/api/rest/hosts/{host['id']}/luns",
                 {"volume_id": volume["id"], "lun": 1})
        return f"iscsi://127.0.0.1:{TROIKA_PORT}/{self.target()}/1"

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=120)


class Tgt:
    def __init__(self, workdir):
        if shutil.which("tgtd") is None:
            raise SystemExit("tgtd is missing: apt-get install tgt")
        self.image = os.path.join(workdir, "tgt.img")
        with open(self.image, "wb") as image:
            image.truncate(SIZE_MIB << 20)
        log = open(os.path.join(workdir, "tgtd.log"), "ab")
        self.proc = subprocess.Popen(
            ["tgtd", "-f", "--iscsi", f"portal=127.0.0.1:{TGT_PORT}"], stdout=log, stderr=log)
        time.sleep(1)
        adm = ["tgtadm", "--lld", "iscsi", "--op"]
        subprocess.run(adm + ["new", "--mode", "target", "--tid", "1", "-T", TGT_IQN],
                       check=True)
        subprocess.run(adm + ["new", "--mode", "logicalunit", "--tid", "1", "--lun", "1",
                              "-b", self.image], check=True)
        subprocess.run(adm + ["bind", "--mode", "target", "--tid", "1", "-I", "ALL"],
                       check=True)
        self.url = f"iscsi://127.0.0.1:{TGT_PORT}/{TGT_IQN}/1"

    def stop(self):
        subprocess.run(["tgtadm", "--op", "update", "--mode", "sys", "--name", "State",
                        "-v", "offline"], check=False)
        subprocess.run(["tgtadm", "--lld", "iscsi", "--op", "delete", "--mode", "target",
                        "--tid", "1", "--force"], check=False)
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def image_opts(url):
    """qemu's --image-opts for an iscsi:// URL, logging in as INITIATOR."""
    found = re.match(r"iscsi://([^/]+)/([^/]+)/(\d+)", url)
    portal, target, lun = found.groups()
    return (f"driver=raw,file.driver=iscsi,file.transport=tcp,file.portal={portal},"
            f"file.target={target},file.lun={lun},file.initiator-name={INITIATOR}")


def qemu_bench(url, write, count):
    args = ["qemu-img", "bench", "-s", "256k", "-d", "8", "-c", str(count), "--image-opts"]
    if write:
        args.append("-w")
    started = time.time()
    out = subprocess.run(args + [image_opts(url)], capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise SystemExit(f"qemu-img bench failed on {url}: {out.stderr}")
    found = re.search(r"Run completed in ([0-9.]+) seconds", out.stdout)
    seconds = float(found.group(1)) if found else time.time() - started
    return count * 0.25 / seconds


def iscsi_perf(url):
    out = subprocess.run(
        ["timeout", str(PERF_SECONDS + 30), "iscsi-perf", "-i", INITIATOR, "-m", "32", "-r",
         "-t", str(PERF_SECONDS), url], capture_output=True, text=True)
    found = re.findall(r"iops average (\d+)", out.stdout)
    if not found:
        raise SystemExit(f"iscsi-perf printed no average for {url}:\n{out.stdout}{out.stderr}")
    return int(found[-1])


def compliance(url):
    out = subprocess.run(["timeout", "1200", "iscsi-test-cu", "--dataloss", "-t", "ALL", url],
                         capture_output=True, text=True)
    text = out.stdout + out.stderr
    outcome = {}
    current = None
    for line in text.splitlines():
        test = re.match(r"\s*Test: (\S+) \.\.\.(.*)", line)
        if line.startswith("Suite: "):
            suite = line[len("Suite: "):].strip()
        elif test:
            current = f"{suite}.{test.group(1)}"
            outcome[current] = test.group(2)
        elif line.startswith("Run Summary"):
            current = None
        elif current:
            outcome[current] += "\n" + line
    # CUnit lists each failed assertion as "  1. test_x.c:71  - CU_ASSERT..."; the tests'
    # own "[FAILED]" log lines are not verdicts.
    verdict = re.compile(r"^\s*\d+\. \S+\.c:\d+", re.M)
    failed = sorted(name for name, t in outcome.items() if verdict.search(t))
    skipped = sorted(name for name, t in outcome.items()
                     if not verdict.search(t) and "[SKIPPED]" in t)
    return {"tests": len(outcome), "passed": len(outcome) - len(failed) - len(skipped),
            "skipped": len(skipped), "failed": len(failed), "failed_tests": failed}


def main():
    workdir = tempfile.mkdtemp(prefix="iscsi-bench-")
    troika = Troika(os.path.join(workdir, "troika"))
    try:
        tgt = Tgt(workdir)
    except BaseException:
        troika.stop()
        raise
    summary = {}
    try:
        targets = {"troika": troika.setup(), "tgt": tgt.url}
        whole = (SIZE_MIB << 20) // (256 << 10)
        if "seq" in SECTIONS or "perf" in SECTIONS:
            # The first pass fills (allocates) the LU; the second overwrites a
            # preconditioned LU; then reads. Each figure alternates which target goes first.
            seq = {name: {} for name in targets}
            passes = [("fill_mib_s", True), ("write_mib_s", True), ("read_mib_s", False)]
            for index, (figure, write) in enumerate(passes):
                order = list(targets) if index % 2 == 0 else list(reversed(list(targets)))
                for name in order:
                    seq[name][figure] = qemu_bench(targets[name], write, whole)
            if "seq" in SECTIONS:
                print("\nsequential 256 KiB, depth 8, whole LU (qemu-img bench)")
                print(f"{'target':8} {'fill MiB/s':>11} {'write MiB/s':>12} {'read MiB/s':>11}")
                for name, figures in seq.items():
                    print(f"{name:8} {figures['fill_mib_s']:11.1f} {figures['write_mib_s']:12.1f}"
                          f" {figures['read_mib_s']:11.1f}")
                summary["seq"] = seq
        if "perf" in SECTIONS:
            rounds = {"troika": [], "tgt": []}
            for index in range(ROUNDS):
                order = ["troika", "tgt"] if index % 2 == 0 else ["tgt", "troika"]
                for name in order:
                    rounds[name].append(iscsi_perf(targets[name]))
            print(f"\n4k random read, 32 in flight (iscsi-perf), {ROUNDS} rounds x {PERF_SECONDS} s")
            for name, figures in rounds.items():
                print(f"{name:8} mean {sum(figures) / len(figures):10.0f} IOPS  rounds {figures}")
            ratio = sum(rounds["troika"]) / max(1, sum(rounds["tgt"]))
            print(f"troika / tgt = {ratio:.2f}")
            summary["perf"] = {"rounds": rounds, "ratio": ratio}
        if "cu" in SECTIONS:
            print("\niscsi-test-cu --dataloss -t ALL")
            summary["cu"] = {}
            for name, url in targets.items():
                result = compliance(url)
                summary["cu"][name] = result
                print(f"{name:8} {result['tests']} tests: {result['passed']} real passes, "
                      f"{result['skipped']} skips, {result['failed']} failures "
                      f"{result['failed_tests']}")
    finally:
        for stop in (tgt.stop, troika.stop):
            try:
                stop()
            except Exception as err:  # keep stopping the other one
                print(f"stopping: {err}", file=sys.stderr)
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(summary))


if __name__ == "__main__":
    sys.exit(main())
