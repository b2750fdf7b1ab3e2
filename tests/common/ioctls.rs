//! The exact `ioctls` mask UFFDIO_REGISTER hands back, so every binary
//! compares the whole mask, never a subset.

use super::*;

/// The mask `userfaultfd_register` (fs/userfaultfd.c) returns for a range
/// of `mem` registered in `mode`: UFFD_API_RANGE_IOCTLS, or
/// UFFD_API_RANGE_IOCTLS_BASIC (no ZEROPAGE, no MOVE) when a hugetlb VMA is
/// in the range; minus WRITEPROTECT without MODE_WP and CONTINUE without
/// MODE_MINOR. Nothing else of the VMA counts: shmem and guest_memfd get
/// the anonymous set (MOVE included, though move_pages takes only private
/// anonymous VMAs). An ioctl that arrived with a feature bit is in the
/// kernel's mask exactly when UFFDIO_API offers that bit (both are
/// unconditional since they arrived): POISON with UFFD_FEATURE_POISON
/// (6.6), MOVE with UFFD_FEATURE_MOVE (6.8); Debian 12's 6.1 has neither.
pub fn expected_ioctls(mem: MemType, mode: RegisterMode) -> Ioctls {
    let base = if mem.is_hugetlb() {
        sys::UFFD_API_RANGE_IOCTLS_BASIC
    } else {
        sys::UFFD_API_RANGE_IOCTLS
    };
    let mut m = Ioctls::from_bits_retain(base);
    let caps = caps::caps();
    if !caps.has(Features::POISON) {
        m.remove(Ioctls::POISON);
    }
    if !caps.has(Features::MOVE) {
        m.remove(Ioctls::MOVE);
    }
    if !mode.contains(RegisterMode::WP) {
        m.remove(Ioctls::WRITEPROTECT);
    }
    if !mode.contains(RegisterMode::MINOR) {
        m.remove(Ioctls::CONTINUE);
    }
    m
}

/// `got`, what UFFDIO_REGISTER of `mem` in `mode` returned, is exactly
/// [`expected_ioctls`].
#[track_caller]
pub fn assert_ioctls(got: Ioctls, mem: MemType, mode: RegisterMode) {
    assert_eq!(
        got,
        expected_ioctls(mem, mode),
        "UFFDIO_REGISTER {} on {mem}: ioctls {:?}",
        caps::mode_name(mode),
        caps::ioctl_names(got)
    );
}
