//! A hostile machine for the flake hunter (`uffdtest flakes`): every CPU
//! busy, anonymous memory churned through reclaim, and compaction asked for
//! again and again, so that whatever a case reads about its own mappings
//! (smaps, pagemap, a THP's shape) can change under it the way it does on a
//! loaded CI host. The knobs that steer khugepaged and THP are set by
//! [`super::hostile`] (restored by `crate::knob` guards); this module only
//! makes load.

use nix::sys::mman::{MapFlags, MmapAdvise, ProtFlags, madvise, mmap_anonymous, munmap};
use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// How much load.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LoadConfig {
    /// Spinning threads: one per CPU keeps every CPU busy.
    pub cpu_threads: usize,
    /// Anonymous memory the churn thread keeps cycling through reclaim.
    pub memory_bytes: usize,
    /// How often to write `/proc/sys/vm/compact_memory`.
    pub compact_every: Duration,
    /// The spinning and churning threads' nice value: 0 contends with the
    /// cases as equals; above it they take what the cases leave.
    pub nice: i32,
}

impl LoadConfig {
    /// Every CPU, an eighth of the memory available now (so the suite's own
    /// huge page reservations still fit), compaction twice a second.
    pub fn hostile() -> LoadConfig {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        LoadConfig {
            cpu_threads: cpus,
            memory_bytes: mem_available().unwrap_or(1 << 30) / 8,
            compact_every: Duration::from_millis(500),
            nice: 0,
        }
    }

    /// The same kinds of load at a rate an emulated guest (TCG) can carry.
    /// There a page fault or a compaction scan costs tens of times what it
    /// costs on hardware, and equal-priority spinners on both vCPUs left the
    /// cases so little that 171 of a pass's cases started in 11 minutes and
    /// the 60 s case timeout, not the kernel, decided outcomes. So: every
    /// vCPU still busy, but at nice 10 (a case beside a spinner gets about
    /// nine tenths of it, and still loses the CPU at every tick the spinner
    /// is owed); a 32nd of the memory churned; compaction every 5 s.
    pub fn emulated() -> LoadConfig {
        let full = LoadConfig::hostile();
        LoadConfig {
            memory_bytes: full.memory_bytes / 4,
            compact_every: Duration::from_secs(5),
            nice: 10,
            ..full
        }
    }
}

/// `MemAvailable` of /proc/meminfo, in bytes.
fn mem_available() -> Option<usize> {
    crate::mem::meminfo("MemAvailable").map(|kb| kb * 1024)
}

/// Why the load could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The churn area could not be mapped.
    #[error("mmap of the memory-pressure area: {0}")]
    Mmap(nix::errno::Errno),
    #[error("cannot start the load: {0}")]
    Spawn(std::io::Error),
    /// The load's own process ([`super::load_child`]) failed.
    #[error("the load's process {0}")]
    Child(String),
}

/// What the load did, for the hunter's report.
#[derive(Debug, Default, Clone, Copy)]
pub struct LoadTotals {
    /// Times the churn area was written through, paged out and dropped.
    pub churn_rounds: u64,
    /// Writes to `compact_memory` the kernel accepted.
    pub compactions: u64,
}

/// The running load; [`Load::stop`] (or drop) ends it.
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    churn_rounds: Arc<AtomicU64>,
    compactions: Arc<AtomicU64>,
}

/// An anonymous mapping the churn thread owns.
struct Area {
    ptr: NonNull<std::ffi::c_void>,
    len: usize,
}

// The churn thread is the mapping's only user.
unsafe impl Send for Area {}

impl Drop for Area {
    fn drop(&mut self) {
        // SAFETY: the mapping is ours and nothing refers to it any more.
        let _ = unsafe { munmap(self.ptr, self.len) };
    }
}

impl Load {
    pub fn start(cfg: &LoadConfig) -> Result<Load, LoadError> {
        let mut load = Load {
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            churn_rounds: Arc::new(AtomicU64::new(0)),
            compactions: Arc::new(AtomicU64::new(0)),
        };
        let nice = cfg.nice;
        for i in 0..cfg.cpu_threads {
            let stop = load.stop.clone();
            load.spawn(format!("load-cpu{i}"), move || {
                renice_self(nice);
                spin(&stop)
            })?;
        }
        if cfg.memory_bytes > 0 {
            let area = map(cfg.memory_bytes)?;
            let (stop, rounds) = (load.stop.clone(), load.churn_rounds.clone());
            load.spawn("load-churn".into(), move || {
                renice_self(nice);
                churn(&area, &stop, &rounds)
            })?;
        }
        let (stop, every, n) = (load.stop.clone(), cfg.compact_every, load.compactions.clone());
        load.spawn("load-compact".into(), move || compact(every, &stop, &n))?;
        Ok(load)
    }

