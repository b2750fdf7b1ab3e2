//! The messages read(2) returns: PAGEFAULT payloads, and the non-cooperative
//! events (FORK, REMAP, REMOVE, UNMAP) with their exact payloads, each
//! delivered only when its feature bit was asked for, each parking the thread
//! that caused it until the monitor reads it (fs/userfaultfd.c,
//! `userfaultfd_event_wait_completion`).
//!
//! Cases that fork, or ask for EVENT_FORK, take `#[serial(fork)]`: under
//! plain `cargo test` a fork from any thread would otherwise queue FORK
//! events on another case's descriptor and park that fork until it is read.

mod common;
use common::*;
use nix::errno::Errno;
use serial_test::serial;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};
use uffdtest::testing::mm::{Reservation, align_for, assert_bytes, madvise, mremap, munmap, release_advice};
use uffdtest::testing::parked::{Parked, park, spawn_child_raw, wait_readable};
use uffdtest::testing::{Buf, ChildExit, read_byte, wait_child, write_byte};

/// Guards against hangs; no case measures time.
const LIMIT: Duration = Duration::from_secs(20);

/// Private types, where MADV_REMOVE is refused.
#[template]
#[rstest]
#[case::shmem(MemType::Shmem)]
#[case::hugetlb(MemType::Hugetlb)]
fn shared_file_mem(#[case] mem: MemType) {}

#[template]
#[rstest]
#[case::hugetlb(MemType::Hugetlb)]
#[case::hugetlb_private(MemType::HugetlbPrivate)]
fn hugetlb_mem(#[case] mem: MemType) {}

/// Types whose mappings may grow (hugetlb refuses growing mremap).
#[template]
#[rstest]
#[case::anon(MemType::Anon)]
#[case::shmem(MemType::Shmem)]
#[case::shmem_private(MemType::ShmemPrivate)]
#[case::anon_thp(MemType::AnonThp)]
fn growable_mem(#[case] mem: MemType) {}

fn open(features: Features) -> Result<Uffd, String> {
    testing::open_uffd(features)
}

fn register(uffd: &Uffd, area: &Area, mode: RegisterMode) {
    uffd.register(area.addr(), area.len(), mode)
        .unwrap_or_else(|e| panic!("UFFDIO_REGISTER {mode:?} on {}: {e}", area.mem()));
}

/// The next message, which must come within the hang guard.
fn next_event(uffd: &Uffd) -> Event {
    uffd.read_event(Some(LIMIT))
        .expect("read(2) on the uffd")
        .expect("a message queued within the hang guard")
}

/// Nothing is queued. Only used once the operation that could have queued
/// a message has returned: every event is queued before its operation
/// returns, so an empty queue then is final.
fn assert_no_event(uffd: &Uffd, after: &str) {
    if let Some(ev) = uffd.read_event(Some(Duration::ZERO)).expect("read(2) on the uffd") {
        panic!("{after}: unexpected {} message: {ev:?}", ev.name());
    }
}

/// The operation's thread is parked in the event wait: its message is
/// queued, it has not returned, and it sleeps killable (`D`).
fn assert_parked_in_event<T>(p: &Parked<T>, uffd: &Uffd, what: &str) {
    assert!(wait_readable(uffd, LIMIT), "{what}: no message queued");
    assert!(!p.is_done(), "{what} returned before its event was read");
    assert_eq!(p.wait_state('D', LIMIT), Some('D'), "{what}: wchan {:?}", p.wchan());
}

/// The faulting thread is parked in handle_userfault: a user-mode fault
/// sleeps interruptible (`S`).
fn assert_parked_in_fault<T>(p: &Parked<T>, uffd: &Uffd) {
    assert!(wait_readable(uffd, LIMIT), "no PAGEFAULT message queued");
    assert!(!p.is_done(), "the access completed on a missing registered page");
    assert_eq!(p.wait_state('S', LIMIT), Some('S'), "wchan {:?}", p.wchan());
}

/// Waits until an access either completed or faulted into the uffd.
fn settle<T>(p: &Parked<T>, uffd: &Uffd) -> bool {
    let end = Instant::now() + LIMIT;
    while !p.is_done() {
        if uffd.poll(Some(Duration::from_millis(5))).expect("poll") {
            return false;
        }
        assert!(Instant::now() < end, "access neither completed nor faulted");
    }
    true
}

fn expect_remove(ev: Event) -> (u64, u64) {
    match ev {
        Event::Remove { start, end } => (start, end),
        other => panic!("expected UFFD_EVENT_REMOVE, got {other:?}"),
    }
}

fn expect_unmap(ev: Event) -> (u64, u64) {
    match ev {
        Event::Unmap { start, end } => (start, end),
        other => panic!("expected UFFD_EVENT_UNMAP, got {other:?}"),
    }
}

fn expect_remap(ev: Event) -> (u64, u64, u64) {
    match ev {
        Event::Remap { from, to, len } => (from, to, len),
        other => panic!("expected UFFD_EVENT_REMAP, got {other:?}"),
    }
}

fn expect_fault(ev: Event) -> (PagefaultFlags, u64, u32) {
    match ev {
        Event::Pagefault { flags, address, ptid } => (flags, address, ptid),
        other => panic!("expected UFFD_EVENT_PAGEFAULT, got {other:?}"),
    }
}

fn seed(page: usize) -> u8 {
    (page as u8).wrapping_mul(37).wrapping_add(11)
}

// ---------------------------------------------------------------------------
// The selftests' `events` and `events-wp` flows, written from their
// description: a forked child faults, mremaps, faults, releases; the monitor
// follows it through the FORK descriptor.

#[derive(Default, Debug)]
struct Tally {
    missing: Vec<usize>,
    wp: Vec<usize>,
    forks: usize,
    remaps: Vec<(u64, u64, u64)>,
    removes: Vec<(u64, u64)>,
    bad: Vec<String>,
}

/// Child side of the flow; the exit code says which step failed.
fn flow_child(base: usize, ps: usize, n: usize, dest: usize, advice: i32, go: i32) -> i32 {
    let check = |at: usize, i: usize| -> bool {
        // SAFETY: the page lies in the child's copy of the area.
        let s = unsafe { std::slice::from_raw_parts(at as *const u8, ps) };
        s.iter().all(|&b| b == seed(i))
    };
    let touch = |at: usize, i: usize| -> i32 {
        if !check(at, i) {
            return 1;
        }
        // The write-back: a WP fault in events-wp.
        write_byte(at, !seed(i));
        if read_byte(at) != !seed(i) || read_byte(at + 1) != seed(i) {
            return 2;
        }
        0
    };
    for i in 0..n / 2 {
        let r = touch(base + i * ps, i);
        if r != 0 {
            return r;
        }
    }
    match mremap(base, n * ps, n * ps, libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED, dest) {
        Ok(a) if a == dest => {}
        _ => return 3,
    }
    for i in n / 2..n {
        let r = touch(dest + i * ps, i);
        if r != 0 {
            return 10 + r;
        }
    }
    if madvise(dest, n * ps, advice).is_err() {
        return 4;
    }
    // The monitor unregisters the removed range, then lets us look.
    let mut b = [0u8; 1];
    // SAFETY: reading one byte into a local buffer.
    if unsafe { libc::read(go, b.as_mut_ptr().cast(), 1) } != 1 {
        return 5;
    }
    // SAFETY: the whole range is the child's moved mapping.
    let all = unsafe { std::slice::from_raw_parts(dest as *const u8, n * ps) };
    if all.iter().any(|&b| b != 0) {
        return 6;
    }
    0
}

fn events_flow(mem: MemType, wp: bool) {
    let mut features = Features::EVENT_FORK | Features::EVENT_REMAP | Features::EVENT_REMOVE;
    let mut mode = RegisterMode::MISSING;
    if wp {
        features |= Features::PAGEFAULT_FLAG_WP;
        if !mem.is_anon() {
            features |= Features::WP_HUGETLBFS_SHMEM;
        }
        mode |= RegisterMode::WP;
    }
    require_features!(features);
    require_mode!(mem, mode);
    let area = try_area!(Area::new(mem, 8));
    let (ps, n, len, base) = (area.page_size(), area.npages(), area.len(), area.addr());
    let src = Buf::filled(len, 0);
    for i in 0..n {
        // SAFETY: page i of our own source buffer.
        unsafe { std::ptr::write_bytes((src.addr() + i * ps) as *mut u8, seed(i), ps) };
    }
    let dest = Reservation::new(len, align_for(&area));
    let (go_r, go_w): (OwnedFd, OwnedFd) = nix::unistd::pipe().unwrap();
    let uffd = try_skip!(open(features));
    register(&uffd, &area, mode);

    let (d, advice, gr) = (dest.addr, release_advice(mem), go_r.as_raw_fd());
    let forker = park(move || wait_child(spawn_child_raw(move || flow_child(base, ps, n, d, advice, gr))));

    let copy_mode = if wp { CopyMode::WP } else { CopyMode::empty() };
    let mut t = Tally::default();
    let mut child: Option<Uffd> = None;
    let mut cur_base = base as u64;
    let end = Instant::now() + Duration::from_secs(120);
    let mut go_w = Some(go_w);
    loop {
        let u = child.as_ref().unwrap_or(&uffd);
        let evs = u.read_events(16, Some(Duration::from_millis(10))).expect("read");
        if evs.is_empty() {
            if forker.is_done() {
                break;
            }
            if Instant::now() > end {
                go_w.take();
                child.take();
                panic!("events flow on {mem} stuck: {t:?}");
            }
            continue;
        }
        for ev in evs {
            match ev {
                Event::Fork { uffd: c } => {
                    t.forks += 1;
                    child = Some(c);
                }
                Event::Pagefault { flags, address, .. } => {
                    let page = address & !(ps as u64 - 1);
                    let i = ((page - cur_base) / ps as u64) as usize;
                    let Some(c) = child.as_ref() else {
                        t.bad.push(format!("fault at {address:#x} before FORK"));
                        continue;
                    };
                    if flags.contains(PagefaultFlags::WP) {
                        if flags != PagefaultFlags::WP | PagefaultFlags::WRITE {
                            t.bad.push(format!("WP fault flags {flags:?}"));
                        }
                        t.wp.push(i);
                        if let Err(e) = c.writeprotect(page as usize, ps, WriteprotectMode::empty()) {
                            t.bad.push(format!("un-protect {page:#x}: {e}"));
                        }
                    } else {
                        // The child reads each page before writing it.
                        if !flags.is_empty() {
                            t.bad.push(format!("missing fault flags {flags:?}"));
                        }
                        t.missing.push(i);
                        match c.copy(page as usize, src.addr() + i * ps, ps, copy_mode) {
                            Ok(v) if v == ps as i64 => {}
                            r => t.bad.push(format!("UFFDIO_COPY page {i}: {r:?}")),
                        }
                    }
                }
                Event::Remap { from, to, len } => {
                    t.remaps.push((from, to, len));
                    cur_base = to;
                }
                Event::Remove { start, end } => {
                    t.removes.push((start, end));
                    let c = child.as_ref().expect("REMOVE before FORK");
                    if let Err(e) = c.unregister(start as usize, (end - start) as usize) {
                        t.bad.push(format!("UNREGISTER removed range: {e}"));
                    }
                    nix::unistd::write(go_w.as_ref().unwrap(), &[1]).unwrap();
                }
                other => t.bad.push(format!("unexpected {other:?}")),
            }
        }
    }
    let status = forker.join();
    assert_eq!(status, ChildExit::Exited(0), "child of the events flow on {mem}: {t:?}");
    assert!(t.bad.is_empty(), "{:?}", t.bad);
    assert_eq!(t.forks, 1);
    assert_eq!(t.remaps, vec![(base as u64, dest.addr as u64, len as u64)]);
    assert_eq!(t.removes, vec![(dest.addr as u64, (dest.addr + len) as u64)]);
    t.missing.sort_unstable();
    assert_eq!(t.missing, (0..n).collect::<Vec<_>>(), "one MISSING fault per page");
    t.wp.sort_unstable();
    let want_wp: Vec<usize> = if wp { (0..n).collect() } else { vec![] };
    assert_eq!(t.wp, want_wp, "one WP fault per page");
    assert_no_event(&uffd, "the parent's descriptor after the child's run");
}

#[apply(all_mem)]
#[serial(fork)]
fn events_fork_remap_remove_follow_a_child(#[case] mem: MemType) {
    events_flow(mem, false);
}

#[apply(all_mem)]
#[serial(fork)]
fn events_wp_fork_remap_remove_follow_a_child(#[case] mem: MemType) {
    events_flow(mem, true);
}

// ---------------------------------------------------------------------------
// PAGEFAULT payloads.

/// Faults page 1 at byte `off` (a write if `write`), resolves it with a copy, and
/// returns the message's (flags, address, ptid) and page 1's address.
fn one_fault(mem: MemType, features: Features, off: usize, write: bool) -> Option<(PagefaultFlags, u64, u32, usize)> {
    let area = Area::new(mem, 2).ok()?;
    let uffd = open(features).ok()?;
    register(&uffd, &area, RegisterMode::MISSING);
    let ps = area.page_size();
    let at = area.page(1) + off;
    let p = park(move || {
        if write {
            write_byte(at, 0xa5);
        }
        read_byte(at)
    });
    assert_parked_in_fault(&p, &uffd);
    let (flags, address, ptid) = expect_fault(next_event(&uffd));
    let src = Buf::filled(ps, 0x3c);
    assert_eq!(
        uffd.copy(area.page(1), src.addr(), ps, CopyMode::empty()),
        Ok(ps as i64)
    );
    let got = p.join();
    assert_eq!(got, if write { 0xa5 } else { 0x3c }, "value seen after the copy");
    let want = |i: usize| if i == off && write { 0xa5 } else { 0x3c };
    assert_bytes(&area.read_page(1), want, "page 1 after the copy and the access");
    Some((flags, address, ptid, area.page(1)))
}

/// Skips before `one_fault` for everything it cannot run.
macro_rules! fault_case {
    ($mem:expr, $features:expr) => {{
        require_features!($features);
        require_mode!($mem, RegisterMode::MISSING);
        try_area!(Area::new($mem, 1));
    }};
}

#[apply(all_mem)]
fn read_fault_reports_no_flags_and_the_page_address(#[case] mem: MemType) {
    fault_case!(mem, Features::empty());
    let (flags, address, ptid, page) = one_fault(mem, Features::empty(), 77, false).unwrap();
    assert_eq!(flags, PagefaultFlags::empty());
    assert_eq!(address, page as u64, "address masked to the {mem} page");
    assert_eq!(ptid, 0, "ptid without UFFD_FEATURE_THREAD_ID");
}

#[apply(all_mem)]
fn write_fault_reports_write_flag(#[case] mem: MemType) {
    fault_case!(mem, Features::empty());
    let (flags, address, _, page) = one_fault(mem, Features::empty(), 77, true).unwrap();
    assert_eq!(flags, PagefaultFlags::WRITE);
    assert_eq!(address, page as u64);
}

#[apply(all_mem)]
fn thread_id_reports_the_faulting_thread(#[case] mem: MemType) {
    fault_case!(mem, Features::THREAD_ID);
    let area = try_area!(Area::new(mem, 1));
    let uffd = try_skip!(open(Features::THREAD_ID));
    register(&uffd, &area, RegisterMode::MISSING);
    let at = area.page(0);
    let p = park(move || read_byte(at));
    assert_parked_in_fault(&p, &uffd);
    let (_, _, ptid) = expect_fault(next_event(&uffd));
    assert_eq!(ptid, p.tid(), "ptid is the faulting thread's tid, not the process's");
    assert_ne!(ptid, std::process::id());
    uffd.zeropage(at, area.page_size(), ZeropageMode::empty())
        .or_else(|_| {
            uffd.copy(
                at,
                Buf::filled(area.page_size(), 0).addr(),
                area.page_size(),
                CopyMode::empty(),
            )
        })
        .expect("resolve");
    assert_eq!(p.join(), 0);
}

#[apply(all_mem)]
fn exact_address_reports_the_unmasked_address(#[case] mem: MemType) {
    fault_case!(mem, Features::EXACT_ADDRESS);
    let (flags, address, _, page) = one_fault(mem, Features::EXACT_ADDRESS, 123, false).unwrap();
    assert_eq!(flags, PagefaultFlags::empty());
    assert_eq!(address, (page + 123) as u64, "EXACT_ADDRESS keeps the byte offset");
}

#[apply(all_mem)]
fn exact_address_with_thread_id_reports_both(#[case] mem: MemType) {
    let f = Features::EXACT_ADDRESS | Features::THREAD_ID;
    fault_case!(mem, f);
    let (flags, address, ptid, page) = one_fault(mem, f, 4095, true).unwrap();
    assert_eq!(flags, PagefaultFlags::WRITE);
    assert_eq!(address, (page + 4095) as u64);
    assert_ne!(ptid, 0);
}

// ---------------------------------------------------------------------------
// UFFD_EVENT_FORK.

#[apply(all_mem)]
#[serial(fork)]
fn fork_event_descriptor_resolves_the_childs_faults(#[case] mem: MemType) {
    require_features!(Features::EVENT_FORK);
    require_mode!(mem, RegisterMode::MISSING);
    let area = try_area!(Area::new(mem, 2));
    let uffd = try_skip!(open(Features::EVENT_FORK));
    register(&uffd, &area, RegisterMode::MISSING);
    let (ps, at) = (area.page_size(), area.page(1) + 5);
    // The child reads page 1 and exits with what it saw.
    let forker = park(move || wait_child(spawn_child_raw(move || read_byte(at) as i32)));
    assert_parked_in_event(&forker, &uffd, "fork()");
    let Event::Fork { uffd: child } = next_event(&uffd) else {
        panic!("expected UFFD_EVENT_FORK");
    };
    // The new descriptor is a uffd with the parent's file flags.
    use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
    let link = std::fs::read_link(format!("/proc/self/fd/{}", child.as_raw_fd())).unwrap();
    assert_eq!(link.to_string_lossy(), "anon_inode:[userfaultfd]");
    let fl = OFlag::from_bits_retain(fcntl(&child, FcntlArg::F_GETFL).unwrap());
    assert!(fl.contains(OFlag::O_NONBLOCK), "child uffd keeps O_NONBLOCK: {fl:?}");
    let fdf = FdFlag::from_bits_retain(fcntl(&child, FcntlArg::F_GETFD).unwrap());
    assert!(fdf.contains(FdFlag::FD_CLOEXEC), "child uffd keeps O_CLOEXEC");
    // The child's fault arrives on the child's descriptor only.
    let (flags, address, _) = expect_fault(next_event(&child));
    assert_eq!((flags, address), (PagefaultFlags::empty(), area.page(1) as u64));
    assert_no_event(&uffd, "parent descriptor while the child faults");
    let src = Buf::filled(ps, 0x6d);
    assert_eq!(
        child.copy(area.page(1), src.addr(), ps, CopyMode::empty()),
        Ok(ps as i64)
    );
    assert_eq!(
        forker.join(),
        ChildExit::Exited(0x6d),
        "the child read the page copied through its uffd"
    );
    // The copy went into the child's memory: the parent's page is still
    // missing for the private types (for shared ones it is the same page).
    if !mem.is_shared() {
        let p = park(move || read_byte(at));
        assert_parked_in_fault(&p, &uffd);
        let (_, address, _) = expect_fault(next_event(&uffd));
        assert_eq!(address, area.page(1) as u64);
        uffd.copy(area.page(1), Buf::filled(ps, 0x11).addr(), ps, CopyMode::empty())
            .unwrap();
        assert_eq!(p.join(), 0x11);
    } else {
        assert_eq!(area.read(at, 1)[0], 0x6d);
    }
}

#[apply(all_mem)]
#[serial(fork)]
fn fork_without_event_fork_leaves_the_child_unregistered(#[case] mem: MemType) {
    require_mode!(mem, RegisterMode::MISSING);
    let area = try_area!(Area::new(mem, 1));
    let uffd = try_skip!(open(Features::empty()));
    register(&uffd, &area, RegisterMode::MISSING);
    let at = area.page(0) + 9;
    // No FORK event: fork returns at once and the child's copy of the range
    // is not registered, so its read fills a zero page.
    let status = testing::in_child(move || read_byte(at) as i32 + 1);
    assert_eq!(status, ChildExit::Exited(1));
    assert_no_event(&uffd, "fork and the child's read");
}

// ---------------------------------------------------------------------------
// UFFD_EVENT_REMAP.

#[apply(all_mem)]
fn remap_event_for_a_fixed_move(#[case] mem: MemType) {
    require_features!(Features::EVENT_REMAP);
    require_mode!(mem, RegisterMode::MISSING);
    let mut area = try_area!(Area::new(mem, 2));
    let (ps, len, old) = (area.page_size(), area.len(), area.addr());
    let dest = Reservation::new(len, align_for(&area));
    let uffd = try_skip!(open(Features::EVENT_REMAP));
    register(&uffd, &area, RegisterMode::MISSING);
    let to = dest.addr;
    let p = park(move || mremap(old, len, len, libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED, to));
    assert_parked_in_event(&p, &uffd, "mremap()");
    assert_eq!(expect_remap(next_event(&uffd)), (old as u64, to as u64, len as u64));
    assert_eq!(p.join(), Ok(to));
    area.moved_to(to);
    dest.give_away();
    // The registration moved with the range: a fault there is reported
    // with the new address.
    let at = area.page(1);
    let f = park(move || read_byte(at));
    assert_parked_in_fault(&f, &uffd);
    assert_eq!(expect_fault(next_event(&uffd)).1, at as u64);
    uffd.copy(at, Buf::filled(ps, 0x42).addr(), ps, CopyMode::empty())
        .unwrap();
    assert_eq!(f.join(), 0x42);
}

#[apply(growable_mem)]
fn remap_event_for_a_growing_move_carries_the_old_length(#[case] mem: MemType) {
    require_features!(Features::EVENT_REMAP);
    require_mode!(mem, RegisterMode::MISSING);
    let mut area = try_area!(Area::new(mem, 1));
    let (ps, len) = (area.page_size(), area.len());
    // Put the area right below a reservation, so it cannot grow in place.
    let mut r = Reservation::new(2 * len, align_for(&area));
    let at = r.addr;
    assert_eq!(
        mremap(area.addr(), len, len, libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED, at),
        Ok(at)
    );
    area.moved_to(at);
    r.addr += len;
    r.len -= len;
    let uffd = try_skip!(open(Features::EVENT_REMAP));
    register(&uffd, &area, RegisterMode::MISSING);
    let p = park(move || mremap(at, len, len + ps, libc::MREMAP_MAYMOVE, 0));
    assert_parked_in_event(&p, &uffd, "mremap()");
    let (from, to, l) = expect_remap(next_event(&uffd));
    let got = p.join().expect("growing mremap");
    area.moved_to(got);
    assert_ne!(got, at, "the mapping had to move");
    assert_eq!(
        (from, to, l),
        (at as u64, got as u64, len as u64),
        "len is the old length"
    );
    // The moved range, grown, is registered: its first page faults.
    let f = park(move || read_byte(got));
    assert_parked_in_fault(&f, &uffd);
    assert_eq!(expect_fault(next_event(&uffd)).1, got as u64);
    drop(uffd);
    assert_eq!(f.join(), 0, "closing the uffd let the fault fill a zero page");
    munmap(got + len, ps).unwrap();
}

#[apply(hugetlb_mem)]
fn growing_hugetlb_mremap_fails_einval_without_event(#[case] mem: MemType) {
    require_features!(Features::EVENT_REMAP);
    require_mode!(mem, RegisterMode::MISSING);
    let area = try_area!(Area::new(mem, 2));
    let uffd = try_skip!(open(Features::EVENT_REMAP));
    register(&uffd, &area, RegisterMode::MISSING);
    let ps = area.page_size();
    assert_eq!(
        mremap(area.page(0), ps, 2 * ps, libc::MREMAP_MAYMOVE, 0),
        Err(Errno::EINVAL)
    );
    assert_no_event(&uffd, "refused growing mremap");
}

#[apply(all_mem)]
fn mremap_without_event_remap_unregisters_the_moved_range(#[case] mem: MemType) {
    require_mode!(mem, RegisterMode::MISSING);
    let mut area = try_area!(Area::new(mem, 1));
    let (len, old) = (area.len(), area.addr());
    let dest = Reservation::new(len, align_for(&area));
    // EVENT_UNMAP would report the source range (see below): leave it out.
    let uffd = try_skip!(open(Features::EVENT_REMOVE));
    register(&uffd, &area, RegisterMode::MISSING);
    let to = dest.addr;
    // Nothing to wait for: mremap returns without a message.
    assert_eq!(
        mremap(old, len, len, libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED, to),
        Ok(to)
    );
    area.moved_to(to);
    dest.give_away();
    assert_no_event(&uffd, "mremap without EVENT_REMAP");
    let p = park(move || read_byte(to));
    assert!(settle(&p, &uffd), "the moved range must no longer be registered");
    assert_eq!(p.join(), 0);
    assert_no_event(&uffd, "a read of the moved range");
}

#[test]
fn remap_with_event_unmap_also_reports_the_old_range_unmapped() {
    // mremap queues REMAP, then the munmap of the source range queues
    // UNMAP: the old VMA still carries the context (mm/mremap.c move_vma).
    let f = Features::EVENT_REMAP | Features::EVENT_UNMAP;
    require_features!(f);
    let mut area = try_area!(Area::new(MemType::Anon, 4));
    let (len, old) = (area.len(), area.addr());
    let dest = Reservation::new(len, area.page_size());
    let uffd = try_skip!(open(f));
    register(&uffd, &area, RegisterMode::MISSING);
    let to = dest.addr;
    let p = park(move || mremap(old, len, len, libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED, to));
    assert_parked_in_event(&p, &uffd, "mremap()");
    let first = next_event(&uffd);
    let mut seen = vec![format!("{first:?}")];
    if let Event::Remap { from, to: t, len: l } = first {
        assert_eq!((from, t, l), (old as u64, to as u64, len as u64));
        assert_parked_in_event(&p, &uffd, "mremap() after REMAP");
        let second = next_event(&uffd);
        seen.push(format!("{second:?}"));
        assert_eq!(expect_unmap(second), (old as u64, (old + len) as u64), "{seen:?}");
    } else {
        panic!("first message of a moving mremap: {seen:?}");
    }
    assert_eq!(p.join(), Ok(to));
    area.moved_to(to);
    dest.give_away();
}

// ---------------------------------------------------------------------------
// UFFD_EVENT_REMOVE.

#[apply(all_mem)]
fn remove_event_for_madv_dontneed(#[case] mem: MemType) {
    require_features!(Features::EVENT_REMOVE);
    require_mode!(mem, RegisterMode::MISSING);
    let area = try_area!(Area::new(mem, 4));
    let uffd = try_skip!(open(Features::EVENT_REMOVE));
    register(&uffd, &area, RegisterMode::MISSING);
    let (start, end) = (area.page(1), area.page(3));
    let p = park(move || madvise(start, end - start, libc::MADV_DONTNEED));
    assert_parked_in_event(&p, &uffd, "madvise(MADV_DONTNEED)");
    assert_eq!(expect_remove(next_event(&uffd)), (start as u64, end as u64));
    assert_eq!(p.join(), Ok(()));
    assert_no_event(&uffd, "one madvise over one VMA");
}

#[apply(shared_file_mem)]
fn remove_event_for_madv_remove(#[case] mem: MemType) {
    require_features!(Features::EVENT_REMOVE);
    require_mode!(mem, RegisterMode::MISSING);
    let area = try_area!(Area::new(mem, 4));
    area.populate(0x77);
    let uffd = try_skip!(open(Features::EVENT_REMOVE));
    register(&uffd, &area, RegisterMode::MISSING);
    let (start, end) = (area.page(2), area.page(3));
    let p = park(move || madvise(start, end - start, libc::MADV_REMOVE));
    assert_parked_in_event(&p, &uffd, "madvise(MADV_REMOVE)");
    assert_eq!(expect_remove(next_event(&uffd)), (start as u64, end as u64));
    assert_eq!(p.join(), Ok(()));
    // The hole is punched: page 2 is missing again, its neighbours are not.
    assert_eq!(area.read(area.page(1), 1)[0], 0x77);
    assert_eq!(area.read(area.page(3), 1)[0], 0x77);
    let f = park(move || read_byte(start));
    assert_parked_in_fault(&f, &uffd);
    assert_eq!(expect_fault(next_event(&uffd)).1, start as u64);
    drop(uffd);
    assert_eq!(f.join(), 0);
}

#[rstest]
#[case::anon(MemType::Anon, Errno::EINVAL)]
#[case::shmem_private(MemType::ShmemPrivate, Errno::EACCES)]
#[case::hugetlb_private(MemType::HugetlbPrivate, Errno::EACCES)]
fn madv_remove_refused_on_private_memory_sends_nothing(#[case] mem: MemType, #[case] want: Errno) {
    require_features!(Features::EVENT_REMOVE);
    require_mode!(mem, RegisterMode::MISSING);
    let area = try_area!(Area::new(mem, 2));
    let uffd = try_skip!(open(Features::EVENT_REMOVE));
    register(&uffd, &area, RegisterMode::MISSING);
    // madvise_remove() refuses before it reaches userfaultfd_remove().
    assert_eq!(madvise(area.addr(), area.len(), libc::MADV_REMOVE), Err(want));
    assert_no_event(&uffd, "refused MADV_REMOVE");
}

#[apply(hugetlb_mem)]
fn hugetlb_dontneed_at_an_unaligned_start_fails_einval_without_event(#[case] mem: MemType) {
    require_features!(Features::EVENT_REMOVE);
    require_mode!(mem, RegisterMode::MISSING);
    let area = try_area!(Area::new(mem, 2));
    let uffd = try_skip!(open(Features::EVENT_REMOVE));
    register(&uffd, &area, RegisterMode::MISSING);
    let base = mem::base_page_size();
    assert_eq!(
        madvise(area.page(0) + base, area.page_size(), libc::MADV_DONTNEED),
        Err(Errno::EINVAL)
    );
    assert_no_event(&uffd, "refused MADV_DONTNEED");
}

#[apply(hugetlb_mem)]
fn hugetlb_dontneed_reports_the_range_rounded_down_to_huge_pages(#[case] mem: MemType) {
    require_features!(Features::EVENT_REMOVE);
    require_mode!(mem, RegisterMode::MISSING);
    let area = try_area!(Area::new(mem, 3));
    let uffd = try_skip!(open(Features::EVENT_REMOVE));
    register(&uffd, &area, RegisterMode::MISSING);
    let (ps, start) = (area.page_size(), area.page(0));
    // One and a half huge pages: only the whole one is dropped and reported.
    let p = park(move || madvise(start, ps + ps / 2, libc::MADV_DONTNEED));
    assert_parked_in_event(&p, &uffd, "madvise(MADV_DONTNEED)");
    assert_eq!(expect_remove(next_event(&uffd)), (start as u64, (start + ps) as u64));
    assert_eq!(p.join(), Ok(()));
}

#[apply(hugetlb_mem)]
fn hugetlb_dontneed_shorter_than_a_huge_page_sends_nothing(#[case] mem: MemType) {
    require_features!(Features::EVENT_REMOVE);
    require_mode!(mem, RegisterMode::MISSING);
    let area = try_area!(Area::new(mem, 1));
    let uffd = try_skip!(open(Features::EVENT_REMOVE));
    register(&uffd, &area, RegisterMode::MISSING);
    // The end rounds down onto the start: success, nothing dropped, no event.
    assert_eq!(
        madvise(area.page(0), mem::base_page_size(), libc::MADV_DONTNEED),
        Ok(())
    );
    assert_no_event(&uffd, "a sub-huge-page MADV_DONTNEED");
}

#[apply(file_mem)]
fn fallocate_punch_hole_drops_pages_without_remove_event(#[case] mem: MemType) {
    require_features!(Features::EVENT_REMOVE);
    require_mode!(mem, RegisterMode::MISSING);
    let area = try_area!(Area::new(mem, 2));
    let fd = area.fd().expect("file-backed area");
    let uffd = try_skip!(open(Features::EVENT_REMOVE));
    if mem.is_shared() {
        area.populate(0x31);
    }
    register(&uffd, &area, RegisterMode::MISSING);
    let ps = area.page_size();
    // Only madvise() calls userfaultfd_remove(); a hole punched through
    // the file unmaps the pages silently.
    nix::fcntl::fallocate(
        fd,
        nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
        ps as i64,
        ps as i64,
    )
    .unwrap();
    assert_no_event(&uffd, "fallocate(PUNCH_HOLE)");
    // ...yet the page is gone: the next access is a MISSING fault.
    let at = area.page(1);
    let f = park(move || read_byte(at));
    assert_parked_in_fault(&f, &uffd);
    assert_eq!(expect_fault(next_event(&uffd)).1, at as u64);
    drop(uffd);
    assert_eq!(f.join(), 0);
}

#[apply(all_mem)]
fn remove_not_delivered_without_event_remove(#[case] mem: MemType) {
    require_mode!(mem, RegisterMode::MISSING);
    let area = try_area!(Area::new(mem, 2));
    let uffd = try_skip!(open(Features::EVENT_REMAP | Features::EVENT_UNMAP));
    register(&uffd, &area, RegisterMode::MISSING);
    // Returns at once: no event to wait for.
    assert_eq!(madvise(area.addr(), area.len(), libc::MADV_DONTNEED), Ok(()));
    if mem.is_shared() {
        assert_eq!(madvise(area.addr(), area.len(), libc::MADV_REMOVE), Ok(()));
    }
    assert_no_event(&uffd, "madvise without EVENT_REMOVE");
}

/// MADV_DONTNEED_LOCKED (5.18), not in every libc's constants.
const MADV_DONTNEED_LOCKED: i32 = 24;

#[rstest]
#[case::free_anon(MemType::Anon, libc::MADV_FREE)]
#[case::free_anon_thp(MemType::AnonThp, libc::MADV_FREE)]
#[case::dontneed_locked_anon(MemType::Anon, MADV_DONTNEED_LOCKED)]
#[case::dontneed_locked_shmem(MemType::Shmem, MADV_DONTNEED_LOCKED)]
#[case::dontneed_locked_hugetlb(MemType::Hugetlb, MADV_DONTNEED_LOCKED)]
fn remove_event_for_madv_free_and_dontneed_locked(#[case] mem: MemType, #[case] advice: i32) {
    require_features!(Features::EVENT_REMOVE);
    require_mode!(mem, RegisterMode::MISSING);
    let area = try_area!(Area::new(mem, 2));
    let uffd = try_skip!(open(Features::EVENT_REMOVE));
    register(&uffd, &area, RegisterMode::MISSING);
    let (start, len) = (area.page(0), 2 * area.page_size());
    // Both share MADV_DONTNEED's path through userfaultfd_remove().
    let p = park(move || madvise(start, len, advice));
    assert_parked_in_event(&p, &uffd, "madvise");
    assert_eq!(expect_remove(next_event(&uffd)), (start as u64, (start + len) as u64));
    assert_eq!(p.join(), Ok(()));
}

// ---------------------------------------------------------------------------
// UFFD_EVENT_UNMAP.

#[apply(all_mem)]
fn unmap_event_for_munmap(#[case] mem: MemType) {
    require_features!(Features::EVENT_UNMAP);
    require_mode!(mem, RegisterMode::MISSING);
    let mut area = try_area!(Area::new(mem, 4));
    let uffd = try_skip!(open(Features::EVENT_UNMAP));
    register(&uffd, &area, RegisterMode::MISSING);
    let (start, end) = (area.page(2), area.addr() + area.len());
    let p = park(move || munmap(start, end - start));
    assert_parked_in_event(&p, &uffd, "munmap()");
    assert_eq!(expect_unmap(next_event(&uffd)), (start as u64, end as u64));
    assert_eq!(p.join(), Ok(()));
    area.truncated_to(start - area.addr());
    assert_no_event(&uffd, "one munmap");
    drop(uffd); // before the area's own munmap, which would queue UNMAP again
}

#[apply(all_mem)]
fn unmap_event_for_a_shrinking_mremap(#[case] mem: MemType) {
    require_features!(Features::EVENT_UNMAP);
    require_mode!(mem, RegisterMode::MISSING);
    let mut area = try_area!(Area::new(mem, 4));
    let uffd = try_skip!(open(Features::EVENT_UNMAP));
    register(&uffd, &area, RegisterMode::MISSING);
    let (base, ps, len) = (area.addr(), area.page_size(), area.len());
    let p = park(move || mremap(base, len, ps, 0, 0));
    assert_parked_in_event(&p, &uffd, "shrinking mremap()");
    assert_eq!(
        expect_unmap(next_event(&uffd)),
        ((base + ps) as u64, (base + len) as u64)
    );
    assert_eq!(p.join(), Ok(base), "shrinking stays in place");
    area.truncated_to(ps);
    assert_no_event(&uffd, "one shrinking mremap");
    drop(uffd);
}

#[apply(all_mem)]
fn unmap_not_delivered_without_event_unmap(#[case] mem: MemType) {
    require_mode!(mem, RegisterMode::MISSING);
    let mut area = try_area!(Area::new(mem, 4));
    let uffd = try_skip!(open(Features::EVENT_REMOVE | Features::EVENT_REMAP));
    register(&uffd, &area, RegisterMode::MISSING);
    let (ps, len) = (area.page_size(), area.len());
    assert_eq!(munmap(area.addr() + len - ps, ps), Ok(()));
    area.truncated_to(len - ps);
    assert_eq!(mremap(area.addr(), len - ps, ps, 0, 0), Ok(area.addr()));
    area.truncated_to(ps);
    assert_no_event(&uffd, "munmap and shrinking mremap without EVENT_UNMAP");
}

// ---------------------------------------------------------------------------
// How operations spanning VMAs, and mixed queues, are reported.

/// Splits the area's VMA at page 2 (both halves stay registered).
fn split_at_page_2(area: &Area) {
    let at = area.page(2);
    // SAFETY: the tail of our own mapping becomes read-only.
    let r = unsafe { libc::mprotect(at as *mut libc::c_void, area.addr() + area.len() - at, libc::PROT_READ) };
    assert_eq!(r, 0, "mprotect: {}", Errno::last());
}

/// Waits until the thread sleeps in handle_userfault (hang guard only).
fn wait_in_fault<T>(p: &Parked<T>) {
    let end = Instant::now() + LIMIT;
    while !p.wchan().is_some_and(|w| w.contains("handle_userfault")) {
        assert!(!p.is_done(), "the access completed");
        assert!(Instant::now() < end, "never reached handle_userfault: {:?}", p.wchan());
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[apply(all_mem)]
fn dontneed_across_two_vmas_sends_one_remove_per_vma(#[case] mem: MemType) {
    require_features!(Features::EVENT_REMOVE);
    require_mode!(mem, RegisterMode::MISSING);
    let area = try_area!(Area::new(mem, 4));
    let uffd = try_skip!(open(Features::EVENT_REMOVE));
    register(&uffd, &area, RegisterMode::MISSING);
    split_at_page_2(&area);
    let (start, ps) = (area.page(1), area.page_size());
    // madvise walks the VMAs and reports each clipped part on its own.
    let p = park(move || madvise(start, 2 * ps, libc::MADV_DONTNEED));
    assert_parked_in_event(&p, &uffd, "madvise, first VMA");
    assert_eq!(expect_remove(next_event(&uffd)), (start as u64, (start + ps) as u64));
    assert_parked_in_event(&p, &uffd, "madvise, second VMA");
    assert_eq!(
        expect_remove(next_event(&uffd)),
        ((start + ps) as u64, (start + 2 * ps) as u64)
    );
    assert_eq!(p.join(), Ok(()));
    assert_no_event(&uffd, "after both VMAs");
}

#[apply(all_mem)]
fn munmap_across_two_vmas_sends_one_unmap(#[case] mem: MemType) {
    require_features!(Features::EVENT_UNMAP);
    require_mode!(mem, RegisterMode::MISSING);
    let mut area = try_area!(Area::new(mem, 4));
    let uffd = try_skip!(open(Features::EVENT_UNMAP));
    register(&uffd, &area, RegisterMode::MISSING);
    split_at_page_2(&area);
    let (start, end) = (area.page(1), area.addr() + area.len());
    // One message per context and range, however many VMAs it covers.
    let p = park(move || munmap(start, end - start));
    assert_parked_in_event(&p, &uffd, "munmap");
    assert_eq!(expect_unmap(next_event(&uffd)), (start as u64, end as u64));
    assert_eq!(p.join(), Ok(()));
    area.truncated_to(start - area.addr());
    assert_no_event(&uffd, "one munmap over two VMAs");
    drop(uffd);
}

#[apply(all_mem)]
fn pending_faults_are_read_before_pending_events(#[case] mem: MemType) {
    require_features!(Features::EVENT_REMOVE);
    require_mode!(mem, RegisterMode::MISSING);
    let area = try_area!(Area::new(mem, 2));
    let uffd = try_skip!(open(Features::EVENT_REMOVE));
    register(&uffd, &area, RegisterMode::MISSING);
    let (ps, advice) = (area.page_size(), release_advice(mem));
    let (p0, p1) = (area.page(0), area.page(1));
    // The event is queued first...
    let ev = park(move || madvise(p1, ps, advice));
    assert_parked_in_event(&ev, &uffd, "madvise");
    // ...then a fault (the event wait holds no mmap lock).
    let f = park(move || read_byte(p0 + 1));
    wait_in_fault(&f);
    // read(2) serves pending faults before events.
    assert_eq!(expect_fault(next_event(&uffd)).1, p0 as u64);
    assert_eq!(expect_remove(next_event(&uffd)), (p1 as u64, (p1 + ps) as u64));
    assert_eq!(ev.join(), Ok(()));
    uffd.copy(p0, Buf::filled(ps, 0x3e).addr(), ps, CopyMode::empty())
        .unwrap();
    assert_eq!(f.join(), 0x3e);
}

#[test]
fn dontunmap_move_reports_remap_and_keeps_the_old_range_registered() {
    require_features!(Features::EVENT_REMAP);
    let area = try_area!(Area::new(MemType::Anon, 2));
    area.fill_page(0, 0x12);
    let (old, len, ps) = (area.addr(), area.len(), area.page_size());
    let uffd = try_skip!(open(Features::EVENT_REMAP));
    register(&uffd, &area, RegisterMode::MISSING);
    let p = park(move || mremap(old, len, len, libc::MREMAP_MAYMOVE | libc::MREMAP_DONTUNMAP, 0));
    assert_parked_in_event(&p, &uffd, "mremap(DONTUNMAP)");
    let (from, to, l) = expect_remap(next_event(&uffd));
    let new = p.join().expect("mremap(DONTUNMAP)");
    assert_eq!((from, to, l), (old as u64, new as u64, len as u64));
    // The page moved; the old range stays mapped, empty, and registered:
    // touching it is a MISSING fault at the old address.
    assert_eq!(read_byte(new), 0x12);
    let f = park(move || read_byte(old));
    assert_parked_in_fault(&f, &uffd);
    assert_eq!(
        expect_fault(next_event(&uffd)),
        (PagefaultFlags::empty(), old as u64, 0)
    );
    uffd.copy(old, Buf::filled(ps, 0x34).addr(), ps, CopyMode::empty())
        .unwrap();
    assert_eq!(f.join(), 0x34);
    drop(uffd);
    munmap(new, len).unwrap();
}

#[test]
fn hugetlb_madv_remove_of_part_of_a_huge_page_reports_it_and_only_zeroes_it() {
    let mem = MemType::Hugetlb;
    require_features!(Features::EVENT_REMOVE);
    require_mode!(mem, RegisterMode::MISSING);
    let area = try_area!(Area::new(mem, 1));
    area.populate(0x56);
    let uffd = try_skip!(open(Features::EVENT_REMOVE));
    register(&uffd, &area, RegisterMode::MISSING);
    let base = mem::base_page_size();
    let start = area.addr() + base;
    // madvise_remove() reports the range as given; hugetlbfs then drops
    // only whole huge pages and zeroes the partial ones in place
    // (fs/hugetlbfs/inode.c hugetlbfs_punch_hole).
    let p = park(move || madvise(start, base, libc::MADV_REMOVE));
    assert_parked_in_event(&p, &uffd, "madvise(MADV_REMOVE)");
    assert_eq!(expect_remove(next_event(&uffd)), (start as u64, (start + base) as u64));
    assert_eq!(p.join(), Ok(()));
    assert!(pagemap::is_present(area.addr()), "the huge page stays mapped");
    let want = |i: usize| if (base..2 * base).contains(&i) { 0 } else { 0x56 };
    assert_bytes(&area.read_page(0), want, "only the removed range is zeroed");
}

#[test]
#[serial(fork)]
fn fork_queues_one_event_per_context() {
    // dup_userfaultfd() makes one child context per parent context, however
    // many ranges it covers: two ranges on uffd A give A one FORK, and a
    // range on uffd B gives B its own.
    require_features!(Features::EVENT_FORK);
    let (a1, a2, b1) = (
        try_area!(Area::new(MemType::Anon, 1)),
        try_area!(Area::new(MemType::Shmem, 1)),
        try_area!(Area::new(MemType::Anon, 1)),
    );
    let ua = try_skip!(open(Features::EVENT_FORK));
    let ub = try_skip!(open(Features::EVENT_FORK));
    register(&ua, &a1, RegisterMode::MISSING);
    register(&ua, &a2, RegisterMode::MISSING);
    register(&ub, &b1, RegisterMode::MISSING);
    let (x, y, z) = (a1.addr(), a2.addr(), b1.addr());
    // The child faults on all three and exits with what it read; the FORK
    // descriptors resolve its faults.
    let p = park(move || {
        wait_child(spawn_child_raw(move || {
            (read_byte(x) as i32) + (read_byte(y) as i32) + (read_byte(z) as i32)
        }))
    });
    // The events come one at a time, in the order of the parent's VMAs.
    let mut children: [Option<Uffd>; 2] = [None, None];
    let end = Instant::now() + LIMIT;
    while children.iter().any(Option::is_none) {
        assert!(
            Instant::now() < end,
            "FORK events missing: {:?}",
            children.each_ref().map(Option::is_some)
        );
        for (k, u) in [&ua, &ub].into_iter().enumerate() {
            if children[k].is_none() && u.poll(Some(Duration::from_millis(5))).unwrap() {
                assert!(!p.is_done(), "fork() returned with a FORK event unread");
                match next_event(u) {
                    Event::Fork { uffd } => children[k] = Some(uffd),
                    other => panic!("expected UFFD_EVENT_FORK, got {other:?}"),
                }
            }
        }
    }
    assert_no_event(&ua, "one FORK per context");
    assert_no_event(&ub, "one FORK per context");
    let [Some(ca), Some(cb)] = &children else {
        unreachable!()
    };
    let src = Buf::filled(mem::base_page_size(), 10);
    let ps = mem::base_page_size();
    // Faults in order: x and y on A's child context, z on B's.
    for (u, at) in [(ca, x), (ca, y), (cb, z)] {
        assert_eq!(expect_fault(next_event(u)).1, at as u64);
        assert_eq!(u.copy(at, src.addr(), ps, CopyMode::empty()), Ok(ps as i64));
    }
    assert_eq!(p.join(), ChildExit::Exited(30));
}

#[test]
fn fixed_move_onto_a_registered_range_reports_unmap_remap_unmap_in_order() {
    // mremap(MAYMOVE|FIXED) first unmaps the destination (uf_unmap_early),
    // then moves (REMAP), then unmaps the source: mm/mremap.c completes the
    // three lists in that order.
    let f = Features::EVENT_REMAP | Features::EVENT_UNMAP;
    require_features!(f);
    let mut a = try_area!(Area::new(MemType::Anon, 2));
    let mut b = try_area!(Area::new(MemType::Anon, 2));
    let uffd = try_skip!(open(f));
    register(&uffd, &a, RegisterMode::MISSING);
    register(&uffd, &b, RegisterMode::MISSING);
    let (from, to, len) = (a.addr(), b.addr(), a.len());
    let p = park(move || mremap(from, len, len, libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED, to));
    let (fr, t, l) = (from as u64, to as u64, len as u64);
    assert_parked_in_event(&p, &uffd, "mremap: destination");
    assert_eq!(expect_unmap(next_event(&uffd)), (t, t + l));
    assert_parked_in_event(&p, &uffd, "mremap: move");
    assert_eq!(expect_remap(next_event(&uffd)), (fr, t, l));
    assert_parked_in_event(&p, &uffd, "mremap: source");
    assert_eq!(expect_unmap(next_event(&uffd)), (fr, fr + l));
    assert_eq!(p.join(), Ok(to));
    assert_no_event(&uffd, "after the three events");
    // b's range now holds a's mapping: only a unmaps it.
    b.truncated_to(0);
    a.moved_to(to);
    drop(uffd);
}

#[apply(all_mem)]
fn remove_reports_only_the_registered_part_of_a_range(#[case] mem: MemType) {
    require_features!(Features::EVENT_REMOVE);
    require_mode!(mem, RegisterMode::MISSING);
    let area = try_area!(Area::new(mem, 4));
    let uffd = try_skip!(open(Features::EVENT_REMOVE));
    let (ps, half) = (area.page_size(), area.page(2));
    uffd.register(half, 2 * ps, RegisterMode::MISSING).unwrap();
    let (start, len) = (area.addr(), area.len());
    // userfaultfd_remove() runs per VMA with the VMA's part of the range.
    let p = park(move || madvise(start, len, libc::MADV_DONTNEED));
    assert_parked_in_event(&p, &uffd, "madvise");
    assert_eq!(expect_remove(next_event(&uffd)), (half as u64, (half + 2 * ps) as u64));
    assert_eq!(p.join(), Ok(()));
    assert_no_event(&uffd, "the unregistered part");
}

#[apply(all_mem)]
fn unmap_reports_the_whole_munmap_range_even_partly_unregistered(#[case] mem: MemType) {
    require_features!(Features::EVENT_UNMAP);
    require_mode!(mem, RegisterMode::MISSING);
    let mut area = try_area!(Area::new(mem, 4));
    let uffd = try_skip!(open(Features::EVENT_UNMAP));
    let (ps, half) = (area.page_size(), area.page(2));
    uffd.register(half, 2 * ps, RegisterMode::MISSING).unwrap();
    let (start, len) = (area.page(1), area.len() - ps);
    // Unlike REMOVE, UNMAP carries the munmap() range itself
    // (userfaultfd_unmap_prep gets the whole range for each VMA).
    let p = park(move || munmap(start, len));
    assert_parked_in_event(&p, &uffd, "munmap");
    assert_eq!(expect_unmap(next_event(&uffd)), (start as u64, (start + len) as u64));
    assert_eq!(p.join(), Ok(()));
    area.truncated_to(ps);
    assert_no_event(&uffd, "one munmap");
}

#[test]
#[serial(fork)]
fn a_forked_childs_own_fork_reports_on_the_childs_descriptor() {
    // The child context inherits EVENT_FORK: when the child forks, the
    // FORK event goes to the child's descriptor, and the grandchild's
    // faults to the descriptor that event hands out.
    require_features!(Features::EVENT_FORK);
    let area = try_area!(Area::new(MemType::Anon, 1));
    let uffd = try_skip!(open(Features::EVENT_FORK));
    register(&uffd, &area, RegisterMode::MISSING);
    let at = area.addr();
    let p = park(move || {
        wait_child(spawn_child_raw(move || {
            // In the child: fork the grandchild, which reads the page.
            let g = spawn_child_raw(move || read_byte(at) as i32);
            let mut st = 0;
            // SAFETY: waiting for our own child.
            if unsafe { libc::waitpid(g.as_raw(), &mut st, 0) } != g.as_raw() {
                return 100;
            }
            if libc::WIFEXITED(st) {
                libc::WEXITSTATUS(st)
            } else {
                101
            }
        }))
    });
    let Event::Fork { uffd: child } = next_event(&uffd) else {
        panic!("expected the child's FORK");
    };
    // The child now waits in its own fork() on the child descriptor.
    assert!(
        wait_readable(&child, LIMIT),
        "the child's fork queued nothing on the child's uffd"
    );
    assert_no_event(&uffd, "the grandchild's fork, on the parent's uffd");
    let Event::Fork { uffd: grandchild } = next_event(&child) else {
        panic!("expected the grandchild's FORK");
    };
    assert_eq!(expect_fault(next_event(&grandchild)).1, at as u64);
    assert_no_event(&child, "the grandchild's fault, on the child's uffd");
    let ps = area.page_size();
    assert_eq!(
        grandchild.copy(at, Buf::filled(ps, 0x47).addr(), ps, CopyMode::empty()),
        Ok(ps as i64)
    );
    assert_eq!(p.join(), ChildExit::Exited(0x47));
}

#[apply(hugetlb_mem)]
fn hugetlb_mremap_to_an_unaligned_address_fails_einval_without_event(#[case] mem: MemType) {
    let f = Features::EVENT_REMAP | Features::EVENT_UNMAP;
    require_features!(f);
    require_mode!(mem, RegisterMode::MISSING);
    let area = try_area!(Area::new(mem, 1));
    let (len, ps) = (area.len(), area.page_size());
    let dest = Reservation::new(2 * len, ps);
    let uffd = try_skip!(open(f));
    register(&uffd, &area, RegisterMode::MISSING);
    let to = dest.addr + mem::base_page_size();
    let r = mremap(area.addr(), len, len, libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED, to);
    assert_eq!(r, Err(Errno::EINVAL), "hugetlb needs a huge-page-aligned destination");
    assert_no_event(&uffd, "a refused mremap");
    drop(uffd);
}

#[apply(hugetlb_mem)]
fn hugetlb_munmap_inside_a_huge_page_fails_einval_without_event(#[case] mem: MemType) {
    require_features!(Features::EVENT_UNMAP);
    require_mode!(mem, RegisterMode::MISSING);
    let area = try_area!(Area::new(mem, 2));
    let uffd = try_skip!(open(Features::EVENT_UNMAP));
    register(&uffd, &area, RegisterMode::MISSING);
    // The VMA cannot be split inside a huge page: refused before any
    // userfaultfd_unmap_prep().
    let base = mem::base_page_size();
    assert_eq!(munmap(area.page(1), base), Err(Errno::EINVAL));
    assert_eq!(munmap(area.page(0) + base, base), Err(Errno::EINVAL));
    assert_no_event(&uffd, "refused munmap");
    drop(uffd);
}
