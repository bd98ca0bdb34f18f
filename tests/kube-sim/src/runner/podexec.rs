//! The container side of the runner: `kube-sim pod-exec <spec.json>`, run by the runner
//! under `unshare --mount --uts --ipc --pid --fork --kill-child`, so it starts as PID 1 of
//! fresh namespaces. It builds the container's root and becomes the container process:
//!
//! 1. an overlay mount at `root`: the image layers (if any) over the host's `/` as lower
//!    layers, the container's own upper directory for its writes;
//! 2. a fresh `/proc` (this PID namespace's), `/sys` from the host (read-only), a private
//!    `/dev` (tmpfs with the host's null, zero, full, random, urandom, tty and pts bound
//!    in), the pod's shared `/dev/shm`, a private `/tmp`, an empty `/root` (so the
//!    host's `~/.kube/config` never shadows the in-cluster config), the pod's `/etc/hosts`
//!    and `/etc/hostname`, the termination-log file, then the pod's volumes at their
//!    mount paths (shallowest first; read-only ones remounted read-only);
//! 3. the hostname, `chroot`, the working directory (created when missing, as runc does);
//! 4. groups, gid and uid (dropping root when `runAsUser` says so);
//! 5. `exec` of the command with exactly the container's environment.
//!
//! Mount points are resolved inside the new root, following symlinks relative to it (the
//! image's `/var/run -> /run` must not lead to the host's `/run`). A failure before the
//! exec is written to `error_file` (opened before the chroot) and the process exits 128,
//! which the runner reports as the kubelet's `StartError`.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};

/// One bind mount into the container.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Mount {
    /// Host path (file or directory).
    pub source: PathBuf,
    /// Absolute path inside the container.
    pub target: String,
    /// Remount read-only.
    #[serde(default)]
    pub read_only: bool,
}

/// What the helper needs to start one container.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    /// Mount point of the overlay root.
    pub root: PathBuf,
    /// Overlay upper directory.
    pub upper: PathBuf,
    /// Overlay work directory.
    pub work: PathBuf,
    /// Image layers, topmost first; the host's `/` is always the bottom layer.
    #[serde(default)]
    pub layers: Vec<PathBuf>,
    /// Hostname (UTS namespace).
    pub hostname: String,
    /// The pod's `/dev/shm` directory.
    pub shm: PathBuf,
    /// This container's `/tmp` directory.
    pub tmp: PathBuf,
    /// An empty directory shown as `/root`.
    pub home: PathBuf,
    /// Bind mounts (system files and volumes).
    #[serde(default)]
    pub mounts: Vec<Mount>,
    /// Command and arguments (already `$(VAR)`-expanded).
    pub argv: Vec<String>,
    /// The environment, in order.
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Working directory inside the container.
    #[serde(default)]
    pub working_dir: Option<String>,
    /// `runAsUser`.
    #[serde(default)]
    pub uid: Option<u32>,
    /// `runAsGroup`.
    #[serde(default)]
    pub gid: Option<u32>,
    /// Supplementary groups (`fsGroup`, `supplementalGroups`).
    #[serde(default)]
    pub groups: Vec<u32>,
    /// Where to write why the container could not start.
    pub error_file: PathBuf,
}

/// Resolves `path` (absolute, inside the container) under `root`, following symlinks as
/// if `root` were `/`. The result is always inside `root`.
pub fn secure_join(root: &Path, path: &str) -> PathBuf {
    let mut pending: Vec<String> = path
        .split('/')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .rev()
        .collect();
    let mut cur: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        match part.as_str() {
            "." => continue,
            ".." => {
                cur.pop();
                continue;
            }
            _ => {}
        }
        let candidate: PathBuf = root.join(cur.iter().collect::<PathBuf>()).join(&part);
        match std::fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() && hops < 40 => {
                hops += 1;
                let Ok(target) = std::fs::read_link(&candidate) else {
                    cur.push(part);
                    continue;
                };
                if target.is_absolute() {
                    cur.clear();
                }
                let mut parts: Vec<String> = target
                    .components()
                    .filter_map(|c| match c {
                        Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
                        Component::ParentDir => Some("..".into()),
                        _ => None,
                    })
                    .collect();
                parts.reverse();
                pending.extend(parts);
            }
            _ => cur.push(part),
        }
    }
    root.join(cur.iter().collect::<PathBuf>())
}

