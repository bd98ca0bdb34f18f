//! PostgreSQL end to end through the datasafed interface, with a real server, the way the
//! KubeBlocks PostgreSQL addon drives it: `pg_basebackup -Ft -Xfetch -D - | datasafed
//! push -z zstd-fastest - /base/NAME.tar.zst` for base backups, an `archive_command`
//! pushing every finished WAL segment to `/wal/YYYYMMDD/SEGMENT.zst`, and a restore into
//! a new data directory that pulls the base backup, fetches segments through
//! `restore_command`, and stops at a `recovery_target_time`.
//!
//! Needs Debian's `postgresql` package (initdb, pg_ctl, psql, pg_basebackup, pgbench);
//! see `dbserver` for users, sandboxes and the opt-out.

mod common;
mod dbserver;

use dbserver::*;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The PostgreSQL binaries: `DPREPO_TEST_PG_BIN`, else the newest
/// `/usr/lib/postgresql/<version>/bin` (Debian's layout).
fn pg_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("DPREPO_TEST_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, p)| p)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

/// Whether the PostgreSQL tests run (see [`db_tests_enabled`]).
fn postgres_available(test: &str) -> Option<PathBuf> {
    let bin = pg_bin_dir();
    let mut programs = ["initdb", "pg_ctl", "psql", "pg_basebackup", "pgbench"]
        .map(|p| bin.join(p))
        .to_vec();
    programs.push(PathBuf::from("/usr/bin/zstd"));
    db_tests_enabled(test, &programs, "postgresql zstd").then_some(bin)
}

/// A PostgreSQL cluster in `<sandbox>/<name>`, listening on a private port on 127.0.0.1
/// and on a unix socket in the sandbox root. Dropping it stops a running server
/// (immediate mode) and, when the test is failing, prints the end of the server log.
struct PgServer<'a> {
    sb: &'a Sandbox,
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    log: PathBuf,
    running: bool,
}

