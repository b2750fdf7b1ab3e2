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
//! or a serial_test attribute the manifest recorded) never run beside
//! another case, whatever `--jobs` says; with `--jobs` > 1 they run after
//! all the others.
//!
//! Results reach the reporters in plan order, whatever order parallel cases
//! end in; `CaseStarted` comes as it happens (for the progress line).

use super::discover::{Case, Manifest, list_cases};
use super::env::{Env, catch_signals, interrupted};
use super::klog;
use super::kmsg::{self, KmsgWatch};
use super::result::{Report, Status, TestResult};
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

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
    /// Keep cases of these binaries (ioctl or feature: `copy`, `api`).
    pub ioctl: Vec<String>,
    /// Run only shard K of N (1-based), cases dealt round-robin in plan order.
    pub shard: Option<(usize, usize)>,
    /// Passes over the selection: the plan holds each binary this many
    /// times, so every report keeps each pass's outcome of a case.
    pub repeat: usize,
    /// Cases run at once (serial cases still run alone).
    pub jobs: usize,
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
    /// Sysctls set for the run (`vm.unprivileged_userfaultfd`, `1`), restored after.
    pub sysctls: Vec<(String, String)>,
    /// Catch SIGINT/SIGTERM/SIGHUP to stop cleanly (see [`super::env::catch_signals`]).
    /// Leave off where the caller handles signals (PID 1 in the guest).
    pub handle_signals: bool,
    /// Extra environment for the cases.
    pub case_env: Vec<(String, String)>,
}

impl Default for RunOptions {
    fn default() -> RunOptions {
        RunOptions {
            manifest: super::discover::default_manifest(),
            filters: Vec::new(),
            skip: Vec::new(),
            mem: Vec::new(),
            ioctl: Vec::new(),
            shard: None,
            repeat: 1,
            jobs: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            timeout: Duration::from_secs(60),
            stress_timeout: Duration::from_secs(300),
            kill_grace: Duration::from_secs(3),
            run_ignored: false,
            watch_kmsg: true,
            announce_kmsg: false,
            hugepages: Some(64),
            sysctls: Vec::new(),
            handle_signals: false,
            case_env: Vec::new(),
        }
    }
}

/// The planned run: binaries in manifest order, each with its selected cases.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub binaries: Vec<PlannedBinary>,
}

#[derive(Debug, Clone)]
pub struct PlannedBinary {
    pub name: String,
    pub cases: Vec<Case>,
    /// Listing failed: the binary is one `ERROR` result.
    pub error: Option<String>,
}

