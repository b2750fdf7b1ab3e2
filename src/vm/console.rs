//! Reads the guest's kernel console: finds splats and pins each on the case
//! that was running, from the `uffdtest: start <binary>: <case>` lines the
//! guest writes to /dev/kmsg before each case.

use std::fmt;

/// The kind of kernel report that fails a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplatKind {
    Panic,
    Oops,
    Bug,
    Warning,
    Kasan,
    Lockdep,
    RcuStall,
    SoftLockup,
    HardLockup,
    HungTask,
}

impl fmt::Display for SplatKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SplatKind::Panic => "panic",
            SplatKind::Oops => "Oops",
            SplatKind::Bug => "BUG",
            SplatKind::Warning => "WARNING",
            SplatKind::Kasan => "KASAN",
            SplatKind::Lockdep => "lockdep",
            SplatKind::RcuStall => "RCU stall",
            SplatKind::SoftLockup => "soft lockup",
            SplatKind::HardLockup => "hard lockup",
            SplatKind::HungTask => "hung task",
        })
    }
}

/// Lockdep's report titles (kernel/locking/lockdep.c), which print as
/// `WARNING: <title>` but are not WARN_ON()s.
const LOCKDEP_TITLES: &[&str] = &[
    "possible circular locking dependency",
    "possible recursive locking",
    "inconsistent lock state",
    "suspicious RCU usage",
    "bad unlock balance",
    "held lock freed",
    "lock held when returning to user space",
    "possible irq lock inversion",
    "bad contention detected",
    "Nested lock was not taken",
    "lock held at task exit",
    "chain_key collision",
    "HARDIRQ-safe -> HARDIRQ-unsafe lock order",
    "SOFTIRQ-safe -> SOFTIRQ-unsafe lock order",
];

/// A console line without its printk prefixes: `[   12.345678] `, and the
/// `[    T1] `/`[  C0] ` caller id of CONFIG_PRINTK_CALLER.
///
/// Accepted format: `[ <time>] [ <caller>] text`, either part optional.
pub fn strip_prefix(line: &str) -> &str {
    let mut s = line.trim_end_matches(['\r', '\n']);
    for _ in 0..2 {
        let t = s.trim_start();
        if let Some(rest) = t.strip_prefix('[')
            && let Some((inside, after)) = rest.split_once(']')
            && inside
                .trim()
                .chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'T' | 'C'))
        {
            s = after.strip_prefix(' ').unwrap_or(after);
        }
    }
    s
}

/// The printk time of a console line (`[   12.345678] ...`), in seconds.
pub fn timestamp(line: &str) -> Option<f64> {
    let rest = line.trim_start().strip_prefix('[')?;
    rest.split_once(']')?.0.trim().parse().ok()
}

/// The kind of splat a console line opens, if any.
///
/// Accepted forms (after [`strip_prefix`]): `Kernel panic - not syncing: …`,
/// `Oops: …`, `BUG: KASAN: …`, `BUG: soft lockup - …` (also behind
/// `watchdog: `), `… Watchdog detected hard LOCKUP …`, `BUG: …`,
/// `kernel BUG at …`, `WARNING: <lockdep title>`, `WARNING: CPU: …`,
/// `rcu: INFO: … detected stall…`, `INFO: task … blocked for more than …`,
/// `general protection fault…`, `UBSAN: …`, `BUG: KFENCE: …`.
pub fn classify(line: &str) -> Option<SplatKind> {
    let s = strip_prefix(line);
    let s = s.strip_prefix("watchdog: ").unwrap_or(s);
    if s.starts_with("Kernel panic - not syncing") {
        return Some(SplatKind::Panic);
    }
    if s.starts_with("Oops: ") || s.starts_with("general protection fault") {
        return Some(SplatKind::Oops);
    }
    if s.starts_with("BUG: KASAN:") || s.starts_with("BUG: KFENCE:") {
        return Some(SplatKind::Kasan);
    }
    if s.starts_with("BUG: soft lockup") {
        return Some(SplatKind::SoftLockup);
    }
    if s.contains("Watchdog detected hard LOCKUP") {
        return Some(SplatKind::HardLockup);
    }
    if s.starts_with("BUG: ") || s.starts_with("kernel BUG at ") || s.starts_with("UBSAN: ") {
        return Some(SplatKind::Bug);
    }
    if let Some(title) = s.strip_prefix("WARNING: ") {
        if LOCKDEP_TITLES.iter().any(|t| title.starts_with(t)) {
            return Some(SplatKind::Lockdep);
        }
        return Some(SplatKind::Warning);
    }
    if s.starts_with("rcu: INFO: ") && s.contains("detected stall") {
        return Some(SplatKind::RcuStall);
    }
    if s.starts_with("INFO: task ") && s.contains("blocked for more than") {
        return Some(SplatKind::HungTask);
    }
    None
}

