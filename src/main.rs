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
    /// Show what the running kernel's userfaultfd supports.
    Caps {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The bounce stress test (upstream uffd-stress, checking more); a soak with --duration.
    Stress(uffdtest::stress::cli::StressArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Run(args) => uffdtest::cli::run::run_cmd(&args),
        Cmd::List(sel) => uffdtest::cli::run::list(&sel),
        Cmd::BuildTests(args) => uffdtest::cli::run::build_tests(&args),
        Cmd::Caps { json } => {
            if json {
                println!("{}", uffdtest::cli::caps::json());
            } else {
                print!("{}", uffdtest::cli::caps::table());
            }
            ExitCode::SUCCESS
        }
        Cmd::Stress(args) => uffdtest::stress::cli::stress(&args),
    }
}
