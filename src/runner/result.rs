//! The one result model: what the runner produces, what the KTAP parser reads
//! back, and what every report (KTAP, JUnit, JSON, summary) is written from.
//!
//! A [`Report`] is a tree of [`TestResult`]s as KTAP nests them: the runner
//! makes one group per test binary holding one leaf per case; a parsed log
//! keeps whatever depth it had. Counts are over leaves, as kunit counts.

use serde::{Deserialize, Serialize};

/// How a test ended. Kept apart the way nextest keeps them (failed by exit
/// code, by signal, timeout, could not start), plus skip with its reason and
/// kunit's "crashed" for a result line that never came.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pass,
    /// Ran and failed: assertion, panic, nonzero exit, a signal, or a kernel
    /// splat during the case (`reason` says which).
    Fail,
    Skip,
    /// Killed at its deadline.
    Timeout,
    /// Could not be run at all (binary missing, listing failed, interrupted).
    Error,
    /// Its result line never appeared (the log ended early: a panic, a hang).
    Crashed,
    /// Expected failure (kselftest XFAIL); counts as a pass for the verdict.
    Xfail,
    /// Unexpectedly passed (kselftest XPASS); counts as a failure.
    Xpass,
}

impl Status {
    /// Whether this status fails a gate (kselftest: an XPASS fails, a skip does not).
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Status::Fail | Status::Timeout | Status::Error | Status::Crashed | Status::Xpass
        )
    }

    /// `ok` or `not ok` on a KTAP result line.
    pub fn is_ok(self) -> bool {
        !self.is_failure()
    }

    pub fn name(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Skip => "skip",
            Status::Timeout => "timeout",
            Status::Error => "error",
            Status::Crashed => "crashed",
            Status::Xfail => "xfail",
            Status::Xpass => "xpass",
        }
    }

    /// The worse of two, for bubbling a group's status up from its cases
    /// (crashed beats error beats timeout beats failed beats passed beats skipped).
    pub fn worst(self, other: Status) -> Status {
        if other.rank() > self.rank() { other } else { self }
    }

    fn rank(self) -> u8 {
        match self {
            Status::Skip => 0,
            Status::Pass | Status::Xfail => 1,
            Status::Xpass | Status::Fail => 2,
            Status::Timeout => 3,
            Status::Error => 4,
            Status::Crashed => 5,
        }
    }
}

/// One test: a leaf (a case) or a group (a test binary, or any KTAP parent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestResult {
    /// The KTAP description: `copy_fills_missing_page on shmem`, or the binary name.
    pub name: String,
    pub status: Status,
    /// Skip reason, failure summary (`exit status 101`, `killed by signal SIGSEGV`,
    /// `kernel log: WARNING: ...`, `timed out after 60 s`), or error cause.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Wall time of the case, when it was run (not known from a parsed log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_secs: Option<f64>,
    /// CPU (user + system) of the case's process and the children it
    /// waited for, from wait4(2): where a run's time goes, case by case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_secs: Option<f64>,
    /// When the case started, seconds since the epoch (for the runner's cases).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_unix: Option<f64>,
    /// The libtest name (`copy_fills_missing_page::case_2_shmem`), for leaves the runner made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<String>,
    /// The case variant taken from the libtest case suffix, `_` read as `-`
    /// (for the suite: the memory type). None for non-parametrised tests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// The exit code, when the process exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The signal that killed it (`SIGSEGV`), when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// The diagnostic lines that go before its KTAP result line (the failure
    /// message, notes), without the `# ` prefix.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub diagnostics: Vec<String>,
    /// Kernel log lines seen during the case (a splat and its context).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kmsg: Vec<String>,
    /// The whole captured output (stdout and stderr interleaved), kept beside
    /// the result as kunit keeps its raw log. Not written to KTAP.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub output: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subtests: Vec<TestResult>,
}

impl TestResult {
    pub fn new(name: impl Into<String>, status: Status) -> TestResult {
        TestResult {
            name: name.into(),
            status,
            reason: None,
            duration_secs: None,
            cpu_secs: None,
            start_unix: None,
            test: None,
            variant: None,
            exit_code: None,
            signal: None,
            diagnostics: Vec::new(),
            kmsg: Vec::new(),
            output: String::new(),
            subtests: Vec::new(),
        }
    }

    pub fn with_reason(mut self, reason: impl Into<String>) -> TestResult {
        self.reason = Some(reason.into());
        self
    }

    /// A group whose status bubbles up from its subtests: failed if any failed,
    /// skipped if all skipped (KTAP's bubbling rule).
    pub fn group(name: impl Into<String>, subtests: Vec<TestResult>) -> TestResult {
        let mut g = TestResult::new(name, Status::Pass);
        g.subtests = subtests;
        g.status = g.bubbled();
        if g.status == Status::Skip {
            g.reason = Some("all cases skipped".into());
        }
        g
    }

    /// The status the subtests imply (Pass for an empty group).
    pub fn bubbled(&self) -> Status {
        let mut it = self.subtests.iter().map(|t| t.status);
        let Some(first) = it.next() else {
            return self.status;
        };
        let worst = it.fold(first, Status::worst);
        match worst {
            Status::Xfail => Status::Pass,
            Status::Crashed => Status::Fail,
            s if s.is_failure() => Status::Fail,
            s => s,
        }
    }

