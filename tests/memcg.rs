//! Memory cgroups and the resolving ioctls: a fill beyond the limit fails
//! ENOMEM and leaves the range consistent, and the OOM killer ending a
//! blocked faulter leaves its uffd sane.
//!
//! From mm/userfaultfd.c, mm/shmem.c, mm/hugetlb.c and mm/memcontrol.c
//! (6.12): UFFDIO_COPY's page (`mfill_atomic_pte_copy`,
//! `shmem_mfill_atomic_pte`, `alloc_hugetlb_folio`) and shared shmem's
//! ZEROPAGE page are charged with `mem_cgroup_charge(folio,
//! dst_vma->vm_mm, ..)`: to the registered mm's memcg, not the caller's.
//! A private mapping's ZEROPAGE maps the zero page and CONTINUE maps a page
//! already in the cache: neither charges a page; the page tables and
//! anon_vma they may need are kernel memory charged to the caller. A failed
//! charge over the limit reclaims, then calls the memcg OOM killer; with
//! no victim to choose (v2: every member at oom_score_adj -1000; v1: the
//! cgroup's OOM killer off, which an ioctl's charge does not wait on) the
//! charge fails (hugetlb's 512-page charge never calls the killer: order >
//! COSTLY_ORDER).
//! `mfill_atomic` then stops: ENOMEM with `-ENOMEM` in the progress field
//! on the first page, EAGAIN with the bytes done after some. hugetlb pages
//! are charged only on cgroup2 mounted with `memory_hugetlb_accounting`.
//!
//! The registered mm is a [`Tenant`]'s, placed in the cgroup; this process,
//! outside it, is its monitor.

mod common;
use common::*;
use faulter::next_pagefault;
use nix::errno::Errno;
use std::time::Duration;
use testing::Buf;
use testing::foreign::Words;
use testing::memcg::{Memcg, Tenant, read_remote};
use testing::progress::{failed, rejected};

const MISSING: RegisterMode = RegisterMode::MISSING;

/// How a tenant meets a charge over its cgroup's limit.
#[derive(Clone, Copy, PartialEq)]
enum OverLimit {
    /// The charge fails ([`Memcg::refuse_over_limit`]).
    Fails,
    /// The memcg OOM killer may kill the tenant.
    Kills,
}

/// The cgroup a case runs its tenant in, or the SKIP reason: root for the
/// cgroup files, hugetlb charging for a hugetlb `charged` type, and a way
/// to make charges fail where the case needs one.
fn memcg_for(charged: MemType, over: OverLimit) -> Result<Memcg, String> {
    if !caps::caps().root {
        return Err("needs root: cgroup files and oom_score_adj".into());
    }
    if charged.is_hugetlb() {
        testing::memcg::require_hugetlb_accounting()?;
    }
    if over == OverLimit::Fails {
        testing::memcg::require_charge_refusal()?;
    }
    Ok(Memcg::new()?)
}

/// Pages in an area: enough past the headroom and the per-CPU charge
/// stock (up to 64 base pages precharged) that the limit bites inside it.
fn npages(mem: MemType) -> usize {
    if mem.is_hugetlb() { 3 } else { 160 }
}

/// Room left under the limit: a few base pages, or half a huge page more
/// than one (so exactly one fits).
fn headroom(area: &Area) -> u64 {
    let ps = area.page_size() as u64;
    if area.mem().is_hugetlb() { ps + ps / 2 } else { 16 * ps }
}

/// Byte `off` of page `i`'s data.
fn byte(i: usize, off: usize) -> u8 {
    ((i * 37 + off) % 253) as u8 + 1
}

fn source(area: &Area) -> Buf {
    let ps = area.page_size();
    Buf::paged(ps, area.len() / ps, byte)
}

/// Forks a tenant, puts it in `cg` (meeting the limit as `over` says),
/// and lets it register
/// `areas` in their modes on a uffd offering `features`.
fn tenant(cg: &Memcg, areas: &[(&Area, RegisterMode)], features: Features, over: OverLimit) -> (Tenant, Uffd) {
    let regs: Vec<_> = areas.iter().map(|(a, m)| (a.addr(), a.len(), *m)).collect();
    let t = Tenant::spawn(move || {
        let uffd = testing::open_uffd(features).expect("the parent's probes passed");
        for (addr, len, mode) in regs {
            uffd.register(addr, len, mode)
                .unwrap_or_else(|e| panic!("UFFDIO_REGISTER({mode:?}): {e}"));
        }
        uffd
    });
    cg.enter(t.pid().as_raw());
    if over == OverLimit::Fails {
        cg.refuse_over_limit(t.pid());
    }
    let uffd = t.start();
    (t, uffd)
}

