//! What a kernel splat is: the one classifier the host's `/dev/kmsg` watch
//! ([`super::kmsg`]), the guest's console reader (`vm::console`) and the
//! run comparison (`gate::compare`) all use, so a host run and a guest run
//! never disagree about which kernel line fails a case.
//!
//! Owns the splat kinds, the printk prefixes stripped before matching, the
//! context kept after a splat's first line, and the signature runs are
//! compared by.

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

/// Substrings that mark a splat wherever they sit in a line, each with the
/// kind it reports: warnings, BUGs, oopses, sanitizers, lockdep, sleeping in
/// atomic context, RCU stalls, lockups, hung tasks, panics. Older kernels
/// word some of these differently (`INFO: rcu_sched self-detected stall`
/// without `rcu: `), so a splat is any line holding one of them.
pub const SPLAT_MARKERS: &[(&str, SplatKind)] = &[
    ("WARNING:", SplatKind::Warning),
    ("BUG:", SplatKind::Bug),
    ("kernel BUG at", SplatKind::Bug),
    ("Oops", SplatKind::Oops),
    ("general protection fault", SplatKind::Oops),
    ("KASAN", SplatKind::Kasan),
    ("UBSAN", SplatKind::Bug),
    ("KFENCE", SplatKind::Kasan),
    ("possible circular locking", SplatKind::Lockdep),
    ("inconsistent lock state", SplatKind::Lockdep),
    ("possible recursive locking", SplatKind::Lockdep),
    ("sleeping function called from invalid context", SplatKind::Bug),
    ("rcu_sched self-detected stall", SplatKind::RcuStall),
    ("rcu_preempt self-detected stall", SplatKind::RcuStall),
    ("detected stall", SplatKind::RcuStall),
    ("soft lockup", SplatKind::SoftLockup),
    ("hard LOCKUP", SplatKind::HardLockup),
    ("blocked for more than", SplatKind::HungTask),
    ("Kernel panic", SplatKind::Panic),
];

/// Lockdep's report titles (kernel/locking/lockdep.c), which print as
/// `WARNING: <title>` but are not WARN_ON()s.
pub const LOCKDEP_TITLES: &[&str] = &[
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

/// How many lines after a splat's first line are kept (its trace).
pub const SPLAT_CONTEXT: usize = 40;

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

/// A kernel line as a report quotes it, reduced to the kernel's text: the
/// `kmsg: `/`kernel log: ` label, a `<4>` level, then [`strip_prefix`]'s
/// printk prefixes.
///
/// Accepted format: `[kmsg: |kernel log: ][<N>][ <time>][ <caller>] text`.
pub fn strip_quoted(line: &str) -> &str {
    let mut rest = line.trim();
    for label in ["kmsg:", "kernel log:"] {
        rest = rest.strip_prefix(label).unwrap_or(rest).trim_start();
    }
    if rest.starts_with('<')
        && let Some((_, r)) = rest.split_once('>')
    {
        rest = r.trim_start();
    }
    strip_prefix(rest).trim()
}

/// The kind of splat a kernel line opens, if any.
///
/// Accepted forms (after [`strip_prefix`]): `Kernel panic - not syncing: …`,
/// `Oops: …`, `BUG: KASAN: …`, `BUG: soft lockup - …` (also behind
/// `watchdog: `), `… Watchdog detected hard LOCKUP …`, `BUG: …`,
/// `kernel BUG at …`, `WARNING: <lockdep title>`, `WARNING: CPU: …`,
/// `rcu: INFO: … detected stall…`, `INFO: task … blocked for more than …`,
/// `general protection fault…`, `UBSAN: …`, `BUG: KFENCE: …`; then any
/// line holding one of [`SPLAT_MARKERS`].
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
    SPLAT_MARKERS.iter().find(|(m, _)| s.contains(m)).map(|&(_, k)| k)
}

/// Whether a kernel line is (the first line of) a splat.
pub fn is_splat(line: &str) -> bool {
    classify(line).is_some()
}

/// Where a line stands relative to the splats before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The first line of a new splat.
    Opens(SplatKind),
    /// Within [`SPLAT_CONTEXT`] lines after a splat: part of its report.
    Continues,
    /// Outside any splat.
    Outside,
}

