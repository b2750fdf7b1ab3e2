//! Feature bits and open flags that change who gets a fault: each case fails
//! if the kernel ignored the bit. UFFD_USER_MODE_ONLY and UFFD_FEATURE_SIGBUS
//! against a kernel-mode access (read(2) into a registered page), the
//! MISSING_SHMEM/MISSING_HUGETLBFS bits against registration, every
//! EVENT_* bit against the four operations that could queue an event, and
//! `vm.unprivileged_userfaultfd` against an unprivileged child.
//! (THREAD_ID, EXACT_ADDRESS: tests/events.rs; SIGBUS for user accesses:
//! tests/sigbus.rs; WP, MINOR, POISON, MOVE, WP_ASYNC: their own files.)

mod common;
use common::*;
use nix::errno::Errno;
use serial_test::{file_serial, serial};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};
use uffdtest::knob::Knob;
use uffdtest::testing::mm::{Reservation, align_for, assert_bytes, madvise, mremap, munmap};
use uffdtest::testing::parked::{park, spawn_child_raw, wait_readable};
use uffdtest::testing::{Buf, ChildExit, in_child, read_byte, wait_child};

const LIMIT: Duration = Duration::from_secs(20);

/// A pipe holding `data`, and its read end.
fn pipe_with(data: &[u8]) -> (OwnedFd, OwnedFd) {
    let (r, w) = nix::unistd::pipe().unwrap();
    assert_eq!(nix::unistd::write(&w, data), Ok(data.len()));
    (r, w)
}

/// read(2) from `fd` into `addr`: the copy to user memory is a kernel-mode
/// access of the destination page.
fn read_into(fd: i32, addr: usize, len: usize) -> nix::Result<usize> {
    // SAFETY: addr..addr+len lies in a mapping the test owns.
    Errno::result(unsafe { libc::read(fd, addr as *mut libc::c_void, len) }).map(|n| n as usize)
}

fn pattern() -> Vec<u8> {
    (0..100u8).map(|i| i.wrapping_mul(3).wrapping_add(1)).collect()
}

/// A kernel-mode access fails EFAULT at once and queues nothing, the pipe
/// keeps its data, and the page stays missing for user-mode accesses.
fn kernel_access_refused(mem: MemType, flags: OpenFlags, features: Features) {
    require_mode!(mem, RegisterMode::MISSING);
    let area = try_area!(Area::new(mem, 1));
    let uffd = try_skip!(testing::open_uffd_flags(flags, features));
    uffd.register(area.addr(), area.len(), RegisterMode::MISSING).unwrap();
    let (r, _w) = pipe_with(&pattern());
    assert_eq!(read_into(r.as_raw_fd(), area.addr() + 10, 100), Err(Errno::EFAULT));
    // No PAGEFAULT for the kernel access.
    faulter::assert_no_event(&uffd);
    let mut back = [0u8; 100];
    assert_eq!(
        nix::unistd::read(&r, &mut back),
        Ok(100),
        "the failed read consumed nothing"
    );
    assert_eq!(back.to_vec(), pattern());
    if features.contains(Features::SIGBUS) {
        return;
    }
    // The page is still missing: a user-mode read faults into the uffd.
    let at = area.addr();
    let p = park(move || read_byte(at));
    assert!(wait_readable(&uffd, LIMIT), "the page was filled");
    match uffd.read_event(Some(Duration::ZERO)).unwrap() {
        Some(Event::Pagefault { flags, address, .. }) => {
            assert_eq!((flags, address), (PagefaultFlags::empty(), at as u64))
        }
        other => panic!("expected a user-mode PAGEFAULT, got {other:?}"),
    }
    drop(uffd);
    assert_eq!(p.join(), 0, "released, the read fills a zero page");
}

#[apply(all_mem)]
fn user_mode_only_refuses_kernel_faults_with_efault(#[case] mem: MemType) {
    kernel_access_refused(mem, testing::default_flags(), Features::empty());
}

#[apply(all_mem)]
fn sigbus_fails_kernel_faults_with_efault_even_without_user_mode_only(#[case] mem: MemType) {
    require_features!(Features::SIGBUS);
    require_root!("a uffd without UFFD_USER_MODE_ONLY needs CAP_SYS_PTRACE");
    kernel_access_refused(mem, OpenFlags::O_CLOEXEC | OpenFlags::O_NONBLOCK, Features::SIGBUS);
}

