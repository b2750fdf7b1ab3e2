//! UFFD_FEATURE_WP_ASYNC with PAGEMAP_SCAN: the kernel resolves WP faults
//! itself (no messages), and PAGEMAP_SCAN reads back which pages were
//! written and re-protects them (PM_SCAN_WP_MATCHING): dirty tracking.
//! Argument checks from fs/proc/task_mmu.c `pagemap_scan_get_args` and
//! `pagemap_scan_test_walk`.

mod common;
use common::*;
use faulter::{Faulter, State, assert_no_event};
use nix::errno::Errno;
use pagemap_scan::*;
use uffdtest::testing::mm::Reservation;

const WP: WriteprotectMode = WriteprotectMode::WP;

fn async_features(mem: MemType) -> Features {
    let f = Features::PAGEFAULT_FLAG_WP | Features::WP_ASYNC;
    if mem.is_anon() {
        f
    } else {
        f | Features::WP_HUGETLBFS_SHMEM
    }
}

/// `npages` of `mem` (populated when `populate`), registered WP on a
/// WP_ASYNC uffd and write-protected whole.
fn async_area(mem: MemType, npages: usize, populate: bool) -> Result<(Area, Uffd), String> {
    testing::register_support(mem, RegisterMode::WP)?;
    let area = testing::area(mem, npages)?;
    if populate {
        area.populate(0x10);
    }
    let uffd = testing::open_uffd(async_features(mem))?;
    uffd.register(area.addr(), area.len(), RegisterMode::WP)
        .expect("UFFDIO_REGISTER(WP)");
    uffd.writeprotect(area.addr(), area.len(), WP)
        .expect("UFFDIO_WRITEPROTECT");
    Ok((area, uffd))
}

fn pm() -> Pagemap {
    Pagemap::open_self().expect("open /proc/self/pagemap")
}

/// PAGEMAP_SCAN came in 6.7 (with UFFD_FEATURE_WP_ASYNC); older kernels
/// answer ENOTTY. Err is the SKIP reason.
fn scan_support() -> Result<(), String> {
    let mut arg = pm_scan_arg {
        size: std::mem::size_of::<pm_scan_arg>() as u64,
        ..Default::default()
    };
    match pm().scan_raw(&mut arg) {
        Err(Errno::ENOTTY) => Err("kernel has no PAGEMAP_SCAN ioctl on /proc/PID/pagemap (6.7)".into()),
        _ => Ok(()),
    }
}

/// Written pages of `[start, end)` as `(start, end)` runs.
fn written(start: usize, end: usize) -> Vec<(usize, usize)> {
    let s = Scan {
        start,
        end,
        category_mask: PAGE_IS_WRITTEN,
        return_mask: PAGE_IS_WRITTEN,
        ..Default::default()
    };
    let out = pm().scan(&s, 64).expect("PAGEMAP_SCAN");
    for r in &out.regions {
        assert_eq!(r.categories, PAGE_IS_WRITTEN, "{r:?}");
    }
    assert_eq!(out.walk_end, end, "a full scan walks to the end");
    out.regions.iter().map(|r| (r.start as usize, r.end as usize)).collect()
}

/// Writes one byte to each page of `pages`, checking each write completes
/// on its own (no message, no blocking).
fn write_pages(area: &Area, pages: &[usize], byte: u8) {
    for &i in pages {
        let w = Faulter::write(area.page(i) + 1, byte);
        assert_eq!(w.settle(), State::Done, "write to page {i} blocked under WP_ASYNC");
        assert_eq!(w.join(), byte);
    }
}

#[apply(all_mem)]
fn writes_resolve_without_messages_and_clear_the_bit(#[case] mem: MemType) {
    require_features!(async_features(mem));
    let (area, uffd) = try_skip!(async_area(mem, 4, true));
    for i in 0..4 {
        assert!(pagemap::is_uffd_wp(area.page(i)), "page {i} protected");
    }
    write_pages(&area, &[1, 3], 0x77);
    assert_no_event(&uffd);
    let bits: Vec<bool> = (0..4).map(|i| pagemap::is_uffd_wp(area.page(i))).collect();
    assert_eq!(bits, [true, false, true, false]);
    for i in 0..4 {
        let want = if i % 2 == 1 { 0x77 } else { 0x10 };
        assert_eq!(testing::read_byte(area.page(i) + 1), want, "page {i}");
    }
}

