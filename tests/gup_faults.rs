//! Faults the kernel takes on a process's behalf, not a user load: GUP
//! (MADV_POPULATE_READ/WRITE, mlock(2), process_vm_readv/writev from
//! another process, io_uring's IORING_REGISTER_BUFFERS long-term pin) and
//! copy_to/from_user (read(2)/write(2) on a pipe)
//! into a registered page, and /proc/pid/mem (FOLL_FORCE) into a missing
//! or write-protected one.
//!
//! Each way in is checked four ways: the monitor resolves the fault (the
//! call completes, the data lands), wakes it without resolving (the fault
//! comes again), the uffd is closed (the fault retries without it and
//! fills a zero page), and the fault is refused (UFFD_USER_MODE_ONLY or
//! UFFD_FEATURE_SIGBUS: VM_FAULT_SIGBUS, which GUP returns as EFAULT).
//! A uffd that takes kernel faults needs CAP_SYS_PTRACE: the cases need root.
//! (read(2) with USER_MODE_ONLY and SIGBUS alone: tests/features.rs.)

mod common;
use common::*;
use faulter::{assert_no_event, next_pagefault};
use nix::errno::Errno;
use serial_test::serial;
use std::sync::Arc;
use testing::Buf;
use testing::kaccess::{Access, Kind};
use testing::mm::assert_bytes;
use testing::parked::park;

const MISSING: RegisterMode = RegisterMode::MISSING;

/// A uffd that also takes kernel-mode faults.
fn full_flags() -> OpenFlags {
    OpenFlags::O_CLOEXEC | OpenFlags::O_NONBLOCK
}

/// One page of `mem`, `kind` prepared on it, then registered MISSING on a
/// uffd opened with `flags` and `features` (after the access forked any
/// child it needs). Err is the SKIP reason.
fn registered(
    kind: Kind,
    mem: MemType,
    flags: OpenFlags,
    features: Features,
) -> Result<(Area, Arc<Access>, Uffd), String> {
    if !caps::caps().root {
        return Err("needs root: a uffd that takes kernel faults needs CAP_SYS_PTRACE; mlock(2)".into());
    }
    kind.available()?;
    let area = area_to_register(mem, 1, features, MISSING)?;
    let access = Arc::new(Access::new(kind, area.addr(), area.page_size()));
    let uffd = testing::open_uffd_flags(flags, features)?;
    assert_ioctls(uffd.register(area.addr(), area.len(), MISSING).unwrap(), mem, MISSING);
    Ok((area, access, uffd))
}

/// The message `kind` queues on `area`'s first page.
fn expected_fault(kind: Kind, area: &Area) -> (PagefaultFlags, usize) {
    let flags = if kind.writes(area.mem().is_shared()) {
        PagefaultFlags::WRITE
    } else {
        PagefaultFlags::empty()
    };
    (flags, area.addr())
}

/// The access completed over a page the monitor (or the kernel) filled
/// with `fill`: its return value, the page and what it carried out.
#[track_caller]
fn assert_completed(a: &Access, got: nix::Result<usize>, area: &Area, fill: u8) {
    assert_eq!(got, a.done(), "{:?} returned", a.kind);
    assert_bytes(&area.read_page(0), |i| a.page_byte(fill, i), "the page");
    if let Some(out) = a.carried() {
        assert_bytes(&out, |_| fill, "bytes carried out of the page");
    }
}

/// Starts the access `a` on `area`'s first page in a thread and checks it
/// queued exactly its fault and sleeps in it.
fn start(a: &Arc<Access>, area: &Area, uffd: &Uffd) -> testing::parked::Parked<nix::Result<usize>> {
    let r = a.clone();
    let p = park(move || r.run());
    // An access that cannot wait (a pin under mmap_lock without
    // FOLL_UNLOCKABLE) ends at once, EFAULT, with nothing queued: say so
    // now rather than after the whole deadline.
    let end = std::time::Instant::now() + HANG_GUARD;
    while !testing::parked::wait_readable(uffd, std::time::Duration::from_millis(20)) {
        assert!(!p.is_done(), "{:?} ended without queuing a fault", a.kind);
        assert!(
            std::time::Instant::now() < end,
            "no PAGEFAULT message within {HANG_GUARD:?}"
        );
    }
    assert_eq!(next_pagefault(uffd), expected_fault(a.kind, area), "{:?}", a.kind);
    match a.child() {
        Some(pid) => wait_child_in_fault(pid),
        None => wait_in_fault(&p),
    }
    p
}

