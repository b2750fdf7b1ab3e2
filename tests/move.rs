//! UFFDIO_MOVE (UFFD_FEATURE_MOVE): moving anonymous pages into a
//! registered range, PTE by PTE and as whole PMDs, and every rule
//! `move_pages` enforces.
//!
//! Expectations come from fs/userfaultfd.c `userfaultfd_move` (argument
//! checks return before the `move` field is written) and mm/userfaultfd.c
//! `move_pages`/`validate_move_areas`/`move_pages_pte` (6.12): both VMAs
//! private anonymous with equal protection and mlock state, dst registered
//! with this uffd, dst holes only (EEXIST), src pages present (ENOENT unless
//! ALLOW_SRC_HOLES) and exclusive (EBUSY).
//!
//! One file over ~600 lines: every case checks one `move_pages` rule on the
//! same source/destination pair, and there is no seam to split at.

mod common;
use common::*;
use faulter::{Faulter, State, assert_no_event, next_pagefault};
use nix::errno::Errno;
use nix::sys::mman::{MmapAdvise, ProtFlags, madvise, mlock, mprotect, munlock};
use serial_test::file_serial;
use std::sync::Arc;
use testing::progress::{err, failed, rejected};
use testing::{ChildExit, FaultHandler, smaps};
use uffdtest::knob::Knob;

const MISSING: RegisterMode = RegisterMode::MISSING;
const NONE: MoveMode = MoveMode::empty();
const HOLES: MoveMode = MoveMode::ALLOW_SRC_HOLES;
const USE_ZERO_PAGE: &str = "/sys/kernel/mm/transparent_hugepage/use_zero_page";

fn pat(page: usize, i: usize) -> u8 {
    (page.wrapping_mul(41) + i.wrapping_mul(13) + 3) as u8
}

fn expected(ps: usize, page: usize) -> Vec<u8> {
    (0..ps).map(|i| pat(page, i)).collect()
}

/// Writes the [`pat`] of page `page` into `area`'s page `page`.
fn fill(area: &Area, page: usize) {
    let ps = area.page_size();
    let base = area.page(page) as *mut u8;
    for i in 0..ps {
        // SAFETY: inside the page, which is writable.
        unsafe { *base.add(i) = pat(page, i) };
    }
}

/// A MISSING-registered destination and an unregistered source of the same
/// type, `npages` each, on a uffd opened with UFFD_FEATURE_MOVE ([`pair`]:
/// Err is the SKIP reason, a missing UFFD_FEATURE_MOVE first).
struct Pair {
    dst: Area,
    src: Area,
    uffd: Arc<Uffd>,
}

/// MADV_DONTFORK, as UFFDIO_MOVE users are told to do: a fork by any other
/// test in this process would otherwise share the pages and make them
/// non-exclusive (EBUSY) until written again.
fn dontfork(area: &Area) {
    // SAFETY: our own area.
    unsafe { madvise(ptr(area.addr()), area.len(), MmapAdvise::MADV_DONTFORK) }.expect("MADV_DONTFORK");
}

fn pair(mem: MemType, npages: usize) -> Result<Pair, String> {
    offers(Features::MOVE)?;
    testing::register_support(mem, MISSING)?;
    let dst = testing::area(mem, npages)?;
    let src = testing::area(mem, npages)?;
    dontfork(&dst);
    dontfork(&src);
    let uffd = testing::open_uffd(Features::MOVE)?;
    uffd.register(dst.addr(), dst.len(), MISSING)
        .expect("UFFDIO_REGISTER(MISSING)");
    Ok(Pair {
        dst,
        src,
        uffd: Arc::new(uffd),
    })
}

/// One area of four pages of `mem`, source and destination at once
/// (src_vma = dst_vma): the `filled` pages hold their [`pat`], the rest are
/// holes, and all of it is registered MISSING on a uffd with
/// UFFD_FEATURE_MOVE. Err is the SKIP reason.
fn one_area(mem: MemType, filled: &[usize]) -> Result<(Area, Uffd), String> {
    offers(Features::MOVE)?;
    testing::register_support(mem, MISSING).expect("MISSING registration");
    let a = testing::area(mem, 4)?;
    dontfork(&a);
    for &page in filled {
        fill(&a, page);
    }
    let uffd = testing::open_uffd(Features::MOVE)?;
    uffd.register(a.addr(), a.len(), MISSING).unwrap();
    Ok((a, uffd))
}

