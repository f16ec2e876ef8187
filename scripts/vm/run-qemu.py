#!/usr/bin/env python3
"""Boot the tosskey guest in QEMU, stream its serial console, and judge the run.

Called by scripts/vm/lib.sh (vm_boot); not meant to be run by hand. The guest's init
(scripts/vm/init) and test runner (scripts/vm/run-tests) print protocol lines starting
with "@@tosskey@@" on the serial console; this script echoes everything live, turns the
protocol lines into readable host lines, and decides the exit status. A test may print
"@@tosskey@@ HOT-DISK-ADD" on the console: with --hot-disk the host then hot-adds that
image as a virtio disk through QEMU's monitor, a few seconds later.

  0  the payload finished and (in test mode) every test passed
  1  a test failed, the guest panicked, init gave up, the final marker never came, or
     the run timed out

Why Python: a live stream with a deadline, panic detection and a per-test summary is
clearer with select() and a small state machine than in bash.
"""

import argparse
import os
import re
import secrets
import select
import socket
import subprocess
import sys
import threading
import time

MARKER = "@@tosskey@@ "
# First "still running" notice for a test after this many seconds, then at 2x, 4x, ...
SLOW_TEST_NOTICE_SECONDS = 60.0
# A kernel panic, BUG or oops: the run is broken even if the tests go on.
# How long after a test asks for the hot disk (HOT-DISK-ADD) the host adds it: long enough
# for the test to start the command that waits for it, so the disk arrives during the wait.
HOT_DISK_DELAY_SECONDS = 3.0
# The serial of the hot-added disk (tests/root_late_disks.rs looks for it).
HOT_DISK_SERIAL = "tosskey-hot-0"
PANIC_PATTERN = re.compile(r"Kernel panic - not syncing|kernel BUG at|BUG: kernel|Oops: [0-9a-f]{4} ")


def log(message):
    """A host-side line, visibly distinct from the guest's output."""
    print(f"[vm] {message}", flush=True)


def qemu_command(args):
    """The QEMU command line. TCG by default: /dev/kvm on these machines cannot boot a
    stock kernel, and TCG gives the same result everywhere (only slower)."""
    command = [
        "qemu-system-x86_64",
        "-accel", args.accel,
        "-cpu", "max",
        "-smp", "2",
        "-m", "2048",
        "-display", "none",
        "-serial", "stdio",
        # The human monitor only with --hot-disk, on a socket of its own (add_hot_disk).
        "-monitor", f"unix:{args.monitor_socket},server=on,wait=off" if args.hot_disk else "none",
        # A kernel panic (panic=-1 reboots at once) then ends QEMU instead of looping.
        "-no-reboot",
        "-kernel", args.kernel,
        "-initrd", args.initrd,
        # quiet = console loglevel 4: dm/md/crypto errors (KERN_ERR) still show.
        # no_timer_check: under TCG on a loaded host the IO-APIC timer check can miss its
        # ticks and panic the boot; the emulated timer is known to work.
        # tosskey.guest=TOKEN: init copies it to /run/tosskey-guest, and root tests run only
        # where both agree (testkit/src/guest.rs); a fresh token per boot.
        "-append", f"console=ttyS0 panic=-1 quiet no_timer_check rdinit=/init tosskey.guest={secrets.token_hex(16)}",
    ]
    if args.tpm_socket:
        # A TPM 2.0 on the TIS interface, backed by swtpm through its control socket (QEMU
        # docs/specs/tpm.rst); the guest kernel's built-in tpm_tis driver makes /dev/tpmrm0.
        command += [
            "-chardev", f"socket,id=chrtpm,path={args.tpm_socket}",
            "-tpmdev", "emulator,id=tpm0,chardev=chrtpm",
            "-device", "tpm-tis,tpmdev=tpm0",
        ]
    for index, disk in enumerate(args.disk):
        # cache=unsafe: the disks are scratch files deleted after the run, so host
        # flushes would only cost time. The serial is how tests find the disk
        # (/sys/block/vdX/serial), independent of PCI enumeration order.
        command += [
            "-drive", f"file={disk},format=raw,if=none,id=d{index},cache=unsafe",
            "-device", f"virtio-blk-pci,drive=d{index},serial=tosskey-disk-{index}",
        ]
    return command