/// The line the guest writes before each case.
pub const START_MARK: &str = "uffdtest: start ";

/// `(binary, case)` from a case announcement.
///
/// Accepted format: `[time] uffdtest: start <binary>: <case>`.
pub fn case_start(line: &str) -> Option<(String, String)> {
    let s = strip_prefix(line);
    let rest = s.find(START_MARK).map(|i| &s[i + START_MARK.len()..])?;
    let (bin, case) = rest.split_once(": ")?;
    Some((bin.to_string(), case.trim().to_string()))
}

/// A splat with the case it happened in and its first lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Splat {
    pub kind: SplatKind,
    /// `(binary, case)` running when it began; None before the first case
    /// (at boot, or in the guest init itself).
    pub case: Option<(String, String)>,
    /// Which pass of `--repeat` that case was in (1-based): how many times
    /// it had started by then.
    pub pass: usize,
    /// The opening line and what followed it, prefixes stripped.
    pub lines: Vec<String>,
}

impl Splat {
    /// One line for a result's reason: `kernel log: WARNING: CPU: 0 PID: …`.
    pub fn summary(&self) -> String {
        format!("kernel log: {}", self.lines.first().map(String::as_str).unwrap_or(""))
    }
}

/// One case announcement in the console.
#[derive(Debug, Clone, PartialEq)]
pub struct Started {
    /// `(binary, case)`.
    pub case: (String, String),
    /// Which pass of `--repeat` this is (1-based): how many times the case
    /// has been announced, this time included.
    pub pass: usize,
    /// The announcement's printk time.
    pub at: Option<f64>,
}

/// How many lines after the opening one a splat keeps.
const SPLAT_CONTEXT: usize = 40;

/// Feeds on console lines one by one; keeps the splats, the running case
/// and the log's tail.
#[derive(Debug, Default)]
pub struct Console {
    pub splats: Vec<Splat>,
    pub current: Option<(String, String)>,
    /// Cases announced, in order.
    pub started: Vec<Started>,
    /// The printk time of the guest init's `guest run done`.
    pub run_done_at: Option<f64>,
    /// Whether the kernel has printed anything yet (boot progress).
    pub kernel_seen: bool,
    /// The kernel halted without powering off (no ACPI): QEMU stays up, so
    /// the host must stop it.
    pub halted: bool,
    tail: std::collections::VecDeque<String>,
    /// Lines still to add to the last splat.
    context_left: usize,
}

/// How many console lines [`Console::tail`] keeps.
pub const TAIL_LINES: usize = 30;