impl<'a> PgServer<'a> {
    /// A new cluster made by `initdb` (trust authentication, superuser `postgres`), with
    /// `settings` appended to its `postgresql.conf`.
    fn init(sb: &'a Sandbox, bin: &Path, name: &str, settings: &str) -> PgServer<'a> {
        let data = sb.mkdir(name);
        let out = sb
            .cmd(bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
            .arg("-D")
            .arg(&data)
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let server = PgServer::existing(sb, bin, name);
        server.configure(settings);
        server
    }

    /// The cluster whose data directory `<sandbox>/<name>` already exists (restored), on
    /// a fresh port.
    fn existing(sb: &'a Sandbox, bin: &Path, name: &str) -> PgServer<'a> {
        let server = PgServer {
            sb,
            bin: bin.to_path_buf(),
            data: sb.path(name),
            port: free_port(),
            log: sb.path(&format!("{name}.log")),
            running: false,
        };
        server.configure(&format!(
            "port = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n",
            server.port,
            sb.root().display()
        ));
        server
    }

    /// Append `settings` to `postgresql.conf` (later lines win).
    fn configure(&self, settings: &str) {
        let conf = self.data.join("postgresql.conf");
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(&conf)
            .unwrap_or_else(|e| panic!("open {}: {e}", conf.display()));
        writeln!(f, "\n# dprepo end-to-end test\n{settings}").expect("write postgresql.conf");
    }

    fn pg_ctl(&self, args: &[&str]) -> std::process::Output {
        self.sb
            .cmd(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log)
            .args(args)
            .output()
            .expect("run pg_ctl")
    }

    /// Start the server and wait until it accepts connections.
    fn start(&mut self) {
        let out = self.pg_ctl(&["-w", "-t", "300", "start"]);
        self.running = true;
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}{}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tail(&self.log, 40)
        );
    }

    /// Stop the server (fast shutdown: a clean checkpoint).
    fn stop(&mut self) {
        let out = self.pg_ctl(&["-w", "-t", "300", "-m", "fast", "stop"]);
        assert!(
            out.status.success(),
            "pg_ctl stop failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.running = false;
    }

    /// `-h SOCKET_DIR -p PORT -U postgres` for the client programs.
    fn conn_args(&self) -> String {
        format!(
            "-h '{}' -p {} -U postgres",
            self.sb.root().display(),
            self.port
        )
    }

    /// Run `sql` through psql's stdin (so each statement outside BEGIN/COMMIT commits on
    /// its own), stopping at the first error; returns the unaligned, tuples-only output.
    fn psql(&self, sql: &str) -> String {
        let out = self.try_psql(sql);
        assert!(
            out.status.success(),
            "psql failed ({}):\n{sql}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim_end().to_string()
    }

    fn try_psql(&self, sql: &str) -> std::process::Output {
        let mut child = self
            .sb
            .cmd(self.bin.join("psql"))
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                "postgres",
            ])
            .arg("-h")
            .arg(self.sb.root())
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn psql");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(sql.as_bytes())
            .expect("write SQL to psql");
        child.wait_with_output().expect("wait for psql")
    }

    /// Poll `sql` until it returns `want`, panicking with the server log after `limit`.
    fn wait_for(&self, sql: &str, want: &str, limit: Duration, what: &str) {
        let start = Instant::now();
        loop {
            let out = self.try_psql(sql);
            let got = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if out.status.success() && got == want {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "{what}: `{sql}` still gives {got:?} (stderr: {}) after {limit:?}; server log:\n{}",
                String::from_utf8_lossy(&out.stderr).trim(),
                tail(&self.log, 40)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for PgServer<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- end of PostgreSQL log {} ---\n{}",
                self.log.display(),
                tail(&self.log, 60)
            );
        }
        if self.running {
            let _ = self.pg_ctl(&["-w", "-m", "immediate", "stop"]);
        }
    }
}

/// `SELECT` of every row of the PITR table, in id order, one line per row.
const ALL_ROWS: &str =
    "SELECT id, phase, n, coalesce(payload, '<null>'), committed_at FROM pitr_rows ORDER BY id;";

/// `count` single-row INSERTs of `phase`, each its own transaction, stamped with the
/// clock at insert time; a `pg_switch_wal()` after every `switch_every` rows so that
/// several segments go through the archive.
fn inserts(phase: &str, count: u32, switch_every: u32) -> String {
    let mut sql = String::new();
    for n in 1..=count {
        sql.push_str(&format!(
            "INSERT INTO pitr_rows (phase, n, payload) VALUES ('{phase}', {n}, md5('{phase}{n}'));\n"
        ));
        if n % switch_every == 0 {
            sql.push_str("SELECT pg_switch_wal() IS NOT NULL;\n");
        }
    }
    sql
}

/// Base backup through `datasafed push`, WAL archived through `datasafed push`, then a
/// restore into a new data directory recovered to a time between two commits: exactly
/// the rows committed before that time are there, with their values at that time.
#[test]
fn point_in_time_restore_through_datasafed_has_exactly_the_rows_committed_before_the_target() {
    let Some(bin) = postgres_available("postgres point-in-time restore") else {
        return;
    };
    let sb = Sandbox::new("postgres", std::slice::from_ref(&bin));
    sb.write_script("pg-archive-wal", include_str!("dbserver/pg-archive-wal.sh"));
    sb.write_script("pg-restore-wal", include_str!("dbserver/pg-restore-wal.sh"));

    let mut src = PgServer::init(
        &sb,
        &bin,
        "source",
        "archive_mode = on\narchive_command = 'pg-archive-wal %p %f'\nfsync = off\n",
    );
    src.start();
    src.psql(
        "CREATE TABLE pitr_rows (id bigserial PRIMARY KEY, phase text NOT NULL, n int NOT NULL, \
         payload text, committed_at timestamptz NOT NULL DEFAULT clock_timestamp());\n\
         INSERT INTO pitr_rows (phase, n, payload) \
         SELECT 'before-base', g, repeat(md5(g::text), 8) FROM generate_series(1, 2000) g;",
    );

    // The base backup, as the addon's pg-basebackup ActionSet takes it.
    sb.sh_ok(&format!(
        "pg_basebackup {} -Ft -c fast -Xfetch -D - | datasafed push -z zstd-fastest - /base/base-1.tar.zst",
        src.conn_args()
    ));

    // Writes after the base backup, only recoverable from the WAL archive: new rows, an
    // update and a delete of rows the base backup holds, in separate transactions.
    let mut before_target = inserts("after-base", 40, 15);
    before_target.push_str(
        "UPDATE pitr_rows SET payload = NULL WHERE phase = 'before-base' AND n <= 10;\n\
         DELETE FROM pitr_rows WHERE phase = 'before-base' AND n > 1990;\n",
    );
    src.psql(&before_target);

    // The target lies between two commits, a clear second from each.
    std::thread::sleep(Duration::from_millis(1200));
    let target = src.psql("SELECT clock_timestamp();");
    let expected = src.psql(ALL_ROWS);
    std::thread::sleep(Duration::from_millis(1200));

    let mut after_target = inserts("after-target", 30, 10);
    after_target.push_str(
        "UPDATE pitr_rows SET payload = 'changed after the target' WHERE phase = 'after-base';\n\
         DELETE FROM pitr_rows WHERE phase = 'before-base' AND n <= 100;\n",
    );
    src.psql(&after_target);
    let last_segment = src.psql("SELECT pg_walfile_name(pg_switch_wal());");
    src.wait_for(
        &format!(
            "SELECT coalesce(last_archived_wal, '') >= '{last_segment}' FROM pg_stat_archiver;"
        ),
        "t",
        Duration::from_secs(180),
        "WAL archiving",
    );
    let archiver = src.psql("SELECT archived_count, failed_count FROM pg_stat_archiver;");
    let final_rows = src.psql(ALL_ROWS);
    src.stop();
    assert_ne!(
        final_rows, expected,
        "the writes after the target time changed nothing"
    );
    let wal_files = sb.sh_ok("datasafed list -r /wal/");
    eprintln!(
        "archived (archived_count|failed_count) {archiver}; target time {target}; \
         {} rows before the target, {} at the end; WAL archive:\n{wal_files}",
        expected.lines().count(),
        final_rows.lines().count()
    );

    // Restore into a new data directory, as the addon's restore does, and recover to
    // the target time.
    sb.mkdir("restored");
    sb.sh_ok(
        "datasafed pull -d zstd-fastest /base/base-1.tar.zst - | tar -xf - -C restored\n\
         touch restored/recovery.signal",
    );
    let mut restored = PgServer::existing(&sb, &bin, "restored");
    restored.configure(&format!(
        "archive_mode = off\nrestore_command = 'pg-restore-wal %f %p'\n\
         recovery_target_time = '{target}'\nrecovery_target_action = 'promote'\n"
    ));
    restored.start();
    restored.wait_for(
        "SELECT pg_is_in_recovery();",
        "f",
        Duration::from_secs(300),
        "recovery to the target time",
    );
    let log = fs::read_to_string(&restored.log).unwrap_or_default();
    assert!(
        log.contains("recovery stopping before commit"),
        "recovery did not stop at the target time but at the end of the archive:\n{}",
        tail(&restored.log, 40)
    );
    let got = restored.psql(ALL_ROWS);
    restored.stop();
    if got != expected {
        let (g, e): (Vec<&str>, Vec<&str>) = (got.lines().collect(), expected.lines().collect());
        let missing: Vec<_> = e.iter().filter(|l| !g.contains(l)).take(10).collect();
        let extra: Vec<_> = g.iter().filter(|l| !e.contains(l)).take(10).collect();
        panic!(
            "restored rows differ from the rows committed before {target}: {} instead of {} rows; \
             missing (first 10): {missing:#?}; unexpected (first 10): {extra:#?}",
            g.len(),
            e.len()
        );
    }
}

/// The stored bytes of a base backup pushed through datasafed: the new snapshots and
/// the summary fields that measure them.
struct Pushed {
    total: u64,
    added: u64,
    stored: u64,
}

/// Push a base backup of `server` as `/base/<name>.tar.zst`, keeping a copy of the
/// stream in `<sandbox>/<name>.tar`; returns what the new snapshot(s) added.
fn push_base_backup(sb: &Sandbox, server: &PgServer, name: &str) -> Pushed {
    let before = sb.snapshots();
    sb.sh_ok(&format!(
        "pg_basebackup {} -Ft -c fast -Xfetch -D - | tee {name}.tar \
         | datasafed push -z zstd-fastest - /base/{name}.tar.zst",
        server.conn_args()
    ));
    let new = new_snapshots(&before, &sb.snapshots());
    assert!(!new.is_empty(), "pushing {name} made no snapshot");
    Pushed {
        total: fs::metadata(sb.path(&format!("{name}.tar")))
            .expect("stat base backup copy")
            .len(),
        added: summary_sum(&new, "bytes_added"),
        stored: summary_sum(&new, "bytes_stored"),
    }
}

/// A second base backup after a small change stores far less than the first: the
/// unchanged pages of the stream are found in the repository.
#[test]
fn second_base_backup_after_a_small_change_stores_far_fewer_bytes() {
    let Some(bin) = postgres_available("postgres base backup deduplication") else {
        return;
    };
    let sb = Sandbox::new("postgres", std::slice::from_ref(&bin));
    // No autovacuum: it would rewrite pages between the backups at its own pace.
    let mut pg = PgServer::init(&sb, &bin, "db", "fsync = off\nautovacuum = off\n");
    pg.start();
    sb.sh_ok(&format!("pgbench {} -i -s 10 -q postgres", pg.conn_args()));

    let first = push_base_backup(&sb, &pg, "base-1");
    // A small change: 2000 TPC-B-like transactions on the first 20000 of the 1M accounts
    // (about 330 of the table's 16400 pages). The built-in TPC-B script scatters its
    // updates over every page of the 130 MB table, so with 512 KiB stream chunks nearly
    // every chunk changes (measured: the second backup then adds 91% of the first);
    // that case is for page-aware chunking and its benchmark, not for this test.
    fs::write(
        sb.path("narrow.sql"),
        "\\set aid random(1, 20000)\n\\set delta random(-5000, 5000)\n\
         BEGIN;\n\
         UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;\n\
         INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 1, :aid, :delta, CURRENT_TIMESTAMP);\n\
         END;\n",
    )
    .expect("write pgbench script");
    sb.give(&sb.path("narrow.sql"), 0o644);
    sb.sh_ok(&format!(
        "pgbench {} -n -t 2000 -f narrow.sql postgres",
        pg.conn_args()
    ));
    let second = push_base_backup(&sb, &pg, "base-2");
    pg.stop();

    eprintln!(
        "base backup 1: {} bytes streamed, {} bytes added, {} bytes stored\n\
         base backup 2: {} bytes streamed, {} bytes added, {} bytes stored ({:.1}% of the first's added bytes)",
        first.total,
        first.added,
        first.stored,
        second.total,
        second.added,
        second.stored,
        100.0 * second.added as f64 / first.added.max(1) as f64
    );
    assert!(
        first.added > first.total / 2,
        "the first base backup added only {} of {} bytes to an empty repository",
        first.added,
        first.total
    );
    // Measured with the 512 KiB-average stream chunker: the second adds about 7% of the
    // first (mostly the WAL segment the backup carries); a quarter leaves room for WAL
    // that spans two segments.
    assert!(
        second.added < first.added / 4,
        "the second base backup added {} bytes, not far less than the first's {}",
        second.added,
        first.added
    );

    // The deduplicated backup reads back byte for byte.
    sb.sh_ok(
        "datasafed pull -d zstd-fastest /base/base-2.tar.zst - | cmp - base-2.tar\n\
         datasafed pull /base/base-2.tar.zst - | zstd -dc | cmp - base-2.tar",
    );
}

/// KubeBlocks lays every backup out as `<root>/<ns>/<policy>/<backup>/<target>/<backup>.tar.zst`
/// under a new backup name each time. The second base backup must still find the first
/// as its parent and store its changed pages as deltas: at most 30% of what datasafed
/// itself stores for that backup (the whole stream at zstd-fastest), after 1000
/// transactions of pgbench's own TPC-B script, which scatters updates over every page.
/// The first base backup must cost about what restic's does: with a chunk per 8 KiB page
/// it stored 1.57 times datasafed's bytes (ids per blob, pages compressed alone); in
/// 128 KiB page groups at most 1.10 times (restic 0.14 stores 1.08 times at scale 40).
#[test]
fn kubeblocks_layout_second_base_backup_stores_a_fraction_of_what_datasafed_stores() {
    let Some(bin) = postgres_available("postgres base backups in KubeBlocks' layout") else {
        return;
    };
    let sb = Sandbox::new("postgres", std::slice::from_ref(&bin));
    let mut pg = PgServer::init(&sb, &bin, "db", "fsync = off\nautovacuum = off\n");
    pg.start();
    sb.sh_ok(&format!("pgbench {} -i -s 10 -q postgres", pg.conn_args()));

    // As the addon's backup script runs in the Job KubeBlocks builds: the base path is
    // the backup's directory plus the target's relative path.
    let push = |backup: &str| {
        let before = sb.snapshots();
        sb.sh_ok(&format!(
            "export DATASAFED_BACKEND_BASE_PATH=/ns/pg-cluster-postgresql-backup-policy/{backup}/postgresql\n\
             pg_basebackup {} -Ft -c fast -Xfetch -D - | tee {backup}.tar \
             | datasafed push -z zstd-fastest - /{backup}.tar.zst",
            pg.conn_args()
        ));
        let new = new_snapshots(&before, &sb.snapshots());
        assert_eq!(new.len(), 1, "pushing {backup}: {new:?}");
        new.into_iter().next().unwrap_or_default()
    };
    let first = push("pg-backup-20261207010000");
    sb.sh_ok(&format!("pgbench {} -n -t 1000 postgres", pg.conn_args()));
    let second = push("pg-backup-20261207020000");
    pg.stop();

    assert_eq!(
        second["parent"], first["id"],
        "the second base backup did not take the first as its parent: {second}"
    );
    eprintln!("first: {}\nsecond: {}", first["summary"], second["summary"]);
    let zstd_fastest = |tar: &str| -> u64 {
        sb.sh_ok(&format!("zstd -1 -c {tar} | wc -c"))
            .trim()
            .parse()
            .expect("compressed size")
    };
    let first_stored = first["summary"]["bytes_stored"]
        .as_u64()
        .unwrap_or(u64::MAX);
    let first_datasafed = zstd_fastest("pg-backup-20261207010000.tar");
    eprintln!(
        "first base backup in KubeBlocks' layout: {first_stored} bytes stored; \
         datasafed (zstd-fastest) would store {first_datasafed} bytes ({:.2}x)",
        first_stored as f64 / first_datasafed as f64
    );
    assert_eq!(
        first["chunker"]["tar_page_size"], 131_072,
        "cut in page groups: {first}"
    );
    assert!(
        first_stored * 10 <= first_datasafed * 11,
        "the first base backup stored {first_stored} bytes, more than 1.10 times datasafed's {first_datasafed}"
    );
    let stored = second["summary"]["bytes_stored"]
        .as_u64()
        .unwrap_or(u64::MAX);
    // What datasafed stores for the same push: the stream compressed at zstd-fastest.
    let datasafed_bytes = zstd_fastest("pg-backup-20261207020000.tar");
    eprintln!(
        "second base backup in KubeBlocks' layout: {stored} bytes stored, {} deltas; \
         datasafed (zstd-fastest) would store {datasafed_bytes} bytes ({:.1}%)",
        second["summary"]["deltas_added"],
        100.0 * stored as f64 / datasafed_bytes as f64
    );
    assert!(
        second["summary"]["deltas_added"].as_u64().unwrap_or(0) > 0,
        "no page deltas: {second}"
    );
    assert!(
        stored * 10 <= datasafed_bytes * 3,
        "the second base backup stored {stored} bytes, more than 30% of datasafed's {datasafed_bytes}"
    );
    sb.sh_ok(
        "export DATASAFED_BACKEND_BASE_PATH=/ns/pg-cluster-postgresql-backup-policy/pg-backup-20261207020000/postgresql\n\
         datasafed pull -d zstd-fastest /pg-backup-20261207020000.tar.zst - | cmp - pg-backup-20261207020000.tar",
    );
}
