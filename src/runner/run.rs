//! Runs each case alone in its own process and emits events.
//!
//! The contract with a test binary is libtest's (nextest's):
//! `BIN --list --format terse` to list, then
//! `BIN NAME --exact --nocapture --test-threads=1` per case, stdout and
//! stderr captured together. So a hang, a crash or a kernel splat costs one
//! case, never the run:
//!
//! - each case gets its own process group; at its deadline the group gets
//!   SIGTERM, then SIGKILL after a grace period, and the case is `TIMEOUT`;
//!   when the case ends, whatever it left behind in its group is killed;
//! - a case killed by a signal fails with the signal named;
//! - a case that exits 0 must show libtest's `1 passed` summary (silence is
//!   never a pass); if it printed `SKIP: <reason>` it is a skip;
//! - the kernel log is read across the case ([`super::kmsg`]): a splat fails
//!   a case that otherwise passed or skipped, and is quoted;
//! - sysctls a case left changed are restored after it ([`super::env`]).
//!
//! Timeouts: [`RunOptions::timeout`] per case, [`RunOptions::stress_timeout`]
//! for cases whose binary or name contains `stress`.
//!
//! Serial cases (see [`super::discover`]: a `serial`/`serial_*` name segment,
//! or a keyless serial_test attribute the manifest recorded) never run beside
//! another case, whatever `--jobs` says; with `--jobs` > 1 they run after
//! all the others. Cases sharing a serial_test key never run at once
//! ([`super::schedule`]).
//!
//! Results reach the reporters in plan order, whatever order parallel cases
//! end in; `CaseStarted` comes as it happens (for the progress line).

use super::attribute::{Suspect, pin_splats};
use super::env::{Env, RUN_DIR_ENV, RunDir, catch_signals, interrupted};
use super::klog;
use super::kmsg::{self, KmsgWatch};
use super::libtest::{failure_lines, libtest_verdict};
use super::process::{Captured, hang_report, reap_orphans, signal_name, spawn, try_wait_cpu, watch_exit};
use super::result::{Report, Status, TestResult};
use super::schedule::{Holding, Queue};
use std::path::PathBuf;
use std::process::{Child, ExitStatus};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::discover::Case;
pub use super::select::{Plan, PlanError, PlannedBinary, matches_pattern};

/// What to run and how. `Default` gives the CLI's defaults.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The manifest written at build time ([`super::discover::default_manifest`]).
    pub manifest: PathBuf,
    /// Keep cases whose name matches any: a substring, or a glob (`*`, `?`)
    /// matched against the whole libtest name, KTAP name, or `binary/name`.
    pub filters: Vec<String>,
    /// Drop cases matching any (same matching as `filters`).
    pub skip: Vec<String>,
    /// Keep cases of these variants (memory types: `anon`, `shmem-private`).
    pub mem: Vec<String>,
    /// Variants whose cases run only when `mem` names them (each case costs
    /// seconds); otherwise they are reported as skipped, saying how to run them.
    pub on_request: Vec<String>,
    /// Variants this machine cannot give at all, each with the SKIP reason
    /// its cases would print (the caller's probe, asked once: guest-memfd
    /// without a usable KVM): reported without starting a process each.
    pub unusable: Vec<(String, String)>,
    /// Keep cases of these binaries (ioctl or feature: `copy`, `api`).
    pub ioctl: Vec<String>,
    /// Start with these binaries' cases, the rest after in plan order: a
    /// mutant or bisect step whose failure is expected there meets it first.
    pub first: Vec<String>,
    /// Run only shard K of N (1-based), cases dealt round-robin in plan order.
    pub shard: Option<(usize, usize)>,
    /// Passes over the selection: the plan holds each binary this many
    /// times, so every report keeps each pass's outcome of a case.
    pub repeat: usize,
    /// Cases run at once (serial cases still run alone).
    pub jobs: usize,
    /// Stop starting cases once this many have failed (nextest's
    /// `--max-fail`); the rest are reported as skipped, not run. A killed
    /// mutant or a bisect step then costs seconds, not the whole suite.
    pub max_fail: Option<usize>,
    pub timeout: Duration,
    /// For cases whose binary or name contains `stress`.
    pub stress_timeout: Duration,
    /// Between SIGTERM and SIGKILL at a deadline.
    pub kill_grace: Duration,
    /// Also run cases marked `#[ignore]`.
    pub run_ignored: bool,
    /// Read the kernel log across each case and fail it on a splat.
    pub watch_kmsg: bool,
    /// Write `uffdtest: start <binary>: <case>` to /dev/kmsg before each case.
    pub announce_kmsg: bool,
    /// Raise vm.nr_hugepages to at least this for the run.
    pub hugepages: Option<u64>,
    /// Raise the 1 GiB hugetlb pool to at least this many pages for the run.
    pub hugepages_1g: Option<u64>,
    /// Sysctls set for the run (`vm.unprivileged_userfaultfd`, `1`), restored after.
    pub sysctls: Vec<(String, String)>,
    /// Catch SIGINT/SIGTERM/SIGHUP to stop cleanly (see [`super::env::catch_signals`]).
    /// Leave off where the caller handles signals (PID 1 in the guest).
    pub handle_signals: bool,
    /// Extra environment for the cases.
    pub case_env: Vec<(String, String)>,
    /// Declared known failures and the facts to judge them by: a matching
    /// failure is reported XFAIL, a matching pass XPASS ([`super::known`]).
    pub known: Option<super::known::Expectations>,
}

