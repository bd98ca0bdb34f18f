#!/usr/bin/env python3
"""Writes two streams of 8 KiB pages that are not a tar, for scripts/bench-db-streams.sh.

Usage: scripts/gen-page-stream.py OUT1 OUT2 [MIB] [PERMILLE]
OUT1: MIB MiB (default 200) of pages; each page is 4 KiB of random bytes and 4 KiB of
row-like text, so it compresses about 2:1 like a table. OUT2: OUT1 with PERMILLE/1000 of
its pages (default 8, i.e. 0.8%) rewritten at scattered places. Deterministic.
"""
import random
import sys


def page(rng, n):
    head = rng.randbytes(4096)
    rows, i = [], 0
    while sum(map(len, rows)) < 4096:
        rows.append(f"|row {n}.{i} status=active {head[i % 4096]}".encode())
        i += 1
    return head + b"".join(rows)[:4096]


def main():
    out1, out2 = sys.argv[1], sys.argv[2]
    mib = int(sys.argv[3]) if len(sys.argv) > 3 else 200
    permille = int(sys.argv[4]) if len(sys.argv) > 4 else 8
    pages = mib * 128
    rng = random.Random(1)
    data = bytearray()
    for n in range(pages):
        data += page(rng, n)
    open(out1, "wb").write(data)
    rewrite = random.Random(2)
    for n in rewrite.sample(range(pages), pages * permille // 1000):
        data[n * 8192:(n + 1) * 8192] = page(rewrite, n)
    open(out2, "wb").write(data)


if __name__ == "__main__":
    main()
