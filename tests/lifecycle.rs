//! A uffd's life around its messages: read(2) and poll(2) rules, what
//! closing does to parked threads, and what the ioctls answer once the
//! process that created the descriptor has exited (fs/userfaultfd.c:
//! `userfaultfd_read_iter`, `userfaultfd_poll`, `userfaultfd_release`, and
//! the `mmget_not_zero` failures of each ioctl).

mod common;
use common::*;
use nix::errno::Errno;
use serial_test::{parallel, serial};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};
use uffdtest::testing::fdinfo;
use uffdtest::testing::fdpass::{recv_fd, send_fd, socketpair};
use uffdtest::testing::mm::assert_bytes;
use uffdtest::testing::parked::{Parked, park, spawn_child_raw, wait_readable};
use uffdtest::testing::{Buf, ChildExit, read_byte, spawn_child, wait_child, write_byte};

const LIMIT: Duration = Duration::from_secs(20);
const MSG: usize = std::mem::size_of::<sys::uffd_msg>();

fn open(features: Features) -> Result<Uffd, String> {
    testing::open_uffd(features)
}

fn register(uffd: &Uffd, area: &Area) {
    uffd.register(area.addr(), area.len(), RegisterMode::MISSING)
        .unwrap_or_else(|e| panic!("register {}: {e}", area.mem()));
}

/// read(2) of `len` bytes straight from the fd.
fn read_bytes(fd: RawFd, len: usize) -> nix::Result<usize> {
    let mut buf = vec![0u8; len];
    // SAFETY: buf is writable for len bytes.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), len) };
    Errno::result(n).map(|n| n as usize)
}

/// poll(2) for POLLIN with a zero timeout: the revents the kernel reports.
fn revents(fd: RawFd) -> i16 {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    assert!(n >= 0, "poll: {}", Errno::last());
    p.revents
}

/// Waits until `n` faults are queued unread (a hang guard, not a timing).
fn wait_pending(uffd: &Uffd, n: u64) {
    assert!(
        fdinfo::wait_pending(uffd, n, LIMIT),
        "{n} faults never queued: {:?}",
        fdinfo::read(uffd)
    );
}

fn assert_parked_in_fault<T>(p: &Parked<T>, uffd: &Uffd) {
    assert!(wait_readable(uffd, LIMIT), "no PAGEFAULT queued");
    assert!(!p.is_done(), "the access completed on a missing registered page");
    assert_eq!(p.wait_state('S', LIMIT), Some('S'), "wchan {:?}", p.wchan());
}

// ---------------------------------------------------------------------------
// Passing a descriptor to another process (SCM_RIGHTS).

/// A uffd made, handshaken and registered over `area` by a child that has
/// exited since: its mm is gone (mmget_not_zero fails).
fn orphaned_uffd(area: &Area, features: Features) -> Uffd {
    let (a, b) = socketpair();
    let (sock, addr, len) = (a.as_raw_fd(), area.addr(), area.len());
    let pid = spawn_child(move || {
        let Ok(u) = Uffd::open(testing::default_flags()) else {
            return 2;
        };
        if u.api(features).is_err() {
            return 3;
        }
        if u.register(addr, len, RegisterMode::MISSING).is_err() {
            return 4;
        }
        if send_fd(sock, u.as_raw_fd()) { 0 } else { 5 }
    });
    assert_eq!(wait_child(pid), ChildExit::Exited(0), "the owner child");
    Uffd::from_owned(recv_fd(b.as_raw_fd()))
}