def add_hot_disk(monitor_socket, image):
    """Hot-add `image` as a blank virtio disk through QEMU's human monitor: drive_add
    makes the backend, device_add plugs a virtio-blk-pci device (ACPI PCI hotplug of the
    i440fx machine) that the guest probes as /dev/vdX with the serial HOT_DISK_SERIAL."""
    commands = [
        f"drive_add 0 file={image},format=raw,if=none,id=hot0,cache=unsafe",
        f"device_add virtio-blk-pci,drive=hot0,serial={HOT_DISK_SERIAL},id=hotdisk0",
    ]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as monitor:
        monitor.settimeout(10.0)
        monitor.connect(monitor_socket)
        reply = b""
        for command in commands:
            monitor.sendall(command.encode() + b"\n")
            # Each command's reply ends with the next "(qemu) " prompt.
            while reply.count(b"(qemu) ") < commands.index(command) + 2:
                chunk = monitor.recv(4096)
                if not chunk:
                    break
                reply += chunk
    answer = " / ".join(line.strip() for line in reply.decode(errors="replace").splitlines()
                        if line.strip() and not line.startswith("QEMU") and "(qemu)" not in line)
    log(f"hot-added {image} as {HOT_DISK_SERIAL}" + (f": {answer}" if answer else ""))


