//! Packaging (issue 23): the static binary, the OCI image and the install manifests, as a
//! user gets them.
//!
//! - The static `dprepo` (scripts/build-static.sh) has no shared-library dependency and
//!   runs datasafed push/pull round trips inside an empty root file system (only the
//!   binary, /tmp and the CA certificates), against a local directory and the suite's S3
//!   server (by address, and by a host name from /etc/hosts as the kubelet writes it).
//! - The image (scripts/build-images.sh, buildah from scratch) is unpacked with skopeo and
//!   umoci; its /scripts/install-datasafed.sh runs as the image's non-root user in a
//!   chroot of it, as KubeBlocks' `dp-copy-datasafed` init container does, and the
//!   binary it installed runs from a second root holding only a shell.
//! - `kubectl kustomize deploy/` and the KubeBlocks overlay render and apply on kube-sim.
//!
//! The static binaries come from `DPREPO_STATIC_BIN_DIR`, by default
//! `<target>/<arch>-unknown-linux-gnu/static` (scripts/test.sh builds them). The chroot
//! and image tests need root and the tools of `scripts/deps.sh images`; without them they
//! fail with instructions. `DPREPO_SKIP_PACKAGING_TESTS=1` skips this file explicitly
//! (each test says so on stderr).

mod common;

use common::cluster::{self, Cluster};
use common::{ensure_s3_bucket, output_of, s3_endpoint, s3_storage, stderr, PASSWORD, S3_BUCKET};
use serde_json::Value;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const SKIP_VAR: &str = "DPREPO_SKIP_PACKAGING_TESTS";

/// Whether the user asked to skip this file (said on stderr, never silent).
fn skipped(test: &str) -> bool {
    if std::env::var(SKIP_VAR).as_deref() == Ok("1") {
        eprintln!("{test}: SKIPPED because {SKIP_VAR}=1");
        return true;
    }
    false
}

fn require_root() {
    let uid = Command::new("id").arg("-u").output().expect("run id -u");
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "this test needs root (chroot, buildah): run the suite as root as CI does \
         (`sudo -E bash scripts/test.sh`), or set {SKIP_VAR}=1 to skip the packaging tests"
    );
}

fn require_tools(tools: &[&str]) {
    for tool in tools {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "`{tool}` is not installed: run `bash scripts/deps.sh static images` \
             (installs buildah, umoci, skopeo, busybox-static), or set {SKIP_VAR}=1"
        );
    }
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => PathBuf::from(d),
        None => cluster::workspace().join("target"),
    }
}

/// The directory of the static `dprepo` and `dprepo-controller`.
fn static_bin_dir() -> PathBuf {
    let dir = match std::env::var_os("DPREPO_STATIC_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => target_dir()
            .join(format!("{}-unknown-linux-gnu", std::env::consts::ARCH))
            .join("static"),
    };
    assert!(
        dir.join("dprepo").is_file() && dir.join("dprepo-controller").is_file(),
        "the static binaries are not in {}: build them with `bash scripts/build-static.sh` \
         (scripts/test.sh does), or point DPREPO_STATIC_BIN_DIR at them, or set {SKIP_VAR}=1",
        dir.display()
    );
    dir
}

