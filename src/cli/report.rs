//! `uffdtest report`: a run's or a compare's JSON as one HTML page.

use crate::cli::Exit;
use crate::gate::html;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// A run's JSON (`run`/`vm`/`merge --json`) or a compare's (`compare --format json`).
    pub input: PathBuf,
    /// Where the page goes [default: stdout].
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// The page's title [default: the input's file name].
    #[arg(long)]
    pub title: Option<String>,
}

/// Exit 0 when written, 2 when the input cannot be read.
pub fn report(a: &ReportArgs) -> Exit {
    let fail = |e: &dyn std::fmt::Display| Exit::CouldNotRun.because("uffdtest report", e);
    let text = match std::fs::read_to_string(&a.input) {
        Ok(t) => t,
        Err(e) => return fail(&format_args!("{}: {e}", a.input.display())),
    };
    let title = a.title.clone().unwrap_or_else(|| {
        a.input
            .file_name()
            .map_or_else(String::new, |f| f.to_string_lossy().into_owned())
    });
    let page = match html::read(&text) {
        Ok(html::Input::Run(r)) => html::run_page(&r, &title),
        Ok(html::Input::Compare(c)) => html::compare_page(&c, &title),
        Err(e) => {
            return fail(&format_args!(
                "{}: neither a run's nor a compare's JSON: {e}",
                a.input.display()
            ));
        }
    };
    match &a.output {
        Some(p) => match std::fs::write(p, page) {
            Ok(()) => Exit::Ok,
            Err(e) => fail(&format_args!("{}: {e}", p.display())),
        },
        None => {
            print!("{page}");
            Exit::Ok
        }
    }
}