impl Default for RunOptions {
    fn default() -> RunOptions {
        RunOptions {
            manifest: super::discover::default_manifest(),
            filters: Vec::new(),
            skip: Vec::new(),
            mem: Vec::new(),
            on_request: Vec::new(),
            unusable: Vec::new(),
            ioctl: Vec::new(),
            first: Vec::new(),
            shard: None,
            repeat: 1,
            jobs: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            max_fail: None,
            timeout: Duration::from_secs(60),
            stress_timeout: Duration::from_secs(300),
            kill_grace: Duration::from_secs(3),
            run_ignored: false,
            watch_kmsg: true,
            announce_kmsg: false,
            hugepages: Some(64),
            hugepages_1g: None,
            sysctls: Vec::new(),
            handle_signals: false,
            case_env: Vec::new(),
            known: None,
        }
    }
}

/// What the runner reports, in this order: `Started`, then per binary its
/// cases' `CaseFinished` and a `BinaryFinished`, then `Finished`; `CaseStarted`
/// and `CaseEnded` come as cases start and end, in between.
#[derive(Debug)]
pub enum Event<'a> {
    Started {
        plan: &'a Plan,
        notes: &'a [String],
    },
    CaseStarted {
        case: &'a Case,
    },
    /// A case's process is over (as it happens, not in plan order; for the progress line).
    CaseEnded {
        case: &'a Case,
        result: &'a TestResult,
    },
    /// `binary` and `number` (1-based) place it in the plan.
    CaseFinished {
        binary: usize,
        number: usize,
        case: &'a Case,
        result: &'a TestResult,
    },
    BinaryFinished {
        binary: usize,
        result: &'a TestResult,
    },
    Finished {
        report: &'a Report,
    },
}

/// A consumer of events (KTAP, JUnit, JSON, summary, progress line).
pub trait Reporter {
    fn event(&mut self, e: &Event) -> std::io::Result<()>;
}

/// Why `case` is reported SKIP without a process of its own, if it is: its
/// type runs on request only and was not asked for, or cannot be had here.
fn instant_skip(opts: &RunOptions, case: &Case) -> Option<String> {
    let v = case.variant.as_ref()?;
    if opts.on_request.contains(v) && !opts.mem.contains(v) {
        return Some(format!("{v} runs on request only: --mem {v}"));
    }
    opts.unusable.iter().find(|(u, _)| u == v).map(|(_, why)| why.clone())
}

