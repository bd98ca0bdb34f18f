//! Pod volumes on the host, prepared as the kubelet prepares them before any container
//! starts, then bind-mounted into each container by `pod-exec`:
//!
//! - `emptyDir`: a directory of the pod (mode 0777), gone with the pod;
//! - `hostPath`: the host path, with the `type` checks and `*OrCreate` creation;
//! - `persistentVolumeClaim`: the bound PersistentVolume's directory (`hostPath` or
//!   `local` path, as kube-sim's volume binder provisions them); an unbound claim keeps
//!   the pod waiting;
//! - `secret`, `configMap`, `downwardAPI`, `projected` (`serviceAccountToken`,
//!   `configMap`, `secret`, `downwardAPI` sources): files written with the kubelet's
//!   atomic-writer layout (`..<timestamp>/` data directory, `..data` symlink swapped in one
//!   rename, top-level symlinks into it), `items`/`mode`/`defaultMode`/`optional`
//!   honoured, mounted read-only, and **rewritten while the pod runs** when the source
//!   changes (a downward-API file follows the pod's annotations, a token is renewed at 80%
//!   of its lifetime);
//! - `fsGroup`: files and directories of writable and atomic volumes get the group, and
//!   directories the set-group-id bit, as the kubelet's ownership change does.
//!
//! Everything else (csi, nfs, ephemeral, image ...) fails the mount with a message that
//! kube-sim does not provide it.

use super::env::{field_ref, resource_field_ref, Source};
use crate::cluster::Cluster;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A prepared volume.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Host directory (or file, for hostPath files).
    pub path: PathBuf,
    /// Mounted read-only whatever the mount says (atomic-writer volumes, read-only claims).
    pub read_only: bool,
}

/// Tokens issued for projected volumes, renewed at 80% of their lifetime.
#[derive(Default)]
pub struct Tokens {
    issued: HashMap<String, (String, Instant, u64)>,
}

fn mode_of(v: Option<&Value>, default: u32) -> u32 {
    v.and_then(Value::as_u64).map_or(default, |m| m as u32)
}

/// Files of one atomic volume: relative path -> (content, mode).
type Payload = BTreeMap<String, (Vec<u8>, u32)>;

fn valid_rel_path(p: &str) -> bool {
    !p.is_empty()
        && !p.starts_with('/')
        && !p.split('/').any(|c| c == ".." || c.is_empty())
        && !p.starts_with("..")
}

#[allow(clippy::too_many_arguments)] // the arguments are one projection source's fields
fn project_items(
    kind: &str,
    ns: &str,
    name: &str,
    items: Option<&Value>,
    optional: bool,
    default_mode: u32,
    src: &Cluster,
    out: &mut Payload,
) -> Result<(), String> {
    let Some(data) = src.data(kind, ns, name) else {
        if optional {
            return Ok(());
        }
        return Err(format!(
            "{} {name:?} not found",
            if kind == "Secret" {
                "secret"
            } else {
                "configmap"
            }
        ));
    };
    match items.and_then(Value::as_array) {
        Some(items) if !items.is_empty() => {
            for it in items {
                let key = it.get("key").and_then(Value::as_str).unwrap_or("");
                let path = it.get("path").and_then(Value::as_str).unwrap_or(key);
                let mode = mode_of(it.get("mode"), default_mode);
                match data.get(key) {
                    Some(b) if valid_rel_path(path) => {
                        out.insert(path.to_string(), (b.clone(), mode));
                    }
                    Some(_) => return Err(format!("invalid path {path:?}")),
                    None if optional => {}
                    None => {
                        return Err(if kind == "Secret" {
                            format!("secret references non-existent secret key: {key}")
                        } else {
                            format!("configmap references non-existent config key: {key}")
                        });
                    }
                }
            }
        }
        _ => {
            for (k, b) in data {
                if valid_rel_path(&k) {
                    out.insert(k, (b, default_mode));
                }
            }
        }
    }
    Ok(())
}