#[apply(all_mem)]
fn scan_reports_exactly_the_written_pages(#[case] mem: MemType) {
    require_features!(async_features(mem));
    let (area, _uffd) = try_skip!(async_area(mem, 6, true));
    let (start, end) = (area.addr(), area.page(5) + area.page_size());
    assert_eq!(written(start, end), []);
    write_pages(&area, &[1, 3, 4], 0x21);
    assert_eq!(
        written(start, end),
        [(area.page(1), area.page(2)), (area.page(3), area.page(5))]
    );
    // Reading back does not re-arm anything.
    assert_eq!(written(start, end).len(), 2);
}

#[apply(all_mem)]
fn unpopulated_pages_count_as_protected(#[case] mem: MemType) {
    // WP_ASYNC brings WP_UNPOPULATED: markers on empty pages, so a first
    // write is seen as a write, not a fresh unprotected page.
    require_features!(async_features(mem));
    let (area, uffd) = try_skip!(async_area(mem, 4, false));
    for i in 0..4 {
        let e = pagemap::entry(area.page(i)).unwrap();
        assert_eq!(
            e & (pagemap::PM_UFFD_WP | pagemap::PM_PRESENT),
            pagemap::PM_UFFD_WP,
            "page {i}: {e:#x}"
        );
    }
    write_pages(&area, &[2], 0x31);
    assert_no_event(&uffd);
    assert_eq!(
        written(area.addr(), area.page(3) + area.page_size()),
        [(area.page(2), area.page(3))]
    );
}

#[apply(all_mem)]
fn wp_matching_reprotects_what_it_reports(#[case] mem: MemType) {
    require_features!(async_features(mem));
    let (area, uffd) = try_skip!(async_area(mem, 5, true));
    let (start, end) = (area.addr(), area.page(4) + area.page_size());
    write_pages(&area, &[0, 1, 3], 0x41);
    let s = Scan {
        flags: PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
        start,
        end,
        category_mask: PAGE_IS_WRITTEN,
        return_mask: PAGE_IS_WRITTEN,
        ..Default::default()
    };
    let out = pm().scan(&s, 16).unwrap();
    let runs: Vec<_> = out.regions.iter().map(|r| (r.start as usize, r.end as usize)).collect();
    assert_eq!(runs, [(area.page(0), area.page(2)), (area.page(3), area.page(4))]);
    for i in 0..5 {
        assert!(pagemap::is_uffd_wp(area.page(i)), "page {i} re-protected");
    }
    assert_eq!(written(start, end), []);
    // The next round sees only the new writes.
    write_pages(&area, &[2], 0x42);
    assert_eq!(written(start, end), [(area.page(2), area.page(3))]);
    assert_no_event(&uffd);
    for (i, want) in [0x41, 0x41, 0x42, 0x41, 0x10].into_iter().enumerate() {
        assert_eq!(testing::read_byte(area.page(i) + 1), want, "page {i}");
    }
}

#[apply(all_mem)]
fn max_pages_stops_the_walk(#[case] mem: MemType) {
    require_features!(async_features(mem));
    let (area, _uffd) = try_skip!(async_area(mem, 4, true));
    write_pages(&area, &[0, 1, 2, 3], 0x51);
    let ppp = (area.page_size() / mem::base_page_size()) as u64;
    let s = Scan {
        start: area.addr(),
        end: area.page(3) + area.page_size(),
        max_pages: 2 * ppp,
        category_mask: PAGE_IS_WRITTEN,
        return_mask: PAGE_IS_WRITTEN,
        ..Default::default()
    };
    let out = pm().scan(&s, 16).unwrap();
    let runs: Vec<_> = out.regions.iter().map(|r| (r.start as usize, r.end as usize)).collect();
    assert_eq!(runs, [(area.page(0), area.page(2))]);
    assert_eq!(out.walk_end, area.page(2));
}

#[apply(all_mem)]
fn full_region_vector_stops_the_walk(#[case] mem: MemType) {
    require_features!(async_features(mem));
    let (area, _uffd) = try_skip!(async_area(mem, 5, true));
    write_pages(&area, &[0, 2, 4], 0x61);
    let s = Scan {
        start: area.addr(),
        end: area.page(4) + area.page_size(),
        category_mask: PAGE_IS_WRITTEN,
        return_mask: PAGE_IS_WRITTEN,
        ..Default::default()
    };
    let out = pm().scan(&s, 2).unwrap();
    let runs: Vec<_> = out.regions.iter().map(|r| (r.start as usize, r.end as usize)).collect();
    assert_eq!(runs, [(area.page(0), area.page(1)), (area.page(2), area.page(3))]);
    // The walk ends where the third run would have started.
    assert_eq!(out.walk_end, area.page(4));
}

