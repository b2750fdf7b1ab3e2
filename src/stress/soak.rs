//! The soak: bounces until time is up, and in every poll-mode bounce one
//! disruption while the bounce's faults are in flight, in turn:
//! - fork (EVENT_FORK): a child reads destination pages; its faults come on
//!   the child's uffd and are served from the parent's source; the child
//!   checks every byte it reads and exits with the count of bad pages;
//! - mremap (EVENT_REMAP) of a scratch area with MREMAP_DONTUNMAP while a
//!   thread is blocked in a fault on it: the event must give the exact
//!   from/to/len, the moved pages keep their bytes, the registration moves
//!   with them, and the held fault still resolves at its old address;
//! - MADV_DONTNEED (EVENT_REMOVE) of the scratch area's filled half while a
//!   thread is blocked in a fault on the other half: the event must give the
//!   exact range, and the dropped pages must fault again.
//!
//! Every scratch scenario starts by emptying the scratch area with
//! MADV_DONTNEED, itself checked for its EVENT_REMOVE. The events hold the
//! mm (mmap_changing), so the bounce's COPY and WRITEPROTECT calls meet
//! EAGAIN meanwhile and must retry.

use super::bounce::{Bounce, Config, Extra, Failure, Totals};
use super::verify::{self, Finding};
use crate::event::{Event, PagefaultFlags};
use crate::mem::{Buf, MemType};
use crate::uffd::{CopyMode, Features, RegisterMode, Uffd};
use nix::errno::Errno;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Scratch pages (base pages, private anonymous).
const NS: usize = 64;
/// Scratch page k carries page number SBASE + k, so it can't pass for a
/// bounce page.
const SBASE: usize = 1 << 24;
/// Pages a fork child reads.
const CHILD_PAGES: usize = 64;
/// What a fork child found wrong with a page: its record's second word.
#[repr(u64)]
#[derive(Clone, Copy, PartialEq, Eq)]
enum Seen {
    Ok = 0,
    Tag = 1,
    Body = 3,
}

/// The soak's additions to a run.
struct Soak {
    ps: usize,
    /// 3 * NS pages: scratch at 0 or at 2 * NS, a gap between.
    base: usize,
    /// Where the scratch area is now.
    cur: AtomicUsize,
    /// Content the scratch pages are filled from.
    sbuf: Buf,
    registered: AtomicBool,
    /// A scratch page whose faults the handlers must leave pending.
    hold: AtomicUsize,
    /// Faults seen at the held address.
    held_faults: AtomicU64,
    /// Non-fault events, for the disruptor to check.
    events: Mutex<Vec<Event>>,
    /// A fork child's uffd, handed from the handler to the disruptor.
    child: Mutex<Option<Uffd>>,
    child_cv: Condvar,
    turn: AtomicU64,
    forks: AtomicU64,
    fork_events: AtomicU64,
    remap_events: AtomicU64,
    remove_events: AtomicU64,
    child_pages: AtomicU64,
    scratch_faults: AtomicU64,
}

const NO_HOLD: usize = usize::MAX;