/// Plans and runs, feeding every reporter; returns the report. Err only for
/// what stops the run before any case (no manifest, nothing selected).
pub fn execute(opts: &RunOptions, reporters: &mut [&mut dyn Reporter]) -> Result<Report, PlanError> {
    if opts.handle_signals {
        catch_signals().map_err(PlanError::Signals)?;
    }
    let plan = super::select::plan(opts)?;
    if plan.binaries.is_empty() {
        return Err(PlanError::nothing_selected(opts));
    }
    let run_dir = RunDir::create();
    let with_dir;
    let opts = match &run_dir {
        Some(d) => {
            with_dir = RunOptions {
                case_env: [
                    opts.case_env.clone(),
                    vec![(RUN_DIR_ENV.into(), d.0.display().to_string())],
                ]
                .concat(),
                ..opts.clone()
            };
            &with_dir
        }
        None => opts,
    };
    let (env, mut notes) = Env::setup(opts.hugepages, opts.hugepages_1g, &opts.sysctls);
    for (v, why) in &opts.unusable {
        if plan
            .binaries
            .iter()
            .flat_map(|b| &b.cases)
            .any(|c| c.variant.as_ref() == Some(v))
        {
            notes.push(format!(
                "{v}: {why}; its cases are reported SKIP with that reason, none started"
            ));
        }
    }
    let kmsg_ok = if opts.watch_kmsg {
        match KmsgWatch::open() {
            Ok(_) => true,
            Err(e) => {
                notes.push(format!("kernel log not watched: cannot read {}: {e}", kmsg::DEV_KMSG));
                false
            }
        }
    } else {
        false
    };
    let mut emit = |e: Event| {
        for r in reporters.iter_mut() {
            // A reporter that cannot write (closed pipe) must not stop the run.
            let _ = r.event(&e);
        }
    };
    emit(Event::Started {
        plan: &plan,
        notes: &notes,
    });

    let jobs = opts.jobs.max(1);
    // Each case's watcher says when its process has exited (see `watch_exit`).
    let (exited_tx, exited) = mpsc::channel::<()>();
    let mut queue = Queue::new(&plan, jobs);
    let mut results: Vec<Vec<Option<TestResult>>> = plan.binaries.iter().map(|b| vec![None; b.cases.len()]).collect();
    let mut running: Vec<Running> = Vec::new();
    // Emission cursor: the next binary whose results go out, and its next case.
    let (mut eb, mut ec) = (0usize, 0usize);
    let mut report = Report {
        diagnostics: notes.clone(),
        start_unix: Some(super::kcidb::now_unix()),
        ..Report::default()
    };
    // As PID 1 (the guest's init) the processes a killed case leaves behind become ours to reap.
    let is_init = std::process::id() == 1;
    let mut failed = 0usize;
    let mut suspects: Vec<Suspect> = Vec::new();
    loop {
        let stop = interrupted();
        let enough = opts.max_fail.is_some_and(|m| failed >= m);
        if stop {
            report.interrupted = true;
            for r in &mut running {
                r.kill_now();
            }
        }
        let mut any_instant = false;
        // Launch while there is room (see [`super::schedule`]).
        while !stop && !enough && running.len() < jobs {
            let holding: Vec<Holding> = running
                .iter()
                .map(|r| Holding {
                    alone: r.case.serial,
                    keys: &r.case.keys,
                })
                .collect();
            let Some((b, c)) = queue.pick(&plan, &holding) else {
                break;
            };
            let case = &plan.binaries[b].cases[c];
            if let Some(why) = instant_skip(opts, case) {
                results[b][c] = Some(case_result(case, Status::Skip).with_reason(why));
                any_instant = true;
                continue;
            }
            emit(Event::CaseStarted { case });
            let mut r = Running::start(opts, case, (b, c), kmsg_ok, &exited_tx);
            r.overlapped = !running.is_empty();
            running.iter_mut().for_each(|o| o.overlapped = true);
            running.push(r);
        }
        // Reap.
        let mut i = 0;
        let mut any = any_instant;
        while i < running.len() {
            if let Some(mut res) = running[i].poll(opts) {
                let r = running.swap_remove(i);
                let notes = env.check(&opts.sysctls);
                res.diagnostics.extend(notes);
                if let Some(k) = &opts.known {
                    k.apply(&plan.binaries[r.at.0].name, &mut res);
                }
                emit(Event::CaseEnded {
                    case: &r.case,
                    result: &res,
                });
                any = true;
                // A splat beside other cases may be theirs: judged once the rest has run.
                if let Some(sig) = r.splat.clone().filter(|_| r.overlapped && !stop) {
                    suspects.push(Suspect {
                        at: r.at,
                        sig,
                        first: res,
                    });
                    continue;
                }
                failed += usize::from(res.status.is_failure());
                results[r.at.0][r.at.1] = Some(res);
            } else {
                i += 1;
            }
        }
        if stop && running.is_empty() {
            for (b, c) in queue.rest() {
                results[b][c] =
                    Some(case_result(&plan.binaries[b].cases[c], Status::Error).with_reason("not run: interrupted"));
            }
        }
        if running.is_empty() && (queue.is_empty() || stop || enough) && !suspects.is_empty() {
            let rerun = |at: (usize, usize)| {
                let case = &plan.binaries[at.0].cases[at.1];
                let mut r = Running::start(opts, case, at, kmsg_ok, &exited_tx);
                loop {
                    if let Some(mut res) = r.poll(opts) {
                        if let Some(k) = &opts.known {
                            k.apply(&plan.binaries[at.0].name, &mut res);
                        }
                        return (res, r.splat);
                    }
                    let _ = exited.recv_timeout(Duration::from_millis(20));
                }
            };
            for (at, res) in pin_splats(std::mem::take(&mut suspects), stop, rerun) {
                failed += usize::from(res.status.is_failure());
                results[at.0][at.1] = Some(res);
            }
        }
        if enough && running.is_empty() && !queue.is_empty() {
            let why = format!("not run: --max-fail {} reached", opts.max_fail.unwrap_or(0));
            for (b, c) in queue.rest() {
                results[b][c] = Some(case_result(&plan.binaries[b].cases[c], Status::Skip).with_reason(why.clone()));
            }
        }
        // Emit finished results in plan order.
        while eb < plan.binaries.len() {
            let pb = &plan.binaries[eb];
            while ec < pb.cases.len() {
                let Some(res) = &results[eb][ec] else { break };
                emit(Event::CaseFinished {
                    binary: eb,
                    number: ec + 1,
                    case: &pb.cases[ec],
                    result: res,
                });
                ec += 1;
            }
            if ec < pb.cases.len() {
                break;
            }
            let group = match &pb.error {
                Some(e) => TestResult::new(&pb.name, Status::Error).with_reason(e.clone()),
                None => TestResult::group(
                    &pb.name,
                    results[eb].iter_mut().map(|r| r.take().expect("done")).collect(),
                ),
            };
            emit(Event::BinaryFinished {
                binary: eb,
                result: &group,
            });
            report.tests.push(group);
            eb += 1;
            ec = 0;
        }
        if queue.is_empty() && running.is_empty() && eb >= plan.binaries.len() {
            break;
        }
        if is_init {
            reap_orphans(|pid| running.iter().any(|r| r.pgid == pid));
        }
        if !any {
            // Until a case's process exits; deadlines are checked at least this often.
            let _ = exited.recv_timeout(Duration::from_millis(20));
        }
    }
    let notes = env.check(&opts.sysctls);
    report.diagnostics.extend(notes);
    drop(env);
    emit(Event::Finished { report: &report });
    Ok(report)
}

