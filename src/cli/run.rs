//! `uffdtest run`, `list` and `build-tests`: the runner's command line.

use crate::cli::Exit;
use crate::runner::report::{Ktap, Progress};
use crate::runner::{Report, Reporter, RunOptions, Status, discover, execute, plan};
use crate::vm::ReportFiles;
use clap::Args;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

/// Which cases: shared by `run` and `list`.
#[derive(Args, Debug, Clone)]
pub struct Selection {
    /// The test manifest [default: uffdtest-tests.json next to this executable].
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    /// Build the test binaries first (static and optimised, as `uffdtest vm` builds them) and write the manifest.
    #[arg(long)]
    pub build: bool,
    #[command(flatten)]
    pub pick: Filters,
    /// Run only shard K of N (1-based), for splitting one run across machines.
    #[arg(long, value_name = "K/N", value_parser = parse_shard)]
    pub shard: Option<(usize, usize)>,
    /// Also run cases marked #[ignore].
    #[arg(long)]
    pub run_ignored: bool,
    /// Run the selection N times over (each pass in plan order); a case
    /// whose outcome differs between passes is reported as flaky, and
    /// `compare` judges such a base case apart.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub repeat: u32,
    /// Start with these test binaries' cases (copy,move,...); the rest follow in the usual order. With
    /// `--max-fail` a run whose failure is expected there ends sooner.
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub first: Vec<String>,
}

/// Which cases by name, memory type and test binary: shared by `run`, `list` and `vm` (in [`Selection`]) and by
/// `mutate` (which words the help lines for its guest).
#[derive(Args, Debug, Clone, Default, PartialEq)]
pub struct Filters {
    /// Keep cases whose name contains PATTERN, or matches it as a glob (`*`, `?`). Repeatable.
    #[arg(short = 'f', long = "filter", value_name = "PATTERN")]
    pub filters: Vec<String>,
    /// Drop cases matching PATTERN (as for -f). Repeatable.
    #[arg(long = "skip", value_name = "PATTERN")]
    pub skip: Vec<String>,
    /// Keep cases on these memory types (anon,shmem,shmem-private,hugetlb,hugetlb-private,anon-thp,guest-memfd;
    /// hugetlb-1g and hugetlb-1g-private run only when named here, each case clearing whole GiB pages).
    #[arg(long, value_delimiter = ',', value_name = "TYPES")]
    pub mem: Vec<String>,
    /// Keep cases of these test binaries: the ioctl or feature (copy,zeropage,api,...).
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub ioctl: Vec<String>,
}

/// Where results go besides stdout: shared by `run` and `vm`.
#[derive(Args, Debug, Clone, Default)]
pub struct Outputs {
    /// Also write the KTAP to FILE.
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Write JUnit XML to FILE.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Write JSON (per case: status, duration, reason, kernel log excerpt, output) to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write KCIDB I/O JSON (schema 5.3: checkout, build, a test per case as uffd.<binary>.<case>.<memtype>) to FILE.
    #[arg(long, value_name = "FILE")]
    pub kcidb: Option<PathBuf>,
}

impl Outputs {
    pub fn files(&self) -> ReportFiles {
        ReportFiles {
            ktap: self.output.clone(),
            junit: self.junit.clone(),
            json: self.json.clone(),
            kcidb: self.kcidb.clone(),
            kcidb_submission: None,
        }
    }

    /// Writes the finished report to the files asked for; the KTAP file too
    /// when `ktap` (`run` streams it there as the cases end instead).
    pub fn write(&self, r: &Report, ktap: bool) {
        self.files().write(r, ktap)
    }
}

