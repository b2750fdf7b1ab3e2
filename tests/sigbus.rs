//! UFFD_FEATURE_SIGBUS: a fault on a registered range raises SIGBUS in the
//! faulting thread instead of queueing a message (fs/userfaultfd.c,
//! handle_userfault returns VM_FAULT_SIGBUS before queueing anything).
//!
//! Every access that may raise SIGBUS runs in a forked child that registers
//! its own copy of the area, so the test binary never takes the signal. The
//! handler flows resolve each SIGBUS from inside the child's signal handler
//! (UFFDIO_COPY or un-protect, then return to retry the access): no
//! siglongjmp, and each page must signal exactly as often as expected.
//!
//! The EVENT_FORK case is `#[serial(fork)]`; the other cases fork without
//! it and are `#[parallel(fork)]` among themselves.

mod common;
use common::*;
use serial_test::{parallel, serial};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;
use uffdtest::testing::fdpass;
use uffdtest::testing::parked::{park, spawn_child_raw, wait_readable};
use uffdtest::testing::{Buf, ChildExit, read_byte, wait_child, write_byte};

const LIMIT: Duration = Duration::from_secs(20);

/// Pages the handler flows touch (anon-thp areas have hundreds).
const TOUCH: usize = 8;

/// How a child that accessed `addr` in SIGBUS mode ends: BUS_ADRERR at the
/// exact byte (handle_userfault's VM_FAULT_SIGBUS), and death by it.
fn sigbus_at(addr: usize) -> Ended {
    Ended::Died(FaultSignal::adrerr(addr))
}

fn seed(page: usize) -> u8 {
    (page as u8).wrapping_mul(29).wrapping_add(7)
}

/// Exit codes of the children, so a failure names its step.
mod code {
    pub const OPEN: i32 = 90;
    pub const REGISTER: i32 = 91;
    pub const SETUP: i32 = 92;
    pub const SURVIVED: i32 = 93;
    pub const DATA: i32 = 94;
    pub const COUNT: i32 = 95;
    pub const QUEUED: i32 = 96;
    pub const HANDLER_RANGE: i32 = 70;
    pub const HANDLER_COPY: i32 = 71;
    pub const HANDLER_WP: i32 = 72;
    pub const HANDLER_AGAIN: i32 = 73;
    pub const HANDLER_CODE: i32 = 74;
    pub const HANDLER_ADDR: i32 = 75;
}

/// In the child: a SIGBUS uffd registered over `area` in `mode`.
fn child_uffd(area: &Area, extra: Features, mode: RegisterMode) -> Result<Uffd, i32> {
    let u = Uffd::open(testing::default_flags()).map_err(|_| code::OPEN)?;
    u.api(Features::SIGBUS | extra).map_err(|_| code::OPEN)?;
    u.register(area.addr(), area.len(), mode).map_err(|_| code::REGISTER)?;
    Ok(u)
}

// ---------------------------------------------------------------------------
// The access dies of SIGBUS.

/// In a child: registers its own SIGBUS uffd over `area` ([`child_uffd`]),
/// then makes `access`, which must not return (exit SURVIVED if it does).
fn sigbus_child_access(area: &Area, extra: Features, mode: RegisterMode, access: impl FnOnce()) -> Ended {
    in_signal_child(|| {
        let _u = match child_uffd(area, extra, mode) {
            Ok(u) => u,
            Err(c) => return c,
        };
        access();
        code::SURVIVED
    })
}

/// A child's access at byte `off` of page `page` of a MISSING SIGBUS
/// registration dies of SIGBUS right there.
fn missing_access_raises_sigbus(mem: MemType, page: usize, off: usize, write: bool) {
    let area = try_skip!(area_to_register(mem, 2, Features::SIGBUS, RegisterMode::MISSING));
    let at = area.page(page) + off;
    let st = sigbus_child_access(&area, Features::empty(), RegisterMode::MISSING, || {
        if write {
            write_byte(at, 1);
        } else {
            read_byte(at);
        }
    });
    assert_eq!(st, sigbus_at(at));
}

