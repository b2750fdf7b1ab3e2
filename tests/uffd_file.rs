//! The uffd as a file: epoll (level and edge triggered) and select(2)
//! readiness, fcntl(2) flags, and the fault counts of its fdinfo.
//!
//! fs/userfaultfd.c `userfaultfd_poll`: EPOLLERR before the UFFDIO_API
//! handshake and on a descriptor without O_NONBLOCK (poll cannot promise a
//! read won't block), else EPOLLIN while a fault or event waits unread.
//! Each queued fault wakes the fd's wait queue once (`handle_userfault`),
//! which is the edge EPOLLET sees. select(2) counts EPOLLERR as readable
//! and writable. The file is an anon inode opened O_RDONLY plus the
//! O_NONBLOCK asked for (so write(2) fails EBADF); O_CLOEXEC is the
//! descriptor's.

mod common;
use common::*;
use nix::errno::Errno;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;
use uffdtest::testing::faulter::{Faulter, assert_no_event};
use uffdtest::testing::fdinfo;

/// An epoll instance watching one uffd for EPOLLIN (plus `extra` flags).
struct Epoll(OwnedFd);

impl Epoll {
    fn watch(uffd: &Uffd, extra: u32) -> Epoll {
        // SAFETY: epoll_create1 takes a flag and returns a new fd or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        assert!(fd >= 0, "epoll_create1: {}", Errno::last());
        // SAFETY: the kernel just handed us this fd.
        let ep = Epoll(unsafe { OwnedFd::from_raw_fd(fd) });
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32 | extra,
            u64: uffd.as_raw_fd() as u64,
        };
        // SAFETY: a valid epoll_event for EPOLL_CTL_ADD.
        let r = unsafe { libc::epoll_ctl(fd, libc::EPOLL_CTL_ADD, uffd.as_raw_fd(), &mut ev) };
        assert_eq!(r, 0, "epoll_ctl: {}", Errno::last());
        ep
    }

    /// The event masks epoll_wait reports within `timeout_ms`.
    fn wait(&self, timeout_ms: i32) -> Vec<u32> {
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 4];
        loop {
            // SAFETY: evs has room for 4 events.
            let n = unsafe { libc::epoll_wait(self.0.as_raw_fd(), evs.as_mut_ptr(), 4, timeout_ms) };
            match Errno::result(n) {
                Ok(n) => return evs[..n as usize].iter().map(|e| e.events).collect(),
                Err(Errno::EINTR) => continue,
                Err(e) => panic!("epoll_wait: {e}"),
            }
        }
    }

    /// What is ready now.
    fn now(&self) -> Vec<u32> {
        self.wait(0)
    }

    /// Waits for the next report (a hang guard).
    fn next(&self) -> Vec<u32> {
        self.wait(HANG_GUARD.as_millis() as i32)
    }
}

const IN: u32 = libc::EPOLLIN as u32;
const ERR: u32 = libc::EPOLLERR as u32;

/// select(2) with a zero timeout: (readable, writable, exceptional).
fn select_now(fd: RawFd) -> (bool, bool, bool) {
    // SAFETY: fd_sets zeroed then filled with one valid fd below FD_SETSIZE.
    unsafe {
        let mut sets: [libc::fd_set; 3] = std::mem::zeroed();
        for s in &mut sets {
            libc::FD_ZERO(s);
            libc::FD_SET(fd, s);
        }
        let mut tv = libc::timeval { tv_sec: 0, tv_usec: 0 };
        let [r, w, e] = &mut sets;
        let n = libc::select(fd + 1, r, w, e, &mut tv);
        assert!(n >= 0, "select: {}", Errno::last());
        (libc::FD_ISSET(fd, r), libc::FD_ISSET(fd, w), libc::FD_ISSET(fd, e))
    }
}

fn getfl(fd: RawFd) -> i32 {
    // SAFETY: fcntl(F_GETFL) on an fd we own.
    let f = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    assert!(f >= 0, "F_GETFL: {}", Errno::last());
    f
}

fn setfl(fd: RawFd, flags: i32) {
    // SAFETY: fcntl(F_SETFL) on an fd we own.
    assert_eq!(
        unsafe { libc::fcntl(fd, libc::F_SETFL, flags) },
        0,
        "F_SETFL: {}",
        Errno::last()
    );
}

