//! Boots the kernel under test with the suite as its initramfs, relays the
//! guest's KTAP live, watches the console, and judges: the guest's results,
//! corrected by the splats the console showed and the cases it never ran.

use super::boot::{self, Accel, AccelChoice, Boot};
use super::console::Console;
use super::init::{GUEST_ERROR, GuestConfig};
use super::initramfs::{self, Contents};
use super::kconfig;
use crate::runner::discover::{self, Manifest};
use crate::runner::{Plan, Report, Status, TestResult};
use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The Rust target the guest binaries are built for (static glibc).
pub const STATIC_TARGET: &str = "x86_64-unknown-linux-gnu";

/// How long a KVM guest may take to print its first kernel line before
/// `--accel auto` gives up on KVM.
const KVM_PROBE: Duration = Duration::from_secs(10);

/// What `uffdtest vm` was asked to do.
#[derive(Debug, Clone)]
pub struct VmOptions {
    pub kernel: PathBuf,
    pub accel: AccelChoice,
    pub memory_mib: u32,
    pub cpus: u32,
    /// Kill a guest that prints nothing (console or KTAP) for this long.
    pub timeout: Duration,
    pub console_log: Option<PathBuf>,
    /// Echo the kernel console to stderr as it comes.
    pub show_console: bool,
    pub guest: GuestConfig,
    /// A manifest of already built static test binaries; None builds them.
    pub manifest: Option<PathBuf>,
    /// The static `uffdtest` for `/init`; None uses this executable if it is
    /// static, else the one the build produces.
    pub init: Option<PathBuf>,
    /// The cargo project to build from.
    pub source: PathBuf,
    pub append: Vec<String>,
}

/// How the guest ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestEnd {
    /// The init powered the guest off after the run.
    PoweredOff,
    /// The kernel panicked (panic, or an oops with `oops=panic`).
    Panicked,
    /// Nothing came out for `--timeout`; QEMU was killed.
    Silent(Duration),
    /// QEMU exited without the guest powering off (bad image, QEMU error).
    QemuExited(String),
}

impl fmt::Display for GuestEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuestEnd::PoweredOff => f.write_str("the guest powered off"),
            GuestEnd::Panicked => f.write_str("the kernel panicked"),
            GuestEnd::Silent(t) => write!(f, "the guest printed nothing for {} s and was killed", t.as_secs()),
            GuestEnd::QemuExited(s) => write!(f, "QEMU exited ({s})"),
        }
    }
}

/// A finished VM run.
#[derive(Debug)]
pub struct VmRun {
    pub report: Report,
    pub accel: Accel,
    pub end: GuestEnd,
    pub console: Console,
    /// Errors the guest init reported (no userfaultfd, nothing selected...).
    pub guest_errors: Vec<String>,
    /// Whether any KTAP arrived.
    pub ktap_seen: bool,
    /// From the start of `run`: the boot that gave the verdict began, the
    /// first KTAP line came, the verdict was ready.
    pub boot_started: Duration,
    pub first_ktap: Option<Duration>,
    pub elapsed: Duration,
}

