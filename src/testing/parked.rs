//! Threads the kernel parks in a userfaultfd wait, and proof that they are.
//!
//! A fault on a registered page and a non-cooperative event (FORK, REMAP,
//! REMOVE, UNMAP) both stop the triggering thread until the monitor acts.
//! Tests show that without timing: the uffd turns readable only once the
//! waiter is queued, and the waiter cannot finish until its message is read
//! (events) or resolved (faults), so "readable and not done" is a fact, and
//! `/proc/self/task/<tid>/stat` then names the sleep (D for the killable
//! event wait and kernel-mode faults, S for interruptible user faults).

use crate::uffd::Uffd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A thread running one operation that is expected to block in the kernel.
pub struct Parked<T> {
    tid: u32,
    done: Arc<AtomicBool>,
    handle: JoinHandle<T>,
}

/// Runs `f` on a new thread and returns once the thread's tid is known.
pub fn park<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Parked<T> {
    let (tx, rx) = mpsc::channel();
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    let handle = std::thread::spawn(move || {
        tx.send(super::gettid()).expect("send tid");
        let v = f();
        d.store(true, Ordering::Release);
        v
    });
    let tid = rx.recv().expect("parked thread's tid");
    Parked { tid, done, handle }
}

impl<T> Parked<T> {
    pub fn tid(&self) -> u32 {
        self.tid
    }

    /// The operation has returned.
    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// The thread's scheduler state letter (`R`, `S`, `D`...).
    pub fn state(&self) -> Option<char> {
        task_state(self.tid)
    }

    /// Whether the thread now sleeps in handle_userfault.
    pub fn in_userfault(&self) -> bool {
        matches!(self.state(), Some('S' | 'D')) && self.wchan().is_some_and(|w| w.contains("userfault"))
    }

    /// Waits (up to `limit`, a hang guard, not a measurement) until the
    /// thread sleeps in state `want`; returns the last state seen.
    pub fn wait_state(&self, want: char, limit: Duration) -> Option<char> {
        let end = Instant::now() + limit;
        loop {
            let s = self.state();
            if s == Some(want) || Instant::now() >= end || self.is_done() {
                return s;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The kernel function the thread sleeps in (`/proc/.../wchan`).
    pub fn wchan(&self) -> Option<String> {
        std::fs::read_to_string(format!("/proc/self/task/{}/wchan", self.tid)).ok()
    }

    /// Waits for the thread and returns what the operation returned.
    pub fn join(self) -> T {
        self.try_join().expect("parked thread panicked")
    }

    /// [`Parked::join`], with the thread's panic as a value.
    pub fn try_join(self) -> std::thread::Result<T> {
        self.handle.join()
    }
}

/// Field 3 of `/proc/self/task/<tid>/stat`.
pub fn task_state(tid: u32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    // The comm field may hold spaces and parentheses: the state follows the last ')'.
    s[s.rfind(')')? + 1..].trim_start().chars().next()
}

/// Waits until `uffd` has a message to read; false if `limit` passed first.
/// On an O_NONBLOCK uffd poll reports POLLIN once a fault or event waits.
pub fn wait_readable(uffd: &Uffd, limit: Duration) -> bool {
    uffd.poll(Some(limit)).expect("poll on the uffd")
}

/// Forks a child that runs `f` and `_exit`s with its value, calling the
/// kernel directly. glibc's fork() holds malloc's locks across the syscall,
/// and a fork parked in the UFFD_EVENT_FORK wait would then stall every
/// thread that allocates, the monitor that must read the event included.
/// The child inherits no guarantee about those locks: `f` must not allocate.
pub fn spawn_child_raw(f: impl FnOnce() -> i32) -> nix::unistd::Pid {
    // SAFETY: clone(SIGCHLD) with no new stack is fork(); the child runs
    // only `f`, which the caller keeps allocation-free, then _exit()s.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::SIGCHLD as libc::c_long,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    match pid {
        -1 => panic!("clone: {}", nix::errno::Errno::last()),
        0 => {
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(101);
            // SAFETY: _exit never returns and runs no atexit hooks.
            unsafe { libc::_exit(code) }
        }
        pid => nix::unistd::Pid::from_raw(pid as i32),
    }
}
