//! The runner, run on purpose-built misbehaving cases.
//!
//! `mod fixture` holds the cases: each is `#[ignore]`d and does nothing
//! unless `UFFDTEST_FIXTURES=1`, so `cargo test` never hangs or crashes on
//! them. The tests below point a manifest at this very binary and run the
//! real `uffdtest` executable on the fixtures, then check what it reported.
//! `harness_*` targets are left out of the suite's manifest (see
//! `runner::discover`), so the fake kernel warning never lands in a suite run.

use serial_test::serial;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use uffdtest::runner::{Binary, Manifest, Report, Status, TestResult, parse_ktap};

mod fixture {
    use rstest::rstest;
    use std::io::Write;

    /// Runs the fixture body only when the runner's tests asked for it;
    /// `armed!("VAR")` also needs the variable the test sets, and is its value.
    macro_rules! armed {
        () => {
            if std::env::var_os("UFFDTEST_FIXTURES").is_none() {
                println!("SKIP: fixture: runs only under tests/harness_runner.rs");
                return;
            }
        };
        ($var:literal) => {{
            armed!();
            let Some(value) = std::env::var_os($var) else {
                println!("SKIP: {} not set", $var);
                return;
            };
            value
        }};
    }

    fn mark(what: &str) {
        if let Some(p) = std::env::var_os("UFFDTEST_FIXTURE_MARK") {
            std::fs::write(p, what).expect("write the marker file");
        }
    }

    #[test]
    #[ignore]
    fn passes() {
        armed!();
        assert_eq!(2 + 2, 4);
    }

    /// The runner's Ctrl-C handling must not reach into the cases: a
    /// blocked SIGTERM would turn every timeout into the SIGKILL after it.
    #[test]
    #[ignore]
    fn starts_with_an_empty_blocked_mask() {
        armed!();
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        let blocked = status.lines().find_map(|l| l.strip_prefix("SigBlk:")).unwrap().trim();
        assert_eq!(u64::from_str_radix(blocked, 16).unwrap(), 0, "SigBlk {blocked}");
    }

    /// Leaves a file in the run's directory and says where it was.
    #[test]
    #[ignore]
    fn writes_into_the_run_dir() {
        let to = armed!("UFFDTEST_FIXTURE_RUN_DIR_MARK");
        let dir = std::env::var("UFFDTEST_RUN_DIR").expect("the runner names the run's directory");
        std::fs::write(std::path::Path::new(&dir).join("fixture"), "x").expect("the run dir exists");
        std::fs::write(to, dir).expect("write the marker file");
    }

    #[test]
    #[ignore]
    fn fails_with_assertion() {
        armed!();
        assert_eq!(1, 2, "fixture failure message");
    }

    /// Hangs with a forked child, as a case stuck in a fault would: the
    /// runner must kill the whole group.
    #[test]
    #[ignore]
    fn hangs() {
        armed!();
        let mut child = std::process::Command::new("sleep")
            .arg("1000")
            .spawn()
            .expect("spawn sleep");
        mark(&child.id().to_string());
        // Blocks until the runner kills the group.
        let _ = child.wait();
        loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }

    #[test]
    #[ignore]
    fn dies_of_sigsegv() {
        armed!();
        // SAFETY: none: this write faults on purpose, to die of SIGSEGV.
        unsafe { std::ptr::null_mut::<u8>().write_volatile(1) };
    }

    /// Touches a shared mapping past the end of its (empty) file.
    #[test]
    #[ignore]
    fn dies_of_sigbus() {
        armed!();
        // SAFETY: plain libc calls; the access faults on purpose, to die of SIGBUS.
        unsafe {
            let fd = libc::memfd_create(c"fixture".as_ptr(), 0);
            assert!(fd >= 0);
            let p = libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            (p as *mut u8).write_volatile(1);
        }
    }

