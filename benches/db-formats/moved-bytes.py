#!/usr/bin/env python3
"""How much of a dump is new against the previous one, and where: the floor under what any
chunk size can store.

    moved-bytes.py OLD NEW [OLD NEW ...]

Cuts both files into tiny content-defined pieces (a boundary where a hash of three bytes
has 8 chosen bits zero: about 200 bytes on RDB files, fewer on zero-rich BSON) and counts
the bytes of NEW in pieces OLD does not have, and the runs they form. Few long runs mean
data moved (reordered keys, shifted segments); many short runs mean values changed in
place. Needs numpy (PyPI).
"""
import sys

import numpy as np


def pieces(path):
    b = np.fromfile(path, dtype=np.uint8)
    u = np.uint32
    h = (b[:-2].astype(u) * u(2654435761)) ^ (b[1:-1].astype(u) * u(40503)) ^ (b[2:].astype(u) * u(97))
    cut = np.nonzero(((h >> u(7)) & u(255)) == 0)[0] + 3
    starts = np.concatenate(([0], cut))
    ends = np.concatenate((cut, [len(b)]))
    return b.tobytes(), starts, ends


def main():
    args = sys.argv[1:]
    if not args or len(args) % 2:
        sys.exit(__doc__)
    for old_path, new_path in zip(args[::2], args[1::2]):
        r1, s1, e1 = pieces(old_path)
        r2, s2, e2 = pieces(new_path)
        old = set(r1[s:e] for s, e in zip(s1, e1))
        new = np.array([r2[s:e] not in old for s, e in zip(s2, e2)])
        runs, cur = [], 0
        for s, e, n in zip(s2, e2, new):
            if n:
                cur += e - s
            elif cur:
                runs.append(cur)
                cur = 0
        if cur:
            runs.append(cur)
        runs = np.array(runs or [0])
        total = int((e2 - s2)[new].sum())
        print(
            f"{new_path}: {len(r2)} B, pieces of {len(r2) / len(s2):.0f} B on average; "
            f"new {total} B ({100 * total / len(r2):.1f}%) in {len(runs)} runs "
            f"(median {np.median(runs):.0f} B, 99th percentile {np.percentile(runs, 99):.0f} B, "
            f"longest {runs.max()} B)"
        )


if __name__ == "__main__":
    main()
