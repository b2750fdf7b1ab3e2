//! Shared by the write-protect and CONTINUE test binaries, and by the
//! binaries whose cases check that a faulting access stays asleep until a
//! WAKE (zeropage, wake, unregister).

use super::*;
use faulter::{Faulter, State, next_pagefault};
use pagemap::{PM_PRESENT, PM_UFFD_WP};

/// The features a WP marker on an unpopulated page of `mem` needs: WP's,
/// and WP_UNPOPULATED for anon PTEs (file memory always gets markers).
pub fn wp_marker_features(mem: MemType) -> Features {
    let mut f = caps::features_for(mem, RegisterMode::WP);
    if mem.is_anon() {
        f |= Features::WP_UNPOPULATED;
    }
    f
}

/// The uffd-wp and present bits of the pagemap entry at `addr`: a protected
/// mapped page reads `PM_UFFD_WP | PM_PRESENT`, a WP marker `PM_UFFD_WP`.
/// Read once no migration is under way: a migration entry keeps the WP bit
/// but is not present, and compaction moves pages at any time.
pub fn wp_present(addr: usize) -> u64 {
    pagemap::settled_entry_of("self", addr).expect("pagemap") & (PM_UFFD_WP | PM_PRESENT)
}

/// `npages` of `mem`, left unpopulated, registered in `mode` (which holds
/// WP) on a fresh uffd offering `features`, then write-protected whole: each
/// page holds a WP marker where the memory type and `features` allow one.
/// Err is the SKIP reason of the area or the uffd.
pub fn protected_area(
    mem: MemType,
    npages: usize,
    mode: RegisterMode,
    features: Features,
) -> Result<(Area, Uffd), String> {
    let area = testing::area(mem, npages)?;
    let uffd = testing::open_uffd(features)?;
    uffd.register(area.addr(), area.len(), mode).unwrap();
    uffd.writeprotect(area.addr(), area.len(), WriteprotectMode::WP)
        .unwrap();
    Ok((area, uffd))
}

/// Starts a writer of `byte` at `page + offset`, on a write-protected page,
/// and reads its message: a WP write fault at `page` (without
/// EXACT_ADDRESS the kernel reports the start of the page).
#[track_caller]
pub fn wp_write_fault(uffd: &Uffd, page: usize, offset: usize, byte: u8) -> Faulter {
    let w = Faulter::write(page + offset, byte);
    assert_eq!(next_pagefault(uffd), (PagefaultFlags::WP | PagefaultFlags::WRITE, page));
    w
}

/// [`wp_write_fault`], and the writer then sleeps in the uffd until an
/// un-protect or a WAKE releases it.
#[track_caller]
pub fn blocked_wp_writer(uffd: &Uffd, page: usize, offset: usize, byte: u8) -> Faulter {
    let w = wp_write_fault(uffd, page, offset, byte);
    assert_eq!(w.settle(), State::Blocked);
    w
}

/// A write of `byte` at `addr` completes at once: nothing protects the page
/// or leaves it missing for the monitor.
#[track_caller]
pub fn assert_write_completes(addr: usize, byte: u8) {
    let w = Faulter::write(addr, byte);
    assert_eq!(w.settle(), State::Done);
    assert_eq!(w.join(), byte);
}

/// A read at `addr` completes at once and sees `want`.
#[track_caller]
pub fn assert_read_completes(addr: usize, want: u8) {
    let r = Faulter::read(addr);
    assert_eq!(r.settle(), State::Done);
    assert_eq!(r.join(), want);
}

/// `f`, an access blocked on a fault, still sleeps: what the case just did
/// (a DONTWAKE resolve, a wake elsewhere or through another uffd, an
/// unregister) must not wake it (`why` says what did). Only UFFDIO_WAKE of
/// `[start, start + len)` on `uffd` does; the access then completes with
/// `want`.
#[track_caller]
pub fn assert_asleep_until_wake(uffd: &Uffd, f: Faulter, start: usize, len: usize, want: u8, why: &str) {
    assert!(f.is_blocked() && !f.is_done(), "{why}");
    uffd.wake(start, len).unwrap();
    assert_eq!(f.join(), want);
}
