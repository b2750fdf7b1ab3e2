//! Swap entries under userfaultfd: every ioctl that meets a page paged
//! out to swap, checked against what mm/userfaultfd.c and mm/memory.c
//! (6.12) do with it.
//!
//! - COPY and ZEROPAGE over a swapped-out page fail EEXIST: on private
//!   memory the PTE holds the swap entry (`mfill_atomic_install_pte` wants
//!   `pte_none`), on shared shmem the file holds it
//!   (`shmem_add_to_page_cache` finds the swap value). POISON checks the
//!   PTE only (`mfill_atomic_pte_poison`), so it fails EEXIST where the PTE
//!   is the swap entry: the private types.
//! - MOVE moves the swap entry itself (`move_swap_pte`), with the folio
//!   still in the swap cache (its anon rmap and index follow the
//!   destination) or without one.
//! - WRITEPROTECT sets and clears the uffd-wp bit of a swap entry without
//!   swapping it in (`change_pte_range`); on shared shmem, whose PTE is
//!   empty, it installs and removes a marker.
//! - A protected swap entry is swapped in protected (`do_swap_page` keeps
//!   `pte_swp_uffd_wp`): a read takes no fault, a write is a WP fault.
//!
//! Every page-out is proved (`testing::swap::page_out`: pagemap, smaps),
//! and the cases run on the memory types reclaim can swap: anon,
//! anon-thp, shmem, shmem-private. hugetlb is never paged out
//! (MADV_PAGEOUT refuses VM_HUGETLB), nor is guest_memfd (unevictable).

mod common;
use common::*;
use faulter::{Faulter, State, assert_no_event, next_pagefault};
use nix::errno::Errno;
use pagemap::{PM_PRESENT, PM_SWAP, PM_UFFD_WP};
use testing::progress::failed;
use testing::swap;

const MISSING: RegisterMode = RegisterMode::MISSING;