tests_calling! {
    (#[apply(all_mem)] #[parallel(fork)])
    fn missing_read_raises_sigbus(mem: MemType) => missing_access_raises_sigbus(mem, 1, 3, false);
    fn missing_write_raises_sigbus(mem: MemType) => missing_access_raises_sigbus(mem, 0, 0x41, true);
}

#[apply(all_mem)]
#[parallel(fork)]
fn wp_write_raises_sigbus_but_reads_pass(#[case] mem: MemType) {
    let wp = caps::features_for(mem, RegisterMode::WP);
    let area = try_skip!(area_to_register(mem, 1, Features::SIGBUS | wp, RegisterMode::WP));
    let at = area.page(0) + 8;
    let st = in_signal_child(|| {
        area.populate(0x5e);
        let u = match child_uffd(&area, wp, RegisterMode::WP) {
            Ok(u) => u,
            Err(c) => return c,
        };
        if u.writeprotect(area.addr(), area.len(), WriteprotectMode::WP).is_err() {
            return code::SETUP;
        }
        if read_byte(at) != 0x5e {
            return code::DATA;
        }
        write_byte(at, 1);
        code::SURVIVED
    });
    assert_eq!(st, sigbus_at(at));
}

#[apply(file_mem)]
#[parallel(fork)]
fn minor_fault_raises_sigbus(#[case] mem: MemType) {
    let minor = caps::features_for(mem, RegisterMode::MINOR);
    require_features!(Features::SIGBUS | minor);
    require_mode!(mem, RegisterMode::MINOR);
    let area = try_area!(Area::with_alias(mem, 1));
    // The page is in the page cache (written through the shared alias) but
    // not mapped in the registered view: a minor fault.
    fill_alias_page(&area, 0, 0x4d);
    let at = area.page(0) + 0x11;
    let st = sigbus_child_access(&area, minor, RegisterMode::MINOR, || {
        read_byte(at);
    });
    assert_eq!(st, sigbus_at(at));
}

// ---------------------------------------------------------------------------
// A signal handler resolves each SIGBUS, and the access then succeeds.

static H_UFFD: AtomicI32 = AtomicI32::new(-1);
static H_BASE: AtomicUsize = AtomicUsize::new(0);
static H_PS: AtomicUsize = AtomicUsize::new(0);
static H_SRC: AtomicUsize = AtomicUsize::new(0);
static H_WP: AtomicBool = AtomicBool::new(false);
/// The byte the child is about to touch: si_addr must name it exactly.
static H_EXPECT: AtomicUsize = AtomicUsize::new(0);
static H_MISSING: AtomicUsize = AtomicUsize::new(0);
static H_WPS: AtomicUsize = AtomicUsize::new(0);
/// Per page: 0 untouched, 1 copied, 2 un-protected.
static H_PAGE: [AtomicU8; TOUCH] = [const { AtomicU8::new(0) }; TOUCH];

fn die(c: i32) -> ! {
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(c) }
}

/// What the handler flows copy from: the first [`TOUCH`] pages of `area`'s
/// size, page i filled with `seed(i)`; and how many pages that is.
fn handler_source(area: &Area) -> (Buf, usize) {
    let ps = area.page_size();
    let n = TOUCH.min(area.npages());
    let src = Buf::filled(n * ps, 0);
    for i in 0..n {
        // SAFETY: page i of our own buffer.
        unsafe { std::ptr::write_bytes((src.addr() + i * ps) as *mut u8, seed(i), ps) };
    }
    (src, n)
}

/// Hands [`on_sigbus`] what it resolves with (the uffd, the area's base and
/// page size, the source of the copies, whether to un-protect) and installs
/// it, in a single-purpose child.
fn install_handler(uffd: libc::c_int, base: usize, ps: usize, src: usize, wp: bool) -> nix::Result<()> {
    H_UFFD.store(uffd, Ordering::Relaxed);
    H_BASE.store(base, Ordering::Relaxed);
    H_PS.store(ps, Ordering::Relaxed);
    H_SRC.store(src, Ordering::Relaxed);
    H_WP.store(wp, Ordering::Relaxed);
    // SAFETY: installing a handler in this single-purpose child.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigbus as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO;
        nix::errno::Errno::result(libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut())).map(drop)
    }
}

