//! KTAP v1: the writer the runner streams through, and a parser that reads
//! KTAP back, plus the kselftest dialect (see `ktap.md` in the reference),
//! into the same [`Report`] model.
//!
//! Written form (one nested block per test binary, indented two spaces):
//!
//! ```text
//! KTAP version 1
//! 1..2
//!   KTAP version 1
//!   # Subtest: copy
//!   1..2
//!   ok 1 copy_fills_missing_page on anon
//!   # thread 'x' panicked at tests/copy.rs:12:5:
//!   # kmsg: WARNING: CPU: 1 PID: 42 at mm/userfaultfd.c:123
//!   not ok 2 copy_fills_missing_page on shmem # kernel log: WARNING: CPU: 1 PID: 42 ...
//! not ok 1 copy
//! ...
//! # Totals: pass:1 fail:1 xfail:0 xpass:0 skip:0 error:0
//! ```

use super::result::{Report, Status, TestResult, Totals};
use std::io::{self, Write};

/// Prefix of a diagnostic line that quotes the kernel log.
pub const KMSG_PREFIX: &str = "kmsg: ";

/// Streams KTAP to any writer. The caller drives the structure (the runner
/// knows every plan before the first case runs); [`write_report`] drives it
/// from a finished report.
pub struct KtapWriter<W: Write> {
    w: W,
}

impl<W: Write> KtapWriter<W> {
    pub fn new(w: W) -> KtapWriter<W> {
        KtapWriter { w }
    }

    pub fn into_inner(self) -> W {
        self.w
    }

    pub fn inner_mut(&mut self) -> &mut W {
        &mut self.w
    }

    /// `KTAP version 1` and the top-level plan.
    pub fn header(&mut self, plan: usize) -> io::Result<()> {
        writeln!(self.w, "KTAP version 1")?;
        writeln!(self.w, "1..{plan}")?;
        self.w.flush()
    }

    /// A diagnostic line at `depth` (0 is top level).
    pub fn diagnostic(&mut self, depth: usize, text: &str) -> io::Result<()> {
        for line in text.lines() {
            let line = line.trim_end();
            if line.is_empty() {
                writeln!(self.w, "{}#", indent(depth))?;
            } else {
                writeln!(self.w, "{}# {}", indent(depth), sanitize_line(line))?;
            }
        }
        self.w.flush()
    }

    /// Opens a nested block for a test with `plan` subtests; its lines sit at `depth`.
    pub fn begin(&mut self, depth: usize, name: &str, plan: usize) -> io::Result<()> {
        let i = indent(depth);
        writeln!(self.w, "{i}KTAP version 1")?;
        writeln!(self.w, "{i}# Subtest: {}", description(name))?;
        writeln!(self.w, "{i}1..{plan}")?;
        self.w.flush()
    }

    /// A test's diagnostics, kernel log lines, then its result line, at `depth`.
    pub fn result(&mut self, depth: usize, number: usize, t: &TestResult) -> io::Result<()> {
        for d in &t.diagnostics {
            self.diagnostic(depth, d)?;
        }
        for k in &t.kmsg {
            self.diagnostic(depth, &format!("{KMSG_PREFIX}{k}"))?;
        }
        writeln!(self.w, "{}{}", indent(depth), result_line(number, t))?;
        self.w.flush()
    }

    /// `# Totals: ...`, kselftest's closing counts.
    pub fn totals(&mut self, t: &Totals) -> io::Result<()> {
        writeln!(self.w, "# {}", t.ktap_line())?;
        self.w.flush()
    }
}

