//! Every way a new task or image meets a registered range besides a plain
//! fork: MADV_WIPEONFORK and MADV_DONTFORK ranges under EVENT_FORK,
//! CLONE_VM and vfork children, and execve with a uffd open.
//!
//! From kernel/fork.c `dup_mmap`: a VM_DONTCOPY (MADV_DONTFORK) VMA is
//! skipped before `dup_userfaultfd` sees it, so the child has no such VMA
//! and, if no other registered VMA is copied, no FORK event is raised; a
//! VM_WIPEONFORK VMA is copied (registration included) but not its page
//! tables. CLONE_VM children share the mm: no dup_mmap, no FORK event, and
//! their faults are the parent's uffd's. execve drops the old mm: the uffd
//! survives unless O_CLOEXEC, and its ioctls find their mm gone (ESRCH,
//! ENOMEM for REGISTER) or foreign (MOVE refuses cross-mm: EINVAL).

mod common;
use common::*;
use nix::errno::Errno;
use serial_test::serial;
use std::os::fd::AsRawFd;
use uffdtest::testing::faulter::{assert_no_event, next_pagefault};
use uffdtest::testing::parked::{park, spawn_child_raw};
use uffdtest::testing::vmchild::VmChild;
use uffdtest::testing::{Buf, ChildExit, read_byte, wait_child};

/// Copies one page of `byte` to `at` through `uffd`: what it answered.
fn copy_page(uffd: &Uffd, at: usize, ps: usize, byte: u8) -> uffd::Progress {
    let src = Buf::filled(ps, byte);
    uffd.copy(at, src.addr(), ps, CopyMode::empty())
}

/// madvise(2) of `advice` on page `i` (or, with `None`, all) of `area`.
fn advise(area: &Area, i: Option<usize>, advice: i32) {
    let (at, len) = i.map_or((area.addr(), area.len()), |i| (area.page(i), area.page_size()));
    testing::mm::madvise(at, len, advice).unwrap_or_else(|e| panic!("madvise({advice}) on {}: {e}", area.mem()));
}

/// In a forked child: whether nothing is mapped at `[at, at+len)`
/// (madvise fails ENOMEM on an unmapped range). Allocation-free.
fn unmapped(at: usize, len: usize) -> bool {
    // SAFETY: MADV_NORMAL changes nothing on a mapped range.
    let r = unsafe { libc::madvise(at as *mut libc::c_void, len, libc::MADV_NORMAL) };
    r == -1 && Errno::last() == Errno::ENOMEM
}

#[apply(anon_mem)]
#[serial(fork)]
fn wipeonfork_child_gets_the_range_registered_and_empty(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(registered_missing(mem, 1, Features::EVENT_FORK, |a| {
        a.populate(0x11);
        advise(a, None, libc::MADV_WIPEONFORK);
    }));
    let (at, ps) = (area.page(0) + 5, area.page_size());
    let p = park(move || wait_child(spawn_child_raw(move || read_byte(at) as i32)));
    let child = next_fork_event(&uffd);
    // The child's copy of the VMA keeps MISSING on the child's uffd, and
    // has no pages: its read faults there.
    let (flags, addr) = next_pagefault(&child);
    assert_eq!((flags, addr), (PagefaultFlags::empty(), area.page(0)));
    assert_eq!(copy_page(&child, area.page(0), ps, 0x22), Ok(ps as i64));
    assert_eq!(p.join(), ChildExit::Exited(0x22));
    assert_no_event(&child);
    assert_no_event(&uffd);
    assert_eq!(area.read_page(0), vec![0x11; ps], "the parent's page");
}

#[apply(all_mem)]
#[serial(fork)]
fn dontfork_page_is_absent_in_the_child_and_the_rest_forks_registered(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(registered_missing_for_fork(mem, (2, 1), Features::EVENT_FORK, |a| {
        advise(a, Some(1), libc::MADV_DONTFORK);
    }));
    let (p0, p1, ps) = (area.page(0), area.page(1), area.page_size());
    let p = park(move || {
        wait_child(spawn_child_raw(move || {
            let b = read_byte(p0 + 3) as i32;
            if unmapped(p1, ps) { b } else { 1 }
        }))
    });
    let child = next_fork_event(&uffd);
    assert_eq!(next_pagefault(&child), (PagefaultFlags::empty(), p0));
    assert_eq!(copy_page(&child, p0, ps, 0x22), Ok(ps as i64));
    assert_eq!(p.join(), ChildExit::Exited(0x22));
    assert_no_event(&uffd);
    // The child's copy went where its mapping kind puts it: the shared file
    // (the parent's page is filled), or the child's private memory.
    if mem.is_shared() {
        assert_eq!(copy_page(&uffd, p0, ps, 0x33), testing::progress::failed(Errno::EEXIST));
        assert_eq!(area.read_page(0), vec![0x22; ps]);
    } else {
        assert_eq!(copy_page(&uffd, p0, ps, 0x33), Ok(ps as i64));
        assert_eq!(area.read_page(0), vec![0x33; ps]);
    }
    assert_eq!(
        testing::smaps::uffd_modes(p1),
        RegisterMode::MISSING,
        "the parent's page 1"
    );
}