#[apply(selftest_mem)]
#[parallel(fork)]
fn ioctls_after_the_owner_exited(#[case] mem: MemType) {
    require_mode!(mem, RegisterMode::MISSING);
    let area = try_area!(Area::new(mem, 1));
    let (ps, at) = (area.page_size(), area.addr());
    let src = Buf::filled(ps, 1);
    let u = orphaned_uffd(&area, Features::empty());
    // The resolving ioctls fail ESRCH and leave the progress field alone
    // (they return before writing it).
    let esrch = Partial {
        errno: Errno::ESRCH,
        progress: Partial::UNTOUCHED,
    };
    assert_eq!(u.copy(at, src.addr(), ps, CopyMode::empty()), Err(esrch), "COPY");
    assert_eq!(u.zeropage(at, ps, ZeropageMode::empty()), Err(esrch), "ZEROPAGE");
    // A kernel without UFFD_FEATURE_POISON (6.6) has no such ioctl: the
    // unknown command fails EINVAL, progress untouched.
    let poison_want = if caps::caps().has(Features::POISON) {
        esrch
    } else {
        Partial {
            errno: Errno::EINVAL,
            progress: Partial::UNTOUCHED,
        }
    };
    assert_eq!(u.poison(at, ps, PoisonMode::empty()), Err(poison_want), "POISON");
    assert_eq!(u.r#continue(at, ps, ContinueMode::empty()), Err(esrch), "CONTINUE");
    assert_eq!(
        u.writeprotect(at, ps, WriteprotectMode::WP),
        Err(Errno::ESRCH),
        "WRITEPROTECT"
    );
    // MOVE refuses a descriptor of another mm before looking for it.
    let einval = Partial {
        errno: Errno::EINVAL,
        progress: Partial::UNTOUCHED,
    };
    assert_eq!(u.r#move(at, src.addr(), ps, MoveMode::empty()), Err(einval), "MOVE");
    // REGISTER and UNREGISTER report the missing mm as ENOMEM.
    assert_eq!(
        u.register(at, ps, RegisterMode::MISSING),
        Err(Errno::ENOMEM),
        "REGISTER"
    );
    assert_eq!(u.unregister(at, ps), Err(Errno::ENOMEM), "UNREGISTER");
    // WAKE touches no mm: nothing to wake, success.
    assert_eq!(u.wake(at, ps), Ok(()), "WAKE");
    // The context is still initialised, and quiet.
    assert_eq!(
        u.api(Features::empty()).map(drop),
        Err(Errno::EINVAL),
        "second UFFDIO_API"
    );
    assert_eq!(read_bytes(u.as_raw_fd(), MSG), Err(Errno::EAGAIN));
    assert_eq!(revents(u.as_raw_fd()), 0);
}

#[apply(selftest_mem)]
#[serial(fork)]
fn fork_descriptor_fails_esrch_once_the_child_exited(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(registered_missing(mem, 1, Features::EVENT_FORK, |_| {}));
    let ps = area.page_size();
    let p = park(|| wait_child(spawn_child_raw(|| 0)));
    let child = next_fork_event(&uffd);
    assert_eq!(p.join(), ChildExit::Exited(0));
    let src = Buf::filled(ps, 1);
    let got = child.copy(area.page(0), src.addr(), ps, CopyMode::empty());
    assert_eq!(
        got,
        Err(Partial {
            errno: Errno::ESRCH,
            progress: Partial::UNTOUCHED
        })
    );
    // The parent's descriptor is unaffected.
    assert_eq!(
        uffd.copy(area.page(0), src.addr(), ps, CopyMode::empty()),
        Ok(ps as i64)
    );
}

// ---------------------------------------------------------------------------
// Closing the descriptor.

fn close_wakes_fault(mem: MemType, read_first: bool, write: bool) {
    let (area, uffd) = try_skip!(registered_missing(mem, 1, Features::empty(), |_| {}));
    let at = area.page(0) + 100;
    let p = park(move || {
        if write {
            write_byte(at, 0x77);
        }
        read_byte(at)
    });
    assert_parked_in_fault(&p, &uffd);
    if read_first {
        assert!(matches!(
            uffd.read_event(Some(LIMIT)).unwrap(),
            Some(Event::Pagefault { .. })
        ));
        assert_eq!(fdinfo::read(&uffd).pending, 0);
    }
    // Release unregisters the range and wakes every waiter; the fault is
    // retried as on any unregistered mapping.
    drop(uffd);
    assert_eq!(p.join(), if write { 0x77 } else { 0 });
    let want = |i: usize| if write && i == 100 { 0x77 } else { 0 };
    assert_bytes(&area.read_page(0), want, "the page after the retried fault");
    // No longer registered: another access completes on this thread.
    assert_eq!(read_byte(area.addr()), 0);
}

tests_calling! {
    (#[apply(all_mem)])
    fn close_wakes_an_unread_fault_which_then_fills_zero(mem: MemType) => close_wakes_fault(mem, false, false);
    fn close_wakes_a_read_fault_which_then_fills_zero(mem: MemType) => close_wakes_fault(mem, true, false);
    fn close_wakes_a_write_fault_whose_write_then_lands(mem: MemType) => close_wakes_fault(mem, true, true);
}

#[apply(all_mem)]
fn close_releases_a_thread_parked_in_an_event(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(registered_missing(mem, 1, Features::EVENT_REMOVE, |a| a.populate(0x19)));
    let p = park_release(mem, area.addr(), area.len(), &uffd);
    // Never read: the release ends the wait and the advice goes ahead.
    drop(uffd);
    assert_eq!(p.join(), Ok(()));
    assert_bytes(&area.read_page(0), |_| 0, "the pages were dropped");
}

// ---------------------------------------------------------------------------
// read(2) and poll(2).

#[test]
fn read_with_no_message_fails_eagain_and_poll_reports_nothing() {
    let uffd = try_skip!(open(Features::empty()));
    assert_eq!(read_bytes(uffd.as_raw_fd(), MSG), Err(Errno::EAGAIN));
    assert_eq!(revents(uffd.as_raw_fd()), 0);
}

#[test]
fn read_and_poll_before_the_handshake() {
    if let Err(e) = caps::require_open(testing::default_flags()) {
        skip!("{e}");
    }
    let uffd = Uffd::open(testing::default_flags()).expect("userfaultfd(2)");
    // userfaultfd_read_iter refuses an uninitialised context...
    assert_eq!(read_bytes(uffd.as_raw_fd(), MSG), Err(Errno::EINVAL));
    // ...and userfaultfd_poll reports only POLLERR.
    assert_eq!(revents(uffd.as_raw_fd()), libc::POLLERR);
    uffd.api(Features::empty()).unwrap();
    assert_eq!(revents(uffd.as_raw_fd()), 0);
}

#[apply(selftest_mem)]
fn poll_on_a_blocking_uffd_reports_pollerr_even_with_a_fault_queued(#[case] mem: MemType) {
    require_mode!(mem, RegisterMode::MISSING);
    let area = try_area!(Area::new(mem, 1));
    let flags = OpenFlags::O_CLOEXEC | OpenFlags::UFFD_USER_MODE_ONLY;
    let uffd = try_skip!(testing::open_uffd_flags(flags, Features::empty()));
    register(&uffd, &area);
    // Without O_NONBLOCK poll cannot promise read won't block: POLLERR.
    assert_eq!(revents(uffd.as_raw_fd()), libc::POLLERR);
    let at = area.addr();
    let p = park(move || read_byte(at));
    wait_pending(&uffd, 1);
    assert_eq!(revents(uffd.as_raw_fd()), libc::POLLERR);
    // A blocking read still returns the queued message.
    let mut msgs = [sys::uffd_msg::default(); 1];
    assert_eq!(uffd.read_raw(&mut msgs), Ok(1));
    assert_eq!(msgs[0].event, sys::UFFD_EVENT_PAGEFAULT);
    drop(uffd);
    assert_eq!(p.join(), 0);
}

#[apply(selftest_mem)]
fn read_shorter_than_a_message_fails_einval_and_keeps_it(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(registered_missing(mem, 1, Features::empty(), |_| {}));
    let at = area.addr();
    let p = park(move || read_byte(at));
    assert_parked_in_fault(&p, &uffd);
    assert_eq!(read_bytes(uffd.as_raw_fd(), MSG - 1), Err(Errno::EINVAL));
    assert_eq!(read_bytes(uffd.as_raw_fd(), 0), Err(Errno::EINVAL));
    assert_eq!(fdinfo::read(&uffd).pending, 1, "the refused read consumed nothing");
    match uffd.read_event(Some(Duration::ZERO)).unwrap() {
        Some(Event::Pagefault { address, .. }) => assert_eq!(address, at as u64),
        other => panic!("expected the fault, got {other:?}"),
    }
    drop(uffd);
    assert_eq!(p.join(), 0);
}

#[test]
fn read_returns_as_many_whole_messages_as_fit() {
    let (area, uffd) = try_skip!(registered_missing(MemType::Anon, 3, Features::empty(), |_| {}));
    let ps = area.page_size();
    let faulters: Vec<_> = (0..3)
        .map(|i| {
            let at = area.page(i);
            park(move || read_byte(at))
        })
        .collect();
    wait_pending(&uffd, 3);
    let fd = uffd.as_raw_fd();
    // One and a half messages of room: one message.
    assert_eq!(read_bytes(fd, MSG + MSG / 2), Ok(MSG));
    // Room for three, two left: both, without waiting for a third.
    assert_eq!(read_bytes(fd, 3 * MSG), Ok(2 * MSG));
    assert_eq!(read_bytes(fd, MSG), Err(Errno::EAGAIN));
    assert_eq!(fdinfo::read(&uffd).pending, 0);
    assert_eq!(fdinfo::read(&uffd).total, 3, "read faults still wait");
    let src = Buf::filled(3 * ps, 0x0f);
    assert_eq!(
        uffd.copy(area.addr(), src.addr(), 3 * ps, CopyMode::empty()),
        Ok(3 * ps as i64)
    );
    for f in faulters {
        assert_eq!(f.join(), 0x0f);
    }
}

#[test]
fn fdinfo_counts_pending_and_read_faults() {
    let f = Features::THREAD_ID;
    require_features!(f);
    let area = try_area!(Area::new(MemType::Anon, 1));
    let uffd = try_skip!(open(f));
    register(&uffd, &area);
    let fdinfo::UffdInfo { pending, total, api } = fdinfo::read(&uffd);
    assert_eq!((pending, total), (0, 0));
    // API line: UFFD_API, the context's features (with the kernel's
    // internal INITIALIZED bit 31), and every ioctl the fd may offer. POISON
    // and MOVE are in that mask exactly where UFFDIO_API offers their feature
    // (6.6, 6.8; Debian 12's 6.1 has neither).
    let mut ioctls = Ioctls::from_bits_retain(sys::UFFD_API_IOCTLS | sys::UFFD_API_RANGE_IOCTLS);
    if !caps::caps().has(Features::POISON) {
        ioctls.remove(Ioctls::POISON);
    }
    if !caps::caps().has(Features::MOVE) {
        ioctls.remove(Ioctls::MOVE);
    }
    let want_api = format!("{:x}:{:x}:{:x}", sys::UFFD_API, (1u64 << 31) | f.bits(), ioctls.bits());
    assert_eq!(api, want_api);
    let at = area.addr();
    let p = park(move || read_byte(at));
    wait_pending(&uffd, 1);
    assert_eq!(fdinfo::read(&uffd).total, 1);
    uffd.read_event(Some(LIMIT)).unwrap().unwrap();
    let i = fdinfo::read(&uffd);
    assert_eq!((i.pending, i.total), (0, 1), "read, not resolved");
    let ps = area.page_size();
    uffd.copy(at, Buf::filled(ps, 3).addr(), ps, CopyMode::empty()).unwrap();
    assert_eq!(p.join(), 3);
    let i = fdinfo::read(&uffd);
    assert_eq!((i.pending, i.total), (0, 0));
}

#[apply(selftest_mem)]
fn a_read_fault_is_not_reported_again_until_woken(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(registered_missing(mem, 1, Features::empty(), |_| {}));
    let at = area.addr() + 5;
    let p = park(move || read_byte(at));
    assert_parked_in_fault(&p, &uffd);
    assert!(matches!(
        uffd.read_event(Some(Duration::ZERO)).unwrap(),
        Some(Event::Pagefault { .. })
    ));
    // Read once, the fault moves off the pending queue: nothing to poll.
    assert_eq!(revents(uffd.as_raw_fd()), 0);
    assert_eq!(uffd.read_event(Some(Duration::ZERO)).unwrap().map(|e| e.name()), None);
    // WAKE without resolving: the thread retries, faults again, and a new
    // message with the same address is queued.
    uffd.wake(area.addr(), area.page_size()).unwrap();
    match uffd.read_event(Some(LIMIT)).unwrap() {
        Some(Event::Pagefault { address, .. }) => assert_eq!(address, area.addr() as u64),
        other => panic!("expected the re-fault, got {other:?}"),
    }
    assert!(!p.is_done());
    let ps = area.page_size();
    uffd.copy(area.addr(), Buf::filled(ps, 0x44).addr(), ps, CopyMode::empty())
        .unwrap();
    assert_eq!(p.join(), 0x44);
}

#[apply(selftest_mem)]
#[serial(fork)]
fn release_during_a_pending_fork_leaves_the_child_unregistered(#[case] mem: MemType) {
    let area = try_skip!(area_to_register(mem, 1, Features::EVENT_FORK, RegisterMode::MISSING));
    // A fork copies the fd table before it waits in the FORK event, so the
    // child-to-be keeps any uffd of ours open and our close could never
    // release it. The monitor is another process instead: it holds the only
    // descriptor and exits while the event is pending, as a crashed monitor
    // would.
    let (ours, theirs) = socketpair();
    let hs = theirs.as_raw_fd();
    let holder = spawn_child(move || {
        let fd = recv_fd(hs);
        let mut b = [0u8; 1];
        // SAFETY: reading one byte into a local buffer.
        let n = unsafe { libc::read(hs, b.as_mut_ptr().cast(), 1) };
        drop(fd);
        if n == 1 { 0 } else { 2 }
    });
    drop(theirs);
    let uffd = try_skip!(open(Features::EVENT_FORK));
    register(&uffd, &area);
    assert!(send_fd(ours.as_raw_fd(), uffd.as_raw_fd()));
    drop(uffd);
    let at = area.addr() + 7;
    let p = park(move || wait_child(spawn_child_raw(move || read_byte(at) as i32 + 1)));
    let end = Instant::now() + LIMIT;
    while !p
        .wchan()
        .is_some_and(|w| w.contains("userfaultfd_event_wait_completion"))
    {
        assert!(!p.is_done(), "fork() returned with its FORK event unread");
        assert!(Instant::now() < end, "fork never waited for its event: {:?}", p.wchan());
        std::thread::sleep(Duration::from_millis(1));
    }
    // The monitor goes away: the release ends the wait and drops the child's
    // new context (userfaultfd_release_new): the child's read fills a zero page.
    assert_eq!(nix::unistd::write(&ours, &[1]), Ok(1));
    assert_eq!(wait_child(holder), ChildExit::Exited(0));
    assert_eq!(p.join(), ChildExit::Exited(1));
}

#[test]
fn a_blocking_read_sleeps_until_a_fault_arrives() {
    require_mode!(MemType::Anon, RegisterMode::MISSING);
    let area = try_area!(Area::new(MemType::Anon, 1));
    let flags = OpenFlags::O_CLOEXEC | OpenFlags::UFFD_USER_MODE_ONLY;
    let uffd = std::sync::Arc::new(try_skip!(testing::open_uffd_flags(flags, Features::empty())));
    register(&uffd, &area);
    let u = uffd.clone();
    let reader = park(move || {
        let mut msgs = [sys::uffd_msg::default(); 4];
        u.read_raw(&mut msgs)
            .map(|n| (n, msgs[0].event, unsafe { msgs[0].arg.pagefault.address }))
    });
    // Interruptible sleep in the uffd's read: no message yet.
    let end = Instant::now() + LIMIT;
    while !reader.wchan().is_some_and(|w| w.contains("userfaultfd")) {
        assert!(!reader.is_done(), "read(2) on an empty blocking uffd returned");
        assert!(
            Instant::now() < end,
            "read(2) never slept in the uffd: {:?}",
            reader.wchan()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(reader.state(), Some('S'));
    assert!(!reader.is_done(), "read(2) on an empty blocking uffd returned");
    let at = area.addr();
    let f = park(move || read_byte(at));
    // One message, returned without waiting to fill the buffer.
    assert_eq!(reader.join(), Ok((1, sys::UFFD_EVENT_PAGEFAULT, at as u64)));
    drop(uffd);
    assert_eq!(f.join(), 0);
}

#[test]
fn fdinfo_shows_the_features_the_context_enabled() {
    // UFFDIO_API reports every feature the kernel has, but the context
    // enables only those asked for, plus WP_UNPOPULATED when WP_ASYNC is
    // asked (userfaultfd_api); fdinfo is where that shows.
    require_features!(Features::WP_ASYNC | Features::WP_UNPOPULATED | Features::PAGEFAULT_FLAG_WP);
    let want = Features::WP_ASYNC | Features::PAGEFAULT_FLAG_WP;
    let uffd = try_skip!(open(want));
    let api = fdinfo::read(&uffd).api;
    let features = u64::from_str_radix(api.split(':').nth(1).expect("API line"), 16).unwrap();
    let enabled = (want | Features::WP_UNPOPULATED).bits() | 1 << 31;
    assert_eq!(features, enabled, "API line {api}");
}
