//! `uffdtest vm` and `uffdtest kconfig`: the VM harness's command line.

use crate::cli::Exit;
use crate::cli::run::{Outputs, Selection};
use crate::stress::hostile::{Hostile, ThpPolicy, totals_line};
use crate::stress::load::LoadConfig;
use crate::vm::boot::AccelChoice;
use crate::vm::init::{Fault, GuestConfig, UnderLoad};
use crate::vm::{self, Runner, VmError, VmOptions, kconfig};
use clap::Args;
use std::io::Read;
#[cfg(test)]
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct VmArgs {
    /// The kernel under test: a bzImage/vmlinuz, or a kernel build tree (arch/x86/boot/bzImage).
    #[arg(long, value_name = "PATH")]
    pub kernel: PathBuf,
    #[command(flatten)]
    pub sel: Selection,
    #[command(flatten)]
    pub known: crate::cli::known::KnownArgs,
    /// Accelerator: auto uses KVM only if it can run the guest, else TCG.
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
    pub accel: AccelChoice,
    #[arg(long, value_enum, default_value_t = Runner::Qemu)]
    pub runner: Runner,
    #[command(flatten)]
    pub machine: Machine,
    /// Cases run at once in the guest (default: its CPUs, --smp). The guest's runner pins a splat logged beside
    /// other cases by re-running them alone, as `run --jobs` does; 1 pins it by order alone.
    #[arg(short = 'j', long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub jobs: Option<u64>,
    /// Stop starting cases in the guest after N failures; the rest are reported as skipped ("not run").
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_fail: Option<u64>,
    /// Huge pages the guest init reserves.
    #[arg(long, default_value_t = 128, value_name = "N")]
    pub hugepages: u64,
    /// Extra kernel parameter. Repeatable.
    #[arg(long = "append", value_name = "PARAM")]
    pub append: Vec<String>,
    /// The static uffdtest for the guest's /init (default: this one if static, else built).
    #[arg(long, value_name = "FILE")]
    pub init: Option<PathBuf>,
    /// The cargo project that builds the static guest binaries (when --manifest is not given).
    #[arg(long, value_name = "DIR", default_value = env!("CARGO_MANIFEST_DIR"))]
    pub source: PathBuf,
    /// Keep the whole kernel console in FILE.
    #[arg(long, value_name = "FILE")]
    pub console_log: Option<PathBuf>,
    /// Echo the kernel console to stderr as it comes.
    #[arg(long)]
    pub show_console: bool,
    /// `-o` gets the final KTAP: splats and cases not run included.
    #[command(flatten)]
    pub out: Outputs,
    /// Run in the guest as `uffdtest flakes` runs on a host: every vCPU busy, memory churned through reclaim,
    /// compaction, khugepaged without sleep, and each pass of `--repeat` under its own THP policy; exit 1 if any
    /// case changed outcome between passes. Under TCG the load is scaled to what emulation can carry (spinners at
    /// nice 10, less memory churned, compaction every 5 s). QEMU runner only.
    #[arg(long)]
    pub under_load: bool,
    /// Measure in the guest where the run's time goes, as `bench --suite` does on a host: each test binary started
    /// with nothing to run, the probes, the runner's and the cases' CPU; printed after the verdict.
    #[arg(long, conflicts_with = "under_load")]
    pub cost: bool,
    /// Make the guest init crash the kernel or hang mid-run (tests of the harness itself).
    #[arg(long, value_enum, hide = true)]
    pub inject: Option<Fault>,
}

/// Guest memory for a run of the 1 GiB cases: two boot-time 1 GiB pages
/// ([`crate::vm::boot::gigantic_pages`]), as the cases that need a second
/// view reserve two.
const GIGANTIC_RUN_MIB: u32 = 7168;

/// The guest's memory, CPUs and time limits: shared by `vm` and `mutate` (which gives its guest less memory and
/// words two help lines its own way).
#[derive(Args, Debug, Clone)]
pub struct Machine {
    /// Guest memory in MiB, split over two NUMA nodes; from 6144 on, 1 GiB of it is a boot-time 1 GiB huge page
    /// (two from 7168; `vm --mem hugetlb-1g` raises it to 7168, as its cases map two).
    #[arg(short = 'm', long, default_value_t = 6144, value_name = "MIB")]
    pub memory: u32,
    /// Guest CPUs.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub smp: u32,
    /// Kill the guest after SECS without any output (console or KTAP); cases not run are reported.
    #[arg(long, default_value_t = 120, value_name = "SECS")]
    pub timeout: u64,
    /// Per-case timeout inside the guest.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub case_timeout: u64,
}

