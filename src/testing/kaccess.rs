//! Accesses the kernel makes to user memory on a process's behalf, each a
//! different way into the fault handler: GUP (MADV_POPULATE_*, mlock(2),
//! process_vm_readv/writev from another process) and copy_to/from_user
//! (read(2)/write(2) on a pipe). tests/gup_faults.rs runs each against a
//! registered page.

use super::foreign::Words;
use super::{ChildExit, spawn_child, wait_child};
use nix::errno::Errno;
use nix::unistd::Pid;
use std::os::fd::{AsRawFd, OwnedFd};

/// io_uring_setup refused (disabled or not built); Display is the SKIP reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoIoUring(pub Errno);

impl std::fmt::Display for NoIoUring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "no io_uring: io_uring_setup {} (CONFIG_IO_URING, kernel.io_uring_disabled)",
            self.0
        )
    }
}

impl From<NoIoUring> for String {
    fn from(e: NoIoUring) -> String {
        e.to_string()
    }
}

/// One way the kernel reaches a user page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// madvise(MADV_POPULATE_READ): GUP read faults.
    PopulateRead,
    /// madvise(MADV_POPULATE_WRITE): GUP write faults (FOLL_WRITE).
    PopulateWrite,
    /// mlock(2) populates the range: a write fault where the mapping is
    /// private and writable (it breaks COW up front), a read fault on a
    /// shared one (populate_vma_page_range).
    Mlock,
    /// process_vm_readv(2) from a child reading this process's page.
    VmReadv,
    /// process_vm_writev(2) from a child writing into this process's page.
    VmWritev,
    /// read(2) from a pipe into the page: copy_to_user writes it.
    PipeRead,
    /// write(2) to a pipe from the page: copy_from_user reads it.
    PipeWrite,
    /// IORING_REGISTER_BUFFERS over the page: a long-term write pin
    /// (pin_user_pages_fast, FOLL_WRITE | FOLL_LONGTERM), released at once.
    IoUringBuffers,
}

/// The bytes the byte-copying kinds move through the page: `pattern(i)`.
pub fn pattern(i: usize) -> u8 {
    (i * 5 + 3) as u8
}

/// How many bytes the byte-copying kinds move (from the page's start).
pub const BYTES: usize = 512;

impl Kind {
    /// Whether the kernel writes the page (the fault carries WRITE).
    pub fn writes(self, shared: bool) -> bool {
        match self {
            Kind::PopulateWrite | Kind::VmWritev | Kind::PipeRead | Kind::IoUringBuffers => true,
            Kind::Mlock => !shared,
            Kind::PopulateRead | Kind::VmReadv | Kind::PipeWrite => false,
        }
    }

    /// Ok when this kernel and process can make this access at all; Err
    /// is the SKIP reason (io_uring_setup refused: disabled or not built).
    pub fn available(self) -> Result<(), NoIoUring> {
        if self != Kind::IoUringBuffers {
            return Ok(());
        }
        let mut params = [0u8; 120];
        // SAFETY: io_uring_setup reads and writes the params struct we pass.
        let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
        match Errno::result(fd) {
            // SAFETY: the kernel just returned this fd to us.
            Ok(fd) => drop(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) }),
            Err(e) => return Err(NoIoUring(e)),
        }
        Ok(())
    }

    /// Whether this kind fills the page by itself (GUP only faults it in).
    fn only_faults(self) -> bool {
        matches!(
            self,
            Kind::PopulateRead | Kind::PopulateWrite | Kind::Mlock | Kind::IoUringBuffers
        )
    }

    /// The errno the call fails with when the fault is refused
    /// (VM_FAULT_SIGBUS → GUP's EFAULT): mlock(2) turns EFAULT from
    /// populating into ENOMEM (`__mlock_posix_error_return`).
    pub fn refused(self) -> Errno {
        match self {
            Kind::Mlock => Errno::ENOMEM,
            _ => Errno::EFAULT,
        }
    }
}

