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
use testing::progress::{err, failed};
use testing::smaps::field as smaps_field;
use uffdtest::knob::Knob;

/// An area with an alias view, the main view registered in `mode`. Err is the SKIP reason: first whether `mem`
/// can register in `mode` (as `require_mode!` asks, so a case need not ask again), then the area itself.
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

/// CONTINUE of `len` bytes from the area's start in `mode` fails `errno`, and page 0 stays unmapped.
#[track_caller]
fn assert_continue_refused(uffd: &Uffd, area: &Area, len: usize, mode: ContinueMode, errno: Errno) {
    assert_eq!(uffd.r#continue(area.addr(), len, mode), failed(errno));
    assert!(!pagemap::is_present(area.page(0)));
}

fn pattern(i: usize) -> impl Fn(usize) -> u8 {
    move |off| ((i * 31 + off) % 251) as u8
}

fn expected(area: &Area, f: impl Fn(usize) -> u8) -> Vec<u8> {
    (0..area.page_size()).map(f).collect()
}

#[apply(file_mem)]
fn read_faults_minor_and_continue_maps_the_alias_data(#[case] mem: MemType) {
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
            failed(Errno::EEXIST)
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
    let (area, uffd) = try_skip!(minor_area(mem, 1, RegisterMode::MINOR));
    assert_read_completes(area.page(0) + 3, 0);
    assert_write_completes(area.page(0) + 4, 0x44);
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
    assert_read_completes(area.page(0) + 1, 0x61);
    assert_asleep_until_wake(
        &uffd,
        r,
        area.page(0),
        ps,
        0x61,
        "CONTINUE_MODE_DONTWAKE woke the reader",
    );
    assert_no_event(&uffd);
}

#[apply(file_mem)]
fn continue_maps_several_pages_at_once(#[case] mem: MemType) {
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
    let (area, uffd) = try_skip!(minor_area(mem, 3, RegisterMode::MINOR));
    let ps = area.page_size();
    fill_alias(&area, 0, pattern(0));
    fill_alias(&area, 2, pattern(2));
    // Page 1 has no cache page: the walk maps page 0, stops with -EFAULT,
    // and the ioctl reports the short count as EAGAIN.
    assert_eq!(
        uffd.r#continue(area.addr(), 3 * ps, ContinueMode::empty()),
        err(Errno::EAGAIN, ps as i64)
    );
    assert!(pagemap::is_present(area.page(0)));
    assert!(!pagemap::is_present(area.page(1)));
    assert!(!pagemap::is_present(area.page(2)), "CONTINUE went past the hole");
}

#[apply(file_mem)]
fn continue_without_page_cache_fails_efault(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(minor_area(mem, 1, RegisterMode::MINOR));
    assert_continue_refused(&uffd, &area, area.page_size(), ContinueMode::empty(), Errno::EFAULT);
}

#[apply(file_mem)]
fn continue_over_populated_page_fails_eexist(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(minor_area(mem, 1, RegisterMode::MINOR));
    fill_alias(&area, 0, |_| 7);
    uffd.r#continue(area.addr(), area.page_size(), ContinueMode::empty())
        .unwrap();
    assert_eq!(
        uffd.r#continue(area.addr(), area.page_size(), ContinueMode::empty()),
        failed(Errno::EEXIST)
    );
    assert_eq!(area.read_page(0), vec![7; area.page_size()]);
}

// Split by topic with include! rather than `mod`: libtest names a case by its
// module path, so submodules would rename every case; included, they all stay
// `continue/<case>` (and `args::` keeps its own module). Cases with a
// serial_test attribute stay in this file, the one the runner reads them from.
include!("continue/mode_wp.rs");
include!("continue/ranges.rs");

// MINOR faults on huge page-cache folios: a collapse under a MINOR range,
// and per-page faults on a PMD-sized folio.

/// A memfd of one PMD mapped twice at PMD-aligned addresses, so the
/// registered view can be collapsed into a PMD mapping.
struct PmdViews {
    main: usize,
    alias: usize,
    len: usize,
    _fd: std::os::fd::OwnedFd,
}

impl PmdViews {
    fn new(pmd: usize) -> PmdViews {
        use nix::sys::mman::{MapFlags, ProtFlags, mmap, mmap_anonymous, munmap};
        use std::num::NonZeroUsize;
        let fd = nix::sys::memfd::memfd_create(c"uffd-minor-collapse", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
            .expect("memfd_create");
        nix::unistd::ftruncate(&fd, pmd as i64).expect("ftruncate");
        let rw = ProtFlags::PROT_READ | ProtFlags::PROT_WRITE;
        let mut views = [0usize; 2];
        for v in &mut views {
            // SAFETY: a fresh reservation, then our memfd mapped over its
            // aligned part; the unaligned rest is trimmed off.
            unsafe {
                let big = mmap_anonymous(
                    None,
                    NonZeroUsize::new(2 * pmd).unwrap(),
                    ProtFlags::PROT_NONE,
                    MapFlags::MAP_PRIVATE,
                )
                .expect("reserve");
                let start = big.as_ptr() as usize;
                let aligned = start.next_multiple_of(pmd);
                let p = mmap(
                    Some(NonZeroUsize::new(aligned).unwrap()),
                    NonZeroUsize::new(pmd).unwrap(),
                    rw,
                    MapFlags::MAP_SHARED | MapFlags::MAP_FIXED,
                    &fd,
                    0,
                )
                .expect("mmap memfd");
                if aligned > start {
                    munmap(big, aligned - start).unwrap();
                }
                let tail = aligned + pmd;
                if start + 2 * pmd > tail {
                    munmap(std::ptr::NonNull::new(tail as *mut _).unwrap(), start + 2 * pmd - tail).unwrap();
                }
                *v = p.as_ptr() as usize;
            }
        }
        PmdViews {
            main: views[0],
            alias: views[1],
            len: pmd,
            _fd: fd,
        }
    }
}

impl Drop for PmdViews {
    fn drop(&mut self) {
        for v in [self.main, self.alias] {
            // SAFETY: our own mappings.
            let _ = unsafe { nix::sys::mman::munmap(std::ptr::NonNull::new(v as *mut _).unwrap(), self.len) };
        }
    }
}

/// Serial with the cases that change the shmem THP policy: under
/// `shmem_enabled=always` set by a concurrent case the contents checks failed
/// (page 0 read 0 for 255) and the binary later died of SIGSEGV.
#[test]
#[serial_test::file_serial(thp)]
fn minor_collapse_keeps_contents() {
    require_mode!(MemType::Shmem, RegisterMode::MINOR);
    require_root!("sets the shmem THP policy");
    let pmd = try_skip!(testing::thp::pmd_size());
    let _policy = testing::thp::shmem_collapsible();
    let ps = mem::base_page_size();
    let views = PmdViews::new(pmd);
    let uffd = std::sync::Arc::new(try_skip!(testing::open_uffd(Features::MINOR_SHMEM)));
    uffd.register(views.main, views.len, RegisterMode::MINOR).unwrap();
    let n = pmd / ps;
    let byte = |i: usize| (i % 255) as u8;
    for i in 0..n {
        // SAFETY: inside the alias view.
        unsafe { std::ptr::write_bytes((views.alias + i * ps) as *mut u8, byte(i), ps) };
    }
    // The monitor flips each page through the alias and continues it.
    let (alias, faults) = (views.alias, std::sync::Arc::new(std::sync::Mutex::new(Vec::new())));
    let seen = faults.clone();
    let handler = testing::FaultHandler::spawn(uffd.clone(), move |u, ev| match ev {
        Event::Pagefault { flags, address, .. } => {
            seen.lock().unwrap().push((flags, address as usize));
            let page = address as usize & !(ps - 1);
            let a = (alias + (page - (address as usize & !(pmd - 1)))) as *mut u8;
            for off in 0..ps {
                // SAFETY: inside the alias view.
                unsafe { *a.add(off) = !*a.add(off) };
            }
            u.r#continue(page, ps, ContinueMode::empty())
                .map(drop)
                .map_err(|p| format!("CONTINUE {page:#x}: {p}"))
        }
        other => Err(format!("unexpected event {other:?}")),
    });
    for i in 0..n {
        assert_eq!(testing::read_byte(views.main + i * ps), !byte(i), "page {i}");
    }
    {
        let f = faults.lock().unwrap();
        assert_eq!(f.len(), n, "one minor fault per page");
        for (i, (flags, addr)) in f.iter().enumerate() {
            assert_eq!((*flags, *addr), (PagefaultFlags::MINOR, views.main + i * ps));
        }
    }
    // The kernel has THP (pmd_size): a collapse it refuses is a failure.
    testing::thp::collapse_or_fail(views.main, views.len);
    assert_eq!(
        smaps_field(views.main, "ShmemPmdMapped"),
        Some(pmd),
        "registered view PMD-mapped"
    );
    for i in 0..n {
        let want = vec![!byte(i); ps];
        // SAFETY: both views are mapped for the life of `views`.
        let got = unsafe { std::slice::from_raw_parts((views.main + i * ps) as *const u8, ps) }.to_vec();
        assert_eq!(got, want, "page {i} through the registered view after collapse");
        // SAFETY: as above.
        let got = unsafe { std::slice::from_raw_parts((views.alias + i * ps) as *const u8, ps) }.to_vec();
        assert_eq!(got, want, "page {i} through the alias after collapse");
    }
    let errors = handler.stop();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(faults.lock().unwrap().len(), n, "no fault after the collapse");
}

#[test]
#[serial_test::file_serial(thp)]
fn minor_faults_on_a_huge_cache_folio_are_per_page() {
    // The page cache holds one PMD-sized folio; the registered view still
    // faults and is continued one base page at a time.
    //
    // The view is registered for WP too, only to keep khugepaged away: it
    // may retract the page table of a MINOR-only view at any moment (the
    // same collapse MADV_COLLAPSE does in the case above), dropping the
    // PTEs CONTINUE installed; it leaves uffd-wp ranges alone. No page is
    // write-protected, so every fault below is a plain minor read fault.
    let mode = RegisterMode::MINOR | RegisterMode::WP;
    require_mode!(MemType::Shmem, mode);
    require_root!("sets the shmem THP policy");
    let pmd = try_skip!(testing::thp::pmd_size());
    let _policy = Knob::set(testing::thp::SHMEM_ENABLED, "always").unwrap_or_else(|e| panic!("{e}"));
    let ps = mem::base_page_size();
    let views = PmdViews::new(pmd);
    for i in 0..pmd / ps {
        // SAFETY: inside the alias view.
        unsafe { std::ptr::write_bytes((views.alias + i * ps) as *mut u8, (i % 251) as u8, ps) };
    }
    // `always` asks for a PMD folio at the first write; a fragmented
    // machine may give small ones, which MADV_COLLAPSE then gathers.
    testing::thp::collapse_or_fail(views.alias, pmd);
    assert_eq!(smaps_field(views.alias, "ShmemPmdMapped"), Some(pmd));
    let uffd = try_skip!(testing::open_uffd(caps::features_for(MemType::Shmem, mode)));
    uffd.register(views.main, pmd, mode).unwrap();
    for i in [5, 6, 300] {
        let r = Faulter::read(views.main + i * ps + 1);
        assert_eq!(
            next_pagefault(&uffd),
            (PagefaultFlags::MINOR, views.main + i * ps),
            "page {i}"
        );
        assert_eq!(
            uffd.r#continue(views.main + i * ps, ps, ContinueMode::empty()),
            Ok(ps as i64)
        );
        assert_eq!(r.join(), (i % 251) as u8);
    }
    let present: Vec<usize> = (0..pmd / ps)
        .filter(|i| pagemap::is_present(views.main + i * ps))
        .collect();
    assert_eq!(present, [5, 6, 300], "CONTINUE mapped exactly the pages asked for");
    assert_eq!(smaps_field(views.main, "ShmemPmdMapped"), Some(0));
    // The rest in one call: it stops at the first mapped page, after 5.
    assert_eq!(
        uffd.r#continue(views.main, pmd, ContinueMode::empty()),
        err(Errno::EAGAIN, 5 * ps as i64)
    );
    assert_no_event(&uffd);
}
