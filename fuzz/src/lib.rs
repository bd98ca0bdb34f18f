//! Shared by the fuzz targets: the allocation bound.
//!
//! Every target runs its entry point through [`run_bounded`], which fails the input
//! (panics, so libFuzzer saves it as a crash) when the peak of live Rust heap bytes
//! during the call exceeds [`BASE_BOUND`] plus [`BOUND_PER_INPUT_BYTE`] per input byte:
//! a parser must not let a few bytes of storage claim gigabytes. Allocations made by C
//! code (zstd's window buffer) bypass the Rust allocator; run with libFuzzer's
//! `-malloc_limit_mb` to bound those (README, "Fuzzing").
//!
//! This is the one place with `unsafe`: a `GlobalAlloc` must be an `unsafe impl`. It
//! only counts bytes and forwards to the system allocator. The crate is outside the main
//! workspace, whose lints forbid `unsafe`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Heap allowed to any input regardless of its size: a runtime per call, copies of the
/// fuzz repository, the 1 MiB plaintexts fuzz inputs may ask for.
pub const BASE_BOUND: usize = 32 << 20;
/// Heap allowed per input byte on top of [`BASE_BOUND`].
pub const BOUND_PER_INPUT_BYTE: usize = 64;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// Forwards to [`System`], counting live bytes and their peak.
struct PeakCounting;

fn grew(bytes: usize) {
    let live = LIVE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

// SAFETY: every method forwards its arguments unchanged to `System`, which upholds the
// `GlobalAlloc` contract; the counters have no effect on the returned memory.
unsafe impl GlobalAlloc for PeakCounting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: PeakCounting = PeakCounting;

/// Run `target` once on an empty input outside the bound, so caches built on first use
/// (keys, the fuzz repository, thread pools) do not count against the first input.
pub fn warm_up(target: fn(&[u8])) {
    target(&[]);
}

/// Run `target` on `data` and panic if its peak heap use exceeds the bound.
pub fn run_bounded(target: fn(&[u8]), data: &[u8]) {
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    target(data);
    let used = PEAK.load(Ordering::Relaxed).saturating_sub(before);
    let bound = BASE_BOUND + BOUND_PER_INPUT_BYTE * data.len();
    assert!(
        used <= bound,
        "peak heap use of {used} bytes exceeds the bound of {bound} bytes for a {}-byte input",
        data.len()
    );
}
