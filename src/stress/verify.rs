//! What a stress page holds, and the audit that names every page that went
//! wrong in a bounce: a lost or doubled update, a wrong byte, a page resolved
//! zero or two times, a fault that should or should not have come.
//!
//! Page layout (every page, base or huge): a lock word at 0 (read before it
//! is ever written, so a page's first touch is a read fault, as upstream's
//! mutex makes it), the update counter at 8, a tag naming the page at 16, and
//! from 24 to the end a pattern that is a function of the page number and the
//! word offset, so a page landing at the wrong place or a torn copy shows.

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering::Relaxed};

/// One thing a run found wrong, or could not do, as its report says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding(pub String);

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Finding {}

impl From<Finding> for String {
    fn from(f: Finding) -> String {
        f.0
    }
}

impl From<&str> for Finding {
    fn from(s: &str) -> Finding {
        Finding(s.to_string())
    }
}

impl std::ops::Deref for Finding {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<String> for Finding {
    fn eq(&self, other: &String) -> bool {
        self.0 == *other
    }
}

impl PartialEq<&str> for Finding {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

pub const LOCK: usize = 0;
pub const COUNT: usize = 8;
pub const TAG: usize = 16;
pub const BODY: usize = 24;

const MAGIC: u64 = 0x5546_4644_5354_5253; // "UFFDSTRS"
const SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// The tag word of page `p`.
pub fn tag(p: usize) -> u64 {
    MAGIC ^ p as u64
}

/// Word `w` (counted from the page start) of page `p`'s body.
#[inline]
pub fn pattern(p: usize, w: usize) -> u64 {
    SEED ^ ((p as u64) << 32) ^ w as u64
}

/// Writes page `p`'s initial contents (counter 1) at `addr`.
///
/// # Safety
/// `addr..addr+ps` must be writable memory of this process.
pub unsafe fn init_page(addr: usize, ps: usize, p: usize) {
    let w = addr as *mut u64;
    // SAFETY: the caller guarantees the page is ours and writable.
    unsafe {
        w.write_volatile(0);
        w.add(COUNT / 8).write_volatile(1);
        w.add(TAG / 8).write_volatile(tag(p));
        for i in BODY / 8..ps / 8 {
            w.add(i).write(pattern(p, i));
        }
    }
}

/// Checks every byte of page `p` at `addr`: unlocked, counter `count`, its
/// tag, its pattern. The error says what differs and where.
///
/// # Safety
/// `addr..addr+ps` must be readable memory that no one writes meanwhile.
pub unsafe fn check_page(addr: usize, ps: usize, p: usize, count: u64) -> Result<(), Finding> {
    // SAFETY: forwarded.
    unsafe { check_page_with(addr, ps, p, count, BODY / 8..ps / 8) }
}

/// [`check_page`], of the body only the words `words` (counted from the
/// page start; empty: the header alone, which is the lock, the counter and
/// the tag).
///
/// # Safety
/// As for [`check_page`].
pub unsafe fn check_page_with(
    addr: usize,
    ps: usize,
    p: usize,
    count: u64,
    words: std::ops::Range<usize>,
) -> Result<(), Finding> {
    let w = addr as *const u64;
    // SAFETY: the caller guarantees the page is mapped and quiet.
    let (lock, got, t) = unsafe {
        (
            w.read_volatile(),
            w.add(COUNT / 8).read_volatile(),
            w.add(TAG / 8).read_volatile(),
        )
    };
    if t != tag(p) {
        let from = t ^ MAGIC;
        let why = if from < (1 << 32) {
            format!("holds page {from}'s data")
        } else {
            format!("tag {t:#x}")
        };
        return Err(Finding(format!("page {p}: {why} (counter {got}, expected {count})")));
    }
    if got != count {
        let how = if got < count { "lost" } else { "extra" };
        return Err(Finding(format!(
            "page {p}: counter {got}, expected {count} ({} {how} update(s))",
            got.abs_diff(count)
        )));
    }
    if lock as u32 != 0 {
        return Err(Finding(format!("page {p}: lock word {lock:#x} left held")));
    }
    if words.is_empty() {
        return Ok(());
    }
    let first = words.start.max(BODY / 8);
    let last = words.end.min(ps / 8).max(first);
    // SAFETY: as above.
    let body = unsafe { std::slice::from_raw_parts(w.add(first), last - first) };
    let base = SEED ^ ((p as u64) << 32);
    // One pass without branches first, so the common case stays fast.
    let bad = body
        .iter()
        .enumerate()
        .fold(0u64, |acc, (i, &v)| acc | (v ^ base ^ (i + first) as u64));
    if bad != 0 {
        let (i, v) = body
            .iter()
            .enumerate()
            .find(|&(i, &v)| v != pattern(p, i + first))
            .expect("a differing word");
        let off = (first + i) * 8;
        let nbad = body
            .iter()
            .enumerate()
            .filter(|&(i, &v)| v != pattern(p, i + first))
            .count();
        return Err(Finding(format!(
            "page {p}: byte {off:#x} holds {v:#018x}, expected {:#018x} ({nbad} wrong word(s))",
            pattern(p, off / 8)
        )));
    }
    Ok(())
}

/// Whether page `p`'s body (everything after the header) holds its
/// pattern. Allocates nothing, so a raw-forked child may call it.
///
/// # Safety
/// As for [`check_page`].
pub unsafe fn body_ok(addr: usize, ps: usize, p: usize) -> bool {
    let w = addr as *const u64;
    // SAFETY: forwarded from the caller.
    let body = unsafe { std::slice::from_raw_parts(w.add(BODY / 8), (ps - BODY) / 8) };
    let base = SEED ^ ((p as u64) << 32);
    body.iter()
        .enumerate()
        .fold(0u64, |acc, (i, &v)| acc | (v ^ base ^ (i + BODY / 8) as u64))
        == 0
}

/// Minor-bounce page states: who fills a page from the alias.
pub const EMPTY: u8 = 0;
pub const CLAIMED: u8 = 1;
pub const FILLED: u8 = 2;

/// Which body words every audit compares: all of them, every bounce, so a
/// wrong byte is named by the bounce that made it (a sampled audit would
/// find it only bounces later, if the bytes travelled on unchanged).
pub fn audit_words(ps: usize) -> std::ops::Range<usize> {
    BODY / 8..ps / 8
}

/// Per-page bookkeeping of one bounce, written by every thread.
pub struct Ledger {
    /// Successful COPY/CONTINUE of the page (must end at exactly 1).
    pub resolved: Vec<AtomicU32>,
    pub missing: Vec<AtomicU32>,
    pub wp: Vec<AtomicU32>,
    pub minor: Vec<AtomicU32>,
    /// The counter each page must hold, updated under the page lock.
    pub expect: Vec<AtomicU64>,
    /// `expect` when the bounce started.
    pub start: Vec<AtomicU64>,
    pub state: Vec<AtomicU8>,
}

fn zeros<T: Default>(n: usize) -> Vec<T> {
    (0..n).map(|_| T::default()).collect()
}

/// What a bounce promised, for the audit.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Pages are write-protected from the moment they are resolved.
    pub wp: bool,
    /// The bounce resolved by CONTINUE (minor faults allowed).
    pub minor: bool,
    /// Threads that touch pages: at most this many faults of one kind can
    /// be outstanding on a page at once.
    pub workers: usize,
    /// The body words to compare (see [`audit_words`]).
    pub words: std::ops::Range<usize>,
}

impl Ledger {
    pub fn new(npages: usize) -> Ledger {
        let expect = zeros::<AtomicU64>(npages);
        expect.iter().for_each(|c| c.store(1, Relaxed));
        Ledger {
            resolved: zeros(npages),
            missing: zeros(npages),
            wp: zeros(npages),
            minor: zeros(npages),
            start: zeros(npages),
            state: zeros(npages),
            expect,
        }
    }

