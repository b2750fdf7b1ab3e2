//! UFFDIO_ZEROPAGE: resolving MISSING faults with zeros, hugetlb's refusal,
//! EEXIST (also through the alias view), partial progress, DONTWAKE and
//! every error path.
//!
//! Expectations come from fs/userfaultfd.c `userfaultfd_zeropage` and
//! mm/userfaultfd.c `mfill_atomic` (6.12): private VMAs map the zero page
//! (`mfill_atomic_pte_zeropage`, which wants a pte_none entry), shared shmem
//! allocates a zeroed page-cache page (`shmem_mfill_atomic_pte`), and
//! `mfill_atomic_hugetlb` refuses ZEROPAGE with EINVAL.

mod common;
use common::*;
use faulter::{Faulter, State, assert_no_event, next_pagefault};
use nix::errno::Errno;
use std::sync::Arc;
use testing::progress::{err, failed};

const MISSING: RegisterMode = RegisterMode::MISSING;
const NONE: ZeropageMode = ZeropageMode::empty();

fn missing_area(mem: MemType, npages: usize) -> Result<(Area, Arc<Uffd>), String> {
    testing::registered_area(mem, npages, Features::empty(), MISSING, |_| {})
}

#[apply(all_mem)]
fn zeropage_resolves_read_fault_with_zeros(#[case] mem: MemType) {
    require_mode!(mem, MISSING);
    let (area, uffd) = try_skip!(missing_area(mem, 2));
    let ps = area.page_size();
    let r = Faulter::read(area.page(1) + 7);
    assert_eq!(next_pagefault(&uffd), (PagefaultFlags::empty(), area.page(1)));
    assert_eq!(r.settle(), State::Blocked);
    if mem.is_hugetlb() {
        // No zero huge page to map: refused, and the fault stays pending.
        assert_eq!(uffd.zeropage(area.page(1), ps, NONE), failed(Errno::EINVAL));
        assert!(r.is_blocked() && !r.is_done());
        let zeros = testing::Buf::filled(ps, 0);
        assert_eq!(
            uffd.copy(area.page(1), zeros.addr(), ps, CopyMode::empty()),
            Ok(ps as i64)
        );
    } else {
        assert_eq!(uffd.zeropage(area.page(1), ps, NONE), Ok(ps as i64));
    }
    assert_eq!(r.join(), 0);
    assert_eq!(area.read_page(1), vec![0; ps]);
    assert!(!pagemap::is_present(area.page(0)), "page 0 was not touched");
    assert_no_event(&uffd);
}

#[apply(all_mem)]
fn zeropage_is_granted_except_on_hugetlb(#[case] mem: MemType) {
    require_mode!(mem, MISSING);
    let area = try_area!(Area::new(mem, 1));
    let uffd = try_skip!(testing::open_uffd(Features::empty()));
    let ioctls = uffd.register(area.addr(), area.len(), MISSING).unwrap();
    // UFFD_API_RANGE_IOCTLS_BASIC, hugetlb's set, lacks ZEROPAGE.
    assert_eq!(ioctls.contains(Ioctls::ZEROPAGE), !mem.is_hugetlb(), "{ioctls:?}");
}

#[apply(all_mem)]
fn zeropage_resolves_write_fault_then_the_write_lands(#[case] mem: MemType) {
    require_mode!(mem, MISSING);
    require!(!mem.is_hugetlb(), "hugetlb has no UFFDIO_ZEROPAGE");
    let (area, uffd) = try_skip!(missing_area(mem, 1));
    let ps = area.page_size();
    let w = Faulter::write(area.page(0) + 11, 0x5c);
    assert_eq!(next_pagefault(&uffd), (PagefaultFlags::WRITE, area.page(0)));
    assert_eq!(uffd.zeropage(area.page(0), ps, NONE), Ok(ps as i64));
    // A private zero page is CoW-broken by the retried write without a
    // second message; shared shmem got a real zeroed page.
    assert_eq!(w.join(), 0x5c);
    let mut want = vec![0; ps];
    want[11] = 0x5c;
    assert_eq!(area.read_page(0), want);
    assert_no_event(&uffd);
}

