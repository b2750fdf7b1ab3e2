//! UFFDIO_COPY: resolving MISSING faults with exact bytes, the fault
//! messages, waking, MODE_WP, partial progress and every error path.
//!
//! Expectations come from fs/userfaultfd.c `userfaultfd_copy` (argument
//! checks; the `copy` field is written only once mfill_atomic ran) and
//! mm/userfaultfd.c `mfill_atomic` (6.12): it returns the bytes copied
//! before an error if any, else the error, and the ioctl then fails
//! EAGAIN on a short copy.
//!
//! One file over ~600 lines: every case checks one rule of the same ioctl
//! with the same source and pattern helpers, and there is no seam to split at.

mod common;
use common::*;
use faulter::{Faulter, State, assert_no_event, next_pagefault};
use nix::errno::Errno;
use nix::sys::mman::{ProtFlags, mprotect, munmap};
use pagemap::PM_UFFD_WP;
use std::sync::{Arc, Mutex};
use testing::progress::{err, failed, rejected};
use testing::{Access, Buf, FaultHandler};

const MISSING: RegisterMode = RegisterMode::MISSING;
const NONE: CopyMode = CopyMode::empty();

/// The byte at offset `i` of page `page` in the sources below: differs per
/// page and per offset, so a misplaced or shifted copy shows.
fn pat(page: usize, i: usize) -> u8 {
    (page.wrapping_mul(37) + i.wrapping_mul(7) + 1) as u8
}

/// `npages` pages of [`pat`], laid out as the destination's pages.
fn source(ps: usize, npages: usize) -> Buf {
    Buf::paged(ps, npages, pat)
}

fn expected(ps: usize, page: usize) -> Vec<u8> {
    (0..ps).map(|i| pat(page, i)).collect()
}

/// An unpopulated area of `npages` registered MISSING on a fresh uffd. Err
/// is the SKIP reason (the memory type first, as `require_mode!` gives it).
fn missing_area(mem: MemType, npages: usize) -> Result<(Area, Arc<Uffd>), String> {
    testing::registered_area(mem, npages, Features::empty(), MISSING, |_| {})
}

#[apply(all_mem)]
fn copy_resolves_read_fault_with_exact_bytes(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(missing_area(mem, 2));
    let ps = area.page_size();
    let src = source(ps, 2);
    let r = Faulter::read(area.page(1) + 5);
    let (flags, addr) = next_pagefault(&uffd);
    // A read fault carries no flag; without EXACT_ADDRESS the address is
    // the start of the (huge) page.
    assert_eq!(flags, PagefaultFlags::empty());
    assert_eq!(addr, area.page(1));
    assert_eq!(r.settle(), State::Blocked);
    assert_eq!(uffd.copy(area.page(1), src.addr() + ps, ps, NONE), Ok(ps as i64));
    assert_eq!(r.join(), pat(1, 5));
    assert_eq!(area.read_page(1), expected(ps, 1));
    assert!(!pagemap::is_present(area.page(0)), "page 0 was not touched");
    assert_no_event(&uffd);
}

#[apply(all_mem)]
fn copy_resolves_write_fault_then_the_write_lands(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(missing_area(mem, 1));
    let ps = area.page_size();
    let src = source(ps, 1);
    let w = Faulter::write(area.page(0) + 9, 0xee);
    let (flags, addr) = next_pagefault(&uffd);
    assert_eq!(flags, PagefaultFlags::WRITE);
    assert_eq!(addr, area.page(0));
    assert_eq!(uffd.copy(area.page(0), src.addr(), ps, NONE), Ok(ps as i64));
    assert_eq!(w.join(), 0xee);
    let mut want = expected(ps, 0);
    want[9] = 0xee;
    assert_eq!(area.read_page(0), want);
    assert_no_event(&uffd);
}

