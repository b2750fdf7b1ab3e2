//! Writes KTAP: streamed as the runner learns results, or from a finished report.

use super::{KMSG_PREFIX, TIME_PREFIX};
use crate::runner::result::{Report, Status, TestResult, Totals};
use std::io::{self, Write};

/// Streams KTAP to any writer. The caller drives the structure (the runner
/// knows every plan before the first case runs); [`write_report`] drives it
/// from a finished report.
pub struct KtapWriter<W: Write> {
    w: W,
    durations: bool,
}

impl<W: Write> KtapWriter<W> {
    pub fn new(w: W) -> KtapWriter<W> {
        KtapWriter { w, durations: false }
    }

    /// Also write each timed result's `# time: S s` line.
    pub fn with_durations(mut self) -> KtapWriter<W> {
        self.durations = true;
        self
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
        if let Some(d) = t.duration_secs.filter(|_| self.durations && t.subtests.is_empty()) {
            self.diagnostic(depth, &format!("{TIME_PREFIX}{d:.3} s"))?;
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
