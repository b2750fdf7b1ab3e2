//! Boots a kernel under test in QEMU with the suite as its initramfs and
//! judges it: [`kconfig`] → [`build`] → [`initramfs`] → [`boot`] →
//! [`session`] ([`console`]) → [`verdict`], driven by [`run`]; [`init`] is
//! the runner as PID 1 in the guest; [`vng`] is the same run through
//! virtme-ng.

pub mod boot;
pub mod build;
pub mod console;
pub mod error;
pub mod init;
pub mod initramfs;
pub mod kconfig;
pub mod options;
pub mod run;
pub mod session;
pub mod verdict;
pub mod vng;

pub use error::VmError;
pub use options::{ReportFiles, Runner, VmOptions};

/// `uffdtest vm`: the run with its KTAP on stdout, a summary, the report
/// files. Ok is the report that decides the exit; Err says why there is
/// none worth judging. `known`: declared known issues, judged by the
/// guest's release (QEMU; under vng the guest's own `uffdtest run` reads
/// its known-issues file).
pub fn run_and_report(
    o: &VmOptions,
    known: Option<&crate::runner::known::KnownIssues>,
) -> Result<crate::runner::Report, VmError> {
    match o.runner {
        Runner::Qemu => run::run_and_report(o, known),
        Runner::Vng => vng::run_and_report(o),
    }
}
