//! `uffdtest`: maps subcommands onto the library's stages.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "uffdtest", version, about = "Test suite and harness for Linux userfaultfd")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the suite (or a selection) one case per process; KTAP on stdout.
    Run(uffdtest::cli::run::RunArgs),
    /// List the cases with their memory type and ioctl.
    List(uffdtest::cli::run::Selection),
    /// Build the test binaries and write the manifest `run` reads.
    BuildTests(uffdtest::cli::run::BuildTestsArgs),
    /// Boot a kernel under test in QEMU and run the suite in it; KTAP on stdout.
    Vm(uffdtest::cli::vm::VmArgs),
    /// Print qemu/uffd.config, or --check a kernel .config against it.
    Kconfig(uffdtest::cli::vm::KconfigArgs),
    /// Write docs/coverage.md: cases per ioctl × memory type, upstream cases → ours.
    Coverage(uffdtest::cli::coverage::CoverageArgs),
    /// Write docs/skips.md: each skip reason of real runs, the probe that decided it, how many cases.
    Skips(uffdtest::cli::skips::SkipsArgs),
    /// Show what the running kernel's userfaultfd supports.
    Caps(uffdtest::cli::caps::CapsArgs),
    /// Configure and build a kernel tree out-of-tree with qemu/uffd.config; prints the bzImage path.
    Build(uffdtest::cli::gate::BuildArgs),
    /// Judge a candidate run against a base run; exits 1 on any regression or new kernel splat.
    Compare(uffdtest::cli::gate::CompareArgs),
    /// Merge the reports of `--shard K/N` runs into one (KTAP on stdout; --json, --junit files).
    Merge(uffdtest::cli::gate::MergeArgs),
    /// One self-contained HTML page of a run's or a compare's JSON (ioctl × memory type matrix, failures).
    Report(uffdtest::cli::report::ReportArgs),
    /// Install the suite as a kselftest collection (for the kernel's run_kselftest.sh).
    Install(uffdtest::cli::install::InstallArgs),
    /// One `git bisect run` step: build, boot, run the cases; 0 good, 1 bad, 125 cannot test.
    Bisect(uffdtest::cli::gate::BisectArgs),
    /// Break the kernel on purpose, one catalogue entry at a time, and measure what the suite notices.
    Mutate(uffdtest::cli::mutate::MutateArgs),
    /// Hunt flaky cases: run the selection several times under a hostile load, name every case that changed outcome.
    Flakes(uffdtest::cli::flakes::FlakesArgs),
    /// Run a command (cargo test, a C selftest) under the flake hunter's load; its exit status, 0 or 1.
    Load(uffdtest::cli::load::LoadArgs),
    /// The bounce stress test (upstream uffd-stress, checking more); a soak with --duration.
    Stress(uffdtest::cli::stress::StressArgs),
    /// Fault round-trip latency and resolve rates per memory type (a table; --json).
    Bench(uffdtest::cli::stress::BenchArgs),
    /// `vm` from its options as JSON on stdin: how `bisect` runs the guest in a child.
    #[command(name = uffdtest::vm::options::CHILD_COMMAND, hide = true)]
    VmChild,
    /// The flake hunter's load in a process of its own, its config as JSON on stdin.
    #[command(name = uffdtest::stress::load_child::COMMAND, hide = true)]
    LoadChild,
}

fn main() -> ExitCode {
    if uffdtest::vm::init::is_guest_init() {
        uffdtest::cli::vm::guest_init();
    }
    let cli = Cli::try_parse().unwrap_or_else(|e| uffdtest::cli::parse_error(e));
    let exit = match cli.cmd {
        Cmd::Run(args) => uffdtest::cli::run::run_cmd(&args),
        Cmd::List(sel) => uffdtest::cli::run::list(&sel),
        Cmd::BuildTests(args) => uffdtest::cli::run::build_tests(&args),
        Cmd::Vm(args) => uffdtest::cli::vm::vm_cmd(&args),
        Cmd::Kconfig(args) => uffdtest::cli::vm::kconfig_cmd(&args),
        Cmd::Coverage(args) => uffdtest::cli::coverage::coverage_cmd(&args),
        Cmd::Skips(args) => uffdtest::cli::skips::skips_cmd(&args),
        Cmd::Caps(args) => uffdtest::cli::caps::caps_cmd(&args),
        Cmd::Build(args) => uffdtest::cli::gate::build(&args),
        Cmd::Compare(args) => uffdtest::cli::gate::compare(&args),
        Cmd::Merge(args) => uffdtest::cli::gate::merge(&args),
        Cmd::Report(args) => uffdtest::cli::report::report(&args),
        Cmd::Install(args) => uffdtest::cli::install::install(&args),
        Cmd::Bisect(args) => uffdtest::cli::gate::bisect(&args),
        Cmd::Mutate(args) => uffdtest::cli::mutate::mutate(&args),
        Cmd::Flakes(args) => uffdtest::cli::flakes::flakes(&args),
        Cmd::Load(args) => uffdtest::cli::load::load(&args),
        Cmd::Stress(args) => uffdtest::cli::stress::stress(&args),
        Cmd::Bench(args) => uffdtest::cli::stress::bench(&args),
        Cmd::VmChild => uffdtest::cli::vm::child_cmd(),
        Cmd::LoadChild => std::process::exit(uffdtest::stress::load_child::serve()),
    };
    exit.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vm_child_command_is_a_subcommand() {
        let cli = Cli::try_parse_from(["uffdtest", uffdtest::vm::options::CHILD_COMMAND]).unwrap();
        assert!(matches!(cli.cmd, Cmd::VmChild));
    }

    #[test]
    fn the_load_child_command_is_a_subcommand() {
        let cli = Cli::try_parse_from(["uffdtest", uffdtest::stress::load_child::COMMAND]).unwrap();
        assert!(matches!(cli.cmd, Cmd::LoadChild));
    }
}
