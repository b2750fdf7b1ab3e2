//! Judge a candidate run against a base run: what regressed, what got fixed, what changed skip state, which cases
//! appeared or vanished, and which kernel splats are new.
//!
//! Both sides are [`Report`]s, read from KTAP or our JSON by the runner's own parsers. A case is keyed by its path
//! in the report (binary / case). A case that appears more than once on one side (`--repeat N`) keeps every
//! status; one with mixed outcomes in the base is flaky there and is reported apart, never as a regression.

use crate::runner::result::{Report, Status, TestResult};
use crate::runner::{klog, ktap};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

mod render;
pub use render::{render_markdown, render_text};

/// Why a result file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// It starts like JSON but is not our report.
    #[error("{path}: not a uffdtest JSON report: {source}")]
    Json { path: PathBuf, source: serde_json::Error },
    /// Not JSON, and no KTAP in it either.
    #[error("{path}: {source}")]
    Ktap { path: PathBuf, source: ktap::ParseError },
}

/// Read a result: our JSON report (`uffdtest run --json`) or any KTAP/kselftest log, by the runner's parsers.
pub fn read_report(path: &Path) -> Result<Report, LoadError> {
    let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
        path: path.into(),
        source,
    })?;
    let text = String::from_utf8_lossy(&bytes);
    if text.trim_start().starts_with('{') {
        return serde_json::from_str::<Report>(&text).map_err(|source| LoadError::Json {
            path: path.into(),
            source,
        });
    }
    ktap::parse(&text).map_err(|source| LoadError::Ktap {
        path: path.into(),
        source,
    })
}

/// How a case moved between the two runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Passed (or was skipped) in the base, fails, times out, crashes or did not run in the candidate.
    Regression,
    /// Failed in the base, passes in the candidate.
    Fix,
    /// Ran in the base, skipped in the candidate: a feature, an ioctl or a
    /// memory type vanished, or a probe now says no. Gating when the base
    /// passed, since a SKIP must never be the way a regression gets through.
    NewlySkipped,
    /// Passed in the base, fails in the candidate as a declared known issue
    /// (XFAIL): the declaration matched a kernel it was not written for.
    NewlyXfail,
    /// Skipped in the base, passes in the candidate.
    Unskipped,
    /// Failed in both, but differently (fail → timeout); still failing.
    FailureChanged,
    /// Only in the candidate.
    New,
    /// Only in the base.
    Removed,
    /// Outcomes differ within the base's repeats; its movement says nothing.
    FlakyInBase,
    /// Stable in the base, mixed within the candidate's repeats (counted as a regression when the base passed).
    FlakyInCandidate,
}

impl Change {
    pub fn title(self) -> &'static str {
        match self {
            Change::Regression => "Regressions",
            Change::Fix => "Fixes",
            Change::NewlySkipped => "Newly skipped",
            Change::NewlyXfail => "Newly known failures (XFAIL)",
            Change::Unskipped => "Un-skipped",
            Change::FailureChanged => "Still failing, differently",
            Change::New => "New cases",
            Change::Removed => "Removed cases",
            Change::FlakyInBase => "Flaky in the base (not judged)",
            Change::FlakyInCandidate => "Flaky in the candidate",
        }
    }
}

/// One case that moved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CaseChange {
    pub case: String,
    pub change: Change,
    /// Statuses over the base's runs of the case (empty when new).
    pub base: Vec<Status>,
    /// Statuses over the candidate's runs (empty when removed).
    pub candidate: Vec<Status>,
    /// The candidate's reason (failure message, skip reason), else the base's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For a new case that looks like a renamed removed one (same binary, same variant, one of each): its old name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub renamed_from: Option<String>,
    /// Whether this change fails the gate (see [`Policy`]).
    pub gating: bool,
}

/// What the gate tolerates beyond a case that keeps its outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    /// Let a case that passed in the base skip, XFAIL or vanish in the
    /// candidate (`compare --allow-new-skips`): for runs on machines that
    /// differ on purpose (huge pages, swap), never for a kernel gate.
    pub allow_new_skips: bool,
}

/// A kernel splat seen in the candidate whose signature (see
/// [`klog::signature`]) the base never showed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewSplat {
    /// The headline with timestamps, CPU/PID, addresses and line numbers taken out.
    pub signature: String,
    /// The headline as logged.
    pub line: String,
    /// The cases during which it was logged.
    pub cases: Vec<String>,
}

