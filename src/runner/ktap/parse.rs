//! Reads a log holding KTAP (or TAP 13/14, or kselftest output) into a
//! [`Report`], as kunit_tool's parser does, but lenient where kselftest is.

use super::line::{ResultLine, directive_status, parse_result_line};
use super::{KMSG_PREFIX, TIME_PREFIX};
use crate::runner::result::{Report, Status, TestResult};

/// Why a log could not be read as KTAP at all (problems within a KTAP
/// stream are kept in [`Report::parse_errors`] instead).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// No `KTAP version N` or `TAP version N` line anywhere.
    NoVersionLine,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParseError::NoVersionLine => f.write_str("no KTAP found: no `KTAP version 1` or `TAP version N` line"),
        }
    }
}

impl std::error::Error for ParseError {}

/// Where the kernel's console ends a KTAP stream (as kunit_parser does).
const END_MARKERS: [&str; 3] = [
    "List of all partitions:",
    "Kernel panic - not syncing: VFS:",
    "reboot: System halted",
];

/// Parses a log holding KTAP (or TAP 13/14, or kselftest output) into a report.
///
/// Parsing starts at the first `KTAP version N` / `TAP version N` line;
/// whatever precedes the version on that line (a timestamp, a printk
/// prefix) is stripped from every later line. Unknown lines are kept as
/// diagnostics. Planned tests that never got a result line are
/// [`Status::Crashed`], so a log cut short never reads as a pass.
/// Err when no version line is found ("no KTAP found").
pub fn parse(text: &str) -> Result<Report, ParseError> {
    let mut lines = text.lines();
    let mut prefix_len = 0;
    let mut version_line = None;
    for l in lines.by_ref() {
        if let Some(i) = find_version(l) {
            prefix_len = l[..i].chars().count();
            version_line = Some(l[i..].to_string());
            break;
        }
    }
    let Some(version_line) = version_line else {
        return Err(ParseError::NoVersionLine);
    };
    let mut body: Vec<String> = vec![version_line];
    for l in lines {
        let l: String = l.chars().skip(prefix_len.min(l.chars().count())).collect();
        if END_MARKERS.iter().any(|m| l.contains(m)) {
            break;
        }
        body.push(l.trim_end().to_string());
    }
    let mut p = Parser {
        lines: body,
        pos: 0,
        errors: Vec::new(),
    };
    let mut report = Report::default();
    let version = p.next().expect("version line");
    p.check_version(&version);
    let mut top = Block { name: None, indent: 0 };
    top.indent = 0;
    let (tests, lead, trail, skip_all) = p.block(&top, true);
    report.tests = tests;
    report.diagnostics = lead;
    report.diagnostics.extend(trail);
    if let Some(reason) = skip_all {
        report.diagnostics.push(format!("skip-all plan: {reason}"));
    }
    report.parse_errors = p.errors;
    Ok(report)
}

/// Byte offset of `KTAP version N` / `TAP version N` in a line.
fn find_version(l: &str) -> Option<usize> {
    for pat in ["KTAP version ", "TAP version "] {
        if let Some(i) = l.find(pat) {
            let rest = &l[i + pat.len()..];
            if !rest.is_empty() && rest.trim().bytes().all(|b| b.is_ascii_digit()) {
                // `TAP version` inside `KTAP version`: take the K.
                return Some(if pat == "TAP version " && i > 0 && l.as_bytes()[i - 1] == b'K' {
                    i - 1
                } else {
                    i
                });
            }
        }
    }
    None
}

struct Block {
    /// From `# Subtest: name`.
    name: Option<String>,
    /// Indentation of the block's header line; a result line less indented ends it.
    indent: usize,
}

struct Parser {
    lines: Vec<String>,
    pos: usize,
    errors: Vec<String>,
}

enum Line {
    Version,
    Subtest(String),
    Plan(usize, Option<String>),
    Result(ResultLine),
    Other,
}