fn downward_items(
    pod: &Value,
    items: Option<&Value>,
    default_mode: u32,
    out: &mut Payload,
) -> Result<(), String> {
    for it in items.and_then(Value::as_array).into_iter().flatten() {
        let path = it.get("path").and_then(Value::as_str).unwrap_or("");
        if !valid_rel_path(path) {
            return Err(format!("invalid path {path:?}"));
        }
        let mode = mode_of(it.get("mode"), default_mode);
        let value = if let Some(f) = it.get("fieldRef") {
            field_ref(
                pod,
                f.get("fieldPath").and_then(Value::as_str).unwrap_or(""),
            )?
        } else if let Some(r) = it.get("resourceFieldRef") {
            let cname = r.get("containerName").and_then(Value::as_str).unwrap_or("");
            let c = super::env::find_container(pod, cname)
                .ok_or_else(|| format!("container {cname} not found"))?;
            resource_field_ref(
                &c,
                r.get("resource").and_then(Value::as_str).unwrap_or(""),
                r.get("divisor").and_then(Value::as_str),
            )?
        } else {
            String::new()
        };
        out.insert(path.to_string(), (value.into_bytes(), mode));
    }
    Ok(())
}

fn token_for(
    c: &Cluster,
    pod: &Value,
    vol: &str,
    src: &Value,
    tokens: &mut Tokens,
) -> Result<Vec<u8>, String> {
    let ns = pod
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    let sa = pod
        .pointer("/spec/serviceAccountName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("default");
    let secs = src
        .get("expirationSeconds")
        .and_then(Value::as_u64)
        .unwrap_or(3600)
        .max(600);
    let aud: Vec<String> = src
        .get("audience")
        .and_then(Value::as_str)
        .filter(|a| !a.is_empty())
        .map(|a| vec![a.to_string()])
        .unwrap_or_default();
    let key = format!(
        "{vol}/{}",
        src.get("path").and_then(Value::as_str).unwrap_or("")
    );
    if let Some((t, at, ttl)) = tokens.issued.get(&key) {
        if at.elapsed().as_secs() < ttl * 8 / 10 {
            return Ok(t.clone().into_bytes());
        }
    }
    let (tok, _) = c
        .issue_token(ns, sa, Some(secs as i64), &aud)
        .map_err(|e| e.message.clone())?;
    tokens
        .issued
        .insert(key, (tok.clone(), Instant::now(), secs));
    Ok(tok.into_bytes())
}

/// The files an atomic volume should hold now.
fn payload(
    c: &Cluster,
    pod: &Value,
    vol: &Value,
    tokens: &mut Tokens,
) -> Result<Option<Payload>, String> {
    let ns = pod
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    let vname = vol.get("name").and_then(Value::as_str).unwrap_or("");
    let mut out = Payload::new();
    if let Some(s) = vol.get("secret") {
        let name = s.get("secretName").and_then(Value::as_str).unwrap_or("");
        let optional = s.get("optional").and_then(Value::as_bool).unwrap_or(false);
        project_items(
            "Secret",
            ns,
            name,
            s.get("items"),
            optional,
            mode_of(s.get("defaultMode"), 0o644),
            c,
            &mut out,
        )?;
    } else if let Some(s) = vol.get("configMap") {
        let name = s.get("name").and_then(Value::as_str).unwrap_or("");
        let optional = s.get("optional").and_then(Value::as_bool).unwrap_or(false);
        project_items(
            "ConfigMap",
            ns,
            name,
            s.get("items"),
            optional,
            mode_of(s.get("defaultMode"), 0o644),
            c,
            &mut out,
        )?;
    } else if let Some(d) = vol.get("downwardAPI") {
        downward_items(
            pod,
            d.get("items"),
            mode_of(d.get("defaultMode"), 0o644),
            &mut out,
        )?;
    } else if let Some(p) = vol.get("projected") {
        let dm = mode_of(p.get("defaultMode"), 0o644);
        for s in p
            .get("sources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(x) = s.get("secret") {
                let name = x.get("name").and_then(Value::as_str).unwrap_or("");
                let optional = x.get("optional").and_then(Value::as_bool).unwrap_or(false);
                project_items(
                    "Secret",
                    ns,
                    name,
                    x.get("items"),
                    optional,
                    dm,
                    c,
                    &mut out,
                )?;
            } else if let Some(x) = s.get("configMap") {
                let name = x.get("name").and_then(Value::as_str).unwrap_or("");
                let optional = x.get("optional").and_then(Value::as_bool).unwrap_or(false);
                project_items(
                    "ConfigMap",
                    ns,
                    name,
                    x.get("items"),
                    optional,
                    dm,
                    c,
                    &mut out,
                )?;
            } else if let Some(x) = s.get("downwardAPI") {
                downward_items(pod, x.get("items"), dm, &mut out)?;
            } else if let Some(x) = s.get("serviceAccountToken") {
                let path = x.get("path").and_then(Value::as_str).unwrap_or("token");
                let tok = token_for(c, pod, vname, x, tokens)?;
                out.insert(path.to_string(), (tok, dm));
            } else {
                return Err("kube-sim supports projected sources secret, configMap, downwardAPI and serviceAccountToken only".into());
            }
        }
    } else {
        return Ok(None);
    }
    Ok(Some(out))
}