/// A fresh result for a case, named as KTAP shows it.
fn case_result(case: &Case, status: Status) -> TestResult {
    let mut t = TestResult::new(&case.name, status);
    t.test = Some(case.test.clone());
    t.variant = case.variant.clone();
    t
}

enum Phase {
    Running,
    /// SIGTERM sent at the deadline.
    Terminating(Instant),
    /// SIGKILL sent.
    Killed(Instant),
}

/// Kernel log lines quoted for a failure without a splat.
const KMSG_TAIL: usize = 10;

struct Running {
    at: (usize, usize),
    case: Case,
    child: Option<Child>,
    pgid: i32,
    start: Instant,
    deadline: Instant,
    phase: Phase,
    output: Option<Captured>,
    kmsg: Option<KmsgWatch>,
    start_error: Option<String>,
    interrupted: bool,
    /// Where the case's threads were blocked at its deadline.
    hang_report: Vec<String>,
    /// Another case ran at some moment of this one's life.
    overlapped: bool,
    /// The signature of the splat logged while it ran, if any.
    splat: Option<String>,
    /// Its process's CPU, once reaped.
    cpu: Option<Duration>,
}

impl Running {
    fn start(
        opts: &RunOptions,
        case: &Case,
        at: (usize, usize),
        watch_kmsg: bool,
        exited: &mpsc::Sender<()>,
    ) -> Running {
        let timeout = if case.binary.contains("stress") || case.test.contains("stress") {
            opts.stress_timeout
        } else {
            opts.timeout
        };
        if opts.announce_kmsg {
            let _ = kmsg::announce(&format!("uffdtest: start {}: {}", case.binary, case.name));
        }
        let kmsg = if watch_kmsg { KmsgWatch::open().ok() } else { None };
        let now = Instant::now();
        let mut r = Running {
            at,
            case: case.clone(),
            child: None,
            pgid: 0,
            start: now,
            deadline: now + timeout,
            phase: Phase::Running,
            output: None,
            kmsg,
            start_error: None,
            interrupted: false,
            hang_report: Vec::new(),
            overlapped: false,
            splat: None,
            cpu: None,
        };
        match spawn(opts, case) {
            Ok((child, rx)) => {
                r.pgid = child.id() as i32;
                watch_exit(r.pgid, exited.clone());
                r.child = Some(child);
                r.output = Some(rx);
            }
            Err(e) => r.start_error = Some(e.to_string()),
        }
        r
    }

