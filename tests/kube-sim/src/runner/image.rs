//! Images. A container runs on the host's own filesystem (the host's `/` is the bottom
//! overlay layer), so an image name selects nothing, except the images this project
//! builds: `docker.io/dprepo/dprepo:<tag>` and `dprepo/dprepo:<tag>` (also by digest),
//! the controller's default `DATASAFED_IMAGE` and tools image. For those the runner adds
//! a layer on top holding what the real image holds:
//!
//! - `/dprepo` and `/datasafed`: the cargo-built `dprepo` binary (hard links, or copies
//!   across filesystems), found through `KUBE_SIM_DPREPO_BIN` or next to the kube-sim
//!   binary (`target/<profile>/dprepo`);
//! - `/dprepo-controller`: the cargo-built `dprepo-controller` binary (its
//!   `backup-manager` subcommand is the sidecar of backup Jobs), found through
//!   `KUBE_SIM_DPREPO_CONTROLLER_BIN` or beside the `dprepo` binary; absent from the layer
//!   when it was not built (a container running it then fails to start its command);
//! - `/scripts/install-datasafed.sh DIR`: copies `/datasafed` to `DIR/datasafed` and the
//!   CA certificates (`/etc/ssl/certs`) to `DIR/certs`, as KubeBlocks' datasafed image
//!   script does for the `dp-copy-datasafed` init container.
//!
//! When the binary cannot be found the container waits with `ErrImagePull` and a
//! message saying how to build it, as a real node reports an image it cannot pull.

use std::path::{Path, PathBuf};

/// The install script of the dprepo image: the one scripts/build-images.sh puts into
/// the real image.
pub const INSTALL_DATASAFED: &str = include_str!("../../../../scripts/image/install-datasafed.sh");

/// Whether an image reference is one of this project's images.
pub fn is_dprepo_image(image: &str) -> bool {
    let repo = match image.split_once('@') {
        Some((r, _)) => r,
        None => image,
    };
    // Strip a tag (a colon after the last slash).
    let repo = match repo.rfind(':') {
        Some(i) if i > repo.rfind('/').unwrap_or(0) => &repo[..i],
        _ => repo,
    };
    repo == "dprepo/dprepo" || repo == "docker.io/dprepo/dprepo"
}

/// Where the `dprepo` binary is: `KUBE_SIM_DPREPO_BIN`, or beside the running binary (or
/// one directory up, for test binaries in `target/<profile>/deps`).
pub fn find_dprepo_bin() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("KUBE_SIM_DPREPO_BIN") {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    [dir.join("dprepo"), dir.parent()?.join("dprepo")]
        .into_iter()
        .find(|p| p.is_file())
}

/// Where the `dprepo-controller` binary is: `KUBE_SIM_DPREPO_CONTROLLER_BIN`, or beside
/// the `dprepo` binary `dprepo_bin`.
pub fn find_controller_bin(dprepo_bin: &Path) -> Option<PathBuf> {
    if let Ok(p) = std::env::var("KUBE_SIM_DPREPO_CONTROLLER_BIN") {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let p = dprepo_bin.with_file_name("dprepo-controller");
    p.is_file().then_some(p)
}

/// Size and modification time (seconds) of a file, naming one version of a binary.
fn version_of(path: &Path) -> std::io::Result<(u64, u64)> {
    let meta = std::fs::metadata(path)?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    Ok((meta.len(), mtime))
}

fn link_or_copy(from: &Path, to: &Path) -> std::io::Result<()> {
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to)?;
    }
    Ok(())
}

/// Builds (once) the dprepo image layer under `images_dir` and returns its path.
///
/// # Errors
/// A message for the container's `ErrImagePull` status.
pub fn dprepo_layer(images_dir: &Path, image: &str) -> Result<PathBuf, String> {
    let bin = find_dprepo_bin().ok_or_else(|| {
        format!(
            "kube-sim maps {image} to the cargo-built dprepo binary, which was not found: run `cargo build --workspace --bins` or set KUBE_SIM_DPREPO_BIN"
        )
    })?;
    let (len, mtime) = version_of(&bin).map_err(|e| format!("{}: {e}", bin.display()))?;
    let controller = find_controller_bin(&bin);
    let controller_version = match &controller {
        Some(c) => {
            let (l, m) = version_of(c).map_err(|e| format!("{}: {e}", c.display()))?;
            format!("-{l}-{m}")
        }
        None => String::new(),
    };
    // One layer per binary version, so a rebuilt binary is picked up by new containers
    // while running ones keep theirs.
    let dir = images_dir.join(format!("dprepo-{len}-{mtime}{controller_version}"));
    if dir.join(".complete").exists() {
        return Ok(dir);
    }
    let tmp = images_dir.join(format!(".tmp-{}", crate::cluster::name_suffix(8)));
    let build = || -> std::io::Result<()> {
        std::fs::create_dir_all(tmp.join("scripts"))?;
        for name in ["dprepo", "datasafed"] {
            link_or_copy(&bin, &tmp.join(name))?;
        }
        if let Some(c) = &controller {
            link_or_copy(c, &tmp.join("dprepo-controller"))?;
        }
        let script = tmp.join("scripts/install-datasafed.sh");
        std::fs::write(&script, INSTALL_DATASAFED)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
        std::fs::write(tmp.join(".complete"), b"")?;
        Ok(())
    };
    if let Err(e) = build() {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(format!("cannot build the image layer for {image}: {e}"));
    }
    if std::fs::rename(&tmp, &dir).is_err() {
        // Another container built it meanwhile.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::is_dprepo_image;

    #[test]
    fn only_this_projects_images_are_mapped() {
        for yes in [
            "docker.io/dprepo/dprepo:0.1.0",
            "dprepo/dprepo:latest",
            "dprepo/dprepo",
            "docker.io/dprepo/dprepo@sha256:0123",
            "dprepo/dprepo:1@sha256:0123",
        ] {
            assert!(is_dprepo_image(yes), "{yes}");
        }
        for no in [
            "apecloud/datasafed:latest",
            "busybox",
            "registry:5000/dprepo/dprepo:1",
            "dprepo/dprepo-tools:1",
            "quay.io/dprepo/dprepo:1",
        ] {
            assert!(!is_dprepo_image(no), "{no}");
        }
    }
}
