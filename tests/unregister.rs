//! UFFDIO_UNREGISTER: argument checks, what it does to the VMAs, and which
//! blocked faults it releases.
//!
//! Expectations come from fs/userfaultfd.c `userfaultfd_unregister` and
//! mm/userfaultfd.c `userfaultfd_clear_vma` (6.12): the range is checked
//! like REGISTER's (validate_range, at least one VMA, hugetlb start
//! alignment, every VMA uffd-capable), VMAs of any uffd are cleared, faults
//! pending in MISSING VMAs are woken, WP PTEs are un-protected.

mod common;
use common::*;
use faulter::{Faulter, State, assert_no_event, next_pagefault};
use nix::errno::Errno;
use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};
use std::num::NonZeroUsize;
use testing::smaps;

const MISSING: RegisterMode = RegisterMode::MISSING;
const WP: RegisterMode = RegisterMode::WP;
const MINOR: RegisterMode = RegisterMode::MINOR;

/// An area of `npages` registered in `mode` on a fresh uffd with `features`.
fn registered(mem: MemType, npages: usize, mode: RegisterMode, features: Features) -> Result<(Area, Uffd), String> {
    testing::register_support(mem, mode)?;
    let area = testing::area(mem, npages)?;
    let uffd = testing::open_uffd(features)?;
    uffd.register(area.addr(), area.len(), mode).expect("UFFDIO_REGISTER");
    Ok((area, uffd))
}

#[apply(all_mem)]
fn unregister_clears_the_modes_and_faults_stop(#[case] mem: MemType) {
    require_mode!(mem, MISSING);
    let (area, uffd) = try_skip!(registered(mem, 2, MISSING, Features::empty()));
    assert_eq!(smaps::uffd_modes(area.addr()), MISSING);
    uffd.unregister(area.addr(), area.len()).expect("UFFDIO_UNREGISTER");
    assert_eq!(smaps::uffd_modes(area.addr()), RegisterMode::empty());
    // A first touch is now an ordinary fault: zero fill, no message.
    let r = Faulter::read(area.page(1) + 3);
    assert_eq!(r.settle(), State::Done);
    assert_eq!(r.join(), 0);
    assert_no_event(&uffd);
}

#[apply(all_mem)]
fn unregister_subrange_keeps_the_rest_registered(#[case] mem: MemType) {
    require_mode!(mem, MISSING);
    let (area, uffd) = try_skip!(registered(mem, 4, MISSING, Features::empty()));
    let ps = area.page_size();
    uffd.unregister(area.page(1), 2 * ps).unwrap();
    assert_eq!(smaps::uffd_modes(area.page(0)), MISSING);
    assert_eq!(smaps::uffd_modes(area.page(1)), RegisterMode::empty());
    assert_eq!(smaps::uffd_modes(area.page(2)), RegisterMode::empty());
    assert_eq!(smaps::uffd_modes(area.page(3)), MISSING);
    let v = smaps::vma(area.page(1)).unwrap();
    assert_eq!((v.start, v.end), (area.page(1), area.page(3)));
    // Page 3 still faults to the uffd.
    let r = Faulter::read(area.page(3));
    assert_eq!(next_pagefault(&uffd).1, area.page(3));
    let src = testing::Buf::filled(ps, 0x42);
    uffd.copy(area.page(3), src.addr(), ps, CopyMode::empty()).unwrap();
    assert_eq!(r.join(), 0x42);
}

#[apply(all_mem)]
fn unregister_of_unregistered_range_succeeds(#[case] mem: MemType) {
    require_mode!(mem, MISSING);
    let area = try_area!(Area::new(mem, 2));
    let uffd = try_skip!(testing::open_uffd(Features::empty()));
    // A VMA with no uffd context is skipped, not an error.
    assert_eq!(uffd.unregister(area.addr(), area.len()), Ok(()));
    uffd.register(area.addr(), area.len(), MISSING).unwrap();
    uffd.unregister(area.addr(), area.len()).unwrap();
    assert_eq!(uffd.unregister(area.addr(), area.len()), Ok(()), "second unregister");
}

