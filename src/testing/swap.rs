//! Paging a range out and proving it left memory, so no swap case goes on
//! from a page MADV_PAGEOUT silently kept (a folio on another CPU's LRU
//! batch, a full device, a kernel that no longer reclaims it).
//!
//! The proof never trusts the call under test: `/proc/self/pagemap` shows
//! a private page's PTE as a swap entry (`PM_SWAP`, not `PM_PRESENT`); a
//! shared shmem page leaves no PTE at all (its swap entry lives in the
//! file), so its VMA's `Swap:` in smaps must grow by the range instead.
//! `mincore(2)` says whether a swapped page still sits in the swap cache.

use super::pagemap::{self, PM_PRESENT, PM_SWAP};
use crate::mem::base_page_size;
use std::time::{Duration, Instant};

/// The SKIP reason of every case that needs a swap device.
pub const NO_SWAP: &str = "no active swap device: the swap-out case needs one";

/// How long MADV_PAGEOUT is asked again for pages still in memory. A folio
/// off the LRU for the moment cannot be isolated: still in another CPU's
/// LRU batch, or isolated by compaction or khugepaged. Under the flake
/// hunter's load in a TCG guest that lasted longer than the 20 tries of
/// 2 ms this once was; a deadlock guard, not a measurement.
const PERSIST: Duration = Duration::from_secs(10);

/// Ok when a swap device is active (the caps probe); Err is [`NO_SWAP`].
pub fn available() -> Result<(), String> {
    if crate::caps::caps().swap {
        Ok(())
    } else {
        Err(NO_SWAP.into())
    }
}

