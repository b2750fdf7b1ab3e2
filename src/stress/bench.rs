//! `uffdtest bench`: what resolving costs, per memory type. Fault round
//! trips (a thread touches a page, a handler thread reads the fault and
//! resolves it, the thread resumes) for MISSING+COPY, MINOR+CONTINUE and
//! WP+un-protect, as p50/p99 latency and resolved faults per second; MOVE
//! throughput; ZEROPAGE rate. Speed is judged here, never in tests.

use crate::caps::{OpenFailure, Unsupported, features_for, registration_support, require_features};
use crate::event::Event;
use crate::mem::{Area, Buf, MemType, Unavailable};
use crate::sys;
use crate::uffd::{ContinueMode, CopyMode, Features, MoveMode, RegisterMode, Uffd, WriteprotectMode, ZeropageMode};
use nix::errno::Errno;
use serde::Serialize;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// One fault kind's round trips.
#[derive(Debug, Clone, Serialize)]
pub struct RoundTrips {
    pub faults: usize,
    pub p50_us: f64,
    pub p99_us: f64,
    pub faults_per_sec: f64,
}

/// A figure, or why it was not measured.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Figure<T> {
    Measured(T),
    Skipped { skip: String },
}

impl<T> Figure<T> {
    fn from(r: Result<T, Unmeasured>) -> Figure<T> {
        match r {
            Ok(v) => Figure::Measured(v),
            Err(e) => Figure::Skipped { skip: e.to_string() },
        }
    }
}

/// Why a figure was not measured. Display is the note under the table;
/// the CLI fails the run on the ones that start with `error: `.
#[derive(Debug)]
pub enum Unmeasured {
    /// This kernel cannot (a test's SKIP reason).
    Unsupported(Unsupported),
    /// UFFDIO_MOVE is defined for anonymous memory only.
    MoveNeedsAnon(MemType),
    /// hugetlb has no zero page to map.
    NoZeropageOnHugetlb,
    /// The machine cannot give the memory (no huge pages, no THP...).
    NoMemory(String),
    /// A call failed that should not have: what, and the kernel's answer.
    Error(String),
    /// The handler thread stopped on this.
    Handler(String),
}

impl std::fmt::Display for Unmeasured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unmeasured::Unsupported(u) => u.fmt(f),
            Unmeasured::MoveNeedsAnon(mem) => write!(f, "UFFDIO_MOVE is for anonymous memory, not {mem}"),
            Unmeasured::NoZeropageOnHugetlb => f.write_str("UFFDIO_ZEROPAGE is not offered on hugetlb"),
            Unmeasured::NoMemory(why) | Unmeasured::Handler(why) => f.write_str(why),
            Unmeasured::Error(e) => write!(f, "error: {e}"),
        }
    }
}

impl std::error::Error for Unmeasured {}

impl From<Unsupported> for Unmeasured {
    fn from(u: Unsupported) -> Unmeasured {
        Unmeasured::Unsupported(u)
    }
}

impl From<Unavailable> for Unmeasured {
    fn from(e: Unavailable) -> Unmeasured {
        match e {
            Unavailable::Skip(s) => Unmeasured::NoMemory(s),
            Unavailable::Error(e) => Unmeasured::Error(e),
        }
    }
}

impl From<OpenFailure> for Unmeasured {
    fn from(e: OpenFailure) -> Unmeasured {
        match e {
            OpenFailure::Unsupported(u) => Unmeasured::Unsupported(u),
            OpenFailure::Failed(e) => Unmeasured::Error(e.to_string()),
        }
    }
}

/// One memory type's row.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub mem: MemType,
    pub page_size: usize,
    pub missing_copy: Figure<RoundTrips>,
    pub minor_continue: Figure<RoundTrips>,
    pub wp_unprotect: Figure<RoundTrips>,
    pub move_gib_per_sec: Figure<f64>,
    pub zeropage_pages_per_sec: Figure<f64>,
}