#[apply(all_mem)]
fn write_after_zeropage_needs_no_resolution(#[case] mem: MemType) {
    require_mode!(mem, MISSING);
    require!(!mem.is_hugetlb(), "hugetlb has no UFFDIO_ZEROPAGE");
    let (area, uffd) = try_skip!(missing_area(mem, 1));
    let ps = area.page_size();
    assert_eq!(uffd.zeropage(area.page(0), ps, NONE), Ok(ps as i64));
    assert_eq!(area.read_page(0), vec![0; ps]);
    assert_write_completes(area.page(0) + 1, 0x77);
    assert_eq!(testing::read_byte(area.page(0) + 1), 0x77);
    assert_no_event(&uffd);
}

#[apply(all_mem)]
fn zeropage_over_populated_page_fails_eexist(#[case] mem: MemType) {
    require_mode!(mem, MISSING);
    let (area, uffd) =
        try_skip!(testing::registered_area(mem, 1, Features::empty(), MISSING, |a| a.fill_page(0, 0x3c)));
    let ps = area.page_size();
    let want = if mem.is_hugetlb() {
        failed(Errno::EINVAL)
    } else {
        failed(Errno::EEXIST)
    };
    assert_eq!(uffd.zeropage(area.page(0), ps, NONE), want);
    assert_eq!(area.read_page(0), vec![0x3c; ps]);
}

#[apply(file_mem)]
fn zeropage_retried_through_alias(#[case] mem: MemType) {
    require_mode!(mem, MISSING);
    let area = try_area!(Area::with_alias(mem, 1));
    let uffd = try_skip!(testing::open_uffd(Features::empty()));
    let ps = area.page_size();
    let alias = area.alias_page(0);
    uffd.register(area.addr(), area.len(), MISSING).unwrap();
    uffd.register(alias, area.len(), MISSING).unwrap();
    if mem.is_hugetlb() {
        assert_eq!(uffd.zeropage(area.page(0), ps, NONE), failed(Errno::EINVAL));
        assert_eq!(uffd.zeropage(alias, ps, NONE), failed(Errno::EINVAL));
        return;
    }
    assert_eq!(uffd.zeropage(area.page(0), ps, NONE), Ok(ps as i64));
    if mem.is_shared() {
        // The first call put a zeroed page in the page cache; the alias maps
        // the same file offset, so shmem_add_to_page_cache refuses.
        assert_eq!(uffd.zeropage(alias, ps, NONE), failed(Errno::EEXIST));
    } else {
        // The private view only mapped the zero page: the file is still a
        // hole, so the shared alias can be filled too.
        assert_eq!(uffd.zeropage(alias, ps, NONE), Ok(ps as i64));
    }
    assert_eq!(area.read_page(0), vec![0; ps]);
    assert_eq!(area.read(alias, ps), vec![0; ps]);
}

#[apply(all_mem)]
fn zeropage_stops_at_populated_page_with_partial_progress(#[case] mem: MemType) {
    require_mode!(mem, MISSING);
    let (area, uffd) = try_skip!(testing::registered_area(mem, 4, Features::empty(), MISSING, |a| {
        fill_page_pinned(a, 2, 0x21)
    }));
    let ps = area.page_size();
    if mem.is_hugetlb() {
        assert_eq!(uffd.zeropage(area.addr(), 4 * ps, NONE), failed(Errno::EINVAL));
        assert!(!pagemap::is_present(area.page(0)));
        return;
    }
    if !fill_stops_at_populated_page(&area, |at, len| uffd.zeropage(at, len, NONE)) {
        return;
    }
    assert!(pagemap::is_present(area.page(0)) && pagemap::is_present(area.page(1)));
    assert_eq!(area.read_page(0), vec![0; ps]);
    assert_eq!(area.read_page(1), vec![0; ps]);
    assert_eq!(area.read_page(2), vec![0x21; ps]);
    assert!(!pagemap::is_present(area.page(3)), "page 3 was not reached");
    assert_eq!(uffd.zeropage(area.page(2), 2 * ps, NONE), failed(Errno::EEXIST));
}

