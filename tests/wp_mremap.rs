//! mremap() of write-protected memory: without UFFD_FEATURE_EVENT_REMAP the
//! moved VMA leaves the uffd behind, so no PTE may keep the WP bit (a stale
//! bit would make a later registration see bogus protection); with
//! EVENT_REMAP the registration and the bits move, and a REMAP message tells
//! the monitor where. Run on base pages, every THP/mTHP size the kernel
//! offers (anon private and anon shared), and every hugetlb size.
//!
//! Cases change THP sysfs knobs and the hugetlb pools: all take
//! `#[file_serial(thp)]` (a lock across processes) and put the knobs back on drop.

mod common;
use common::*;
use nix::errno::Errno;
use serial_test::file_serial;
use std::os::unix::fs::FileExt;
use std::time::Duration;
use uffdtest::knob::Knob;
use uffdtest::testing::mm::Reservation;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Share {
    Private,
    Shared,
}

fn map_flags(share: Share) -> i32 {
    match share {
        Share::Private => libc::MAP_PRIVATE,
        Share::Shared => libc::MAP_SHARED,
    }
}

/// Pins THP to exactly `kb` for anon `share` memory: the size's own knob
/// to `always` (shared anon memory is shmem: `shmem_enabled`).
fn thp_only(kb: usize, share: Share) -> Result<Knob, String> {
    let dir = format!("/sys/kernel/mm/transparent_hugepage/hugepages-{kb}kB");
    require_dir(&dir, kb)?;
    let (file, value) = match share {
        Share::Private => ("enabled", "always"),
        Share::Shared => ("shmem_enabled", "always"),
    };
    let path = format!("{dir}/{file}");
    if !std::path::Path::new(&path).exists() {
        return Err(format!(
            "kernel offers {kb}kB folios only for shmem files, not {share:?} anon memory (no {path})"
        ));
    }
    Knob::set(path, value).map_err(|e| e.to_string())
}

fn require_dir(dir: &str, kb: usize) -> Result<(), String> {
    if std::path::Path::new(dir).is_dir() {
        Ok(())
    } else {
        Err(format!("kernel offers no {kb}kB THP size"))
    }
}

/// Maps one folio of `size` bytes at a `size`-aligned address and fills it;
/// `hugetlb` adds MAP_HUGETLB with that page size (the caller made sure a
/// huge page of that size is free: [`one_free_hugepage`]).
fn one_folio(size: usize, share: Share, hugetlb: bool) -> Reservation {
    let r = mapping(size, share, hugetlb);
    // One write faults in the whole folio; every page must then be there.
    testing::write_byte(r.addr, 0);
    let e = entries(r.addr, size);
    let missing = e.iter().filter(|&&e| e & pagemap::PM_PRESENT == 0).count();
    assert_eq!(
        missing,
        0,
        "a {}kB folio was not allocated by one fault ({share:?})",
        size / 1024
    );
    // SAFETY: the folio is mapped writable.
    unsafe { std::ptr::write_bytes(r.addr as *mut u8, 1, size) };
    r
}

/// `size` bytes at a `size`-aligned address, not populated. A refusal is a
/// failure: for hugetlb the pool was checked first.
fn mapping(size: usize, share: Share, hugetlb: bool) -> Reservation {
    let r = Reservation::new(size, size);
    let mut flags = map_flags(share) | libc::MAP_ANONYMOUS | libc::MAP_FIXED;
    if hugetlb {
        flags |= libc::MAP_HUGETLB | ((size.trailing_zeros() as i32) << libc::MAP_HUGE_SHIFT);
    }
    // SAFETY: MAP_FIXED over our own reservation.
    let p = unsafe { libc::mmap(r.addr as *mut _, size, libc::PROT_READ | libc::PROT_WRITE, flags, -1, 0) };
    assert_ne!(
        p,
        libc::MAP_FAILED,
        "mmap of a {}kB folio ({share:?}, hugetlb {hugetlb}): {}",
        size / 1024,
        Errno::last()
    );
    r
}