fn classify(l: &str) -> Line {
    let t = l.trim();
    if t.starts_with("KTAP version ") || t.starts_with("TAP version ") {
        return Line::Version;
    }
    if let Some(n) = t.strip_prefix("# Subtest:") {
        return Line::Subtest(n.trim().to_string());
    }
    if let Some(p) = t.strip_prefix("1..") {
        let (num, rest) = p.split_once(' ').unwrap_or((p, ""));
        if let Ok(n) = num.parse() {
            let skip = rest.trim().strip_prefix('#').map(str::trim).and_then(|r| {
                let (w, reason) = r.split_once(' ').unwrap_or((r, ""));
                w.eq_ignore_ascii_case("skip").then(|| reason.trim().to_string())
            });
            return Line::Plan(n, skip);
        }
    }
    if let Some(r) = parse_result_line(t) {
        return Line::Result(r);
    }
    Line::Other
}

fn indent_of(l: &str) -> usize {
    l.len() - l.trim_start().len()
}

/// A diagnostic's text: `# x` → `x`; an unknown line is kept whole.
fn diag_text(l: &str) -> String {
    let t = l.trim();
    match t.strip_prefix('#') {
        Some(r) => r.strip_prefix(' ').unwrap_or(r).to_string(),
        None => t.to_string(),
    }
}

impl Parser {
    fn peek(&self) -> Option<&str> {
        self.lines.get(self.pos).map(String::as_str)
    }

    fn next(&mut self) -> Option<String> {
        let l = self.lines.get(self.pos).cloned();
        self.pos += 1;
        l
    }

    fn check_version(&mut self, l: &str) {
        let t = l.trim();
        if !(t == "KTAP version 1" || t == "TAP version 13" || t == "TAP version 14") {
            self.errors.push(format!("unsupported version line: {t}"));
        }
    }

    /// Diagnostic and unknown lines up to the next structural line.
    fn diagnostics(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(l) = self.peek() {
            if matches!(classify(l), Line::Other) {
                if !l.trim().is_empty() {
                    out.push(diag_text(l));
                }
                self.pos += 1;
            } else {
                break;
            }
        }
        out
    }

    /// Parses a block's plan and tests, up to (not including) the parent's
    /// result line. Returns (tests, diagnostics before the first test,
    /// diagnostics after the last, skip-all reason).
    fn block(&mut self, b: &Block, top: bool) -> (Vec<TestResult>, Vec<String>, Vec<String>, Option<String>) {
        let lead = self.diagnostics();
        let mut plan = None;
        if let Some(l) = self.peek()
            && let Line::Plan(n, skip) = classify(l)
        {
            self.pos += 1;
            if n == 0 {
                let reason = skip.unwrap_or_else(|| "no tests planned".into());
                if top {
                    self.errors.push(format!("0 tests run! ({reason})"));
                }
                let trail = if top { self.rest_as_diagnostics() } else { Vec::new() };
                return (Vec::new(), lead, trail, Some(reason));
            }
            plan = Some(n);
        }
        let mut tests: Vec<TestResult> = Vec::new();
        let mut pending = Vec::new();
        loop {
            // Diagnostics belong to the result line that follows them.
            pending.extend(self.diagnostics());
            if plan.is_some_and(|n| tests.len() >= n) {
                break;
            }
            let Some(l) = self.peek().map(str::to_string) else {
                break;
            };
            match classify(&l) {
                Line::Version | Line::Subtest(_) => {
                    let sub = self.subtest(std::mem::take(&mut pending), tests.len() + 1);
                    tests.push(sub);
                }
                Line::Result(r) => {
                    if !top && (indent_of(&l) < b.indent || b.name.as_deref().is_some_and(|n| n == r.name)) {
                        break; // the parent's own result line
                    }
                    self.pos += 1;
                    tests.push(self.leaf(r, std::mem::take(&mut pending), tests.len() + 1));
                }
                Line::Plan(n, _) => {
                    self.errors.push(format!("unexpected plan 1..{n} after tests"));
                    self.pos += 1;
                }
                Line::Other => unreachable!("diagnostics() consumed it"),
            }
        }
        if let Some(n) = plan {
            while tests.len() < n {
                self.errors
                    .push(format!("missing expected subtest {}", tests.len() + 1));
                let mut t = TestResult::new("", Status::Crashed).with_reason("result line never appeared");
                t.diagnostics = std::mem::take(&mut pending);
                tests.push(t);
            }
        }
        let mut trail = pending;
        if top {
            trail.extend(self.rest_as_diagnostics());
        }
        (tests, lead, trail, None)
    }