#[apply(all_mem)]
fn copy_handler_fills_every_page_byte_for_byte(#[case] mem: MemType) {
    let n = if mem.is_hugetlb() { 4 } else { 8 };
    let (area, uffd) = try_skip!(missing_area(mem, n));
    let ps = area.page_size();
    let src = source(ps, n);
    let base = area.addr();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let h = FaultHandler::spawn(uffd.clone(), move |u, ev| match ev {
        Event::Pagefault { flags, address, .. } => {
            let page = (address as usize - base) / ps;
            s.lock().unwrap().push((flags, address as usize));
            match u.copy(address as usize, src.addr() + page * ps, ps, NONE) {
                Ok(n) if n == ps as i64 => Ok(()),
                other => Err(format!("UFFDIO_COPY page {page}: {other:?}")),
            }
        }
        other => Err(format!("unexpected {other:?}")),
    });
    // Touch the pages out of order: each is resolved on its own.
    for i in (0..n).rev() {
        assert_eq!(area.read_page(i), expected(ps, i), "page {i}");
    }
    assert_eq!(h.stop(), Vec::<String>::new());
    let mut seen = seen.lock().unwrap().clone();
    seen.sort_by_key(|s| s.1);
    let want: Vec<_> = (0..n).map(|i| (PagefaultFlags::empty(), area.page(i))).collect();
    assert_eq!(seen, want, "one read fault per page");
}

#[apply(all_mem)]
fn fault_reports_exact_address_with_feature(#[case] mem: MemType) {
    require_mode!(mem, MISSING);
    require_features!(Features::EXACT_ADDRESS);
    let (area, uffd) = try_skip!(registered_missing(mem, 1, Features::EXACT_ADDRESS, |_| {}));
    let ps = area.page_size();
    let src = source(ps, 1);
    let target = area.page(0) + ps / 2 + 3;
    let r = Faulter::read(target);
    let (flags, addr) = next_pagefault(&uffd);
    assert_eq!(flags, PagefaultFlags::empty());
    assert_eq!(addr, target);
    assert_eq!(uffd.copy(area.page(0), src.addr(), ps, NONE), Ok(ps as i64));
    assert_eq!(r.join(), pat(0, ps / 2 + 3));
}

#[apply(all_mem)]
fn fault_reports_thread_id_with_feature(#[case] mem: MemType) {
    require_mode!(mem, MISSING);
    require_features!(Features::THREAD_ID);
    let (area, uffd) = try_skip!(registered_missing(mem, 1, Features::THREAD_ID, |_| {}));
    let ps = area.page_size();
    let src = source(ps, 1);
    let r = Faulter::read(area.page(0));
    match uffd.read_event(Some(std::time::Duration::from_secs(20))).unwrap() {
        Some(Event::Pagefault { ptid, address, .. }) => {
            assert_eq!(ptid as i32, r.tid());
            assert_eq!(address as usize, area.page(0));
        }
        other => panic!("expected a PAGEFAULT, got {other:?}"),
    }
    uffd.copy(area.page(0), src.addr(), ps, NONE).unwrap();
    assert_eq!(r.join(), pat(0, 0));
}

#[apply(all_mem)]
fn fault_without_thread_id_feature_reports_ptid_zero(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(missing_area(mem, 1));
    let ps = area.page_size();
    let src = source(ps, 1);
    let r = Faulter::read(area.page(0));
    match uffd.read_event(Some(std::time::Duration::from_secs(20))).unwrap() {
        Some(Event::Pagefault { ptid, .. }) => assert_eq!(ptid, 0),
        other => panic!("expected a PAGEFAULT, got {other:?}"),
    }
    uffd.copy(area.page(0), src.addr(), ps, NONE).unwrap();
    r.join();
}

#[apply(all_mem)]
fn copy_over_populated_page_fails_eexist(#[case] mem: MemType) {
    let (area, uffd) =
        try_skip!(testing::registered_area(mem, 1, Features::empty(), MISSING, |a| a.fill_page(0, 0x33)));
    let ps = area.page_size();
    let src = source(ps, 1);
    assert_eq!(uffd.copy(area.page(0), src.addr(), ps, NONE), failed(Errno::EEXIST));
    assert_eq!(area.read_page(0), vec![0x33; ps]);
}

#[apply(all_mem)]
fn copy_twice_fails_eexist_the_second_time(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(missing_area(mem, 1));
    let ps = area.page_size();
    let src = source(ps, 1);
    let other = Buf::filled(ps, 0x99);
    assert_eq!(uffd.copy(area.page(0), src.addr(), ps, NONE), Ok(ps as i64));
    assert_eq!(uffd.copy(area.page(0), other.addr(), ps, NONE), failed(Errno::EEXIST));
    assert_eq!(area.read_page(0), expected(ps, 0), "the first copy stays");
}