/// Writes a whole report: header, each test (nested blocks for groups), totals.
pub fn write_report(w: &mut dyn Write, r: &Report) -> io::Result<()> {
    let mut k = KtapWriter::new(w);
    k.header(r.tests.len())?;
    for d in &r.diagnostics {
        k.diagnostic(0, d)?;
    }
    fn walk(k: &mut KtapWriter<&mut dyn Write>, depth: usize, n: usize, t: &TestResult) -> io::Result<()> {
        if !t.subtests.is_empty() {
            k.begin(depth + 1, &t.name, t.subtests.len())?;
            for (i, s) in t.subtests.iter().enumerate() {
                walk(k, depth + 1, i + 1, s)?;
            }
        }
        k.result(depth, n, t)
    }
    for (i, t) in r.tests.iter().enumerate() {
        walk(&mut k, 0, i + 1, t)?;
    }
    k.totals(&r.totals())
}

fn indent(depth: usize) -> String {
    "  ".repeat(depth)
}

/// A description may not hold `#` or a newline (KTAP spec).
fn description(name: &str) -> String {
    name.replace('#', "_").replace(['\n', '\r'], " ")
}

fn sanitize_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() && c != '\t' { ' ' } else { c })
        .collect()
}

/// The result line for `t` as test number `n`:
/// `ok 1 name`, `ok 2 name # SKIP reason`, `not ok 3 name # TIMEOUT 60 seconds`,
/// `not ok 4 name # killed by signal SIGSEGV`, `not ok 5 name # ERROR reason`.
pub fn result_line(n: usize, t: &TestResult) -> String {
    let ok = if t.status.is_ok() { "ok" } else { "not ok" };
    let reason = t
        .reason
        .as_deref()
        .map(|r| sanitize_line(&r.replace('\n', " ")))
        .unwrap_or_default();
    let directive = match t.status {
        Status::Pass => String::new(),
        Status::Skip => format!("SKIP {reason}"),
        Status::Xfail => format!("XFAIL {reason}"),
        Status::Xpass => format!("XPASS {reason}"),
        Status::Timeout => format!("TIMEOUT {reason}"),
        Status::Error => format!("ERROR {reason}"),
        Status::Crashed => format!("ERROR crashed {reason}"),
        Status::Fail => reason,
    };
    let directive = directive.trim();
    if directive.is_empty() {
        format!("{ok} {n} {}", description(&t.name))
    } else {
        format!("{ok} {n} {} # {directive}", description(&t.name))
    }
}

// ---------------------------------------------------------------------------
// Parser

/// A parsed result line.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultLine {
    pub ok: bool,
    pub number: usize,
    pub name: String,
    /// Text after ` # `, if any.
    pub directive: Option<String>,
}

