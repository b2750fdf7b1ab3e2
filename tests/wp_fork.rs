//! uffd-wp across fork(): a child inherits the WP bit only when the monitor
//! follows it (UFFD_FEATURE_EVENT_FORK), on every path that copies a page
//! table entry: plain copy, a zapped page's marker or swap entry, the early
//! CoW of a long-term pinned page, and the CoW a pin in the child forces.
//!
//! Every case takes `#[serial(fork)]`: a fork anywhere in this process
//! queues a FORK message on every EVENT_FORK uffd of the process, so two
//! forking cases side by side would read each other's messages. The pin
//! cases add `#[file_serial(gup_test)]`, a lock across processes (the
//! runner runs each case in its own, and other runs may share the
//! machine; the last two cases prove the exclusion): the
//! kernel's gup_test holds one global set of long-term pins, and any
//! process's PIN_LONGTERM_TEST_STOP, or the close of its gup_test fd
//! (`gup_test_release()`), unpins everybody's; two pinning cases at once
//! would unpin each other and the fork would no longer copy.
//!
//! Lock order: the fork key, then the gup_test file lock. serial_test wraps
//! the body once per attribute, so the attribute written last is taken
//! first: the pin cases write `#[file_serial(gup_test)]` above
//! `#[serial(fork)]`. The other order deadlocks plain `cargo test`: a pin
//! case holding the file lock waits for the fork key while
//! [`gup_test_key_excludes_other_processes`] holds the fork key and waits
//! for its key holders, which wait for that file lock.
//!
//! Kernels without 5a2f8d22ace4 ("mm/hugetlb: fix uffd-wp during fork()",
//! v6.4-rc1, in 6.3.2 as 4daf7b0c434c; not in 6.1.y, 6.1.192 still lacks
//! it) get private hugetlb wrong in copy_hugetlb_page_range(): a present
//! entry keeps its uffd-wp bit in a child without EVENT_FORK, and the
//! early CoW of a pinned page drops it in a child with EVENT_FORK. The
//! cases that see this fail there, naming the fault; they are not gated.

mod common;
use common::*;
use nix::sys::signal::{SigHandler, SigSet, Signal, signal};
use pagemap::{PM_PRESENT, PM_SWAP, PM_UFFD_WP};
use serial_test::{file_serial, serial};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;
use testing::{ChildExit, swap};

/// Bits 0-54 of a present entry: the page frame number (root only).
const PM_PFN: u64 = (1 << 55) - 1;

/// One populated page of `mem` registered WP, with the uffd.
fn wp_page(mem: MemType, event: bool) -> Result<(Area, Arc<Uffd>), String> {
    testing::register_support(mem, RegisterMode::WP)?;
    if event && !caps::caps().event_fork_allowed {
        return Err("UFFD_FEATURE_EVENT_FORK needs CAP_SYS_PTRACE".into());
    }
    let area = testing::area_for_fork(mem, 1, 1)?;
    area.fill_page(0, 0x5a);
    let mut features = caps::features_for(mem, RegisterMode::WP);
    if event {
        features |= Features::EVENT_FORK;
    }
    let uffd = testing::open_uffd(features)?;
    uffd.register(area.addr(), area.len(), RegisterMode::WP)
        .expect("UFFDIO_REGISTER(WP)");
    Ok((area, Arc::new(uffd)))
}

fn protect(uffd: &Uffd, area: &Area, on: bool) {
    let mode = if on {
        WriteprotectMode::WP
    } else {
        WriteprotectMode::empty()
    };
    uffd.writeprotect(area.addr(), area.len(), mode)
        .expect("UFFDIO_WRITEPROTECT");
}

fn entry(addr: usize) -> u64 {
    pagemap::entry(addr).expect("pagemap")
}

/// What a child saw of the page, from its own pagemap.
#[derive(Debug)]
struct Child {
    /// The entry before the child's pin, when it took one.
    before_pin: Option<u64>,
    entry: u64,
    exit: ChildExit,
}

/// Exit codes of the forked child.
const CHILD_PIN_FAILED: i32 = 3;
const CHILD_PAGEMAP_FAILED: i32 = 4;

/// A child still running after this long is stuck (a pin whose write fault
/// never resolves loops in GUP): SIGALRM ends it, so the case fails with
/// the reason instead of hanging until the runner's timeout.
const CHILD_DEADLINE_SECS: u32 = 10;