impl Soak {
    fn new() -> Result<Soak, Failure> {
        let ps = crate::mem::base_page_size();
        let len = 3 * NS * ps;
        // SAFETY: a fresh private anonymous reservation of our own.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(Failure::Setup(format!("mmap scratch: {}", Errno::last())));
        }
        let base = p as usize;
        // SAFETY: the scratch's first slot lies in our reservation.
        let r = unsafe { libc::mprotect(base as *mut libc::c_void, NS * ps, libc::PROT_READ | libc::PROT_WRITE) };
        if r != 0 {
            return Err(Failure::Setup(format!("mprotect scratch: {}", Errno::last())));
        }
        let sbuf = Buf::try_filled(NS * ps, 0)?;
        for k in 0..NS {
            // SAFETY: page k of our buffer.
            unsafe { verify::init_page(sbuf.addr() + k * ps, ps, SBASE + k) };
        }
        Ok(Soak {
            ps,
            base,
            cur: AtomicUsize::new(base),
            sbuf,
            registered: AtomicBool::new(false),
            hold: AtomicUsize::new(NO_HOLD),
            held_faults: AtomicU64::new(0),
            events: Mutex::new(Vec::new()),
            child: Mutex::new(None),
            child_cv: Condvar::new(),
            turn: AtomicU64::new(0),
            forks: AtomicU64::new(0),
            fork_events: AtomicU64::new(0),
            remap_events: AtomicU64::new(0),
            remove_events: AtomicU64::new(0),
            child_pages: AtomicU64::new(0),
            scratch_faults: AtomicU64::new(0),
        })
    }

    fn len(&self) -> usize {
        NS * self.ps
    }

    fn other(&self) -> usize {
        let c = self.cur.load(Relaxed);
        if c == self.base {
            self.base + 2 * self.len()
        } else {
            self.base
        }
    }

    /// Which scratch page `addr` is in, in either slot.
    fn page_of(&self, addr: usize) -> Option<usize> {
        [self.base, self.base + 2 * self.len()]
            .into_iter()
            .find(|&s| addr >= s && addr < s + self.len())
            .map(|s| (addr - s) / self.ps)
    }

    fn take_events(&self) -> Vec<Event> {
        std::mem::take(&mut *self.events.lock().unwrap())
    }

    /// The events a call raised: the call returns once a handler has read
    /// its event, which the handler records a moment later.
    fn raised(&self) -> Vec<Event> {
        let t = Instant::now();
        while self.events.lock().unwrap().is_empty() && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_micros(100));
        }
        self.take_events()
    }

    /// Empties the scratch area with MADV_DONTNEED `[from, to)` pages and
    /// checks the one EVENT_REMOVE it must raise.
    fn dontneed(&self, from: usize, to: usize) -> Result<(), Finding> {
        let s = self.cur.load(Relaxed);
        let (a, b) = (s + from * self.ps, s + to * self.ps);
        // SAFETY: inside our scratch mapping.
        if unsafe { libc::madvise(a as *mut libc::c_void, b - a, libc::MADV_DONTNEED) } != 0 {
            return Err(Finding(format!("scratch MADV_DONTNEED: {}", Errno::last())));
        }
        match &self.raised()[..] {
            [Event::Remove { start, end }] if (*start as usize, *end as usize) == (a, b) => Ok(()),
            evs => Err(Finding(format!(
                "MADV_DONTNEED of scratch {a:#x}..{b:#x}: events {evs:?}, expected one UFFD_EVENT_REMOVE of that range"
            ))),
        }
    }

    /// COPYs scratch pages `[from, to)` in from the buffer.
    fn fill(&self, uffd: &Uffd, from: usize, to: usize) -> Result<(), Finding> {
        let s = self.cur.load(Relaxed);
        loop {
            match uffd.copy(
                s + from * self.ps,
                self.sbuf.addr() + from * self.ps,
                (to - from) * self.ps,
                CopyMode::empty(),
            ) {
                Ok(_) => return Ok(()),
                Err(e) if e.errno == Errno::EAGAIN && e.progress <= 0 => std::thread::yield_now(),
                Err(e) => return Err(Finding(format!("scratch COPY of pages {from}..{to}: {e}"))),
            }
        }
    }

    /// Starts a thread that reads scratch page `k` at `at` and checks it.
    fn reader(at: usize, ps: usize, k: usize) -> std::thread::JoinHandle<Result<(), Finding>> {
        std::thread::spawn(move || {
            // SAFETY: a scratch page; the read blocks until it is resolved.
            unsafe { verify::check_page(at, ps, SBASE + k, 1) }.map_err(|e| Finding(format!("scratch at {at:#x}: {e}")))
        })
    }

    fn wait_held(&self, before: u64) -> Result<(), Finding> {
        let t = Instant::now();
        while self.held_faults.load(Acquire) == before {
            if t.elapsed() > Duration::from_secs(10) {
                return Err("scratch: the held fault never arrived in 10 s".into());
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        Ok(())
    }

    fn join(h: std::thread::JoinHandle<Result<(), Finding>>) -> Result<(), Finding> {
        h.join().unwrap_or_else(|_| Err("scratch reader panicked".into()))
    }

    /// Fills half the scratch, holds a fault on the other half, and runs
    /// `op` with the fault in flight; then lets it resolve and checks it.
    fn with_held_fault(&self, uffd: &Uffd, op: impl FnOnce(usize) -> Result<(), Finding>) -> Result<(), Finding> {
        let half = NS / 2;
        self.dontneed(0, NS)?;
        self.fill(uffd, 0, half)?;
        let j = half + (self.turn.load(Relaxed) as usize % half);
        let s = self.cur.load(Relaxed);
        let before = self.held_faults.load(Acquire);
        self.hold.store(s + j * self.ps, Release);
        let h1 = Soak::reader(s + j * self.ps, self.ps, j);
        let r = self.wait_held(before).and_then(|_| op(j));
        self.hold.store(NO_HOLD, Release);
        let r1 = Soak::join(h1);
        r.and(r1)
    }

    fn remap(&self, uffd: &Uffd) -> Result<(), Finding> {
        let (ps, len) = (self.ps, self.len());
        self.with_held_fault(uffd, |j| {
            let (from, to) = (self.cur.load(Relaxed), self.other());
            // SAFETY: moving our own scratch onto our own reserved slot.
            let p = unsafe {
                libc::mremap(
                    from as *mut libc::c_void,
                    len,
                    len,
                    libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED | libc::MREMAP_DONTUNMAP,
                    to as *mut libc::c_void,
                )
            };
            if p == libc::MAP_FAILED {
                return Err(Finding(format!("mremap(DONTUNMAP) of the scratch: {}", Errno::last())));
            }
            self.cur.store(to, Relaxed);
            match &self.raised()[..] {
                [Event::Remap { from: f, to: t, len: l }]
                    if (*f as usize, *t as usize, *l as usize) == (from, to, len) => {}
                evs => {
                    return Err(Finding(format!(
                        "mremap {from:#x} -> {to:#x} ({len} bytes): events {evs:?}, expected one UFFD_EVENT_REMAP"
                    )));
                }
            }
            // The filled half moved with its bytes; the registration moved
            // too, so an empty page there faults and resolves.
            for k in 0..NS / 2 {
                // SAFETY: a page of the moved scratch, present.
                unsafe { verify::check_page(to + k * ps, ps, SBASE + k, 1) }
                    .map_err(|e| Finding(format!("scratch after mremap: {e}")))?;
            }
            let k2 = NS - 1 - (j - NS / 2);
            let k2 = if k2 == j { NS - 1 } else { k2 };
            Soak::join(Soak::reader(to + k2 * ps, ps, k2))?;
            // The held reader waits at `from + j`, still mapped (DONTUNMAP)
            // and registered: releasing the hold resolves it there.
            Ok(())
        })
    }

    fn remove(&self, uffd: &Uffd) -> Result<(), Finding> {
        let ps = self.ps;
        self.with_held_fault(uffd, |_| {
            self.dontneed(0, NS / 2)?;
            // Dropped pages are missing again: reading one faults.
            let s = self.cur.load(Relaxed);
            let before = self.scratch_faults.load(Relaxed);
            let k = self.turn.load(Relaxed) as usize % (NS / 2);
            Soak::join(Soak::reader(s + k * ps, ps, k))?;
            if self.scratch_faults.load(Relaxed) == before {
                return Err(Finding(format!(
                    "scratch page {k} read after MADV_DONTNEED without a fault"
                )));
            }
            Ok(())
        })
    }

    /// Forks while the bounce runs; the child reads destination pages.
    fn fork(&self, b: &Bounce, seed: u64) -> Result<(), Finding> {
        let (ps, n, dst, src) = (b.ps, b.npages, b.dst(), b.src());
        let private = !b.mem.is_shared();
        // Shared types: only pages already in the page cache, so a child
        // fault can never fill the parent's destination behind its back.
        // Wait (bounded) for the bounce to resolve one, so the child always
        // checks CHILD_PAGES pages however slow the machine is.
        let resolved = || -> Vec<usize> { (0..n).filter(|&p| b.ledger.resolved[p].load(Acquire) > 0).collect() };
        let mut candidates: Vec<usize> = if private { (0..n).collect() } else { resolved() };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while candidates.is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
            candidates = resolved();
        }
        if candidates.is_empty() {
            return Err("fork: no destination page resolved within 10 s".into());
        }
        let mut rng = seed | 1;
        let mut pages = Vec::with_capacity(CHILD_PAGES);
        for _ in 0..CHILD_PAGES {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            pages.push(candidates[(rng % candidates.len() as u64) as usize]);
        }
        let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Finding(format!("pipe: {e}")))?;
        // A raw fork: glibc's fork() holds malloc's locks across the
        // syscall, which waits for a handler to read UFFD_EVENT_FORK, and a
        // handler may be allocating. So the child must not allocate either:
        // it reports each page as a fixed record (page, what, value).
        // SAFETY: clone(SIGCHLD) is fork without glibc's atfork handlers.
        let pid = unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_ulong, 0, 0, 0, 0) } as libc::pid_t;
        if pid < 0 {
            return Err(Finding(format!("fork: {}", Errno::last())));
        }
        if pid == 0 {
            let mut bad = 0;
            for &p in &pages {
                let a = dst + p * ps;
                // SAFETY: a destination page; absent ones fault to the
                // child's uffd, which the parent serves.
                let (t, c) = unsafe {
                    (
                        ((a + verify::TAG) as *const u64).read_volatile(),
                        ((a + verify::COUNT) as *const u64).read_volatile(),
                    )
                };
                let what = if t != verify::tag(p) {
                    bad += 1;
                    Seen::Tag
                // SAFETY: as above.
                } else if !unsafe { verify::body_ok(a, ps, p) } {
                    bad += 1;
                    Seen::Body
                } else {
                    Seen::Ok
                };
                // The parent judges the counter: only it knows the bounds.
                let rec = [p as u64, what as u64, if what == Seen::Tag { t } else { c }];
                // SAFETY: writing our own array to our pipe.
                unsafe { libc::write(wr.as_raw_fd(), rec.as_ptr().cast(), 24) };
            }
            // SAFETY: ends the child without running the parent's atexit.
            unsafe { libc::_exit(bad.min(100)) };
        }
        drop(wr);
        self.forks.fetch_add(1, Relaxed);
        // fork returned, so a handler has read UFFD_EVENT_FORK.
        let cu = {
            let g = self.child.lock().unwrap();
            let (mut g, _) = self
                .child_cv
                .wait_timeout_while(g, Duration::from_secs(10), |c| c.is_none())
                .unwrap();
            g.take()
        };
        let mut errs = Vec::new();
        if cu.is_none() {
            errs.push("fork: no UFFD_EVENT_FORK within 10 s".to_string());
            // Nobody would serve its faults.
            // SAFETY: signalling our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let status = loop {
            if let Some(cu) = &cu
                && let Err(e) = self.serve_child(cu, dst, src, ps, n)
            {
                errs.push(e.0);
            }
            let mut st = 0;
            // SAFETY: waiting for our own child.
            let r = unsafe { libc::waitpid(pid, &mut st, if cu.is_some() { libc::WNOHANG } else { 0 }) };
            if r == pid {
                break st;
            }
        };
        let mut msg = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::fs::File::from(rd), &mut msg);
        let mut seen = 0;
        for rec in msg.chunks_exact(24) {
            let w = |i: usize| u64::from_ne_bytes(rec[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
            let (p, what, v) = (w(0) as usize, w(1), w(2));
            seen += 1;
            match what {
                w if w == Seen::Tag as u64 => errs.push(format!(
                    "fork child: page {p}: tag {v:#x}, expected {:#x}",
                    verify::tag(p)
                )),
                w if w == Seen::Body as u64 => {
                    errs.push(format!("fork child: page {p}: body differs from its pattern"))
                }
                _ => {
                    // The child saw the page as it was at some moment between
                    // the bounce's start and now (a private page as of the
                    // fork, perhaps mid update; a shared one live).
                    let (lo, hi) = (b.ledger.start[p].load(Relaxed), b.ledger.expect[p].load(Relaxed) + 1);
                    if !(lo..=hi).contains(&v) {
                        errs.push(format!("fork child: page {p}: counter {v}, expected {lo}..={hi}"));
                    }
                }
            }
        }
        if seen != pages.len() && libc::WIFEXITED(status) {
            errs.push(format!("fork child reported {seen} of {} pages", pages.len()));
        }
        if !libc::WIFEXITED(status) {
            errs.push(format!("fork child died: wait status {status:#x}"));
        } else if libc::WEXITSTATUS(status) != 0 {
            errs.push(format!("fork child found {} bad page(s)", libc::WEXITSTATUS(status)));
        } else {
            self.child_pages.fetch_add(pages.len() as u64, Relaxed);
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(Finding(errs.join("; ")))
        }
    }

    /// Resolves what the child's uffd has pending, waiting up to 5 ms.
    fn serve_child(&self, cu: &Uffd, dst: usize, src: usize, ps: usize, n: usize) -> Result<(), Finding> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let mut fds = [PollFd::new(cu.as_fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, PollTimeout::from(5u8));
        let evs = match cu.read_events(16, Some(Duration::ZERO)) {
            Ok(v) => v,
            Err(Errno::EAGAIN) => return Ok(()),
            Err(e) => return Err(Finding(format!("read on the child's uffd: {e}"))),
        };
        for ev in evs {
            let Event::Pagefault { flags, address, .. } = ev else {
                return Err(Finding(format!("child's uffd: unexpected {ev:?}")));
            };
            let a = address as usize;
            if a < dst || a >= dst + n * ps {
                return Err(Finding(format!("child fault at {a:#x} outside the destination")));
            }
            let p = (a - dst) / ps;
            let page = dst + p * ps;
            let r = if flags.contains(PagefaultFlags::WP) {
                return Err(Finding(format!("page {p}: WP fault in a child that only reads")));
            } else if flags.contains(PagefaultFlags::MINOR) {
                cu.r#continue(page, ps, Default::default())
            } else {
                cu.copy(page, src + p * ps, ps, CopyMode::empty())
            };
            match r {
                Ok(_) => {}
                Err(e) if e.errno == Errno::EEXIST => {
                    let _ = cu.wake(page, ps);
                }
                Err(e) => return Err(Finding(format!("page {p}: resolving a child fault ({flags:?}): {e}"))),
            }
        }
        Ok(())
    }
}

