//! `Uffd`: an owned userfaultfd with one method per ioctl.
//!
//! Every method returns the kernel's answer untouched: the errno as a value,
//! and for the resolving ioctls the progress field the kernel wrote back even
//! when it failed (`copy`, `zeropage`, `move`, `mapped`, `updated`), because
//! a test suite must be able to check partial progress. Nothing here panics on
//! a kernel error.

use crate::event::Event;
use crate::sys;
use bitflags::bitflags;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

bitflags! {
    /// Flags of userfaultfd(2) and USERFAULTFD_IOC_NEW.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct OpenFlags: i32 {
        const O_CLOEXEC = libc::O_CLOEXEC;
        const O_NONBLOCK = libc::O_NONBLOCK;
        const UFFD_USER_MODE_ONLY = sys::UFFD_USER_MODE_ONLY;
    }
}

impl OpenFlags {
    /// The flags the suite opens uffds with, as the kernel selftests do.
    pub const DEFAULT: OpenFlags = OpenFlags::O_CLOEXEC
        .union(OpenFlags::O_NONBLOCK)
        .union(OpenFlags::UFFD_USER_MODE_ONLY);
}

sys::uapi_flags! {
    /// `uffdio_api.features`. Unknown bits are kept so tests can send them.
    Features {
        PAGEFAULT_FLAG_WP = sys::UFFD_FEATURE_PAGEFAULT_FLAG_WP;
        EVENT_FORK = sys::UFFD_FEATURE_EVENT_FORK;
        EVENT_REMAP = sys::UFFD_FEATURE_EVENT_REMAP;
        EVENT_REMOVE = sys::UFFD_FEATURE_EVENT_REMOVE;
        MISSING_HUGETLBFS = sys::UFFD_FEATURE_MISSING_HUGETLBFS;
        MISSING_SHMEM = sys::UFFD_FEATURE_MISSING_SHMEM;
        EVENT_UNMAP = sys::UFFD_FEATURE_EVENT_UNMAP;
        SIGBUS = sys::UFFD_FEATURE_SIGBUS;
        THREAD_ID = sys::UFFD_FEATURE_THREAD_ID;
        MINOR_HUGETLBFS = sys::UFFD_FEATURE_MINOR_HUGETLBFS;
        MINOR_SHMEM = sys::UFFD_FEATURE_MINOR_SHMEM;
        EXACT_ADDRESS = sys::UFFD_FEATURE_EXACT_ADDRESS;
        WP_HUGETLBFS_SHMEM = sys::UFFD_FEATURE_WP_HUGETLBFS_SHMEM;
        WP_UNPOPULATED = sys::UFFD_FEATURE_WP_UNPOPULATED;
        POISON = sys::UFFD_FEATURE_POISON;
        WP_ASYNC = sys::UFFD_FEATURE_WP_ASYNC;
        MOVE = sys::UFFD_FEATURE_MOVE;
    }

    /// An ioctls mask (`uffdio_api.ioctls`, `uffdio_register.ioctls`): bit
    /// `_UFFDIO_X` set means UFFDIO_X is offered.
    Ioctls {
        REGISTER = 1 << sys::_UFFDIO_REGISTER;
        UNREGISTER = 1 << sys::_UFFDIO_UNREGISTER;
        WAKE = 1 << sys::_UFFDIO_WAKE;
        COPY = 1 << sys::_UFFDIO_COPY;
        ZEROPAGE = 1 << sys::_UFFDIO_ZEROPAGE;
        MOVE = 1 << sys::_UFFDIO_MOVE;
        WRITEPROTECT = 1 << sys::_UFFDIO_WRITEPROTECT;
        CONTINUE = 1 << sys::_UFFDIO_CONTINUE;
        POISON = 1 << sys::_UFFDIO_POISON;
        API = 1 << sys::_UFFDIO_API;
    }

    /// `uffdio_register.mode`.
    RegisterMode {
        MISSING = sys::UFFDIO_REGISTER_MODE_MISSING;
        WP = sys::UFFDIO_REGISTER_MODE_WP;
        MINOR = sys::UFFDIO_REGISTER_MODE_MINOR;
    }

    CopyMode {
        DONTWAKE = sys::UFFDIO_COPY_MODE_DONTWAKE;
        WP = sys::UFFDIO_COPY_MODE_WP;
    }

    ZeropageMode {
        DONTWAKE = sys::UFFDIO_ZEROPAGE_MODE_DONTWAKE;
    }

    /// WP set protects, WP clear un-protects (and wakes unless DONTWAKE).
    WriteprotectMode {
        WP = sys::UFFDIO_WRITEPROTECT_MODE_WP;
        DONTWAKE = sys::UFFDIO_WRITEPROTECT_MODE_DONTWAKE;
    }

    ContinueMode {
        DONTWAKE = sys::UFFDIO_CONTINUE_MODE_DONTWAKE;
        WP = sys::UFFDIO_CONTINUE_MODE_WP;
    }

    PoisonMode {
        DONTWAKE = sys::UFFDIO_POISON_MODE_DONTWAKE;
    }

    MoveMode {
        DONTWAKE = sys::UFFDIO_MOVE_MODE_DONTWAKE;
        ALLOW_SRC_HOLES = sys::UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES;
    }
}