/// How long the other CPUs get to hand their cached charges back: a
/// failed charge drains the per-CPU stocks of precharged pages, the remote
/// ones from a work item, so room can appear just after a failure.
const STOCK_DRAIN: Duration = Duration::from_millis(50);

/// Fills `area` page by page from page `from` with `fill(i)` until the cgroup is full: each
/// page that fits reports one page done, the first that does not ENOMEM
/// with `-ENOMEM` as progress. A failure counts once it holds after
/// [`STOCK_DRAIN`] (before that, the fill goes on where room reappeared).
/// Returns the failing page's index, past page 0.
#[track_caller]
fn fill_until_enomem(area: &Area, from: usize, fill: impl Fn(usize) -> uffd::Progress) -> usize {
    let ps = area.page_size() as i64;
    let mut tried_after_drain = false;
    for i in from..area.npages() {
        loop {
            match fill(i) {
                Ok(n) => {
                    assert_eq!(n, ps, "page {i}");
                    tried_after_drain = false;
                    break;
                }
                e => {
                    assert_eq!(e, failed(Errno::ENOMEM), "page {i}");
                    if tried_after_drain {
                        assert!(i > 0, "not even one page fit in the headroom");
                        return i;
                    }
                    std::thread::sleep(STOCK_DRAIN);
                    tried_after_drain = true;
                }
            }
        }
    }
    panic!("the limit never stopped a fill of {} pages", area.npages());
}

/// Pages before `k` of the tenant's `area` are mapped and hold `want(i)`;
/// page `k` and those after are not mapped.
#[track_caller]
fn assert_filled_before(t: &Tenant, area: &Area, k: usize, want: impl Fn(usize) -> Vec<u8>) {
    let pid = t.pid().to_string();
    for i in 0..area.npages() {
        // Settled: the hunter's compaction migrates these pages mid-check.
        let e = pagemap::settled_entry_of(&pid, area.page(i)).unwrap();
        assert_eq!(
            e & pagemap::PM_PRESENT != 0,
            i < k,
            "page {i} mapped (failed at {k}): {e:#x}"
        );
        if i < k {
            assert!(
                read_remote(t.pid(), area.page(i), area.page_size()) == want(i),
                "page {i} data"
            );
        }
    }
}

/// The shared body of the COPY and shared ZEROPAGE cases: fill until the
/// limit stops it, check the range, then lift the limit and finish.
fn fill_beyond_limit(mem: MemType, zeropage: bool) {
    require_mode!(mem, MISSING);
    let cg = try_skip!(memcg_for(mem, OverLimit::Fails));
    let area = try_area!(Area::new(mem, npages(mem)));
    let (ps, n) = (area.page_size(), area.npages());
    let src = source(&area);
    let (t, uffd) = tenant(&cg, &[(&area, MISSING)], Features::empty(), OverLimit::Fails);
    let fill = |i: usize, pages: usize| {
        if zeropage {
            uffd.zeropage(area.page(i), pages * ps, ZeropageMode::empty())
        } else {
            uffd.copy(area.page(i), src.addr() + i * ps, pages * ps, CopyMode::empty())
        }
    };
    let want = |i: usize| {
        if zeropage {
            vec![0; ps]
        } else {
            src.bytes(n * ps)[i * ps..][..ps].to_vec()
        }
    };
    cg.limit_headroom(headroom(&area));
    // One fill of the whole range stops at the first page that does not
    // fit and reports the bytes done with EAGAIN, not the ENOMEM.
    let done = match fill(0, n) {
        Err(uffd::Partial {
            errno: Errno::EAGAIN,
            progress,
        }) => progress,
        r => panic!("a fill of all {n} pages over the limit: {r:?}"),
    };
    assert!(
        done > 0 && done < (n * ps) as i64 && done % ps as i64 == 0,
        "{done} bytes done"
    );
    let first = done as usize / ps;
    assert_filled_before(&t, &area, first, want);
    // Page by page on: the page that does not fit fails ENOMEM itself.
    let k = fill_until_enomem(&area, first, |i| fill(i, 1));
    assert!(k + 1 < n, "the limit let {k} of {n} pages in");
    // A range that starts at the page that does not fit fails at once.
    assert_eq!(fill(k, 2), failed(Errno::ENOMEM), "a range from page {k}");
    assert_filled_before(&t, &area, k, want);
    assert_eq!(cg.oom_kills(), 0, "nobody is killable: the charge failed instead");
    // The page that did not fit is still missing: with the limit lifted, a
    // read of it reaches us as a MISSING fault, and the fill now serves it.
    cg.limit(None);
    t.read(area.page(k) + 5);
    assert_eq!(next_pagefault(&uffd), (PagefaultFlags::empty(), area.page(k)));
    assert_eq!(fill(k, 1), Ok(ps as i64));
    assert_eq!(t.answer(), if zeropage { 0 } else { byte(k, 5) });
    assert_eq!(fill(k + 1, n - k - 1), Ok(((n - k - 1) * ps) as i64));
    assert_filled_before(&t, &area, n, want);
    assert_eq!(t.finish(HANG_GUARD), testing::ChildExit::Exited(0));
}

