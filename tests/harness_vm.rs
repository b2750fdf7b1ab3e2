//! The VM harness end to end: `uffdtest vm` and `uffdtest kconfig` as a
//! developer runs them, and a `bisect` step's VM run. Bad input needs nothing but the binary; the boots
//! need QEMU and a kernel in `UFFDTEST_KERNEL` (CI downloads Debian's 6.12
//! cloud kernel) and SKIP without them.
//!
//! Named `harness_*` so the runner leaves it out of the suite. The boots run
//! one at a time: four TCG guests at once would starve each other.

use serial_test::serial;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn uffdtest() -> Command {
    Command::new(env!("CARGO_BIN_EXE_uffdtest"))
}

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The run exited `code`; its stdout and stderr, for the checks that follow.
#[track_caller]
fn exited(o: &Output, code: i32) -> (String, String) {
    let (out, err) = text(o);
    assert_eq!(o.status.code(), Some(code), "{out}\n{err}");
    (out, err)
}

/// The kernel to boot, or the SKIP reason.
fn kernel() -> Result<PathBuf, String> {
    kernel_from("UFFDTEST_KERNEL")
}

/// The bzImage named by `var`, if it is set and QEMU is installed.
fn kernel_from(var: &str) -> Result<PathBuf, String> {
    let k = std::env::var_os(var).ok_or(format!("{var} is not set (a bzImage to boot)"))?;
    let has_qemu = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .any(|d| d.join("qemu-system-x86_64").is_file());
    if !has_qemu {
        return Err("qemu-system-x86_64 is not installed".into());
    }
    Ok(PathBuf::from(k))
}

macro_rules! kernel_or_skip {
    () => {
        match kernel() {
            Ok(k) => k,
            Err(why) => {
                println!("SKIP: {why}");
                return;
            }
        }
    };
}

/// `uffdtest vm` on `kernel` with the `api` cases only, under TCG.
fn vm(kernel: &Path, extra: &[&str]) -> Output {
    uffdtest()
        .args(["vm", "--accel", "tcg", "--ioctl", "api", "--kernel"])
        .arg(kernel)
        .args(extra)
        .output()
        .expect("run uffdtest vm")
}

/// `uffdtest vm --kernel KERNEL` with `path` as PATH: it must refuse to
/// run (exit 2); returns its stderr.
fn vm_refused(kernel: &Path, path: Option<&Path>) -> String {
    let mut cmd = uffdtest();
    cmd.args(["vm", "--kernel"]).arg(kernel);
    if let Some(p) = path {
        cmd.env("PATH", p);
    }
    let o = cmd.output().unwrap();
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    err
}

#[test]
fn missing_kernel_is_named_and_exits_2() {
    let err = vm_refused(Path::new("/nonexistent/bzImage"), None);
    assert!(err.contains("cannot open kernel /nonexistent/bzImage"), "{err}");
}

#[test]
fn file_that_is_not_a_kernel_is_refused_before_boot() {
    let err = vm_refused(&data("console-oops-then-panic.log"), None);
    assert!(err.contains("is not a bootable x86 kernel"), "{err}");
}