#[apply(all_mem)]
fn unregister_misaligned_start_fails_einval(#[case] mem: MemType) {
    require_mode!(mem, MISSING);
    let (area, uffd) = try_skip!(registered(mem, 2, MISSING, Features::empty()));
    let bp = mem::base_page_size();
    for off in [1, 8, bp / 2] {
        assert_eq!(
            uffd.unregister(area.addr() + off, bp),
            Err(Errno::EINVAL),
            "start + {off}"
        );
    }
    assert_eq!(smaps::uffd_modes(area.addr()), MISSING);
}

#[apply(all_mem)]
fn unregister_misaligned_or_zero_len_fails_einval(#[case] mem: MemType) {
    require_mode!(mem, MISSING);
    let (area, uffd) = try_skip!(registered(mem, 2, MISSING, Features::empty()));
    let bp = mem::base_page_size();
    for len in [0, 1, bp - 1, bp + 1] {
        assert_eq!(uffd.unregister(area.addr(), len), Err(Errno::EINVAL), "len {len}");
    }
    assert_eq!(smaps::uffd_modes(area.addr()), MISSING);
}

#[apply(all_mem)]
fn unregister_wrapping_range_fails_einval(#[case] mem: MemType) {
    require_mode!(mem, MISSING);
    let (area, uffd) = try_skip!(registered(mem, 1, MISSING, Features::empty()));
    let bp = mem::base_page_size();
    for len in [0usize.wrapping_sub(area.addr()), 0usize.wrapping_sub(area.addr()) + bp] {
        assert_eq!(uffd.unregister(area.addr(), len), Err(Errno::EINVAL), "len {len:#x}");
    }
    assert_eq!(smaps::uffd_modes(area.addr()), MISSING);
}

#[test]
fn unregister_beyond_task_size_fails_einval() {
    let uffd = try_skip!(testing::open_uffd(Features::empty()));
    let bp = mem::base_page_size();
    assert_eq!(uffd.unregister(1 << 63, bp), Err(Errno::EINVAL));
    assert_eq!(uffd.unregister(usize::MAX - bp + 1, bp), Err(Errno::EINVAL));
}

#[apply(all_mem)]
fn unregister_range_without_vma_fails_einval(#[case] mem: MemType) {
    require_mode!(mem, MISSING);
    let ps = try_skip!(mem.page_size().ok_or("no huge page size"));
    let addr = testing::holes::far_range();
    let uffd = try_skip!(testing::open_uffd(Features::empty()));
    assert_eq!(uffd.unregister(addr, 2 * ps), Err(Errno::EINVAL));
}

#[apply(all_mem)]
fn unregister_range_with_hole_clears_the_mapped_parts(#[case] mem: MemType) {
    require_mode!(mem, MISSING);
    let mut area = try_area!(Area::new(mem, 3));
    // Far away first: a hole among the test's neighbours would not stay one.
    // (mremap of a registered VMA without EVENT_REMAP drops its registration.)
    testing::holes::relocate(&mut area);
    let uffd = try_skip!(testing::open_uffd(Features::empty()));
    uffd.register(area.addr(), area.len(), MISSING).unwrap();
    assert_eq!(smaps::uffd_modes(area.page(2)), MISSING);
    // SAFETY: punching a hole into our own area.
    unsafe { munmap(ptr(area.page(1)), area.page_size()) }.unwrap();
    assert_eq!(uffd.unregister(area.addr(), area.len()), Ok(()));
    assert_eq!(smaps::uffd_modes(area.page(0)), RegisterMode::empty());
    assert_eq!(smaps::uffd_modes(area.page(2)), RegisterMode::empty());
}

#[apply(hugetlb_mem)]
fn unregister_hugetlb_start_not_huge_aligned_fails_einval(#[case] mem: MemType) {
    require_mode!(mem, MISSING);
    let (area, uffd) = try_skip!(registered(mem, 2, MISSING, Features::empty()));
    let bp = mem::base_page_size();
    assert_eq!(uffd.unregister(area.addr() + bp, area.page_size()), Err(Errno::EINVAL));
    assert_eq!(smaps::uffd_modes(area.addr()), MISSING);
}

