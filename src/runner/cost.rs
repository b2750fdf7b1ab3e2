//! Where a run's time goes. A case costs a process (exec, libtest
//! start-up), the capability probes (once per run since caps/cache.rs;
//! timed here as each process once paid them), its own work, and the
//! runner's bookkeeping. Each is measured apart: start-up by running every
//! test binary with a filter that matches nothing, the probes in this
//! process, and the run itself with the CPU of the runner and of its cases
//! read from getrusage. `bench --suite` measures a host run this way and
//! the guest's init a guest run (`vm --cost`), which it reports on a KTAP
//! diagnostic line, [`COST_LINE`].

use super::run::{Plan, Reporter, RunOptions, execute};
use super::{PlanError, Report};
use serde::{Deserialize, Serialize};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Times each binary is started with nothing to run.
pub const STARTS: usize = 5;

/// How a guest's KTAP carries its [`SuiteCost`]: `# cost: {json}`.
pub const COST_LINE: &str = "cost: ";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SuiteCost {
    pub cases: usize,
    /// Cases that ran in a process of their own (not those skipped before
    /// starting one): what process start-up is counted over.
    #[serde(default)]
    pub processes: usize,
    pub jobs: usize,
    pub wall_s: f64,
    /// CPU of the runner process itself (user + system).
    pub runner_cpu_s: f64,
    /// CPU of every case process (and what they forked).
    pub cases_cpu_s: f64,
    /// A test binary started with nothing to run: median wall, mean CPU.
    pub start_wall_ms: f64,
    pub start_cpu_ms: f64,
    /// Each probe's cost in this process: what every case paid before the
    /// run shared them.
    pub probes_ms: Vec<(String, f64)>,
}

impl SuiteCost {
    /// The breakdown per case as a table.
    pub fn table(&self) -> String {
        let n = self.cases.max(1) as f64;
        let start_cpu = self.start_cpu_ms / 1e3 * self.processes as f64;
        let probes: f64 = self.probes_ms.iter().map(|(_, ms)| ms).sum();
        let own = (self.cases_cpu_s - start_cpu).max(0.0);
        let mut s = format!(
            "{} cases, -j {}: wall {:.1} s, CPU {:.1} s ({:.2} ms a case)\n\n",
            self.cases,
            self.jobs,
            self.wall_s,
            self.runner_cpu_s + self.cases_cpu_s,
            (self.runner_cpu_s + self.cases_cpu_s) * 1e3 / n
        );
        s.push_str(&format!("{:<44} {:>10} {:>12}\n", "CPU", "run total", "per case"));
        let rows = [
            ("process start (exec, libtest)", start_cpu),
            ("the cases' own work", own),
            ("runner (spawn, capture, kmsg, reports)", self.runner_cpu_s),
        ];
        for (what, secs) in rows {
            s.push_str(&format!("{what:<44} {secs:>8.2} s {:>9.2} ms\n", secs * 1e3 / n));
        }
        s.push_str(&format!(
            "{:<44} {:>8.2} s {:>9.2} ms\n",
            "capability probes (once per run)",
            probes / 1e3,
            probes / n
        ));
        s.push_str(&format!(
            "\n{} of the cases ran in a process of their own; a test binary started with nothing to run took \
             {:.2} ms wall (median of {STARTS} starts of each), {:.2} ms CPU.\n",
            self.processes, self.start_wall_ms, self.start_cpu_ms
        ));
        s.push_str("Probes, as each case process paid them before they were shared:\n");
        for (name, ms) in &self.probes_ms {
            s.push_str(&format!("  {name:<40} {ms:>8.2} ms\n"));
        }
        s
    }

    /// The cost a report carries on a [`COST_LINE`] diagnostic (a guest's).
    pub fn from_report(report: &Report) -> Option<SuiteCost> {
        report
            .diagnostics
            .iter()
            .rev()
            .find_map(|d| serde_json::from_str(d.trim_start_matches("# ").strip_prefix(COST_LINE)?).ok())
    }

    /// The diagnostic line that carries it, without the leading `# `.
    pub fn line(&self) -> String {
        format!("{COST_LINE}{}", serde_json::to_string(self).unwrap_or_default())
    }
}

