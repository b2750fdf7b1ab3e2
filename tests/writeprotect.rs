//! UFFDIO_WRITEPROTECT: protect and un-protect registered ranges, the WP
//! faults writes raise, how un-protect wakes them, and every argument check
//! of fs/userfaultfd.c `userfaultfd_writeprotect` / mm/userfaultfd.c
//! `mwriteprotect_range`.

mod common;
use common::*;
use faulter::{Faulter, State, assert_no_event, next_pagefault};
use nix::errno::Errno;
use pagemap::{PM_PRESENT, PM_UFFD_WP};
use std::sync::Arc;
use testing::smaps::field as smaps_field;
use uffdtest::testing::mm::Reservation;

const WP: WriteprotectMode = WriteprotectMode::WP;
const UNPROTECT: WriteprotectMode = WriteprotectMode::empty();

/// A populated area of `npages`, registered WP on a fresh uffd opened
/// with `extra` features on top of what WP needs.
fn wp_area(mem: MemType, npages: usize, extra: Features) -> Result<(Area, Arc<Uffd>), String> {
    testing::register_support(mem, RegisterMode::WP)?;
    let area = testing::area(mem, npages)?;
    area.populate(0x11);
    let uffd = testing::open_uffd(caps::features_for(mem, RegisterMode::WP) | extra)?;
    uffd.register(area.addr(), area.len(), RegisterMode::WP)
        .expect("UFFDIO_REGISTER(WP)");
    Ok((area, Arc::new(uffd)))
}

/// [`wp_area`], then write-protected whole.
fn protected_wp_area(mem: MemType, npages: usize, extra: Features) -> Result<(Area, Arc<Uffd>), String> {
    let (area, uffd) = wp_area(mem, npages, extra)?;
    uffd.writeprotect(area.addr(), area.len(), WP)
        .expect("UFFDIO_WRITEPROTECT");
    Ok((area, uffd))
}

/// One page of `mem` written with `byte`, and a uffd asking for no features; the case registers it (or not).
fn page_and_plain_uffd(mem: MemType, byte: u8) -> Result<(Area, Uffd), String> {
    let area = testing::area(mem, 1)?;
    area.populate(byte);
    Ok((area, testing::open_uffd(Features::empty())?))
}

/// One protected page of `mem` and a writer of `byte` at `offset` in it, blocked on its WP fault.
fn blocked_on_one_page(mem: MemType, offset: usize, byte: u8) -> Result<(Area, Arc<Uffd>, Faulter), String> {
    let (area, uffd) = protected_wp_area(mem, 1, Features::empty())?;
    let w = blocked_wp_writer(&uffd, area.page(0), offset, byte);
    Ok((area, uffd, w))
}

/// A write of `byte` to page 0 of the protected `area` faults, and un-protecting the area lets it through.
fn assert_write_waits_for_unprotect(uffd: &Uffd, area: &Area, byte: u8) {
    let w = wp_write_fault(uffd, area.page(0), 0, byte);
    uffd.writeprotect(area.addr(), area.len(), UNPROTECT).unwrap();
    assert_eq!(w.join(), byte);
}

fn wp_bit(addr: usize) -> bool {
    pagemap::entry(addr).expect("pagemap") & PM_UFFD_WP != 0
}

/// An offset inside a page that is not page aligned, so the fault address
/// shows whether the kernel masked it.
fn odd_offset(area: &Area) -> usize {
    area.page_size() / 2 + 3
}

#[apply(all_mem)]
fn protect_sets_pagemap_bit_and_unprotect_clears_it(#[case] mem: MemType) {
    require_mode!(mem, RegisterMode::WP);
    let (area, uffd) = try_skip!(wp_area(mem, 4, Features::empty()));
    for i in 0..4 {
        assert!(!wp_bit(area.page(i)), "page {i} protected before UFFDIO_WRITEPROTECT");
    }
    uffd.writeprotect(area.addr(), 4 * area.page_size(), WP).unwrap();
    for i in 0..4 {
        assert_eq!(wp_present(area.page(i)), PM_UFFD_WP | PM_PRESENT, "page {i}");
    }
    uffd.writeprotect(area.addr(), 4 * area.page_size(), UNPROTECT).unwrap();
    for i in 0..4 {
        assert!(!wp_bit(area.page(i)), "page {i} still protected after un-protect");
        assert_eq!(area.read_page(i), vec![0x11; area.page_size()], "page {i} contents");
    }
    assert_no_event(&uffd);
}

