//! Judge one mutant's run against the unmutated base: killed (which stable cases failed, or which splat), timed
//! out, survived, or no result worth counting.

use crate::runner::result::{Report, Status, TestResult};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// What became of one mutant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Stable cases failed (`binary / case: status: reason`), or the kernel splatted or panicked.
    Killed { by: Vec<String> },
    /// The guest stopped answering and was killed: noticed, but no case named it.
    TimedOut { detail: String },
    /// Every stable case passed or skipped; `newly_skipped` passed on base and skipped here.
    Survived {
        #[serde(default)]
        newly_skipped: Vec<String>,
    },
    /// The mutated tree did not build (the catalogue entry needs fixing, or it is a compile-time break).
    BuildFailed { detail: String },
    /// Argued in the catalogue; not run.
    Equivalent { why: String },
    /// The guest gave no usable result (QEMU missing, a boot that never reached the suite): run it again later.
    NoResult { detail: String },
}

impl Outcome {
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Killed { .. } => "killed",
            Outcome::TimedOut { .. } => "timed_out",
            Outcome::Survived { .. } => "survived",
            Outcome::BuildFailed { .. } => "build_failed",
            Outcome::Equivalent { .. } => "equivalent",
            Outcome::NoResult { .. } => "no_result",
        }
    }

    /// Whether the suite noticed the mutant (the numerator of the kill rate).
    pub fn detected(&self) -> bool {
        matches!(self, Outcome::Killed { .. } | Outcome::TimedOut { .. })
    }

    /// Whether the mutant counts in the kill rate's denominator.
    pub fn counts(&self) -> bool {
        self.detected() || matches!(self, Outcome::Survived { .. })
    }

    /// Whether a rerun should keep this result.
    pub fn is_final(&self) -> bool {
        !matches!(self, Outcome::NoResult { .. })
    }
}

/// A case's name across reports: `binary / case`.
fn key(path: &[&str]) -> String {
    path.join(" / ")
}

/// The verdict layer marks cases the guest never reached as crashed with a `not run: <how the guest ended>`
/// reason; they say nothing about the mutant by themselves.
fn not_run(t: &TestResult) -> bool {
    t.reason.as_deref().is_some_and(|r| r.starts_with("not run"))
}

fn passed(s: Status) -> bool {
    s == Status::Pass
}

/// The cases that can kill a mutant: passed in every base run. A case that failed, skipped or moved in any base
/// run is left out, so a flaky case never kills. So is a declared known failure (XFAIL): the guest's runner
/// counts it toward `--max-fail` (the host declares it only after the run), so it would end a mutant's run
/// before any case that can kill.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub stable: BTreeSet<String>,
    /// Cases that did not pass in every base run, with their statuses in order.
    pub unstable: Vec<String>,
    /// `--compare-c`: the C selftest runs that passed or skipped on base.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub c_stable: Option<Vec<String>>,
}

impl Baseline {
    /// The unstable cases' names, as `--skip` patterns: a mutant's run leaves them out, so its first failure
    /// is one that counts. A substring pattern may also drop a stable case whose name extends it (`on anon` /
    /// `on anon-thp`): fewer chances to kill, never a false one.
    pub fn skip_patterns(&self) -> Vec<String> {
        self.unstable
            .iter()
            .filter_map(|u| {
                u.split_once(" / ")
                    .and_then(|(_, rest)| rest.rsplit_once(": "))
                    .map(|(n, _)| n.to_string())
            })
            .collect()
    }