/// This process's CPU (user + system) or its waited-for children's, seconds.
pub fn cpu(who: nix::sys::resource::UsageWho) -> f64 {
    let tv = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    nix::sys::resource::getrusage(who).map_or(0.0, |u| tv(u.user_time()) + tv(u.system_time()))
}

/// What starting a test binary costs: each binary of `plan` started
/// [`STARTS`] times with a filter that matches nothing; (median wall ms, mean CPU ms).
pub fn start_cost(plan: &Plan) -> std::io::Result<(f64, f64)> {
    use nix::sys::resource::UsageWho::RUSAGE_CHILDREN;
    let mut walls = Vec::new();
    let children = cpu(RUSAGE_CHILDREN);
    for b in plan.binaries.iter().filter_map(|b| b.cases.first()) {
        for _ in 0..STARTS {
            let t = Instant::now();
            Command::new(&b.path)
                .args(["__uffdtest_matches_nothing__", "--exact", "--test-threads=1"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()?;
            walls.push(t.elapsed());
        }
    }
    let cpu_ms = (cpu(RUSAGE_CHILDREN) - children) * 1e3 / walls.len().max(1) as f64;
    walls.sort();
    let wall_ms = walls
        .get(walls.len() / 2)
        .copied()
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
        * 1e3;
    Ok((wall_ms, cpu_ms))
}

/// Measures start-up and the probes (`probes` times each in this process:
/// the runner knows nothing of userfaultfd), then runs `opts` (feeding
/// `reporters`) with the runner's and the cases' CPU read around it.
pub fn measure(
    opts: &RunOptions,
    probes: fn() -> Vec<(String, f64)>,
    reporters: &mut [&mut dyn Reporter],
) -> Result<(Report, SuiteCost), Box<dyn std::error::Error>> {
    use nix::sys::resource::UsageWho::{RUSAGE_CHILDREN, RUSAGE_SELF};
    let (start_wall_ms, start_cpu_ms) = start_cost(&super::plan(opts)?)?;
    let probes_ms = probes();
    let (self0, children0) = (cpu(RUSAGE_SELF), cpu(RUSAGE_CHILDREN));
    let t = Instant::now();
    let report = execute(opts, reporters).map_err(|e: PlanError| Box::new(e) as Box<dyn std::error::Error>)?;
    let cost = SuiteCost {
        cases: report.totals().total(),
        // A case skipped before any process started has no duration.
        processes: report
            .leaves()
            .iter()
            .filter(|(_, t)| t.duration_secs.is_some())
            .count(),
        jobs: opts.jobs,
        wall_s: t.elapsed().as_secs_f64(),
        runner_cpu_s: cpu(RUSAGE_SELF) - self0,
        cases_cpu_s: cpu(RUSAGE_CHILDREN) - children0,
        start_wall_ms,
        start_cpu_ms,
        probes_ms,
    };
    Ok((report, cost))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost() -> SuiteCost {
        SuiteCost {
            cases: 100,
            processes: 100,
            jobs: 2,
            wall_s: 10.0,
            runner_cpu_s: 1.0,
            cases_cpu_s: 5.0,
            start_wall_ms: 12.0,
            start_cpu_ms: 10.0,
            probes_ms: vec![("caps".into(), 3.0)],
        }
    }

    #[test]
    fn the_table_splits_the_cases_cpu_into_start_up_and_their_own_work() {
        let t = cost().table();
        assert!(
            t.starts_with("100 cases, -j 2: wall 10.0 s, CPU 6.0 s (60.00 ms a case)"),
            "{t}"
        );
        // 100 starts of 10 ms: 1 s of the cases' 5 s; the other 4 s is their own.
        assert!(
            t.contains("process start (exec, libtest)                    1.00 s     10.00 ms"),
            "{t}"
        );
        assert!(
            t.contains("the cases' own work                              4.00 s     40.00 ms"),
            "{t}"
        );
    }

    #[test]
    fn a_cost_line_in_a_report_reads_back() {
        let c = cost();
        let report = Report {
            diagnostics: vec!["something else".into(), format!("# {}", c.line())],
            ..Report::default()
        };
        assert_eq!(SuiteCost::from_report(&report), Some(c.clone()));
        let bare = Report {
            diagnostics: vec![c.line()],
            ..Report::default()
        };
        assert_eq!(SuiteCost::from_report(&bare), Some(c));
        assert_eq!(SuiteCost::from_report(&Report::default()), None);
    }
}
