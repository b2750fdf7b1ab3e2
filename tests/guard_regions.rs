//! Guard regions (MADV_GUARD_INSTALL, 6.13; file-backed mappings 6.15)
//! meet userfaultfd: a guard page is a PTE marker, not a hole, so
//! registration over it works, an access there is SIGSEGV before any
//! uffd is asked, and a fill ioctl finds the PTE taken. Removing the guard
//! leaves a hole the uffd serves again. Kernels without guard regions skip
//! from caps::guard_regions' probe.

mod common;
use common::*;
use faulter::{Faulter, assert_no_event, next_pagefault};
use nix::errno::Errno;
use std::os::fd::{AsRawFd, OwnedFd};
use testing::Buf;
use testing::mm::{assert_bytes, madvise};
use uffdtest::caps::{MADV_GUARD_INSTALL, MADV_GUARD_REMOVE};

const MISSING: RegisterMode = RegisterMode::MISSING;
/// Page 1 of 3 is the guard.
const GUARD: usize = 1;

/// SIGSEGV for an access to a guard page: VM_FAULT_SIGSEGV, which x86
/// reports as a mapping error at the exact address.
fn guard_segv(addr: usize) -> FaultSignal {
    FaultSignal {
        signo: libc::SIGSEGV,
        code: SEGV_MAPERR,
        addr,
        addr_lsb: 0,
    }
}

/// Three pages of `mem` with a guard on the middle one, registered MISSING
/// on a uffd that also takes kernel-mode faults (without
/// UFFD_USER_MODE_ONLY, so a kernel access would reach it if anything
/// did). `before`: install the guard before registering, else after.
fn guarded(mem: MemType, before: bool) -> Result<(Area, Uffd), String> {
    caps::guard_regions()?;
    if !caps::caps().root {
        return Err("needs root: a uffd without UFFD_USER_MODE_ONLY needs CAP_SYS_PTRACE".into());
    }
    testing::register_support(mem, MISSING)?;
    let area = testing::area(mem, 3)?;
    let uffd = testing::open_uffd_flags(OpenFlags::O_CLOEXEC | OpenFlags::O_NONBLOCK, Features::empty())?;
    let install = || madvise(area.page(GUARD), area.page_size(), MADV_GUARD_INSTALL).expect("MADV_GUARD_INSTALL");
    if before {
        install();
    }
    assert_ioctls(uffd.register(area.addr(), area.len(), MISSING).unwrap(), mem, MISSING);
    if !before {
        install();
    }
    Ok((area, uffd))
}

/// write(2) to a pipe from `addr`: the kernel reads the page.
fn write_from(addr: usize, len: usize) -> nix::Result<usize> {
    let (_r, w): (OwnedFd, OwnedFd) = nix::unistd::pipe().unwrap();
    // SAFETY: the kernel reads addr..addr+len or fails EFAULT.
    Errno::result(unsafe { libc::write(w.as_raw_fd(), addr as *const libc::c_void, len) }).map(|n| n as usize)
}

/// The guard page refuses user and kernel accesses alike and queues no
/// message, while the pages beside it fault into the uffd as ever.
#[track_caller]
fn assert_guard_holds(area: &Area, uffd: &Uffd) {
    let g = area.page(GUARD);
    for how in [testing::Access::Read, testing::Access::Write] {
        assert_eq!(access_in_signal_child(g + 5, how), Ended::Died(guard_segv(g + 5)));
    }
    assert_eq!(write_from(g, 16), Err(Errno::EFAULT), "write(2) from the guard page");
    assert_no_event(uffd);
    let r = Faulter::read(area.page(0));
    assert_eq!(next_pagefault(uffd), (PagefaultFlags::empty(), area.page(0)));
    let ps = area.page_size();
    let src = Buf::filled(ps, 0x4e);
    assert_eq!(
        uffd.copy(area.page(0), src.addr(), ps, CopyMode::empty()),
        Ok(ps as i64)
    );
    assert_eq!(r.join(), 0x4e);
}

#[apply(small_page_mem)]
fn registration_over_a_guard_page_works_and_the_guard_still_faults_sigsegv(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(guarded(mem, true));
    assert_guard_holds(&area, &uffd);
}

#[apply(small_page_mem)]
fn a_guard_installed_in_a_registered_range_faults_sigsegv(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(guarded(mem, false));
    assert_guard_holds(&area, &uffd);
}

/// After a fill was refused on the guard page: the page before it holds
/// what a fill put there or nothing, the guard still faults SIGSEGV and
/// nothing was queued.
#[track_caller]
fn assert_guard_survived(area: &Area, uffd: &Uffd) {
    let g = area.page(GUARD);
    assert_eq!(
        access_in_signal_child(g, testing::Access::Read),
        Ended::Died(guard_segv(g)),
        "the guard survived the fill"
    );
    assert_no_event(uffd);
}

// The newest rule ("mm: correctly handle UFFD PTE markers", 6.19): only a
// uffd marker (WP, poison) may be overwritten by a fill; a guard marker is
// a taken PTE, EEXIST. 6.13-6.18 replaced the guard with the copied page
// (docs/findings, known-issues.toml).
#[apply(small_page_mem)]
fn copy_onto_a_guard_page_fails_eexist(#[case] mem: MemType) {
    judged_by_the_runner!("mm: correctly handle UFFD PTE markers");
    let (area, uffd) = try_skip!(guarded(mem, true));
    let (g, ps) = (area.page(GUARD), area.page_size());
    let src = Buf::filled(ps, 0x4e);
    assert_eq!(
        uffd.copy(g, src.addr(), ps, CopyMode::empty()),
        testing::progress::failed(Errno::EEXIST),
        "COPY onto the guard"
    );
    // A range over the guard fills the page before it, then stops there.
    assert_eq!(
        uffd.copy(area.page(0), src.addr(), 2 * ps, CopyMode::empty()),
        testing::progress::err(Errno::EEXIST, ps as i64)
    );
    assert_bytes(&area.read_page(0), |_| 0x4e, "page before the guard");
    assert_guard_survived(&area, &uffd);
}

#[apply(small_page_mem)]
fn zeropage_onto_a_guard_page_fails_eexist(#[case] mem: MemType) {
    if mem == MemType::Shmem {
        judged_by_the_runner!("mm: correctly handle UFFD PTE markers");
    }
    let (area, uffd) = try_skip!(guarded(mem, true));
    let (g, ps) = (area.page(GUARD), area.page_size());
    assert_eq!(
        uffd.zeropage(g, ps, ZeropageMode::empty()),
        testing::progress::failed(Errno::EEXIST),
        "ZEROPAGE onto the guard"
    );
    assert!(
        !pagemap::is_present(area.page(0)),
        "ZEROPAGE mapped the page before the guard"
    );
    assert_guard_survived(&area, &uffd);
}

#[apply(small_page_mem)]
fn a_removed_guard_leaves_a_hole_the_uffd_serves(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(guarded(mem, true));
    let (g, ps) = (area.page(GUARD), area.page_size());
    madvise(g, ps, MADV_GUARD_REMOVE).expect("MADV_GUARD_REMOVE");
    let r = Faulter::read(g + 7);
    assert_eq!(next_pagefault(&uffd), (PagefaultFlags::empty(), g));
    let src = Buf::filled(ps, 0x61);
    assert_eq!(uffd.copy(g, src.addr(), ps, CopyMode::empty()), Ok(ps as i64));
    assert_eq!(r.join(), 0x61);
    assert_no_event(&uffd);
}