/// Cases whose outcome differed between the passes of `--repeat`, one line
/// each (`copy/case on anon: pass, fail`), for the end of a run.
pub fn flaky_lines(r: &Report) -> Vec<String> {
    let mut seen: Vec<(String, Vec<&'static str>)> = Vec::new();
    let mut at = std::collections::HashMap::new();
    for (path, leaf) in r.leaves() {
        let key = path.join("/");
        let i = *at.entry(key.clone()).or_insert_with(|| {
            seen.push((key, Vec::new()));
            seen.len() - 1
        });
        seen[i].1.push(leaf.status.name());
    }
    seen.into_iter()
        .filter(|(_, v)| v.iter().any(|s| *s != v[0]))
        .map(|(k, v)| format!("{k}: {}", v.join(", ")))
        .collect()
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub sel: Selection,
    /// Cases run in parallel (serial cases still run alone) [default: number of CPUs].
    #[arg(short = 'j', long)]
    pub jobs: Option<usize>,
    /// Stop starting cases after N failures; the rest are reported as skipped ("not run").
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_fail: Option<u64>,
    /// Per-case timeout in seconds.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub timeout: u64,
    /// Timeout for cases whose binary or name contains `stress`.
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    pub stress_timeout: u64,
    /// Raise vm.nr_hugepages to at least N for the run (restored after; never lowered).
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub hugepages: u64,
    /// Raise the 1 GiB hugetlb pool to at least N pages for the run (restored after; never lowered).
    #[arg(long = "hugepages-1g", default_value_t = 2, value_name = "N")]
    pub hugepages_1g: u64,
    /// Set a sysctl for the run, restored after (e.g. vm.unprivileged_userfaultfd=1). Repeatable.
    #[arg(long = "sysctl", value_name = "KEY=VALUE", value_parser = parse_kv)]
    pub sysctls: Vec<(String, String)>,
    /// Do not read /dev/kmsg (splats then go unnoticed).
    #[arg(long)]
    pub no_kmsg: bool,
    /// Write `uffdtest: start <binary>: <case>` to /dev/kmsg before each case.
    #[arg(long)]
    pub announce_kmsg: bool,
    #[command(flatten)]
    pub known: crate::cli::known::KnownArgs,
    #[command(flatten)]
    pub out: Outputs,
}

#[derive(Args, Debug)]
pub struct BuildTestsArgs {
    /// Where to write the manifest [default: uffdtest-tests.json next to this executable].
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    /// Extra arguments for `cargo test --no-run` (e.g. --release).
    #[arg(last = true)]
    pub cargo_args: Vec<String>,
}

/// Why a `--shard K/N` or `--sysctl KEY=VALUE` value does not parse (clap prints it after the value).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ValueError {
    #[error("expected K/N, e.g. 2/4")]
    NoSlash,
    #[error("K is not a number")]
    K,
    #[error("N is not a number")]
    N,
    #[error("shard {0}/{1}: need 1 <= K <= N")]
    ShardRange(usize, usize),
    #[error("expected KEY=VALUE")]
    NoEquals,
}

pub(crate) fn parse_shard(s: &str) -> Result<(usize, usize), ValueError> {
    let (k, n) = s.split_once('/').ok_or(ValueError::NoSlash)?;
    let (k, n): (usize, usize) = (
        k.parse().map_err(|_| ValueError::K)?,
        n.parse().map_err(|_| ValueError::N)?,
    );
    if n == 0 || k == 0 || k > n {
        return Err(ValueError::ShardRange(k, n));
    }
    Ok((k, n))
}

fn parse_kv(s: &str) -> Result<(String, String), ValueError> {
    let (k, v) = s.split_once('=').ok_or(ValueError::NoEquals)?;
    Ok((k.trim().to_string(), v.trim().to_string()))
}

fn fail(msg: impl std::fmt::Display) -> Exit {
    Exit::CouldNotRun.because("uffdtest", msg)
}

/// How `--build` builds the test binaries.
pub(crate) enum Build<'a> {
    /// As `uffdtest vm` does (static, optimised, debug assertions on): the
    /// host run and the guest share one build, and the heavy cases (stress,
    /// page-sized compares) run at full speed; debug code took four times
    /// the CPU of this over the whole suite.
    Suite,
    /// `cargo test --no-run` with these arguments (`build-tests`).
    Cargo(&'a [String]),
}

