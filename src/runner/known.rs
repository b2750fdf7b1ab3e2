//! Known failures, declared once: a data file of entries (case glob,
//! variants, conditions on opaque facts and the kernel release, the fix that
//! cures it) that turns a matching failure into XFAIL and a matching pass
//! into XPASS. Generic: the facts are strings the caller hands in (what the
//! kernel offers); this module never learns what they mean.
//!
//! Accepted format (TOML):
//!
//! ```toml
//! [[issue]]
//! cases = ["wp_fork/fork_without_event_drops_wp_in_child"]  # binary/test, globs
//! mem = ["hugetlb-private"]          # variants; absent: any
//! kernel = ">= 6.1, < 6.3.2"         # release range; absent: any
//! facts = ["UFFD_FEATURE_POISON", "!multi_vma_writeprotect"]  # all must hold
//! fix = "5a2f8d22ace4"
//! subject = "mm/hugetlb: fix uffd-wp during fork()"
//! reason = "private hugetlb keeps uffd-wp in a child without EVENT_FORK"
//! ```
//!
//! A bug upstream has not fixed yet names where it is written up instead of
//! `fix` and `subject`: `unfixed = "docs/findings/devzero-private-fill.md"`.

use super::result::{Report, Status, TestResult};
use super::select::matches_pattern;
use serde::Deserialize;
use std::collections::BTreeSet;

/// One declared issue.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Issue {
    /// `binary/test` globs (`*`, `?`) or substrings, the test without its
    /// `::case_N_variant` suffix, or with it (and its other parameters).
    pub cases: Vec<String>,
    /// Variants (memory types) it is declared for; empty: every variant.
    #[serde(default)]
    pub mem: Vec<String>,
    /// Kernel release range: comparisons joined by `,` (`>= 6.1, < 6.3.2`).
    #[serde(default)]
    pub kernel: Option<String>,
    /// Facts that must all be present (`NAME`) or absent (`!NAME`).
    #[serde(default)]
    pub facts: Vec<String>,
    /// The upstream commit that fixes it (12+ hex digits), and its subject
    /// (serde reads an absent `Option` field as None).
    pub fix: Option<String>,
    pub subject: Option<String>,
    /// For a bug with no upstream fix yet: where it is written up.
    pub unfixed: Option<String>,
    pub reason: String,
}

/// The file: every declared issue.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnownIssues {
    #[serde(default)]
    pub issue: Vec<Issue>,
}

/// What the machine under test is: its kernel release, and the facts its
/// probes established. `None` release or an unknown fact never matches a
/// condition on it, so an issue is only declared where it is known to apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    pub release: Option<String>,
    /// Facts that hold.
    pub present: BTreeSet<String>,
    /// Facts known not to hold (anything else is unknown).
    pub absent: BTreeSet<String>,
}

/// The issues and the facts to judge them by.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expectations {
    pub issues: KnownIssues,
    pub facts: Facts,
}

/// Why a known-issues file was refused: a run must not go on with a
/// declaration it misread.
#[derive(Debug)]
pub enum KnownError {
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// Not TOML of the expected shape.
    Toml(toml::de::Error),
    /// Entry `n` (1-based) is malformed.
    Entry { n: usize, problem: String },
    /// A problem in the file at `path`.
    In {
        path: std::path::PathBuf,
        source: Box<KnownError>,
    },
}

impl std::fmt::Display for KnownError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KnownError::Read { path, source } => write!(f, "cannot read {}: {source}", path.display()),
            KnownError::Toml(e) => write!(f, "{e}"),
            KnownError::Entry { n, problem } => write!(f, "issue {n}: {problem}"),
            KnownError::In { path, source } => write!(f, "{}: {source}", path.display()),
        }
    }
}

impl std::error::Error for KnownError {}

impl KnownIssues {
    /// Parses and checks the file (every range and fix well-formed).
    pub fn parse(text: &str) -> Result<KnownIssues, KnownError> {
        let k: KnownIssues = toml::from_str(text).map_err(KnownError::Toml)?;
        for (i, issue) in k.issue.iter().enumerate() {
            let entry = |problem: String| KnownError::Entry { n: i + 1, problem };
            if issue.cases.is_empty() {
                return Err(entry("`cases` is empty".into()));
            }
            if let Some(r) = &issue.kernel {
                parse_range(r).map_err(|e| entry(format!("kernel {r:?}: {e}")))?;
            }
            match (&issue.fix, &issue.subject, &issue.unfixed) {
                (Some(fix), Some(_), None) => {
                    if fix.len() < 12 || !fix.chars().all(|c| c.is_ascii_hexdigit()) {
                        return Err(entry(format!("fix {fix:?} is not a commit id (12 or more hex digits)")));
                    }
                }
                (None, None, Some(_)) => {}
                _ => {
                    return Err(entry(
                        "needs `fix` and `subject` (the upstream fix), or `unfixed` (where the bug is written up) alone"
                            .into(),
                    ));
                }
            }
        }
        Ok(k)
    }

