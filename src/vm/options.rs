//! What one `uffdtest vm` run is asked to do: filled from the command line
//! by the CLI, built directly by `bisect`, serialised when a child runs it.

use super::boot::AccelChoice;
use super::init::GuestConfig;
use crate::runner::Report;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

/// The subcommand that runs [`VmOptions`] read as JSON from stdin: how
/// `bisect` starts the VM in a child process it can outlive.
pub const CHILD_COMMAND: &str = "vm-options";

/// How the guest is booted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Runner {
    /// QEMU with the harness's own initramfs.
    Qemu,
    /// virtme-ng (`vng --run KERNEL --exec ...`), sharing the host's root.
    Vng,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmOptions {
    /// A bzImage/vmlinuz, or a kernel build tree.
    pub kernel: PathBuf,
    pub runner: Runner,
    pub accel: AccelChoice,
    pub memory_mib: u32,
    pub cpus: u32,
    /// Kill a guest that prints nothing (console or KTAP) for this long.
    pub timeout: Duration,
    pub console_log: Option<PathBuf>,
    /// Echo the kernel console to stderr as it comes.
    pub show_console: bool,
    pub guest: GuestConfig,
    /// A manifest of already built test binaries (static for QEMU); None
    /// builds them for QEMU, and means the default manifest for vng.
    pub manifest: Option<PathBuf>,
    /// vng: build the host's test binaries into the manifest first.
    pub build_tests: bool,
    /// The static `uffdtest` for `/init`; None uses this executable if it is
    /// static, else the one the build produces.
    pub init: Option<PathBuf>,
    /// The cargo project to build from.
    pub source: PathBuf,
    /// Extra kernel parameters.
    pub append: Vec<String>,
    pub reports: ReportFiles,
}

/// Files the final report goes to, besides the KTAP on stdout.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReportFiles {
    pub ktap: Option<PathBuf>,
    pub junit: Option<PathBuf>,
    pub json: Option<PathBuf>,
    /// KCIDB I/O JSON, with what it says of the kernel and the run.
    #[serde(default)]
    pub kcidb: Option<PathBuf>,
    #[serde(skip)]
    pub kcidb_submission: Option<crate::runner::kcidb::Submission>,
}

impl ReportFiles {
    /// These files, with the KCIDB checkout naming `kernel` (a release or an image) and the run as `comment`.
    pub fn with_kernel(&self, kernel: &str, comment: &str) -> ReportFiles {
        let mut s = crate::runner::kcidb::Submission::running_kernel(comment);
        s.kernel = kernel.to_string();
        ReportFiles {
            kcidb_submission: Some(s),
            ..self.clone()
        }
    }

    /// Writes the finished report to the files asked for; the KTAP file only
    /// when `ktap` (`uffdtest run` streams it there as the cases end).
    pub fn write(&self, r: &Report, ktap: bool) {
        let mut text = Vec::new();
        if ktap {
            let _ = crate::runner::write_ktap(&mut text, r);
            let _ = writeln!(text, "{}", r.totals().summary_line());
        }
        let writes = [
            (
                self.ktap.as_ref().filter(|_| ktap),
                String::from_utf8_lossy(&text).into_owned(),
            ),
            (self.junit.as_ref(), crate::runner::report::junit(r)),
            (self.json.as_ref(), crate::runner::report::json(r)),
            (
                self.kcidb.as_ref(),
                self.kcidb.as_ref().map_or_else(String::new, |_| {
                    let s = self
                        .kcidb_submission
                        .clone()
                        .unwrap_or_else(|| crate::runner::kcidb::Submission::running_kernel("uffdtest run"));
                    crate::runner::kcidb::to_string(r, &s)
                }),
            ),
        ];
        for (path, text) in writes {
            if let Some(p) = path
                && let Err(e) = std::fs::write(p, text)
            {
                eprintln!("uffdtest: cannot write {}: {e}", p.display());
            }
        }
    }
}