/// What UFFDIO_API answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Api {
    pub api: u64,
    pub features: Features,
    pub ioctls: Ioctls,
}

/// A failed resolving ioctl: the errno and what the kernel wrote into the
/// progress field (bytes done before the failure, or `-errno`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partial {
    pub errno: Errno,
    pub progress: i64,
}

impl Partial {
    /// What the library presets every progress field to, so "the kernel left
    /// it untouched" reads apart from 0 bytes (as the selftests' mmap-changing
    /// case presets its own sentinel): neither a byte count nor `-errno`.
    pub const UNTOUCHED: i64 = i64::MIN;

    /// `-errno`, which the kernel writes when nothing was done.
    pub fn neg(errno: Errno) -> i64 {
        -(errno as i64)
    }
}

impl std::fmt::Display for Partial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.progress == Partial::UNTOUCHED {
            write!(f, "{} (progress field untouched)", self.errno)
        } else {
            write!(f, "{} (progress {})", self.errno, self.progress)
        }
    }
}

impl std::error::Error for Partial {}

/// A resolving ioctl's answer: bytes done, or the errno with partial progress.
pub type Progress = Result<i64, Partial>;

/// Which step of getting a working uffd failed, with the kernel's errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// userfaultfd(2) itself.
    #[error("userfaultfd(2): {0}")]
    Open(Errno),
    /// The UFFDIO_API handshake on the new fd.
    #[error("UFFDIO_API: {0}")]
    Api(Errno),
}

/// An owned userfaultfd.
#[derive(Debug)]
pub struct Uffd {
    fd: OwnedFd,
}

fn range(start: usize, len: usize) -> sys::uffdio_range {
    sys::uffdio_range {
        start: start as u64,
        len: len as u64,
    }
}

fn progress(res: nix::Result<libc::c_int>, field: i64) -> Progress {
    match res {
        Ok(_) => Ok(field),
        Err(errno) => Err(Partial { errno, progress: field }),
    }
}

