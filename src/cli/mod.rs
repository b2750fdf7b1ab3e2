//! The only place that parses arguments and maps outcomes to exit codes.

pub mod bench_guest;
pub mod bench_suite;
pub mod caps;
pub mod coverage;
pub mod exit;
pub mod flakes;
pub mod gate;
pub mod install;
pub mod known;
pub mod load;
pub mod mutate;
pub mod report;
pub mod run;
pub mod skips;
pub mod stress;
pub mod vm;

pub use exit::Exit;

/// Command-line mistakes exit 2 ([`Exit::CouldNotRun`]), which `git bisect run` would take for "bad" at every
/// commit: for `bisect` they exit [`Exit::BisectAbort`] instead, which stops the bisection.
pub fn parse_error(e: clap::Error) -> ! {
    if e.use_stderr() && std::env::args().nth(1).as_deref() == Some("bisect") {
        let _ = e.print();
        let code = Exit::BisectAbort.code();
        eprintln!("uffdtest bisect: exiting {code} so that `git bisect run` stops instead of marking commits bad");
        std::process::exit(code.into());
    }
    e.exit()
}
