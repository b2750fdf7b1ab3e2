//! Signals to a faulter that sleeps in handle_userfault (fs/userfaultfd.c).
//!
//! A user fault waits TASK_INTERRUPTIBLE. Any signal wakes it: the waiter
//! takes its message off the queue if the monitor has not read it yet, the
//! fault returns VM_FAULT_RETRY, the arch fault handler sees the pending
//! signal and returns to user mode, and after the signal (a handler run, a
//! stop and continue) the access runs again and faults again, queueing a
//! new message. So the monitor sees one message if it had not read the
//! first, two if it had; a fatal signal ends the faulter and leaves the
//! uffd serving everyone else.
//!
//! The faulters are threads (a handler runs in them) and CLONE_VM children
//! (processes of their own, sharing our registered memory, which SIGKILL
//! and SIGSTOP hit alone).

mod common;
use common::*;
use nix::sys::signal::Signal;
use serial_test::serial;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use uffdtest::testing::faulter::{Faulter, State, assert_no_event};
use uffdtest::testing::parked::wait_readable;
use uffdtest::testing::vmchild::VmChild;
use uffdtest::testing::{Buf, ChildExit};

/// SIGUSR1 deliveries, and the tid of the thread the last one ran on.
static HITS: AtomicUsize = AtomicUsize::new(0);
static HIT_TID: AtomicI32 = AtomicI32::new(0);

/// The tid is stored before the count: a waiter that sees the count reads
/// this delivery's tid (the other order lost that race on a loaded 2-vCPU
/// guest, reading 0).
extern "C" fn on_usr1(_: libc::c_int) {
    // SAFETY: gettid has no preconditions and is async-signal-safe.
    HIT_TID.store(unsafe { libc::syscall(libc::SYS_gettid) } as i32, Ordering::SeqCst);
    HITS.fetch_add(1, Ordering::SeqCst);
}

/// Installs the SIGUSR1 handler, with SA_RESTART or without.
fn install_handler(restart: bool) {
    // SAFETY: a plain handler that only touches atomics.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_usr1 as *const () as usize;
        sa.sa_flags = if restart { libc::SA_RESTART } else { 0 };
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
    }
}

/// Sends SIGUSR1 to thread `tid` of this process.
fn signal_thread(tid: i32) {
    // SAFETY: tgkill takes three integers.
    let r = unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, libc::SIGUSR1) };
    assert_eq!(r, 0, "tgkill: {}", nix::errno::Errno::last());
}