    pub fn from_runs(runs: &[Report]) -> Baseline {
        let mut b = Baseline::default();
        let Some((first, rest)) = runs.split_first() else {
            return b;
        };
        for (path, t) in first.leaves().into_iter().filter(|(p, _)| p.len() > 1) {
            let k = key(&path);
            let others: Vec<Option<Status>> = rest
                .iter()
                .map(|r| r.leaves().into_iter().find(|(p, _)| key(p) == k).map(|(_, t)| t.status))
                .collect();
            if passed(t.status) && others.iter().all(|s| s.is_some_and(passed)) {
                b.stable.insert(k);
            } else if t.status != Status::Skip || others.iter().any(|s| *s != Some(Status::Skip)) {
                let seen: Vec<&str> = std::iter::once(Some(t.status))
                    .chain(others)
                    .map(|s| s.map_or("absent", Status::name))
                    .collect();
                b.unstable.push(format!("{k}: {}", seen.join(", ")));
            }
        }
        b
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// Judge a mutant's run.
pub fn classify(run: &Report, base: &Baseline) -> Outcome {
    let leaves = run.leaves();
    let mut by: Vec<String> = leaves
        .iter()
        .filter(|(p, t)| p.len() > 1 && base.stable.contains(&key(p)) && t.status.is_failure() && !not_run(t))
        .map(|(p, t)| {
            let why = t.reason.as_deref().map(first_line).unwrap_or("");
            format!(
                "{}: {}{}{why}",
                key(p),
                t.status.name(),
                if why.is_empty() { "" } else { ": " }
            )
        })
        .collect();
    // The verdict's own `kernel` result: a splat or panic outside any case.
    by.extend(
        leaves
            .iter()
            .filter(|(p, t)| p == &["kernel"] && t.status.is_failure())
            .map(|(p, t)| {
                format!(
                    "{}: {}",
                    p[0],
                    first_line(t.reason.as_deref().unwrap_or(t.status.name()))
                )
            }),
    );
    let unreached: Vec<&TestResult> = leaves
        .iter()
        .filter(|(p, t)| p.len() > 1 && base.stable.contains(&key(p)) && not_run(t))
        .map(|(_, t)| *t)
        .collect();
    if let Some(t) = unreached.first() {
        let how = t.reason.as_deref().unwrap_or_default();
        if how.contains("panic") {
            by.push(format!("kernel: {how}"));
        } else if by.is_empty() && (how.contains("printed nothing") || how.contains("killed")) {
            return Outcome::TimedOut {
                detail: format!("{how} ({} stable cases not reached)", unreached.len()),
            };
        }
    }
    if !by.is_empty() {
        return Outcome::Killed { by };
    }
    if let Some(t) = unreached.first() {
        return Outcome::NoResult {
            detail: format!(
                "{} stable cases not reached: {}",
                unreached.len(),
                t.reason.as_deref().unwrap_or_default()
            ),
        };
    }
    let seen: BTreeSet<String> = leaves
        .iter()
        .filter(|(p, _)| p.len() > 1)
        .map(|(p, _)| key(p))
        .collect();
    if base.stable.iter().any(|k| seen.contains(k)) {
        let newly_skipped = leaves
            .iter()
            .filter(|(p, t)| p.len() > 1 && t.status == Status::Skip && base.stable.contains(&key(p)))
            .map(|(p, t)| format!("{}: {}", key(p), t.reason.as_deref().unwrap_or("skipped")))
            .collect();
        return Outcome::Survived { newly_skipped };
    }
    Outcome::NoResult {
        detail: "the run holds none of the base's stable cases".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A case's name, status and reason.
    type Case<'a> = (&'a str, Status, Option<&'a str>);

    fn results(cases: &[Case]) -> Vec<TestResult> {
        cases
            .iter()
            .map(|&(name, s, reason)| {
                let t = TestResult::new(name, s);
                match reason {
                    Some(r) => t.with_reason(r),
                    None => t,
                }
            })
            .collect()
    }

    /// A run of the `copy` binary's `cases`, and the harness's own top-level `extra` results.
    fn run(cases: &[Case], extra: &[Case]) -> Report {
        let mut tests = vec![TestResult::group("copy", results(cases))];
        tests.extend(results(extra));
        Report {
            tests,
            ..Default::default()
        }
    }

    /// Two base runs: `a` and `b` pass in both, `flaky` only in the first, `c` skips, `known` fails as declared.
    fn base() -> Baseline {
        let runs = [Status::Pass, Status::Fail].map(|flaky| {
            let reason = (flaky == Status::Fail).then_some("exit status 101");
            run(
                &[
                    ("a on anon", Status::Pass, None),
                    ("b on shmem", Status::Pass, None),
                    ("flaky on anon", flaky, reason),
                    ("c on hugetlb", Status::Skip, Some("no huge pages")),
                    ("known on anon", Status::Xfail, Some("declared")),
                ],
                &[],
            )
        });
        Baseline::from_runs(&runs)
    }

    /// What a mutant's run of `cases` (and top-level `extra`) is, judged against [`base`].
    fn judged(cases: &[Case], extra: &[Case]) -> Outcome {
        classify(&run(cases, extra), &base())
    }

    #[test]
    fn only_cases_that_passed_in_every_base_run_are_stable() {
        let b = base();
        assert_eq!(
            b.stable.iter().map(String::as_str).collect::<Vec<_>>(),
            ["copy / a on anon", "copy / b on shmem"]
        );
        assert_eq!(
            b.unstable,
            ["copy / flaky on anon: pass, fail", "copy / known on anon: xfail, xfail"]
        );
        assert_eq!(b.skip_patterns(), ["flaky on anon", "known on anon"]);
    }

    /// A mutant's run (its cases and top-level results) and what it is judged, against [`base`].
    #[test]
    fn each_run_is_judged_against_the_stable_cases() {
        let killed = |by: &str| Outcome::Killed { by: vec![by.into()] };
        let survived = |skipped: &[&str]| Outcome::Survived {
            newly_skipped: skipped.iter().map(|s| s.to_string()).collect(),
        };
        let runs: [(&str, &[Case], &[Case], Outcome); 4] = [
            (
                "a failing stable case kills and is named with its reason's first line",
                &[
                    ("a on anon", Status::Fail, Some("assertion failed: errno EINVAL\nmore")),
                    ("b on shmem", Status::Pass, None),
                ],
                &[],
                killed("copy / a on anon: fail: assertion failed: errno EINVAL"),
            ),
            (
                "a flaky case failing does not kill",
                &[("a on anon", Status::Pass, None), ("flaky on anon", Status::Fail, None)],
                &[],
                survived(&[]),
            ),
            (
                "a splat outside any case kills",
                &[("a on anon", Status::Pass, None)],
                &[("kernel", Status::Fail, Some("WARNING: at mm/userfaultfd.c:600"))],
                killed("kernel: WARNING: at mm/userfaultfd.c:600"),
            ),
            (
                "a stable case that now skips survives but is named",
                &[
                    ("a on anon", Status::Skip, Some("kernel lacks UFFD_FEATURE_X")),
                    ("b on shmem", Status::Pass, None),
                ],
                &[],
                survived(&["copy / a on anon: kernel lacks UFFD_FEATURE_X"]),
            ),
        ];
        for (what, cases, extra, want) in runs {
            assert_eq!(judged(cases, extra), want, "{what}");
        }
    }

    #[test]
    fn a_silent_guest_is_a_timeout_and_a_panic_a_kill() {
        let silent = "not run: the guest printed nothing for 120 s and was killed";
        let cases = [
            ("a on anon", Status::Pass, None),
            ("b on shmem", Status::Crashed, Some(silent)),
        ];
        assert!(matches!(judged(&cases, &[]), Outcome::TimedOut { .. }));
        let panicked = ("a on anon", Status::Crashed, Some("not run: the kernel panicked"));
        assert!(matches!(judged(&[panicked], &[]), Outcome::Killed { .. }));
    }

    #[test]
    fn a_run_without_the_base_cases_is_no_result() {
        let other = ("other on anon", Status::Pass, None);
        assert!(matches!(judged(&[other], &[]), Outcome::NoResult { .. }));
        let unrun = ("a on anon", Status::Crashed, Some("not run: QEMU exited with status 1"));
        assert!(matches!(judged(&[unrun], &[]), Outcome::NoResult { .. }));
    }

    #[test]
    fn outcomes_round_trip_as_tagged_json() {
        let o = Outcome::Killed { by: vec!["x".into()] };
        let j = serde_json::to_string(&o).unwrap();
        assert_eq!(j, r#"{"outcome":"killed","by":["x"]}"#);
        assert_eq!(serde_json::from_str::<Outcome>(&j).unwrap(), o);
    }
}