/// In the child: SIGALRM kills it after [`CHILD_DEADLINE_SECS`] (a fatal
/// signal also ends a GUP retry loop). Only syscalls: the forking process
/// has other threads.
fn child_deadline() {
    let mut set = SigSet::empty();
    set.add(Signal::SIGALRM);
    let _ = set.thread_unblock();
    // SAFETY: restores the default action; no handler runs.
    let _ = unsafe { signal(Signal::SIGALRM, SigHandler::SigDfl) };
    nix::unistd::alarm::set(CHILD_DEADLINE_SECS);
}

/// Forks; the child optionally takes a long-term pin on the page first,
/// then sends its pagemap entry for `addr` back. With `event` a thread
/// reads the UFFD_EVENT_FORK message (fork blocks until it is read) and
/// holds the child's uffd until the child is gone: closing it earlier
/// would un-protect the child's pages (userfaultfd_release).
fn fork_and_look(uffd: &Arc<Uffd>, event: bool, addr: usize, len: usize, pin_in_child: bool) -> Child {
    let reader = event.then(|| {
        let u = uffd.clone();
        let ready = Arc::new(std::sync::Barrier::new(2));
        let r = ready.clone();
        let t = std::thread::spawn(move || {
            let mut buf = [sys::uffd_msg::default(); 1];
            r.wait();
            // Nothing below may allocate: glibc's fork() holds the malloc
            // locks while the kernel waits for this read.
            if !matches!(u.poll(Some(Duration::from_secs(20))), Ok(true)) {
                return None;
            }
            if !matches!(u.read_raw(&mut buf), Ok(1)) {
                return None;
            }
            match Event::decode(&buf[0]) {
                Event::Fork { uffd } => Some(uffd),
                _ => None,
            }
        });
        ready.wait();
        t
    });
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
    let pid = testing::spawn_child(move || {
        child_deadline();
        if pin_in_child {
            let Ok(e) = pagemap::entry(addr) else {
                return CHILD_PAGEMAP_FAILED;
            };
            let _ = nix::unistd::write(&wr, &e.to_ne_bytes());
        }
        let pin = if pin_in_child {
            match pin::longterm(addr, len) {
                Ok(p) => Some(p),
                Err(_) => return CHILD_PIN_FAILED,
            }
        } else {
            None
        };
        let Ok(e) = pagemap::entry(addr) else {
            return CHILD_PAGEMAP_FAILED;
        };
        let _ = nix::unistd::write(&wr, &e.to_ne_bytes());
        drop(pin);
        0
    });
    let child_uffd = reader.map(|t| t.join().expect("fork-event thread").expect("a UFFD_EVENT_FORK message"));
    let before_pin = if pin_in_child { read_u64(&rd) } else { None };
    let entry = read_u64(&rd);
    let exit = testing::wait_child(pid);
    drop(child_uffd);
    Child {
        before_pin,
        entry: entry.unwrap_or(0),
        exit,
    }
}

fn read_u64(fd: &OwnedFd) -> Option<u64> {
    let mut b = [0u8; 8];
    // Blocks until the child wrote, or EOF if it died first.
    match nix::unistd::read(fd.as_fd(), &mut b) {
        Ok(8) => Some(u64::from_ne_bytes(b)),
        _ => None,
    }
}

/// Drops the parent's mapping of the page the way that keeps uffd-wp, and
/// proves it went: shared memory gets a PTE marker (MADV_DONTNEED; the page
/// stays in the file), swappable private memory a swap entry
/// (`swap::page_out`, which checks the page left memory). Private hugetlb
/// is never paged out (MADV_PAGEOUT refuses VM_HUGETLB: EINVAL), so there
/// MADV_DONTNEED drops the page and leaves a marker. Returns what pagemap
/// shows of the parent's entry then: a marker or a swap entry is a
/// swap-format entry (PM_SWAP), except hugetlb's, which pagemap reports as
/// PM_UFFD_WP alone.
fn zap(area: &Area) -> u64 {
    let (a, len) = (area.addr(), area.len());
    let mem = area.mem();
    if !mem.is_shared() && !mem.is_hugetlb() {
        // The one page the case filled: on anon-thp the rest of the THP is
        // zeros, which splitting it for reclaim maps to the shared zero page
        // (never paged out).
        swap::page_out(a, area.page_size());
        return PM_SWAP | PM_UFFD_WP;
    }
    if !mem.is_shared() {
        assert_eq!(
            testing::mm::madvise(a, len, libc::MADV_PAGEOUT),
            Err(nix::errno::Errno::EINVAL),
            "MADV_PAGEOUT on hugetlb"
        );
    }
    testing::mm::madvise(a, len, libc::MADV_DONTNEED).expect("MADV_DONTNEED");
    if mem.is_hugetlb() {
        PM_UFFD_WP
    } else {
        PM_SWAP | PM_UFFD_WP
    }
}

