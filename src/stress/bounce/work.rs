//! What each thread of a run does in a round: workers update counters
//! under the page locks, background threads fill, and after the bounce the
//! resolvers audit.

use super::Bounce;
use super::sync::{PHASE_BOUNCE, PHASE_QUIT, PHASE_VERIFY, Rng, lock, seed, unlock};
use crate::stress::verify::{self, Rules};
use crate::uffd::WriteprotectMode;
use nix::errno::Errno;
use std::sync::atomic::Ordering::{Acquire, Relaxed};

#[derive(Debug, Clone, Copy)]
pub(super) enum Role {
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

impl Bounce {
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

    /// Audits stripe `i` of `2 * nslices`.
    fn audit_stripe(&self, i: usize) {
        let wid = i;
        let chunk = self.npages.div_ceil(2 * self.nslices);
        let words = verify::audit_words(self.ps);
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

    pub(super) fn thread(&self, role: Role) {
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
}
