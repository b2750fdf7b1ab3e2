//! Guards and helpers the test binaries share.
//!
//! The skip contract: a case that cannot run on this kernel prints exactly one
//! line `SKIP: <reason>` to stdout and returns. libtest counts that as a pass;
//! the runner turns it into a KTAP `# SKIP`. Never skip on an unexpected error.

pub mod faulter;
pub mod fdpass;
pub mod files;
pub mod holes;
pub mod knob;
pub mod mm;
pub mod pagemap;
pub mod pagemap_scan;
pub mod parked;
pub mod pin;
pub mod smaps;

use crate::caps::caps;
use crate::event::Event;
use crate::mem::{Area, MemType, Unavailable};
use crate::uffd::{Features, OpenFlags, Uffd};
use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// Prints `SKIP: <reason>` and returns from the enclosing test.
#[macro_export]
macro_rules! skip {
    ($($fmt:tt)+) => {{
        $crate::testing::print_skip(&format!($($fmt)+));
        return;
    }};
}

/// Skips unless `cond` holds.
#[macro_export]
macro_rules! require {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            $crate::skip!($($fmt)+);
        }
    };
}

/// Skips unless UFFDIO_API offers every feature in `f`.
#[macro_export]
macro_rules! require_features {
    ($f:expr) => {{
        let missing = $crate::caps::caps().missing($f);
        if !missing.is_empty() {
            $crate::skip!("kernel lacks {}", missing.join(", "));
        }
    }};
}

/// Skips unless the process runs as root.
#[macro_export]
macro_rules! require_root {
    ($why:expr) => {
        $crate::require!($crate::caps::caps().root, "needs root: {}", $why);
    };
}

/// Skips unless the kernel can register `mem` in `mode` (see
/// [`register_support`]).
#[macro_export]
macro_rules! require_mode {
    ($mem:expr, $mode:expr) => {
        $crate::try_skip!($crate::testing::register_support($mem, $mode));
    };
}

/// `Ok(v) => v`, or SKIP on `Err(Skip)`, or panic on `Err(Error)`.
#[macro_export]
macro_rules! try_area {
    ($e:expr) => {
        match $e {
            Ok(a) => a,
            Err($crate::mem::Unavailable::Skip(r)) => $crate::skip!("{}", r),
            Err($crate::mem::Unavailable::Error(e)) => panic!("cannot set up the area: {e}"),
        }
    };
}

/// `Ok(v) => v` or SKIP with the reason in `Err(String)`.
#[macro_export]
macro_rules! try_skip {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(r) => $crate::skip!("{}", r),
        }
    };
}

/// Whether this kernel can register `mem` in `mode`, decided from the
/// feature bits that document it (a refusal despite them is a failure for the
/// test to find, not a skip). guest_memfd has no feature bit: its support is
/// probed, and a refusal is the skip reason. Err is the SKIP reason.
pub fn register_support(mem: MemType, mode: crate::uffd::RegisterMode) -> Result<(), String> {
    use crate::uffd::RegisterMode as M;
    if mode.is_empty() {
        return Ok(());
    }
    if mem == MemType::GuestMemfd {
        return match crate::caps::probe_registration(mem, mode) {
            crate::caps::Registration::Granted(_) => Ok(()),
            crate::caps::Registration::Refused(e) => Err(format!(
                "kernel has no userfaultfd support for guest_memfd (REGISTER {} → {e:?})",
                crate::caps::mode_name(mode).to_uppercase()
            )),
            crate::caps::Registration::Unprobed(why) => Err(why),
        };
    }
    if mode.contains(M::MINOR) && mem.is_anon() {
        return Err(format!("MINOR mode is not defined for {mem}"));
    }
    let need = crate::caps::features_for(mem, mode);
    let missing = caps().missing(need);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("kernel lacks {} for {mem}", missing.join(", ")))
    }
}

/// The one place the skip marker is written.
pub fn print_skip(reason: &str) {
    use std::io::Write;
    let reason = reason.replace('\n', " ");
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "SKIP: {reason}");
    let _ = out.flush();
}

/// The flags the suite opens uffds with, as the selftests do.
pub fn default_flags() -> OpenFlags {
    OpenFlags::O_CLOEXEC | OpenFlags::O_NONBLOCK | OpenFlags::UFFD_USER_MODE_ONLY
}

/// Opens a user-mode-only uffd and completes UFFDIO_API with `features`.
/// Err is a SKIP reason: the kernel lacks a feature, or privilege is missing.
pub fn open_uffd(features: Features) -> Result<Uffd, String> {
    let missing = caps().missing(features);
    if !missing.is_empty() {
        return Err(format!("kernel lacks {}", missing.join(", ")));
    }
    open_uffd_flags(default_flags(), features)
}