#[apply(all_mem)]
fn without_user_mode_only_a_kernel_fault_waits_for_the_monitor(#[case] mem: MemType) {
    require_root!("a uffd without UFFD_USER_MODE_ONLY needs CAP_SYS_PTRACE");
    require_mode!(mem, RegisterMode::MISSING);
    let area = try_area!(Area::new(mem, 1));
    let flags = OpenFlags::O_CLOEXEC | OpenFlags::O_NONBLOCK;
    let uffd = try_skip!(testing::open_uffd_flags(flags, Features::empty()));
    uffd.register(area.addr(), area.len(), RegisterMode::MISSING).unwrap();
    let (r, _w) = pipe_with(&pattern());
    let (fd, at) = (r.as_raw_fd(), area.addr());
    let p = park(move || read_into(fd, at + 10, 100));
    assert!(wait_readable(&uffd, LIMIT), "the kernel access queued no PAGEFAULT");
    assert!(!p.is_done(), "read(2) returned before the fault was resolved");
    // Kernel faults are FAULT_FLAG_DEFAULT: interruptible, so `S`.
    assert_eq!(p.wait_state('S', LIMIT), Some('S'), "wchan {:?}", p.wchan());
    match uffd.read_event(Some(Duration::ZERO)).unwrap() {
        // copy_to_user writes: a write fault, at the page address.
        Some(Event::Pagefault { flags, address, .. }) => {
            assert_eq!((flags, address), (PagefaultFlags::WRITE, at as u64))
        }
        other => panic!("expected PAGEFAULT, got {other:?}"),
    }
    let ps = area.page_size();
    assert_eq!(
        uffd.copy(at, Buf::filled(ps, 0xee).addr(), ps, CopyMode::empty()),
        Ok(ps as i64)
    );
    assert_eq!(p.join(), Ok(100), "read(2) resumes and completes");
    let pat = pattern();
    let want = |i: usize| if (10..110).contains(&i) { pat[i - 10] } else { 0xee };
    assert_bytes(&area.read_page(0), want, "pipe data over the copied page");
}

// ---------------------------------------------------------------------------
// MISSING_SHMEM / MISSING_HUGETLBFS.

#[rstest]
#[case::shmem(MemType::Shmem, Features::MISSING_SHMEM)]
#[case::shmem_private(MemType::ShmemPrivate, Features::MISSING_SHMEM)]
#[case::hugetlb(MemType::Hugetlb, Features::MISSING_HUGETLBFS)]
#[case::hugetlb_private(MemType::HugetlbPrivate, Features::MISSING_HUGETLBFS)]
#[case::hugetlb_1g(MemType::Hugetlb1g, Features::MISSING_HUGETLBFS)]
#[case::hugetlb_1g_private(MemType::Hugetlb1gPrivate, Features::MISSING_HUGETLBFS)]
fn missing_type_bit_means_missing_registration_works(#[case] mem: MemType, #[case] bit: Features) {
    require_features!(bit);
    let area = try_area!(Area::new(mem, 1));
    // The bit is a capability: asking for it is accepted...
    let uffd = try_skip!(testing::open_uffd(bit));
    // ...and the type registers MISSING with COPY granted (ZEROPAGE not
    // on hugetlb).
    let ioctls = uffd.register(area.addr(), area.len(), RegisterMode::MISSING).unwrap();
    assert_ioctls(ioctls, mem, RegisterMode::MISSING);
    assert_eq!(ioctls.contains(Ioctls::ZEROPAGE), !mem.is_hugetlb(), "{ioctls:?}");
    // A fault is delivered as MISSING and resolved by COPY.
    let at = area.addr() + 1;
    let p = park(move || read_byte(at));
    assert!(wait_readable(&uffd, LIMIT));
    match uffd.read_event(Some(Duration::ZERO)).unwrap() {
        Some(Event::Pagefault { flags, address, .. }) => {
            assert_eq!((flags, address), (PagefaultFlags::empty(), area.addr() as u64))
        }
        other => panic!("expected PAGEFAULT, got {other:?}"),
    }
    let ps = area.page_size();
    uffd.copy(area.addr(), Buf::filled(ps, 9).addr(), ps, CopyMode::empty())
        .unwrap();
    assert_eq!(p.join(), 9);
}

// ---------------------------------------------------------------------------
// Each EVENT_* bit gates its own event and no other.

