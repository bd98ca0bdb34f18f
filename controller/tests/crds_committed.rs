//! The CRDs committed under `deploy/crds/` are exactly what `dprepo-controller crd` generates
//! from the types today: a change to `controller/src/api` that is not regenerated fails here.

use std::collections::BTreeSet;
use std::path::PathBuf;

const REGENERATE: &str =
    "regenerate with: cargo run -p dprepo-controller -- crd --out-dir deploy/crds";

fn crd_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds")
}

#[test]
fn committed_crds_are_current() {
    let dir = crd_dir();
    let expected = dprepo_controller::crd::files().expect("CRDs serialize");
    let mut stale = Vec::new();
    for (name, content) in &expected {
        match std::fs::read_to_string(dir.join(name)) {
            Ok(committed) if committed == *content => {}
            Ok(_) => stale.push(format!("{name} differs")),
            Err(e) => stale.push(format!("{name}: {e}")),
        }
    }
    let wanted: BTreeSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
    let entries =
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}; {REGENERATE}", dir.display()));
    for entry in entries {
        let name = entry.expect("readable directory").file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".yaml") && !wanted.contains(name.as_ref()) {
            stale.push(format!("{name} is not generated any more (delete it)"));
        }
    }
    assert!(
        stale.is_empty(),
        "deploy/crds is stale:\n  {}\n{REGENERATE}",
        stale.join("\n  ")
    );
}
