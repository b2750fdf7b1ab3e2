//! `uffdtest compare` on recorded runs (tests/data/compare/, see its README for where each file comes from).
//!
//! A harness test (the `harness_` prefix keeps it out of the suite the runner runs): it reads files, not the kernel.

use std::path::PathBuf;
use uffdtest::MemType;
use uffdtest::gate::compare::{Change, Comparison, Policy, compare, read_report, render_markdown, render_text};
use uffdtest::runner::Report;
use uffdtest::runner::result::{Status, TestResult};

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/compare")
        .join(name)
}

fn report(name: &str) -> Report {
    read_report(&data(name)).unwrap_or_else(|e| panic!("{e}"))
}

fn cmp(base: &str, cand: &str) -> Comparison {
    compare(&report(base), &report(cand), Policy::default())
}

/// (case, change) of every moved case, in the order the report lists them.
fn moved(c: &Comparison) -> Vec<(String, Change)> {
    c.changes.iter().map(|x| (x.case.clone(), x.change)).collect()
}

fn cases(prefix: &str, test: &str, mems: &[&str], change: Change) -> Vec<(String, Change)> {
    mems.iter()
        .map(|m| (format!("{prefix} / {test} on {m}"), change))
        .collect()
}

#[test]
fn a_real_run_against_itself_changes_nothing() {
    for name in ["host-run1.ktap", "host-run1.json", "host-register-copy-full.ktap"] {
        let c = cmp(name, name);
        assert_eq!(moved(&c), vec![], "{name}");
        assert!(c.new_splats.is_empty(), "{name}");
        assert_eq!(c.exit_code(), 0, "{name}");
    }
    let full = cmp("host-register-copy-full.ktap", "host-register-copy-full.ktap");
    assert_eq!(full.unchanged, 412);
    assert_eq!(full.candidate_summary, "337 passed, 13 failed, 62 skipped");
}

#[test]
fn json_and_ktap_of_one_run_compare_equal() {
    let c = cmp("host-run1.json", "host-run1.ktap");
    assert_eq!(moved(&c), vec![]);
    assert_eq!(c.unchanged, 28);
    assert_eq!(c.base_summary, c.candidate_summary);
}

#[test]
fn pass_to_fail_is_a_regression_on_exactly_the_failed_cases() {
    let c = cmp("host-run1.ktap", "host-run1.edited-register-fails.ktap");
    assert_eq!(
        moved(&c),
        cases(
            "register",
            "register_unknown_mode_bits_fail_einval",
            &["anon", "shmem"],
            Change::Regression
        )
    );
    // The runner's reason, with the assertion that says what the kernel did.
    assert_eq!(
        c.changes[0].reason.as_deref(),
        Some("exit=101: assertion `left == right` failed: mode 0x8; left: Ok(()); right: Err(EINVAL)")
    );
    assert_eq!(c.exit_code(), 1);
    // The other way round the same cases are fixes, and a fix never fails the gate.
    let back = cmp("host-run1.edited-register-fails.ktap", "host-run1.ktap");
    assert_eq!(
        moved(&back),
        cases(
            "register",
            "register_unknown_mode_bits_fail_einval",
            &["anon", "shmem"],
            Change::Fix
        )
    );
    assert_eq!(back.exit_code(), 0);
}

/// The memory types the recorded runs (host and the demo's 6.12 guests) ran every case on.
/// `cases` on every memory type but guest_memfd, which the recorded kernels lacked, and
/// the 1 GiB hugetlb types, which came after those runs (and run on request only).
fn on_six(prefix: &str, test: &str, change: Change) -> Vec<(String, Change)> {
    let six: Vec<&str> = MemType::ALL
        .into_iter()
        .filter(|m| *m != MemType::GuestMemfd && !m.name().starts_with("hugetlb-1g"))
        .map(MemType::name)
        .collect();
    cases(prefix, test, &six, change)
}

