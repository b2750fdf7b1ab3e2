//! The bounce test: worker threads update per-page counters under per-page
//! locks in a registered destination while handler threads resolve its
//! faults and background threads fill it from the source; then every page is
//! audited and source and destination swap, as the kernel's uffd-stress
//! bounces, checking more.
//!
//! A bounce's mode comes from the bits of the bounces left, as upstream's:
//! bit 0 random pages, bit 1 all threads start on the same page (racing
//! faults), bit 2 workers also check each page's tag and a body word on every
//! access, bit 3 handlers poll a non-blocking fd (else they block in read).
//! Ours adds: on shmem and hugetlb, bounces with an odd number of those four
//! bits set are minor bounces: the destination is registered MISSING|MINOR
//! and filled through its alias, and faults are resolved with CONTINUE.
//! Every bounce audits every page's header and accounting; bodies are
//! compared on bit-2 bounces (an eighth) and in full after the last
//! (upstream checks only counters, on bit-2 bounces).

use super::verify::{self, CLAIMED, EMPTY, FILLED, Ledger, Rules};
use crate::event::{Event, PagefaultFlags};
use crate::mem::{Area, MemType, Unavailable};
use crate::sys;
use crate::testing::register_support;
use crate::uffd::{ContinueMode, CopyMode, Features, RegisterMode, Uffd, WriteprotectMode};
use nix::errno::Errno;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize};
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::time::{Duration, Instant};

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    pub mem: MemType,
    /// Bytes per area (source and destination each).
    pub size: usize,
    /// Stop after this many bounces...
    pub bounces: Option<u64>,
    /// ...or when this much time has passed (whichever comes first).
    pub duration: Option<Duration>,
    /// Worker threads per CPU.
    pub threads: usize,
    /// Print nothing per bounce.
    pub quiet: bool,
    /// Mix in fork, mremap and MADV_DONTNEED with their events.
    pub soak: bool,
    /// Print running totals this often (soak).
    pub progress: Option<Duration>,
}

impl Config {
    pub fn new(mem: MemType) -> Config {
        Config {
            mem,
            size: 32 << 20,
            bounces: Some(16),
            duration: None,
            threads: 2,
            quiet: false,
            soak: false,
            progress: None,
        }
    }
}

/// Totals of a run.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Totals {
    pub mem: String,
    pub page_size: usize,
    pub pages: usize,
    pub threads: usize,
    pub bounces: u64,
    pub minor_bounces: u64,
    pub missing_faults: u64,
    pub wp_faults: u64,
    pub minor_faults: u64,
    /// MISSING|WRITE faults on MAP_PRIVATE shmem whose page was mapped all
    /// along (COPY: EEXIST); see `Bounce::resolve_missing_write`.
    pub spurious_faults: u64,
    pub increments: u64,
    pub pages_verified: u64,
    pub bytes_verified: u64,
    pub forks: u64,
    pub fork_events: u64,
    pub remap_events: u64,
    pub remove_events: u64,
    pub child_pages_verified: u64,
    pub scratch_faults: u64,
    pub errors: u64,
    pub seconds: f64,
}

impl Totals {
    /// One line of running totals.
    pub fn line(&self) -> String {
        let mut s = format!(
            "{:.0}s {}: {} bounces ({} minor), faults {} missing {} wp {} minor {} spurious, {} updates, {} pages ({} MiB) verified",
            self.seconds,
            self.mem,
            self.bounces,
            self.minor_bounces,
            self.missing_faults,
            self.wp_faults,
            self.minor_faults,
            self.spurious_faults,
            self.increments,
            self.pages_verified,
            self.bytes_verified >> 20
        );
        if self.forks + self.remap_events + self.remove_events > 0 {
            s += &format!(
                ", events {} fork {} remap {} remove ({} scratch faults, {} pages checked in children)",
                self.fork_events, self.remap_events, self.remove_events, self.scratch_faults, self.child_pages_verified
            );
        }
        s + &format!(", {} errors", self.errors)
    }
}

/// Why a run did not pass.
#[derive(Debug)]
pub enum Failure {
    /// This kernel or machine cannot run it; the reason.
    Skip(String),
    /// Setting up failed (not a kernel finding).
    Setup(String),
    /// Verification or a uffd call failed; every finding, and the totals.
    Errors(Vec<String>, Box<Totals>),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Skip(r) => write!(f, "SKIP: {r}"),
            Failure::Setup(e) => write!(f, "setup failed: {e}"),
            Failure::Errors(errs, t) => {
                writeln!(f, "{} error(s) after {} bounces:", t.errors, t.bounces)?;
                for e in errs {
                    writeln!(f, "  {e}")?;
                }
                Ok(())
            }
        }
    }
}

/// A bounce's mode, from the bounces left (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode(pub u64);

impl Mode {
    pub fn rnd(self) -> bool {
        self.0 & 1 != 0
    }
    pub fn racing(self) -> bool {
        self.0 & 2 != 0
    }
    pub fn ver(self) -> bool {
        self.0 & 4 != 0
    }
    pub fn poll(self) -> bool {
        self.0 & 8 != 0
    }
    pub fn minor(self) -> bool {
        (self.0 & 15).count_ones() % 2 == 1
    }
}

/// Hooks the soak adds to a bounce: its scratch area's faults and events,
/// and disruptions run while a bounce is in flight.
pub trait Extra: Send + Sync {
    /// Whether a fault at `addr` is the extra's to resolve.
    fn owns(&self, addr: u64) -> bool;
    /// Resolves it; `Ok(false)` asks to be called again later (EAGAIN).
    fn fault(&self, uffd: &Uffd, addr: u64, flags: PagefaultFlags) -> Result<bool, String>;
    /// A non-fault event read from the uffd.
    fn event(&self, ev: Event) -> Result<(), String>;
    /// Runs during a poll-mode bounce, on its own thread; returns when done.
    fn disrupt(&self, b: &Bounce, seed: u64) -> Result<(), String>;
    /// Adds its counts to the totals.
    fn totals(&self, t: &mut Totals);
}