#[apply(all_mem)]
#[serial(fork)]
fn dontfork_on_the_only_registered_vma_forks_without_an_event(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(registered_missing(mem, 1, Features::EVENT_FORK, |a| {
        advise(a, None, libc::MADV_DONTFORK);
    }));
    let (at, len) = (area.addr(), area.len());
    // Parked anyway: were a FORK event raised, the fork would wait for it.
    let p = park(move || wait_child(spawn_child_raw(move || if unmapped(at, len) { 0 } else { 1 })));
    assert_eq!(p.join(), ChildExit::Exited(0), "the child has no such VMA");
    assert_no_event(&uffd);
}

#[apply(all_mem)]
#[serial(fork)]
fn clone_vm_child_faults_into_the_parents_uffd(#[case] mem: MemType) {
    let f = Features::EVENT_FORK | Features::THREAD_ID;
    let (area, uffd) = try_skip!(registered_missing(mem, 1, f, |_| {}));
    let child = VmChild::read(area.page(0) + 9, false);
    // No FORK event (no dup_mmap): the first message is the child's fault.
    let Some(Event::Pagefault { flags, address, ptid }) = uffd.read_event(Some(HANG_GUARD)).unwrap() else {
        panic!("expected the child's PAGEFAULT");
    };
    let pid = child.pid().as_raw() as u32;
    assert_eq!(
        (flags, address, ptid),
        (PagefaultFlags::empty(), area.page(0) as u64, pid)
    );
    let ps = area.page_size();
    assert_eq!(copy_page(&uffd, area.page(0), ps, 0x5c), Ok(ps as i64));
    assert_eq!(child.wait(), ChildExit::Exited(0x5c));
    assert_no_event(&uffd);
    assert_eq!(area.read_page(0), vec![0x5c; ps], "one mm: the parent sees the page");
}

#[apply(all_mem)]
#[serial(fork)]
fn vfork_child_faults_into_the_parents_uffd_while_the_parent_waits(#[case] mem: MemType) {
    let f = Features::EVENT_FORK | Features::THREAD_ID;
    let (area, uffd) = try_skip!(registered_missing(mem, 1, f, |_| {}));
    let at = area.page(0) + 9;
    let p = park(move || {
        let c = VmChild::read(at, true);
        (c.pid().as_raw() as u32, c.wait())
    });
    let Some(Event::Pagefault { flags, address, ptid }) = uffd.read_event(Some(HANG_GUARD)).unwrap() else {
        panic!("expected the child's PAGEFAULT");
    };
    assert_eq!((flags, address), (PagefaultFlags::empty(), area.page(0) as u64));
    assert_ne!(ptid, p.tid(), "the vforking thread does not fault");
    // The vforking thread sleeps (killable) until its child is done.
    assert_eq!(p.wait_state('D', HANG_GUARD), Some('D'), "wchan {:?}", p.wchan());
    assert!(!p.is_done());
    let ps = area.page_size();
    assert_eq!(copy_page(&uffd, area.page(0), ps, 0x5d), Ok(ps as i64));
    assert_eq!(p.join(), (ptid, ChildExit::Exited(0x5d)));
    assert_no_event(&uffd);
}

// ---------------------------------------------------------------------------
// execve with a uffd open: the test binary runs itself again.

/// Set in the re-executed image: `<addr>:<len>` (hex) of the range the
/// uffd at [`KEPT_FD`] registered in the old image.
const EXEC_ENV: &str = "UFFDTEST_EXEC_UFFD";
/// Where the old image leaves the uffd it opened without O_CLOEXEC, and
/// the one it opened with it: numbers no startup code takes.
const KEPT_FD: i32 = 400;
const CLOEXEC_FD: i32 = 401;
const EXEC_TEST: &str = "exec_keeps_the_uffd_open_without_its_mm";

/// The errno name of a result, or `ok`.
fn outcome<T, E: std::fmt::Debug>(r: Result<T, E>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => format!("{e:?}"),
    }
}

