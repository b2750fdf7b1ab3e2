//! A monitor thread for tests: reads a uffd's events and hands each to a
//! closure, collecting what the closure reports as failures.

use super::Buf;
use crate::event::Event;
use crate::uffd::Uffd;
use nix::errno::Errno;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

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
