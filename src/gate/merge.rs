//! Put the reports of `--shard 1/N` … `--shard N/N` back together into the report one unsharded run would give.
//!
//! The runner deals cases round-robin in plan order (case i goes to shard i mod N + 1), so taking one case from
//! each shard in turn restores the plan order exactly; consecutive cases of the same binary form its group again.

use crate::runner::result::{Report, TestResult};
use std::collections::HashSet;
use std::fmt;

/// Why shard reports do not merge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergeError {
    NoShards,
    /// A case is in two shards (1-based `shard` is the second): these are not the shards of one run.
    CaseInTwoShards {
        binary: String,
        case: String,
        shard: usize,
    },
}

impl fmt::Display for MergeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MergeError::NoShards => f.write_str("no shard reports to merge"),
            MergeError::CaseInTwoShards { binary, case, shard } => write!(
                f,
                "case `{binary} / {case}` is in more than one shard report (shard {shard} again): these are not the \
                 shards of one run"
            ),
        }
    }
}

impl std::error::Error for MergeError {}

/// Merge shard reports given in shard order (1/N first).
///
/// Err when a case appears in two shards (the reports are not shards of one run) or there is nothing to merge.
pub fn merge_shards(shards: &[Report]) -> Result<Report, MergeError> {
    if shards.is_empty() {
        return Err(MergeError::NoShards);
    }
    // Each shard as its plan-ordered list of (binary, case), with the binary group's own fields kept.
    let lists: Vec<Vec<(&TestResult, &TestResult)>> = shards
        .iter()
        .map(|r| {
            r.tests
                .iter()
                .flat_map(|g| g.subtests.iter().map(move |c| (g, c)))
                .collect()
        })
        .collect();
    let mut seen = HashSet::new();
    let mut order: Vec<(&TestResult, &TestResult)> = Vec::new();
    let longest = lists.iter().map(Vec::len).max().unwrap_or(0);
    for i in 0..longest {
        for (k, list) in lists.iter().enumerate() {
            if let Some(&(g, c)) = list.get(i) {
                if !seen.insert((g.name.as_str(), c.name.as_str())) {
                    return Err(MergeError::CaseInTwoShards {
                        binary: g.name.clone(),
                        case: c.name.clone(),
                        shard: k + 1,
                    });
                }
                order.push((g, c));
            }
        }
    }
    let mut tests: Vec<TestResult> = Vec::new();
    for (g, c) in order {
        match tests.last_mut() {
            Some(last) if last.name == g.name => last.subtests.push(c.clone()),
            _ => tests.push(TestResult {
                subtests: vec![c.clone()],
                ..g.clone()
            }),
        }
    }
    for g in &mut tests {
        // The group's verdict was its shard's; recompute it over all its cases.
        let merged = TestResult::group(g.name.clone(), std::mem::take(&mut g.subtests));
        g.status = merged.status;
        g.reason = merged.reason;
        g.duration_secs = merged.subtests.iter().map(|c| c.duration_secs).sum::<Option<f64>>();
        g.subtests = merged.subtests;
    }
    let mut out = Report {
        tests,
        ..Default::default()
    };
    for (k, r) in shards.iter().enumerate() {
        // A parsed shard's closing counts would only mislead next to the merged ones.
        let stale = |d: &&String| d.starts_with("Totals:") || is_summary_line(d);
        out.diagnostics.extend(
            r.diagnostics
                .iter()
                .filter(|d| !stale(d))
                .map(|d| format!("shard {}: {d}", k + 1)),
        );
        out.parse_errors
            .extend(r.parse_errors.iter().map(|e| format!("shard {}: {e}", k + 1)));
        out.interrupted |= r.interrupted;
        // Top-level leaves (a binary that could not even list its cases) have no cases to interleave.
        for t in r.tests.iter().filter(|t| t.subtests.is_empty()) {
            out.tests.push(t.clone());
        }
    }
    Ok(out)
}

/// `24 passed, 0 failed, 4 skipped`, the runner's closing line.
fn is_summary_line(d: &str) -> bool {
    let w: Vec<&str> = d.split_whitespace().collect();
    w.len() == 6 && w[1] == "passed," && w[3] == "failed," && w[5] == "skipped"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::result::Status;

    fn shard(cases: &[(&str, &str, Status)]) -> Report {
        let mut tests: Vec<TestResult> = Vec::new();
        for (bin, case, s) in cases {
            let leaf = TestResult::new(*case, *s);
            match tests.last_mut() {
                Some(g) if g.name == *bin => g.subtests.push(leaf),
                _ => tests.push(TestResult::group(*bin, vec![leaf])),
            }
        }
        for g in &mut tests {
            g.status = g.bubbled();
        }
        Report {
            tests,
            ..Default::default()
        }
    }

    #[test]
    fn round_robin_shards_merge_back_into_plan_order() {
        // Plan: api/a api/b copy/c copy/d copy/e, dealt to 2 shards.
        let s1 = shard(&[
            ("api", "a", Status::Pass),
            ("copy", "c", Status::Fail),
            ("copy", "e", Status::Skip),
        ]);
        let s2 = shard(&[("api", "b", Status::Pass), ("copy", "d", Status::Pass)]);
        let m = merge_shards(&[s1, s2]).unwrap();
        let names: Vec<String> = m.leaves().iter().map(|(p, _)| p.join("/")).collect();
        assert_eq!(names, ["api/a", "api/b", "copy/c", "copy/d", "copy/e"]);
        assert_eq!(m.tests.len(), 2);
        assert_eq!(m.tests[1].status, Status::Fail);
        assert_eq!(m.totals().total(), 5);
    }

    #[test]
    fn the_same_case_in_two_shards_is_refused() {
        let s = shard(&[("api", "a", Status::Pass)]);
        assert_eq!(
            merge_shards(&[s.clone(), s]),
            Err(MergeError::CaseInTwoShards {
                binary: "api".into(),
                case: "a".into(),
                shard: 2
            })
        );
        assert_eq!(merge_shards(&[]), Err(MergeError::NoShards));
    }
}
