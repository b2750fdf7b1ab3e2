//! The real [`Steps`]: `uffdtest build`'s incremental build of the tree, and `uffdtest vm` in a child process.

use super::report::CResult;
use super::run::Steps;
use crate::gate::{bisect, build};
use crate::runner::result::Report;
use crate::vm::VmOptions;
use std::path::{Path, PathBuf};

/// Builds the tree with `build` and boots each image with `vm` (its kernel and report files set per run).
pub struct Kernel {
    pub build: build::BuildOpts,
    pub vm: VmOptions,
    /// The `uffdtest` that runs the VM child.
    pub exe: PathBuf,
}

impl Steps for Kernel {
    fn build(&mut self) -> Result<PathBuf, String> {
        build::build(&self.build).map(|b| b.image).map_err(|e| e.to_string())
    }

    fn run_suite(&mut self, image: &Path, logs: &Path, max_fail: Option<usize>) -> Result<Report, String> {
        let mut vm = self.vm.clone();
        vm.guest.max_fail = max_fail;
        bisect::vm_report(&self.exe, image, logs, &vm)
    }

    fn run_c(&mut self, _image: &Path, _logs: &Path) -> Option<CResult> {
        None
    }
}
