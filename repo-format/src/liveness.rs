//! Whether the process that wrote a gc lease or a writer session marker is known to be
//! gone, so gc need not wait for its time to run out (SPEC.md sections 15 and 18).
//!
//! A holder records its hostname and pid, and (since this rule) the inode number of its
//! PID namespace (`/proc/self/ns/pid`) and the kernel's boot id
//! (`/proc/sys/kernel/random/boot_id`). A pid means something only within one PID
//! namespace of one boot: in Kubernetes a restarted pod keeps its hostname and every
//! container has its own PID namespace, so "same hostname, pid not running here" proves
//! nothing. The holder is dead only when hostname, boot id and PID namespace all match
//! this process's and no process has its pid. A holder that recorded neither field
//! (written before this rule) keeps the old rule: same hostname and pid not running.
//!
//! The pid is looked up in `/proc`, which must be this namespace's: when `/proc/self`
//! does not name this process (a `/proc` mounted for another namespace), nothing is
//! concluded.

/// The host name of this machine.
pub fn current_hostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// Who holds a lease or session: what a marker records about its writer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Holder {
    /// Host name.
    pub hostname: String,
    /// Process id, in its PID namespace.
    pub pid: u32,
    /// Inode number of its PID namespace; `None` in markers written before it was
    /// recorded, or where `/proc` is missing.
    pub pid_namespace: Option<u64>,
    /// Kernel boot id; `None` as `pid_namespace`.
    pub boot_id: Option<String>,
}

impl Holder {
    /// This process.
    pub fn current() -> Holder {
        Holder {
            hostname: current_hostname(),
            pid: std::process::id(),
            pid_namespace: current_pid_namespace(),
            boot_id: current_boot_id(),
        }
    }

    /// Whether this holder is known to be gone, judged from this process.
    pub fn is_dead(&self) -> bool {
        let here = Holder::current();
        let proc_is_ours = proc_self_pid() == Some(here.pid);
        is_dead(self, &here, proc_is_ours, |pid| {
            std::path::Path::new(&format!("/proc/{pid}")).exists()
        })
    }
}

/// The decision, with what it depends on given: `holder` as recorded, `here` this
/// process, whether `/proc` is this PID namespace's, and whether a pid runs here.
pub(crate) fn is_dead(
    holder: &Holder,
    here: &Holder,
    proc_is_ours: bool,
    pid_runs: impl Fn(u32) -> bool,
) -> bool {
    if holder.hostname != here.hostname || !proc_is_ours {
        return false;
    }
    let recorded = holder.pid_namespace.is_some() || holder.boot_id.is_some();
    if recorded {
        // Both must be known on both sides and equal: a pid of another boot or another
        // namespace says nothing about the processes here.
        let same_boot = holder.boot_id.is_some() && holder.boot_id == here.boot_id;
        let same_namespace =
            holder.pid_namespace.is_some() && holder.pid_namespace == here.pid_namespace;
        if !(same_boot && same_namespace) {
            return false;
        }
    }
    holder.pid != here.pid && !pid_runs(holder.pid)
}

/// The inode number of this process's PID namespace.
fn current_pid_namespace() -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/pid").ok().map(|m| m.ino())
}

/// The kernel's boot id (a UUID, new at every boot).
fn current_boot_id() -> Option<String> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let id = id.trim();
    (!id.is_empty()).then(|| id.to_owned())
}

/// The pid `/proc/self` names, as `/proc` sees this process.
fn proc_self_pid() -> Option<u32> {
    std::fs::read_link("/proc/self")
        .ok()?
        .to_str()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn here() -> Holder {
        Holder {
            hostname: "node-a".into(),
            pid: 100,
            pid_namespace: Some(4026531836),
            boot_id: Some("boot-1".into()),
        }
    }

    /// pid 200 is not running here; everything else is.
    fn runs(pid: u32) -> bool {
        pid != 200
    }

    #[test]
    fn dead_only_when_host_boot_and_namespace_match_and_the_pid_is_gone() {
        let gone = Holder { pid: 200, ..here() };
        assert!(is_dead(&gone, &here(), true, runs));
        // Running, or this very process.
        assert!(!is_dead(
            &Holder { pid: 300, ..here() },
            &here(),
            true,
            runs
        ));
        assert!(!is_dead(&here(), &here(), true, |_| false));
        // Another host, another PID namespace (a container with the same hostname),
        // another boot: its pid means nothing here.
        for other in [
            Holder {
                hostname: "node-b".into(),
                ..gone.clone()
            },
            Holder {
                pid_namespace: Some(4026532999),
                ..gone.clone()
            },
            Holder {
                boot_id: Some("boot-2".into()),
                ..gone.clone()
            },
            // Recorded only in part: not enough to tell.
            Holder {
                boot_id: None,
                ..gone.clone()
            },
        ] {
            assert!(!is_dead(&other, &here(), true, runs), "{other:?}");
        }
        // This process cannot tell its own namespace or boot: nothing is concluded
        // about a holder that recorded them.
        let blind = Holder {
            pid_namespace: None,
            boot_id: None,
            ..here()
        };
        assert!(!is_dead(&gone, &blind, true, runs));
        // A /proc of another namespace: nothing is concluded.
        assert!(!is_dead(&gone, &here(), false, runs));
    }

    /// Markers written before the fields existed keep the old rule: same hostname and
    /// the pid not running.
    #[test]
    fn old_markers_keep_the_hostname_and_pid_rule() {
        let old = Holder {
            hostname: "node-a".into(),
            pid: 200,
            pid_namespace: None,
            boot_id: None,
        };
        assert!(is_dead(&old, &here(), true, runs));
        assert!(!is_dead(
            &Holder {
                pid: 300,
                ..old.clone()
            },
            &here(),
            true,
            runs
        ));
        assert!(!is_dead(
            &Holder {
                hostname: "node-b".into(),
                ..old
            },
            &here(),
            true,
            runs
        ));
    }

    #[test]
    fn this_process_knows_its_namespace_and_boot() {
        let me = Holder::current();
        assert!(me.pid_namespace.is_some() && me.boot_id.is_some(), "{me:?}");
        assert!(!me.is_dead());
    }
}
