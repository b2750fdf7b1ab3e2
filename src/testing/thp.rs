//! Pinning a range's THP shape before a case relies on it.
//!
//! A case that reads smaps and then branches on what it saw races with
//! khugepaged and with the THP policy another process sets. These helpers
//! make the shape instead: MADV_COLLAPSE builds a PMD folio whatever the
//! sysfs policy says (it ignores `enabled` and `shmem_enabled`), so once
//! `mem::pmd_size()` says the kernel has THP, failing to get one is a
//! finding, not a reason to skip.

use nix::errno::Errno;

/// How often MADV_COLLAPSE is asked again after EAGAIN, which
/// madvise(2) documents as transient ("could not take a lock", a page
/// briefly off the LRU), a millisecond apart: under compaction and reclaim
/// (the flake hunter's load) a page stays isolated for longer than a few
/// yields. Any other errno is final, and a kernel that always answers
/// EAGAIN still fails after a tenth of a second.
const EAGAIN_TRIES: usize = 100;

/// MADV_COLLAPSE of `[addr, addr + len)`: the range is PMD-mapped by huge
/// folios afterwards, or the errno of the last attempt.
pub fn collapse(addr: usize, len: usize) -> Result<(), Errno> {
    let mut last = Errno::EAGAIN;
    for _ in 0..EAGAIN_TRIES {
        // SAFETY: MADV_COLLAPSE only rearranges the pages of a range the
        // caller maps; nix has no MADV_COLLAPSE.
        match Errno::result(unsafe { libc::madvise(addr as *mut libc::c_void, len, libc::MADV_COLLAPSE) }) {
            Ok(_) => return Ok(()),
            Err(Errno::EAGAIN) => {
                last = Errno::EAGAIN;
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// [`collapse`], then checks in smaps that `[addr, addr + len)` is mapped
/// by PMDs (`AnonHugePages`, or `ShmemPmdMapped` for shmem); panics
/// otherwise, naming the range: the caller's probe said THP works.
pub fn collapse_or_fail(addr: usize, len: usize) {
    if let Err(e) = collapse(addr, len) {
        panic!("MADV_COLLAPSE of {addr:#x}+{len:#x} failed ({e}) on a kernel whose sysfs says it has THP");
    }
    let v = super::smaps::vma(addr).expect("the collapsed range is mapped");
    let huge = v.anon_huge + super::smaps::field(addr, "ShmemPmdMapped").unwrap_or(0);
    assert!(
        huge >= len,
        "MADV_COLLAPSE of {addr:#x}+{len:#x} succeeded but smaps shows {huge} bytes PMD-mapped"
    );
}

/// The top-level shmem THP policy.
pub const SHMEM_ENABLED: &str = "/sys/kernel/mm/transparent_hugepage/shmem_enabled";

/// Sets the shmem THP policy to `advise` until dropped, so that
/// MADV_COLLAPSE of shmem works whatever policy was set before: it is
/// refused only under `deny`. The caller holds the `thp` key and is root.
pub fn shmem_collapsible() -> crate::knob::Knob {
    crate::knob::Knob::set(SHMEM_ENABLED, "advise").unwrap_or_else(|e| panic!("shmem THP policy: {e}"))
}

/// The top-level anonymous THP policy.
pub const ENABLED: &str = "/sys/kernel/mm/transparent_hugepage/enabled";

/// Sets the anonymous THP policy for PMD-sized folios to `value`
/// (`always`, `madvise`, `never`) until dropped: the top-level `enabled`,
/// and, on kernels with per-size (mTHP) knobs, the PMD size's own `enabled`
/// to `inherit`, since another policy there would override the top level.
/// The caller holds the `thp` key and is root.
pub fn anon_pmd_policy(value: &str) -> Vec<crate::knob::Knob> {
    let set = |path: &str, v: &str| crate::knob::Knob::set(path, v).unwrap_or_else(|e| panic!("anon THP policy: {e}"));
    let mut knobs = vec![set(ENABLED, value)];
    if let Some(pmd) = crate::mem::pmd_size() {
        let per_size = format!("/sys/kernel/mm/transparent_hugepage/hugepages-{}kB/enabled", pmd / 1024);
        if std::path::Path::new(&per_size).exists() {
            knobs.push(set(&per_size, "inherit"));
        }
    }
    knobs
}

/// The PMD size, for a case that needs PMD-sized THPs; Err is the SKIP reason on a kernel without THP.
pub fn pmd_size() -> Result<usize, String> {
    crate::mem::pmd_size().ok_or_else(|| "kernel has no THP (CONFIG_TRANSPARENT_HUGEPAGE off)".to_string())
}