struct Latch {
    left: Mutex<usize>,
    cv: Condvar,
}

impl Latch {
    fn new() -> Latch {
        Latch {
            left: Mutex::new(0),
            cv: Condvar::new(),
        }
    }
    fn set(&self, n: usize) {
        *self.left.lock().unwrap() = n;
    }
    fn done(&self) {
        let mut g = self.left.lock().unwrap();
        *g -= 1;
        if *g == 0 {
            self.cv.notify_all();
        }
    }
    fn wait_for(&self, d: Duration) -> bool {
        let g = self.left.lock().unwrap();
        let (g, _) = self.cv.wait_timeout_while(g, d, |n| *n > 0).unwrap();
        *g == 0
    }
    fn wait(&self) {
        let g = self.left.lock().unwrap();
        drop(self.cv.wait_while(g, |n| *n > 0).unwrap());
    }
}

#[derive(Default)]
struct HandlerStats {
    missing: AtomicU64,
    wp: AtomicU64,
    minor: AtomicU64,
    spurious: AtomicU64,
}

const PHASE_QUIT: u8 = 0;
const PHASE_BOUNCE: u8 = 1;
const PHASE_VERIFY: u8 = 2;
/// Findings kept verbatim; the rest are only counted.
const MAX_KEPT: usize = 40;

/// The state every thread of a run shares.
pub struct Bounce {
    pub mem: MemType,
    pub ps: usize,
    pub npages: usize,
    nslices: usize,
    nthreads: usize,
    pub workers: usize,
    wp: bool,
    minor_ok: bool,
    /// UFFDIO_CONTINUE_MODE_WP (6.4) works: minor fills come protected.
    continue_wp: bool,
    pub uffd: Uffd,
    areas: [Area; 2],
    cur: AtomicUsize,
    mode: AtomicU64,
    minor: AtomicBool,
    phase: AtomicU8,
    finished: AtomicBool,
    hstop: AtomicBool,
    go: Barrier,
    /// Counts threads that have read `phase` in this round: main changes it
    /// only after all have, or a slow thread would act on the next round's.
    seen: Latch,
    bg_left: Latch,
    work_left: Latch,
    hand_left: Latch,
    pub ledger: Ledger,
    errors: Mutex<Vec<String>>,
    nerrors: AtomicU64,
    hstats: Vec<HandlerStats>,
    increments: AtomicU64,
    verified: AtomicU64,
    verified_bytes: AtomicU64,
    /// Whether this bounce is audited as the soak's (every byte).
    every: AtomicBool,
    wake_rd: OwnedFd,
    wake_wr: OwnedFd,
    tids: Mutex<Vec<libc::pthread_t>>,
    extra: Option<Arc<dyn Extra>>,
}

// The signal that interrupts handlers blocked in read(2); its handler does
// nothing, it only makes read return EINTR.
fn kick_signal() -> i32 {
    libc::SIGRTMIN() + 5
}

extern "C" fn on_kick(_: libc::c_int) {}