impl Machine {
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout)
    }

    /// How often the guest's runner says it is alive: four times within the silence that kills it.
    pub fn heartbeat_secs(&self) -> u64 {
        (self.timeout / 4).max(1)
    }
}

#[derive(Args, Debug)]
pub struct KconfigArgs {
    /// Check a kernel .config against qemu/uffd.config and list what is missing.
    #[arg(long, value_name = "CONFIG")]
    pub check: Option<PathBuf>,
    /// Use this fragment instead of the built-in qemu/uffd.config.
    #[arg(long, value_name = "FILE")]
    pub fragment: Option<PathBuf>,
}

fn infra(msg: impl std::fmt::Display) -> Exit {
    Exit::CouldNotRun.because("uffdtest", msg)
}

/// `uffdtest kconfig`: prints the fragment, or checks a `.config`
/// (exit 1 if a required option is missing).
pub fn kconfig_cmd(a: &KconfigArgs) -> Exit {
    let text = match &a.fragment {
        Some(p) => match std::fs::read_to_string(p) {
            Ok(t) => t,
            Err(e) => return infra(format_args!("cannot read {}: {e}", p.display())),
        },
        None => kconfig::FRAGMENT.to_string(),
    };
    let frag = match kconfig::parse_fragment(&text) {
        Ok(f) => f,
        Err(e) => return infra(e),
    };
    let Some(cfg) = &a.check else {
        print!("{text}");
        return Exit::Ok;
    };
    let config = match std::fs::read_to_string(cfg) {
        Ok(t) => t,
        Err(e) => return infra(format_args!("cannot read {}: {e}", cfg.display())),
    };
    let missing = kconfig::check(&frag, &kconfig::parse_config(&config));
    print!("{}", kconfig::report(&cfg.display().to_string(), frag.len(), &missing));
    Exit::failed_if(missing.iter().any(|m| m.want.need == kconfig::Need::Required))
}

impl VmArgs {
    /// What the run is asked to do, as `bisect` would ask it too.
    pub fn options(&self) -> VmOptions {
        VmOptions {
            kernel: self.kernel.clone(),
            runner: self.runner,
            accel: self.accel,
            memory_mib: if crate::cli::run::requests_1g(&self.sel.pick.mem) {
                self.machine.memory.max(GIGANTIC_RUN_MIB)
            } else {
                self.machine.memory
            },
            cpus: self.machine.smp,
            timeout: self.machine.timeout(),
            console_log: self.console_log.clone(),
            show_console: self.show_console,
            guest: self.guest_config(),
            manifest: self.sel.manifest.clone(),
            build_tests: self.sel.build,
            init: self.init.clone(),
            source: self.source.clone(),
            append: self.append.clone(),
            reports: self.out.files(),
        }
    }

    fn guest_config(&self) -> GuestConfig {
        GuestConfig {
            filters: self.sel.pick.filters.clone(),
            skip: self.sel.pick.skip.clone(),
            mem: self.sel.pick.mem.clone(),
            on_request: crate::cli::run::ON_REQUEST.iter().map(|s| s.to_string()).collect(),
            ioctl: self.sel.pick.ioctl.clone(),
            first: self.sel.first.clone(),
            shard: self.sel.shard,
            run_ignored: self.sel.run_ignored,
            repeat: self.sel.repeat as usize,
            jobs: self.jobs.map_or(self.machine.smp as usize, |j| j as usize),
            max_fail: self.max_fail.map(|n| n as usize),
            case_timeout_secs: self.machine.case_timeout,
            hugepages: self.hugepages,
            heartbeat_secs: self.machine.heartbeat_secs(),
            case_env: crate::cli::run::case_env(&self.sel.pick.mem),
            fault: self.inject,
            under_load: self.under_load,
            cost: self.cost,
        }
    }
}