#[apply(file_mem)]
fn copy_over_page_cache_filled_through_alias(#[case] mem: MemType) {
    require_mode!(mem, MISSING);
    let area = try_area!(Area::with_alias(mem, 1));
    let uffd = try_skip!(testing::open_uffd(Features::empty()));
    uffd.register(area.addr(), area.len(), MISSING).unwrap();
    let ps = area.page_size();
    fill_alias_page(&area, 0, 0x44);
    let src = source(ps, 1);
    let r = uffd.copy(area.page(0), src.addr(), ps, NONE);
    if mem.is_shared() {
        // The page cache already holds the page: shmem_add_to_page_cache /
        // hugetlbfs_pagecache_present refuse it.
        assert_eq!(r, failed(Errno::EEXIST));
        assert_eq!(area.read_page(0), vec![0x44; ps]);
    } else {
        // A private mapping fills its own anonymous page, whatever the file holds.
        assert_eq!(r, Ok(ps as i64));
        assert_eq!(area.read_page(0), expected(ps, 0));
        assert_eq!(area.read(area.alias_page(0), ps), vec![0x44; ps], "file untouched");
    }
}

#[apply(all_mem)]
fn copy_stops_at_populated_page_with_partial_progress(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(testing::registered_area(mem, 4, Features::empty(), MISSING, |a| {
        fill_page_pinned(a, 2, 0x55)
    }));
    let ps = area.page_size();
    let src = source(ps, 4);
    if !fill_stops_at_populated_page(&area, |at, len| uffd.copy(at, src.addr(), len, NONE)) {
        assert_eq!(area.read_page(0), vec![0; ps]);
        return;
    }
    assert_eq!(area.read_page(0), expected(ps, 0));
    assert_eq!(area.read_page(1), expected(ps, 1));
    assert_eq!(area.read_page(2), vec![0x55; ps]);
    assert!(!pagemap::is_present(area.page(3)), "page 3 was not reached");
    // Retrying from the failed page shows the error itself.
    assert_eq!(
        uffd.copy(area.page(2), src.addr() + 2 * ps, 2 * ps, NONE),
        failed(Errno::EEXIST)
    );
    assert_eq!(uffd.copy(area.page(3), src.addr() + 3 * ps, ps, NONE), Ok(ps as i64));
    assert_eq!(area.read_page(3), expected(ps, 3));
}

#[apply(all_mem)]
fn copy_dontwake_leaves_faulter_blocked_until_wake(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(missing_area(mem, 1));
    let ps = area.page_size();
    let src = source(ps, 1);
    let r = Faulter::read(area.page(0) + 1);
    next_pagefault(&uffd);
    assert_eq!(r.settle(), State::Blocked);
    assert_eq!(
        uffd.copy(area.page(0), src.addr(), ps, CopyMode::DONTWAKE),
        Ok(ps as i64)
    );
    // The page is there, but nobody woke the faulting thread.
    assert!(pagemap::is_present(area.page(0)));
    assert!(r.is_blocked() && !r.is_done(), "DONTWAKE woke the faulting thread");
    uffd.wake(area.page(0), ps).expect("UFFDIO_WAKE");
    assert_eq!(r.join(), pat(0, 1));
    assert_no_event(&uffd);
}

#[apply(all_mem)]
fn copy_wakes_only_faults_in_its_range(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(missing_area(mem, 2));
    let ps = area.page_size();
    let src = source(ps, 2);
    let r0 = blocked_reader(&uffd, area.page(0));
    let r1 = blocked_reader(&uffd, area.page(1));
    assert_eq!(uffd.copy(area.page(0), src.addr(), ps, NONE), Ok(ps as i64));
    assert_eq!(r0.join(), pat(0, 0));
    assert!(
        r1.is_blocked() && !r1.is_done(),
        "the copy woke a fault outside its range"
    );
    assert_eq!(uffd.copy(area.page(1), src.addr() + ps, ps, NONE), Ok(ps as i64));
    assert_eq!(r1.join(), pat(1, 0));
}

