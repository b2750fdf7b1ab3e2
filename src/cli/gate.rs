//! `uffdtest build|compare|bisect|merge`: arguments and output of the gate stages.

use crate::cli::Exit;
use crate::cli::vm::VmArgs;
use crate::gate::build::{self, BaseConfig, BuildOpts, Fragment};
use crate::vm::VmOptions;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug, Clone)]
pub struct BuildArgs {
    /// The kernel source tree.
    #[arg(long, default_value = ".")]
    pub tree: PathBuf,
    /// The out-of-tree build directory (`O=`), kept between calls so rebuilds are incremental.
    /// Default: ~/.cache/uffdtest/kbuild/<tree>-<hash>.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Start from this complete .config instead of a make target.
    #[arg(long, conflicts_with = "base")]
    pub config: Option<PathBuf>,
    /// The make target that writes the base config (defconfig, tinyconfig, ...).
    #[arg(long, default_value = "defconfig")]
    pub base: String,
    /// Extra fragments merged after qemu/uffd.config (later lines win).
    #[arg(long = "fragment")]
    pub fragments: Vec<PathBuf>,
    /// Use this file instead of the qemu/uffd.config compiled into uffdtest.
    #[arg(long)]
    pub uffd_config: Option<PathBuf>,
    /// Parallel make jobs; default: all cores.
    #[arg(short, long)]
    pub jobs: Option<usize>,
    /// Echo make's output (it is always logged to <out>/uffdtest-build.log).
    #[arg(short, long)]
    pub verbose: bool,
}

impl BuildArgs {
    pub fn opts(&self) -> Result<BuildOpts, build::BuildError> {
        let mut fragments = vec![match &self.uffd_config {
            Some(p) => Fragment::read(p)?,
            None => Fragment::uffd(),
        }];
        for p in &self.fragments {
            fragments.push(Fragment::read(p)?);
        }
        Ok(BuildOpts {
            tree: self.tree.clone(),
            out: self.out.clone(),
            base: match &self.config {
                Some(p) => BaseConfig::File(p.clone()),
                None => BaseConfig::Target(self.base.clone()),
            },
            fragments,
            jobs: self.jobs.unwrap_or_else(build::default_jobs),
            verbose: self.verbose,
        })
    }
}

/// Prints the image path on stdout (for scripts) and the rest on stderr.
pub fn build(args: &BuildArgs) -> Exit {
    let opts = match args.opts() {
        Ok(o) => o,
        Err(e) => return Exit::Failure.because("uffdtest build", e),
    };
    match build::build(&opts) {
        Ok(b) => {
            if !b.missing_recommended.is_empty() {
                eprintln!(
                    "uffdtest build: note: recommended options not set (the suite runs, the kernel reports less): {}",
                    b.missing_recommended.join(" ")
                );
            }
            eprintln!(
                "uffdtest build: {} in {:.1}s ({}), build directory {}",
                if b.configured { "configured and built" } else { "built" },
                b.elapsed.as_secs_f64(),
                format_args!("-j{}", opts.jobs),
                b.out.display()
            );
            println!("{}", b.image.display());
            Exit::Ok
        }
        Err(e) => Exit::Failure.because("uffdtest build", e),
    }
}

/// How `compare` prints its judgement.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A table for people.
    Text,
    /// Markdown for a CI comment.
    Md,
    Json,
}

#[derive(Args, Debug, Clone)]
pub struct CompareArgs {
    /// The reference run: KTAP (from `run`, `vm` or any kselftest) or our JSON report.
    pub base: PathBuf,
    /// The run under judgement, same forms.
    pub candidate: PathBuf,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Also write the judgement to this file (the format above); stdout still gets it.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// More runs of the base (repeatable): a case whose outcome differs between the base runs is flaky there and
    /// is reported apart, never as a regression.
    #[arg(long = "base-repeat", value_name = "FILE")]
    pub base_repeats: Vec<PathBuf>,
    /// Write the candidate's cases as KCIDB I/O JSON to FILE, each moved case's `misc` saying how it moved.
    #[arg(long, value_name = "FILE")]
    pub kcidb: Option<PathBuf>,
    /// Do not fail on a case that passed in the base and skips, XFAILs or is missing in the candidate (for two
    /// machines set up differently on purpose; a kernel gate runs both sides alike and keeps this off).
    #[arg(long)]
    pub allow_new_skips: bool,
}