/// A uffd with the features registering `mem` in `mode` needs (and
/// `extra`), with `a` registered in `mode`.
fn registered(a: &Area, mode: RegisterMode, extra: Features) -> Result<Uffd, Unmeasured> {
    let features = features_for(a.mem(), mode) | extra;
    require_features(features)?;
    let uffd = crate::caps::open_uffd(crate::uffd::OpenFlags::DEFAULT, features)?;
    uffd.register(a.addr(), a.len(), mode)
        .map_err(|e| Unmeasured::Error(format!("register: {e}")))?;
    Ok(uffd)
}

/// A handler thread resolving every fault with `resolve(uffd, page)` until
/// stopped; it polls the uffd and a stop pipe, as a monitor would.
struct Handler {
    stop: Arc<AtomicBool>,
    wr: std::os::fd::OwnedFd,
    t: Option<std::thread::JoinHandle<Result<(), Unmeasured>>>,
}

impl Handler {
    fn spawn(
        uffd: Arc<Uffd>,
        ps: usize,
        resolve: impl Fn(&Uffd, usize) -> Result<(), Unmeasured> + Send + 'static,
    ) -> Handler {
        let stop = Arc::new(AtomicBool::new(false));
        let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
        let s = stop.clone();
        let t = std::thread::spawn(move || {
            use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
            let mut buf = [sys::uffd_msg::default(); 16];
            while !s.load(Ordering::Acquire) {
                let mut fds = [
                    PollFd::new(uffd.as_fd(), PollFlags::POLLIN),
                    PollFd::new(rd.as_fd(), PollFlags::POLLIN),
                ];
                match poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(e) => return Err(Unmeasured::Handler(format!("poll: {e}"))),
                }
                let n = match uffd.read_raw(&mut buf) {
                    Ok(n) => n,
                    Err(Errno::EAGAIN) | Err(Errno::EINTR) => continue,
                    Err(e) => return Err(Unmeasured::Handler(format!("read: {e}"))),
                };
                for m in &buf[..n] {
                    match Event::decode(m) {
                        Event::Pagefault { address, .. } => resolve(&uffd, address as usize & !(ps - 1))?,
                        ev => return Err(Unmeasured::Handler(format!("unexpected {ev:?}"))),
                    }
                }
            }
            Ok(())
        });
        Handler { stop, wr, t: Some(t) }
    }

    fn stop(mut self) -> Result<(), Unmeasured> {
        self.stop.store(true, Ordering::Release);
        let _ = nix::unistd::write(&self.wr, &[1]);
        self.t
            .take()
            .expect("running")
            .join()
            .unwrap_or_else(|_| Err(Unmeasured::Handler("handler panicked".into())))
    }
}

fn ok_or_eexist(r: crate::uffd::Progress, what: &str) -> Result<(), Unmeasured> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.errno == Errno::EEXIST => Ok(()),
        Err(e) => Err(Unmeasured::Handler(format!("{what}: {e}"))),
    }
}

/// Touches every page of `a` once (write if `write`), timing each access.
fn touch_all(a: &Area, write: bool) -> (Vec<Duration>, Duration) {
    let mut lat = Vec::with_capacity(a.npages());
    let t0 = Instant::now();
    for i in 0..a.npages() {
        let p = a.page(i) as *mut u64;
        let t = Instant::now();
        // SAFETY: a page of our area; the access blocks until resolved.
        unsafe {
            if write {
                p.write_volatile(i as u64);
            } else {
                std::hint::black_box(p.read_volatile());
            }
        }
        lat.push(t.elapsed());
    }
    (lat, t0.elapsed())
}

fn summarize(mut lat: Vec<Duration>, total: Duration) -> RoundTrips {
    lat.sort();
    let q = |f: f64| lat[((lat.len() as f64 * f) as usize).min(lat.len() - 1)].as_secs_f64() * 1e6;
    RoundTrips {
        faults: lat.len(),
        p50_us: q(0.50),
        p99_us: q(0.99),
        faults_per_sec: lat.len() as f64 / total.as_secs_f64(),
    }
}

