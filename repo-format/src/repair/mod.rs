//! Repair (`dprepo repair index|packs|snapshots`): rebuild the index from pack headers;
//! take damaged blobs out of the index, keeping the intact blobs of their packs; write
//! repaired copies of snapshots that reference missing or damaged data.
//!
//! Every repair holds the gc lease while it runs (SPEC.md section 18.1), so no gc
//! deletes packs or rewrites index files beside it. Only bytes that were read and do not
//! decode count as damage: a storage error stops a repair before it deletes anything.

mod index;
mod packs;
mod snapshots;
#[cfg(test)]
mod tests;

pub use index::{repair_index, RepairIndexReport};
pub use packs::{
    plan_packs, repair_packs, DamagedPack, DroppedBlob, RepairPacksOptions, RepairPacksPlan,
    RepairPacksReport,
};
pub use snapshots::{
    repair_snapshots, LostSnapshot, RepairSnapshotsOptions, RepairSnapshotsReport,
    RepairedSnapshot, UnreadableSnapshot,
};