/// The whole judgement.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    pub base_summary: String,
    pub candidate_summary: String,
    pub changes: Vec<CaseChange>,
    pub new_splats: Vec<NewSplat>,
    /// Cases the two runs share with the same outcome.
    pub unchanged: usize,
    /// Parse problems of either side, which make "not run" likelier than it looks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Both runs per binary × memory type, for `uffdtest report`'s side-by-side page.
    pub matrix: super::html::SideBySide,
}

impl Comparison {
    pub fn count(&self, c: Change) -> usize {
        self.changes.iter().filter(|x| x.change == c).count()
    }

    pub fn regressions(&self) -> usize {
        self.changes.iter().filter(|x| x.gating).count()
    }

    /// 1 on any regression or new splat, else 0.
    pub fn exit_code(&self) -> i32 {
        if self.regressions() > 0 || !self.new_splats.is_empty() {
            1
        } else {
            0
        }
    }

    pub fn verdict(&self) -> String {
        let (r, s) = (self.regressions(), self.new_splats.len());
        if r == 0 && s == 0 {
            return "OK: no regression, no new kernel splat".into();
        }
        let lost = |c: Change, what: &str| {
            let n = self.changes.iter().filter(|x| x.change == c && x.gating).count();
            (n > 0).then(|| format!("{n} pass → {what}"))
        };
        let parts: Vec<String> = [
            lost(Change::NewlySkipped, "skip"),
            lost(Change::NewlyXfail, "xfail"),
            lost(Change::Removed, "missing"),
        ]
        .into_iter()
        .flatten()
        .collect();
        let of_which = match parts.len() {
            0 => String::new(),
            _ => format!(" ({})", parts.join(", ")),
        };
        format!("REGRESSION: {r} regressed case(s){of_which}, {s} new kernel splat(s)")
    }
}

fn is_gating(c: &CaseChange, policy: Policy) -> bool {
    let passed = !c.base.is_empty() && c.base.iter().all(|s| *s == Status::Pass);
    match c.change {
        Change::Regression => true,
        Change::FlakyInCandidate => c.base.iter().all(|s| !s.is_failure()),
        // A pass that no longer shows as one: the case was the gate's, and
        // a SKIP, a declared failure or a missing line must not end that.
        // (A case that failed in the base has no pass to lose.)
        Change::NewlySkipped | Change::NewlyXfail | Change::Removed => passed && !policy.allow_new_skips,
        _ => false,
    }
}

/// `binary / case` for every leaf, in report order.
fn case_key(path: &[&str]) -> String {
    path.join(" / ")
}

struct Side<'a> {
    order: Vec<String>,
    runs: BTreeMap<String, Vec<&'a TestResult>>,
}

fn side(r: &Report) -> Side<'_> {
    let mut order = Vec::new();
    let mut runs: BTreeMap<String, Vec<&TestResult>> = BTreeMap::new();
    for (path, leaf) in r.leaves() {
        // A truncated log's missing cases come back nameless and crashed: nothing to match them by. The cases
        // they stand for are missing from this side by name, which `compare` handles.
        if leaf.status == Status::Crashed && leaf.name.is_empty() {
            continue;
        }
        let key = case_key(&path);
        let e = runs.entry(key.clone()).or_default();
        if e.is_empty() {
            order.push(key);
        }
        e.push(leaf);
    }
    Side { order, runs }
}

/// The outcome class a transition is judged on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Ok,
    Skip,
    Bad,
}

fn class(s: Status) -> Class {
    match s {
        Status::Skip => Class::Skip,
        s if s.is_failure() => Class::Bad,
        _ => Class::Ok,
    }
}

fn uniform(statuses: &[Status]) -> Option<Class> {
    let first = class(*statuses.first()?);
    statuses.iter().all(|s| class(*s) == first).then_some(first)
}

fn judge(base: &[Status], cand: &[Status]) -> Option<Change> {
    let Some(b) = uniform(base) else {
        return (base != cand).then_some(Change::FlakyInBase);
    };
    let Some(c) = uniform(cand) else {
        return Some(Change::FlakyInCandidate);
    };
    match (b, c) {
        (Class::Ok, Class::Bad) | (Class::Skip, Class::Bad) => Some(Change::Regression),
        (Class::Bad, Class::Ok) => Some(Change::Fix),
        (Class::Ok | Class::Bad, Class::Skip) => Some(Change::NewlySkipped),
        (Class::Skip, Class::Ok) => Some(Change::Unskipped),
        (Class::Ok, Class::Ok) if cand.contains(&Status::Xfail) && !base.contains(&Status::Xfail) => {
            Some(Change::NewlyXfail)
        }
        (Class::Bad, Class::Bad) => {
            let (bs, cs): (HashSet<_>, HashSet<_>) = (base.iter().collect(), cand.iter().collect());
            (bs != cs).then_some(Change::FailureChanged)
        }
        _ => None,
    }
}