#[apply(all_mem)]
fn zeropage_dontwake_leaves_faulter_blocked_until_wake(#[case] mem: MemType) {
    require_mode!(mem, MISSING);
    require!(!mem.is_hugetlb(), "hugetlb has no UFFDIO_ZEROPAGE");
    let (area, uffd) = try_skip!(missing_area(mem, 1));
    let ps = area.page_size();
    let r = blocked_reader(&uffd, area.page(0) + 3);
    assert_eq!(uffd.zeropage(area.page(0), ps, ZeropageMode::DONTWAKE), Ok(ps as i64));
    assert!(pagemap::is_present(area.page(0)));
    assert_asleep_until_wake(&uffd, r, area.page(0), ps, 0, "DONTWAKE woke the faulting thread");
    assert_no_event(&uffd);
}

#[apply(all_mem)]
fn zeropage_of_many_pages_wakes_every_fault_in_range(#[case] mem: MemType) {
    require_mode!(mem, MISSING);
    require!(!mem.is_hugetlb(), "hugetlb has no UFFDIO_ZEROPAGE");
    let (area, uffd) = try_skip!(missing_area(mem, 3));
    let ps = area.page_size();
    let readers: Vec<_> = (0..3).map(|i| blocked_reader(&uffd, area.page(i) + i)).collect();
    assert_eq!(uffd.zeropage(area.addr(), 3 * ps, NONE), Ok(3 * ps as i64));
    for r in readers {
        assert_eq!(r.join(), 0);
    }
    assert_no_event(&uffd);
}

#[apply(all_mem)]
fn zeropage_unknown_mode_bits_fail_einval(#[case] mem: MemType) {
    require_mode!(mem, MISSING);
    let (area, uffd) = try_skip!(missing_area(mem, 1));
    let ps = area.page_size();
    // Checked in userfaultfd_zeropage before the VMA is looked at, so
    // hugetlb gets the same answer.
    let bits = [1 << 1, 1 << 2, 1 << 63, sys::UFFDIO_ZEROPAGE_MODE_DONTWAKE | 1 << 1];
    assert_modes_rejected(&bits, |b| {
        uffd.zeropage(area.page(0), ps, ZeropageMode::from_bits_retain(b))
    });
    assert!(!pagemap::is_present(area.page(0)));
}

#[apply(all_mem)]
fn zeropage_misaligned_range_fails_einval(#[case] mem: MemType) {
    require_mode!(mem, MISSING);
    let (area, uffd) = try_skip!(missing_area(mem, 2));
    assert_ranges_rejected(&area, |start, len| uffd.zeropage(start, len, NONE));
    assert!(!pagemap::is_present(area.page(0)));
}

#[apply(all_mem)]
fn zeropage_outside_registered_range_fails_enoent(#[case] mem: MemType) {
    require_mode!(mem, MISSING);
    let (area, uffd) = try_skip!(missing_area(mem, 1));
    let other = try_area!(Area::new(mem, 1));
    // uffd_mfill_lock runs before the hugetlb refusal: ENOENT for every type.
    assert_fills_outside_registration_fail(&uffd, &area, &other, |at, len| uffd.zeropage(at, len, NONE));
    assert!(!pagemap::is_present(other.page(0)));
}

