//! The mutation run: the unmutated base twice (which cases are stable), then each selected mutant applied, built,
//! booted and classified, its result written before the next starts, so a stopped run resumes where it was.

use super::apply::{self, TreeError};
use super::catalogue::Mutant;
use super::classify::{Baseline, Outcome, classify};
use super::csuite::{CRun, CSuiteError};
use super::report::{CResult, MutantResult, Results};
use crate::gate::bisect::NoReport;
use crate::gate::build::BuildError;
use crate::runner::result::Report;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The expensive steps, behind a trait so the loop can be driven by fakes in tests.
pub trait Steps {
    /// Build the tree as it is now; the image, or why there is none.
    fn build(&mut self) -> Result<PathBuf, StepError>;
    /// Boot `image` and run the suite as `limits` narrow it; logs go to `logs`.
    fn run_suite(&mut self, image: &Path, logs: &Path, limits: &SuiteLimits) -> Result<Report, StepError>;
    /// Whether the kernel's own C selftests run too (`--compare-c`).
    fn wants_c(&self) -> bool {
        false
    }
    /// Run the C selftests on `image`; only called when [`Steps::wants_c`]. The guest stops at the first of
    /// `stop_on` that fails (a mutant's runs that passed on base; empty for the base itself).
    fn run_c(&mut self, _image: &Path, _logs: &Path, _stop_on: &[String]) -> Result<CRun, StepError> {
        Err(StepError::NotAsked)
    }
}

/// How much of the suite a run goes through: the base runs all of it ([`SuiteLimits::default`]), a mutant
/// leaves out the cases that are not stable and stops at its first failure.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SuiteLimits {
    /// Stop after this many failures.
    pub max_fail: Option<usize>,
    /// Leave out the cases matching these patterns.
    pub skip: Vec<String>,
    /// Start with these test binaries: where the mutant's area is tested.
    pub first: Vec<String>,
}

/// Why a step gave no image, report or C run: for a mutant a build failure or "no result", for the base the end
/// of the run.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Build(BuildError),
    #[error(transparent)]
    Vm(NoReport),
    #[error(transparent)]
    C(CSuiteError),
    /// [`Steps::run_c`] without `--compare-c`.
    #[error("not asked for")]
    NotAsked,
}

/// Why the run stopped before its end; all exit 2 (nothing about a mutant was learnt).
#[derive(Debug, thiserror::Error)]
pub enum MutateError {
    #[error(transparent)]
    Tree(TreeError),
    /// The unmutated tree did not build or boot: no mutant can be judged against it.
    #[error("the unmutated base cannot be judged: {0}")]
    Base(StepError),
    /// The base runs passed no case in all of them.
    #[error(
        "the unmutated base cannot be judged: no case passed in every base run (does the guest run the suite at all?)"
    )]
    NoStableCase,
    /// `--compare-c`: the C selftests' base run did not finish with a run that passed, so every mutant would
    /// count as killed by them.
    #[error("the C selftests cannot be judged on the unmutated base: {0} (logs in {1})")]
    CBase(String, PathBuf),
    #[error("{0}")]
    Results(String),
}

/// Where a run keeps its files.
#[derive(Debug, Clone)]
pub struct Layout {
    pub tree: PathBuf,
    pub results: Results,
    /// Per-mutant guest logs (console, KTAP, JSON); large, so not beside the results.
    pub logs: PathBuf,
    /// How many unmutated runs decide which cases are stable.
    pub base_runs: usize,
}

fn base_path(results: &Results, n: usize) -> PathBuf {
    results.dir.join("base").join(format!("run-{n}.json"))
}

