//! One step of `git bisect run`: build the checked-out tree, boot it, run the chosen cases, and answer good (0), bad
//! (1) or cannot test (125).
//!
//! git reads any exit code from 1 to 127 other than 125 as "bad" and aborts the whole bisection on one above 127,
//! so only a broken kernel may say 1, and nothing that fails for reasons of its own (a build error, a guest that
//! never booted, QEMU missing) may say more than 125. Setup mistakes that would repeat at every commit (not a kernel
//! tree, no compiler) are the exception: they exit 255 so the bisection stops at once instead of skipping every
//! commit.

use crate::runner::result::{Report, Status, TestResult};
use crate::vm::options::CHILD_COMMAND;
use crate::vm::{ReportFiles, VmOptions};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

/// The answer for one commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every selected case that ran passed.
    Good { passed: usize, skipped: usize },
    /// At least one selected case failed, timed out or crashed the kernel.
    Bad { failed: Vec<String> },
    /// This commit cannot answer: it did not build or boot, or every selected case skipped.
    Untestable(String),
    /// The same would happen at every commit; stop the bisection.
    Abort(String),
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Good { passed, skipped } => write!(f, "good: {passed} passed, {skipped} skipped"),
            Verdict::Bad { failed } => write!(f, "bad: {} failed: {}", failed.len(), failed.join(", ")),
            Verdict::Untestable(why) => write!(f, "skip (cannot test this commit): {why}"),
            Verdict::Abort(why) => write!(f, "abort: {why}"),
        }
    }
}

/// Judge the run of the selected cases on one commit.
///
/// Only the selected cases decide, the leaves inside a binary's group. Top-level leaves are the harness's own
/// results (`uffdtest vm` adds a `kernel` one for a panic or splat outside any case): they only explain a run in
/// which no case ran. Cases that could not start (`error`) or were never reached (`crashed` with a `not run`
/// reason: the guest died before them) say nothing about the kernel; if no case ran at all, the kernel could not be
/// tested (it did not boot to the suite). Cases that all skipped mean the kernel lacks what they test at this commit
/// (an older tree, a config change): "cannot test", not "good".
pub fn judge(report: &Report) -> Verdict {
    if report.interrupted {
        return Verdict::Untestable("the run was interrupted".into());
    }
    let name = |path: &[&str]| path.join(" / ");
    let all = report.leaves();
    let harness: Vec<String> = all
        .iter()
        .filter(|(p, t)| p.len() == 1 && t.status.is_failure())
        .map(|(p, t)| format!("{}: {}", name(p), t.reason.as_deref().unwrap_or(t.status.name())))
        .collect();
    let not_run = |t: &TestResult| {
        t.status == Status::Error
            || (t.status == Status::Crashed && t.reason.as_deref().is_some_and(|r| r.starts_with("not run")))
    };
    let (cases, unrun): (Vec<_>, Vec<_>) = all.iter().filter(|(p, _)| p.len() > 1).partition(|(_, t)| !not_run(t));
    if cases.is_empty() {
        let why = harness
            .first()
            .cloned()
            .or_else(|| unrun.first().and_then(|(_, t)| t.reason.clone()));
        return Verdict::Untestable(match why {
            Some(w) => format!("no selected case ran ({w})"),
            None => "no case ran (does the filter match any case?)".into(),
        });
    }
    let failed: Vec<String> = cases
        .iter()
        .filter(|(_, t)| t.status.is_failure())
        .map(|(p, t)| format!("{} ({})", name(p), t.status.name()))
        .collect();
    if !failed.is_empty() {
        return Verdict::Bad { failed };
    }
    if !unrun.is_empty() {
        let (p, t) = &unrun[0];
        return Verdict::Untestable(format!(
            "{} selected case(s) did not run, e.g. {}: {}",
            unrun.len(),
            name(p),
            t.reason.as_deref().unwrap_or("could not run")
        ));
    }
    let passed = cases
        .iter()
        .filter(|(_, t)| matches!(t.status, Status::Pass | Status::Xfail))
        .count();
    if passed == 0 {
        let why = cases.iter().find_map(|(_, t)| t.reason.clone()).unwrap_or_default();
        return Verdict::Untestable(format!("every selected case skipped ({why})"));
    }
    Verdict::Good {
        passed,
        skipped: cases.len() - passed,
    }
}

/// Boot `image` with the run `vm` asks for (its kernel and report files set here), and judge the JSON report it
/// leaves in `results`.
///
/// The VM runs in a child `uffdtest` ([`CHILD_COMMAND`], the options as JSON on its stdin) so that whatever it does
/// (a QEMU that dies, a guest that hangs until the vm deadline, a panic) ends as a report or as "cannot test", never
/// as this process's own exit code; its output goes to `results/vm.log`.
pub fn run_vm(image: &Path, results: &Path, vm: &VmOptions) -> Verdict {
    match std::env::current_exe() {
        Ok(exe) => run_vm_with(&exe, image, results, vm),
        Err(e) => Verdict::Untestable(format!("cannot find the uffdtest executable: {e}")),
    }
}

/// [`run_vm`] with the `uffdtest` executable `exe`.
pub fn run_vm_with(exe: &Path, image: &Path, results: &Path, vm: &VmOptions) -> Verdict {
    match vm_report(exe, image, results, vm) {
        Ok(r) => judge(&r),
        Err(why) => Verdict::Untestable(why.to_string()),
    }
}