#[apply(file_mem)]
fn zeropage_beyond_end_of_file_fails_efault(#[case] mem: MemType) {
    require_mode!(mem, MISSING);
    let (area, uffd) = try_skip!(missing_area(mem, 2));
    let ps = area.page_size();
    nix::unistd::ftruncate(area.fd().expect("file-backed area"), ps as i64).unwrap();
    if mem.is_hugetlb() {
        assert_eq!(uffd.zeropage(area.page(1), ps, NONE), failed(Errno::EINVAL));
        return;
    }
    // shmem_mfill_atomic_pte / mfill_file_over_size: past i_size.
    assert_eq!(uffd.zeropage(area.page(1), ps, NONE), failed(Errno::EFAULT));
    assert_eq!(uffd.zeropage(area.page(0), 2 * ps, NONE), err(Errno::EAGAIN, ps as i64));
    assert_eq!(area.read_page(0), vec![0; ps]);
}

#[rstest]
#[case::anon(MemType::Anon)]
#[case::shmem(MemType::Shmem)]
#[case::shmem_private(MemType::ShmemPrivate)]
#[case::anon_thp(MemType::AnonThp)]
fn zeropage_over_wp_marker(#[case] mem: MemType) {
    let mode = MISSING | RegisterMode::WP;
    require_mode!(mem, mode);
    let feats = wp_marker_features(mem);
    require_features!(feats);
    let (area, uffd) = try_skip!(protected_area(mem, 1, mode, feats));
    let ps = area.page_size();
    assert!(pagemap::is_uffd_wp(area.page(0)), "marker installed");
    let r = uffd.zeropage(area.page(0), ps, NONE);
    if mem.is_shared() {
        // shmem_mfill_atomic_pte installs through mfill_atomic_install_pte,
        // which may overwrite a marker (pte_none_mostly).
        assert_eq!(r, Ok(ps as i64));
        assert_eq!(area.read_page(0), vec![0; ps]);
    } else {
        // mfill_atomic_pte_zeropage wants pte_none: a marker is an entry.
        assert_eq!(r, failed(Errno::EEXIST));
        assert!(!pagemap::is_present(area.page(0)));
    }
}

#[apply(all_mem)]
fn zeropage_maps_the_shared_zero_page_on_private_memory(#[case] mem: MemType) {
    require_mode!(mem, MISSING);
    require!(!mem.is_hugetlb(), "hugetlb has no UFFDIO_ZEROPAGE");
    require_root!("pagemap shows PFNs to CAP_SYS_ADMIN only");
    let (area, uffd) = try_skip!(missing_area(mem, 2));
    let ps = area.page_size();
    assert_eq!(uffd.zeropage(area.addr(), 2 * ps, NONE), Ok(2 * ps as i64));
    const PFN: u64 = (1 << 55) - 1;
    let pfn = |i| pagemap::entry(area.page(i)).unwrap() & PFN;
    let (a, b) = (pfn(0), pfn(1));
    assert_ne!(a, 0, "PFN hidden?");
    if mem.is_shared() {
        // shmem_mfill_atomic_pte allocates a zeroed page per offset.
        assert_ne!(a, b, "two page-cache pages");
    } else {
        // mfill_atomic_pte_zeropage maps my_zero_pfn: nothing allocated.
        assert_eq!(a, b, "both map the zero page");
    }
}

/// Two pages across a PMD boundary: both zero-filled in two page tables,
/// or, with a THP beyond the boundary, the first page then EAGAIN.
#[rstest]
#[case::holes(boundary::FarSide::Holes)]
#[case::thp(boundary::FarSide::Thp)]
fn zeropage_across_a_pmd_boundary(#[case] far: boundary::FarSide) {
    let (area, _uffd, b) =
        try_skip!(boundary::fill_across(Features::empty(), far, |u, at, len| u.zeropage(at, len, NONE)));
    let ps = area.page_size();
    assert!(pagemap::is_present(area.page(b - 1)));
    assert_eq!(area.read_page(b - 1), vec![0; ps]);
    if far == boundary::FarSide::Holes {
        assert!(pagemap::is_present(area.page(b)));
        assert_eq!(area.read_page(b), vec![0; ps]);
    }
}