fn reason(runs: &[&TestResult]) -> Option<String> {
    let t = runs.iter().rev().find(|t| t.status != Status::Pass).or(runs.last())?;
    // `exit=101` alone says nothing: add the assertion under the panic line, which says what the kernel did.
    let panic = t
        .diagnostics
        .iter()
        .position(|d| d.starts_with("thread '") && d.contains(" panicked at "));
    let detail: Vec<&str> = panic
        .map(|i| {
            t.diagnostics[i + 1..]
                .iter()
                .map(|d| d.trim())
                .take_while(|d| !d.is_empty())
                .take(3)
                .collect()
        })
        .unwrap_or_default();
    match (&t.reason, detail.is_empty()) {
        (Some(r), false) => Some(format!("{r}: {}", detail.join("; "))),
        (None, false) => Some(detail.join("; ")),
        (r, true) => r.clone(),
    }
}

/// The variant the runner recorded (the memory type), for rename pairing.
fn variant(key: &str, runs: &[&TestResult]) -> String {
    if let Some(v) = runs.first().and_then(|t| t.variant.clone()) {
        return v;
    }
    // A parsed log has only the KTAP name: `copy_fills_missing_page on shmem-private`.
    key.rsplit_once(" on ").map(|(_, v)| v.to_string()).unwrap_or_default()
}

fn group(key: &str) -> &str {
    key.rsplit_once(" / ").map_or("", |(g, _)| g)
}

/// Compare `candidate` against `base`.
pub fn compare(base: &Report, candidate: &Report, policy: Policy) -> Comparison {
    let (b, c) = (side(base), side(candidate));
    let truncated = candidate.interrupted || !candidate.parse_errors.is_empty();
    let mut changes = Vec::new();
    let mut unchanged = 0;
    let statuses = |runs: &[&TestResult]| runs.iter().map(|t| t.status).collect::<Vec<_>>();
    for key in &b.order {
        let bruns = &b.runs[key];
        let bs = statuses(bruns);
        match c.runs.get(key) {
            Some(cruns) => {
                let cs = statuses(cruns);
                match judge(&bs, &cs) {
                    Some(change) => changes.push(CaseChange {
                        case: key.clone(),
                        change,
                        base: bs,
                        candidate: cs,
                        reason: reason(cruns).or_else(|| reason(bruns)),
                        renamed_from: None,
                        gating: false,
                    }),
                    None => unchanged += 1,
                }
            }
            // A log that ended early lost its cases: they did not run, as if crashed.
            None if truncated => {
                if let Some(change) = judge(&bs, &[Status::Crashed]) {
                    changes.push(CaseChange {
                        case: key.clone(),
                        change,
                        base: bs,
                        candidate: vec![Status::Crashed],
                        reason: Some("not run: the candidate's log ended before it".into()),
                        renamed_from: None,
                        gating: false,
                    })
                }
            }
            // A complete log that lacks a case dropped it on purpose (or renamed it).
            None => changes.push(CaseChange {
                case: key.clone(),
                change: Change::Removed,
                base: bs,
                candidate: vec![],
                reason: None,
                renamed_from: None,
                gating: false,
            }),
        }
    }
    for key in c.order.iter().filter(|k| !b.runs.contains_key(*k)) {
        let cruns = &c.runs[key];
        changes.push(CaseChange {
            case: key.clone(),
            change: Change::New,
            base: vec![],
            candidate: statuses(cruns),
            reason: reason(cruns),
            renamed_from: None,
            gating: false,
        });
    }
    pair_renames(&mut changes, &b, &c);
    let renamed: HashSet<String> = changes.iter().filter_map(|x| x.renamed_from.clone()).collect();
    for x in &mut changes {
        // A probable rename keeps its outcome under the new name, judged there.
        x.gating = is_gating(x, policy) && !(x.change == Change::Removed && renamed.contains(&x.case));
    }
    changes.sort_by_key(|x| x.change);
    let mut warnings: Vec<String> = base.parse_errors.iter().map(|e| format!("base: {e}")).collect();
    warnings.extend(candidate.parse_errors.iter().map(|e| format!("candidate: {e}")));
    if candidate.interrupted {
        warnings.push("candidate: the run was interrupted".into());
    }
    Comparison {
        base_summary: base.totals().summary_line(),
        candidate_summary: candidate.totals().summary_line(),
        new_splats: new_splats(base, candidate),
        changes,
        unchanged,
        warnings,
        matrix: super::html::SideBySide {
            base: super::html::Matrix::of(base),
            candidate: super::html::Matrix::of(candidate),
        },
    }
}