/// [`open_uffd`] with explicit open flags.
pub fn open_uffd_flags(flags: OpenFlags, features: Features) -> Result<Uffd, String> {
    let uffd = match Uffd::open(flags) {
        Ok(u) => u,
        Err(e @ (Errno::EPERM | Errno::ENOSYS)) => {
            return Err(format!("cannot open a userfaultfd: {e}"));
        }
        Err(e) => panic!("userfaultfd({flags:?}) failed: {e}"),
    };
    match uffd.api(features) {
        Ok(_) => Ok(uffd),
        Err(Errno::EPERM) if features.contains(Features::EVENT_FORK) => {
            Err("UFFD_FEATURE_EVENT_FORK needs CAP_SYS_PTRACE".into())
        }
        Err(e) => panic!("UFFDIO_API({features:?}) failed: {e}"),
    }
}

/// An area or a SKIP reason, for helpers that return Result<_, String>.
pub fn area(mem: MemType, npages: usize) -> Result<Area, String> {
    Area::new(mem, npages).map_err(|e| match e {
        Unavailable::Skip(r) => r,
        Unavailable::Error(e) => panic!("cannot set up the area: {e}"),
    })
}

/// An area of `npages` of `mem`, `prep`ared while still unregistered (a
/// registered missing page would block the test's own accesses), then
/// registered in `mode` on a fresh uffd with `features`. Err is a SKIP reason.
pub fn registered_area(
    mem: MemType,
    npages: usize,
    features: Features,
    mode: crate::uffd::RegisterMode,
    prep: impl FnOnce(&Area),
) -> Result<(Area, Arc<Uffd>), String> {
    register_support(mem, mode)?;
    let area = area(mem, npages)?;
    prep(&area);
    let uffd = open_uffd(features)?;
    uffd.register(area.addr(), area.len(), mode)
        .unwrap_or_else(|e| panic!("UFFDIO_REGISTER({mode:?}) on {mem}: {e}"));
    Ok((area, Arc::new(uffd)))
}

/// Expected answers of the resolving ioctls, for `assert_eq!` against a
/// [`crate::uffd::Progress`].
pub mod progress {
    use crate::uffd::{Partial, Progress};
    use nix::errno::Errno;

    /// Failed with `errno` after `progress` bytes (or with `progress` = `-errno`).
    pub fn err(errno: Errno, progress: i64) -> Progress {
        Err(Partial { errno, progress })
    }

    /// The kernel's fill loop ran and wrote `-errno` into the progress field.
    pub fn failed(errno: Errno) -> Progress {
        err(errno, Partial::neg(errno))
    }

    /// Refused before the fill loop ran: the progress field keeps what we sent (0).
    pub fn rejected(errno: Errno) -> Progress {
        err(errno, 0)
    }
}

/// A page-sized buffer filled with `byte`, page-aligned, for COPY sources.
pub struct Buf {
    area: Area,
}

impl Buf {
    /// `len` bytes of private anonymous memory filled with `byte`.
    pub fn filled(len: usize, byte: u8) -> Buf {
        let pages = len.div_ceil(crate::mem::base_page_size()).max(1);
        let area = Area::new(MemType::Anon, pages).expect("anonymous memory");
        // SAFETY: the area is ours and at least `len` long.
        unsafe { std::ptr::write_bytes(area.addr() as *mut u8, byte, len) };
        Buf { area }
    }

    /// Filled with a per-byte pattern: `f(offset)`.
    pub fn pattern(len: usize, f: impl Fn(usize) -> u8) -> Buf {
        let b = Buf::filled(len, 0);
        for i in 0..len {
            // SAFETY: inside the buffer.
            unsafe { *((b.addr() + i) as *mut u8) = f(i) };
        }
        b
    }

    pub fn addr(&self) -> usize {
        self.area.addr()
    }

    pub fn bytes(&self, len: usize) -> Vec<u8> {
        self.area.read(self.addr(), len)
    }
}

/// How a forked child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildExit {
    Exited(i32),
    Signaled(Signal),
}

/// Runs `f` in a forked child and returns how it ended; the child exits
/// with `f`'s return value. Anything `f` does to itself (SIGBUS, SIGSEGV)
/// stays in the child, so the test binary never dies of it.
pub fn in_child(f: impl FnOnce() -> i32) -> ChildExit {
    let pid = spawn_child(f);
    wait_child(pid)
}

/// Forks a child that runs `f` and `_exit`s with its value.
pub fn spawn_child(f: impl FnOnce() -> i32) -> Pid {
    // SAFETY: the child only runs `f` and then _exit()s; glibc keeps malloc
    // usable across fork.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(101);
            // SAFETY: _exit never returns and skips the parent's atexit hooks.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => child,
    }
}

/// Waits for a child forked with [`spawn_child`].
pub fn wait_child(pid: Pid) -> ChildExit {
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, c)) => return ChildExit::Exited(c),
            Ok(WaitStatus::Signaled(_, s, _)) => return ChildExit::Signaled(s),
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(e) => panic!("waitpid({pid}): {e}"),
        }
    }
}

