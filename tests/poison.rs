//! UFFDIO_POISON (UFFD_FEATURE_POISON): poison markers that raise SIGBUS,
//! the `updated` progress field, EEXIST, and what clears a marker.
//!
//! Expectations come from fs/userfaultfd.c `userfaultfd_poison` and
//! mm/userfaultfd.c `mfill_atomic_pte_poison` / mm/hugetlb.c
//! `hugetlb_mfill_atomic_pte` (6.12): a PTE marker is installed only over a
//! pte_none entry (not over another marker), and reading or writing it is
//! VM_FAULT_HWPOISON_LARGE/SIGBUS. Every access that may SIGBUS runs in a
//! forked child that sets up its own uffd (fork drops the registration and,
//! for shared memory, the page tables), and the parent checks how it ended.

mod common;
use common::*;
use faulter::{Faulter, State, next_pagefault};
use nix::errno::Errno;
use nix::sys::mman::{MmapAdvise, madvise};
use std::ffi::c_void;
use std::ptr::NonNull;
use std::sync::Arc;
use testing::progress::{err, failed};
use testing::{Buf, FaultHandler};

const MISSING: RegisterMode = RegisterMode::MISSING;
const NONE: PoisonMode = PoisonMode::empty();

/// The SIGBUS a read or write at `addr` of a poisoned page of `area`
/// raises: BUS_MCEERR_AR at the exact address, losing one page of the
/// area's size (a huge page on hugetlb).
fn poisoned(area: &Area, addr: usize) -> Ended {
    Ended::Died(FaultSignal::poisoned(addr, area.page_size()))
}

/// An area of `npages`, `prep`ared, then registered MISSING on a fresh uffd
/// with UFFD_FEATURE_POISON. Err is the SKIP reason: a missing
/// UFFD_FEATURE_POISON, then the memory type.
fn prepared_area(mem: MemType, npages: usize, prep: impl FnOnce(&Area)) -> Result<(Area, Arc<Uffd>), String> {
    let area = area_to_register(mem, npages, Features::POISON, MISSING)?;
    prep(&area);
    let uffd = testing::open_uffd(Features::POISON)?;
    let ioctls = uffd
        .register(area.addr(), area.len(), MISSING)
        .expect("UFFDIO_REGISTER");
    assert_ioctls(ioctls, mem, MISSING);
    assert!(ioctls.contains(Ioctls::POISON | Ioctls::COPY), "{ioctls:?}");
    Ok((area, Arc::new(uffd)))
}

fn poison_area(mem: MemType, npages: usize) -> Result<(Area, Arc<Uffd>), String> {
    prepared_area(mem, npages, |_| {})
}

/// Page `i` of `area` is still a hole: UFFDIO_POISON of it succeeds (it
/// fails EEXIST over a marker or a page). Poisons it.
#[track_caller]
fn assert_still_a_hole(uffd: &Uffd, area: &Area, i: usize, why: &str) {
    let ps = area.page_size();
    assert_eq!(uffd.poison(area.page(i), ps, NONE), Ok(ps as i64), "{why}");
}

/// In a child: a fresh uffd (UFFD_FEATURE_POISON) registered MISSING over
/// `area`, which the parent mapped. Nothing here takes a lock another
/// parent thread may have held at fork time (the area was made before).
fn child_uffd(area: &Area) -> Result<Arc<Uffd>, i32> {
    let uffd = testing::open_uffd(Features::POISON).map_err(|_| code::SETUP)?;
    let ioctls = uffd
        .register(area.addr(), area.len(), MISSING)
        .map_err(|_| code::SETUP)?;
    ensure(ioctls == expected_ioctls(area.mem(), MISSING), code::SETUP)?;
    Ok(Arc::new(uffd))
}

/// Runs `f` in a forked child holding its own uffd ([`child_uffd`]) over
/// `area`; `Err(code)` becomes the exit status, a fault signal is recorded.
fn in_poison_child(area: &Area, f: impl FnOnce(&Arc<Uffd>) -> Result<(), i32>) -> Ended {
    in_child(|| f(&child_uffd(area)?))
}

/// Child exit codes name the check that broke.
mod code {
    pub const SETUP: i32 = 20;
    pub const WRONG_DATA: i32 = 21;
    pub const NO_SIGBUS: i32 = 22;
    pub const HANDLER: i32 = 23;
    pub const NOT_BLOCKED: i32 = 24;
    pub const WRONG_EVENTS: i32 = 25;
}

