#!/usr/bin/env python3
"""Capture TPM 2.0 command/response vectors from swtpm for tosskey-tpm's host tests.

    tpm/tests/vectors/capture-swtpm.py > tpm/tests/vectors/swtpm.txt

Starts a fresh `swtpm socket --tpm2` (Debian's swtpm, libtpms) with its state in a temporary
directory and its data channel on a Unix socket, sends each command below as raw bytes (the
swtpm data channel carries bare TPM commands, no framing), and prints one line per exchange:

    <name> <command hex> <response hex>

The commands are built here with struct.pack straight from the TPM 2.0 Part 2/3 structures,
independently of the Rust encoder; tpm/tests/swtpm_vectors.rs asserts the Rust encoder
produces the same command bytes and decodes the captured responses. Each run starts from a
fresh TPM (all PCRs zero), so the output is reproducible.
"""

import hashlib
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time

TPM_ST_NO_SESSIONS = 0x8001
TPM_ST_SESSIONS = 0x8002
TPM_CC_GET_CAPABILITY = 0x17A
TPM_CC_PCR_READ = 0x17E
TPM_CC_PCR_EXTEND = 0x182
TPM_CAP_PCRS = 5
TPM_RS_PW = 0x40000009
ALGS = {"sha1": 0x0004, "sha256": 0x000B, "sha384": 0x000C, "sha512": 0x000D}


def command(tag, code, body):
    return struct.pack(">HII", tag, 10 + len(body), code) + body


def get_capability_pcrs():
    return command(TPM_ST_NO_SESSIONS, TPM_CC_GET_CAPABILITY, struct.pack(">III", TPM_CAP_PCRS, 0, 1))


def pcr_select(pcr):
    select = bytearray(3)
    select[pcr // 8] |= 1 << (pcr % 8)
    return bytes(select)


def pcr_read(pcr, banks):
    body = struct.pack(">I", len(banks))
    for bank in banks:
        body += struct.pack(">HB", ALGS[bank], 3) + pcr_select(pcr)
    return command(TPM_ST_NO_SESSIONS, TPM_CC_PCR_READ, body)


def pcr_extend(handle, digests):
    # TPMS_AUTH_COMMAND for TPM_RS_PW: empty nonce, no attributes, empty password.
    auth = struct.pack(">IHBH", TPM_RS_PW, 0, 0, 0)
    body = struct.pack(">II", handle, len(auth)) + auth + struct.pack(">I", len(digests))
    for bank, digest in digests:
        body += struct.pack(">H", ALGS[bank]) + digest
    return command(TPM_ST_SESSIONS, TPM_CC_PCR_EXTEND, body)


def exchange(sock, data):
    sock.sendall(data)
    response = sock.recv(4096)
    size = struct.unpack(">I", response[2:6])[0]
    while len(response) < size:
        response += sock.recv(4096)
    return response


def main():
    measured = b"tosskey"
    digests = [(bank, hashlib.new(bank, measured).digest()) for bank in ALGS]
    exchanges = [
        ("get_capability_pcrs", get_capability_pcrs()),
        ("pcr_read_16_all_banks_fresh", pcr_read(16, list(ALGS))),
        ("pcr_extend_16_all_banks", pcr_extend(16, digests)),
        ("pcr_read_16_all_banks_extended", pcr_read(16, list(ALGS))),
        ("pcr_extend_24_bad_handle", pcr_extend(24, digests[1:2])),
        ("pcr_extend_16_short_digest", command(TPM_ST_SESSIONS, TPM_CC_PCR_EXTEND,
                                               pcr_extend(16, [("sha256", b"\x01" * 8)])[10:])),
    ]
    with tempfile.TemporaryDirectory() as state:
        data_path = os.path.join(state, "data.sock")
        ctrl_path = os.path.join(state, "ctrl.sock")
        swtpm = subprocess.Popen([
            "swtpm", "socket", "--tpm2", "--tpmstate", f"dir={state}",
            "--server", f"type=unixio,path={data_path}",
            "--ctrl", f"type=unixio,path={ctrl_path}",
            "--flags", "not-need-init,startup-clear",
        ])
        try:
            for _ in range(100):
                if os.path.exists(data_path):
                    break
                time.sleep(0.05)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(data_path)
            version = subprocess.run(["swtpm", "--version"], capture_output=True, text=True).stdout.strip()
            print(f"# {version}; measured digests are of {measured!r} in each bank")
            for name, data in exchanges:
                print(name, data.hex(), exchange(sock, data).hex())
            sock.close()
        finally:
            swtpm.terminate()
            swtpm.wait()


if __name__ == "__main__":
    sys.exit(main())