#[test]
fn pass_to_timeout_is_a_regression_and_timeout_to_pass_a_fix() {
    let c = cmp("host-run1.edited-copy-passes.ktap", "host-run1.ktap");
    assert_eq!(
        moved(&c),
        on_six("copy", "copy_over_populated_page_fails_eexist", Change::Regression)
    );
    assert!(
        c.changes
            .iter()
            .all(|x| x.candidate == [uffdtest::runner::Status::Timeout])
    );
    assert_eq!(c.exit_code(), 1);
    let back = cmp("host-run1.ktap", "host-run1.edited-copy-passes.ktap");
    assert_eq!(
        moved(&back),
        on_six("copy", "copy_over_populated_page_fails_eexist", Change::Fix)
    );
    assert_eq!(back.exit_code(), 0);
}

#[test]
fn a_new_kernel_splat_fails_the_gate_and_names_its_case() {
    let c = cmp("host-run1.ktap", "host-run1.edited-splat.ktap");
    assert_eq!(
        moved(&c),
        cases(
            "register",
            "register_zero_len_fails_einval",
            &["shmem"],
            Change::Regression
        )
    );
    assert_eq!(c.new_splats.len(), 1, "{:?}", c.new_splats);
    assert_eq!(c.new_splats[0].signature, "WARNING: at mm/userfaultfd.c mfill_atomic");
    assert_eq!(
        c.new_splats[0].cases,
        ["register / register_zero_len_fails_einval on shmem"]
    );
    assert_eq!(c.exit_code(), 1);
    // A splat the base already had is not new.
    let same = cmp("host-run1.edited-splat.ktap", "host-run1.edited-splat.ktap");
    assert!(same.new_splats.is_empty());
    assert_eq!(same.exit_code(), 0);
}

#[test]
fn a_pass_that_becomes_a_skip_fails_the_gate_and_the_way_back_does_not() {
    let hugetlb = ["hugetlb", "hugetlb-private"];
    let mut want = cases(
        "register",
        "register_unknown_mode_bits_fail_einval",
        &hugetlb,
        Change::NewlySkipped,
    );
    want.extend(cases(
        "register",
        "register_zero_len_fails_einval",
        &hugetlb,
        Change::NewlySkipped,
    ));
    let c = cmp("host-run1.ktap", "host-run1.edited-hugetlb-skips.ktap");
    assert_eq!(moved(&c), want);
    assert_eq!(
        c.changes[0].reason.as_deref(),
        Some("need 1 free huge pages, have 0 (vm.nr_hugepages)")
    );
    assert_eq!(c.regressions(), 4);
    assert_eq!(c.exit_code(), 1);
    assert_eq!(
        c.verdict(),
        "REGRESSION: 4 regressed case(s) (4 pass → skip), 0 new kernel splat(s)"
    );
    let back = cmp("host-run1.edited-hugetlb-skips.ktap", "host-run1.ktap");
    assert!(back.changes.iter().all(|x| x.change == Change::Unskipped));
    assert_eq!(back.changes.len(), 4);
    assert_eq!(back.exit_code(), 0);
}

/// The first passing leaf of `r` (binary / case), after `edit` changed it in place or dropped it (`edit` → false).
fn edit_first_pass(r: &mut Report, edit: impl Fn(&mut TestResult) -> bool) -> String {
    for bin in &mut r.tests {
        if let Some(i) = bin.subtests.iter().position(|t| t.status == Status::Pass) {
            let key = format!("{} / {}", bin.name, bin.subtests[i].name);
            if !edit(&mut bin.subtests[i]) {
                bin.subtests.remove(i);
            }
            return key;
        }
    }
    panic!("no passing case to edit");
}

#[test]
fn a_pass_that_becomes_an_xfail_or_goes_missing_fails_the_gate() {
    let base = report("host-run1.ktap");
    let mut xfail = base.clone();
    let xcase = edit_first_pass(&mut xfail, |t| {
        t.status = Status::Xfail;
        t.reason = Some("known issue: declared".into());
        true
    });
    let c = compare(&base, &xfail, Policy::default());
    assert_eq!(moved(&c), [(xcase, Change::NewlyXfail)]);
    assert_eq!(c.exit_code(), 1);
    assert!(c.verdict().contains("1 pass → xfail"), "{}", c.verdict());

    let mut missing = base.clone();
    let mcase = edit_first_pass(&mut missing, |_| false);
    let c = compare(&base, &missing, Policy::default());
    assert_eq!(moved(&c), [(mcase, Change::Removed)]);
    assert_eq!(c.exit_code(), 1);
    assert!(c.verdict().contains("1 pass → missing"), "{}", c.verdict());
}