/// Runs `op` on a parked thread and collects the messages it queues
/// before returning (each event parks it until read).
fn events_of<T: Send + 'static>(uffd: &Uffd, op: impl FnOnce() -> T + Send + 'static) -> (T, Vec<Event>) {
    let p = park(op);
    let mut got = Vec::new();
    let end = Instant::now() + LIMIT;
    while !p.is_done() {
        if uffd.poll(Some(Duration::from_millis(5))).unwrap()
            && let Some(ev) = uffd.read_event(Some(Duration::ZERO)).unwrap()
        {
            got.push(ev);
        }
        assert!(Instant::now() < end, "operation neither returned nor queued an event");
    }
    let v = p.join();
    // Queued before returning, or not at all.
    while let Some(ev) = uffd.read_event(Some(Duration::ZERO)).unwrap() {
        got.push(ev);
    }
    (v, got)
}

fn describe(evs: &[Event]) -> Vec<String> {
    evs.iter()
        .map(|e| match e {
            Event::Fork { .. } => "FORK".to_string(),
            Event::Remove { start, end } => format!("REMOVE {start:#x}-{end:#x}"),
            Event::Unmap { start, end } => format!("UNMAP {start:#x}-{end:#x}"),
            Event::Remap { from, to, len } => format!("REMAP {from:#x}->{to:#x} len {len:#x}"),
            other => format!("{other:?}"),
        })
        .collect()
}

#[rstest]
#[case::event_fork(Features::EVENT_FORK)]
#[case::event_remove(Features::EVENT_REMOVE)]
#[case::event_unmap(Features::EVENT_UNMAP)]
#[case::event_remap(Features::EVENT_REMAP)]
#[case::no_event_bit(Features::empty())]
#[serial(fork)]
fn each_event_bit_gates_its_own_events(#[case] bit: Features) {
    require_features!(bit);
    let mem = MemType::Anon;
    let mut area = try_area!(Area::new(mem, 4));
    let (ps, base) = (area.page_size(), area.addr());
    let dest = Reservation::new(3 * ps, align_for(&area));
    let to = dest.addr;
    let uffd = try_skip!(testing::open_uffd(bit));
    uffd.register(base, area.len(), RegisterMode::MISSING).unwrap();

    let (st, fork) = events_of(&uffd, || wait_child(spawn_child_raw(|| 0)));
    assert_eq!(st, ChildExit::Exited(0));
    let (r, remove) = events_of(&uffd, move || madvise(base, ps, libc::MADV_DONTNEED));
    assert_eq!(r, Ok(()));
    let (r, unmap) = events_of(&uffd, move || munmap(base + 3 * ps, ps));
    assert_eq!(r, Ok(()));
    area.truncated_to(3 * ps);
    let (r, remap) = events_of(&uffd, move || {
        mremap(base, 3 * ps, 3 * ps, libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED, to)
    });
    assert_eq!(r, Ok(to));
    area.moved_to(to);
    dest.give_away();

    let h = |a: usize| a as u64;
    let want = |b: Features, s: Vec<String>| if bit == b { s } else { vec![] };
    assert_eq!(
        describe(&fork),
        want(Features::EVENT_FORK, vec!["FORK".into()]),
        "fork()"
    );
    assert_eq!(
        describe(&remove),
        want(
            Features::EVENT_REMOVE,
            vec![format!("REMOVE {:#x}-{:#x}", h(base), h(base + ps))]
        ),
        "madvise(MADV_DONTNEED)"
    );
    assert_eq!(
        describe(&unmap),
        want(
            Features::EVENT_UNMAP,
            vec![format!("UNMAP {:#x}-{:#x}", h(base + 3 * ps), h(base + 4 * ps))]
        ),
        "munmap()"
    );
    // A move unmaps its source: with EVENT_UNMAP alone that is reported,
    // as the old VMA still carries the context (mm/mremap.c move_vma).
    let remap_want = if bit == Features::EVENT_REMAP {
        vec![format!("REMAP {:#x}->{:#x} len {:#x}", h(base), h(to), h(3 * ps))]
    } else if bit == Features::EVENT_UNMAP {
        vec![format!("UNMAP {:#x}-{:#x}", h(base), h(base + 3 * ps))]
    } else {
        vec![]
    };
    assert_eq!(describe(&remap), remap_want, "mremap(MAYMOVE|FIXED)");
    drop(uffd); // before the area's munmap, which EVENT_UNMAP|REMAP would report
}

// ---------------------------------------------------------------------------
// vm.unprivileged_userfaultfd.

const SYSCTL: &str = "/proc/sys/vm/unprivileged_userfaultfd";

/// Sets the sysctl for the rest of the scope.
fn sysctl(v: &str) -> Knob {
    Knob::set(SYSCTL, v).unwrap_or_else(|e| panic!("vm.unprivileged_userfaultfd: {e}"))
}