/// `uffdtest vm`.
pub fn vm_cmd(a: &VmArgs) -> Exit {
    if !a.under_load {
        return run_known(&a.options(), &a.known);
    }
    if a.runner != Runner::Qemu {
        return infra("--under-load needs --runner qemu: the load runs in uffdtest's own guest init");
    }
    let report = match judged(&a.options(), &a.known) {
        Ok(r) => r,
        Err(e) => return e,
    };
    // As `uffdtest flakes`: a case that changed outcome between passes fails the run.
    let flaky = crate::cli::run::flaky_lines(&report);
    println!(
        "uffdtest vm: {} case(s) changed outcome over {} pass(es) under load{}",
        flaky.len(),
        a.sel.repeat.max(1),
        if flaky.is_empty() { "" } else { ":" }
    );
    for l in &flaky {
        println!("  {l}");
    }
    match Exit::from_report_code(report.exit_code()) {
        Exit::Ok if !flaky.is_empty() => Exit::Failure,
        e => e,
    }
}

/// The run of `o`, exiting as its report says; 2 when there is none worth judging.
/// Declared known issues come from the default file.
pub fn run(o: &VmOptions) -> Exit {
    let default = crate::cli::known::KnownArgs {
        known_issues: crate::cli::known::DEFAULT_FILE.into(),
        strict: false,
    };
    run_known(o, &default)
}

/// [`run`] with the known issues of `k` (none under `--strict`).
pub fn run_known(o: &VmOptions, k: &crate::cli::known::KnownArgs) -> Exit {
    match judged(o, k) {
        Ok(report) => Exit::from_report_code(report.exit_code()),
        Err(e) => e,
    }
}

/// The run's report, or how `vm` exits when there is none worth judging.
fn judged(o: &VmOptions, k: &crate::cli::known::KnownArgs) -> Result<crate::runner::Report, Exit> {
    let known = k.issues().map_err(|e| Exit::CouldNotRun.because("uffdtest", e))?;
    vm::run_and_report(o, known.as_ref()).map_err(|e| match e {
        // The guest's own errors are on stderr already.
        VmError::GuestRanNothing => Exit::CouldNotRun,
        e => Exit::CouldNotRun.because("uffdtest", e),
    })
}

/// PID 1 in the guest, with the flake hunter's machine for `--under-load`.
pub fn guest_init() -> ! {
    vm::init::main(
        &mut GuestLoad(None),
        &vm::init::SuiteHooks {
            unusable: crate::cli::run::unusable_types,
            probe_costs: crate::cli::bench_suite::probe_costs,
        },
    )
}

/// The guest's `--under-load`: the same [`Hostile`] machine and THP
/// policies `uffdtest flakes` runs its passes under on a host.
struct GuestLoad(Option<Hostile>);

impl UnderLoad for GuestLoad {
    fn start(&mut self) -> Result<String, String> {
        let emulated = std::fs::read_to_string("/proc/cmdline")
            .is_ok_and(|c| c.split_whitespace().any(|w| w == vm::boot::EMULATED_PARAM));
        let cfg = if emulated {
            LoadConfig::emulated()
        } else {
            LoadConfig::hostile()
        };
        let hostile = Hostile::start(&cfg).map_err(|e| e.to_string())?;
        let what = hostile.describe();
        self.0 = Some(hostile);
        Ok(what)
    }

    fn pass(&mut self, i: usize) -> (String, Box<dyn std::any::Any>) {
        let policy = ThpPolicy::for_pass(i);
        (policy.name(), Box::new(policy.apply()))
    }

    fn stop(&mut self) -> String {
        self.0
            .take()
            .map_or_else(|| "never started".to_string(), |h| totals_line(&h.stop()))
    }
}