/// poll(2) for POLLIN with a zero timeout: the revents.
fn revents(fd: RawFd) -> i16 {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    assert!(unsafe { libc::poll(&mut p, 1, 0) } >= 0, "poll: {}", Errno::last());
    p.revents
}

/// Copies one page of `byte` into page `i` of `area`, waking its faulter.
fn resolve(uffd: &Uffd, area: &Area, i: usize, byte: u8) {
    let ps = area.page_size();
    let src = testing::Buf::filled(ps, byte);
    assert_eq!(
        uffd.copy(area.page(i), src.addr(), ps, CopyMode::empty()),
        Ok(ps as i64)
    );
}

/// The address of the next PAGEFAULT, which must be there now.
fn read_fault(uffd: &Uffd) -> usize {
    match uffd.read_event(Some(Duration::ZERO)).expect("read(uffd)") {
        Some(Event::Pagefault { address, .. }) => address as usize,
        other => panic!("expected a PAGEFAULT, got {other:?}"),
    }
}

#[apply(all_mem)]
fn epoll_level_triggered_reports_a_fault_until_it_is_read(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(registered_missing(mem, 1, Features::empty(), |_| {}));
    let ep = Epoll::watch(&uffd, 0);
    assert_eq!(ep.now(), Vec::<u32>::new(), "nothing queued yet");
    let f = Faulter::read(area.page(0));
    assert_eq!(ep.next(), vec![IN]);
    assert_eq!(ep.now(), vec![IN], "level: still unread");
    assert_eq!(read_fault(&uffd), area.page(0));
    assert_eq!(ep.now(), Vec::<u32>::new(), "read: nothing left");
    resolve(&uffd, &area, 0, 0x71);
    assert_eq!(f.join(), 0x71);
    assert_eq!(ep.now(), Vec::<u32>::new());
}

#[apply(all_mem)]
fn epoll_edge_triggered_reports_each_new_fault_once(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(registered_missing(mem, 2, Features::empty(), |_| {}));
    let ep = Epoll::watch(&uffd, libc::EPOLLET as u32);
    assert_eq!(ep.now(), Vec::<u32>::new());
    let f0 = Faulter::read(area.page(0));
    assert_eq!(ep.next(), vec![IN]);
    assert_eq!(ep.now(), Vec::<u32>::new(), "edge: reported once though unread");
    let f1 = Faulter::read(area.page(1));
    assert_eq!(ep.next(), vec![IN], "a second fault is a new edge");
    assert_eq!(ep.now(), Vec::<u32>::new());
    let mut got = vec![read_fault(&uffd), read_fault(&uffd)];
    got.sort();
    assert_eq!(got, vec![area.page(0), area.page(1)]);
    assert_no_event(&uffd);
    resolve(&uffd, &area, 0, 0x72);
    resolve(&uffd, &area, 1, 0x73);
    assert_eq!((f0.join(), f1.join()), (0x72, 0x73));
    assert_eq!(ep.now(), Vec::<u32>::new(), "resolving raises no edge");
}

#[apply(all_mem)]
fn closing_the_uffd_drops_it_from_epoll_and_frees_its_faulter(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(registered_missing(mem, 1, Features::empty(), |_| {}));
    let ep = Epoll::watch(&uffd, 0);
    let f = Faulter::read(area.page(0));
    assert_eq!(ep.next(), vec![IN]);
    drop(uffd);
    // The release woke the faulter, whose retry finds no registration.
    assert_eq!(f.join(), 0);
    assert_eq!(ep.now(), Vec::<u32>::new(), "the closed file left the interest list");
}

#[test]
fn epoll_reports_epollerr_before_the_handshake_and_without_o_nonblock() {
    try_skip!(caps::require_open(testing::default_flags()).map_err(|e| e.to_string()));
    let raw = Uffd::open(testing::default_flags()).expect("userfaultfd(2)");
    let ep = Epoll::watch(&raw, 0);
    assert_eq!(ep.now(), vec![ERR], "no handshake yet");
    raw.api(Features::empty()).unwrap();
    assert_eq!(ep.now(), Vec::<u32>::new(), "initialised, nothing queued");
    let flags = OpenFlags::O_CLOEXEC | OpenFlags::UFFD_USER_MODE_ONLY;
    let blocking = try_skip!(testing::open_uffd_flags(flags, Features::empty()));
    assert_eq!(Epoll::watch(&blocking, 0).now(), vec![ERR], "without O_NONBLOCK");
}