/// Round trips of `mode` faults on `n` pages of `mem`: `prep` readies the
/// area, `arm` the registered uffd (both on this thread); then every page is
/// touched (written if `write`) while a handler resolves with `resolve`.
fn round_trips(
    mem: MemType,
    n: usize,
    mode: RegisterMode,
    write: bool,
    prep: impl FnOnce(&Area),
    arm: impl FnOnce(&Area, &Uffd) -> Result<(), Unmeasured>,
    resolve: impl Fn(&Uffd, usize, usize) -> Result<(), Unmeasured> + Send + 'static,
) -> Result<RoundTrips, Unmeasured> {
    registration_support(mem, mode)?;
    let a = Area::new_with(mem, n, mode == RegisterMode::MINOR)?;
    let ps = a.page_size();
    prep(&a);
    let uffd = Arc::new(registered(&a, mode, Features::empty())?);
    arm(&a, &uffd)?;
    let h = Handler::spawn(uffd.clone(), ps, move |u, page| resolve(u, page, ps));
    let (lat, total) = touch_all(&a, write);
    h.stop()?;
    Ok(summarize(lat, total))
}

fn missing_copy(mem: MemType, n: usize) -> Result<RoundTrips, Unmeasured> {
    let ps = mem.page_size().unwrap_or(0);
    let src = Buf::try_filled(ps, 0x5a)?;
    round_trips(
        mem,
        n,
        RegisterMode::MISSING,
        false,
        |_| {},
        |_, _| Ok(()),
        move |u, page, ps| ok_or_eexist(u.copy(page, src.addr(), ps, CopyMode::empty()), "COPY"),
    )
}

fn minor_continue(mem: MemType, n: usize) -> Result<RoundTrips, Unmeasured> {
    let fill = |a: &Area| {
        for i in 0..a.npages() {
            // SAFETY: the alias view of our own area; fills the page cache.
            unsafe { std::ptr::write_bytes(a.alias_page(i) as *mut u8, 0x5a, a.page_size()) };
        }
    };
    round_trips(
        mem,
        n,
        RegisterMode::MINOR,
        false,
        fill,
        |_, _| Ok(()),
        |u, page, ps| ok_or_eexist(u.r#continue(page, ps, ContinueMode::empty()), "CONTINUE"),
    )
}

fn wp_unprotect(mem: MemType, n: usize) -> Result<RoundTrips, Unmeasured> {
    round_trips(
        mem,
        n,
        RegisterMode::WP,
        true,
        |a| a.populate(1),
        |a, u| {
            u.writeprotect(a.addr(), a.len(), WriteprotectMode::WP)
                .map_err(|e| Unmeasured::Error(format!("WRITEPROTECT: {e}")))
        },
        |u, page, ps| {
            u.writeprotect(page, ps, WriteprotectMode::empty())
                .map_err(|e| Unmeasured::Handler(format!("un-protect: {e}")))
        },
    )
}

/// MOVE of a populated area into a registered one, `chunk` bytes per call.
fn move_rate(mem: MemType, n: usize) -> Result<f64, Unmeasured> {
    if !mem.is_anon() {
        return Err(Unmeasured::MoveNeedsAnon(mem));
    }
    require_features(Features::MOVE)?;
    let src = Area::new(mem, n)?;
    let dst = Area::new(mem, n)?;
    let uffd = registered(&dst, RegisterMode::MISSING, Features::MOVE)?;
    let mut best = 0f64;
    // Move there and back a few times; report the best pass.
    for pass in 0..4 {
        let (from, to) = if pass % 2 == 0 { (&src, &dst) } else { (&dst, &src) };
        if pass == 0 {
            from.populate(0x5a);
        }
        let chunk = crate::mem::pmd_size().unwrap_or(2 << 20).min(from.len());
        let t = Instant::now();
        let mut off = 0;
        while off < from.len() {
            let len = chunk.min(from.len() - off);
            match uffd.r#move(to.addr() + off, from.addr() + off, len, MoveMode::empty()) {
                Ok(b) if b as usize == len => off += len,
                Ok(b) => return Err(Unmeasured::Error(format!("MOVE moved {b} of {len}"))),
                Err(e) => return Err(Unmeasured::Error(format!("MOVE at +{off:#x}: {e}"))),
            }
        }
        best = best.max(from.len() as f64 / t.elapsed().as_secs_f64() / (1u64 << 30) as f64);
        if pass == 0 {
            // The way back goes into the emptied source: register it too.
            uffd.register(src.addr(), src.len(), RegisterMode::MISSING)
                .map_err(|e| Unmeasured::Error(format!("register: {e}")))?;
        }
    }
    Ok(best)
}