    /// Reads `path`; a missing file declares nothing.
    pub fn load(path: &std::path::Path) -> Result<KnownIssues, KnownError> {
        match std::fs::read_to_string(path) {
            Ok(t) => KnownIssues::parse(&t).map_err(|e| KnownError::In {
                path: path.into(),
                source: Box::new(e),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(KnownIssues::default()),
            Err(source) => Err(KnownError::Read {
                path: path.into(),
                source,
            }),
        }
    }

    /// The first issue declared for `binary`'s `test` (libtest name, case
    /// suffix allowed) in `variant`, under `facts`.
    pub fn matching(&self, binary: &str, test: &str, variant: Option<&str>, facts: &Facts) -> Option<&Issue> {
        let base = test.split("::case_").next().unwrap_or(test);
        let name = format!("{binary}/{base}");
        // The whole libtest name too, for a declaration that holds for some
        // parameters only (`register::case_06_droppable::mode_1_MISSING`).
        let full = format!("{binary}/{test}");
        self.issue.iter().find(|i| {
            i.cases
                .iter()
                .any(|c| matches_pattern(c, &name) || matches_pattern(c, &full))
                && (i.mem.is_empty() || variant.is_some_and(|v| i.mem.iter().any(|m| m == v)))
                && i.kernel
                    .as_deref()
                    .is_none_or(|r| release_in(r, facts.release.as_deref()))
                && i.facts.iter().all(|f| match f.strip_prefix('!') {
                    Some(f) => facts.absent.contains(f),
                    None => facts.present.contains(f),
                })
        })
    }
}

impl Issue {
    /// The XFAIL reason: `<reason>; fixed by <fix> ("<subject>")`, or
    /// `<reason>; not fixed upstream (<where>)`.
    pub fn directive(&self) -> String {
        match (&self.fix, &self.subject, &self.unfixed) {
            (Some(fix), Some(subject), _) => format!("{}; fixed by {fix} (\"{subject}\")", self.reason),
            (_, _, unfixed) => format!(
                "{}; not fixed upstream ({})",
                self.reason,
                unfixed.as_deref().unwrap_or("?")
            ),
        }
    }
}

impl Expectations {
    /// Marks one case of `binary`: a declared failure becomes XFAIL (its
    /// own reason kept as a diagnostic), a declared case that passed XPASS.
    /// Skips, errors and undeclared cases are left alone.
    pub fn apply(&self, binary: &str, t: &mut TestResult) {
        // A case read back from KTAP (a guest's run) has only its
        // description, `<test> on <variant>`: take both from there.
        let (test, variant) = match (&t.test, &t.variant) {
            (Some(test), v) => (test.clone(), v.clone()),
            (None, Some(v)) => (t.name.clone(), Some(v.clone())),
            (None, None) => match t.name.split_once(" on ") {
                Some((test, v)) => (test.to_string(), Some(v.to_string())),
                None => (t.name.clone(), None),
            },
        };
        let Some(issue) = self.issues.matching(binary, &test, variant.as_deref(), &self.facts) else {
            return;
        };
        match t.status {
            Status::Fail | Status::Timeout | Status::Crashed => {
                if let Some(r) = t.reason.take() {
                    t.diagnostics.push(format!("failed as declared: {r}"));
                }
                t.status = Status::Xfail;
                t.reason = Some(issue.directive());
            }
            Status::Pass => {
                t.status = Status::Xpass;
                t.reason = Some(format!("declared known issue did not reproduce: {}", issue.directive()));
            }
            _ => {}
        }
    }

    /// [`Expectations::apply`] over a whole report (cases under their
    /// binary's group), the groups' statuses bubbled again.
    pub fn apply_report(&self, r: &mut Report) {
        for g in &mut r.tests {
            let bin = g.name.clone();
            if g.subtests.is_empty() {
                continue;
            }
            for t in &mut g.subtests {
                self.apply(&bin, t);
            }
            g.status = g.bubbled();
        }
    }
}

/// `6.12.118+deb12-cloud-amd64` → `[6, 12, 118]`.
pub fn release_numbers(release: &str) -> Option<Vec<u64>> {
    let head: String = release
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let v: Vec<u64> = head
        .split('.')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().ok())
        .collect::<Option<_>>()?;
    (!v.is_empty()).then_some(v)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
}

fn parse_range(r: &str) -> Result<Vec<(Op, Vec<u64>)>, String> {
    r.split(',')
        .map(|c| {
            let c = c.trim();
            let (op, rest) = [
                ("<=", Op::Le),
                (">=", Op::Ge),
                ("<", Op::Lt),
                (">", Op::Gt),
                ("=", Op::Eq),
            ]
            .iter()
            .find_map(|(p, op)| c.strip_prefix(p).map(|rest| (*op, rest.trim())))
            .ok_or_else(|| format!("{c:?} has no comparison (<, <=, >, >=, =)"))?;
            let v = release_numbers(rest).ok_or_else(|| format!("{rest:?} is not a release"))?;
            Ok((op, v))
        })
        .collect()
}

/// Whether `release` lies in range `r`; an unknown release is in no range.
fn release_in(r: &str, release: Option<&str>) -> bool {
    let (Ok(range), Some(v)) = (parse_range(r), release.and_then(release_numbers)) else {
        return false;
    };
    range.iter().all(|(op, bound)| {
        // Missing components count as 0: 6.1 == 6.1.0.
        let n = v.len().max(bound.len());
        let pad = |x: &Vec<u64>| (0..n).map(|i| x.get(i).copied().unwrap_or(0)).collect::<Vec<_>>();
        let ord = pad(&v).cmp(&pad(bound));
        match op {
            Op::Lt => ord.is_lt(),
            Op::Le => ord.is_le(),
            Op::Gt => ord.is_gt(),
            Op::Ge => ord.is_ge(),
            Op::Eq => ord.is_eq(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const FILE: &str = r#"
[[issue]]
cases = ["wp_fork/fork_*"]
mem = ["hugetlb-private"]
kernel = ">= 6.1, < 6.3.2"
fix = "5a2f8d22ace4"
subject = "mm/hugetlb: fix uffd-wp during fork()"
reason = "child keeps uffd-wp"

[[issue]]
cases = ["mmap_changing/resolving_ioctls_*"]
facts = ["UFFD_FEATURE_MOVE", "!fixed_thing"]
fix = "95567729173e"
subject = "s"
reason = "r"
"#;

    fn facts(release: &str, present: &[&str], absent: &[&str]) -> Facts {
        Facts {
            release: Some(release.into()),
            present: present.iter().map(|s| s.to_string()).collect(),
            absent: absent.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[rstest]
    #[case::in_range(
        "fork_without_event::case_5_hugetlb_private",
        Some("hugetlb-private"),
        "6.1.190+deb12-cloud-amd64",
        true
    )]
    #[case::other_mem("fork_without_event::case_1_anon", Some("anon"), "6.1.190", false)]
    #[case::fixed_release("fork_without_event", Some("hugetlb-private"), "6.12.118", false)]
    #[case::backport_bound("fork_without_event", Some("hugetlb-private"), "6.3.2", false)]
    #[case::just_below("fork_without_event", Some("hugetlb-private"), "6.3.1", true)]
    #[case::bare_major_minor("fork_x", Some("hugetlb-private"), "6.1", true)]
    #[case::other_test("pin_in_child", Some("hugetlb-private"), "6.1.190", false)]
    fn release_and_variant_decide(
        #[case] test: &str,
        #[case] variant: Option<&str>,
        #[case] release: &str,
        #[case] want: bool,
    ) {
        let k = KnownIssues::parse(FILE).unwrap();
        let got = k.matching("wp_fork", test, variant, &facts(release, &[], &[]));
        assert_eq!(got.is_some(), want);
    }

    #[rstest]
    #[case::all_hold(&["UFFD_FEATURE_MOVE"], &["fixed_thing"], true)]
    #[case::negated_present(&["UFFD_FEATURE_MOVE", "fixed_thing"], &[], false)]
    #[case::negated_unknown(&["UFFD_FEATURE_MOVE"], &[], false)]
    #[case::required_missing(&[], &["fixed_thing"], false)]
    fn facts_decide(#[case] present: &[&str], #[case] absent: &[&str], #[case] want: bool) {
        let k = KnownIssues::parse(FILE).unwrap();
        let got = k.matching(
            "mmap_changing",
            "resolving_ioctls_fail_eagain::case_2_shmem",
            Some("shmem"),
            &facts("6.18.1", present, absent),
        );
        assert_eq!(got.is_some(), want);
    }

    #[test]
    fn unknown_release_matches_no_range() {
        let k = KnownIssues::parse(FILE).unwrap();
        let f = Facts::default();
        assert!(k.matching("wp_fork", "fork_x", Some("hugetlb-private"), &f).is_none());
    }

    #[rstest]
    #[case::bad_range("kernel = \"about 6.1\"", "no comparison")]
    #[case::bad_fix("fix = \"v6.4\"", "not a commit id")]
    #[case::unknown_key("severity = \"high\"", "unknown field")]
    #[case::fixed_and_unfixed("unfixed = \"docs/findings/x.md\"", "or `unfixed`")]
    fn malformed_entries_are_refused(#[case] line: &str, #[case] want: &str) {
        let mut fields = vec![
            "cases = [\"a/b\"]".to_string(),
            "subject = \"s\"".into(),
            "reason = \"r\"".into(),
        ];
        if !line.starts_with("fix") {
            fields.push("fix = \"0123456789ab\"".into());
        }
        fields.push(line.into());
        let text = format!("[[issue]]\n{}\n", fields.join("\n"));
        let e = KnownIssues::parse(&text).unwrap_err().to_string();
        assert!(e.contains(want), "{e}");
    }

    #[test]
    fn an_unfixed_bug_names_where_it_is_written_up() {
        let k = KnownIssues::parse("[[issue]]\ncases = [\"a/b\"]\nunfixed = \"docs/findings/x.md\"\nreason = \"r\"\n")
            .unwrap();
        assert_eq!(k.issue[0].directive(), "r; not fixed upstream (docs/findings/x.md)");
        let half = "[[issue]]\ncases = [\"a/b\"]\nfix = \"0123456789ab\"\nreason = \"r\"\n";
        assert!(
            KnownIssues::parse(half)
                .unwrap_err()
                .to_string()
                .contains("needs `fix` and `subject`")
        );
    }

    #[test]
    fn failure_becomes_xfail_and_pass_xpass() {
        let e = Expectations {
            issues: KnownIssues::parse(FILE).unwrap(),
            facts: facts("6.1.190", &[], &[]),
        };
        let mut fail = TestResult::new("fork_x on hugetlb-private", Status::Fail).with_reason("exit status 101");
        fail.test = Some("fork_x::case_5_hugetlb_private".into());
        fail.variant = Some("hugetlb-private".into());
        let mut pass = fail.clone();
        pass.status = Status::Pass;
        pass.reason = None;
        let mut skip = fail.clone();
        skip.status = Status::Skip;
        let mut r = Report {
            tests: vec![TestResult::group("wp_fork", vec![fail, pass, skip])],
            ..Report::default()
        };
        e.apply_report(&mut r);
        let cases = &r.tests[0].subtests;
        assert_eq!(cases[0].status, Status::Xfail);
        assert_eq!(
            cases[0].reason.as_deref(),
            Some("child keeps uffd-wp; fixed by 5a2f8d22ace4 (\"mm/hugetlb: fix uffd-wp during fork()\")")
        );
        assert_eq!(cases[0].diagnostics, ["failed as declared: exit status 101"]);
        assert_eq!(cases[1].status, Status::Xpass);
        assert_eq!(cases[2].status, Status::Skip);
        assert_eq!(r.tests[0].status, Status::Fail, "an XPASS fails its binary");
    }

    #[test]
    fn a_case_read_back_from_ktap_matches_by_its_description() {
        // A guest's KTAP gives `<test> on <variant>` and nothing else.
        let e = Expectations {
            issues: KnownIssues::parse(FILE).unwrap(),
            facts: facts("6.1.0-57-cloud-amd64", &[], &[]),
        };
        let fail = TestResult::new("fork_x on hugetlb-private", Status::Fail);
        let other_mem = TestResult::new("fork_x on hugetlb", Status::Fail);
        let mut r = Report {
            tests: vec![TestResult::group("wp_fork", vec![fail, other_mem])],
            ..Report::default()
        };
        e.apply_report(&mut r);
        assert_eq!(r.tests[0].subtests[0].status, Status::Xfail);
        assert_eq!(r.tests[0].subtests[1].status, Status::Fail, "not declared on hugetlb");
    }
}
