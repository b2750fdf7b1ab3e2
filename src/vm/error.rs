//! Why a VM run gave no verdict on the kernel.

use super::boot::{KernelError, QEMU};
use super::build::StaticBuildError;
use super::session::GuestEnd;
use std::fmt;
use std::path::PathBuf;

#[derive(Debug)]
pub enum VmError {
    /// The kernel to boot is missing or not a bootable image.
    Kernel(KernelError),
    NoQemu,
    /// The build tree's `.config` lacks options the suite needs.
    MissingOptions {
        config: PathBuf,
        options: Vec<String>,
    },
    /// The static guest binaries could not be built or used.
    Build(StaticBuildError),
    /// The runner could not read, list or plan the suite.
    Runner(String),
    NothingSelected,
    /// A file or process the run needs could not be made.
    Io {
        what: String,
        err: std::io::Error,
    },
    /// The guest init ran no case; what it reported is already on stderr.
    GuestRanNothing,
    /// Not a word on the console: the image boots no x86_64 kernel with a serial console.
    NoKernelOutput {
        end: GuestEnd,
        kernel: PathBuf,
    },
    /// What vng lacks on this host, each with its fix.
    VngMissing(Vec<String>),
    NoManifest(PathBuf),
    /// vng exited (with this code) and the guest wrote no KTAP.
    VngNoKtap(i32),
}

impl VmError {
    /// The runner's own error, whatever its type.
    pub fn runner(e: impl fmt::Display) -> VmError {
        VmError::Runner(e.to_string())
    }

    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> VmError {
        let what = what.into();
        move |err| VmError::Io { what, err }
    }
}

impl fmt::Display for VmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmError::Kernel(e) => e.fmt(f),
            VmError::NoQemu => write!(
                f,
                "{QEMU} not found on PATH; install it (Debian/Ubuntu: apt-get install qemu-system-x86)"
            ),
            VmError::MissingOptions { config, options } => write!(
                f,
                "{} lacks options the suite needs: {}; merge qemu/uffd.config and rebuild (see `uffdtest kconfig --check`)",
                config.display(),
                options.join(" ")
            ),
            VmError::Build(e) => e.fmt(f),
            VmError::Runner(e) => f.write_str(e),
            VmError::NothingSelected => f.write_str("no case matched the selection"),
            VmError::Io { what, err } => write!(f, "{what}: {err}"),
            VmError::GuestRanNothing => f.write_str("the guest init ran no case"),
            VmError::NoKernelOutput { end, kernel } => write!(
                f,
                "the kernel printed nothing on ttyS0 ({end}); is {} a bootable x86_64 kernel with \
                 CONFIG_SERIAL_8250_CONSOLE=y?",
                kernel.display()
            ),
            VmError::VngMissing(m) => write!(f, "--runner vng cannot run here:\n  {}", m.join("\n  ")),
            VmError::NoManifest(p) => write!(f, "no test manifest at {}: pass --build or --manifest", p.display()),
            VmError::VngNoKtap(status) => write!(
                f,
                "vng exited {status} without KTAP: the guest did not run the suite (255 means the guest panicked or \
                 could not mount its root; rerun vng by hand with --verbose to see the console)"
            ),
        }
    }
}

impl std::error::Error for VmError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            VmError::Kernel(e) => Some(e),
            VmError::Build(e) => Some(e),
            VmError::Io { err, .. } => Some(err),
            _ => None,
        }
    }
}

impl From<KernelError> for VmError {
    fn from(e: KernelError) -> VmError {
        VmError::Kernel(e)
    }
}

impl From<StaticBuildError> for VmError {
    fn from(e: StaticBuildError) -> VmError {
        VmError::Build(e)
    }
}
