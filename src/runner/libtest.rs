//! Reads what libtest printed for one case run alone
//! (`BIN NAME --exact --nocapture --test-threads=1`): whether it passed or
//! skipped, and the lines worth quoting when it failed.

use super::result::Status;

/// Most output lines quoted in KTAP for a failure (the JSON report has all).
const DIAG_LINES: usize = 60;

/// The verdict of a case that exited 0: libtest must report it passed, and
/// a `SKIP: <reason>` line (maybe after libtest's `test name ... `) makes it a skip.
pub(super) fn libtest_verdict(output: &str) -> (Status, Option<String>) {
    let ran = output
        .lines()
        .any(|l| l.starts_with("test result: ok.") && l.contains(" 1 passed;"));
    if !ran {
        return (
            Status::Error,
            Some("libtest reported no test run (name not matched?)".into()),
        );
    }
    for l in output.lines() {
        if let Some(i) = l.find("SKIP: ") {
            return (Status::Skip, Some(l[i + 6..].trim().to_string()));
        }
    }
    (Status::Pass, None)
}

/// The output lines worth quoting for a failure: libtest's own framing dropped.
pub(super) fn failure_lines(output: &str, test: &str) -> Vec<String> {
    let start = format!("test {test} ...");
    let keep: Vec<&str> = output
        .lines()
        .map(str::trim_end)
        // With --nocapture the case's own output starts on libtest's `test NAME ... ` line.
        .map(|l| l.strip_prefix(start.as_str()).map(str::trim_start).unwrap_or(l))
        .filter(|l| {
            !(l.is_empty()
                || *l == "running 1 test"
                || *l == "failures:"
                || *l == "FAILED"
                || *l == "ok"
                || l.starts_with("test result: ")
                || l.starts_with("note: run with `RUST_BACKTRACE=1`")
                || l.strip_prefix("    ") == Some(test))
        })
        .collect();
    let mut out: Vec<String> = keep.iter().take(DIAG_LINES).map(|s| s.to_string()).collect();
    if keep.len() > DIAG_LINES {
        out.push(format!("... {} more lines in the JSON report", keep.len() - DIAG_LINES));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_marker_after_libtest_prefix_is_a_skip() {
        let out = "running 1 test\ntest a::case_4_hugetlb ... SKIP: no free huge pages\nok\n\n\
                   test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 30 filtered out; finished in 0.00s\n";
        assert_eq!(libtest_verdict(out), (Status::Skip, Some("no free huge pages".into())));
    }

    #[test]
    fn exit_zero_without_a_passed_test_is_an_error() {
        let out = "running 0 tests\n\ntest result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 9 filtered out\n";
        assert_eq!(libtest_verdict(out).0, Status::Error);
    }

    #[test]
    fn failure_lines_drop_libtest_framing() {
        let out = "running 1 test\ntest a ... FAILED\n\nfailures:\n\n---- a stdout ----\n\
                   test a ... thread 'a' panicked at tests/x.rs:3:5:\nassertion `left == right` failed\n\
                   note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n\n\
                   failures:\n    a\n\ntest result: FAILED. 0 passed; 1 failed\n";
        assert_eq!(
            failure_lines(out, "a"),
            [
                "---- a stdout ----",
                "thread 'a' panicked at tests/x.rs:3:5:",
                "assertion `left == right` failed"
            ]
        );
    }
}
