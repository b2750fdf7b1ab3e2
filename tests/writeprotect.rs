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
use uffdtest::testing::knob::Knob;
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
        let e = pagemap::entry(area.page(i)).unwrap();
        assert_eq!(
            e & (PM_UFFD_WP | PM_PRESENT),
            PM_UFFD_WP | PM_PRESENT,
            "page {i}: {e:#x}"
        );
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
    let (area, uffd) = try_skip!(wp_area(mem, 2, Features::empty()));
    let ps = area.page_size();
    uffd.writeprotect(area.addr(), 2 * ps, WP).unwrap();
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
    let (area, uffd) = try_skip!(wp_area(mem, 1, Features::EXACT_ADDRESS));
    uffd.writeprotect(area.addr(), area.page_size(), WP).unwrap();
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
    let (area, uffd) = try_skip!(wp_area(mem, 2, Features::empty()));
    uffd.writeprotect(area.addr(), area.len(), WP).unwrap();
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
    let (area, uffd) = try_skip!(wp_area(mem, 1, Features::empty()));
    let ps = area.page_size();
    uffd.writeprotect(area.addr(), ps, WP).unwrap();
    let first = Faulter::write(area.page(0) + 1, 0x55);
    let (flags, addr) = next_pagefault(&uffd);
    assert_eq!(
        (flags, addr),
        (PagefaultFlags::WP | PagefaultFlags::WRITE, area.page(0))
    );
    assert_eq!(first.settle(), State::Blocked);

    uffd.writeprotect(area.addr(), ps, WriteprotectMode::DONTWAKE).unwrap();
    assert!(!wp_bit(area.page(0)), "DONTWAKE un-protect still clears the bit");
    // The page is writable now: a second writer goes straight through...
    let second = Faulter::write(area.page(0) + 2, 0x66);
    assert_eq!(second.settle(), State::Done);
    assert_eq!(second.join(), 0x66);
    assert_no_event(&uffd);
    // ...while the first still sleeps on the old fault, unwoken.
    assert!(first.is_blocked() && !first.is_done(), "DONTWAKE woke the writer");
    assert_eq!(testing::read_byte(area.page(0) + 1), 0x11);

    uffd.wake(area.addr(), ps).unwrap();
    assert_eq!(first.join(), 0x55);
    assert_eq!(testing::read_byte(area.page(0) + 1), 0x55);
    assert_eq!(testing::read_byte(area.page(0) + 2), 0x66);
    assert_no_event(&uffd);
}

#[apply(all_mem)]
fn wake_without_unprotect_faults_again(#[case] mem: MemType) {
    require_mode!(mem, RegisterMode::WP);
    let (area, uffd) = try_skip!(wp_area(mem, 1, Features::empty()));
    let ps = area.page_size();
    uffd.writeprotect(area.addr(), ps, WP).unwrap();
    let w = Faulter::write(area.page(0), 0x77);
    assert_eq!(
        next_pagefault(&uffd),
        (PagefaultFlags::WP | PagefaultFlags::WRITE, area.page(0))
    );
    assert_eq!(w.settle(), State::Blocked);
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
    let (area, uffd) = try_skip!(wp_area(mem, 3, Features::empty()));
    let ps = area.page_size();
    uffd.writeprotect(area.addr(), 3 * ps, WP).unwrap();
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
    let (area, uffd) = try_skip!(wp_area(mem, 2, Features::empty()));
    uffd.writeprotect(area.addr(), area.len(), WP).unwrap();
    assert!(wp_bit(area.page(1)));
    uffd.unregister(area.addr(), area.len()).unwrap();
    assert!(!wp_bit(area.page(0)) && !wp_bit(area.page(1)));
    let w = Faulter::write(area.page(1), 0x88);
    assert_eq!(w.settle(), State::Done);
    assert_eq!(w.join(), 0x88);
    assert_no_event(&uffd);
}

#[apply(all_mem)]
fn closing_uffd_wakes_writer_and_clears_protection(#[case] mem: MemType) {
    require_mode!(mem, RegisterMode::WP);
    let (area, uffd) = try_skip!(wp_area(mem, 1, Features::empty()));
    uffd.writeprotect(area.addr(), area.len(), WP).unwrap();
    let w = Faulter::write(area.page(0), 0x99);
    assert_eq!(
        next_pagefault(&uffd),
        (PagefaultFlags::WP | PagefaultFlags::WRITE, area.page(0))
    );
    assert_eq!(w.settle(), State::Blocked);
    drop(Arc::into_inner(uffd).expect("sole owner of the uffd"));
    assert_eq!(w.join(), 0x99);
    assert_eq!(testing::read_byte(area.page(0)), 0x99);
    assert!(!wp_bit(area.page(0)));
}

