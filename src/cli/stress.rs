//! `uffdtest stress` and `uffdtest bench`: arguments and presentation.

use crate::cli::Exit;
use crate::mem::MemType;
use crate::stress::bounce::{Config, Failure, parse_duration, parse_size};
use std::io::IsTerminal;
use std::time::Duration;

/// `uffdtest stress`: the bounce test (a soak with --duration).
#[derive(clap::Args, Debug)]
pub struct StressArgs {
    /// Memory type: anon, shmem, shmem-private, hugetlb, hugetlb-private, anon-thp.
    #[arg(long, default_value = "anon")]
    pub mem: MemType,
    /// Bytes per area, with K, M or G (a bare number is MiB).
    #[arg(long, default_value = "32M", value_parser = parse_size)]
    pub size: usize,
    /// Number of bounces (default 16, unlimited with --duration).
    #[arg(long)]
    pub bounces: Option<u64>,
    /// Run until this much time has passed (e.g. 90s, 10m): the soak, which
    /// also mixes in fork, mremap and MADV_DONTNEED with their events.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Worker threads per CPU.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Print only the result (and errors).
    #[arg(long, short)]
    pub quiet: bool,
    /// Print the totals as JSON at the end.
    #[arg(long)]
    pub json: bool,
}

/// Runs `uffdtest stress`; exit 0 pass, 1 findings, 4 skip (kselftest), 2 setup.
pub fn stress(a: &StressArgs) -> Exit {
    let soak = a.duration.is_some();
    let cfg = Config {
        mem: a.mem,
        size: a.size,
        bounces: if soak { a.bounces } else { Some(a.bounces.unwrap_or(16)) },
        duration: a.duration,
        threads: a.threads,
        quiet: a.quiet,
        soak,
        progress: (soak && std::io::stdout().is_terminal()).then_some(Duration::from_secs(5)),
    };
    let mut out = std::io::stdout();
    let r = if soak {
        crate::stress::soak::run(&cfg, &mut out)
    } else {
        crate::stress::bounce::run(&cfg, &mut out)
    };
    match r {
        Ok(t) => {
            if a.json {
                println!("{}", serde_json::to_string_pretty(&t).unwrap_or_default());
            } else if !a.quiet || soak {
                println!("PASS: {}", t.line());
            }
            Exit::Ok
        }
        Err(Failure::Skip(r)) => {
            println!("SKIP: {r}");
            Exit::AllSkipped
        }
        Err(f @ Failure::Setup(_)) => Exit::CouldNotRun.because("uffdtest stress", f),
        Err(Failure::Errors(errs, t)) => {
            eprintln!("FAIL: {}", t.line());
            for e in &errs {
                eprintln!("  {e}");
            }
            if t.errors as usize > errs.len() {
                eprintln!("  ... and {} more", t.errors as usize - errs.len());
            }
            if a.json {
                println!("{}", serde_json::to_string_pretty(&*t).unwrap_or_default());
            }
            Exit::Failure
        }
    }
}

/// `uffdtest bench`: fault round trips and resolve rates per memory type.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Memory types to measure (repeatable; default: the selftests' five and anon-thp).
    #[arg(long)]
    pub mem: Vec<MemType>,
    /// Base pages per measurement (hugetlb uses 1/256 of it, at least 8).
    #[arg(long, default_value_t = 8192)]
    pub pages: usize,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Instead: run the whole suite (or `--mem`'s cases) and say where its
    /// time goes: process start, probes, the cases' own work, the runner.
    #[arg(long)]
    pub suite: bool,
    /// With --suite: build the test binaries first, as `run --build` does.
    #[arg(long, requires = "suite")]
    pub build: bool,
    /// With --suite: also time this program (say the kernel's
    /// `uffd-unit-tests`), interleaved with the suite round by round, and
    /// report both medians and their ratios. Arguments follow it after `--`.
    #[arg(long, requires = "suite", value_name = "PROGRAM")]
    pub against: Option<std::path::PathBuf>,
    /// Rounds for --against and --guest.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Instead: boot IMAGE and time the whole suite's verdict in the guest (`uffdtest vm`, QEMU's start to the
    /// verdict) beside the kernel's own C selftests built from --c-tree and booted the same way, round by round.
    /// Arguments after `--` go to `uffdtest vm` (say `-j 2`).
    #[arg(long, value_name = "IMAGE", conflicts_with = "suite", requires = "c_tree")]
    pub guest: Option<std::path::PathBuf>,
    /// With --guest: the kernel tree the image was built from (its tools/testing/selftests/mm).
    #[arg(long, value_name = "DIR", requires = "guest")]
    pub c_tree: Option<std::path::PathBuf>,
    /// Arguments for the --against program, or with --guest for `uffdtest vm`.
    #[arg(last = true)]
    pub against_args: Vec<String>,
}

/// Runs `uffdtest bench`; exit 1 if a measurement failed (not skipped).
pub fn bench(a: &BenchArgs) -> Exit {
    if let (Some(image), Some(tree)) = (&a.guest, &a.c_tree) {
        return crate::cli::bench_guest::guest(image, tree, a.rounds, &a.against_args, a.json);
    }
    if a.suite {
        let against = a
            .against
            .as_ref()
            .map(|p| crate::cli::bench_suite::Against::new(p, &a.against_args, a.rounds));
        return crate::cli::bench_suite::suite(&a.mem, a.build, a.json, against);
    }
    let mems = if a.mem.is_empty() {
        // Every type but guest-memfd, which needs KVM and is not a selftest
        // type, and the 1 GiB hugetlb types, whose 8-page minimum is 8 GiB.
        MemType::ALL
            .into_iter()
            .filter(|m| *m != MemType::GuestMemfd && m.hugetlb_pool() != Some(crate::mem::hugetlb::PageSize::Gigantic))
            .collect()
    } else {
        a.mem.clone()
    };
    let rows: Vec<_> = mems.iter().map(|&m| crate::stress::bench::row(m, a.pages)).collect();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows).unwrap_or_default());
    } else {
        print!("{}", crate::stress::bench::table(&rows));
    }
    let failed = serde_json::to_string(&rows).unwrap_or_default().contains("\"error: ");
    Exit::failed_if(failed)
}
