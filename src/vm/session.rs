//! One boot of the guest: QEMU started, its console and stderr and the
//! KTAP port read line by line, until the guest powers off, panics, goes
//! silent for too long, or shows that KVM cannot run it.

use super::boot::{self, Boot};
use super::console::Console;
use super::error::VmError;
use super::init::GUEST_ERROR;
use super::options::VmOptions;
use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a KVM guest may take to print its first kernel line before
/// `--accel auto` gives up on KVM.
const KVM_PROBE: Duration = Duration::from_secs(10);

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

/// What one stream or QEMU said.
enum Msg {
    Console(String),
    Stderr(String),
    Ktap(String),
}

/// The outcome of one boot.
pub enum Session {
    /// `--accel auto` tried KVM, and KVM cannot run this guest (why).
    KvmBroken(String),
    Done(Box<Finished>),
}

pub struct Finished {
    pub console: Console,
    pub end: GuestEnd,
    /// The guest's KTAP text, None if none came.
    pub ktap: Option<String>,
    pub guest_errors: Vec<String>,
    pub timeline: Timeline,
}

/// When each step of the start came, since `start`: where a slow start went
/// (the kernel, the init's set-up, the first case).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timeline {
    /// The kernel's first console line.
    pub console: Option<Duration>,
    /// The init's `guest init up`: the kernel booted and unpacked the initramfs.
    pub init_up: Option<Duration>,
    /// The init's `plan ready`: mounts, swap and sysctls set, the plan made.
    pub plan_ready: Option<Duration>,
    pub first_ktap: Option<Duration>,
    /// The first case's result line.
    pub first_result: Option<Duration>,
}

impl Timeline {
    fn console_line(&mut self, l: &str, at: Duration) {
        self.console.get_or_insert(at);
        if l.contains("uffdtest: guest init up") {
            self.init_up.get_or_insert(at);
        } else if l.contains("uffdtest: plan ready") {
            self.plan_ready.get_or_insert(at);
        }
    }

    fn ktap_line(&mut self, l: &str, at: Duration) {
        self.first_ktap.get_or_insert(at);
        let t = l.trim_start();
        if t.starts_with("ok ") || t.starts_with("not ok ") {
            self.first_result.get_or_insert(at);
        }
    }

    /// `kernel console 0.4 s`, `init up 1.9 s`, ..., each since `boot`; steps that never came are left out.
    pub fn since(&self, boot: Duration) -> Vec<String> {
        [
            ("kernel console", self.console),
            ("init up", self.init_up),
            ("plan ready", self.plan_ready),
            ("first KTAP line", self.first_ktap),
            ("first result", self.first_result),
        ]
        .iter()
        .filter_map(|(name, at)| at.map(|d| format!("{name} {:.1} s", d.saturating_sub(boot).as_secs_f64())))
        .collect()
    }
}