fn ensure(cond: bool, code: i32) -> Result<(), i32> {
    if cond { Ok(()) } else { Err(code) }
}

/// Runs `f` in a forked child ([`in_signal_child`]); `Err(code)` becomes
/// its exit status.
fn in_child(f: impl FnOnce() -> Result<(), i32>) -> Ended {
    in_signal_child(|| match f() {
        Ok(()) => 0,
        Err(c) => c,
    })
}

/// The upstream flow: faults on even pages are answered with UFFDIO_POISON,
/// on odd pages with a copied zero page; returns the handler.
fn even_poison_odd_zero(area: &Area, uffd: &Arc<Uffd>) -> FaultHandler {
    let (base, ps) = (area.addr(), area.page_size());
    let zeros = Buf::filled(ps, 0);
    FaultHandler::spawn(uffd.clone(), move |u, ev| {
        let Event::Pagefault { address, .. } = ev else {
            // SAFETY: ends the child at once; the parent sees the code.
            unsafe { libc::_exit(code::HANDLER) }
        };
        let page = (address as usize - base) / ps;
        let r = if page.is_multiple_of(2) {
            u.poison(address as usize, ps, NONE)
        } else {
            u.copy(address as usize, zeros.addr(), ps, CopyMode::empty())
        };
        if r != Ok(ps as i64) {
            // SAFETY: as above.
            unsafe { libc::_exit(code::HANDLER) }
        }
        Ok(())
    })
}

/// An area for a child to register and fill `child_pages` of
/// ([`testing::area_for_fork`]).
fn forked_area(mem: MemType, n: usize, child_pages: usize) -> Result<Area, String> {
    offers(Features::POISON)?;
    testing::register_support(mem, MISSING)?;
    testing::area_for_fork(mem, n, child_pages)
}

#[apply(all_mem)]
fn poison_even_pages_sigbus_and_odd_pages_read_zero(#[case] mem: MemType) {
    let n = 4;
    // The odd pages alone: resolved with zeros, no signal, one fault each.
    // The children fill the odd pages of memory forked to them.
    let area = try_skip!(forked_area(mem, n, n / 2));
    let st = in_poison_child(&area, |uffd| {
        let h = even_poison_odd_zero(&area, uffd);
        for i in (1..n).step_by(2) {
            ensure(area.read_page(i) == vec![0; area.page_size()], code::WRONG_DATA)?;
        }
        ensure(h.events() == n / 2, code::WRONG_EVENTS)?;
        ensure(h.stop().is_empty(), code::HANDLER)
    });
    assert_eq!(st, Ended::Exited(0));
    // Then each even page, read or written: the poisoned fault is SIGBUS.
    for target in (0..n).step_by(2) {
        for write in [false, true] {
            // A fresh area each time: a shared one keeps the children's copies.
            let area = try_skip!(forked_area(mem, n, 1));
            let st = in_child(|| {
                let uffd = child_uffd(&area)?;
                let _h = even_poison_odd_zero(&area, &uffd);
                ensure(area.read_page(1) == vec![0; area.page_size()], code::WRONG_DATA)?;
                if write {
                    testing::write_byte(area.page(target) + 1, 1);
                } else {
                    testing::read_byte(area.page(target) + 1);
                }
                Err(code::NO_SIGBUS)
            });
            assert_eq!(
                st,
                poisoned(&area, area.page(target) + 1),
                "page {target}, write {write}"
            );
        }
    }
}

#[apply(all_mem)]
fn poison_reports_the_whole_length_as_updated(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(poison_area(mem, 4));
    let ps = area.page_size();
    assert_eq!(uffd.poison(area.addr(), 4 * ps, NONE), Ok(4 * ps as i64));
    // A marker, not a page.
    for i in 0..4 {
        assert!(!pagemap::is_present(area.page(i)), "page {i}");
    }
    // Every page refuses a second marker.
    for i in 0..4 {
        assert_eq!(uffd.poison(area.page(i), ps, NONE), failed(Errno::EEXIST), "page {i}");
    }
}

#[apply(all_mem)]
fn poisoned_page_raises_sigbus_without_a_fault_message(#[case] mem: MemType) {
    let area = try_skip!(area_to_register(mem, 1, Features::POISON, MISSING));
    let st = in_poison_child(&area, |uffd| {
        ensure(
            uffd.poison(area.addr(), area.page_size(), NONE) == Ok(area.page_size() as i64),
            code::SETUP,
        )?;
        testing::read_byte(area.addr() + 5);
        Err(code::NO_SIGBUS)
    });
    assert_eq!(st, poisoned(&area, area.addr() + 5));
}