/// Builds the tests if asked and returns the manifest path.
/// The runner's error passes through as it is, whatever its type.
pub(crate) fn manifest(
    sel_manifest: &Option<PathBuf>,
    build: Option<Build>,
) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let path = sel_manifest.clone().unwrap_or_else(discover::default_manifest);
    if let Some(how) = build {
        let m = match how {
            Build::Cargo(args) => discover::build_manifest(args)?,
            Build::Suite => {
                let (_, mut m) = crate::vm::build::build_static(&std::env::current_dir()?)?;
                m.record_listings(&path)?;
                m
            }
        };
        m.write(&path)?;
        eprintln!(
            "uffdtest: {} test binaries listed in {}",
            m.binaries.len(),
            path.display()
        );
    }
    Ok(path)
}

/// Memory types whose cases run only when `--mem` names them: each case
/// clears and copies whole GiB pages, seconds apiece (their 32 cases took
/// 31 s alone on the 2-core host, two thirds of the whole suite's case time).
pub const ON_REQUEST: &[&str] = &["hugetlb-1g", "hugetlb-1g-private"];

/// Whether `mem` asks for any [`ON_REQUEST`] type.
pub fn requests_1g(mem: &[String]) -> bool {
    mem.iter().any(|m| ON_REQUEST.contains(&m.as_str()))
}

/// The environment every case of a run selecting `mem` gets, on the host
/// or in a guest: the 1 GiB areas are made only when asked for.
pub fn case_env(mem: &[String]) -> Vec<(String, String)> {
    if requests_1g(mem) {
        vec![(crate::mem::GIGANTIC_ENV.into(), "1".into())]
    } else {
        Vec::new()
    }
}

/// Memory types this machine cannot give at all, with the reason their
/// cases would skip ([`RunOptions::unusable`]): guest-memfd without a usable
/// KVM, from the same probe the areas ask.
pub fn unusable_types() -> Vec<(String, String)> {
    match &crate::mem::guest_memfd::probe().usable {
        Err(why) => vec![(crate::mem::MemType::GuestMemfd.name().to_string(), why.to_string())],
        Ok(_) => Vec::new(),
    }
}

pub(crate) fn options(sel: &Selection, manifest: PathBuf) -> RunOptions {
    RunOptions {
        manifest,
        filters: sel.pick.filters.clone(),
        skip: sel.pick.skip.clone(),
        mem: sel.pick.mem.clone(),
        on_request: ON_REQUEST.iter().map(|s| s.to_string()).collect(),
        unusable: unusable_types(),
        ioctl: sel.pick.ioctl.clone(),
        first: sel.first.clone(),
        shard: sel.shard,
        run_ignored: sel.run_ignored,
        repeat: sel.repeat as usize,
        ..RunOptions::default()
    }
}

pub fn build_tests(a: &BuildTestsArgs) -> Exit {
    match manifest(&a.manifest, Some(Build::Cargo(&a.cargo_args))) {
        Ok(p) => {
            println!("{}", p.display());
            Exit::Ok
        }
        Err(e) => fail(e),
    }
}

/// Prints every selected case: binary (ioctl), memory type, serial/ignored marks, name.
pub fn list(sel: &Selection) -> Exit {
    let path = match manifest(&sel.manifest, sel.build.then_some(Build::Suite)) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let plan = match plan(&options(sel, path)) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{:<16} {:<16} {:<8} CASE", "IOCTL", "MEMTYPE", "FLAGS");
    for b in &plan.binaries {
        if let Some(e) = &b.error {
            let _ = writeln!(out, "{:<16} {:<16} {:<8} (cannot list: {e})", b.name, "-", "error");
        }
        for c in &b.cases {
            // `serial` runs alone; `key:K` never beside another case keyed K.
            let mut flags: Vec<String> = c.keys.iter().map(|k| format!("key:{k}")).collect();
            if c.serial {
                flags.insert(0, "serial".into());
            }
            if c.ignored {
                flags.push("ignored".into());
            }
            let flags = if flags.is_empty() { "-".into() } else { flags.join(",") };
            let _ = writeln!(
                out,
                "{:<16} {:<16} {:<8} {}",
                c.binary,
                c.variant.as_deref().unwrap_or("-"),
                flags,
                c.name
            );
        }
    }
    let _ = writeln!(out, "{} cases in {} binaries", plan.case_count(), plan.binaries.len());
    Exit::Ok
}

