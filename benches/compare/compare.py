#!/usr/bin/env python3
"""Side-by-side comparison of dprepo, restic and borg on one machine, in one run.

  python3 benches/compare/compare.py [--out DIR] [--tools dprepo,restic,borg]

Data sets come from benches/compare/prepare.sh (run first; compare.py runs it
when a marker is missing). Phases, in this order, each run for every tool
before the next phase starts, with the order of the tools rotated by one per
phase:

  src1     first backup of SRC (a private `cp -a` copy of the Linux tree, $OUT/tree)
  src2     incremental backup after mutate.py --seed 1 changed the copy in place
           (it then equals $BENCH/src2, checked by manifest)
  db1      stream backup of db1.tar (stdin)
  db2      stream backup of db2.tar (stdin), the incremental
  rand     backup of the directory holding 1 GiB of incompressible bytes
  restore  restore of the src1 snapshot, compared with SRC by manifest
           (type, mode bits, content; mtimes reported)
  verify   full read-verify: dprepo verify --read-data, restic check
           --read-data, borg check --verify-data

Each command runs under /usr/bin/time -f '%e %U %S %M' after `sync` and
dropping the page cache (when allowed). Repository bytes: du -sb after each
phase. Results accumulate in $OUT/results.json (a (phase, tool) already
measured is skipped, so an interrupted run resumes); tables go to
$OUT/results.md. Use a fresh --out for a clean run.

Env: DPREPO_BIN (default: target/release/dprepo of this checkout, built when
missing), DPREPO_BENCH_DIR (default /var/tmp/dprepo-bench).
"""
import argparse
import datetime
import json
import os
import shutil
import time
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKOUT = os.path.dirname(os.path.dirname(HERE))
PHASES = ["src1", "src2", "db1", "db2", "rand", "restore", "verify"]
ALL_TOOLS = ["dprepo", "restic", "borg"]
PASSWORD = "side-by-side-benchmark-password"