    /// Writes a line shaped like a kernel WARN into the kernel log (root only).
    /// Serial by name, so it fails no case running beside it.
    #[test]
    #[ignore]
    fn serial_writes_warning_to_kmsg() {
        armed!();
        let Ok(mut f) = std::fs::OpenOptions::new().write(true).open("/dev/kmsg") else {
            println!("SKIP: needs root to write /dev/kmsg");
            return;
        };
        f.write_all(b"<4>WARNING: CPU: 0 PID: 0 at uffdtest-harness-fixture (injected by tests/harness_runner.rs, not a kernel bug)\n")
            .expect("write /dev/kmsg");
    }

    /// With `pin_waits_for_the_warning`, two cases whose lives overlap
    /// around one warning: this one logs it (every run), the other only
    /// waits through it.
    #[test]
    #[ignore]
    fn pin_logs_the_warning() {
        let dir = std::path::PathBuf::from(armed!("UFFDTEST_FIXTURE_PIN"));
        wait_for(&dir.join("started"));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/kmsg")
            .expect("open /dev/kmsg");
        f.write_all(b"<4>WARNING: CPU: 0 PID: 0 at uffdtest-harness-fixture-pin (injected by tests/harness_runner.rs, not a kernel bug)\n")
            .expect("write /dev/kmsg");
        std::fs::write(dir.join("warned"), "").unwrap();
    }

    #[test]
    #[ignore]
    fn pin_waits_for_the_warning() {
        let dir = std::path::PathBuf::from(armed!("UFFDTEST_FIXTURE_PIN"));
        std::fs::write(dir.join("started"), "").unwrap();
        wait_for(&dir.join("warned"));
    }