    /// After the top-level plan is met: everything left is diagnostics.
    fn rest_as_diagnostics(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(l) = self.next() {
            if !l.trim().is_empty() {
                out.push(diag_text(&l));
            }
        }
        out
    }

    fn leaf(&mut self, r: ResultLine, diagnostics: Vec<String>, expected: usize) -> TestResult {
        if r.number != expected {
            self.errors.push(format!(
                "expected test number {expected} but found {} ({})",
                r.number, r.name
            ));
        }
        let (status, reason) = directive_status(r.ok, r.directive.as_deref());
        let mut t = TestResult::new(r.name, status);
        t.reason = reason;
        for d in diagnostics {
            if let Some(k) = d.strip_prefix(KMSG_PREFIX) {
                t.kmsg.push(k.to_string());
            } else if let Some(secs) = d
                .strip_prefix(TIME_PREFIX)
                .and_then(|s| s.strip_suffix(" s"))
                .and_then(|s| s.parse().ok())
            {
                t.duration_secs = Some(secs);
            } else {
                t.diagnostics.push(d);
            }
        }
        if let Some(r) = &t.reason {
            if let Some(sig) = r.strip_prefix("killed by signal ") {
                t.signal = Some(sig.split_whitespace().next().unwrap_or(sig).to_string());
            } else if let Some(code) = r.strip_prefix("exit=").or_else(|| r.strip_prefix("exit status ")) {
                t.exit_code = code.split_whitespace().next().and_then(|c| c.parse().ok());
            }
        }
        t
    }