#[apply(all_mem)]
fn copy_of_many_pages_wakes_every_fault_in_range(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(missing_area(mem, 3));
    let ps = area.page_size();
    let src = source(ps, 3);
    let readers: Vec<_> = (0..3).map(|i| blocked_reader(&uffd, area.page(i) + i)).collect();
    assert_eq!(uffd.copy(area.addr(), src.addr(), 3 * ps, NONE), Ok(3 * ps as i64));
    for (i, r) in readers.into_iter().enumerate() {
        assert_eq!(r.join(), pat(i, i), "reader of page {i}");
    }
    assert_no_event(&uffd);
}

#[apply(all_mem)]
fn copy_mode_wp_installs_write_protected_page(#[case] mem: MemType) {
    let mode = MISSING | RegisterMode::WP;
    require_mode!(mem, mode);
    let feats = if mem.is_anon() {
        Features::PAGEFAULT_FLAG_WP
    } else {
        Features::PAGEFAULT_FLAG_WP | Features::WP_HUGETLBFS_SHMEM
    };
    let area = try_area!(Area::new(mem, 1));
    let uffd = try_skip!(testing::open_uffd(feats));
    uffd.register(area.addr(), area.len(), mode).unwrap();
    let ps = area.page_size();
    let src = source(ps, 1);
    let r = Faulter::read(area.page(0));
    assert_eq!(next_pagefault(&uffd).0, PagefaultFlags::empty());
    assert_eq!(uffd.copy(area.page(0), src.addr(), ps, CopyMode::WP), Ok(ps as i64));
    assert_eq!(r.join(), pat(0, 0));
    assert_ne!(
        pagemap::entry(area.page(0)).unwrap() & PM_UFFD_WP,
        0,
        "PM_UFFD_WP after COPY_MODE_WP"
    );
    // A write now raises a WP fault, held until un-protected.
    let w = Faulter::write(area.page(0) + 2, 0xab);
    let (flags, addr) = next_pagefault(&uffd);
    assert_eq!(flags, PagefaultFlags::WRITE | PagefaultFlags::WP);
    assert_eq!(addr, area.page(0));
    assert_eq!(w.settle(), State::Blocked);
    uffd.writeprotect(area.page(0), ps, WriteprotectMode::empty()).unwrap();
    assert_eq!(w.join(), 0xab);
    let mut want = expected(ps, 0);
    want[2] = 0xab;
    assert_eq!(area.read_page(0), want);
    assert_eq!(pagemap::entry(area.page(0)).unwrap() & PM_UFFD_WP, 0);
}

#[apply(all_mem)]
fn copy_without_mode_wp_installs_writable_page(#[case] mem: MemType) {
    let mode = MISSING | RegisterMode::WP;
    require_mode!(mem, mode);
    let area = try_area!(Area::new(mem, 1));
    let uffd = try_skip!(testing::open_uffd(Features::empty()));
    uffd.register(area.addr(), area.len(), mode).unwrap();
    let ps = area.page_size();
    let src = source(ps, 1);
    assert_eq!(uffd.copy(area.page(0), src.addr(), ps, NONE), Ok(ps as i64));
    assert_eq!(pagemap::entry(area.page(0)).unwrap() & PM_UFFD_WP, 0);
    let w = Faulter::write(area.page(0), 0x01);
    assert_eq!(w.settle(), State::Done);
    w.join();
    assert_no_event(&uffd);
}

#[apply(all_mem)]
fn copy_mode_wp_without_wp_registration_fails_einval(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(missing_area(mem, 1));
    let ps = area.page_size();
    let src = source(ps, 1);
    // mfill_atomic: MFILL_ATOMIC_WP needs VM_UFFD_WP on the destination.
    assert_eq!(
        uffd.copy(area.page(0), src.addr(), ps, CopyMode::WP),
        failed(Errno::EINVAL)
    );
    assert!(!pagemap::is_present(area.page(0)));
}

#[apply(all_mem)]
fn copy_unknown_mode_bits_fail_einval(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(missing_area(mem, 1));
    let ps = area.page_size();
    let src = source(ps, 1);
    let bits = [1 << 2, 1 << 5, 1 << 63, sys::UFFDIO_COPY_MODE_DONTWAKE | 1 << 2];
    assert_modes_rejected(&bits, |b| {
        uffd.copy(area.page(0), src.addr(), ps, CopyMode::from_bits_retain(b))
    });
    assert!(!pagemap::is_present(area.page(0)));
}