/// Drops to nobody (no capabilities left) in a child.
fn become_nobody() -> bool {
    nix::unistd::setgroups(&[]).is_ok()
        && nix::unistd::setgid(nix::unistd::Gid::from_raw(65534)).is_ok()
        && nix::unistd::setuid(nix::unistd::Uid::from_raw(65534)).is_ok()
}

/// In an unprivileged child: 0 if userfaultfd(flags) + UFFDIO_API worked,
/// 1 if the syscall failed EPERM, other codes for anything else.
fn unprivileged_open(flags: OpenFlags) -> ChildExit {
    in_child(|| {
        if !become_nobody() {
            return 10;
        }
        match Uffd::open(flags) {
            Ok(u) => match u.api(Features::empty()) {
                Ok(_) => 0,
                Err(_) => 11,
            },
            Err(Errno::EPERM) => 1,
            Err(_) => 12,
        }
    })
}

#[test]
#[serial(fork)]
#[file_serial(sysctl)]
fn unprivileged_userfaultfd_sysctl_gates_kernel_fault_handling() {
    require_root!("setting the sysctl and dropping privileges");
    require!(std::path::Path::new(SYSCTL).exists(), "no {SYSCTL}");
    let full = OpenFlags::O_CLOEXEC | OpenFlags::O_NONBLOCK;
    let umo = full | OpenFlags::UFFD_USER_MODE_ONLY;
    {
        let _g = sysctl("0");
        assert_eq!(
            unprivileged_open(full),
            ChildExit::Exited(1),
            "sysctl 0, no USER_MODE_ONLY: EPERM"
        );
        assert_eq!(
            unprivileged_open(umo),
            ChildExit::Exited(0),
            "USER_MODE_ONLY needs no sysctl"
        );
    }
    {
        let _g = sysctl("1");
        assert_eq!(
            unprivileged_open(full),
            ChildExit::Exited(0),
            "sysctl 1 allows a full uffd"
        );
        assert_eq!(unprivileged_open(umo), ChildExit::Exited(0));
    }
}

#[test]
#[serial(fork)]
#[file_serial(sysctl)]
fn dev_userfaultfd_ignores_the_sysctl() {
    require_root!("setting the sysctl and dropping privileges");
    require!(std::path::Path::new(SYSCTL).exists(), "no {SYSCTL}");
    if let Err(e) = caps::require_dev() {
        skip!("{e}");
    }
    // The dev_userfaultfd probe opened it: a refusal now is a failure.
    let dev = nix::fcntl::open(
        "/dev/userfaultfd",
        nix::fcntl::OFlag::O_RDWR,
        nix::sys::stat::Mode::empty(),
    )
    .expect("open /dev/userfaultfd");
    let _g = sysctl("0");
    let raw = dev.as_raw_fd();
    // Access is decided when the device is opened: a child that inherits
    // the open device and then drops every privilege still gets a full
    // uffd from it, while the syscall refuses it the same.
    let st = in_child(|| {
        if !become_nobody() {
            return 10;
        }
        if !matches!(Uffd::open(OpenFlags::O_CLOEXEC), Err(Errno::EPERM)) {
            return 11;
        }
        // SAFETY: USERFAULTFD_IOC_NEW takes the flags by value.
        match unsafe { sys::userfaultfd_ioc_new(raw, libc::O_CLOEXEC) } {
            Ok(fd) => {
                // SAFETY: the ioctl returned a new fd we now own.
                let u = Uffd::from_owned(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) });
                if u.api(Features::empty()).is_ok() { 0 } else { 12 }
            }
            Err(_) => 13,
        }
    });
    assert_eq!(st, ChildExit::Exited(0));
}

#[apply(selftest_mem)]
#[serial(fork)]
fn user_mode_only_is_inherited_by_the_fork_context(#[case] mem: MemType) {
    // dup_userfaultfd() copies ctx->flags: the child's context is
    // user-mode-only too, so the child's read(2) into the range fails EFAULT.
    let (area, uffd) = try_skip!(registered_missing(mem, 1, Features::EVENT_FORK, |_| {}));
    let (r, _w) = pipe_with(&pattern());
    let (fd, at) = (r.as_raw_fd(), area.addr());
    let p = park(move || {
        wait_child(spawn_child_raw(move || match read_into(fd, at, 100) {
            Err(Errno::EFAULT) => 0,
            Ok(_) => 1,
            Err(_) => 2,
        }))
    });
    let child = next_fork_event(&uffd);
    assert_eq!(
        p.join(),
        ChildExit::Exited(0),
        "the child's kernel-mode access must fail EFAULT"
    );
    // No PAGEFAULT for it.
    faulter::assert_no_event(&child);
}