/// The child ended well and its entry carries the WP bit iff `want_wp`
/// (EVENT_FORK registered the child's VMA).
fn check_child(c: &Child, want_wp: bool, what: &str) {
    if c.exit == ChildExit::Signaled(Signal::SIGALRM) {
        let kept = c.before_pin.is_some_and(|e| e & PM_UFFD_WP != 0);
        panic!(
            "{what}: the child was stuck {CHILD_DEADLINE_SECS} s in its long-term pin and was killed by SIGALRM; \
             its entry before the pin was {:#x}{}",
            c.before_pin.unwrap_or(0),
            if kept && !want_wp {
                ": it kept the uffd-wp bit without EVENT_FORK, in a VMA that is not uffd-wp registered, \
                 so the pin's write fault never resolves (hugetlb_wp() does not CoW a uffd-wp entry)"
            } else {
                ""
            }
        );
    }
    assert_ne!(
        c.exit,
        ChildExit::Exited(CHILD_PIN_FAILED),
        "{what}: the long-term pin failed in the child"
    );
    assert_eq!(c.exit, ChildExit::Exited(0), "{what}: child exit");
    let wp = c.entry & PM_UFFD_WP != 0;
    if want_wp && !wp {
        panic!(
            "{what}: the child lost the uffd-wp bit although EVENT_FORK registered its VMA (child entry {:#x})",
            c.entry
        );
    }
    if !want_wp && wp {
        panic!(
            "{what}: the child kept the uffd-wp bit without EVENT_FORK, in a VMA that is not uffd-wp registered \
             (child entry {:#x})",
            c.entry
        );
    }
}

fn fork_keeps_or_drops(mem: MemType, event: bool) {
    let (area, uffd) = try_skip!(wp_page(mem, event));
    let (a, len) = (area.addr(), area.len());
    protect(&uffd, &area, true);
    assert_eq!(entry(a) & (PM_UFFD_WP | PM_PRESENT), PM_UFFD_WP | PM_PRESENT);

    let c = fork_and_look(&uffd, event, a, len, false);
    check_child(&c, event, "fork of a protected page");
    assert!(pagemap::is_uffd_wp(a), "the parent keeps its bit");

    protect(&uffd, &area, false);
    assert!(!pagemap::is_uffd_wp(a), "un-protect clears the bit");
    assert!(area.read_page(0) == vec![0x5a; area.page_size()], "contents survive");
    faulter::assert_no_event(&uffd);
}

/// The page is zapped ([`zap`]) while protected, then the process forks:
/// the marker or swap entry is copied with its bit only into a child that
/// EVENT_FORK keeps registered. Swappable private types need a swap
/// device, so the zap leaves a swap entry rather than the page.
fn fork_of_zapped_page(mem: MemType, event: bool) {
    if !mem.is_shared() && !mem.is_hugetlb() {
        try_skip!(swap::available());
    }
    let (area, uffd) = try_skip!(wp_page(mem, event));
    let (a, len, ps) = (area.addr(), area.len(), area.page_size());
    protect(&uffd, &area, true);
    let want = zap(&area);
    let mask = PM_PRESENT | PM_SWAP | PM_UFFD_WP;
    assert_eq!(
        entry(a) & mask,
        want,
        "zapping keeps the parent's bit (marker or swap entry)"
    );

    let c = fork_and_look(&uffd, event, a, len, false);
    check_child(&c, event, "fork of a zapped protected page");
    assert_eq!(entry(a) & mask, want, "the fork left the parent's entry alone");

    protect(&uffd, &area, false);
    assert!(!pagemap::is_uffd_wp(a), "un-protect clears the bit");
    // Only private hugetlb lost the page to the zap: it reads back zeros.
    let byte = if mem.is_hugetlb() && !mem.is_shared() { 0 } else { 0x5a };
    assert!(area.read_page(0) == vec![byte; ps], "contents after the zap");
    assert!(!pagemap::is_uffd_wp(a), "faulting the page back in leaves it clear");
    faulter::assert_no_event(&uffd);
}