fn run_ok(mut cmd: Command, what: &str) -> Output {
    let out = output_of({
        cmd.stdin(Stdio::null());
        cmd
    });
    assert!(
        out.status.success(),
        "{what} failed ({}): {}\n{}",
        out.status,
        stderr(&out),
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

/// Reproducible incompressible-looking bytes.
fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn version_json(cmd: Command) -> Value {
    let out = run_ok(cmd, "dprepo version --json");
    serde_json::from_slice(&out.stdout).expect("version --json prints JSON")
}

fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A root file system for chroot: `/tmp` (1777), the CA certificates of this machine
/// (Debian's ca-certificates bundle, as the image carries it) and the two device nodes
/// every container runtime provides, /dev/random and /dev/urandom (the static binary's
/// random source: without the libc `getrandom` symbol at run time, the getrandom crate
/// waits on /dev/random once, then reads /dev/urandom). Needs root (mknod).
fn bare_root() -> tempfile::TempDir {
    let root = tempfile::Builder::new()
        .prefix("dprepo-pkg-root")
        .tempdir()
        .expect("tmp");
    let tmp = root.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let bundle = Path::new("/etc/ssl/certs/ca-certificates.crt");
    assert!(
        bundle.is_file(),
        "{} missing: install Debian's ca-certificates (scripts/deps.sh images does)",
        bundle.display()
    );
    std::fs::create_dir_all(root.path().join("etc/ssl/certs")).unwrap();
    std::fs::copy(
        bundle,
        root.path().join("etc/ssl/certs/ca-certificates.crt"),
    )
    .unwrap();
    std::fs::create_dir(root.path().join("dev")).unwrap();
    for (name, minor) in [("random", "8"), ("urandom", "9")] {
        let mut mknod = Command::new("mknod");
        mknod
            .args(["-m", "666"])
            .arg(root.path().join("dev").join(name))
            .args(["c", "1", minor]);
        run_ok(mknod, "mknod");
    }
    root
}

/// The path of `chroot` (the child's environment is cleared, so PATH cannot find it).
fn chroot_path() -> String {
    let out = Command::new("sh")
        .args(["-c", "command -v chroot"])
        .output()
        .expect("sh");
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(!path.is_empty(), "chroot not found (coreutils)");
    path
}

/// `chroot ROOT ARGS` with only `env` in the environment, `input` on stdin.
fn chroot(
    root: &Path,
    userspec: Option<&str>,
    args: &[&str],
    env: &[(&str, &str)],
    input: &[u8],
) -> Output {
    let mut cmd = Command::new(chroot_path());
    if let Some(u) = userspec {
        cmd.arg(format!("--userspec={u}"));
    }
    cmd.arg(root).args(args).env_clear();
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run chroot");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait for chroot");
    writer.join().expect("stdin writer");
    out
}

fn chroot_ok(
    root: &Path,
    userspec: Option<&str>,
    args: &[&str],
    env: &[(&str, &str)],
    input: &[u8],
) -> Vec<u8> {
    let out = chroot(root, userspec, args, env, input);
    assert!(
        out.status.success(),
        "chroot {} {args:?} failed ({}): {}",
        root.display(),
        out.status,
        stderr(&out)
    );
    out.stdout
}

/// The static binary and the dynamic (cargo test) one say what they are: version,
/// commit, linkage; `ldd` finds no shared library in the static ones.
#[test]
fn static_binaries_have_no_shared_libraries_and_say_so() {
    if skipped("static_binaries_have_no_shared_libraries_and_say_so") {
        return;
    }
    let dir = static_bin_dir();
    for bin in ["dprepo", "dprepo-controller"] {
        // ldd says "statically linked" or "not a dynamic executable", depending on its
        // version; the ELF file names no shared library.
        let out = Command::new("ldd")
            .arg(dir.join(bin))
            .output()
            .expect("run ldd");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
        assert!(
            (text.contains("statically linked") || text.contains("not a dynamic executable"))
                && !text.contains("=>"),
            "{bin} has shared-library dependencies:\n{text}"
        );
        let out = Command::new("readelf")
            .arg("-d")
            .arg(dir.join(bin))
            .output()
            .expect("run readelf");
        let dynamic = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            !dynamic.contains("(NEEDED)"),
            "{bin} needs shared libraries:\n{dynamic}"
        );
    }
    let mut cmd = Command::new(dir.join("dprepo"));
    cmd.args(["version", "--json"]);
    let v = version_json(cmd);
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"), "{v}");
    assert_eq!(v["static"], true, "{v}");
    assert!(is_commit(v["commit"].as_str().unwrap_or_default()), "{v}");
    let out = run_ok(
        {
            let mut c = Command::new(dir.join("dprepo"));
            c.arg("--version");
            c
        },
        "dprepo --version",
    );
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    let short = &v["commit"].as_str().unwrap()[..12];
    assert_eq!(
        line.trim(),
        format!(
            "dprepo {} (commit {short}, static)",
            env!("CARGO_PKG_VERSION")
        )
    );
    // The development build links shared libraries and says so.
    let mut cmd = Command::new(common::dprepo_bin());
    cmd.args(["version", "--json"]);
    let dev = version_json(cmd);
    assert_eq!(dev["static"], false, "{dev}");
    assert_eq!(dev["version"], env!("CARGO_PKG_VERSION"), "{dev}");
    // The commit is one of this repository's.
    let commit = dev["commit"].as_str().unwrap_or_default();
    assert!(is_commit(commit), "{dev}");
    let known = Command::new("git")
        .args(["cat-file", "-e", &format!("{commit}^{{commit}}")])
        .current_dir(cluster::workspace())
        .status()
        .is_ok_and(|s| s.success());
    assert!(known, "commit {commit} is not in this repository");
}