#[apply(all_mem)]
fn protect_one_page_marks_only_that_page(#[case] mem: MemType) {
    require_mode!(mem, RegisterMode::WP);
    let (area, uffd) = try_skip!(wp_area(mem, 3, Features::empty()));
    uffd.writeprotect(area.page(1), area.page_size(), WP).unwrap();
    assert!(!wp_bit(area.page(0)));
    assert!(wp_bit(area.page(1)));
    assert!(!wp_bit(area.page(2)));
    // The neighbours stay writable: writes complete without a message.
    for i in [0, 2] {
        let w = Faulter::write(area.page(i) + 1, 0x22);
        assert_eq!(w.settle(), State::Done, "write to unprotected page {i}");
        assert_eq!(w.join(), 0x22);
    }
    assert_no_event(&uffd);
    assert_eq!(testing::read_byte(area.page(0) + 1), 0x22);
    assert_eq!(testing::read_byte(area.page(2) + 1), 0x22);
}

#[apply(all_mem)]
fn write_to_protected_page_faults_wp_write_until_unprotected(#[case] mem: MemType) {
    require_mode!(mem, RegisterMode::WP);
    let (area, uffd) = try_skip!(protected_wp_area(mem, 2, Features::empty()));
    let ps = area.page_size();
    let w = Faulter::write(area.page(1) + odd_offset(&area), 0x33);
    let (flags, addr) = next_pagefault(&uffd);
    assert_eq!(flags, PagefaultFlags::WP | PagefaultFlags::WRITE);
    // Without EXACT_ADDRESS the address is that of the (huge) page.
    assert_eq!(addr, area.page(1));
    assert_eq!(w.settle(), State::Blocked);
    // Nothing was written while blocked.
    assert_eq!(testing::read_byte(area.page(1) + odd_offset(&area)), 0x11);
    uffd.writeprotect(area.page(1), ps, UNPROTECT).unwrap();
    assert_eq!(w.join(), 0x33);
    let mut want = vec![0x11; ps];
    want[odd_offset(&area)] = 0x33;
    assert_eq!(area.read_page(1), want);
    assert!(!wp_bit(area.page(1)));
    assert!(wp_bit(area.page(0)), "page 0 was not un-protected");
    assert_no_event(&uffd);
}

#[apply(all_mem)]
fn write_fault_reports_exact_address_with_feature(#[case] mem: MemType) {
    require_mode!(mem, RegisterMode::WP);
    require_features!(Features::EXACT_ADDRESS);
    let (area, uffd) = try_skip!(protected_wp_area(mem, 1, Features::EXACT_ADDRESS));
    let target = area.page(0) + odd_offset(&area);
    let w = Faulter::write(target, 0x44);
    let (flags, addr) = next_pagefault(&uffd);
    assert_eq!(flags, PagefaultFlags::WP | PagefaultFlags::WRITE);
    assert_eq!(addr, target);
    uffd.writeprotect(area.addr(), area.page_size(), UNPROTECT).unwrap();
    assert_eq!(w.join(), 0x44);
    assert_eq!(testing::read_byte(target), 0x44);
}

#[apply(all_mem)]
fn read_of_protected_page_does_not_fault(#[case] mem: MemType) {
    require_mode!(mem, RegisterMode::WP);
    let (area, uffd) = try_skip!(protected_wp_area(mem, 2, Features::empty()));
    for i in 0..2 {
        let r = Faulter::read(area.page(i) + odd_offset(&area));
        assert_eq!(r.settle(), State::Done, "read of protected page {i}");
        assert_eq!(r.join(), 0x11);
    }
    assert_no_event(&uffd);
    assert!(
        wp_bit(area.page(0)) && wp_bit(area.page(1)),
        "a read dropped protection"
    );
}