/// Why a VM child left no report to judge: for bisect "cannot test", for mutate "no result".
#[derive(Debug, thiserror::Error)]
pub enum NoReport {
    /// A file the run writes could not be made.
    #[error("create {path}: {err}")]
    Create { path: PathBuf, err: std::io::Error },
    /// The child `uffdtest vm` could not be started or waited for.
    #[error("cannot run uffdtest vm: {0}")]
    Spawn(std::io::Error),
    /// It ended (with `status`) and left neither JSON nor KTAP with a case in it.
    #[error("the guest gave no results (uffdtest vm {status}); see {console} and kernel-console.log beside it")]
    Empty { status: ExitStatus, console: PathBuf },
}

/// Boot `image` in a child `uffdtest` ([`CHILD_COMMAND`]) with the run `vm` asks for, and read back the report
/// it leaves in `results` (JSON, else KTAP); Err says why there is none. `mutate` judges the same report its way.
pub fn vm_report(exe: &Path, image: &Path, results: &Path, vm: &VmOptions) -> Result<Report, NoReport> {
    let create = |path: &Path| {
        let path = path.to_path_buf();
        move |err| NoReport::Create { path, err }
    };
    std::fs::create_dir_all(results).map_err(create(results))?;
    let (json, ktap, console) = (
        results.join("result.json"),
        results.join("result.ktap"),
        results.join("vm.log"),
    );
    for p in [&json, &ktap] {
        let _ = std::fs::remove_file(p);
    }
    let vm = VmOptions {
        kernel: image.to_path_buf(),
        console_log: Some(results.join("kernel-console.log")),
        reports: ReportFiles {
            json: Some(json.clone()),
            ktap: Some(ktap.clone()),
            ..vm.reports.clone()
        },
        ..vm.clone()
    };
    let log = std::fs::File::create(&console).map_err(create(&console))?;
    let mut cmd = Command::new(exe);
    cmd.arg(CHILD_COMMAND)
        .stdin(Stdio::piped())
        .stdout(log.try_clone().map(Stdio::from).unwrap_or(Stdio::null()))
        .stderr(Stdio::from(log));
    // Interrupted (mutate's Ctrl-C ends it by raising the signal again), the VM dies with it.
    crate::runner::env::die_with_parent(&mut cmd);
    let child = cmd.spawn();
    let status = child
        .and_then(|mut c| {
            let options = serde_json::to_vec(&vm).expect("VM options serialise");
            // A child that died before reading says so through its exit status.
            let _ = c.stdin.take().expect("piped").write_all(&options);
            c.wait()
        })
        .map_err(NoReport::Spawn)?;
    let report = std::fs::read_to_string(&json)
        .ok()
        .and_then(|t| serde_json::from_str::<Report>(&t).ok())
        .or_else(|| {
            std::fs::read_to_string(&ktap)
                .ok()
                .and_then(|t| crate::runner::ktap::parse(&t).ok())
        });
    match report {
        Some(r) if !r.tests.is_empty() => Ok(r),
        _ => Err(NoReport::Empty { status, console }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn report(statuses: &[Status]) -> Report {
        let cases: Vec<_> = statuses
            .iter()
            .enumerate()
            .map(|(i, s)| TestResult::new(format!("c{i}"), *s))
            .collect();
        let tests = if cases.is_empty() {
            vec![]
        } else {
            vec![TestResult::group("zeropage", cases)]
        };
        Report {
            tests,
            ..Default::default()
        }
    }

    /// The verdict's name, as `git bisect run` is told it (the numbers are `cli::Exit`'s).
    fn kind(v: &Verdict) -> &'static str {
        match v {
            Verdict::Good { .. } => "good",
            Verdict::Bad { .. } => "bad",
            Verdict::Untestable(_) => "skip",
            Verdict::Abort(_) => "abort",
        }
    }

    #[rstest]
    #[case(&[Status::Pass, Status::Skip], "good")]
    #[case(&[Status::Pass, Status::Fail], "bad")]
    #[case(&[Status::Pass, Status::Timeout], "bad")]
    #[case(&[Status::Crashed], "bad")]
    #[case(&[Status::Skip, Status::Skip], "skip")]
    #[case(&[Status::Pass, Status::Error], "skip")]
    #[case(&[], "skip")]
    fn verdicts_for_git_bisect_run(#[case] statuses: &[Status], #[case] want: &str) {
        assert_eq!(kind(&judge(&report(statuses))), want);
    }

    fn not_run(n: usize) -> TestResult {
        TestResult::new(format!("c{n}"), Status::Crashed)
            .with_reason("not run: the kernel panicked before the guest init ran any case")
    }

    #[test]
    fn a_guest_that_never_reached_the_suite_cannot_test_the_commit() {
        let kernel = TestResult::new("kernel", Status::Fail).with_reason("kernel panic: Attempted to kill init!");
        let r = Report {
            tests: vec![TestResult::group("copy", vec![not_run(0), not_run(1)]), kernel],
            ..Default::default()
        };
        let v = judge(&r);
        assert_eq!(kind(&v), "skip", "{v}");
        assert!(v.to_string().contains("Attempted to kill init"), "{v}");
    }

    #[test]
    fn a_panic_during_a_selected_case_is_bad() {
        let during = TestResult::new("c0", Status::Crashed).with_reason("kernel panic during this case: BUG: ...");
        let r = Report {
            tests: vec![TestResult::group("copy", vec![during, not_run(1)])],
            ..Default::default()
        };
        assert_eq!(kind(&judge(&r)), "bad");
    }
}