#[apply(all_mem)]
fn copy_misaligned_dst_fails_einval(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(missing_area(mem, 2));
    let ps = area.page_size();
    let src = source(ps, 2);
    for off in [1, 64, mem::base_page_size() / 2] {
        assert_eq!(
            uffd.copy(area.page(0) + off, src.addr(), ps, NONE),
            rejected(Errno::EINVAL),
            "dst + {off}"
        );
    }
}

#[apply(all_mem)]
fn copy_misaligned_or_zero_len_fails_einval(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(missing_area(mem, 2));
    let ps = area.page_size();
    let src = source(ps, 2);
    for len in [0, 1, mem::base_page_size() - 1, ps + 1] {
        assert_eq!(
            uffd.copy(area.page(0), src.addr(), len, NONE),
            rejected(Errno::EINVAL),
            "len {len}"
        );
    }
    assert!(!pagemap::is_present(area.page(0)));
}

#[apply(hugetlb_mem)]
fn copy_hugetlb_needs_huge_page_alignment(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(missing_area(mem, 2));
    let hp = area.page_size();
    let bp = mem::base_page_size();
    // One filled source page (write_bytes): a per-byte pattern over a 1 GiB
    // page outlasts the deadline in a debug build.
    let src = Buf::filled(hp + bp, 0x5c);
    // Base-page aligned passes validate_range; mfill_atomic_hugetlb then
    // wants dst and len aligned to the huge page.
    assert_eq!(
        uffd.copy(area.page(0) + bp, src.addr(), hp, NONE),
        failed(Errno::EINVAL)
    );
    assert_eq!(uffd.copy(area.page(0), src.addr(), bp, NONE), failed(Errno::EINVAL));
    assert_eq!(
        uffd.copy(area.page(0), src.addr(), hp + bp, NONE),
        failed(Errno::EINVAL)
    );
    assert!(!pagemap::is_present(area.page(0)));
    assert_eq!(uffd.copy(area.page(0), src.addr(), hp, NONE), Ok(hp as i64));
    assert!(area.read_page(0) == vec![0x5c; hp], "the copied huge page");
}

#[apply(all_mem)]
fn copy_from_unaligned_src_copies_those_bytes(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(missing_area(mem, 1));
    let ps = area.page_size();
    let src = source(ps, 2);
    // Only dst must be aligned (validate_unaligned_range for src).
    assert_eq!(uffd.copy(area.page(0), src.addr() + 3, ps, NONE), Ok(ps as i64));
    let want: Vec<u8> = (3..ps + 3).map(|o| pat(o / ps, o % ps)).collect();
    assert_eq!(area.read_page(0), want);
}

#[apply(all_mem)]
fn copy_from_own_missing_range_fails_efault(#[case] mem: MemType) {
    // A spare page of a hugetlb pool for the source that is not resident
    // (see copy_from_a_non_resident_source_needs_a_spare_gigantic_page).
    let (area, uffd) = try_skip!(testing::registered_area_with_spare(
        mem,
        (2, 1),
        Features::empty(),
        MISSING,
        |_| {}
    ));
    let ps = area.page_size();
    // The kernel reads the source with copy_from_user: a missing registered
    // page is a kernel-mode fault, which a UFFD_USER_MODE_ONLY uffd does not
    // trap (handle_userfault → SIGBUS), so the read fails.
    assert_eq!(uffd.copy(area.page(0), area.page(1), ps, NONE), failed(Errno::EFAULT));
    // Source overlapping the destination itself.
    assert_eq!(uffd.copy(area.page(0), area.page(0), ps, NONE), failed(Errno::EFAULT));
    assert!(!pagemap::is_present(area.page(0)));
    assert!(!pagemap::is_present(area.page(1)));
    assert_no_event(&uffd);
}

