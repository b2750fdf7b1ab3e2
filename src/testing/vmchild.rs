//! Processes that share our address space: clone(CLONE_VM) and vfork
//! children. Their faults land in our uffd's registered ranges as a
//! thread's would, yet each is a process of its own, which a signal can
//! stop or kill alone; `/proc/<pid>` shows where it sleeps.

use super::ChildExit;
use nix::errno::Errno;
use nix::unistd::Pid;
use std::time::{Duration, Instant};

/// The stack a child runs on: a private anonymous mapping of our own,
/// outside every registered range.
const STACK: usize = 64 * 1024;

/// A CLONE_VM child, reaped by [`VmChild::wait`] (or on drop, after
/// SIGKILL, so a failing case leaves no child running in our memory).
pub struct VmChild {
    pid: Pid,
    stack: usize,
    reaped: bool,
}

/// The child's body: reads the byte at `arg` and exits with it. It runs
/// on our memory with our thread's TLS, so it touches nothing else: no
/// allocation, no errno, no locks.
extern "C" fn read_and_exit(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: the parent passes an address of one of its own mappings.
    unsafe { std::ptr::read_volatile(arg as *const u8) as libc::c_int }
}

impl VmChild {
    /// Starts a child in our address space that reads the byte at `addr`
    /// and exits with it. With `vfork` (CLONE_VFORK) this returns only once
    /// the child exited: call it on a thread of its own.
    pub fn read(addr: usize, vfork: bool) -> VmChild {
        // Unmapped once reaped.
        let stack = super::mm::map_anon(STACK, libc::MAP_PRIVATE).unwrap_or_else(|e| panic!("mmap child stack: {e}"));
        let mut flags = libc::CLONE_VM | libc::SIGCHLD;
        if vfork {
            flags |= libc::CLONE_VFORK;
        }
        // SAFETY: the stack's top is 16-byte aligned and stays mapped until
        // the child is reaped; the body keeps to the rules above.
        let pid = unsafe {
            libc::clone(
                read_and_exit,
                (stack + STACK) as *mut libc::c_void,
                flags,
                addr as *mut libc::c_void,
            )
        };
        assert!(pid > 0, "clone(CLONE_VM): {}", Errno::last());
        VmChild {
            pid: Pid::from_raw(pid),
            stack,
            reaped: false,
        }
    }

    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Sends `sig` to the child alone.
    pub fn kill(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(self.pid, sig).expect("kill the child");
    }

    /// The child's scheduler state letter (`R`, `S`, `D`, `T`, `Z`...).
    pub fn state(&self) -> Option<char> {
        let s = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        s[s.rfind(')')? + 1..].trim_start().chars().next()
    }

    /// The kernel function the child sleeps in.
    pub fn wchan(&self) -> Option<String> {
        std::fs::read_to_string(format!("/proc/{}/wchan", self.pid)).ok()
    }

    /// Waits (a hang guard of `limit`, not a measurement) until the child
    /// is in state `want`; returns the last state seen.
    pub fn wait_state(&self, want: char, limit: Duration) -> Option<char> {
        let end = Instant::now() + limit;
        loop {
            let s = self.state();
            if s == Some(want) || Instant::now() >= end {
                return s;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Waits until the child sleeps in handle_userfault.
    pub fn wait_in_userfault(&self, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        while !(matches!(self.state(), Some('S' | 'D')) && self.wchan().is_some_and(|w| w.contains("userfault"))) {
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    /// Reaps the child and says how it ended.
    pub fn wait(mut self) -> ChildExit {
        self.reaped = true;
        super::wait_child(self.pid)
    }
}

impl Drop for VmChild {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = nix::sys::signal::kill(self.pid, nix::sys::signal::Signal::SIGKILL);
            let _ = super::wait_child(self.pid);
        }
        // SAFETY: the stack mapped in read(); its only user is reaped.
        unsafe { libc::munmap(self.stack as *mut libc::c_void, STACK) };
    }
}
