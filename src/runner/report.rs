//! The reporters: KTAP (streamed), JUnit XML, JSON, the plain summary line,
//! and the live progress line. Each consumes the runner's events as a peer.

use super::ktap::KtapWriter;
use super::result::{Report, Status, TestResult};
use super::run::{Event, Reporter};
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

    /// Each case's wall time goes out too (`# time: S s`), for a reader that cannot time the cases itself.
    pub fn with_durations(self) -> Ktap<W> {
        Ktap {
            k: self.k.with_durations(),
            ..self
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
        let more = if self.running.len() > 1 {
            format!(" (+{})", self.running.len() - 1)
        } else {
            String::new()
        };
        let head = format!("[{:>4}/{}] {} failed | running ", self.done, self.total, self.failed);
        let room = terminal_width()
            .saturating_sub(1 + head.chars().count() + more.chars().count())
            .max(20);
        let name = fit(oldest, room);
        write!(self.w, "\r\x1b[K{head}{name}{more}")?;
        self.w.flush()
    }
}

/// Columns of the terminal on stderr (80 when it cannot be asked).
fn terminal_width() -> usize {
    // SAFETY: TIOCGWINSZ writes one `winsize` into the struct we pass, and reads nothing else.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(2, libc::TIOCGWINSZ, &mut ws) } == 0;
    if ok && ws.ws_col > 0 {
        usize::from(ws.ws_col)
    } else {
        80
    }
}

/// `binary: case on memtype` in at most `room` characters: the case's
/// middle gives way (`…`), the binary and the memory type stay whole.
pub fn fit(name: &str, room: usize) -> String {
    let len = name.chars().count();
    if len <= room {
        return name.to_string();
    }
    let (body, tail) = match name.rsplit_once(" on ") {
        Some((b, m)) => (b, format!(" on {m}")),
        None => (name, String::new()),
    };
    let keep = room.saturating_sub(tail.chars().count() + 1);
    let front = keep * 2 / 3;
    let back = keep - front;
    let chars: Vec<char> = body.chars().collect();
    if chars.len() <= keep {
        return format!("{body}{tail}");
    }
    let start: String = chars[..front].iter().collect();
    let end: String = chars[chars.len() - back..].iter().collect();
    format!("{start}…{end}{tail}")
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
/// `<skipped>` with the reason. Written by quick-junit, as nextest writes its
/// own, which also drops what XML 1.0 cannot hold (ANSI escapes, NUL).
pub fn junit(r: &Report) -> String {
    use quick_junit::{NonSuccessKind, TestCase, TestCaseStatus, TestSuite};
    let time = |t: &TestResult| -> f64 { t.leaves().iter().filter_map(|l| l.duration_secs).sum() };
    let secs = |s: f64| std::time::Duration::from_secs_f64(s.max(0.0));
    let mut report = quick_junit::Report::new("uffdtest");
    report.set_time(secs(r.tests.iter().map(time).sum()));
    for group in &r.tests {
        let mut suite = TestSuite::new(group.name.as_str());
        suite.set_time(secs(time(group)));
        for c in group.leaves() {
            let reason = c.reason.clone().unwrap_or_default();
            let status = match c.status {
                Status::Pass | Status::Xfail => TestCaseStatus::success(),
                Status::Skip => {
                    let mut st = TestCaseStatus::skipped();
                    st.set_message(reason);
                    st
                }
                s => {
                    let kind = match s {
                        Status::Error | Status::Crashed => NonSuccessKind::Error,
                        _ => NonSuccessKind::Failure,
                    };
                    let mut body = c.diagnostics.join("\n");
                    if !c.kmsg.is_empty() {
                        body.push_str("\nkernel log:\n");
                        body.push_str(&c.kmsg.join("\n"));
                    }
                    let mut st = TestCaseStatus::non_success(kind);
                    st.set_message(reason).set_type(s.name()).set_description(body);
                    st
                }
            };
            let failed = !matches!(status, TestCaseStatus::Success { .. } | TestCaseStatus::Skipped { .. });
            let mut tc = TestCase::new(c.name.as_str(), status);
            tc.set_classname(group.name.as_str())
                .set_time(secs(c.duration_secs.unwrap_or(0.0)));
            if failed && !c.output.is_empty() {
                tc.set_system_out(c.output.as_str());
            }
            suite.add_test_case(tc);
        }
        report.add_test_suite(suite);
    }
    report.to_string().expect("a JUnit report serialises to memory")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_name_keeps_the_memory_type_whole() {
        let n = "writeprotect: wp_unprotect_wakes_the_blocked_writer_and_the_write_lands on hugetlb-private";
        let f = fit(n, 50);
        assert_eq!(f.chars().count(), 50, "{f}");
        assert!(f.starts_with("writeprotect: wp_"), "{f}");
        assert!(f.ends_with("lands on hugetlb-private"), "{f}");
        assert_eq!(fit("api: x", 50), "api: x");
    }

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
            keys: Vec::new(),
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

    /// The attributes of the first element named `tag` whose attributes include `having`.
    fn element<'a>(x: &'a str, tag: &str, having: &str) -> &'a str {
        x.split(&format!("<{tag} "))
            .skip(1)
            .map(|e| &e[..e.find('>').unwrap()])
            .find(|e| e.contains(having))
            .unwrap_or_else(|| panic!("no <{tag}> with {having} in {x}"))
    }

    #[test]
    fn junit_counts_and_escapes() {
        let x = junit(&sample());
        let top = element(&x, "testsuites", r#"name="uffdtest""#);
        for a in [r#"tests="5""#, r#"failures="2""#, r#"errors="1""#] {
            assert!(top.contains(a), "{a} in {top}");
        }
        let copy = element(&x, "testsuite", r#"name="copy""#);
        for a in [
            r#"tests="4""#,
            r#"failures="2""#,
            r#"errors="0""#,
            r#"skipped="1""#,
            r#"time="0.500""#,
        ] {
            assert!(copy.contains(a), "{a} in {copy}");
        }
        let b = element(&x, "testcase", r#"name="b on shmem""#);
        assert!(
            b.contains(r#"classname="copy""#) && b.contains(r#"time="0.500""#),
            "{b}"
        );
        let f = element(&x, "failure", "kernel log:");
        assert!(
            f.contains(r#"message="kernel log: WARNING: &lt;x&gt; &amp; &quot;y&quot;""#)
                && f.contains(r#"type="fail""#),
            "{f}"
        );
        assert!(
            x.contains("kernel log:\nWARNING: CPU: 0 PID: 1"),
            "the failure text quotes the splat"
        );
        assert!(x.contains("<system-out>out"), "the output of a failed case is kept");
        assert!(element(&x, "skipped", "").contains(r#"message="no huge pages""#));
        assert!(element(&x, "failure", r#"type="timeout""#).contains(r#"message="60 seconds""#));
        let e = element(&x, "error", r#"type="error""#);
        assert!(e.contains(r#"message="cannot list""#), "{e}");
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