/// Follows kernel lines one by one and says which open a splat and which
/// belong to one, so every reader keeps the same context around a splat.
///
/// An Oops after a BUG, or the panic that ends an oops, is the same event:
/// it continues that splat (its trace is kept as long again) rather than
/// opening a second one.
#[derive(Debug, Clone, Default)]
pub struct Tracker {
    /// Lines still to keep for the last splat.
    left: usize,
}

impl Tracker {
    pub fn step(&mut self, line: &str) -> Step {
        match classify(line) {
            Some(kind) => {
                let same_event = matches!(kind, SplatKind::Panic | SplatKind::Oops) && self.left > 0;
                self.left = SPLAT_CONTEXT;
                if same_event { Step::Continues } else { Step::Opens(kind) }
            }
            None if self.left > 0 => {
                self.left -= 1;
                Step::Continues
            }
            None => Step::Outside,
        }
    }

    /// Forgets the splat being followed (a new case began).
    pub fn reset(&mut self) {
        self.left = 0;
    }
}

/// The excerpt to quote for a case: every splat with the lines after it, up
/// to [`SPLAT_CONTEXT`] each. Empty if there was none.
pub fn excerpt(lines: &[String]) -> Vec<String> {
    let mut t = Tracker::default();
    lines.iter().filter(|l| t.step(l) != Step::Outside).cloned().collect()
}

