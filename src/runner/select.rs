//! Which cases a run holds: every binary's cases listed, then the
//! selection (`--filter`, `--skip`, `--mem`, `--ioctl`, `--run-ignored`),
//! `--shard` and `--repeat` applied, in manifest order.

use super::discover::{Case, Manifest, list_cases};
use super::run::RunOptions;

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
pub fn plan(opts: &RunOptions) -> Result<Plan, String> {
    let manifest = Manifest::load(&opts.manifest)?;
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