/// The static datasafed in a root holding only itself, /tmp and the certificates: push,
/// list, pull against a local directory and the suite's S3 server (by IP address, then
/// by a name from /etc/hosts: the static glibc resolves names without NSS modules).
#[test]
fn static_datasafed_round_trips_in_an_empty_root() {
    if skipped("static_datasafed_round_trips_in_an_empty_root") {
        return;
    }
    require_root();
    let dir = static_bin_dir();
    let root = bare_root();
    let r = root.path();
    std::fs::copy(dir.join("dprepo"), r.join("datasafed")).unwrap();
    let entries: Vec<String> = std::fs::read_dir(r)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut sorted = entries.clone();
    sorted.sort();
    assert_eq!(sorted, ["datasafed", "dev", "etc", "tmp"]);

    let base: &[(&str, &str)] = &[
        ("DPREPO_PASSWORD", PASSWORD),
        ("XDG_CACHE_HOME", "/tmp/cache"),
    ];
    let round_trip = |extra: &[(&str, &str)], seed: u64| {
        let mut env = base.to_vec();
        env.extend_from_slice(extra);
        let payload = data(seed, 3 << 20);
        chroot_ok(
            r,
            None,
            &["/datasafed", "push", "-", "/mysql/backup.xbstream"],
            &env,
            &payload,
        );
        let listed = chroot_ok(r, None, &["/datasafed", "list", "/mysql"], &env, b"");
        assert_eq!(
            String::from_utf8_lossy(&listed).trim(),
            "mysql/backup.xbstream"
        );
        let pulled = chroot_ok(
            r,
            None,
            &["/datasafed", "pull", "/mysql/backup.xbstream", "-"],
            &env,
            b"",
        );
        assert!(
            pulled == payload,
            "pulled {} bytes, pushed {}",
            pulled.len(),
            payload.len()
        );
    };

    // A local directory (a Mount-access BackupRepo's volume).
    std::fs::create_dir(r.join("backupdata")).unwrap();
    round_trip(&[("DATASAFED_LOCAL_BACKEND_PATH", "/backupdata")], 1);
    assert!(
        r.join("backupdata/config").is_file(),
        "no repository in the local directory"
    );

    // S3 by address, then by a name only /etc/hosts knows.
    ensure_s3_bucket();
    let endpoint = s3_endpoint();
    let port = endpoint
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_string();
    for (n, host) in [
        (2u64, "127.0.0.1".to_string()),
        (3, "dprepo-s3-test".to_string()),
    ] {
        if host != "127.0.0.1" {
            std::fs::write(
                r.join("etc/hosts"),
                "127.0.0.1 localhost\n127.0.0.1 dprepo-s3-test\n",
            )
            .unwrap();
        }
        let prefix = format!(
            "packaging-{}-{n}-{}",
            std::process::id(),
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
        );
        std::fs::write(
            r.join("datasafed.conf"),
            format!(
                "[storage]\ntype = s3\nprovider = Minio\nenv_auth = false\naccess_key_id = test\n\
                 secret_access_key = test\nregion = us-east-1\nendpoint = http://{host}:{port}\n\
                 root = {S3_BUCKET}/{prefix}\nforce_path_style = true\n"
            ),
        )
        .unwrap();
        round_trip(&[("DATASAFED_CONFIG", "/datasafed.conf")], n);
        let objects = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                use dprepo_repo_format::storage::Storage;
                s3_storage(&prefix).list("data/").await
            })
            .expect("list the bucket");
        assert!(
            !objects.is_empty(),
            "nothing stored below {prefix} in the bucket"
        );
    }
}