#[apply(all_mem)]
fn dontwake_unprotect_leaves_writer_blocked_until_wake(#[case] mem: MemType) {
    require_mode!(mem, RegisterMode::WP);
    let (area, uffd, first) = try_skip!(blocked_on_one_page(mem, 1, 0x55));
    let ps = area.page_size();

    uffd.writeprotect(area.addr(), ps, WriteprotectMode::DONTWAKE).unwrap();
    assert!(!wp_bit(area.page(0)), "DONTWAKE un-protect still clears the bit");
    // The page is writable now: a second writer goes straight through...
    assert_write_completes(area.page(0) + 2, 0x66);
    assert_no_event(&uffd);
    // ...while the first still sleeps on the old fault, unwoken.
    assert_eq!(testing::read_byte(area.page(0) + 1), 0x11);
    assert_asleep_until_wake(&uffd, first, area.addr(), ps, 0x55, "DONTWAKE woke the writer");
    assert_eq!(testing::read_byte(area.page(0) + 1), 0x55);
    assert_eq!(testing::read_byte(area.page(0) + 2), 0x66);
    assert_no_event(&uffd);
}

#[apply(all_mem)]
fn wake_without_unprotect_faults_again(#[case] mem: MemType) {
    require_mode!(mem, RegisterMode::WP);
    let (area, uffd, w) = try_skip!(blocked_on_one_page(mem, 0, 0x77));
    let ps = area.page_size();
    // Waking a still-protected page only retries the write: a new fault.
    uffd.wake(area.addr(), ps).unwrap();
    assert_eq!(
        next_pagefault(&uffd),
        (PagefaultFlags::WP | PagefaultFlags::WRITE, area.page(0))
    );
    assert_eq!(w.settle(), State::Blocked);
    assert_eq!(testing::read_byte(area.page(0)), 0x11);
    uffd.writeprotect(area.addr(), ps, UNPROTECT).unwrap();
    assert_eq!(w.join(), 0x77);
    assert_eq!(testing::read_byte(area.page(0)), 0x77);
}

#[apply(all_mem)]
fn unprotect_wakes_only_writers_in_its_range(#[case] mem: MemType) {
    require_mode!(mem, RegisterMode::WP);
    let (area, uffd) = try_skip!(protected_wp_area(mem, 3, Features::empty()));
    let ps = area.page_size();
    let w0 = Faulter::write(area.page(0), 0xa0);
    let w2 = Faulter::write(area.page(2), 0xa2);
    let mut addrs = [next_pagefault(&uffd), next_pagefault(&uffd)];
    addrs.sort_by_key(|(_, a)| *a);
    let wpw = PagefaultFlags::WP | PagefaultFlags::WRITE;
    assert_eq!(addrs, [(wpw, area.page(0)), (wpw, area.page(2))]);
    assert_eq!(w0.settle(), State::Blocked);
    assert_eq!(w2.settle(), State::Blocked);

    uffd.writeprotect(area.page(0), ps, UNPROTECT).unwrap();
    assert_eq!(w0.join(), 0xa0);
    assert!(
        w2.is_blocked() && !w2.is_done(),
        "un-protecting page 0 woke page 2's writer"
    );
    assert!(wp_bit(area.page(1)) && wp_bit(area.page(2)));

    uffd.writeprotect(area.page(2), ps, UNPROTECT).unwrap();
    assert_eq!(w2.join(), 0xa2);
    assert_eq!(testing::read_byte(area.page(0)), 0xa0);
    assert_eq!(testing::read_byte(area.page(1)), 0x11);
    assert_eq!(testing::read_byte(area.page(2)), 0xa2);
    assert_no_event(&uffd);
}

#[apply(all_mem)]
fn unregister_clears_protection(#[case] mem: MemType) {
    require_mode!(mem, RegisterMode::WP);
    let (area, uffd) = try_skip!(protected_wp_area(mem, 2, Features::empty()));
    assert!(wp_bit(area.page(1)));
    uffd.unregister(area.addr(), area.len()).unwrap();
    assert!(!wp_bit(area.page(0)) && !wp_bit(area.page(1)));
    assert_write_completes(area.page(1), 0x88);
    assert_no_event(&uffd);
}

