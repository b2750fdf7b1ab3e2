//! `uffdtest flakes`: the flake hunter. Runs a selection several times on a
//! machine made hostile on purpose (every CPU busy, reclaim and compaction
//! running, khugepaged scanning without sleep, a different THP and mTHP
//! policy each pass) and names every case whose outcome changed between
//! passes, with what each differing pass said. A gate nobody trusts gets
//! ignored; this is how a case that only fails under load is caught when it
//! is written, not months later in someone's CI.

use crate::cli::Exit;
use crate::cli::run::{RunArgs, run_options};
use crate::runner::passes::{concat, run_passes};
use crate::runner::report::{Ktap, Progress};
use crate::runner::{Report, Reporter, TestResult};
use crate::stress::hostile::{Hostile, ThpPolicy, totals_line};
use crate::stress::load::LoadConfig;
use clap::Args;
use std::collections::BTreeMap;
use std::io::IsTerminal;

#[derive(Args, Debug)]
pub struct FlakesArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// How many passes over the selection.
    #[arg(long, default_value_t = 3, value_name = "N", value_parser = clap::value_parser!(u32).range(2..))]
    pub passes: u32,
    /// No load generator, no khugepaged or THP changes: plain repeated passes.
    #[arg(long)]
    pub no_load: bool,
    /// Keep the machine's THP and mTHP policy in every pass.
    #[arg(long)]
    pub keep_thp: bool,
    /// Memory the load generator churns through reclaim, in MiB [default: an eighth of MemAvailable].
    #[arg(long, value_name = "MIB")]
    pub load_memory: Option<usize>,
}

/// A case's outcome in each pass, keyed `binary/case`, in first-seen order.
fn outcomes(passes: &[Report]) -> Vec<(String, Vec<Option<&TestResult>>)> {
    let mut order: Vec<String> = Vec::new();
    let mut by: BTreeMap<String, Vec<Option<&TestResult>>> = BTreeMap::new();
    for (i, r) in passes.iter().enumerate() {
        for (path, leaf) in r.leaves() {
            let key = path.join("/");
            let e = by.entry(key.clone()).or_insert_with(|| {
                order.push(key);
                vec![None; passes.len()]
            });
            e[i] = Some(leaf);
        }
    }
    order
        .into_iter()
        .map(|k| {
            let v = by.remove(&k).unwrap_or_default();
            (k, v)
        })
        .collect()
}

/// What a pass said of a case: its status, reason and first lines of output.
fn said(t: Option<&TestResult>) -> String {
    let Some(t) = t else {
        return "not run".into();
    };
    let mut s = t.status.name().to_string();
    if let Some(r) = &t.reason {
        s.push_str(&format!(": {r}"));
    }
    for d in t.diagnostics.iter().take(4) {
        s.push_str(&format!("\n        {d}"));
    }
    s
}

/// The report's lines for the cases whose outcome changed; empty when none did.
pub fn changed(passes: &[Report], names: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for (case, runs) in outcomes(passes) {
        let status = |t: &Option<&TestResult>| t.map(|t| t.status);
        if runs.iter().all(|t| status(t) == status(&runs[0])) {
            continue;
        }
        let first = status(&runs[0]);
        let summary: Vec<&str> = runs.iter().map(|t| t.map_or("not run", |t| t.status.name())).collect();
        out.push(format!("  {case}: {}", summary.join(", ")));
        for (i, t) in runs.iter().enumerate() {
            if i == 0 || status(t) != first {
                out.push(format!("    pass {} ({}): {}", i + 1, names[i], said(*t)));
            }
        }
    }
    out
}