#[apply(anon_mem)]
fn move_one_page_transfers_it(#[case] mem: MemType) {
    let p = try_skip!(pair(mem, 2));
    let ps = p.dst.page_size();
    fill(&p.src, 1);
    assert_eq!(p.uffd.r#move(p.dst.page(1), p.src.page(1), ps, NONE), Ok(ps as i64));
    assert_eq!(p.dst.read_page(1), expected(ps, 1));
    // The page left the source: its PTE is empty, a read gets zeros.
    assert!(!pagemap::is_present(p.src.page(1)));
    assert_eq!(p.src.read_page(1), vec![0; ps]);
    assert!(!pagemap::is_present(p.dst.page(0)));
    assert_no_event(&p.uffd);
}

#[apply(anon_mem)]
fn move_resolves_every_fault_byte_for_byte(#[case] mem: MemType) {
    let n = 8;
    let p = try_skip!(pair(mem, n));
    let ps = p.dst.page_size();
    for i in 0..n {
        fill(&p.src, i);
    }
    let (dbase, sbase) = (p.dst.addr(), p.src.addr());
    let h = FaultHandler::spawn(p.uffd.clone(), move |u, ev| match ev {
        Event::Pagefault { flags, address, .. } => {
            if !flags.is_empty() {
                return Err(format!("unexpected flags {flags:?}"));
            }
            let off = address as usize - dbase;
            match u.r#move(address as usize, sbase + off, ps, HOLES) {
                Ok(n) if n == ps as i64 => Ok(()),
                other => Err(format!("UFFDIO_MOVE at {off:#x}: {other:?}")),
            }
        }
        other => Err(format!("unexpected {other:?}")),
    });
    for i in 0..n {
        assert_eq!(p.dst.read_page(i), expected(ps, i), "dst page {i}");
        assert_eq!(p.src.read_page(i), vec![0; ps], "src page {i} after the move");
    }
    assert_eq!(h.events(), n, "one fault per page");
    assert_eq!(h.stop(), Vec::<String>::new());
}

#[apply(anon_mem)]
fn move_dontwake_leaves_faulter_blocked_until_wake(#[case] mem: MemType) {
    let p = try_skip!(pair(mem, 1));
    let ps = p.dst.page_size();
    fill(&p.src, 0);
    let r = Faulter::read(p.dst.page(0) + 4);
    assert_eq!(next_pagefault(&p.uffd), (PagefaultFlags::empty(), p.dst.page(0)));
    assert_eq!(r.settle(), State::Blocked);
    assert_eq!(
        p.uffd.r#move(p.dst.page(0), p.src.page(0), ps, MoveMode::DONTWAKE),
        Ok(ps as i64)
    );
    assert!(r.is_blocked() && !r.is_done(), "DONTWAKE woke the faulting thread");
    p.uffd.wake(p.dst.page(0), ps).unwrap();
    assert_eq!(r.join(), pat(0, 4));
    assert_no_event(&p.uffd);
}