/// Only async-signal-safe work: atomics, two ioctls, _exit.
extern "C" fn on_sigbus(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
    let (addr, si_code) = unsafe { ((*info).si_addr() as usize, (*info).si_code) };
    if si_code != libc::BUS_ADRERR {
        die(code::HANDLER_CODE);
    }
    if addr != H_EXPECT.load(Ordering::Relaxed) {
        die(code::HANDLER_ADDR);
    }
    let (base, ps) = (H_BASE.load(Ordering::Relaxed), H_PS.load(Ordering::Relaxed));
    let page = addr & !(ps - 1);
    let i = page.wrapping_sub(base) / ps;
    if page < base || i >= TOUCH {
        die(code::HANDLER_RANGE);
    }
    let fd = H_UFFD.load(Ordering::Relaxed);
    match H_PAGE[i].load(Ordering::Relaxed) {
        0 => {
            let mode = if H_WP.load(Ordering::Relaxed) {
                sys::UFFDIO_COPY_MODE_WP
            } else {
                0
            };
            let mut arg = sys::uffdio_copy {
                dst: page as u64,
                src: (H_SRC.load(Ordering::Relaxed) + i * ps) as u64,
                len: ps as u64,
                mode,
                copy: 0,
            };
            // SAFETY: a valid uffdio_copy for the child's own uffd.
            let r = unsafe { sys::uffdio_copy(fd, &mut arg) };
            if r.is_err() || arg.copy != ps as i64 {
                die(code::HANDLER_COPY);
            }
            H_PAGE[i].store(1, Ordering::Relaxed);
            H_MISSING.fetch_add(1, Ordering::Relaxed);
        }
        1 if H_WP.load(Ordering::Relaxed) => {
            let mut arg = sys::uffdio_writeprotect {
                range: sys::uffdio_range {
                    start: page as u64,
                    len: ps as u64,
                },
                mode: 0,
            };
            // SAFETY: a valid uffdio_writeprotect for the child's own uffd.
            if unsafe { sys::uffdio_writeprotect(fd, &mut arg) }.is_err() {
                die(code::HANDLER_WP);
            }
            H_PAGE[i].store(2, Ordering::Relaxed);
            H_WPS.fetch_add(1, Ordering::Relaxed);
        }
        // The same page signalled once more than it may.
        _ => die(code::HANDLER_AGAIN),
    }
}

/// Whether page `i` at `at` holds `seed(i)` in every byte but `changed`,
/// which holds `!seed(i)`. Reads the page whole (it is resolved by now).
fn page_holds(at: usize, ps: usize, i: usize, changed: Option<usize>) -> bool {
    // SAFETY: a mapped, resolved page of the child's area.
    let page = unsafe { std::slice::from_raw_parts(at as *const u8, ps) };
    page.iter()
        .enumerate()
        .all(|(o, &b)| b == if Some(o) == changed { !seed(i) } else { seed(i) })
}

/// Touches `addr` (a write of `v`, or a read), telling the handler first
/// which byte its si_addr must name.
fn touch(addr: usize, write: Option<u8>) -> u8 {
    H_EXPECT.store(addr, Ordering::Relaxed);
    match write {
        Some(v) => {
            write_byte(addr, v);
            v
        }
        None => read_byte(addr),
    }
}

/// The child of the handler flows: every page of the first TOUCH faults
/// through SIGBUS, is resolved by the handler, and then reads (and, with
/// `wp`, writes) through, each page then compared whole. Even pages are
/// read first; with `wp`, odd pages are written first, which must signal
/// twice (missing, then WP).
fn handler_child(area: &Area, src: &Buf, wp: bool) -> i32 {
    let (extra, mode) = if wp {
        (
            caps::features_for(area.mem(), RegisterMode::WP),
            RegisterMode::MISSING | RegisterMode::WP,
        )
    } else {
        (Features::empty(), RegisterMode::MISSING)
    };
    let u = match child_uffd(area, extra, mode) {
        Ok(u) => u,
        Err(c) => return c,
    };
    let ps = area.page_size();
    if install_handler(u.as_raw_fd(), area.addr(), ps, src.addr(), wp).is_err() {
        return code::SETUP;
    }
    let n = TOUCH.min(area.npages());
    for i in 0..n {
        let at = area.page(i);
        if wp && i % 2 == 1 {
            touch(at + 1, Some(!seed(i)));
            if !page_holds(at, ps, i, Some(1)) {
                return code::DATA;
            }
            continue;
        }
        if touch(at, None) != seed(i) || !page_holds(at, ps, i, None) {
            return code::DATA;
        }
        if wp {
            touch(at, Some(!seed(i)));
            if !page_holds(at, ps, i, Some(0)) {
                return code::DATA;
            }
        }
    }
    let want_wp = if wp { n } else { 0 };
    if H_MISSING.load(Ordering::Relaxed) != n || H_WPS.load(Ordering::Relaxed) != want_wp {
        return code::COUNT;
    }
    // SIGBUS mode queues no PAGEFAULT message.
    if !matches!(u.read_event(Some(Duration::ZERO)), Ok(None)) {
        return code::QUEUED;
    }
    0
}