/// The active swap devices, from `/proc/swaps` (`Filename` column).
pub fn devices() -> Vec<String> {
    std::fs::read_to_string("/proc/swaps")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// Ok when every active swap device writes synchronously (zram, pmem,
/// brd: `SWP_SYNCHRONOUS_IO`): reclaim then frees a paged-out folio in the
/// same pass, so the page leaves the swap cache at once. On any other
/// device the folio stays in the swap cache until later reclaim, and no
/// swap entry without a cached folio can be made on purpose. Err is the
/// SKIP reason.
pub fn synchronous() -> Result<(), String> {
    available()?;
    let devs = devices();
    let sync = |d: &str| {
        let name = d.rsplit('/').next().unwrap_or(d);
        d.starts_with("/dev/") && ["zram", "pmem", "ram"].iter().any(|p| name.starts_with(p))
    };
    match devs.iter().find(|d| !sync(d)) {
        None => Ok(()),
        Some(d) => Err(format!(
            "swap device {d} writes asynchronously (not zram/pmem/brd): a paged-out page stays in the swap \
             cache until later reclaim"
        )),
    }
}

fn entries(addr: usize, len: usize) -> Vec<u64> {
    let ps = base_page_size();
    (addr..addr + len)
        .step_by(ps)
        .map(|a| pagemap::entry(a).expect("read /proc/self/pagemap"))
        .collect()
}

/// Whether the mapping holding `addr` is shared (VmFlags `sh`).
fn is_shared(addr: usize) -> bool {
    super::smaps::vma(addr)
        .unwrap_or_else(|| panic!("{addr:#x} is not mapped"))
        .flags
        .iter()
        .any(|f| f == "sh")
}

/// Bytes of the VMA holding `addr` that are out on swap (smaps `Swap:`).
pub fn vma_swap_bytes(addr: usize) -> usize {
    super::smaps::field(addr, "Swap").unwrap_or(0)
}

/// Pages `[addr, addr+len)` out with MADV_PAGEOUT and proves every base
/// page left memory: a private page's PTE is a swap entry; a shared page
/// has no PTE and its VMA's swap grew by exactly `len`. Every page must be
/// mapped (populated) before. Panics with what stayed behind otherwise.
#[track_caller]
pub fn page_out(addr: usize, len: usize) {
    let ps = base_page_size();
    assert!(
        addr.is_multiple_of(ps) && len.is_multiple_of(ps) && len > 0,
        "page_out({addr:#x}, {len:#x}): not whole pages"
    );
    let before = entries(addr, len);
    if let Some(i) = before.iter().position(|e| e & PM_PRESENT == 0) {
        panic!(
            "page_out: page {i} at {:#x} is not mapped before paging out (entry {:#x})",
            addr + i * ps,
            before[i]
        );
    }
    let shared = is_shared(addr);
    let swap_before = vma_swap_bytes(addr);
    let out = |e: &u64| {
        if shared {
            e & (PM_PRESENT | PM_SWAP) == 0
        } else {
            e & (PM_PRESENT | PM_SWAP) == PM_SWAP
        }
    };
    let start = Instant::now();
    let (mut tries, mut pause) = (0, Duration::from_millis(1));
    let now = loop {
        if let Err(e) = super::mm::madvise(addr, len, libc::MADV_PAGEOUT) {
            panic!("MADV_PAGEOUT({addr:#x}, {len:#x}): {e}");
        }
        tries += 1;
        let now = entries(addr, len);
        if now.iter().all(out) || start.elapsed() > PERSIST {
            break now;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    };
    let left: Vec<usize> = (0..now.len()).filter(|&i| !out(&now[i])).collect();
    assert!(
        left.is_empty(),
        "MADV_PAGEOUT left {} of {} pages in memory after {tries} tries in {:?} (SwapFree {:?} kB); first at {:#x}: entry {:#x}",
        left.len(),
        now.len(),
        start.elapsed(),
        crate::mem::meminfo("SwapFree"),
        addr + left[0] * ps,
        now[left[0]]
    );
    if shared {
        assert_eq!(
            vma_swap_bytes(addr) - swap_before,
            len,
            "the shared mapping's smaps Swap: grew by the range paged out"
        );
    }
}

/// `mincore(2)` of each base page of the range: 1 where the page is in
/// memory, which for a swap entry means its folio is in the swap cache.
pub fn mincore(addr: usize, len: usize) -> Vec<u8> {
    let ps = base_page_size();
    let mut v = vec![0u8; len.div_ceil(ps)];
    // SAFETY: v holds one byte per page of the range.
    let r = unsafe { libc::mincore(addr as *mut libc::c_void, len, v.as_mut_ptr()) };
    assert_eq!(r, 0, "mincore: {}", nix::errno::Errno::last());
    v.iter().map(|b| b & 1).collect()
}

/// Pages the range out ([`page_out`]) on a synchronous device and proves
/// no page is left in the swap cache either: only the swap entry remains.
#[track_caller]
pub fn page_out_uncached(addr: usize, len: usize) {
    page_out(addr, len);
    let m = mincore(addr, len);
    assert!(
        m.iter().all(|&b| b == 0),
        "paged out on a synchronous swap device, yet pages stay in the swap cache (mincore {m:?})"
    );
}

/// Reads the swapped-out range back into the swap cache without mapping it
/// (MADV_WILLNEED: swap-in readahead) and proves it: every PTE is still a
/// swap entry (or, shared, still none) while mincore says the page is in
/// memory.
#[track_caller]
pub fn read_into_swap_cache(addr: usize, len: usize) {
    let shared = is_shared(addr);
    super::mm::madvise(addr, len, libc::MADV_WILLNEED).expect("MADV_WILLNEED");
    let end = Instant::now() + Duration::from_secs(10);
    while mincore(addr, len).contains(&0) {
        assert!(
            Instant::now() < end,
            "MADV_WILLNEED read no page back into the swap cache within 10 s (mincore {:?})",
            mincore(addr, len)
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let want = if shared { 0 } else { PM_SWAP };
    let now = entries(addr, len);
    assert!(
        now.iter().all(|e| e & (PM_PRESENT | PM_SWAP) == want),
        "swap-in readahead mapped a page: entries {now:#x?}"
    );
}