/// Waits until process `pid` sleeps in handle_userfault.
#[track_caller]
fn wait_child_in_fault(pid: i32) {
    let end = std::time::Instant::now() + HANG_GUARD;
    loop {
        let w = std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
        if w.contains("handle_userfault") {
            return;
        }
        assert!(
            std::time::Instant::now() < end,
            "child {pid} never reached handle_userfault: {w:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// The monitor resolves the fault with COPY; with `wake_first` it first
/// WAKEs without a page, and the kernel retries the fault, which comes again.
fn resolved(kind: Kind, mem: MemType, wake_first: bool) {
    let (area, a, uffd) = try_skip!(registered(kind, mem, full_flags(), Features::empty()));
    let p = start(&a, &area, &uffd);
    let ps = area.page_size();
    if wake_first {
        uffd.wake(area.addr(), ps).unwrap();
        assert_eq!(next_pagefault(&uffd), expected_fault(kind, &area), "the retried fault");
        assert!(!p.is_done(), "{:?} returned without the page", a.kind);
    }
    let src = Buf::filled(ps, 0xc3);
    assert_eq!(uffd.copy(area.addr(), src.addr(), ps, CopyMode::empty()), Ok(ps as i64));
    assert_completed(&a, p.join(), &area, 0xc3);
    assert_no_event(&uffd);
}

fn released(kind: Kind, mem: MemType) {
    let (area, a, uffd) = try_skip!(registered(kind, mem, full_flags(), Features::empty()));
    let p = start(&a, &area, &uffd);
    // Closing the only descriptor releases the context: the waiter wakes,
    // the registration is gone and the retried fault fills a zero page.
    drop(uffd);
    assert_completed(&a, p.join(), &area, 0);
}

fn refused(kind: Kind, mem: MemType, flags: OpenFlags, features: Features) {
    let (area, a, uffd) = try_skip!(registered(kind, mem, flags, features));
    assert_eq!(a.run(), Err(kind.refused()), "{kind:?}");
    assert_no_event(&uffd);
    assert!(!pagemap::is_present(area.addr()), "a refused fault mapped the page");
    if kind == Kind::PipeRead {
        assert!(a.pipe_kept(), "the refused read(2) consumed the pipe");
    }
}

/// The five cases of one way in, over every memory type. All hold
/// `#[serial(fork)]`: under plain `cargo test` a fork elsewhere in the
/// process would copy the uffd and keep it from being released.
macro_rules! kernel_access_cases {
    ($kind:ident: $resolved:ident, $woken:ident, $released:ident, $user_mode_only:ident, $sigbus:ident) => {
        #[apply(all_mem)]
        #[serial(fork)]
        fn $resolved(#[case] mem: MemType) {
            resolved(Kind::$kind, mem, false);
        }

        #[apply(all_mem)]
        #[serial(fork)]
        fn $woken(#[case] mem: MemType) {
            resolved(Kind::$kind, mem, true);
        }

        #[apply(all_mem)]
        #[serial(fork)]
        fn $released(#[case] mem: MemType) {
            released(Kind::$kind, mem);
        }

        #[apply(all_mem)]
        #[serial(fork)]
        fn $user_mode_only(#[case] mem: MemType) {
            refused(Kind::$kind, mem, testing::default_flags(), Features::empty());
        }

        #[apply(all_mem)]
        #[serial(fork)]
        fn $sigbus(#[case] mem: MemType) {
            require_features!(Features::SIGBUS);
            refused(Kind::$kind, mem, full_flags(), Features::SIGBUS);
        }
    };
}

kernel_access_cases!(PopulateRead:
    populate_read_waits_for_the_monitor,
    populate_read_retries_after_a_bare_wake,
    populate_read_fills_zeros_once_released,
    populate_read_fails_efault_on_a_user_mode_only_uffd,
    populate_read_fails_efault_with_sigbus);

kernel_access_cases!(PopulateWrite:
    populate_write_waits_for_the_monitor,
    populate_write_retries_after_a_bare_wake,
    populate_write_fills_zeros_once_released,
    populate_write_fails_efault_on_a_user_mode_only_uffd,
    populate_write_fails_efault_with_sigbus);

kernel_access_cases!(Mlock:
    mlock_waits_for_the_monitor,
    mlock_retries_after_a_bare_wake,
    mlock_fills_zeros_once_released,
    mlock_fails_enomem_on_a_user_mode_only_uffd,
    mlock_fails_enomem_with_sigbus);

kernel_access_cases!(VmReadv:
    process_vm_readv_waits_for_the_monitor,
    process_vm_readv_retries_after_a_bare_wake,
    process_vm_readv_reads_zeros_once_released,
    process_vm_readv_fails_efault_on_a_user_mode_only_uffd,
    process_vm_readv_fails_efault_with_sigbus);

kernel_access_cases!(VmWritev:
    process_vm_writev_waits_for_the_monitor,
    process_vm_writev_retries_after_a_bare_wake,
    process_vm_writev_lands_once_released,
    process_vm_writev_fails_efault_on_a_user_mode_only_uffd,
    process_vm_writev_fails_efault_with_sigbus);

kernel_access_cases!(PipeRead:
    read_into_the_page_waits_for_the_monitor,
    read_into_the_page_retries_after_a_bare_wake,
    read_into_the_page_lands_once_released,
    read_into_the_page_fails_efault_on_a_user_mode_only_uffd,
    read_into_the_page_fails_efault_with_sigbus);

kernel_access_cases!(IoUringBuffers:
    io_uring_buffer_registration_waits_for_the_monitor,
    io_uring_buffer_registration_retries_after_a_bare_wake,
    io_uring_buffer_registration_pins_zeros_once_released,
    io_uring_buffer_registration_fails_efault_on_a_user_mode_only_uffd,
    io_uring_buffer_registration_fails_efault_with_sigbus);

kernel_access_cases!(PipeWrite:
    write_from_the_page_waits_for_the_monitor,
    write_from_the_page_retries_after_a_bare_wake,
    write_from_the_page_sends_zeros_once_released,
    write_from_the_page_fails_efault_on_a_user_mode_only_uffd,
    write_from_the_page_fails_efault_with_sigbus);

// ---------------------------------------------------------------------------
// /proc/pid/mem: access_remote_vm pins with FOLL_FORCE through
// get_user_pages_remote() without a `locked` argument, so its faults may
// not drop mmap_lock (no FAULT_FLAG_ALLOW_RETRY) and handle_userfault
// cannot wait: it answers VM_FAULT_SIGBUS, GUP EFAULT, and mem_rw() turns
// "nothing copied" into EIO. Nothing is queued, even on a uffd that takes
// kernel faults. WP_ASYNC needs no monitor: the write lands.

/// pread/pwrite of `/proc/self/mem` at `addr`.
fn proc_mem(addr: usize, write: Option<&[u8]>, len: usize) -> nix::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/proc/self/mem")
        .expect("open /proc/self/mem");
    let errno = |e: std::io::Error| Errno::from_raw(e.raw_os_error().unwrap_or(0));
    match write {
        Some(b) => f.write_at(b, addr as u64).map(|n| vec![0; n]).map_err(errno),
        None => {
            let mut b = vec![0u8; len];
            f.read_at(&mut b, addr as u64).map(|n| b[..n].to_vec()).map_err(errno)
        }
    }
}

#[apply(all_mem)]
#[serial(fork)]
fn proc_mem_read_of_a_missing_page_fails_eio(#[case] mem: MemType) {
    let (area, _a, uffd) = try_skip!(registered(Kind::PopulateRead, mem, full_flags(), Features::empty()));
    assert_eq!(proc_mem(area.addr(), None, 64), Err(Errno::EIO));
    assert_no_event(&uffd);
    assert!(!pagemap::is_present(area.addr()), "the refused read mapped the page");
}

/// One page of `mem` holding 0x11, registered WP on a uffd that takes
/// kernel faults, offering `extra` too, and write-protected.
fn protected_page(mem: MemType, extra: Features) -> Result<(Area, Uffd), String> {
    if !caps::caps().root {
        return Err("needs root: a uffd that takes kernel faults needs CAP_SYS_PTRACE".into());
    }
    let features = caps::features_for(mem, RegisterMode::WP) | extra;
    let area = area_to_register(mem, 1, features, RegisterMode::WP)?;
    area.fill_page(0, 0x11);
    let uffd = testing::open_uffd_flags(full_flags(), features)?;
    uffd.register(area.addr(), area.len(), RegisterMode::WP).unwrap();
    uffd.writeprotect(area.addr(), area.len(), WriteprotectMode::WP)
        .unwrap();
    Ok((area, uffd))
}

#[apply(all_mem)]
fn proc_mem_write_into_a_write_protected_page_fails_eio(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(protected_page(mem, Features::empty()));
    assert_eq!(proc_mem(area.addr() + 8, Some(&[0x22; 8]), 8), Err(Errno::EIO));
    assert_no_event(&uffd);
    assert_bytes(&area.read_page(0), |_| 0x11, "the protected page");
    assert_eq!(wp_present(area.addr()), pagemap::PM_UFFD_WP | pagemap::PM_PRESENT);
}

#[apply(all_mem)]
fn proc_mem_write_with_wp_async_lands_and_clears_the_bit(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(protected_page(mem, Features::WP_ASYNC));
    assert_eq!(proc_mem(area.addr() + 8, Some(&[0x22; 8]), 8), Ok(vec![0; 8]));
    assert_no_event(&uffd);
    assert_bytes(
        &area.read_page(0),
        |i| if (8..16).contains(&i) { 0x22 } else { 0x11 },
        "the written page",
    );
    assert_eq!(
        wp_present(area.addr()),
        pagemap::PM_PRESENT,
        "WP_ASYNC resolved the write"
    );
}