/// Builds the guest, boots it (falling back from KVM to TCG if asked),
/// relays KTAP lines to `ktap_out` as they come. Err means the run could not
/// start (bad kernel, no QEMU, build failed): an infrastructure error.
pub fn run(o: &VmOptions, ktap_out: &mut dyn Write) -> Result<VmRun, String> {
    let start = Instant::now();
    let kernel = boot::resolve_kernel(&o.kernel)?;
    let qemu = boot::find_qemu()?;
    if let Some(cfg) = &kernel.config {
        precheck_config(cfg)?;
    }
    let work = WorkDir::new()?;
    let (init, mut manifest) = static_suite(o)?;
    let manifest_path = work.path.join(discover::MANIFEST_NAME);
    // Listed here, on the host: the guest then starts its first case at once.
    manifest.record_listings(&manifest_path)?;
    manifest.save(&manifest_path)?;
    let plan = crate::runner::plan(&o.guest.run_options(manifest_path.clone()))?;
    if plan.case_count() == 0 {
        return Err("no case matched the selection".into());
    }
    let initrd = work.path.join("initramfs.cpio");
    let guest_config = serde_json::to_string(&o.guest).expect("guest config serialises");
    initramfs::write(
        &initrd,
        &Contents {
            init,
            tests: manifest,
            guest_config,
        },
    )?;

    let mut accel = pick_accel(o.accel);
    loop {
        let b = Boot {
            kernel: kernel.image.clone(),
            initrd: initrd.clone(),
            accel,
            memory_mib: o.memory_mib,
            cpus: o.cpus,
            ktap_file: work.path.join(format!("ktap-{accel}.txt")),
            extra_cmdline: o.append.clone(),
        };
        let probe = o.accel == AccelChoice::Auto && accel == Accel::Kvm;
        let boot_started = start.elapsed();
        match boot_once(&qemu, &b, o, probe, ktap_out, start)? {
            Session::KvmBroken(why) => {
                eprintln!("uffdtest: KVM cannot run this guest here ({why}); falling back to TCG");
                accel = Accel::Tcg;
            }
            Session::Done(s) => {
                let mut report = verdict(&plan, s.ktap.as_deref(), &s.console, &s.end, &s.guest_errors);
                if o.guest.jobs <= 1 {
                    add_durations(&mut report, &s.console);
                }
                return Ok(VmRun {
                    report,
                    accel,
                    end: s.end,
                    console: s.console,
                    guest_errors: s.guest_errors,
                    ktap_seen: s.ktap.is_some(),
                    boot_started,
                    first_ktap: s.first_ktap,
                    elapsed: start.elapsed(),
                });
            }
        }
    }
}

/// `--accel`: forced, or KVM when `/dev/kvm` opens (the boot then proves
/// it can run the guest, see [`boot_once`]).
pub fn pick_accel(choice: AccelChoice) -> Accel {
    match choice {
        AccelChoice::Kvm => Accel::Kvm,
        AccelChoice::Tcg => Accel::Tcg,
        AccelChoice::Auto if boot::kvm_usable() => Accel::Kvm,
        AccelChoice::Auto => Accel::Tcg,
    }
}

/// A kernel build tree's `.config` must have every required option.
fn precheck_config(cfg: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(cfg).map_err(|e| format!("cannot read {}: {e}", cfg.display()))?;
    let frag = kconfig::parse_fragment(kconfig::FRAGMENT)?;
    let missing: Vec<_> = kconfig::check(&frag, &kconfig::parse_config(&text))
        .into_iter()
        .filter(|m| m.want.need == kconfig::Need::Required)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = missing
        .iter()
        .map(|m| format!("{}={}", m.want.name, m.want.value))
        .collect();
    Err(format!(
        "{} lacks options the suite needs: {}; merge qemu/uffd.config and rebuild (see `uffdtest kconfig --check`)",
        cfg.display(),
        names.join(" ")
    ))
}

