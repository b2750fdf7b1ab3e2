//! KSM for a case: ksmd running fast for the case's length, and a wait for
//! this process's pages to be merged. `run` and the scan knobs are global:
//! callers hold `#[file_serial(ksm)]`.

use crate::knob::Knob;
use std::time::{Duration, Instant};

/// ksmd started and scanning without pause until dropped; the old
/// values come back on drop.
#[must_use = "ksmd stops again when the guard is dropped"]
pub struct Ksmd {
    _knobs: Vec<Knob>,
}

const KSM: &str = "/sys/kernel/mm/ksm";

impl Ksmd {
    /// Err is the knob that could not be set.
    pub fn start() -> Result<Ksmd, crate::knob::KnobError> {
        let mut knobs = Vec::new();
        // Merging a page takes two scans of it (unstable tree, then stable);
        // scan whole areas each pass and do not sleep long between passes.
        for (k, v) in [("pages_to_scan", "4096"), ("sleep_millisecs", "1"), ("run", "1")] {
            knobs.push(Knob::set(format!("{KSM}/{k}"), v)?);
        }
        Ok(Ksmd { _knobs: knobs })
    }
}

/// The page frame mapped at `addr` (pagemap bits 0-54; root sees them),
/// None when nothing is mapped.
pub fn pfn(addr: usize) -> Option<u64> {
    let e = super::pagemap::entry(addr).ok()?;
    (e & super::pagemap::PM_PRESENT != 0).then_some(e & ((1 << 55) - 1))
}

/// The distinct page frames mapped over `npages` base pages from `addr`:
/// 1 once KSM merged identical pages into one, `npages` once none share.
pub fn frames(addr: usize, npages: usize) -> usize {
    let ps = crate::mem::base_page_size();
    let mut v: Vec<Option<u64>> = (0..npages).map(|i| pfn(addr + i * ps)).collect();
    v.sort();
    v.dedup();
    v.len()
}

/// `/proc/self/ksm_merging_pages`: this process's pages ksmd has merged,
/// as of its last scan (an unmerge or unmap shows only after the next).
pub fn merging_pages() -> usize {
    std::fs::read_to_string("/proc/self/ksm_merging_pages")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// The KSM pages `npages` identical pages merge into: one per
/// `max_page_sharing` (256 by default) mappings.
pub fn merged_frames(npages: usize) -> usize {
    let max = std::fs::read_to_string(format!("{KSM}/max_page_sharing"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(256usize);
    npages.div_ceil(max.max(2))
}

/// `/sys/kernel/mm/ksm/full_scans`: passes ksmd has completed over every
/// mergeable area of the machine.
pub fn full_scans() -> u64 {
    std::fs::read_to_string(format!("{KSM}/full_scans"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Full passes ksmd needs to merge two identical pages it has not seen:
/// one to note each page's checksum, one to put the first in the unstable
/// tree, one to merge the second into it (mm/ksm.c `cmp_and_merge_page`);
/// one more, as the pass under way when the wait began may have passed the
/// pages already; and as many again for a page a pass skipped because
/// compaction or a THP split held it at that moment (a 20-pass hunt saw
/// 512 anon-thp pages on 3 frames, not 2, after 4 passes).
pub const MERGE_SCANS: u64 = 8;

/// Waits until the `npages` identical base pages from `addr` map the
/// fewest KSM pages they can ([`merged_frames`]); false once ksmd has made
/// [`MERGE_SCANS`] full passes without merging them. The wait follows
/// ksmd's passes, not the clock: a pass takes as long as every mergeable
/// area on the machine needs (a QEMU guest's memory is mergeable), so a
/// busy machine only makes it longer. `limit` is a hang guard for a ksmd
/// that stopped scanning.
pub fn wait_merged(addr: usize, npages: usize, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    let from = full_scans();
    while frames(addr, npages) != merged_frames(npages) {
        if full_scans() >= from + MERGE_SCANS || Instant::now() >= end {
            return frames(addr, npages) == merged_frames(npages);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}
