//! KTAP v1: the [`write`]r the runner streams through, and a [`parse`]r that
//! reads KTAP back, plus the kselftest dialect (see `ktap.md` in the
//! reference), into the same [`Report`](super::result::Report) model;
//! [`line`] reads one result line, for both the parser and the VM harness.
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

pub mod line;
pub mod parse;
pub mod write;

pub use line::{ResultLine, directive_status, parse_result_line};
pub use parse::{ParseError, parse};
pub use write::{KtapWriter, result_line, write_report};

/// Prefix of a diagnostic line that quotes the kernel log.
pub const KMSG_PREFIX: &str = "kmsg: ";
/// Prefix of the diagnostic line that gives a case's wall time (`time: 0.012 s`), written on request
/// ([`KtapWriter::with_durations`]): the guest's way to hand its timings to the host, which cannot time
/// cases that run at once from the console.
pub const TIME_PREFIX: &str = "time: ";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::result::{Report, Status, TestResult};

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
    fn case_times_go_out_only_when_asked_and_come_back_as_durations() {
        let mut timed = leaf("a on anon", Status::Pass, None);
        timed.duration_secs = Some(0.0125);
        let mut plain = Vec::new();
        let mut k = KtapWriter::new(&mut plain);
        k.result(1, 1, &timed).unwrap();
        assert_eq!(String::from_utf8(plain).unwrap(), "  ok 1 a on anon\n");
        let mut out = Vec::new();
        let mut k = KtapWriter::new(&mut out).with_durations();
        k.header(1).unwrap();
        k.begin(1, "copy", 1).unwrap();
        k.result(1, 1, &timed).unwrap();
        k.result(0, 1, &TestResult::group("copy", vec![timed.clone()])).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("  # time: 0.013 s\n  ok 1 a on anon\n"), "{text}");
        assert_eq!(text.matches("# time:").count(), 1, "groups carry no time: {text}");
        let back = parse(&text).unwrap();
        let a = &back.tests[0].subtests[0];
        assert_eq!((a.duration_secs, a.diagnostics.is_empty()), (Some(0.013), true));
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
}