#[apply(all_mem)]
fn copy_beyond_memory_max_fails_enomem_and_leaves_the_rest_missing(#[case] mem: MemType) {
    fill_beyond_limit(mem, false);
}

/// Where ZEROPAGE allocates a page: shared shmem's page cache.
#[rstest]
#[case::shmem(MemType::Shmem)]
fn zeropage_beyond_memory_max_fails_enomem_on_shared_shmem(#[case] mem: MemType) {
    fill_beyond_limit(mem, true);
}

/// Private mappings, where ZEROPAGE maps the shared zero page.
#[template]
#[rstest]
#[case::anon(MemType::Anon)]
#[case::shmem_private(MemType::ShmemPrivate)]
#[case::anon_thp(MemType::AnonThp)]
fn zeropage_private(#[case] mem: MemType) {}

/// Runs `act` with the tenant's cgroup full, and checks it charged
/// nothing there: the tenant registers `target` and an anonymous area that
/// COPY fills up to the limit first; after `act` the cgroup's usage has
/// not grown, the page that did not fit still does not, and nobody died.
fn at_the_limit(cg: &Memcg, target: (&Area, RegisterMode), features: Features, act: impl FnOnce(&Uffd, &Tenant)) {
    let full = Area::new(MemType::Anon, npages(MemType::Anon)).expect("anonymous memory");
    let (src, ps) = (source(&full), full.page_size());
    let (t, uffd) = tenant(cg, &[target, (&full, MISSING)], features, OverLimit::Fails);
    cg.limit_headroom(headroom(&full));
    let copy = |i: usize| uffd.copy(full.page(i), src.addr() + i * ps, ps, CopyMode::empty());
    let k = fill_until_enomem(&full, 0, copy);
    let before = cg.usage();
    act(&uffd, &t);
    // Not grown (it may shrink: kernel objects are uncharged lazily).
    let after = cg.usage();
    assert!(
        after <= before,
        "charged to the tenant's cgroup: {before} -> {after} bytes"
    );
    assert_eq!(copy(k), failed(Errno::ENOMEM), "the cgroup is still full");
    assert_eq!(cg.oom_kills(), 0);
    assert_eq!(t.finish(HANG_GUARD), testing::ChildExit::Exited(0));
}

#[apply(zeropage_private)]
fn zeropage_on_a_private_mapping_charges_nothing_beyond_memory_max(#[case] mem: MemType) {
    require_mode!(mem, MISSING);
    let cg = try_skip!(memcg_for(mem, OverLimit::Fails));
    let area = try_area!(Area::new(mem, 8));
    at_the_limit(&cg, (&area, MISSING), Features::empty(), |uffd, t| {
        assert_eq!(
            uffd.zeropage(area.addr(), area.len(), ZeropageMode::empty()),
            Ok(area.len() as i64)
        );
        assert_filled_before(t, &area, area.npages(), |_| vec![0; area.page_size()]);
    });
}

#[apply(file_mem)]
fn continue_charges_nothing_beyond_memory_max(#[case] mem: MemType) {
    const MINOR: RegisterMode = RegisterMode::MINOR;
    require_mode!(mem, MINOR);
    let cg = try_skip!(memcg_for(MemType::Anon, OverLimit::Fails));
    let area = try_area!(Area::with_alias(mem, 3));
    for i in 0..area.npages() {
        fill_alias_page(&area, i, byte(i, 0));
    }
    let features = caps::features_for(mem, MINOR);
    at_the_limit(&cg, (&area, MINOR), features, |uffd, t| {
        assert_eq!(
            uffd.r#continue(area.addr(), area.len(), ContinueMode::empty()),
            Ok(area.len() as i64)
        );
        assert_filled_before(t, &area, area.npages(), |i| vec![byte(i, 0); area.page_size()]);
    });
}

/// Room for the calling child's own faults (its code pages are read in
/// and charged as it runs), below what it copies.
const CALLER_HEADROOM: u64 = 1 << 20;

#[apply(all_mem)]
fn copy_by_a_caller_in_a_full_memcg_charges_the_registered_mm(#[case] mem: MemType) {
    let cg = try_skip!(memcg_for(mem, OverLimit::Kills));
    let n = (4 * CALLER_HEADROOM as usize)
        .div_ceil(mem.page_size().unwrap_or(1 << 30))
        .max(2);
    let (area, uffd) = try_skip!(registered_missing(mem, n, Features::empty(), |_| {}));
    let ps = area.page_size();
    let src = source(&area);
    let words = Words::new();
    // This process, outside the cgroup, owns the registered mm; the caller
    // (a child holding the same uffd) is in it, with a headroom far below
    // what it copies.
    let caller = testing::in_child(|| {
        cg.enter(0);
        cg.limit_headroom(CALLER_HEADROOM);
        words.set_progress(0, uffd.copy(area.addr(), src.addr(), n * ps, CopyMode::empty()));
        0
    });
    assert_eq!(caller, testing::ChildExit::Exited(0));
    assert_eq!(words.progress(0), Ok((n * ps) as i64));
    assert!(area.read(area.addr(), n * ps) == src.bytes(n * ps), "the copied data");
    assert_eq!(cg.oom_kills(), 0);
}

#[apply(all_mem)]
fn oom_kill_of_a_blocked_faulter_leaves_the_uffd_sane(#[case] mem: MemType) {
    require_mode!(mem, MISSING);
    let cg = try_skip!(memcg_for(MemType::Anon, OverLimit::Kills));
    let area = try_area!(Area::new(mem, 2));
    let ps = area.page_size();
    let (mine, my_uffd) = try_skip!(registered_missing(mem, 1, Features::empty(), |_| {}));
    let src = Buf::filled(ps, 0x3c);
    // A tenant the OOM killer may choose, blocked on its page 0.
    let (t, uffd) = tenant(&cg, &[(&area, MISSING)], Features::empty(), OverLimit::Kills);
    cg.limit_headroom(4 << 20);
    t.read(area.page(0));
    assert!(
        testing::parked::wait_readable(&uffd, HANG_GUARD),
        "the tenant's fault never queued"
    );
    t.hog();
    assert_eq!(
        t.finish(HANG_GUARD),
        testing::ChildExit::Signaled(nix::sys::signal::Signal::SIGKILL)
    );
    assert_eq!(cg.oom_kills(), 1, "the memcg OOM killer ended the tenant");
    // The faulter took its unread message with it (handle_userfault
    // unlinks its own wait entry when a fatal signal wakes it).
    assert!(matches!(uffd.read_event(Some(Duration::ZERO)), Ok(None)));
    // The mm is gone: the fills refuse before their loop, WAKE has no one
    // to wake, registration calls find no mm (mmget_not_zero fails).
    let at = area.page(0);
    assert_eq!(uffd.copy(at, src.addr(), ps, CopyMode::empty()), rejected(Errno::ESRCH));
    assert_eq!(uffd.zeropage(at, ps, ZeropageMode::empty()), rejected(Errno::ESRCH));
    assert_eq!(uffd.wake(at, ps), Ok(()));
    assert_eq!(uffd.unregister(at, ps), Err(Errno::ENOMEM));
    assert_eq!(uffd.register(at, ps, MISSING), Err(Errno::ENOMEM));
    // Our own registration of the same type is untouched.
    let r = blocked_reader(&my_uffd, mine.page(0));
    assert_eq!(
        uffd.copy(mine.page(0), src.addr(), ps, CopyMode::empty()),
        rejected(Errno::ESRCH)
    );
    assert_eq!(
        my_uffd.copy(mine.page(0), src.addr(), ps, CopyMode::empty()),
        Ok(ps as i64)
    );
    assert_eq!(r.join(), 0x3c);
}
