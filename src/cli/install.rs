//! `uffdtest install`: the suite as a kselftest collection.

use crate::cli::Exit;
use crate::gate::kselftest::{self, InstallOptions};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct InstallArgs {
    /// The kselftest install directory (INSTALL_PATH): gets kselftest-list.txt and the uffdtest/ collection.
    pub dir: PathBuf,
    /// Prebuilt static test binaries (a manifest); default: build them statically from --source.
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    /// The static uffdtest to install (default: the one the build produces, or this one if static).
    #[arg(long, value_name = "FILE")]
    pub init: Option<PathBuf>,
    /// The cargo project to build the static binaries from.
    #[arg(long, value_name = "DIR", default_value = env!("CARGO_MANIFEST_DIR"))]
    pub source: PathBuf,
    /// The collection's `settings` timeout: seconds one test binary's cases may take in all.
    #[arg(long, default_value_t = kselftest::DEFAULT_TIMEOUT_SECS, value_name = "SECS")]
    pub timeout: u64,
    /// Also pack DIR as a gzipped tarball (one artefact for LAVA or LKP).
    #[arg(long, value_name = "FILE")]
    pub tar: Option<PathBuf>,
    /// Arguments every launcher passes to `uffdtest run` (e.g. -- --jobs 1).
    #[arg(last = true)]
    pub run_args: Vec<String>,
}

/// Exit 0 when installed, 2 when the build or a write failed.
pub fn install(a: &InstallArgs) -> Exit {
    let opts = InstallOptions {
        dir: a.dir.clone(),
        manifest: a.manifest.clone(),
        init: a.init.clone(),
        source: a.source.clone(),
        timeout_secs: a.timeout,
        run_args: a.run_args.clone(),
        // The launchers' `uffdtest run` reads the known issues from its cwd, the collection.
        data_files: Some(a.source.join(crate::cli::known::DEFAULT_FILE))
            .filter(|p| p.exists())
            .into_iter()
            .collect(),
    };
    let done = match kselftest::install(&opts) {
        Ok(d) => d,
        Err(e) => return Exit::CouldNotRun.because("uffdtest install", e),
    };
    eprintln!(
        "uffdtest install: {} launchers ({} cases) in {}, listed in {}; run them with the kernel's \
         run_kselftest.sh -c {}",
        done.tests.len(),
        done.cases,
        done.collection.display(),
        a.dir.join(kselftest::LIST_NAME).display(),
        kselftest::COLLECTION
    );
    if let Some(t) = &a.tar {
        if let Err(e) = kselftest::tarball(&a.dir, t) {
            return Exit::CouldNotRun.because("uffdtest install", e);
        }
        eprintln!("uffdtest install: packed {} as {}", a.dir.display(), t.display());
    }
    Exit::Ok
}