/// Pair a removed and a new case of the same binary and variant when they are the only ones there.
fn pair_renames(changes: &mut [CaseChange], b: &Side, c: &Side) {
    let slot = |x: &CaseChange, s: &Side| (group(&x.case).to_string(), variant(&x.case, &s.runs[&x.case]));
    let mut removed: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
    let mut new: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
    for (i, x) in changes.iter().enumerate() {
        match x.change {
            Change::Removed => removed.entry(slot(x, b)).or_default().push(i),
            Change::New => new.entry(slot(x, c)).or_default().push(i),
            _ => {}
        }
    }
    for (k, r) in removed {
        if let Some(n) = new.get(&k)
            && r.len() == 1
            && n.len() == 1
        {
            let old = changes[r[0]].case.clone();
            let old_status = changes[r[0]].base.clone();
            let x = &mut changes[n[0]];
            x.renamed_from = Some(old);
            x.base = old_status;
        }
    }
}

fn splats(r: &Report) -> BTreeMap<String, (String, Vec<String>)> {
    let mut out: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    let mut add = |line: &str, case: String| {
        if let Some(sig) = klog::signature(line) {
            let e = out.entry(sig).or_insert_with(|| (line.trim().to_string(), Vec::new()));
            if !case.is_empty() && !e.1.contains(&case) {
                e.1.push(case);
            }
        }
    };
    for (path, leaf) in r.leaves() {
        // A parsed KTAP log keeps kernel lines as `kmsg: ...` diagnostics; a run keeps them in `kmsg`.
        let reason = leaf.reason.as_deref().filter(|r| r.starts_with("kernel log:"));
        for l in leaf
            .kmsg
            .iter()
            .chain(&leaf.diagnostics)
            .map(String::as_str)
            .chain(reason)
        {
            add(l, case_key(&path));
        }
    }
    for l in &r.diagnostics {
        add(l, String::new());
    }
    out
}

fn new_splats(base: &Report, candidate: &Report) -> Vec<NewSplat> {
    let known = splats(base);
    splats(candidate)
        .into_iter()
        .filter(|(sig, _)| !known.contains_key(sig))
        .map(|(signature, (line, cases))| NewSplat { signature, line, cases })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case(&[Status::Pass], &[Status::Fail], Some(Change::Regression))]
    #[case(&[Status::Pass], &[Status::Timeout], Some(Change::Regression))]
    #[case(&[Status::Pass], &[Status::Crashed], Some(Change::Regression))]
    #[case(&[Status::Skip], &[Status::Fail], Some(Change::Regression))]
    #[case(&[Status::Fail], &[Status::Pass], Some(Change::Fix))]
    #[case(&[Status::Pass], &[Status::Skip], Some(Change::NewlySkipped))]
    #[case(&[Status::Skip], &[Status::Pass], Some(Change::Unskipped))]
    #[case(&[Status::Fail], &[Status::Timeout], Some(Change::FailureChanged))]
    #[case(&[Status::Pass, Status::Fail], &[Status::Fail], Some(Change::FlakyInBase))]
    #[case(&[Status::Pass, Status::Pass], &[Status::Pass, Status::Fail], Some(Change::FlakyInCandidate))]
    #[case(&[Status::Pass], &[Status::Xfail], Some(Change::NewlyXfail))]
    #[case(&[Status::Xfail], &[Status::Xfail], None)]
    #[case(&[Status::Xfail], &[Status::Pass], None)]
    #[case(&[Status::Skip, Status::Skip], &[Status::Skip], None)]
    fn transitions(#[case] base: &[Status], #[case] cand: &[Status], #[case] want: Option<Change>) {
        assert_eq!(judge(base, cand), want);
    }
}
