//! `dprepo-controller backup-manager`: the `manager` sidecar of backupData Jobs, in place
//! of KubeBlocks' kubectl script (same contract, no kubectl in the image):
//!
//! 1. waits for `$DP_BACKUP_INFO_FILE` (checking every `$DP_CHECK_INTERVAL` seconds); if
//!    `<file>.exit` appears first, the backup container failed: exit 1;
//! 2. reads what only the repository knows about the backup's files (every file pushed
//!    under `$DP_BACKUP_BASE_PATH`), with `/dprepo stats --json --path <base>`: snapshot
//!    ids, logical bytes, bytes newly stored, dedup ratio; appended to the script's
//!    `extras` as one map ([`DprepoFigures::extras`]);
//! 3. merge-patches the Backup's status (`$KB_NAMESPACE`/`$DP_BACKUP_NAME`) with the file's
//!    object plus those extras, as the pod's service account (the worker role allows
//!    `backups/status` patch);
//! 4. pushes the Backup as JSON to `<base>/kubeblocks-backup.json` with datasafed, as
//!    KubeBlocks does.
//!
//! With `--continuous` (the sidecar of a Continuous backup's StatefulSet, KubeBlocks'
//! continuous sync script) it never ends on its own: every `$DP_CHECK_INTERVAL` seconds,
//! when the file's content differs from what it last reported, it merge-patches the
//! Backup's status with it (the archiver rewrites the file as the archive grows:
//! `totalSize`, `timeRange.end`), with the repository's figures as counts
//! ([`DprepoFigures::summary_extras`]: a WAL archive holds one snapshot per segment, too
//! many to list); three failed patches in a row end it with exit 1 (the pod restarts
//! it); SIGTERM ends it with exit 0. It pushes no `kubeblocks-backup.json`.
//!
//! The backup.info file is untrusted input: at most [`MAX_INFO_BYTES`], a JSON object.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use kube::api::{Api, Patch, PatchParams};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::io::AsyncWriteExt;

use crate::api::Backup;

/// Largest backup.info accepted.
pub const MAX_INFO_BYTES: u64 = 1 << 20;
/// The `type` of the extras map the manager adds.
pub const EXTRAS_TYPE: &str = "dprepo";
/// The file the Backup is pushed to, under the backup's base path.
pub const BACKUP_JSON: &str = "/kubeblocks-backup.json";

/// The manager's settings (environment of the sidecar, which copies the backup
/// container's).
#[derive(Debug, Clone)]
pub struct ManagerOptions {
    /// `DP_BACKUP_INFO_FILE`.
    pub info_file: PathBuf,
    /// `DP_CHECK_INTERVAL` seconds.
    pub interval: Duration,
    /// `KB_NAMESPACE`.
    pub namespace: String,
    /// `DP_BACKUP_NAME`.
    pub backup: String,
    /// `DP_BACKUP_BASE_PATH`.
    pub base_path: String,
    /// The dprepo binary (`/dprepo` in dprepo's image).
    pub dprepo: PathBuf,
    /// The datasafed binary (`$DP_DATASAFED_BIN_PATH/datasafed`).
    pub datasafed: PathBuf,
    /// Report every new backup.info until terminated (Continuous backups).
    pub continuous: bool,
}

impl ManagerOptions {
    /// From the process environment.
    ///
    /// # Errors
    /// A required variable is missing.
    pub fn from_env() -> Result<Self> {
        let var = |n: &str| -> Result<String> {
            std::env::var(n)
                .ok()
                .filter(|v| !v.is_empty())
                .with_context(|| format!("environment variable {n} is not set"))
        };
        let interval = std::env::var("DP_CHECK_INTERVAL")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|v| *v > 0)
            .unwrap_or(5);
        let bin_dir =
            std::env::var("DP_DATASAFED_BIN_PATH").unwrap_or_else(|_| "/bin/datasafed".into());
        Ok(ManagerOptions {
            info_file: PathBuf::from(var("DP_BACKUP_INFO_FILE")?),
            interval: Duration::from_secs(interval),
            namespace: var("KB_NAMESPACE")?,
            backup: var("DP_BACKUP_NAME")?,
            base_path: var("DP_BACKUP_BASE_PATH")?,
            dprepo: PathBuf::from(std::env::var("DPREPO_BIN").unwrap_or_else(|_| "/dprepo".into())),
            datasafed: PathBuf::from(bin_dir).join("datasafed"),
            continuous: false,
        })
    }
}