/// [`vm::options::CHILD_COMMAND`]: the run of [`VmOptions`] read as JSON from stdin.
pub fn child_cmd() -> Exit {
    let mut text = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut text) {
        return Exit::CouldNotRun.because("uffdtest", format_args!("cannot read the VM options: {e}"));
    }
    match serde_json::from_str::<VmOptions>(&text) {
        Ok(o) => run(&o),
        Err(e) => Exit::CouldNotRun.because("uffdtest", format_args!("bad VM options: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::run::RunArgs;
    use clap::Parser;

    #[derive(Parser)]
    struct Line<T: clap::Args> {
        #[command(flatten)]
        args: T,
    }

    /// Words of a command line quoted for `sh -c` (no word holds a quote here).
    fn words(cmd: &str) -> Vec<String> {
        cmd.split("' '").map(|w| w.trim_matches('\'').to_string()).collect()
    }

    /// `vm` and `mutate` share [`Machine`] but each keeps its own memory default, in one process (clap builds both).
    #[test]
    fn each_command_keeps_its_own_machine_defaults() {
        use crate::cli::mutate::MutateArgs;
        let vm = Line::<VmArgs>::try_parse_from(["vm", "--kernel", "/k"])
            .unwrap()
            .args
            .machine;
        let mutant = Line::<MutateArgs>::try_parse_from(["mutate"]).unwrap().args.machine;
        assert_eq!((vm.memory, vm.smp, vm.timeout, vm.case_timeout), (6144, 2, 120, 60));
        assert_eq!(
            (mutant.memory, mutant.smp, mutant.timeout, mutant.case_timeout),
            (2048, 2, 120, 60)
        );
        let small = Line::<VmArgs>::try_parse_from(["vm", "--kernel", "/k", "-m", "512"]).unwrap();
        assert_eq!(small.args.machine.memory, 512);
        assert!(Line::<MutateArgs>::try_parse_from(["mutate", "-m", "512"]).is_err());
    }

    #[test]
    fn the_vng_guest_runs_the_selection_the_vm_was_given() {
        let vm = Line::<VmArgs>::try_parse_from([
            "vm",
            "--kernel",
            "/k",
            "-f",
            "copy",
            "--skip",
            "wp",
            "--mem",
            "anon,shmem",
            "--ioctl",
            "copy",
            "--shard",
            "2/3",
            "--run-ignored",
            "--repeat",
            "2",
            "-j",
            "3",
            "--case-timeout",
            "7",
            "--hugepages",
            "9",
            "--max-fail",
            "4",
        ])
        .unwrap()
        .args;
        let cmd = vm::vng::guest_command(&vm.options(), Path::new("/bin/uffdtest"), Path::new("/m.json"));
        let w = words(&cmd);
        assert_eq!(w[..2], ["/bin/uffdtest", "run"]);
        let run = Line::<RunArgs>::try_parse_from(&w[1..]).unwrap().args;
        assert_eq!(run.sel.manifest.as_deref(), Some(Path::new("/m.json")));
        assert_eq!(run.sel.pick, vm.sel.pick);
        assert_eq!(
            (run.sel.shard, run.sel.run_ignored, run.sel.repeat),
            (Some((2, 3)), true, 2)
        );
        assert_eq!((run.jobs, run.timeout, run.hugepages), (Some(3), 7, 9));
        assert_eq!(run.max_fail, Some(4));
        assert!(run.announce_kmsg);
    }

    #[test]
    fn under_load_reaches_the_guest_and_needs_the_qemu_runner() {
        let vm = Line::<VmArgs>::try_parse_from(["vm", "--kernel", "/k", "--under-load", "--repeat", "5"])
            .unwrap()
            .args;
        let g = vm.options().guest;
        assert!(g.under_load);
        assert_eq!(g.repeat, 5);
        let old: GuestConfig = serde_json::from_str(r#"{"filters":[],"skip":[],"mem":[],"ioctl":[],"run_ignored":false,"jobs":1,"case_timeout_secs":60,"hugepages":0}"#).unwrap();
        assert!(!old.under_load, "an older host's config runs without load");
        let vng = Line::<VmArgs>::try_parse_from(["vm", "--kernel", "/k", "--under-load", "--runner", "vng"])
            .unwrap()
            .args;
        assert_eq!(vm_cmd(&vng), Exit::CouldNotRun);
    }

    #[test]
    fn vm_options_survive_the_trip_to_a_child() {
        let vm = Line::<VmArgs>::try_parse_from(["vm", "--kernel", "/k", "--runner", "vng", "--accel", "tcg"])
            .unwrap()
            .args;
        let o = vm.options();
        let back: VmOptions = serde_json::from_str(&serde_json::to_string(&o).unwrap()).unwrap();
        assert_eq!(format!("{back:?}"), format!("{o:?}"));
    }
}