/// The base runs (each read back from the results if a previous run recorded it) and what they make stable.
pub fn baseline(steps: &mut dyn Steps, l: &Layout) -> Result<Baseline, MutateError> {
    let mut runs = Vec::new();
    let mut image = None;
    for n in 1..=l.base_runs {
        let path = base_path(&l.results, n);
        if let Some(r) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str::<Report>(&t).ok())
        {
            runs.push(r);
            continue;
        }
        if image.is_none() {
            eprintln!("uffdtest mutate: building the unmutated base");
            image = Some(steps.build().map_err(MutateError::Base)?);
        }
        eprintln!("uffdtest mutate: base run {n} of {}", l.base_runs);
        let report = steps
            .run_suite(
                image.as_ref().expect("built"),
                &l.logs.join(format!("base-{n}")),
                &SuiteLimits::default(),
            )
            .map_err(MutateError::Base)?;
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(path.parent().expect("has a parent"))?;
            std::fs::write(&path, serde_json::to_string(&report).expect("reports serialise"))
        };
        write().map_err(|e| MutateError::Results(format!("write {}: {e}", path.display())))?;
        runs.push(report);
    }
    let mut b = Baseline::from_runs(&runs);
    if steps.wants_c() {
        let path = l.results.dir.join("base").join("c.json");
        let c = match std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str::<CRun>(&t).ok())
            .filter(|c| c.unusable_as_base().is_none())
        {
            Some(c) => c,
            None => {
                if image.is_none() {
                    image = Some(steps.build().map_err(MutateError::Base)?);
                }
                eprintln!("uffdtest mutate: base run of the C selftests");
                let logs = l.logs.join("base-c");
                let c = steps
                    .run_c(image.as_ref().expect("built"), &logs, &[])
                    .map_err(MutateError::Base)?;
                if let Some(why) = c.unusable_as_base() {
                    return Err(MutateError::CBase(why, logs));
                }
                std::fs::write(&path, serde_json::to_string_pretty(&c).expect("serialises"))
                    .map_err(|e| MutateError::Results(format!("write {}: {e}", path.display())))?;
                c
            }
        };
        b.c_stable = Some(c.ok());
    }
    if b.stable.is_empty() {
        return Err(MutateError::NoStableCase);
    }
    Ok(b)
}

/// The last lines of a build error that say what broke.
fn build_detail(err: &str) -> String {
    let errors: Vec<&str> = err.lines().filter(|l| l.contains("error")).take(3).collect();
    if errors.is_empty() {
        err.lines().rev().take(3).collect::<Vec<_>>().join(" | ")
    } else {
        errors.join(" | ")
    }
}

/// Whether a recorded result still owes its C run: `--compare-c` was asked for after our suite judged it.
fn owes_c(r: &MutantResult, base: &Baseline) -> bool {
    base.c_stable.is_some()
        && r.c.is_none()
        && matches!(
            r.outcome,
            Outcome::Killed { .. } | Outcome::TimedOut { .. } | Outcome::Survived { .. }
        )
}

/// Apply, build, run and classify one mutant; the tree is clean again when this returns or unwinds. With `ours`
/// (a recorded result that [`owes_c`]) our suite is not run again: only the C selftests are.
pub fn run_one(
    steps: &mut dyn Steps,
    l: &Layout,
    m: &Mutant,
    base: &Baseline,
    ours: Option<&MutantResult>,
) -> Result<MutantResult, MutateError> {
    if let Some(why) = &m.equivalent {
        let r = MutantResult::new(m, Outcome::Equivalent { why: why.clone() });
        l.results
            .record(&r)
            .map_err(|e| MutateError::Results(format!("write {}: {e}", l.results.path(&m.id).display())))?;
        return Ok(r);
    }
    let applied = match apply::apply(&l.tree, &m.file, &m.find, &m.replace) {
        Ok(a) => a,
        Err(apply::ApplyError::Io(e)) => return Err(MutateError::Tree(e)),
        Err(e) => return Err(MutateError::Results(format!("{}: {e}", m.id))),
    };
    let t = Instant::now();
    let built = steps.build();
    let build_secs = t.elapsed().as_secs_f64();
    let (outcome, run_secs, c) = match built {
        Err(e) => (
            Outcome::BuildFailed {
                detail: build_detail(&e.to_string()),
            },
            0.0,
            None,
        ),
        Ok(image) => {
            let logs = l.logs.join(&m.id);
            let t = Instant::now();
            // The cases that are not stable stay out, so the first failure calls it.
            let limits = SuiteLimits {
                max_fail: Some(1),
                skip: base.skip_patterns(),
                first: m.tested_in().iter().map(|s| s.to_string()).collect(),
            };
            let (outcome, run_secs) = match ours {
                Some(r) => (r.outcome.clone(), r.run_secs),
                None => {
                    let outcome = match steps.run_suite(&image, &logs, &limits) {
                        Ok(report) => classify(&report, base),
                        Err(e) => Outcome::NoResult { detail: e.to_string() },
                    };
                    (outcome, t.elapsed().as_secs_f64())
                }
            };
            let c = base
                .c_stable
                .as_ref()
                .map(|stable| match steps.run_c(&image, &logs, stable) {
                    Ok(run) => {
                        let (killed, detail) = run.verdict(stable);
                        CResult {
                            killed,
                            detail,
                            secs: run.secs,
                        }
                    }
                    Err(e) => CResult {
                        killed: false,
                        detail: format!("no result: {e}"),
                        secs: 0.0,
                    },
                });
            (outcome, run_secs, c)
        }
    };
    applied.restore().map_err(MutateError::Tree)?;
    let mut r = MutantResult::new(m, outcome);
    r.build_secs = ours.map_or(build_secs, |o| o.build_secs);
    r.run_secs = run_secs;
    r.c = c;
    l.results
        .record(&r)
        .map_err(|e| MutateError::Results(format!("write {}: {e}", l.results.path(&m.id).display())))?;
    Ok(r)
}

