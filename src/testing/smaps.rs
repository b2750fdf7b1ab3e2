//! `/proc/self/smaps`: the VMA holding an address, as the kernel sees it.
//!
//! Tests read a range's registered uffd modes from `VmFlags` (`um`, `uw`,
//! `ui`: VM_UFFD_MISSING, _WP, _MINOR, fs/proc/task_mmu.c) and THP use from
//! `AnonHugePages`, so they check REGISTER/UNREGISTER and MOVE without
//! trusting the ioctl's own answer.

use crate::uffd::RegisterMode;

/// One `/proc/self/smaps` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vma {
    pub start: usize,
    pub end: usize,
    /// The two-letter `VmFlags` mnemonics.
    pub flags: Vec<String>,
    /// `AnonHugePages`, in bytes.
    pub anon_huge: usize,
    /// Every `Name: N kB` line, in bytes (`ShmemPmdMapped`, `Rss`...).
    pub sizes: Vec<(String, usize)>,
}

impl Vma {
    /// The uffd modes the VMA is registered in (empty: not registered).
    pub fn uffd_modes(&self) -> RegisterMode {
        let mut m = RegisterMode::empty();
        for (flag, mode) in [
            ("um", RegisterMode::MISSING),
            ("uw", RegisterMode::WP),
            ("ui", RegisterMode::MINOR),
        ] {
            if self.flags.iter().any(|f| f == flag) {
                m |= mode;
            }
        }
        m
    }
}

/// The VMA containing `addr`, or None if `addr` is not mapped.
pub fn vma(addr: usize) -> Option<Vma> {
    let text = std::fs::read_to_string("/proc/self/smaps").expect("read /proc/self/smaps");
    let mut cur: Option<Vma> = None;
    for line in text.lines() {
        // Header lines look like `7f01a2000000-7f01a2200000 rw-p 00000000 00:00 0 [heap]`.
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((s, e)) = first.split_once('-')
            && let (Ok(s), Ok(e)) = (usize::from_str_radix(s, 16), usize::from_str_radix(e, 16))
        {
            if cur.as_ref().is_some_and(|v| v.start <= addr && addr < v.end) {
                break;
            }
            cur = Some(Vma {
                start: s,
                end: e,
                ..Default::default()
            });
            continue;
        }
        let Some(v) = cur.as_mut() else { continue };
        if let Some(rest) = line.strip_prefix("VmFlags:") {
            v.flags = rest.split_whitespace().map(str::to_string).collect();
        } else if let Some((name, rest)) = line.split_once(':')
            && let Some(kb) = rest
                .trim()
                .strip_suffix(" kB")
                .and_then(|n| n.trim().parse::<usize>().ok())
        {
            if name == "AnonHugePages" {
                v.anon_huge = kb * 1024;
            }
            v.sizes.push((name.to_string(), kb * 1024));
        }
    }
    cur.filter(|v| v.start <= addr && addr < v.end)
}

/// Bytes of size field `key` (`ShmemPmdMapped`) of the VMA holding `addr`.
pub fn field(addr: usize, key: &str) -> Option<usize> {
    vma(addr)?.sizes.into_iter().find(|(k, _)| k == key).map(|(_, b)| b)
}

/// The uffd modes of the VMA holding `addr` (empty if unmapped or none).
pub fn uffd_modes(addr: usize) -> RegisterMode {
    vma(addr).map(|v| v.uffd_modes()).unwrap_or_default()
}