/// Exit 0 when nothing regressed, 1 on any regression or new kernel splat, 2 when an input cannot be read.
pub fn compare(args: &CompareArgs) -> Exit {
    use crate::gate::compare;
    let unreadable = |e: &dyn std::fmt::Display| Exit::CouldNotRun.because("uffdtest compare", e);
    let (mut base, cand) = match (compare::read_report(&args.base), compare::read_report(&args.candidate)) {
        (Ok(b), Ok(c)) => (b, c),
        (Err(e), _) | (_, Err(e)) => return unreadable(&e),
    };
    // Repeated runs side by side in one report: compare keeps every outcome of a case.
    for p in &args.base_repeats {
        match compare::read_report(p) {
            Ok(r) => {
                base.tests.extend(r.tests);
                base.parse_errors.extend(r.parse_errors);
            }
            Err(e) => return unreadable(&e),
        }
    }
    let policy = compare::Policy {
        allow_new_skips: args.allow_new_skips,
    };
    let c = compare::compare(&base, &cand, policy);
    let text = match args.format {
        Format::Text => compare::render_text(&c),
        Format::Md => compare::render_markdown(&c),
        Format::Json => serde_json::to_string_pretty(&c).expect("comparison serialises") + "\n",
    };
    print!("{text}");
    if let Some(p) = &args.output
        && let Err(e) = std::fs::write(p, &text)
    {
        return unreadable(&format!("write {}: {e}", p.display()));
    }
    if let Some(p) = &args.kcidb
        && let Err(e) = std::fs::write(p, compare_kcidb(args, &cand, &c))
    {
        return unreadable(&format!("write {}: {e}", p.display()));
    }
    Exit::from_report_code(c.exit_code())
}

/// The candidate as KCIDB, the comparison in each moved case's `misc`
/// (`change`: regression, fix, ...; `base_status`).
fn compare_kcidb(args: &CompareArgs, cand: &crate::runner::Report, c: &crate::gate::compare::Comparison) -> String {
    use crate::runner::kcidb;
    let moved: std::collections::HashMap<&str, &crate::gate::compare::CaseChange> =
        c.changes.iter().map(|x| (x.case.as_str(), x)).collect();
    let mut s = kcidb::Submission::running_kernel(&format!(
        "uffdtest compare {} {}: {}",
        args.base.display(),
        args.candidate.display(),
        c.verdict()
    ));
    s.kernel = args
        .candidate
        .file_stem()
        .map_or_else(|| "candidate".into(), |f| f.to_string_lossy().into_owned());
    let misc = |path: &[&str], _: &crate::runner::TestResult| {
        let x = moved.get(path.join(" / ").as_str())?;
        let change = serde_json::to_value(x.change).ok()?;
        let base: Vec<&str> = x.base.iter().map(|s| s.name()).collect();
        Some(serde_json::json!({ "change": change, "base_status": base }))
    };
    serde_json::to_string_pretty(&kcidb::document(cand, &s, &misc)).expect("KCIDB document serialises") + "\n"
}

#[derive(Args, Debug, Clone)]
pub struct MergeArgs {
    /// The shard reports (KTAP or JSON), in shard order: 1/N first.
    #[arg(required = true)]
    pub shards: Vec<PathBuf>,
    /// Write the merged KTAP here instead of stdout.
    #[arg(long)]
    pub ktap: Option<PathBuf>,
    /// Also write the merged JSON report.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Also write the merged JUnit XML.
    #[arg(long)]
    pub junit: Option<PathBuf>,
    /// Also write the merged run as KCIDB I/O JSON (one checkout, one build, every shard's cases).
    #[arg(long, value_name = "FILE")]
    pub kcidb: Option<PathBuf>,
    /// The kernel the shards ran, for the KCIDB checkout (its release or image name; default: the running kernel's
    /// release, right only when the shards ran on this machine's kernel).
    #[arg(long, value_name = "NAME", requires = "kcidb")]
    pub kernel: Option<String>,
}

/// Exits as the merged run would have (kselftest: 0 pass, 1 any failure, 4 all skipped); 2 if they do not merge.
pub fn merge(args: &MergeArgs) -> Exit {
    use crate::gate::{compare::read_report, merge::merge_shards};
    use crate::runner::{ktap, report};
    let fail = |e: &dyn std::fmt::Display| Exit::CouldNotRun.because("uffdtest merge", e);
    let shards = match args
        .shards
        .iter()
        .map(|p| read_report(p))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let merged = match merge_shards(&shards) {
        Ok(m) => m,
        Err(e) => return fail(&e),
    };
    let mut text = Vec::new();
    ktap::write_report(&mut text, &merged).expect("write to memory");
    let mut kcidb =
        crate::runner::kcidb::Submission::running_kernel(&format!("uffdtest merge of {} shard(s)", shards.len()));
    if let Some(k) = &args.kernel {
        kcidb.kernel = k.clone();
    }
    let writes = [
        (args.ktap.as_ref(), text.clone()),
        (args.json.as_ref(), report::json(&merged).into_bytes()),
        (args.junit.as_ref(), report::junit(&merged).into_bytes()),
        (
            args.kcidb.as_ref(),
            crate::runner::kcidb::to_string(&merged, &kcidb).into_bytes(),
        ),
    ];
    for (path, bytes) in writes {
        if let Some(p) = path
            && let Err(e) = std::fs::write(p, bytes)
        {
            return fail(&format!("write {}: {e}", p.display()));
        }
    }
    if args.ktap.is_none() {
        use std::io::Write;
        let _ = std::io::stdout().write_all(&text);
    }
    eprintln!(
        "uffdtest merge: {} shard(s): {}",
        shards.len(),
        merged.totals().summary_line()
    );
    Exit::from_report_code(merged.exit_code())
}

