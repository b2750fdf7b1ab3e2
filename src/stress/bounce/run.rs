//! The orchestration: set a run up, drive its bounces round by round, and
//! gather the totals.

use super::config::{Config, Mode};
use super::sync::{PHASE_BOUNCE, PHASE_QUIT, PHASE_VERIFY, install_kick, kick_signal, seed};
use super::work::Role;
use super::{Bounce, Extra, Failure, HandlerStats, Latch, Totals};
use crate::caps::{features_for, registration_support, require_features};
use crate::mem::{Area, MemType};
use crate::stress::verify::{self, Finding, Ledger};
use crate::uffd::{ContinueMode, Features, OpenFlags, RegisterMode, WriteprotectMode};
use nix::errno::Errno;
use std::io::Write;
use std::sync::atomic::Ordering::{Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

impl Bounce {
    /// Starts a round of `phase` on every thread.
    pub(super) fn round(&self, phase: u8) {
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

    fn set_nonblock(&self, on: bool) -> Result<(), Finding> {
        use nix::fcntl::{FcntlArg, OFlag, fcntl};
        let fl = fcntl(&self.uffd, FcntlArg::F_GETFL).map_err(|e| Finding(format!("F_GETFL: {e}")))?;
        let mut fl = OFlag::from_bits_retain(fl);
        fl.set(OFlag::O_NONBLOCK, on);
        fcntl(&self.uffd, FcntlArg::F_SETFL(fl)).map_err(|e| Finding(format!("F_SETFL: {e}")))?;
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
    fn bounce(&self, n: u64, disrupt: Option<&(dyn Fn(u64) + Sync)>) -> Result<String, Finding> {
        let mode = Mode(n);
        let words = verify::audit_words(self.ps);
        let minor = self.minor_ok && mode.minor();
        self.mode.store(n, Relaxed);
        self.minor.store(minor, Relaxed);
        self.set_nonblock(mode.poll())?;
        let cur = self.cur.load(Relaxed);
        // Released before registering: nothing touches it in between, and
        // with EVENT_REMOVE on, a release after would wait for a reader.
        self.areas[cur]
            .release_all()
            .map_err(|e| Finding(format!("releasing the destination: {e}")))?;
        let dst = self.dst();
        self.uffd
            .register(dst, self.len(), self.register_mode())
            .map_err(|e| Finding(format!("UFFDIO_REGISTER {:?}: {e}", self.register_mode())))?;
        if minor {
            self.uffd
                .register(self.dst_alias(), self.len(), RegisterMode::MISSING)
                .map_err(|e| Finding(format!("UFFDIO_REGISTER MISSING of the alias: {e}")))?;
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
            .map_err(|e| Finding(format!("releasing the source: {e}")))?;
        self.finished.store(true, Relaxed);
        self.work_left.wait();
        self.stop_handlers(mode.poll());
        if self.wp_now() {
            loop {
                match self.uffd.writeprotect(dst, self.len(), WriteprotectMode::empty()) {
                    Err(Errno::EAGAIN) => std::thread::yield_now(),
                    r => break r.map_err(|e| Finding(format!("UFFDIO_WRITEPROTECT(0) of the destination: {e}")))?,
                }
            }
        }
        self.uffd
            .unregister(dst, self.len())
            .map_err(|e| Finding(format!("UFFDIO_UNREGISTER: {e}")))?;
        if minor {
            self.uffd
                .unregister(self.dst_alias(), self.len())
                .map_err(|e| Finding(format!("UFFDIO_UNREGISTER of the alias: {e}")))?;
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
            ", {} updates, {} pages verified ({} bytes each)",
            self.increments.load(Relaxed) - before,
            self.npages,
            verify::BODY + words.len() * 8
        );
        let errs = self.nerrors.load(Relaxed) - errs_before;
        if errs > 0 {
            line += &format!(", {errs} ERRORS");
        }
        self.cur.store(1 - cur, Relaxed);
        Ok(line)
    }

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

fn cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// What the soak hands the run: its extra, and the features it needs.
pub type MakeExtra<'a> = &'a dyn Fn(&MemType) -> Result<(Arc<dyn Extra>, Features), Failure>;

/// Sets a run up: areas, the uffd, the threads' shared state.
fn setup(cfg: &Config, extra: Option<MakeExtra>) -> Result<(Bounce, Option<Features>), Failure> {
    let mem = cfg.mem;
    registration_support(mem, RegisterMode::MISSING)?;
    let wp = registration_support(mem, RegisterMode::WP).is_ok();
    let minor_ok = mem.is_shared() && registration_support(mem, RegisterMode::MINOR).is_ok();
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
    let mut mode = RegisterMode::MISSING;
    mode.set(RegisterMode::WP, wp);
    mode.set(RegisterMode::MINOR, minor_ok);
    let mut features = features_for(mem, mode);
    if wp && mem.is_anon() {
        // Optional: protects the destination's holes too, where offered.
        features |= crate::caps::caps().features & Features::WP_UNPOPULATED;
    }
    let (x, xf) = match extra {
        Some(mk) => {
            let (x, f) = mk(&mem)?;
            (Some(x), Some(f))
        }
        None => (None, None),
    };
    features |= xf.unwrap_or_default();
    let a = Area::new_with(mem, npages, minor_ok)?;
    let b = Area::new_with(mem, npages, minor_ok)?;
    require_features(features)?;
    let uffd = crate::caps::open_uffd(OpenFlags::DEFAULT, features)?;
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
            match b.bounce(n, disrupt.as_ref().map(|d| d as &(dyn Fn(u64) + Sync))) {
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
    if totals.spurious_faults > totals.spurious_bound() {
        b.fail(format!(
            "{} spurious MISSING|WRITE faults, more than the {} that PT-locked PTE clears allow (docs/findings)",
            totals.spurious_faults,
            totals.spurious_bound()
        ));
    }
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

/// Runs the plain bounce test.
pub fn run(cfg: &Config, out: &mut dyn Write) -> Result<Totals, Failure> {
    run_with(cfg, out, None)
}