/// The pagemap entries of every base page of `[addr, addr+len)`, in one read.
fn entries(addr: usize, len: usize) -> Vec<u64> {
    let ps = mem::base_page_size();
    let n = len / ps;
    let f = std::fs::File::open("/proc/self/pagemap").expect("pagemap");
    let mut b = vec![0u8; n * 8];
    f.read_exact_at(&mut b, (addr / ps * 8) as u64).expect("read pagemap");
    b.chunks_exact(8)
        .map(|c| u64::from_ne_bytes(c.try_into().unwrap()))
        .collect()
}

/// Base pages of the range whose WP bit differs from `want`.
fn wp_mismatches(addr: usize, len: usize, want: bool) -> usize {
    entries(addr, len)
        .iter()
        .filter(|&&e| (e & pagemap::PM_UFFD_WP != 0) != want)
        .count()
}

/// Base pages of `[addr, addr+len)` that are not all `fill`, except that
/// byte 0 of the range holds `first`: every byte of every page is compared
/// (a page at a time, so a 1G folio stays quick in a debug build).
fn wrong_pages(addr: usize, len: usize, fill: u8, first: u8) -> usize {
    let ps = mem::base_page_size();
    let want = vec![fill; ps];
    let mut head = want.clone();
    head[0] = first;
    (0..len / ps)
        .filter(|&i| {
            // SAFETY: callers pass a mapped, readable range no one writes meanwhile.
            let page = unsafe { std::slice::from_raw_parts((addr + i * ps) as *const u8, ps) };
            page != if i == 0 { &head[..] } else { &want[..] }
        })
        .count()
}

fn mremap_to(from: usize, len: usize, to: usize) -> usize {
    // SAFETY: moves our own mapping onto our own reservation.
    let p = unsafe { libc::mremap(from as *mut _, len, len, libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED, to) };
    assert_ne!(p, libc::MAP_FAILED, "mremap: {}", Errno::last());
    p as usize
}

