//! THP machinery meeting userfaultfd: MADV_COLLAPSE over MISSING holes and
//! over write-protected pages and markers (khugepaged's scan refuses both:
//! a none PTE in a uffd-armed VMA is SCAN_EXCEED_NONE_PTE → EBUSY, a uffd-wp
//! PTE or marker SCAN_PTE_UFFD_WP → EINVAL; a WP-registered file VMA keeps
//! its PTE table, so the holes and markers must all survive); the huge zero
//! page under WRITEPROTECT; a PMD split under WP; and WP, COPY and MOVE on
//! every mTHP size the kernel offers.
//!
//! khugepaged runs the same checks from its own scan, and has a third rule
//! of its own: retract_page_tables() and collapse_pte_mapped_thp() keep the
//! PTE table of a WP-registered file VMA, so its markers outlive a collapse
//! of the file under it. Its cases never wait on a clock for something not
//! to happen: each first waits until khugepaged *did* collapse a control
//! range in the same process (it visited this mm), then for two more of its
//! full scans (`khugepaged/full_scans`), so every range was looked at after.
//!
//! The mTHP cases set a size's `enabled` knob: they take `#[file_serial(thp)]` (a lock across processes)
//! and put it back on drop.

mod common;
use common::*;
use nix::errno::Errno;
use pagemap::{PM_PRESENT, PM_UFFD_WP};
use serial_test::file_serial;
use std::os::fd::{AsRawFd, OwnedFd};
use uffdtest::knob::Knob;
use uffdtest::testing::mm::Reservation;

const NONE: CopyMode = CopyMode::empty();

/// The byte page `i` of a range is filled with.
fn byte(i: usize) -> u8 {
    (i % 251) as u8 + 1
}

/// One PMD of anonymous (MADV_HUGEPAGE) or shmem memory at a PMD-aligned
/// address, unpopulated.
struct Pmd {
    res: Reservation,
    fd: Option<OwnedFd>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Anon,
    Shmem,
}