fn install_kick() {
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
fn lock(a: usize) {
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

fn unlock(a: usize) {
    // SAFETY: as in lock.
    let l = unsafe { &*(a as *const AtomicU32) };
    if l.swap(0, Release) == 2 {
        futex(l, libc::FUTEX_WAKE, 1);
    }
}

/// xorshift64*: cheap per-thread page picks (upstream calls getrandom(2)).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    t | 1
}

/// What a resolving call came to.
enum Res {
    Done,
    /// EAGAIN with no progress: an event holds the mm (mmap_changing).
    Again,
}

impl Bounce {
    pub fn dst(&self) -> usize {
        self.areas[self.cur.load(Relaxed)].addr()
    }
    pub fn src(&self) -> usize {
        self.areas[1 - self.cur.load(Relaxed)].addr()
    }
    fn dst_alias(&self) -> usize {
        self.areas[self.cur.load(Relaxed)]
            .alias()
            .expect("minor bounces have an alias")
    }
    pub fn len(&self) -> usize {
        self.npages * self.ps
    }
    pub fn is_empty(&self) -> bool {
        self.npages == 0
    }
    fn mode(&self) -> Mode {
        Mode(self.mode.load(Relaxed))
    }
    pub fn is_minor(&self) -> bool {
        self.minor.load(Relaxed)
    }
    /// Whether this bounce registers and protects WP: a minor bounce only
    /// where CONTINUE can map a page protected (a plain CONTINUE over a WP
    /// marker would leave it writable, unseen by the audit).
    fn wp_now(&self) -> bool {
        self.wp && (!self.is_minor() || self.continue_wp)
    }
    /// Whether workers still run in this bounce.
    pub fn running(&self) -> bool {
        !self.finished.load(Relaxed)
    }

    /// Records a finding.
    pub fn fail(&self, msg: String) {
        self.nerrors.fetch_add(1, Relaxed);
        let mut g = self.errors.lock().unwrap();
        if g.len() < MAX_KEPT {
            g.push(msg);
        }
    }

    fn copy_mode(&self) -> CopyMode {
        if self.wp { CopyMode::WP } else { CopyMode::empty() }
    }

    /// COPY of page `p` from the source by a handler.
    fn resolve_copy(&self, p: usize) -> Res {
        let (dst, src) = (self.dst() + p * self.ps, self.src() + p * self.ps);
        match self.uffd.copy(dst, src, self.ps, self.copy_mode()) {
            Ok(n) if n as usize == self.ps => {
                self.ledger.resolved[p].fetch_add(1, Relaxed);
            }
            Ok(n) => self.fail(format!("page {p}: UFFDIO_COPY of one page reported {n} bytes")),
            Err(e) if e.errno == Errno::EEXIST => self.wake(p),
            Err(e) if e.errno == Errno::EAGAIN && e.progress <= 0 => return Res::Again,
            Err(e) => self.fail(format!("page {p}: UFFDIO_COPY in a handler: {e}")),
        }
        Res::Done
    }

    /// A MISSING fault with WRITE set, which no first touch makes (the
    /// lock's load comes first). On MAP_PRIVATE shmem the kernel reports one
    /// for a mapped page: a write that races another thread's COW of the
    /// page (after a fork) or a WRITEPROTECT of it reads the PTE locklessly
    /// in the instant it is cleared (`ptep_clear_flush` in `wp_page_copy`,
    /// `ptep_modify_prot_start` in `change_pte_range`), and shmem_fault
    /// reports the hole without the recheck under the PT lock that anonymous
    /// memory and hugetlb make (docs/findings). Such a fault is counted as
    /// spurious when its COPY finds the page mapped (EEXIST); a COPY that
    /// fills the page means it was missing at a write: an error, as on
    /// every other memory type.
    fn resolve_missing_write(&self, h: usize, p: usize, retry: bool) -> Res {
        let msg = format!("page {p}: MISSING fault with WRITE set: a first touch always reads");
        if self.is_minor() || !self.mem.is_shmem() || self.mem.is_shared() {
            if !retry {
                self.fail(msg);
                self.hstats[h].missing.fetch_add(1, Relaxed);
                self.ledger.missing[p].fetch_add(1, Relaxed);
            }
            return self.resolve(p);
        }
        let (dst, src) = (self.dst() + p * self.ps, self.src() + p * self.ps);
        match self.uffd.copy(dst, src, self.ps, self.copy_mode()) {
            Ok(n) => {
                self.fail(format!("{msg} (the page was missing: COPY filled it)"));
                self.hstats[h].missing.fetch_add(1, Relaxed);
                self.ledger.missing[p].fetch_add(1, Relaxed);
                if n as usize == self.ps {
                    self.ledger.resolved[p].fetch_add(1, Relaxed);
                }
            }
            Err(e) if e.errno == Errno::EEXIST => {
                self.hstats[h].spurious.fetch_add(1, Relaxed);
                self.wake(p);
            }
            Err(e) if e.errno == Errno::EAGAIN && e.progress <= 0 => return Res::Again,
            Err(e) => self.fail(format!("page {p}: UFFDIO_COPY in a handler: {e}")),
        }
        Res::Done
    }

    fn resolve(&self, p: usize) -> Res {
        if self.is_minor() {
            self.resolve_minor(p)
        } else {
            self.resolve_copy(p)
        }
    }

    fn wake(&self, p: usize) {
        if let Err(e) = self.uffd.wake(self.dst() + p * self.ps, self.ps) {
            self.fail(format!("page {p}: UFFDIO_WAKE: {e}"));
        }
    }

    /// Minor bounces: whoever claims page `p` first fills it through the
    /// alias; anyone who needs it mapped, once it is filled, CONTINUEs
    /// (EEXIST: someone else mapped it first; wake).
    fn resolve_minor(&self, p: usize) -> Res {
        let st = &self.ledger.state[p];
        match st.compare_exchange(EMPTY, CLAIMED, Acquire, Acquire) {
            Ok(_) => {
                // The alias is registered MISSING: COPY puts the page in the
                // page cache whole, so no one can map it half written.
                let (alias, src) = (self.dst_alias() + p * self.ps, self.src() + p * self.ps);
                match self.uffd.copy(alias, src, self.ps, CopyMode::empty()) {
                    Ok(_) => {}
                    Err(e) if e.errno == Errno::EAGAIN && e.progress <= 0 => {
                        st.store(EMPTY, Release);
                        return Res::Again;
                    }
                    Err(e) => self.fail(format!("page {p}: UFFDIO_COPY into the alias: {e}")),
                }
                st.store(FILLED, Release);
            }
            // Someone is filling it; they CONTINUE it too, which wakes the
            // faulter (a filler meeting EAGAIN puts it back, and the
            // background thread takes it). Never wait here: the filler may
            // need a handler to read an event first.
            Err(CLAIMED) => return Res::Done,
            Err(_) => {}
        }
        let mode = if self.wp_now() {
            ContinueMode::WP
        } else {
            ContinueMode::empty()
        };
        match self.uffd.r#continue(self.dst() + p * self.ps, self.ps, mode) {
            Ok(n) if n as usize == self.ps => {
                self.ledger.resolved[p].fetch_add(1, Relaxed);
            }
            Ok(n) => self.fail(format!("page {p}: UFFDIO_CONTINUE of one page reported {n} bytes")),
            Err(e) if e.errno == Errno::EEXIST => self.wake(p),
            Err(e) if e.errno == Errno::EAGAIN && e.progress <= 0 => return Res::Again,
            Err(e) => self.fail(format!("page {p}: UFFDIO_CONTINUE: {e}")),
        }
        Res::Done
    }

    fn unprotect(&self, p: usize) -> Res {
        match self
            .uffd
            .writeprotect(self.dst() + p * self.ps, self.ps, WriteprotectMode::empty())
        {
            Ok(()) => Res::Done,
            Err(Errno::EAGAIN) => Res::Again,
            Err(e) => {
                self.fail(format!("page {p}: UFFDIO_WRITEPROTECT(0): {e}"));
                Res::Done
            }
        }
    }

    /// Handles one fault message; `retry` is set when re-trying after EAGAIN
    /// (the fault was counted the first time).
    fn on_fault(&self, h: usize, addr: u64, flags: PagefaultFlags, retry: bool) -> Res {
        let (dst, a) = (self.dst(), addr as usize);
        if a < dst || a >= dst + self.len() {
            if let Some(x) = self.extra.as_ref().filter(|x| x.owns(addr)) {
                return match x.fault(&self.uffd, addr, flags) {
                    Ok(true) => Res::Done,
                    Ok(false) => Res::Again,
                    Err(e) => {
                        self.fail(e);
                        Res::Done
                    }
                };
            }
            self.fail(format!("fault at {addr:#x} ({flags:?}) outside every registered area"));
            return Res::Done;
        }
        let p = (a - dst) / self.ps;
        let hs = &self.hstats[h];
        if flags.contains(PagefaultFlags::WP) {
            if !retry {
                if !flags.contains(PagefaultFlags::WRITE) {
                    self.fail(format!("page {p}: WP fault without the WRITE flag ({flags:?})"));
                }
                hs.wp.fetch_add(1, Relaxed);
                self.ledger.wp[p].fetch_add(1, Relaxed);
            }
            self.unprotect(p)
        } else if flags.contains(PagefaultFlags::MINOR) {
            if !retry {
                hs.minor.fetch_add(1, Relaxed);
                self.ledger.minor[p].fetch_add(1, Relaxed);
            }
            if self.is_minor() {
                self.resolve_minor(p)
            } else {
                self.fail(format!("page {p}: MINOR fault, but MINOR is not registered"));
                Res::Done
            }
        } else if flags.contains(PagefaultFlags::WRITE) {
            self.resolve_missing_write(h, p, retry)
        } else {
            if !retry {
                hs.missing.fetch_add(1, Relaxed);
                self.ledger.missing[p].fetch_add(1, Relaxed);
            }
            self.resolve(p)
        }
    }

    fn worker(&self, wid: usize, rng: &mut Rng) {
        let (mode, n, ps, dst) = (self.mode(), self.npages, self.ps, self.dst());
        let mut p = if mode.racing() { 0 } else { wid * n / self.workers };
        let mut done = 0u64;
        let nwords = ps / 8;
        while !self.finished.load(Relaxed) {
            p = if mode.rnd() {
                (rng.next() % n as u64) as usize
            } else {
                (p + 1) % n
            };
            let a = dst + p * ps;
            lock(a);
            let cp = (a + verify::COUNT) as *mut u64;
            // SAFETY: the page is mapped (the lock's load resolved it) and we
            // hold its lock; the counter is only touched under it.
            let count = unsafe { cp.read_volatile() };
            let expect = self.ledger.expect[p].load(Relaxed);
            if count != expect {
                self.fail(format!(
                    "page {p}: counter {count} under the lock, expected {expect} (an update was lost or replayed)"
                ));
            }
            if mode.ver() {
                let w = verify::BODY / 8 + (count as usize % (nwords - verify::BODY / 8));
                // SAFETY: inside the locked page.
                let (t, v) = unsafe {
                    (
                        ((a + verify::TAG) as *const u64).read_volatile(),
                        ((a + w * 8) as *const u64).read_volatile(),
                    )
                };
                if t != verify::tag(p) || v != verify::pattern(p, w) {
                    self.fail(format!(
                        "page {p}: under the lock, tag {t:#x} and word {w} {v:#x} (expected {:#x}, {:#x})",
                        verify::tag(p),
                        verify::pattern(p, w)
                    ));
                }
            }
            // SAFETY: as above.
            unsafe { cp.write_volatile(count + 1) };
            self.ledger.expect[p].store(count + 1, Relaxed);
            unlock(a);
            done += 1;
            if done.is_multiple_of(32) {
                // Leave the CPU to the resolvers now and then: on a busy box
                // spinning workers otherwise starve the COPYs they wait on.
                std::thread::yield_now();
            }
        }
        self.increments.fetch_add(done, Relaxed);
    }

    /// Fills pages `r` of the destination: COPY in batches, or per page
    /// claim-fill-CONTINUE in minor bounces.
    fn fill(&self, r: std::ops::Range<usize>, check_eexist: &mut bool) {
        if self.is_minor() {
            // Fill what no handler is filling; then wait for the rest to be
            // filled (the source is released when the background threads
            // are done, so no fill may still read it) and map them.
            let mut busy = Vec::new();
            for p in r {
                while let Res::Again = self.resolve_minor(p) {
                    std::thread::yield_now();
                }
                if self.ledger.state[p].load(Acquire) != FILLED {
                    busy.push(p);
                }
            }
            for p in busy {
                loop {
                    if self.ledger.state[p].load(Acquire) == FILLED && matches!(self.resolve_minor(p), Res::Done) {
                        break;
                    }
                    if self.ledger.state[p].load(Acquire) == EMPTY {
                        // Its filler met EAGAIN and gave it back.
                        let _ = self.resolve_minor(p);
                        continue;
                    }
                    std::thread::sleep(Duration::from_micros(20));
                }
            }
            return;
        }
        let batch = if self.ps >= 1 << 20 { 1 } else { 16 };
        let mut p = r.start;
        while p < r.end {
            let n = batch.min(r.end - p);
            let (dst, src) = (self.dst() + p * self.ps, self.src() + p * self.ps);
            match self.uffd.copy(dst, src, n * self.ps, self.copy_mode()) {
                Ok(b) if b as usize == n * self.ps => {
                    (p..p + n).for_each(|q| {
                        self.ledger.resolved[q].fetch_add(1, Relaxed);
                    });
                    if std::mem::take(check_eexist) {
                        // A second COPY over a page just filled must be refused.
                        let r = loop {
                            match self.uffd.copy(dst, src, self.ps, self.copy_mode()) {
                                Err(e) if e.errno == Errno::EAGAIN && e.progress <= 0 => std::thread::yield_now(),
                                r => break r,
                            }
                        };
                        match r {
                            Err(e) if e.errno == Errno::EEXIST && e.progress == -(libc::EEXIST as i64) => {}
                            Ok(_) => {
                                self.ledger.resolved[p].fetch_add(1, Relaxed);
                            }
                            Err(e) => self.fail(format!("page {p}: COPY over a filled page: {e}, expected EEXIST")),
                        }
                    }
                    p += n;
                }
                Ok(b) => {
                    self.fail(format!("pages {p}..{}: UFFDIO_COPY reported {b} bytes", p + n));
                    p += n;
                }
                Err(e) if e.errno == Errno::EAGAIN && e.progress > 0 => {
                    // Stopped at a page someone else filled: count what was done.
                    let k = e.progress as usize / self.ps;
                    if !(e.progress as usize).is_multiple_of(self.ps) || k >= n {
                        self.fail(format!("pages {p}..{}: partial COPY progress {}", p + n, e.progress));
                        p += n;
                        continue;
                    }
                    (p..p + k).for_each(|q| {
                        self.ledger.resolved[q].fetch_add(1, Relaxed);
                    });
                    p += k;
                }
                Err(e) if e.errno == Errno::EAGAIN => std::thread::yield_now(),
                Err(e) if e.errno == Errno::EEXIST => {
                    self.wake(p);
                    p += 1;
                }
                Err(e) => {
                    self.fail(format!("pages {p}..{}: UFFDIO_COPY: {e}", p + n));
                    p += n;
                }
            }
        }
    }

    fn background(&self, s: usize) {
        let per = self.npages / self.nslices;
        let (start, end) = (s * per, (s + 1) * per);
        let mid = (start + end) / 2;
        let mut check = true;
        self.fill(start..mid, &mut check);
        if self.wp_now() {
            // Protect the slice with half of it filled: later fills come
            // protected, so every page is protected from its first write.
            loop {
                match self
                    .uffd
                    .writeprotect(self.dst() + start * self.ps, per * self.ps, WriteprotectMode::WP)
                {
                    Err(Errno::EAGAIN) => std::thread::yield_now(),
                    Err(e) => {
                        self.fail(format!("pages {start}..{end}: UFFDIO_WRITEPROTECT(WP): {e}"));
                        break;
                    }
                    Ok(()) => break,
                }
            }
        }
        self.fill(mid..end, &mut check);
    }

    fn handler(&self, h: usize) {
        let poll_mode = self.mode().poll();
        let mut buf = [sys::uffd_msg::default(); 16];
        let mut pending: Vec<(u64, PagefaultFlags)> = Vec::new();
        loop {
            if self.hstop.load(Acquire) {
                // Workers are done, so nothing waits on a pending fault.
                break;
            }
            // Only in poll mode: poll(2) on a blocking uffd is POLLERR. A
            // pending fault (EAGAIN) needs an event, and events only come
            // in poll-mode bounces.
            if poll_mode {
                use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
                let mut fds = [
                    PollFd::new(self.uffd.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.wake_rd.as_fd(), PollFlags::POLLIN),
                ];
                let t = if pending.is_empty() {
                    PollTimeout::NONE
                } else {
                    PollTimeout::from(1u8)
                };
                match poll(&mut fds, t) {
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(e) => {
                        self.fail(format!("poll on the uffd: {e}"));
                        break;
                    }
                }
                let ready = fds[0].revents().unwrap_or(PollFlags::empty());
                if ready.contains(PollFlags::POLLERR) {
                    self.fail("poll on the uffd: POLLERR".into());
                    break;
                }
                if !ready.contains(PollFlags::POLLIN) {
                    pending.retain(|&(a, f)| matches!(self.on_fault(h, a, f, true), Res::Again));
                    continue;
                }
            }
            match self.uffd.read_raw(&mut buf) {
                Ok(n) => {
                    for m in &buf[..n] {
                        match Event::decode(m) {
                            Event::Pagefault { flags, address, .. } => {
                                if let Res::Again = self.on_fault(h, address, flags, false) {
                                    pending.push((address, flags));
                                }
                            }
                            ev => match &self.extra {
                                Some(x) => {
                                    if let Err(e) = x.event(ev) {
                                        self.fail(e);
                                    }
                                }
                                None => self.fail(format!("unexpected {} event: {ev:?}", ev.name())),
                            },
                        }
                    }
                }
                Err(Errno::EAGAIN) | Err(Errno::EINTR) => {}
                Err(e) => {
                    self.fail(format!("read on the uffd: {e}"));
                    break;
                }
            }
            pending.retain(|&(a, f)| matches!(self.on_fault(h, a, f, true), Res::Again));
        }
    }

    /// Audits stripe `i` of `2 * nslices`.
    fn audit_stripe(&self, i: usize) {
        let wid = i;
        let chunk = self.npages.div_ceil(2 * self.nslices);
        let words = verify::audit_words(self.ps, self.mode.load(Relaxed), self.every.load(Relaxed));
        let bytes = (verify::BODY + words.len() * 8) as u64;
        let r = Rules {
            wp: self.wp_now(),
            minor: self.is_minor(),
            workers: self.workers,
            words,
        };
        let dst = self.dst();
        for p in (wid * chunk)..((wid + 1) * chunk).min(self.npages) {
            // SAFETY: the destination is unregistered, fully populated and no
            // thread writes it during the audit.
            for e in unsafe { self.ledger.audit(p, dst + p * self.ps, self.ps, r.clone()) } {
                self.fail(e);
            }
            self.verified.fetch_add(1, Relaxed);
            self.verified_bytes.fetch_add(bytes, Relaxed);
        }
    }

    fn thread(&self, role: Role) {
        let mut rng = Rng(seed() ^ ((role.index() as u64) << 40));
        if let Role::Handler(_) = role {
            // SAFETY: pthread_self has no preconditions.
            self.tids.lock().unwrap().push(unsafe { libc::pthread_self() });
        }
        loop {
            self.go.wait();
            let phase = self.phase.load(Acquire);
            self.seen.done();
            match (phase, role) {
                (PHASE_QUIT, _) => return,
                (PHASE_BOUNCE, Role::Worker(w)) => {
                    self.worker(w, &mut rng);
                    self.work_left.done();
                }
                (PHASE_BOUNCE, Role::Handler(h)) => {
                    self.handler(h);
                    self.hand_left.done();
                }
                (PHASE_BOUNCE, Role::Background(s)) => {
                    self.background(s);
                    self.bg_left.done();
                }
                // The resolvers audit: they are idle now, while the workers
                // would have to win the CPU back from whatever else runs.
                (PHASE_VERIFY, Role::Handler(h)) => {
                    self.audit_stripe(h);
                    self.work_left.done();
                }
                (PHASE_VERIFY, Role::Background(s)) => {
                    self.audit_stripe(self.nslices + s);
                    self.work_left.done();
                }
                _ => {}
            }
        }
    }

    /// Starts a round of `phase` on every thread.
    fn round(&self, phase: u8) {
        self.seen.set(self.nthreads);
        self.phase.store(phase, Release);
        self.go.wait();
        self.seen.wait();
    }

    fn stop_handlers(&self, poll_mode: bool) {
        self.hstop.store(true, Release);
        if poll_mode {
            let _ = nix::unistd::write(&self.wake_wr, &[1]);
            self.hand_left.wait();
            let mut b = [0u8; 16];
            while matches!(nix::unistd::read(&self.wake_rd, &mut b), Ok(n) if n > 0) {}
        } else {
            // A blocked read(2) only returns on a message or a signal; a kick
            // sent just before the read starts is lost, so kick until all
            // handlers are out.
            let tids = self.tids.lock().unwrap().clone();
            loop {
                for &t in &tids {
                    // SAFETY: handler threads live until the run ends.
                    unsafe { libc::pthread_kill(t, kick_signal()) };
                }
                if self.hand_left.wait_for(Duration::from_millis(2)) {
                    break;
                }
            }
        }
    }

    fn set_nonblock(&self, on: bool) -> Result<(), String> {
        use nix::fcntl::{FcntlArg, OFlag, fcntl};
        let fl = fcntl(&self.uffd, FcntlArg::F_GETFL).map_err(|e| format!("F_GETFL: {e}"))?;
        let mut fl = OFlag::from_bits_retain(fl);
        fl.set(OFlag::O_NONBLOCK, on);
        fcntl(&self.uffd, FcntlArg::F_SETFL(fl)).map_err(|e| format!("F_SETFL: {e}"))?;
        Ok(())
    }

    fn register_mode(&self) -> RegisterMode {
        let mut m = RegisterMode::MISSING;
        if self.wp_now() {
            m |= RegisterMode::WP;
        }
        if self.is_minor() {
            m |= RegisterMode::MINOR;
        }
        m
    }

    /// One bounce; returns the stats line.
    fn bounce(&self, n: u64, every: bool, disrupt: Option<&(dyn Fn(u64) + Sync)>) -> Result<String, String> {
        let mode = Mode(n);
        self.every.store(every, Relaxed);
        let words = verify::audit_words(self.ps, n, every);
        let minor = self.minor_ok && mode.minor();
        self.mode.store(n, Relaxed);
        self.minor.store(minor, Relaxed);
        self.set_nonblock(mode.poll())?;
        let cur = self.cur.load(Relaxed);
        // Released before registering: nothing touches it in between, and
        // with EVENT_REMOVE on, a release after would wait for a reader.
        self.areas[cur]
            .release_all()
            .map_err(|e| format!("releasing the destination: {e}"))?;
        let dst = self.dst();
        self.uffd
            .register(dst, self.len(), self.register_mode())
            .map_err(|e| format!("UFFDIO_REGISTER {:?}: {e}", self.register_mode()))?;
        if minor {
            self.uffd
                .register(self.dst_alias(), self.len(), RegisterMode::MISSING)
                .map_err(|e| format!("UFFDIO_REGISTER MISSING of the alias: {e}"))?;
        }
        self.ledger.reset(0..self.npages);
        for h in &self.hstats {
            h.missing.store(0, Relaxed);
            h.wp.store(0, Relaxed);
            h.minor.store(0, Relaxed);
            h.spurious.store(0, Relaxed);
        }
        self.finished.store(false, Relaxed);
        self.hstop.store(false, Relaxed);
        self.bg_left.set(self.nslices);
        self.work_left.set(self.workers);
        self.hand_left.set(self.hstats.len());
        let before = self.increments.load(Relaxed);
        let errs_before = self.nerrors.load(Relaxed);
        self.round(PHASE_BOUNCE);
        std::thread::scope(|s| {
            if let Some(d) = disrupt.filter(|_| mode.poll()) {
                s.spawn(move || d(n));
            }
            self.bg_left.wait();
        });
        // Every page is in; faults still read may only end in EEXIST now.
        self.areas[1 - cur]
            .release_all()
            .map_err(|e| format!("releasing the source: {e}"))?;
        self.finished.store(true, Relaxed);
        self.work_left.wait();
        self.stop_handlers(mode.poll());
        if self.wp_now() {
            loop {
                match self.uffd.writeprotect(dst, self.len(), WriteprotectMode::empty()) {
                    Err(Errno::EAGAIN) => std::thread::yield_now(),
                    r => break r.map_err(|e| format!("UFFDIO_WRITEPROTECT(0) of the destination: {e}"))?,
                }
            }
        }
        self.uffd
            .unregister(dst, self.len())
            .map_err(|e| format!("UFFDIO_UNREGISTER: {e}"))?;
        if minor {
            self.uffd
                .unregister(self.dst_alias(), self.len())
                .map_err(|e| format!("UFFDIO_UNREGISTER of the alias: {e}"))?;
        }
        self.work_left.set(2 * self.nslices);
        self.round(PHASE_VERIFY);
        self.work_left.wait();
        let sum = |f: fn(&HandlerStats) -> u64| -> (u64, String) {
            let v: Vec<u64> = self.hstats.iter().map(f).collect();
            let s = v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join("+");
            (v.iter().sum(), s)
        };
        let (m, ms) = sum(|h| h.missing.load(Relaxed));
        let (w, ws) = sum(|h| h.wp.load(Relaxed));
        let (k, ks) = sum(|h| h.minor.load(Relaxed));
        let spurious: u64 = self.hstats.iter().map(|h| h.spurious.load(Relaxed)).sum();
        let mut line = format!("bounces: {n}, mode:");
        for (on, name) in [(mode.rnd(), " rnd"), (mode.racing(), " racing"), (mode.ver(), " ver")] {
            if on {
                line += name;
            }
        }
        line += if mode.poll() { " poll" } else { " read" };
        if minor {
            line += " minor";
        }
        line += &format!(", userfaults: {m} missing ({ms})");
        if self.wp_now() {
            line += &format!(" {w} wp ({ws})");
        }
        if minor {
            line += &format!(" {k} minor ({ks})");
        }
        if spurious > 0 {
            line += &format!(" {spurious} spurious");
        }
        line += &format!(
            ", {} updates, {} pages verified{}",
            self.increments.load(Relaxed) - before,
            self.npages,
            if words.len() * 8 + verify::BODY == self.ps {
                " (every byte)".to_string()
            } else if words.is_empty() {
                " (headers)".to_string()
            } else {
                format!(" (headers, bytes {:#x}..{:#x})", words.start * 8, words.end * 8)
            }
        );
        let errs = self.nerrors.load(Relaxed) - errs_before;
        if errs > 0 {
            line += &format!(", {errs} ERRORS");
        }
        self.cur.store(1 - cur, Relaxed);
        Ok(line)
    }
}