/// The signature of a splat line, or None for any other line: what stays
/// the same when the same bug fires again in another run.
///
/// Accepted format: a kernel line as a report quotes it (see
/// [`strip_quoted`]), such as
/// `[   12.345678] WARNING: CPU: 1 PID: 77 at mm/userfaultfd.c:1234 mfill_atomic+0x1a/0x2b0`
/// → `WARNING: at mm/userfaultfd.c mfill_atomic`.
pub fn signature(line: &str) -> Option<String> {
    if !is_splat(strip_quoted(line)) {
        return None;
    }
    let mut words = Vec::new();
    let mut skip_next = false;
    for w in strip_quoted(line).split_whitespace() {
        if skip_next {
            skip_next = false;
            continue;
        }
        if matches!(w, "CPU:" | "PID:" | "Comm:" | "Tainted:") {
            skip_next = true;
            continue;
        }
        // func+0x1a/0x2b0 → func; file.c:123 → file.c; 0xffff... and bare numbers go.
        let w = w.split("+0x").next().unwrap_or(w);
        let w = match w.rsplit_once(':') {
            Some((f, n)) if !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) => f,
            _ => w,
        };
        if w.starts_with("0x") || w.starts_with("ffff") || w.chars().all(|c| c.is_ascii_digit() || c == '#') {
            continue;
        }
        words.push(w.to_string());
    }
    Some(words.join(" "))
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
    #[case::kfence("BUG: KFENCE: out-of-bounds read in f+0x1/0x2", Some(SplatKind::Kasan))]
    #[case::ubsan("UBSAN: shift-out-of-bounds in mm/userfaultfd.c:1:2", Some(SplatKind::Bug))]
    #[case::warn(
        "[ 1.0] WARNING: CPU: 1 PID: 77 at mm/userfaultfd.c:9 mfill_atomic+0x1/0x2",
        Some(SplatKind::Warning)
    )]
    #[case::lockdep(
        "[ 1.0] WARNING: possible circular locking dependency detected",
        Some(SplatKind::Lockdep)
    )]
    #[case::lockdep_inconsistent("WARNING: inconsistent lock state", Some(SplatKind::Lockdep))]
    #[case::oops_plain("Oops: 0000 [#1] PREEMPT SMP NOPTI", Some(SplatKind::Oops))]
    #[case::rcu_lockdep("[ 1.0] WARNING: suspicious RCU usage", Some(SplatKind::Lockdep))]
    #[case::atomic_sleep(
        "BUG: sleeping function called from invalid context at mm/memory.c:1",
        Some(SplatKind::Bug)
    )]
    #[case::rcu_stall(
        "[ 21.0] rcu: INFO: rcu_preempt self-detected stall on CPU",
        Some(SplatKind::RcuStall)
    )]
    #[case::rcu_stall2(
        "[ 21.0] rcu: INFO: rcu_sched detected stalls on CPUs/tasks:",
        Some(SplatKind::RcuStall)
    )]
    #[case::rcu_stall_old("INFO: rcu_sched self-detected stall on CPU", Some(SplatKind::RcuStall))]
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
    #[case::ordinary("EXT4-fs (vda): mounted filesystem", None)]
    #[case::lowercase("bug fixed in warning handling", None)]
    fn lines_classify(#[case] line: &str, #[case] want: Option<SplatKind>) {
        assert_eq!(classify(line), want);
    }

    #[rstest]
    #[case::plain("text", "text")]
    #[case::time("[   12.345678] text", "text")]
    #[case::time_and_caller("[    1.5][    T1] text", "text")]
    #[case::level_label("kernel log: <1>[    1.0] text", "text")]
    #[case::kmsg_label("kmsg: text", "text")]
    #[case::other_bracket("[uffd] text", "[uffd] text")]
    fn quoted_lines_lose_their_prefixes(#[case] line: &str, #[case] want: &str) {
        assert_eq!(strip_quoted(line), want);
    }

    #[rstest]
    #[case(
        "[   12.345678] WARNING: CPU: 1 PID: 77 at mm/userfaultfd.c:1234 mfill_atomic+0x1a/0x2b0",
        Some("WARNING: at mm/userfaultfd.c mfill_atomic")
    )]
    #[case(
        "kernel log: <1>[    1.0] BUG: unable to handle page fault for address: ffff888001234000",
        Some("BUG: unable to handle page fault for address:")
    )]
    #[case(
        "[    1.5][    T1] WARNING: CPU: 0 PID: 1 at x.c:1 f+0x0/0x1",
        Some("WARNING: at x.c f")
    )]
    #[case("[    0.000000] Linux version 6.12.0", None)]
    fn signature_drops_what_varies(#[case] line: &str, #[case] want: Option<&str>) {
        assert_eq!(signature(line).as_deref(), want);
    }

    #[test]
    fn excerpt_keeps_each_splat_with_its_trace() {
        let mut msgs: Vec<String> = vec!["noise".into(), "WARNING: CPU: 0".into()];
        msgs.extend((0..50).map(|i| format!("trace {i}")));
        let ex = excerpt(&msgs);
        assert_eq!(ex.len(), 1 + SPLAT_CONTEXT);
        assert_eq!(ex[0], "WARNING: CPU: 0");
        assert!(excerpt(&["noise".into()]).is_empty());
    }

    /// The console logs under `tests/data`, line by line.
    fn data_log(name: &str) -> Vec<String> {
        let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        text.lines().map(str::to_string).collect()
    }

    fn opened(name: &str) -> Vec<(SplatKind, String)> {
        let mut t = Tracker::default();
        data_log(name)
            .iter()
            .filter_map(|l| match t.step(l) {
                Step::Opens(k) => Some((k, strip_prefix(l).to_string())),
                _ => None,
            })
            .collect()
    }

    #[rstest]
    #[case::sysrq_panic(
        "console-sysrq-panic-mid-case.log",
        &[(SplatKind::Panic, "Kernel panic - not syncing: sysrq triggered crash")]
    )]
    #[case::warning("console-warning-in-second-case.log", &[(SplatKind::Warning, "WARNING: CPU:")])]
    #[case::panic_before_init("console-panic-before-init.log", &[(SplatKind::Panic, "Kernel panic - not syncing:")])]
    #[case::oops_then_panic("console-oops-then-panic.log", &[(SplatKind::Bug, "BUG: ")])]
    fn data_logs_open_the_splats_they_hold(#[case] log: &str, #[case] want: &[(SplatKind, &str)]) {
        let got = opened(log);
        assert_eq!(got.len(), want.len(), "{got:?}");
        for ((kind, line), (want_kind, want_start)) in got.iter().zip(want) {
            assert_eq!(kind, want_kind, "{line}");
            assert!(line.starts_with(want_start), "{line}");
        }
    }

    #[test]
    fn data_logs_keep_the_oops_and_its_trace_with_the_bug() {
        let lines = data_log("console-oops-then-panic.log");
        let ex = excerpt(&lines);
        assert!(ex.iter().any(|l| classify(l) == Some(SplatKind::Oops)), "{ex:?}");
        assert!(ex.iter().any(|l| classify(l) == Some(SplatKind::Panic)), "{ex:?}");
    }

    #[test]
    fn every_data_log_splat_has_a_signature() {
        for log in [
            "console-sysrq-panic-mid-case.log",
            "console-warning-in-second-case.log",
            "console-panic-before-init.log",
            "console-oops-then-panic.log",
        ] {
            for l in data_log(log) {
                assert_eq!(signature(&l).is_some(), is_splat(&l), "{log}: {l}");
            }
        }
    }
}