#[apply(all_mem)]
fn writeprotect_on_missing_only_registration_fails_enoent(#[case] mem: MemType) {
    require_mode!(mem, RegisterMode::MISSING);
    let area = try_area!(Area::new(mem, 1));
    area.populate(1);
    let uffd = try_skip!(testing::open_uffd(Features::empty()));
    uffd.register(area.addr(), area.len(), RegisterMode::MISSING).unwrap();
    // mwriteprotect_range: a VMA without VM_UFFD_WP is -ENOENT, either way.
    assert_eq!(uffd.writeprotect(area.addr(), area.len(), WP), Err(Errno::ENOENT));
    assert_eq!(
        uffd.writeprotect(area.addr(), area.len(), UNPROTECT),
        Err(Errno::ENOENT)
    );
    assert!(!wp_bit(area.page(0)));
}

#[apply(all_mem)]
fn writeprotect_on_unregistered_memory_fails_enoent(#[case] mem: MemType) {
    let area = try_area!(Area::new(mem, 1));
    area.populate(1);
    let uffd = try_skip!(testing::open_uffd(Features::empty()));
    assert_eq!(uffd.writeprotect(area.addr(), area.len(), WP), Err(Errno::ENOENT));
    assert!(!wp_bit(area.page(0)));
}

#[apply(selftest_mem)]
fn writeprotect_stops_at_first_unregistered_vma_with_enoent(#[case] mem: MemType) {
    require_mode!(mem, RegisterMode::WP);
    let area = try_area!(Area::new(mem, 2));
    area.populate(1);
    let uffd = try_skip!(testing::open_uffd(caps::features_for(mem, RegisterMode::WP)));
    uffd.register(area.page(0), area.page_size(), RegisterMode::WP).unwrap();
    // The VMAs are walked in order: the registered head is protected
    // before the unregistered tail fails the call.
    assert_eq!(uffd.writeprotect(area.addr(), area.len(), WP), Err(Errno::ENOENT));
    if !multi_vma_writeprotect() {
        assert!(!wp_bit(area.page(0)), "one-VMA ABI: the refused call protects nothing");
        skip!("kernel writeprotects one VMA per call: no walk to stop (multi-VMA is 6.4)");
    }
    assert!(wp_bit(area.page(0)), "head VMA protected before the failure");
    assert!(!wp_bit(area.page(1)));
}

/// Multi-VMA UFFDIO_WRITEPROTECT (6.4) has no feature bit: probe it over two
/// registered anon VMAs (different modes keep them apart). Before it the
/// range must lie in one VMA and the call fails ENOENT.
fn multi_vma_writeprotect() -> bool {
    let area = Area::new(MemType::Anon, 2).expect("an anon area");
    let uffd = testing::open_uffd(Features::PAGEFAULT_FLAG_WP).expect("a uffd with PAGEFAULT_FLAG_WP");
    let ps = area.page_size();
    uffd.register(area.page(0), ps, RegisterMode::MISSING | RegisterMode::WP)
        .unwrap();
    uffd.register(area.page(1), ps, RegisterMode::WP).unwrap();
    match uffd.writeprotect(area.addr(), area.len(), WP) {
        Ok(()) => true,
        Err(Errno::ENOENT) => false,
        Err(e) => panic!("UFFDIO_WRITEPROTECT over two registered VMAs: {e}"),
    }
}

#[apply(selftest_mem)]
fn writeprotect_skips_unmapped_holes(#[case] mem: MemType) {
    require_mode!(mem, RegisterMode::WP);
    let mut area = try_area!(Area::new(mem, 3));
    // Far from where other threads map, so the hole stays a hole.
    testing::holes::relocate(&mut area);
    area.populate(1);
    let ps = area.page_size();
    // SAFETY: unmapping the middle page of our own area; Area's drop
    // unmaps the whole range again, which is harmless.
    unsafe { nix::sys::mman::munmap(std::ptr::NonNull::new(area.page(1) as *mut _).unwrap(), ps) }.unwrap();
    let uffd = try_skip!(testing::open_uffd(caps::features_for(mem, RegisterMode::WP)));
    uffd.register(area.page(0), ps, RegisterMode::WP).unwrap();
    uffd.register(area.page(2), ps, RegisterMode::WP).unwrap();
    // for_each_vma_range only visits mapped VMAs: the hole is no error.
    // No feature bit tells the ABIs apart: before multi-VMA writeprotect
    // (6.4; Debian 12's 6.1) the range must lie in one VMA, so the call
    // fails ENOENT having protected nothing; pinned, then skipped.
    match uffd.writeprotect(area.addr(), 3 * ps, WP) {
        Ok(()) => {}
        Err(Errno::ENOENT) => {
            assert!(!wp_bit(area.page(0)) && !wp_bit(area.page(2)));
            skip!("kernel writeprotects one VMA per call: a range over a hole fails ENOENT (multi-VMA is 6.4)");
        }
        Err(e) => panic!("UFFDIO_WRITEPROTECT over a hole: {e}"),
    }
    assert!(wp_bit(area.page(0)) && wp_bit(area.page(2)));
    uffd.writeprotect(area.addr(), 3 * ps, UNPROTECT).unwrap();
    assert!(!wp_bit(area.page(0)) && !wp_bit(area.page(2)));
}