def log(msg):
    print(f"[compare {datetime.datetime.utcnow():%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=isinstance(cmd, str), check=True, **kw)


def du(path):
    if not os.path.exists(path):
        return 0
    out = subprocess.run(["du", "-sb", path], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


def drop_caches():
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


class Tool:
    def __init__(self, name, out, bench, dprepo_bin):
        self.name = name
        self.out = out
        self.bench = bench
        self.repo = os.path.join(out, "repos", name)
        self.cache = os.path.join(out, "cache", name)
        self.pwfile = os.path.join(out, "password")
        self.env = dict(os.environ)
        self.bin = dprepo_bin
        if name == "dprepo":
            self.bin = dprepo_bin
            self.env.update(DPREPO_REPOSITORY=self.repo, DPREPO_PASSWORD_FILE=self.pwfile,
                            DPREPO_CACHE_DIR=self.cache)
        elif name == "restic":
            self.env.update(RESTIC_REPOSITORY=self.repo, RESTIC_PASSWORD_FILE=self.pwfile,
                            XDG_CACHE_HOME=self.cache)
        elif name == "borg":
            self.env.update(BORG_REPO=self.repo, BORG_PASSPHRASE=PASSWORD,
                            BORG_BASE_DIR=self.cache, BORG_DISPLAY_PASSPHRASE="no")

    def init_cmd(self):
        return {"dprepo": [self.bin, "init"],
                "restic": ["restic", "init"],
                "borg": ["borg", "init", "-e", "repokey"]}[self.name]

    def backup_cmd(self, tag, path):
        return {"dprepo": [self.bin, "backup", "--tag", tag, path],
                "restic": ["restic", "backup", "--tag", tag, path],
                "borg": ["borg", "create", f"::{tag}", path]}[self.name]

    def stdin_cmd(self, tag):
        return {"dprepo": [self.bin, "backup", "--stdin", "--stdin-name", "db.tar", "--tag", tag],
                "restic": ["restic", "backup", "--stdin", "--stdin-filename", "db.tar", "--tag", tag],
                "borg": ["borg", "create", "--stdin-name", "db.tar", f"::{tag}", "-"]}[self.name]

    def restore_cmd(self, tag, target):
        return {"dprepo": [self.bin, "restore", "latest", "--tag", tag, "--target", target],
                "restic": ["restic", "restore", "latest", "--tag", tag, "--target", target],
                "borg": ["borg", "extract", f"::{tag}"]}[self.name]

    def verify_cmd(self):
        return {"dprepo": [self.bin, "verify", "--read-data"],
                "restic": ["restic", "check", "--read-data"],
                "borg": ["borg", "check", "--verify-data"]}[self.name]

    def version(self):
        if self.name == "dprepo":
            return subprocess.run([self.bin, "--version"], capture_output=True, text=True).stdout.strip()
        cmd = {"restic": ["restic", "version"], "borg": ["borg", "--version"]}[self.name]
        return subprocess.run(cmd, capture_output=True, text=True).stdout.strip()


def timed(tool, cmd, label, cwd, stdin_path=None, drop=True):
    """Run cmd under /usr/bin/time; return a measurement dict (rc != 0 on failure)."""
    logdir = os.path.join(tool.out, "logs")
    os.makedirs(logdir, exist_ok=True)
    tfile = os.path.join(logdir, f"{label}.{tool.name}.time")
    dropped = drop_caches() if drop else False
    load = open("/proc/loadavg").read().split()[0]
    start = datetime.datetime.utcnow()
    with open(os.path.join(logdir, f"{label}.{tool.name}.log"), "w") as lf:
        stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL
        try:
            rc = subprocess.run(["/usr/bin/time", "-f", "%e %U %S %M", "-o", tfile] + cmd,
                                cwd=cwd, env=tool.env, stdin=stdin, stdout=lf,
                                stderr=subprocess.STDOUT).returncode
        finally:
            if stdin_path:
                stdin.close()
    fields = open(tfile).read().strip().splitlines()[-1].split()
    wall, user, sys_, rss = float(fields[0]), float(fields[1]), float(fields[2]), int(fields[3])
    return {"rc": rc, "wall_s": wall, "user_s": user, "sys_s": sys_, "cpu_s": round(user + sys_, 2),
            "peak_rss_kib": rss, "page_cache_dropped": dropped, "loadavg_1m_before": float(load),
            "started_utc": start.strftime("%Y-%m-%dT%H:%M:%SZ"), "cmd": " ".join(cmd)}


def find_restored(root):
    """The restored copy of $OUT/tree: the directory named `tree` holding linux-source-6.1."""
    for dirpath, dirnames, _ in os.walk(root):
        if os.path.basename(dirpath) == "tree" and "linux-source-6.1" in dirnames:
            return dirpath
        if dirpath.count(os.sep) - root.count(os.sep) > 8:
            dirnames[:] = []
    return None


def main():
    ap = argparse.ArgumentParser(description="dprepo vs restic vs borg, side by side")
    ap.add_argument("--bench", default=os.environ.get("DPREPO_BENCH_DIR", "/var/tmp/dprepo-bench"))
    ap.add_argument("--out", default=None, help="run directory (default BENCH/compare-run)")
    ap.add_argument("--tools", default=",".join(ALL_TOOLS))
    ap.add_argument("--phases", default=",".join(PHASES),
                    help="stop after these (a prefix of the phase list is what makes sense)")
    ap.add_argument("--no-drop-caches", action="store_true")
    a = ap.parse_args()
    bench = a.bench
    out = os.path.abspath(a.out or os.path.join(bench, "compare-run"))
    tools_names = [t for t in a.tools.split(",") if t]
    phases = [p for p in a.phases.split(",") if p]
    os.makedirs(out, exist_ok=True)

    for marker in ("src/.complete", "src2/.complete", "rand/.complete", "db/README"):
        if not os.path.exists(os.path.join(bench, marker)):
            log(f"{marker} missing: running prepare.sh")
            sh([os.path.join(HERE, "prepare.sh"), "all"], env=dict(os.environ, DPREPO_BENCH_DIR=bench))
            break

    dprepo_bin = os.environ.get("DPREPO_BIN") or os.path.join(CHECKOUT, "target/release/dprepo")
    if "dprepo" in tools_names and not os.path.exists(dprepo_bin):
        log("building dprepo (cargo build --release -p dprepo-tools)")
        sh(["cargo", "build", "--release", "-p", "dprepo-tools"], cwd=CHECKOUT)

    res_path = os.path.join(out, "results.json")
    results = json.load(open(res_path)) if os.path.exists(res_path) else {"measurements": {}}
    meas = results["measurements"]

    def save():
        tmp = res_path + ".tmp"
        json.dump(results, open(tmp, "w"), indent=1, sort_keys=True)
        os.replace(tmp, res_path)

    with open(os.path.join(out, "password"), "w") as f:
        f.write(PASSWORD + "\n")
    tools = {n: Tool(n, out, bench, dprepo_bin) for n in tools_names}
    drop_ok = drop_caches() if not a.no_drop_caches else False
    env_info = results.setdefault("environment", {})
    env_info.update({
        "host_cpus": os.cpu_count(),
        "mem_total_kib": int(open("/proc/meminfo").read().split()[1]),
        "page_cache_dropped": drop_ok,
        "versions": {n: t.version() for n, t in tools.items()},
        "dprepo_bin": dprepo_bin,
    })
    try:
        env_info["checkout_commit"] = subprocess.run(
            ["git", "-C", CHECKOUT, "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True).stdout.strip()
    except OSError:
        pass
    env_info.setdefault("runs", []).append({"started_utc": datetime.datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%SZ"),
                                            "loadavg": open("/proc/loadavg").read().strip()})
    save()

    # The private source tree: a copy of SRC, mutated into SRC2 after phase src1.
    tree = os.path.join(out, "tree")
    state_file = os.path.join(out, "tree.state")
    state = open(state_file).read().strip() if os.path.exists(state_file) else None
    if state is None:
        log("copying SRC to the private tree (cp -a)")
        shutil.rmtree(tree, ignore_errors=True)
        os.makedirs(tree)
        sh(["cp", "-a", os.path.join(bench, "src", "linux-source-6.1"), tree])
        open(state_file, "w").write("src1\n")
        state = "src1"

    for t in tools.values():
        if not os.path.exists(t.repo):
            os.makedirs(os.path.dirname(t.repo), exist_ok=True)
            os.makedirs(t.cache, exist_ok=True)
            log(f"{t.name}: init")
            subprocess.run(t.init_cmd(), env=t.env, check=True, stdout=subprocess.DEVNULL)

    drop = not a.no_drop_caches
    for i, phase in enumerate(PHASES):
        if phase not in phases:
            continue
        order = tools_names[i % len(tools_names):] + tools_names[:i % len(tools_names)]
        if phase == "src2" and state == "src1":
            missing = [t for t in tools_names if f"src1/{t}" not in meas]
            if missing:
                sys.exit(f"cannot mutate the tree: src1 not measured for {missing}")
            log("mutating the private tree: mutate.py --seed 1")
            sh([sys.executable, os.path.join(HERE, "mutate.py"), os.path.join(tree, "linux-source-6.1"),
                "--seed", os.environ.get("MUTATE_SEED", "1")])
            open(state_file, "w").write("src2\n")
            state = "src2"
            m = os.path.join(out, "manifest-tree-src2.txt")
            sh([sys.executable, os.path.join(HERE, "manifest.py"), "make",
                os.path.join(tree, "linux-source-6.1"), m], stdout=subprocess.DEVNULL)
            same = subprocess.run([sys.executable, os.path.join(HERE, "manifest.py"), "compare",
                                   os.path.join(bench, "manifests", "src2.txt"), m]).returncode == 0
            results["tree_equals_src2"] = same
            save()
        if phase == "src1" and state != "src1" and any(f"src1/{t}" not in meas for t in tools_names):
            sys.exit("the private tree is already mutated; start again with a fresh --out")
        if phase == "restore":
            clear_restore_targets(out, tools_names)
        for name in order:
            key = f"{phase}/{name}"
            if key in meas and meas[key]["rc"] == 0:
                continue
            t = tools[name]
            log(f"{phase}: {name}")
            if phase in ("src1", "src2"):
                r = timed(t, t.backup_cmd(phase, "tree"), phase, out, drop=drop)
            elif phase in ("db1", "db2"):
                r = timed(t, t.stdin_cmd(phase), phase, out,
                          stdin_path=os.path.join(bench, "db", f"{phase}.tar"), drop=drop)
            elif phase == "rand":
                r = timed(t, t.backup_cmd(phase, os.path.join(bench, "rand")), phase, out, drop=drop)
            elif phase == "restore":
                target = os.path.join(out, "restore", name)
                os.makedirs(target)
                r = timed(t, t.restore_cmd("src1", target), phase, target, drop=drop)
                got = find_restored(target)
                if got is None:
                    r["restore_check"] = "restored tree not found"
                    r["rc"] = r["rc"] or 99
                else:
                    m = os.path.join(out, f"manifest-restored-{name}.txt")
                    sh([sys.executable, os.path.join(HERE, "manifest.py"), "make",
                        os.path.join(got, "linux-source-6.1"), m], stdout=subprocess.DEVNULL)
                    cmp = subprocess.run([sys.executable, os.path.join(HERE, "manifest.py"), "compare",
                                          os.path.join(bench, "manifests", "src.txt"), m],
                                         capture_output=True, text=True)
                    r["restore_identical"] = cmp.returncode == 0
                    r["restore_check"] = cmp.stdout.strip()
                    if cmp.returncode != 0:
                        log(f"restore of {name} differs from SRC:\n{cmp.stdout}")
            elif phase == "verify":
                r = timed(t, t.verify_cmd(), phase, out, drop=drop)
            r["repo_bytes"] = du(t.repo)
            r["cache_bytes"] = du(t.cache)
            prev = PHASES[i - 1] if i > 0 else None
            r["repo_bytes_added"] = r["repo_bytes"] - (meas.get(f"{prev}/{name}", {}).get("repo_bytes", 0)
                                                       if prev else 0)
            meas[key] = r
            save()
            log(f"{phase}: {name}: rc {r['rc']} wall {r['wall_s']} s cpu {r['cpu_s']} s "
                f"rss {r['peak_rss_kib'] // 1024} MiB repo {r['repo_bytes'] / 2**20:.0f} MiB")
            if r["rc"] != 0:
                log(f"{phase}: {name} FAILED, see {out}/logs/{phase}.{name}.log")
    if "restore" in phases:
        clear_restore_targets(out, tools_names, wait=False)
    env_info["runs"][-1]["ended_utc"] = datetime.datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")
    env_info["runs"][-1]["loadavg_end"] = open("/proc/loadavg").read().strip()
    save()
    md = report(results, tools_names)
    open(os.path.join(out, "results.md"), "w").write(md)
    print(md)


# ext4 passes over inodes freed in roughly the last 30 s when it allocates new ones
# (`recently_deleted`), so a restore started right after another tool's restored tree
# (84k files) was deleted paid for that deletion: 16% of its CPU samples. Restored trees
# are therefore kept until every tool has restored, and the phase starts this long after
# deleting leftovers.
RECENTLY_DELETED_S = 40


def clear_restore_targets(out, tools_names, wait=True):
    stale = [os.path.join(out, "restore", n) for n in tools_names
             if os.path.exists(os.path.join(out, "restore", n))]
    for d in stale:
        shutil.rmtree(d, ignore_errors=True)
    if stale and wait:
        log(f"waiting {RECENTLY_DELETED_S} s after deleting old restores")
        time.sleep(RECENTLY_DELETED_S)


def ratio(a, b):
    return f"{a / b:.2f}" if a is not None and b else "–"


def report(results, tools_names):
    meas = results["measurements"]
    lines = ["| phase | tool | wall s | CPU s (user+sys) | peak RSS MiB | repo MiB after | repo MiB added |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for p in PHASES:
        for t in tools_names:
            r = meas.get(f"{p}/{t}")
            if not r:
                continue
            flag = "" if r["rc"] == 0 else f" (FAILED rc {r['rc']})"
            lines.append(f"| {p} | {t}{flag} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | "
                         f"{r['peak_rss_kib'] / 1024:.0f} | {r['repo_bytes'] / 2**20:.1f} | "
                         f"{r['repo_bytes_added'] / 2**20:.1f} |")
    lines += ["", "Ratios (dprepo / peer):", "",
              "| phase | wall / restic | CPU / restic | RSS / restic | added bytes / restic "
              "| wall / borg | CPU / borg | RSS / borg | added bytes / borg |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for p in PHASES:
        d = meas.get(f"{p}/dprepo")
        if not d:
            continue
        row = [p]
        for peer in ("restic", "borg"):
            r = meas.get(f"{p}/{peer}")
            if not r:
                row += ["–"] * 4
                continue
            added = (ratio(d["repo_bytes_added"], r["repo_bytes_added"])
                     if p not in ("restore", "verify") else "–")
            row += [ratio(d["wall_s"], r["wall_s"]), ratio(d["cpu_s"], r["cpu_s"]),
                    ratio(d["peak_rss_kib"], r["peak_rss_kib"]), added]
        lines.append("| " + " | ".join(row) + " |")
    # Targets against restic.
    def get(p, t, k):
        r = meas.get(f"{p}/{t}")
        return r[k] if r and r["rc"] == 0 else None

    targets = [("first backup SRC, wall", "src1", "wall_s", 0.3),
               ("incremental SRC2, wall", "src2", "wall_s", 0.3),
               ("RAND backup, wall", "rand", "wall_s", 0.3),
               ("restore SRC, wall", "restore", "wall_s", 0.4),
               ("full read-verify, wall", "verify", "wall_s", 0.4),
               ("repo bytes after SRC", "src1", "repo_bytes", 1.0),
               ("DB incremental, stored bytes", "db2", "repo_bytes_added", 0.5)]
    targets += [(f"peak RSS, {p}", p, "peak_rss_kib", 0.7) for p in PHASES]
    lines += ["", "Targets (dprepo / restic):", "", "| target | limit | measured | met |", "|---|---:|---:|---|"]
    for label, p, k, lim in targets:
        d, r = get(p, "dprepo", k), get(p, "restic", k)
        if d is None or not r:
            lines.append(f"| {label} | ≤ {lim} | – | not measured |")
            continue
        v = d / r
        lines.append(f"| {label} | ≤ {lim} | {v:.2f} | {'yes' if v <= lim else '**no**'} |")
    checks = [f"{t}: {meas[f'restore/{t}'].get('restore_check', '')}" for t in tools_names
              if f"restore/{t}" in meas]
    if checks:
        lines += ["", "Restore check against SRC (manifest: type, mode, content; mtime reported):", ""]
        lines += [f"- {c}" for c in checks]
    env = results.get("environment", {})
    lines += ["", f"Page cache dropped before each command: {env.get('page_cache_dropped')}; "
              f"private tree equals SRC2 after mutation: {results.get('tree_equals_src2')}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
