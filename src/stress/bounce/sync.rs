//! How the threads of a run wait for each other: latches and rounds, the
//! per-page lock the workers take inside the registered pages, the signal
//! that pulls handlers out of read(2), and their cheap random numbers.

use std::sync::atomic::AtomicU32;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

pub(super) struct Latch {
    left: Mutex<usize>,
    cv: Condvar,
}

impl Latch {
    pub(super) fn new() -> Latch {
        Latch {
            left: Mutex::new(0),
            cv: Condvar::new(),
        }
    }
    pub(super) fn set(&self, n: usize) {
        *self.left.lock().unwrap() = n;
    }
    pub(super) fn done(&self) {
        let mut g = self.left.lock().unwrap();
        *g -= 1;
        if *g == 0 {
            self.cv.notify_all();
        }
    }
    pub(super) fn wait_for(&self, d: Duration) -> bool {
        let g = self.left.lock().unwrap();
        let (g, _) = self.cv.wait_timeout_while(g, d, |n| *n > 0).unwrap();
        *g == 0
    }
    pub(super) fn wait(&self) {
        let g = self.left.lock().unwrap();
        drop(self.cv.wait_while(g, |n| *n > 0).unwrap());
    }
}

#[derive(Default)]
pub(super) struct HandlerStats {
    pub(super) missing: AtomicU64,
    pub(super) wp: AtomicU64,
    pub(super) minor: AtomicU64,
    pub(super) spurious: AtomicU64,
}

pub(super) const PHASE_QUIT: u8 = 0;
pub(super) const PHASE_BOUNCE: u8 = 1;
pub(super) const PHASE_VERIFY: u8 = 2;

// The signal that interrupts handlers blocked in read(2); its handler does
// nothing, it only makes read return EINTR.
pub(super) fn kick_signal() -> i32 {
    libc::SIGRTMIN() + 5
}

extern "C" fn on_kick(_: libc::c_int) {}

pub(super) fn install_kick() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: a zeroed sigaction with a handler that does nothing is
        // valid; no SA_RESTART, so a blocked read returns EINTR.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_kick as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(kick_signal(), &sa, std::ptr::null_mut());
        }
    });
}

fn futex(addr: &AtomicU32, op: i32, val: u32) {
    // SAFETY: addr is a live u32; FUTEX_WAIT/WAKE read it and nothing else.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            addr.as_ptr(),
            op | libc::FUTEX_PRIVATE_FLAG,
            val,
            std::ptr::null::<libc::timespec>(),
        );
    }
}

/// Takes the lock word at `a`: 0 free, 1 held, 2 held with waiters. Its
/// first access is a plain load, so a missing page faults as a read.
pub(super) fn lock(a: usize) {
    // SAFETY: a is a mapped, 8-aligned page start; the word is only used atomically.
    let l = unsafe { &*(a as *const AtomicU32) };
    if l.load(Relaxed) == 0 && l.compare_exchange(0, 1, Acquire, Relaxed).is_ok() {
        return;
    }
    for _ in 0..64 {
        std::hint::spin_loop();
        if l.load(Relaxed) == 0 && l.compare_exchange(0, 1, Acquire, Relaxed).is_ok() {
            return;
        }
    }
    while l.swap(2, Acquire) != 0 {
        futex(l, libc::FUTEX_WAIT, 2);
    }
}

pub(super) fn unlock(a: usize) {
    // SAFETY: as in lock.
    let l = unsafe { &*(a as *const AtomicU32) };
    if l.swap(0, Release) == 2 {
        futex(l, libc::FUTEX_WAKE, 1);
    }
}

/// xorshift64*: cheap per-thread page picks (upstream calls getrandom(2)).
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

pub(super) fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    t | 1
}
