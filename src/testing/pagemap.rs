//! `/proc/self/pagemap` entries: how tests see write-protect markers,
//! presence and swap without trusting the code under test.
//! See Documentation/admin-guide/mm/pagemap.rst.

use std::os::unix::fs::FileExt;

/// The PTE is write-protected by userfaultfd (a PTE, a swap entry or a marker).
pub const PM_UFFD_WP: u64 = 1 << 57;
pub const PM_FILE: u64 = 1 << 61;
pub const PM_SWAP: u64 = 1 << 62;
pub const PM_PRESENT: u64 = 1 << 63;

/// The 64-bit pagemap entry of the page holding `addr` in this process.
pub fn entry(addr: usize) -> std::io::Result<u64> {
    entry_of("self", addr)
}

/// The entry of `addr` in process `pid` (`"self"` or a number).
pub fn entry_of(pid: &str, addr: usize) -> std::io::Result<u64> {
    let f = std::fs::File::open(format!("/proc/{pid}/pagemap"))?;
    let mut b = [0u8; 8];
    let off = (addr / crate::mem::base_page_size()) * 8;
    f.read_exact_at(&mut b, off as u64)?;
    Ok(u64::from_ne_bytes(b))
}

fn bit(addr: usize, mask: u64) -> bool {
    entry(addr).map(|e| e & mask != 0).unwrap_or(false)
}

pub fn is_uffd_wp(addr: usize) -> bool {
    bit(addr, PM_UFFD_WP)
}

/// Whether a page is mapped at `addr`, waiting out a migration
/// ([`settled_entry_of`]).
pub fn is_present(addr: usize) -> bool {
    settled_entry_of("self", addr).is_ok_and(|e| e & PM_PRESENT != 0)
}

/// The swap type of a non-present entry (bits 0-4; only root reads it).
fn swap_type(e: u64) -> u64 {
    e & 0x1f
}

/// The swap type of a PTE marker (a uffd-wp marker, a guard): the last of
/// the 32 (include/linux/swap.h), whatever the kernel's config. A marker
/// stays; it is not a page in flight.
const SWP_PTE_MARKER: u64 = 31;

/// The entry of `addr` in process `pid` once no migration is under way.
///
/// Compaction or a THP split moves a mapped page behind the test's back: for
/// the few microseconds that takes its PTE is a migration entry, which
/// pagemap reports as swapped, not present. A swapped-looking entry that is
/// not a PTE marker is read again for up to ~20 ms before it is returned, so
/// that a page in flight is never taken for a page the kernel unmapped (a
/// swapped-out page costs that wait and still reads as swapped; without
/// root the type is hidden and a marker costs it too).
pub fn settled_entry_of(pid: &str, addr: usize) -> std::io::Result<u64> {
    let mut e = entry_of(pid, addr)?;
    for _ in 0..20 {
        if e & PM_SWAP == 0 || e & PM_PRESENT != 0 || swap_type(e) == SWP_PTE_MARKER {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
        e = entry_of(pid, addr)?;
    }
    Ok(e)
}
