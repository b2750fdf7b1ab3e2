//! The run's verdict: the guest's own results, corrected by what the
//! console showed (splats, the case each happened in) and by the cases the
//! guest never reached.

use super::console::Console;
use super::init::GUEST_ERROR;
use super::session::GuestEnd;
use crate::runner::{Plan, Report, Status, TestResult};

/// Gives each case the time between its announcement and the next in the
/// kernel log (KTAP carries no durations), where the report has none.
pub fn add_durations(report: &mut Report, console: &Console) {
    for (d, s) in console.case_durations().into_iter().zip(&console.started) {
        if let Some(t) = case_in_pass(report, &s.case, s.pass)
            && t.duration_secs.is_none()
        {
            t.duration_secs = d;
        }
    }
}

/// Whether one of the guest's own results quotes the splat's first line:
/// its runner pinned the splat on a case already.
fn quoted_by_the_guest(guest: &Report, s: &super::console::Splat) -> bool {
    let Some(first) = s.lines.first().map(|l| l.trim()) else {
        return false;
    };
    guest
        .leaves()
        .iter()
        .any(|(_, t)| t.kmsg.iter().any(|k| k.trim() == first))
}

/// The result of `(binary, case)` in pass `pass` (1-based) of a report
/// whose binaries come once per pass of `--repeat`.
fn case_in_pass<'a>(report: &'a mut Report, (bin, name): &(String, String), pass: usize) -> Option<&'a mut TestResult> {
    report
        .tests
        .iter_mut()
        .filter(|g| g.name == *bin)
        .nth(pass.checked_sub(1)?)?
        .subtests
        .iter_mut()
        .find(|t| t.name == *name)
}

