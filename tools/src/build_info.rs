//! What `dprepo version` prints: the version, the git commit and the linkage of this
//! binary (see tools/build.rs).

use serde::Serialize;

/// The crate version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The full git commit hash the binary was built from, or `unknown`.
pub const COMMIT: &str = env!("DPREPO_GIT_COMMIT");
/// `static` (no shared-library dependencies) or `dynamic`.
pub const LINKAGE: &str = env!("DPREPO_LINKAGE");
/// `<version> (commit <12 hex>, <linkage>)`: what `--version` prints after the name.
pub const VERSION_LINE: &str = env!("DPREPO_VERSION_LINE");

/// The JSON document of `dprepo version --json`.
#[derive(Debug, Serialize)]
pub struct BuildInfo {
    pub version: &'static str,
    pub commit: &'static str,
    #[serde(rename = "static")]
    pub is_static: bool,
}

/// This binary's build facts.
pub fn build_info() -> BuildInfo {
    BuildInfo {
        version: VERSION,
        commit: COMMIT,
        is_static: LINKAGE == "static",
    }
}

/// Prints `dprepo version`: the human form, or one JSON document.
pub fn print(json: bool) {
    if json {
        match serde_json::to_string(&build_info()) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("dprepo: error: {e}"),
        }
    } else {
        println!("dprepo {VERSION}\ncommit: {COMMIT}\nlinkage: {LINKAGE}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_line_names_version_commit_and_linkage() {
        assert!(VERSION_LINE.starts_with(VERSION));
        let short: String = COMMIT.chars().take(12).collect();
        assert!(VERSION_LINE.contains(&format!("commit {short}")));
        assert!(VERSION_LINE.ends_with(&format!("{LINKAGE})")));
        assert_eq!(LINKAGE == "static", cfg!(target_feature = "crt-static"));
    }
}