#[apply(all_mem)]
fn poison_over_populated_page_fails_eexist(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(prepared_area(mem, 1, |a| a.fill_page(0, 0x29)));
    let ps = area.page_size();
    assert_eq!(uffd.poison(area.page(0), ps, NONE), failed(Errno::EEXIST));
    assert_eq!(area.read_page(0), vec![0x29; ps]);
}

#[apply(all_mem)]
fn poison_stops_at_populated_page_with_partial_progress(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(prepared_area(mem, 4, |a| fill_page_pinned(a, 2, 0x2a)));
    let ps = area.page_size();
    if !fill_stops_at_populated_page(&area, |at, len| uffd.poison(at, len, NONE)) {
        return;
    }
    for i in [0, 1] {
        assert_eq!(
            uffd.poison(area.page(i), ps, NONE),
            failed(Errno::EEXIST),
            "page {i} poisoned"
        );
    }
    assert_eq!(area.read_page(2), vec![0x2a; ps]);
    assert_still_a_hole(&uffd, &area, 3, "page 3 was not reached");
}

#[apply(all_mem)]
fn copy_over_poisoned_page_replaces_the_marker(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(poison_area(mem, 1));
    let ps = area.page_size();
    assert_eq!(uffd.poison(area.page(0), ps, NONE), Ok(ps as i64));
    // mfill_atomic_install_pte (and huge_pte_none_mostly for hugetlb)
    // accept any PTE marker as empty: UFFDIO_COPY overwrites the poison.
    copy_page(&uffd, &area, 0, 0x31);
}

#[apply(all_mem)]
fn poison_then_madv_dontneed_faults_missing_again(#[case] mem: MemType) {
    let area = try_skip!(area_to_register(mem, 1, Features::POISON, MISSING));
    let st = in_poison_child(&area, |uffd| {
        let ps = area.page_size();
        ensure(uffd.poison(area.addr(), ps, NONE) == Ok(ps as i64), code::SETUP)?;
        // Zapping with no zap_details drops poison markers on every VMA type.
        let p = NonNull::new(area.addr() as *mut c_void).unwrap();
        // SAFETY: our own area.
        unsafe { madvise(p, ps, MmapAdvise::MADV_DONTNEED) }.map_err(|_| code::SETUP)?;
        let (h, seen) = testing::copy_handler(uffd.clone(), ps, 0x5a);
        ensure(area.read_page(0) == vec![0x5a; ps], code::WRONG_DATA)?;
        ensure(*seen.lock().unwrap() == vec![area.addr() as u64], code::WRONG_EVENTS)?;
        ensure(h.stop().is_empty(), code::HANDLER)
    });
    assert_eq!(st, Ended::Exited(0));
}

#[apply(all_mem)]
fn poison_dontwake_leaves_faulter_blocked_until_wake(#[case] mem: MemType) {
    let area = try_skip!(area_to_register(mem, 1, Features::POISON, MISSING));
    let st = in_poison_child(&area, |uffd| {
        let ps = area.page_size();
        let r = Faulter::read(area.addr() + 2);
        ensure(
            next_pagefault(uffd) == (PagefaultFlags::empty(), area.addr()),
            code::WRONG_EVENTS,
        )?;
        ensure(r.settle() == State::Blocked, code::NOT_BLOCKED)?;
        ensure(
            uffd.poison(area.addr(), ps, PoisonMode::DONTWAKE) == Ok(ps as i64),
            code::HANDLER,
        )?;
        ensure(r.is_blocked() && !r.is_done(), code::NOT_BLOCKED)?;
        // The woken thread retries into the marker: SIGBUS ends the child.
        uffd.wake(area.addr(), ps).map_err(|_| code::HANDLER)?;
        r.join();
        Err(code::NO_SIGBUS)
    });
    // The blocked reader's own retry takes it, at the byte it read.
    assert_eq!(st, poisoned(&area, area.addr() + 2));
}

#[apply(all_mem)]
fn poison_unknown_mode_bits_fail_einval(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(poison_area(mem, 1));
    let ps = area.page_size();
    let bits = [1 << 1, 1 << 2, 1 << 63, sys::UFFDIO_POISON_MODE_DONTWAKE | 1 << 1];
    assert_modes_rejected(&bits, |b| {
        uffd.poison(area.page(0), ps, PoisonMode::from_bits_retain(b))
    });
    assert_still_a_hole(&uffd, &area, 0, "nothing was poisoned before");
}