/// A temporary directory removed on drop.
struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    fn new() -> Result<WorkDir, String> {
        let path = std::env::temp_dir().join(format!("uffdtest-vm-{}", std::process::id()));
        std::fs::create_dir_all(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(WorkDir { path })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The static `/init` and test binaries: given, or built with cargo.
fn static_suite(o: &VmOptions) -> Result<(PathBuf, Manifest), String> {
    let (built_init, manifest) = match &o.manifest {
        Some(m) => {
            let mut man = Manifest::load(m)?;
            for b in &mut man.binaries {
                b.path = Manifest::resolve(m, b);
            }
            (None, man)
        }
        None => {
            let (init, man) = build_static(&o.source)?;
            (Some(init), man)
        }
    };
    let this = std::env::current_exe()
        .ok()
        .filter(|e| crate::runner::elf::is_static(e).unwrap_or(false));
    let init = o.init.clone().or(built_init).or(this).ok_or(
        "no static uffdtest for the guest's /init: pass --init, or build without --manifest \
         (RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build --target x86_64-unknown-linux-gnu)",
    )?;
    for p in std::iter::once(&init).chain(manifest.binaries.iter().map(|b| &b.path)) {
        if !crate::runner::elf::is_static(p)? {
            return Err(format!(
                "{} is dynamically linked and cannot run in the guest; build with \
                 RUSTFLAGS=\"-C target-feature=+crt-static\" --target {STATIC_TARGET}",
                p.display()
            ));
        }
    }
    Ok((init, manifest))
}

/// `cargo test --no-run` for the static gnu target: the test binaries and
/// the `uffdtest` binary itself (cargo builds it for the integration tests).
/// Debug info and symbols are left out: they would triple the initramfs,
/// which the guest unpacks before anything runs (seconds under TCG).
/// Optimised (debug assertions stay on): under TCG unoptimised code made the
/// stress cases run for many minutes each.
///
/// The build goes to its own target directory, `<target>/uffdtest-vm`, so a
/// `uffdtest vm` started from `cargo test` never waits on the outer cargo's
/// lock, and the static flags never invalidate the host build.
pub fn build_static(source: &Path) -> Result<(PathBuf, Manifest), String> {
    let base = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| source.join("target"));
    let target_dir = base.join("uffdtest-vm");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let rustflags = format!(
        "{} -C target-feature=+crt-static",
        std::env::var("RUSTFLAGS").unwrap_or_default()
    );
    eprintln!("uffdtest: building the static guest binaries (cargo test --no-run --target {STATIC_TARGET})");
    let out = Command::new(&cargo)
        .current_dir(source)
        .args([
            "test",
            "--no-run",
            "--tests",
            "--target",
            STATIC_TARGET,
            "--message-format=json-render-diagnostics",
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("RUSTFLAGS", rustflags.trim())
        .env("CARGO_PROFILE_DEV_DEBUG", "false")
        .env("CARGO_PROFILE_DEV_OPT_LEVEL", "2")
        .env("CARGO_PROFILE_DEV_STRIP", "symbols")
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {cargo}: {e}; install Rust, or pass --manifest with prebuilt static tests"))?;
    if !out.status.success() {
        return Err(format!(
            "the static build failed ({}) in {}: fix the errors above, or pass --manifest with prebuilt static tests",
            out.status,
            source.display()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let manifest = discover::from_cargo_messages(text.as_bytes())?;
    let init = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["reason"] == "compiler-artifact" && v["target"]["name"] == "uffdtest")
        .filter(|v| {
            v["target"]["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "bin"))
        })
        // Not the bin's own unit-test harness, which cargo test also builds.
        .filter(|v| v["profile"]["test"] == false)
        .find_map(|v| v["executable"].as_str().map(PathBuf::from))
        .ok_or("cargo did not report the uffdtest binary")?;
    Ok((init, manifest))
}

/// What one stream or QEMU said.
enum Msg {
    Console(String),
    Stderr(String),
    Ktap(String),
}

/// The outcome of one boot.
enum Session {
    KvmBroken(String),
    Done(Box<Finished>),
}

struct Finished {
    console: Console,
    end: GuestEnd,
    /// The guest's KTAP text, None if none came.
    ktap: Option<String>,
    guest_errors: Vec<String>,
    first_ktap: Option<Duration>,
}

/// Kills QEMU on every way out (error, panic), as vmtest's scopeguard does.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn boot_once(
    qemu: &Path,
    b: &Boot,
    o: &VmOptions,
    probe_kvm: bool,
    ktap_out: &mut dyn Write,
    start: Instant,
) -> Result<Session, String> {
    std::fs::write(&b.ktap_file, "").map_err(|e| format!("cannot create {}: {e}", b.ktap_file.display()))?;
    let log = match &o.console_log {
        Some(p) => Some(std::fs::File::create(p).map_err(|e| format!("cannot create {}: {e}", p.display()))?),
        None => None,
    };
    let child = Command::new(qemu)
        .args(boot::qemu_args(b))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", qemu.display()))?;
    let mut guard = Guard(child);
    let (tx, rx) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let readers = [
        lines(guard.0.stdout.take().expect("piped"), tx.clone(), Msg::Console),
        lines(guard.0.stderr.take().expect("piped"), tx.clone(), Msg::Stderr),
        follow(b.ktap_file.clone(), tx, stop.clone()),
    ];
    let mut sink = Sink {
        log,
        show: o.show_console,
        ktap_out,
        start,
        console: Console::default(),
        ktap: None,
        first_ktap: None,
        stderr: Vec::new(),
        guest_errors: Vec::new(),
    };
    let mut last = Instant::now();
    let booted = Instant::now();
    let status = loop {
        if let Ok(m) = rx.recv_timeout(Duration::from_millis(100)) {
            last = Instant::now();
            if let Some(why) = sink.handle(m)
                && probe_kvm
            {
                return Ok(Session::KvmBroken(why));
            }
        }
        if probe_kvm && !sink.console.kernel_seen && booted.elapsed() > KVM_PROBE {
            return Ok(Session::KvmBroken(format!(
                "no kernel output within {} s",
                KVM_PROBE.as_secs()
            )));
        }
        if let Ok(Some(status)) = guard.0.try_wait() {
            break Some(status);
        }
        if sink.console.halted {
            let _ = guard.0.kill();
            break guard.0.wait().ok();
        }
        if last.elapsed() > o.timeout {
            let _ = guard.0.kill();
            let _ = guard.0.wait();
            break None;
        }
    };
    stop.store(true, Ordering::SeqCst);
    for r in readers {
        let _ = r.join();
    }
    while let Ok(m) = rx.try_recv() {
        if let Some(why) = sink.handle(m)
            && probe_kvm
        {
            return Ok(Session::KvmBroken(why));
        }
    }
    let end = match status {
        None => GuestEnd::Silent(o.timeout),
        Some(st) if probe_kvm && !sink.console.kernel_seen => {
            return Ok(Session::KvmBroken(format!(
                "QEMU exited ({st}) before the kernel printed anything"
            )));
        }
        Some(_) if sink.console.panicked() => GuestEnd::Panicked,
        // Halted instead of powered off: stopped by us, as good as a power-off.
        Some(_) if sink.console.halted => GuestEnd::PoweredOff,
        Some(st) if !st.success() || !sink.console.kernel_seen => {
            let tail: Vec<&str> = sink.stderr.iter().rev().take(5).rev().map(String::as_str).collect();
            GuestEnd::QemuExited(format!("{st}; {}", tail.join(" | ")))
        }
        Some(_) => GuestEnd::PoweredOff,
    };
    Ok(Session::Done(Box::new(Finished {
        end,
        console: sink.console,
        ktap: sink.ktap,
        guest_errors: sink.guest_errors,
        first_ktap: sink.first_ktap,
    })))
}

/// Where the streams go while the guest runs.
struct Sink<'a> {
    log: Option<std::fs::File>,
    show: bool,
    ktap_out: &'a mut dyn Write,
    start: Instant,
    console: Console,
    ktap: Option<String>,
    first_ktap: Option<Duration>,
    stderr: Vec<String>,
    guest_errors: Vec<String>,
}

impl Sink<'_> {
    /// Takes one line; returns why KVM failed if QEMU says so.
    fn handle(&mut self, m: Msg) -> Option<String> {
        match m {
            Msg::Console(l) => {
                if let Some(f) = &mut self.log {
                    let _ = writeln!(f, "{l}");
                }
                if self.show {
                    eprintln!("{l}");
                }
                self.console.feed(&l);
                None
            }
            Msg::Stderr(l) => {
                let broken = boot::kvm_failed(&l).then(|| l.clone());
                self.stderr.push(l);
                broken
            }
            Msg::Ktap(l) => {
                if self.first_ktap.is_none() {
                    self.first_ktap = Some(self.start.elapsed());
                }
                if let Some(e) = l
                    .trim_start()
                    .strip_prefix("# ")
                    .and_then(|d| d.strip_prefix(GUEST_ERROR))
                {
                    self.guest_errors.push(e.to_string());
                }
                let _ = writeln!(self.ktap_out, "{l}");
                let _ = self.ktap_out.flush();
                let k = self.ktap.get_or_insert_with(String::new);
                k.push_str(&l);
                k.push('\n');
                None
            }
        }
    }
}

/// A thread sending each line of `r` (lossy UTF-8, `\r` dropped).
fn lines(r: impl Read + Send + 'static, tx: mpsc::Sender<Msg>, wrap: fn(String) -> Msg) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut r = BufReader::new(r);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let l = String::from_utf8_lossy(&buf)
                        .trim_end_matches(['\n', '\r'])
                        .replace('\r', "");
                    if tx.send(wrap(l)).is_err() {
                        return;
                    }
                }
            }
        }
    })
}