/// Waits until the handler has run `n` times in all (a hang guard).
fn wait_hits(n: usize) {
    let end = Instant::now() + HANG_GUARD;
    while HITS.load(Ordering::SeqCst) < n {
        assert!(Instant::now() < end, "the handler never ran");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A read fault's message: flags, address, ptid.
type Msg = (PagefaultFlags, u64, u32);

/// Every message queued now, each of which must be a PAGEFAULT.
fn queued(uffd: &Uffd) -> Vec<Msg> {
    let events = uffd.read_events(16, Some(Duration::ZERO)).expect("read(uffd)");
    events.into_iter().map(pagefault).collect()
}

fn pagefault(ev: Event) -> Msg {
    match ev {
        Event::Pagefault { flags, address, ptid } => (flags, address, ptid),
        other => panic!("expected a PAGEFAULT, got {other:?}"),
    }
}

/// The next message, waiting for it (a hang guard).
fn next(uffd: &Uffd) -> Msg {
    pagefault(
        uffd.read_event(Some(HANG_GUARD))
            .expect("read(uffd)")
            .expect("no message"),
    )
}

/// Copies one page of `byte` into page `i` of `area`, waking its faulters.
fn resolve(uffd: &Uffd, area: &Area, i: usize, byte: u8) {
    let ps = area.page_size();
    let src = Buf::filled(ps, byte);
    assert_eq!(
        uffd.copy(area.page(i), src.addr(), ps, CopyMode::empty()),
        Ok(ps as i64)
    );
}

/// A reader thread blocked on `area`'s page 0 gets SIGUSR1; `read_first`:
/// the monitor read its message before the signal.
fn handler_signal_refaults(mem: MemType, restart: bool, read_first: bool) {
    let (area, uffd) = try_skip!(registered_missing(mem, 1, Features::THREAD_ID, |_| {}));
    install_handler(restart);
    let before = HITS.load(Ordering::SeqCst);
    let f = Faulter::read(area.page(0) + 3);
    let tid = f.tid() as u32;
    let want: Msg = (PagefaultFlags::empty(), area.page(0) as u64, tid);
    let mut seen = Vec::new();
    if read_first {
        seen.push(next(&uffd));
    } else {
        assert!(wait_readable(&uffd, HANG_GUARD), "no message queued");
    }
    assert_eq!(f.settle(), State::Blocked);
    signal_thread(tid as i32);
    wait_hits(before + 1);
    assert_eq!(
        HIT_TID.load(Ordering::SeqCst),
        tid as i32,
        "the handler ran on the faulter"
    );
    // After the handler the access runs again and faults again.
    assert_eq!(f.settle(), State::Blocked);
    assert!(wait_readable(&uffd, HANG_GUARD), "the retried access queued nothing");
    seen.extend(queued(&uffd));
    let n = if read_first { 2 } else { 1 };
    assert_eq!(seen, vec![want; n], "messages the monitor saw");
    resolve(&uffd, &area, 0, 0x3c);
    assert_eq!(f.join(), 0x3c);
    assert_eq!(HITS.load(Ordering::SeqCst), before + 1, "one delivery");
    assert_no_event(&uffd);
}

tests_calling! {
    (#[apply(all_mem)] #[serial(sigusr1)])
    fn signal_after_the_fault_was_read_refaults_with_sa_restart(mem: MemType) =>
        handler_signal_refaults(mem, true, true);
    fn signal_after_the_fault_was_read_refaults_without_sa_restart(mem: MemType) =>
        handler_signal_refaults(mem, false, true);
    fn signal_before_the_fault_was_read_leaves_one_message_with_sa_restart(mem: MemType) =>
        handler_signal_refaults(mem, true, false);
    fn signal_before_the_fault_was_read_leaves_one_message_without_sa_restart(mem: MemType) =>
        handler_signal_refaults(mem, false, false);
}

/// A CLONE_VM child reading page 0 of a fresh 2-page area sleeps in
/// handle_userfault; `read_first`: its message was read. Returns the area,
/// the uffd and the child.
fn blocked_child(mem: MemType, read_first: bool) -> Result<(Area, std::sync::Arc<Uffd>, VmChild), String> {
    let (area, uffd) = registered_missing(mem, 2, Features::THREAD_ID, |_| {})?;
    let child = VmChild::read(area.page(0) + 9, false);
    if read_first {
        let want = (
            PagefaultFlags::empty(),
            area.page(0) as u64,
            child.pid().as_raw() as u32,
        );
        assert_eq!(next(&uffd), want, "the child's fault");
    } else {
        assert!(wait_readable(&uffd, HANG_GUARD), "no message queued");
    }
    assert!(
        child.wait_in_userfault(HANG_GUARD),
        "the child never slept in handle_userfault: {:?} {:?}",
        child.state(),
        child.wchan()
    );
    Ok((area, uffd, child))
}

/// SIGKILL ends the blocked child; nothing of its fault stays queued, and
/// the uffd then serves a thread's faults on both pages.
fn sigkill_blocked_child(mem: MemType, read_first: bool) {
    let (area, uffd, child) = try_skip!(blocked_child(mem, read_first));
    child.kill(Signal::SIGKILL);
    assert_eq!(child.wait(), ChildExit::Signaled(Signal::SIGKILL));
    assert_no_event(&uffd);
    for (i, byte) in [(1, 0x51), (0, 0x50)] {
        let f = Faulter::read(area.page(i));
        let want = (PagefaultFlags::empty(), area.page(i) as u64, f.tid() as u32);
        assert_eq!(next(&uffd), want, "page {i} after the kill");
        resolve(&uffd, &area, i, byte);
        assert_eq!(f.join(), byte);
    }
    assert_no_event(&uffd);
}

tests_calling! {
    (#[apply(all_mem)])
    fn sigkill_of_a_child_whose_fault_was_read_leaves_the_uffd_serving(mem: MemType) =>
        sigkill_blocked_child(mem, true);
    fn sigkill_of_a_child_whose_fault_is_unread_drops_its_message(mem: MemType) => sigkill_blocked_child(mem, false);
}

#[apply(all_mem)]
fn sigstop_then_sigcont_refaults_once(#[case] mem: MemType) {
    let (area, uffd, child) = try_skip!(blocked_child(mem, true));
    let pid = child.pid().as_raw() as u32;
    child.kill(Signal::SIGSTOP);
    assert_eq!(child.wait_state('T', HANG_GUARD), Some('T'), "stopped");
    // Stopped outside the fault: nothing new is queued until it runs.
    assert_no_event(&uffd);
    child.kill(Signal::SIGCONT);
    assert_eq!(next(&uffd), (PagefaultFlags::empty(), area.page(0) as u64, pid));
    resolve(&uffd, &area, 0, 0x62);
    assert_eq!(child.wait(), ChildExit::Exited(0x62));
    assert_no_event(&uffd);
}

#[apply(all_mem)]
fn resolving_while_stopped_lets_sigcont_complete_without_a_refault(#[case] mem: MemType) {
    let (area, uffd, child) = try_skip!(blocked_child(mem, true));
    child.kill(Signal::SIGSTOP);
    assert_eq!(child.wait_state('T', HANG_GUARD), Some('T'), "stopped");
    resolve(&uffd, &area, 0, 0x63);
    child.kill(Signal::SIGCONT);
    assert_eq!(child.wait(), ChildExit::Exited(0x63));
    assert_no_event(&uffd);
}
