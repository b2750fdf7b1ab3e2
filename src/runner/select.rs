//! Which cases a run holds: every binary's cases listed, then the
//! selection (`--filter`, `--skip`, `--mem`, `--ioctl`, `--run-ignored`),
//! `--shard` and `--repeat` applied, in manifest order.

use super::discover::{Case, DiscoverError, Manifest, list_cases};
use super::env::EnvError;
use super::run::RunOptions;
use std::fmt;
use std::path::PathBuf;

/// Why a run stopped before its first case.
#[derive(Debug)]
pub enum PlanError {
    /// The manifest could not be read.
    Manifest(DiscoverError),
    /// The selection left no case.
    NothingSelected {
        manifest: PathBuf,
        filters: Vec<String>,
        mem: Vec<String>,
        ioctl: Vec<String>,
        shard: Option<(usize, usize)>,
    },
    /// The signal handling a clean stop needs could not be set up.
    Signals(EnvError),
}

impl PlanError {
    /// The selection of `opts` matched nothing.
    pub fn nothing_selected(opts: &RunOptions) -> PlanError {
        PlanError::NothingSelected {
            manifest: opts.manifest.clone(),
            filters: opts.filters.clone(),
            mem: opts.mem.clone(),
            ioctl: opts.ioctl.clone(),
            shard: opts.shard,
        }
    }
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanError::Manifest(e) => e.fmt(f),
            PlanError::NothingSelected {
                manifest,
                filters,
                mem,
                ioctl,
                shard,
            } => write!(
                f,
                "no case matched the selection in {} (filters {filters:?}, mem {mem:?}, ioctl {ioctl:?}, shard {shard:?})",
                manifest.display()
            ),
            PlanError::Signals(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for PlanError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PlanError::Manifest(e) => Some(e),
            PlanError::Signals(e) => Some(e),
            PlanError::NothingSelected { .. } => None,
        }
    }
}

impl From<PlanError> for String {
    fn from(e: PlanError) -> String {
        e.to_string()
    }
}

/// The planned run: binaries in manifest order, each with its selected cases.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub binaries: Vec<PlannedBinary>,
}

#[derive(Debug, Clone)]
pub struct PlannedBinary {
    pub name: String,
    pub cases: Vec<Case>,
    /// Listing failed: the binary is one `ERROR` result.
    pub error: Option<String>,
}

impl Plan {
    pub fn case_count(&self) -> usize {
        self.binaries.iter().map(|b| b.cases.len()).sum()
    }
}

/// Lists every binary's cases and applies the selection.
pub fn plan(opts: &RunOptions) -> Result<Plan, PlanError> {
    let manifest = Manifest::load(&opts.manifest).map_err(PlanError::Manifest)?;
    let mut plan = Plan::default();
    let mut dealt = 0usize;
    for b in &manifest.binaries {
        if !opts.ioctl.is_empty() && !opts.ioctl.iter().any(|i| norm(i) == norm(&b.name)) {
            continue;
        }
        let path = Manifest::resolve(&opts.manifest, b);
        let cases = match list_cases(b, &path) {
            Ok(c) => c,
            Err(e) => {
                plan.binaries.push(PlannedBinary {
                    name: b.name.clone(),
                    cases: Vec::new(),
                    error: Some(e.to_string()),
                });
                continue;
            }
        };
        let mut keep = Vec::new();
        for c in cases {
            if !selected(opts, &c) {
                continue;
            }
            if let Some((k, n)) = opts.shard {
                dealt += 1;
                if (dealt - 1) % n != k - 1 {
                    continue;
                }
            }
            keep.push(c);
        }
        if !keep.is_empty() {
            plan.binaries.push(PlannedBinary {
                name: b.name.clone(),
                cases: keep,
                error: None,
            });
        }
    }
    // A stable sort: the named binaries lead, each group keeps manifest order.
    plan.binaries
        .sort_by_key(|b| !opts.first.iter().any(|f| norm(f) == norm(&b.name)));
    if opts.repeat > 1 {
        let once = std::mem::take(&mut plan.binaries);
        plan.binaries = (0..opts.repeat).flat_map(|_| once.iter().cloned()).collect();
    }
    Ok(plan)
}

fn norm(s: &str) -> String {
    s.trim().replace('_', "-").to_ascii_lowercase()
}

fn selected(opts: &RunOptions, c: &Case) -> bool {
    if c.ignored && !opts.run_ignored {
        return false;
    }
    if !opts.mem.is_empty()
        && !c
            .variant
            .as_ref()
            .is_some_and(|v| opts.mem.iter().any(|m| norm(m) == norm(v)))
    {
        return false;
    }
    let hay = [c.test.clone(), c.name.clone(), format!("{}/{}", c.binary, c.test)];
    let hit = |p: &String| hay.iter().any(|h| matches_pattern(p, h));
    if !opts.filters.is_empty() && !opts.filters.iter().any(hit) {
        return false;
    }
    !opts.skip.iter().any(hit)
}

/// A pattern with `*` or `?` is a glob over the whole text; otherwise a substring.
pub fn matches_pattern(pat: &str, text: &str) -> bool {
    if pat.contains(['*', '?']) {
        glob(pat.as_bytes(), text.as_bytes())
    } else {
        text.contains(pat)
    }
}

fn glob(p: &[u8], t: &[u8]) -> bool {
    // Iterative wildcard match with backtracking to the last `*`.
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::substring("missing", "copy_fills_missing_page::case_1_anon", true)]
    #[case::glob_whole("copy_*::case_*_anon", "copy_fills_missing_page::case_1_anon", true)]
    #[case::glob_must_match_whole("copy_*", "x_copy_y", false)]
    #[case::question("a?c", "abc", true)]
    #[case::star_middle("*fills*shmem*", "copy_fills_missing_page::case_2_shmem", true)]
    #[case::no_match("zeropage", "copy_fills_missing_page", false)]
    fn patterns_match(#[case] pat: &str, #[case] text: &str, #[case] want: bool) {
        assert_eq!(matches_pattern(pat, text), want);
    }
}
