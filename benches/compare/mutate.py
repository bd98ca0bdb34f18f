#!/usr/bin/env python3
"""Apply a deterministic 2% mutation to a directory tree, in place.

The regular files of the tree, sorted by relative path, are shuffled by a
random.Random(seed); of them
  1.0% get 1-3 overwrites of 1-64 bytes each (the file is rewritten through a
       temporary file and rename, so hard links to it are broken and the
       original inode is left untouched),
  0.5% are deleted,
  0.5% get a new sibling file "<name>.bench-new" of 1-64 KiB random bytes.
Rewritten and new files get mtime = the original file's mtime + 86400 s.
Mode bits are kept. Given the same input tree and seed the result is
byte-for-byte the same, so running it on a copy of SRC reproduces SRC2.

Usage: mutate.py TREE [--seed N]     prints a one-line summary
"""
import argparse
import os
import random
import sys


def regular_files(root):
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            p = os.path.join(dirpath, name)
            if os.path.isfile(p) and not os.path.islink(p):
                out.append(os.path.relpath(p, root))
    out.sort()
    return out


def rewrite(path, data, st):
    tmp = path + ".bench-tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.chmod(tmp, st.st_mode & 0o7777)
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns + 86400 * 10**9))
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tree")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    files = regular_files(a.tree)
    if not files:
        sys.exit(f"mutate.py: no regular files under {a.tree}")
    rng = random.Random(a.seed)
    order = files[:]
    rng.shuffle(order)
    n = len(files)
    n_mod, n_del, n_add = n // 100, n // 200, n // 200
    modified = order[:n_mod]
    deleted = order[n_mod:n_mod + n_del]
    added_next_to = order[n_mod + n_del:n_mod + n_del + n_add]
    changed_bytes = 0
    for rel in modified:
        p = os.path.join(a.tree, rel)
        st = os.stat(p)
        data = bytearray(open(p, "rb").read())
        for _ in range(rng.randint(1, 3)):
            ln = rng.randint(1, 64)
            if len(data) == 0:
                data.extend(rng.randbytes(ln))
            else:
                off = rng.randrange(len(data))
                data[off:off + ln] = rng.randbytes(min(ln, len(data) - off))
            changed_bytes += ln
        rewrite(p, bytes(data), st)
    for rel in deleted:
        os.unlink(os.path.join(a.tree, rel))
    added_bytes = 0
    for rel in added_next_to:
        src = os.path.join(a.tree, rel)
        st = os.stat(src)
        data = rng.randbytes(rng.randint(1024, 65536))
        added_bytes += len(data)
        rewrite(src + ".bench-new", data, st)
    print(f"mutate.py seed={a.seed}: {n} files; modified {n_mod} (~{changed_bytes} B), "
          f"deleted {n_del}, added {n_add} ({added_bytes} B)")


if __name__ == "__main__":
    main()