/// In the new image: what each call on the inherited uffd answers, as one
/// line on stdout; then the process exits.
fn exec_side(spec: &str) -> ! {
    let (addr, len) = spec.split_once(':').expect("addr:len");
    let (addr, len) = (
        usize::from_str_radix(addr, 16).unwrap(),
        usize::from_str_radix(len, 16).unwrap(),
    );
    let link = match std::fs::read_link(format!("/proc/self/fd/{KEPT_FD}")) {
        Ok(p) => p.display().to_string(),
        Err(e) => e.to_string(),
    };
    // SAFETY: fcntl(F_GETFD) on fd numbers, valid or not.
    let (kept, gone) = unsafe {
        (
            libc::fcntl(KEPT_FD, libc::F_GETFD),
            libc::fcntl(CLOEXEC_FD, libc::F_GETFD),
        )
    };
    let gone = if gone == -1 {
        format!("{:?}", Errno::last())
    } else {
        "open".into()
    };
    // SAFETY: the fd came through exec; nothing else owns it here.
    let u = Uffd::from_owned(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(KEPT_FD) });
    let src = Buf::filled(len, 1);
    let progress = |r: uffd::Progress| match r {
        Ok(n) => format!("ok {n}"),
        Err(p) if p.progress == uffd::Partial::UNTOUCHED => format!("{:?}", p.errno),
        Err(p) => format!("{:?} {}", p.errno, p.progress),
    };
    println!(
        "uffd-exec: link={} kept_fd_flags={kept} cloexec_fd={gone} copy={} zeropage={} move={} register={} unregister={} wake={} api={} read={}",
        link,
        progress(u.copy(addr, src.addr(), len, CopyMode::empty())),
        progress(u.zeropage(addr, len, ZeropageMode::empty())),
        progress(u.r#move(addr, src.addr(), len, MoveMode::empty())),
        outcome(u.register(addr, len, RegisterMode::MISSING)),
        outcome(u.unregister(addr, len)),
        outcome(u.wake(addr, len)),
        outcome(u.api(Features::empty())),
        outcome(u.read_raw(&mut [sys::uffd_msg::default(); 1])),
    );
    std::process::exit(0)
}

/// The old image's part, between fork and exec (no allocation): a uffd
/// without O_CLOEXEC registered over the range, moved to [`KEPT_FD`], and
/// one with O_CLOEXEC at [`CLOEXEC_FD`].
fn before_exec(addr: usize, len: usize) -> std::io::Result<()> {
    let umo = OpenFlags::UFFD_USER_MODE_ONLY | OpenFlags::O_NONBLOCK;
    let kept = Uffd::open(umo)?;
    kept.api(Features::empty())?;
    kept.register(addr, len, RegisterMode::MISSING)?;
    let cloexec = Uffd::open(umo | OpenFlags::O_CLOEXEC)?;
    cloexec.api(Features::empty())?;
    // SAFETY: dup2/dup3 onto numbers this process does not use.
    unsafe {
        if libc::dup2(kept.as_raw_fd(), KEPT_FD) != KEPT_FD
            || libc::dup3(cloexec.as_raw_fd(), CLOEXEC_FD, libc::O_CLOEXEC) != CLOEXEC_FD
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Spawning the child forks: under plain `cargo test` that fork would queue
/// a FORK event on another case's EVENT_FORK uffd in this process, and wait
/// for a monitor that never reads it (a hang seen in CI), so it takes the
/// process-local `fork` key too.
#[apply(all_mem)]
#[serial(fork)]
fn exec_keeps_the_uffd_open_without_its_mm(#[case] mem: MemType) {
    if let Ok(spec) = std::env::var(EXEC_ENV) {
        exec_side(&spec);
    }
    require_mode!(mem, RegisterMode::MISSING);
    try_skip!(caps::require_open(OpenFlags::UFFD_USER_MODE_ONLY).map_err(|e| e.to_string()));
    let area = try_area!(Area::new(mem, 1));
    let (addr, len) = (area.addr(), area.len());
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([EXEC_TEST, "--nocapture", "--test-threads=1", "-q"])
        .env(EXEC_ENV, format!("{addr:x}:{len:x}"))
        .stderr(std::process::Stdio::inherit());
    // SAFETY: before_exec only issues syscalls on stack data.
    unsafe { std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || before_exec(addr, len)) };
    let out = cmd.output().expect("run the test binary again");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("uffd-exec: "))
        .unwrap_or_else(|| panic!("the new image said nothing ({}): {stdout}", out.status));
    // The old mm is gone: the fill ioctls fail ESRCH before touching their
    // progress field, REGISTER and UNREGISTER ENOMEM, MOVE refuses another
    // mm (EINVAL), WAKE needs no mm; the context stays initialised and
    // holds no message.
    let want = "link=anon_inode:[userfaultfd] kept_fd_flags=0 cloexec_fd=EBADF copy=ESRCH zeropage=ESRCH \
                move=EINVAL register=ENOMEM unregister=ENOMEM wake=ok api=EINVAL read=EAGAIN";
    assert_eq!(line, want);
    assert!(out.status.success(), "{}", out.status);
}