/// Pages the folio out with MADV_PAGEOUT and checks every PTE became a
/// swap entry. Err is the SKIP reason (no swap device, from the caps
/// probe); a folio that does not leave memory is a failure. Reclaim may
/// skip a folio another CPU briefly holds, so the advice is repeated a few
/// times first.
fn swap_out(addr: usize, len: usize) -> Result<(), String> {
    if !caps::caps().swap {
        return Err("no active swap device: MADV_PAGEOUT cannot swap out".into());
    }
    let swapped = || {
        entries(addr, len)
            .iter()
            .filter(|&&e| e & pagemap::PM_SWAP != 0)
            .count()
    };
    for _ in 0..10 {
        // SAFETY: our own mapping.
        let r = unsafe { libc::madvise(addr as *mut _, len, libc::MADV_PAGEOUT) };
        Errno::result(r).unwrap_or_else(|e| panic!("MADV_PAGEOUT: {e}"));
        if swapped() * mem::base_page_size() == len {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    panic!(
        "MADV_PAGEOUT left {} of {} pages in memory (swap full?)",
        len / mem::base_page_size() - swapped(),
        len / mem::base_page_size()
    );
}

/// The flow every case shares: protect one folio, optionally swap it out,
/// see the bit on every PTE, move it, and see the bit gone everywhere.
fn protect_move_check(folio: Reservation, swapout: bool) {
    let (a, len) = (folio.addr, folio.len);
    let uffd = try_skip!(testing::open_uffd(Features::empty()));
    uffd.register(a, len, RegisterMode::WP).expect("UFFDIO_REGISTER(WP)");
    uffd.writeprotect(a, len, WriteprotectMode::WP)
        .expect("UFFDIO_WRITEPROTECT");
    if swapout {
        try_skip!(swap_out(a, len));
    }
    assert_eq!(wp_mismatches(a, len, true), 0, "pages without the WP bit before mremap");
    let target = Reservation::new(len, len);
    let to = mremap_to(a, len, target.addr);
    std::mem::forget(folio);
    assert_eq!(to, target.addr);
    assert_eq!(
        wp_mismatches(to, len, false),
        0,
        "pages still WP after mremap without EVENT_REMAP"
    );
    assert_eq!(
        testing::smaps::uffd_modes(to),
        RegisterMode::empty(),
        "the moved VMA left the uffd"
    );
    assert_eq!(wrong_pages(to, len, 1, 1), 0, "bytes that did not move along");
    // Nothing protects it any more: a write goes through.
    testing::write_byte(to, 2);
    faulter::assert_no_event(&uffd);
    assert_eq!(wrong_pages(to, len, 1, 2), 0);
}

#[rstest]
#[case::private(Share::Private)]
#[case::shared(Share::Shared)]
#[file_serial(thp)]
fn mremap_clears_wp_on_base_pages(#[case] share: Share) {
    require_mode!(MemType::Anon, RegisterMode::WP);
    if share == Share::Shared {
        require_mode!(MemType::Shmem, RegisterMode::WP);
    }
    let ps = mem::base_page_size();
    let folio = one_folio(ps, share, false);
    protect_move_check(folio, false);
}

#[rstest]
#[case::private(Share::Private)]
#[case::shared(Share::Shared)]
#[file_serial(thp)]
fn mremap_clears_wp_on_swapped_out_base_pages(#[case] share: Share) {
    require_mode!(MemType::Anon, RegisterMode::WP);
    if share == Share::Shared {
        require_mode!(MemType::Shmem, RegisterMode::WP);
    }
    require!(caps::caps().swap, "no active swap device: the swap-out case needs one");
    let folio = one_folio(mem::base_page_size(), share, false);
    protect_move_check(folio, true);
}

fn thp_case(kb: usize, share: Share, swapout: bool) {
    require_mode!(MemType::Anon, RegisterMode::WP);
    require_mode!(MemType::Shmem, RegisterMode::WP);
    require!(caps::caps().thp.is_some(), "kernel has no THP");
    if swapout {
        require!(caps::caps().swap, "no active swap device: the swap-out case needs one");
    }
    let _knob = try_skip!(thp_only(kb, share));
    let folio = one_folio(kb * 1024, share, false);
    protect_move_check(folio, swapout);
}

#[apply(thp_sizes)]
#[file_serial(thp)]
fn mremap_clears_wp_on_private_thp(#[case] kb: usize) {
    thp_case(kb, Share::Private, false);
}

#[apply(thp_sizes)]
#[file_serial(thp)]
fn mremap_clears_wp_on_shared_thp(#[case] kb: usize) {
    thp_case(kb, Share::Shared, false);
}

#[apply(thp_sizes)]
#[file_serial(thp)]
fn mremap_clears_wp_on_swapped_out_private_thp(#[case] kb: usize) {
    thp_case(kb, Share::Private, true);
}

#[apply(thp_sizes)]
#[file_serial(thp)]
fn mremap_clears_wp_on_swapped_out_shared_thp(#[case] kb: usize) {
    thp_case(kb, Share::Shared, true);
}

/// A huge page made free for a case: the pool's raise (put back first), and
/// for 1 GiB pages the lease every other 1 GiB user of the suite waits on,
/// so no case beside this one counts on a page this one takes.
type FreeHugepage = (Option<Knob>, Option<std::sync::Arc<mem::hugetlb::Lease>>);

/// Makes one huge page of `kb` free for the case, raising that size's pool
/// by one if needed (restored on drop).
fn one_free_hugepage(kb: usize) -> Result<FreeHugepage, String> {
    let lease = if kb == 1 << 20 {
        Some(mem::hugetlb::lease_gigantic().map_err(|e| format!("lease the 1 GiB pool: {e}"))?)
    } else {
        None
    };
    Ok((raise_for_one(kb)?, lease))
}

fn raise_for_one(kb: usize) -> Result<Option<Knob>, String> {
    let dir = format!("/sys/kernel/mm/hugepages/hugepages-{kb}kB");
    if !std::path::Path::new(&dir).is_dir() {
        return Err(format!("kernel has no {kb}kB hugetlb size"));
    }
    let read = |f: &str| -> usize {
        std::fs::read_to_string(format!("{dir}/{f}"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    };
    // Free pages include those reserved by mappings not yet faulted in
    // (another process's): only the rest can be had.
    let unreserved = || read("free_hugepages").saturating_sub(read("resv_hugepages"));
    if unreserved() > 0 {
        return Ok(None);
    }
    if !caps::caps().root {
        return Err(format!("no free {kb}kB huge page and not root to make one"));
    }
    let nr = read("nr_hugepages");
    let knob = Knob::set(format!("{dir}/nr_hugepages"), &(nr + 1).to_string()).map_err(|e| e.to_string())?;
    if unreserved() == 0 {
        return Err(format!(
            "could not allocate a {kb}kB huge page (not enough free contiguous memory)"
        ));
    }
    Ok(Some(knob))
}

/// Cases named for the memory types, so `--mem hugetlb-1g` selects the
/// 1 GiB pair and a run leaves it out unless asked, as every 1 GiB case
/// (the kernel clears the whole GiB at the fault: seconds).
#[rstest]
#[case::hugetlb_private(2048, Share::Private)]
#[case::hugetlb(2048, Share::Shared)]
#[case::hugetlb_1g_private(1048576, Share::Private)]
#[case::hugetlb_1g(1048576, Share::Shared)]
#[file_serial(thp)]
fn mremap_clears_wp_on_hugetlb(#[case] kb: usize, #[case] share: Share) {
    require_mode!(MemType::Hugetlb, RegisterMode::WP);
    require!(
        kb < 1048576 || std::env::var_os(mem::GIGANTIC_ENV).is_some(),
        "hugetlb-1g runs on request only: uffdtest run --mem hugetlb-1g ({}=1 under cargo test)",
        mem::GIGANTIC_ENV
    );
    let _pool = try_skip!(one_free_hugepage(kb));
    let folio = one_folio(kb * 1024, share, true);
    protect_move_check(folio, false);
}

/// With EVENT_REMAP the registration follows the VMA: the bits stay, and
/// mremap waits until the monitor has read the REMAP message.
fn remap_event_case(folio: Reservation) {
    let (a, len) = (folio.addr, folio.len);
    let uffd = std::sync::Arc::new(try_skip!(testing::open_uffd(Features::EVENT_REMAP)));
    uffd.register(a, len, RegisterMode::WP).expect("UFFDIO_REGISTER(WP)");
    uffd.writeprotect(a, len, WriteprotectMode::WP).unwrap();
    let u = uffd.clone();
    let reader = std::thread::spawn(move || u.read_event(Some(Duration::from_secs(20))));
    let target = Reservation::new(len, len);
    let to = mremap_to(a, len, target.addr);
    std::mem::forget(folio);
    match reader.join().expect("reader thread").expect("read(uffd)") {
        Some(Event::Remap { from, to: t, len: l }) => {
            assert_eq!((from as usize, t as usize, l as usize), (a, to, len));
        }
        other => panic!("expected UFFD_EVENT_REMAP, got {other:?}"),
    }
    assert_eq!(
        wp_mismatches(to, len, true),
        0,
        "pages lost the WP bit despite EVENT_REMAP"
    );
    assert_eq!(
        testing::smaps::uffd_modes(to),
        RegisterMode::WP,
        "the registration moved along"
    );
    // Still protected: a write faults at the new address.
    let w = faulter::Faulter::write(to, 9);
    let (flags, addr) = faulter::next_pagefault(&uffd);
    assert_eq!((flags, addr), (PagefaultFlags::WP | PagefaultFlags::WRITE, to));
    assert_eq!(wrong_pages(to, len, 1, 1), 0, "bytes that did not move along");
    uffd.writeprotect(to, len, WriteprotectMode::empty()).unwrap();
    assert_eq!(w.join(), 9);
    assert_eq!(wp_mismatches(to, len, false), 0);
    assert_eq!(wrong_pages(to, len, 1, 9), 0);
}

#[rstest]
#[case::private(Share::Private)]
#[case::shared(Share::Shared)]
#[file_serial(thp)]
fn mremap_with_event_remap_keeps_wp_on_base_pages(#[case] share: Share) {
    require_mode!(MemType::Anon, RegisterMode::WP);
    require_mode!(MemType::Shmem, RegisterMode::WP);
    require_features!(Features::EVENT_REMAP);
    let len = 4 * mem::base_page_size();
    let pages = mapping(len, share, false);
    // SAFETY: our fresh writable mapping.
    unsafe { std::ptr::write_bytes(pages.addr as *mut u8, 1, len) };
    remap_event_case(pages);
}

#[rstest]
#[case::private(Share::Private)]
#[case::shared(Share::Shared)]
#[file_serial(thp)]
fn mremap_with_event_remap_keeps_wp_on_hugetlb(#[case] share: Share) {
    require_mode!(MemType::Hugetlb, RegisterMode::WP);
    require_features!(Features::EVENT_REMAP);
    let Some(hs) = mem::hugetlb::default_size() else {
        skip!("kernel has no hugetlb")
    };
    let _pool = try_skip!(one_free_hugepage(hs / 1024));
    remap_event_case(one_folio(hs, share, true));
}

#[apply(thp_sizes)]
#[file_serial(thp)]
fn mremap_with_event_remap_keeps_wp_on_private_thp(#[case] kb: usize) {
    require_mode!(MemType::Anon, RegisterMode::WP);
    require_features!(Features::EVENT_REMAP);
    let _knob = try_skip!(thp_only(kb, Share::Private));
    remap_event_case(one_folio(kb * 1024, Share::Private, false));
}

#[rstest]
#[case::private(Share::Private)]
#[case::shared(Share::Shared)]
#[file_serial(thp)]
fn mremap_of_part_clears_wp_only_on_the_moved_part(#[case] share: Share) {
    require_mode!(MemType::Anon, RegisterMode::WP);
    require_mode!(MemType::Shmem, RegisterMode::WP);
    let ps = mem::base_page_size();
    let pages = mapping(4 * ps, share, false);
    // SAFETY: our fresh writable mapping.
    unsafe { std::ptr::write_bytes(pages.addr as *mut u8, 1, 4 * ps) };
    let a = pages.addr;
    let uffd = try_skip!(testing::open_uffd(Features::empty()));
    uffd.register(a, 4 * ps, RegisterMode::WP).unwrap();
    uffd.writeprotect(a, 4 * ps, WriteprotectMode::WP).unwrap();
    let target = Reservation::new(2 * ps, ps);
    let to = mremap_to(a + ps, 2 * ps, target.addr);
    assert_eq!(wp_mismatches(to, 2 * ps, false), 0, "the moved pages lost the bit");
    assert_eq!(wrong_pages(to, 2 * ps, 1, 1), 0, "bytes that did not move along");
    assert_eq!(testing::smaps::uffd_modes(to), RegisterMode::empty());
    for stay in [a, a + 3 * ps] {
        assert_eq!(wp_mismatches(stay, ps, true), 0, "page at {stay:#x} stayed protected");
        assert_eq!(
            testing::smaps::uffd_modes(stay),
            RegisterMode::WP,
            "page at {stay:#x} stayed registered"
        );
    }
    faulter::assert_no_event(&uffd);
    // Unmap the pieces left, not the hole another thread may have reused.
    std::mem::forget(pages);
    drop(Reservation { addr: a, len: ps });
    drop(Reservation {
        addr: a + 3 * ps,
        len: ps,
    });
}
