//! `--compare-c`: the kernel's own C selftests (`tools/testing/selftests/mm`: `uffd-unit-tests`, and `uffd-stress`
//! on each memory type) built statically from the same tree, run in a guest of their own (busybox as `/init`), so
//! the table shows what upstream's suite kills beside ours. `uffd-wp-mremap` came after 6.12 and is used where the
//! tree has it.

use crate::vm::VmError;
use crate::vm::boot::{self, Accel, AccelChoice, Boot};
use crate::vm::console::Console;
use crate::vm::initramfs::Archive;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const DIR: &str = "tools/testing/selftests/mm";
/// What each program is linked from, beside its own `.c`.
const COMMON: &[&str] = &["uffd-common.c", "vm_util.c", "thp_settings.c"];
/// One run: (name, program, arguments).
pub type Run = (&'static str, &'static str, &'static str);
/// What `mutate --compare-c` runs on each mutant: run_vmtests.sh's runs, smaller.
pub const MUTANT_RUNS: &[Run] = &[
    ("uffd-unit-tests", "uffd-unit-tests", ""),
    ("uffd-wp-mremap", "uffd-wp-mremap", ""),
    ("uffd-stress anon", "uffd-stress", "anon 16 8"),
    ("uffd-stress shmem", "uffd-stress", "shmem 16 8"),
    ("uffd-stress shmem-private", "uffd-stress", "shmem-private 16 8"),
    ("uffd-stress hugetlb", "uffd-stress", "hugetlb 32 8"),
    ("uffd-stress hugetlb-private", "uffd-stress", "hugetlb-private 32 8"),
];
/// What run_vmtests.sh runs as it runs them (its hugetlb size: half of the 128 pages the init reserves), for the
/// unit tests and uffd-stress on anon, hugetlb and shmem: `bench --guest`'s yardstick.
pub const VMTESTS_RUNS: &[Run] = &[
    ("uffd-unit-tests", "uffd-unit-tests", ""),
    ("uffd-stress anon", "uffd-stress", "anon 20 16"),
    ("uffd-stress hugetlb", "uffd-stress", "hugetlb 128 32"),
    ("uffd-stress shmem", "uffd-stress", "shmem 20 16"),
];
/// Where the guest reports, on its second serial port: `cselftest: <name> exit=<status>`.
const MARK: &str = "cselftest: ";

/// The built programs and how to boot them.
#[derive(Debug, Clone)]
pub struct CSuite {
    pub initrd: PathBuf,
    pub runs: Vec<(String, String)>,
    pub accel: Accel,
    /// `--accel auto` chose KVM and no boot has shown yet that it runs a guest here: the first boot that shows it
    /// cannot (QEMU aborts, reports a KVM error, or the kernel stays silent) moves every boot to TCG, as `vm` does.
    pub kvm_unproven: bool,
    pub memory_mib: u32,
    pub cpus: u32,
    /// The whole guest's deadline.
    pub timeout: Duration,
}

/// One C run: each program's exit status, the splats, whether the guest got to its end.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CRun {
    pub exits: BTreeMap<String, i32>,
    pub splats: Vec<String>,
    pub finished: bool,
    pub secs: f64,
}

