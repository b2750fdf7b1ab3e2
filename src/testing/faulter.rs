//! A thread that makes one memory access which may block on a userfault.
//!
//! A test needs to know whether an access is parked in the kernel waiting
//! for the monitor, not guess from elapsed time: [`Faulter::settle`] watches
//! the thread's `/proc/self/task/<tid>/{stat,wchan}` until it either finished
//! or sleeps in `handle_userfault`. It is a [`Parked`] access with a
//! deadline on every wait.

use super::parked::{Parked, park};
use std::time::{Duration, Instant};

/// Where an access stands once it stopped running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// The access completed.
    Done,
    /// The thread sleeps in handle_userfault, waiting for a wake.
    Blocked,
}

/// One access on its own thread; see the module doc.
pub struct Faulter {
    access: Option<Parked<u8>>,
}

/// How long [`Faulter::settle`] and [`Faulter::join`] wait before deciding
/// the thread is stuck somewhere else: a deadlock guard, not a measurement.
const DEADLINE: Duration = Duration::from_secs(20);

impl Faulter {
    fn spawn(f: impl FnOnce() -> u8 + Send + 'static) -> Faulter {
        Faulter { access: Some(park(f)) }
    }

    fn access(&self) -> &Parked<u8> {
        self.access.as_ref().expect("joined once")
    }

    /// Writes `byte` at `addr`; [`Faulter::join`] returns `byte`.
    pub fn write(addr: usize, byte: u8) -> Faulter {
        Faulter::spawn(move || {
            crate::testing::write_byte(addr, byte);
            byte
        })
    }

    /// Runs `f`, an access of the caller's choosing (a syscall writing
    /// into the page, say); [`Faulter::join`] returns what `f` returns.
    pub fn call(f: impl FnOnce() -> u8 + Send + 'static) -> Faulter {
        Faulter::spawn(f)
    }

    /// Reads the byte at `addr`; [`Faulter::join`] returns it.
    pub fn read(addr: usize) -> Faulter {
        Faulter::spawn(move || crate::testing::read_byte(addr))
    }

    pub fn tid(&self) -> i32 {
        self.access().tid() as i32
    }

    pub fn is_done(&self) -> bool {
        self.access().is_done()
    }

    /// Whether the thread now sleeps in handle_userfault.
    pub fn is_blocked(&self) -> bool {
        self.access().in_userfault()
    }

    /// Waits until the access completed or parked on a userfault.
    /// Panics if neither happens before the deadline.
    pub fn settle(&self) -> State {
        let end = Instant::now() + DEADLINE;
        loop {
            if self.is_done() {
                return State::Done;
            }
            if self.is_blocked() {
                return State::Blocked;
            }
            assert!(
                Instant::now() < end,
                "thread {} neither finished nor blocked in handle_userfault",
                self.tid()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Waits for the access to complete and returns the byte it read or
    /// wrote; panics (without hanging) if it does not.
    pub fn join(mut self) -> u8 {
        let end = Instant::now() + DEADLINE;
        while !self.is_done() {
            assert!(
                Instant::now() < end,
                "access on thread {} did not complete (blocked: {})",
                self.tid(),
                self.is_blocked()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let a = self.access.take().expect("joined once");
        a.try_join().expect("access thread panicked")
    }
}

impl Drop for Faulter {
    fn drop(&mut self) {
        // A still-blocked thread is left detached: joining would hang the
        // failing test instead of reporting it.
        if let Some(a) = self.access.take()
            && a.is_done()
        {
            let _ = a.try_join();
        }
    }
}

/// The next message on `uffd`, which must be a PAGEFAULT: its flags and
/// address. Panics on another event or if none arrives before the deadline.
pub fn next_pagefault(uffd: &crate::uffd::Uffd) -> (crate::event::PagefaultFlags, usize) {
    match uffd.read_event(Some(DEADLINE)).expect("read(uffd)") {
        Some(crate::event::Event::Pagefault { flags, address, .. }) => (flags, address as usize),
        Some(other) => panic!("expected a PAGEFAULT, got {other:?}"),
        None => panic!("no PAGEFAULT message within {DEADLINE:?}"),
    }
}

/// Asserts no message is queued on `uffd` right now.
pub fn assert_no_event(uffd: &crate::uffd::Uffd) {
    let ev = uffd.read_event(Some(Duration::ZERO)).expect("read(uffd)");
    assert!(ev.is_none(), "unexpected message {ev:?}");
}