#[rstest]
#[case::hugetlb_1g(MemType::Hugetlb1g)]
#[case::hugetlb_1g_private(MemType::Hugetlb1gPrivate)]
fn copy_from_a_non_resident_source_needs_a_spare_gigantic_page(#[case] mem: MemType) {
    require_mode!(mem, MISSING);
    // hugetlb_mfill_atomic_pte() reads the source with page faults off; when
    // that fails it must hold the bytes in a huge page while the source is
    // faulted in, and a 1 GiB page can come only from the pool's unreserved
    // ones (alloc_migrate_hugetlb_folio refuses gigantic pages). With the
    // pool held (the lease) and every free page reserved by the area itself,
    // a valid source that is merely untouched gets ENOMEM.
    let lease = mem::hugetlb::lease_gigantic().expect("lease the 1 GiB pool");
    let n = mem::hugetlb::PageSize::Gigantic.free().max(1);
    // Exactly the free pages: no spare (Area::new would keep some for a
    // forked child of the private type).
    let area = try_area!(Area::with_spare(mem, n, 0));
    // Under the lease nothing else of the suite changes the pool.
    assert_eq!(
        mem::hugetlb::PageSize::Gigantic.free(),
        0,
        "the area reserves every free 1 GiB page"
    );
    let uffd = try_skip!(testing::open_uffd(Features::empty()));
    uffd.register(area.addr(), area.len(), MISSING).unwrap();
    let ps = area.page_size();
    let untouched = Buf::untouched(ps);
    assert_eq!(
        uffd.copy(area.page(0), untouched.addr(), ps, NONE),
        failed(Errno::ENOMEM)
    );
    assert!(!pagemap::is_present(area.page(0)));
    assert_no_event(&uffd);
    // The same source once resident copies at once: the bytes were never
    // the problem, only where to keep them.
    let src = source(ps, 1);
    assert_eq!(uffd.copy(area.page(0), src.addr(), ps, NONE), Ok(ps as i64));
    assert!(
        area.read_page(0) == expected(ps, 0),
        "page 0 does not hold the source's bytes"
    );
    drop(area);
    drop(lease);
}

#[apply(all_mem)]
fn copy_to_unregistered_dst_fails_enoent(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(missing_area(mem, 1));
    let other = try_area!(Area::new(mem, 1));
    let ps = area.page_size();
    let src = source(ps, 1);
    // validate_dst_vma: the destination VMA must be registered.
    assert_eq!(uffd.copy(other.page(0), src.addr(), ps, NONE), failed(Errno::ENOENT));
    assert!(!pagemap::is_present(other.page(0)));
}

#[apply(all_mem)]
fn copy_to_unmapped_dst_fails_enoent(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(missing_area(mem, 1));
    let ps = area.page_size();
    let addr = testing::holes::far_range();
    let src = source(ps, 1);
    assert_eq!(uffd.copy(addr, src.addr(), ps, NONE), failed(Errno::ENOENT));
    drop(area);
}

#[apply(all_mem)]
fn copy_past_the_end_of_the_vma_fails_enoent(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(missing_area(mem, 2));
    let ps = area.page_size();
    let src = source(ps, 2);
    // The range must lie in one VMA; nothing is copied, not even page 1.
    let last = area.page(area.npages() - 1);
    assert_eq!(uffd.copy(last, src.addr(), 2 * ps, NONE), failed(Errno::ENOENT));
    assert!(!pagemap::is_present(last));
}

#[apply(all_mem)]
fn copy_after_unregister_fails_enoent(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(missing_area(mem, 1));
    let ps = area.page_size();
    let src = source(ps, 1);
    uffd.unregister(area.addr(), area.len()).unwrap();
    assert_eq!(uffd.copy(area.page(0), src.addr(), ps, NONE), failed(Errno::ENOENT));
}