#[apply(all_mem)]
fn closing_uffd_wakes_writer_and_clears_protection(#[case] mem: MemType) {
    require_mode!(mem, RegisterMode::WP);
    let (area, uffd, w) = try_skip!(blocked_on_one_page(mem, 0, 0x99));
    drop(Arc::into_inner(uffd).expect("sole owner of the uffd"));
    assert_eq!(w.join(), 0x99);
    assert_eq!(testing::read_byte(area.page(0)), 0x99);
    assert!(!wp_bit(area.page(0)));
}

#[apply(all_mem)]
fn wp_registration_works_without_requesting_pagefault_flag_wp(#[case] mem: MemType) {
    // userfaultfd_register checks the arch and the memory type, not the
    // features asked for at UFFDIO_API: an fd opened with none may register
    // WP, protect and receive WP faults.
    require_mode!(mem, RegisterMode::WP);
    let (area, uffd) = try_skip!(page_and_plain_uffd(mem, 0x11));
    let ioctls = uffd.register(area.addr(), area.len(), RegisterMode::WP).unwrap();
    assert!(ioctls.contains(Ioctls::WRITEPROTECT | Ioctls::WAKE), "{ioctls:?}");
    uffd.writeprotect(area.addr(), area.len(), WP).unwrap();
    assert!(wp_bit(area.page(0)));
    assert_write_waits_for_unprotect(&uffd, &area, 0x12);
}

// Split by topic with include! rather than `mod`: libtest names a case by its
// module path, so submodules would rename every case; included, they all stay
// `writeprotect/<case>` (and `args::` keeps its own module). Cases with a
// serial_test attribute stay in this file, the one the runner reads them from.
include!("writeprotect/ranges.rs");
include!("writeprotect/fill.rs");
include!("writeprotect/mm.rs");

#[test]
#[serial_test::file_serial(thp)]
fn protect_one_page_of_a_pmd_mapped_shmem_folio() {
    // A file PMD cannot carry uffd-wp: protecting part of it splits the
    // mapping, and only the protected page keeps (a marker with) the bit.
    require_mode!(MemType::Shmem, RegisterMode::WP);
    require_root!("sets the anon shmem THP policy");
    let Some(pmd) = mem::pmd_size() else {
        skip!("kernel has no THP")
    };
    // Not `deny`: MADV_COLLAPSE below makes the PMD folio.
    let _collapsible = testing::thp::shmem_collapsible();
    let ps = mem::base_page_size();
    let holes = testing::holes::far_range();
    // SAFETY: a shared anonymous (shmem) mapping at a far, PMD-aligned address.
    let p = unsafe {
        libc::mmap(
            holes as *mut libc::c_void,
            pmd,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED, "mmap: {}", Errno::last());
    let a = p as usize;
    let _unmap = Reservation { addr: a, len: pmd };
    // SAFETY: our writable mapping.
    unsafe { std::ptr::write_bytes(a as *mut u8, 0x11, pmd) };
    testing::thp::collapse_or_fail(a, pmd);
    assert_eq!(smaps_field(a, "ShmemPmdMapped"), Some(pmd));
    let uffd = try_skip!(testing::open_uffd(caps::features_for(MemType::Shmem, RegisterMode::WP)));
    uffd.register(a, pmd, RegisterMode::WP).unwrap();
    uffd.writeprotect(a + 7 * ps, ps, WP).unwrap();
    assert_eq!(smaps_field(a, "ShmemPmdMapped"), Some(0), "the PMD mapping was split");
    let wp: Vec<usize> = (0..pmd / ps).filter(|i| wp_bit(a + i * ps)).collect();
    assert_eq!(wp, [7]);
    assert_write_completes(a + 8 * ps, 0x22);
    let w = blocked_wp_writer(&uffd, a + 7 * ps, 1, 0x23);
    uffd.writeprotect(a + 7 * ps, ps, UNPROTECT).unwrap();
    assert_eq!(w.join(), 0x23);
    assert_eq!(testing::read_byte(a + 7 * ps), 0x11, "the cache page kept its data");
    assert_eq!(testing::read_byte(a + 7 * ps + 1), 0x23);
    assert_no_event(&uffd);
}