impl Drop for Soak {
    fn drop(&mut self) {
        // SAFETY: the whole reservation is ours; nothing uses it any more.
        unsafe { libc::munmap(self.base as *mut libc::c_void, 3 * NS * self.ps) };
    }
}

impl Extra for Soak {
    fn owns(&self, addr: u64) -> bool {
        self.page_of(addr as usize).is_some()
    }

    fn fault(&self, uffd: &Uffd, addr: u64, flags: PagefaultFlags) -> Result<bool, Finding> {
        let k = self.page_of(addr as usize).expect("owned");
        let page = addr as usize & !(self.ps - 1);
        if page == self.hold.load(Acquire) {
            self.held_faults.fetch_add(1, Release);
            return Ok(false);
        }
        if flags.intersects(PagefaultFlags::WP | PagefaultFlags::MINOR | PagefaultFlags::WRITE) {
            return Err(Finding(format!("scratch page {k}: unexpected fault flags {flags:?}")));
        }
        self.scratch_faults.fetch_add(1, Relaxed);
        match uffd.copy(page, self.sbuf.addr() + k * self.ps, self.ps, CopyMode::empty()) {
            Ok(_) => Ok(true),
            Err(e) if e.errno == Errno::EEXIST => {
                let _ = uffd.wake(page, self.ps);
                Ok(true)
            }
            Err(e) if e.errno == Errno::EAGAIN && e.progress <= 0 => Ok(false),
            Err(e) => Err(Finding(format!("scratch page {k} at {page:#x}: COPY: {e}"))),
        }
    }

