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
/// The runs, as run_vmtests.sh makes them but smaller: (name, program, arguments).
const RUNS: &[(&str, &str, &str)] = &[
    ("uffd-unit-tests", "uffd-unit-tests", ""),
    ("uffd-wp-mremap", "uffd-wp-mremap", ""),
    ("uffd-stress anon", "uffd-stress", "anon 16 8"),
    ("uffd-stress shmem", "uffd-stress", "shmem 16 8"),
    ("uffd-stress shmem-private", "uffd-stress", "shmem-private 16 8"),
    ("uffd-stress hugetlb", "uffd-stress", "hugetlb 32 8"),
    ("uffd-stress hugetlb-private", "uffd-stress", "hugetlb-private 32 8"),
];
/// Where the guest reports, on its second serial port: `cselftest: <name> exit=<status>`.
const MARK: &str = "cselftest: ";

/// The built programs and how to boot them.
#[derive(Debug, Clone)]
pub struct CSuite {
    pub initrd: PathBuf,
    pub runs: Vec<(String, String)>,
    pub accel: Accel,
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

    /// Whether this run noticed a mutant, given the programs that were fine on base; and what it saw.
    pub fn verdict(&self, stable: &[String]) -> (bool, String) {
        let mut seen: Vec<String> = stable
            .iter()
            .filter_map(|n| match self.exits.get(n) {
                Some(0) | Some(4) => None,
                Some(c) => Some(format!("{n}: exit {c}")),
                None => Some(format!("{n}: not run")),
            })
            .collect();
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

/// Build the programs from `tree` (headers from `make headers` in `work/hdr`) and pack their guest.
pub fn build(tree: &Path, work: &Path, accel: AccelChoice, memory_mib: u32, cpus: u32) -> Result<CSuite, CSuiteError> {
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
    for (name, prog, args) in RUNS {
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
    let accel = match accel {
        AccelChoice::Kvm => Accel::Kvm,
        AccelChoice::Tcg => Accel::Tcg,
        AccelChoice::Auto if boot::kvm_usable() => Accel::Kvm,
        AccelChoice::Auto => Accel::Tcg,
    };
    Ok(CSuite {
        initrd,
        runs,
        accel,
        memory_mib,
        cpus,
        timeout: Duration::from_secs(1200),
    })
}

/// The guest's `/init`: the mounts the programs need, huge pages, each run with a deadline, then power off.
fn init_script(runs: &[(String, String)]) -> String {
    let mut s = String::from(
        "#!/bin/busybox sh\n/bin/busybox --install -s /bin\nexport PATH=/bin\n\
         mount -t proc proc /proc\nmount -t sysfs sysfs /sys\nmount -t devtmpfs devtmpfs /dev\n\
         mount -t tmpfs tmpfs /tmp\nmkdir -p /dev/shm /dev/hugepages\nmount -t tmpfs tmpfs /dev/shm\n\
         mount -t hugetlbfs hugetlbfs /dev/hugepages\necho 128 > /proc/sys/vm/nr_hugepages\n",
    );
    for (name, cmd) in runs {
        s.push_str(&format!(
            "echo 'uffdtest: start c: {name}' > /dev/kmsg\ntimeout 300 {cmd} > /tmp/out 2>&1\nrc=$?\n\
             tail -n 20 /tmp/out > /dev/ttyS1\necho \"{MARK}{name} exit=$rc\" > /dev/ttyS1\n"
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

impl CSuite {
    /// Boot `image` with the programs; logs go to `logs`.
    pub fn run(&self, image: &Path, logs: &Path) -> Result<CRun, CSuiteError> {
        std::fs::create_dir_all(logs).map_err(io(at("create", logs)))?;
        let (report, console_log) = (logs.join("c-report.txt"), logs.join("c-console.log"));
        let b = Boot {
            kernel: image.to_path_buf(),
            initrd: self.initrd.clone(),
            accel: self.accel,
            memory_mib: self.memory_mib,
            cpus: self.cpus,
            ktap_file: report.clone(),
            extra_cmdline: vec![],
        };
        let qemu = boot::find_qemu().map_err(CSuiteError::Qemu)?;
        let out = std::fs::File::create(&console_log).map_err(io(at("create", &console_log)))?;
        let start = Instant::now();
        let mut child = Command::new(qemu)
            .args(boot::qemu_args(&b))
            .stdin(Stdio::null())
            .stdout(out.try_clone().map(Stdio::from).unwrap_or(Stdio::null()))
            .stderr(Stdio::from(out))
            .spawn()
            .map_err(io("start QEMU"))?;
        while child.try_wait().map_err(CSuiteError::Wait)?.is_none() {
            if start.elapsed() > self.timeout {
                let _ = child.kill();
                let _ = child.wait();
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
        Ok(run)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