#[apply(all_mem)]
fn poison_misaligned_range_fails_einval(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(poison_area(mem, 2));
    let ps = area.page_size();
    assert_ranges_rejected(&area, |start, len| uffd.poison(start, len, NONE));
    if mem.is_hugetlb() {
        // Base-page aligned, not huge-page aligned: mfill_atomic_hugetlb.
        let bp = mem::base_page_size();
        assert_eq!(uffd.poison(area.addr() + bp, ps, NONE), failed(Errno::EINVAL));
        assert_eq!(uffd.poison(area.addr(), bp, NONE), failed(Errno::EINVAL));
    }
    assert_eq!(uffd.poison(area.addr(), 2 * ps, NONE), Ok(2 * ps as i64));
}

#[apply(all_mem)]
fn poison_outside_registered_range_fails_enoent(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(poison_area(mem, 1));
    let other = try_area!(Area::new(mem, 1));
    let ps = area.page_size();
    assert_fills_outside_registration_fail(&uffd, &area, &other, |at, len| uffd.poison(at, len, NONE));
    // The unregistered area is still an ordinary one.
    assert_eq!(other.read_page(0), vec![0; ps]);
}

#[apply(file_mem)]
fn poison_beyond_end_of_file(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(poison_area(mem, 2));
    let ps = area.page_size();
    nix::unistd::ftruncate(area.fd().expect("file-backed area"), ps as i64).unwrap();
    if mem.is_hugetlb() {
        // The hugetlb poison path returns before any i_size check.
        assert_eq!(uffd.poison(area.page(1), ps, NONE), Ok(ps as i64));
        return;
    }
    // mfill_atomic_pte_poison: mfill_file_over_size.
    assert_eq!(uffd.poison(area.page(1), ps, NONE), failed(Errno::EFAULT));
    assert_eq!(uffd.poison(area.page(0), 2 * ps, NONE), err(Errno::EAGAIN, ps as i64));
}

#[apply(all_mem)]
fn poison_over_wp_marker_fails_eexist(#[case] mem: MemType) {
    require_features!(Features::POISON);
    let mode = MISSING | RegisterMode::WP;
    require_mode!(mem, mode);
    let feats = wp_marker_features(mem);
    require_features!(feats);
    let area = try_area!(Area::new(mem, 1));
    let uffd = try_skip!(testing::open_uffd(feats | Features::POISON));
    uffd.register(area.addr(), area.len(), mode).unwrap();
    let ps = area.page_size();
    install_wp_marker(&uffd, &area, 0);
    // "Refuse to overwrite any PTE, even a PTE marker (e.g. UFFD WP)."
    assert_eq!(uffd.poison(area.page(0), ps, NONE), failed(Errno::EEXIST));
}

#[apply(all_mem)]
fn poison_marker_is_inherited_by_fork_only_with_private_page_tables(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(poison_area(mem, 1));
    let ps = area.page_size();
    assert_eq!(uffd.poison(area.addr(), ps, NONE), Ok(ps as i64));
    let st = access_in_signal_child(area.addr() + 7, testing::Access::Read);
    if mem.is_shared() {
        // No anon_vma: fork copies no page tables (vma_needs_copy), and the
        // child, whose VMA lost the registration, faults in a zero page.
        assert_eq!(st, Ended::Exited(0));
    } else {
        // Private VMAs copy their PTEs, and copy_pte_marker keeps poison.
        assert_eq!(st, poisoned(&area, area.addr() + 7));
    }
    // The parent still holds its marker.
    assert_eq!(uffd.poison(area.addr(), ps, NONE), failed(Errno::EEXIST));
}

/// Two pages across a PMD boundary: both poisoned (markers in two page
/// tables, each refusing a second one), or, with a THP beyond the boundary,
/// the first page then EAGAIN.
#[rstest]
#[case::holes(boundary::FarSide::Holes)]
#[case::thp(boundary::FarSide::Thp)]
fn poison_across_a_pmd_boundary(#[case] far: boundary::FarSide) {
    let (area, uffd, b) = try_skip!(boundary::fill_across(Features::POISON, far, |u, at, len| u.poison(at, len, NONE)));
    let ps = area.page_size();
    let poisoned = if far == boundary::FarSide::Holes {
        vec![b - 1, b]
    } else {
        vec![b - 1]
    };
    for i in poisoned {
        assert!(
            !pagemap::is_present(area.page(i)),
            "page {i} holds a marker, not a page"
        );
        assert_eq!(uffd.poison(area.page(i), ps, NONE), failed(Errno::EEXIST), "page {i}");
    }
}
