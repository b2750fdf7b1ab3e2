//! The mm machinery the cross-feature cases meet (KSM, NUMA, guard
//! regions): each a small probe of its own, Err the SKIP reason.

use crate::mem::{Area, MemType};
use nix::errno::Errno;
use std::sync::LazyLock;

/// What this machine lacks for a cross-feature case; Display is the SKIP reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lacks {
    Ksm,
    SecondMemoryNode,
    GuardRegions,
    /// The probe could not make its memory.
    Probe(String),
}

impl std::fmt::Display for Lacks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lacks::Ksm => f.write_str("kernel has no KSM (CONFIG_KSM): /sys/kernel/mm/ksm/run is missing"),
            Lacks::SecondMemoryNode => {
                f.write_str("needs two NUMA nodes with memory; this machine has one (uffdtest vm gives the guest two)")
            }
            Lacks::GuardRegions => f.write_str("kernel has no guard regions (MADV_GUARD_INSTALL → EINVAL; 6.13+)"),
            Lacks::Probe(why) => write!(f, "guard-region probe: {why}"),
        }
    }
}

impl std::error::Error for Lacks {}

/// For cases whose SKIP reasons are strings.
impl From<Lacks> for String {
    fn from(l: Lacks) -> String {
        l.to_string()
    }
}

/// KSM is built in (CONFIG_KSM): `/sys/kernel/mm/ksm/run` exists.
pub fn ksm_support() -> Result<(), Lacks> {
    if std::path::Path::new("/sys/kernel/mm/ksm/run").exists() {
        Ok(())
    } else {
        Err(Lacks::Ksm)
    }
}

/// The NUMA nodes with memory (`/sys/devices/system/node/has_memory`, a
/// list such as `0-1`); a kernel without CONFIG_NUMA has one.
pub fn memory_nodes() -> Vec<u32> {
    let text = std::fs::read_to_string("/sys/devices/system/node/has_memory").unwrap_or_else(|_| "0".into());
    text.trim()
        .split(',')
        .filter(|s| !s.is_empty())
        .flat_map(|r| match r.split_once('-') {
            Some((a, b)) => a.parse().unwrap_or(0)..=b.parse().unwrap_or(0),
            None => {
                let n = r.parse().unwrap_or(0);
                n..=n
            }
        })
        .collect()
}

/// Two NUMA nodes with memory, for migrating between them: Ok((from, to)).
pub fn two_memory_nodes() -> Result<(u32, u32), Lacks> {
    match memory_nodes()[..] {
        [a, b, ..] => Ok((a, b)),
        _ => Err(Lacks::SecondMemoryNode),
    }
}

/// MADV_GUARD_INSTALL (6.13); not in libc 0.2 yet.
pub const MADV_GUARD_INSTALL: i32 = 102;
/// MADV_GUARD_REMOVE (6.13).
pub const MADV_GUARD_REMOVE: i32 = 103;

/// Whether madvise takes MADV_GUARD_INSTALL: installed on one page of a
/// fresh private anonymous mapping of its own. A kernel without guard
/// regions refuses the advice EINVAL.
pub fn guard_regions() -> Result<(), Lacks> {
    static PROBE: LazyLock<Result<(), Lacks>> = LazyLock::new(|| {
        let area = Area::new(MemType::Anon, 1).map_err(|e| Lacks::Probe(e.to_string()))?;
        // SAFETY: advice on our own fresh mapping.
        let r = unsafe { libc::madvise(area.addr() as *mut libc::c_void, area.len(), MADV_GUARD_INSTALL) };
        match Errno::result(r) {
            Ok(_) => Ok(()),
            Err(Errno::EINVAL) => Err(Lacks::GuardRegions),
            Err(e) => panic!("probe: MADV_GUARD_INSTALL on a private anonymous page: {e}"),
        }
    });
    PROBE.clone()
}