#[test]
fn writeprotect_on_unmapped_range_fails_enoent() {
    let uffd = try_skip!(testing::open_uffd(Features::PAGEFAULT_FLAG_WP));
    // A range no test thread maps: a dropped area's range could be reused.
    let addr = testing::holes::far_range();
    assert_eq!(uffd.writeprotect(addr, mem::base_page_size(), WP), Err(Errno::ENOENT));
    assert_eq!(uffd.writeprotect(addr, 1 << 30, UNPROTECT), Err(Errno::ENOENT));
}

/// Argument checks that fail before any VMA is looked at.
mod args {
    use super::*;

    fn setup() -> Result<(Area, Arc<Uffd>), String> {
        wp_area(MemType::Anon, 2, Features::empty())
    }

    #[test]
    fn unknown_mode_bits_fail_einval() {
        let (area, uffd) = try_skip!(setup());
        for bit in [2, 3, 31, 63] {
            let mode = WriteprotectMode::from_bits_retain(1 << bit);
            assert_eq!(
                uffd.writeprotect(area.addr(), area.len(), mode),
                Err(Errno::EINVAL),
                "bit {bit}"
            );
            let mode = WriteprotectMode::from_bits_retain(1 << bit) | WP;
            assert_eq!(
                uffd.writeprotect(area.addr(), area.len(), mode),
                Err(Errno::EINVAL),
                "WP|bit {bit}"
            );
        }
        assert!(!wp_bit(area.page(0)), "a refused call protected the page");
    }

    #[test]
    fn protect_with_dontwake_fails_einval() {
        let (area, uffd) = try_skip!(setup());
        let mode = WP | WriteprotectMode::DONTWAKE;
        assert_eq!(uffd.writeprotect(area.addr(), area.len(), mode), Err(Errno::EINVAL));
        assert!(!wp_bit(area.page(0)));
    }

    #[test]
    fn misaligned_start_fails_einval() {
        let (area, uffd) = try_skip!(setup());
        assert_eq!(
            uffd.writeprotect(area.addr() + 1, area.page_size(), WP),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            uffd.writeprotect(area.addr() + 8, area.page_size(), WP),
            Err(Errno::EINVAL)
        );
        assert!(!wp_bit(area.page(0)));
    }

    #[test]
    fn unaligned_length_fails_einval() {
        let (area, uffd) = try_skip!(setup());
        assert_eq!(
            uffd.writeprotect(area.addr(), area.page_size() + 1, WP),
            Err(Errno::EINVAL)
        );
        assert_eq!(uffd.writeprotect(area.addr(), 1, WP), Err(Errno::EINVAL));
        assert!(!wp_bit(area.page(0)));
    }

    #[test]
    fn zero_length_fails_einval() {
        let (area, uffd) = try_skip!(setup());
        assert_eq!(uffd.writeprotect(area.addr(), 0, WP), Err(Errno::EINVAL));
        assert_eq!(uffd.writeprotect(area.addr(), 0, UNPROTECT), Err(Errno::EINVAL));
    }

    #[test]
    fn range_beyond_user_address_space_fails_einval() {
        let (area, uffd) = try_skip!(setup());
        let ps = area.page_size();
        // x86_64 TASK_SIZE with 4-level paging is (1 << 47) - PAGE_SIZE;
        // 5-level paging only raises it for mappings above that hint.
        let top = (1usize << 47) - ps;
        assert_eq!(uffd.writeprotect(1 << 47, ps, WP), Err(Errno::EINVAL), "start at 1<<47");
        assert_eq!(
            uffd.writeprotect(top, 2 * ps, WP),
            Err(Errno::EINVAL),
            "end past TASK_SIZE"
        );
        assert_eq!(
            uffd.writeprotect(usize::MAX & !(ps - 1), ps, WP),
            Err(Errno::EINVAL),
            "start at the top"
        );
        // A length that wraps the address space.
        assert_eq!(
            uffd.writeprotect(area.addr(), usize::MAX & !(ps - 1), WP),
            Err(Errno::EINVAL)
        );
    }
}

#[rstest]
#[case::hugetlb(MemType::Hugetlb)]
#[case::hugetlb_private(MemType::HugetlbPrivate)]
fn hugetlb_subpage_range_fails_einval(#[case] mem: MemType) {
    require_mode!(mem, RegisterMode::WP);
    let (area, uffd) = try_skip!(wp_area(mem, 2, Features::empty()));
    let base = mem::base_page_size();
    // Base-page aligned is enough for validate_range but not for hugetlb.
    assert_eq!(
        uffd.writeprotect(area.addr() + base, area.page_size(), WP),
        Err(Errno::EINVAL)
    );
    assert_eq!(uffd.writeprotect(area.addr(), base, WP), Err(Errno::EINVAL));
    assert_eq!(
        uffd.writeprotect(area.addr(), area.page_size() + base, WP),
        Err(Errno::EINVAL)
    );
    assert!(!wp_bit(area.page(0)) && !wp_bit(area.page(1)));
}

