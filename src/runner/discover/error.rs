//! Why discovery failed: the manifest, cargo, or a binary's listing.

use crate::runner::elf::ElfError;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;

/// Why the suite's binaries or a binary's cases could not be found.
#[derive(Debug)]
pub enum DiscoverError {
    ManifestRead {
        path: PathBuf,
        source: io::Error,
    },
    ManifestParse {
        path: PathBuf,
        source: serde_json::Error,
    },
    ManifestWrite {
        path: PathBuf,
        source: io::Error,
    },
    /// Cargo could not be started.
    CargoSpawn {
        cargo: String,
        source: io::Error,
    },
    /// Cargo's JSON messages could not be read.
    CargoOutput(io::Error),
    CargoFailed {
        cargo: String,
        status: ExitStatus,
    },
    NoTestBinaries,
    Elf(ElfError),
    ListSpawn {
        path: PathBuf,
        source: io::Error,
    },
    ListTimeout {
        path: PathBuf,
        secs: u64,
    },
    ListFailed {
        path: PathBuf,
        status: ExitStatus,
        stderr: String,
    },
}

impl fmt::Display for DiscoverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use DiscoverError::*;
        match self {
            ManifestRead { path, source } => write!(
                f,
                "cannot read the test manifest {}: {source}; build it with `uffdtest build-tests` \
                 (or `uffdtest run --build`), or pass --manifest",
                path.display()
            ),
            ManifestParse { path, source } => write!(f, "{} is not a uffdtest manifest: {source}", path.display()),
            ManifestWrite { path, source } => write!(f, "cannot write the manifest {}: {source}", path.display()),
            CargoSpawn { cargo, source } => write!(
                f,
                "cannot run `{cargo} test --no-run`: {source}; is cargo installed (or pass --manifest)?"
            ),
            CargoOutput(e) => write!(f, "reading cargo's output: {e}"),
            CargoFailed { cargo, status } => {
                write!(f, "`{cargo} test --no-run` failed ({status}); fix the build first")
            }
            NoTestBinaries => f.write_str("cargo built no integration test binaries"),
            Elf(e) => e.fmt(f),
            ListSpawn { path, source } => write!(f, "cannot run {} --list: {source}", path.display()),
            ListTimeout { path, secs } => write!(f, "{} --list did not finish in {secs} s", path.display()),
            ListFailed { path, status, stderr } => write!(f, "{} --list failed ({status}): {stderr}", path.display()),
        }
    }
}

impl std::error::Error for DiscoverError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        use DiscoverError::*;
        match self {
            ManifestRead { source, .. }
            | ManifestWrite { source, .. }
            | CargoSpawn { source, .. }
            | ListSpawn { source, .. } => Some(source),
            CargoOutput(e) => Some(e),
            ManifestParse { source, .. } => Some(source),
            Elf(e) => Some(e),
            CargoFailed { .. } | NoTestBinaries | ListTimeout { .. } | ListFailed { .. } => None,
        }
    }
}

impl From<ElfError> for DiscoverError {
    fn from(e: ElfError) -> DiscoverError {
        DiscoverError::Elf(e)
    }
}

impl From<DiscoverError> for String {
    fn from(e: DiscoverError) -> String {
        e.to_string()
    }
}
