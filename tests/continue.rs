//! Minor faults and UFFDIO_CONTINUE: a page already in the page cache but
//! not mapped in the registered view faults MINOR; the monitor may change
//! it through a second view and then map it with CONTINUE.
//! Errnos from fs/userfaultfd.c `userfaultfd_continue` and mm/userfaultfd.c
//! `mfill_atomic` / `mfill_atomic_pte_continue` / hugetlb's CONTINUE path.

mod common;
use common::*;
use faulter::{Faulter, State, assert_no_event, next_pagefault};
use nix::errno::Errno;
use pagemap::{PM_PRESENT, PM_UFFD_WP};
use testing::smaps::field as smaps_field;
use uffdtest::testing::knob::{Knob, KnobError};

/// An area with an alias view, the main view registered in `mode`.
fn minor_area(mem: MemType, npages: usize, mode: RegisterMode) -> Result<(Area, Uffd), String> {
    testing::register_support(mem, mode)?;
    let area = Area::with_alias(mem, npages).map_err(|e| match e {
        mem::Unavailable::Skip(r) => r,
        mem::Unavailable::Error(e) => panic!("cannot set up the area: {e}"),
    })?;
    // MINOR's features even for a MISSING-only registration, and WP's when asked.
    let features = caps::features_for(mem, RegisterMode::MINOR | (mode & RegisterMode::WP));
    let uffd = testing::open_uffd(features)?;
    uffd.register(area.addr(), area.len(), mode)
        .unwrap_or_else(|e| panic!("UFFDIO_REGISTER({mode:?}): {e}"));
    Ok((area, uffd))
}

/// Fills page `i` through the alias view: page cache only, no mapping in
/// the registered view.
fn fill_alias(area: &Area, i: usize, f: impl Fn(usize) -> u8) {
    let p = area.alias_page(i) as *mut u8;
    for off in 0..area.page_size() {
        // SAFETY: inside the alias mapping of our area.
        unsafe { *p.add(off) = f(off) };
    }
}

/// Bit-flips page `i` through the alias, as a monitor updating a page
/// before it maps it.
fn flip_alias(area: &Area, i: usize) {
    let p = area.alias_page(i) as *mut u8;
    for off in 0..area.page_size() {
        // SAFETY: inside the alias mapping of our area.
        unsafe { *p.add(off) = !*p.add(off) };
    }
}

fn pattern(i: usize) -> impl Fn(usize) -> u8 {
    move |off| ((i * 31 + off) % 251) as u8
}

fn expected(area: &Area, f: impl Fn(usize) -> u8) -> Vec<u8> {
    (0..area.page_size()).map(f).collect()
}

fn neg(e: Errno) -> i64 {
    Partial::neg(e)
}

