//! `uffdtest load -- COMMAND`: a command run on the flake hunter's hostile
//! machine (every CPU busy, memory churned through reclaim, compaction,
//! khugepaged without sleep), for what `uffdtest flakes` cannot run itself:
//! `cargo test`, an upstream selftest. The THP policy stays as the machine
//! has it: it must never change while a case runs, and one command has no
//! passes to change it between.

use crate::cli::Exit;
use crate::runner::env::{catch_signals, interrupted};
use crate::stress::hostile::{Hostile, totals_line};
use crate::stress::load::LoadConfig;
use clap::Args;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct LoadArgs {
    /// Memory the load churns through reclaim, in MiB [default: an eighth of MemAvailable].
    #[arg(long, value_name = "MIB")]
    pub memory: Option<usize>,
    /// The command to run under load, and its arguments (after `--`).
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<String>,
}

/// Exit 0 when the command exits 0, 1 when it fails or dies, 2 when the load
/// or the command cannot start, 130 when stopped by a signal (the command is
/// sent SIGTERM, and the knobs are put back either way).
pub fn load(a: &LoadArgs) -> Exit {
    // Before the load's threads start: a Ctrl-C must reach the signal thread,
    // not kill the process with khugepaged's knobs still set.
    if let Err(e) = catch_signals() {
        return Exit::CouldNotRun.because("uffdtest load", e);
    }
    let mut cfg = LoadConfig::hostile();
    if let Some(m) = a.memory {
        cfg.memory_bytes = m << 20;
    }
    let hostile = match Hostile::start(&cfg) {
        Ok(h) => h,
        Err(e) => return Exit::CouldNotRun.because("uffdtest load", e),
    };
    eprintln!("uffdtest load: on: {}", hostile.describe());
    let exit = run(&a.command);
    eprintln!("uffdtest load: {}", totals_line(&hostile.stop()));
    exit
}

fn run(command: &[String]) -> Exit {
    let mut cmd = std::process::Command::new(&command[0]);
    cmd.args(&command[1..]);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Exit::CouldNotRun.because("uffdtest load", format_args!("cannot run {}: {e}", command[0])),
    };
    let mut told = false;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if told => {
                eprintln!("uffdtest load: stopped; {} {status}", command[0]);
                return Exit::Interrupted;
            }
            Ok(Some(status)) => {
                if !status.success() {
                    eprintln!("uffdtest load: {} {status}", command[0]);
                }
                return Exit::failed_if(!status.success());
            }
            Ok(None) => {}
            Err(e) => {
                return Exit::CouldNotRun.because("uffdtest load", format_args!("waiting for {}: {e}", command[0]));
            }
        }
        if interrupted() && !told {
            // The signal went to us alone (the terminal's Ctrl-C reaches the child too).
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            told = true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
