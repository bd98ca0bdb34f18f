//! Names of derived objects, cut to the limits Kubernetes sets, exactly as KubeBlocks
//! derives them (so an installation moving between the two finds its objects):
//!
//! - pre-check Job, PVC and Secret: `pre-check-<uid[:8]>-<repo>`, cut to 63;
//! - per-namespace PVC and tool Secret, generated StorageClass and CSI Secret:
//!   `<prefix>-<repo>` cut to 56 bytes, then `-` and six random characters;
//! - dprepo's own: the generated key Secret `dprepo-key-<repo>` and the garbage
//!   collection Jobs `gc-<name>-<YYYYMMDDhhmmss>`.

/// Longest name of an object whose name is also a label value (Jobs: `job-name`).
pub const MAX_LABEL_NAME: usize = 63;

/// Longest base of a derived name before its random suffix (KubeBlocks' 56).
pub const MAX_DERIVED_BASE: usize = 56;

/// Longest name of a Secret (a DNS subdomain).
pub const MAX_SUBDOMAIN: usize = 253;

/// The characters of Kubernetes' random name suffixes (no vowels, no look-alikes).
pub const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The first `max` bytes of `s`, never splitting a character.
fn prefix(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// KubeBlocks' `cutName`: longer than 63 bytes is cut to 63, then one trailing `-` goes.
pub fn cut_name(name: &str) -> String {
    if name.len() > MAX_LABEL_NAME {
        let cut = prefix(name, MAX_LABEL_NAME);
        cut.strip_suffix('-').unwrap_or(cut).to_string()
    } else {
        name.to_string()
    }
}

/// The name of a BackupRepo's pre-check Job, and of its PVC (Mount) or Secret.
pub fn pre_check_name(repo_uid: &str, repo_name: &str) -> String {
    cut_name(&format!("pre-check-{}-{}", prefix(repo_uid, 8), repo_name))
}

/// The name of the Job (and its tool Secret) that revokes a deleted BackupRepo's access
/// key: `revoke-key-<uid8>-<repo>`, cut as [`pre_check_name`].
pub fn revoke_key_name(repo_uid: &str, repo_name: &str) -> String {
    cut_name(&format!("revoke-key-{}-{}", prefix(repo_uid, 8), repo_name))
}

/// A derived object's name: `<prefix>-<repo>` cut to 56 bytes, `-`, then `suffix`
/// (six characters of [`SUFFIX_ALPHABET`], see [`random_suffix`]).
pub fn derived_name(prefix_: &str, repo_name: &str, suffix: &str) -> String {
    let base = format!("{prefix_}-{repo_name}");
    format!("{}-{suffix}", prefix(&base, MAX_DERIVED_BASE))
}

/// Six random characters of [`SUFFIX_ALPHABET`] (Kubernetes' `rand.String(6)`).
///
/// # Errors
/// The operating system's random source failed.
pub fn random_suffix() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 6];
    getrandom::getrandom(&mut bytes)?;
    Ok(suffix_from(&bytes))
}

/// The suffix for six random bytes (the mapping [`random_suffix`] uses; tests pass bytes).
pub fn suffix_from(bytes: &[u8; 6]) -> String {
    bytes
        .iter()
        .map(|b| SUFFIX_ALPHABET[usize::from(*b) % SUFFIX_ALPHABET.len()] as char)
        .collect()
}

/// The Secret the controller creates for a repository's key when the user names none.
pub fn key_secret_name(repo_name: &str) -> String {
    prefix(&format!("dprepo-key-{repo_name}"), MAX_SUBDOMAIN)
        .trim_end_matches(['-', '.'])
        .to_string()
}

/// The Secret (controller's namespace, owned by the BackupRepo) holding the secret of the
/// access key pods get instead of the repository key ([`super::access`]).
pub fn access_secret_name(repo_name: &str) -> String {
    prefix(&format!("dprepo-access-{repo_name}"), MAX_SUBDOMAIN)
        .trim_end_matches(['-', '.'])
        .to_string()
}

/// The name of a garbage collection run's Job: `gc-<name>` cut to 48 bytes, then the
/// start time as `-YYYYMMDDhhmmss` (at most 63 bytes in all, unique per second).
pub fn gc_job_name(gc_name: &str, start: chrono::DateTime<chrono::Utc>) -> String {
    let base = format!("gc-{gc_name}");
    let base = prefix(&base, 48).trim_end_matches(['-', '.']);
    format!("{base}-{}", start.format("%Y%m%d%H%M%S"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_are_cut_as_kubeblocks_cuts_them() {
        assert_eq!(cut_name("short"), "short");
        let name = format!("{}-{}", "a".repeat(62), "bbb");
        // 63 bytes end with '-': KubeBlocks trims that one dash.
        assert_eq!(cut_name(&name), "a".repeat(62));
        assert_eq!(cut_name(&"x".repeat(80)).len(), 63);
    }

    #[test]
    fn pre_check_names_use_eight_characters_of_the_uid() {
        assert_eq!(
            pre_check_name("1c7bd8ef-5a2e-4f4d-9d0c-3b6c1e2f9a10", "my-repo"),
            "pre-check-1c7bd8ef-my-repo"
        );
        let long = "r".repeat(70);
        let name = pre_check_name("1c7bd8ef-5a2e", &long);
        assert_eq!(name.len(), 63);
        assert!(name.starts_with("pre-check-1c7bd8ef-rrr"));
        // A uid shorter than 8 characters (not from a real server) does not panic.
        assert_eq!(pre_check_name("abc", "r"), "pre-check-abc-r");
    }

    #[test]
    fn derived_names_cut_the_base_to_56_then_add_the_suffix() {
        assert_eq!(derived_name("pvc", "s3", "x2b4zq"), "pvc-s3-x2b4zq");
        let name = derived_name("tool-config", &"n".repeat(60), "bcdfgh");
        assert_eq!(name.len(), 56 + 7);
        assert!(name.ends_with("-bcdfgh"));
    }

    #[test]
    fn suffixes_use_the_kubernetes_alphabet() {
        let s = suffix_from(&[0, 1, 26, 27, 255, 100]);
        assert_eq!(s.len(), 6);
        assert!(s.bytes().all(|c| SUFFIX_ALPHABET.contains(&c)));
        assert_eq!(&s[..3], "bc9");
        let r = random_suffix().unwrap();
        assert!(r.bytes().all(|c| SUFFIX_ALPHABET.contains(&c)));
    }

    #[test]
    fn key_and_gc_job_names() {
        assert_eq!(key_secret_name("s3-repo"), "dprepo-key-s3-repo");
        assert!(key_secret_name(&"k".repeat(300)).len() <= 253);
        let t = chrono::DateTime::parse_from_rfc3339("2026-12-07T03:04:05Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(gc_job_name("s3-repo", t), "gc-s3-repo-20261207030405");
        let long = gc_job_name(&"g".repeat(100), t);
        assert_eq!(long.len(), 63);
    }
}