/// The current content of an atomic volume (as written by [`write_atomic`]).
fn current(dir: &Path) -> Payload {
    let mut out = Payload::new();
    let data = dir.join("..data");
    fn walk(base: &Path, rel: &str, out: &mut Payload) {
        let Ok(rd) = std::fs::read_dir(base.join(rel)) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let r = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let Ok(md) = e.metadata() else { continue };
            if md.is_dir() {
                walk(base, &r, out);
            } else if let Ok(b) = std::fs::read(e.path()) {
                out.insert(r, (b, md.permissions().mode() & 0o7777));
            }
        }
    }
    walk(&data, "", &mut out);
    out
}

/// Writes a payload the way the kubelet's atomic writer does. Returns whether it changed.
///
/// # Errors
/// File system errors.
pub fn write_atomic(dir: &Path, p: &Payload, fs_group: Option<u32>) -> std::io::Result<bool> {
    std::fs::create_dir_all(dir)?;
    let want: Payload = p
        .iter()
        .map(|(k, (b, m))| {
            (
                k.clone(),
                (b.clone(), fs_group.map_or(*m, |_| *m | 0o040) & 0o7777),
            )
        })
        .collect();
    if dir.join("..data").exists() && current(dir) == want {
        return Ok(false);
    }
    let ts = format!("..{}", chrono::Utc::now().format("%Y_%m_%d_%H_%M_%S.%9f"));
    let tsdir = dir.join(&ts);
    std::fs::create_dir_all(&tsdir)?;
    for (rel, (bytes, mode)) in &want {
        let f = tsdir.join(rel);
        if let Some(parent) = f.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&f, bytes)?;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(*mode))?;
        if let Some(g) = fs_group {
            std::os::unix::fs::chown(&f, None, Some(g))?;
        }
    }
    let old = std::fs::read_link(dir.join("..data")).ok();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&ts, &tmp)?;
    std::fs::rename(&tmp, dir.join("..data"))?;
    // Top-level names point into ..data; stale ones go.
    let tops: std::collections::BTreeSet<String> = want
        .keys()
        .map(|k| k.split('/').next().unwrap_or("").to_string())
        .collect();
    for t in &tops {
        let link = dir.join(t);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{t}"), &link)?;
        }
    }
    for e in std::fs::read_dir(dir)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("..") && !tops.contains(&name) {
            let _ = std::fs::remove_file(e.path());
        }
    }
    if let Some(o) = old {
        if o != Path::new(&ts) {
            let _ = std::fs::remove_dir_all(dir.join(o));
        }
    }
    Ok(true)
}

fn set_group(path: &Path, gid: u32, writable: bool) {
    fn walk(p: &Path, gid: u32, writable: bool) {
        let Ok(md) = std::fs::symlink_metadata(p) else {
            return;
        };
        if md.file_type().is_symlink() {
            return;
        }
        let _ = std::os::unix::fs::chown(p, None, Some(gid));
        let mode = md.permissions().mode();
        let add = if md.is_dir() {
            0o2050 | if writable { 0o020 } else { 0 }
        } else {
            0o040 | if writable { 0o020 } else { 0 }
        };
        let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode((mode | add) & 0o7777));
        if md.is_dir() {
            if let Ok(rd) = std::fs::read_dir(p) {
                for e in rd.flatten() {
                    walk(&e.path(), gid, writable);
                }
            }
        }
    }
    walk(path, gid, writable);
}