    /// A nested block: header, its tests, then its own result line.
    fn subtest(&mut self, mut lead: Vec<String>, expected: usize) -> TestResult {
        let mut name = None;
        let mut indent = usize::MAX;
        while let Some(l) = self.peek().map(str::to_string) {
            match classify(&l) {
                Line::Version => {
                    self.check_version(&l);
                    indent = indent.min(indent_of(&l));
                    self.pos += 1;
                }
                Line::Subtest(n) => {
                    name = Some(n);
                    indent = indent.min(indent_of(&l));
                    self.pos += 1;
                }
                Line::Other => lead.extend(self.diagnostics()),
                _ => break,
            }
        }
        let b = Block {
            name: name.clone(),
            indent: if indent == usize::MAX { 0 } else { indent },
        };
        let (subtests, inner_lead, trail, skip_all) = self.block(&b, false);
        lead.extend(inner_lead);
        lead.extend(trail);
        let more = self.diagnostics();
        lead.extend(more);
        let mut t = match self.peek().map(classify) {
            Some(Line::Result(r)) => {
                self.pos += 1;
                let t = self.leaf(r, Vec::new(), expected);
                if let Some(n) = &name
                    && t.name != *n
                {
                    self.errors
                        .push(format!("result line {:?} does not match subtest header {n:?}", t.name));
                }
                t
            }
            _ => {
                self.errors.push(format!(
                    "missing subtest result line for {}",
                    name.as_deref().unwrap_or("?")
                ));
                TestResult::new(name.clone().unwrap_or_default(), Status::Crashed)
                    .with_reason("subtest result line never appeared")
            }
        };
        t.diagnostics = lead;
        t.subtests = subtests;
        if let Some(reason) = skip_all
            && t.status == Status::Pass
        {
            t.status = Status::Skip;
            t.reason.get_or_insert(reason);
        }
        // A crash inside the block fails the parent even if its line said ok.
        if !t.subtests.is_empty() {
            let b = t.bubbled();
            if b.is_failure() && t.status.is_ok() {
                t.status = Status::Fail;
            }
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::result::Totals;

    /// A golden log from `tests/data/ktap/`, parsed.
    fn golden(name: &str) -> Report {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/ktap/");
        parse(&std::fs::read_to_string(format!("{path}{name}")).unwrap()).unwrap()
    }

    #[test]
    fn kselftest_runner_output_parses_flat() {
        let r = golden("kselftest-runner-flat.log");
        assert!(r.parse_errors.is_empty(), "{:?}", r.parse_errors);
        let st: Vec<_> = r.tests.iter().map(|t| (t.name.as_str(), t.status)).collect();
        assert_eq!(
            st,
            [
                ("selftests: mm: uffd-unit-tests", Status::Pass),
                ("selftests: mm: uffd-stress", Status::Fail),
                ("selftests: mm: slow", Status::Timeout),
            ]
        );
        assert_eq!(r.tests[1].exit_code, Some(1));
        // The binary's own TAP, behind `# `, stays diagnostics (as in kunit.py).
        assert!(r.tests[0].diagnostics.contains(&"ok 1 x".to_string()));
    }

    #[test]
    fn kselftest_results_without_names_are_read() {
        let r = golden("kselftest-nameless-results.log");
        assert!(r.parse_errors.is_empty(), "{:?}", r.parse_errors);
        let st: Vec<_> = r
            .tests
            .iter()
            .map(|t| (t.name.as_str(), t.status, t.reason.as_deref()))
            .collect();
        assert_eq!(
            st,
            [
                ("", Status::Skip, Some("no userfaultfd")),
                ("", Status::Error, Some("boom")),
                ("uffd.anon.copy", Status::Pass, Some("note")),
                ("uffd.anon.move", Status::Xfail, Some("known")),
            ]
        );
        assert_eq!(
            r.totals(),
            Totals {
                pass: 1,
                xfail: 1,
                skip: 1,
                error: 1,
                ..Totals::default()
            }
        );
    }

    #[test]
    fn timestamp_prefix_is_stripped_and_console_noise_ignored() {
        let r = golden("console-timestamps-and-noise.log");
        assert!(r.parse_errors.is_empty(), "{:?}", r.parse_errors);
        assert_eq!(
            r.totals(),
            Totals {
                pass: 1,
                skip: 1,
                ..Totals::default()
            }
        );
        assert!(
            r.tests[0].subtests[1]
                .diagnostics
                .contains(&"random kernel message".to_string())
        );
    }

    #[test]
    fn log_cut_short_mid_case_reads_as_crashed() {
        let r = golden("panic-mid-case.log");
        let t = r.totals();
        assert_eq!(
            (t.pass, t.fail),
            (1, 3),
            "2 missing cases in copy and the missing second binary"
        );
        assert_eq!(r.tests[0].status, Status::Crashed);
        assert_eq!(r.tests[0].subtests[1].status, Status::Crashed);
        assert_eq!(r.exit_code(), 1);
        assert!(!r.parse_errors.is_empty());
    }

    #[test]
    fn nested_block_without_plan_ends_at_the_less_indented_result() {
        let r = golden("nested-without-plan.log");
        assert_eq!(r.tests.len(), 2);
        assert_eq!(r.tests[0].subtests.len(), 2);
        assert_eq!(r.tests[0].status, Status::Fail);
        assert_eq!(r.tests[1].status, Status::Pass);
    }

    #[test]
    fn skip_all_plan_in_a_subtest_is_a_skip() {
        let r = golden("skip-all-subtest.log");
        assert_eq!(r.tests[0].status, Status::Skip);
        assert_eq!(r.tests[0].reason.as_deref(), Some("no huge pages"));
        assert_eq!(r.totals().skip, 1);
    }

    #[test]
    fn bail_out_leaves_the_rest_crashed() {
        let r = golden("bail-out.log");
        assert_eq!(r.tests[1].status, Status::Crashed);
        assert!(r.tests[1].diagnostics.contains(&"Bail out! no uffd".to_string()));
    }

    #[test]
    fn no_version_line_is_an_error() {
        assert_eq!(parse("ok 1 a\n"), Err(ParseError::NoVersionLine));
    }
}
