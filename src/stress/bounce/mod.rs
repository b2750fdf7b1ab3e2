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
//! Every bounce audits every page whole: header, accounting and every body
//! byte (upstream checks only counters, on bit-2 bounces).

mod config;
mod resolve;
mod run;
mod sync;
mod work;

use crate::caps::{OpenFailure, Unsupported};
use crate::event::{Event, PagefaultFlags};
use crate::mem::{Area, MemType, Unavailable};
use crate::stress::verify::{Finding, Ledger};
use crate::uffd::{CopyMode, Uffd};
pub use config::{Config, Mode, ParseError, parse_duration, parse_size};
pub use run::{MakeExtra, run, run_with};
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize};
use std::sync::{Arc, Barrier, Mutex};
use sync::{HandlerStats, Latch};

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
    /// The most spurious MISSING|WRITE faults this run can have seen
    /// (docs/findings/README.md). Each needs a worker's write to read a
    /// destination page's PTE locklessly in the instant another thread holds
    /// it cleared under the PT lock, and each worker reports at most one per
    /// such clear: it then waits until the handler's COPY fails EEXIST,
    /// which takes the PT lock only once the new PTE is set, and its retry
    /// finds the page (or `userfaultfd_must_wait` already found it back).
    /// The clears of a destination page: the UFFDIO_WRITEPROTECT of its
    /// slice, once a bounce; the unprotect resolving each WP fault; and the
    /// COW of its first write after each fork of the soak.
    pub fn spurious_bound(&self) -> u64 {
        self.threads as u64 * (self.pages as u64 * (self.bounces + self.forks) + self.wp_faults)
    }

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

impl From<Unsupported> for Failure {
    fn from(u: Unsupported) -> Failure {
        Failure::Skip(u.to_string())
    }
}

impl From<Unavailable> for Failure {
    fn from(e: Unavailable) -> Failure {
        match e {
            Unavailable::Skip(s) => Failure::Skip(s),
            Unavailable::Error(e) => Failure::Setup(e),
        }
    }
}

impl From<OpenFailure> for Failure {
    fn from(e: OpenFailure) -> Failure {
        match e {
            OpenFailure::Unsupported(u) => u.into(),
            OpenFailure::Failed(e) => Failure::Setup(e.to_string()),
        }
    }
}

/// Hooks the soak adds to a bounce: its scratch area's faults and events,
/// and disruptions run while a bounce is in flight.
pub trait Extra: Send + Sync {
    /// Whether a fault at `addr` is the extra's to resolve.
    fn owns(&self, addr: u64) -> bool;
    /// Resolves it; `Ok(false)` asks to be called again later (EAGAIN).
    fn fault(&self, uffd: &Uffd, addr: u64, flags: PagefaultFlags) -> Result<bool, Finding>;
    /// A non-fault event read from the uffd.
    fn event(&self, ev: Event) -> Result<(), Finding>;
    /// Runs during a poll-mode bounce, on its own thread; returns when done.
    fn disrupt(&self, b: &Bounce, seed: u64) -> Result<(), Finding>;
    /// Adds its counts to the totals.
    fn totals(&self, t: &mut Totals);
}

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
    wake_rd: OwnedFd,
    wake_wr: OwnedFd,
    tids: Mutex<Vec<libc::pthread_t>>,
    extra: Option<Arc<dyn Extra>>,
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
    pub fn fail(&self, msg: impl Into<String>) {
        let msg = msg.into();
        self.nerrors.fetch_add(1, Relaxed);
        let mut g = self.errors.lock().unwrap();
        if g.len() < MAX_KEPT {
            g.push(msg);
        }
    }

    fn copy_mode(&self) -> CopyMode {
        if self.wp { CopyMode::WP } else { CopyMode::empty() }
    }
}
