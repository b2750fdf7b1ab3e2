//! The guest's userspace: the static `/init` and test binaries, given or
//! built with cargo for a target whose binaries need no host libraries.

use super::options::VmOptions;
use crate::runner::discover::{self, Manifest};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

/// The Rust target the guest binaries are built for (static glibc).
pub const STATIC_TARGET: &str = "x86_64-unknown-linux-gnu";

/// Why there are no static binaries for the guest.
#[derive(Debug)]
pub enum StaticBuildError {
    /// cargo could not be started.
    Cargo {
        cargo: String,
        err: std::io::Error,
    },
    /// cargo ran and failed; its errors are on stderr already.
    Failed {
        status: ExitStatus,
        source: PathBuf,
    },
    /// cargo built, but named no `uffdtest` binary.
    NoInitBinary,
    /// With `--manifest` and no `--init`, this executable must be static.
    NoStaticInit,
    Dynamic(PathBuf),
    /// The runner could not read the manifest or cargo's messages, or an ELF file.
    Suite(String),
}

impl fmt::Display for StaticBuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StaticBuildError::Cargo { cargo, err } => write!(
                f,
                "cannot run {cargo}: {err}; install Rust, or pass --manifest with prebuilt static tests"
            ),
            StaticBuildError::Failed { status, source } => write!(
                f,
                "the static build failed ({status}) in {}: fix the errors above, or pass --manifest with prebuilt static tests",
                source.display()
            ),
            StaticBuildError::NoInitBinary => f.write_str("cargo did not report the uffdtest binary"),
            StaticBuildError::NoStaticInit => f.write_str(
                "no static uffdtest for the guest's /init: pass --init, or build without --manifest \
                 (RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build --target x86_64-unknown-linux-gnu)",
            ),
            StaticBuildError::Dynamic(p) => write!(
                f,
                "{} is dynamically linked and cannot run in the guest; build with \
                 RUSTFLAGS=\"-C target-feature=+crt-static\" --target {STATIC_TARGET}",
                p.display()
            ),
            StaticBuildError::Suite(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for StaticBuildError {}

fn suite(e: impl fmt::Display) -> StaticBuildError {
    StaticBuildError::Suite(e.to_string())
}

/// The static `/init` and test binaries: given, or built with cargo.
pub fn static_suite(o: &VmOptions) -> Result<(PathBuf, Manifest), StaticBuildError> {
    static_binaries(o.manifest.as_deref(), o.init.as_deref(), &o.source)
}

/// The static `uffdtest` and test binaries (paths absolute): those of
/// `manifest` if given, else built from `source`; `init` names the static
/// `uffdtest`, by default the built one or this executable if it is static.
/// Each is checked to be static. The guest's `/init` and `uffdtest install`
/// both take theirs from here.
pub fn static_binaries(
    manifest: Option<&Path>,
    init: Option<&Path>,
    source: &Path,
) -> Result<(PathBuf, Manifest), StaticBuildError> {
    let (built_init, manifest) = match manifest {
        Some(m) => {
            let mut man = Manifest::load(m).map_err(suite)?;
            for b in &mut man.binaries {
                b.path = Manifest::resolve(m, b);
            }
            (None, man)
        }
        None => {
            let (init, man) = build_static(source)?;
            (Some(init), man)
        }
    };
    let this = std::env::current_exe()
        .ok()
        .filter(|e| crate::runner::elf::is_static(e).unwrap_or(false));
    let init = init
        .map(Path::to_path_buf)
        .or(built_init)
        .or(this)
        .ok_or(StaticBuildError::NoStaticInit)?;
    for p in std::iter::once(&init).chain(manifest.binaries.iter().map(|b| &b.path)) {
        if !crate::runner::elf::is_static(p).map_err(suite)? {
            return Err(StaticBuildError::Dynamic(p.clone()));
        }
    }
    Ok((init, manifest))
}

/// `cargo test --no-run` for the static gnu target: the test binaries and
/// the `uffdtest` binary itself (cargo builds it for the integration tests).
/// Debug info and symbols are left out: they would triple the initramfs,
/// which the guest unpacks before anything runs (seconds under TCG).
/// Optimised (debug assertions stay on): under TCG unoptimised code made the
/// stress cases run for many minutes each.
///
/// Not position-independent (`-C relocation-model=static`): under TCG, QEMU
/// keys the code it has translated on the guest's virtual address, so a
/// static-pie loaded at a fresh random address by every exec had all the
/// code it ran translated anew, each case's process start included. In a
/// 6.12 guest a test binary took 51 ms to run one case as static-pie and
/// 11 ms as a static executable at a fixed address; the areas the cases map
/// stay randomised.
///
/// The build goes to its own target directory, `<target>/uffdtest-vm`, so a
/// `uffdtest vm` started from `cargo test` never waits on the outer cargo's
/// lock, and the static flags never invalidate the host build.
pub fn build_static(source: &Path) -> Result<(PathBuf, Manifest), StaticBuildError> {
    let base = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| source.join("target"));
    let target_dir = base.join("uffdtest-vm");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let rustflags = format!(
        "{} -C target-feature=+crt-static -C relocation-model=static",
        std::env::var("RUSTFLAGS").unwrap_or_default()
    );
    eprintln!("uffdtest: building the suite's static binaries (cargo test --no-run --target {STATIC_TARGET})");
    let out = Command::new(&cargo)
        .current_dir(source)
        .args([
            "test",
            "--no-run",
            "--tests",
            "--target",
            STATIC_TARGET,
            "--message-format=json-render-diagnostics",
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("RUSTFLAGS", rustflags.trim())
        .env("CARGO_PROFILE_DEV_DEBUG", "false")
        .env("CARGO_PROFILE_DEV_OPT_LEVEL", "2")
        .env("CARGO_PROFILE_DEV_STRIP", "symbols")
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output();
    let out = match out {
        Ok(out) => out,
        Err(err) => return Err(StaticBuildError::Cargo { cargo, err }),
    };
    if !out.status.success() {
        return Err(StaticBuildError::Failed {
            status: out.status,
            source: source.to_path_buf(),
        });
    }
    let exes = discover::executables(&out.stdout[..]).map_err(suite)?;
    let init = init_binary(&exes).ok_or(StaticBuildError::NoInitBinary)?;
    Ok((init, discover::suite_manifest(exes)))
}

/// The `uffdtest` binary among cargo's executables: not the bin's own
/// unit-test harness, which `cargo test` also builds.
fn init_binary(exes: &[discover::Executable]) -> Option<PathBuf> {
    exes.iter()
        .find(|e| e.name == "uffdtest" && e.is_bin && !e.harness)
        .map(|e| e.path.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_is_the_bin_not_its_test_harness() {
        let messages = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/cargo/test-no-run.jsonl"
        ))
        .unwrap();
        let exes = discover::executables(&messages[..]).unwrap();
        assert!(
            exes.iter().any(|e| e.name == "uffdtest" && e.harness),
            "the fixture has the bin's harness too"
        );
        assert_eq!(
            init_binary(&exes),
            Some(PathBuf::from("/src/uffdtest/target/debug/uffdtest"))
        );
        assert_eq!(init_binary(&exes[..0]), None);
    }
}