#[apply(hugetlb_mem)]
fn unregister_hugetlb_end_not_huge_aligned_fails_einval(#[case] mem: MemType) {
    require_mode!(mem, MISSING);
    let (area, uffd) = try_skip!(registered(mem, 2, MISSING, Features::empty()));
    let bp = mem::base_page_size();
    // Unlike REGISTER, the end is not checked up front; the VMA split at a
    // non-huge boundary fails (hugetlb_vm_op_split) and nothing changes.
    assert_eq!(uffd.unregister(area.addr(), area.page_size() + bp), Err(Errno::EINVAL));
    assert_eq!(smaps::uffd_modes(area.addr()), MISSING);
    assert_eq!(smaps::uffd_modes(area.page(1)), MISSING);
}

#[apply(all_mem)]
fn unregister_span_with_an_unsupported_vma_fails_einval(#[case] mem: MemType) {
    require_mode!(mem, MISSING);
    let (area, uffd) = try_skip!(registered(mem, 2, MISSING, Features::empty()));
    let ps = area.page_size();
    let f = try_skip!(testing::files::non_shmem_file(ps));
    // SAFETY: replacing page 1 of our own area; the area's drop unmaps it.
    unsafe {
        mmap(
            NonZeroUsize::new(area.page(1)),
            NonZeroUsize::new(ps).unwrap(),
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_SHARED | MapFlags::MAP_FIXED,
            &f,
            0,
        )
    }
    .expect("mmap file over page 1");
    // Every VMA is checked before any is cleared.
    assert_eq!(uffd.unregister(area.addr(), area.len()), Err(Errno::EINVAL));
    assert_eq!(smaps::uffd_modes(area.page(0)), MISSING);
}

#[apply(all_mem)]
fn unregister_through_another_uffd_fails_einval(#[case] mem: MemType) {
    require_mode!(mem, MISSING);
    let (area, owner) = try_skip!(registered(mem, 1, MISSING, Features::empty()));
    let other = try_skip!(testing::open_uffd(Features::empty()));
    let ps = area.page_size();
    // "userfaultfd: prevent unregistering VMAs through a different
    // userfaultfd" (Tal Zussman, 6.17, not for -stable): a foreign VMA is
    // refused like an incompatible one, and the owner's range stays whole.
    // Kernels before it let any uffd of the mm unregister any VMA
    // (known-issues.toml).
    assert_eq!(other.unregister(area.addr(), area.len()), Err(Errno::EINVAL));
    assert_eq!(smaps::uffd_modes(area.addr()), MISSING);
    let r = Faulter::read(area.page(0));
    assert_eq!(next_pagefault(&owner).1, area.page(0));
    assert_no_event(&other);
    let src = testing::Buf::filled(ps, 0x1d);
    owner.copy(area.page(0), src.addr(), ps, CopyMode::empty()).unwrap();
    assert_eq!(r.join(), 0x1d);
}

#[apply(all_mem)]
fn unregister_wakes_blocked_missing_fault(#[case] mem: MemType) {
    require_mode!(mem, MISSING);
    let area = if mem.has_file() {
        try_area!(Area::with_alias(mem, 1))
    } else {
        try_area!(Area::new(mem, 1))
    };
    let uffd = try_skip!(testing::open_uffd(Features::empty()));
    uffd.register(area.addr(), area.len(), MISSING).unwrap();
    let ps = area.page_size();
    let r = Faulter::read(area.page(0) + 5);
    assert_eq!(next_pagefault(&uffd).1, area.page(0));
    assert_eq!(r.settle(), State::Blocked);
    let want = if let Some(alias) = area.alias() {
        // Fill the file behind the blocked fault: the retried fault maps it.
        // SAFETY: the alias view is writable and one page long.
        unsafe { std::ptr::write_bytes(alias as *mut u8, 0x6d, ps) };
        0x6d
    } else {
        0
    };
    // The fault sits in a MISSING VMA: unregister wakes it, and the retry
    // is an ordinary fault.
    uffd.unregister(area.addr(), area.len()).unwrap();
    assert_eq!(r.join(), want);
    assert_eq!(area.read_page(0), vec![want; ps]);
    assert_no_event(&uffd);
}