/// Reads one byte at `addr` (forcing the access).
pub fn read_byte(addr: usize) -> u8 {
    // SAFETY: callers pass mapped addresses; faults are what tests are for.
    unsafe { std::ptr::read_volatile(addr as *const u8) }
}

/// Writes one byte at `addr`.
pub fn write_byte(addr: usize, v: u8) {
    // SAFETY: as for read_byte.
    unsafe { std::ptr::write_volatile(addr as *mut u8, v) }
}

/// How a memory access in a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// Touches `addr` in a forked child: `Exited(0)` if the access completed,
/// otherwise the signal that killed it.
pub fn access_in_child(addr: usize, how: Access) -> ChildExit {
    in_child(|| {
        match how {
            Access::Read => {
                read_byte(addr);
            }
            Access::Write => write_byte(addr, 0x5a),
        }
        0
    })
}

/// Counters kept by a [`FaultHandler`].
#[derive(Debug, Default)]
pub struct Counts {
    pub events: AtomicUsize,
    pub errors: AtomicUsize,
}

/// A thread that reads events from a uffd and hands each to a closure,
/// as a monitor process does. Stops when dropped or on [`FaultHandler::stop`].
pub struct FaultHandler {
    stop: Arc<AtomicBool>,
    wake: OwnedFd,
    thread: Option<JoinHandle<Vec<String>>>,
    pub counts: Arc<Counts>,
}

impl FaultHandler {
    /// Starts the thread. `f` returns Err(message) to record a failure; the
    /// messages come back from [`FaultHandler::stop`].
    pub fn spawn<F>(uffd: Arc<Uffd>, mut f: F) -> FaultHandler
    where
        F: FnMut(&Uffd, Event) -> Result<(), String> + Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
        let counts = Arc::new(Counts::default());
        let (s, c) = (stop.clone(), counts.clone());
        let thread = std::thread::spawn(move || {
            use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
            let mut errors = Vec::new();
            while !s.load(Ordering::Acquire) {
                let mut fds = [
                    PollFd::new(uffd.as_fd(), PollFlags::POLLIN),
                    PollFd::new(rd.as_fd(), PollFlags::POLLIN),
                ];
                match poll(&mut fds, PollTimeout::from(1000u16)) {
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(e) => {
                        errors.push(format!("poll: {e}"));
                        break;
                    }
                }
                if fds[1].any().unwrap_or(false) {
                    break;
                }
                let events = match uffd.read_events(16, Some(Duration::ZERO)) {
                    Ok(v) => v,
                    Err(e) => {
                        errors.push(format!("read: {e}"));
                        break;
                    }
                };
                for ev in events {
                    c.events.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = f(&uffd, ev) {
                        c.errors.fetch_add(1, Ordering::Relaxed);
                        errors.push(e);
                    }
                }
            }
            errors
        });
        FaultHandler {
            stop,
            wake: wr,
            thread: Some(thread),
            counts,
        }
    }

    /// Stops the thread; returns the failures the closure reported.
    pub fn stop(mut self) -> Vec<String> {
        self.halt()
    }

    fn halt(&mut self) -> Vec<String> {
        self.stop.store(true, Ordering::Release);
        let _ = nix::unistd::write(&self.wake, &[1]);
        self.thread
            .take()
            .map(|t| t.join().unwrap_or_else(|_| vec!["fault handler panicked".into()]))
            .unwrap_or_default()
    }

    /// Events handled so far.
    pub fn events(&self) -> usize {
        self.counts.events.load(Ordering::Relaxed)
    }
}

impl Drop for FaultHandler {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.halt();
        }
    }
}

/// Resolves every MISSING fault by copying one page of `byte` into it and
/// records the faulting addresses: the common handler of the copy tests.
pub fn copy_handler(uffd: Arc<Uffd>, page_size: usize, byte: u8) -> (FaultHandler, Arc<std::sync::Mutex<Vec<u64>>>) {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let src = Buf::filled(page_size, byte);
    let s = seen.clone();
    let h = FaultHandler::spawn(uffd, move |u, ev| match ev {
        Event::Pagefault { address, .. } => {
            let page = (address as usize) & !(page_size - 1);
            s.lock().unwrap().push(address);
            match u.copy(page, src.addr(), page_size, Default::default()) {
                Ok(_) => Ok(()),
                // Another thread raced us to it: just wake the faulter.
                Err(p) if p.errno == Errno::EEXIST => u.wake(page, page_size).map_err(|e| e.to_string()),
                Err(p) => Err(format!("UFFDIO_COPY at {page:#x}: {p}")),
            }
        }
        other => Err(format!("unexpected event {other:?}")),
    });
    (h, seen)
}

/// Raw fd number of anything fd-like, for messages.
pub fn fdnum(f: &impl AsRawFd) -> i32 {
    f.as_raw_fd()
}

/// The current thread's kernel tid.
pub fn gettid() -> u32 {
    nix::unistd::gettid().as_raw() as u32
}