#[apply(anon_mem)]
fn move_wakes_the_faulting_thread(#[case] mem: MemType) {
    let p = try_skip!(pair(mem, 1));
    let ps = p.dst.page_size();
    fill(&p.src, 0);
    let w = Faulter::write(p.dst.page(0) + 8, 0xfe);
    assert_eq!(next_pagefault(&p.uffd), (PagefaultFlags::WRITE, p.dst.page(0)));
    assert_eq!(p.uffd.r#move(p.dst.page(0), p.src.page(0), ps, NONE), Ok(ps as i64));
    assert_eq!(w.join(), 0xfe);
    let mut want = expected(ps, 0);
    want[8] = 0xfe;
    assert_eq!(p.dst.read_page(0), want);
}

#[apply(anon_mem)]
fn move_from_src_hole_fails_enoent(#[case] mem: MemType) {
    let p = try_skip!(pair(mem, 1));
    let ps = p.dst.page_size();
    // Nothing ever touched the source: not even a page table.
    assert_eq!(
        p.uffd.r#move(p.dst.page(0), p.src.page(0), ps, NONE),
        failed(Errno::ENOENT)
    );
    assert!(!pagemap::is_present(p.dst.page(0)));
}

#[apply(anon_mem)]
fn move_allow_src_holes_counts_holes_as_moved(#[case] mem: MemType) {
    let p = try_skip!(pair(mem, 1));
    let ps = p.dst.page_size();
    assert_eq!(p.uffd.r#move(p.dst.page(0), p.src.page(0), ps, HOLES), Ok(ps as i64));
    // The hole moved: the destination is still missing.
    assert!(!pagemap::is_present(p.dst.page(0)));
    assert_no_event(&p.uffd);
}

#[rstest]
#[case::anon(MemType::Anon)]
fn move_stops_at_src_hole_with_partial_progress(#[case] mem: MemType) {
    let p = try_skip!(pair(mem, 4));
    let ps = p.dst.page_size();
    for i in [0, 1, 3] {
        fill(&p.src, i);
    }
    assert_eq!(
        p.uffd.r#move(p.dst.addr(), p.src.addr(), 4 * ps, NONE),
        err(Errno::EAGAIN, 2 * ps as i64)
    );
    assert_eq!(p.dst.read_page(0), expected(ps, 0));
    assert_eq!(p.dst.read_page(1), expected(ps, 1));
    assert!(!pagemap::is_present(p.dst.page(2)) && !pagemap::is_present(p.dst.page(3)));
    assert!(pagemap::is_present(p.src.page(3)), "page 3 was not reached");
    // The same run with ALLOW_SRC_HOLES skips the hole and goes on.
    assert_eq!(
        p.uffd.r#move(p.dst.page(2), p.src.page(2), 2 * ps, HOLES),
        Ok(2 * ps as i64)
    );
    assert!(!pagemap::is_present(p.dst.page(2)));
    assert_eq!(p.dst.read_page(3), expected(ps, 3));
    assert!(!pagemap::is_present(p.src.page(3)));
}

#[apply(anon_mem)]
fn move_onto_populated_dst_fails_eexist(#[case] mem: MemType) {
    require_features!(Features::MOVE);
    testing::register_support(mem, MISSING).unwrap();
    let dst = try_area!(Area::new(mem, 1));
    dst.fill_page(0, 0x5a);
    let src = try_area!(Area::new(mem, 1));
    fill(&src, 0);
    let uffd = try_skip!(testing::open_uffd(Features::MOVE));
    uffd.register(dst.addr(), dst.len(), MISSING).unwrap();
    let ps = dst.page_size();
    // Checked before the source: EEXIST even with ALLOW_SRC_HOLES.
    for mode in [NONE, HOLES] {
        assert_eq!(uffd.r#move(dst.page(0), src.page(0), ps, mode), failed(Errno::EEXIST));
    }
    assert_eq!(dst.read_page(0), vec![0x5a; ps]);
    assert_eq!(src.read_page(0), expected(ps, 0), "the source keeps its page");
}

#[apply(anon_mem)]
fn move_of_page_shared_with_child_fails_ebusy(#[case] mem: MemType) {
    let p = try_skip!(pair(mem, 1));
    let ps = p.dst.page_size();
    fill(&p.src, 0);
    // SAFETY: our own area; this test wants the child to share it.
    unsafe { madvise(ptr(p.src.addr()), p.src.len(), MmapAdvise::MADV_DOFORK) }.unwrap();
    let (rd, wr) = nix::unistd::pipe().unwrap();
    // The child shares the source page until it exits.
    let child = testing::spawn_child(move || {
        let mut b = [0u8; 1];
        let _ = nix::unistd::read(&rd, &mut b);
        0
    });
    // A page mapped by two processes is not PageAnonExclusive.
    assert_eq!(
        p.uffd.r#move(p.dst.page(0), p.src.page(0), ps, NONE),
        failed(Errno::EBUSY)
    );
    nix::unistd::write(&wr, &[1]).unwrap();
    assert_eq!(testing::wait_child(child), ChildExit::Exited(0));
    // Still not exclusive until a write fault reuses it.
    assert_eq!(
        p.uffd.r#move(p.dst.page(0), p.src.page(0), ps, NONE),
        failed(Errno::EBUSY)
    );
    testing::write_byte(p.src.page(0), pat(0, 0));
    assert_eq!(p.uffd.r#move(p.dst.page(0), p.src.page(0), ps, NONE), Ok(ps as i64));
    assert_eq!(p.dst.read_page(0), expected(ps, 0));
}

#[apply(anon_mem)]
fn move_of_zero_page_maps_zero_page(#[case] mem: MemType) {
    let p = try_skip!(pair(mem, 1));
    let ps = p.dst.page_size();
    // A read fault on the (unregistered, non-THP) source maps the zero page.
    if mem == MemType::AnonThp {
        // SAFETY: our own source area.
        unsafe { madvise(ptr(p.src.addr()), p.src.len(), MmapAdvise::MADV_NOHUGEPAGE) }.unwrap();
    }
    assert_eq!(testing::read_byte(p.src.page(0)), 0);
    assert!(pagemap::is_present(p.src.page(0)));
    let dst = p.dst.page(0);
    let src = p.src.page(0);
    if mem == MemType::AnonThp {
        // Different VMA flags are fine; only access flags must match.
        assert!(smaps::vma(src).unwrap().flags.iter().any(|f| f == "nh"));
    }
    assert_eq!(p.uffd.r#move(dst, src, ps, NONE), Ok(ps as i64));
    assert!(pagemap::is_present(dst));
    assert!(!pagemap::is_present(src));
    assert_eq!(p.dst.read_page(0), vec![0; ps]);
}

#[rstest]
#[case::anon(MemType::Anon)]
fn move_within_the_registered_vma(#[case] mem: MemType) {
    let (a, uffd) = try_skip!(one_area(mem, &[0]));
    let ps = a.page_size();
    // src in the dst VMA is allowed (src_vma = dst_vma).
    assert_eq!(uffd.r#move(a.page(3), a.page(0), ps, NONE), Ok(ps as i64));
    assert_eq!(a.read_page(3), expected(ps, 0));
    assert!(!pagemap::is_present(a.page(0)));
}

#[rstest]
#[case::anon(MemType::Anon)]
fn move_overlapping_ranges(#[case] mem: MemType) {
    let (a, uffd) = try_skip!(one_area(mem, &[0, 1]));
    let ps = a.page_size();
    // [1,3) <- [0,2): the first destination page is the second source
    // page, which is populated: move_pages has no overlap check of its
    // own, the dst-hole rule refuses it.
    assert_eq!(uffd.r#move(a.page(1), a.page(0), 2 * ps, NONE), failed(Errno::EEXIST));
    assert_eq!(a.read_page(0), expected(ps, 0));
    assert_eq!(a.read_page(1), expected(ps, 1));
}

#[apply(anon_mem)]
fn move_to_dst_not_registered_fails_einval(#[case] mem: MemType) {
    let p = try_skip!(pair(mem, 1));
    let ps = p.dst.page_size();
    fill(&p.src, 0);
    let other = try_area!(Area::new(mem, 1));
    // validate_move_areas: dst must be registered, and with this uffd
    // (unlike UFFDIO_COPY, which says ENOENT).
    assert_eq!(
        p.uffd.r#move(other.page(0), p.src.page(0), ps, NONE),
        failed(Errno::EINVAL)
    );
    let foreign = try_skip!(testing::open_uffd(Features::MOVE));
    foreign.register(other.addr(), other.len(), MISSING).unwrap();
    assert_eq!(
        p.uffd.r#move(other.page(0), p.src.page(0), ps, NONE),
        failed(Errno::EINVAL)
    );
    assert!(pagemap::is_present(p.src.page(0)));
    assert!(!pagemap::is_present(other.page(0)));
}

#[apply(anon_mem)]
fn move_with_unmapped_dst_or_src_fails_enoent(#[case] mem: MemType) {
    let p = try_skip!(pair(mem, 1));
    let ps = p.dst.page_size();
    fill(&p.src, 0);
    let hole = testing::holes::far_range();
    assert_eq!(p.uffd.r#move(hole, p.src.page(0), ps, NONE), failed(Errno::ENOENT));
    assert_eq!(p.uffd.r#move(p.dst.page(0), hole, ps, NONE), failed(Errno::ENOENT));
    assert_eq!(p.uffd.r#move(p.dst.page(0), hole, ps, HOLES), failed(Errno::ENOENT));
}

#[apply(anon_mem)]
fn move_past_the_end_of_a_vma_fails_einval(#[case] mem: MemType) {
    let p = try_skip!(pair(mem, 2));
    let ps = p.dst.page_size();
    let dlast = p.dst.page(p.dst.npages() - 1);
    let slast = p.src.page(p.src.npages() - 1);
    // Both ranges must lie in one VMA each (EINVAL, where COPY says ENOENT).
    assert_eq!(
        p.uffd.r#move(dlast, p.src.page(0), 2 * ps, HOLES),
        failed(Errno::EINVAL)
    );
    assert_eq!(
        p.uffd.r#move(p.dst.page(0), slast, 2 * ps, HOLES),
        failed(Errno::EINVAL)
    );
}

#[apply(anon_mem)]
fn move_unknown_mode_bits_fail_einval(#[case] mem: MemType) {
    let p = try_skip!(pair(mem, 1));
    let ps = p.dst.page_size();
    fill(&p.src, 0);
    let bits = [1 << 2, 1 << 3, 1 << 63, sys::UFFDIO_MOVE_MODE_DONTWAKE | 1 << 2];
    assert_modes_rejected(&bits, |b| {
        p.uffd
            .r#move(p.dst.page(0), p.src.page(0), ps, MoveMode::from_bits_retain(b))
    });
    assert!(pagemap::is_present(p.src.page(0)));
}

#[apply(anon_mem)]
fn move_misaligned_arguments_fail_einval(#[case] mem: MemType) {
    let p = try_skip!(pair(mem, 2));
    let ps = p.dst.page_size();
    fill(&p.src, 0);
    let (d, s) = (p.dst.page(0), p.src.page(0));
    // validate_range on both dst and src (COPY lets src be unaligned).
    for (dst, src, len) in [
        (d + 1, s, ps),
        (d, s + 1, ps),
        (d, s + 64, ps),
        (d, s, 0),
        (d, s, 1),
        (d, s, ps + 1),
        (d, s, 0usize.wrapping_sub(s)),
    ] {
        assert_eq!(
            p.uffd.r#move(dst, src, len, NONE),
            rejected(Errno::EINVAL),
            "dst {dst:#x} src {src:#x} len {len:#x}"
        );
    }
    assert!(pagemap::is_present(s));
}

/// mprotect of a whole area of ours.
fn prot(a: &Area, f: ProtFlags) {
    // SAFETY: changing the protection of our own area.
    unsafe { mprotect(ptr(a.addr()), a.len(), f) }.unwrap();
}

#[apply(anon_mem)]
fn move_between_different_protections_fails_einval(#[case] mem: MemType) {
    let p = try_skip!(pair(mem, 1));
    let ps = p.dst.page_size();
    fill(&p.src, 0);
    prot(&p.src, ProtFlags::PROT_READ);
    assert_eq!(
        p.uffd.r#move(p.dst.page(0), p.src.page(0), ps, NONE),
        failed(Errno::EINVAL)
    );
    // Equal but not writable: still refused.
    prot(&p.dst, ProtFlags::PROT_READ);
    assert_eq!(
        p.uffd.r#move(p.dst.page(0), p.src.page(0), ps, NONE),
        failed(Errno::EINVAL)
    );
    prot(&p.src, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE);
    prot(&p.dst, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE);
    assert_eq!(p.uffd.r#move(p.dst.page(0), p.src.page(0), ps, NONE), Ok(ps as i64));
}

/// validate_move_areas compares the VMAs' access flags as well as their
/// page protections, and on x86 only the flags tell a write-only mapping
/// from a read-write one: write implies read in the page tables, so both
/// get the same `vm_page_prot` (mutant move-access-flags-differ survived
/// every case that changed the page protection too).
#[apply(anon_mem)]
fn move_between_write_only_and_read_write_fails_einval(#[case] mem: MemType) {
    let p = try_skip!(pair(mem, 1));
    let ps = p.dst.page_size();
    fill(&p.src, 0);
    let rw = ProtFlags::PROT_READ | ProtFlags::PROT_WRITE;
    prot(&p.src, ProtFlags::PROT_WRITE);
    assert_eq!(
        p.uffd.r#move(p.dst.page(0), p.src.page(0), ps, NONE),
        failed(Errno::EINVAL),
        "write-only src, read-write dst"
    );
    prot(&p.src, rw);
    prot(&p.dst, ProtFlags::PROT_WRITE);
    assert_eq!(
        p.uffd.r#move(p.dst.page(0), p.src.page(0), ps, NONE),
        failed(Errno::EINVAL),
        "read-write src, write-only dst"
    );
    assert!(pagemap::is_present(p.src.page(0)));
    assert!(!pagemap::is_present(p.dst.page(0)));
    // The same flags on both sides: write-only moves like read-write.
    prot(&p.src, ProtFlags::PROT_WRITE);
    assert_eq!(p.uffd.r#move(p.dst.page(0), p.src.page(0), ps, NONE), Ok(ps as i64));
    prot(&p.dst, rw);
    assert_eq!(p.dst.read_page(0), expected(ps, 0));
    assert_no_event(&p.uffd);
}

/// A moved page keeps its source PTE's dirty bit (move_present_pte). It is
/// what tells reclaim that a page written again after MADV_FREE holds data:
/// with a clean PTE the lazily freed folio is dropped, and the destination
/// reads zeros after MADV_PAGEOUT (mutant move-dirty-bit-lost). The task
/// stays on one CPU so MADV_PAGEOUT's drain of this CPU's LRU batches is the
/// one that makes the folio lazyfree.
#[rstest]
#[case::anon(MemType::Anon)]
fn move_keeps_the_dirty_bit_of_a_page_rewritten_after_madv_free(#[case] mem: MemType) {
    // SAFETY: sched_getcpu has no preconditions.
    let cpu = unsafe { libc::sched_getcpu() };
    let mut one = nix::sched::CpuSet::new();
    one.set(usize::try_from(cpu).expect("sched_getcpu")).unwrap();
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &one).expect("sched_setaffinity");
    let p = try_skip!(pair(mem, 1));
    let ps = p.dst.page_size();
    fill(&p.src, 0);
    testing::mm::madvise(p.src.page(0), ps, libc::MADV_FREE).expect("MADV_FREE");
    // Written again: a dirty PTE over a folio that MADV_FREE left clean.
    fill(&p.src, 0);
    assert_eq!(p.uffd.r#move(p.dst.page(0), p.src.page(0), ps, NONE), Ok(ps as i64));
    testing::mm::madvise(p.dst.page(0), ps, libc::MADV_PAGEOUT).expect("MADV_PAGEOUT");
    // Kept, not dropped (a dropped page would leave a hole that faults MISSING).
    assert!(pagemap::is_present(p.dst.page(0)), "reclaim dropped the moved page");
    assert_eq!(p.dst.read_page(0), expected(ps, 0));
    assert_no_event(&p.uffd);
}

#[apply(anon_mem)]
fn move_between_mlocked_and_unlocked_fails_einval(#[case] mem: MemType) {
    require_features!(Features::MOVE);
    require_root!("mlock of a whole area");
    let p = try_skip!(pair(mem, 1));
    let ps = p.dst.page_size();
    fill(&p.src, 0);
    // SAFETY: locking our own source area.
    unsafe { mlock(ptr(p.src.addr()), p.src.len()) }.expect("mlock");
    assert_eq!(
        p.uffd.r#move(p.dst.page(0), p.src.page(0), ps, NONE),
        failed(Errno::EINVAL)
    );
    // SAFETY: as above.
    unsafe { munlock(ptr(p.src.addr()), p.src.len()) }.expect("munlock");
    assert_eq!(p.uffd.r#move(p.dst.page(0), p.src.page(0), ps, NONE), Ok(ps as i64));
}

#[apply(file_mem)]
fn move_into_file_memory_fails_einval(#[case] mem: MemType) {
    require_features!(Features::MOVE);
    require_mode!(mem, MISSING);
    let dst = try_area!(Area::new(mem, 1));
    let ps = dst.page_size();
    let src = try_area!(Area::new(MemType::Anon, ps / mem::base_page_size()));
    src.populate(0x17);
    let uffd = try_skip!(testing::open_uffd(Features::MOVE));
    let ioctls = uffd.register(dst.addr(), dst.len(), MISSING).unwrap();
    // Registration offers MOVE on shmem (UFFD_API_RANGE_IOCTLS) though
    // move_pages only takes private anonymous VMAs; hugetlb's BASIC set
    // leaves it out.
    assert_ioctls(ioctls, mem, MISSING);
    assert_eq!(ioctls.contains(Ioctls::MOVE), !mem.is_hugetlb(), "{ioctls:?}");
    assert_eq!(uffd.r#move(dst.page(0), src.addr(), ps, NONE), failed(Errno::EINVAL));
    assert!(!pagemap::is_present(dst.page(0)));
    assert!(pagemap::is_present(src.addr()));
}

#[apply(file_mem)]
fn move_from_file_memory_fails_einval(#[case] mem: MemType) {
    require_features!(Features::MOVE);
    require_mode!(mem, MISSING);
    let src = try_area!(Area::new(mem, 1));
    src.populate(0x18);
    let ps = src.page_size();
    let dst = try_area!(Area::new(MemType::Anon, ps / mem::base_page_size()));
    let uffd = try_skip!(testing::open_uffd(Features::MOVE));
    uffd.register(dst.addr(), dst.len(), MISSING).unwrap();
    assert_eq!(uffd.r#move(dst.addr(), src.page(0), ps, NONE), failed(Errno::EINVAL));
    assert_eq!(src.read_page(0), vec![0x18; ps]);
}

/// Fills the source and makes it one PMD-mapped THP: MADV_COLLAPSE works
/// whatever the THP policy, so on a kernel with THP (the area exists) a
/// small-page source is a failure, not a skip.
fn thp_source(p: &Pair) {
    for i in 0..p.src.npages() {
        fill(&p.src, i);
    }
    testing::thp::collapse_or_fail(p.src.addr(), p.src.len());
    assert_eq!(smaps::vma(p.src.addr()).expect("source VMA").anon_huge, p.src.len());
}

/// THP policy `madvise` with the key held: the destination's fault must
/// take the huge-PMD path that leaves its PMD empty, which `never` would
/// turn into a PTE table.
#[test]
#[file_serial(thp)]
fn move_pmd_moves_the_huge_page_whole() {
    require_root!("sets the THP policy");
    let p = try_skip!(pair(MemType::AnonThp, 1));
    let _policy = testing::thp::anon_pmd_policy("madvise");
    let ps = p.dst.page_size();
    let pmd = p.dst.len();
    thp_source(&p);
    // A fault on the THP-enabled destination leaves its PMD empty
    // (do_huge_pmd_anonymous_page hands over before installing anything).
    let r = Faulter::read(p.dst.addr() + 3);
    assert_eq!(next_pagefault(&p.uffd).1, p.dst.addr());
    assert_eq!(r.settle(), State::Blocked);
    // PMD-aligned src and dst, a PMD long, dst PMD empty: move_pages_huge_pmd.
    assert_eq!(p.uffd.r#move(p.dst.addr(), p.src.addr(), pmd, NONE), Ok(pmd as i64));
    assert_eq!(r.join(), pat(0, 3));
    assert_eq!(smaps::vma(p.dst.addr()).unwrap().anon_huge, pmd, "dst maps the THP");
    assert_eq!(smaps::vma(p.src.addr()).unwrap().anon_huge, 0);
    assert!(!pagemap::is_present(p.src.addr()));
    for i in 0..p.dst.npages() {
        assert_eq!(p.dst.read_page(i), expected(ps, i), "dst page {i}");
    }
}

#[test]
fn move_pmd_into_a_dst_with_page_table_splits_it() {
    require_features!(Features::MOVE);
    testing::register_support(MemType::AnonThp, MISSING).unwrap();
    let src = try_area!(Area::new(MemType::AnonThp, 1));
    let dst = try_area!(Area::new(MemType::AnonThp, 1));
    dontfork(&src);
    dontfork(&dst);
    let ps = dst.page_size();
    let pmd = dst.len();
    // A non-THP destination: a fault there allocates a PTE table before it
    // reaches the uffd, so move_pages must split the source THP and move
    // PTE by PTE.
    // SAFETY: our own area.
    unsafe { madvise(ptr(dst.addr()), pmd, MmapAdvise::MADV_NOHUGEPAGE) }.unwrap();
    let uffd = try_skip!(testing::open_uffd(Features::MOVE));
    uffd.register(dst.addr(), dst.len(), MISSING).unwrap();
    let p = Pair {
        dst,
        src,
        uffd: Arc::new(uffd),
    };
    thp_source(&p);
    let r = Faulter::read(p.dst.page(9) + 1);
    assert_eq!(next_pagefault(&p.uffd).1, p.dst.page(9));
    assert_eq!(r.settle(), State::Blocked);
    assert_eq!(p.uffd.r#move(p.dst.addr(), p.src.addr(), pmd, NONE), Ok(pmd as i64));
    assert_eq!(r.join(), pat(9, 1));
    assert_eq!(smaps::vma(p.dst.addr()).unwrap().anon_huge, 0, "dst got small pages");
    assert_eq!(smaps::vma(p.src.addr()).unwrap().anon_huge, 0);
    for i in 0..p.dst.npages() {
        assert_eq!(p.dst.read_page(i), expected(ps, i), "dst page {i}");
        assert!(!pagemap::is_present(p.src.page(i)), "src page {i} still mapped");
    }
}

#[test]
fn move_part_of_a_thp_splits_the_source() {
    let p = try_skip!(pair(MemType::AnonThp, 1));
    let ps = p.dst.page_size();
    thp_source(&p);
    // Shorter than a PMD: split_huge_pmd, then split_folio, then one PTE.
    assert_eq!(
        p.uffd.r#move(p.dst.page(5), p.src.page(5), 2 * ps, NONE),
        Ok(2 * ps as i64)
    );
    assert_eq!(p.dst.read_page(5), expected(ps, 5));
    assert_eq!(p.dst.read_page(6), expected(ps, 6));
    assert_eq!(
        smaps::vma(p.src.addr()).unwrap().anon_huge,
        0,
        "the source THP was split"
    );
    assert!(!pagemap::is_present(p.src.page(5)) && !pagemap::is_present(p.src.page(6)));
    assert_eq!(p.src.read_page(4), expected(ps, 4), "the rest of the THP stays");
    assert_eq!(p.src.read_page(7), expected(ps, 7));
}

/// The huge zero page is mapped only under a THP policy that covers the
/// area and with `use_zero_page` on: both are set here, with the key held.
#[test]
#[file_serial(thp)]
fn move_pmd_from_huge_zero_page() {
    require_features!(Features::MOVE);
    require_root!("sets the THP policy");
    let p = try_skip!(pair(MemType::AnonThp, 1));
    let _policy = testing::thp::anon_pmd_policy("madvise");
    let _zero = Knob::set(USE_ZERO_PAGE, "1").unwrap_or_else(|e| panic!("{e}"));
    let pmd = p.dst.len();
    // A read fault on an empty THP-enabled PMD maps the huge zero page.
    assert_eq!(testing::read_byte(p.src.addr()), 0);
    assert!(pagemap::is_present(p.src.addr()));
    assert_eq!(p.uffd.r#move(p.dst.addr(), p.src.addr(), pmd, NONE), Ok(pmd as i64));
    assert!(pagemap::is_present(p.dst.addr()));
    assert!(!pagemap::is_present(p.src.addr()));
    assert_eq!(p.dst.read_page(7), vec![0; p.dst.page_size()]);
    // Writing the moved zero page needs no uffd resolution.
    let w = Faulter::write(p.dst.addr(), 9);
    assert_eq!(w.settle(), State::Done);
    w.join();
    assert_no_event(&p.uffd);
}

#[test]
fn move_works_on_anon_dst_registered_wp_too() {
    require_features!(Features::MOVE | Features::PAGEFAULT_FLAG_WP);
    require_mode!(MemType::Anon, MISSING | RegisterMode::WP);
    let dst = try_area!(Area::new(MemType::Anon, 1));
    let src = try_area!(Area::new(MemType::Anon, 1));
    dontfork(&src);
    fill(&src, 0);
    let uffd = try_skip!(testing::open_uffd(Features::MOVE | Features::PAGEFAULT_FLAG_WP));
    uffd.register(dst.addr(), dst.len(), MISSING | RegisterMode::WP)
        .unwrap();
    let ps = dst.page_size();
    assert_eq!(uffd.r#move(dst.page(0), src.page(0), ps, NONE), Ok(ps as i64));
    // move_present_pte installs a writable PTE without the uffd-wp bit.
    assert_eq!(pagemap::entry(dst.page(0)).unwrap() & pagemap::PM_UFFD_WP, 0);
    assert_eq!(dst.read_page(0), expected(ps, 0));
}

#[rstest]
#[case::anon(MemType::Anon)]
fn move_overlapping_ranges_are_walked_page_by_page(#[case] mem: MemType) {
    let (a, uffd) = try_skip!(one_area(mem, &[1]));
    let ps = a.page_size();
    // [2,4) <- [1,3) with only page 1 present: move_pages has no overlap
    // check and walks forward, so the page moves 1 -> 2, then is found
    // again as the source of the second step and moves 2 -> 3.
    assert_eq!(uffd.r#move(a.page(2), a.page(1), 2 * ps, NONE), Ok(2 * ps as i64));
    assert!(!pagemap::is_present(a.page(1)));
    assert!(!pagemap::is_present(a.page(2)));
    assert_eq!(a.read_page(3), expected(ps, 1));
}

/// Two pages across a PMD boundary, from a source of small pages or of two
/// THPs (made by MADV_COLLAPSE): a move shorter than a PMD splits each
/// source THP it touches, then moves PTE by PTE across two page tables on
/// both sides.
#[rstest]
#[case::small_source(false)]
#[case::thp_source(true)]
fn move_across_a_pmd_boundary(#[case] thp: bool) {
    let pmd = try_skip!(testing::thp::pmd_size());
    let ps = mem::base_page_size();
    let b = pmd / ps;
    let p = try_skip!(pair(MemType::AnonThp, 2 * b));
    let no_huge = |a: &Area| {
        // SAFETY: our own area.
        unsafe { madvise(ptr(a.addr()), a.len(), MmapAdvise::MADV_NOHUGEPAGE) }.unwrap();
    };
    // Once pages move, every PMD range on both sides is partly empty, and
    // khugepaged (max_ptes_none 511 by default, no sleep under the flake
    // hunter) would collapse it whole, filling the holes the checks below
    // read. MADV_NOHUGEPAGE keeps it off without splitting the source THPs.
    if thp {
        thp_source(&p);
        no_huge(&p.src);
    } else {
        no_huge(&p.src);
        for i in b - 2..b + 2 {
            fill(&p.src, i);
        }
    }
    no_huge(&p.dst);
    assert_eq!(
        p.uffd.r#move(p.dst.page(b - 1), p.src.page(b - 1), 2 * ps, NONE),
        Ok(2 * ps as i64)
    );
    for i in [b - 1, b] {
        assert_eq!(p.dst.read_page(i), expected(ps, i), "dst page {i}");
        assert!(!pagemap::is_present(p.src.page(i)), "src page {i} still mapped");
    }
    for i in [b - 2, b + 1] {
        assert_eq!(p.src.read_page(i), expected(ps, i), "src page {i} stays");
        assert!(!pagemap::is_present(p.dst.page(i)), "dst page {i} filled");
    }
    assert_eq!(
        smaps::vma(p.src.addr()).unwrap().anon_huge,
        0,
        "no source PMD left whole"
    );
}
