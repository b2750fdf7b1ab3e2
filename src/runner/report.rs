//! The reporters: KTAP (streamed), JUnit XML, JSON, the plain summary line,
//! and the live progress line. Each consumes the runner's events as a peer.

use super::ktap::KtapWriter;
use super::result::{Report, Status, TestResult};
use super::run::{Event, Reporter, RunOptions, run};
use std::fmt::Write as _;
use std::io::{self, Write};

/// Streams KTAP as results arrive, then `# Totals:` and (if `summary`) the
/// plain closing line `N passed, N failed, N skipped`.
pub struct Ktap<W: Write> {
    k: KtapWriter<W>,
    pub summary: bool,
    /// (name, case count) per binary, from the plan.
    blocks: Vec<(String, usize)>,
}

impl<W: Write> Ktap<W> {
    pub fn new(w: W) -> Ktap<W> {
        Ktap {
            k: KtapWriter::new(w),
            summary: true,
            blocks: Vec::new(),
        }
    }
}

impl<W: Write> Reporter for Ktap<W> {
    fn event(&mut self, e: &Event) -> io::Result<()> {
        match e {
            Event::Started { plan, notes } => {
                self.blocks = plan.binaries.iter().map(|b| (b.name.clone(), b.cases.len())).collect();
                self.k.header(plan.binaries.len())?;
                for n in notes.iter() {
                    self.k.diagnostic(0, n)?;
                }
                Ok(())
            }
            Event::CaseStarted { .. } | Event::CaseEnded { .. } => Ok(()),
            Event::CaseFinished {
                binary, number, result, ..
            } => {
                if *number == 1 {
                    let (name, n) = &self.blocks[*binary];
                    self.k.begin(1, name, *n)?;
                }
                self.k.result(1, *number, result)
            }
            Event::BinaryFinished { binary, result } => self.k.result(0, binary + 1, result),
            Event::Finished { report } => {
                let t = report.totals();
                if report.interrupted {
                    self.k
                        .diagnostic(0, "interrupted: cases not run are reported as ERROR")?;
                }
                self.k.totals(&t)?;
                if self.summary {
                    let w = self.k.inner_mut();
                    writeln!(w, "{}", t.summary_line())?;
                    w.flush()?;
                }
                Ok(())
            }
        }
    }
}

/// Runs with `opts` and streams KTAP (closing with the plain summary line)
/// to `out`. Err only if nothing could be planned (no manifest, nothing selected).
pub fn run_ktap(opts: &RunOptions, out: &mut dyn Write) -> Result<Report, String> {
    let mut k = Ktap::new(out);
    run(opts, &mut [&mut k])
}

/// A live `[done/total] N failed | running: name` line on a terminal
/// (stderr), naming the longest-running case; cleared before any other
/// output. Only use it when stderr is a TTY.
pub struct Progress<W: Write> {
    w: W,
    total: usize,
    done: usize,
    failed: usize,
    /// Names of the running cases, oldest first.
    running: Vec<String>,
}

impl<W: Write> Progress<W> {
    pub fn new(w: W) -> Progress<W> {
        Progress {
            w,
            total: 0,
            done: 0,
            failed: 0,
            running: Vec::new(),
        }
    }

    fn clear(&mut self) -> io::Result<()> {
        write!(self.w, "\r\x1b[K")?;
        self.w.flush()
    }

    fn draw(&mut self) -> io::Result<()> {
        let Some(oldest) = self.running.first() else {
            return self.clear();
        };
        let mut name = oldest.clone();
        name.truncate(70);
        let more = if self.running.len() > 1 {
            format!(" (+{})", self.running.len() - 1)
        } else {
            String::new()
        };
        write!(
            self.w,
            "\r\x1b[K[{:>4}/{}] {} failed | running {name}{more}",
            self.done, self.total, self.failed
        )?;
        self.w.flush()
    }
}

impl<W: Write> Reporter for Progress<W> {
    fn event(&mut self, e: &Event) -> io::Result<()> {
        match e {
            Event::Started { plan, .. } => {
                self.total = plan.case_count();
                Ok(())
            }
            Event::CaseStarted { case } => {
                self.running.push(format!("{}: {}", case.binary, case.name));
                self.draw()
            }
            Event::CaseEnded { case, result } => {
                let name = format!("{}: {}", case.binary, case.name);
                self.running.retain(|r| *r != name);
                self.done += 1;
                if result.status.is_failure() {
                    self.failed += 1;
                }
                self.draw()
            }
            // Other reporters may write to the same terminal next: clear first.
            Event::CaseFinished { .. } | Event::BinaryFinished { .. } | Event::Finished { .. } => self.clear(),
        }
    }
}

/// The report as JSON: per case its status, duration, reason, exit code or
/// signal, diagnostics, kernel log excerpt and captured output; plus totals.
pub fn json(r: &Report) -> String {
    #[derive(serde::Serialize)]
    struct Out<'a> {
        totals: super::result::Totals,
        #[serde(flatten)]
        report: &'a Report,
    }
    serde_json::to_string_pretty(&Out {
        totals: r.totals(),
        report: r,
    })
    .expect("report serialises")
        + "\n"
}