#[apply(all_mem)]
fn select_reports_a_fault_readable_until_it_is_read(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(registered_missing(mem, 1, Features::empty(), |_| {}));
    let fd = uffd.as_raw_fd();
    assert_eq!(select_now(fd), (false, false, false));
    let f = Faulter::read(area.page(0));
    assert!(testing::parked::wait_readable(&uffd, HANG_GUARD));
    assert_eq!(select_now(fd), (true, false, false));
    assert_eq!(read_fault(&uffd), area.page(0));
    assert_eq!(select_now(fd), (false, false, false));
    resolve(&uffd, &area, 0, 0x74);
    assert_eq!(f.join(), 0x74);
}

#[test]
fn select_reports_epollerr_as_readable_and_writable() {
    try_skip!(caps::require_open(testing::default_flags()).map_err(|e| e.to_string()));
    let raw = Uffd::open(testing::default_flags()).expect("userfaultfd(2)");
    assert_eq!(select_now(raw.as_raw_fd()), (true, true, false), "no handshake yet");
    let flags = OpenFlags::O_CLOEXEC | OpenFlags::UFFD_USER_MODE_ONLY;
    let blocking = try_skip!(testing::open_uffd_flags(flags, Features::empty()));
    assert_eq!(
        select_now(blocking.as_raw_fd()),
        (true, true, false),
        "without O_NONBLOCK"
    );
}

#[rstest]
#[case::plain(OpenFlags::empty())]
#[case::nonblock(OpenFlags::O_NONBLOCK)]
#[case::cloexec(OpenFlags::O_CLOEXEC)]
#[case::nonblock_cloexec(OpenFlags::O_NONBLOCK.union(OpenFlags::O_CLOEXEC))]
fn fcntl_reports_the_flags_the_uffd_was_opened_with(#[case] flags: OpenFlags) {
    let flags = flags | OpenFlags::UFFD_USER_MODE_ONLY;
    let uffd = try_skip!(testing::open_uffd_flags(flags, Features::empty()));
    let fd = uffd.as_raw_fd();
    // O_RDONLY, O_NONBLOCK as asked; O_CLOEXEC and UFFD_USER_MODE_ONLY
    // are not file status flags.
    let nonblock = if flags.contains(OpenFlags::O_NONBLOCK) {
        libc::O_NONBLOCK
    } else {
        0
    };
    assert_eq!(getfl(fd), libc::O_RDONLY | nonblock);
    // SAFETY: a one-byte write from a local buffer.
    let w = unsafe { libc::write(fd, [0u8].as_ptr().cast(), 1) };
    assert_eq!(Errno::result(w), Err(Errno::EBADF), "write(2) on a read-only file");
    // SAFETY: fcntl(F_GETFD) on an fd we own.
    let fdflags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    let cloexec = if flags.contains(OpenFlags::O_CLOEXEC) {
        libc::FD_CLOEXEC
    } else {
        0
    };
    assert_eq!(fdflags, cloexec);
}

#[test]
fn f_setfl_o_nonblock_decides_poll_and_read() {
    let uffd = try_skip!(testing::open_uffd(Features::empty()));
    let fd = uffd.as_raw_fd();
    let mut msg = [sys::uffd_msg::default(); 1];
    assert_eq!(uffd.read_raw(&mut msg), Err(Errno::EAGAIN));
    // userfaultfd_poll and read look at the file's flags as they are now.
    setfl(fd, getfl(fd) & !libc::O_NONBLOCK);
    assert_eq!(getfl(fd), libc::O_RDONLY);
    assert_eq!(revents(fd), libc::POLLERR);
    setfl(fd, getfl(fd) | libc::O_NONBLOCK);
    assert_eq!(getfl(fd), libc::O_RDONLY | libc::O_NONBLOCK);
    assert_eq!(revents(fd), 0);
    assert_eq!(uffd.read_raw(&mut msg), Err(Errno::EAGAIN));
}