#[apply(all_mem)]
fn wp_registration_works_without_requesting_pagefault_flag_wp(#[case] mem: MemType) {
    // userfaultfd_register checks the arch and the memory type, not the
    // features asked for at UFFDIO_API: an fd opened with none may register
    // WP, protect and receive WP faults.
    require_mode!(mem, RegisterMode::WP);
    let area = try_area!(Area::new(mem, 1));
    area.populate(0x11);
    let uffd = try_skip!(testing::open_uffd(Features::empty()));
    let ioctls = uffd.register(area.addr(), area.len(), RegisterMode::WP).unwrap();
    assert!(ioctls.contains(Ioctls::WRITEPROTECT | Ioctls::WAKE), "{ioctls:?}");
    uffd.writeprotect(area.addr(), area.len(), WP).unwrap();
    assert!(wp_bit(area.page(0)));
    let w = Faulter::write(area.page(0), 0x12);
    assert_eq!(
        next_pagefault(&uffd),
        (PagefaultFlags::WP | PagefaultFlags::WRITE, area.page(0))
    );
    uffd.writeprotect(area.addr(), area.len(), UNPROTECT).unwrap();
    assert_eq!(w.join(), 0x12);
}

#[apply(all_mem)]
fn copy_mode_wp_installs_protected_page(#[case] mem: MemType) {
    let mode = RegisterMode::MISSING | RegisterMode::WP;
    require_mode!(mem, mode);
    let area = try_area!(Area::new(mem, 2));
    let ps = area.page_size();
    let uffd = try_skip!(testing::open_uffd(caps::features_for(mem, RegisterMode::WP)));
    uffd.register(area.addr(), area.len(), mode).unwrap();
    let src = testing::Buf::pattern(ps, |i| (i % 251) as u8);
    assert_eq!(uffd.copy(area.page(1), src.addr(), ps, CopyMode::WP), Ok(ps as i64));
    let e = pagemap::entry(area.page(1)).unwrap();
    assert_eq!(e & (PM_UFFD_WP | PM_PRESENT), PM_UFFD_WP | PM_PRESENT, "{e:#x}");
    // Reads see the copied data without a fault.
    let r = Faulter::read(area.page(1) + 7);
    assert_eq!(r.settle(), State::Done);
    assert_eq!(r.join(), 7);
    assert_eq!(area.read_page(1), src.bytes(ps));
    assert_no_event(&uffd);
    // A write faults WP until un-protected.
    let w = Faulter::write(area.page(1) + 9, 0xee);
    assert_eq!(
        next_pagefault(&uffd),
        (PagefaultFlags::WP | PagefaultFlags::WRITE, area.page(1))
    );
    assert_eq!(w.settle(), State::Blocked);
    uffd.writeprotect(area.page(1), ps, UNPROTECT).unwrap();
    assert_eq!(w.join(), 0xee);
    let mut want = src.bytes(ps);
    want[9] = 0xee;
    assert_eq!(area.read_page(1), want);
}

#[apply(all_mem)]
fn copy_without_mode_wp_installs_writable_page(#[case] mem: MemType) {
    let mode = RegisterMode::MISSING | RegisterMode::WP;
    require_mode!(mem, mode);
    let area = try_area!(Area::new(mem, 1));
    let ps = area.page_size();
    let uffd = try_skip!(testing::open_uffd(caps::features_for(mem, RegisterMode::WP)));
    uffd.register(area.addr(), area.len(), mode).unwrap();
    let src = testing::Buf::filled(ps, 0x3c);
    assert_eq!(
        uffd.copy(area.page(0), src.addr(), ps, CopyMode::empty()),
        Ok(ps as i64)
    );
    assert!(!wp_bit(area.page(0)));
    let w = Faulter::write(area.page(0), 0x3d);
    assert_eq!(w.settle(), State::Done);
    assert_eq!(w.join(), 0x3d);
    assert_no_event(&uffd);
}

#[apply(all_mem)]
fn copy_mode_wp_without_wp_registration_fails_einval(#[case] mem: MemType) {
    require_mode!(mem, RegisterMode::MISSING);
    let area = try_area!(Area::new(mem, 1));
    let ps = area.page_size();
    let uffd = try_skip!(testing::open_uffd(Features::empty()));
    uffd.register(area.addr(), area.len(), RegisterMode::MISSING).unwrap();
    let src = testing::Buf::filled(ps, 0x3c);
    let err = uffd.copy(area.page(0), src.addr(), ps, CopyMode::WP).unwrap_err();
    assert_eq!(
        err,
        Partial {
            errno: Errno::EINVAL,
            progress: Partial::neg(Errno::EINVAL)
        }
    );
    assert!(!pagemap::is_present(area.page(0)), "a refused COPY mapped the page");
}