impl Console {
    pub fn feed(&mut self, raw: &str) {
        let line = strip_prefix(raw).to_string();
        if raw.contains("Linux version") {
            self.kernel_seen = true;
        }
        if raw.contains("reboot: System halted") || raw.contains("System halted instead") {
            self.halted = true;
        }
        if raw.contains(super::init::HEARTBEAT) {
            return;
        }
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line.clone());
        if raw.contains(super::init::RUN_DONE) {
            self.run_done_at = timestamp(raw);
        }
        if let Some(c) = case_start(raw) {
            let pass = self.started.iter().filter(|s| s.case == c).count() + 1;
            self.started.push(Started {
                case: c.clone(),
                pass,
                at: timestamp(raw),
            });
            self.current = Some(c);
            self.context_left = 0;
            return;
        }
        if let Some(kind) = classify(raw) {
            // An Oops line after a BUG, or the panic that ends an oops, is
            // the same event; keep it in that splat rather than counting two.
            let same_event = matches!(kind, SplatKind::Panic | SplatKind::Oops) && self.context_left > 0;
            if !same_event {
                // The running case is the last one announced.
                let pass = self.current.as_ref().and(self.started.last()).map_or(0, |s| s.pass);
                self.splats.push(Splat {
                    kind,
                    case: self.current.clone(),
                    pass,
                    lines: vec![line],
                });
                self.context_left = SPLAT_CONTEXT;
                return;
            }
        }
        if self.context_left > 0 {
            self.context_left -= 1;
            if let Some(s) = self.splats.last_mut() {
                s.lines.push(line);
            }
        }
    }

    /// Each announced case's run time by the guest's clock: from its
    /// announcement to the next one (or to `guest run done`). Meaningful
    /// only when the guest ran one case at a time.
    pub fn case_durations(&self) -> Vec<Option<f64>> {
        let ends = self.started.iter().skip(1).map(|s| s.at).chain([self.run_done_at]);
        self.started
            .iter()
            .zip(ends)
            // printk times are whole microseconds: keep the difference so.
            .map(|(s, end)| Some(((end? - s.at?) * 1e6).round() / 1e6).filter(|d| *d >= 0.0))
            .collect()
    }

    /// The last console lines, for a guest that died or went quiet.
    pub fn tail(&self) -> Vec<String> {
        self.tail.iter().cloned().collect()
    }

    /// Whether the kernel panicked (the guest is gone).
    pub fn panicked(&self) -> bool {
        self.splats
            .iter()
            .any(|s| s.kind == SplatKind::Panic || s.lines.iter().any(|l| classify(l) == Some(SplatKind::Panic)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::panic(
        "[    3.1] Kernel panic - not syncing: sysrq triggered crash",
        Some(SplatKind::Panic)
    )]
    #[case::oops(
        "[    3.1] Oops: general protection fault, probably for non-canonical address",
        Some(SplatKind::Oops)
    )]
    #[case::gpf_old("general protection fault: 0000 [#1] SMP", Some(SplatKind::Oops))]
    #[case::null_deref(
        "[ 1.0] BUG: kernel NULL pointer dereference, address: 0000000000000000",
        Some(SplatKind::Bug)
    )]
    #[case::kernel_bug("[ 1.0] kernel BUG at mm/userfaultfd.c:123!", Some(SplatKind::Bug))]
    #[case::kasan(
        "[ 1.0] BUG: KASAN: slab-use-after-free in userfaultfd_release+0x1/0x2",
        Some(SplatKind::Kasan)
    )]
    #[case::warn(
        "[ 1.0] WARNING: CPU: 1 PID: 77 at mm/userfaultfd.c:9 mfill_atomic+0x1/0x2",
        Some(SplatKind::Warning)
    )]
    #[case::lockdep(
        "[ 1.0] WARNING: possible circular locking dependency detected",
        Some(SplatKind::Lockdep)
    )]
    #[case::rcu_lockdep("[ 1.0] WARNING: suspicious RCU usage", Some(SplatKind::Lockdep))]
    #[case::rcu_stall(
        "[ 21.0] rcu: INFO: rcu_preempt self-detected stall on CPU",
        Some(SplatKind::RcuStall)
    )]
    #[case::rcu_stall2(
        "[ 21.0] rcu: INFO: rcu_sched detected stalls on CPUs/tasks:",
        Some(SplatKind::RcuStall)
    )]
    #[case::soft_lockup(
        "[ 26.0] watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [uffd:12]",
        Some(SplatKind::SoftLockup)
    )]
    #[case::hard_lockup(
        "[ 26.0] NMI watchdog: Watchdog detected hard LOCKUP on cpu 1",
        Some(SplatKind::HardLockup)
    )]
    #[case::hung(
        "[ 150.0] INFO: task api:55 blocked for more than 120 seconds.",
        Some(SplatKind::HungTask)
    )]
    #[case::caller_id(
        "[    1.5][    T1] WARNING: CPU: 0 PID: 1 at x.c:1 f+0x0/0x1",
        Some(SplatKind::Warning)
    )]
    #[case::plain("[    0.0] Linux version 6.12.117+deb12-cloud-amd64", None)]
    #[case::hugepages_info("[ 0.5] HugeTLB: registered 2.00 MiB page size, pre-allocated 0 pages", None)]
    #[case::announce("[ 2.0] uffdtest: start api: api_is_sane", None)]
    #[case::rcu_info("[ 0.1] rcu: Hierarchical RCU implementation.", None)]
    fn console_lines_classify(#[case] line: &str, #[case] want: Option<SplatKind>) {
        assert_eq!(classify(line), want);
    }

    #[rstest]
    #[case::timestamped("[    2.345678] uffdtest: start copy: copy_fills on shmem", Some(("copy", "copy_fills on shmem")))]
    #[case::bare("uffdtest: start api: api_is_sane", Some(("api", "api_is_sane")))]
    #[case::other("[ 1.0] uffdtest: done", None)]
    fn announcements_parse(#[case] line: &str, #[case] want: Option<(&str, &str)>) {
        assert_eq!(case_start(line), want.map(|(b, c)| (b.to_string(), c.to_string())));
    }

    fn golden(name: &str) -> Console {
        let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let mut c = Console::default();
        text.lines().for_each(|l| c.feed(l));
        c
    }

    #[test]
    fn panic_mid_case_is_pinned_on_that_case() {
        let c = golden("console-sysrq-panic-mid-case.log");
        assert_eq!(c.splats.len(), 1, "{:?}", c.splats);
        let s = &c.splats[0];
        assert_eq!(s.kind, SplatKind::Panic);
        assert_eq!(
            s.case,
            Some(("api".into(), "handshake_grants_what_was_asked on syscall".into()))
        );
        assert!(c.panicked());
        assert!(s.lines[0].starts_with("Kernel panic - not syncing: sysrq triggered crash"));
    }

    #[test]
    fn warning_then_later_cases_stay_clean() {
        let c = golden("console-warning-in-second-case.log");
        let kinds: Vec<_> = c
            .splats
            .iter()
            .map(|s| (s.kind, s.case.as_ref().map(|c| c.1.as_str())))
            .collect();
        assert_eq!(kinds, [(SplatKind::Warning, Some("copy_fills_missing_page on shmem"))]);
        assert_eq!(c.started.len(), 3);
        assert!(!c.panicked());
        assert!(
            c.splats[0].lines.iter().any(|l| l.starts_with("Call Trace:")),
            "context kept"
        );
    }

    #[test]
    fn panic_before_init_has_no_case() {
        let c = golden("console-panic-before-init.log");
        assert_eq!(c.splats.len(), 1);
        assert_eq!(c.splats[0].kind, SplatKind::Panic);
        assert_eq!(c.splats[0].case, None);
        assert!(c.started.is_empty());
        assert!(c.tail().last().unwrap().starts_with("Kernel Offset:"));
    }

    #[test]
    fn oops_then_panic_counts_once() {
        let c = golden("console-oops-then-panic.log");
        let kinds: Vec<_> = c.splats.iter().map(|s| s.kind).collect();
        assert_eq!(kinds, [SplatKind::Bug]);
        assert!(c.panicked());
    }
}