#[test]
fn allow_new_skips_relaxes_skip_xfail_and_missing_but_not_failures() {
    let relaxed = Policy { allow_new_skips: true };
    let c = compare(
        &report("host-run1.ktap"),
        &report("host-run1.edited-hugetlb-skips.ktap"),
        relaxed,
    );
    assert_eq!(c.count(Change::NewlySkipped), 4);
    assert_eq!(c.exit_code(), 0);
    assert_eq!(c.verdict(), "OK: no regression, no new kernel splat");
    let base = report("host-run1.ktap");
    let mut missing = base.clone();
    edit_first_pass(&mut missing, |_| false);
    assert_eq!(compare(&base, &missing, relaxed).exit_code(), 0);
    let failing = compare(&base, &report("host-run1.edited-register-fails.ktap"), relaxed);
    assert!(failing.regressions() > 0);
    assert_eq!(failing.exit_code(), 1);
}

#[test]
fn a_renamed_case_is_new_plus_removed_and_paired_by_variant() {
    let c = cmp("host-run1.ktap", "host-run1.edited-renamed.ktap");
    assert_eq!(c.count(Change::Removed), 7);
    assert_eq!(c.count(Change::New), 7);
    for x in c.changes.iter().filter(|x| x.change == Change::New) {
        let old = x.case.replace("zero_length", "zero_len");
        assert_eq!(x.renamed_from.as_deref(), Some(old.as_str()), "{}", x.case);
        assert_eq!(x.base, x.candidate, "statuses carried over from the old name");
    }
    assert_eq!(c.exit_code(), 0);
}

#[test]
fn a_case_flaky_in_the_base_is_reported_apart_not_as_a_regression() {
    // Two real runs of the base as `--repeat 2` would give them: the copy cases passed once and timed out once.
    let mut base = report("host-run1.ktap");
    base.tests.extend(report("host-run1.edited-copy-passes.ktap").tests);
    let c = compare(&base, &report("host-run1.ktap"), Policy::default());
    assert_eq!(
        moved(&c),
        on_six("copy", "copy_over_populated_page_fails_eexist", Change::FlakyInBase)
    );
    assert_eq!(c.exit_code(), 0);
    // A case stable in the base still regresses.
    let c = compare(
        &base,
        &report("host-run1.edited-register-fails.ktap"),
        Policy::default(),
    );
    assert_eq!(c.count(Change::Regression), 2);
    assert_eq!(c.count(Change::FlakyInBase), 6);
}

#[test]
fn a_log_that_ends_early_turns_missing_passes_into_regressions() {
    // The run as a guest whose kernel died in the middle of the register block would leave it.
    let text = std::fs::read_to_string(data("host-run1.ktap")).unwrap();
    let cut = text.find("  ok 9 register_zero_len_fails_einval on shmem").unwrap();
    let truncated = uffdtest::runner::parse_ktap(&text[..cut]).unwrap();
    let c = compare(&report("host-run1.ktap"), &truncated, Policy::default());
    let lost = c.changes.iter().filter(|x| x.change == Change::Regression).count();
    assert_eq!(lost, 6, "{}", render_text(&c));
    assert!(c.changes.iter().all(|x| x.case.contains("register_zero_len")));
    assert_eq!(c.exit_code(), 1);
}

#[test]
fn the_markdown_report_leads_with_the_verdict_and_lists_each_regression() {
    let c = cmp("host-run1.ktap", "host-run1.edited-splat.ktap");
    let md = render_markdown(&c);
    assert!(
        md.starts_with("### ❌ uffdtest: REGRESSION: 1 regressed case(s), 1 new kernel splat(s)"),
        "{md}"
    );
    assert!(
        md.contains("| `register / register_zero_len_fails_einval on shmem` | pass → fail |"),
        "{md}"
    );
    let json: serde_json::Value = serde_json::to_value(&c).unwrap();
    assert_eq!(json["changes"][0]["change"], "regression");
    assert_eq!(
        json["new_splats"][0]["signature"],
        "WARNING: at mm/userfaultfd.c mfill_atomic"
    );
}