/// The image: built offline from scratch, unpacked, its install script run as the image's
/// user in a chroot of it (KubeBlocks' init container), and the installed binary run from
/// a root holding only a shell (the database container KubeBlocks mounts it into).
#[test]
fn image_installs_datasafed_that_runs_from_a_root_with_only_a_shell() {
    if skipped("image_installs_datasafed_that_runs_from_a_root_with_only_a_shell") {
        return;
    }
    require_root();
    require_tools(&["buildah", "skopeo", "umoci", "busybox", "chroot"]);
    let dir = static_bin_dir();
    let work = tempfile::Builder::new()
        .prefix("dprepo-pkg-image")
        .tempdir()
        .expect("tmp");
    let w = work.path();
    let mut build = Command::new("bash");
    build
        .arg(cluster::workspace().join("scripts/build-images.sh"))
        .arg("--bin-dir")
        .arg(&dir)
        .arg("--output")
        .arg(w.join("out"));
    let out = run_ok(build, "scripts/build-images.sh");
    let archive = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        archive.ends_with(&format!("dprepo-{version}.oci.tar")),
        "{archive}"
    );

    // The configuration: labels, user, entrypoint.
    let mut inspect = Command::new("skopeo");
    inspect.args(["inspect", "--config", &format!("oci-archive:{archive}")]);
    let config: Value = serde_json::from_slice(&run_ok(inspect, "skopeo inspect").stdout).unwrap();
    let c = &config["config"];
    assert_eq!(c["User"], "65532:65532", "{config}");
    assert_eq!(c["Entrypoint"], serde_json::json!(["/dprepo"]), "{config}");
    let labels = &c["Labels"];
    let mut cmd = Command::new(dir.join("dprepo"));
    cmd.args(["version", "--json"]);
    let built = version_json(cmd);
    assert_eq!(
        labels["org.opencontainers.image.version"], version,
        "{labels}"
    );
    assert_eq!(
        labels["org.opencontainers.image.revision"], built["commit"],
        "{labels}"
    );
    assert_eq!(
        labels["org.opencontainers.image.title"], "dprepo",
        "{labels}"
    );
    assert_eq!(
        labels["org.opencontainers.image.licenses"], "Apache-2.0",
        "{labels}"
    );
    assert_eq!(labels["io.dprepo.linkage"], "static", "{labels}");
    assert!(
        labels["org.opencontainers.image.created"]
            .as_str()
            .is_some_and(|s| s.len() >= 20),
        "{labels}"
    );

    // Unpack.
    let mut copy = Command::new("skopeo");
    copy.args([
        "copy",
        "--quiet",
        &format!("oci-archive:{archive}"),
        &format!("oci:{}:dprepo", w.join("layout").display()),
    ]);
    run_ok(copy, "skopeo copy");
    let mut unpack = Command::new("umoci");
    unpack
        .args(["unpack", "--image"])
        .arg(format!("{}:dprepo", w.join("layout").display()))
        .arg(w.join("bundle"));
    run_ok(unpack, "umoci unpack");
    let rootfs = w.join("bundle/rootfs");
    for file in [
        "dprepo",
        "dprepo-controller",
        "scripts/install-datasafed.sh",
        "bin/sh",
        "etc/ssl/certs/ca-certificates.crt",
    ] {
        assert!(
            rootfs.join(file).is_file(),
            "/{file} missing from the image"
        );
    }
    assert_eq!(
        std::fs::read_link(rootfs.join("datasafed")).unwrap(),
        Path::new("dprepo")
    );
    assert_eq!(
        std::fs::metadata(rootfs.join("tmp")).unwrap().mode() & 0o7777,
        0o1777
    );
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap();
    assert!(passwd.contains(":65532:65532:"), "{passwd}");
    // The image's binaries run in it and name the labelled commit.
    let env_image: &[(&str, &str)] = &[("PATH", "/bin:/")];
    let v: Value = serde_json::from_slice(&chroot_ok(
        &rootfs,
        Some("65532:65532"),
        &["/dprepo", "version", "--json"],
        env_image,
        b"",
    ))
    .unwrap();
    assert_eq!(v["commit"], labels["org.opencontainers.image.revision"]);
    assert_eq!(v["static"], true);
    // The image's controller role runs in it too.
    let v = chroot_ok(
        &rootfs,
        Some("65532:65532"),
        &["/dprepo-controller", "--version"],
        env_image,
        b"",
    );
    assert!(
        String::from_utf8_lossy(&v).starts_with(&format!("dprepo-controller {version}")),
        "{}",
        String::from_utf8_lossy(&v)
    );

    // KubeBlocks' init container: `/bin/sh -c "/scripts/install-datasafed.sh /bin/datasafed"`
    // as the image's user, /bin/datasafed an emptyDir (world-writable).
    let empty_dir = rootfs.join("bin/datasafed");
    std::fs::create_dir(&empty_dir).unwrap();
    std::fs::set_permissions(&empty_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    chroot_ok(
        &rootfs,
        Some("65532:65532"),
        &[
            "/bin/sh",
            "-c",
            "/scripts/install-datasafed.sh /bin/datasafed",
        ],
        env_image,
        b"",
    );
    let installed = empty_dir.join("datasafed");
    let meta = std::fs::metadata(&installed).expect("install-datasafed.sh installed nothing");
    assert_eq!(meta.uid(), 65532);
    assert_eq!(meta.mode() & 0o111, 0o111);
    assert!(empty_dir.join("certs/ca-certificates.crt").is_file());
    // Without a directory the script fails and says how to call it.
    let out = chroot(
        &rootfs,
        Some("65532:65532"),
        &["/bin/sh", "-c", "/scripts/install-datasafed.sh"],
        env_image,
        b"",
    );
    assert!(
        !out.status.success() && stderr(&out).contains("usage"),
        "{}",
        stderr(&out)
    );

    // The database container: a root with only a shell, the emptyDir at /bin/datasafed.
    let second = bare_root();
    let s = second.path();
    std::fs::remove_dir_all(s.join("etc")).unwrap(); // certificates only next to datasafed
    std::fs::create_dir_all(s.join("bin/datasafed/certs")).unwrap();
    let busybox = Command::new("sh")
        .args(["-c", "command -v busybox"])
        .output()
        .unwrap();
    let busybox = String::from_utf8_lossy(&busybox.stdout).trim().to_string();
    std::fs::copy(&busybox, s.join("bin/sh")).unwrap();
    std::fs::copy(&installed, s.join("bin/datasafed/datasafed")).unwrap();
    std::fs::copy(
        empty_dir.join("certs/ca-certificates.crt"),
        s.join("bin/datasafed/certs/ca-certificates.crt"),
    )
    .unwrap();
    std::fs::create_dir(s.join("backupdata")).unwrap();
    let payload = data(4, 2 << 20);
    let script = "export PATH=$PATH:/bin/datasafed; datasafed version >&2 && \
                  datasafed push - /pg/base.tar.zst && datasafed pull /pg/base.tar.zst -";
    let out = chroot(
        s,
        None,
        &["/bin/sh", "-c", script],
        &[
            ("PATH", "/bin"),
            ("DPREPO_PASSWORD", PASSWORD),
            ("XDG_CACHE_HOME", "/tmp/cache"),
            ("DATASAFED_LOCAL_BACKEND_PATH", "/backupdata"),
        ],
        &payload,
    );
    assert!(
        out.status.success(),
        "datasafed in the second root failed: {}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains(&format!("dprepo {version}")),
        "{}",
        stderr(&out)
    );
    assert!(
        out.stdout == payload,
        "pulled {} bytes, pushed {}",
        out.stdout.len(),
        payload.len()
    );
}

