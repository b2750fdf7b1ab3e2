//! `uffdtest mutate`: the mutation run's command line and exit codes (0 done, 1 survivors, 2 bad input or no
//! base, 130 interrupted).

use crate::cli::Exit;
use crate::cli::gate::BuildArgs;
use crate::cli::run::Filters;
use crate::cli::vm::Machine;
use crate::gate::mutate::catalogue::{self, Catalogue};
use crate::gate::mutate::guest::Kernel;
use crate::gate::mutate::report::{self, Results};
use crate::gate::mutate::run::{self, Layout};
use crate::gate::mutate::{apply, classify::Outcome, csuite};
use crate::vm::boot::AccelChoice;
use crate::vm::init::GuestConfig;
use crate::vm::{ReportFiles, Runner, VmOptions};
use clap::Args;
use std::path::{Path, PathBuf};

// The shared options in `mutate`'s words: its guest runs the cases asked for, has less memory, and a hung mutant
// is "timed out".
#[derive(Args, Debug)]
#[command(
    mut_arg("filters", |a| a.help(
        "The guest runs only cases whose name contains PATTERN or matches it as a glob (as `run -f`). Repeatable"
    )),
    mut_arg("skip", |a| a.help("The guest drops cases matching PATTERN. Repeatable")),
    mut_arg("mem", |a| a.help("The guest runs only cases on these memory types")),
    mut_arg("ioctl", |a| a.help("The guest runs only these test binaries (copy,zeropage,api,...)")),
    mut_arg("memory", |a| a.short(None).default_value("2048").help("Guest memory in MiB")),
    mut_arg("timeout", |a| a.help("Kill a guest silent for SECS (a hung mutant is then \"timed out\")")),
)]
pub struct MutateArgs {
    /// The build of each mutant: the tree (`--tree`, a git work tree), base config and fragments, as `uffdtest build`.
    #[command(flatten)]
    pub build: BuildArgs,
    /// The mutation catalogue.
    #[arg(long, value_name = "FILE", default_value = "mutants/linux-6.12.toml")]
    pub catalogue: PathBuf,
    /// Run only these entries (repeatable).
    #[arg(long = "only", value_name = "ID")]
    pub only: Vec<String>,
    /// Run only every N-th entry from the K-th (1-based), to split the catalogue across runs.
    #[arg(long, value_name = "K/N", value_parser = crate::cli::run::parse_shard)]
    pub shard: Option<(usize, usize)>,
    /// One JSON per mutant, read back on the next run (default: mutants/results/<catalogue name>/).
    #[arg(long, value_name = "DIR")]
    pub results: Option<PathBuf>,
    /// Write the kill-rate tables as Markdown (docs/mutation.md).
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
    /// Write the kill-rate tables as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Only check the catalogue against the tree (every text found exactly once), then stop.
    #[arg(long)]
    pub check: bool,
    /// Also build the kernel's C selftests (tools/testing/selftests/mm uffd-*) from the tree and run them on each
    /// mutant, so the table shows both kill rates.
    #[arg(long)]
    pub compare_c: bool,
    /// Only write the tables from the recorded results; no tree, build or guest.
    #[arg(long, conflicts_with = "check")]
    pub report_only: bool,
    #[command(flatten)]
    pub pick: Filters,
    /// Accelerator for the guest.
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
    pub accel: AccelChoice,
    #[command(flatten)]
    pub machine: Machine,
    /// Cases the guest runs at once. A kill needs one failing stable case, not a splat pinned on exactly one case,
    /// so the default keeps both vCPUs busy; 1 runs the suite in plan order.
    #[arg(long, default_value_t = 2, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub guest_jobs: u32,
    /// Huge pages the guest reserves.
    #[arg(long, default_value_t = 128, value_name = "N")]
    pub hugepages: u64,
    /// Prebuilt static test binaries for the guest (as `uffdtest vm --manifest`).
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    /// The cargo project that builds the static guest binaries.
    #[arg(long, value_name = "DIR", default_value = env!("CARGO_MANIFEST_DIR"))]
    pub source: PathBuf,
}

fn usage(msg: impl std::fmt::Display) -> Exit {
    Exit::CouldNotRun.because("uffdtest mutate", msg)
}

impl MutateArgs {
    fn vm(&self) -> VmOptions {
        VmOptions {
            kernel: PathBuf::new(),
            runner: Runner::Qemu,
            accel: self.accel,
            memory_mib: self.machine.memory,
            cpus: self.machine.smp,
            timeout: self.machine.timeout(),
            console_log: None,
            show_console: false,
            guest: GuestConfig {
                filters: self.pick.filters.clone(),
                skip: self.pick.skip.clone(),
                mem: self.pick.mem.clone(),
                ioctl: self.pick.ioctl.clone(),
                repeat: 1,
                jobs: self.guest_jobs as usize,
                case_timeout_secs: self.machine.case_timeout,
                hugepages: self.hugepages,
                heartbeat_secs: self.machine.heartbeat_secs(),
                ..GuestConfig::default()
            },
            manifest: self.manifest.clone(),
            build_tests: false,
            init: None,
            source: self.source.clone(),
            append: vec![],
            reports: ReportFiles::default(),
        }
    }