#[derive(Args, Debug, Clone)]
pub struct BisectArgs {
    #[command(flatten)]
    pub build: BuildArgs,
    /// Keep cases matching (as `run -f`); repeatable. Without one, the whole suite decides.
    #[arg(short = 'f', long = "filter")]
    pub filters: Vec<String>,
    /// Where the step's KTAP, JSON and console log go (default: <build dir>/bisect).
    #[arg(long)]
    pub results: Option<PathBuf>,
    /// More arguments for `uffdtest vm` (`--mem shmem`, `--timeout 30`), after `--`.
    #[arg(last = true)]
    pub vm_args: Vec<String>,
}

/// `uffdtest vm`'s flags, for the arguments `bisect` passes on.
#[derive(clap::Parser)]
#[command(name = "uffdtest vm", no_binary_name = true)]
struct VmLine {
    #[command(flatten)]
    vm: VmArgs,
}

impl BisectArgs {
    /// The run each step boots its kernel with: `-f` and the `uffdtest vm` arguments after `--`, parsed as `vm`
    /// parses them (the kernel is the one each step builds).
    pub fn vm_options(&self) -> Result<VmOptions, clap::Error> {
        use clap::Parser;
        let line = ["--kernel", "(built by each step)"].map(String::from);
        let mut vm = VmLine::try_parse_from(line.iter().chain(&self.vm_args))?.vm;
        vm.sel.pick.filters.splice(0..0, self.filters.iter().cloned());
        Ok(vm.options())
    }
}

/// One `git bisect run` step: 0 good, 1 bad, 125 cannot test, 255 stop the bisection (see [`crate::gate::bisect`]).
pub fn bisect(args: &BisectArgs) -> Exit {
    use crate::gate::bisect::{self as b, Verdict};
    let head = std::process::Command::new("git")
        .arg("-C")
        .arg(&args.build.tree)
        .args(["log", "-1", "--format=%h %s"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "(not a git checkout)".into());
    eprintln!("uffdtest bisect: testing {head}");
    let verdict = match (args.build.opts(), args.vm_options()) {
        (Err(e), _) => Verdict::Abort(e.to_string()),
        (_, Err(e)) => Verdict::Abort(format!("the arguments for uffdtest vm after --: {e}")),
        (Ok(opts), Ok(vm)) => match build::build(&opts) {
            Err(e @ (build::BuildError::NotAKernelTree { .. } | build::BuildError::MissingToolchain { .. })) => {
                Verdict::Abort(e.to_string())
            }
            Err(e) => Verdict::Untestable(format!("build: {e}")),
            Ok(built) => {
                eprintln!(
                    "uffdtest bisect: built {} in {:.0}s",
                    built.image.display(),
                    built.elapsed.as_secs_f64()
                );
                let results = args.results.clone().unwrap_or_else(|| built.out.join("bisect"));
                b::run_vm(&built.image, &results, &vm)
            }
        },
    };
    eprintln!("uffdtest bisect: {head}: {verdict}");
    Exit::from(&verdict)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Line {
        #[command(flatten)]
        bisect: BisectArgs,
    }

    fn bisect(args: &[&str]) -> BisectArgs {
        Line::try_parse_from(std::iter::once("bisect").chain(args.iter().copied()))
            .unwrap()
            .bisect
    }

    #[test]
    fn each_step_runs_the_cases_and_vm_flags_it_was_given() {
        let a = bisect(&[
            "-f",
            "copy",
            "--",
            "-f",
            "zero_len",
            "--mem",
            "shmem",
            "--timeout",
            "30",
        ]);
        let vm = a.vm_options().unwrap();
        assert_eq!(vm.guest.filters, ["copy", "zero_len"]);
        assert_eq!(vm.guest.mem, ["shmem"]);
        assert_eq!(vm.timeout, std::time::Duration::from_secs(30));
        assert_eq!(vm.runner, crate::vm::Runner::Qemu);
    }

    #[test]
    fn a_mistyped_vm_flag_is_an_error_before_any_build() {
        let e = bisect(&["--", "--timeuot", "30"]).vm_options().unwrap_err();
        assert!(e.to_string().contains("--timeuot"), "{e}");
    }
}