#[apply(file_mem)]
fn protect_unpopulated_file_page_installs_marker(#[case] mem: MemType) {
    // File memory always uses PTE markers for uffd-wp, so protection
    // survives on a page that is not mapped yet (WP_HUGETLBFS_SHMEM).
    require_mode!(mem, RegisterMode::WP);
    let area = try_area!(Area::new(mem, 2));
    let uffd = try_skip!(testing::open_uffd(caps::features_for(mem, RegisterMode::WP)));
    uffd.register(area.addr(), area.len(), RegisterMode::WP).unwrap();
    uffd.writeprotect(area.addr(), area.len(), WP).unwrap();
    for i in 0..2 {
        let e = pagemap::entry(area.page(i)).unwrap();
        assert_eq!(e & (PM_UFFD_WP | PM_PRESENT), PM_UFFD_WP, "page {i}: {e:#x}");
    }
    // The first write to the marked page is a WP fault.
    let w = Faulter::write(area.page(1) + 5, 0x42);
    assert_eq!(
        next_pagefault(&uffd),
        (PagefaultFlags::WP | PagefaultFlags::WRITE, area.page(1))
    );
    assert_eq!(w.settle(), State::Blocked);
    uffd.writeprotect(area.page(1), area.page_size(), UNPROTECT).unwrap();
    assert_eq!(w.join(), 0x42);
    let mut want = vec![0; area.page_size()];
    want[5] = 0x42;
    assert_eq!(area.read_page(1), want);
    assert!(!wp_bit(area.page(1)));
    assert!(wp_bit(area.page(0)), "page 0 keeps its marker");
}

#[apply(file_mem)]
fn read_of_marked_file_page_maps_it_protected(#[case] mem: MemType) {
    require_mode!(mem, RegisterMode::WP);
    let area = try_area!(Area::new(mem, 1));
    let uffd = try_skip!(testing::open_uffd(caps::features_for(mem, RegisterMode::WP)));
    uffd.register(area.addr(), area.len(), RegisterMode::WP).unwrap();
    uffd.writeprotect(area.addr(), area.len(), WP).unwrap();
    let r = Faulter::read(area.page(0));
    assert_eq!(r.settle(), State::Done);
    assert_eq!(r.join(), 0);
    assert_no_event(&uffd);
    // The read fault replaced the marker with a protected mapping.
    let e = pagemap::entry(area.page(0)).unwrap();
    assert_eq!(e & (PM_UFFD_WP | PM_PRESENT), PM_UFFD_WP | PM_PRESENT, "{e:#x}");
    let w = Faulter::write(area.page(0), 1);
    assert_eq!(
        next_pagefault(&uffd),
        (PagefaultFlags::WP | PagefaultFlags::WRITE, area.page(0))
    );
    uffd.writeprotect(area.addr(), area.len(), UNPROTECT).unwrap();
    assert_eq!(w.join(), 1);
}

#[apply(anon_mem)]
fn protect_unpopulated_anon_page_is_noop_without_wp_unpopulated(#[case] mem: MemType) {
    // Anon uses markers only when WP_UNPOPULATED was asked for; without it
    // there is nothing to protect, and the first write allocates freely.
    require_mode!(mem, RegisterMode::WP);
    let area = try_area!(Area::new(mem, 1));
    let uffd = try_skip!(testing::open_uffd(Features::PAGEFAULT_FLAG_WP));
    uffd.register(area.addr(), area.len(), RegisterMode::WP).unwrap();
    uffd.writeprotect(area.addr(), area.len(), WP).unwrap();
    assert_eq!(pagemap::entry(area.page(0)).unwrap() & (PM_UFFD_WP | PM_PRESENT), 0);
    let w = Faulter::write(area.page(0), 0x4b);
    assert_eq!(w.settle(), State::Done);
    assert_eq!(w.join(), 0x4b);
    assert_no_event(&uffd);
    assert!(!wp_bit(area.page(0)));
}

/// read(2) of 16 bytes of /dev/zero into `addr`: the kernel writes the
/// page with copy_to_user, a fault without FAULT_FLAG_USER. Returns the
/// byte count, or 255 - errno.
fn kernel_zero_fill(addr: usize) -> u8 {
    let Ok(f) = std::fs::File::open("/dev/zero") else {
        return 255;
    };
    // SAFETY: addr..addr+16 lies in a mapping of the caller's area.
    let n = unsafe { libc::read(std::os::fd::AsRawFd::as_raw_fd(&f), addr as *mut libc::c_void, 16) };
    if n < 0 { 255 - Errno::last() as u8 } else { n as u8 }
}

#[apply(all_mem)]
fn kernel_write_to_protected_page_fails_efault_on_user_mode_only_uffd(#[case] mem: MemType) {
    // handle_userfault refuses kernel-mode faults on a UFFD_USER_MODE_ONLY
    // fd with VM_FAULT_SIGBUS: copy_to_user fails and read(2) says EFAULT.
    require_mode!(mem, RegisterMode::WP);
    let (area, uffd) = try_skip!(wp_area(mem, 1, Features::empty()));
    uffd.writeprotect(area.addr(), area.len(), WP).unwrap();
    let r = Faulter::call({
        let a = area.page(0) + 8;
        move || kernel_zero_fill(a)
    });
    assert_eq!(r.settle(), State::Done);
    assert_eq!(r.join(), 255 - Errno::EFAULT as u8);
    assert_no_event(&uffd);
    assert_eq!(area.read_page(0), vec![0x11; area.page_size()], "nothing was written");
    assert!(wp_bit(area.page(0)));
}

