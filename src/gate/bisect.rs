//! One step of `git bisect run`: build the checked-out tree, boot it, run the chosen cases, and answer good (0), bad
//! (1) or cannot test (125).
//!
//! git reads any exit code from 1 to 127 other than 125 as "bad" and aborts the whole bisection on one above 127,
//! so only a broken kernel may say 1, and nothing that fails for reasons of its own (a build error, a guest that
//! never booted, QEMU missing) may say more than 125. Setup mistakes that would repeat at every commit (not a kernel
//! tree, no compiler) are the exception: they exit 255 so the bisection stops at once instead of skipping every
//! commit.

use crate::runner::result::{Report, Status};
use std::fmt;
use std::path::Path;
use std::process::{Command, Stdio};

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

impl Verdict {
    /// The exit code `git bisect run` expects.
    pub fn exit_code(&self) -> u8 {
        match self {
            Verdict::Good { .. } => 0,
            Verdict::Bad { .. } => 1,
            Verdict::Untestable(_) => 125,
            Verdict::Abort(_) => 255,
        }
    }
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
/// Cases that could not start (`error`) say nothing about the kernel; cases that all skipped mean the kernel lacks
/// what they test at this commit (an older tree, a config change), which is "cannot test", not "good".
pub fn judge(report: &Report) -> Verdict {
    if report.interrupted {
        return Verdict::Untestable("the run was interrupted".into());
    }
    let leaves = report.leaves();
    if leaves.is_empty() {
        return Verdict::Untestable("no case ran (does the filter match any case?)".into());
    }
    let name = |path: &[&str]| path.join(" / ");
    let failed: Vec<String> = leaves
        .iter()
        .filter(|(_, t)| t.status.is_failure() && t.status != Status::Error)
        .map(|(p, t)| format!("{} ({})", name(p), t.status.name()))
        .collect();
    if !failed.is_empty() {
        return Verdict::Bad { failed };
    }
    let errors: Vec<String> = leaves
        .iter()
        .filter(|(_, t)| t.status == Status::Error)
        .map(|(p, t)| format!("{}: {}", name(p), t.reason.as_deref().unwrap_or("could not run")))
        .collect();
    if !errors.is_empty() {
        return Verdict::Untestable(format!("case(s) could not run: {}", errors.join("; ")));
    }
    let t = report.totals();
    if t.skip == t.total() {
        let why = leaves.iter().find_map(|(_, t)| t.reason.clone()).unwrap_or_default();
        return Verdict::Untestable(format!("every selected case skipped ({why})"));
    }
    Verdict::Good {
        passed: t.pass + t.xfail,
        skipped: t.skip,
    }
}

/// Boot `image` with `uffdtest vm`, the selected cases as the guest's run, and judge the JSON report it leaves.
///
/// The VM runs in a child `uffdtest` so that whatever it does (a QEMU that dies, a guest that hangs until the vm
/// deadline) ends as a report or as "cannot test", never as this process's own exit code.
pub fn run_vm(image: &Path, results: &Path, filters: &[String], vm_args: &[String]) -> Verdict {
    if let Err(e) = std::fs::create_dir_all(results) {
        return Verdict::Untestable(format!("create {}: {e}", results.display()));
    }
    let (json, ktap, console) = (
        results.join("result.json"),
        results.join("result.ktap"),
        results.join("vm.log"),
    );
    for p in [&json, &ktap] {
        let _ = std::fs::remove_file(p);
    }
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return Verdict::Untestable(format!("cannot find the uffdtest executable: {e}")),
    };
    let log = match std::fs::File::create(&console) {
        Ok(f) => f,
        Err(e) => return Verdict::Untestable(format!("create {}: {e}", console.display())),
    };
    let mut cmd = Command::new(exe);
    cmd.arg("vm")
        .arg("--kernel")
        .arg(image)
        .arg("--json")
        .arg(&json)
        .arg("-o")
        .arg(&ktap)
        .arg("--console-log")
        .arg(results.join("kernel-console.log"));
    for f in filters {
        cmd.arg("-f").arg(f);
    }
    cmd.args(vm_args);
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone().map(Stdio::from).unwrap_or(Stdio::null()))
        .stderr(Stdio::from(log));
    let status = match cmd.status() {
        Ok(s) => s,
        Err(e) => return Verdict::Untestable(format!("cannot run uffdtest vm: {e}")),
    };
    let report = std::fs::read_to_string(&json)
        .ok()
        .and_then(|t| serde_json::from_str::<Report>(&t).ok())
        .or_else(|| {
            std::fs::read_to_string(&ktap)
                .ok()
                .and_then(|t| crate::runner::ktap::parse(&t).ok())
        });
    match report {
        Some(r) if !r.tests.is_empty() => judge(&r),
        _ => Verdict::Untestable(format!(
            "the guest gave no results (uffdtest vm {status}); see {} and kernel-console.log beside it",
            console.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::result::TestResult;
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

    #[rstest]
    #[case(&[Status::Pass, Status::Skip], 0)]
    #[case(&[Status::Pass, Status::Fail], 1)]
    #[case(&[Status::Pass, Status::Timeout], 1)]
    #[case(&[Status::Crashed], 1)]
    #[case(&[Status::Skip, Status::Skip], 125)]
    #[case(&[Status::Pass, Status::Error], 125)]
    #[case(&[], 125)]
    fn exit_codes_for_git_bisect_run(#[case] statuses: &[Status], #[case] code: u8) {
        assert_eq!(judge(&report(statuses)).exit_code(), code);
    }
}