impl Pmd {
    fn new(kind: Kind) -> Result<Pmd, String> {
        let len = mem::pmd_size().ok_or("kernel has no THP (CONFIG_TRANSPARENT_HUGEPAGE off)")?;
        let res = Reservation::new(len, len);
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        let (flags, fd) = match kind {
            Kind::Anon => (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, None),
            Kind::Shmem => {
                let fd = nix::sys::memfd::memfd_create(c"uffd-thp", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
                    .expect("memfd_create");
                nix::unistd::ftruncate(&fd, len as i64).expect("ftruncate");
                (libc::MAP_SHARED, Some(fd))
            }
        };
        let raw = fd.as_ref().map_or(-1, |f| f.as_raw_fd());
        // SAFETY: MAP_FIXED over our own reservation.
        let p = unsafe { libc::mmap(res.addr as *mut _, len, prot, flags | libc::MAP_FIXED, raw, 0) };
        assert_ne!(p, libc::MAP_FAILED, "mmap: {}", Errno::last());
        if kind == Kind::Anon {
            // Base pages while the case fills it: its holes stay holes.
            testing::mm::madvise(res.addr, len, libc::MADV_NOHUGEPAGE).expect("MADV_NOHUGEPAGE");
        }
        Ok(Pmd { res, fd })
    }

    fn page(&self, i: usize) -> usize {
        self.res.addr + i * mem::base_page_size()
    }

    fn npages(&self) -> usize {
        self.res.len / mem::base_page_size()
    }

    /// Writes [`byte`] over every page but those in `holes`, one page at a
    /// time (base pages: the writes land before any THP can).
    fn fill_except(&self, holes: &[usize]) {
        let ps = mem::base_page_size();
        for i in (0..self.npages()).filter(|i| !holes.contains(i)) {
            // SAFETY: page i lies inside our writable mapping.
            unsafe { std::ptr::write_bytes(self.page(i) as *mut u8, byte(i), ps) };
        }
    }

    /// MADV_COLLAPSE, asked again on the transient EAGAIN ([`testing::thp::collapse`]).
    fn collapse(&self) -> nix::Result<()> {
        testing::thp::collapse(self.res.addr, self.res.len)
    }

    /// Bytes of this range mapped by a PMD (AnonHugePages or ShmemPmdMapped).
    fn pmd_mapped(&self) -> usize {
        let key = if self.fd.is_some() {
            "ShmemPmdMapped"
        } else {
            "AnonHugePages"
        };
        testing::smaps::field(self.res.addr, key).unwrap_or(0)
    }

    /// Every page but `holes` still holds its byte; anonymous pages are
    /// still mapped. (A shmem collapse that fails has unmapped the small
    /// pages from every mapping, leaving them in the page cache, where a
    /// read finds them without a uffd message; protected PTEs become
    /// markers, see [`assert_protection`].)
    #[track_caller]
    fn assert_filled_except(&self, holes: &[usize]) {
        let ps = mem::base_page_size();
        for i in (0..self.npages()).filter(|i| !holes.contains(i)) {
            if self.fd.is_none() {
                assert!(pagemap::is_present(self.page(i)), "page {i} mapped");
            }
            // SAFETY: page i lies inside our mapping.
            let got = unsafe { std::slice::from_raw_parts(self.page(i) as *const u8, ps) };
            assert!(got.iter().all(|&b| b == byte(i)), "page {i} keeps its contents");
        }
    }
}

/// Each page of `pmd` carries the uffd-wp bit exactly if `protected(i)`:
/// on a mapped PTE, or on the marker a failed shmem collapse left when it
/// unmapped the page; anonymous pages stay mapped.
#[track_caller]
fn assert_protection(pmd: &Pmd, holes: &[usize], protected: impl Fn(usize) -> bool) {
    for i in 0..pmd.npages() {
        let e = pagemap::entry(pmd.page(i)).unwrap();
        let wp = if protected(i) { PM_UFFD_WP } else { 0 };
        assert_eq!(e & PM_UFFD_WP, wp, "page {i}: {e:#x}");
        if pmd.fd.is_none() && !holes.contains(&i) {
            assert_ne!(e & PM_PRESENT, 0, "anon page {i} stays mapped");
        }
    }
}

/// Reads the hole at `addr` in a thread, which must fault MISSING there;
/// resolves it with a zero page and checks the reader saw zero.
#[track_caller]
fn assert_hole_faults_missing(uffd: &Uffd, addr: usize) {
    let r = faulter::Faulter::read(addr);
    assert_eq!(faulter::next_pagefault(uffd), (PagefaultFlags::empty(), addr));
    let ps = mem::base_page_size();
    assert_eq!(uffd.zeropage(addr, ps, ZeropageMode::empty()), Ok(ps as i64));
    assert_eq!(r.join(), 0);
    faulter::assert_no_event(uffd);
}

/// Writes `v` at `addr` in a thread, which must fault WRITE|WP there;
/// un-protects the page and checks the write then landed.
#[track_caller]
fn assert_write_faults_wp(uffd: &Uffd, addr: usize, v: u8) {
    let w = faulter::Faulter::write(addr, v);
    assert_eq!(
        faulter::next_pagefault(uffd),
        (PagefaultFlags::WRITE | PagefaultFlags::WP, addr)
    );
    let ps = mem::base_page_size();
    uffd.writeprotect(addr, ps, WriteprotectMode::empty()).unwrap();
    assert_eq!(w.join(), v);
    assert_eq!(testing::read_byte(addr), v);
    faulter::assert_no_event(uffd);
}

fn kind_mem(kind: Kind) -> MemType {
    match kind {
        Kind::Anon => MemType::AnonThp,
        Kind::Shmem => MemType::Shmem,
    }
}

/// A PMD filled but for `holes`, registered in `mode` on a fresh uffd.
fn registered_pmd(kind: Kind, holes: &[usize], mode: RegisterMode, features: Features) -> Result<(Pmd, Uffd), String> {
    testing::register_support(kind_mem(kind), mode)?;
    let pmd = Pmd::new(kind)?;
    pmd.fill_except(holes);
    let uffd = testing::open_uffd(features | caps::features_for(kind_mem(kind), mode))?;
    uffd.register(pmd.res.addr, pmd.res.len, mode).unwrap();
    // Eligible for khugepaged only once registered: khugepaged never fills
    // the holes of a range uffd watches, while before registration it could
    // collapse the range over them (CI saw a hole of an anon-thp case mapped).
    if kind == Kind::Anon {
        testing::mm::madvise(pmd.res.addr, pmd.res.len, libc::MADV_HUGEPAGE).expect("MADV_HUGEPAGE");
    }
    Ok((pmd, uffd))
}

#[template]
#[rstest]
#[case::anon_thp(Kind::Anon)]
#[case::shmem(Kind::Shmem)]
fn thp_kinds(#[case] kind: Kind) {}

#[apply(thp_kinds)]
#[file_serial(thp)]
fn collapse_over_a_missing_hole_fails_ebusy_and_keeps_the_hole(#[case] kind: Kind) {
    let (pmd, uffd) = try_skip!(registered_pmd(kind, &[7], RegisterMode::MISSING, Features::empty()));
    assert_eq!(pmd.collapse(), Err(Errno::EBUSY));
    assert_eq!(pmd.pmd_mapped(), 0, "nothing collapsed");
    assert!(!pagemap::is_present(pmd.page(7)), "the hole is still a hole");
    pmd.assert_filled_except(&[7]);
    assert_hole_faults_missing(&uffd, pmd.page(7));
}

#[apply(thp_kinds)]
#[file_serial(thp)]
fn collapse_of_a_full_missing_range_succeeds(#[case] kind: Kind) {
    // The control for the case above: with no hole, registration alone
    // does not stop the collapse.
    let (pmd, uffd) = try_skip!(registered_pmd(kind, &[], RegisterMode::MISSING, Features::empty()));
    assert_eq!(pmd.collapse(), Ok(()));
    assert_eq!(pmd.pmd_mapped(), pmd.res.len, "one PMD maps the range");
    pmd.assert_filled_except(&[]);
    faulter::assert_no_event(&uffd);
}

#[apply(thp_kinds)]
#[file_serial(thp)]
fn collapse_over_a_protected_page_fails_einval_and_keeps_protection(#[case] kind: Kind) {
    let (pmd, uffd) = try_skip!(registered_pmd(kind, &[], RegisterMode::WP, Features::empty()));
    let ps = mem::base_page_size();
    uffd.writeprotect(pmd.page(3), ps, WriteprotectMode::WP).unwrap();
    assert_eq!(pmd.collapse(), Err(Errno::EINVAL));
    assert_eq!(pmd.pmd_mapped(), 0, "the registered view stays PTE-mapped");
    assert_protection(&pmd, &[], |i| i == 3);
    pmd.assert_filled_except(&[]);
    faulter::assert_no_event(&uffd);
    assert_write_faults_wp(&uffd, pmd.page(3), 0x77);
}

#[apply(thp_kinds)]
#[file_serial(thp)]
fn collapse_over_wp_markers_fails_einval_and_keeps_the_markers(#[case] kind: Kind) {
    let features = wp_marker_features(kind_mem(kind));
    let (pmd, uffd) = try_skip!(registered_pmd(kind, &[5], RegisterMode::WP, features));
    uffd.writeprotect(pmd.res.addr, pmd.res.len, WriteprotectMode::WP)
        .unwrap();
    assert_eq!(wp_present(pmd.page(5)), PM_UFFD_WP, "a marker in the hole");
    assert_eq!(pmd.collapse(), Err(Errno::EINVAL));
    assert_eq!(pmd.pmd_mapped(), 0, "the registered view stays PTE-mapped");
    assert_eq!(wp_present(pmd.page(5)), PM_UFFD_WP, "the marker survives");
    assert_protection(&pmd, &[5], |_| true);
    assert_write_faults_wp(&uffd, pmd.page(5), 0x66);
    let got = unsafe { std::slice::from_raw_parts(pmd.page(5) as *const u8, mem::base_page_size()) };
    assert!(got[1..].iter().all(|&b| b == 0), "the marker's page was empty");
}

// ---------------------------------------------------------------------------
// khugepaged.

const KHUGEPAGED: &str = "/sys/kernel/mm/transparent_hugepage/khugepaged";

/// How long khugepaged may take to do what it was unleashed for. It scans
/// without sleep, so its full scans come every few milliseconds; the
/// deadline only turns a daemon that never gets there into a failure that
/// says what it was waiting for.
const KHUGEPAGED_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

/// khugepaged set to scan this case's ranges as fast as it can (under the
/// `thp` key; every knob back on drop): anonymous THP on MADV_HUGEPAGE,
/// shmem THP on advise, no sleep between scans or after a failed
/// allocation, and the default `max_ptes_none` (511), under which it fills
/// a hole in a VMA no uffd has armed.
struct Khugepaged {
    _knobs: Vec<Knob>,
    /// An anonymous MADV_HUGEPAGE range with one page written, which puts
    /// this process on khugepaged's list: on the host's 6.18, MADV_HUGEPAGE
    /// of a shmem range, or of an anonymous range with no page yet, left
    /// the list empty (khugepaged slept, `full_scans` stood still for a
    /// minute) when the case ran in a process of its own.
    _enlist: Pmd,
}

impl Khugepaged {
    fn unleash() -> Result<Khugepaged, String> {
        if !caps::caps().root {
            return Err("needs root: khugepaged's knobs and /proc/kpageflags".into());
        }
        testing::thp::pmd_size()?;
        let mut knobs = testing::thp::anon_pmd_policy("madvise");
        knobs.push(testing::thp::shmem_collapsible());
        for (f, v) in [
            ("scan_sleep_millisecs", "0"),
            ("alloc_sleep_millisecs", "0"),
            ("pages_to_scan", "4096"),
            ("max_ptes_none", "511"),
        ] {
            knobs.push(Knob::set(format!("{KHUGEPAGED}/{f}"), v).unwrap_or_else(|e| panic!("khugepaged: {e}")));
        }
        let enlist = Pmd::new(Kind::Anon)?;
        testing::write_byte(enlist.page(0), 1);
        testing::mm::madvise(enlist.res.addr, enlist.res.len, libc::MADV_HUGEPAGE).expect("MADV_HUGEPAGE");
        Ok(Khugepaged {
            _knobs: knobs,
            _enlist: enlist,
        })
    }

    fn full_scans() -> u64 {
        let text = std::fs::read_to_string(format!("{KHUGEPAGED}/full_scans")).expect("khugepaged/full_scans");
        text.trim().parse().expect("a count")
    }

    /// Polls `done` until it holds; panics with `what` at the deadline.
    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let start = std::time::Instant::now();
        let scans = Khugepaged::full_scans();
        while !done() {
            assert!(
                start.elapsed() < KHUGEPAGED_DEADLINE,
                "khugepaged: {what} within {KHUGEPAGED_DEADLINE:?} (full scans {scans} -> {})",
                Khugepaged::full_scans()
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Waits until `pmd` is in a huge folio (khugepaged visited this mm and
    /// collapsed there), then two full scans more: every range of the mm
    /// was looked at after.
    fn wait_for_collapse_of(what: &str, pmd: &Pmd) {
        Khugepaged::wait_until(what, || pmd.in_huge_folio());
        let seen = Khugepaged::full_scans();
        Khugepaged::wait_until("two more full scans", || Khugepaged::full_scans() >= seen + 2);
    }
}

impl Pmd {
    /// Whether page 0 of the range is part of a huge folio. Reads it first:
    /// a shmem collapse unmaps the small pages, and the read maps the page
    /// the cache holds now.
    fn in_huge_folio(&self) -> bool {
        testing::read_byte(self.page(0));
        kpageflags(pfn(self.page(0))) & KPF_THP != 0
    }

    /// The same range, filled but for `holes`, unregistered, MADV_HUGEPAGE:
    /// what khugepaged does with it is what it would do without the uffd.
    fn control(kind: Kind, holes: &[usize]) -> Pmd {
        let pmd = Pmd::new(kind).expect("the case's own range had one");
        pmd.fill_except(holes);
        testing::mm::madvise(pmd.res.addr, pmd.res.len, libc::MADV_HUGEPAGE).expect("MADV_HUGEPAGE");
        pmd
    }
}

/// A PMD filled but for `holes`, registered in `mode`, `protected` pages
/// write-protected, and only then MADV_HUGEPAGE (shmem too: `advise`),
/// which hands it to the khugepaged [`Khugepaged::unleash`] set loose
/// first: it never sees the range half set up.
fn khugepaged_pmd(
    kind: Kind,
    holes: &[usize],
    mode: RegisterMode,
    protected: &[usize],
) -> Result<(Khugepaged, Pmd, Uffd), String> {
    testing::register_support(kind_mem(kind), mode)?;
    let k = Khugepaged::unleash()?;
    let pmd = Pmd::new(kind)?;
    pmd.fill_except(holes);
    let uffd = testing::open_uffd(caps::features_for(kind_mem(kind), mode))?;
    uffd.register(pmd.res.addr, pmd.res.len, mode).unwrap();
    let ps = mem::base_page_size();
    for &i in protected {
        uffd.writeprotect(pmd.page(i), ps, WriteprotectMode::WP).unwrap();
    }
    testing::mm::madvise(pmd.res.addr, pmd.res.len, libc::MADV_HUGEPAGE).expect("MADV_HUGEPAGE");
    Ok((k, pmd, uffd))
}

/// A hole khugepaged fills in an unarmed VMA (`max_ptes_none` 511) stays a
/// hole under MODE_MISSING: anonymous memory is SCAN_EXCEED_NONE_PTE in the
/// scan, shmem rolls the collapse of the file back (collapse_file()).
#[apply(thp_kinds)]
#[file_serial(thp)]
fn khugepaged_keeps_a_missing_hole_it_fills_elsewhere(#[case] kind: Kind) {
    let (_k, pmd, uffd) = try_skip!(khugepaged_pmd(kind, &[7], RegisterMode::MISSING, &[]));
    let control = Pmd::control(kind, &[7]);
    Khugepaged::wait_for_collapse_of("collapse the control range", &control);
    assert!(!pmd.in_huge_folio(), "the registered range was not collapsed");
    assert_eq!(pmd.pmd_mapped(), 0, "nothing PMD-mapped");
    assert!(!pagemap::is_present(pmd.page(7)), "the hole is still a hole");
    pmd.assert_filled_except(&[7]);
    assert_hole_faults_missing(&uffd, pmd.page(7));
}

/// A protected page keeps khugepaged off anonymous memory
/// (SCAN_PTE_UFFD_WP). Shmem's file is collapsed all the same (no uffd rule
/// there), but the WP-registered view keeps its PTE table: the protected
/// page's PTE became a marker when the collapse unmapped it, and stays one.
#[apply(thp_kinds)]
#[file_serial(thp)]
fn khugepaged_keeps_protection(#[case] kind: Kind) {
    let (_k, pmd, uffd) = try_skip!(khugepaged_pmd(kind, &[], RegisterMode::WP, &[3]));
    match kind {
        Kind::Anon => {
            let control = Pmd::control(kind, &[]);
            Khugepaged::wait_for_collapse_of("collapse the control range", &control);
            assert!(!pmd.in_huge_folio(), "the protected range was not collapsed");
        }
        Kind::Shmem => {
            Khugepaged::wait_for_collapse_of("collapse the protected view's file", &pmd);
        }
    }
    assert_eq!(pmd.pmd_mapped(), 0, "the registered view stays PTE-mapped");
    assert_protection(&pmd, &[], |i| i == 3);
    pmd.assert_filled_except(&[]);
    faulter::assert_no_event(&uffd);
    assert_write_faults_wp(&uffd, pmd.page(3), 0x5b);
}

/// Whether THP may map the huge zero page on a read fault.
const USE_ZERO_PAGE: &str = "/sys/kernel/mm/transparent_hugepage/use_zero_page";

/// Whether the kernel has a huge zero page to switch on.
fn huge_zero_page_on() -> Result<(), String> {
    if std::path::Path::new(USE_ZERO_PAGE).exists() {
        Ok(())
    } else {
        Err(format!("no {USE_ZERO_PAGE}: kernel has no huge zero page"))
    }
}

/// The page frame number of `addr` (root reads real PFNs).
fn pfn(addr: usize) -> u64 {
    pagemap::entry(addr).unwrap() & ((1 << 55) - 1)
}

/// The case sets the policy it needs (anonymous THP on MADV_HUGEPAGE, the
/// huge zero page on) rather than taking the machine's, under the `thp` key.
/// The huge zero page read-faulted into an empty PMD, registered WP and
/// protected whole, with the policy that gives it held (the knobs, restored
/// on drop); the PMD's first page frame number. Err is the SKIP reason.
fn protected_huge_zero_pmd() -> Result<(Vec<Knob>, Pmd, Uffd, u64), String> {
    if !caps::caps().root {
        return Err("needs root: pagemap shows page frame numbers only to root".into());
    }
    huge_zero_page_on()?;
    let mut knobs = testing::thp::anon_pmd_policy("madvise");
    knobs.push(Knob::set(USE_ZERO_PAGE, "1").unwrap_or_else(|e| panic!("{USE_ZERO_PAGE}: {e}")));
    let (pmd, uffd) = registered_pmd(
        Kind::Anon,
        &(0..512).collect::<Vec<_>>(),
        RegisterMode::WP,
        Features::empty(),
    )?;
    assert_eq!(testing::read_byte(pmd.page(0)), 0);
    let (p0, p1) = (pfn(pmd.page(0)), pfn(pmd.page(1)));
    if p1 != p0 + 1 {
        return Err(format!(
            "the read fault mapped no huge zero page (pfns {p0:#x}, {p1:#x})"
        ));
    }
    uffd.writeprotect(pmd.res.addr, pmd.res.len, WriteprotectMode::WP)
        .unwrap();
    for i in [0, 1, 255, 511] {
        assert_eq!(
            wp_present(pmd.page(i)),
            PM_UFFD_WP | PM_PRESENT,
            "page {i} of the zero PMD"
        );
    }
    Ok((knobs, pmd, uffd, p0))
}

#[test]
#[file_serial(thp)]
fn huge_zero_page_under_wp_faults_and_resolves_to_a_private_zeroed_page() {
    let (_knobs, pmd, uffd, p0) = try_skip!(protected_huge_zero_pmd());
    assert_write_faults_wp(&uffd, pmd.page(9), 0x42);
    let ps = mem::base_page_size();
    let got = unsafe { std::slice::from_raw_parts(pmd.page(9) as *const u8, ps) };
    assert_eq!(got[0], 0x42);
    assert!(got[1..].iter().all(|&b| b == 0), "the rest of the new page is zero");
    assert_ne!(pfn(pmd.page(9)), p0 + 9, "a private page replaced the zero page");
    assert!(
        (0..pmd.npages())
            .filter(|&i| i != 9)
            .all(|i| testing::read_byte(pmd.page(i)) == 0),
        "every other page still reads zero"
    );
}

/// Un-protecting one page of a protected huge zero PMD splits it into 512
/// zero-page PTEs (__split_huge_zero_page_pmd), each of which keeps the
/// PMD's uffd-wp bit but the one un-protected: a write to any other still
/// faults WP (mutant thp-zero-split-drops-wp).
#[test]
#[file_serial(thp)]
fn splitting_a_protected_huge_zero_pmd_keeps_every_other_page_protected() {
    let (_knobs, pmd, uffd, p0) = try_skip!(protected_huge_zero_pmd());
    let ps = mem::base_page_size();
    uffd.writeprotect(pmd.page(9), ps, WriteprotectMode::empty()).unwrap();
    // Split: every page now maps the one base zero page.
    let zero = pfn(pmd.page(0));
    assert_ne!(zero, p0 + 1, "page 0 still in the huge zero page");
    for i in [0, 1, 8, 10, 255, 511] {
        assert_eq!(
            wp_present(pmd.page(i)),
            PM_UFFD_WP | PM_PRESENT,
            "page {i} after the split"
        );
        assert_eq!(pfn(pmd.page(i)), zero, "page {i} maps the base zero page");
    }
    assert_eq!(wp_present(pmd.page(9)), PM_PRESENT, "the un-protected page");
    assert_write_faults_wp(&uffd, pmd.page(300), 0x43);
    assert_eq!(testing::read_byte(pmd.page(299)), 0);
}

/// A populated THP (one PMD), registered WP and protected whole.
fn protected_thp() -> Result<(Pmd, Uffd), String> {
    let (pmd, uffd) = registered_pmd(Kind::Anon, &[], RegisterMode::WP, Features::empty())?;
    if pmd.pmd_mapped() != pmd.res.len {
        pmd.collapse()
            .map_err(|e| format!("no THP for the range: MADV_COLLAPSE: {e}"))?;
    }
    uffd.writeprotect(pmd.res.addr, pmd.res.len, WriteprotectMode::WP)
        .unwrap();
    Ok((pmd, uffd))
}

#[rstest]
#[case::mprotect(libc::PROT_READ)]
#[case::munmap(-1)]
#[file_serial(thp)]
fn split_of_a_protected_pmd_keeps_wp_on_every_remaining_pte(#[case] how: i32) {
    let (pmd, uffd) = try_skip!(protected_thp());
    let half = pmd.res.len / 2;
    let tail = pmd.res.addr + half;
    if how < 0 {
        testing::mm::munmap(tail, half).unwrap();
    } else {
        // SAFETY: the tail half is our mapping.
        assert_eq!(unsafe { libc::mprotect(tail as *mut _, half, how) }, 0);
    }
    assert_eq!(pmd.pmd_mapped(), 0, "the PMD was split");
    let kept = if how < 0 { pmd.npages() / 2 } else { pmd.npages() };
    for i in 0..kept {
        assert_eq!(wp_present(pmd.page(i)), PM_UFFD_WP | PM_PRESENT, "page {i}");
    }
    pmd.assert_filled_except(&(kept..pmd.npages()).collect::<Vec<_>>());
    assert_write_faults_wp(&uffd, pmd.page(1), 0x31);
}

// ---------------------------------------------------------------------------
// mTHP sizes.

/// KPF_THP in /proc/kpageflags.
const KPF_THP: u64 = 1 << 22;

fn kpageflags(pfn: u64) -> u64 {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open("/proc/kpageflags").expect("kpageflags");
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, pfn * 8).expect("read kpageflags");
    u64::from_ne_bytes(b)
}

/// One `kb` folio of anonymous memory, filled with [`byte`] per page, at a
/// `kb`-aligned address, with only that size enabled (knob restored on
/// drop). Err is the SKIP reason.
fn mthp(kb: usize) -> Result<(Reservation, Knob), String> {
    require_mthp(kb)?;
    let dir = format!("/sys/kernel/mm/transparent_hugepage/hugepages-{kb}kB");
    let knob = Knob::set(format!("{dir}/enabled"), "always").map_err(|e| e.to_string())?;
    let len = kb * 1024;
    let res = Reservation::new(len, len);
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED;
    // SAFETY: MAP_FIXED over our own reservation.
    let p = unsafe {
        libc::mmap(
            res.addr as *mut _,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED, "mmap: {}", Errno::last());
    let ps = mem::base_page_size();
    for i in 0..len / ps {
        // SAFETY: inside our writable mapping.
        unsafe { std::ptr::write_bytes((res.addr + i * ps) as *mut u8, byte(i), ps) };
    }
    let flags = kpageflags(pfn(res.addr));
    if flags & KPF_THP == 0 {
        return Err(format!("the fault mapped no {kb}kB folio (memory fragmented?)"));
    }
    Ok((res, knob))
}

fn require_mthp(kb: usize) -> Result<(), String> {
    if !caps::caps().root {
        return Err("needs root: mTHP knobs and /proc/kpageflags".into());
    }
    if !caps::caps().thp_sizes.contains(&(kb * 1024)) {
        return Err(format!("kernel offers no {kb}kB THP size"));
    }
    let enabled = format!("/sys/kernel/mm/transparent_hugepage/hugepages-{kb}kB/enabled");
    if !std::path::Path::new(&enabled).exists() {
        return Err(format!("kernel offers {kb}kB folios for shmem only (no {enabled})"));
    }
    Ok(())
}

#[apply(thp_sizes)]
#[file_serial(thp)]
fn wp_of_one_page_of_an_mthp_faults_only_there(#[case] kb: usize) {
    require_mode!(MemType::Anon, RegisterMode::WP);
    let (res, _knob) = try_skip!(mthp(kb));
    let uffd = try_skip!(testing::open_uffd(Features::empty()));
    uffd.register(res.addr, res.len, RegisterMode::WP).unwrap();
    let ps = mem::base_page_size();
    let last = res.addr + res.len - ps;
    uffd.writeprotect(last, ps, WriteprotectMode::WP).unwrap();
    for a in (res.addr..last).step_by(ps) {
        assert_eq!(wp_present(a), PM_PRESENT, "{a:#x} unprotected");
    }
    assert_eq!(wp_present(last), PM_UFFD_WP | PM_PRESENT);
    testing::write_byte(res.addr, 0x10);
    faulter::assert_no_event(&uffd);
    assert_write_faults_wp(&uffd, last, 0x20);
}

/// An anonymous fault on a uffd-armed range allocates no large folio:
/// alloc_anon_folio falls back to order 0, since a WP registration works
/// per PTE. A write into an unpopulated WP-only range maps that one page,
/// though the same size is enabled and, first, shown to be what an
/// unregistered fault there gets (mutant anon-mthp-on-armed).
#[apply(mthp_sizes)]
#[file_serial(thp)]
fn a_write_into_a_wp_registered_hole_maps_one_page_not_an_mthp(#[case] kb: usize) {
    require_mode!(MemType::Anon, RegisterMode::WP);
    // The control: unregistered, this size's fault maps a whole folio here.
    let (_control, _knob) = try_skip!(mthp(kb));
    let len = kb * 1024;
    let res = Reservation::new(len, len);
    // SAFETY: MAP_FIXED over our own reservation.
    let p = unsafe {
        libc::mmap(
            res.addr as *mut _,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED, "mmap: {}", Errno::last());
    // Without UFFD_FEATURE_WP_UNPOPULATED: the holes stay pte_none.
    let uffd = try_skip!(testing::open_uffd(Features::empty()));
    uffd.register(res.addr, len, RegisterMode::WP).unwrap();
    let ps = mem::base_page_size();
    let at = res.addr + ps;
    testing::write_byte(at, 0x42);
    faulter::assert_no_event(&uffd);
    assert_eq!(
        kpageflags(pfn(at)) & KPF_THP,
        0,
        "a {kb}kB folio behind the written page"
    );
    for a in (res.addr..res.addr + len).step_by(ps) {
        assert_eq!(pagemap::is_present(a), a == at, "page {:#x} of the range", a - res.addr);
    }
}

#[apply(thp_sizes)]
#[file_serial(thp)]
fn copy_into_a_hole_of_an_mthp_fills_only_the_hole(#[case] kb: usize) {
    require_mode!(MemType::Anon, RegisterMode::MISSING);
    let (res, _knob) = try_skip!(mthp(kb));
    let ps = mem::base_page_size();
    let hole = res.addr + ps;
    testing::mm::madvise(hole, ps, libc::MADV_DONTNEED).unwrap();
    let uffd = try_skip!(testing::open_uffd(Features::empty()));
    uffd.register(res.addr, res.len, RegisterMode::MISSING).unwrap();
    let src = testing::Buf::pattern(ps, |_| 0xc3);
    assert_eq!(uffd.copy(hole, src.addr(), ps, NONE), Ok(ps as i64));
    assert_eq!(
        uffd.copy(hole, src.addr(), ps, NONE),
        testing::progress::failed(Errno::EEXIST)
    );
    for i in 0..res.len / ps {
        let want = if i == 1 { 0xc3 } else { byte(i) };
        let got = unsafe { std::slice::from_raw_parts((res.addr + i * ps) as *const u8, ps) };
        assert!(got.iter().all(|&b| b == want), "page {i}");
    }
    faulter::assert_no_event(&uffd);
}

#[apply(thp_sizes)]
#[file_serial(thp)]
fn move_of_an_mthp_moves_every_page(#[case] kb: usize) {
    require_mode!(MemType::Anon, RegisterMode::MISSING);
    try_skip!(offers(Features::MOVE));
    let (res, _knob) = try_skip!(mthp(kb));
    let dst = Reservation::new(res.len, res.len);
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED;
    // SAFETY: MAP_FIXED over our own reservation.
    let p = unsafe {
        libc::mmap(
            dst.addr as *mut _,
            dst.len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    let uffd = try_skip!(testing::open_uffd(Features::MOVE));
    uffd.register(dst.addr, dst.len, RegisterMode::MISSING).unwrap();
    let ps = mem::base_page_size();
    // One page out of the middle first (the folio must be split for it),
    // then the rest.
    assert_eq!(
        uffd.r#move(dst.addr + ps, res.addr + ps, ps, MoveMode::empty()),
        Ok(ps as i64)
    );
    assert!(!pagemap::is_present(res.addr + ps), "the moved page left the source");
    assert_eq!(uffd.r#move(dst.addr, res.addr, ps, MoveMode::empty()), Ok(ps as i64));
    let rest = res.len - 2 * ps;
    assert_eq!(
        uffd.r#move(dst.addr + 2 * ps, res.addr + 2 * ps, rest, MoveMode::empty()),
        Ok(rest as i64)
    );
    for i in 0..res.len / ps {
        assert!(!pagemap::is_present(res.addr + i * ps), "source page {i} is gone");
        let got = unsafe { std::slice::from_raw_parts((dst.addr + i * ps) as *const u8, ps) };
        assert!(got.iter().all(|&b| b == byte(i)), "page {i} moved whole");
    }
    faulter::assert_no_event(&uffd);
}
