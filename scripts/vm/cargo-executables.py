#!/usr/bin/env python3
"""Run a cargo build command and print the executables it produced.

Usage: cargo-executables.py CARGO_ARGS...   (e.g. test --no-run -p tosskey-dm)

Runs `cargo CARGO_ARGS --message-format=json-diagnostic-rendered-ansi`, shows compiler
diagnostics on stderr as cargo normally would, and prints one line per executable on
stdout:  <test|bin> <TAB> <package>/<target> <TAB> <absolute path>
Exits with cargo's status. Parsing cargo's JSON (instead of globbing target/) is what
finds the right files whatever CARGO_TARGET_DIR, profile or hash suffix is in use.
"""

import json
import subprocess
import sys


def package_name(package_id):
    """The package name in a cargo package id spec: "path+file:///w/dm#tosskey-dm@0.1.0",
    or "path+file:///w/tosskey#0.1.0" when the name equals the directory's."""
    url, _, fragment = package_id.partition("#")
    if "@" in fragment:
        return fragment.split("@", 1)[0]
    if fragment and not fragment[0].isdigit():
        return fragment
    return url.rstrip("/").rsplit("/", 1)[-1]


def main():
    command = ["cargo", *sys.argv[1:], "--message-format=json-diagnostic-rendered-ansi"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    seen = set()
    for line in process.stdout:
        try:
            message = json.loads(line)
        except json.JSONDecodeError:
            sys.stderr.write(line)
            continue
        reason = message.get("reason")
        if reason == "compiler-message":
            rendered = message["message"].get("rendered")
            if rendered:
                sys.stderr.write(rendered)
        elif reason == "compiler-artifact" and message.get("executable"):
            path = message["executable"]
            if path in seen:
                continue
            seen.add(path)
            kind = "test" if message["profile"]["test"] else "bin"
            label = f"{package_name(message['package_id'])}/{message['target']['name']}"
            print(f"{kind}\t{label}\t{path}", flush=True)
    return process.wait()


if __name__ == "__main__":
    sys.exit(main())