#[apply(all_mem)]
fn kernel_write_to_protected_page_waits_on_full_uffd(#[case] mem: MemType) {
    // Without UFFD_USER_MODE_ONLY (needs privilege) the kernel's own write
    // is a WP fault like any other, and waits for the monitor.
    require_mode!(mem, RegisterMode::WP);
    require!(
        caps::caps().features_full.is_some(),
        "cannot open a uffd without UFFD_USER_MODE_ONLY here"
    );
    let area = try_area!(Area::new(mem, 1));
    area.populate(0x11);
    let flags = OpenFlags::O_CLOEXEC | OpenFlags::O_NONBLOCK;
    let uffd = try_skip!(testing::open_uffd_flags(
        flags,
        caps::features_for(mem, RegisterMode::WP)
    ));
    uffd.register(area.addr(), area.len(), RegisterMode::WP).unwrap();
    uffd.writeprotect(area.addr(), area.len(), WP).unwrap();
    let r = Faulter::call({
        let a = area.page(0) + 8;
        move || kernel_zero_fill(a)
    });
    // A kernel fault carries no FAULT_FLAG_USER, but the message is the same.
    assert_eq!(
        next_pagefault(&uffd),
        (PagefaultFlags::WP | PagefaultFlags::WRITE, area.page(0))
    );
    assert_eq!(r.settle(), State::Blocked);
    uffd.writeprotect(area.addr(), area.len(), UNPROTECT).unwrap();
    assert_eq!(r.join(), 16);
    let mut want = vec![0x11; area.page_size()];
    want[8..24].fill(0);
    assert_eq!(area.read_page(0), want);
}

/// MADV_DONTNEED of `[addr, addr+len)` on a thread: with EVENT_REMOVE it
/// parks in userfaultfd_remove, mmap_changing raised, until the REMOVE
/// message is read. Returns 0 on success, 1 on failure.
fn dontneed_on_thread(addr: usize, len: usize) -> Faulter {
    Faulter::call(move || {
        // SAFETY: the range lies in the caller's area.
        let r = unsafe { libc::madvise(addr as *mut libc::c_void, len, libc::MADV_DONTNEED) };
        u8::from(r != 0)
    })
}

#[apply(selftest_mem)]
fn writeprotect_while_mmap_changing_fails_eagain(#[case] mem: MemType) {
    require_mode!(mem, RegisterMode::WP);
    require_features!(Features::EVENT_REMOVE);
    let (area, uffd) = try_skip!(wp_area(mem, 2, Features::EVENT_REMOVE));
    let ps = area.page_size();
    let t = dontneed_on_thread(area.page(1), ps);
    // The REMOVE message is queued after mmap_changing went up.
    assert!(
        uffd.poll(Some(std::time::Duration::from_secs(20))).unwrap(),
        "no REMOVE message"
    );
    assert_eq!(t.settle(), State::Blocked);
    assert_eq!(uffd.writeprotect(area.addr(), area.len(), WP), Err(Errno::EAGAIN));
    assert_eq!(uffd.writeprotect(area.page(0), ps, UNPROTECT), Err(Errno::EAGAIN));
    assert!(!wp_bit(area.page(0)), "a refused call protected the page");
    match uffd.read_event(Some(std::time::Duration::ZERO)).unwrap() {
        Some(Event::Remove { start, end }) => {
            assert_eq!((start as usize, end as usize), (area.page(1), area.page(1) + ps))
        }
        other => panic!("expected UFFD_EVENT_REMOVE, got {other:?}"),
    }
    assert_eq!(t.join(), 0, "MADV_DONTNEED failed");
    // Once the monitor has seen the change the ioctl works again.
    uffd.writeprotect(area.page(0), ps, WP).unwrap();
    assert!(wp_bit(area.page(0)));
}

#[apply(all_mem)]
fn wp_fault_reports_faulting_thread_with_thread_id(#[case] mem: MemType) {
    require_mode!(mem, RegisterMode::WP);
    require_features!(Features::THREAD_ID);
    let (area, uffd) = try_skip!(wp_area(mem, 1, Features::THREAD_ID));
    uffd.writeprotect(area.addr(), area.len(), WP).unwrap();
    let w = Faulter::write(area.page(0), 0x13);
    match uffd.read_event(Some(std::time::Duration::from_secs(20))).unwrap() {
        Some(Event::Pagefault { flags, address, ptid }) => {
            assert_eq!(flags, PagefaultFlags::WP | PagefaultFlags::WRITE);
            assert_eq!(address as usize, area.page(0));
            assert_eq!(ptid as i32, w.tid(), "ptid names the faulting thread");
        }
        other => panic!("expected a PAGEFAULT, got {other:?}"),
    }
    uffd.writeprotect(area.addr(), area.len(), UNPROTECT).unwrap();
    assert_eq!(w.join(), 0x13);
}