    fn wait_for(file: &std::path::Path) {
        let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !file.exists() {
            assert!(std::time::Instant::now() < end, "{} never came", file.display());
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Passes, then fails, then passes...: counts its runs in the file
    /// named by UFFDTEST_FIXTURE_COUNTER, as a flaky case would behave.
    #[test]
    #[ignore]
    fn fails_every_other_run() {
        let p = armed!("UFFDTEST_FIXTURE_COUNTER");
        let runs: u32 = std::fs::read_to_string(&p)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        std::fs::write(&p, (runs + 1).to_string()).expect("write the counter");
        assert!(runs.is_multiple_of(2), "fixture: run {} fails", runs + 1);
    }

    #[test]
    #[ignore]
    fn skips() {
        armed!();
        println!("SKIP: fixture skip reason");
    }

    /// Exits 0 before libtest can report: silence must not read as a pass.
    #[test]
    #[ignore]
    fn exits_zero_early() {
        armed!();
        std::process::exit(0);
    }

    #[rstest]
    #[case::anon("anon")]
    #[case::shmem_private("shmem-private")]
    #[ignore]
    fn on_mem(#[case] mem: &str) {
        armed!();
        assert!(!mem.is_empty());
    }

    /// Changes the sysctl named in UFFDTEST_FIXTURE_SYSCTL and does not put it back.
    #[test]
    #[ignore]
    fn serial_leaves_sysctl_changed() {
        let name = armed!("UFFDTEST_FIXTURE_SYSCTL");
        let path = std::path::Path::new("/proc/sys").join(name.to_str().unwrap().replace('.', "/"));
        let v: u64 = std::fs::read_to_string(&path).unwrap().trim().parse().unwrap();
        std::fs::write(&path, (v + 1).to_string()).expect("set the sysctl (root)");
    }
}

fn uffdtest() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_uffdtest"));
    c.env("UFFDTEST_FIXTURES", "1").stdin(Stdio::null());
    c
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("uffdtest-harness-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A manifest listing this test binary as the only one.
fn manifest(dir: &Path) -> PathBuf {
    let m = Manifest {
        binaries: vec![Binary {
            name: "harness_runner".into(),
            path: std::env::current_exe().unwrap(),
            serial: vec![],
            keys: Default::default(),
            listing: None,
        }],
    };
    let p = dir.join("manifest.json");
    m.write(&p).unwrap();
    p
}

/// `uffdtest run --run-ignored` on the fixtures, through a manifest in `dir`.
fn run_fixtures(dir: &Path) -> Command {
    let mut c = uffdtest();
    c.arg("run").arg("--manifest").arg(manifest(dir)).arg("--run-ignored");
    c
}

/// `uffdtest list --run-ignored` through `manifest`: each listed case as (binary, name).
fn listed(manifest: &Path, args: &[&str]) -> Vec<(String, String)> {
    let out = uffdtest()
        .arg("list")
        .arg("--manifest")
        .arg(manifest)
        .arg("--run-ignored")
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines: Vec<&str> = text.lines().skip(1).collect();
    lines.pop(); // the count
    lines
        .iter()
        .map(|l| {
            let mut w = l.split_whitespace();
            let binary = w.next().unwrap_or_default().to_string();
            (binary, w.skip(2).collect::<Vec<_>>().join(" "))
        })
        .collect()
}

/// Runs a test that needs root `to` do something in a fresh scratch
/// directory, removed once the test returned; without root the test skips,
/// saying why.
fn as_root_in_scratch(name: &str, to: &str, test: impl FnOnce(&Path)) {
    if !root() {
        println!("SKIP: needs root to {to}");
        return;
    }
    let dir = scratch(name);
    test(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Runs `c` with `--json` into `dir` and returns its output and the report it wrote.
fn with_json_report(mut c: Command, dir: &Path) -> (std::process::Output, Report) {
    let json = dir.join("report.json");
    let out = c.arg("--json").arg(&json).output().unwrap();
    let r = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    (out, r)
}

fn root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn case<'a>(r: &'a Report, test: &str) -> &'a TestResult {
    let hits: Vec<_> = r
        .leaves()
        .into_iter()
        .filter(|(_, t)| t.test.as_deref() == Some(test))
        .collect();
    assert_eq!(hits.len(), 1, "{test} reported {} times", hits.len());
    hits[0].1
}

fn read_sysctl(name: &str) -> String {
    std::fs::read_to_string(Path::new("/proc/sys").join(name.replace('.', "/")))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
#[serial(harness_runner)]
fn repeat_reports_every_pass_and_names_the_flaky_case() {
    let dir = scratch("repeat");
    let mut c = run_fixtures(&dir);
    c.env("UFFDTEST_FIXTURE_COUNTER", dir.join("counter"))
        // One at a time: the passes of one case would otherwise run side by side and race on the counter.
        .args(["--hugepages", "0", "--repeat", "3", "-j", "1"])
        .args(["-f", "fixture::passes", "-f", "fixture::fails_every_other_run"]);
    let (out, r) = with_json_report(c, &dir);
    let ktap = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "the failing pass fails the run\n{ktap}");
    assert!(ktap.contains("\n1..3\n"), "one top-level block per pass\n{ktap}");
    let runs = |test: &str| -> Vec<Status> {
        r.leaves()
            .into_iter()
            .filter(|(_, t)| t.test.as_deref() == Some(test))
            .map(|(_, t)| t.status)
            .collect()
    };
    assert_eq!(runs("fixture::passes"), [Status::Pass; 3]);
    assert_eq!(
        runs("fixture::fails_every_other_run"),
        [Status::Pass, Status::Fail, Status::Pass]
    );
    assert!(stderr.contains("1 flaky case(s) over 3 passes"), "{stderr}");
    assert!(
        stderr.contains("harness_runner/fixture::fails_every_other_run: pass, fail, pass"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `flakes` runs its passes one after another even at `-j 4` (with `--repeat`
/// the passes of one case would run side by side and race on the counter),
/// names the case that changed, and streams one KTAP document with a block
/// per binary per pass, as `run --repeat` writes it.
#[test]
#[serial(harness_runner)]
fn flakes_keeps_passes_apart_and_names_the_case_that_changed() {
    let dir = scratch("flakes");
    let ktap = dir.join("hunt.ktap");
    let mut c = uffdtest();
    c.arg("flakes")
        .arg("--manifest")
        .arg(manifest(&dir))
        .arg("--run-ignored")
        .env("UFFDTEST_FIXTURE_COUNTER", dir.join("counter"))
        .args(["--no-load", "--hugepages", "0", "--passes", "3", "-j", "4"])
        .args(["-f", "fixture::passes", "-f", "fixture::fails_every_other_run"])
        .arg("-o")
        .arg(&ktap);
    let (out, r) = with_json_report(c, &dir);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "a case changed outcome\n{stdout}");
    assert!(
        stdout.contains("1 case(s) changed outcome over 3 pass(es):"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  harness_runner/fixture::fails_every_other_run: pass, fail, pass"),
        "{stdout}"
    );
    let text = std::fs::read_to_string(&ktap).unwrap();
    assert!(text.contains("\n1..3\n"), "one top-level block per pass\n{text}");
    let back = parse_ktap(&text).unwrap();
    assert!(back.parse_errors.is_empty(), "{:?}\n{text}", back.parse_errors);
    assert_eq!((back.totals().pass, back.totals().fail), (5, 1), "{text}");
    assert_eq!(back.totals(), r.totals(), "the KTAP file and the JSON agree");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
#[serial(harness_runner)]
fn max_fail_stops_starting_cases_and_reports_the_rest_not_run() {
    let dir = scratch("max-fail");
    let mut c = run_fixtures(&dir);
    // Plan order: fails_with_assertion, on_mem (2 cases), passes, skips.
    c.args(["--hugepages", "0", "-j", "1", "--max-fail", "1"]);
    for f in ["fails_with_assertion", "passes", "skips", "on_mem"] {
        c.arg("-f").arg(format!("fixture::{f}"));
    }
    let (out, r) = with_json_report(c, &dir);
    let ktap = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{ktap}");
    let leaves = r.leaves();
    assert_eq!(leaves.len(), 5, "every selected case is reported\n{ktap}");
    let failed: Vec<_> = leaves.iter().filter(|(_, t)| t.status == Status::Fail).collect();
    assert_eq!(failed.len(), 1, "{ktap}");
    assert_eq!(failed[0].1.test.as_deref(), Some("fixture::fails_with_assertion"));
    // -j 1 in plan order: the failure comes first, so nothing else ran.
    for (_, t) in leaves.iter().filter(|(_, t)| t.status != Status::Fail) {
        assert_eq!(
            (t.status, t.reason.as_deref()),
            (Status::Skip, Some("not run: --max-fail 1 reached")),
            "{}",
            t.name
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
#[serial(harness_runner)]
fn each_run_gets_a_directory_of_its_own_removed_at_its_end() {
    // The suite's probe cache looks for it under the runner's name for it.
    assert_eq!(uffdtest::runner::env::RUN_DIR_ENV, uffdtest::caps::RUN_DIR_ENV);
    let dir = scratch("run-dir");
    let mark = dir.join("mark");
    let out = run_fixtures(&dir)
        .env("UFFDTEST_FIXTURE_RUN_DIR_MARK", &mark)
        .args(["--hugepages", "0", "-f", "fixture::writes_into_the_run_dir"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    let run_dir = std::fs::read_to_string(&mark).unwrap();
    assert!(run_dir.contains("uffdtest-run-"), "{run_dir}");
    assert!(!Path::new(&run_dir).exists(), "{run_dir} is left behind");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn cases_start_with_no_signal_blocked_while_the_runner_catches_ctrl_c() {
    let dir = scratch("sigblk");
    let out = run_fixtures(&dir)
        .args(["--hugepages", "0", "-f", "fixture::starts_with_an_empty_blocked_mask"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
#[serial(harness_runner)]
fn a_splat_beside_another_case_is_pinned_by_re_running_both_alone() {
    as_root_in_scratch("pin", "write /dev/kmsg", |dir| {
        let mut c = run_fixtures(dir);
        c.env("UFFDTEST_FIXTURE_PIN", dir)
            .args(["--hugepages", "0", "--jobs", "2", "-f", "fixture::pin_"]);
        let (out, r) = with_json_report(c, dir);
        let ktap = String::from_utf8(out.stdout).unwrap();
        assert_eq!(out.status.code(), Some(1), "{ktap}");
        for (test, status, said) in [
            ("fixture::pin_logs_the_warning", Status::Fail, "it logged one again"),
            (
                "fixture::pin_waits_for_the_warning",
                Status::Pass,
                "another case logged it again",
            ),
        ] {
            let t = case(&r, test);
            assert_eq!(t.status, status, "{test}\n{ktap}");
            assert!(t.diagnostics[0].contains(said), "{test}: {:?}", t.diagnostics);
        }
    });
}

#[test]
#[serial(harness_runner)]
fn every_outcome_is_reported_once_with_its_cause() {
    let dir = scratch("outcomes");
    let mark = dir.join("hang-mark");
    let mut c = run_fixtures(&dir);
    c.env("UFFDTEST_FIXTURE_MARK", &mark)
        .args(["-f", "fixture::", "--skip", "sysctl", "--hugepages", "0"])
        .args(["--timeout", "3", "--jobs", "2"]);
    let (out, r) = with_json_report(c, &dir);
    let ktap = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "failures make exit 1\n{ktap}");

    let st = |t: &str| {
        let c = case(&r, t);
        (c.status, c.reason.clone().unwrap_or_default())
    };
    assert_eq!(st("fixture::passes"), (Status::Pass, String::new()));
    assert_eq!(st("fixture::fails_with_assertion"), (Status::Fail, "exit=101".into()));
    assert!(
        case(&r, "fixture::fails_with_assertion")
            .diagnostics
            .iter()
            .any(|d| d.contains("fixture failure message"))
    );
    assert_eq!(st("fixture::hangs"), (Status::Timeout, "3 seconds".into()));
    // Where the hung case waited is quoted before it was killed, its forked child included.
    let hang = &case(&r, "fixture::hangs").diagnostics;
    assert!(hang.iter().any(|d| d.contains("(sleep) S wchan ")), "{hang:?}");
    assert_eq!(
        st("fixture::dies_of_sigsegv"),
        (Status::Fail, "killed by signal SIGSEGV".into())
    );
    assert_eq!(case(&r, "fixture::dies_of_sigsegv").signal.as_deref(), Some("SIGSEGV"));
    assert_eq!(
        st("fixture::dies_of_sigbus"),
        (Status::Fail, "killed by signal SIGBUS".into())
    );
    assert_eq!(st("fixture::skips"), (Status::Skip, "fixture skip reason".into()));
    assert_eq!(st("fixture::exits_zero_early").0, Status::Error);
    assert_eq!(st("fixture::on_mem::case_1_anon").0, Status::Pass);
    assert_eq!(
        case(&r, "fixture::on_mem::case_2_shmem_private").name,
        "fixture::on_mem on shmem-private"
    );
    let warn = case(&r, "fixture::serial_writes_warning_to_kmsg");
    if root() {
        assert_eq!(warn.status, Status::Fail, "a WARN in the kernel log fails the case");
        assert!(
            warn.reason
                .as_deref()
                .unwrap()
                .starts_with("kernel log: WARNING: CPU: 0 PID: 0 at uffdtest-harness-fixture")
        );
        assert!(warn.kmsg.iter().any(|l| l.contains("uffdtest-harness-fixture")));
        assert!(ktap.contains("# kmsg: WARNING: CPU: 0 PID: 0 at uffdtest-harness-fixture"));
    } else {
        assert_eq!(warn.status, Status::Skip);
    }

    // The hanging case's forked child died with its group.
    let pid: i32 = std::fs::read_to_string(&mark).unwrap().parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
    {
        assert!(Instant::now() < deadline, "the hanging case's child {pid} survived");
        std::thread::sleep(Duration::from_millis(50));
    }

    // The KTAP on stdout names each case exactly once, and reads back the same.
    let results: Vec<&str> = ktap
        .lines()
        .filter(|l| l.trim_start().starts_with("ok ") || l.trim_start().starts_with("not ok "))
        .collect();
    for leaf in r.leaves() {
        let n = results
            .iter()
            .filter(|l| l.contains(&format!(" {}", leaf.1.name)))
            .filter(|l| {
                let rest = l.split_once(&leaf.1.name).unwrap().1;
                rest.is_empty() || rest.starts_with(" #")
            });
        assert_eq!(n.count(), 1, "{} in\n{ktap}", leaf.1.name);
    }
    assert!(
        ktap.contains("  not ok 3 fixture::hangs # TIMEOUT 3 seconds")
            || ktap.contains("fixture::hangs # TIMEOUT 3 seconds")
    );
    assert!(ktap.contains("fixture::dies_of_sigbus # killed by signal SIGBUS"));
    assert!(ktap.contains("fixture::skips # SKIP fixture skip reason"));
    let back = parse_ktap(&ktap).unwrap();
    assert!(back.parse_errors.is_empty(), "{:?}", back.parse_errors);
    assert_eq!(back.totals(), r.totals());
    let t = r.totals();
    assert!(ktap.contains(&format!("# {}\n", t.ktap_line())));
    assert_eq!(ktap.lines().last().unwrap(), t.summary_line());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
#[serial(harness_runner)]
fn ctrl_c_restores_sysctls_and_reports_the_rest_as_not_run() {
    as_root_in_scratch("ctrlc", "set sysctls", |dir| {
        let mark = dir.join("hang-mark");
        let stat0 = read_sysctl("vm.stat_interval");
        let huge0: u64 = read_sysctl("vm.nr_hugepages").parse().unwrap();
        let stat1 = (stat0.parse::<u64>().unwrap() + 1).to_string();
        let child = run_fixtures(dir)
            .env("UFFDTEST_FIXTURE_MARK", &mark)
            .args([
                "-f",
                "fixture::hangs",
                "-f",
                "fixture::passes",
                "--jobs",
                "1",
                "--timeout",
                "100",
            ])
            .args([
                "--sysctl",
                &format!("vm.stat_interval={stat1}"),
                "--hugepages",
                &(huge0 + 2).to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !mark.exists() {
            assert!(Instant::now() < deadline, "the hanging fixture never started");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(read_sysctl("vm.stat_interval"), stat1, "set for the run");
        assert_ne!(read_sysctl("vm.nr_hugepages"), huge0.to_string(), "raised for the run");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        let start = Instant::now();
        let out = child.wait_with_output().unwrap();
        assert!(start.elapsed() < Duration::from_secs(20), "stopped promptly");
        assert_eq!(out.status.code(), Some(130));
        assert_eq!(read_sysctl("vm.stat_interval"), stat0, "restored after Ctrl-C");
        assert_eq!(
            read_sysctl("vm.nr_hugepages"),
            huge0.to_string(),
            "restored after Ctrl-C"
        );
        let ktap = String::from_utf8(out.stdout).unwrap();
        assert!(ktap.contains("fixture::hangs # ERROR interrupted"), "{ktap}");
        assert!(ktap.contains("fixture::passes # ERROR not run: interrupted"), "{ktap}");
    });
}

#[test]
#[serial(harness_runner)]
fn sysctl_a_case_left_changed_is_restored_after_it() {
    as_root_in_scratch("sysctl", "set sysctls", |dir| {
        let stat0 = read_sysctl("vm.stat_interval");
        let mut c = run_fixtures(dir);
        let json = dir.join("report.json");
        let out = c
            .env("UFFDTEST_FIXTURE_SYSCTL", "vm.stat_interval")
            .args(["-f", "fixture::serial_leaves_sysctl_changed", "--hugepages", "0"])
            .args(["--sysctl", &format!("vm.stat_interval={stat0}"), "--json"])
            .arg(&json)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
        let r: Report = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        let c = case(&r, "fixture::serial_leaves_sysctl_changed");
        assert_eq!(c.status, Status::Pass);
        assert!(
            c.diagnostics
                .iter()
                .any(|d| d.contains("vm.stat_interval") && d.contains("restored")),
            "{c:?}"
        );
        assert_eq!(read_sysctl("vm.stat_interval"), stat0);
    });
}

#[test]
fn list_selects_by_memory_type_glob_and_shard() {
    let dir = scratch("list");
    let m = manifest(&dir);
    let list = |args: &[&str]| -> Vec<String> {
        listed(&m, args)
            .into_iter()
            .filter(|(binary, _)| binary == "harness_runner")
            .map(|(_, case)| case)
            .collect()
    };
    assert_eq!(list(&["--mem", "shmem-private"]), ["fixture::on_mem on shmem-private"]);
    assert_eq!(
        list(&["-f", "fixture::*_sig*"]),
        ["fixture::dies_of_sigbus", "fixture::dies_of_sigsegv"]
    );
    let all = list(&["-f", "fixture::"]);
    assert_eq!(all.len(), 16);
    let (a, b) = (
        list(&["-f", "fixture::", "--shard", "1/2"]),
        list(&["-f", "fixture::", "--shard", "2/2"]),
    );
    assert_eq!(a.len() + b.len(), all.len());
    assert!(a.iter().all(|x| !b.contains(x)));
    // Without --run-ignored the fixtures are not selected at all.
    let out = uffdtest()
        .arg("list")
        .arg("--manifest")
        .arg(manifest(&dir))
        .args(["-f", "fixture::"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 cases in 0 binaries"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn first_puts_the_named_binaries_at_the_head_of_the_plan() {
    let dir = scratch("first");
    let one = |name: &str| Binary {
        name: name.into(),
        path: std::env::current_exe().unwrap(),
        serial: vec![],
        keys: Default::default(),
        listing: None,
    };
    let m = dir.join("manifest.json");
    Manifest {
        binaries: vec![one("api"), one("copy"), one("move")],
    }
    .write(&m)
    .unwrap();
    let order = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["-f", "fixture::passes"];
        a.extend_from_slice(args);
        listed(&m, &a).into_iter().map(|(binary, _)| binary).collect()
    };
    assert_eq!(order(&[]), ["api", "copy", "move"]);
    assert_eq!(order(&["--first", "move"]), ["move", "api", "copy"]);
    assert_eq!(order(&["--first", "move,copy"]), ["copy", "move", "api"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn exit_code_is_4_when_everything_skipped_and_2_when_nothing_selected() {
    let dir = scratch("exit");
    let run = |filter: &str| {
        run_fixtures(&dir)
            .args(["--hugepages", "0", "-f", filter])
            .output()
            .unwrap()
    };
    let out = run("fixture::skips");
    let ktap = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(4), "{ktap}");
    assert!(
        ktap.contains("\nok 1 harness_runner # SKIP all cases skipped\n"),
        "{ktap}"
    );
    assert!(ktap.ends_with("0 passed, 0 failed, 1 skipped\n"), "{ktap}");
    let out = run("no_such_case");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no case matched"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
// Beside another test's injected warning its cases would fail.
#[serial(harness_runner)]
fn announce_kmsg_names_each_case_in_the_kernel_log() {
    as_root_in_scratch("announce", "write /dev/kmsg", |dir| {
        let watch = uffdtest::runner::kmsg::KmsgWatch::open();
        let out = run_fixtures(dir)
            .args(["--hugepages", "0", "--announce-kmsg", "-f", "fixture::on_mem"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        let log = watch.unwrap().read_new();
        for name in ["fixture::on_mem on anon", "fixture::on_mem on shmem-private"] {
            let line = format!("uffdtest: start harness_runner: {name}");
            assert_eq!(log.iter().filter(|l| **l == line).count(), 1, "{line} in {log:?}");
        }
    });
}

#[test]
#[serial(harness_runner)]
fn declared_failure_is_xfail_strict_fails_and_declared_pass_is_xpass() {
    let dir = scratch("known");
    let known = dir.join("known-issues.toml");
    std::fs::write(
        &known,
        r#"
[[issue]]
cases = ["harness_runner/fixture::fails_with_assertion", "harness_runner/fixture::passes"]
fix = "0123456789ab"
subject = "fix the fixture"
reason = "the fixture fails on purpose"
"#,
    )
    .unwrap();
    let run = |filter: &str, extra: &[&str]| {
        let json = dir.join("r.json");
        let out = run_fixtures(&dir)
            .args(["--hugepages", "0", "--no-kmsg", "-f", filter, "--json"])
            .arg(&json)
            .arg("--known-issues")
            .arg(&known)
            .args(extra)
            .output()
            .unwrap();
        let r: Report = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        (out, r)
    };
    // Declared failure: XFAIL with the fix named, exit 0.
    let (out, r) = run("fixture::fails_with_assertion", &[]);
    let ktap = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{ktap}");
    assert!(
        ktap.contains(
            "ok 1 fixture::fails_with_assertion # XFAIL the fixture fails on purpose; fixed by 0123456789ab (\"fix the fixture\")"
        ),
        "{ktap}"
    );
    assert!(
        ktap.contains("# Totals: pass:0 fail:0 xfail:1 xpass:0 skip:0 error:0"),
        "{ktap}"
    );
    assert_eq!(case(&r, "fixture::fails_with_assertion").status, Status::Xfail);
    // --strict ignores the file: the failure fails.
    let (out, r) = run("fixture::fails_with_assertion", &["--strict"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(case(&r, "fixture::fails_with_assertion").status, Status::Fail);
    // A declared case that passes is XPASS, reported and failing the run.
    let (out, r) = run("fixture::passes", &[]);
    let ktap = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{ktap}");
    assert!(
        ktap.contains("not ok 1 fixture::passes # XPASS declared known issue did not reproduce"),
        "{ktap}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("XPASS harness_runner: fixture::passes"));
    assert_eq!(case(&r, "fixture::passes").status, Status::Xpass);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `uffdtest load -- COMMAND` runs the command with khugepaged unleashed,
/// passes on its verdict (exit 3 → 1, exit 0 → 0, cannot start → 2), and
/// puts khugepaged's knob back after each.
#[test]
#[serial(harness_runner)]
fn load_runs_the_command_under_load_and_passes_on_its_verdict() {
    let knob = "/sys/kernel/mm/transparent_hugepage/khugepaged/scan_sleep_millisecs";
    let before = std::fs::read_to_string(knob).ok();
    let load = |cmd: &[&str]| {
        let out = uffdtest()
            .args(["load", "--memory", "64", "--"])
            .args(cmd)
            .output()
            .expect("run uffdtest load");
        assert_eq!(std::fs::read_to_string(knob).ok(), before, "khugepaged's knob put back");
        out
    };
    let out = load(&["sh", "-c", &format!("cat {knob} 2>/dev/null; exit 3")]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    if nix::unistd::geteuid().is_root() && before.is_some() {
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "0",
            "khugepaged without sleep"
        );
    }
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("uffdtest load: on: ") && err.contains("sh exit status: 3"),
        "{err}"
    );
    assert_eq!(load(&["true"]).status.code(), Some(0));
    assert_eq!(load(&["/nonexistent/command"]).status.code(), Some(2));
}

/// The threads of process `pid`, by name.
fn thread_names(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .map(|c| c.trim().to_string())
        .collect()
}

/// `uffdtest load`'s load is a process of its own beside the command (its
/// memory and mmap_lock never the runner's), gone when `load` ends.
#[test]
#[serial(harness_runner)]
fn the_load_runs_in_a_process_of_its_own_and_ends_with_its_parent() {
    let mut parent = uffdtest()
        .args(["load", "--memory", "16", "--", "sleep", "30"])
        .stderr(Stdio::null())
        .spawn()
        .expect("run uffdtest load");
    let children = |pid: u32| -> Vec<u32> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        text.split_whitespace().filter_map(|p| p.parse().ok()).collect()
    };
    let is_load = |pid: &u32| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.ends_with(b"load-child\0"));
    let end = Instant::now() + Duration::from_secs(60);
    let load = loop {
        // The command starts only once the load is warm.
        if let Some(l) = children(parent.id()).into_iter().find(is_load)
            && children(parent.id()).len() == 2
        {
            break l;
        }
        assert!(Instant::now() < end, "no load-child beside the command within 60 s");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        thread_names(load).iter().any(|t| t == "load-cpu0"),
        "{:?}",
        thread_names(load)
    );
    assert!(
        !thread_names(parent.id()).iter().any(|t| t.starts_with("load-")),
        "the load's threads live in uffdtest load itself: {:?}",
        thread_names(parent.id())
    );
    // SIGTERM: `load` stops the command, then the load, and puts the knobs back.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(parent.id() as i32),
        nix::sys::signal::SIGTERM,
    )
    .unwrap();
    parent.wait().unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    while std::path::Path::new(&format!("/proc/{load}/cmdline")).exists()
        && std::fs::read(format!("/proc/{load}/cmdline")).is_ok_and(|c| !c.is_empty())
    {
        assert!(Instant::now() < end, "the load outlived its parent by 30 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}