fn handler_flow(mem: MemType, wp: bool) {
    let mut f = Features::SIGBUS;
    let mut mode = RegisterMode::MISSING;
    if wp {
        f |= caps::features_for(mem, RegisterMode::WP);
        mode |= RegisterMode::WP;
    }
    let area = try_skip!(area_to_register(mem, 4, f, mode));
    let (src, _) = handler_source(&area);
    let st = in_signal_child(|| handler_child(&area, &src, wp));
    assert_eq!(
        st,
        Ended::Exited(0),
        "child's exit code names the failed step (see mod code)"
    );
}

tests_calling! {
    (#[apply(all_mem)] #[parallel(fork)])
    fn sigbus_handler_copy_resolves_each_missing_page_once(mem: MemType) => handler_flow(mem, false);
    fn sigbus_wp_handler_copy_then_unprotect_resolves_each_page(mem: MemType) => handler_flow(mem, true);
}

// ---------------------------------------------------------------------------
// Inheritance through UFFD_EVENT_FORK.

tests_calling! {
    (#[apply(all_mem)] #[serial(fork)])
    fn forked_child_inherits_sigbus_through_event_fork(mem: MemType) => child_inherits_sigbus(mem, false);
    /// Upstream's second half: a page filled, then released (MADV_DONTNEED, or
    /// a punched hole for shared memory), is missing again, and a child forked
    /// with EVENT_FORK gets SIGBUS on it, not the old contents.
    fn released_page_raises_sigbus_in_a_forked_child(mem: MemType) => child_inherits_sigbus(mem, true);
}

fn child_inherits_sigbus(mem: MemType, release_first: bool) {
    let f = Features::SIGBUS | Features::EVENT_FORK;
    let (area, uffd) = try_skip!(registered_missing(mem, 2, f, |_| {}));
    let at = area.page(1) + 0x77;
    if release_first {
        let ps = area.page_size();
        copy_page(&uffd, &area, 1, 0x3c);
        let advice = uffdtest::testing::mm::release_advice(mem);
        uffdtest::testing::mm::madvise(area.page(1), ps, advice).expect("release the page");
    }
    let rec = std::sync::Arc::new(Recorder::new());
    let r = rec.clone();
    let forker = park(move || {
        r.ended(wait_child(spawn_child_raw(|| {
            if !r.arm() {
                return code::SETUP;
            }
            read_byte(at);
            code::SURVIVED
        })))
    });
    let child = next_fork_event(&uffd);
    assert_eq!(forker.join(), sigbus_at(at), "the child's registration keeps SIGBUS");
    // The child is gone; nothing was queued on either descriptor.
    faulter::assert_no_event(&child);
    faulter::assert_no_event(&uffd);
    // The parent's range is untouched by the child's fault: still missing,
    // so a copy fills it.
    copy_page(&uffd, &area, 1, 0x2b);
}

// ---------------------------------------------------------------------------
// What SIGBUS mode reports, and what it leaves alone.

static X_ADDR: AtomicUsize = AtomicUsize::new(0);
static X_UFFD: AtomicI32 = AtomicI32::new(-1);
static X_PS: AtomicUsize = AtomicUsize::new(0);
static X_SRC: AtomicUsize = AtomicUsize::new(0);

/// Records si_addr, then zero-fills the page so the access can retry.
extern "C" fn record_and_fill(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
    let (addr, si_code) = unsafe { ((*info).si_addr() as usize, (*info).si_code) };
    if si_code != libc::BUS_ADRERR {
        die(code::HANDLER_CODE);
    }
    X_ADDR.store(addr, Ordering::Relaxed);
    let ps = X_PS.load(Ordering::Relaxed);
    // COPY from a zeroed source: hugetlb has no ZEROPAGE.
    let mut arg = sys::uffdio_copy {
        dst: (addr & !(ps - 1)) as u64,
        src: X_SRC.load(Ordering::Relaxed) as u64,
        len: ps as u64,
        mode: 0,
        copy: 0,
    };
    // SAFETY: a valid uffdio_copy for the child's own uffd.
    if unsafe { sys::uffdio_copy(X_UFFD.load(Ordering::Relaxed), &mut arg) }.is_err() {
        die(code::HANDLER_COPY);
    }
}

#[apply(all_mem)]
#[parallel(fork)]
fn sigbus_reports_the_exact_fault_address(#[case] mem: MemType) {
    let area = try_skip!(area_to_register(mem, 1, Features::SIGBUS, RegisterMode::MISSING));
    let ps = area.page_size();
    let zero = Buf::filled(ps, 0);
    let at = area.addr() + 0x123;
    let st = in_signal_child(|| {
        let u = match child_uffd(&area, Features::empty(), RegisterMode::MISSING) {
            Ok(u) => u,
            Err(c) => return c,
        };
        X_UFFD.store(u.as_raw_fd(), Ordering::Relaxed);
        X_PS.store(ps, Ordering::Relaxed);
        X_SRC.store(zero.addr(), Ordering::Relaxed);
        // SAFETY: installing a handler in this single-purpose child.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = record_and_fill as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO;
            if libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut()) != 0 {
                return code::SETUP;
            }
        }
        if read_byte(at) != 0 || area.read_page(0) != vec![0; ps] {
            return code::DATA;
        }
        // si_addr is the exact address, not the page (unlike a PAGEFAULT
        // message without EXACT_ADDRESS).
        if X_ADDR.load(Ordering::Relaxed) == at {
            0
        } else {
            code::COUNT
        }
    });
    assert_eq!(st, Ended::Exited(0));
}