#[test]
fn missing_qemu_names_the_package() {
    let dir = std::env::temp_dir().join(format!("uffdtest-harness-vm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut fake = vec![0u8; 0x400];
    fake[0x202..0x206].copy_from_slice(b"HdrS");
    let k = dir.join("bzImage");
    std::fs::write(&k, fake).unwrap();
    let err = vm_refused(&k, Some(&dir));
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(err.contains("apt-get install qemu-system-x86"), "{err}");
}

/// `uffdtest kconfig --check` on a config in tests/data exits `code` and
/// prints each of `lines`.
#[track_caller]
fn assert_kconfig_check(config: &str, code: i32, lines: &[&str]) {
    let o = uffdtest()
        .args(["kconfig", "--check"])
        .arg(data(config))
        .output()
        .unwrap();
    let out = text(&o).0;
    assert_eq!(o.status.code(), Some(code), "{out}");
    for line in lines {
        assert!(out.contains(line), "{out}");
    }
}

#[test]
fn kconfig_check_fails_defconfig_on_required_options() {
    assert_kconfig_check(
        "kconfig-x86_64-defconfig-6.12.config",
        1,
        &[
            "required    CONFIG_USERFAULTFD=y (is not set)",
            "missing 5 required, 8 recommended",
        ],
    );
}

#[test]
fn kconfig_check_passes_debian_kernel_listing_debug_options() {
    assert_kconfig_check(
        "kconfig-debian-6.12-cloud-amd64.config",
        0,
        &[
            "recommended CONFIG_KASAN=y (is not set)",
            "missing 0 required, 5 recommended",
        ],
    );
}

#[test]
#[serial(vm)]
fn clean_guest_run_prints_ktap_and_exits_by_the_results() {
    let k = kernel_or_skip!();
    let json = std::env::temp_dir().join(format!("uffdtest-harness-vm-clean-{}.json", std::process::id()));
    let o = vm(&k, &["--json", json.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert!(out.starts_with("KTAP version 1\n1..1\n"), "{out}\n{err}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    std::fs::remove_file(&json).unwrap();
    let statuses: Vec<&str> = report["tests"][0]["subtests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["status"].as_str().unwrap())
        .collect();
    assert!(!statuses.is_empty());
    assert!(!statuses.contains(&"crashed"), "every case ran: {statuses:?}");
    // Two at a time by default: each case's time came from the guest's KTAP, not from the console
    // (a SKIP reported without a process of its own has none).
    let untimed: Vec<&serde_json::Value> = report["tests"][0]["subtests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["status"] != "skip" && !t["duration_secs"].is_number())
        .collect();
    assert!(untimed.is_empty(), "cases without a time: {untimed:?}");
    assert!(!out.contains("# time: "), "times stay out of the live relay: {out}");
    let failed = statuses.iter().any(|s| *s == "fail" || *s == "timeout");
    assert_eq!(o.status.code(), Some(if failed { 1 } else { 0 }), "{out}\n{err}");
}

/// `vm --cost`: the guest's init measures its own run (start-up of each
/// binary, probes, the runner's and the cases' CPU) and the host prints it
/// after the verdict.
#[test]
#[serial(vm)]
fn the_guest_measures_where_its_run_went_and_the_host_prints_it() {
    let k = kernel_or_skip!();
    let o = vm(&k, &["--cost"]);
    let (out, err) = text(&o);
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("# cost: "))
        .unwrap_or_else(|| panic!("no cost line: {out}\n{err}"));
    let cost: serde_json::Value = serde_json::from_str(line).unwrap();
    let (cases, processes) = (cost["cases"].as_u64().unwrap(), cost["processes"].as_u64().unwrap());
    assert!(processes > 0 && processes <= cases, "{line}");
    for key in ["cases_cpu_s", "runner_cpu_s", "start_cpu_ms", "start_wall_ms"] {
        assert!(cost[key].as_f64().unwrap() > 0.0, "{key}: {line}");
    }
    assert!(!cost["probes_ms"].as_array().unwrap().is_empty(), "{line}");
    let table = out
        .split_once("# where the guest's run went (vm --cost):\n")
        .map(|(_, t)| t)
        .unwrap_or_else(|| panic!("no table: {out}"));
    assert!(table.contains(&format!("#   {cases} cases, -j 2:")), "{table}");
    assert!(table.contains("process start (exec, libtest)"), "{table}");
}

#[test]
#[serial(vm)]
fn panic_mid_case_fails_that_case_and_the_rest_are_not_run() {
    let k = kernel_or_skip!();
    let json = std::env::temp_dir().join(format!("uffdtest-harness-vm-panic-{}.json", std::process::id()));
    // One case at a time: the injection is timed from the second case's start.
    let o = vm(&k, &["-j", "1", "--inject", "panic", "--json", json.to_str().unwrap()]);
    let (out, _) = exited(&o, 1);
    assert!(out.contains("# kernel panic during api: "), "{out}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    std::fs::remove_file(&json).unwrap();
    let cases = report["tests"][0]["subtests"].as_array().unwrap();
    // The init crashes the kernel 200 ms after the second case starts: the
    // case running then is crashed with the panic, the ones before it ran.
    let hit = cases
        .iter()
        .position(|c| c["status"] == "crashed")
        .expect("a crashed case");
    assert!(hit >= 1, "{cases:?}");
    assert!(
        cases[..hit]
            .iter()
            .all(|c| c["status"] == "pass" || c["status"] == "skip"),
        "{cases:?}"
    );
    let crashed = &cases[hit];
    assert_eq!(
        crashed["reason"],
        "kernel log: Kernel panic - not syncing: sysrq triggered crash"
    );
    assert!(
        crashed["kmsg"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l.as_str().unwrap().contains("sysrq_handle_crash"))
    );
    let name = crashed["name"].as_str().unwrap();
    assert!(
        out.contains(&format!("# kernel panic during api: {name}: Kernel panic")),
        "{out}"
    );
    for c in &cases[hit + 1..] {
        assert_eq!(c["status"], "crashed");
        assert_eq!(c["reason"], "not run: the kernel panicked");
    }
}

#[test]
#[serial(vm)]
fn silent_guest_is_killed_at_the_timeout_with_the_last_console_lines() {
    let k = kernel_or_skip!();
    // One case at a time: the init hangs as the second case starts, after the first reported.
    let o = vm(&k, &["-j", "1", "--inject", "hang", "--timeout", "20"]);
    let (out, _) = exited(&o, 1);
    assert!(
        out.contains("# the guest printed nothing for 20 s and was killed; last console lines:"),
        "{out}"
    );
    assert!(out.contains("#   uffdtest: injecting a hang"), "{out}");
    assert!(out.contains("\n  ok 1 "), "the first case ran: {out}");
    assert!(!out.contains("ok 2 "), "the guest hung before the second: {out}");
    assert!(!out.contains("\n0 failed"), "cases not run fail the run: {out}");
}

#[test]
#[serial(vm)]
fn kernel_that_panics_before_init_is_reported_with_its_console() {
    let k = kernel_or_skip!();
    // rdinit pointing nowhere: the kernel finds no init and panics at boot.
    let o = vm(
        &k,
        &["--append", "rdinit=/nonexistent", "--append", "init=/nonexistent"],
    );
    let (out, err) = exited(&o, 1);
    assert!(
        out.contains("# kernel panic before any case ran: Kernel panic - not syncing"),
        "{out}"
    );
    assert!(
        err.contains("the kernel panicked before the guest init ran any case"),
        "{err}"
    );
}

#[test]
#[serial(vm)]
fn kernel_without_userfaultfd_is_reported_from_the_guest() {
    // A kernel built without CONFIG_USERFAULTFD (CI has none: SKIP there).
    let k = match kernel_from("UFFDTEST_KERNEL_NO_UFFD") {
        Ok(k) => k,
        Err(why) => {
            println!("SKIP: {why}");
            return;
        }
    };
    let o = vm(&k, &[]);
    let (_, err) = exited(&o, 2);
    assert!(
        err.contains("the guest reported: this kernel has no userfaultfd"),
        "{err}"
    );
    assert!(err.contains("CONFIG_USERFAULTFD=y"), "{err}");
}

/// A `bisect` step's VM run, as `uffdtest bisect ... ARGS` sets it up, on the `uffdtest` under test.
fn bisect_step(kernel: &Path, results: &Path, args: &[&str]) -> uffdtest::gate::bisect::Verdict {
    use clap::Parser;
    #[derive(Parser)]
    struct Line {
        #[command(flatten)]
        bisect: uffdtest::cli::gate::BisectArgs,
    }
    let line = Line::try_parse_from(["bisect"].iter().chain(args)).unwrap();
    let vm = line.bisect.vm_options().unwrap();
    let exe = Path::new(env!("CARGO_BIN_EXE_uffdtest"));
    uffdtest::gate::bisect::run_vm_with(exe, kernel, results, &vm)
}

#[test]
fn bisect_step_without_a_kernel_cannot_test_the_commit() {
    let results = std::env::temp_dir().join(format!("uffdtest-harness-vm-bisect-{}", std::process::id()));
    let v = bisect_step(Path::new("/nonexistent/bzImage"), &results, &["--", "--accel", "tcg"]);
    let log = std::fs::read_to_string(results.join("vm.log")).unwrap();
    std::fs::remove_dir_all(&results).unwrap();
    assert!(matches!(v, uffdtest::gate::bisect::Verdict::Untestable(_)), "{v}");
    assert_eq!(uffdtest::cli::Exit::from(&v).code(), 125);
    assert!(v.to_string().contains("uffdtest vm exit status: 2"), "{v}");
    assert!(log.contains("cannot open kernel /nonexistent/bzImage"), "{log}");
}

#[test]
#[serial(vm)]
fn bisect_step_judges_the_guest_run() {
    let k = kernel_or_skip!();
    let results = std::env::temp_dir().join(format!("uffdtest-harness-vm-bisect-run-{}", std::process::id()));
    let v = bisect_step(&k, &results, &["--", "--accel", "tcg", "--ioctl", "api"]);
    let json = results.join("result.json");
    assert!(json.is_file(), "{v}");
    std::fs::remove_dir_all(&results).unwrap();
    // Good or bad: either way the step judged the kernel by its cases.
    assert!(
        matches!(
            v,
            uffdtest::gate::bisect::Verdict::Good { .. } | uffdtest::gate::bisect::Verdict::Bad { .. }
        ),
        "{v}"
    );
}

#[test]
fn guest_swap_comes_from_the_kernels_own_zram() {
    // CI's kernel is a Debian package unpacked with dpkg-deb -x: zram is a
    // module under <image dir>/../lib/modules/<release>, and its
    // dependencies must come before it.
    use uffdtest::vm::initramfs::{GuestSwap, swap_modules};
    let k = kernel_or_skip!();
    let mods = match swap_modules(&k, None, None) {
        Ok(GuestSwap::Modules(m)) => m,
        Ok(GuestSwap::BuiltIn) => return,
        Err(why) => panic!("no swap for the guest: {why}"),
    };
    let names: Vec<&str> = mods.iter().map(|m| m.name.as_str()).collect();
    let zram = names.iter().position(|n| *n == "zram").expect("zram packed");
    let zsmalloc = names.iter().position(|n| *n == "zsmalloc").expect("zsmalloc packed");
    assert!(zsmalloc < zram, "dependencies load first: {names:?}");
    assert!(
        mods.iter().all(|m| m.image.starts_with(b"\x7fELF")),
        "uncompressed: {names:?}"
    );
}