    /// Leaves under (or being) this test.
    pub fn leaves(&self) -> Vec<&TestResult> {
        if self.subtests.is_empty() {
            return vec![self];
        }
        self.subtests.iter().flat_map(|t| t.leaves()).collect()
    }
}

/// kselftest's counters, over leaves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub pass: usize,
    /// Failed, timed out, crashed or XPASS.
    pub fail: usize,
    pub xfail: usize,
    pub xpass: usize,
    pub skip: usize,
    /// Could not run.
    pub error: usize,
}

impl Totals {
    pub fn add(&mut self, s: Status) {
        match s {
            Status::Pass => self.pass += 1,
            Status::Fail | Status::Timeout | Status::Crashed => self.fail += 1,
            Status::Skip => self.skip += 1,
            Status::Error => self.error += 1,
            Status::Xfail => self.xfail += 1,
            Status::Xpass => self.xpass += 1,
        }
    }

    pub fn total(&self) -> usize {
        self.pass + self.fail + self.xfail + self.xpass + self.skip + self.error
    }

    /// kselftest's exit code: 0 all passed (skips allowed), 1 any failure,
    /// 4 everything skipped. An empty run is a failure ("no cases ran").
    pub fn exit_code(&self) -> i32 {
        if self.fail + self.xpass + self.error > 0 || self.total() == 0 {
            1
        } else if self.skip == self.total() {
            4
        } else {
            0
        }
    }

    /// `# Totals: pass:N fail:N xfail:0 xpass:0 skip:N error:N` (without the `# `).
    pub fn ktap_line(&self) -> String {
        format!(
            "Totals: pass:{} fail:{} xfail:{} xpass:{} skip:{} error:{}",
            self.pass, self.fail, self.xfail, self.xpass, self.skip, self.error
        )
    }

    /// The plain closing line: `N passed, N failed, N skipped`, where failed
    /// counts everything that fails the gate (fail, xpass, error).
    pub fn summary_line(&self) -> String {
        format!(
            "{} passed, {} failed, {} skipped",
            self.pass + self.xfail,
            self.fail + self.xpass + self.error,
            self.skip
        )
    }
}

/// A whole run, or a whole parsed log.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Top-level tests: for the runner, one group per test binary.
    pub tests: Vec<TestResult>,
    /// Diagnostics that belong to no test (run notes; for a parsed log,
    /// lines before the first test).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub diagnostics: Vec<String>,
    /// Problems found while parsing a log (wrong numbering, missing plan lines).
    /// Empty for a run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parse_errors: Vec<String>,
    /// The run was stopped by a signal before every case ran.
    #[serde(default)]
    pub interrupted: bool,
    /// When the run started, seconds since the epoch (not known from a parsed log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_unix: Option<f64>,
}

impl Report {
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for leaf in self.tests.iter().flat_map(|t| t.leaves()) {
            t.add(leaf.status);
        }
        t
    }

    /// Every leaf with its path from the top (`["copy", "copy_fills_missing_page on shmem"]`).
    pub fn leaves(&self) -> Vec<(Vec<&str>, &TestResult)> {
        fn walk<'a>(t: &'a TestResult, path: &mut Vec<&'a str>, out: &mut Vec<(Vec<&'a str>, &'a TestResult)>) {
            path.push(&t.name);
            if t.subtests.is_empty() {
                out.push((path.clone(), t));
            } else {
                for s in &t.subtests {
                    walk(s, path, out);
                }
            }
            path.pop();
        }
        let mut out = Vec::new();
        for t in &self.tests {
            walk(t, &mut Vec::new(), &mut out);
        }
        out
    }

    /// The exit code a gate should use (see [`Totals::exit_code`]); an
    /// interrupted run is 130, as a shell reports Ctrl-C.
    pub fn exit_code(&self) -> i32 {
        if self.interrupted {
            130
        } else {
            self.totals().exit_code()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_bubbles_failure_over_skip_and_pass() {
        let g = TestResult::group(
            "b",
            vec![
                TestResult::new("a", Status::Pass),
                TestResult::new("b", Status::Skip),
                TestResult::new("c", Status::Timeout),
            ],
        );
        assert_eq!(g.status, Status::Fail);
    }

    #[test]
    fn group_of_skips_is_skipped() {
        let g = TestResult::group("b", vec![TestResult::new("a", Status::Skip)]);
        assert_eq!(g.status, Status::Skip);
    }

    #[test]
    fn exit_codes_follow_kselftest() {
        let mut t = Totals::default();
        assert_eq!(t.exit_code(), 1, "no cases ran");
        t.add(Status::Skip);
        assert_eq!(t.exit_code(), 4);
        t.add(Status::Pass);
        assert_eq!(t.exit_code(), 0);
        t.add(Status::Timeout);
        assert_eq!(t.exit_code(), 1);
        assert_eq!(t.ktap_line(), "Totals: pass:1 fail:1 xfail:0 xpass:0 skip:1 error:0");
        assert_eq!(t.summary_line(), "1 passed, 1 failed, 1 skipped");
    }
}