/// The report as JUnit XML (the shape GitLab, Jenkins and GitHub test
/// reporters read): one `<testsuite>` per binary, one `<testcase>` per case;
/// `<failure>` for fail and timeout, `<error>` for could-not-run and crashed,
/// `<skipped>` with the reason.
pub fn junit(r: &Report) -> String {
    let t = r.totals();
    let time = |t: &TestResult| -> f64 { t.leaves().iter().filter_map(|l| l.duration_secs).sum() };
    let total_time: f64 = r.tests.iter().map(time).sum();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuites name=\"uffdtest\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{:.3}\">",
        t.total(),
        t.fail + t.xpass,
        t.error,
        t.skip,
        total_time
    );
    for suite in &r.tests {
        let cases: Vec<&TestResult> = suite.leaves();
        let mut st = super::result::Totals::default();
        cases.iter().for_each(|c| st.add(c.status));
        let _ = writeln!(
            x,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{:.3}\">",
            esc(&suite.name),
            st.total(),
            st.fail + st.xpass,
            st.error,
            st.skip,
            time(suite)
        );
        for c in cases {
            let _ = write!(
                x,
                "    <testcase name=\"{}\" classname=\"{}\" time=\"{:.3}\"",
                esc(&c.name),
                esc(&suite.name),
                c.duration_secs.unwrap_or(0.0)
            );
            let reason = c.reason.clone().unwrap_or_default();
            let body = || {
                let mut b = c.diagnostics.join("\n");
                if !c.kmsg.is_empty() {
                    b.push_str("\nkernel log:\n");
                    b.push_str(&c.kmsg.join("\n"));
                }
                b
            };
            match c.status {
                Status::Pass | Status::Xfail => x.push_str("/>\n"),
                Status::Skip => {
                    let _ = writeln!(x, ">\n      <skipped message=\"{}\"/>\n    </testcase>", esc(&reason));
                }
                s => {
                    let (tag, kind) = match s {
                        Status::Error | Status::Crashed => ("error", s.name()),
                        _ => ("failure", s.name()),
                    };
                    let _ = writeln!(
                        x,
                        ">\n      <{tag} message=\"{}\" type=\"{kind}\">{}</{tag}>",
                        esc(&reason),
                        esc(&body())
                    );
                    if !c.output.is_empty() {
                        let _ = writeln!(x, "      <system-out>{}</system-out>", esc(&c.output));
                    }
                    x.push_str("    </testcase>\n");
                }
            }
        }
        x.push_str("  </testsuite>\n");
    }
    x.push_str("</testsuites>\n");
    x
}

/// XML-escapes text and drops the characters XML 1.0 cannot hold.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            '\t' | '\n' | '\r' => o.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => o.push('\u{fffd}'),
            c => o.push(c),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        let mut f = TestResult::new("b on shmem", Status::Fail).with_reason("kernel log: WARNING: <x> & \"y\"");
        f.kmsg = vec!["WARNING: CPU: 0 PID: 1".into()];
        f.output = "out\u{1b}[0m\u{0}".into();
        f.duration_secs = Some(0.5);
        Report {
            tests: vec![
                TestResult::group(
                    "copy",
                    vec![
                        TestResult::new("a on anon", Status::Pass),
                        f,
                        TestResult::new("c on hugetlb", Status::Skip).with_reason("no huge pages"),
                        TestResult::new("d on anon", Status::Timeout).with_reason("60 seconds"),
                    ],
                ),
                TestResult::new("move", Status::Error).with_reason("cannot list"),
            ],
            ..Report::default()
        }
    }

    #[test]
    fn progress_counts_cases_as_they_end_and_names_the_oldest_running() {
        use crate::runner::discover::Case;
        use crate::runner::run::{Plan, PlannedBinary};
        let case = |n: &str| Case {
            binary: "copy".into(),
            path: "/bin/true".into(),
            test: n.into(),
            name: n.into(),
            variant: None,
            ignored: false,
            serial: false,
        };
        let (a, b) = (case("a"), case("b"));
        let plan = Plan {
            binaries: vec![PlannedBinary {
                name: "copy".into(),
                cases: vec![a.clone(), b.clone()],
                error: None,
            }],
        };
        let failed = TestResult::new("b", Status::Fail);
        let mut p = Progress::new(Vec::new());
        p.event(&Event::Started {
            plan: &plan,
            notes: &[],
        })
        .unwrap();
        p.event(&Event::CaseStarted { case: &a }).unwrap();
        p.event(&Event::CaseStarted { case: &b }).unwrap();
        p.event(&Event::CaseEnded {
            case: &b,
            result: &failed,
        })
        .unwrap();
        let out = String::from_utf8(p.w.clone()).unwrap();
        let last = out.rsplit("\r\x1b[K").next().unwrap();
        assert_eq!(last, "[   1/2] 1 failed | running copy: a");
        assert!(out.contains("running copy: a (+1)"));
    }

    #[test]
    fn junit_counts_and_escapes() {
        let x = junit(&sample());
        assert!(
            x.contains(r#"<testsuites name="uffdtest" tests="5" failures="2" errors="1" skipped="1""#),
            "{x}"
        );
        assert!(x.contains(r#"<testsuite name="copy" tests="4" failures="2" errors="0" skipped="1" time="0.500">"#));
        assert!(x.contains(r#"message="kernel log: WARNING: &lt;x&gt; &amp; &quot;y&quot;" type="fail""#));
        assert!(x.contains(r#"<skipped message="no huge pages"/>"#));
        assert!(x.contains(r#"type="timeout""#));
        assert!(x.contains(r#"<error message="cannot list" type="error">"#));
        assert!(
            !x.contains('\u{0}') && !x.contains('\u{1b}'),
            "control characters dropped"
        );
    }

    #[test]
    fn json_has_totals_and_case_fields() {
        let v: serde_json::Value = serde_json::from_str(&json(&sample())).unwrap();
        assert_eq!(v["totals"]["fail"], 2);
        let b = &v["tests"][0]["subtests"][1];
        assert_eq!(b["status"], "fail");
        assert_eq!(b["duration_secs"], 0.5);
        assert_eq!(b["kmsg"][0], "WARNING: CPU: 0 PID: 1");
        let back: Report = serde_json::from_value(v).unwrap();
        assert_eq!(back, sample());
    }
}