impl CRun {
    /// Programs that passed (0) or skipped (4, KSFT_SKIP): the ones that can fail on a mutant.
    pub fn ok(&self) -> Vec<String> {
        self.exits
            .iter()
            .filter(|(_, c)| **c == 0 || **c == 4)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Why this run cannot be the base a mutant's runs are judged against, if it cannot: a guest that did not
    /// finish, passed no run, or reported a splat would make every mutant look killed.
    pub fn unusable_as_base(&self) -> Option<String> {
        if !self.splats.is_empty() {
            Some(format!("the kernel reported {}", self.splats.join("; ")))
        } else if !self.finished {
            Some(format!(
                "the guest did not finish ({} of the runs reported)",
                self.exits.len()
            ))
        } else if self.ok().is_empty() {
            Some("no run passed".into())
        } else {
            None
        }
    }

    /// Whether this run noticed a mutant, given the programs that were fine on base; and what it saw.
    pub fn verdict(&self, stable: &[String]) -> (bool, String) {
        let failed: Vec<String> = stable
            .iter()
            .filter_map(|n| match self.exits.get(n) {
                Some(0) | Some(4) | None => None,
                Some(c) => Some(format!("{n}: exit {c}")),
            })
            .collect();
        // Runs after a failing one were not run on purpose (the guest stops there); otherwise a missing run is news.
        let mut seen = if failed.is_empty() {
            stable
                .iter()
                .filter(|n| !self.exits.contains_key(*n))
                .map(|n| format!("{n}: not run"))
                .collect()
        } else {
            failed
        };
        seen.extend(self.splats.iter().map(|s| format!("kernel: {s}")));
        if !self.finished && seen.is_empty() {
            seen.push("the guest did not finish".into());
        }
        (!seen.is_empty(), seen.join("; "))
    }
}

/// Why the C selftests could not be built or run.
#[derive(Debug, thiserror::Error)]
pub enum CSuiteError {
    /// A file or process could not be made or read.
    #[error("{what}: {err}")]
    Io { what: String, err: std::io::Error },
    /// QEMU could not be waited for.
    #[error("{0}")]
    Wait(std::io::Error),
    /// A build command failed; `tail` is the end of its stderr, last line first.
    #[error("{what} failed ({status}): {tail}")]
    Failed {
        what: String,
        status: ExitStatus,
        tail: String,
    },
    #[error("--compare-c needs a static busybox: apt-get install busybox-static")]
    NoBusybox,
    #[error(transparent)]
    Qemu(VmError),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> CSuiteError {
    let what = what.into();
    move |err| CSuiteError::Io { what, err }
}

/// `what ... at path`, for [`io`].
fn at(what: &str, path: &Path) -> String {
    format!("{what} {}", path.display())
}

fn run_cmd(cmd: &mut Command, what: &str) -> Result<(), CSuiteError> {
    let out = cmd.output().map_err(io(what))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = err.lines().rev().take(5).collect();
    Err(CSuiteError::Failed {
        what: what.to_string(),
        status: out.status,
        tail: tail.join(" | "),
    })
}

/// Build the programs of `runs` from `tree` (headers from `make headers` in `work/hdr`) and pack their guest.
pub fn build(
    tree: &Path,
    work: &Path,
    runs_wanted: &[Run],
    accel: AccelChoice,
    memory_mib: u32,
    cpus: u32,
) -> Result<CSuite, CSuiteError> {
    let hdr = work.join("hdr");
    std::fs::create_dir_all(&hdr).map_err(io(at("create", &hdr)))?;
    run_cmd(
        Command::new("make")
            .arg("-s")
            .arg("-C")
            .arg(tree)
            .arg(format!("O={}", hdr.display()))
            .args(["ARCH=x86_64", "headers"])
            .stdin(Stdio::null()),
        "make headers",
    )?;
    let src = tree.join(DIR);
    let include = hdr.join("usr/include");
    let bin = work.join("bin");
    std::fs::create_dir_all(&bin).map_err(io(at("create", &bin)))?;
    let mut runs = Vec::new();
    for (name, prog, args) in runs_wanted {
        let main = src.join(format!("{prog}.c"));
        if !main.is_file() {
            continue;
        }
        let exe = bin.join(prog);
        if !exe.is_file() {
            run_cmd(
                Command::new("gcc")
                    .args(["-static", "-O1", "-w", "-isystem"])
                    .arg(&include)
                    .arg("-I")
                    .arg(tree)
                    .arg("-o")
                    .arg(&exe)
                    .arg(&main)
                    .args(COMMON.iter().map(|c| src.join(c)).filter(|p| p.is_file()))
                    .args(["-lrt", "-lpthread", "-lm"])
                    .current_dir(&src),
                &format!("gcc {prog}"),
            )?;
        }
        runs.push((name.to_string(), format!("/c/{prog} {args}").trim_end().to_string()));
    }
    let busybox = boot::which("busybox").ok_or(CSuiteError::NoBusybox)?;
    let initrd = work.join("cselftests.cpio");
    pack(&initrd, &busybox, &bin, &runs).map_err(io(at("pack", &initrd)))?;
    let (accel, kvm_unproven) = match accel {
        AccelChoice::Kvm => (Accel::Kvm, false),
        AccelChoice::Tcg => (Accel::Tcg, false),
        AccelChoice::Auto if boot::kvm_usable() => (Accel::Kvm, true),
        AccelChoice::Auto => (Accel::Tcg, false),
    };
    Ok(CSuite {
        initrd,
        runs,
        accel,
        kvm_unproven,
        memory_mib,
        cpus,
        timeout: Duration::from_secs(1200),
    })
}

/// The kernel parameter naming, by their place in `runs`, the runs whose failure ends the guest.
const STOP_PARAM: &str = "cselftest.stop=";

fn stop_param(runs: &[(String, String)], stop_on: &[String]) -> Option<String> {
    let at: Vec<String> = runs
        .iter()
        .enumerate()
        .filter(|(_, (name, _))| stop_on.contains(name))
        .map(|(i, _)| i.to_string())
        .collect();
    (!at.is_empty()).then(|| format!("{STOP_PARAM}{}", at.join(",")))
}

/// The guest's `/init`: the mounts the programs need, huge pages, each run with a deadline, then power off
/// (early after a failing run that [`STOP_PARAM`] names).
fn init_script(runs: &[(String, String)]) -> String {
    let mut s = String::from(
        "#!/bin/busybox sh\n/bin/busybox --install -s /bin\nexport PATH=/bin\n\
         mount -t proc proc /proc\nmount -t sysfs sysfs /sys\nmount -t devtmpfs devtmpfs /dev\n\
         mount -t tmpfs tmpfs /tmp\nmkdir -p /dev/shm /dev/hugepages\nmount -t tmpfs tmpfs /dev/shm\n\
         mount -t hugetlbfs hugetlbfs /dev/hugepages\necho 128 > /proc/sys/vm/nr_hugepages\n",
    );
    s.push_str(&format!(
        "stop=,$(sed -n 's/.*{STOP_PARAM}\\([0-9,]*\\).*/\\1/p' /proc/cmdline),\n"
    ));
    for (i, (name, cmd)) in runs.iter().enumerate() {
        s.push_str(&format!(
            "echo 'uffdtest: start c: {name}' > /dev/kmsg\ntimeout 300 {cmd} > /tmp/out 2>&1\nrc=$?\n\
             tail -n 20 /tmp/out > /dev/ttyS1\necho \"{MARK}{name} exit=$rc\" > /dev/ttyS1\n\
             case \"$stop\" in *,{i},*) [ $rc -eq 0 ] || [ $rc -eq 4 ] || {{ echo '{MARK}done' > /dev/ttyS1; poweroff -f; }};; esac\n"
        ));
    }
    s.push_str(&format!("echo '{MARK}done' > /dev/ttyS1\nsync\npoweroff -f\n"));
    s
}

fn pack(initrd: &Path, busybox: &Path, bin: &Path, runs: &[(String, String)]) -> std::io::Result<()> {
    let mut a = Archive::new(std::io::BufWriter::new(std::fs::File::create(initrd)?));
    for d in ["bin", "dev", "proc", "sys", "tmp", "c"] {
        a.dir(d)?;
    }
    a.char_dev("dev/console", 5, 1)?;
    a.host_file("bin/busybox", 0o755, busybox)?;
    for e in std::fs::read_dir(bin)? {
        let p = e?.path();
        a.host_file(
            &format!("c/{}", p.file_name().unwrap_or_default().to_string_lossy()),
            0o755,
            &p,
        )?;
    }
    a.bytes("init", 0o755, init_script(runs).as_bytes())?;
    a.finish()?;
    Ok(())
}

/// Read `cselftest: <name> exit=<n>` lines.
fn parse(report: &str, run: &mut CRun) {
    for line in report.lines().map(|l| l.trim_end_matches('\r')) {
        let Some(rest) = line.split_once(MARK).map(|(_, r)| r) else {
            continue;
        };
        if rest == "done" {
            run.finished = true;
        } else if let Some((name, code)) = rest.rsplit_once(" exit=")
            && let Ok(code) = code.parse()
        {
            run.exits.insert(name.to_string(), code);
        }
    }
}

/// Reads the console log as it grows (QEMU's stderr goes there too) for what ends a C guest early:
/// - a lockup, stall or hung-task report, or a panic: nothing will run to the end, and the report alone already
///   kills the mutant (a mutant that leaked a page-table spinlock held the C guest for its whole deadline, 20 min);
/// - a kernel that halted instead of powering off (a tinyconfig kernel without ACPI power-off): QEMU stays up;
/// - QEMU's word that KVM cannot run the guest.
#[derive(Default)]
struct Watch {
    read: usize,
    console: Console,
    /// When the first fatal report came: the guest is stopped a few seconds later, so its trace is in the log.
    since: Option<Instant>,
    kvm_failure: Option<String>,
}

impl Watch {
    const GRACE: Duration = Duration::from_secs(3);

