#!/usr/bin/env python3
"""Checksum manifest of a tree, and comparison of two manifests.

manifest.py make TREE OUT      one line per entry, sorted by path:
                               path, type, permission bits, size, sha256 or link
                               target, mtime (whole seconds; files and links only)
manifest.py compare A B        exit 0 when type, mode and content agree for every
                               path; mtime differences are reported, not failed
"""
import hashlib
import os
import stat
import sys


def make(root, out):
    rows = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            perm = oct(stat.S_IMODE(st.st_mode))
            if stat.S_ISLNK(st.st_mode):
                rows.append((rel, "l", perm, "0", os.readlink(p), str(int(st.st_mtime))))
            elif stat.S_ISDIR(st.st_mode):
                rows.append((rel, "d", perm, "0", "-", "-"))
            elif stat.S_ISREG(st.st_mode):
                h = hashlib.sha256()
                with open(p, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
                rows.append((rel, "f", perm, str(st.st_size), h.hexdigest(), str(int(st.st_mtime))))
            else:
                rows.append((rel, "o", perm, "0", "-", "-"))
    rows.sort()
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        for r in rows:
            f.write("\t".join(x.replace("\t", "\\t").replace("\n", "\\n") for x in r) + "\n")
    os.replace(tmp, out)
    return len(rows)


def load(path):
    d = {}
    with open(path) as f:
        for line in f:
            r = line.rstrip("\n").split("\t")
            d[r[0]] = r[1:]
    return d


def compare(a_path, b_path):
    a, b = load(a_path), load(b_path)
    missing = sorted(set(a) - set(b))
    extra = sorted(set(b) - set(a))
    content = [p for p in a if p in b and a[p][:4] != b[p][:4]]
    mtime = [p for p in a if p in b and a[p][:4] == b[p][:4] and a[p][4] != b[p][4]]
    ok = not (missing or extra or content)
    print(f"entries {len(a)} vs {len(b)}: missing {len(missing)}, extra {len(extra)}, "
          f"type/mode/content differ {len(content)}, mtime differs {len(mtime)}")
    for label, lst in (("missing", missing), ("extra", extra), ("differs", content), ("mtime", mtime)):
        for p in lst[:5]:
            print(f"  {label}: {p} {a.get(p)} {b.get(p)}")
    return ok, len(mtime)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "make":
        print(f"{make(sys.argv[2], sys.argv[3])} entries")
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        ok, _ = compare(sys.argv[2], sys.argv[3])
        sys.exit(0 if ok else 1)
    else:
        sys.exit(__doc__)