#[derive(Debug, Clone, Copy)]
enum Role {
    Worker(usize),
    Handler(usize),
    Background(usize),
}

impl Role {
    fn index(self) -> usize {
        match self {
            Role::Worker(i) => i,
            Role::Handler(i) => 1000 + i,
            Role::Background(i) => 2000 + i,
        }
    }
}

fn cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

fn area(mem: MemType, npages: usize, alias: bool) -> Result<Area, Failure> {
    let r = if alias {
        Area::with_alias(mem, npages)
    } else {
        Area::new(mem, npages)
    };
    r.map_err(|e| match e {
        Unavailable::Skip(s) => Failure::Skip(s),
        Unavailable::Error(e) => Failure::Setup(e),
    })
}

/// What the soak hands the run: its extra, and the features it needs.
pub type MakeExtra<'a> = &'a dyn Fn(&MemType) -> Result<(Arc<dyn Extra>, Features), Failure>;

/// Sets a run up: areas, the uffd, the threads' shared state.
fn setup(cfg: &Config, extra: Option<MakeExtra>) -> Result<(Bounce, Option<Features>), Failure> {
    let mem = cfg.mem;
    register_support(mem, RegisterMode::MISSING).map_err(Failure::Skip)?;
    let wp = register_support(mem, RegisterMode::WP).is_ok();
    let minor_ok = mem.is_shared() && register_support(mem, RegisterMode::MINOR).is_ok();
    let ps = mem
        .page_size()
        .ok_or_else(|| Failure::Skip(format!("no page size for {mem}")))?;
    let nslices = cpus();
    let per = cfg.size / ps / nslices;
    if per == 0 {
        return Err(Failure::Setup(format!(
            "--size {} gives no {ps}-byte page per CPU ({nslices} CPUs)",
            cfg.size
        )));
    }
    let npages = per * nslices;
    let mut features = Features::empty();
    if wp {
        features |= Features::PAGEFAULT_FLAG_WP;
        if mem.is_anon() {
            features |= crate::caps::caps().features & Features::WP_UNPOPULATED;
        } else {
            features |= Features::WP_HUGETLBFS_SHMEM;
        }
    }
    if mem.is_shmem() {
        features |= Features::MISSING_SHMEM;
    } else if mem.is_hugetlb() {
        features |= Features::MISSING_HUGETLBFS;
    }
    if minor_ok {
        features |= if mem.is_hugetlb() {
            Features::MINOR_HUGETLBFS
        } else {
            Features::MINOR_SHMEM
        };
    }
    let (x, xf) = match extra {
        Some(mk) => {
            let (x, f) = mk(&mem)?;
            (Some(x), Some(f))
        }
        None => (None, None),
    };
    features |= xf.unwrap_or_default();
    let a = area(mem, npages, minor_ok)?;
    let b = area(mem, npages, minor_ok)?;
    let uffd = crate::testing::open_uffd(features).map_err(Failure::Skip)?;
    // CONTINUE_MODE_WP has no feature bit. Before 6.4 the mode is refused
    // (EINVAL) before any VMA lookup; since, the unregistered page fails
    // ENOENT. Without it a minor fill maps the page writable.
    let continue_wp = wp
        && minor_ok
        && !matches!(
            uffd.r#continue(b.page(0), ps, ContinueMode::WP),
            Err(e) if e.errno == Errno::EINVAL
        );
    // Filling the first source is most of the setup (it faults in and
    // zeroes every page): share it out like the bounces' work.
    std::thread::scope(|s| {
        let b = &b;
        for t in 0..nslices {
            s.spawn(move || {
                for p in (t * per)..((t + 1) * per) {
                    // SAFETY: b (the first source) is ours, mapped and unregistered.
                    unsafe { verify::init_page(b.page(p), ps, p) };
                }
            });
        }
    });
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
        .map_err(|e| Failure::Setup(format!("pipe: {e}")))?;
    let workers = cfg.threads.max(1) * nslices;
    let nthreads = workers + 2 * nslices;
    Ok((
        Bounce {
            mem,
            ps,
            npages,
            nslices,
            nthreads,
            workers,
            wp,
            minor_ok,
            continue_wp,
            uffd,
            areas: [a, b],
            cur: AtomicUsize::new(0),
            mode: AtomicU64::new(0),
            minor: AtomicBool::new(false),
            phase: AtomicU8::new(PHASE_BOUNCE),
            finished: AtomicBool::new(false),
            hstop: AtomicBool::new(false),
            go: Barrier::new(nthreads + 1),
            seen: Latch::new(),
            bg_left: Latch::new(),
            work_left: Latch::new(),
            hand_left: Latch::new(),
            ledger: Ledger::new(npages),
            errors: Mutex::new(Vec::new()),
            nerrors: AtomicU64::new(0),
            hstats: (0..nslices).map(|_| HandlerStats::default()).collect(),
            increments: AtomicU64::new(0),
            verified: AtomicU64::new(0),
            verified_bytes: AtomicU64::new(0),
            every: AtomicBool::new(true),
            wake_rd: rd,
            wake_wr: wr,
            tids: Mutex::new(Vec::new()),
            extra: x,
        },
        xf,
    ))
}

