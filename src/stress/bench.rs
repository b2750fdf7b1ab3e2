//! `uffdtest bench`: what resolving costs, per memory type. Fault round
//! trips (a thread touches a page, a handler thread reads the fault and
//! resolves it, the thread resumes) for MISSING+COPY, MINOR+CONTINUE and
//! WP+un-protect, as p50/p99 latency and resolved faults per second; MOVE
//! throughput; ZEROPAGE rate. Speed is judged here, never in tests.

use crate::caps::features_for;
use crate::event::Event;
use crate::mem::{Area, MemType, Unavailable};
use crate::sys;
use crate::testing::{Buf, open_uffd, register_support};
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
    fn from(r: Result<T, String>) -> Figure<T> {
        match r {
            Ok(v) => Figure::Measured(v),
            Err(skip) => Figure::Skipped { skip },
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

fn area(mem: MemType, n: usize, alias: bool) -> Result<Area, String> {
    let r = if alias {
        Area::with_alias(mem, n)
    } else {
        Area::new(mem, n)
    };
    r.map_err(|e| match e {
        Unavailable::Skip(s) => s,
        Unavailable::Error(e) => format!("error: {e}"),
    })
}

/// A handler thread resolving every fault with `resolve(uffd, page)` until
/// stopped; it polls the uffd and a stop pipe, as a monitor would.
struct Handler {
    stop: Arc<AtomicBool>,
    wr: std::os::fd::OwnedFd,
    t: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl Handler {
    fn spawn(
        uffd: Arc<Uffd>,
        ps: usize,
        resolve: impl Fn(&Uffd, usize) -> Result<(), String> + Send + 'static,
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
                    Err(e) => return Err(format!("poll: {e}")),
                }
                let n = match uffd.read_raw(&mut buf) {
                    Ok(n) => n,
                    Err(Errno::EAGAIN) | Err(Errno::EINTR) => continue,
                    Err(e) => return Err(format!("read: {e}")),
                };
                for m in &buf[..n] {
                    match Event::decode(m) {
                        Event::Pagefault { address, .. } => resolve(&uffd, address as usize & !(ps - 1))?,
                        ev => return Err(format!("unexpected {ev:?}")),
                    }
                }
            }
            Ok(())
        });
        Handler { stop, wr, t: Some(t) }
    }

    fn stop(mut self) -> Result<(), String> {
        self.stop.store(true, Ordering::Release);
        let _ = nix::unistd::write(&self.wr, &[1]);
        self.t
            .take()
            .expect("running")
            .join()
            .unwrap_or_else(|_| Err("handler panicked".into()))
    }
}

fn ok_or_eexist(r: crate::uffd::Progress, what: &str) -> Result<(), String> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.errno == Errno::EEXIST => Ok(()),
        Err(e) => Err(format!("{what}: {e}")),
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

fn missing_copy(mem: MemType, n: usize) -> Result<RoundTrips, String> {
    register_support(mem, RegisterMode::MISSING)?;
    let a = area(mem, n, false)?;
    let ps = a.page_size();
    let uffd = Arc::new(open_uffd(features_for(mem, RegisterMode::MISSING))?);
    uffd.register(a.addr(), a.len(), RegisterMode::MISSING)
        .map_err(|e| format!("error: register: {e}"))?;
    let src = Buf::filled(ps, 0x5a);
    let sa = src.addr();
    let h = Handler::spawn(uffd.clone(), ps, move |u, page| {
        ok_or_eexist(u.copy(page, sa, ps, CopyMode::empty()), "COPY")
    });
    let (lat, total) = touch_all(&a, false);
    h.stop()?;
    Ok(summarize(lat, total))
}

fn minor_continue(mem: MemType, n: usize) -> Result<RoundTrips, String> {
    register_support(mem, RegisterMode::MINOR)?;
    let a = area(mem, n, true)?;
    let ps = a.page_size();
    for i in 0..n {
        // SAFETY: the alias view of our own area; fills the page cache.
        unsafe { std::ptr::write_bytes(a.alias_page(i) as *mut u8, 0x5a, ps) };
    }
    let uffd = Arc::new(open_uffd(features_for(mem, RegisterMode::MINOR))?);
    uffd.register(a.addr(), a.len(), RegisterMode::MINOR)
        .map_err(|e| format!("error: register: {e}"))?;
    let h = Handler::spawn(uffd.clone(), ps, move |u, page| {
        ok_or_eexist(u.r#continue(page, ps, ContinueMode::empty()), "CONTINUE")
    });
    let (lat, total) = touch_all(&a, false);
    h.stop()?;
    Ok(summarize(lat, total))
}

fn wp_unprotect(mem: MemType, n: usize) -> Result<RoundTrips, String> {
    register_support(mem, RegisterMode::WP)?;
    let a = area(mem, n, false)?;
    let ps = a.page_size();
    a.populate(1);
    let uffd = Arc::new(open_uffd(features_for(mem, RegisterMode::WP))?);
    uffd.register(a.addr(), a.len(), RegisterMode::WP)
        .map_err(|e| format!("error: register: {e}"))?;
    uffd.writeprotect(a.addr(), a.len(), WriteprotectMode::WP)
        .map_err(|e| format!("error: WRITEPROTECT: {e}"))?;
    let h = Handler::spawn(uffd.clone(), ps, move |u, page| {
        u.writeprotect(page, ps, WriteprotectMode::empty())
            .map_err(|e| format!("un-protect: {e}"))
    });
    let (lat, total) = touch_all(&a, true);
    h.stop()?;
    Ok(summarize(lat, total))
}

/// MOVE of a populated area into a registered one, `chunk` bytes per call.
fn move_rate(mem: MemType, n: usize) -> Result<f64, String> {
    if !mem.is_anon() {
        return Err(format!("UFFDIO_MOVE is for anonymous memory, not {mem}"));
    }
    let missing = crate::caps::caps().missing(Features::MOVE);
    if !missing.is_empty() {
        return Err(format!("kernel lacks {}", missing.join(", ")));
    }
    let src = area(mem, n, false)?;
    let dst = area(mem, n, false)?;
    let uffd = open_uffd(Features::MOVE)?;
    uffd.register(dst.addr(), dst.len(), RegisterMode::MISSING)
        .map_err(|e| format!("error: register: {e}"))?;
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
                Ok(b) => return Err(format!("error: MOVE moved {b} of {len}")),
                Err(e) => return Err(format!("error: MOVE at +{off:#x}: {e}")),
            }
        }
        best = best.max(from.len() as f64 / t.elapsed().as_secs_f64() / (1u64 << 30) as f64);
        if pass == 0 {
            // The way back goes into the emptied source: register it too.
            uffd.register(src.addr(), src.len(), RegisterMode::MISSING)
                .map_err(|e| format!("error: register: {e}"))?;
        }
    }
    Ok(best)
}

fn zeropage_rate(mem: MemType, n: usize) -> Result<f64, String> {
    if mem.is_hugetlb() {
        return Err("UFFDIO_ZEROPAGE is not offered on hugetlb".into());
    }
    register_support(mem, RegisterMode::MISSING)?;
    let a = area(mem, n, false)?;
    let ps = a.page_size();
    let uffd = open_uffd(features_for(mem, RegisterMode::MISSING))?;
    uffd.register(a.addr(), a.len(), RegisterMode::MISSING)
        .map_err(|e| format!("error: register: {e}"))?;
    let t = Instant::now();
    for i in 0..a.npages() {
        uffd.zeropage(a.addr() + i * ps, ps, ZeropageMode::empty())
            .map_err(|e| format!("error: ZEROPAGE: {e}"))?;
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
