//! The bounce stress test, short, on every memory type: workers race on
//! per-page counters while faults are resolved by COPY (or CONTINUE) with
//! write protection, and every page's counter and bytes are audited after
//! every bounce. `uffdtest stress` runs the same engine longer.

mod common;
use common::*;
use uffdtest::stress::bounce::{Config, Failure, Totals};
use uffdtest::stress::verify;

/// 16 bounces cover every combination of the four mode bits.
const BOUNCES: u64 = 16;

fn short(mem: MemType) -> Config {
    let mut c = Config::new(mem);
    // 4096 base pages, or 8 huge pages.
    c.size = sized(mem, 16 << 20);
    c.bounces = Some(BOUNCES);
    c.quiet = true;
    c
}

/// `bytes`, or one page of `mem` per CPU where that is more (1 GiB pages):
/// the engine gives every CPU's workers a slice of whole pages.
fn sized(mem: MemType, bytes: usize) -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    bytes.max(mem.page_size().unwrap_or(0) * cpus)
}

/// Runs `cfg`; returns the totals, or None after printing the SKIP line.
fn run(cfg: &Config, soak: bool) -> Option<Totals> {
    let mut log = Vec::new();
    let r = if soak {
        uffdtest::stress::soak::run(cfg, &mut log)
    } else {
        uffdtest::stress::bounce::run(cfg, &mut log)
    };
    match r {
        Ok(t) => Some(t),
        Err(Failure::Skip(r)) => {
            testing::print_skip(&r);
            None
        }
        Err(f) => panic!("{f}\n{}", String::from_utf8_lossy(&log)),
    }
}

fn assert_audited(t: &Totals, bounces: u64) {
    assert_eq!(t.errors, 0);
    assert_eq!(t.bounces, bounces);
    assert_eq!(
        t.pages_verified,
        t.pages as u64 * bounces,
        "every page audited every bounce"
    );
    // Every byte of every page, every bounce.
    assert_eq!(
        uffdtest::stress::verify::audit_words(t.page_size).len() * 8,
        t.page_size - uffdtest::stress::verify::BODY
    );
    assert_eq!(t.bytes_verified, t.pages as u64 * bounces * t.page_size as u64);
    assert!(t.increments > 0, "workers made no update in {bounces} bounces: {t:?}");
}

/// Spurious faults only on MAP_PRIVATE shmem, and never more than
/// [`Totals::spurious_bound`] there (which the engine also enforces).
fn assert_spurious_bounded(t: &Totals, mem: MemType) {
    if t.spurious_faults > 0 {
        println!(
            "{} spurious MISSING|WRITE fault(s), each on a mapped page (bound {})",
            t.spurious_faults,
            t.spurious_bound()
        );
    }
    let bound = if mem == MemType::ShmemPrivate {
        t.spurious_bound()
    } else {
        0
    };
    assert!(
        t.spurious_faults <= bound,
        "{} spurious faults, at most {bound} possible (only shmem's fault path reports a mapped page missing): {t:?}",
        t.spurious_faults
    );
}

/// Parallel with other bounces but not with a soak: a soak's forks would
/// COW-protect this bounce's pages, uncounted in its `forks`.
#[apply(all_mem)]
#[serial_test::parallel(uffd_event_fork)]
fn bounce_keeps_every_counter_and_byte(#[case] mem: MemType) {
    require_mode!(mem, RegisterMode::MISSING);
    let Some(t) = run(&short(mem), false) else { return };
    assert_audited(&t, BOUNCES);
    assert_eq!(t.forks, 0, "{t:?}");
    assert_spurious_bounded(&t, mem);
    if mem.is_shared() && testing::register_support(mem, RegisterMode::MINOR).is_ok() {
        // Half the mode combinations are minor bounces on shared types.
        assert_eq!(t.minor_bounces, BOUNCES / 2);
    } else {
        assert_eq!(t.minor_bounces, 0);
        assert_eq!(t.minor_faults, 0);
    }
}

#[apply(all_mem)]
fn audit_names_the_corrupted_page(#[case] mem: MemType) {
    let a = try_area!(Area::new(mem, 3));
    let ps = a.page_size();
    for p in 0..3 {
        // SAFETY: pages of our own unregistered area.
        unsafe { verify::init_page(a.page(p), ps, p) };
    }
    // SAFETY: as above; nothing else touches the area.
    unsafe {
        assert_eq!(verify::check_page(a.page(1), ps, 1, 1), Ok(()));
        *((a.page(1) + ps - 1) as *mut u8) ^= 0x80;
        let e = verify::check_page(a.page(1), ps, 1, 1).unwrap_err();
        assert!(e.starts_with(&format!("page 1: byte {:#x} holds", ps - 8)), "{e}");
        assert_eq!(
            verify::check_page(a.page(2), ps, 2, 5).unwrap_err(),
            "page 2: counter 1, expected 5 (4 lost update(s))"
        );
        assert!(
            verify::check_page(a.page(0), ps, 2, 1)
                .unwrap_err()
                .starts_with("page 2: holds page 0's data")
        );
    }
}

/// The soak's disruptions, counted: 16 bounces have 8 poll-mode bounces,
/// which take turns at fork, mremap and MADV_DONTNEED while faults are in
/// flight. Each event must come exactly as often as its cause.
/// Serial: a fork raises UFFD_EVENT_FORK on every EVENT_FORK uffd of the
/// process, so two soaks at once would see (and wait on) each other's.
#[apply(all_mem)]
#[serial_test::serial(uffd_event_fork)]
fn soak_events_arrive_once_per_cause(#[case] mem: MemType) {
    require_mode!(mem, RegisterMode::MISSING);
    require_features!(Features::EVENT_FORK | Features::EVENT_REMAP | Features::EVENT_REMOVE);
    require_root!("UFFD_FEATURE_EVENT_FORK needs CAP_SYS_PTRACE");
    let mut cfg = short(mem);
    cfg.soak = true;
    cfg.size = sized(mem, 4 << 20);
    let Some(t) = run(&cfg, true) else { return };
    assert_audited(&t, BOUNCES);
    // Turns 0..8: fork at 0, 3, 6; mremap at 1, 4, 7; DONTNEED at 2, 5.
    assert_eq!((t.forks, t.fork_events), (3, 3), "{t:?}");
    assert_eq!(t.remap_events, 3, "{t:?}");
    // Each scratch scenario first empties the scratch (one REMOVE); the
    // DONTNEED scenario then drops its filled half (a second).
    assert_eq!(t.remove_events, 3 + 2 * 2, "{t:?}");
    assert_eq!(t.child_pages_verified, 3 * 64, "{t:?}");
    assert_spurious_bounded(&t, mem);
}
