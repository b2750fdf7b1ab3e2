//! Guards and helpers the test binaries share.
//!
//! The skip contract: a case that cannot run on this kernel prints exactly one
//! line `SKIP: <reason>` to stdout and returns. libtest counts that as a pass;
//! the runner turns it into a KTAP `# SKIP`. Never skip on an unexpected error.

pub mod faulter;
pub mod fdinfo;
pub mod fdpass;
pub mod files;
pub mod foreign;
pub mod handler;
pub mod holes;
pub mod kaccess;
pub mod ksm;
pub mod memcg;
pub mod mm;
pub mod numa;
pub mod pagemap;
pub mod pagemap_scan;
pub mod parked;
pub mod pin;
pub mod smaps;
pub mod swap;
pub mod thp;
pub mod vmchild;

use crate::caps::OpenFailure;
use crate::mem::{Area, MemType, Unavailable};
use crate::uffd::{Features, OpenError, OpenFlags, Uffd};
use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};
use std::os::fd::AsRawFd;
use std::sync::Arc;

/// Prints `SKIP: <reason>` and returns from the enclosing test.
#[macro_export]
macro_rules! skip {
    ($($fmt:tt)+) => {{
        $crate::testing::print_skip(&format!($($fmt)+));
        return;
    }};
}

/// For a case `known-issues.toml` declares on some kernels: only `uffdtest
/// run` reads that file (and reports the declared failure as XFAIL), so a
/// plain `cargo test` skips the case, naming the entry, instead of failing
/// on a kernel bug the project already knows.
#[macro_export]
macro_rules! judged_by_the_runner {
    ($why:expr) => {
        if std::env::var_os($crate::caps::RUN_DIR_ENV).is_none() {
            $crate::skip!(
                "declared in known-issues.toml ({}): uffdtest run judges it (XFAIL where declared)",
                $why
            );
        }
    };
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

/// Skips unless the kernel has a behaviour that has no feature bit, as its
/// own probe ([`crate::caps::behaviour`]) found.
#[macro_export]
macro_rules! require_behaviour {
    ($b:expr) => {
        if let Err(e) = $crate::caps::require_behaviour($b) {
            $crate::skip!("{}", e);
        }
    };
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

/// [`crate::caps::registration_support`] with the reason as text. Err is
/// the SKIP reason.
pub fn register_support(mem: MemType, mode: crate::uffd::RegisterMode) -> Result<(), String> {
    crate::caps::registration_support(mem, mode).map_err(|u| u.to_string())
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
    OpenFlags::DEFAULT
}

/// Opens a user-mode-only uffd and completes UFFDIO_API with `features`.
/// Err is a SKIP reason, decided by the probes alone (the kernel lacks a
/// feature, or privilege is missing); a failing call panics.
pub fn open_uffd(features: Features) -> Result<Uffd, String> {
    crate::caps::require_features(features).map_err(|u| u.to_string())?;
    open_uffd_flags(default_flags(), features)
}

/// [`open_uffd`] with explicit open flags; panics on a failure the probes
/// did not foresee.
pub fn open_uffd_flags(flags: OpenFlags, features: Features) -> Result<Uffd, String> {
    match crate::caps::open_uffd(flags, features) {
        Ok(u) => Ok(u),
        Err(OpenFailure::Unsupported(u)) => Err(u.to_string()),
        Err(OpenFailure::Failed(OpenError::Open(e))) => panic!("userfaultfd({flags:?}) failed: {e}"),
        Err(OpenFailure::Failed(OpenError::Api(e))) => panic!("UFFDIO_API({features:?}) failed: {e}"),
    }
}

/// An area or a SKIP reason, for helpers that return Result<_, String>.
pub fn area(mem: MemType, npages: usize) -> Result<Area, String> {
    Area::new(mem, npages).map_err(skip_reason)
}

/// Why an area cannot be had, as a SKIP reason; a setup error panics.
pub fn skip_reason(e: Unavailable) -> String {
    match e {
        Unavailable::Skip(r) => r,
        Unavailable::Error(e) => panic!("cannot set up the area: {e}"),
    }
}

/// Pages to leave free in the pool for a forked child of `mem` that gets
/// `child_pages` pages: the parent owns a MAP_PRIVATE hugetlb mapping's
/// reservation, so every page the child gets (a fill through its uffd, fork's
/// early copy of a pinned page) is a free unreserved one, and a 1 GiB pool
/// has none unless they are kept spare.
pub fn fork_spare(mem: MemType, child_pages: usize) -> usize {
    if mem.is_hugetlb() && !mem.is_shared() {
        child_pages
    } else {
        0
    }
}

/// [`area`] with [`fork_spare`] pages of its pool kept free, for a case
/// whose forked child gets `child_pages` pages of it.
pub fn area_for_fork(mem: MemType, npages: usize, child_pages: usize) -> Result<Area, String> {
    Area::with_spare(mem, npages, fork_spare(mem, child_pages)).map_err(skip_reason)
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
    register_prepared(area(mem, npages)?, features, mode, prep)
}

/// [`registered_area`] on [`Area::with_spare`]: `spare` pages of a hugetlb
/// pool left free beside the area's `npages`.
pub fn registered_area_with_spare(
    mem: MemType,
    (npages, spare): (usize, usize),
    features: Features,
    mode: crate::uffd::RegisterMode,
    prep: impl FnOnce(&Area),
) -> Result<(Area, Arc<Uffd>), String> {
    register_support(mem, mode)?;
    let area = Area::with_spare(mem, npages, spare).map_err(skip_reason)?;
    register_prepared(area, features, mode, prep)
}

fn register_prepared(
    area: Area,
    features: Features,
    mode: crate::uffd::RegisterMode,
    prep: impl FnOnce(&Area),
) -> Result<(Area, Arc<Uffd>), String> {
    let mem = area.mem();
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

    /// Refused before the fill loop ran: the progress field keeps the
    /// sentinel the library preset ([`Partial::UNTOUCHED`]).
    pub fn rejected(errno: Errno) -> Progress {
        err(errno, Partial::UNTOUCHED)
    }
}

pub use crate::mem::Buf;
pub use handler::{Counts, FaultHandler, copy_handler};

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

/// Raw fd number of anything fd-like, for messages.
pub fn fdnum(f: &impl AsRawFd) -> i32 {
    f.as_raw_fd()
}

/// The current thread's kernel tid.
pub fn gettid() -> u32 {
    nix::unistd::gettid().as_raw() as u32
}
