//! Several passes over one selection with the machine changed between them
//! (the flake hunter's THP policies), reported as one `--repeat N` run: one
//! KTAP document whose binaries come once per pass. Whoever reads it (the
//! host reading a guest, `compare`, the flaky-case lines) reads a hunt as
//! any repeated run. `--repeat` alone cannot do this: its passes overlap at
//! `-j` > 1, and a policy must never change while a case runs.

use super::run::Event;
use super::select::Plan;
use super::{PlanError, Report, Reporter, RunOptions, execute};

/// Runs the selection of `opts` `passes` times, one pass after the other:
/// `before(i)` changes the machine for pass `i` (0-based) and what it
/// returns is dropped when that pass is over; `after(i, report)` hears how
/// it went. The reporters see one run of `passes` repeats. Stops early when
/// a pass is interrupted. Returns each pass's report.
pub fn run_passes<G>(
    opts: &RunOptions,
    passes: usize,
    mut before: impl FnMut(usize) -> G,
    mut after: impl FnMut(usize, &Report),
    reporters: &mut [&mut dyn Reporter],
) -> Result<Vec<Report>, PlanError> {
    let once = RunOptions {
        repeat: 1,
        ..opts.clone()
    };
    let mut splice = Splice {
        inner: reporters,
        passes: passes.max(1),
        done: Vec::new(),
        binaries: 0,
    };
    for i in 0..splice.passes {
        let guard = before(i);
        let report = execute(&once, &mut [&mut splice])?;
        drop(guard);
        after(i, &report);
        if report.interrupted {
            break;
        }
    }
    Ok(splice.done)
}

/// Every pass in one report, as `run --repeat` writes it.
pub fn concat(passes: &[Report]) -> Report {
    let mut all = Report::default();
    for r in passes {
        all.tests.extend(r.tests.iter().cloned());
        all.diagnostics.extend(r.diagnostics.iter().cloned());
        all.parse_errors.extend(r.parse_errors.iter().cloned());
        all.interrupted |= r.interrupted;
        all.start_unix = all.start_unix.or(r.start_unix);
    }
    all
}

/// Turns the events of consecutive runs into those of one repeated run:
/// the first plan announced `passes` times over, binaries numbered on
/// across passes, one `Finished` with every pass in it.
struct Splice<'a, 'b> {
    inner: &'a mut [&'b mut dyn Reporter],
    passes: usize,
    /// Reports of the passes over so far.
    done: Vec<Report>,
    /// Binaries in one pass's plan.
    binaries: usize,
}

impl Splice<'_, '_> {
    fn emit(&mut self, e: &Event) {
        for r in self.inner.iter_mut() {
            // A reporter that cannot write (closed pipe) must not stop the run.
            let _ = r.event(e);
        }
    }
}

impl Reporter for Splice<'_, '_> {
    fn event(&mut self, e: &Event) -> std::io::Result<()> {
        let offset = self.done.len() * self.binaries;
        match e {
            Event::Started { plan, notes } => {
                if self.done.is_empty() {
                    self.binaries = plan.binaries.len();
                    let all = Plan {
                        binaries: (0..self.passes).flat_map(|_| plan.binaries.iter().cloned()).collect(),
                    };
                    self.emit(&Event::Started { plan: &all, notes });
                }
            }
            Event::CaseStarted { .. } | Event::CaseEnded { .. } => self.emit(e),
            Event::CaseFinished {
                binary,
                number,
                case,
                result,
            } => self.emit(&Event::CaseFinished {
                binary: binary + offset,
                number: *number,
                case,
                result,
            }),
            Event::BinaryFinished { binary, result } => self.emit(&Event::BinaryFinished {
                binary: binary + offset,
                result,
            }),
            Event::Finished { report } => {
                self.done.push((*report).clone());
                if self.done.len() == self.passes || report.interrupted {
                    let all = concat(&self.done);
                    self.emit(&Event::Finished { report: &all });
                }
            }
        }
        Ok(())
    }
}