    fn spawn(&mut self, name: String, f: impl FnOnce() + Send + 'static) -> Result<(), LoadError> {
        let t = std::thread::Builder::new()
            .name(name)
            .spawn(f)
            .map_err(LoadError::Spawn)?;
        self.threads.push(t);
        Ok(())
    }

    /// Waits until the churn has been through its area once (at most
    /// `limit`), so that the first pass already runs under pressure.
    pub fn warm_up(&self, limit: Duration) {
        let start = std::time::Instant::now();
        while self.churn_rounds.load(Ordering::Relaxed) == 0 && start.elapsed() < limit && !self.threads.is_empty() {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn totals(&self) -> LoadTotals {
        LoadTotals {
            churn_rounds: self.churn_rounds.load(Ordering::Relaxed),
            compactions: self.compactions.load(Ordering::Relaxed),
        }
    }

    pub fn stop(mut self) -> LoadTotals {
        self.halt();
        self.totals()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.halt();
    }
}

fn map(len: usize) -> Result<Area, LoadError> {
    let n = NonZeroUsize::new(len).ok_or(LoadError::Mmap(nix::errno::Errno::EINVAL))?;
    // SAFETY: a fresh private anonymous mapping, aliased by nothing.
    let ptr = unsafe {
        mmap_anonymous(
            None,
            n,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_PRIVATE | MapFlags::MAP_NORESERVE,
        )
    }
    .map_err(LoadError::Mmap)?;
    Ok(Area { ptr, len })
}

/// Sets the calling thread's nice value (Linux keeps one per thread).
/// Best effort: at worst the load stays at full strength.
fn renice_self(nice: i32) {
    if nice != 0 {
        let tid = nix::unistd::gettid().as_raw() as libc::id_t;
        // SAFETY: plain syscall on this thread's own id.
        unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) };
    }
}

fn spin(stop: &AtomicBool) {
    let mut x = 0u64;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..100_000 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
}

/// Writes every page, pages part of the area out (reclaim, swap where there
/// is swap), drops the rest (freeing folios to fragment the free lists) and
/// starts again: the memory pressure that makes reclaim and compaction run
/// beside the cases. What it pages out stays within a quarter of the free
/// swap, so the cases that page out themselves still find room.
fn churn(area: &Area, stop: &AtomicBool, rounds: &AtomicU64) {
    let page = crate::mem::base_page_size();
    let swap_room = crate::mem::meminfo("SwapFree").map_or(0, |kb| kb * 1024) / 4;
    let half = (area.len / 2).min(swap_room.max(page)) & !(page - 1);
    while !stop.load(Ordering::Relaxed) {
        let base = area.ptr.as_ptr().cast::<u8>();
        for off in (0..area.len).step_by(page) {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            // SAFETY: `off` is inside the mapping, which only this thread uses.
            unsafe { base.add(off).write_volatile(off as u8) };
        }
        // SAFETY: both ranges lie inside the mapping; the advice only drops
        // or pages out contents this thread rewrites next round.
        unsafe {
            if let Some(p) = NonNull::new(base.add(0).cast()) {
                let _ = madvise(p, half, MmapAdvise::MADV_PAGEOUT);
            }
            if let Some(p) = NonNull::new(base.add(half).cast()) {
                let _ = madvise(p, area.len - half, MmapAdvise::MADV_DONTNEED);
            }
        }
        rounds.fetch_add(1, Ordering::Relaxed);
    }
}

fn compact(every: Duration, stop: &AtomicBool, n: &AtomicU64) {
    while !stop.load(Ordering::Relaxed) {
        if std::fs::write("/proc/sys/vm/compact_memory", "1").is_ok() {
            n.fetch_add(1, Ordering::Relaxed);
        }
        let mut slept = Duration::ZERO;
        while slept < every && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
            slept += Duration::from_millis(20);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_runs_and_stops() {
        let cfg = LoadConfig {
            cpu_threads: 1,
            memory_bytes: 4 << 20,
            compact_every: Duration::from_millis(10),
            nice: 10,
        };
        let load = Load::start(&cfg).expect("load starts");
        for _ in 0..2000 {
            if load.totals().churn_rounds >= 2 {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let t = load.stop();
        assert!(t.churn_rounds >= 2, "{t:?}");
    }

    #[test]
    fn a_reniced_thread_reports_its_own_nice() {
        let nice = std::thread::spawn(|| {
            renice_self(7);
            nix::errno::Errno::clear();
            // SAFETY: plain syscall on this thread's own id.
            unsafe { libc::getpriority(libc::PRIO_PROCESS, nix::unistd::gettid().as_raw() as libc::id_t) }
        })
        .join()
        .unwrap();
        assert_eq!(nice, 7);
        // SAFETY: as above, for this thread, whose nice is its own.
        let mine = || unsafe { libc::getpriority(libc::PRIO_PROCESS, nix::unistd::gettid().as_raw() as libc::id_t) };
        let before = mine();
        std::thread::spawn(|| renice_self(9)).join().unwrap();
        assert_eq!(mine(), before);
    }
}