fn kustomize(dir: &Path) -> Vec<Value> {
    let mut cmd = Command::new("kubectl");
    cmd.arg("kustomize").arg(dir);
    let out = run_ok(cmd, "kubectl kustomize");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    text.split("\n---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_yaml::from_str::<Value>(d).expect("kubectl kustomize printed YAML"))
        .collect()
}

fn env_value<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .map(|e| e.get("value").unwrap_or(&e["valueFrom"]))
}

/// `kubectl kustomize deploy/` renders what the controller needs, pointing at the image
/// scripts/build-images.sh tags; an `images:` entry moves the pods' images with it; it
/// applies on kube-sim; the KubeBlocks overlay sets DATASAFED_IMAGE of an unmodified
/// KubeBlocks dataprotection Deployment and touches nothing else.
#[test]
fn deploy_renders_applies_and_the_kubeblocks_overlay_sets_datasafed_image() {
    if skipped("deploy_renders_applies_and_the_kubeblocks_overlay_sets_datasafed_image") {
        return;
    }
    let deploy = cluster::workspace().join("deploy");
    let docs = kustomize(&deploy);
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    for kind in [
        "Namespace",
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
    ] {
        assert!(kinds.contains(&kind), "no {kind} in {kinds:?}");
    }
    let crd_files = std::fs::read_dir(deploy.join("crds"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with("s.yaml")
        })
        .count();
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == "CustomResourceDefinition")
            .count(),
        crd_files
    );
    let image = format!("docker.io/dprepo/dprepo:{}", env!("CARGO_PKG_VERSION"));
    let deployment = docs
        .iter()
        .find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "dprepo-controller")
        .expect("the controller's Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let c = &pod["containers"][0];
    assert_eq!(c["image"], image.as_str());
    assert_eq!(c["command"], serde_json::json!(["/dprepo-controller"]));
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert!(
        c["livenessProbe"]["httpGet"].is_object() && c["readinessProbe"]["httpGet"].is_object()
    );
    assert!(
        c["resources"]["requests"]["cpu"].is_string()
            && c["resources"]["requests"]["memory"].is_string()
    );
    // The environment of CONTROLLER.md section 6.
    for var in [
        "CM_NAMESPACE",
        "KUBEBLOCKS_TOOLS_IMAGE",
        "DATASAFED_IMAGE",
        "KUBEBLOCKS_IMAGE_PULL_POLICY",
        "WORKER_SERVICE_ACCOUNT_NAME",
        "EXEC_WORKER_SERVICE_ACCOUNT_NAME",
        "WORKER_CLUSTER_ROLE_NAME",
        "GC_FREQUENCY_SECONDS",
        "DATAPROTECTION_RECONCILE_WORKERS",
    ] {
        assert!(
            env_value(c, var).is_some(),
            "{var} not set in the Deployment"
        );
    }
    assert_eq!(env_value(c, "DATASAFED_IMAGE").unwrap(), image.as_str());
    assert_eq!(
        env_value(c, "KUBEBLOCKS_TOOLS_IMAGE").unwrap(),
        image.as_str()
    );

    // A registry of one's own: one `images:` entry moves the two variables too.
    let copy = tempfile::tempdir().unwrap();
    let status = Command::new("cp")
        .arg("-r")
        .arg(&deploy)
        .arg(copy.path())
        .status()
        .unwrap();
    assert!(status.success());
    let mut k = std::fs::OpenOptions::new()
        .append(true)
        .open(copy.path().join("deploy/kustomization.yaml"))
        .unwrap();
    k.write_all(b"images:\n- name: docker.io/dprepo/dprepo\n  newName: registry.example.com/ops/dprepo\n  newTag: \"7.1\"\n")
        .unwrap();
    let moved = kustomize(&copy.path().join("deploy"));
    let c2 = &moved.iter().find(|d| d["kind"] == "Deployment").unwrap()["spec"]["template"]["spec"]
        ["containers"][0];
    for v in [
        &c2["image"],
        env_value(c2, "DATASAFED_IMAGE").unwrap(),
        env_value(c2, "KUBEBLOCKS_TOOLS_IMAGE").unwrap(),
    ] {
        assert_eq!(v, "registry.example.com/ops/dprepo:7.1");
    }

    // The KubeBlocks overlay renders one partial Deployment with our image.
    let overlay = deploy.join("kubeblocks-datasafed");
    let patch = kustomize(&overlay);
    assert_eq!(patch.len(), 1, "{patch:?}");
    assert_eq!(
        env_value(
            &patch[0]["spec"]["template"]["spec"]["containers"][0],
            "DATASAFED_IMAGE"
        )
        .unwrap(),
        image.as_str()
    );

    // Both apply on kube-sim.
    let c = Cluster::start();
    c.kubectl_ok(&["apply", "--validate=false", "-k", deploy.to_str().unwrap()]);
    let d = c
        .get(&["deployment", "-n", "dprepo-system", "dprepo-controller"])
        .expect("Deployment applied");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        image.as_str()
    );
    c.kubectl_ok(&["get", "backups.dataprotection.kubeblocks.io", "-A"]);
    // KubeBlocks' dataprotection Deployment as its chart makes it (replicas 0: nothing
    // has to run here).
    c.apply(
        r#"
apiVersion: v1
kind: Namespace
metadata: {name: kb-system}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: kubeblocks-dataprotection
  namespace: kb-system
  labels: {app.kubernetes.io/component: dataprotection}
spec:
  replicas: 0
  selector:
    matchLabels: {app.kubernetes.io/component: dataprotection}
  template:
    metadata:
      labels: {app.kubernetes.io/component: dataprotection}
    spec:
      containers:
      - name: dataprotection
        image: apecloud/kubeblocks-dataprotection:0.9.2
        args: [--health-probe-bind-address=:8081]
        env:
        - name: CM_NAMESPACE
          value: kb-system
        - name: DATASAFED_IMAGE
          value: apecloud/datasafed:0.2.3
        - name: KUBEBLOCKS_TOOLS_IMAGE
          value: apecloud/kubeblocks-tools:0.9.2
"#,
    );
    c.kubectl_ok(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=dprepo",
        "--validate=false",
        "-k",
        overlay.to_str().unwrap(),
    ]);
    let kb = c
        .get(&["deployment", "-n", "kb-system", "kubeblocks-dataprotection"])
        .expect("KubeBlocks' Deployment");
    let containers = kb["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(containers.len(), 1, "{kb}");
    let kc = &containers[0];
    assert_eq!(
        env_value(kc, "DATASAFED_IMAGE").unwrap(),
        image.as_str(),
        "{kb}"
    );
    assert_eq!(
        env_value(kc, "KUBEBLOCKS_TOOLS_IMAGE").unwrap(),
        "apecloud/kubeblocks-tools:0.9.2"
    );
    assert_eq!(env_value(kc, "CM_NAMESPACE").unwrap(), "kb-system");
    assert_eq!(kc["image"], "apecloud/kubeblocks-dataprotection:0.9.2");
    assert_eq!(
        kc["args"],
        serde_json::json!(["--health-probe-bind-address=:8081"])
    );
    assert_eq!(kc["env"].as_array().unwrap().len(), 3, "{kb}");
}