impl Uffd {
    /// userfaultfd(2).
    pub fn open(flags: OpenFlags) -> nix::Result<Uffd> {
        // SAFETY: the syscall takes one int and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, flags.bits()) };
        let fd = Errno::result(fd)? as RawFd;
        // SAFETY: the kernel just handed us this fd and nobody else owns it.
        Ok(Uffd {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// userfaultfd(2) and UFFDIO_API with `features`: the fd every user
    /// but the API tests wants, and what the handshake granted.
    pub fn open_api(flags: OpenFlags, features: Features) -> Result<(Uffd, Api), OpenError> {
        let u = Uffd::open(flags).map_err(OpenError::Open)?;
        let api = u.api(features).map_err(OpenError::Api)?;
        Ok((u, api))
    }

    /// `/dev/userfaultfd` with USERFAULTFD_IOC_NEW (6.1): access follows the
    /// device's permissions, not `vm.unprivileged_userfaultfd`.
    pub fn open_dev(flags: OpenFlags) -> nix::Result<Uffd> {
        let dev = nix::fcntl::open(
            "/dev/userfaultfd",
            nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )?;
        // SAFETY: USERFAULTFD_IOC_NEW takes the flags by value.
        let fd = unsafe { sys::userfaultfd_ioc_new(dev.as_raw_fd(), flags.bits()) }?;
        // SAFETY: the ioctl returned a new fd that nobody else owns.
        Ok(Uffd {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Adopts a uffd the kernel handed over (UFFD_EVENT_FORK).
    pub fn from_owned(fd: OwnedFd) -> Uffd {
        Uffd { fd }
    }

    fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// UFFDIO_API with an explicit API number, for the tests of wrong ones.
    /// On error the kernel zeroes the struct; the returned `Api` shows that.
    pub fn api_raw(&self, api: u64, features: u64) -> Result<Api, (Errno, Api)> {
        let mut arg = sys::uffdio_api {
            api,
            features,
            ioctls: 0,
        };
        // SAFETY: arg is a valid uffdio_api for the kernel to read and write.
        let res = unsafe { sys::uffdio_api(self.raw(), &mut arg) };
        let out = Api {
            api: arg.api,
            features: Features::from_bits_retain(arg.features),
            ioctls: Ioctls::from_bits_retain(arg.ioctls),
        };
        match res {
            Ok(_) => Ok(out),
            Err(e) => Err((e, out)),
        }
    }

    /// UFFDIO_API: the handshake; returns the granted features and ioctls.
    pub fn api(&self, features: Features) -> nix::Result<Api> {
        self.api_raw(sys::UFFD_API, features.bits()).map_err(|(e, _)| e)
    }

    /// UFFDIO_REGISTER: returns the range ioctls the kernel grants.
    pub fn register(&self, start: usize, len: usize, mode: RegisterMode) -> nix::Result<Ioctls> {
        let mut arg = sys::uffdio_register {
            range: range(start, len),
            mode: mode.bits(),
            ioctls: 0,
        };
        // SAFETY: arg is a valid uffdio_register.
        unsafe { sys::uffdio_register(self.raw(), &mut arg) }?;
        Ok(Ioctls::from_bits_retain(arg.ioctls))
    }

    /// UFFDIO_UNREGISTER.
    pub fn unregister(&self, start: usize, len: usize) -> nix::Result<()> {
        let mut arg = range(start, len);
        // SAFETY: arg is a valid uffdio_range.
        unsafe { sys::uffdio_unregister(self.raw(), &mut arg) }.map(drop)
    }

    /// UFFDIO_WAKE: wakes threads blocked on faults in the range.
    pub fn wake(&self, start: usize, len: usize) -> nix::Result<()> {
        let mut arg = range(start, len);
        // SAFETY: arg is a valid uffdio_range.
        unsafe { sys::uffdio_wake(self.raw(), &mut arg) }.map(drop)
    }

    /// UFFDIO_COPY: fills missing pages at `dst` from `src`.
    pub fn copy(&self, dst: usize, src: usize, len: usize, mode: CopyMode) -> Progress {
        let mut arg = sys::uffdio_copy {
            dst: dst as u64,
            src: src as u64,
            len: len as u64,
            mode: mode.bits(),
            copy: Partial::UNTOUCHED,
        };
        // SAFETY: arg is a valid uffdio_copy; the kernel checks the addresses.
        let res = unsafe { sys::uffdio_copy(self.raw(), &mut arg) };
        progress(res, arg.copy)
    }

    /// UFFDIO_ZEROPAGE: maps zero pages (anon, shmem; not hugetlb).
    pub fn zeropage(&self, start: usize, len: usize, mode: ZeropageMode) -> Progress {
        let mut arg = sys::uffdio_zeropage {
            range: range(start, len),
            mode: mode.bits(),
            zeropage: Partial::UNTOUCHED,
        };
        // SAFETY: arg is a valid uffdio_zeropage.
        let res = unsafe { sys::uffdio_zeropage(self.raw(), &mut arg) };
        progress(res, arg.zeropage)
    }

    /// UFFDIO_MOVE (UFFD_FEATURE_MOVE, 6.8): moves pages from `src` to `dst`.
    pub fn r#move(&self, dst: usize, src: usize, len: usize, mode: MoveMode) -> Progress {
        let mut arg = sys::uffdio_move {
            dst: dst as u64,
            src: src as u64,
            len: len as u64,
            mode: mode.bits(),
            r#move: Partial::UNTOUCHED,
        };
        // SAFETY: arg is a valid uffdio_move.
        let res = unsafe { sys::uffdio_move(self.raw(), &mut arg) };
        progress(res, arg.r#move)
    }

    /// UFFDIO_WRITEPROTECT: protects (mode WP) or un-protects the range.
    pub fn writeprotect(&self, start: usize, len: usize, mode: WriteprotectMode) -> nix::Result<()> {
        let mut arg = sys::uffdio_writeprotect {
            range: range(start, len),
            mode: mode.bits(),
        };
        // SAFETY: arg is a valid uffdio_writeprotect.
        unsafe { sys::uffdio_writeprotect(self.raw(), &mut arg) }.map(drop)
    }

    /// UFFDIO_CONTINUE: maps pages already in the page cache (minor faults).
    pub fn r#continue(&self, start: usize, len: usize, mode: ContinueMode) -> Progress {
        let mut arg = sys::uffdio_continue {
            range: range(start, len),
            mode: mode.bits(),
            mapped: Partial::UNTOUCHED,
        };
        // SAFETY: arg is a valid uffdio_continue.
        let res = unsafe { sys::uffdio_continue(self.raw(), &mut arg) };
        progress(res, arg.mapped)
    }

    /// UFFDIO_POISON (UFFD_FEATURE_POISON, 6.6): later accesses get SIGBUS.
    pub fn poison(&self, start: usize, len: usize, mode: PoisonMode) -> Progress {
        let mut arg = sys::uffdio_poison {
            range: range(start, len),
            mode: mode.bits(),
            updated: Partial::UNTOUCHED,
        };
        // SAFETY: arg is a valid uffdio_poison.
        let res = unsafe { sys::uffdio_poison(self.raw(), &mut arg) };
        progress(res, arg.updated)
    }

    /// Waits up to `timeout` for the fd to become readable (`None`: forever).
    pub fn poll(&self, timeout: Option<Duration>) -> nix::Result<bool> {
        let t = match timeout {
            None => PollTimeout::NONE,
            Some(d) => PollTimeout::try_from(d).unwrap_or(PollTimeout::MAX),
        };
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        loop {
            match poll(&mut fds, t) {
                Ok(n) => {
                    let revents = fds[0].revents().unwrap_or(PollFlags::empty());
                    if n > 0 && revents.contains(PollFlags::POLLERR) {
                        return Err(Errno::EIO);
                    }
                    return Ok(n > 0);
                }
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads up to `buf.len()` raw messages without waiting.
    pub fn read_raw(&self, buf: &mut [sys::uffd_msg]) -> nix::Result<usize> {
        let bytes = std::mem::size_of_val(buf);
        // SAFETY: buf is writable for `bytes` bytes and uffd_msg is plain data.
        let n = unsafe { libc::read(self.raw(), buf.as_mut_ptr().cast(), bytes) };
        let n = Errno::result(n)? as usize;
        Ok(n / std::mem::size_of::<sys::uffd_msg>())
    }

    /// Reads one event, waiting up to `timeout`; `Ok(None)` on timeout.
    pub fn read_event(&self, timeout: Option<Duration>) -> nix::Result<Option<Event>> {
        Ok(self.read_events(1, timeout)?.pop())
    }

    /// Reads at most `max` events, waiting up to `timeout` for the first.
    /// Works on blocking and non-blocking fds alike.
    pub fn read_events(&self, max: usize, timeout: Option<Duration>) -> nix::Result<Vec<Event>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut buf = vec![sys::uffd_msg::default(); max.max(1)];
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if !self.poll(left)? {
                return Ok(Vec::new());
            }
            match self.read_raw(&mut buf) {
                Ok(n) => return Ok(buf[..n].iter().map(Event::decode).collect()),
                // Another reader won the race, or a signal: wait again.
                Err(Errno::EAGAIN) | Err(Errno::EINTR) => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Ok(Vec::new());
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl AsFd for Uffd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Uffd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl From<Uffd> for OwnedFd {
    fn from(u: Uffd) -> OwnedFd {
        u.fd
    }
}