fn zeropage_rate(mem: MemType, n: usize) -> Result<f64, Unmeasured> {
    if mem.is_hugetlb() {
        return Err(Unmeasured::NoZeropageOnHugetlb);
    }
    registration_support(mem, RegisterMode::MISSING)?;
    let a = Area::new(mem, n)?;
    let ps = a.page_size();
    let uffd = registered(&a, RegisterMode::MISSING, Features::empty())?;
    let t = Instant::now();
    for i in 0..a.npages() {
        uffd.zeropage(a.addr() + i * ps, ps, ZeropageMode::empty())
            .map_err(|e| Unmeasured::Error(format!("ZEROPAGE: {e}")))?;
    }
    Ok(a.npages() as f64 / t.elapsed().as_secs_f64())
}

/// Measures one memory type with `n` base pages (huge pages: `n / 256`).
pub fn row(mem: MemType, n: usize) -> Row {
    let ps = mem.page_size().unwrap_or(0);
    let n = if mem.is_hugetlb() { (n / 256).max(8) } else { n };
    Row {
        mem,
        page_size: ps,
        missing_copy: Figure::from(missing_copy(mem, n)),
        minor_continue: Figure::from(minor_continue(mem, n)),
        wp_unprotect: Figure::from(wp_unprotect(mem, n)),
        move_gib_per_sec: Figure::from(move_rate(mem, n)),
        zeropage_pages_per_sec: Figure::from(zeropage_rate(mem, n)),
    }
}

fn rt(f: &Figure<RoundTrips>) -> String {
    match f {
        Figure::Measured(r) => format!("{:>6.1} {:>7.1} {:>8.0}", r.p50_us, r.p99_us, r.faults_per_sec),
        Figure::Skipped { .. } => format!("{:>6} {:>7} {:>8}", "-", "-", "-"),
    }
}

fn one(f: &Figure<f64>, prec: usize) -> String {
    match f {
        Figure::Measured(v) => format!("{v:>9.prec$}"),
        Figure::Skipped { .. } => format!("{:>9}", "-"),
    }
}

/// The human table; the reasons for dashes follow it.
pub fn table(rows: &[Row]) -> String {
    let mut s = String::new();
    s += &format!(
        "{:<16} {:^23} | {:^23} | {:^23} | {:>9} {:>9}\n",
        "", "MISSING+COPY", "MINOR+CONTINUE", "WP+un-protect", "MOVE", "ZEROPAGE"
    );
    let cols = format!("{:>6} {:>7} {:>8}", "p50us", "p99us", "faults/s");
    s += &format!(
        "{:<16} {cols} | {cols} | {cols} | {:>9} {:>9}\n",
        "mem", "GiB/s", "pages/s"
    );
    let mut notes = Vec::new();
    for r in rows {
        s += &format!(
            "{:<16} {} | {} | {} | {} {}\n",
            r.mem.name(),
            rt(&r.missing_copy),
            rt(&r.minor_continue),
            rt(&r.wp_unprotect),
            one(&r.move_gib_per_sec, 2),
            one(&r.zeropage_pages_per_sec, 0)
        );
        for (what, f) in [
            ("MISSING+COPY", skip_of(&r.missing_copy)),
            ("MINOR+CONTINUE", skip_of(&r.minor_continue)),
            ("WP+un-protect", skip_of(&r.wp_unprotect)),
            ("MOVE", skip_of(&r.move_gib_per_sec)),
            ("ZEROPAGE", skip_of(&r.zeropage_pages_per_sec)),
        ] {
            if let Some(why) = f {
                notes.push(format!("  {} {what}: {why}", r.mem.name()));
            }
        }
    }
    if !notes.is_empty() {
        s += "not measured:\n";
        s += &notes.join("\n");
        s += "\n";
    }
    s
}

fn skip_of<T>(f: &Figure<T>) -> Option<&str> {
    match f {
        Figure::Skipped { skip } => Some(skip),
        Figure::Measured(_) => None,
    }
}