/// Exit 1 when any case changed outcome between passes (or failed in all of
/// them), 0 when every case kept one outcome, 2 when the hunt could not run.
pub fn flakes(a: &FlakesArgs) -> Exit {
    if a.run.sel.repeat > 1 {
        return Exit::CouldNotRun.because("uffdtest flakes", "--passes sets the repeats; --repeat is for `run`");
    }
    let opts = match run_options(&a.run) {
        Ok(o) => o,
        Err(e) => return e,
    };
    // Before the load's threads start, so that none of them takes a Ctrl-C
    // and kills the hunt with the knobs still set.
    if opts.handle_signals
        && let Err(e) = crate::runner::env::catch_signals()
    {
        return Exit::CouldNotRun.because("uffdtest flakes", e);
    }
    let hostile = if a.no_load {
        None
    } else {
        let mut cfg = LoadConfig::hostile();
        if let Some(m) = a.load_memory {
            cfg.memory_bytes = m << 20;
        }
        match Hostile::start(&cfg) {
            Ok(h) => {
                eprintln!("uffdtest flakes: load on: {}", h.describe());
                Some(h)
            }
            Err(e) => return Exit::CouldNotRun.because("uffdtest flakes", e),
        }
    };
    let mut progress = std::io::stderr()
        .is_terminal()
        .then(|| Progress::new(std::io::stderr()));
    // The KTAP file streams as the cases end, as `run -o` does: one document, a block per binary per pass.
    let mut to_file = match &a.run.out.output {
        Some(p) => match std::fs::File::create(p) {
            Ok(f) => Some(Ktap::new(std::io::BufWriter::new(f))),
            Err(e) => {
                return Exit::CouldNotRun
                    .because("uffdtest flakes", format_args!("cannot create {}: {e}", p.display()));
            }
        },
        None => None,
    };
    let mut reporters: Vec<&mut dyn Reporter> = Vec::new();
    if let Some(p) = progress.as_mut() {
        reporters.push(p);
    }
    if let Some(f) = to_file.as_mut() {
        reporters.push(f);
    }
    let vary = !(a.no_load || a.keep_thp);
    let name = |i: usize| {
        if vary {
            ThpPolicy::for_pass(i).name()
        } else {
            "as the machine is".to_string()
        }
    };
    let n = a.passes as usize;
    let before = |i: usize| {
        eprintln!("uffdtest flakes: pass {} of {n} ({})", i + 1, name(i));
        if vary {
            ThpPolicy::for_pass(i).apply()
        } else {
            Vec::new()
        }
    };
    let after = |i: usize, r: &Report| eprintln!("uffdtest flakes: pass {}: {}", i + 1, r.totals().summary_line());
    let passes = match run_passes(&opts, n, before, after, &mut reporters) {
        Ok(p) => p,
        Err(e) => return Exit::CouldNotRun.because("uffdtest flakes", e),
    };
    let names: Vec<String> = (0..passes.len()).map(name).collect();
    if let Some(h) = hostile {
        eprintln!("uffdtest flakes: load: {}", totals_line(&h.stop()));
    }
    drop(reporters);
    drop(to_file);
    a.run.out.write(&concat(&passes), false);
    let lines = changed(&passes, &names);
    let failing = passes.iter().any(|r| r.totals().fail > 0);
    println!(
        "uffdtest flakes: {} case(s) changed outcome over {} pass(es){}",
        lines.iter().filter(|l| !l.starts_with("    ")).count(),
        passes.len(),
        if lines.is_empty() { "" } else { ":" }
    );
    for l in &lines {
        println!("{l}");
    }
    if passes.iter().any(|r| r.interrupted) {
        Exit::Interrupted
    } else if !lines.is_empty() || failing {
        Exit::Failure
    } else {
        Exit::Ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::Status;

    fn pass(statuses: &[(&str, Status)]) -> Report {
        Report {
            tests: vec![TestResult::group(
                "copy",
                statuses.iter().map(|(n, s)| TestResult::new(*n, *s)).collect(),
            )],
            ..Report::default()
        }
    }

    #[test]
    fn a_case_that_changes_is_named_with_each_differing_pass() {
        let mut failing = pass(&[("a on anon", Status::Pass), ("b on anon", Status::Fail)]);
        failing.tests[0].subtests[1].reason = Some("exit=101".into());
        failing.tests[0].subtests[1].diagnostics = vec!["assertion failed".into()];
        let passes = [
            pass(&[("a on anon", Status::Pass), ("b on anon", Status::Pass)]),
            failing,
            pass(&[("a on anon", Status::Pass), ("b on anon", Status::Skip)]),
        ];
        let names: Vec<String> = ["p1", "p2", "p3"].map(String::from).to_vec();
        let lines = changed(&passes, &names);
        assert_eq!(
            lines,
            [
                "  copy/b on anon: pass, fail, skip",
                "    pass 1 (p1): pass",
                "    pass 2 (p2): fail: exit=101\n        assertion failed",
                "    pass 3 (p3): skip",
            ]
        );
    }

    #[test]
    fn a_case_missing_from_a_pass_changed_and_a_steady_one_did_not() {
        let passes = [
            pass(&[("a on anon", Status::Pass), ("b on anon", Status::Pass)]),
            pass(&[("b on anon", Status::Pass)]),
        ];
        let names: Vec<String> = ["p1", "p2"].map(String::from).to_vec();
        assert_eq!(
            changed(&passes, &names),
            [
                "  copy/a on anon: pass, not run",
                "    pass 1 (p1): pass",
                "    pass 2 (p2): not run"
            ]
        );
        let steady = [
            pass(&[("a on anon", Status::Skip)]),
            pass(&[("a on anon", Status::Skip)]),
        ];
        assert!(changed(&steady, &names).is_empty());
    }
}
