//! A uffd driven from a process other than the one that made it, while
//! that one lives: the descriptor is passed over SCM_RIGHTS to a process
//! that shares no mapping of the registered range (MADV_DONTFORK).
//!
//! fs/userfaultfd.c: every resolving ioctl works on `ctx->mm`, the maker's
//! mm, so COPY from the other process fills the maker's page, but reads
//! its source with copy_from_user in the *caller's* mm. UFFDIO_MOVE alone
//! refuses a caller whose mm is not `ctx->mm` ("Do not allow cross-mm
//! moves": EINVAL before the `move` field is written), so its
//! mmget_not_zero/ESRCH branch is reachable only by the maker itself.
//! (The maker already gone: tests/lifecycle.rs.)

mod common;
use common::*;
use faulter::{Faulter, assert_no_event};
use nix::errno::Errno;
use serial_test::file_serial;
use testing::foreign::{Foreign, Words};
use testing::mm::{assert_bytes, madvise, munmap};
use testing::{Buf, ChildExit, progress};

const MISSING: RegisterMode = RegisterMode::MISSING;

/// The other process never maps `area`, so nothing it does can touch the
/// pages but through the uffd.
fn dontfork(area: &Area) {
    madvise(area.addr(), area.len(), libc::MADV_DONTFORK).expect("MADV_DONTFORK");
}

/// Fills `len` bytes at `addr` (a buffer of this process) with `byte`.
fn fill(addr: usize, len: usize, byte: u8) {
    // SAFETY: callers pass their own writable buffers.
    unsafe { std::ptr::write_bytes(addr as *mut u8, byte, len) };
}

/// UFFDIO_MOVE of `len` bytes, going on from where EAGAIN stopped it: its
/// progress field says how far it got, and EAGAIN is transient (a source
/// folio locked or isolated by migration, as compaction does under load).
/// Any other error fails the case; so does EAGAIN a hundred times running.
fn move_whole(uffd: &Uffd, dst: usize, src: usize, len: usize) -> usize {
    let mut done = 0;
    for _ in 0..100 {
        match uffd.r#move(dst + done, src + done, len - done, MoveMode::empty()) {
            Ok(n) => return done + n as usize,
            Err(uffd::Partial {
                errno: Errno::EAGAIN,
                progress,
            }) if progress >= 0 => {
                done += progress as usize;
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            Err(e) => panic!("UFFDIO_MOVE after {done} bytes: {e}"),
        }
    }
    panic!("UFFDIO_MOVE answered EAGAIN 100 times (moved {done} of {len} bytes)")
}