/// Fails on private hugetlb without 5a2f8d22ace4 ("mm/hugetlb: fix uffd-wp
/// during fork()"): copy_hugetlb_page_range() copied the bit unconditionally.
#[apply(all_mem)]
#[serial(fork)]
fn fork_without_event_drops_wp_in_child(#[case] mem: MemType) {
    require_mode!(mem, RegisterMode::WP);
    fork_keeps_or_drops(mem, false);
}

#[apply(all_mem)]
#[serial(fork)]
fn fork_with_event_keeps_wp_in_child(#[case] mem: MemType) {
    require_mode!(mem, RegisterMode::WP);
    require_features!(Features::EVENT_FORK);
    fork_keeps_or_drops(mem, true);
}

#[apply(all_mem)]
#[serial(fork)]
fn fork_of_zapped_page_without_event_drops_wp_in_child(#[case] mem: MemType) {
    require_mode!(mem, RegisterMode::WP);
    fork_of_zapped_page(mem, false);
}

#[apply(all_mem)]
#[serial(fork)]
fn fork_of_zapped_page_with_event_keeps_wp_in_child(#[case] mem: MemType) {
    require_mode!(mem, RegisterMode::WP);
    require_features!(Features::EVENT_FORK);
    fork_of_zapped_page(mem, true);
}

/// Skips unless some long-term pin works here; returns how pins are taken.
fn pin_available() -> Result<pin::How, String> {
    let scratch = testing::area(MemType::Anon, 1)?;
    scratch.populate(1);
    pin::longterm(scratch.addr(), scratch.len()).map(|p| p.how())
}

/// A page pinned long-term in the parent must be copied at fork (early
/// CoW), and the copy carries the WP bit only with EVENT_FORK.
fn pinned_parent_fork(mem: MemType, event: bool) {
    try_skip!(pin_available());
    let (area, uffd) = try_skip!(wp_page(mem, event));
    let (a, len) = (area.addr(), area.len());
    // Pin before protecting: an io_uring pin is a write pin, and a write
    // GUP on a protected page would be a WP fault.
    let p = pin::longterm(a, len).expect("long-term pin");
    protect(&uffd, &area, true);
    let parent = entry(a);
    assert_eq!(parent & (PM_UFFD_WP | PM_PRESENT), PM_UFFD_WP | PM_PRESENT);

    let c = fork_and_look(&uffd, event, a, len, false);
    check_child(&c, event, "fork of a pinned protected page");
    if !mem.is_shared() {
        assert!(
            c.entry & PM_PRESENT != 0,
            "early CoW maps a copy in the child: {:#x}",
            c.entry
        );
        assert_ne!(
            c.entry & PM_PFN,
            parent & PM_PFN,
            "the child got its own copy of the pinned page"
        );
    } else if c.entry & PM_PRESENT != 0 {
        assert_eq!(c.entry & PM_PFN, parent & PM_PFN, "shared memory is never copied");
    }
    assert!(pagemap::is_uffd_wp(a));
    p.release().expect("unpin");
    protect(&uffd, &area, false);
    faulter::assert_no_event(&uffd);
}

#[apply(all_mem)]
#[file_serial(gup_test)]
#[serial(fork)]
fn fork_of_pinned_page_without_event_drops_wp(#[case] mem: MemType) {
    require_mode!(mem, RegisterMode::WP);
    pinned_parent_fork(mem, false);
}

/// Fails on private hugetlb without 5a2f8d22ace4 ("mm/hugetlb: fix uffd-wp
/// during fork()"): the early CoW (hugetlb_install_page()) made a fresh
/// entry without the bit.
#[apply(all_mem)]
#[file_serial(gup_test)]
#[serial(fork)]
fn fork_of_pinned_page_with_event_keeps_wp(#[case] mem: MemType) {
    require_mode!(mem, RegisterMode::WP);
    require_features!(Features::EVENT_FORK);
    pinned_parent_fork(mem, true);
}