    fn read(&mut self, console_log: &Path) {
        let Ok(bytes) = std::fs::read(console_log) else {
            return;
        };
        // Whole lines only: the rest is read again next time.
        let end = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if end > self.read {
            for l in String::from_utf8_lossy(&bytes[self.read..end]).lines() {
                if self.kvm_failure.is_none() && boot::kvm_failed(l) {
                    self.kvm_failure = Some(l.trim().to_string());
                }
                self.console.feed(l);
            }
            self.read = end;
        }
    }

    /// Whether the guest should be stopped now: wedged (after the grace) or halted.
    fn ended(&mut self, console_log: &Path) -> bool {
        use crate::vm::console::SplatKind as K;
        if let Some(t) = self.since {
            return t.elapsed() >= Self::GRACE;
        }
        self.read(console_log);
        let fatal = |k: &K| matches!(k, K::Panic | K::RcuStall | K::SoftLockup | K::HardLockup | K::HungTask);
        if self.console.splats.iter().any(|s| fatal(&s.kind)) {
            self.since = Some(Instant::now());
        }
        self.console.halted
    }
}

/// How one boot of the C guest ended.
enum Booted {
    Ran(CRun),
    /// KVM cannot run the guest (why): boot again under TCG.
    KvmBroken(String),
}

/// How long a KVM guest may take to print its first kernel line before it counts as one KVM cannot run (as `vm`).
const KVM_PROBE: Duration = Duration::from_secs(10);

impl CSuite {
    /// Boot `image` with the programs; logs go to `logs`. The guest powers off after the first of `stop_on` that
    /// fails, as `--max-fail 1` ends our suite's run on a mutant.
    pub fn run(&mut self, image: &Path, logs: &Path, stop_on: &[String]) -> Result<CRun, CSuiteError> {
        loop {
            match self.boot(image, logs, stop_on)? {
                Booted::Ran(run) => {
                    self.kvm_unproven = false;
                    return Ok(run);
                }
                Booted::KvmBroken(why) => {
                    eprintln!("uffdtest: KVM cannot run the C selftests' guest here ({why}); falling back to TCG");
                    (self.accel, self.kvm_unproven) = (Accel::Tcg, false);
                }
            }
        }
    }