#[apply(all_mem)]
fn mprotect_round_trip_keeps_protection(#[case] mem: MemType) {
    // change_protection must carry the uffd-wp bit through a plain
    // mprotect: dropping it would let a write past the monitor.
    require_mode!(mem, RegisterMode::WP);
    let (area, uffd) = try_skip!(wp_area(mem, 2, Features::empty()));
    uffd.writeprotect(area.addr(), area.len(), WP).unwrap();
    for prot in [libc::PROT_READ, libc::PROT_READ | libc::PROT_WRITE] {
        // SAFETY: our own area.
        let r = unsafe { libc::mprotect(area.addr() as *mut libc::c_void, area.len(), prot) };
        assert_eq!(r, 0, "mprotect({prot:#x}): {}", Errno::last());
        assert!(
            wp_bit(area.page(0)) && wp_bit(area.page(1)),
            "after mprotect({prot:#x})"
        );
    }
    let w = Faulter::write(area.page(1), 0x71);
    assert_eq!(
        next_pagefault(&uffd),
        (PagefaultFlags::WP | PagefaultFlags::WRITE, area.page(1))
    );
    assert_eq!(w.settle(), State::Blocked);
    uffd.writeprotect(area.page(1), area.page_size(), UNPROTECT).unwrap();
    assert_eq!(w.join(), 0x71);
    assert!(wp_bit(area.page(0)));
}

#[rstest]
#[case::shmem(MemType::Shmem)]
#[case::hugetlb(MemType::Hugetlb)]
fn write_through_unregistered_view_bypasses_protection(#[case] mem: MemType) {
    // Protection lives in the registered view's page tables, not in the
    // page: another shared view writes freely and the protected view sees it.
    require_mode!(mem, RegisterMode::WP);
    let area = match Area::with_alias(mem, 1) {
        Ok(a) => a,
        Err(mem::Unavailable::Skip(r)) => skip!("{r}"),
        Err(mem::Unavailable::Error(e)) => panic!("cannot set up the area: {e}"),
    };
    area.populate(0x11);
    let uffd = try_skip!(testing::open_uffd(caps::features_for(mem, RegisterMode::WP)));
    uffd.register(area.addr(), area.len(), RegisterMode::WP).unwrap();
    uffd.writeprotect(area.addr(), area.len(), WP).unwrap();
    let w = Faulter::write(area.alias_page(0) + 5, 0x72);
    assert_eq!(w.settle(), State::Done);
    assert_eq!(w.join(), 0x72);
    assert_no_event(&uffd);
    assert_eq!(testing::read_byte(area.page(0) + 5), 0x72);
    assert!(wp_bit(area.page(0)), "the registered view stays protected");
    assert!(!wp_bit(area.alias_page(0)));
    let w = Faulter::write(area.page(0), 0x73);
    assert_eq!(
        next_pagefault(&uffd),
        (PagefaultFlags::WP | PagefaultFlags::WRITE, area.page(0))
    );
    uffd.writeprotect(area.addr(), area.len(), UNPROTECT).unwrap();
    assert_eq!(w.join(), 0x73);
}

#[apply(selftest_mem)]
fn writeprotect_acts_on_a_range_registered_by_another_uffd_of_the_mm(#[case] mem: MemType) {
    // mwriteprotect_range asks only whether the VMA is registered WP, not
    // with which context: a second uffd of the same process protects the
    // first one's range, and the fault goes to the registering uffd.
    // (Pinned here as the kernel behaves; a fix adding a context check
    // would show up as this case failing with ENOENT.)
    require_mode!(mem, RegisterMode::WP);
    let (area, owner) = try_skip!(wp_area(mem, 1, Features::empty()));
    let other = try_skip!(testing::open_uffd(caps::features_for(mem, RegisterMode::WP)));
    other.writeprotect(area.addr(), area.len(), WP).unwrap();
    assert!(wp_bit(area.page(0)));
    let w = Faulter::write(area.page(0), 0x74);
    assert_eq!(
        next_pagefault(&owner),
        (PagefaultFlags::WP | PagefaultFlags::WRITE, area.page(0))
    );
    assert_no_event(&other);
    assert_eq!(w.settle(), State::Blocked);
    // Un-protecting through the other uffd clears the bit but wakes only
    // that context's waiters: the writer sleeps on the owner's queue.
    other.writeprotect(area.addr(), area.len(), UNPROTECT).unwrap();
    assert!(!wp_bit(area.page(0)));
    assert!(
        w.is_blocked() && !w.is_done(),
        "woken through a context it does not wait on"
    );
    owner.wake(area.addr(), area.len()).unwrap();
    assert_eq!(w.join(), 0x74);
}