fn pv_path(c: &Cluster, ns: &str, claim: &str) -> Result<(PathBuf, String), String> {
    let t = c
        .target("", "v1", "persistentvolumeclaims", Some(ns))
        .map_err(|e| e.message)?;
    let pvc = c
        .get(&t, claim)
        .map_err(|_| format!("persistentvolumeclaim {claim:?} not found"))?;
    if pvc
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|d| !d.is_null())
    {
        return Err(format!("persistentvolumeclaim {claim:?} is being deleted"));
    }
    let vol = pvc
        .pointer("/spec/volumeName")
        .and_then(Value::as_str)
        .unwrap_or("");
    if pvc.pointer("/status/phase").and_then(Value::as_str) != Some("Bound") || vol.is_empty() {
        return Err(format!(
            "pod has unbound immediate PersistentVolumeClaims (claim {claim:?})"
        ));
    }
    let pvt = c
        .target("", "v1", "persistentvolumes", None)
        .map_err(|e| e.message)?;
    let pv = c
        .get(&pvt, vol)
        .map_err(|_| format!("persistentvolume {vol:?} not found"))?;
    let path = pv
        .pointer("/spec/hostPath/path")
        .or_else(|| pv.pointer("/spec/local/path"))
        .and_then(Value::as_str)
        .ok_or_else(|| {
            format!(
                "kube-sim cannot mount persistentvolume {vol:?}: it has no hostPath or local path"
            )
        })?;
    Ok((PathBuf::from(path), vol.to_string()))
}

fn host_path(v: &Value) -> Result<PathBuf, String> {
    let path = v.get("path").and_then(Value::as_str).unwrap_or("");
    let ty = v.get("type").and_then(Value::as_str).unwrap_or("");
    let p = PathBuf::from(path);
    let md = std::fs::metadata(&p);
    let check = |ok: bool, what: &str| {
        if ok {
            Ok(p.clone())
        } else {
            Err(format!(
                "hostPath type check failed: {path} is not a {what}"
            ))
        }
    };
    use std::os::unix::fs::FileTypeExt;
    match ty {
        "" => Ok(p.clone()),
        "DirectoryOrCreate" => {
            if md.is_err() {
                std::fs::create_dir_all(&p).map_err(|e| format!("{path}: {e}"))?;
                let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755));
            }
            check(std::fs::metadata(&p).is_ok_and(|m| m.is_dir()), "directory")
        }
        "FileOrCreate" => {
            if md.is_err() {
                if let Some(parent) = p.parent() {
                    let _ = std::fs::create_dir_all(parent);
                }
                std::fs::write(&p, b"").map_err(|e| format!("{path}: {e}"))?;
                let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644));
            }
            check(std::fs::metadata(&p).is_ok_and(|m| m.is_file()), "file")
        }
        "Directory" => check(md.is_ok_and(|m| m.is_dir()), "directory"),
        "File" => check(md.is_ok_and(|m| m.is_file()), "file"),
        "Socket" => check(md.is_ok_and(|m| m.file_type().is_socket()), "socket"),
        "CharDevice" => check(
            md.is_ok_and(|m| m.file_type().is_char_device()),
            "character device",
        ),
        "BlockDevice" => check(
            md.is_ok_and(|m| m.file_type().is_block_device()),
            "block device",
        ),
        other => Err(format!("invalid HostPathType {other:?}")),
    }
}

fn fs_group(pod: &Value) -> Option<u32> {
    pod.pointer("/spec/securityContext/fsGroup")
        .and_then(Value::as_u64)
        .map(|g| g as u32)
}

