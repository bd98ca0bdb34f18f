#!/usr/bin/env python3
"""Live heap by allocation site at a process's largest heap after a given time.

heaptrack_print reports the peak of the whole run; for dprepo that is always Argon2id's
64 MiB during key derivation. This reads heaptrack's data file itself and reports what
was live at the largest heap from AFTER_MS on.

    heaptrack -o /tmp/hv dprepo verify --read-data
    python3 benches/compare/heap_at_peak.py /tmp/hv.zst 3000 [FRAMES]

Each row: MiB live, then the first FRAMES (default 3) frames outside the allocator and
std; more frames tell apart allocations made by the same function for different callers
(e.g. 7 for `dprepo verify`: index lists against pack headers).
"""
import collections
import subprocess
import sys

SKIP = ("alloc::", "core::", "std::", "<alloc", "<core", "hashbrown", "<hashbrown",
        "__rust", "<std", "malloc", "operator new")


def main():
    path = sys.argv[1]
    after_ms = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    depth = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    lines = subprocess.run(["zstdcat", path], capture_output=True, text=True,
                           check=True).stdout.splitlines()
    strings, ips, traces = [None], [None], [(0, 0)]
    for line in lines:
        if line.startswith("s "):
            strings.append(line.split(" ", 2)[2])
        elif line.startswith("i "):
            ips.append([int(x, 16) for x in line.split()[1:]])
        elif line.startswith("t "):
            p = line.split()
            traces.append((int(p[1], 16), int(p[2], 16)))

    def replay(stop_at=None):
        """Heap size over the run: (peak bytes, event number, ms), or the live
        allocations (by allocation-info index) at event `stop_at`."""
        live, now, events, peak = 0, 0, 0, (0, 0, 0)
        infos, counts = [], collections.Counter()
        for line in lines:
            kind = line[:1]
            if kind == "a":
                p = line.split()
                infos.append((int(p[1], 16), int(p[2], 16)))
            elif kind == "+":
                i = int(line[2:], 16)
                live += infos[i][0]
                events += 1
                counts[i] += 1
                if now >= after_ms and live > peak[0]:
                    peak = (live, events, now)
                if events == stop_at:
                    return infos, counts
            elif kind == "-":
                i = int(line[2:], 16)
                live -= infos[i][0]
                counts[i] -= 1
            elif kind == "c":
                now = int(line[2:], 16)
        return infos, peak

    _, peak = replay()
    print(f"largest heap after {after_ms} ms: {peak[0] / 2**20:.1f} MiB at {peak[2]} ms")
    infos, counts = replay(peak[1])

    def frames(trace):
        out = []
        while trace:
            ip, trace = traces[trace]
            info = ips[ip]
            if len(info) > 2 and strings[info[2]]:
                out.append(strings[info[2]])
        return out

    by_site = collections.Counter()
    for i, n in counts.items():
        if n > 0:
            size, trace = infos[i]
            own = [f for f in frames(trace) if not f.startswith(SKIP)]
            by_site[" < ".join(f[:90] for f in own[:depth])] += size * n
    for site, size in by_site.most_common(25):
        print(f"{size / 2**20:7.2f} {site}")


if __name__ == "__main__":
    main()
