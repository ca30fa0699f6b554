#!/usr/bin/env python3
"""Writes the committed seed corpus, fuzz/seeds/<target>/, a few small valid inputs each.

Wire targets get hand-encoded requests; `hw_model` gets the models in hw/; `superblock`,
`checkpoint` and `journal` get what a real node wrote: this starts target/release/troika on
hw/ci.toml in a temporary directory, creates a pool, volumes and a snapshot, writes a little
through NBD (qemu-io), stops it (SIGTERM: destage and checkpoint) and cuts the superblocks,
the checkpoint and the journal batches out of its vault file. Old checkpoint formats are
derived from that checkpoint. Run from anywhere: python3 fuzz/make_seeds.py
"""

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import urllib.parse

FUZZ = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(FUZZ)
SEEDS = os.path.join(FUZZ, "seeds")
PAGE = 4096


def write(target, name, data):
    os.makedirs(os.path.join(SEEDS, target), exist_ok=True)
    with open(os.path.join(SEEDS, target, name), "wb") as f:
        f.write(data)


def nbd_seeds():
    request_magic = 0x25609513
    state = struct.pack(">Q", 64 << 20) + bytes([0x0E]) + struct.pack(">I", 32 << 20)
    for name, (flags, kind, offset, length) in {
        "read": (0, 0, 4096, 4096),
        "write-fua": (1, 1, 0, 65536),
        "flush": (0, 3, 0, 0),
        "trim": (0, 4, 1 << 20, 1 << 20),
        "write-zeroes": (2, 6, 8192, 4096),
        "block-status": (0, 7, 0, 1 << 20),
        "disc": (0, 2, 0, 0),
    }.items():
        header = struct.pack(">IHHQQI", request_magic, flags, kind, 0x1234, offset, length)
        write("nbd_request", name, header + state)
    meta = b"base:allocation"
    for name, (code, payload) in {
        "go": (7, struct.pack(">I", 1) + b"V" + struct.pack(">HH", 1, 3)),
        "info": (6, struct.pack(">I", 0) + struct.pack(">H", 0)),
        "export-name": (1, b"V"),
        "list": (3, b""),
        "structured-reply": (8, b""),
        "set-meta-context": (10, struct.pack(">I", 1) + b"V" + struct.pack(">II", 1, len(meta)) + meta),
        "list-meta-context": (9, struct.pack(">I", 1) + b"V" + struct.pack(">I", 0)),
    }.items():
        header = struct.pack(">QII", 0x49484156454F5054, code, len(payload))
        # The target reads the code from the first 4 bytes and the option header from the
        # first 16: a seed of code + payload, and one of a whole option as sent.
        write("nbd_option", name, struct.pack(">I", code) + payload)
        write("nbd_option", name + "-sent", header + payload)


def scsi_seeds():
    for name, (cdb, data) in {
        "test-unit-ready": (bytes(6), b""),
        "inquiry": (bytes([0x12, 0, 0, 0, 0x60, 0]), b""),
        "inquiry-vpd83": (bytes([0x12, 1, 0x83, 0, 0xFF, 0]), b""),
        "read-capacity10": (bytes([0x25]) + bytes(9), b""),
        "read-capacity16": (bytes([0x9E, 0x10]) + bytes(11) + bytes([32, 0, 0]), b""),
        "read10": (bytes([0x28, 0, 0, 0, 0, 1, 0, 0, 2, 0]), b""),
        "write10": (bytes([0x2A, 0, 0, 0, 0, 2, 0, 0, 1, 0]), bytes(range(256)) * 2),
        "mode-sense6": (bytes([0x1A, 0, 0x3F, 0, 0xFF, 0]), b""),
        "report-luns": (bytes([0xA0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]), b""),
        "sync-cache10": (bytes([0x35]) + bytes(9), b""),
        "unmap": (bytes([0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0]),
                  struct.pack(">HH4xQI4x", 22, 16, 4, 8)),
    }.items():
        write("scsi_cdb", name, bytes([len(cdb)]) + cdb + data)