/// On anon-thp the areas must be THPs whatever the machine's policy (under
/// `never` they would be 512 small pages and the case another one): the
/// case sets THP on MADV_HUGEPAGE, under the `thp` key.
#[apply(anon_mem)]
#[file_serial(thp)]
fn move_from_a_live_foreign_process_fails_einval(#[case] mem: MemType) {
    try_skip!(offers(Features::MOVE));
    if mem == MemType::AnonThp {
        require_root!("setting the THP policy the anon-thp areas need");
    }
    let _policy = (mem == MemType::AnonThp).then(|| testing::thp::anon_pmd_policy("madvise"));
    let dst = try_skip!(testing::area(mem, 1));
    let src = try_skip!(testing::area(mem, 1));
    dontfork(&dst);
    dontfork(&src);
    let (d, s, len) = (dst.addr(), src.addr(), dst.len());
    let out = Words::new();
    let other = Foreign::spawn(|u| {
        out.set_progress(0, u.r#move(d, s, len, MoveMode::empty()));
        0
    });
    let uffd = try_skip!(testing::open_uffd(Features::MOVE));
    uffd.register(d, len, MISSING).unwrap();
    src.fill_page(0, 0x3c);
    other.send(&uffd);
    assert_eq!(other.wait(), ChildExit::Exited(0));
    assert_eq!(out.progress(0), progress::rejected(Errno::EINVAL));
    // Nothing moved and nothing was queued.
    assert_bytes(&src.read_page(0), |_| 0x3c, "source after the refused MOVE");
    assert!(!pagemap::is_present(d), "destination filled by a refused MOVE");
    assert_no_event(&uffd);
    // The same call from the maker moves the page.
    assert_eq!(move_whole(&uffd, d, s, len), len, "bytes the maker's MOVE moved");
    assert_bytes(&dst.read_page(0), |_| 0x3c, "destination after the maker's MOVE");
}

/// A COPY case's two processes and what they share.
struct CopyCase {
    /// The page to resolve: registered MISSING on `uffd`, not mapped in the other process.
    area: Area,
    /// The source, at one address in both processes: the other's copy holds 0xb1, this one's (written after the
    /// fork) 0xa1.
    src: Buf,
    /// Running the monitor on the uffd it is sent.
    other: Foreign,
    /// Not yet sent: the case sends it when it is ready.
    uffd: Uffd,
}

/// Sets up a [`CopyCase`] of `mem`, the other process running `monitor` with the uffd, the page's and the
/// source's addresses and the page size. Err is the SKIP reason.
fn copy_case(mem: MemType, monitor: impl FnOnce(Uffd, usize, usize, usize) -> i32) -> Result<CopyCase, String> {
    let area = area_to_register(mem, 1, Features::empty(), MISSING)?;
    dontfork(&area);
    let src = Buf::filled(area.page_size(), 0xb1);
    let (at, ps, from) = (area.addr(), area.page_size(), src.addr());
    let other = Foreign::spawn(|u| monitor(u, at, from, ps));
    fill(from, ps, 0xa1);
    let uffd = testing::open_uffd(Features::empty())?;
    assert_ioctls(uffd.register(at, ps, MISSING).unwrap(), mem, MISSING);
    Ok(CopyCase { area, src, other, uffd })
}

#[apply(all_mem)]
fn copy_from_a_foreign_monitor_resolves_the_makers_fault(#[case] mem: MemType) {
    let out = Words::new();
    let monitor = |u: Uffd, _, from, ps| {
        let Ok(Some(Event::Pagefault { flags, address, .. })) = u.read_event(Some(HANG_GUARD)) else {
            return 2;
        };
        out.set(0, flags.bits() as i64);
        out.set(1, address as i64);
        out.set_progress(2, u.copy(address as usize, from, ps, CopyMode::empty()));
        0
    };
    let CopyCase { area, src, other, uffd } = try_skip!(copy_case(mem, monitor));
    let (at, ps) = (area.addr(), area.page_size());
    let reader = Faulter::read(at);
    other.send(&uffd);
    assert_eq!(other.wait(), ChildExit::Exited(0));
    assert_eq!(reader.join(), 0xb1, "the maker's read sees the monitor's bytes");
    assert_eq!(
        (out.get(0), out.get(1)),
        (0, at as i64),
        "the monitor read a read fault at the page"
    );
    assert_eq!(out.progress(2), Ok(ps as i64));
    assert_bytes(&area.read_page(0), |_| 0xb1, "page copied from the monitor's memory");
    assert_bytes(&src.bytes(ps), |_| 0xa1, "the maker's own source");
    assert_no_event(&uffd);
}

#[apply(all_mem)]
fn copy_from_a_foreign_process_without_the_source_fails_efault(#[case] mem: MemType) {
    let out = Words::new();
    let monitor = |u: Uffd, at, from, ps| {
        if munmap(from, ps).is_err() {
            return 2;
        }
        out.set_progress(0, u.copy(at, from, ps, CopyMode::empty()));
        0
    };
    let CopyCase { area, src, other, uffd } = try_skip!(copy_case(mem, monitor));
    let (at, ps, from) = (area.addr(), area.page_size(), src.addr());
    other.send(&uffd);
    assert_eq!(other.wait(), ChildExit::Exited(0));
    // The source is read in the caller's mm, where nothing is mapped.
    assert_eq!(out.progress(0), progress::failed(Errno::EFAULT));
    assert!(!pagemap::is_present(at), "a failed COPY mapped the page");
    // The same arguments from the maker read its own source.
    assert_eq!(uffd.copy(at, from, ps, CopyMode::empty()), Ok(ps as i64));
    assert_bytes(&area.read_page(0), |_| 0xa1, "page copied from the maker's memory");
}
