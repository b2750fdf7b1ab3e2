//! KSM meets userfaultfd: pages merged by ksmd are shared, not exclusive
//! anonymous pages, and unmerging them is an unshare fault that uffd-wp
//! must neither block nor undo.
//!
//! mm/userfaultfd.c `move_pages_pte`: a source folio that is not
//! PageAnonExclusive (a KSM page never is) fails the MOVE EBUSY. mm/ksm.c
//! `break_ksm` unmerges with FAULT_FLAG_UNSHARE, which a uffd-wp PTE does
//! not stop (the unshared copy keeps the uffd-wp bit). ksmd's knobs are
//! global: every case holds `#[file_serial(ksm)]` (a lock across processes) and puts them back.
//!
//! ksmd also merges across the whole machine: a VM running this suite has
//! pages of the very bytes these cases write (QEMU's RAM is mergeable), and
//! ours merged into its KSM pages sit on more frames than `merged_frames`
//! counts (the hunt beside a guest saw 3 for 512 pages). Every page a case
//! merges starts with this process's [`stamp`].

mod common;
use common::*;
use faulter::{State, assert_no_event};
use nix::errno::Errno;
use serial_test::file_serial;
use testing::ksm::{Ksmd, frames, merged_frames, wait_merged};
use testing::mm::{assert_bytes, madvise};

/// Eight bytes no other process has: the pid and the clock at first use.
fn stamp() -> [u8; 8] {
    static STAMP: std::sync::LazyLock<[u8; 8]> = std::sync::LazyLock::new(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970");
        ((u64::from(std::process::id()) << 32) ^ u64::from(t.subsec_nanos())).to_ne_bytes()
    });
    *STAMP
}

/// Byte `i` of every page of a merged area filled with `byte`: the
/// [`stamp`] first, then `byte`.
fn content(byte: u8) -> impl Fn(usize) -> u8 {
    let stamp = stamp();
    move |i| stamp.get(i).copied().unwrap_or(byte)
}

/// The area's pages, all holding [`content`]`(byte)`, merged by ksmd into
/// the fewest KSM pages. Err is the SKIP reason.
fn merged(mem: MemType, npages: usize, byte: u8) -> Result<(Area, Ksmd), String> {
    caps::ksm_support()?;
    if !caps::caps().root {
        return Err("needs root: starting ksmd (/sys/kernel/mm/ksm/run)".into());
    }
    let area = testing::area(mem, npages)?;
    area.populate(byte);
    for i in 0..area.npages() {
        // SAFETY: the start of page i of our own writable area.
        unsafe { std::ptr::copy_nonoverlapping(stamp().as_ptr(), area.page(i) as *mut u8, 8) };
    }
    let ksmd = Ksmd::start().map_err(|e| e.to_string())?;
    madvise(area.addr(), area.len(), libc::MADV_MERGEABLE).expect("MADV_MERGEABLE");
    let n = area.npages();
    assert!(
        wait_merged(area.addr(), n, HANG_GUARD),
        "ksmd left {} frames under {n} identical pages",
        frames(area.addr(), n)
    );
    Ok((area, ksmd))
}

#[apply(anon_mem)]
#[file_serial(ksm)]
fn move_of_a_ksm_page_fails_ebusy(#[case] mem: MemType) {
    try_skip!(offers(Features::MOVE));
    let (src, _ksmd) = try_skip!(merged(mem, 2, 0x6b));
    let dst = try_skip!(testing::area(MemType::Anon, 1));
    let uffd = try_skip!(testing::open_uffd(Features::MOVE));
    let ps = dst.page_size();
    uffd.register(dst.addr(), ps, RegisterMode::MISSING).unwrap();
    assert_eq!(
        uffd.r#move(dst.addr(), src.addr(), ps, MoveMode::empty()),
        testing::progress::failed(Errno::EBUSY)
    );
    assert!(!pagemap::is_present(dst.addr()), "destination filled");
    let c = content(0x6b);
    assert_bytes(&src.read(src.addr(), ps), &c, "the KSM page");
    assert_no_event(&uffd);
    // A write breaks the sharing: the page is exclusive again and moves.
    testing::write_byte(src.addr(), 0x6c);
    assert_eq!(
        uffd.r#move(dst.addr(), src.addr(), ps, MoveMode::empty()),
        Ok(ps as i64)
    );
    assert_bytes(&dst.read_page(0), |i| if i == 0 { 0x6c } else { c(i) }, "moved page");
}

