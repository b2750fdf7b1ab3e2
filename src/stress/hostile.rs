//! The flake hunter's hostile machine: the load of [`super::load`] plus the
//! knobs that steer khugepaged and THP, each put back when its guard drops.
//! One place for it, because three callers make the same machine: `uffdtest
//! flakes` on the host, the guest init under `uffdtest vm --under-load`, and
//! `uffdtest load -- COMMAND` around a command such as `cargo test`.

use super::load::{LoadConfig, LoadError, LoadTotals};
use super::load_child::LoadChild;
use crate::knob::Knob;

const THP: &str = "/sys/kernel/mm/transparent_hugepage";

/// One pass's THP policy: global `enabled` and `defrag`, and every mTHP
/// size's `enabled`. Under `never` an anon-thp case gets no huge folio
/// unless it asks for one itself, which is the point.
#[derive(Debug)]
pub struct ThpPolicy {
    enabled: &'static str,
    defrag: &'static str,
    mthp: &'static str,
}

/// The policies the passes of a hunt go through, in turn.
pub const POLICIES: [ThpPolicy; 3] = [
    ThpPolicy {
        enabled: "madvise",
        defrag: "madvise",
        mthp: "inherit",
    },
    ThpPolicy {
        enabled: "always",
        defrag: "always",
        mthp: "always",
    },
    ThpPolicy {
        enabled: "never",
        defrag: "defer",
        mthp: "never",
    },
];

impl ThpPolicy {
    /// The policy of pass `i` (0-based).
    pub fn for_pass(i: usize) -> &'static ThpPolicy {
        &POLICIES[i % POLICIES.len()]
    }

    pub fn name(&self) -> String {
        format!("thp {}/{}, mthp {}", self.enabled, self.defrag, self.mthp)
    }

    /// Sets the policy until the guards drop; knobs this kernel lacks are left out.
    /// Only between passes: a case that sets its own policy (under the `thp`
    /// key) must not see it change under it.
    pub fn apply(&self) -> Vec<Knob> {
        let mut knobs: Vec<Knob> = [("enabled", self.enabled), ("defrag", self.defrag)]
            .into_iter()
            .filter_map(|(f, v)| Knob::set(format!("{THP}/{f}"), v).ok())
            .collect();
        for dir in mthp_dirs() {
            knobs.extend(Knob::set(format!("{dir}/enabled"), self.mthp).ok());
        }
        knobs
    }
}

/// `/sys/kernel/mm/transparent_hugepage/hugepages-<size>kB` of every mTHP size.
fn mthp_dirs() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(THP)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("hugepages-"))
        .map(|e| e.path().display().to_string())
        .collect();
    v.sort();
    v
}

/// khugepaged scanning without pause: a collapse can then land between any
/// two steps of a case.
fn khugepaged_unleashed() -> Vec<Knob> {
    [
        ("scan_sleep_millisecs", "0"),
        ("alloc_sleep_millisecs", "0"),
        ("pages_to_scan", "65536"),
    ]
    .into_iter()
    .filter_map(|(f, v)| Knob::set(format!("{THP}/khugepaged/{f}"), v).ok())
    .collect()
}

/// The load running and khugepaged unleashed, until [`Hostile::stop`] or drop.
pub struct Hostile {
    load: LoadChild,
    cfg: LoadConfig,
    // Dropped after the load has stopped (fields drop in order).
    _khugepaged: Vec<Knob>,
}

impl Hostile {
    /// Starts everything and waits (at most a minute) until the memory churn
    /// has been round once, so the first case already runs under pressure.
    /// The load runs in a process of its own ([`LoadChild`]), so its memory
    /// and mmap_lock are never the runner's.
    pub fn start(cfg: &LoadConfig) -> Result<Hostile, LoadError> {
        let khugepaged = khugepaged_unleashed();
        let load = LoadChild::start(cfg)?;
        Ok(Hostile {
            load,
            cfg: cfg.clone(),
            _khugepaged: khugepaged,
        })
    }

    /// What is running, for the log.
    pub fn describe(&self) -> String {
        format!(
            "{} spinning threads at nice {}, {} MiB churned, compaction every {} ms, khugepaged without sleep",
            self.cfg.cpu_threads,
            self.cfg.nice,
            self.cfg.memory_bytes >> 20,
            self.cfg.compact_every.as_millis()
        )
    }

    pub fn stop(self) -> LoadTotals {
        self.load.stop()
    }
}

/// What the load did, in one line.
pub fn totals_line(t: &LoadTotals) -> String {
    format!(
        "{} churn rounds through reclaim, {} compactions",
        t.churn_rounds, t.compactions
    )
}