#[apply(all_mem)]
fn wpallowed_marks_only_async_wp_vmas(#[case] mem: MemType) {
    require_features!(async_features(mem));
    let (area, _uffd) = try_skip!(async_area(mem, 2, true));
    let other = try_area!(Area::new(mem, 2));
    other.populate(1);
    let scan = |start: usize, len: usize| {
        let s = Scan {
            start,
            end: start + len,
            category_mask: PAGE_IS_WPALLOWED,
            return_mask: PAGE_IS_WPALLOWED,
            ..Default::default()
        };
        pm().scan(&s, 8).unwrap().regions
    };
    let r = scan(area.addr(), area.len());
    assert_eq!(r.len(), 1);
    assert_eq!(
        (r[0].start as usize, r[0].end as usize, r[0].categories),
        (area.addr(), area.addr() + area.len(), PAGE_IS_WPALLOWED)
    );
    assert_eq!(scan(other.addr(), other.len()), []);
}

#[apply(all_mem)]
fn check_wpasync_on_plain_vma_fails_eperm(#[case] mem: MemType) {
    try_skip!(scan_support());
    let area = try_area!(Area::new(mem, 1));
    area.populate(1);
    for flags in [PM_SCAN_CHECK_WPASYNC, PM_SCAN_CHECK_WPASYNC | PM_SCAN_WP_MATCHING] {
        let s = Scan {
            flags,
            start: area.addr(),
            end: area.addr() + area.len(),
            category_mask: PAGE_IS_WRITTEN,
            return_mask: PAGE_IS_WRITTEN,
            ..Default::default()
        };
        assert_eq!(
            pm().scan(&s, 8).map(|o| o.regions),
            Err(Errno::EPERM),
            "flags {flags:#x}"
        );
    }
    assert!(!pagemap::is_uffd_wp(area.page(0)));
}

#[apply(all_mem)]
fn wp_matching_skips_vmas_without_async_wp(#[case] mem: MemType) {
    // A synchronous WP registration is not WPALLOWED: WP_MATCHING passes
    // over it silently and protects nothing.
    require_mode!(mem, RegisterMode::WP);
    try_skip!(scan_support());
    let area = try_area!(Area::new(mem, 1));
    area.populate(1);
    let mut f = Features::PAGEFAULT_FLAG_WP;
    if !mem.is_anon() {
        f |= Features::WP_HUGETLBFS_SHMEM;
    }
    let uffd = try_skip!(testing::open_uffd(f));
    uffd.register(area.addr(), area.len(), RegisterMode::WP).unwrap();
    let s = Scan {
        flags: PM_SCAN_WP_MATCHING,
        start: area.addr(),
        end: area.addr() + area.len(),
        category_mask: PAGE_IS_WRITTEN,
        return_mask: PAGE_IS_WRITTEN,
        ..Default::default()
    };
    assert_eq!(pm().scan(&s, 8).unwrap().regions, []);
    assert!(!pagemap::is_uffd_wp(area.page(0)));
    let w = Faulter::write(area.page(0), 2);
    assert_eq!(w.settle(), State::Done);
    assert_eq!(w.join(), 2);
    assert_no_event(&uffd);
}

#[test]
fn wp_async_requested_alone_is_granted_with_wp_unpopulated() {
    require_features!(Features::PAGEFAULT_FLAG_WP | Features::WP_ASYNC);
    // The implied WP_UNPOPULATED is visible in its effect: markers on an
    // unpopulated anon page, with only WP_ASYNC|PAGEFAULT_FLAG_WP asked for.
    let (area, _uffd) = try_skip!(async_area(MemType::Anon, 1, false));
    assert!(pagemap::is_uffd_wp(area.page(0)));
}

/// Argument checks of pagemap_scan_get_args, in its order.
mod args {
    use super::*;

    fn base(area: &Area) -> pm_scan_arg {
        pm_scan_arg {
            size: std::mem::size_of::<pm_scan_arg>() as u64,
            start: area.addr() as u64,
            end: (area.addr() + area.len()) as u64,
            category_mask: PAGE_IS_WRITTEN,
            return_mask: PAGE_IS_WRITTEN,
            ..Default::default()
        }
    }

    fn area() -> Area {
        let a = testing::area(MemType::Anon, 2).expect("anon area");
        a.populate(1);
        a
    }

    /// PAGEMAP_SCAN over `a` with [`base`]'s arguments as `change` leaves
    /// them: one argument off, the rest valid.
    fn scan_changed(a: &Area, change: impl FnOnce(&mut pm_scan_arg)) -> nix::Result<i32> {
        let mut arg = base(a);
        change(&mut arg);
        pm().scan_raw(&mut arg)
    }