def start_swtpm(state_dir):
    """A fresh software TPM 2.0 (swtpm) with its state in state_dir, listening on a control
    socket there; returns the process and the socket path. --terminate ends it when QEMU
    disconnects; main() stops it in any case."""
    socket_path = os.path.join(state_dir, "swtpm.sock")
    process = subprocess.Popen(
        ["swtpm", "socket", "--tpm2", "--tpmstate", f"dir={state_dir}",
         "--ctrl", f"type=unixio,path={socket_path}", "--terminate"],
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10.0
    while not os.path.exists(socket_path):
        if process.poll() is not None or time.monotonic() > deadline:
            stop_swtpm(process)
            raise SystemExit(f"[vm] ERROR: swtpm did not create {socket_path}")
        time.sleep(0.05)
    return process, socket_path


def stop_swtpm(process):
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Run:
    """What the serial console has told us so far."""

    def __init__(self, mode, hot_disk=None):
        self.mode = mode
        # (monitor socket, image) with --hot-disk, else None.
        self.hot_disk = hot_disk
        self.hot_disk_added = False
        self.started = time.monotonic()
        self.results = []  # (label, test, ok, seconds)
        self.current = None  # (label, test, host start time) of the running test
        self.done = None  # (passed, failed) from the guest's DONE line
        self.payload_status = None
        self.problems = []
        self.blank_pending = False
        self.next_slow_notice = SLOW_TEST_NOTICE_SECONDS

    def report_slow_test(self):
        """Say which test is running once it has been quiet for a while, so that a
        hanging test is named in the log before any timeout hits."""
        if self.current is None:
            return
        label, test, started = self.current
        running = time.monotonic() - started
        if running >= self.next_slow_notice:
            log(f"still running after {running:.0f}s: {label} {test}")
            self.next_slow_notice *= 2

    def elapsed(self):
        return time.monotonic() - self.started

    def on_line(self, line):
        # The guest prints a newline before each marker (so that a marker never shares
        # a line with unfinished output); that blank line is noise.
        if not line.strip():
            self.blank_pending = True
            return
        if not line.startswith(MARKER):
            if PANIC_PATTERN.search(line):
                self.problems.append(f"guest kernel: {line.strip()}")
            if self.blank_pending:
                print(flush=False)
            self.blank_pending = False
            print(line, flush=True)
            return
        self.blank_pending = False
        kind, _, rest = line[len(MARKER):].partition(" ")
        fields = rest.split()
        if kind == "READY":
            log(f"guest init ready after {self.elapsed():.1f}s ({rest})")
        elif kind == "FIRST-TEST":
            log(f"boot-to-first-test: {self.elapsed():.1f}s on the host clock ({rest} in the guest)")
        elif kind == "START":
            self.current = (fields[0], fields[1], time.monotonic())
            self.next_slow_notice = SLOW_TEST_NOTICE_SECONDS
        elif kind == "END":
            label, test, status = fields[0], fields[1], int(fields[2])
            seconds = time.monotonic() - self.current[2] if self.current else 0.0
            self.current = None
            ok = status == 0
            self.results.append((label, test, ok, seconds))
            verdict = "ok    " if ok else "FAILED"
            log(f"{verdict} {label} {test} ({seconds:.1f}s)" + ("" if ok else f" exit status {status}"))
        elif kind == "DONE":
            values = dict(field.split("=", 1) for field in fields)
            self.done = (int(values["passed"]), int(values["failed"]))
        elif kind == "PAYLOAD-EXIT":
            self.payload_status = int(rest.split("=", 1)[1])
        elif kind == "HOT-DISK-ADD":
            if self.hot_disk_added:
                self.problems.append("a second test asked for the hot disk: a run has one")
            elif self.hot_disk is None:
                self.problems.append("a test asked for a hot disk: run scripts/vm-test with --hot-disk")
                log("a test asked for a hot disk, but this run has none (scripts/vm-test --hot-disk)")
            else:
                log(f"adding the hot disk in {HOT_DISK_DELAY_SECONDS:.0f}s")
                timer = threading.Timer(HOT_DISK_DELAY_SECONDS, add_hot_disk, self.hot_disk)
                timer.daemon = True
                timer.start()
                # One disk per run: a second request is a problem of its own.
                self.hot_disk = None
                self.hot_disk_added = True
        elif kind == "FATAL":
            self.problems.append(f"guest init: {rest}")
            log(f"guest init failed: {rest}")
        else:
            print(line, flush=True)


def stream(process, run, timeout):
    """Echo the console line by line until QEMU exits or the deadline passes."""
    deadline = run.started + timeout
    pending = b""
    fd = process.stdout.fileno()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        ready, _, _ = select.select([fd], [], [], min(remaining, 5.0))
        if not ready:
            run.report_slow_test()
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            if pending:
                run.on_line(pending.decode(errors="replace").rstrip("\r"))
            return True
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for raw in lines:
            run.on_line(raw.decode(errors="replace").rstrip("\r"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernel", required=True)
    parser.add_argument("--initrd", required=True)
    parser.add_argument("--disk", action="append", default=[])
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--mode", choices=("test", "demo"), default="test")
    parser.add_argument("--accel", default="tcg")
    parser.add_argument("--hot-disk", help="a blank image the host hot-adds when a test asks (HOT-DISK-ADD)")
    parser.add_argument("--tpm-state", help="attach a software TPM 2.0 (swtpm) keeping its state here")
    args = parser.parse_args()

    args.monitor_socket = f"{args.hot_disk}.monitor" if args.hot_disk else None
    run = Run(args.mode, (args.monitor_socket, args.hot_disk) if args.hot_disk else None)
    swtpm, args.tpm_socket = start_swtpm(args.tpm_state) if args.tpm_state else (None, None)
    try:
        command = qemu_command(args)
        log(f"booting: {' '.join(command)}")
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        try:
            finished = stream(process, run, args.timeout)
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()
    finally:
        if swtpm is not None:
            stop_swtpm(swtpm)

    if not finished:
        run.problems.append(f"timed out after {args.timeout:.0f}s (raise it with --timeout)")
    if run.current is not None:
        # The guest died or timed out in the middle of a test: that test failed.
        label, test, test_started = run.current
        run.results.append((label, test, False, time.monotonic() - test_started))
        run.problems.append(f"{label} {test} never finished")
    elif run.payload_status is None and not run.problems:
        run.problems.append(f"QEMU exited (status {process.returncode}) before the guest finished")

    log(f"guest run took {run.elapsed():.1f}s")
    if args.mode == "demo":
        if run.payload_status not in (None, 0):
            run.problems.append(f"demo payload exited with status {run.payload_status}")
        for problem in run.problems:
            log(f"ERROR: {problem}")
        return 1 if run.problems else 0

    # Test mode: count from our own per-test lines and cross-check the guest's tally.
    passed = sum(1 for result in run.results if result[2])
    failed = len(run.results) - passed
    if run.done is None and finished and not run.problems:
        run.problems.append("the guest never printed its final DONE marker")
    if run.done is not None and run.done != (passed, failed):
        run.problems.append(f"guest tally {run.done} differs from the host's ({passed}, {failed})")
    if passed + failed == 0 and not run.problems:
        run.problems.append("no root test ran")
    for label, test, ok, _ in run.results:
        if not ok:
            log(f"failed: {label} {test}")
    for problem in run.problems:
        log(f"ERROR: {problem}")
    print(f"{passed} passed, {failed} failed", flush=True)
    return 1 if failed or run.problems else 0


if __name__ == "__main__":
    sys.exit(main())