/// Prepares every volume of a pod under `dir`. On failure, the kubelet's FailedMount
/// message (`MountVolume.SetUp failed for volume "v" : ...`).
///
/// # Errors
/// The message.
pub fn prepare(
    c: &Cluster,
    pod: &Value,
    dir: &Path,
    tokens: &mut Tokens,
) -> Result<HashMap<String, Prepared>, String> {
    let ns = pod
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    let mut out = HashMap::new();
    let fsg = fs_group(pod);
    for v in pod
        .pointer("/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = v
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let fail = |m: String| format!("MountVolume.SetUp failed for volume {name:?} : {m}");
        let vdir = dir.join(&name);
        let prepared = if v.get("emptyDir").is_some() {
            if !vdir.exists() {
                std::fs::create_dir_all(&vdir).map_err(|e| fail(e.to_string()))?;
                let _ = std::fs::set_permissions(&vdir, std::fs::Permissions::from_mode(0o777));
                if let Some(g) = fsg {
                    set_group(&vdir, g, true);
                }
            }
            Prepared {
                path: vdir,
                read_only: false,
            }
        } else if let Some(h) = v.get("hostPath") {
            Prepared {
                path: host_path(h).map_err(fail)?,
                read_only: false,
            }
        } else if let Some(pvc) = v.get("persistentVolumeClaim") {
            let claim = pvc.get("claimName").and_then(Value::as_str).unwrap_or("");
            let (path, _) = pv_path(c, ns, claim).map_err(fail)?;
            std::fs::create_dir_all(&path).map_err(|e| fail(e.to_string()))?;
            if let Some(g) = fsg {
                set_group(&path, g, true);
            }
            Prepared {
                path,
                read_only: pvc
                    .get("readOnly")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            }
        } else {
            match payload(c, pod, v, tokens).map_err(fail)? {
                Some(p) => {
                    write_atomic(&vdir, &p, fsg).map_err(|e| fail(e.to_string()))?;
                    Prepared {
                        path: vdir,
                        read_only: true,
                    }
                }
                None => {
                    let kind = v
                        .as_object()
                        .and_then(|m| m.keys().find(|k| *k != "name").cloned())
                        .unwrap_or_default();
                    return Err(fail(format!("kube-sim does not provide {kind} volumes")));
                }
            }
        };
        out.insert(name, prepared);
    }
    Ok(out)
}

/// Rewrites the atomic volumes whose sources changed (errors leave the old content, as
/// the kubelet keeps the last good payload).
pub fn refresh(c: &Cluster, pod: &Value, dir: &Path, tokens: &mut Tokens) {
    let fsg = fs_group(pod);
    for v in pod
        .pointer("/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = v.get("name").and_then(Value::as_str).unwrap_or("");
        if let Ok(Some(p)) = payload(c, pod, v, tokens) {
            let _ = write_atomic(&dir.join(name), &p, fsg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writer_layout_and_updates() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("v");
        let mut p = Payload::new();
        p.insert("a".into(), (b"1".to_vec(), 0o644));
        p.insert("sub/b".into(), (b"2".to_vec(), 0o400));
        assert!(write_atomic(&dir, &p, None).unwrap());
        assert_eq!(std::fs::read(dir.join("a")).unwrap(), b"1");
        assert_eq!(std::fs::read(dir.join("sub/b")).unwrap(), b"2");
        assert_eq!(
            std::fs::read_link(dir.join("a")).unwrap(),
            PathBuf::from("..data/a")
        );
        let first = std::fs::read_link(dir.join("..data")).unwrap();
        assert!(first.to_string_lossy().starts_with(".."));
        assert_eq!(
            std::fs::metadata(dir.join("sub/b"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o400
        );
        // Unchanged: nothing rewritten.
        assert!(!write_atomic(&dir, &p, None).unwrap());
        // Changed: a new data directory, the old one and stale names gone.
        let mut q = Payload::new();
        q.insert("a".into(), (b"3".to_vec(), 0o644));
        assert!(write_atomic(&dir, &q, None).unwrap());
        assert_eq!(std::fs::read(dir.join("a")).unwrap(), b"3");
        assert!(!dir.join("sub").exists());
        assert!(!dir.join(&first).exists());
    }

    #[test]
    fn relative_paths_only() {
        assert!(valid_rel_path("a/b"));
        for bad in ["", "/a", "../a", "a/../b", "..data", "a//b"] {
            assert!(!valid_rel_path(bad), "{bad}");
        }
    }
}