def iscsi_seeds():
    def bhs(opcode, flags, data, ahs=b"", rest=b""):
        header = bytes([opcode, flags, 0, 0, len(ahs) // 4]) + len(data).to_bytes(3, "big")
        header += rest.ljust(40, b"\0")
        pad = b"\0" * (-len(data) % 4)
        return header + ahs + data + pad

    login = b"InitiatorName=iqn.fuzz\0SessionType=Normal\0TargetName=iqn.2025-01.io.troika:fuzz\0"
    read10 = bytes([0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0]).ljust(16, b"\0")
    for name, pdu in {
        "login": bhs(0x43, 0x87, login, rest=bytes(8) + struct.pack(">IHH", 1, 0, 0)),
        "nop-out": bhs(0x40, 0x80, b"", rest=bytes(8) + struct.pack(">II", 0xFFFFFFFF, 0xFFFFFFFF)),
        "text": bhs(0x44, 0x80, b"SendTargets=All\0"),
        "scsi-read": bhs(0x01, 0xC1, b"", rest=struct.pack(">Q", 1 << 48) + struct.pack(">IIII", 7, 4096, 1, 1) + read10),
        "scsi-write": bhs(0x01, 0xA1, bytes(512), rest=struct.pack(">Q", 1 << 48) + struct.pack(">IIII", 8, 512, 1, 1) + bytes([0x2A]).ljust(16, b"\0")),
        "logout": bhs(0x46, 0x80, b""),
    }.items():
        write("iscsi_pdu", name, b"\0" + pdu)
        write("iscsi_pdu", name + "-digests", b"\x03" + pdu + b"\0" * 8)


def mgmt_seeds():
    # Only one seed authenticates over the network: each check runs argon2 (tens of ms,
    # more under ASan), and the local origin reaches the same handlers without it.
    def request(method, target, body=None, auth=False):
        lines = [f"{method} {target} HTTP/1.1", "Host: x"]
        if auth:
            lines.append("Authorization: Basic YWRtaW46YWRtaW4=")
        raw = b""
        if body is not None:
            raw = json.dumps(body).encode()
            lines += ["Content-Type: application/json", f"Content-Length: {len(raw)}"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + raw

    for name, data in {
        "system": request("GET", "/api/rest/system", auth=True),
        "pools": request("GET", "/api/rest/pools?page_size=10&page=1"),
        "create-pool": request("POST", "/api/rest/pools", {"name": "P", "physical_capacity": 1 << 30}),
        "create-volume": request("POST", "/api/rest/volumes", {"name": "V", "pool_id": 1, "size": 1 << 30}),
        "update-volume": request("PUT", "/api/rest/volumes/1", {"name": "W", "write_protected": True}),
        "delete-volume": request("DELETE", "/api/rest/volumes/1?approved=true"),
        "metrics": request("GET", "/metrics"),
        "openapi": request("GET", "/api/rest/openapi.json"),
    }.items():
        write("mgmt_request", name, data)


def hw_seeds():
    for name in sorted(os.listdir(os.path.join(REPO, "hw"))):
        if name.endswith(".toml"):
            shutil.copy(os.path.join(REPO, "hw", name), os.path.join(SEEDS, "hw_model", name))


def run_node(data):
    troika = os.environ.get("TROIKA", os.path.join(REPO, "target", "release", "troika"))
    log = open(os.path.join(data, "troika.log"), "w")
    node = subprocess.Popen([troika, "serve", "--data", data, "--hw", os.path.join(REPO, "hw", "ci.toml")],
                            stdout=log, stderr=log)
    try:
        for _ in range(600):
            if os.path.exists(os.path.join(data, "nbd.sock")):
                break
            time.sleep(0.1)
        else:
            sys.exit("troika did not come up: see " + log.name)
        cli = [troika, "--data", data]
        subprocess.run(cli + ["pool", "create", "P", "--size", "400M"], check=True, stdout=subprocess.DEVNULL)
        for volume in ["V", "W"]:
            subprocess.run(cli + ["vol", "create", volume, "--pool", "P", "--size", "64M"], check=True,
                           stdout=subprocess.DEVNULL)
        sock = os.path.join(data, "nbd.sock")
        uri = "nbd+unix:///V?socket=" + urllib.parse.quote(sock)
        subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 0xab 0 64k", "-c", "write -P 0x5c 1M 8k",
                        "-c", "flush", uri], check=True, stdout=subprocess.DEVNULL, timeout=60)
        subprocess.run(cli + ["snap", "create", "V", "--name", "S"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 0x11 4k 4k", "-c", "discard 1M 8k",
                        "-c", "flush", uri], check=True, stdout=subprocess.DEVNULL, timeout=60)
    finally:
        node.send_signal(signal.SIGTERM)
        try:
            node.wait(timeout=30)
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait()


def media_seeds():
    data = tempfile.mkdtemp(prefix="troika-seeds.")
    try:
        run_node(data)
        with open(os.path.join(data, "ssd0.img"), "rb") as f:
            vault = f.read()
    finally:
        shutil.rmtree(data)
    fields = lambda page: struct.unpack("<16Q", page[:128])
    supers = [vault[i * PAGE:(i + 1) * PAGE] for i in range(2)]
    newest = max((s for s in supers if fields(s)[0] == 0x54524F494B415342), key=lambda s: fields(s)[2])
    for index, page in enumerate(supers):
        if fields(page)[0] == 0x54524F494B415342:
            write("superblock", f"slot{index}", b"\0" + page)
            write("superblock", f"slot{index}-resum", b"\x01" + page)
    f = fields(newest)
    slot_len, log_start, log_len, slot, cp_len = f[8], f[9], f[10], f[11], f[12]
    checkpoint = vault[2 * PAGE + slot * slot_len:][:cp_len]
    write("checkpoint", "aliases", checkpoint)
    catalog_len, maps_len = struct.unpack("<QQ", checkpoint[24:40])
    catalog = checkpoint[64:64 + catalog_len]
    maps = checkpoint[64 + catalog_len:]
    if maps[-4:] == bytes(4):
        # The forest format before aliases: the same forest without its (empty) aliases count.
        header = struct.pack("<QQQQQ", 0x54524F494B414346, *struct.unpack("<QQ", checkpoint[8:24]),
                             catalog_len, maps_len - 4)
        write("checkpoint", "forest", header.ljust(64, b"\0") + catalog + maps[:-4])
    volumes = sorted(int(v) for v in json.loads(catalog)["volumes"])
    flat = b"".join(struct.pack("<IQQQQ", volumes[0], lba, 1000 + lba, 0xC0FFEE, 3) for lba in (0, 1, 256))
    header = struct.pack("<QQQQQ", 0x54524F494B414350, *struct.unpack("<QQ", checkpoint[8:24]), catalog_len, 3)
    write("checkpoint", "flat", header.ljust(64, b"\0") + catalog + flat)
    empty = json.dumps({"serial": 1, "pools": {}, "volumes": {}, "next_pool_id": 1, "next_volume_id": 1}).encode()
    header = struct.pack("<QQQQQ", 0x54524F494B414341, 0, 1, len(empty), 12)
    write("checkpoint", "empty", header.ljust(64, b"\0") + empty + bytes(12))
    kept = 0
    for at in range(log_start, log_start + log_len, PAGE):
        magic, _, payload_len = struct.unpack("<QQQ", vault[at:at + 24])
        if magic != 0x54524F494B414A4C or payload_len > 32 << 10:
            continue
        batch = vault[at:at + 64 + payload_len]
        # Knobs 1: the harness repairs the LSN and the checksums (the batch keeps its records).
        write("journal", f"batch{kept}", b"\x01" + batch)
        kept += 1
        if kept == 8:
            break
    if kept == 0:
        sys.exit("no journal batches found")


def journal_synthetic():
    """Records a short run does not write (copy by reference, cleaner moves), in one batch."""
    entry = struct.pack("<QQQ", 77, 0xABCDEF, 9)
    records = [
        (6, struct.pack("<II", 1, 2) + struct.pack("<QQ", 10, 3) + entry + struct.pack("<QQ", 11, 4) + entry),
        (5, struct.pack("<IIQQQ", 1, 0, 3, 77, 78)),
        (3, struct.pack("<IIQQQ", 1, 0, 16, 32, 9)),
        (2, struct.pack("<II", 2, 1) + struct.pack("<Q", 5) + entry),
    ]
    payload = b"".join(struct.pack("<BxxxI", kind, len(body)) + body for kind, body in records)
    header = struct.pack("<QQQQII", 0x54524F494B414A4C, 0, len(payload), 0, 0, len(records))
    write("journal", "synthetic", b"\x01" + header.ljust(64, b"\0") + payload)


if __name__ == "__main__":
    for target in os.listdir(SEEDS) if os.path.isdir(SEEDS) else []:
        shutil.rmtree(os.path.join(SEEDS, target))
    os.makedirs(os.path.join(SEEDS, "hw_model"))
    nbd_seeds()
    scsi_seeds()
    iscsi_seeds()
    mgmt_seeds()
    hw_seeds()
    journal_synthetic()
    media_seeds()
