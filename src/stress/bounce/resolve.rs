//! What the handler threads do: read the uffd, resolve each fault by the
//! bounce's rules (COPY, CONTINUE, un-protect), and account for it; and the
//! background fill that races them.

use super::Bounce;
use crate::event::{Event, PagefaultFlags};
use crate::stress::verify::{CLAIMED, EMPTY, FILLED};
use crate::sys;
use crate::uffd::{ContinueMode, CopyMode, Progress, WriteprotectMode};
use nix::errno::Errno;
use std::os::fd::AsFd;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::time::Duration;

/// What a resolving call came to.
pub(super) enum Res {
    Done,
    /// EAGAIN with no progress: an event holds the mm (mmap_changing).
    Again,
}

impl Bounce {
    /// COPY of page `p` from the source by a handler.
    fn resolve_copy(&self, p: usize) -> Res {
        let (dst, src) = (self.dst() + p * self.ps, self.src() + p * self.ps);
        let r = self.uffd.copy(dst, src, self.ps, self.copy_mode());
        self.settle(p, r, "UFFDIO_COPY", "UFFDIO_COPY in a handler")
    }

    /// Accounts for a one-page resolving ioctl on page `p`: `name` in the
    /// message of a short answer, `what` in that of a failure.
    fn settle(&self, p: usize, r: Progress, name: &str, what: &str) -> Res {
        match r {
            Ok(n) if n as usize == self.ps => {
                self.ledger.resolved[p].fetch_add(1, Relaxed);
            }
            Ok(n) => self.fail(format!("page {p}: {name} of one page reported {n} bytes")),
            Err(e) if e.errno == Errno::EEXIST => self.wake(p),
            Err(e) if e.errno == Errno::EAGAIN && e.progress <= 0 => return Res::Again,
            Err(e) => self.fail(format!("page {p}: {what}: {e}")),
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

    pub(super) fn wake(&self, p: usize) {
        if let Err(e) = self.uffd.wake(self.dst() + p * self.ps, self.ps) {
            self.fail(format!("page {p}: UFFDIO_WAKE: {e}"));
        }
    }

    /// Minor bounces: whoever claims page `p` first fills it through the
    /// alias; anyone who needs it mapped, once it is filled, CONTINUEs
    /// (EEXIST: someone else mapped it first; wake).
    pub(super) fn resolve_minor(&self, p: usize) -> Res {
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
        let r = self.uffd.r#continue(self.dst() + p * self.ps, self.ps, mode);
        self.settle(p, r, "UFFDIO_CONTINUE", "UFFDIO_CONTINUE")
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

    /// Fills pages `r` of the destination: COPY in batches, or per page
    /// claim-fill-CONTINUE in minor bounces.
    pub(super) fn fill(&self, r: std::ops::Range<usize>, check_eexist: &mut bool) {
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

    pub(super) fn handler(&self, h: usize) {
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
                    self.fail("poll on the uffd: POLLERR");
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
}