#[apply(file_mem)]
fn read_faults_minor_and_continue_maps_the_alias_data(#[case] mem: MemType) {
    require_mode!(mem, RegisterMode::MINOR);
    let (area, uffd) = try_skip!(minor_area(mem, 4, RegisterMode::MINOR));
    let ps = area.page_size();
    for i in 0..4 {
        fill_alias(&area, i, pattern(i));
    }
    // Filling the page cache through the unregistered view is silent.
    assert_no_event(&uffd);
    for i in 0..4 {
        assert!(!pagemap::is_present(area.page(i)), "page {i} mapped before its fault");
        let off = (i * 997) % ps;
        let r = Faulter::read(area.page(i) + off);
        let (flags, addr) = next_pagefault(&uffd);
        assert_eq!(flags, PagefaultFlags::MINOR, "page {i}");
        assert_eq!(addr, area.page(i), "page {i}");
        assert_eq!(r.settle(), State::Blocked);
        flip_alias(&area, i);
        assert_eq!(uffd.r#continue(area.page(i), ps, ContinueMode::empty()), Ok(ps as i64));
        // A second CONTINUE finds the PTE in place.
        assert_eq!(
            uffd.r#continue(area.page(i), ps, ContinueMode::empty()),
            Err(Partial {
                errno: Errno::EEXIST,
                progress: neg(Errno::EEXIST)
            })
        );
        assert_eq!(r.join(), !pattern(i)(off), "page {i}");
        let want = expected(&area, |o| !pattern(i)(o));
        assert_eq!(area.read_page(i), want, "page {i} through the registered view");
        assert_eq!(area.read(area.alias_page(i), ps), want, "page {i} through the alias");
    }
    assert_no_event(&uffd);
}

#[apply(file_mem)]
fn write_faults_minor_write_and_lands_after_continue(#[case] mem: MemType) {
    require_mode!(mem, RegisterMode::MINOR);
    let (area, uffd) = try_skip!(minor_area(mem, 1, RegisterMode::MINOR));
    let ps = area.page_size();
    fill_alias(&area, 0, pattern(0));
    let w = Faulter::write(area.page(0) + 10, 0xfe);
    assert_eq!(
        next_pagefault(&uffd),
        (PagefaultFlags::MINOR | PagefaultFlags::WRITE, area.page(0))
    );
    assert_eq!(w.settle(), State::Blocked);
    assert_eq!(uffd.r#continue(area.page(0), ps, ContinueMode::empty()), Ok(ps as i64));
    assert_eq!(w.join(), 0xfe);
    let mut want = expected(&area, pattern(0));
    want[10] = 0xfe;
    assert_eq!(area.read_page(0), want);
    if mem.is_shared() {
        // A shared view writes the page cache page itself.
        assert_eq!(area.read(area.alias_page(0), ps), want);
    } else {
        // CONTINUE maps the cache page read-only in a private view; the
        // write then breaks CoW and the file keeps the old data.
        assert_eq!(area.read(area.alias_page(0), ps), expected(&area, pattern(0)));
    }
    assert_no_event(&uffd);
}

#[apply(file_mem)]
fn minor_only_registration_lets_uncached_pages_fill_silently(#[case] mem: MemType) {
    // A page missing from the page cache is not a minor fault: without
    // MISSING mode it is allocated and zero-filled as usual.
    require_mode!(mem, RegisterMode::MINOR);
    let (area, uffd) = try_skip!(minor_area(mem, 1, RegisterMode::MINOR));
    let r = Faulter::read(area.page(0) + 3);
    assert_eq!(r.settle(), State::Done);
    assert_eq!(r.join(), 0);
    let w = Faulter::write(area.page(0) + 4, 0x44);
    assert_eq!(w.settle(), State::Done);
    assert_eq!(w.join(), 0x44);
    assert_no_event(&uffd);
    let want_alias = if mem.is_shared() { 0x44 } else { 0 };
    assert_eq!(testing::read_byte(area.alias_page(0) + 4), want_alias);
}

#[apply(file_mem)]
fn missing_and_minor_registration_reports_each_kind(#[case] mem: MemType) {
    let mode = RegisterMode::MISSING | RegisterMode::MINOR;
    require_mode!(mem, mode);
    let (area, uffd) = try_skip!(minor_area(mem, 2, mode));
    let ps = area.page_size();
    fill_alias(&area, 0, pattern(0));
    // Page 0 is cached: a minor fault, mapped with CONTINUE.
    let r0 = Faulter::read(area.page(0) + 1);
    assert_eq!(next_pagefault(&uffd), (PagefaultFlags::MINOR, area.page(0)));
    assert_eq!(uffd.r#continue(area.page(0), ps, ContinueMode::empty()), Ok(ps as i64));
    assert_eq!(r0.join(), pattern(0)(1));
    // Page 1 is not: a missing fault (no flag), filled with COPY.
    let r1 = Faulter::read(area.page(1) + 2);
    assert_eq!(next_pagefault(&uffd), (PagefaultFlags::empty(), area.page(1)));
    assert_eq!(r1.settle(), State::Blocked);
    let src = testing::Buf::filled(ps, 0x6d);
    assert_eq!(
        uffd.copy(area.page(1), src.addr(), ps, CopyMode::empty()),
        Ok(ps as i64)
    );
    assert_eq!(r1.join(), 0x6d);
    assert_eq!(area.read_page(1), vec![0x6d; ps]);
    assert_no_event(&uffd);
}

#[apply(file_mem)]
fn continue_dontwake_leaves_reader_blocked_until_wake(#[case] mem: MemType) {
    require_mode!(mem, RegisterMode::MINOR);
    let (area, uffd) = try_skip!(minor_area(mem, 1, RegisterMode::MINOR));
    let ps = area.page_size();
    fill_alias(&area, 0, |_| 0x61);
    let r = Faulter::read(area.page(0));
    assert_eq!(next_pagefault(&uffd), (PagefaultFlags::MINOR, area.page(0)));
    assert_eq!(r.settle(), State::Blocked);
    assert_eq!(uffd.r#continue(area.page(0), ps, ContinueMode::DONTWAKE), Ok(ps as i64));
    assert!(pagemap::is_present(area.page(0)));
    // Mapped, so a new reader goes straight through, while the first
    // sleeps until woken.
    let r2 = Faulter::read(area.page(0) + 1);
    assert_eq!(r2.settle(), State::Done);
    assert_eq!(r2.join(), 0x61);
    assert!(r.is_blocked() && !r.is_done(), "CONTINUE_MODE_DONTWAKE woke the reader");
    uffd.wake(area.page(0), ps).unwrap();
    assert_eq!(r.join(), 0x61);
    assert_no_event(&uffd);
}

#[apply(file_mem)]
fn continue_maps_several_pages_at_once(#[case] mem: MemType) {
    require_mode!(mem, RegisterMode::MINOR);
    let (area, uffd) = try_skip!(minor_area(mem, 3, RegisterMode::MINOR));
    let ps = area.page_size();
    for i in 0..3 {
        fill_alias(&area, i, pattern(i));
    }
    assert_eq!(
        uffd.r#continue(area.addr(), 3 * ps, ContinueMode::empty()),
        Ok(3 * ps as i64)
    );
    for i in 0..3 {
        assert!(pagemap::is_present(area.page(i)), "page {i}");
        let r = Faulter::read(area.page(i));
        assert_eq!(r.settle(), State::Done, "page {i} mapped by CONTINUE");
        assert_eq!(area.read_page(i), expected(&area, pattern(i)));
    }
    assert_no_event(&uffd);
}

#[apply(file_mem)]
fn continue_stops_at_page_without_cache_with_partial_progress(#[case] mem: MemType) {
    require_mode!(mem, RegisterMode::MINOR);
    let (area, uffd) = try_skip!(minor_area(mem, 3, RegisterMode::MINOR));
    let ps = area.page_size();
    fill_alias(&area, 0, pattern(0));
    fill_alias(&area, 2, pattern(2));
    // Page 1 has no cache page: the walk maps page 0, stops with -EFAULT,
    // and the ioctl reports the short count as EAGAIN.
    assert_eq!(
        uffd.r#continue(area.addr(), 3 * ps, ContinueMode::empty()),
        Err(Partial {
            errno: Errno::EAGAIN,
            progress: ps as i64
        })
    );
    assert!(pagemap::is_present(area.page(0)));
    assert!(!pagemap::is_present(area.page(1)));
    assert!(!pagemap::is_present(area.page(2)), "CONTINUE went past the hole");
}

#[apply(file_mem)]
fn continue_without_page_cache_fails_efault(#[case] mem: MemType) {
    require_mode!(mem, RegisterMode::MINOR);
    let (area, uffd) = try_skip!(minor_area(mem, 1, RegisterMode::MINOR));
    assert_eq!(
        uffd.r#continue(area.addr(), area.page_size(), ContinueMode::empty()),
        Err(Partial {
            errno: Errno::EFAULT,
            progress: neg(Errno::EFAULT)
        })
    );
    assert!(!pagemap::is_present(area.page(0)));
}

#[apply(file_mem)]
fn continue_over_populated_page_fails_eexist(#[case] mem: MemType) {
    require_mode!(mem, RegisterMode::MINOR);
    let (area, uffd) = try_skip!(minor_area(mem, 1, RegisterMode::MINOR));
    fill_alias(&area, 0, |_| 7);
    uffd.r#continue(area.addr(), area.page_size(), ContinueMode::empty())
        .unwrap();
    assert_eq!(
        uffd.r#continue(area.addr(), area.page_size(), ContinueMode::empty()),
        Err(Partial {
            errno: Errno::EEXIST,
            progress: neg(Errno::EEXIST)
        })
    );
    assert_eq!(area.read_page(0), vec![7; area.page_size()]);
}

// Split by topic with include! rather than `mod`: libtest names a case by its
// module path, so submodules would rename every case; included, they all stay
// `continue/<case>` (and `args::` keeps its own module).
include!("continue/mode_wp.rs");
include!("continue/ranges.rs");
include!("continue/huge.rs");