    fn boot(&self, image: &Path, logs: &Path, stop_on: &[String]) -> Result<Booted, CSuiteError> {
        std::fs::create_dir_all(logs).map_err(io(at("create", logs)))?;
        let (report, console_log) = (logs.join("c-report.txt"), logs.join("c-console.log"));
        // A report left by an earlier boot of the same mutant must not end this one.
        std::fs::write(&report, "").map_err(io(at("create", &report)))?;
        let b = Boot {
            kernel: image.to_path_buf(),
            initrd: self.initrd.clone(),
            accel: self.accel,
            memory_mib: self.memory_mib,
            cpus: self.cpus,
            ktap_file: report.clone(),
            extra_cmdline: stop_param(&self.runs, stop_on).into_iter().collect(),
        };
        let qemu = boot::find_qemu().map_err(CSuiteError::Qemu)?;
        let out = std::fs::File::create(&console_log).map_err(io(at("create", &console_log)))?;
        let start = Instant::now();
        let mut cmd = Command::new(qemu);
        cmd.args(boot::qemu_args(&b))
            .stdin(Stdio::null())
            .stdout(out.try_clone().map(Stdio::from).unwrap_or(Stdio::null()))
            .stderr(Stdio::from(out));
        crate::runner::env::die_with_parent(&mut cmd);
        let mut child = cmd.spawn().map_err(io("start QEMU"))?;
        let mut watch = Watch::default();
        let mut done: Option<Instant> = None;
        let kill = |child: &mut std::process::Child| {
            let _ = child.kill();
            let _ = child.wait();
        };
        loop {
            let exited = child.try_wait().map_err(CSuiteError::Wait)?.is_some();
            let ended = watch.ended(&console_log);
            if self.kvm_unproven && !watch.console.kernel_seen {
                let why = match &watch.kvm_failure {
                    Some(l) => Some(l.clone()),
                    None if exited => Some("QEMU exited before the kernel printed anything".into()),
                    None if start.elapsed() > KVM_PROBE => {
                        Some(format!("no kernel output within {} s", KVM_PROBE.as_secs()))
                    }
                    None => None,
                };
                if let Some(why) = why {
                    kill(&mut child);
                    return Ok(Booted::KvmBroken(why));
                }
            }
            if exited {
                break;
            }
            // The init wrote its last line: give QEMU a moment to power off, then stop it (a halted kernel
            // without ACPI power-off would keep it up until the deadline).
            if done.is_none() && std::fs::read_to_string(&report).is_ok_and(|r| r.contains(&format!("{MARK}done"))) {
                done = Some(Instant::now());
            }
            if ended || start.elapsed() > self.timeout || done.is_some_and(|t| t.elapsed() > Watch::GRACE) {
                kill(&mut child);
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let mut run = CRun {
            secs: start.elapsed().as_secs_f64(),
            ..CRun::default()
        };
        parse(&std::fs::read_to_string(&report).unwrap_or_default(), &mut run);
        let mut text = String::new();
        std::fs::File::open(&console_log)
            .and_then(|mut f| f.read_to_string(&mut text))
            .map_err(io(at("read", &console_log)))?;
        let mut console = Console::default();
        text.lines().for_each(|l| console.feed(l));
        run.splats = console
            .splats
            .iter()
            .map(|s| s.lines.first().cloned().unwrap_or_default())
            .collect();
        Ok(Booted::Ran(run))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lockup_or_a_halt_on_the_console_stops_the_c_guest_but_a_warning_does_not() {
        let dir = std::env::temp_dir().join(format!("uffdtest-wedge-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("console.log");
        let mut w = Watch::default();
        std::fs::write(
            &log,
            "[    1.0] Linux version 6.12\n[    9.0] WARNING: CPU: 0 PID: 1 at mm/userfaultfd.c:1 x\n",
        )
        .unwrap();
        assert!(!w.ended(&log));
        assert!(w.since.is_none(), "a WARN is not a wedge");
        // Half a line is left for the next read.
        let mut text = std::fs::read_to_string(&log).unwrap();
        text.push_str(
            "[   40.0] watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [uffd-unit-tests:91]\n[   40.1] Modules",
        );
        std::fs::write(&log, &text).unwrap();
        assert!(!w.ended(&log), "stopped only after the grace");
        assert!(w.since.is_some());
        w.since = Some(Instant::now() - Watch::GRACE);
        assert!(w.ended(&log));
        // A halt ends it at once; QEMU's KVM complaint is kept for the fallback.
        let mut h = Watch::default();
        std::fs::write(
            &log,
            "KVM internal error. Suberror: 1\n[    5.0] reboot: Power off not available: System halted instead\n",
        )
        .unwrap();
        assert!(h.ended(&log));
        assert_eq!(h.kvm_failure.as_deref(), Some("KVM internal error. Suberror: 1"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn exit_lines_are_read_and_a_missing_end_is_noticed() {
        let mut r = CRun::default();
        parse(
            "tail of output\ncselftest: uffd-unit-tests exit=0\r\ncselftest: uffd-stress anon exit=1\n",
            &mut r,
        );
        assert!(!r.finished);
        assert_eq!(r.exits["uffd-stress anon"], 1);
        assert_eq!(r.ok(), ["uffd-unit-tests"]);
        parse("cselftest: done\n", &mut r);
        assert!(r.finished);
    }

    #[test]
    fn a_base_run_is_usable_only_finished_clean_and_with_a_run_that_passed() {
        let mut r = CRun::default();
        assert_eq!(
            r.unusable_as_base().as_deref(),
            Some("the guest did not finish (0 of the runs reported)")
        );
        parse("cselftest: uffd-unit-tests exit=1\ncselftest: done\n", &mut r);
        assert_eq!(r.unusable_as_base().as_deref(), Some("no run passed"));
        parse("cselftest: uffd-stress anon exit=0\n", &mut r);
        assert_eq!(r.unusable_as_base(), None);
        r.splats.push("WARNING: CPU: 0 PID: 1 at mm/userfaultfd.c:1 x".into());
        assert!(r.unusable_as_base().unwrap().starts_with("the kernel reported WARNING"));
    }

    #[test]
    fn only_programs_fine_on_base_or_a_splat_kill() {
        let stable = vec!["uffd-unit-tests".to_string()];
        let mut r = CRun {
            exits: [("uffd-unit-tests".into(), 4), ("uffd-stress anon".into(), 1)].into(),
            finished: true,
            ..CRun::default()
        };
        assert_eq!(r.verdict(&stable), (false, String::new()));
        r.exits.insert("uffd-unit-tests".into(), 1);
        assert_eq!(r.verdict(&stable), (true, "uffd-unit-tests: exit 1".into()));
        r.exits.remove("uffd-unit-tests");
        r.finished = false;
        assert_eq!(r.verdict(&stable), (true, "uffd-unit-tests: not run".into()));
        let hung = CRun {
            splats: vec!["BUG: soft lockup".into()],
            ..CRun::default()
        };
        assert_eq!(hung.verdict(&[]), (true, "kernel: BUG: soft lockup".into()));
    }

    #[test]
    fn the_init_runs_each_program_with_a_deadline_and_reports_on_ttys1() {
        let s = init_script(&[("uffd-stress anon".into(), "/c/uffd-stress anon 16 8".into())]);
        assert!(s.contains("timeout 300 /c/uffd-stress anon 16 8 > /tmp/out"), "{s}");
        assert!(
            s.contains("echo \"cselftest: uffd-stress anon exit=$rc\" > /dev/ttyS1"),
            "{s}"
        );
        assert!(s.ends_with("poweroff -f\n"));
    }

    /// The init's run loop under the host's `sh`, its device files and power-off swapped for files and `exit`:
    /// three runs exiting 0, 3 and 0, with `cmdline` as /proc/cmdline; what reached "ttyS1".
    fn init_loop(stop_on: &[String]) -> (String, Option<String>) {
        let runs: Vec<(String, String)> = [("a", 0), ("b", 3), ("c", 0)]
            .iter()
            .map(|(n, rc)| (n.to_string(), format!("sh -c 'exit {rc}'")))
            .collect();
        let dir = std::env::temp_dir().join(format!("uffdtest-cinit-{}-{}", std::process::id(), stop_on.len()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cmdline, tty) = (dir.join("cmdline"), dir.join("ttyS1"));
        let param = stop_param(&runs, stop_on);
        std::fs::write(
            &cmdline,
            format!("console=ttyS0 {} panic=-1\n", param.clone().unwrap_or_default()),
        )
        .unwrap();
        let script = init_script(&runs);
        let body = &script[script.find("stop=").unwrap()..]
            .replace("/proc/cmdline", &cmdline.display().to_string())
            .replace("> /dev/ttyS1", &format!(">> {}", tty.display()))
            .replace("/dev/kmsg", "/dev/null")
            .replace("/tmp/out", &dir.join("out").display().to_string())
            .replace("poweroff -f", "exit 0")
            .replace("sync\n", "");
        let st = Command::new("sh").arg("-c").arg(body).status().unwrap();
        assert!(st.success());
        let out = std::fs::read_to_string(&tty).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        (out, param)
    }

    #[test]
    fn the_init_stops_after_the_first_failing_run_it_was_told_to_stop_on() {
        let mut r = CRun::default();
        let (out, param) = init_loop(&["b".into(), "c".into()]);
        assert_eq!(param.as_deref(), Some("cselftest.stop=1,2"));
        parse(&out, &mut r);
        assert_eq!(r.exits, [("a".into(), 0), ("b".into(), 3)].into());
        assert!(r.finished);
        // c was not run because b failed: only b is news.
        assert_eq!(
            r.verdict(&["a".into(), "b".into(), "c".into()]),
            (true, "b: exit 3".into())
        );
        // Told nothing (the base run), every run runs.
        let mut all = CRun::default();
        let (out, param) = init_loop(&[]);
        assert_eq!(param, None);
        parse(&out, &mut all);
        assert_eq!(all.exits, [("a".into(), 0), ("b".into(), 3), ("c".into(), 0)].into());
        assert!(all.finished);
    }
}
