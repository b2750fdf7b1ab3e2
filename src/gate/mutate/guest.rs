//! The real [`Steps`]: `uffdtest build`'s incremental build of the tree, `uffdtest vm` in a child process, and
//! with `--compare-c` the kernel's C selftests in a guest of their own.

use super::csuite::{CRun, CSuite};
use super::run::{StepError, Steps, SuiteLimits};
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
    /// `--compare-c`: the kernel's C selftests and their guest.
    pub c: Option<CSuite>,
}

impl Steps for Kernel {
    fn build(&mut self) -> Result<PathBuf, StepError> {
        build::build(&self.build).map(|b| b.image).map_err(StepError::Build)
    }

    fn run_suite(&mut self, image: &Path, logs: &Path, limits: &SuiteLimits) -> Result<Report, StepError> {
        let mut vm = self.vm.clone();
        vm.guest.max_fail = limits.max_fail;
        vm.guest.skip.extend_from_slice(&limits.skip);
        vm.guest.first = limits.first.clone();
        bisect::vm_report(&self.exe, image, logs, &vm).map_err(StepError::Vm)
    }

    fn wants_c(&self) -> bool {
        self.c.is_some()
    }

    fn run_c(&mut self, image: &Path, logs: &Path, stop_on: &[String]) -> Result<CRun, StepError> {
        let c = self.c.as_mut().ok_or(StepError::NotAsked)?;
        c.run(image, logs, stop_on).map_err(StepError::C)
    }
}