#[apply(all_mem)]
fn copy_fills_a_page_holding_only_a_wp_marker(#[case] mem: MemType) {
    // With MISSING|WP a protected but unpopulated page holds a PTE marker;
    // an access to it is still a MISSING fault, and COPY may overwrite the
    // marker (pte_none_mostly): the protection goes unless MODE_WP says so.
    let mode = RegisterMode::MISSING | RegisterMode::WP;
    require_mode!(mem, mode);
    let mut features = caps::features_for(mem, RegisterMode::WP);
    if mem.is_anon() {
        require_features!(Features::WP_UNPOPULATED);
        features |= Features::WP_UNPOPULATED;
    }
    let area = try_area!(Area::new(mem, 2));
    let ps = area.page_size();
    let uffd = try_skip!(testing::open_uffd(features));
    uffd.register(area.addr(), area.len(), mode).unwrap();
    uffd.writeprotect(area.addr(), 2 * ps, WP).unwrap();
    for i in 0..2 {
        let e = pagemap::entry(area.page(i)).unwrap();
        assert_eq!(e & (PM_UFFD_WP | PM_PRESENT), PM_UFFD_WP, "page {i} marker: {e:#x}");
    }
    let r = Faulter::read(area.page(0) + 3);
    assert_eq!(next_pagefault(&uffd), (PagefaultFlags::empty(), area.page(0)));
    let src = testing::Buf::filled(ps, 0x5e);
    assert_eq!(
        uffd.copy(area.page(0), src.addr(), ps, CopyMode::empty()),
        Ok(ps as i64)
    );
    assert_eq!(r.join(), 0x5e);
    assert!(
        !wp_bit(area.page(0)),
        "COPY without MODE_WP drops the marker's protection"
    );
    let w = Faulter::write(area.page(0), 0x5f);
    assert_eq!(w.settle(), State::Done);
    assert_eq!(w.join(), 0x5f);
    // MODE_WP keeps the page protected.
    assert_eq!(uffd.copy(area.page(1), src.addr(), ps, CopyMode::WP), Ok(ps as i64));
    let e = pagemap::entry(area.page(1)).unwrap();
    assert_eq!(e & (PM_UFFD_WP | PM_PRESENT), PM_UFFD_WP | PM_PRESENT, "{e:#x}");
    assert_no_event(&uffd);
}

#[apply(all_mem)]
fn wp_marker_pagemap_encoding(#[case] mem: MemType) {
    // How /proc/pid/pagemap shows a WP marker on an unpopulated page:
    // a PTE marker is a swap-format entry, so pte_to_pagemap_entry adds
    // PM_SWAP; pagemap_hugetlb_range reports only PM_UFFD_WP. No page
    // behind either, so never PM_PRESENT or PM_FILE.
    require_mode!(mem, RegisterMode::WP);
    let mut features = caps::features_for(mem, RegisterMode::WP);
    if mem.is_anon() {
        require_features!(Features::WP_UNPOPULATED);
        features |= Features::WP_UNPOPULATED;
    }
    let area = try_area!(Area::new(mem, 1));
    let uffd = try_skip!(testing::open_uffd(features));
    uffd.register(area.addr(), area.len(), RegisterMode::WP).unwrap();
    uffd.writeprotect(area.addr(), area.len(), WP).unwrap();
    let mask = PM_UFFD_WP | pagemap::PM_SWAP | PM_PRESENT | pagemap::PM_FILE;
    let want = if mem.is_hugetlb() {
        PM_UFFD_WP
    } else {
        PM_UFFD_WP | pagemap::PM_SWAP
    };
    let e = pagemap::entry(area.page(0)).unwrap();
    assert_eq!(e & mask, want, "entry {e:#x}");
}

#[test]
#[serial_test::serial(thp)]
fn protect_one_page_of_a_pmd_mapped_shmem_folio() {
    // A file PMD cannot carry uffd-wp: protecting part of it splits the
    // mapping, and only the protected page keeps (a marker with) the bit.
    require_mode!(MemType::Shmem, RegisterMode::WP);
    require_root!("sets the anon shmem THP policy");
    let Some(pmd) = mem::pmd_size() else {
        skip!("kernel has no THP")
    };
    let knob = format!(
        "/sys/kernel/mm/transparent_hugepage/hugepages-{}kB/shmem_enabled",
        pmd / 1024
    );
    require!(caps::sysfs_choice(&knob).is_some(), "no {knob}");
    let _knob = Knob::set(knob, "always").unwrap_or_else(|e| panic!("set shmem_enabled: {e}"));
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
    require!(
        smaps_field(a, "ShmemPmdMapped") == Some(pmd),
        "shmem did not map a PMD folio (memory fragmented?)"
    );
    let uffd = try_skip!(testing::open_uffd(caps::features_for(MemType::Shmem, RegisterMode::WP)));
    uffd.register(a, pmd, RegisterMode::WP).unwrap();
    uffd.writeprotect(a + 7 * ps, ps, WP).unwrap();
    assert_eq!(smaps_field(a, "ShmemPmdMapped"), Some(0), "the PMD mapping was split");
    let wp: Vec<usize> = (0..pmd / ps).filter(|i| wp_bit(a + i * ps)).collect();
    assert_eq!(wp, [7]);
    let w = Faulter::write(a + 8 * ps, 0x22);
    assert_eq!(w.settle(), State::Done);
    assert_eq!(w.join(), 0x22);
    let w = Faulter::write(a + 7 * ps + 1, 0x23);
    assert_eq!(
        next_pagefault(&uffd),
        (PagefaultFlags::WP | PagefaultFlags::WRITE, a + 7 * ps)
    );
    assert_eq!(w.settle(), State::Blocked);
    uffd.writeprotect(a + 7 * ps, ps, UNPROTECT).unwrap();
    assert_eq!(w.join(), 0x23);
    assert_eq!(testing::read_byte(a + 7 * ps), 0x11, "the cache page kept its data");
    assert_eq!(testing::read_byte(a + 7 * ps + 1), 0x23);
    assert_no_event(&uffd);
}