/// Every selected mutant not already recorded, in catalogue order. Returns the results of this call.
pub fn run_all(
    steps: &mut dyn Steps,
    l: &Layout,
    mutants: &[&Mutant],
    base: &Baseline,
) -> Result<Vec<MutantResult>, MutateError> {
    let mut out = Vec::new();
    // Each mutant not recorded, or recorded by our suite alone when the C selftests are asked for now.
    let todo: Vec<(&&Mutant, Option<MutantResult>)> = mutants
        .iter()
        .filter_map(|m| match l.results.done(m) {
            None => Some((m, None)),
            Some(r) if owes_c(&r, base) => Some((m, Some(r))),
            Some(_) => None,
        })
        .collect();
    let owing = todo.iter().filter(|(_, r)| r.is_some()).count();
    eprintln!(
        "uffdtest mutate: {} mutant(s) selected, {} already recorded, {} to run{}",
        mutants.len(),
        mutants.len() - todo.len(),
        todo.len(),
        if owing > 0 {
            format!(" ({owing} of them the C selftests only)")
        } else {
            String::new()
        }
    );
    for (i, (m, ours)) in todo.iter().enumerate() {
        let r = run_one(steps, l, m, base, ours.as_ref())?;
        eprintln!(
            "uffdtest mutate: [{}/{}] {}: {} ({:.0} s build, {:.0} s run){}{}",
            i + 1,
            todo.len(),
            m.id,
            r.outcome.name(),
            r.build_secs,
            r.run_secs,
            match &r.outcome {
                Outcome::Killed { by } => format!(": {}", by[0]),
                Outcome::BuildFailed { detail } | Outcome::NoResult { detail } => format!(": {detail}"),
                _ => String::new(),
            },
            match &r.c {
                Some(c) if c.killed => format!("; C selftests: killed in {:.0} s: {}", c.secs, c.detail),
                Some(c) => format!("; C selftests: missed ({:.0} s)", c.secs),
                None => String::new(),
            }
        );
        out.push(r);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::result::{Status, TestResult};
    use serial_test::serial;

    /// A kernel tree under git with one file to mutate.
    fn fixture(name: &str) -> Layout {
        let d = std::env::temp_dir().join(format!("uffdtest-run-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let tree = d.join("linux");
        std::fs::create_dir_all(tree.join("mm")).unwrap();
        std::fs::write(tree.join("mm/u.c"), "\treturn -EINVAL;\n").unwrap();
        Layout {
            tree,
            results: Results { dir: d.join("results") },
            logs: d.join("logs"),
            base_runs: 2,
        }
    }

    /// The mutant `id` that puts `replace` in place of `return -EINVAL;`.
    fn replacing(id: &str, replace: &str) -> Mutant {
        Mutant {
            id: id.into(),
            file: "mm/u.c".into(),
            area: "COPY".into(),
            find: "return -EINVAL;".into(),
            replace: replace.into(),
            description: "d".into(),
            equivalent: None,
        }
    }

    fn mutant(id: &str) -> Mutant {
        replacing(id, "return 0;")
    }

    /// Builds fail while the file holds `broken`; the suite fails `a` while it holds `killer`, and hangs
    /// (panics: the worst a step can do to the loop) on `hang`.
    struct Fake {
        tree: PathBuf,
        builds: usize,
        max_fail: Vec<Option<usize>>,
        /// `--compare-c`: the C suite fails while the file holds `killer`.
        c: bool,
        c_runs: usize,
        /// The C guest ends before any run reports (a halted, wedged or misconfigured guest).
        c_silent: bool,
    }

    impl Steps for Fake {
        fn build(&mut self) -> Result<PathBuf, StepError> {
            self.builds += 1;
            let text = std::fs::read_to_string(self.tree.join("mm/u.c")).unwrap();
            if text.contains("broken") {
                return Err(StepError::Build(BuildError::Make {
                    step: "make".into(),
                    status: "exit status: 2".into(),
                    log: self.tree.join("build.log"),
                    tail: "mm/u.c:1: error: expected ';'\nmake: *** Error 2".into(),
                }));
            }
            Ok(self.tree.join("bzImage"))
        }

        fn run_suite(&mut self, _: &Path, _: &Path, limits: &SuiteLimits) -> Result<Report, StepError> {
            self.max_fail.push(limits.max_fail);
            let text = std::fs::read_to_string(self.tree.join("mm/u.c")).unwrap();
            if text.contains("hang") {
                panic!("the guest hung");
            }
            let a = if text.contains("killer") {
                Status::Fail
            } else {
                Status::Pass
            };
            Ok(Report {
                tests: vec![TestResult::group(
                    "copy",
                    vec![
                        TestResult::new("a on anon", a),
                        TestResult::new("b on anon", Status::Pass),
                    ],
                )],
                ..Default::default()
            })
        }

        fn wants_c(&self) -> bool {
            self.c
        }

        fn run_c(&mut self, _: &Path, _: &Path, _: &[String]) -> Result<CRun, StepError> {
            self.c_runs += 1;
            let text = std::fs::read_to_string(self.tree.join("mm/u.c")).unwrap();
            let exit = if text.contains("killer") { 1 } else { 0 };
            if self.c_silent {
                return Ok(CRun::default());
            }
            Ok(CRun {
                exits: [("uffd-unit-tests".to_string(), exit)].into(),
                finished: true,
                ..Default::default()
            })
        }
    }

    fn fake(l: &Layout) -> Fake {
        Fake {
            tree: l.tree.clone(),
            builds: 0,
            max_fail: vec![],
            c: false,
            c_runs: 0,
            c_silent: false,
        }
    }

    /// A fixture, its fake steps, and the baseline they gave.
    fn based(name: &str) -> (Layout, Fake, Baseline) {
        let l = fixture(name);
        let mut f = fake(&l);
        let base = baseline(&mut f, &l).unwrap();
        (l, f, base)
    }

    #[test]
    #[serial(mutate_apply)]
    fn outcomes_are_recorded_and_the_tree_is_restored_after_each() {
        let (l, mut f, base) = based("loop");
        assert_eq!((f.builds, base.stable.len()), (1, 2));
        let killer = replacing("k", "return killer;");
        let survivor = mutant("s");
        let broken = replacing("b", "broken");
        let eq = Mutant {
            equivalent: Some("why".into()),
            ..mutant("e")
        };
        let rs = run_all(&mut f, &l, &[&killer, &survivor, &broken, &eq], &base).unwrap();
        let names: Vec<&str> = rs.iter().map(|r| r.outcome.name()).collect();
        assert_eq!(names, ["killed", "survived", "build_failed", "equivalent"]);
        assert_eq!(
            rs[2].outcome,
            Outcome::BuildFailed {
                detail: "mm/u.c:1: error: expected ';'".into()
            }
        );
        assert_eq!(
            std::fs::read_to_string(l.tree.join("mm/u.c")).unwrap(),
            "\treturn -EINVAL;\n"
        );
        // One failure ends a mutant's run; the base runs go whole.
        assert_eq!(f.max_fail, [None, None, Some(1), Some(1)]);
        // A second call resumes: the base is read back and nothing runs again.
        let builds = f.builds;
        assert_eq!(baseline(&mut f, &l).unwrap(), base);
        assert!(run_all(&mut f, &l, &[&killer, &survivor], &base).unwrap().is_empty());
        assert_eq!(f.builds, builds);
        std::fs::remove_dir_all(l.tree.parent().unwrap()).unwrap();
    }

    #[test]
    #[serial(mutate_apply)]
    fn a_c_base_run_that_reports_nothing_stops_the_run_and_is_not_recorded() {
        let (l, mut f, _) = based("csilent");
        f.c = true;
        f.c_silent = true;
        let e = baseline(&mut f, &l).unwrap_err();
        assert!(
            matches!(&e, MutateError::CBase(why, _) if why.starts_with("the guest did not finish")),
            "{e}"
        );
        assert!(!l.results.dir.join("base/c.json").exists());
        // Asked again once the guest works, the base run is made then.
        f.c_silent = false;
        assert_eq!(
            baseline(&mut f, &l).unwrap().c_stable,
            Some(vec!["uffd-unit-tests".to_string()])
        );
        assert_eq!(f.c_runs, 2);
        std::fs::remove_dir_all(l.tree.parent().unwrap()).unwrap();
    }

    #[test]
    #[serial(mutate_apply)]
    fn compare_c_asked_for_later_runs_only_the_c_selftests_on_judged_mutants() {
        let (l, mut f, base) = based("owed");
        let killer = replacing("k", "return killer;");
        let survivor = mutant("s");
        let broken = replacing("b", "broken");
        run_all(&mut f, &l, &[&killer, &survivor, &broken], &base).unwrap();
        assert_eq!(f.max_fail.len(), 4);
        f.c = true;
        let base = baseline(&mut f, &l).unwrap();
        assert_eq!(f.c_runs, 1, "the C base run");
        let rs = run_all(&mut f, &l, &[&killer, &survivor, &broken], &base).unwrap();
        // Our suite is not run again, nor is the mutant that did not build.
        assert_eq!(f.max_fail.len(), 4);
        assert_eq!(f.c_runs, 3);
        let seen: Vec<(&str, &str, Option<bool>)> = rs
            .iter()
            .map(|r| (r.id.as_str(), r.outcome.name(), r.c.as_ref().map(|c| c.killed)))
            .collect();
        assert_eq!(seen, [("k", "killed", Some(true)), ("s", "survived", Some(false))]);
        assert!(
            run_all(&mut f, &l, &[&killer, &survivor, &broken], &base)
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            std::fs::read_to_string(l.tree.join("mm/u.c")).unwrap(),
            "\treturn -EINVAL;\n"
        );
        std::fs::remove_dir_all(l.tree.parent().unwrap()).unwrap();
    }

    #[test]
    #[serial(mutate_apply)]
    fn a_step_that_blows_up_mid_run_leaves_the_tree_clean() {
        let (l, mut f, base) = based("hang");
        let hang = replacing("h", "return hang;");
        let tree = l.tree.clone();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_one(&mut f, &l, &hang, &base, None)));
        assert!(r.is_err());
        assert_eq!(
            std::fs::read_to_string(tree.join("mm/u.c")).unwrap(),
            "\treturn -EINVAL;\n"
        );
        assert!(!tree.join(apply::JOURNAL).exists());
        assert!(l.results.done(&hang).is_none());
        std::fs::remove_dir_all(tree.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_base_that_does_not_build_stops_the_run() {
        let l = fixture("nobase");
        std::fs::write(l.tree.join("mm/u.c"), "broken").unwrap();
        let e = baseline(&mut fake(&l), &l).unwrap_err();
        assert!(e.to_string().contains("unmutated base cannot be judged"), "{e}");
        std::fs::remove_dir_all(l.tree.parent().unwrap()).unwrap();
    }
}