/// What the repository says about a backup's files.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DprepoFigures {
    /// The snapshots holding the files (full ids).
    pub snapshots: Vec<String>,
    /// Bytes of the files as pushed.
    pub logical_bytes: u64,
    /// Bytes this backup added to the repository (after dedup and compression).
    pub stored_bytes: u64,
}

impl DprepoFigures {
    /// logical / stored (0 stored: the logical size, as everything was known).
    pub fn dedup_ratio(&self) -> f64 {
        if self.stored_bytes == 0 {
            return self.logical_bytes as f64;
        }
        self.logical_bytes as f64 / self.stored_bytes as f64
    }

    /// The extras map: `type=dprepo`, `snapshots` (comma list), `logicalBytes`,
    /// `storedBytes`, `dedupRatio` (two decimals).
    pub fn extras(&self) -> Value {
        json!({
            "type": EXTRAS_TYPE,
            "snapshots": self.snapshots.join(","),
            "logicalBytes": self.logical_bytes.to_string(),
            "storedBytes": self.stored_bytes.to_string(),
            "dedupRatio": format!("{:.2}", self.dedup_ratio()),
        })
    }

    /// The extras map of a Continuous backup: as [`DprepoFigures::extras`] with
    /// `snapshotCount` in place of the id list.
    pub fn summary_extras(&self) -> Value {
        json!({
            "type": EXTRAS_TYPE,
            "snapshotCount": self.snapshots.len().to_string(),
            "logicalBytes": self.logical_bytes.to_string(),
            "storedBytes": self.stored_bytes.to_string(),
            "dedupRatio": format!("{:.2}", self.dedup_ratio()),
        })
    }
}

#[derive(Deserialize)]
struct Stats {
    per_snapshot: Vec<SnapshotStats>,
}

#[derive(Deserialize)]
struct SnapshotStats {
    id: String,
    logical_bytes: u64,
    bytes_stored_by_backup: u64,
    #[serde(default)]
    paths: Vec<String>,
}

/// Reads `dprepo stats --json` output; files named [`BACKUP_JSON`] (a previous attempt's
/// copy of the Backup) are left out.
///
/// # Errors
/// Output that is not the stats document.
pub fn parse_stats(text: &str) -> Result<DprepoFigures> {
    let stats: Stats = serde_json::from_str(text).context("reading `dprepo stats --json`")?;
    let mut f = DprepoFigures::default();
    for s in stats.per_snapshot {
        if s.paths.iter().all(|p| p.ends_with(BACKUP_JSON)) && !s.paths.is_empty() {
            continue;
        }
        f.snapshots.push(s.id);
        f.logical_bytes = f.logical_bytes.saturating_add(s.logical_bytes);
        f.stored_bytes = f.stored_bytes.saturating_add(s.bytes_stored_by_backup);
    }
    Ok(f)
}

/// Reads the backup.info object; its `extras` (if any) must be a list of string maps.
///
/// # Errors
/// Too large, not a JSON object, or `extras` of the wrong shape.
pub fn parse_info(bytes: &[u8]) -> Result<Map<String, Value>> {
    if bytes.len() as u64 > MAX_INFO_BYTES {
        bail!(
            "backup.info is {} bytes; at most {MAX_INFO_BYTES} are accepted",
            bytes.len()
        );
    }
    let v: Value = serde_json::from_slice(bytes).context("backup.info is not JSON")?;
    let Value::Object(map) = v else {
        bail!("backup.info is not a JSON object");
    };
    if let Some(extras) = map.get("extras") {
        let ok = extras.as_array().is_some_and(|a| {
            a.iter().all(|m| {
                m.as_object()
                    .is_some_and(|o| o.values().all(Value::is_string))
            })
        });
        if !ok {
            bail!("backup.info: extras must be a list of maps of strings");
        }
    }
    Ok(map)
}

/// The status patch: the info object with the dprepo map appended to `extras` (or an
/// error map when the figures could not be read).
pub fn status_patch(
    info: Map<String, Value>,
    figures: std::result::Result<DprepoFigures, String>,
) -> Value {
    status_patch_with(info, figures.map(|f| f.extras()))
}

/// [`status_patch`] with the figures already made into their extras map.
pub fn status_patch_with(
    mut info: Map<String, Value>,
    figures: std::result::Result<Value, String>,
) -> Value {
    let map = match figures {
        Ok(m) => m,
        Err(e) => json!({"type": EXTRAS_TYPE, "error": crate::reconcile::truncate(&e, 1024)}),
    };
    let mut extras = info
        .remove("extras")
        .and_then(|e| e.as_array().cloned())
        .unwrap_or_default();
    extras.retain(|m| m.get("type").and_then(Value::as_str) != Some(EXTRAS_TYPE));
    extras.push(map);
    info.insert("extras".into(), Value::Array(extras));
    json!({ "status": info })
}

