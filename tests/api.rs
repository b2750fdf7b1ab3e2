//! UFFDIO_API: the handshake every uffd starts with, on both creation paths.

mod common;
use common::*;
use nix::errno::Errno;
use std::os::fd::AsRawFd;

/// The two ways to get a uffd, named as the selftests name them.
#[template]
#[rstest]
#[case::syscall(Path::Syscall)]
#[case::dev_userfaultfd(Path::Dev)]
fn paths(#[case] path: Path) {}

#[derive(Debug, Clone, Copy)]
enum Path {
    Syscall,
    Dev,
}

/// A uffd through `path`. Err is a SKIP reason, from the probes of that
/// path (`uffdtest caps`: userfaultfd(2), /dev/userfaultfd) alone; the open
/// itself failing is a failure.
fn open(path: Path, flags: OpenFlags) -> Result<Uffd, String> {
    let usable = match path {
        Path::Syscall => caps::require_open(flags),
        Path::Dev => caps::require_dev(),
    };
    usable.map_err(|e| e.to_string())?;
    let r = match path {
        Path::Syscall => Uffd::open(flags),
        Path::Dev => Uffd::open_dev(flags),
    };
    Ok(r.unwrap_or_else(|e| panic!("cannot open a userfaultfd through {path:?} ({flags:?}): {e}")))
}

fn umo() -> OpenFlags {
    testing::default_flags()
}

#[apply(paths)]
fn handshake_offers_every_probed_feature(#[case] path: Path) {
    let u = try_skip!(open(path, umo()));
    let api = u.api(Features::empty()).expect("UFFDIO_API with no features");
    assert_eq!(api.api, sys::UFFD_API);
    assert_eq!(api.features, caps::caps().features);
    assert_eq!(api.ioctls, Ioctls::REGISTER | Ioctls::UNREGISTER | Ioctls::API);
}

#[apply(paths)]
fn handshake_grants_what_was_asked(#[case] path: Path) {
    let u = try_skip!(open(path, umo()));
    let want = caps::caps().features - Features::EVENT_FORK;
    let api = u.api(want).expect("UFFDIO_API with every feature");
    // The kernel reports what it supports, whatever subset was requested.
    assert_eq!(api.features, caps::caps().features);
}

#[apply(paths)]
fn second_handshake_fails_einval(#[case] path: Path) {
    let u = try_skip!(open(path, umo()));
    u.api(Features::empty()).expect("first UFFDIO_API");
    let (errno, out) = u.api_raw(sys::UFFD_API, 0).unwrap_err();
    assert_eq!(errno, Errno::EINVAL);
    // On error the kernel zeroes the whole struct.
    assert_eq!((out.api, out.features.bits(), out.ioctls.bits()), (0, 0, 0));
    // The fd still works after the refused second handshake.
    let a = testing::area(MemType::Anon, 1).unwrap();
    u.register(a.addr(), a.len(), RegisterMode::MISSING)
        .expect("register after a refused second UFFDIO_API");
}

#[apply(paths)]
fn wrong_api_number_fails_einval(#[case] path: Path) {
    let u = try_skip!(open(path, umo()));
    let (errno, out) = u.api_raw(0xab, 0).unwrap_err();
    assert_eq!(errno, Errno::EINVAL);
    assert_eq!((out.api, out.features.bits(), out.ioctls.bits()), (0, 0, 0));
    // A refused handshake does not consume the fd: a correct one still works.
    u.api(Features::empty()).expect("UFFDIO_API after a wrong api number");
}

#[apply(paths)]
fn unknown_feature_bit_fails_einval(#[case] path: Path) {
    let u = try_skip!(open(path, umo()));
    for bit in [17, 40, 63] {
        let (errno, out) = u.api_raw(sys::UFFD_API, 1u64 << bit).unwrap_err();
        assert_eq!(errno, Errno::EINVAL, "feature bit {bit}");
        assert_eq!(out.features.bits(), 0, "struct zeroed after bit {bit}");
    }
    u.api(Features::empty()).expect("UFFDIO_API after refused feature bits");
}

#[apply(paths)]
fn ioctls_before_handshake_fail_einval(#[case] path: Path) {
    let u = try_skip!(open(path, umo()));
    let a = testing::area(MemType::Anon, 1).unwrap();
    let src = testing::Buf::filled(a.page_size(), 1);
    let (s, n) = (a.addr(), a.len());
    assert_eq!(u.register(s, n, RegisterMode::MISSING), Err(Errno::EINVAL));
    assert_eq!(u.unregister(s, n), Err(Errno::EINVAL));
    assert_eq!(u.wake(s, n), Err(Errno::EINVAL));
    assert_eq!(
        u.copy(s, src.addr(), n, CopyMode::empty()).map_err(|p| p.errno),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        u.zeropage(s, n, ZeropageMode::empty()).map_err(|p| p.errno),
        Err(Errno::EINVAL)
    );
    assert_eq!(u.writeprotect(s, n, WriteprotectMode::WP), Err(Errno::EINVAL));
    assert_eq!(
        u.r#continue(s, n, ContinueMode::empty()).map_err(|p| p.errno),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        u.poison(s, n, PoisonMode::empty()).map_err(|p| p.errno),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        u.r#move(s, src.addr(), n, MoveMode::empty()).map_err(|p| p.errno),
        Err(Errno::EINVAL)
    );
}

#[apply(paths)]
fn user_mode_only_needs_no_privilege(#[case] path: Path) {
    // A user-mode-only fd opens whatever vm.unprivileged_userfaultfd says;
    // as root this shows the flag is accepted on both paths.
    let u = try_skip!(open(path, umo()));
    u.api(Features::empty()).expect("UFFDIO_API");
}

#[test]
fn dev_and_syscall_descriptors_are_equivalent() {
    let a = try_skip!(open(Path::Syscall, umo()));
    let b = try_skip!(open(Path::Dev, umo()));
    let fa = a.api(Features::empty()).unwrap();
    let fb = b.api(Features::empty()).unwrap();
    assert_eq!(fa, fb);
    for mem in [MemType::Anon, MemType::Shmem] {
        let x = testing::area(mem, 1).unwrap();
        let y = testing::area(mem, 1).unwrap();
        let ia = a
            .register(x.addr(), x.len(), RegisterMode::MISSING | RegisterMode::WP)
            .unwrap();
        let ib = b
            .register(y.addr(), y.len(), RegisterMode::MISSING | RegisterMode::WP)
            .unwrap();
        assert_eq!(ia, ib, "{mem}: same registration mask from both paths");
    }
    // Both are anonymous inodes of the same kind.
    let la = std::fs::read_link(format!("/proc/self/fd/{}", testing::fdnum(&a))).unwrap();
    let lb = std::fs::read_link(format!("/proc/self/fd/{}", testing::fdnum(&b))).unwrap();
    assert_eq!(la, lb);
    assert_eq!(la.to_string_lossy(), "anon_inode:[userfaultfd]");
}

#[test]
fn open_flags_are_honoured() {
    use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
    for (flags, cloexec, nonblock) in [
        (OpenFlags::UFFD_USER_MODE_ONLY, false, false),
        (OpenFlags::UFFD_USER_MODE_ONLY | OpenFlags::O_CLOEXEC, true, false),
        (OpenFlags::UFFD_USER_MODE_ONLY | OpenFlags::O_NONBLOCK, false, true),
    ] {
        let u = try_skip!(open(Path::Syscall, flags));
        let fd = fcntl(&u, FcntlArg::F_GETFD).unwrap();
        let fl = fcntl(&u, FcntlArg::F_GETFL).unwrap();
        assert_eq!(
            FdFlag::from_bits_retain(fd).contains(FdFlag::FD_CLOEXEC),
            cloexec,
            "{flags:?}"
        );
        assert_eq!(
            OFlag::from_bits_retain(fl).contains(OFlag::O_NONBLOCK),
            nonblock,
            "{flags:?}"
        );
    }
}

#[test]
fn unknown_open_flags_fail_einval() {
    assert_eq!(
        Uffd::open(OpenFlags::from_bits_retain(1 << 4)).unwrap_err(),
        Errno::EINVAL
    );
    if let Err(e) = caps::require_dev() {
        skip!("{e}");
    }
    assert_eq!(
        Uffd::open_dev(OpenFlags::from_bits_retain(1 << 4)).unwrap_err(),
        Errno::EINVAL
    );
}

#[test]
fn event_fork_needs_cap_sys_ptrace() {
    require!(caps::caps().root, "needs root to compare against an unprivileged child");
    // As root EVENT_FORK is granted; a child that drops to nobody is refused EPERM.
    let u = try_skip!(open(Path::Syscall, umo()));
    u.api(Features::EVENT_FORK).expect("root may ask for EVENT_FORK");
    let st = testing::in_child(|| {
        if nix::unistd::setgid(nix::unistd::Gid::from_raw(65534)).is_err()
            || nix::unistd::setuid(nix::unistd::Uid::from_raw(65534)).is_err()
        {
            return 3;
        }
        let Ok(u) = Uffd::open(testing::default_flags()) else {
            return 4;
        };
        match u.api(Features::EVENT_FORK) {
            Err(Errno::EPERM) => 0,
            Ok(_) => 1,
            Err(_) => 2,
        }
    });
    assert_eq!(
        st,
        testing::ChildExit::Exited(0),
        "unprivileged EVENT_FORK must fail EPERM"
    );
}

/// /dev/userfaultfd answers one ioctl: USERFAULTFD_IOC_NEW. Any other
/// command, a uffd's own UFFDIO_API among them, is EINVAL and creates no
/// descriptor.
#[test]
fn dev_userfaultfd_refuses_every_ioctl_but_ioc_new() {
    if let Err(e) = caps::require_dev() {
        skip!("{e}");
    }
    let dev = nix::fcntl::open(
        "/dev/userfaultfd",
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .expect("open /dev/userfaultfd");
    // The number after USERFAULTFD_IOC_NEW's: same type, no size.
    let other_new = sys::request::USERFAULTFD_IOC_NEW + 1;
    for cmd in [other_new, sys::request::UFFDIO_API, sys::request::UFFDIO_REGISTER] {
        // SAFETY: the device reads the argument as flags by value; nothing is dereferenced.
        let r = unsafe { libc::ioctl(dev.as_raw_fd(), cmd as _, libc::O_CLOEXEC as libc::c_ulong) };
        assert_eq!((r, Errno::last()), (-1, Errno::EINVAL), "ioctl {cmd:#x}");
    }
    // The one it answers makes a uffd.
    // SAFETY: USERFAULTFD_IOC_NEW takes the flags by value.
    let fd = unsafe { sys::userfaultfd_ioc_new(dev.as_raw_fd(), libc::O_CLOEXEC | sys::UFFD_USER_MODE_ONLY) }
        .expect("USERFAULTFD_IOC_NEW");
    // SAFETY: the ioctl returned a new fd we now own.
    let u = Uffd::from_owned(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) });
    u.api(Features::empty()).expect("UFFDIO_API on the new uffd");
}
