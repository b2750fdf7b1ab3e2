//! The messages read(2) returns: PAGEFAULT payloads, and the non-cooperative
//! events (FORK, REMAP, REMOVE, UNMAP) with their exact payloads, each
//! delivered only when its feature bit was asked for, each parking the thread
//! that caused it until the monitor reads it (fs/userfaultfd.c,
//! `userfaultfd_event_wait_completion`).
//!
//! Cases that fork, or ask for EVENT_FORK, take `#[serial(fork)]`: under
//! plain `cargo test` a fork from any thread would otherwise queue FORK
//! events on another case's descriptor and park that fork until it is read.

mod common;
use common::*;
use nix::errno::Errno;
use serial_test::serial;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};
use uffdtest::testing::mm::{Reservation, align_for, assert_bytes, madvise, mremap, munmap, release_advice};
use uffdtest::testing::parked::{Parked, park, spawn_child_raw, wait_readable};
use uffdtest::testing::{Buf, ChildExit, read_byte, wait_child, write_byte};

/// Guards against hangs; no case measures time.
const LIMIT: Duration = Duration::from_secs(20);

fn open(features: Features) -> Result<Uffd, String> {
    testing::open_uffd(features)
}

fn register(uffd: &Uffd, area: &Area, mode: RegisterMode) {
    uffd.register(area.addr(), area.len(), mode)
        .unwrap_or_else(|e| panic!("UFFDIO_REGISTER {mode:?} on {}: {e}", area.mem()));
}

/// The next message, which must come within the hang guard.
fn next_event(uffd: &Uffd) -> Event {
    uffd.read_event(Some(LIMIT))
        .expect("read(2) on the uffd")
        .expect("a message queued within the hang guard")
}

/// Nothing is queued. Only used once the operation that could have queued
/// a message has returned: every event is queued before its operation
/// returns, so an empty queue then is final.
fn assert_no_event(uffd: &Uffd, after: &str) {
    if let Some(ev) = uffd.read_event(Some(Duration::ZERO)).expect("read(2) on the uffd") {
        panic!("{after}: unexpected {} message: {ev:?}", ev.name());
    }
}

/// The faulting thread is parked in handle_userfault: a user-mode fault
/// sleeps interruptible (`S`).
fn assert_parked_in_fault<T>(p: &Parked<T>, uffd: &Uffd) {
    assert!(wait_readable(uffd, LIMIT), "no PAGEFAULT message queued");
    assert!(!p.is_done(), "the access completed on a missing registered page");
    assert_eq!(p.wait_state('S', LIMIT), Some('S'), "wchan {:?}", p.wchan());
}

/// Waits until an access either completed or faulted into the uffd.
fn settle<T>(p: &Parked<T>, uffd: &Uffd) -> bool {
    let end = Instant::now() + LIMIT;
    while !p.is_done() {
        if uffd.poll(Some(Duration::from_millis(5))).expect("poll") {
            return false;
        }
        assert!(Instant::now() < end, "access neither completed nor faulted");
    }
    true
}

fn expect_remove(ev: Event) -> (u64, u64) {
    match ev {
        Event::Remove { start, end } => (start, end),
        other => panic!("expected UFFD_EVENT_REMOVE, got {other:?}"),
    }
}

fn expect_unmap(ev: Event) -> (u64, u64) {
    match ev {
        Event::Unmap { start, end } => (start, end),
        other => panic!("expected UFFD_EVENT_UNMAP, got {other:?}"),
    }
}

fn expect_remap(ev: Event) -> (u64, u64, u64) {
    match ev {
        Event::Remap { from, to, len } => (from, to, len),
        other => panic!("expected UFFD_EVENT_REMAP, got {other:?}"),
    }
}

fn expect_fault(ev: Event) -> (PagefaultFlags, u64, u32) {
    match ev {
        Event::Pagefault { flags, address, ptid } => (flags, address, ptid),
        other => panic!("expected UFFD_EVENT_PAGEFAULT, got {other:?}"),
    }
}

fn seed(page: usize) -> u8 {
    (page as u8).wrapping_mul(37).wrapping_add(11)
}

// One file per event kind, pulled in with include! rather than `mod`:
// libtest names a case by its module path, so submodules would rename
// every case; included, they all stay `events/<case>`.
include!("events/pagefault.rs");
include!("events/flow.rs");
include!("events/fork.rs");
include!("events/remap.rs");
include!("events/remove.rs");
include!("events/unmap.rs");
include!("events/spanning.rs");
