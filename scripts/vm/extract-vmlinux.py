#!/usr/bin/env python3
"""Extract the uncompressed ELF kernel (vmlinux) from a bzImage.

Usage: extract-vmlinux.py BZIMAGE OUTPUT

Why: under TCG emulation the guest spends many seconds running the bzImage's own xz
decompressor before the kernel proper starts. Debian's kernel has CONFIG_PVH=y, so QEMU
can boot the plain ELF directly through its PVH entry point and skip that step. The
payload is found by its compression magic, as the kernel's scripts/extract-vmlinux does.
"""

import gzip
import lzma
import sys
import zlib

ELF_MAGIC = b"\x7fELF"


def candidates(image):
    """(name, decompress function) for every compressed stream start in the image."""
    for magic, name in ((b"\xfd7zXZ\x00", "xz"), (b"\x1f\x8b\x08", "gzip")):
        start = image.find(magic)
        while start != -1:
            yield name, start
            start = image.find(magic, start + 1)


def decompress(name, data):
    if name == "xz":
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data)
    return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data)


def main():
    source, output = sys.argv[1], sys.argv[2]
    image = open(source, "rb").read()
    for name, start in candidates(image):
        try:
            kernel = decompress(name, image[start:])
        except (lzma.LZMAError, zlib.error, gzip.BadGzipFile, EOFError):
            continue
        if kernel.startswith(ELF_MAGIC):
            with open(output, "wb") as out:
                out.write(kernel)
            return 0
    print(f"no xz or gzip compressed ELF kernel found in {source}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