/// Runs the bounce test (and with `extra`, the soak's disruptions) and
/// returns the totals, or every finding.
pub fn run_with(cfg: &Config, out: &mut dyn Write, extra: Option<MakeExtra>) -> Result<Totals, Failure> {
    install_kick();
    let (b, _) = setup(cfg, extra)?;
    let b = &b;
    let start = Instant::now();
    let mut totals = Totals {
        mem: cfg.mem.name().into(),
        page_size: b.ps,
        pages: b.npages,
        threads: b.workers,
        ..Default::default()
    };
    let mut setup_err = None;
    std::thread::scope(|s| {
        let mut roles: Vec<Role> = (0..b.workers).map(Role::Worker).collect();
        roles.extend((0..b.nslices).map(Role::Handler));
        roles.extend((0..b.nslices).map(Role::Background));
        for r in roles {
            std::thread::Builder::new()
                .name(format!("stress-{r:?}"))
                .spawn_scoped(s, move || b.thread(r))
                .expect("spawning a stress thread");
        }
        // Wait until every handler has recorded its thread id.
        while b.tids.lock().unwrap().len() < b.nslices {
            std::thread::sleep(Duration::from_micros(50));
        }
        let disrupt = b.extra.as_ref().map(|x| {
            move |n: u64| {
                if let Err(e) = x.disrupt(b, n ^ seed()) {
                    b.fail(e);
                }
            }
        });
        let mut n = cfg.bounces.unwrap_or(u64::MAX);
        let mut last = Instant::now();
        while n > 0 && cfg.duration.is_none_or(|d| start.elapsed() < d) {
            n -= 1;
            let minor = b.minor_ok && Mode(n).minor();
            // The soak audits every byte every bounce (see audit_words).
            let every = cfg.duration.is_some();
            match b.bounce(n, every, disrupt.as_ref().map(|d| d as &(dyn Fn(u64) + Sync))) {
                Ok(line) => {
                    if !cfg.quiet && !cfg.soak {
                        let _ = writeln!(out, "{line}");
                    }
                }
                Err(e) => {
                    setup_err = Some(e);
                    break;
                }
            }
            totals.bounces += 1;
            totals.minor_bounces += minor as u64;
            totals.missing_faults += b.hstats.iter().map(|h| h.missing.load(Relaxed)).sum::<u64>();
            totals.wp_faults += b.hstats.iter().map(|h| h.wp.load(Relaxed)).sum::<u64>();
            totals.minor_faults += b.hstats.iter().map(|h| h.minor.load(Relaxed)).sum::<u64>();
            totals.spurious_faults += b.hstats.iter().map(|h| h.spurious.load(Relaxed)).sum::<u64>();
            if let Some(every) = cfg.progress
                && last.elapsed() >= every
            {
                last = Instant::now();
                let t = b.snapshot(&totals, start);
                let _ = writeln!(out, "{}", t.line());
            }
            if b.nerrors.load(Relaxed) > 0 && cfg.duration.is_some() {
                break;
            }
        }
        b.round(PHASE_QUIT);
    });
    let totals = b.snapshot(&totals, start);
    if let Some(e) = setup_err {
        b.fail(e);
    }
    let errs = std::mem::take(&mut *b.errors.lock().unwrap());
    if b.nerrors.load(Relaxed) > 0 {
        let mut t = totals;
        t.errors = b.nerrors.load(Relaxed);
        return Err(Failure::Errors(errs, Box::new(t)));
    }
    Ok(totals)
}

