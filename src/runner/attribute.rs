//! Which case a kernel splat belongs to when cases run side by side.
//!
//! Each case reads the kernel log across its own life ([`super::kmsg`]),
//! so with `--jobs` > 1 a splat is seen by every case that overlapped it.
//! Those cases are run again alone once the rest is done, and the splat is
//! pinned on the ones that log it again; `--jobs 1` needs none of this.

use super::result::TestResult;

/// A case that failed on a kernel splat logged while another case ran too.
pub(super) struct Suspect {
    pub at: (usize, usize),
    /// The splat's signature ([`klog::signature`]).
    pub sig: String,
    /// Its result from that run.
    pub first: TestResult,
}

/// Pins each splat logged beside other cases on the case that causes it:
/// every suspect is run again alone (`rerun` gives its result and splat).
/// One that logs the splat again fails with that run's result; one that
/// does not passes on its rerun's result if another suspect of the same
/// splat reproduced it, and otherwise keeps its failure, since a splat that
/// fires once per boot (WARN_ONCE) cannot be pinned and must not be lost.
/// Interrupted: every suspect keeps its first result.
pub(super) fn pin_splats(
    suspects: Vec<Suspect>,
    interrupted: bool,
    mut rerun: impl FnMut((usize, usize)) -> (TestResult, Option<String>),
) -> Vec<((usize, usize), TestResult)> {
    if interrupted {
        return suspects.into_iter().map(|s| (s.at, s.first)).collect();
    }
    let reruns: Vec<_> = suspects.iter().map(|s| rerun(s.at)).collect();
    let pinned: Vec<&str> = suspects
        .iter()
        .zip(&reruns)
        .filter(|(s, (_, again))| again.as_deref() == Some(s.sig.as_str()))
        .map(|(s, _)| s.sig.as_str())
        .collect();
    let mut out = Vec::new();
    for (s, (mut again, splat)) in suspects.iter().zip(reruns) {
        let res = if splat.is_some() {
            again.diagnostics.insert(
                0,
                "re-run alone after a kernel splat logged beside other cases: it logged one again".into(),
            );
            again
        } else if pinned.contains(&s.sig.as_str()) {
            again.diagnostics.insert(
                0,
                format!("a kernel splat ({}) was logged while it ran beside other cases; re-run alone, another case logged it again and this one did not", s.sig),
            );
            again
        } else {
            let mut first = s.first.clone();
            first.diagnostics.insert(
                0,
                "the kernel splat was logged beside other cases and no case logged it again when re-run alone (a once-per-boot warning?): not pinned on one case; run with --jobs 1 to pin it".into(),
            );
            first
        };
        out.push((s.at, res));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::Status;

    fn suspect(n: usize, sig: &str) -> Suspect {
        let first = TestResult::new(format!("c{n}"), Status::Fail).with_reason(format!("kernel log: {sig}"));
        Suspect {
            at: (0, n),
            sig: sig.into(),
            first,
        }
    }

    fn rerun_result(n: usize, splat: Option<&str>) -> (TestResult, Option<String>) {
        let status = if splat.is_some() { Status::Fail } else { Status::Pass };
        (TestResult::new(format!("c{n}"), status), splat.map(String::from))
    }

    #[test]
    fn the_splat_is_pinned_on_the_case_that_logs_it_again_alone() {
        let out = pin_splats(
            vec![suspect(0, "WARNING at f"), suspect(1, "WARNING at f")],
            false,
            |at| rerun_result(at.1, (at.1 == 1).then_some("WARNING at f")),
        );
        let st: Vec<_> = out.iter().map(|(at, r)| (at.1, r.status)).collect();
        assert_eq!(st, [(0, Status::Pass), (1, Status::Fail)]);
        assert!(out[0].1.diagnostics[0].contains("another case logged it again"));
    }

    #[test]
    fn a_splat_nobody_logs_again_fails_every_case_beside_it() {
        let out = pin_splats(
            vec![suspect(0, "WARNING at f"), suspect(1, "WARNING at f")],
            false,
            |at| rerun_result(at.1, None),
        );
        assert!(out.iter().all(|(_, r)| r.status == Status::Fail));
        assert!(out[1].1.diagnostics[0].contains("not pinned on one case"));
    }

    #[test]
    fn another_splat_alone_is_no_alibi() {
        // Case 1 logs a different splat alone: it fails on that; case 0 is not cleared.
        let out = pin_splats(
            vec![suspect(0, "WARNING at f"), suspect(1, "WARNING at f")],
            false,
            |at| rerun_result(at.1, (at.1 == 1).then_some("BUG at g")),
        );
        assert!(out.iter().all(|(_, r)| r.status == Status::Fail));
    }

    #[test]
    fn interrupted_runs_re_run_nothing() {
        let out = pin_splats(vec![suspect(0, "WARNING at f")], true, |_| panic!("re-ran"));
        assert_eq!(out[0].1.reason.as_deref(), Some("kernel log: WARNING at f"));
    }
}