async fn wait_for_info(o: &ManagerOptions) -> Result<Vec<u8>> {
    let exit = {
        let mut s = o.info_file.clone().into_os_string();
        s.push(".exit");
        PathBuf::from(s)
    };
    loop {
        if exit.exists() {
            bail!(
                "exit file {} exists: the backup container failed",
                exit.display()
            );
        }
        if o.info_file.exists() {
            let meta = tokio::fs::metadata(&o.info_file).await?;
            if meta.len() > MAX_INFO_BYTES {
                bail!(
                    "{} is {} bytes; at most {MAX_INFO_BYTES} are accepted",
                    o.info_file.display(),
                    meta.len()
                );
            }
            return Ok(tokio::fs::read(&o.info_file).await?);
        }
        eprintln!(
            "backup info file {} does not exist yet, waiting {:?}",
            o.info_file.display(),
            o.interval
        );
        tokio::time::sleep(o.interval).await;
    }
}

async fn figures(o: &ManagerOptions) -> std::result::Result<DprepoFigures, String> {
    let out = tokio::process::Command::new(&o.dprepo)
        .args(["stats", "--json", "--quiet", "--path", &o.base_path])
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("running {} stats: {e}", o.dprepo.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} stats failed: {}",
            o.dprepo.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    parse_stats(&String::from_utf8_lossy(&out.stdout)).map_err(|e| format!("{e:#}"))
}

async fn push_backup_json(o: &ManagerOptions, body: &[u8]) -> Result<()> {
    let mut child = tokio::process::Command::new(&o.datasafed)
        .args(["push", "-", BACKUP_JSON])
        .env("DATASAFED_BACKEND_BASE_PATH", &o.base_path)
        .stdin(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", o.datasafed.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(body).await?;
    }
    let status = child.wait().await?;
    if !status.success() {
        bail!("datasafed push {BACKUP_JSON} failed ({status})");
    }
    Ok(())
}

