//! Fault signals read exactly: which signal, its `si_code`, `si_addr` and
//! (for memory-failure SIGBUS) `si_addr_lsb`, recorded by the faulting
//! child itself, and the child's death by that same signal.
//!
//! The child's handler writes the siginfo to a page shared with the parent
//! and returns with the handler reset (SA_RESETHAND): the access retries,
//! faults again and the default action kills the child. So a case asserts
//! both what the kernel reported and that it was fatal, and a second,
//! different signal (or none) shows as a mismatch.

use super::*;
use std::sync::atomic::{AtomicU64, Ordering};
use testing::ChildExit;

/// `si_code` values of asm-generic/siginfo.h (SIGSEGV's are not in libc).
pub const SEGV_MAPERR: i32 = 1;
pub const SEGV_ACCERR: i32 = 2;

/// What the kernel put in the siginfo of a fault signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultSignal {
    pub signo: i32,
    pub code: i32,
    pub addr: usize,
    /// `si_addr_lsb`: the size (log2) of what was lost, for BUS_MCEERR_*;
    /// 0 otherwise.
    pub addr_lsb: i16,
}

impl FaultSignal {
    /// UFFD_FEATURE_SIGBUS, or any fault the kernel refuses with
    /// VM_FAULT_SIGBUS: `force_sig_fault(SIGBUS, BUS_ADRERR, address)`.
    pub fn adrerr(addr: usize) -> FaultSignal {
        FaultSignal {
            signo: libc::SIGBUS,
            code: libc::BUS_ADRERR,
            addr,
            addr_lsb: 0,
        }
    }

    /// A poisoned page (a UFFDIO_POISON marker, VM_FAULT_HWPOISON or, on
    /// hugetlb, VM_FAULT_HWPOISON_LARGE): `force_sig_mceerr(BUS_MCEERR_AR,
    /// address, lsb)` with lsb the shift of the page size that is lost.
    /// Without CONFIG_MEMORY_FAILURE x86's do_sigbus sends BUS_ADRERR
    /// instead; the sysctl vm.memory_failure_early_kill exists exactly when
    /// it is built in.
    pub fn poisoned(addr: usize, page_size: usize) -> FaultSignal {
        if !std::path::Path::new("/proc/sys/vm/memory_failure_early_kill").exists() {
            return FaultSignal::adrerr(addr);
        }
        FaultSignal {
            signo: libc::SIGBUS,
            code: libc::BUS_MCEERR_AR,
            addr,
            addr_lsb: page_size.trailing_zeros() as i16,
        }
    }

    /// A write to a present page the VMA does not let it write.
    pub fn accerr(addr: usize) -> FaultSignal {
        FaultSignal {
            signo: libc::SIGSEGV,
            code: SEGV_ACCERR,
            addr,
            addr_lsb: 0,
        }
    }
}

/// How a child that may take a fault signal ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Exited with this code and took no fault signal.
    Exited(i32),
    /// Took exactly one fault signal, this one, and died of it.
    Died(FaultSignal),
    /// Anything else: how it ended, the signals it recorded, the last one.
    Other(ChildExit, u64, Option<FaultSignal>),
}

/// The record page's address, set in the child by [`Recorder::arm`].
static RECORD: AtomicU64 = AtomicU64::new(0);

/// Record layout, in u64 words: count, signo, code, addr, addr_lsb.
extern "C" fn record(sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    let w = RECORD.load(Ordering::Relaxed) as *mut u64;
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler;
    // x86_64's _sigfault keeps si_addr at 16 and si_addr_lsb (a short) at 24.
    unsafe {
        let code = (*info).si_code;
        let addr = (*info).si_addr() as usize;
        let lsb = *((info as *const u8).add(24) as *const i16);
        if !w.is_null() {
            let n = w.read_volatile();
            w.write_volatile(n + 1);
            w.add(1).write_volatile(sig as u64);
            w.add(2).write_volatile(code as u64);
            w.add(3).write_volatile(addr as u64);
            w.add(4).write_volatile(lsb as u16 as u64);
        }
    }
}

/// A page shared with forked children, where a child's handler records
/// the fault signals it takes.
pub struct Recorder {
    page: usize,
    len: usize,
}

impl Recorder {
    pub fn new() -> Recorder {
        let len = mem::base_page_size();
        // Shared, so the parent sees what the child's handler wrote.
        // Unmapped on drop.
        let page =
            testing::mm::map_anon(len, libc::MAP_SHARED).unwrap_or_else(|e| panic!("mmap of the record page: {e}"));
        Recorder { page, len }
    }

    /// In the child, before the access: records the next SIGBUS and the
    /// next SIGSEGV here, then lets the signal's default action happen.
    pub fn arm(&self) -> bool {
        RECORD.store(self.page as u64, Ordering::Relaxed);
        for sig in [libc::SIGBUS, libc::SIGSEGV] {
            // SAFETY: installing a handler in a single-purpose child.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = record as *const () as usize;
                sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESETHAND as libc::c_int;
                if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
                    return false;
                }
            }
        }
        true
    }

    /// How the child ended (`exit`, from waitpid), with what it recorded.
    pub fn ended(&self, exit: ChildExit) -> Ended {
        let w = self.page as *const u64;
        // SAFETY: our shared page; the child is gone.
        let (n, last) = unsafe {
            let n = w.read_volatile();
            let last = FaultSignal {
                signo: w.add(1).read_volatile() as i32,
                code: w.add(2).read_volatile() as i32,
                addr: w.add(3).read_volatile() as usize,
                addr_lsb: w.add(4).read_volatile() as u16 as i16,
            };
            (n, (n > 0).then_some(last))
        };
        match (exit, n, last) {
            (ChildExit::Exited(c), 0, _) => Ended::Exited(c),
            (ChildExit::Signaled(s), 1, Some(l)) if s as i32 == l.signo => Ended::Died(l),
            _ => Ended::Other(exit, n, last),
        }
    }
}

impl Default for Recorder {
    fn default() -> Recorder {
        Recorder::new()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        // SAFETY: the page mapped in new(), referred to by nothing else.
        unsafe { libc::munmap(self.page as *mut libc::c_void, self.len) };
    }
}

/// Runs `f` in a forked child that records any SIGBUS/SIGSEGV it takes
/// (see the module doc); the child exits with `f`'s value if it survives.
pub fn in_signal_child(f: impl FnOnce() -> i32) -> Ended {
    let rec = Recorder::new();
    rec.ended(testing::in_child(|| if rec.arm() { f() } else { 126 }))
}

/// Touches `addr` (a read, or a write of 0x5a) in a forked child
/// ([`in_signal_child`]); `Exited(0)` if the access completed.
pub fn access_in_signal_child(addr: usize, how: testing::Access) -> Ended {
    in_signal_child(|| {
        match how {
            testing::Access::Read => {
                testing::read_byte(addr);
            }
            testing::Access::Write => testing::write_byte(addr, 0x5a),
        }
        0
    })
}