/// The merged area of `mem`, registered WP and write-protected whole.
fn merged_protected(mem: MemType) -> Result<(Area, Ksmd, Uffd), String> {
    offers(Features::PAGEFAULT_FLAG_WP)?;
    testing::register_support(mem, RegisterMode::WP)?;
    let (area, ksmd) = merged(mem, 2, 0x6b)?;
    let uffd = testing::open_uffd(Features::PAGEFAULT_FLAG_WP)?;
    uffd.register(area.addr(), area.len(), RegisterMode::WP).unwrap();
    uffd.writeprotect(area.addr(), area.len(), WriteprotectMode::WP)
        .unwrap();
    Ok((area, ksmd, uffd))
}

/// Every page of `area` holds `byte`, is mapped and still write-protected.
#[track_caller]
fn assert_protected_copy(area: &Area, byte: u8) {
    assert_protected_copy_from(area, 0, byte);
}

#[apply(anon_mem)]
#[file_serial(ksm)]
fn unmerge_under_uffd_wp_keeps_the_protection(#[case] mem: MemType) {
    let (area, _ksmd, uffd) = try_skip!(merged_protected(mem));
    // MADV_UNMERGEABLE unshares every page (FAULT_FLAG_UNSHARE): no WP
    // fault, no message, and each private copy keeps its uffd-wp bit.
    madvise(area.addr(), area.len(), libc::MADV_UNMERGEABLE).expect("MADV_UNMERGEABLE");
    let n = area.npages();
    assert_eq!(frames(area.addr(), n), n, "pages still shared after MADV_UNMERGEABLE");
    assert_no_event(&uffd);
    assert_protected_copy(&area, 0x6b);
    // The protection still holds: a write faults WP and waits.
    let w = blocked_wp_writer(&uffd, area.page(1), 9, 0x11);
    uffd.writeprotect(area.page(1), area.page_size(), WriteprotectMode::empty())
        .unwrap();
    assert_eq!(w.join(), 0x11);
    let c = content(0x6b);
    assert_bytes(&area.read_page(1), |i| if i == 9 { 0x11 } else { c(i) }, "written page");
}

#[apply(anon_mem)]
#[file_serial(ksm)]
fn write_to_a_protected_ksm_page_faults_wp_before_unsharing(#[case] mem: MemType) {
    let (area, _ksmd, uffd) = try_skip!(merged_protected(mem));
    let n = area.npages();
    // The WP fault comes first: the page stays merged while the writer waits.
    let w = blocked_wp_writer(&uffd, area.page(0), 3, 0x22);
    assert_eq!(w.settle(), State::Blocked);
    let m = merged_frames(n);
    assert_eq!(frames(area.addr(), n), m, "a blocked write unshared the KSM page");
    uffd.writeprotect(area.page(0), area.page_size(), WriteprotectMode::empty())
        .unwrap();
    assert_eq!(w.join(), 0x22);
    // Un-protected, the write broke the sharing for its page only.
    assert_eq!(frames(area.addr(), n), m + 1, "the written page has its own frame");
    let c = content(0x6b);
    assert_bytes(&area.read_page(0), |i| if i == 3 { 0x22 } else { c(i) }, "written page");
    assert_eq!(wp_present(area.page(0)), pagemap::PM_PRESENT, "written page");
    assert_protected_copy_from(&area, 1, 0x6b);
}

/// [`assert_protected_copy`] from page `first` on.
#[track_caller]
fn assert_protected_copy_from(area: &Area, first: usize, byte: u8) {
    for i in first..area.npages() {
        assert_eq!(
            wp_present(area.page(i)),
            pagemap::PM_UFFD_WP | pagemap::PM_PRESENT,
            "page {i}"
        );
        assert_bytes(&area.read_page(i), content(byte), "protected page");
    }
}
