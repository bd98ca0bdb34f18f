//! MariaDB end to end through the datasafed interface, with real servers: a logical
//! backup (`mariadb-dump --single-transaction | datasafed push`) restored into a fresh
//! server (`datasafed pull | mariadb`), and a physical one (`mariabackup --backup
//! --stream=xbstream | datasafed push`, then `datasafed pull | mbstream -x`,
//! `mariabackup --prepare` and a server started on the result). Both compare every row
//! and the table checksums with the source.
//!
//! Needs Debian's `mariadb-server` and `mariadb-backup` packages; see `dbserver` for
//! users, sandboxes and the opt-out.

mod common;
mod dbserver;

use dbserver::*;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const MARIADBD: &str = "/usr/sbin/mariadbd";

/// Client option for text outside the BMP (without option files the client's default
/// character set cannot carry it).
const UTF8: &str = "--default-character-set=utf8mb4";

/// Whether the MariaDB tests run (see [`db_tests_enabled`]).
fn mariadb_available(test: &str) -> bool {
    let programs = [
        MARIADBD,
        "/usr/bin/mariadb-install-db",
        "/usr/bin/mariadb",
        "/usr/bin/mariadb-dump",
        "/usr/bin/mariadb-admin",
        "/usr/bin/mariabackup",
        "/usr/bin/mbstream",
    ]
    .map(PathBuf::from);
    db_tests_enabled(test, &programs, "mariadb-server mariadb-backup")
}

/// A private `mariadbd` on `<sandbox>/<name>`: its own socket in the sandbox, a private
/// port on 127.0.0.1, no option files read. Root logs in without a password over the
/// socket. Dropping it kills a running server and, when the test is failing, prints the
/// end of its error log.
struct MariaServer<'a> {
    sb: &'a Sandbox,
    name: String,
    child: Option<Child>,
}

