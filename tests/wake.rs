//! UFFDIO_WAKE: argument checks, and which blocked faults a wake releases.
//!
//! Expectations come from fs/userfaultfd.c `userfaultfd_wake` (6.12): only
//! validate_range is checked (no VMA lookup), and `userfaultfd_wake_function`
//! wakes the waiters of this uffd whose message address lies in
//! [start, start + len). A woken fault whose page is still missing faults
//! again and sends a new message.

mod common;
use common::*;
use faulter::{Faulter, State, assert_no_event, next_pagefault};
use nix::errno::Errno;
use std::sync::Arc;

const MISSING: RegisterMode = RegisterMode::MISSING;

fn missing_area(mem: MemType, npages: usize) -> Result<(Area, Arc<Uffd>), String> {
    testing::registered_area(mem, npages, Features::empty(), MISSING, |_| {})
}

fn resolve(uffd: &Uffd, area: &Area, page: usize, byte: u8) {
    let ps = area.page_size();
    let src = testing::Buf::filled(ps, byte);
    assert_eq!(
        uffd.copy(area.page(page), src.addr(), ps, CopyMode::DONTWAKE),
        Ok(ps as i64)
    );
}

#[test]
fn wake_misaligned_start_fails_einval() {
    let uffd = try_skip!(testing::open_uffd(Features::empty()));
    let bp = mem::base_page_size();
    let a = try_area!(Area::new(MemType::Anon, 2));
    for off in [1, 8, bp / 2] {
        assert_eq!(uffd.wake(a.addr() + off, bp), Err(Errno::EINVAL), "start + {off}");
    }
}

#[test]
fn wake_misaligned_or_zero_len_fails_einval() {
    let uffd = try_skip!(testing::open_uffd(Features::empty()));
    let bp = mem::base_page_size();
    let a = try_area!(Area::new(MemType::Anon, 2));
    // len 0 would mean "wake all" inside the kernel, so it is refused.
    for len in [0, 1, bp - 1, bp + 1] {
        assert_eq!(uffd.wake(a.addr(), len), Err(Errno::EINVAL), "len {len}");
    }
}

#[test]
fn wake_wrapping_or_out_of_range_fails_einval() {
    let uffd = try_skip!(testing::open_uffd(Features::empty()));
    let bp = mem::base_page_size();
    let a = try_area!(Area::new(MemType::Anon, 1));
    assert_eq!(uffd.wake(a.addr(), 0usize.wrapping_sub(a.addr())), Err(Errno::EINVAL));
    assert_eq!(uffd.wake(1 << 63, bp), Err(Errno::EINVAL));
    assert_eq!(uffd.wake(usize::MAX - bp + 1, bp), Err(Errno::EINVAL));
}

#[test]
fn wake_before_handshake_fails_einval() {
    if let Err(e) = caps::require_open(testing::default_flags()) {
        skip!("{e}");
    }
    let u = Uffd::open(testing::default_flags()).expect("userfaultfd(2)");
    let a = try_area!(Area::new(MemType::Anon, 1));
    assert_eq!(u.wake(a.addr(), a.len()), Err(Errno::EINVAL));
}

#[test]
fn wake_of_unmapped_range_succeeds() {
    let uffd = try_skip!(testing::open_uffd(Features::empty()));
    let a = try_area!(Area::new(MemType::Anon, 4));
    let (addr, len) = (a.addr(), a.len());
    drop(a);
    // No VMA lookup: waking nothing anywhere is fine.
    assert_eq!(uffd.wake(addr, len), Ok(()));
}

#[apply(all_mem)]
fn wake_with_nothing_blocked_succeeds(#[case] mem: MemType) {
    require_mode!(mem, MISSING);
    let (area, uffd) = try_skip!(missing_area(mem, 2));
    assert_eq!(uffd.wake(area.addr(), area.len()), Ok(()));
    // Also on memory this uffd never registered.
    let other = try_area!(Area::new(mem, 1));
    assert_eq!(uffd.wake(other.addr(), other.len()), Ok(()));
    assert_no_event(&uffd);
}

#[apply(all_mem)]
fn wake_without_resolving_delivers_the_fault_again(#[case] mem: MemType) {
    require_mode!(mem, MISSING);
    let (area, uffd) = try_skip!(missing_area(mem, 1));
    let ps = area.page_size();
    let r = Faulter::read(area.page(0) + 9);
    assert_eq!(next_pagefault(&uffd), (PagefaultFlags::empty(), area.page(0)));
    assert_eq!(r.settle(), State::Blocked);
    uffd.wake(area.page(0), ps).unwrap();
    // The retried access finds the page still missing: a second message.
    assert_eq!(next_pagefault(&uffd), (PagefaultFlags::empty(), area.page(0)));
    assert_eq!(r.settle(), State::Blocked);
    resolve(&uffd, &area, 0, 0x61);
    uffd.wake(area.page(0), ps).unwrap();
    assert_eq!(r.join(), 0x61);
    assert_no_event(&uffd);
}