#[test]
fn shard_reports_merge_back_into_the_unsharded_run() {
    let shards: Vec<Report> = (1..=3).map(|k| report(&format!("host-shard{k}-of3.ktap"))).collect();
    let merged = uffdtest::gate::merge::merge_shards(&shards).unwrap();
    let whole = report("host-unsharded.ktap");
    let order = |r: &Report| -> Vec<String> {
        r.leaves()
            .iter()
            .map(|(p, t)| format!("{} {:?}", p.join("/"), t.status))
            .collect()
    };
    assert_eq!(order(&merged), order(&whole));
    assert_eq!(merged.tests.len(), 2, "one group per binary again");
    let mut a = Vec::new();
    uffdtest::runner::write_ktap(&mut a, &merged).unwrap();
    let mut b = Vec::new();
    uffdtest::runner::write_ktap(&mut b, &whole).unwrap();
    // Line for line, but for diagnostics (the parsed logs' own closing counts).
    let results = |v: Vec<u8>| -> Vec<String> {
        let text = String::from_utf8(v).unwrap();
        text.lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .map(String::from)
            .collect()
    };
    assert_eq!(results(a), results(b));
    assert_eq!(compare(&whole, &merged, Policy::default()).changes, vec![]);
}

#[test]
fn a_real_guest_regression_is_flagged_on_exactly_the_affected_cases() {
    for (base, cand) in [
        ("guest-6.12-base.json", "guest-6.12-copy-mode-bit5.json"),
        ("guest-6.12-base.ktap", "guest-6.12-copy-mode-bit5.ktap"),
    ] {
        let c = cmp(base, cand);
        assert_eq!(
            moved(&c),
            on_six("copy", "copy_unknown_mode_bits_fail_einval", Change::Regression),
            "{base}"
        );
        assert_eq!(c.unchanged, 50);
        assert!(c.new_splats.is_empty());
        assert_eq!(c.exit_code(), 1);
    }
}

#[test]
fn bisect_judges_recorded_guest_runs() {
    use uffdtest::gate::bisect::{Verdict, judge};
    assert_eq!(
        judge(&report("guest-6.12-base.json")),
        Verdict::Good { passed: 49, skipped: 7 }
    );
    match judge(&report("guest-6.12-copy-mode-bit5.json")) {
        Verdict::Bad { failed } => assert_eq!(failed.len(), 6, "{failed:?}"),
        v => panic!("{v}"),
    }
    // The guest's /init was not the runner (a harness bug of the day): the kernel panicked before any case ran.
    // That says nothing about the commit.
    let v = judge(&report("guest-6.12-panic-before-init.json"));
    assert_eq!(uffdtest::cli::Exit::from(&v).code(), 125, "{v}");
}

#[test]
fn a_real_kernel_warning_is_a_new_splat_pinned_on_its_case() {
    // The same bad kernel with a WARN_ON_ONCE on the bit, run by a later suite that had grown zeropage, poison,
    // move, unregister and wake cases: those are new, not regressions.
    for cand in [
        "guest-6.12-copy-mode-bit5-warn.json",
        "guest-6.12-copy-mode-bit5-warn.ktap",
    ] {
        let c = cmp("guest-6.12-base.json", cand);
        let regressions: Vec<_> = moved(&c)
            .into_iter()
            .filter(|(_, ch)| *ch == Change::Regression)
            .collect();
        assert_eq!(
            regressions,
            on_six("copy", "copy_unknown_mode_bits_fail_einval", Change::Regression)
        );
        assert_eq!(c.count(Change::New), 48, "{cand}");
        assert_eq!(c.count(Change::Removed), 0, "{cand}");
        assert_eq!(c.new_splats.len(), 1, "{cand}: {:?}", c.new_splats);
        // No KALLSYMS in this kernel: the raw address goes, file and headline stay.
        assert_eq!(c.new_splats[0].signature, "WARNING: at fs/userfaultfd.c", "{cand}");
        assert_eq!(
            c.new_splats[0].cases,
            ["copy / copy_unknown_mode_bits_fail_einval on anon"],
            "{cand}"
        );
        assert_eq!(c.exit_code(), 1);
    }
}
