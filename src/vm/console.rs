//! Reads the guest's kernel console: finds splats (as [`crate::runner::klog`]
//! defines them, the same as the host run) and pins each on the case that was running, from the `uffdtest: start <binary>: <case>` lines the
//! guest writes to /dev/kmsg before each case.

pub use crate::runner::klog::{SplatKind, classify, strip_prefix};
use crate::runner::klog::{Step, Tracker};

/// The printk time of a console line (`[   12.345678] ...`), in seconds.
pub fn timestamp(line: &str) -> Option<f64> {
    let rest = line.trim_start().strip_prefix('[')?;
    rest.split_once(']')?.0.trim().parse().ok()
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
    /// The release from the kernel's `Linux version <release> (...)` banner.
    pub kernel_release: Option<String>,
    /// The kernel halted without powering off (no ACPI): QEMU stays up, so
    /// the host must stop it.
    pub halted: bool,
    tail: std::collections::VecDeque<String>,
    /// Which lines open a splat and which continue the last one.
    tracker: Tracker,
}

/// How many console lines [`Console::tail`] keeps.
pub const TAIL_LINES: usize = 30;

impl Console {
    pub fn feed(&mut self, raw: &str) {
        let line = strip_prefix(raw).to_string();
        if let Some((_, rest)) = raw.split_once("Linux version ") {
            self.kernel_seen = true;
            if self.kernel_release.is_none() {
                self.kernel_release = rest.split_whitespace().next().map(str::to_string);
            }
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
            self.tracker.reset();
            return;
        }
        match self.tracker.step(raw) {
            Step::Opens(kind) => {
                // The running case is the last one announced.
                let pass = self.current.as_ref().and(self.started.last()).map_or(0, |s| s.pass);
                self.splats.push(Splat {
                    kind,
                    case: self.current.clone(),
                    pass,
                    lines: vec![line],
                });
            }
            Step::Continues => {
                if let Some(s) = self.splats.last_mut() {
                    s.lines.push(line);
                }
            }
            Step::Outside => {}
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