/// Parses a result line.
///
/// Accepted format: `ok|not ok N [- ][description][ # directive]`, with or
/// without a description, so kselftest's `ok 1 # SKIP msg`,
/// `not ok 2 # error boom` and a bare `ok 3` are read too (kunit.py is stricter).
pub fn parse_result_line(line: &str) -> Option<ResultLine> {
    let t = line.trim_start();
    let (ok, rest) = if let Some(r) = t.strip_prefix("not ok ") {
        (false, r)
    } else if let Some(r) = t.strip_prefix("ok ") {
        (true, r)
    } else {
        return None;
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let number = rest[..digits].parse().ok()?;
    let rest = &rest[digits..];
    if !(rest.is_empty() || rest.starts_with(' ')) {
        return None;
    }
    let rest = format!(" {}", rest.trim_start());
    let rest = rest.strip_prefix(" - ").map(|r| format!(" {r}")).unwrap_or(rest);
    let (name, directive) = match rest
        .find(" # ")
        .or_else(|| rest.trim_end().ends_with(" #").then_some(rest.len()))
    {
        Some(i) if i < rest.len() => (rest[..i].trim().to_string(), Some(rest[i + 3..].trim().to_string())),
        Some(_) => (rest.trim_end().trim_end_matches('#').trim().to_string(), None),
        None => (rest.trim().to_string(), None),
    };
    Some(ResultLine {
        ok,
        number,
        name,
        directive,
    })
}

/// The status and reason a result line's directive gives.
///
/// Directives: `SKIP` (with ok or not ok), `XFAIL`, `XPASS`, `TODO` (a not-ok
/// TODO is an expected failure), `TIMEOUT`, `ERROR`/`error`; anything else
/// falls back to ok/not ok, its text kept as the reason (`exit=1`,
/// `killed by signal SIGSEGV`).
pub fn directive_status(ok: bool, directive: Option<&str>) -> (Status, Option<String>) {
    let fallback = if ok { Status::Pass } else { Status::Fail };
    let Some(d) = directive.map(str::trim).filter(|d| !d.is_empty()) else {
        return (fallback, None);
    };
    let (word, rest) = d.split_once(char::is_whitespace).unwrap_or((d, ""));
    let rest = rest.trim();
    let reason = (!rest.is_empty()).then(|| rest.to_string());
    let status = match word.to_ascii_uppercase().as_str() {
        "SKIP" if word == "SKIP" || word == "skip" => Status::Skip,
        "XFAIL" => Status::Xfail,
        "XPASS" => Status::Xpass,
        "TODO" => {
            if ok {
                Status::Pass
            } else {
                Status::Xfail
            }
        }
        "TIMEOUT" => Status::Timeout,
        "ERROR" => {
            if rest.starts_with("crashed") {
                let r = rest.trim_start_matches("crashed").trim();
                return (Status::Crashed, (!r.is_empty()).then(|| r.to_string()));
            }
            Status::Error
        }
        _ => return (fallback, Some(d.to_string())),
    };
    (status, reason)
}

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
pub fn parse(text: &str) -> Result<Report, String> {
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
        return Err("no KTAP found: no `KTAP version 1` or `TAP version N` line".into());
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
            match d.strip_prefix(KMSG_PREFIX) {
                Some(k) => t.kmsg.push(k.to_string()),
                None => t.diagnostics.push(d),
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
    use rstest::rstest;

    fn leaf(name: &str, status: Status, reason: Option<&str>) -> TestResult {
        let mut t = TestResult::new(name, status);
        t.reason = reason.map(str::to_string);
        t
    }

    fn sample() -> Report {
        let mut fail = leaf("b on shmem", Status::Fail, Some("exit status 101"));
        fail.diagnostics = vec!["thread 'b' panicked at tests/x.rs:1:1:".into(), "boom".into()];
        fail.kmsg = vec!["WARNING: CPU: 0 PID: 1 at mm/userfaultfd.c:1".into()];
        fail.exit_code = Some(101);
        let mut sig = leaf("c on anon", Status::Fail, Some("killed by signal SIGBUS"));
        sig.signal = Some("SIGBUS".into());
        Report {
            tests: vec![
                TestResult::group(
                    "copy",
                    vec![
                        leaf("a on anon", Status::Pass, None),
                        fail,
                        leaf("a on hugetlb", Status::Skip, Some("no free huge pages")),
                        leaf("d on anon", Status::Timeout, Some("60 seconds")),
                        sig,
                    ],
                ),
                TestResult::group("api", vec![leaf("e", Status::Skip, Some("needs root"))]),
                TestResult::group(
                    "move",
                    vec![leaf("f on anon", Status::Error, Some("cannot start: ENOENT"))],
                ),
            ],
            ..Report::default()
        }
    }

    #[test]
    fn written_report_parses_back_to_the_same_results() {
        let r = sample();
        let mut out = Vec::new();
        write_report(&mut out, &r).unwrap();
        let text = String::from_utf8(out).unwrap();
        let back = parse(&text).unwrap();
        assert_eq!(back.parse_errors, Vec::<String>::new(), "{text}");
        assert_eq!(back.totals(), r.totals());
        type Row = (String, Status, Option<String>, Option<String>, Vec<String>);
        let strip = |r: &Report| -> Vec<Row> {
            r.leaves()
                .into_iter()
                .map(|(p, t)| {
                    (
                        p.join("/"),
                        t.status,
                        t.reason.clone(),
                        t.signal.clone(),
                        t.kmsg.clone(),
                    )
                })
                .collect()
        };
        assert_eq!(strip(&back), strip(&r));
        assert_eq!(back.tests[0].status, Status::Fail);
        assert_eq!(back.tests[1].status, Status::Skip);
        assert_eq!(
            back.tests[0].subtests[1].diagnostics,
            r.tests[0].subtests[1].diagnostics
        );
        assert_eq!(back.tests[0].subtests[1].exit_code, Some(101));
    }

    #[test]
    fn written_report_has_the_documented_shape() {
        let mut out = Vec::new();
        write_report(&mut out, &sample()).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            &lines[..5],
            [
                "KTAP version 1",
                "1..3",
                "  KTAP version 1",
                "  # Subtest: copy",
                "  1..5"
            ]
        );
        assert!(lines.contains(&"  ok 3 a on hugetlb # SKIP no free huge pages"));
        assert!(lines.contains(&"  not ok 4 d on anon # TIMEOUT 60 seconds"));
        assert!(lines.contains(&"  not ok 5 c on anon # killed by signal SIGBUS"));
        assert!(lines.contains(&"  # kmsg: WARNING: CPU: 0 PID: 1 at mm/userfaultfd.c:1"));
        assert!(lines.contains(&"not ok 1 copy"));
        assert!(lines.contains(&"ok 2 api # SKIP all cases skipped"));
        assert_eq!(
            lines.last(),
            Some(&"# Totals: pass:1 fail:3 xfail:0 xpass:0 skip:2 error:1")
        );
    }

    #[rstest]
    #[case::plain("ok 1 name", true, 1, "name", None)]
    #[case::dash("not ok 12 - name here", false, 12, "name here", None)]
    #[case::directive("ok 2 a on anon # SKIP why not", true, 2, "a on anon", Some("SKIP why not"))]
    #[case::kselftest_skip_without_name("ok 3 # SKIP no uffd", true, 3, "", Some("SKIP no uffd"))]
    #[case::kselftest_error("not ok 4 # error boom", false, 4, "", Some("error boom"))]
    #[case::bare("ok 5", true, 5, "", None)]
    #[case::indented("    ok 6 x", true, 6, "x", None)]
    #[case::two_space_message("ok 7 name #  msg", true, 7, "name", Some("msg"))]
    fn result_lines_are_read(
        #[case] line: &str,
        #[case] ok: bool,
        #[case] number: usize,
        #[case] name: &str,
        #[case] directive: Option<&str>,
    ) {
        let r = parse_result_line(line).unwrap();
        assert_eq!(
            (r.ok, r.number, r.name.as_str(), r.directive.as_deref()),
            (ok, number, name, directive)
        );
    }

    #[rstest]
    #[case::text("okay 1 x")]
    #[case::no_number("ok x")]
    #[case::diagnostic("# ok 1 x")]
    fn non_result_lines_are_not_results(#[case] line: &str) {
        assert_eq!(parse_result_line(line), None);
    }

    #[rstest]
    #[case::skip(true, Some("SKIP r"), Status::Skip, Some("r"))]
    #[case::not_ok_skip(false, Some("SKIP"), Status::Skip, None)]
    #[case::xfail(true, Some("XFAIL known"), Status::Xfail, Some("known"))]
    #[case::timeout(false, Some("TIMEOUT 45 seconds"), Status::Timeout, Some("45 seconds"))]
    #[case::lowercase_error(false, Some("error boom"), Status::Error, Some("boom"))]
    #[case::exit_code(false, Some("exit=1"), Status::Fail, Some("exit=1"))]
    #[case::todo(false, Some("TODO later"), Status::Xfail, Some("later"))]
    #[case::unknown_on_ok(true, Some("whatever"), Status::Pass, Some("whatever"))]
    fn directives_map_to_statuses(
        #[case] ok: bool,
        #[case] d: Option<&str>,
        #[case] status: Status,
        #[case] reason: Option<&str>,
    ) {
        assert_eq!(directive_status(ok, d), (status, reason.map(str::to_string)));
    }

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
        assert!(parse("ok 1 a\n").is_err());
    }
}