impl Plan {
    pub fn case_count(&self) -> usize {
        self.binaries.iter().map(|b| b.cases.len()).sum()
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

/// Lists every binary's cases and applies the selection.
pub fn plan(opts: &RunOptions) -> Result<Plan, String> {
    let manifest = Manifest::load(&opts.manifest)?;
    let mut plan = Plan::default();
    let mut dealt = 0usize;
    for b in &manifest.binaries {
        if !opts.ioctl.is_empty() && !opts.ioctl.iter().any(|i| norm(i) == norm(&b.name)) {
            continue;
        }
        let path = Manifest::resolve(&opts.manifest, b);
        let cases = match list_cases(b, &path) {
            Ok(c) => c,
            Err(e) => {
                plan.binaries.push(PlannedBinary {
                    name: b.name.clone(),
                    cases: Vec::new(),
                    error: Some(e),
                });
                continue;
            }
        };
        let mut keep = Vec::new();
        for c in cases {
            if !selected(opts, &c) {
                continue;
            }
            if let Some((k, n)) = opts.shard {
                dealt += 1;
                if (dealt - 1) % n != k - 1 {
                    continue;
                }
            }
            keep.push(c);
        }
        if !keep.is_empty() {
            plan.binaries.push(PlannedBinary {
                name: b.name.clone(),
                cases: keep,
                error: None,
            });
        }
    }
    if opts.repeat > 1 {
        let once = std::mem::take(&mut plan.binaries);
        plan.binaries = (0..opts.repeat).flat_map(|_| once.iter().cloned()).collect();
    }
    Ok(plan)
}

fn norm(s: &str) -> String {
    s.trim().replace('_', "-").to_ascii_lowercase()
}

fn selected(opts: &RunOptions, c: &Case) -> bool {
    if c.ignored && !opts.run_ignored {
        return false;
    }
    if !opts.mem.is_empty()
        && !c
            .variant
            .as_ref()
            .is_some_and(|v| opts.mem.iter().any(|m| norm(m) == norm(v)))
    {
        return false;
    }
    let hay = [c.test.clone(), c.name.clone(), format!("{}/{}", c.binary, c.test)];
    let hit = |p: &String| hay.iter().any(|h| matches_pattern(p, h));
    if !opts.filters.is_empty() && !opts.filters.iter().any(hit) {
        return false;
    }
    !opts.skip.iter().any(hit)
}

/// A pattern with `*` or `?` is a glob over the whole text; otherwise a substring.
pub fn matches_pattern(pat: &str, text: &str) -> bool {
    if pat.contains(['*', '?']) {
        glob(pat.as_bytes(), text.as_bytes())
    } else {
        text.contains(pat)
    }
}

fn glob(p: &[u8], t: &[u8]) -> bool {
    // Iterative wildcard match with backtracking to the last `*`.
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Plans and runs, feeding every reporter; returns the report. Err only for
/// what stops the run before any case (no manifest, nothing selected).
pub fn run(opts: &RunOptions, reporters: &mut [&mut dyn Reporter]) -> Result<Report, String> {
    if opts.handle_signals {
        catch_signals()?;
    }
    let plan = plan(opts)?;
    if plan.binaries.is_empty() {
        return Err(format!(
            "no case matched the selection in {} (filters {:?}, mem {:?}, ioctl {:?}, shard {:?})",
            opts.manifest.display(),
            opts.filters,
            opts.mem,
            opts.ioctl,
            opts.shard
        ));
    }
    let (env, mut notes) = Env::setup(opts.hugepages, &opts.sysctls);
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
    let mut queue: Vec<(usize, usize)> = plan
        .binaries
        .iter()
        .enumerate()
        .flat_map(|(b, pb)| (0..pb.cases.len()).map(move |c| (b, c)))
        .collect();
    // Serial cases go last, so they never hold the parallel ones back while
    // the slots drain for them (results still come out in plan order).
    if jobs > 1 {
        queue.sort_by_key(|&(b, c)| plan.binaries[b].cases[c].serial);
    }
    let mut results: Vec<Vec<Option<TestResult>>> = plan.binaries.iter().map(|b| vec![None; b.cases.len()]).collect();
    let mut running: Vec<Running> = Vec::new();
    let mut next = 0;
    // Emission cursor: the next binary whose results go out, and its next case.
    let (mut eb, mut ec) = (0usize, 0usize);
    let mut report = Report {
        diagnostics: notes.clone(),
        ..Report::default()
    };
    // As PID 1 (the guest's init) the processes a killed case leaves behind become ours to reap.
    let is_init = std::process::id() == 1;
    loop {
        let stop = interrupted();
        if stop {
            report.interrupted = true;
            for r in &mut running {
                r.kill_now();
            }
        }
        // Launch while there is room; a serial case waits for an empty slot set
        // and then runs alone.
        while !stop && next < queue.len() && running.len() < jobs {
            let (b, c) = queue[next];
            let case = &plan.binaries[b].cases[c];
            if case.serial && !running.is_empty() || running.iter().any(|r| r.serial) {
                break;
            }
            emit(Event::CaseStarted { case });
            running.push(Running::start(opts, case, (b, c), kmsg_ok, &exited_tx));
            next += 1;
        }
        // Reap.
        let mut i = 0;
        let mut any = false;
        while i < running.len() {
            if let Some(mut res) = running[i].poll(opts) {
                let r = running.swap_remove(i);
                let notes = env.check(&opts.sysctls);
                res.diagnostics.extend(notes);
                emit(Event::CaseEnded {
                    case: &r.case,
                    result: &res,
                });
                results[r.at.0][r.at.1] = Some(res);
                any = true;
            } else {
                i += 1;
            }
        }
        if stop && running.is_empty() {
            for (b, c) in queue[next..].iter().copied() {
                results[b][c] =
                    Some(case_result(&plan.binaries[b].cases[c], Status::Error).with_reason("not run: interrupted"));
            }
            next = queue.len();
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
        if next >= queue.len() && running.is_empty() && eb >= plan.binaries.len() {
            break;
        }
        if is_init {
            reap_orphans(&running);
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

/// Most output kept per case; a runaway printer is cut here.
const OUTPUT_CAP: usize = 1 << 20;
/// Kernel log lines quoted for a failure without a splat.
const KMSG_TAIL: usize = 10;
/// Most output lines quoted in KTAP for a failure (the JSON report has all).
const DIAG_LINES: usize = 60;

struct Running {
    at: (usize, usize),
    case: Case,
    serial: bool,
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
            serial: case.serial,
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
        };
        match spawn(opts, case) {
            Ok((child, rx)) => {
                r.pgid = child.id() as i32;
                watch_exit(r.pgid, exited.clone());
                r.child = Some(child);
                r.output = Some(rx);
            }
            Err(e) => r.start_error = Some(e),
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
        let status = match child.try_wait() {
            Ok(Some(st)) => Some(st),
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

fn spawn(opts: &RunOptions, case: &Case) -> Result<(Child, Captured), String> {
    use std::os::unix::process::CommandExt;
    let (mut rd, wr) = std::io::pipe().map_err(|e| format!("cannot make a pipe: {e}"))?;
    let wr2 = wr.try_clone().map_err(|e| format!("cannot dup a pipe: {e}"))?;
    let mut cmd = Command::new(&case.path);
    cmd.arg(&case.test).args(["--exact", "--nocapture", "--test-threads=1"]);
    if case.ignored {
        cmd.arg("--include-ignored");
    }
    cmd.envs(opts.case_env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(wr)
        .stderr(wr2)
        .process_group(0);
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", case.path.display()))?;
    // `cmd` holds the write ends: drop it so EOF comes when the case's group is gone.
    drop(cmd);
    let (tx, rx) = mpsc::channel();
    let buf = Arc::new(Mutex::new(Vec::new()));
    let b = buf.clone();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match rd.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    let mut buf = b.lock().unwrap_or_else(|e| e.into_inner());
                    if buf.len() < OUTPUT_CAP {
                        buf.extend_from_slice(&chunk[..n]);
                        if buf.len() >= OUTPUT_CAP {
                            buf.extend_from_slice(b"\n[output cut at 1 MiB]\n");
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        let _ = tx.send(());
    });
    Ok((child, Captured { buf, eof: rx }))
}

/// A case's output, read by a thread of its own so a chatty case never blocks on a full pipe.
struct Captured {
    buf: Arc<Mutex<Vec<u8>>>,
    eof: mpsc::Receiver<()>,
}

impl Captured {
    /// The output once the pipe is closed, or what came so far if a process
    /// that escaped the case's group still holds it open after 2 s.
    fn finish(self) -> Vec<u8> {
        let _ = self.eof.recv_timeout(Duration::from_secs(2));
        std::mem::take(&mut *self.buf.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Tells the run loop the moment process `pid` exits, so the next case
/// starts then rather than at the loop's next poll: polling every 5 ms cost
/// 2.5 ms a case, seconds over the suite. WNOWAIT leaves the reaping (and
/// the exit status) to the case's `try_wait`; if that came first, waitid
/// fails at once and the extra wake-up is harmless.
fn watch_exit(pid: i32, exited: mpsc::Sender<()>) {
    use nix::sys::wait::{Id, WaitPidFlag, waitid};
    std::thread::spawn(move || {
        let pid = nix::unistd::Pid::from_raw(pid);
        while let Err(nix::errno::Errno::EINTR) = waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {}
        let _ = exited.send(());
    });
}

/// Reaps exited processes that are not a running case's leader (orphans
/// re-parented to PID 1). A leader's status is left for its `try_wait`.
fn reap_orphans(running: &[Running]) {
    use nix::sys::wait::{Id, WaitPidFlag, waitid, waitpid};
    loop {
        // Peek without reaping: which child has exited?
        let Ok(st) = waitid(
            Id::All,
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
        ) else {
            return;
        };
        let Some(pid) = st.pid() else { return };
        if running.iter().any(|r| r.pgid == pid.as_raw()) {
            return;
        }
        let _ = waitpid(pid, Some(WaitPidFlag::WNOHANG));
    }
}

/// Most kernel stack frames quoted per blocked thread.
const STACK_FRAMES: usize = 8;

/// Each thread of each process in group `pgid`: its state, where it waits in
/// the kernel (`wchan`), and its kernel stack (readable by root only), e.g.
/// `pid 812 tid 813 (copy-1f2e) S wchan handle_userfault` then `  handle_userfault+0x1a5/0x5e0`.
fn hang_report(pgid: i32) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    let mut pids: Vec<i32> = procs
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort();
    for pid in pids {
        if proc_stat(&format!("/proc/{pid}/stat")).map(|(_, _, pg)| pg) != Some(pgid) {
            continue;
        }
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        let mut tids: Vec<i32> = tasks
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        tids.sort();
        for tid in tids {
            let dir = format!("/proc/{pid}/task/{tid}");
            let Some((comm, state, _)) = proc_stat(&format!("{dir}/stat")) else {
                continue;
            };
            let wchan = std::fs::read_to_string(format!("{dir}/wchan")).unwrap_or_default();
            let wchan = if wchan.is_empty() || wchan == "0" {
                "-".to_string()
            } else {
                wchan
            };
            out.push(format!("pid {pid} tid {tid} ({comm}) {state} wchan {wchan}"));
            if let Ok(stack) = std::fs::read_to_string(format!("{dir}/stack")) {
                out.extend(
                    stack
                        .lines()
                        .take(STACK_FRAMES)
                        .map(|l| format!("  {}", l.split_once("] ").map_or(l, |(_, f)| f))),
                );
            }
        }
    }
    out
}

/// (comm, state, pgrp) from a `/proc/.../stat` line: `pid (comm) S ppid pgrp ...`.
fn proc_stat(path: &str) -> Option<(String, char, i32)> {
    let s = std::fs::read_to_string(path).ok()?;
    let (head, rest) = s.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_string();
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let _ppid = f.next()?;
    let pgrp = f.next()?.parse().ok()?;
    Some((comm, state, pgrp))
}

fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {sig}"))
}

/// The verdict of a case that exited 0: libtest must report it passed, and
/// a `SKIP: <reason>` line (maybe after libtest's `test name ... `) makes it a skip.
fn libtest_verdict(output: &str) -> (Status, Option<String>) {
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
fn failure_lines(output: &str, test: &str) -> Vec<String> {
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
    use rstest::rstest;

    #[rstest]
    #[case::substring("missing", "copy_fills_missing_page::case_1_anon", true)]
    #[case::glob_whole("copy_*::case_*_anon", "copy_fills_missing_page::case_1_anon", true)]
    #[case::glob_must_match_whole("copy_*", "x_copy_y", false)]
    #[case::question("a?c", "abc", true)]
    #[case::star_middle("*fills*shmem*", "copy_fills_missing_page::case_2_shmem", true)]
    #[case::no_match("zeropage", "copy_fills_missing_page", false)]
    fn patterns_match(#[case] pat: &str, #[case] text: &str, #[case] want: bool) {
        assert_eq!(matches_pattern(pat, text), want);
    }

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