    #[test]
    fn valid_arguments_succeed() {
        try_skip!(scan_support());
        let a = area();
        let mut v = [page_region::default(); 4];
        let mut arg = base(&a);
        arg.vec = v.as_mut_ptr() as u64;
        arg.vec_len = 4;
        // Never protected: every present page counts as written.
        assert_eq!(pm().scan_raw(&mut arg), Ok(1));
        assert_eq!(
            (v[0].start, v[0].end, v[0].categories),
            (a.addr() as u64, (a.addr() + a.len()) as u64, PAGE_IS_WRITTEN)
        );
        assert_eq!(arg.walk_end, (a.addr() + a.len()) as u64);
    }

    #[test]
    fn wrong_size_fails_einval() {
        try_skip!(scan_support());
        let a = area();
        for size in [0, 88, 104] {
            assert_eq!(
                scan_changed(&a, |arg| arg.size = size),
                Err(Errno::EINVAL),
                "size {size}"
            );
        }
    }

    #[test]
    fn unknown_flag_fails_einval() {
        try_skip!(scan_support());
        let a = area();
        for bit in [2, 31, 63] {
            let r = scan_changed(&a, |arg| arg.flags = 1 << bit);
            assert_eq!(r, Err(Errno::EINVAL), "flag bit {bit}");
        }
    }

    #[test]
    fn unknown_category_fails_einval() {
        try_skip!(scan_support());
        let a = area();
        let bad = 1u64 << 63;
        for which in 0..4 {
            let r = scan_changed(&a, |arg| match which {
                0 => arg.category_inverted = bad,
                1 => arg.category_mask |= bad,
                2 => arg.category_anyof_mask = bad,
                _ => arg.return_mask |= bad,
            });
            assert_eq!(r, Err(Errno::EINVAL), "mask {which}");
        }
    }

    #[test]
    fn misaligned_start_fails_einval() {
        try_skip!(scan_support());
        assert_eq!(scan_changed(&area(), |arg| arg.start += 1), Err(Errno::EINVAL));
    }

    #[test]
    fn null_vector_with_length_fails_einval() {
        try_skip!(scan_support());
        let null_vec = |arg: &mut pm_scan_arg| {
            arg.vec = 0;
            arg.vec_len = 1;
        };
        assert_eq!(scan_changed(&area(), null_vec), Err(Errno::EINVAL));
    }

    #[test]
    fn range_beyond_user_space_fails_efault() {
        try_skip!(scan_support());
        let past_top = |arg: &mut pm_scan_arg| {
            arg.start = 1 << 47;
            arg.end = (1 << 47) + 4096;
        };
        assert_eq!(scan_changed(&area(), past_top), Err(Errno::EFAULT));
    }

    #[test]
    fn vector_beyond_user_space_fails_efault() {
        try_skip!(scan_support());
        let vec_past_top = |arg: &mut pm_scan_arg| {
            arg.vec = 1 << 47;
            arg.vec_len = 1;
        };
        assert_eq!(scan_changed(&area(), vec_past_top), Err(Errno::EFAULT));
    }

    #[test]
    fn unaligned_end_is_rounded_up() {
        try_skip!(scan_support());
        let a = area();
        let mut v = [page_region::default(); 4];
        let mut arg = base(&a);
        arg.end = (a.addr() + 1) as u64;
        arg.vec = v.as_mut_ptr() as u64;
        arg.vec_len = 4;
        assert_eq!(pm().scan_raw(&mut arg), Ok(1));
        assert_eq!((v[0].start, v[0].end), (a.addr() as u64, a.page(1) as u64));
        assert_eq!(arg.walk_end, a.page(1) as u64);
    }
}

/// A 4-page regular file on a non-tmpfs filesystem (not shmem, not
/// hugetlbfs) mapped `flags` and written through. Err is a SKIP reason (a
/// guest whose only filesystem is tmpfs has no such file).
fn regular_file_mapping(flags: i32) -> Result<(usize, usize), String> {
    let ps = mem::base_page_size();
    let f = testing::files::non_shmem_file(4 * ps)?;
    // SAFETY: a fresh mapping of our own file at a kernel-chosen address.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4 * ps,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            std::os::fd::AsRawFd::as_raw_fd(&f),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(format!("mmap of a regular file: {}", Errno::last()));
    }
    // SAFETY: the mapping is writable and 4 pages long.
    unsafe { std::ptr::write_bytes(p as *mut u8, 0x10, 4 * ps) };
    Ok((p as usize, 4 * ps))
}