#[apply(all_mem)]
fn wake_outside_the_fault_address_leaves_it_blocked(#[case] mem: MemType) {
    require_mode!(mem, MISSING);
    let (area, uffd) = try_skip!(missing_area(mem, 3));
    let ps = area.page_size();
    let r = blocked_reader(&uffd, area.page(1));
    resolve(&uffd, &area, 1, 0x62);
    // Neighbouring ranges, ending right at and starting right after the page.
    uffd.wake(area.page(0), ps).unwrap();
    uffd.wake(area.page(2), ps).unwrap();
    assert_no_event(&uffd);
    // A range that merely contains the address wakes it.
    let why = "a wake outside the page released it";
    assert_asleep_until_wake(&uffd, r, area.addr(), area.len(), 0x62, why);
}

#[apply(all_mem)]
fn wake_one_page_releases_only_that_fault(#[case] mem: MemType) {
    require_mode!(mem, MISSING);
    let (area, uffd) = try_skip!(missing_area(mem, 2));
    let ps = area.page_size();
    let r0 = Faulter::read(area.page(0));
    next_pagefault(&uffd);
    let r1 = Faulter::read(area.page(1));
    next_pagefault(&uffd);
    resolve(&uffd, &area, 0, 0x63);
    resolve(&uffd, &area, 1, 0x64);
    assert_eq!(r0.settle(), State::Blocked);
    assert_eq!(r1.settle(), State::Blocked);
    uffd.wake(area.page(1), ps).unwrap();
    assert_eq!(r1.join(), 0x64);
    assert_asleep_until_wake(&uffd, r0, area.page(0), ps, 0x63, "the wake of page 1 released page 0");
}

#[apply(all_mem)]
fn wake_through_another_uffd_leaves_the_fault_blocked(#[case] mem: MemType) {
    require_mode!(mem, MISSING);
    let (area, uffd) = try_skip!(missing_area(mem, 1));
    let other = try_skip!(testing::open_uffd(Features::empty()));
    let ps = area.page_size();
    let r = Faulter::read(area.page(0));
    next_pagefault(&uffd);
    resolve(&uffd, &area, 0, 0x65);
    assert_eq!(r.settle(), State::Blocked);
    // The waiter is queued on its own uffd's wait queue.
    other.wake(area.page(0), ps).unwrap();
    assert_asleep_until_wake(
        &uffd,
        r,
        area.page(0),
        ps,
        0x65,
        "another uffd's WAKE released the fault",
    );
}

#[apply(all_mem)]
fn wake_with_exact_address_matches_the_exact_byte(#[case] mem: MemType) {
    require_mode!(mem, MISSING);
    require_features!(Features::EXACT_ADDRESS);
    let bp = mem::base_page_size();
    // Room for a fault in the second base page (one huge page is enough).
    let area = try_area!(Area::new(mem, if mem.is_hugetlb() { 1 } else { 2 }));
    let uffd = try_skip!(testing::open_uffd(Features::EXACT_ADDRESS));
    uffd.register(area.addr(), area.len(), MISSING).unwrap();
    let target = area.addr() + bp + 17;
    let page = (target - area.addr()) / area.page_size();
    let r = Faulter::read(target);
    assert_eq!(next_pagefault(&uffd).1, target);
    resolve(&uffd, &area, page, 0x66);
    assert_eq!(r.settle(), State::Blocked);
    // The wake range is matched against the reported (exact) address: on
    // hugetlb the first base page of the huge page does not contain it.
    uffd.wake(area.addr(), bp).unwrap();
    let why = "wake of the first base page released it";
    assert_asleep_until_wake(&uffd, r, area.addr() + bp, bp, 0x66, why);
}

#[apply(all_mem)]
fn one_wake_releases_every_fault_in_range(#[case] mem: MemType) {
    require_mode!(mem, MISSING);
    let (area, uffd) = try_skip!(missing_area(mem, 3));
    let readers: Vec<_> = (0..3)
        .map(|i| {
            let r = Faulter::read(area.page(i) + i);
            next_pagefault(&uffd);
            r
        })
        .collect();
    for i in 0..3 {
        resolve(&uffd, &area, i, 0x70 + i as u8);
    }
    for r in &readers {
        assert_eq!(r.settle(), State::Blocked);
    }
    uffd.wake(area.addr(), 3 * area.page_size()).unwrap();
    for (i, r) in readers.into_iter().enumerate() {
        assert_eq!(r.join(), 0x70 + i as u8, "reader of page {i}");
    }
    assert_no_event(&uffd);
}

#[apply(hugetlb_mem)]
fn wake_matches_the_huge_page_start_without_exact_address(#[case] mem: MemType) {
    require_mode!(mem, MISSING);
    let (area, uffd) = try_skip!(missing_area(mem, 1));
    let bp = mem::base_page_size();
    let ps = area.page_size();
    // The access is in the second base page; the message says the huge
    // page's start, and the wake range is matched against that.
    let r = Faulter::read(area.addr() + bp + 5);
    assert_eq!(next_pagefault(&uffd).1, area.addr());
    resolve(&uffd, &area, 0, 0x67);
    assert_eq!(r.settle(), State::Blocked);
    uffd.wake(area.addr() + bp, ps - bp).unwrap();
    let why = "a wake past the huge page start released it";
    assert_asleep_until_wake(&uffd, r, area.addr(), bp, 0x67, why);
}