/// Reads the info file when it exists and is not larger than [`MAX_INFO_BYTES`].
async fn read_info(path: &std::path::Path) -> Result<Option<Vec<u8>>> {
    let meta = match tokio::fs::metadata(path).await {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    if meta.len() > MAX_INFO_BYTES {
        bail!(
            "{} is {} bytes; at most {MAX_INFO_BYTES} are accepted",
            path.display(),
            meta.len()
        );
    }
    match tokio::fs::read(path).await {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// The continuous manager (module doc): reports each new backup.info until SIGTERM.
///
/// # Errors
/// Three status patches in a row failed; the API server cannot be reached.
pub async fn run_continuous(o: ManagerOptions) -> Result<()> {
    crate::run::install_crypto_provider();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let client = kube::Client::try_default()
        .await
        .context("connecting to the API server with the pod's service account")?;
    let api: Api<Backup> = Api::namespaced(client, &o.namespace);
    let mut reported: Option<Vec<u8>> = None;
    let mut failures = 0u32;
    loop {
        tokio::select! {
            _ = term.recv() => {
                println!("Terminating...");
                return Ok(());
            }
            _ = tokio::time::sleep(o.interval) => {}
        }
        let bytes = match read_info(&o.info_file).await {
            Ok(Some(b)) => b,
            Ok(None) => continue,
            Err(e) => {
                eprintln!("warning: {e:#}");
                continue;
            }
        };
        if reported.as_deref() == Some(bytes.as_slice()) {
            continue;
        }
        let info = match parse_info(&bytes) {
            Ok(i) => i,
            Err(e) => {
                // The archiver may be halfway through rewriting it: read it again later.
                eprintln!("warning: {e:#}");
                continue;
            }
        };
        println!(
            "start to patch backupInfo: {}",
            String::from_utf8_lossy(&bytes).trim()
        );
        let figures = figures(&o).await.map(|f| f.summary_extras());
        if let Err(e) = &figures {
            eprintln!("warning: could not read the repository's figures: {e}");
        }
        let patch = status_patch_with(info, figures);
        match api
            .patch_status(&o.backup, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                println!("update backup status successfully");
                failures = 0;
                reported = Some(bytes);
            }
            Err(e) => {
                failures += 1;
                eprintln!(
                    "patching the status of Backup {}/{} failed (attempt {failures}): {e}",
                    o.namespace, o.backup
                );
                if failures >= 3 {
                    bail!(
                        "patching the status of Backup {}/{} failed 3 times: {e}",
                        o.namespace,
                        o.backup
                    );
                }
            }
        }
    }
}

/// Runs the manager until the backup reported (Ok) or failed (Err: exit 1); with
/// `continuous`, [`run_continuous`].
///
/// # Errors
/// The `.exit` file appeared, the info is invalid, or the Backup could not be patched.
pub async fn run(o: ManagerOptions) -> Result<()> {
    if o.continuous {
        return run_continuous(o).await;
    }
    crate::run::install_crypto_provider();
    let bytes = wait_for_info(&o).await?;
    let info = parse_info(&bytes)?;
    println!("backupInfo:{}", String::from_utf8_lossy(&bytes).trim());
    let figures = figures(&o).await;
    if let Err(e) = &figures {
        eprintln!("warning: could not read the repository's figures: {e}");
    }
    let patch = status_patch(info, figures);
    let client = kube::Client::try_default()
        .await
        .context("connecting to the API server with the pod's service account")?;
    let api: Api<Backup> = Api::namespaced(client, &o.namespace);
    let mut last = None;
    for attempt in 0..3 {
        match api
            .patch_status(&o.backup, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                last = None;
                break;
            }
            Err(e) => {
                eprintln!(
                    "patching the status of Backup {}/{} failed (attempt {}): {e}",
                    o.namespace,
                    o.backup,
                    attempt + 1
                );
                last = Some(e);
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
    if let Some(e) = last {
        bail!(
            "patching the status of Backup {}/{}: {e}",
            o.namespace,
            o.backup
        );
    }
    println!("update backup status successfully");
    let backup = api
        .get(&o.backup)
        .await
        .with_context(|| format!("reading Backup {}/{}", o.namespace, o.backup))?;
    let body = serde_json::to_vec_pretty(&backup)?;
    push_backup_json(&o, &body).await?;
    println!("pushed {}{BACKUP_JSON}", o.base_path);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_are_summed_without_the_backup_json() {
        let text = r#"{"per_snapshot": [
            {"id": "aa", "logical_bytes": 1000, "bytes_stored_by_backup": 100, "paths": ["/n/b/x.tar.zst"]},
            {"id": "bb", "logical_bytes": 500, "bytes_stored_by_backup": 400, "paths": ["/n/b/y"]},
            {"id": "cc", "logical_bytes": 9, "bytes_stored_by_backup": 9, "paths": ["/n/b/kubeblocks-backup.json"]}],
            "snapshots": 3}"#;
        let f = parse_stats(text).unwrap();
        assert_eq!(f.snapshots, ["aa", "bb"]);
        assert_eq!((f.logical_bytes, f.stored_bytes), (1500, 500));
        assert_eq!(f.extras()["dedupRatio"], "3.00");
        assert!(parse_stats("{}").is_err());
    }

    #[test]
    fn info_files_are_checked_and_extras_appended() {
        let info = parse_info(br#"{"totalSize":"42","timeRange":{"start":"2026-01-01T00:00:00Z"},"extras":[{"a":"b"}]}"#).unwrap();
        let f = DprepoFigures {
            snapshots: vec!["aa".into()],
            logical_bytes: 10,
            stored_bytes: 5,
        };
        let p = status_patch(info, Ok(f));
        assert_eq!(p["status"]["totalSize"], "42");
        assert_eq!(p["status"]["extras"][0]["a"], "b");
        assert_eq!(p["status"]["extras"][1]["type"], "dprepo");
        assert_eq!(p["status"]["extras"][1]["snapshots"], "aa");
        assert_eq!(p["status"]["extras"][1]["dedupRatio"], "2.00");
        let f = DprepoFigures {
            snapshots: vec!["aa".into(), "bb".into()],
            logical_bytes: 10,
            stored_bytes: 5,
        };
        assert_eq!(f.summary_extras()["snapshotCount"], "2");
        assert!(f.summary_extras().get("snapshots").is_none());
        let p = status_patch(Map::new(), Err("no repository".into()));
        assert_eq!(p["status"]["extras"][0]["error"], "no repository");
        assert!(parse_info(b"[1]").is_err());
        assert!(parse_info(br#"{"extras":[{"a":1}]}"#).is_err());
        assert!(parse_info(&vec![b' '; (MAX_INFO_BYTES + 1) as usize]).is_err());
    }
}