#[apply(all_mem)]
fn copy_from_unmapped_src_fails_efault(#[case] mem: MemType) {
    // A spare page for the bounce the unmapped source sends the copy to.
    let (area, uffd) = try_skip!(testing::registered_area_with_spare(
        mem,
        (4, 1),
        Features::empty(),
        MISSING,
        |_| {}
    ));
    let ps = area.page_size();
    let bp = mem::base_page_size();
    let mut src = try_area!(Area::new(MemType::Anon, 4 * ps / bp));
    testing::holes::relocate(&mut src);
    for i in 0..src.npages() {
        src.fill_page(i, ((i * bp / ps) as u8).wrapping_add(0x10));
    }
    // SAFETY: unmapping the third destination-page worth of our own source.
    unsafe { munmap(ptr(src.addr() + 2 * ps), ps) }.unwrap();
    // The first page fails: nothing done, -EFAULT.
    assert_eq!(
        uffd.copy(area.page(2), src.addr() + 2 * ps, ps, NONE),
        failed(Errno::EFAULT)
    );
    assert!(!pagemap::is_present(area.page(2)));
    // A run reaching the hole copies what precedes it and stops short.
    assert_eq!(
        uffd.copy(area.addr(), src.addr(), 4 * ps, NONE),
        err(Errno::EAGAIN, 2 * ps as i64)
    );
    assert_eq!(area.read_page(0), vec![0x10; ps]);
    assert_eq!(area.read_page(1), vec![0x11; ps]);
    assert!(!pagemap::is_present(area.page(2)));
    assert!(!pagemap::is_present(area.page(3)));
}

#[apply(file_mem)]
fn copy_beyond_end_of_file_fails_efault(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(missing_area(mem, 2));
    let ps = area.page_size();
    let src = source(ps, 2);
    let fd = area.fd().expect("file-backed area");
    // Shrink the file under the mapping: page 1 now lies past EOF.
    nix::unistd::ftruncate(fd, ps as i64).unwrap();
    if mem.is_hugetlb() && !mem.is_shared() {
        // hugetlb_mfill_atomic_pte checks i_size only for shared VMAs: a
        // private hugetlb mapping gets its anonymous page past EOF
        // (mfill_file_over_size covers shmem, shared and private).
        assert_eq!(uffd.copy(area.page(1), src.addr() + ps, ps, NONE), Ok(ps as i64));
        assert_eq!(area.read_page(1), expected(ps, 1));
        assert_eq!(uffd.copy(area.page(0), src.addr(), ps, NONE), Ok(ps as i64));
        return;
    }
    assert_eq!(
        uffd.copy(area.page(1), src.addr() + ps, ps, NONE),
        failed(Errno::EFAULT)
    );
    // A run crossing EOF copies up to it and stops short.
    assert_eq!(
        uffd.copy(area.page(0), src.addr(), 2 * ps, NONE),
        err(Errno::EAGAIN, ps as i64)
    );
    assert_eq!(area.read_page(0), expected(ps, 0));
}

#[apply(all_mem)]
fn copy_into_read_only_area_maps_it_read_only(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(missing_area(mem, 1));
    let ps = area.page_size();
    // SAFETY: changing the protection of our own area.
    unsafe { mprotect(ptr(area.addr()), area.len(), ProtFlags::PROT_READ) }.unwrap();
    let src = source(ps, 1);
    // UFFDIO_COPY fills holes regardless of PROT_WRITE (VM_MAYWRITE is
    // what registration checked); the PTE follows the VMA's protection.
    assert_eq!(uffd.copy(area.page(0), src.addr(), ps, NONE), Ok(ps as i64));
    assert_eq!(area.read_page(0), expected(ps, 0));
    // The PTE is there and read-only: a write is refused for access
    // (SEGV_ACCERR), not for a missing mapping, at the byte written.
    assert_eq!(
        access_in_signal_child(area.page(0) + 9, Access::Write),
        Ended::Died(FaultSignal::accerr(area.page(0) + 9))
    );
    assert_eq!(access_in_signal_child(area.page(0), Access::Read), Ended::Exited(0));
    assert_eq!(area.read_page(0), expected(ps, 0));
}

#[apply(all_mem)]
fn copy_through_another_uffd_fills_but_does_not_wake(#[case] mem: MemType) {
    let (area, owner) = try_skip!(missing_area(mem, 1));
    let other = try_skip!(testing::open_uffd(Features::empty()));
    let ps = area.page_size();
    let src = source(ps, 1);
    let r = Faulter::read(area.page(0) + 6);
    next_pagefault(&owner);
    assert_eq!(r.settle(), State::Blocked);
    // validate_dst_vma only asks that the VMA be registered, not with the
    // calling uffd; the wake then goes to the caller's own wait queue.
    assert_eq!(other.copy(area.page(0), src.addr(), ps, NONE), Ok(ps as i64));
    assert!(pagemap::is_present(area.page(0)));
    assert!(r.is_blocked() && !r.is_done(), "another uffd's COPY woke the fault");
    owner.wake(area.page(0), ps).unwrap();
    assert_eq!(r.join(), pat(0, 6));
    assert_no_event(&owner);
    assert_no_event(&other);
}