#[apply(all_mem)]
fn fdinfo_counts_three_faults_through_read_and_resolve(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(registered_missing(mem, 3, Features::empty(), |_| {}));
    let counts = || {
        let i = fdinfo::read(&*uffd);
        (i.pending, i.total)
    };
    assert_eq!(counts(), (0, 0));
    let faulters: Vec<_> = (0..3).map(|i| Faulter::read(area.page(i))).collect();
    assert!(
        fdinfo::wait_pending(&*uffd, 3, HANG_GUARD),
        "{:?}",
        fdinfo::read(&*uffd)
    );
    assert_eq!(counts(), (3, 3));
    let read = [read_fault(&uffd), read_fault(&uffd)];
    assert_eq!(counts(), (1, 3), "two read, all still waiting");
    let index = |addr: usize| (addr - area.addr()) / area.page_size();
    let unread = (0..3).find(|&i| !read.iter().any(|&a| index(a) == i)).unwrap();
    resolve(&uffd, &area, index(read[0]), 0x81);
    assert_eq!(counts(), (1, 2), "a read fault resolved");
    resolve(&uffd, &area, unread, 0x82);
    assert_eq!(counts(), (0, 1), "the unread fault resolved");
    resolve(&uffd, &area, index(read[1]), 0x83);
    assert_eq!(counts(), (0, 0));
    let want = |i: usize| match i {
        i if i == index(read[0]) => 0x81,
        i if i == unread => 0x82,
        _ => 0x83,
    };
    for (i, f) in faulters.into_iter().enumerate() {
        assert_eq!(f.join(), want(i), "faulter {i}");
    }
    assert_no_event(&uffd);
}

/// preadv2(2) of one message with `flags`.
fn preadv2(fd: RawFd, msg: &mut [sys::uffd_msg], flags: i32) -> Result<usize, Errno> {
    let iov = libc::iovec {
        iov_base: msg.as_mut_ptr().cast(),
        iov_len: std::mem::size_of_val(msg),
    };
    // SAFETY: one iovec over `msg`, writable for its length.
    let n = unsafe { libc::preadv2(fd, &iov, 1, -1, flags) };
    Errno::result(n).map(|n| n as usize)
}

/// The running kernel's release when it is older than `major.minor`.
fn kernel_before(major: u64, minor: u64) -> Option<String> {
    let u = nix::sys::utsname::uname().expect("uname");
    let release = u.release().to_string_lossy().into_owned();
    let mut n = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse::<u64>().ok());
    ((n.next().unwrap_or(0), n.next().unwrap_or(0)) < (major, minor)).then_some(release)
}

/// Since the uffd reads through `->read_iter` (6.10) its file has
/// FMODE_NOWAIT: preadv2(RWF_NOWAIT) asks for IOCB_NOWAIT, and a descriptor
/// opened without O_NONBLOCK then answers EAGAIN on an empty queue instead
/// of blocking; a queued fault is read as usual.
#[apply(all_mem)]
fn rwf_nowait_read_of_a_blocking_uffd_answers_eagain_then_the_fault(#[case] mem: MemType) {
    if let Some(release) = kernel_before(6, 10) {
        skip!("kernel {release} predates 6.10: the uffd has no ->read_iter, preadv2(RWF_NOWAIT) answers EOPNOTSUPP");
    }
    let (area, uffd) = try_skip!(registered_missing(mem, 1, Features::empty(), |_| {}));
    let fd = uffd.as_raw_fd();
    setfl(fd, getfl(fd) & !libc::O_NONBLOCK);
    let mut msg = [sys::uffd_msg::default(); 1];
    assert_eq!(preadv2(fd, &mut msg, libc::RWF_NOWAIT), Err(Errno::EAGAIN));
    let f = Faulter::read(area.page(0));
    assert!(
        fdinfo::wait_pending(&*uffd, 1, HANG_GUARD),
        "{:?}",
        fdinfo::read(&*uffd)
    );
    assert_eq!(preadv2(fd, &mut msg, libc::RWF_NOWAIT), Ok(std::mem::size_of_val(&msg)));
    assert_eq!(msg[0].event, sys::UFFD_EVENT_PAGEFAULT);
    // SAFETY: a PAGEFAULT message carries the pagefault member.
    let address = unsafe { msg[0].arg.pagefault.address } as usize;
    assert_eq!(address, area.page(0));
    assert_eq!(preadv2(fd, &mut msg, libc::RWF_NOWAIT), Err(Errno::EAGAIN));
    resolve(&uffd, &area, 0, 0x6e);
    assert_eq!(f.join(), 0x6e);
    // poll, which assert_no_event waits with, needs O_NONBLOCK back.
    setfl(fd, getfl(fd) | libc::O_NONBLOCK);
    assert_no_event(&uffd);
}