/// Kills QEMU on every way out (error, panic), as vmtest's scopeguard does.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Boots `b` under `qemu`, relaying KTAP lines to `ktap_out` as they come.
/// With `probe_kvm`, a guest that shows KVM cannot run it ends the boot
/// early as [`Session::KvmBroken`].
pub fn boot_once(
    qemu: &Path,
    b: &Boot,
    o: &VmOptions,
    probe_kvm: bool,
    ktap_out: &mut dyn Write,
    start: Instant,
) -> Result<Session, VmError> {
    let created = |p: &Path| VmError::io(format!("cannot create {}", p.display()));
    std::fs::write(&b.ktap_file, "").map_err(created(&b.ktap_file))?;
    let log = match &o.console_log {
        Some(p) => Some(std::fs::File::create(p).map_err(created(p))?),
        None => None,
    };
    let mut cmd = Command::new(qemu);
    cmd.args(boot::qemu_args(b))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    crate::runner::env::die_with_parent(&mut cmd);
    let child = cmd
        .spawn()
        .map_err(VmError::io(format!("cannot start {}", qemu.display())))?;
    let mut guard = Guard(child);
    let (tx, rx) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let readers = [
        lines(guard.0.stdout.take().expect("piped"), tx.clone(), Msg::Console),
        lines(guard.0.stderr.take().expect("piped"), tx.clone(), Msg::Stderr),
        follow(b.ktap_file.clone(), tx, stop.clone()),
    ];
    let mut sink = Sink::new(log, o.show_console, ktap_out, start);
    let mut last = Instant::now();
    let booted = Instant::now();
    let status = loop {
        if let Ok(m) = rx.recv_timeout(Duration::from_millis(100)) {
            if sink.shows_life(&m) {
                last = Instant::now();
            }
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
        timeline: sink.timeline,
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
    timeline: Timeline,
    stderr: Vec<String>,
    guest_errors: Vec<String>,
    /// The guest's userspace has written (see [`Sink::shows_life`]).
    userspace_seen: bool,
}

impl<'a> Sink<'a> {
    fn new(log: Option<std::fs::File>, show: bool, ktap_out: &'a mut dyn Write, start: Instant) -> Sink<'a> {
        Sink {
            log,
            show,
            ktap_out,
            start,
            console: Console::default(),
            ktap: None,
            timeline: Timeline::default(),
            stderr: Vec::new(),
            guest_errors: Vec::new(),
            userspace_seen: false,
        }
    }

    /// Whether `m` shows the guest getting on, for `--timeout`. Once its
    /// userspace has spoken, only what userspace writes counts (KTAP, the
    /// init's heartbeat and `uffdtest:` lines): a wedged kernel can fill the
    /// console with soft-lockup reports forever while no task runs.
    fn shows_life(&mut self, m: &Msg) -> bool {
        match m {
            // The init's own lines (kmsg): `uffdtest: heartbeat`, `uffdtest: start ...`.
            Msg::Console(l) if super::console::strip_prefix(l).starts_with("uffdtest:") => {
                self.userspace_seen = true;
                true
            }
            Msg::Console(_) => !self.userspace_seen,
            Msg::Ktap(_) => {
                self.userspace_seen = true;
                true
            }
            Msg::Stderr(_) => true,
        }
    }

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
                self.timeline.console_line(&l, self.start.elapsed());
                self.console.feed(&l);
                None
            }
            Msg::Stderr(l) => {
                let broken = boot::kvm_failed(&l).then(|| l.clone());
                self.stderr.push(l);
                broken
            }
            Msg::Ktap(l) => {
                self.timeline.ktap_line(&l, self.start.elapsed());
                if let Some(e) = l
                    .trim_start()
                    .strip_prefix("# ")
                    .and_then(|d| d.strip_prefix(GUEST_ERROR))
                {
                    self.guest_errors.push(e.to_string());
                }
                // Each case's time is for the reports, not for the reader of the live relay.
                if !l
                    .trim_start()
                    .starts_with(&format!("# {}", crate::runner::ktap::TIME_PREFIX))
                {
                    let _ = writeln!(self.ktap_out, "{l}");
                    let _ = self.ktap_out.flush();
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_the_guest_userspace_speaks_only_its_own_lines_keep_the_guest_alive() {
        let mut out = Vec::new();
        let mut sink = Sink::new(None, false, &mut out, Instant::now());
        let console = |l: &str| Msg::Console(l.into());
        // Booting: every kernel line counts.
        assert!(sink.shows_life(&console("[    0.100000] Linux version 6.12.0")));
        assert!(sink.shows_life(&console("[    2.000000] uffdtest: guest init up")));
        // A wedged kernel's reports do not, even naming the init's task.
        let lockup = "[  663.206180] CPU: 1 UID: 0 PID: 1 Comm: uffdtest Tainted: G L";
        assert!(!sink.shows_life(&console(
            "[  640.000000] watchdog: BUG: soft lockup - CPU#0 stuck for 22s!"
        )));
        assert!(!sink.shows_life(&console(lockup)));
        assert!(sink.shows_life(&console("[  700.000000] uffdtest: heartbeat")));
        assert!(sink.shows_life(&Msg::Ktap("  ok 27 x".into())));
        assert!(sink.shows_life(&Msg::Stderr("qemu: warning".into())));
    }

    #[test]
    fn case_times_are_kept_for_the_reports_but_not_relayed() {
        let mut out = Vec::new();
        let mut sink = Sink::new(None, false, &mut out, Instant::now());
        for l in ["  # time: 0.042 s", "  ok 1 a on anon"] {
            sink.handle(Msg::Ktap(l.into()));
        }
        assert_eq!(sink.ktap.as_deref(), Some("  # time: 0.042 s\n  ok 1 a on anon\n"));
        drop(sink);
        assert_eq!(String::from_utf8(out).unwrap(), "  ok 1 a on anon\n");
    }

    #[test]
    fn the_timeline_takes_the_first_of_each_step_and_counts_from_boot() {
        let s = Duration::from_secs;
        let mut t = Timeline::default();
        t.console_line("[    0.000000] Linux version 6.12.0", s(2));
        t.console_line("[    1.100000] uffdtest: guest init up", s(3));
        t.ktap_line("KTAP version 1", s(4));
        t.console_line("[    1.300000] uffdtest: plan ready, 10 cases", s(4));
        t.ktap_line("  # Subtest: api", s(4));
        t.ktap_line("  not ok 1 x", s(5));
        t.ktap_line("  ok 2 y", s(6));
        t.console_line("[    9.000000] uffdtest: guest init up", s(9));
        assert_eq!(
            t.since(s(1)),
            [
                "kernel console 1.0 s",
                "init up 2.0 s",
                "plan ready 3.0 s",
                "first KTAP line 3.0 s",
                "first result 4.0 s"
            ]
        );
        assert!(Timeline::default().since(s(1)).is_empty());
    }
}