/// Follows a file QEMU appends to (the KTAP port), line by line, until
/// `stop` is set and everything written has been read.
fn follow(path: PathBuf, tx: mpsc::Sender<Msg>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let Ok(mut f) = std::fs::File::open(&path) else { return };
        let mut pending = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            let stopping = stop.load(Ordering::SeqCst);
            match f.read(&mut buf) {
                Ok(0) | Err(_) => {
                    if stopping {
                        if !pending.is_empty() {
                            let _ = tx.send(Msg::Ktap(String::from_utf8_lossy(&pending).replace('\r', "")));
                        }
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(n) => {
                    pending.extend_from_slice(&buf[..n]);
                    while let Some(i) = pending.iter().position(|&c| c == b'\n') {
                        let line: Vec<u8> = pending.drain(..=i).collect();
                        let l = String::from_utf8_lossy(&line)
                            .trim_end_matches(['\n', '\r'])
                            .replace('\r', "");
                        if tx.send(Msg::Ktap(l)).is_err() {
                            return;
                        }
                    }
                }
            }
        }
    })
}

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
pub fn verdict(plan: &Plan, ktap: Option<&str>, console: &Console, end: &GuestEnd, guest_errors: &[String]) -> Report {
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
        let leaf = s.case.as_ref().and_then(|c| case_in_pass(&mut report, c, s.pass));
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

    fn case(bin: &str, name: &str) -> Case {
        Case {
            binary: bin.into(),
            path: PathBuf::from("/tests").join(bin),
            test: name.into(),
            name: name.into(),
            variant: None,
            ignored: false,
            serial: false,
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

    fn statuses(r: &Report) -> Vec<(String, Status)> {
        r.leaves().into_iter().map(|(p, t)| (p.join("/"), t.status)).collect()
    }

    const FULL: &str = "KTAP version 1\n1..2\n  KTAP version 1\n  1..2\n  ok 1 a1\n  ok 2 a2 # SKIP no WP\nok 1 api\n  \
                        KTAP version 1\n  1..1\n  ok 1 c1\nok 2 copy\n";

    #[test]
    fn clean_run_keeps_the_guest_results() {
        let c = console(&[
            "uffdtest: start api: a1",
            "uffdtest: start api: a2",
            "uffdtest: start copy: c1",
        ]);
        let r = verdict(&plan(), Some(FULL), &c, &GuestEnd::PoweredOff, &[]);
        assert_eq!(
            statuses(&r),
            [
                ("api/a1".into(), Status::Pass),
                ("api/a2".into(), Status::Skip),
                ("copy/c1".into(), Status::Pass)
            ]
        );
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
        let r = verdict(&twice, Some(ktap), &c, &GuestEnd::PoweredOff, &[]);
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
        let mut r = verdict(&plan(), Some(FULL), &c, &GuestEnd::PoweredOff, &[]);
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
        let r = verdict(&plan(), Some(FULL), &c, &GuestEnd::PoweredOff, &[]);
        let (_, a1) = r.leaves()[0];
        assert_eq!(a1.status, Status::Fail);
        assert!(
            a1.reason.as_deref().unwrap().starts_with("kernel log: WARNING: CPU: 0"),
            "{:?}",
            a1.reason
        );
        assert_eq!(r.exit_code(), 1);
    }

    #[test]
    fn panic_mid_case_crashes_it_and_the_rest_are_not_run() {
        let ktap = "KTAP version 1\n1..2\n  KTAP version 1\n  # Subtest: api\n  1..2\n  ok 1 a1\n";
        let c = console(&[
            "uffdtest: start api: a1",
            "uffdtest: start api: a2",
            "Kernel panic - not syncing: sysrq",
        ]);
        let r = verdict(&plan(), Some(ktap), &c, &GuestEnd::Panicked, &[]);
        assert_eq!(
            statuses(&r),
            [
                ("api/a1".into(), Status::Pass),
                ("api/a2".into(), Status::Crashed),
                ("copy/c1".into(), Status::Crashed)
            ]
        );
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

    #[test]
    fn panic_before_init_fails_a_kernel_test_and_runs_nothing() {
        let c = console(&["Kernel panic - not syncing: VFS: Unable to mount root fs"]);
        let r = verdict(&plan(), None, &c, &GuestEnd::Panicked, &[]);
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
        let ktap = "KTAP version 1\n1..2\n  KTAP version 1\n  # Subtest: api\n  1..2\n  ok 1 a1\n";
        let c = console(&["uffdtest: start api: a1", "uffdtest: start api: a2"]);
        let end = GuestEnd::Silent(Duration::from_secs(30));
        let r = verdict(&plan(), Some(ktap), &c, &end, &[]);
        assert_eq!(
            r.leaves()[1].1.reason.as_deref(),
            Some("not run: the guest printed nothing for 30 s and was killed")
        );
    }
}