#[apply(all_mem)]
fn copy_of_a_long_run_fills_every_page(#[case] mem: MemType) {
    // On 1 GiB pages three (a run over two boundaries) fill and compare
    // within the case timeout; eight took over a minute.
    let n = match mem.hugetlb_pool() {
        Some(mem::hugetlb::PageSize::Gigantic) => 3,
        Some(_) => 8,
        None => 64,
    };
    let (area, uffd) = try_skip!(missing_area(mem, n));
    let ps = area.page_size();
    let src = source(ps, n);
    assert_eq!(uffd.copy(area.addr(), src.addr(), n * ps, NONE), Ok((n * ps) as i64));
    for i in 0..n {
        assert_eq!(area.read_page(i), expected(ps, i), "page {i}");
    }
    assert_no_event(&uffd);
}

#[apply(file_mem)]
fn copy_into_minor_only_range_fills_the_hole(#[case] mem: MemType) {
    let minor = RegisterMode::MINOR;
    require_mode!(mem, minor);
    let area = try_area!(Area::with_alias(mem, 1));
    let uffd = try_skip!(testing::open_uffd(Features::empty()));
    let ioctls = uffd.register(area.addr(), area.len(), minor).unwrap();
    // The mask offers COPY in MINOR mode too, and mfill_atomic does not
    // look at the registration mode.
    assert_ioctls(ioctls, mem, minor);
    assert!(ioctls.contains(Ioctls::COPY | Ioctls::CONTINUE), "{ioctls:?}");
    let ps = area.page_size();
    let src = source(ps, 1);
    assert_eq!(uffd.copy(area.page(0), src.addr(), ps, NONE), Ok(ps as i64));
    assert_eq!(area.read_page(0), expected(ps, 0));
    let alias = area.read(area.alias_page(0), ps);
    if mem.is_shared() {
        assert_eq!(alias, expected(ps, 0), "the copy went into the page cache");
    } else {
        assert_eq!(alias, vec![0; ps], "a private copy leaves the file a hole");
    }
}

#[apply(shared_file_mem)]
fn copy_into_shared_memory_lands_in_the_page_cache(#[case] mem: MemType) {
    require_mode!(mem, MISSING);
    let area = try_area!(Area::with_alias(mem, 2));
    let uffd = try_skip!(testing::open_uffd(Features::empty()));
    uffd.register(area.addr(), area.len(), MISSING).unwrap();
    let ps = area.page_size();
    let src = source(ps, 2);
    assert_eq!(uffd.copy(area.page(1), src.addr() + ps, ps, NONE), Ok(ps as i64));
    // The other view of the same file sees the copied bytes.
    assert_eq!(area.read(area.alias_page(1), ps), expected(ps, 1));
    // And a write through it shows in the registered view.
    testing::write_byte(area.alias_page(1) + 3, 0xc3);
    assert_eq!(testing::read_byte(area.page(1) + 3), 0xc3);
    assert!(!pagemap::is_present(area.page(0)));
}

/// Two pages across a PMD boundary: both copied into two page tables, or,
/// with a THP beyond the boundary, the first page then EAGAIN.
#[rstest]
#[case::holes(boundary::FarSide::Holes)]
#[case::thp(boundary::FarSide::Thp)]
fn copy_across_a_pmd_boundary(#[case] far: boundary::FarSide) {
    let ps = mem::base_page_size();
    let src = Buf::filled(2 * ps, 0x47);
    let (area, _uffd, b) = try_skip!(boundary::fill_across(Features::empty(), far, |u, at, len| u.copy(
        at,
        src.addr(),
        len,
        NONE
    )));
    assert_eq!(area.read_page(b - 1), vec![0x47; ps]);
    if far == boundary::FarSide::Holes {
        assert_eq!(area.read_page(b), vec![0x47; ps]);
    }
}