#[apply(file_mem)]
fn unregister_leaves_blocked_minor_fault_to_wake(#[case] mem: MemType) {
    require_mode!(mem, MINOR);
    let area = try_area!(Area::with_alias(mem, 1));
    let uffd = try_skip!(testing::open_uffd(Features::empty()));
    let ps = area.page_size();
    fill_alias_page(&area, 0, 0x4e);
    uffd.register(area.addr(), area.len(), MINOR).unwrap();
    let r = Faulter::read(area.page(0) + 1);
    assert_eq!(next_pagefault(&uffd), (PagefaultFlags::MINOR, area.page(0)));
    assert_eq!(r.settle(), State::Blocked);
    // Only faults in MISSING VMAs are woken by unregister.
    uffd.unregister(area.addr(), area.len()).unwrap();
    assert_eq!(smaps::uffd_modes(area.addr()), RegisterMode::empty());
    assert_asleep_until_wake(&uffd, r, area.page(0), ps, 0x4e, "unregister woke a MINOR fault");
    assert_no_event(&uffd);
}

#[apply(all_mem)]
fn unregister_unprotects_but_leaves_blocked_wp_fault_to_wake(#[case] mem: MemType) {
    require_mode!(mem, WP);
    let feats = if mem.is_anon() {
        Features::PAGEFAULT_FLAG_WP
    } else {
        Features::PAGEFAULT_FLAG_WP | Features::WP_HUGETLBFS_SHMEM
    };
    testing::register_support(mem, WP).unwrap();
    let area = try_area!(Area::new(mem, 1));
    area.populate(0x12);
    let uffd = try_skip!(testing::open_uffd(feats));
    uffd.register(area.addr(), area.len(), WP).unwrap();
    let ps = area.page_size();
    uffd.writeprotect(area.addr(), ps, WriteprotectMode::WP).unwrap();
    let w = blocked_wp_writer(&uffd, area.page(0), 2, 0x34);
    uffd.unregister(area.addr(), area.len()).unwrap();
    // userfaultfd_clear_vma resets the WP bits, but only MISSING VMAs get a wake.
    assert_eq!(pagemap::entry(area.page(0)).unwrap() & pagemap::PM_UFFD_WP, 0);
    assert_asleep_until_wake(&uffd, w, area.page(0), ps, 0x34, "unregister woke a WP fault");
    assert_eq!(testing::read_byte(area.page(0) + 2), 0x34);
    assert_no_event(&uffd);
}

#[apply(all_mem)]
fn unregister_then_another_uffd_may_register(#[case] mem: MemType) {
    require_mode!(mem, MISSING);
    let (area, a) = try_skip!(registered(mem, 1, MISSING, Features::empty()));
    let b = try_skip!(testing::open_uffd(Features::empty()));
    assert_eq!(
        b.register(area.addr(), area.len(), MISSING).map(drop),
        Err(Errno::EBUSY)
    );
    a.unregister(area.addr(), area.len()).unwrap();
    b.register(area.addr(), area.len(), MISSING)
        .expect("register after the owner let go");
    // Faults now go to the new owner.
    let r = Faulter::read(area.page(0));
    assert_eq!(next_pagefault(&b).1, area.page(0));
    assert_no_event(&a);
    let ps = area.page_size();
    let src = testing::Buf::filled(ps, 0x2f);
    b.copy(area.page(0), src.addr(), ps, CopyMode::empty()).unwrap();
    assert_eq!(r.join(), 0x2f);
}

#[apply(all_mem)]
fn unregister_wakes_only_faults_inside_its_range(#[case] mem: MemType) {
    require_mode!(mem, MISSING);
    let (area, uffd) = try_skip!(registered(mem, 2, MISSING, Features::empty()));
    let ps = area.page_size();
    let r0 = blocked_reader(&uffd, area.page(0));
    let r1 = blocked_reader(&uffd, area.page(1));
    uffd.unregister(area.page(0), ps).unwrap();
    assert_eq!(r0.join(), 0);
    assert!(
        r1.is_blocked() && !r1.is_done(),
        "unregister woke a fault outside its range"
    );
    let src = testing::Buf::filled(ps, 0x3b);
    uffd.copy(area.page(1), src.addr(), ps, CopyMode::empty()).unwrap();
    assert_eq!(r1.join(), 0x3b);
    assert_no_event(&uffd);
}
