#!/usr/bin/env python3
"""Read every regular file under a tree with 8 threads, buffered or with O_DIRECT.

Measures what reading a tree of small files costs the kernel either way (benches/NOTES.md,
"Long files read past the page cache"):

    sync; echo 3 > /proc/sys/vm/drop_caches
    /usr/bin/time -f '%e s %U user %S sys' python3 read_files.py TREE buffered|direct
"""
import mmap
import os
import sys
import threading

THREADS = 8
BLOCK = 1 << 20


def main():
    root, mode = sys.argv[1], sys.argv[2]
    flags = os.O_RDONLY | (os.O_DIRECT if mode == "direct" else 0)
    files = []
    for d, _, names in os.walk(root):
        for n in names:
            p = os.path.join(d, n)
            if os.path.isfile(p) and not os.path.islink(p):
                files.append(p)
    files.sort()

    def work(k):
        buf = mmap.mmap(-1, BLOCK)  # page-aligned, as O_DIRECT needs
        for p in files[k::THREADS]:
            fd = os.open(p, flags)
            try:
                off = 0
                while True:
                    n = os.preadv(fd, [buf], off)
                    off += n
                    if n < BLOCK:
                        break
            finally:
                os.close(fd)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