fn fail(errf: &mut Option<std::fs::File>, msg: &str) -> ! {
    if let Some(f) = errf.as_mut() {
        let _ = f.write_all(msg.as_bytes());
    }
    eprintln!("kube-sim pod-exec: {msg}");
    std::process::exit(128)
}

fn ensure_target(root: &Path, target: &str, is_file: bool) -> Result<PathBuf, String> {
    let p = secure_join(root, target);
    if is_file {
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("mkdir {}: {e}", parent.display()))?;
        }
        if !p.exists() {
            std::fs::write(&p, b"").map_err(|e| format!("create {}: {e}", p.display()))?;
        }
    } else {
        std::fs::create_dir_all(&p).map_err(|e| format!("mkdir {}: {e}", p.display()))?;
    }
    Ok(p)
}

fn bind(source: &Path, target: &Path, read_only: bool) -> Result<(), String> {
    use rustix::mount::{mount_bind_recursive, mount_remount, MountFlags};
    mount_bind_recursive(source, target)
        .map_err(|e| format!("bind {} on {}: {e}", source.display(), target.display()))?;
    if read_only {
        mount_remount(target, MountFlags::BIND | MountFlags::RDONLY, "")
            .map_err(|e| format!("remount {} read-only: {e}", target.display()))?;
    }
    Ok(())
}

/// Sets up the container and execs its command; returns only through `exit`.
pub fn run(spec_path: &Path) -> ! {
    let mut errf: Option<std::fs::File> = None;
    let spec: Spec = match std::fs::read(spec_path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        Err(e) => fail(
            &mut errf,
            &format!("cannot read {}: {e}", spec_path.display()),
        ),
    };
    errf = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&spec.error_file)
        .ok();
    if let Err(e) = setup(&spec) {
        fail(&mut errf, &e);
    }
    if spec.argv.is_empty() {
        fail(&mut errf, "no command specified");
    }
    let mut cmd = std::process::Command::new(&spec.argv[0]);
    cmd.args(&spec.argv[1..])
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)));
    let err = cmd.exec();
    let msg = if err.kind() == std::io::ErrorKind::NotFound {
        if spec.argv[0].contains('/') {
            format!(
                "exec: {:?}: stat {}: no such file or directory",
                spec.argv[0], spec.argv[0]
            )
        } else {
            format!(
                "exec: {:?}: executable file not found in $PATH",
                spec.argv[0]
            )
        }
    } else {
        format!("exec: {:?}: {err}", spec.argv[0])
    };
    fail(&mut errf, &msg)
}