    fn signal_group(&self, sig: nix::sys::signal::Signal) {
        if self.pgid > 0 {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(self.pgid), sig);
        }
    }

    /// Interrupted: kill at once.
    fn kill_now(&mut self) {
        if !self.interrupted {
            self.interrupted = true;
            self.signal_group(nix::sys::signal::Signal::SIGKILL);
            self.phase = Phase::Killed(Instant::now());
        }
    }

    /// The result once the case is over, or None while it runs.
    fn poll(&mut self, opts: &RunOptions) -> Option<TestResult> {
        use nix::sys::signal::Signal;
        if let Some(e) = self.start_error.take() {
            return Some(case_result(&self.case, Status::Error).with_reason(e));
        }
        let child = self.child.as_mut().expect("started");
        let now = Instant::now();
        let status = match try_wait_cpu(child) {
            Ok(Some((st, cpu))) => {
                self.cpu = Some(cpu);
                Some(st)
            }
            Ok(None) => None,
            Err(e) => return Some(self.finish_error(format!("cannot wait for the case: {e}"))),
        };
        let Some(status) = status else {
            match self.phase {
                Phase::Running if now >= self.deadline => {
                    // Where it hangs is the news for a kernel developer: say so before killing.
                    self.hang_report = hang_report(self.pgid);
                    self.signal_group(Signal::SIGTERM);
                    self.phase = Phase::Terminating(now);
                }
                Phase::Terminating(t) if now >= t + opts.kill_grace => {
                    self.signal_group(Signal::SIGKILL);
                    self.phase = Phase::Killed(now);
                }
                // SIGKILL did not reap it: stuck in the kernel (D state). Leave it.
                Phase::Killed(t) if now >= t + Duration::from_secs(10) => {
                    let mut res = self.result(None, now);
                    res.diagnostics.push(format!(
                        "process {} did not die of SIGKILL within 10 s (stuck in the kernel?); left behind",
                        self.pgid
                    ));
                    return Some(res);
                }
                _ => {}
            }
            return None;
        };
        Some(self.result(Some(status), now))
    }

    fn finish_error(&mut self, why: String) -> TestResult {
        self.signal_group(nix::sys::signal::Signal::SIGKILL);
        case_result(&self.case, Status::Error).with_reason(why)
    }

    fn result(&mut self, status: Option<ExitStatus>, now: Instant) -> TestResult {
        use std::os::unix::process::ExitStatusExt;
        // Whatever the case forked and left in its group dies with it.
        let leaked = self.pgid > 0
            && nix::sys::signal::killpg(nix::unistd::Pid::from_raw(self.pgid), nix::sys::signal::Signal::SIGKILL)
                .is_ok();
        let bytes = self.output.take().map(Captured::finish).unwrap_or_default();
        let output = String::from_utf8_lossy(&bytes).into_owned();
        let kmsgs = self.kmsg.as_mut().map(|k| k.read_new()).unwrap_or_default();
        let mut res = case_result(&self.case, Status::Pass);
        res.duration_secs = Some((now - self.start).as_secs_f64());
        res.cpu_secs = self.cpu.map(|c| c.as_secs_f64());
        res.start_unix = Some(super::kcidb::now_unix() - (Instant::now() - self.start).as_secs_f64());
        res.exit_code = status.and_then(|s| s.code());
        res.signal = status.and_then(|s| s.signal()).map(signal_name);
        let timed_out = !matches!(self.phase, Phase::Running);
        let secs = (self.deadline - self.start).as_secs();
        (res.status, res.reason) = if self.interrupted {
            (Status::Error, Some("interrupted".into()))
        } else if timed_out {
            (Status::Timeout, Some(format!("{secs} seconds")))
        } else if let Some(sig) = &res.signal {
            (Status::Fail, Some(format!("killed by signal {sig}")))
        } else if let Some(code) = res.exit_code.filter(|&c| c != 0) {
            (Status::Fail, Some(format!("exit={code}")))
        } else {
            libtest_verdict(&output)
        };
        if timed_out && !self.interrupted {
            res.diagnostics
                .push(format!("timed out after {secs} s: process group killed"));
            res.diagnostics.append(&mut self.hang_report);
        }
        let kmsgs: Vec<String> = kmsgs.into_iter().filter(|m| !kmsg::is_foreign_fixture(m)).collect();
        let excerpt = klog::excerpt(&kmsgs);
        if let Some(first) = excerpt.iter().find(|m| klog::is_splat(m)) {
            self.splat = Some(klog::signature(first).unwrap_or_else(|| first.clone()));
            if matches!(res.status, Status::Pass | Status::Skip) {
                res.status = Status::Fail;
                res.reason = Some(format!("kernel log: {first}"));
            }
            res.kmsg = excerpt;
        } else if res.status.is_failure() {
            // Context only: the last few lines (with --jobs they may be another case's).
            res.kmsg = kmsgs.iter().rev().take(KMSG_TAIL).rev().cloned().collect();
        }
        if res.status.is_failure() {
            res.diagnostics.splice(0..0, failure_lines(&output, &self.case.test));
        }
        if leaked && !timed_out && status.is_some() {
            res.diagnostics
                .push("the case left processes behind in its group; killed".into());
        }
        res.output = output;
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn case(variant: Option<&str>) -> Case {
        Case {
            binary: "copy".into(),
            path: "/bin/true".into(),
            test: "t".into(),
            name: "t".into(),
            variant: variant.map(Into::into),
            ignored: false,
            serial: false,
            keys: Vec::new(),
        }
    }

    #[rstest]
    #[case::plain(None, &[], None)]
    #[case::usable_type(Some("anon"), &[], None)]
    #[case::on_request(Some("hugetlb-1g"), &[], Some("hugetlb-1g runs on request only: --mem hugetlb-1g"))]
    #[case::requested(Some("hugetlb-1g"), &["hugetlb-1g"], None)]
    #[case::unusable(Some("guest-memfd"), &[], Some("no /dev/kvm"))]
    // Asking for a type the machine cannot give does not make it runnable.
    #[case::unusable_requested(Some("guest-memfd"), &["guest-memfd"], Some("no /dev/kvm"))]
    fn a_case_skips_without_a_process_exactly_when_its_type_is_not_to_be_had(
        #[case] variant: Option<&str>,
        #[case] mem: &[&str],
        #[case] why: Option<&str>,
    ) {
        let opts = RunOptions {
            mem: mem.iter().map(|m| m.to_string()).collect(),
            on_request: vec!["hugetlb-1g".into()],
            unusable: vec![("guest-memfd".into(), "no /dev/kvm".into())],
            ..RunOptions::default()
        };
        assert_eq!(instant_skip(&opts, &case(variant)).as_deref(), why);
    }
}