    fn event(&self, ev: Event) -> Result<(), Finding> {
        match ev {
            Event::Fork { uffd } => {
                self.fork_events.fetch_add(1, Relaxed);
                let mut g = self.child.lock().unwrap();
                if g.is_some() {
                    return Err("a second UFFD_EVENT_FORK for one fork".into());
                }
                *g = Some(uffd);
                self.child_cv.notify_all();
                Ok(())
            }
            Event::Remap { .. } => {
                self.remap_events.fetch_add(1, Relaxed);
                self.events.lock().unwrap().push(ev);
                Ok(())
            }
            Event::Remove { .. } => {
                self.remove_events.fetch_add(1, Relaxed);
                self.events.lock().unwrap().push(ev);
                Ok(())
            }
            ev => Err(Finding(format!("unexpected {} event: {ev:?}", ev.name()))),
        }
    }

    fn disrupt(&self, b: &Bounce, seed: u64) -> Result<(), Finding> {
        if !self.registered.swap(true, Relaxed) {
            b.uffd
                .register(self.base, self.len(), RegisterMode::MISSING)
                .map_err(|e| Finding(format!("registering the scratch: {e}")))?;
        }
        let turn = self.turn.fetch_add(1, Relaxed);
        let r = match turn % 3 {
            0 => self.fork(b, seed),
            1 => self.remap(&b.uffd),
            _ => self.remove(&b.uffd),
        };
        let stray = self.take_events();
        if !stray.is_empty() {
            return Err(Finding(format!("events nobody caused: {stray:?}")));
        }
        r
    }

    fn totals(&self, t: &mut Totals) {
        t.forks = self.forks.load(Relaxed);
        t.fork_events = self.fork_events.load(Relaxed);
        t.remap_events = self.remap_events.load(Relaxed);
        t.remove_events = self.remove_events.load(Relaxed);
        t.child_pages_verified = self.child_pages.load(Relaxed);
        t.scratch_faults = self.scratch_faults.load(Relaxed);
    }
}

/// Runs the soak.
pub fn run(cfg: &Config, out: &mut dyn Write) -> Result<Totals, Failure> {
    let mk = |_: &MemType| -> Result<(Arc<dyn Extra>, Features), Failure> {
        let f = Features::EVENT_FORK | Features::EVENT_REMAP | Features::EVENT_REMOVE;
        crate::caps::require_features(f)?;
        Ok((Arc::new(Soak::new()?), f))
    };
    let t = super::bounce::run_with(cfg, out, Some(&mk))?;
    let _ = writeln!(out, "{}", t.line());
    Ok(t)
}
