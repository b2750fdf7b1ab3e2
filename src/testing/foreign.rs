//! A second process driving a uffd this one made, as a monitor process
//! does: the descriptor travels over SCM_RIGHTS, and what the other process
//! saw comes back through a page shared across the fork.

use super::fdpass::{recv_fd, send_fd, socketpair};
use super::{ChildExit, spawn_child, wait_child};
use crate::uffd::{Partial, Progress, Uffd};
use nix::errno::Errno;
use nix::unistd::Pid;
use std::os::fd::{AsRawFd, OwnedFd};

/// One page of `i64` words mapped MAP_SHARED before a fork, so a child's
/// writes reach the parent; unmapped on drop.
pub struct Words {
    addr: usize,
}

impl Words {
    /// The words a page holds.
    pub const LEN: usize = 512;

    pub fn new() -> Words {
        let addr =
            super::mm::map_anon(Words::LEN * 8, libc::MAP_SHARED).unwrap_or_else(|e| panic!("mmap shared page: {e}"));
        Words { addr }
    }

    /// The page's address, for a child to read or write bytes through.
    pub fn addr(&self) -> usize {
        self.addr
    }

    pub fn get(&self, i: usize) -> i64 {
        assert!(i < Words::LEN);
        // SAFETY: word i of our page.
        unsafe { std::ptr::read_volatile((self.addr as *const i64).add(i)) }
    }

    pub fn set(&self, i: usize, v: i64) {
        assert!(i < Words::LEN);
        // SAFETY: word i of our page.
        unsafe { std::ptr::write_volatile((self.addr as *mut i64).add(i), v) }
    }

    /// Stores a resolving ioctl's answer in words `i` and `i + 1`.
    pub fn set_progress(&self, i: usize, p: Progress) {
        let (errno, n) = match p {
            Ok(n) => (0, n),
            Err(Partial { errno, progress }) => (errno as i64, progress),
        };
        self.set(i, errno);
        self.set(i + 1, n);
    }

    /// The answer [`Words::set_progress`] stored at `i`.
    pub fn progress(&self, i: usize) -> Progress {
        match self.get(i) {
            0 => Ok(self.get(i + 1)),
            e => Err(Partial {
                errno: Errno::from_raw(e as i32),
                progress: self.get(i + 1),
            }),
        }
    }
}

impl Default for Words {
    fn default() -> Words {
        Words::new()
    }
}

impl Drop for Words {
    fn drop(&mut self) {
        // SAFETY: our own mapping.
        unsafe { libc::munmap(self.addr as *mut libc::c_void, Words::LEN * 8) };
    }
}

/// A forked process that waits for a uffd over a socket, runs a closure
/// on it and exits with the closure's value.
pub struct Foreign {
    pid: Pid,
    sock: OwnedFd,
}

impl Foreign {
    /// Forks the process now; it blocks until [`Foreign::send`]. Fork it
    /// before the uffd exists, so it holds no descriptor but the one sent.
    pub fn spawn(f: impl FnOnce(Uffd) -> i32) -> Foreign {
        let (ours, theirs) = socketpair();
        let sock = theirs.as_raw_fd();
        let pid = spawn_child(move || f(Uffd::from_owned(recv_fd(sock))));
        drop(theirs);
        Foreign { pid, sock: ours }
    }

    /// Hands `uffd` over; this process keeps its own descriptor.
    pub fn send(&self, uffd: &Uffd) {
        assert!(send_fd(self.sock.as_raw_fd(), uffd.as_raw_fd()), "sendmsg(SCM_RIGHTS)");
    }

    /// Waits for the process to end.
    pub fn wait(self) -> ChildExit {
        wait_child(self.pid)
    }
}