/// The runner's options from `run`'s arguments, building the tests first
/// when `--build` asks: shared with `flakes`, which runs the same selection.
pub fn run_options(a: &RunArgs) -> Result<RunOptions, Exit> {
    let path = manifest(&a.sel.manifest, a.sel.build.then_some(Build::Suite)).map_err(fail)?;
    let mut opts = options(&a.sel, path);
    if let Some(j) = a.jobs {
        opts.jobs = j.max(1);
    }
    opts.max_fail = a.max_fail.map(|n| n as usize);
    opts.timeout = Duration::from_secs(a.timeout);
    opts.stress_timeout = Duration::from_secs(a.stress_timeout);
    opts.hugepages = Some(a.hugepages);
    // The 1 GiB pool is raised (and memory compacted for it) only for a run that asks for those cases.
    opts.hugepages_1g = Some(if requests_1g(&a.sel.pick.mem) {
        a.hugepages_1g
    } else {
        0
    });
    opts.case_env.extend(case_env(&a.sel.pick.mem));
    opts.sysctls = a.sysctls.clone();
    opts.watch_kmsg = !a.no_kmsg;
    opts.announce_kmsg = a.announce_kmsg;
    opts.handle_signals = true;
    opts.known = crate::cli::known::host_expectations(&a.known).map_err(fail)?;
    Ok(opts)
}

pub fn run_cmd(a: &RunArgs) -> Exit {
    let opts = match run_options(a) {
        Ok(o) => o,
        Err(e) => return e,
    };

    let file = match &a.out.output {
        Some(p) => match std::fs::File::create(p) {
            Ok(f) => Some(f),
            Err(e) => return fail(format_args!("cannot create {}: {e}", p.display())),
        },
        None => None,
    };
    let mut stdout = Ktap::new(std::io::stdout());
    let mut to_file = file.map(|f| Ktap::new(std::io::BufWriter::new(f)));
    let mut progress = std::io::stderr()
        .is_terminal()
        .then(|| Progress::new(std::io::stderr()));
    let mut reporters: Vec<&mut dyn Reporter> = Vec::new();
    if let Some(p) = progress.as_mut() {
        reporters.push(p);
    }
    reporters.push(&mut stdout);
    if let Some(f) = to_file.as_mut() {
        reporters.push(f);
    }
    let started = std::time::Instant::now();
    let report = match execute(&opts, &mut reporters) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    drop(reporters);
    drop(to_file);
    a.out.write(&report, false);
    if a.sel.repeat > 1 {
        let flaky = flaky_lines(&report);
        eprintln!("uffdtest: {} flaky case(s) over {} passes", flaky.len(), a.sel.repeat);
        for l in flaky {
            eprintln!("  {l}");
        }
    }
    eprint!("{}", closing_summary(&report, started.elapsed()));
    Exit::from_report_code(report.exit_code())
}

/// What a run ends with on stderr: why cases skipped (reason → count), what
/// it changed on the machine (put back by now), how long it took, and the
/// counts again as the last line.
pub fn closing_summary(r: &Report, elapsed: Duration) -> String {
    let mut s = String::new();
    let skips = crate::gate::html::skip_reasons(r);
    if !skips.is_empty() {
        s.push_str("uffdtest: skipped, by reason:\n");
        for (reason, n) in skips {
            s.push_str(&format!("  {n:>5}  {reason}\n"));
        }
    }
    let declared: Vec<_> = r
        .leaves()
        .into_iter()
        .filter(|(_, t)| matches!(t.status, Status::Xfail | Status::Xpass))
        .collect();
    if !declared.is_empty() {
        s.push_str("uffdtest: declared known issues (known-issues.toml):\n");
        for (path, t) in declared {
            let reason = t.reason.as_deref().unwrap_or("");
            s.push_str(&format!(
                "  {} {}: {reason}\n",
                t.status.name().to_uppercase(),
                path.join(": ")
            ));
        }
    }
    for d in &r.diagnostics {
        s.push_str(&format!("uffdtest: {d}\n"));
    }
    s.push_str(&format!("uffdtest: elapsed {:.1} s\n", elapsed.as_secs_f64()));
    s.push_str(&format!("uffdtest: {}\n", r.totals().summary_line()));
    s
}