/// The swappable types whose PTE holds the swap entry.
#[template]
#[rstest]
#[case::anon(MemType::Anon)]
#[case::shmem_private(MemType::ShmemPrivate)]
#[case::anon_thp(MemType::AnonThp)]
fn private_swap_mem(#[case] mem: MemType) {}

fn pat(page: usize, i: usize) -> u8 {
    (page.wrapping_mul(29) + i.wrapping_mul(7) + 11) as u8
}

/// The whole area (for anon-thp: whole PMDs) written with [`pat`].
fn fill(area: &Area) {
    for p in 0..area.len() / area.page_size() {
        let base = area.page(p) as *mut u8;
        for i in 0..area.page_size() {
            // SAFETY: inside the area, which is writable.
            unsafe { *base.add(i) = pat(p, i) };
        }
    }
}

fn expected(ps: usize, page: usize) -> Vec<u8> {
    (0..ps).map(|i| pat(page, i)).collect()
}

/// A refused fill over page 1's swap entry changed nothing: the page is
/// still out (its pagemap bits are `out`), every page reads back its
/// contents, and no event was queued.
#[track_caller]
fn assert_left_alone(area: &Area, uffd: &Uffd, out: u64) {
    assert_eq!(bits(area.page(1)), out, "the page is still out");
    assert_contents(area);
    assert_no_event(uffd);
}

/// Every page of `area` holds its [`pat`]: reads swap everything back in.
#[track_caller]
fn assert_contents(area: &Area) {
    let ps = area.page_size();
    for p in 0..area.len() / ps {
        assert!(area.read_page(p) == expected(ps, p), "page {p} lost its contents");
    }
}

/// The present, swap and uffd-wp bits of the entry at `addr`.
fn bits(addr: usize) -> u64 {
    pagemap::entry(addr).expect("pagemap") & (PM_PRESENT | PM_SWAP | PM_UFFD_WP)
}

/// What pagemap shows of a paged-out page: a swap entry in a private
/// mapping, nothing in a shared one (the swap entry lives in the file).
fn out_bits(mem: MemType) -> u64 {
    if mem.is_shared() { 0 } else { PM_SWAP }
}

/// `npages` of `mem`, filled and paged out (proved), then registered in
/// `mode` on a fresh uffd with `features`. Err is the SKIP reason.
fn swapped_area(
    mem: MemType,
    npages: usize,
    features: Features,
    mode: RegisterMode,
) -> Result<(Area, std::sync::Arc<Uffd>), String> {
    swap::available()?;
    offers(features)?;
    testing::registered_area(mem, npages, features, mode, |a| {
        fill(a);
        swap::page_out(a.addr(), a.len());
    })
}

#[apply(small_page_mem)]
fn copy_over_swap_entry_fails_eexist(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(swapped_area(mem, 2, Features::empty(), MISSING));
    let ps = area.page_size();
    let src = testing::Buf::filled(ps, 0xc3);
    assert_eq!(
        uffd.copy(area.page(1), src.addr(), ps, CopyMode::empty()),
        failed(Errno::EEXIST)
    );
    assert_left_alone(&area, &uffd, out_bits(mem));
}

#[apply(small_page_mem)]
fn zeropage_over_swap_entry_fails_eexist(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(swapped_area(mem, 2, Features::empty(), MISSING));
    let ps = area.page_size();
    assert_eq!(
        uffd.zeropage(area.page(1), ps, ZeropageMode::empty()),
        failed(Errno::EEXIST)
    );
    assert_left_alone(&area, &uffd, out_bits(mem));
}

#[apply(private_swap_mem)]
fn poison_over_swap_entry_fails_eexist(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(swapped_area(mem, 2, Features::POISON, MISSING));
    let ps = area.page_size();
    assert_eq!(
        uffd.poison(area.page(1), ps, PoisonMode::empty()),
        failed(Errno::EEXIST)
    );
    assert_left_alone(&area, &uffd, PM_SWAP);
}

/// A MISSING-registered destination and a filled, unregistered source of
/// `mem`, both MADV_DONTFORK (a fork elsewhere in the process would make
/// the source's entries non-exclusive: EBUSY), on a uffd with
/// UFFD_FEATURE_MOVE. The source's page 1 is then paged out.
fn move_pair(mem: MemType) -> Result<(Area, Area, Uffd), String> {
    offers(Features::MOVE)?;
    testing::register_support(mem, MISSING)?;
    let dst = testing::area(mem, 2)?;
    let src = testing::area(mem, 2)?;
    for a in [&dst, &src] {
        testing::mm::madvise(a.addr(), a.len(), libc::MADV_DONTFORK).expect("MADV_DONTFORK");
    }
    fill(&src);
    let uffd = testing::open_uffd(Features::MOVE)?;
    uffd.register(dst.addr(), dst.len(), MISSING)
        .expect("UFFDIO_REGISTER(MISSING)");
    Ok((dst, src, uffd))
}

/// MOVE of page 1 of `src`, a swap entry, to page 1 of `dst`: the entry
/// moves, the source is left empty, the destination swaps the data in.
/// `cached`: whether the entry's folio is in the swap cache.
fn move_swap_entry(dst: &Area, src: &Area, uffd: &Uffd, cached: bool) {
    let ps = dst.page_size();
    assert_eq!(
        uffd.r#move(dst.page(1), src.page(1), ps, MoveMode::empty()),
        Ok(ps as i64)
    );
    assert_eq!(bits(dst.page(1)), PM_SWAP, "the swap entry moved to the destination");
    assert_eq!(bits(src.page(1)), 0, "the source PTE is empty");
    assert_eq!(
        swap::mincore(dst.page(1), ps),
        vec![cached as u8],
        "the swap cache kept (or still lacks) the folio"
    );
    assert!(
        dst.read_page(1) == expected(ps, 1),
        "the moved page swaps in with its contents"
    );
    assert_eq!(bits(dst.page(1)) & PM_PRESENT, PM_PRESENT);
    assert_eq!(src.read_page(1), vec![0; ps], "the source reads zeros");
    assert!(
        !pagemap::is_present(dst.page(0)),
        "the destination's page 0 is untouched"
    );
    assert_no_event(uffd);
}

#[apply(anon_mem)]
fn move_of_swapped_out_page_moves_the_swap_entry(#[case] mem: MemType) {
    try_skip!(swap::synchronous());
    let (dst, src, uffd) = try_skip!(move_pair(mem));
    swap::page_out_uncached(src.addr(), src.len());
    move_swap_entry(&dst, &src, &uffd, false);
}

#[apply(anon_mem)]
fn move_of_swap_cache_page_moves_entry_and_folio(#[case] mem: MemType) {
    try_skip!(swap::available());
    let (dst, src, uffd) = try_skip!(move_pair(mem));
    swap::page_out(src.addr(), src.len());
    swap::read_into_swap_cache(src.addr(), src.len());
    move_swap_entry(&dst, &src, &uffd, true);
}

#[apply(small_page_mem)]
fn writeprotect_of_swap_entries_sets_and_clears_the_bit(#[case] mem: MemType) {
    let features = caps::features_for(mem, RegisterMode::WP);
    let (area, uffd) = try_skip!(swapped_area(mem, 2, features, RegisterMode::WP));
    let (a, len) = (area.addr(), area.len());
    let swapped = swap::vma_swap_bytes(a);
    uffd.writeprotect(a, len, WriteprotectMode::WP).unwrap();
    let ps = mem::base_page_size();
    // Private: the swap entry carries the bit. Shared: a uffd-wp marker
    // fills the empty PTE, and pagemap shows a marker as a swap-format
    // entry (PM_SWAP) too.
    for p in (a..a + len).step_by(ps) {
        assert_eq!(bits(p), PM_SWAP | PM_UFFD_WP, "protected at {p:#x}");
    }
    assert_eq!(swap::vma_swap_bytes(a), swapped, "protecting swapped nothing in");
    uffd.writeprotect(a, len, WriteprotectMode::empty()).unwrap();
    for p in (a..a + len).step_by(ps) {
        assert_eq!(bits(p), out_bits(mem), "un-protected at {p:#x}");
    }
    assert_eq!(swap::vma_swap_bytes(a), swapped, "un-protecting swapped nothing in");
    assert_contents(&area);
    for p in (a..a + len).step_by(ps) {
        assert_eq!(bits(p), PM_PRESENT, "swapped in unprotected at {p:#x}");
    }
    assert_no_event(&uffd);
}

#[apply(small_page_mem)]
fn swap_in_of_protected_entry_keeps_wp_and_write_faults(#[case] mem: MemType) {
    let features = caps::features_for(mem, RegisterMode::WP);
    let (area, uffd) = try_skip!(swapped_area(mem, 2, features, RegisterMode::WP));
    let ps = area.page_size();
    uffd.writeprotect(area.addr(), area.len(), WriteprotectMode::WP)
        .unwrap();
    // A read swaps page 0 in, still protected, and takes no fault.
    assert!(
        area.read_page(0) == expected(ps, 0),
        "page 0 swaps in with its contents"
    );
    assert_eq!(bits(area.page(0)), PM_PRESENT | PM_UFFD_WP, "swapped in protected");
    assert_no_event(&uffd);
    // A write to page 1 swaps it in and is a WP fault on it.
    let w = Faulter::write(area.page(1) + 8, 0xee);
    assert_eq!(
        next_pagefault(&uffd),
        (PagefaultFlags::WP | PagefaultFlags::WRITE, area.page(1))
    );
    assert_eq!(w.settle(), State::Blocked);
    assert_eq!(bits(area.page(1)), PM_PRESENT | PM_UFFD_WP, "swapped in protected");
    assert!(
        area.read_page(1) == expected(ps, 1),
        "the blocked write changed nothing"
    );
    uffd.writeprotect(area.page(1), ps, WriteprotectMode::empty()).unwrap();
    w.join();
    let mut want = expected(ps, 1);
    want[8] = 0xee;
    assert!(area.read_page(1) == want, "the write landed once un-protected");
    assert_eq!(bits(area.page(1)), PM_PRESENT);
    assert!(area.read_page(0) == expected(ps, 0));
    assert_no_event(&uffd);
}