/// The static dprepo-controller starts and runs. It used to die before `main` (SIGSEGV in
/// glibc's static start-up): build-static.sh passed the RocksDB codecs as global `-l`
/// link-args, which in this binary (no RocksDB, so no linker-script directory on its
/// search path) found Debian's shared libsnappy etc.; the linker then gave the executable
/// a dynamic section whose relocations glibc's static start-up rejects. The binary must
/// have no dynamic section, print its version and print the CRDs.
#[test]
fn static_controller_starts() {
    if skipped("static_controller_starts") {
        return;
    }
    let dir = static_bin_dir();
    let bin = dir.join("dprepo-controller");
    let out = run_ok(
        {
            let mut c = Command::new("readelf");
            c.arg("-d").arg(&bin);
            c
        },
        "readelf -d dprepo-controller",
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("no dynamic section"),
        "the static dprepo-controller has a dynamic section:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let mut cmd = Command::new(&bin);
    cmd.arg("--version");
    let out = run_ok(cmd, "static dprepo-controller --version");
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .starts_with(&format!("dprepo-controller {}", env!("CARGO_PKG_VERSION"))),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let mut cmd = Command::new(&bin);
    cmd.arg("crd");
    let out = run_ok(cmd, "static dprepo-controller crd");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("kind: CustomResourceDefinition"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