impl<'a> MariaServer<'a> {
    /// A new, empty data directory made by `mariadb-install-db`.
    fn install(sb: &'a Sandbox, name: &str) -> MariaServer<'a> {
        let datadir = sb.mkdir(name);
        sb.sh_ok(&format!(
            "mariadb-install-db --no-defaults --datadir='{}' --auth-root-authentication-method=normal \
             --skip-test-db > {name}-install.log 2>&1 || {{ cat {name}-install.log >&2; exit 1; }}",
            datadir.display()
        ));
        MariaServer::existing(sb, name)
    }

    /// The data directory `<sandbox>/<name>` as it is (restored).
    fn existing(sb: &'a Sandbox, name: &str) -> MariaServer<'a> {
        MariaServer {
            sb,
            name: name.to_string(),
            child: None,
        }
    }

    fn socket(&self) -> PathBuf {
        self.sb.path(&format!("{}.sock", self.name))
    }

    fn log(&self) -> PathBuf {
        self.sb.path(&format!("{}.err", self.name))
    }

    /// `-uroot --socket=SOCKET` for the client programs.
    fn conn_args(&self) -> String {
        format!("-uroot --socket='{}'", self.socket().display())
    }

    /// Start the server and wait until it answers a ping.
    fn start(&mut self) {
        let port = free_port();
        let child = self
            .sb
            .cmd(MARIADBD)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", self.sb.path(&self.name).display()))
            .arg(format!("--socket={}", self.socket().display()))
            .arg(format!("--port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!(
                "--pid-file={}",
                self.sb.path(&format!("{}.pid", self.name)).display()
            ))
            .arg(format!("--log-error={}", self.log().display()))
            .args([
                "--skip-name-resolve",
                "--innodb-buffer-pool-size=64M",
                "--innodb-flush-log-at-trx-commit=2",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mariadbd");
        self.child = Some(child);
        let start = Instant::now();
        loop {
            let ping = self
                .sb
                .sh(&format!("mariadb-admin {} ping", self.conn_args()));
            if ping.status.success() {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!(
                    "mariadbd on {} exited with {status}; error log:\n{}",
                    self.name,
                    tail(&self.log(), 40)
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "mariadbd on {} does not answer after 120 s; error log:\n{}",
                self.name,
                tail(&self.log(), 40)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Shut the server down cleanly and wait for it to exit.
    fn stop(&mut self) {
        self.sb
            .sh_ok(&format!("mariadb-admin {} shutdown", self.conn_args()));
        if let Some(mut child) = self.child.take() {
            let status = child.wait().expect("wait for mariadbd");
            assert!(
                status.success(),
                "mariadbd exited with {status} on shutdown"
            );
        }
    }

    /// Run `sql` with the `mariadb` client (batch mode, no column names); returns stdout.
    fn sql(&self, sql: &str) -> String {
        let file = self.sb.path("query.sql");
        std::fs::write(&file, sql).expect("write query");
        self.sb.give(&file, 0o644);
        self.sb.sh_ok(&format!(
            "mariadb {} {UTF8} -N -B < query.sql",
            self.conn_args()
        ))
    }

    /// Everything the comparison looks at: the table list, every row of every table of
    /// the test database in primary-key order, `CHECKSUM TABLE ... EXTENDED`, and the
    /// definitions of the view and the trigger.
    fn contents(&self) -> String {
        let mut out = self.sql("SHOW FULL TABLES FROM shop;");
        for table in ["customers", "orders"] {
            out.push_str(&self.sql(&format!("SELECT * FROM shop.{table} ORDER BY id;")));
            out.push_str(&self.sql(&format!("CHECKSUM TABLE shop.{table} EXTENDED;")));
        }
        out.push_str(&self.sql(
            "SELECT * FROM shop.big_spenders ORDER BY customer;\n\
             SELECT VIEW_DEFINITION FROM information_schema.VIEWS WHERE TABLE_SCHEMA = 'shop';\n\
             SELECT TRIGGER_NAME, ACTION_STATEMENT FROM information_schema.TRIGGERS \
             WHERE TRIGGER_SCHEMA = 'shop';",
        ));
        out
    }
}

impl Drop for MariaServer<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- end of MariaDB error log {} ---\n{}",
                self.log().display(),
                tail(&self.log(), 60)
            );
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A test database with the types a dump must carry: utf8mb4 text (with characters
/// outside the BMP), NULLs, decimals, microsecond datetimes, binary blobs, a foreign
/// key, a view and a trigger.
const SCHEMA_AND_DATA: &str = "\
CREATE DATABASE shop CHARACTER SET utf8mb4;
USE shop;
CREATE TABLE shop.customers (
    id INT PRIMARY KEY AUTO_INCREMENT,
    name VARCHAR(100) CHARACTER SET utf8mb4 NOT NULL,
    email VARCHAR(200) NOT NULL,
    balance DECIMAL(12,2) NOT NULL,
    created DATETIME(6) NOT NULL,
    note TEXT NULL,
    avatar BLOB NULL
) ENGINE=InnoDB;
CREATE TABLE shop.orders (
    id BIGINT PRIMARY KEY AUTO_INCREMENT,
    customer INT NOT NULL,
    amount DECIMAL(12,2) NOT NULL,
    status ENUM('new','paid','shipped') NOT NULL,
    FOREIGN KEY (customer) REFERENCES shop.customers(id)
) ENGINE=InnoDB;
CREATE TRIGGER shop.orders_paid BEFORE INSERT ON shop.orders FOR EACH ROW
    SET NEW.amount = IF(NEW.amount < 0, 0, NEW.amount);
INSERT INTO shop.customers (name, email, balance, created, note, avatar)
    SELECT CONCAT('customer ', seq, ' Zoë 😀 ☃'), CONCAT('c', seq, '@example.test'),
           seq * 1.25 - 7000, TIMESTAMP'2024-01-01 00:00:00' + INTERVAL seq * 1001 MICROSECOND + INTERVAL seq MINUTE,
           IF(seq % 7 = 0, NULL, REPEAT(CONCAT('line ', seq, '\\t\\'quoted\\'\\n'), seq % 40)),
           IF(seq % 5 = 0, UNHEX(CONCAT(SHA2(seq, 256), '00FF27225C')), NULL)
    FROM (SELECT CAST(seq AS SIGNED) AS seq FROM seq_1_to_20000) s;
INSERT INTO shop.orders (customer, amount, status)
    SELECT 1 + (seq * 7919) % 20000, (seq % 1000) - 100, ELT(1 + seq % 3, 'new', 'paid', 'shipped')
    FROM (SELECT CAST(seq AS SIGNED) AS seq FROM seq_1_to_50000) s;
CREATE VIEW shop.big_spenders AS
    SELECT customer, SUM(amount) AS total FROM shop.orders GROUP BY customer HAVING SUM(amount) > 2000;
";

/// A `mariadb-dump --single-transaction` pushed through datasafed and pulled into a fresh
/// server restores every row, checksum, view and trigger of the source.
#[test]
fn logical_dump_through_datasafed_restores_every_row_into_a_fresh_server() {
    if !mariadb_available("mariadb logical dump") {
        return;
    }
    let sb = Sandbox::new("mysql", &[]);
    let mut source = MariaServer::install(&sb, "source");
    source.start();
    source.sql(SCHEMA_AND_DATA);
    let expected = source.contents();
    assert!(
        expected.lines().count() > 70_000,
        "the test data is missing"
    );

    sb.sh_ok(&format!(
        "mariadb-dump {} {UTF8} --single-transaction --routines --triggers --databases shop \
         | datasafed push -z zstd-fastest - /mariadb/shop.sql.zst",
        source.conn_args()
    ));
    source.stop();

    let mut fresh = MariaServer::install(&sb, "fresh");
    fresh.start();
    assert!(
        !fresh.sql("SHOW DATABASES;").lines().any(|d| d == "shop"),
        "the fresh server already has the database"
    );
    sb.sh_ok(&format!(
        "datasafed pull -d zstd-fastest /mariadb/shop.sql.zst - | mariadb {} {UTF8}",
        fresh.conn_args()
    ));
    let got = fresh.contents();
    fresh.stop();
    assert!(
        got == expected,
        "the restored database differs from the source ({} lines instead of {})",
        got.lines().count(),
        expected.lines().count()
    );
}

/// A physical `mariabackup --stream=xbstream` backup pushed through datasafed, pulled,
/// extracted and prepared, starts as a server holding every row of the source.
#[test]
fn physical_mariabackup_stream_through_datasafed_starts_with_every_row() {
    if !mariadb_available("mariadb physical backup") {
        return;
    }
    let sb = Sandbox::new("mysql", &[]);
    let mut source = MariaServer::install(&sb, "source");
    source.start();
    source.sql(SCHEMA_AND_DATA);
    let expected = source.contents();

    sb.mkdir("mariabackup-tmp");
    sb.sh_ok(&format!(
        "mariabackup --backup --stream=xbstream --target-dir=mariabackup-tmp {} 2> mariabackup.log \
         | datasafed push -z zstd-fastest - /mariadb/physical.xb.zst \
         || {{ tail -n 30 mariabackup.log >&2; exit 1; }}",
        source.conn_args()
    ));
    source.stop();

    sb.mkdir("restored");
    sb.sh_ok(
        "datasafed pull -d zstd-fastest /mariadb/physical.xb.zst - | mbstream -x -C restored\n\
         mariabackup --prepare --target-dir=restored > prepare.log 2>&1 \
         || { tail -n 30 prepare.log >&2; exit 1; }",
    );
    let mut restored = MariaServer::existing(&sb, "restored");
    restored.start();
    let got = restored.contents();
    restored.stop();
    assert!(
        got == expected,
        "the server on the restored physical backup differs from the source ({} lines instead of {})",
        got.lines().count(),
        expected.lines().count()
    );
}

/// Wait until InnoDB has written every changed page to its data files and purged the old
/// row versions, as a database that has been running a while between backups has: the
/// pages a backup copies are then those on disk, not stale copies plus redo log.
fn flush_innodb(server: &MariaServer) {
    server.sql(
        "SET GLOBAL innodb_max_dirty_pages_pct_lwm = 0; SET GLOBAL innodb_max_dirty_pages_pct = 0;",
    );
    let start = Instant::now();
    loop {
        let state = server.sql(
            "SELECT (SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS \
               WHERE VARIABLE_NAME = 'INNODB_BUFFER_POOL_PAGES_DIRTY'), \
             (SELECT COUNT FROM information_schema.INNODB_METRICS \
               WHERE NAME = 'trx_rseg_history_len');",
        );
        if state.split_whitespace().all(|v| v == "0") {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "InnoDB still has dirty pages or history after 120 s (dirty, history: {state})"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Bytes the sandbox repository holds (every file under `repo/`).
fn repo_bytes(sb: &Sandbox) -> u64 {
    common::dir_size(&sb.repo())
}

/// `mariabackup --backup --stream=mbstream` of `server`, kept in `<sandbox>/<name>.xb` and
/// pushed through datasafed to `rpath`; returns the repository growth.
fn push_mariabackup(sb: &Sandbox, server: &MariaServer, name: &str, rpath: &str) -> u64 {
    let before = repo_bytes(sb);
    sb.mkdir(&format!("{name}-tmp"));
    sb.sh_ok(&format!(
        "mariabackup --backup --stream=mbstream --target-dir={name}-tmp {} 2> {name}.log \
         | tee {name}.xb | datasafed push -z zstd-fastest - {rpath} \
         || {{ tail -n 30 {name}.log >&2; exit 1; }}",
        server.conn_args()
    ));
    repo_bytes(sb) - before
}

/// The second mariabackup stream of a database after 1% of its rows changed stores at
/// most 15% of what the first stored: the stream is recognised as mbstream and cut at
/// InnoDB pages, so unchanged pages deduplicate and changed ones are stored as deltas
/// against the same page of the first. It restores byte-exact, prepares and starts with
/// every row. (Without deltas the changed pages cost about 30%; benches/NOTES.md.)
#[test]
fn second_mariabackup_stream_after_one_percent_of_rows_changed_stores_little() {
    if !mariadb_available("mariadb incremental physical backup") {
        return;
    }
    let sb = Sandbox::new("mysql", &[]);
    let mut source = MariaServer::install(&sb, "source");
    source.start();
    source.sql(SCHEMA_AND_DATA);
    flush_innodb(&source);
    // KubeBlocks' layout: <root>/<ns>/<policy>/<backup>/<target>/<backup>.xbstream.zst
    let path = |b: &str| format!("/kb/ns/mariadb-policy/{b}/mariadb/{b}.xbstream.zst");
    let first = push_mariabackup(&sb, &source, "backup-1", &path("backup-1"));
    // 1% of the rows of both tables, scattered over their pages.
    source.sql(
        "UPDATE shop.customers SET balance = balance + 1 WHERE id % 100 = 0;\n\
         UPDATE shop.orders SET status = 'shipped' WHERE id % 100 = 0;",
    );
    flush_innodb(&source);
    let expected = source.contents();
    let second = push_mariabackup(&sb, &source, "backup-2", &path("backup-2"));
    source.stop();
    let stream_len = std::fs::metadata(sb.path("backup-2.xb")).unwrap().len();
    eprintln!(
        "mbstream of {stream_len} B: first backup stored {first} B, second {second} B ({:.1}%)",
        second as f64 * 100.0 / first as f64
    );
    assert!(first > 0 && stream_len > 10 << 20, "{first} {stream_len}");
    assert!(
        second * 100 <= first * 15,
        "the second backup stored {second} B, more than 15% of the first's {first} B"
    );
    let snaps = sb.snapshots();
    let last = snaps.last().expect("snapshots");
    assert!(
        last["chunker"].get("tar_page_size").is_none(),
        "an mbstream is not cut as tar: {last}"
    );
    // The changed pages are stored as deltas against the first backup's pages at the
    // same place, in every 10 MiB record of the files, not only the first.
    let deltas = last["summary"]["deltas_added"].as_u64().unwrap_or(0);
    assert!(deltas >= 100, "{deltas} page deltas: {last}");

    sb.mkdir("restored");
    sb.sh_ok(&format!(
        "datasafed pull -d zstd-fastest {} - > pulled.xb\n\
         cmp pulled.xb backup-2.xb\n\
         mbstream -x -C restored < pulled.xb\n\
         mariabackup --prepare --target-dir=restored > prepare.log 2>&1 \
         || {{ tail -n 30 prepare.log >&2; exit 1; }}",
        path("backup-2")
    ));
    let mut restored = MariaServer::existing(&sb, "restored");
    restored.start();
    let got = restored.contents();
    restored.stop();
    assert!(
        got == expected,
        "the server on the restored second backup differs from the source ({} lines instead of {})",
        got.lines().count(),
        expected.lines().count()
    );
}