/// The child's pin unshares (or, for a write pin, CoWs) the page it
/// shares with the parent: the child's new entry has no WP bit.
/// On private hugetlb without 5a2f8d22ace4 ("mm/hugetlb: fix uffd-wp during
/// fork()") the child keeps the bit, and a write pin then loops forever:
/// hugetlb_wp() never CoWs a uffd-wp entry and the child's VMA has no uffd
/// to resolve it. The child's deadline turns that into a failure.
#[apply(all_mem)]
#[file_serial(gup_test)]
#[serial(fork)]
fn pin_in_child_without_event_leaves_no_wp(#[case] mem: MemType) {
    require_mode!(mem, RegisterMode::WP);
    try_skip!(pin_available());
    let (area, uffd) = try_skip!(wp_page(mem, false));
    let (a, len) = (area.addr(), area.len());
    protect(&uffd, &area, true);
    let c = fork_and_look(&uffd, false, a, len, true);
    check_child(&c, false, "pin in the child");
    assert!(c.entry & PM_PRESENT != 0, "the pin mapped the page in the child");
    assert!(pagemap::is_uffd_wp(a), "the parent keeps its bit");
    assert_eq!(testing::read_byte(a), 0x5a);
    faulter::assert_no_event(&uffd);
}

#[apply(all_mem)]
#[file_serial(gup_test)]
#[serial(fork)]
fn read_pin_in_child_with_event_keeps_wp(#[case] mem: MemType) {
    // The unshare a read-only pin forces must carry the WP bit over.
    // A write pin (io_uring) cannot test this: on a protected page it is
    // a WP fault from GUP, which a user-mode-only uffd refuses.
    require_mode!(mem, RegisterMode::WP);
    require_features!(Features::EVENT_FORK);
    let how = try_skip!(pin_available());
    require!(
        how == pin::How::GupRead,
        "needs a read-only long-term pin (gup_test: CONFIG_GUP_TEST and debugfs); io_uring only pins for write"
    );
    let (area, uffd) = try_skip!(wp_page(mem, true));
    let (a, len) = (area.addr(), area.len());
    protect(&uffd, &area, true);
    let c = fork_and_look(&uffd, true, a, len, true);
    check_child(&c, true, "read pin in the child");
    assert!(pagemap::is_uffd_wp(a));
}

/// Holds the `gup_test` key for 300 ms and prints when it held it
/// (CLOCK_MONOTONIC, the same clock in every process). Alone it checks
/// nothing more; [`gup_test_key_excludes_other_processes`] runs two of it.
#[test]
#[file_serial(gup_test)]
fn gup_test_key_holder() {
    let now = || {
        let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC");
        t.tv_sec() as u128 * 1_000_000_000 + t.tv_nsec() as u128
    };
    let start = now();
    std::thread::sleep(Duration::from_millis(300));
    println!("gup_test key held {start} {}", now());
}

/// Two processes started together, each taking the `gup_test` key for
/// 300 ms: their holding times must not overlap. An in-process
/// `#[serial(key)]` would let both in at once.
#[test]
#[serial(fork)]
fn gup_test_key_excludes_other_processes() {
    let exe = std::env::current_exe().expect("this test binary");
    let spawn = || {
        std::process::Command::new(&exe)
            .args(["gup_test_key_holder", "--exact", "--nocapture", "--test-threads=1"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn a key holder")
    };
    let (a, b) = (spawn(), spawn());
    let held = |c: std::process::Child| -> (u128, u128) {
        let out = c.wait_with_output().expect("the key holder ends");
        assert!(out.status.success(), "key holder: {:?}", out.status);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let line = text
            .lines()
            .find_map(|l| l.split_once("gup_test key held ").map(|(_, t)| t))
            .unwrap_or_else(|| panic!("no holding time in {text:?}"));
        let mut t = line.split(' ').map(|n| n.parse::<u128>().expect("a time"));
        (t.next().expect("start"), t.next().expect("end"))
    };
    let (x, y) = (held(a), held(b));
    assert!(x.1 <= y.0 || y.1 <= x.0, "both held the key at once: {x:?} and {y:?}");
}