/// One access prepared against `[at, at+len)`: the pipe or the child's
/// buffer it moves bytes through, so the outcome can be checked after.
/// Prepare it before the uffd exists: the process_vm_* child is forked
/// here, so it holds no descriptor of the uffd (closing the test's own
/// must release it).
pub struct Access {
    pub kind: Kind,
    at: usize,
    len: usize,
    pipe: (OwnedFd, OwnedFd),
    /// The child's side of process_vm_*: its local buffer (MAP_SHARED, so
    /// visible here) and its result.
    child_buf: Words,
    child_ret: Words,
    /// The process_vm_* child, waiting for a byte on the pipe to start.
    child: Option<(Pid, OwnedFd)>,
    child_waited: std::sync::atomic::AtomicBool,
}

impl Access {
    /// `page_len` is the length the GUP kinds fault in (the area's page);
    /// the byte-copying kinds move [`BYTES`].
    pub fn new(kind: Kind, at: usize, page_len: usize) -> Access {
        let pipe = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
        let child_buf = Words::new();
        let bytes: Vec<u8> = (0..BYTES).map(pattern).collect();
        match kind {
            Kind::PipeRead => assert_eq!(nix::unistd::write(&pipe.1, &bytes), Ok(BYTES)),
            Kind::VmWritev => {
                // SAFETY: the Words page is ours and BYTES long at least.
                unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), child_buf.addr() as *mut u8, BYTES) }
            }
            _ => {}
        }
        let len = if kind.only_faults() { page_len } else { BYTES };
        let mut a = Access {
            kind,
            at,
            len,
            pipe,
            child_buf,
            child_ret: Words::new(),
            child: None,
            child_waited: std::sync::atomic::AtomicBool::new(false),
        };
        if matches!(kind, Kind::VmReadv | Kind::VmWritev) {
            a.child = Some(a.fork_child());
        }
        a
    }

    /// Runs the access on this thread: Ok is what the call returned (0 for
    /// madvise and mlock), Err its errno.
    pub fn run(&self) -> nix::Result<usize> {
        let (at, len) = (self.at, self.len);
        match self.kind {
            Kind::PopulateRead => super::mm::madvise(at, len, libc::MADV_POPULATE_READ).map(|_| 0),
            Kind::PopulateWrite => super::mm::madvise(at, len, libc::MADV_POPULATE_WRITE).map(|_| 0),
            // SAFETY: mlock of a mapping the test owns.
            Kind::Mlock => Errno::result(unsafe { libc::mlock(at as *const libc::c_void, len) }).map(|_| 0),
            // SAFETY: the kernel reads or writes the page or fails EFAULT.
            Kind::PipeRead => {
                Errno::result(unsafe { libc::read(self.pipe.0.as_raw_fd(), at as *mut libc::c_void, len) })
                    .map(|n| n as usize)
            }
            // SAFETY: as above.
            Kind::PipeWrite => {
                Errno::result(unsafe { libc::write(self.pipe.1.as_raw_fd(), at as *const libc::c_void, len) })
                    .map(|n| n as usize)
            }
            Kind::VmReadv | Kind::VmWritev => self.run_in_child(),
            Kind::IoUringBuffers => match super::pin::io_uring_write(at, len) {
                Ok(pin) => pin.release().map(|_| 0),
                Err(super::pin::PinError::RegisterBuffers(e)) => Err(e),
                Err(e) => panic!("io_uring went away since the probe: {e}"),
            },
        }
    }

    /// Forks the child that will run process_vm_readv/writev on this
    /// process's page once it reads a byte from the returned pipe.
    fn fork_child(&self) -> (Pid, OwnedFd) {
        let parent = nix::unistd::getpid().as_raw();
        let (at, len, local, write) = (self.at, self.len, self.child_buf.addr(), self.kind == Kind::VmWritev);
        let ret = &self.child_ret;
        let (go_r, go_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
        let go = go_r.as_raw_fd();
        let pid = spawn_child(|| {
            let mut b = [0u8; 1];
            // SAFETY: one byte into a local buffer.
            if unsafe { libc::read(go, b.as_mut_ptr().cast(), 1) } != 1 {
                return 2;
            }
            ret.set(1, nix::unistd::getpid().as_raw() as i64);
            let l = libc::iovec {
                iov_base: local as *mut libc::c_void,
                iov_len: len,
            };
            let r = libc::iovec {
                iov_base: at as *mut libc::c_void,
                iov_len: len,
            };
            // SAFETY: one iovec each side; the kernel checks the remote one.
            let n = unsafe {
                if write {
                    libc::process_vm_writev(parent, &l, 1, &r, 1, 0)
                } else {
                    libc::process_vm_readv(parent, &l, 1, &r, 1, 0)
                }
            };
            ret.set(0, if n < 0 { -(Errno::last() as i64) } else { n as i64 });
            0
        });
        (pid, go_w)
    }

    /// Starts the child and waits for it: its process_vm_* answer.
    fn run_in_child(&self) -> nix::Result<usize> {
        let (pid, go) = self.child.as_ref().expect("a process_vm child");
        assert_eq!(nix::unistd::write(go, &[1]), Ok(1), "start the process_vm child");
        self.child_waited.store(true, std::sync::atomic::Ordering::Release);
        assert_eq!(wait_child(*pid), ChildExit::Exited(0), "process_vm child");
        match self.child_ret.get(0) {
            n if n < 0 => Err(Errno::from_raw(-n as i32)),
            n => Ok(n as usize),
        }
    }

    /// The process that takes the fault where it is not this one (the
    /// process_vm_* child), once it started.
    pub fn child(&self) -> Option<i32> {
        matches!(self.kind, Kind::VmReadv | Kind::VmWritev).then(|| {
            let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while self.child_ret.get(1) == 0 {
                assert!(std::time::Instant::now() < end, "the process_vm child never started");
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            self.child_ret.get(1) as i32
        })
    }

    /// What a successful access returns.
    pub fn done(&self) -> nix::Result<usize> {
        Ok(if self.kind.only_faults() { 0 } else { BYTES })
    }

    /// The bytes the access carried out of the page (the pipe's or the
    /// child's buffer), for the kinds that read it.
    pub fn carried(&self) -> Option<Vec<u8>> {
        match self.kind {
            Kind::VmReadv => Some((0..BYTES).map(|i| self.child_byte(i)).collect()),
            Kind::PipeWrite => {
                let mut b = vec![0u8; BYTES];
                nix::unistd::read(&self.pipe.0, &mut b).expect("read the pipe");
                Some(b)
            }
            _ => None,
        }
    }

    fn child_byte(&self, i: usize) -> u8 {
        // SAFETY: inside the Words page.
        unsafe { std::ptr::read_volatile((self.child_buf.addr() + i) as *const u8) }
    }

    /// The byte the page holds at `i` after the access completed over a
    /// page filled with `fill`: the access's own bytes where it wrote them.
    pub fn page_byte(&self, fill: u8, i: usize) -> u8 {
        match self.kind {
            Kind::VmWritev | Kind::PipeRead if i < BYTES => pattern(i),
            _ => fill,
        }
    }

    /// A refused read(2) leaves the pipe's bytes in it.
    pub fn pipe_kept(&self) -> bool {
        let mut b = vec![0u8; BYTES];
        nix::unistd::read(&self.pipe.0, &mut b) == Ok(BYTES) && b.iter().enumerate().all(|(i, &x)| x == pattern(i))
    }
}

impl Drop for Access {
    fn drop(&mut self) {
        // A child never started (the case skipped first) reads EOF once its
        // pipe closes, and exits; reap it.
        if let Some((pid, go)) = self.child.take()
            && !self.child_waited.load(std::sync::atomic::Ordering::Acquire)
        {
            drop(go);
            let _ = wait_child(pid);
        }
    }
}