/// The run's verdict: the planned cases in plan order, each with the
/// guest's result if it reported one, else not run (crashed, with how the
/// guest ended); then every console splat fails the case it happened in,
/// and a splat outside any case fails a `kernel` test of its own.
///
/// With `jobs` > 1 the console cannot tell which of the running cases a
/// splat came from: the last one announced may be innocent. The guest's
/// runner watched the same log and pinned each splat itself (re-running the
/// cases beside it alone), so a splat that one of its results quotes is
/// left to that result; one it quotes nowhere fails the case only if that
/// case never reported (the guest died in it), else a `kernel` test.
pub fn verdict(
    plan: &Plan,
    ktap: Option<&str>,
    console: &Console,
    end: &GuestEnd,
    guest_errors: &[String],
    jobs: usize,
) -> Report {
    let guest = ktap.and_then(|t| crate::runner::parse_ktap(t).ok()).unwrap_or_default();
    let mut report = Report {
        diagnostics: guest.diagnostics.clone(),
        ..Report::default()
    };
    let not_run = if console.started.is_empty() && console.kernel_seen && !matches!(end, GuestEnd::PoweredOff) {
        format!("not run: {end} before the guest init ran any case")
    } else {
        format!("not run: {end}")
    };
    for (i, pb) in plan.binaries.iter().enumerate() {
        // With --repeat a binary comes once per pass: match the guest's same pass.
        let pass = plan.binaries[..i].iter().filter(|b| b.name == pb.name).count();
        let g = guest.tests.iter().filter(|t| t.name == pb.name).nth(pass);
        if let Some(g) = g
            && g.subtests.is_empty()
            && g.status == Status::Error
        {
            report.tests.push(g.clone());
            continue;
        }
        let cases = pb
            .cases
            .iter()
            .map(|c| {
                let got = g.and_then(|g| g.subtests.iter().find(|t| t.name == c.name));
                match got {
                    Some(t) if t.status != Status::Crashed => t.clone(),
                    _ => {
                        let mut t = TestResult::new(&c.name, Status::Crashed).with_reason(not_run.clone());
                        t.test = Some(c.test.clone());
                        t.variant = c.variant.clone();
                        t
                    }
                }
            })
            .collect();
        report.tests.push(TestResult::group(&pb.name, cases));
    }
    let mut stray = Vec::new();
    for s in &console.splats {
        if jobs > 1 && quoted_by_the_guest(&guest, s) {
            continue;
        }
        let leaf = s
            .case
            .as_ref()
            .and_then(|c| case_in_pass(&mut report, c, s.pass))
            .filter(|t| jobs <= 1 || t.status == Status::Crashed);
        match leaf {
            Some(t) => {
                if !t.status.is_failure() || t.status == Status::Crashed {
                    t.status = if t.status == Status::Crashed {
                        Status::Crashed
                    } else {
                        Status::Fail
                    };
                    t.reason = Some(s.summary());
                }
                t.kmsg.extend(s.lines.iter().cloned());
            }
            None => stray.push(s),
        }
    }
    for g in &mut report.tests {
        if !g.subtests.is_empty() {
            let reason = g.reason.take();
            *g = TestResult::group(&g.name, std::mem::take(&mut g.subtests));
            if g.reason.is_none() {
                g.reason = reason.filter(|_| g.status == Status::Skip);
            }
        }
    }
    if !stray.is_empty() {
        let mut k = TestResult::new("kernel", Status::Fail).with_reason(stray[0].summary());
        k.kmsg = stray.iter().flat_map(|s| s.lines.iter().cloned()).collect();
        report.tests.push(k);
    }
    report
        .diagnostics
        .extend(guest_errors.iter().map(|e| format!("{GUEST_ERROR}{e}")));
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::Case;
    use crate::runner::run::PlannedBinary;
    use std::path::PathBuf;
    use std::time::Duration;

    fn case(bin: &str, name: &str) -> Case {
        Case {
            binary: bin.into(),
            path: PathBuf::from("/tests").join(bin),
            test: name.into(),
            name: name.into(),
            variant: None,
            ignored: false,
            serial: false,
            keys: Vec::new(),
        }
    }

    fn plan() -> Plan {
        Plan {
            binaries: vec![
                PlannedBinary {
                    name: "api".into(),
                    cases: vec![case("api", "a1"), case("api", "a2")],
                    error: None,
                },
                PlannedBinary {
                    name: "copy".into(),
                    cases: vec![case("copy", "c1")],
                    error: None,
                },
            ],
        }
    }

    fn console(lines: &[&str]) -> Console {
        let mut c = Console::default();
        c.feed("[    0.000000] Linux version 6.12.117");
        lines.iter().for_each(|l| c.feed(l));
        c
    }

    /// A console where the init announced `cases` (`api: a1`), then printed `then`.
    fn announced(cases: &[&str], then: &[&str]) -> Console {
        let mut lines: Vec<String> = cases.iter().map(|c| format!("uffdtest: start {c}")).collect();
        lines.extend(then.iter().map(|l| l.to_string()));
        console(&lines.iter().map(String::as_str).collect::<Vec<_>>())
    }

    fn statuses(r: &Report) -> Vec<(String, Status)> {
        r.leaves().into_iter().map(|(p, t)| (p.join("/"), t.status)).collect()
    }

    /// What [`statuses`] should say of [`plan`]'s three cases, in plan order.
    fn planned(st: [Status; 3]) -> Vec<(String, Status)> {
        ["api/a1", "api/a2", "copy/c1"]
            .iter()
            .map(|n| n.to_string())
            .zip(st)
            .collect()
    }

    const FULL: &str = "KTAP version 1\n1..2\n  KTAP version 1\n  1..2\n  ok 1 a1\n  ok 2 a2 # SKIP no WP\nok 1 api\n  \
                        KTAP version 1\n  1..1\n  ok 1 c1\nok 2 copy\n";

    /// A guest that stopped reporting after the first case.
    const CUT_AFTER_A1: &str = "KTAP version 1\n1..2\n  KTAP version 1\n  # Subtest: api\n  1..2\n  ok 1 a1\n";

    #[test]
    fn clean_run_keeps_the_guest_results() {
        let c = announced(&["api: a1", "api: a2", "copy: c1"], &[]);
        let r = verdict(&plan(), Some(FULL), &c, &GuestEnd::PoweredOff, &[], 1);
        assert_eq!(statuses(&r), planned([Status::Pass, Status::Skip, Status::Pass]));
        assert_eq!(r.exit_code(), 0);
    }

    #[test]
    fn repeated_passes_keep_their_own_results_and_splats() {
        let once = plan().binaries[..1].to_vec();
        let twice = Plan {
            binaries: [once.clone(), once].concat(),
        };
        // Pass 2: a1 passes in the guest's eyes, but a WARN came during it.
        let ktap = "KTAP version 1\n1..2\n  KTAP version 1\n  1..2\n  ok 1 a1\n  ok 2 a2\nok 1 api\n  \
                    KTAP version 1\n  1..2\n  ok 1 a1\n  not ok 2 a2\nnot ok 2 api\n";
        let c = console(&[
            "uffdtest: start api: a1",
            "uffdtest: start api: a2",
            "uffdtest: start api: a1",
            "WARNING: CPU: 0 PID: 9 at mm/userfaultfd.c:1 f+0x1/0x2",
            "uffdtest: start api: a2",
        ]);
        let r = verdict(&twice, Some(ktap), &c, &GuestEnd::PoweredOff, &[], 1);
        assert_eq!(
            statuses(&r),
            [
                ("api/a1".into(), Status::Pass),
                ("api/a2".into(), Status::Pass),
                ("api/a1".into(), Status::Fail),
                ("api/a2".into(), Status::Fail)
            ]
        );
    }

    #[test]
    fn durations_come_from_the_case_announcements() {
        let c = console(&[
            "[    1.500000] uffdtest: start api: a1",
            "[    1.750000] uffdtest: start api: a2",
            "[    2.000000] uffdtest: start copy: c1",
            "[    2.125000] uffdtest: guest run done",
        ]);
        let mut r = verdict(&plan(), Some(FULL), &c, &GuestEnd::PoweredOff, &[], 1);
        add_durations(&mut r, &c);
        let d: Vec<_> = r.leaves().iter().map(|(_, t)| t.duration_secs).collect();
        assert_eq!(d, [Some(0.25), Some(0.25), Some(0.125)]);
    }

    #[test]
    fn warning_fails_the_case_it_happened_in() {
        let c = console(&[
            "uffdtest: start api: a1",
            "WARNING: CPU: 0 PID: 9 at mm/userfaultfd.c:1 f+0x1/0x2",
        ]);
        let r = verdict(&plan(), Some(FULL), &c, &GuestEnd::PoweredOff, &[], 1);
        let (_, a1) = r.leaves()[0];
        assert_eq!(a1.status, Status::Fail);
        assert!(
            a1.reason.as_deref().unwrap().starts_with("kernel log: WARNING: CPU: 0"),
            "{:?}",
            a1.reason
        );
        assert_eq!(r.exit_code(), 1);
    }

    /// At two jobs as at one: the case the guest died in never reported, so the panic is its.
    #[rstest::rstest]
    fn panic_mid_case_crashes_it_and_the_rest_are_not_run(#[values(1, 2)] jobs: usize) {
        let c = announced(&["api: a1", "api: a2"], &["Kernel panic - not syncing: sysrq"]);
        let r = verdict(&plan(), Some(CUT_AFTER_A1), &c, &GuestEnd::Panicked, &[], jobs);
        assert_eq!(statuses(&r), planned([Status::Pass, Status::Crashed, Status::Crashed]));
        let leaves = r.leaves();
        assert!(
            leaves[1]
                .1
                .reason
                .as_deref()
                .unwrap()
                .starts_with("kernel log: Kernel panic")
        );
        assert_eq!(leaves[2].1.reason.as_deref(), Some("not run: the kernel panicked"));
        assert_eq!(r.exit_code(), 1);
    }

    const WARN: &str = "WARNING: CPU: 0 PID: 9 at mm/userfaultfd.c:1 f+0x1/0x2";

    #[test]
    fn at_two_jobs_a_splat_the_guest_pinned_stays_where_it_put_it() {
        // a2 was announced last, but the guest's runner pinned the WARN on a1.
        let c = announced(&["api: a1", "api: a2"], &[WARN]);
        let ktap = format!(
            "KTAP version 1\n1..2\n  KTAP version 1\n  1..2\n  # kmsg: {WARN}\n  \
             not ok 1 a1 # kernel log: {WARN}\n  ok 2 a2\nnot ok 1 api\n  KTAP version 1\n  1..1\n  ok 1 c1\nok 2 copy\n"
        );
        let r = verdict(&plan(), Some(&ktap), &c, &GuestEnd::PoweredOff, &[], 2);
        assert_eq!(statuses(&r), planned([Status::Fail, Status::Pass, Status::Pass]));
        // At one job the last announced case is the one running: the same console blames a2.
        let one = verdict(&plan(), Some(&ktap), &c, &GuestEnd::PoweredOff, &[], 1);
        assert_eq!(statuses(&one), planned([Status::Fail, Status::Fail, Status::Pass]));
    }

    #[test]
    fn at_two_jobs_a_splat_no_result_quotes_fails_the_run_not_a_case_that_reported() {
        let c = announced(&["api: a1", "api: a2"], &[WARN]);
        let r = verdict(&plan(), Some(FULL), &c, &GuestEnd::PoweredOff, &[], 2);
        let s = statuses(&r);
        assert_eq!(s[..3], planned([Status::Pass, Status::Skip, Status::Pass]));
        assert_eq!(s[3], ("kernel".to_string(), Status::Fail));
        assert_eq!(r.exit_code(), 1);
    }

    #[test]
    fn panic_before_init_fails_a_kernel_test_and_runs_nothing() {
        let c = console(&["Kernel panic - not syncing: VFS: Unable to mount root fs"]);
        let r = verdict(&plan(), None, &c, &GuestEnd::Panicked, &[], 1);
        let s = statuses(&r);
        assert_eq!(s.last().unwrap(), &("kernel".to_string(), Status::Fail));
        assert!(s[..3].iter().all(|(_, st)| *st == Status::Crashed));
        assert!(
            r.leaves()[0]
                .1
                .reason
                .as_deref()
                .unwrap()
                .contains("before the guest init ran any case")
        );
    }

    #[test]
    fn silent_guest_reports_the_timeout_on_cases_not_run() {
        let c = console(&["uffdtest: start api: a1", "uffdtest: start api: a2"]);
        let end = GuestEnd::Silent(Duration::from_secs(30));
        let r = verdict(&plan(), Some(CUT_AFTER_A1), &c, &end, &[], 1);
        assert_eq!(
            r.leaves()[1].1.reason.as_deref(),
            Some("not run: the guest printed nothing for 30 s and was killed")
        );
    }
}