#[apply(all_mem)]
#[parallel(fork)]
fn sigbus_mode_still_delivers_non_cooperative_events(#[case] mem: MemType) {
    // SIGBUS replaces PAGEFAULT messages only; REMOVE is still queued and
    // still parks the thread until read.
    let f = Features::SIGBUS | Features::EVENT_REMOVE;
    let (area, uffd) = try_skip!(registered_missing(mem, 1, f, |_| {}));
    let (at, len) = (area.addr(), area.len());
    let advice = uffdtest::testing::mm::release_advice(mem);
    let p = park(move || uffdtest::testing::mm::madvise(at, len, advice));
    assert!(wait_readable(&uffd, LIMIT), "no REMOVE event in SIGBUS mode");
    assert!(!p.is_done());
    match uffd.read_event(Some(Duration::ZERO)).unwrap() {
        Some(Event::Remove { start, end }) => assert_eq!((start, end), (at as u64, (at + len) as u64)),
        other => panic!("expected UFFD_EVENT_REMOVE, got {other:?}"),
    }
    assert_eq!(p.join(), Ok(()));
}

#[apply(all_mem)]
#[serial(fork)]
fn forked_child_resolves_its_sigbus_faults_through_the_fork_descriptor(#[case] mem: MemType) {
    // The selftest's second half: in a child forked under EVENT_FORK every
    // access raises SIGBUS. The FORK descriptor, handed to the child over
    // a socket, lets the child's handler resolve each one, once per page.
    let f = Features::SIGBUS | Features::EVENT_FORK;
    let (area, uffd) = try_skip!(registered_missing(mem, 4, f, |_| {}));
    let ps = area.page_size();
    let (src, n) = handler_source(&area);
    let (ours, theirs) = fdpass::socketpair();
    let (sock, base, s) = (theirs.as_raw_fd(), area.addr(), src.addr());
    let forker = park(move || {
        wait_child(spawn_child_raw(move || {
            let fd = fdpass::recv_fd(sock);
            if install_handler(fd.as_raw_fd(), base, ps, s, false).is_err() {
                return code::SETUP;
            }
            for i in 0..n {
                let at = base + i * ps;
                if touch(at + 9, None) != seed(i) || !page_holds(at, ps, i, None) {
                    return code::DATA;
                }
            }
            if H_MISSING.load(Ordering::Relaxed) != n {
                return code::COUNT;
            }
            0
        }))
    });
    let child = next_fork_event(&uffd);
    assert!(fdpass::send_fd(ours.as_raw_fd(), child.as_raw_fd()));
    assert_eq!(
        forker.join(),
        ChildExit::Exited(0),
        "child's exit code names the failed step"
    );
    // No PAGEFAULT queued.
    faulter::assert_no_event(&child);
    faulter::assert_no_event(&uffd);
}
