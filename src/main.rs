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
    /// Show what the running kernel's userfaultfd supports.
    Caps {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Caps { json } => {
            if json {
                println!("{}", uffdtest::cli::caps::json());
            } else {
                print!("{}", uffdtest::cli::caps::table());
            }
            ExitCode::SUCCESS
        }
    }
}