impl Bounce {
    fn snapshot(&self, t: &Totals, start: Instant) -> Totals {
        let mut t = t.clone();
        t.increments = self.increments.load(Relaxed);
        t.pages_verified = self.verified.load(Relaxed);
        t.bytes_verified = self.verified_bytes.load(Relaxed);
        t.errors = self.nerrors.load(Relaxed);
        t.seconds = start.elapsed().as_secs_f64();
        if let Some(x) = &self.extra {
            x.totals(&mut t);
        }
        t
    }
}

/// Runs the plain bounce test.
pub fn run(cfg: &Config, out: &mut dyn Write) -> Result<Totals, Failure> {
    run_with(cfg, out, None)
}

/// Parses a size: a number with an optional K, M or G suffix (binary); a
/// bare number is MiB, as upstream's `<MiB>` argument.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                _ => return Err(format!("size '{s}': unknown suffix '{c}' (K, M or G)")),
            };
            (&s[..i], m)
        }
        _ => (s, 1 << 20),
    };
    let n: usize = num.parse().map_err(|_| format!("size '{s}' is not a number"))?;
    Ok(n * mult)
}

/// Parses a duration: a number with s, m or h (bare: seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('s') => (&s[..s.len() - 1], 1),
        Some('m') => (&s[..s.len() - 1], 60),
        Some('h') => (&s[..s.len() - 1], 3600),
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("duration '{s}' is not a number with s, m or h"))?;
    Ok(Duration::from_secs(n * mult))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_like_the_cli_says() {
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("20"), Ok(20 << 20));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert!(parse_size("3X").is_err());
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
    }

    #[test]
    fn modes_follow_the_bounce_bits() {
        let m = Mode(0b1011);
        assert!(m.rnd() && m.racing() && !m.ver() && m.poll());
        assert!(m.minor());
        assert!(!Mode(0b11).minor());
    }
}