#[rstest]
#[case::shared(libc::MAP_SHARED)]
#[case::private(libc::MAP_PRIVATE)]
fn wp_async_alone_registers_any_file_mapping(#[case] flags: i32) {
    // vma_can_userfault: with WP_ASYNC and WP as the only mode, any memory
    // type may register; otherwise a regular file is refused EINVAL.
    require_features!(Features::PAGEFAULT_FLAG_WP | Features::WP_ASYNC);
    let (addr, len) = try_skip!(regular_file_mapping(flags));
    let _unmap = Reservation { addr, len };
    let plain = try_skip!(testing::open_uffd(Features::PAGEFAULT_FLAG_WP));
    assert_eq!(
        plain.register(addr, len, RegisterMode::WP),
        Err(Errno::EINVAL),
        "sync WP on a regular file"
    );
    let uffd = try_skip!(testing::open_uffd(Features::PAGEFAULT_FLAG_WP | Features::WP_ASYNC));
    assert_eq!(
        uffd.register(addr, len, RegisterMode::MISSING | RegisterMode::WP),
        Err(Errno::EINVAL),
        "MISSING is still refused"
    );
    uffd.register(addr, len, RegisterMode::WP)
        .expect("async WP on a regular file");
    uffd.writeprotect(addr, len, WP).unwrap();
    let ps = mem::base_page_size();
    for i in 0..4 {
        assert!(pagemap::is_uffd_wp(addr + i * ps), "page {i} protected");
    }
    let w = Faulter::write(addr + 2 * ps, 0x22);
    assert_eq!(w.settle(), State::Done);
    assert_eq!(w.join(), 0x22);
    assert_no_event(&uffd);
    assert_eq!(written(addr, addr + len), [(addr + 2 * ps, addr + 3 * ps)]);
}

#[apply(hugetlb_mem)]
fn wp_matching_on_part_of_a_hugetlb_page_backs_out(#[case] mem: MemType) {
    // A huge page cannot be re-protected in part: pagemap_scan_hugetlb_entry
    // withdraws the partial run, ends the walk at the huge page's start and
    // leaves it writable. A plain scan of the same part reports it.
    require_features!(async_features(mem));
    let (area, _uffd) = try_skip!(async_area(mem, 1, true));
    write_pages(&area, &[0], 0x71);
    let part = area.addr() + mem::base_page_size();
    assert_eq!(written(area.addr(), part), [(area.addr(), part)]);
    let s = Scan {
        flags: PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
        start: area.addr(),
        end: part,
        category_mask: PAGE_IS_WRITTEN,
        return_mask: PAGE_IS_WRITTEN,
        ..Default::default()
    };
    let out = pm().scan(&s, 8).unwrap();
    assert_eq!(out.regions, []);
    assert_eq!(out.walk_end, area.addr());
    assert!(
        !pagemap::is_uffd_wp(area.addr()),
        "part of a huge page was re-protected"
    );
    // The whole huge page is fine.
    let s = Scan {
        end: area.addr() + area.page_size(),
        ..s
    };
    let out = pm().scan(&s, 8).unwrap();
    let runs: Vec<_> = out.regions.iter().map(|r| (r.start as usize, r.end as usize)).collect();
    assert_eq!(runs, [(area.addr(), area.addr() + area.page_size())]);
    assert!(pagemap::is_uffd_wp(area.addr()));
}

#[apply(all_mem)]
fn inverted_category_reports_the_clean_pages(#[case] mem: MemType) {
    // category_inverted flips the test: with WRITTEN in both masks the scan
    // returns the pages not written since the last protection.
    require_features!(async_features(mem));
    let (area, _uffd) = try_skip!(async_area(mem, 4, true));
    write_pages(&area, &[1, 2], 0x81);
    let s = Scan {
        start: area.addr(),
        end: area.page(3) + area.page_size(),
        category_inverted: PAGE_IS_WRITTEN,
        category_mask: PAGE_IS_WRITTEN,
        return_mask: PAGE_IS_WRITTEN,
        ..Default::default()
    };
    let out = pm().scan(&s, 8).unwrap();
    let got: Vec<_> = out
        .regions
        .iter()
        .map(|r| (r.start as usize, r.end as usize, r.categories))
        .collect();
    // The returned categories are the real ones: not written.
    assert_eq!(
        got,
        [
            (area.page(0), area.page(1), 0),
            (area.page(3), area.page(3) + area.page_size(), 0)
        ]
    );
}
