//! The only place that parses arguments and maps outcomes to exit codes.

pub mod caps;
pub mod coverage;
pub mod gate;
pub mod run;
pub mod stress;
pub mod vm;

/// Command-line mistakes exit 2, which `git bisect run` would take for "bad" at every commit: for `bisect` they
/// exit 255 instead, which stops the bisection.
pub fn parse_error(e: clap::Error) -> ! {
    if e.use_stderr() && std::env::args().nth(1).as_deref() == Some("bisect") {
        let _ = e.print();
        eprintln!("uffdtest bisect: exiting 255 so that `git bisect run` stops instead of marking commits bad");
        std::process::exit(255);
    }
    e.exit()
}