    pub fn npages(&self) -> usize {
        self.expect.len()
    }

    /// Clears the per-bounce columns of pages `range`.
    pub fn reset(&self, range: std::ops::Range<usize>) {
        for p in range {
            self.resolved[p].store(0, Relaxed);
            self.missing[p].store(0, Relaxed);
            self.wp[p].store(0, Relaxed);
            self.minor[p].store(0, Relaxed);
            self.state[p].store(EMPTY, Relaxed);
            self.start[p].store(self.expect[p].load(Relaxed), Relaxed);
        }
    }

    /// Audits page `p` of the finished bounce, whose destination page is at
    /// `addr`. Returns every rule it broke.
    ///
    /// # Safety
    /// As for [`check_page`].
    pub unsafe fn audit(&self, p: usize, addr: usize, ps: usize, r: Rules) -> Vec<String> {
        let mut errs = Vec::new();
        let expect = self.expect[p].load(Relaxed);
        let (res, miss, wp, minor) = (
            self.resolved[p].load(Relaxed),
            self.missing[p].load(Relaxed),
            self.wp[p].load(Relaxed),
            self.minor[p].load(Relaxed),
        );
        let how = if r.minor { "CONTINUE" } else { "COPY" };
        if res != 1 {
            errs.push(format!(
                "page {p}: resolved by {res} successful {how}s, expected exactly 1"
            ));
        }
        // SAFETY: forwarded from the caller.
        if let Err(e) = unsafe { check_page_with(addr, ps, p, expect, r.words.clone()) } {
            errs.push(e.0);
        }
        let written = expect - self.start[p].load(Relaxed);
        if miss as usize > r.workers {
            errs.push(format!(
                "page {p}: {miss} MISSING faults from {} threads (one each at most)",
                r.workers
            ));
        }
        if !r.minor && minor != 0 {
            errs.push(format!(
                "page {p}: {minor} MINOR faults in a bounce not registered MINOR"
            ));
        }
        if minor as usize > r.workers {
            errs.push(format!("page {p}: {minor} MINOR faults from {} threads", r.workers));
        }
        if r.wp {
            // Resolved write-protected, so the first write must have trapped;
            // and only a thread about to write (take the lock) can trap.
            if written > 0 && wp == 0 {
                errs.push(format!("page {p}: written {written} times with no WP fault"));
            }
            if written == 0 && wp > 0 {
                errs.push(format!("page {p}: {wp} WP faults but never written"));
            }
        } else if wp != 0 {
            errs.push(format!("page {p}: {wp} WP faults without WP registered"));
        }
        errs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(ps: usize, p: usize) -> Vec<u64> {
        let mut v = vec![0u64; ps / 8];
        // SAFETY: v is ps bytes of our own memory.
        unsafe { init_page(v.as_mut_ptr() as usize, ps, p) };
        v
    }

    fn check(v: &[u64], p: usize, count: u64) -> Result<(), Finding> {
        // SAFETY: v is a whole page of our own memory.
        unsafe { check_page(v.as_ptr() as usize, v.len() * 8, p, count) }
    }

    #[test]
    fn fresh_page_passes() {
        assert_eq!(check(&page(4096, 7), 7, 1), Ok(()));
    }

    #[test]
    fn lost_update_names_page_and_count() {
        let v = page(4096, 3);
        assert_eq!(
            check(&v, 3, 4).unwrap_err(),
            "page 3: counter 1, expected 4 (3 lost update(s))"
        );
    }

    #[test]
    fn misplaced_page_names_its_origin() {
        let v = page(4096, 5);
        assert!(check(&v, 6, 1).unwrap_err().starts_with("page 6: holds page 5's data"));
    }

    #[test]
    fn one_wrong_byte_is_found() {
        let mut v = page(4096, 2);
        v[300] ^= 1 << 40;
        assert_eq!(
            check(&v, 2, 1).unwrap_err(),
            format!(
                "page 2: byte 0x960 holds {:#018x}, expected {:#018x} (1 wrong word(s))",
                pattern(2, 300) ^ (1 << 40),
                pattern(2, 300)
            )
        );
    }

    #[test]
    fn held_lock_is_reported() {
        let mut v = page(4096, 0);
        v[0] = 1;
        assert_eq!(check(&v, 0, 1).unwrap_err(), "page 0: lock word 0x1 left held");
    }

    #[test]
    fn audit_flags_double_resolution_and_silent_write() {
        let v = page(4096, 0);
        let l = Ledger::new(1);
        l.reset(0..1);
        l.resolved[0].store(2, Relaxed);
        l.expect[0].store(1, Relaxed);
        l.start[0].store(0, Relaxed);
        let r = Rules {
            wp: true,
            minor: false,
            workers: 2,
            words: BODY / 8..4096 / 8,
        };
        // SAFETY: v is a whole page of our own memory.
        let errs = unsafe { l.audit(0, v.as_ptr() as usize, 4096, r) };
        assert_eq!(
            errs,
            vec![
                "page 0: resolved by 2 successful COPYs, expected exactly 1".to_string(),
                "page 0: written 1 times with no WP fault".to_string(),
            ]
        );
    }
}