fn setup(spec: &Spec) -> Result<(), String> {
    use rustix::mount::{mount, mount_change, MountFlags, MountPropagationFlags};
    mount_change(
        "/",
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    )
    .map_err(|e| format!("make / private: {e}"))?;
    let mut lower: Vec<String> = spec
        .layers
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    lower.push("/".into());
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        spec.upper.display(),
        spec.work.display()
    );
    let data = std::ffi::CString::new(data).map_err(|e| format!("overlay options: {e}"))?;
    mount(
        "overlay",
        &spec.root,
        "overlay",
        MountFlags::empty(),
        data.as_c_str(),
    )
    .map_err(|e| format!("overlay mount on {}: {e}", spec.root.display()))?;
    let root = spec.root.as_path();
    let proc_dir = ensure_target(root, "/proc", false)?;
    mount(
        "proc",
        &proc_dir,
        "proc",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        None,
    )
    .map_err(|e| format!("mount proc: {e}"))?;
    bind(
        Path::new("/sys"),
        &ensure_target(root, "/sys", false)?,
        true,
    )?;
    // A private /dev as runtimes make it: a tmpfs with the usual device nodes bound in, so
    // nothing the container creates there (the termination log) lands in the host's /dev.
    let dev = ensure_target(root, "/dev", false)?;
    mount("tmpfs", &dev, "tmpfs", MountFlags::NOSUID, c"mode=755,size=65536k")
        .map_err(|e| format!("mount /dev: {e}"))?;
    for node in ["null", "zero", "full", "random", "urandom", "tty"] {
        let host = Path::new("/dev").join(node);
        if host.exists() {
            bind(&host, &ensure_target(root, &format!("/dev/{node}"), true)?, false)?;
        }
    }
    bind(Path::new("/dev/pts"), &ensure_target(root, "/dev/pts", false)?, false)?;
    for (link, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        let _ = std::os::unix::fs::symlink(to, dev.join(link));
    }
    bind(&spec.shm, &ensure_target(root, "/dev/shm", false)?, false)?;
    bind(&spec.tmp, &ensure_target(root, "/tmp", false)?, false)?;
    bind(&spec.home, &ensure_target(root, "/root", false)?, false)?;
    let mut mounts = spec.mounts.clone();
    mounts.sort_by_key(|m| m.target.split('/').filter(|p| !p.is_empty()).count());
    for m in &mounts {
        let is_file = std::fs::metadata(&m.source)
            .map(|md| !md.is_dir())
            .unwrap_or(false);
        let t = ensure_target(root, &m.target, is_file)?;
        bind(&m.source, &t, m.read_only)?;
    }
    rustix::system::sethostname(spec.hostname.as_bytes())
        .map_err(|e| format!("sethostname: {e}"))?;
    rustix::process::chroot(root).map_err(|e| format!("chroot {}: {e}", root.display()))?;
    let wd = spec
        .working_dir
        .clone()
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into());
    std::fs::create_dir_all(&wd).map_err(|e| format!("mkdir working directory {wd}: {e}"))?;
    std::env::set_current_dir(&wd)
        .map_err(|e| format!("chdir to cwd ({wd:?}) set in config.json failed: {e}"))?;
    if spec.uid.is_some() || spec.gid.is_some() || !spec.groups.is_empty() {
        let gid = spec.gid.unwrap_or(0);
        let mut groups: Vec<rustix::process::Gid> = vec![rustix::process::Gid::from_raw(gid)];
        groups.extend(
            spec.groups
                .iter()
                .map(|g| rustix::process::Gid::from_raw(*g)),
        );
        rustix::thread::set_thread_groups(&groups).map_err(|e| format!("setgroups: {e}"))?;
        let g = rustix::process::Gid::from_raw(gid);
        rustix::thread::set_thread_res_gid(g, g, g).map_err(|e| format!("setgid {gid}: {e}"))?;
        if let Some(uid) = spec.uid {
            let u = rustix::process::Uid::from_raw(uid);
            rustix::thread::set_thread_res_uid(u, u, u)
                .map_err(|e| format!("setuid {uid}: {e}"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::secure_join;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("run")).unwrap();
        std::fs::create_dir_all(root.join("var")).unwrap();
        symlink("/run", root.join("var/run")).unwrap();
        symlink("../../../../etc", root.join("run/up")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        assert_eq!(
            secure_join(root, "/var/run/secrets/x"),
            root.join("run/secrets/x")
        );
        assert_eq!(secure_join(root, "/run/up/passwd"), root.join("etc/passwd"));
        assert_eq!(secure_join(root, "/../../etc"), root.join("etc"));
        assert_eq!(secure_join(root, "/a/./b/../c"), root.join("a/c"));
        assert!(secure_join(root, "/loop/x").starts_with(root));
    }
}