    fn results(&self) -> Results {
        Results {
            dir: self
                .results
                .clone()
                .unwrap_or_else(|| report::default_dir(&self.catalogue)),
        }
    }
}

/// Write the tables asked for and say the headline; exit 1 while mutants survive.
fn tables(a: &MutateArgs, cat: &Catalogue) -> Exit {
    let summary = report::summarize(cat, &a.results().load(cat));
    let write = |path: &Option<PathBuf>, text: String| match path {
        Some(p) => std::fs::write(p, text).map_err(|e| format!("write {}: {e}", p.display())),
        None => Ok(()),
    };
    if let Err(e) = write(&a.markdown, report::markdown(&summary)).and(write(&a.json, report::json(&summary))) {
        return usage(e);
    }
    eprintln!("uffdtest mutate: {}", summary.total.headline());
    for s in &summary.survivors {
        eprintln!("uffdtest mutate: survived: {} ({}): {}", s.id, s.file, s.description);
    }
    Exit::failed_if(!summary.survivors.is_empty())
}

fn tree_problem(tree: &Path, cat: &Catalogue) -> Option<String> {
    if let Err(e) = crate::gate::build::check_tree(tree) {
        return Some(e.to_string());
    }
    catalogue::check_against(cat, tree).err().map(|e| e.to_string())
}

/// `uffdtest mutate`.
pub fn mutate(a: &MutateArgs) -> Exit {
    let cat = match catalogue::load(&a.catalogue) {
        Ok(c) => c,
        Err(e) => return usage(e),
    };
    if a.report_only {
        return tables(a, &cat);
    }
    let tree = &a.build.tree;
    // A journal from a killed run is replayed before the texts are checked: they are the original's.
    match apply::check_tree(tree) {
        Ok(Some(file)) => eprintln!("uffdtest mutate: restored {file}, left mutated by an interrupted run"),
        Ok(None) => {}
        Err(e) if a.check => {
            if let Some(p) = tree_problem(tree, &cat) {
                return usage(p);
            }
            eprintln!("uffdtest mutate: note: {e}");
        }
        Err(e) => return usage(e),
    }
    if let Err(e) = catalogue::check_against(&cat, tree) {
        return usage(e);
    }
    let selected = match catalogue::select(&cat, &a.only, a.shard) {
        Ok(s) => s,
        Err(e) => return usage(e),
    };
    if a.check {
        eprintln!(
            "uffdtest mutate: {}: {} entries, every text found once in {}",
            cat.origin,
            cat.mutants.len(),
            tree.display()
        );
        return Exit::Ok;
    }
    let build = match a.build.opts() {
        Ok(b) => b,
        Err(e) => return usage(e),
    };
    let out = build
        .out
        .clone()
        .unwrap_or_else(|| crate::gate::build::default_out(tree));
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return usage(format_args!("cannot find the uffdtest executable: {e}")),
    };
    let layout = Layout {
        tree: tree.clone(),
        results: a.results(),
        logs: out.join("uffdtest-mutate"),
        base_runs: 2,
    };
    let c = if a.compare_c {
        match csuite::build(
            tree,
            &out.join("uffdtest-cselftests"),
            csuite::MUTANT_RUNS,
            a.accel,
            a.machine.memory,
            a.machine.smp,
        ) {
            Ok(c) => Some(c),
            Err(e) => return usage(format_args!("--compare-c: {e}")),
        }
    } else {
        None
    };
    let mut steps = Kernel {
        build,
        vm: a.vm(),
        exe,
        c,
    };
    let run = run::baseline(&mut steps, &layout).and_then(|base| {
        if !base.unstable.is_empty() {
            eprintln!(
                "uffdtest mutate: {} case(s) did not pass in every base run (failed, declared, or changed), never counted: {}",
                base.unstable.len(),
                base.unstable.join("; ")
            );
        }
        run::run_all(&mut steps, &layout, &selected, &base)
    });
    match run {
        Ok(done) => {
            let retry = done
                .iter()
                .filter(|r| matches!(r.outcome, Outcome::NoResult { .. }))
                .count();
            if retry > 0 {
                eprintln!("uffdtest mutate: {retry} mutant(s) gave no usable result; a rerun tries them again");
            }
            tables(a, &cat)
        }
        Err(e) => usage(e),
    }
}
