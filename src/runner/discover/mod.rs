//! Finds the test binaries and their cases without cargo at run time.
//!
//! At build time `uffdtest build-tests` (or `run --build`) runs
//! `cargo test --no-run --message-format=json` and writes a manifest next to
//! the runner: JSON listing each integration-test binary by name and path
//! relative to the manifest, so the tree can be copied anywhere (the VM
//! harness copies it into the initramfs). At run time each binary lists its
//! cases with libtest's `--list --format terse` (nextest's contract).
//!
//! What belongs to the suite: every integration test target except those
//! named `harness_*`, which test the harness itself (they inject fake kernel
//! warnings and hang on purpose) and must not run inside the suite.
//!
//! Serial cases: a case runs alone (never beside another, even with
//! `--jobs`) when any `::` segment of its libtest name is `serial` or starts
//! with `serial_`, or names a function or module that carries a keyless
//! serial_test attribute (`#[serial]`, `#[file_serial]`) or one with a key in
//! [`ALONE_KEYS`]. A keyed attribute (`#[serial(thp)]`, `#[file_serial(ksm)]`)
//! only keeps cases sharing a key apart, as serial_test does under plain
//! `cargo test`. The manifest records both at build time from the target's
//! source. Keys that only matter inside one test process
//! ([`PROCESS_LOCAL_KEYS`]) do not count.

mod cargo;
mod cases;
mod error;

pub use cargo::{
    ALONE_KEYS, Executable, PROCESS_LOCAL_KEYS, SerialItem, build_manifest, executables, from_cargo_messages,
    serial_items, suite_manifest,
};
pub use cases::{Case, is_serial, ktap_name, list_cases, listing, serial_keys};
pub use error::DiscoverError;

use cases::current_listing;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The manifest's file name, next to the `uffdtest` binary by default.
pub const MANIFEST_NAME: &str = "uffdtest-tests.json";

/// Targets with this prefix test the harness and are left out of the suite.
pub const HARNESS_PREFIX: &str = "harness_";
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub binaries: Vec<Binary>,
}

/// One test binary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Binary {
    /// The cargo target name (`api`, `copy`): the KTAP subtest block, and the
    /// ioctl or feature `--ioctl` selects.
    pub name: String,
    /// Relative to the manifest's directory (absolute paths are kept as given).
    pub path: PathBuf,
    /// Functions and modules a serial_test attribute makes run alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub serial: Vec<String>,
    /// Functions and modules a keyed serial_test attribute orders, with
    /// their keys: two cases sharing a key never run at once.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub keys: BTreeMap<String, Vec<String>>,
    /// The cases as listed when the manifest was written. A run trusts it
    /// while the binary's build ID matches, so it starts without spawning
    /// every binary twice to list it (seconds in a TCG guest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listing: Option<Listing>,
}

/// A binary's libtest listing, tied to the build it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Listing {
    /// GNU build ID of the binary listed.
    pub build_id: String,
    /// Every case, `#[ignore]`d ones included, in libtest's order.
    pub tests: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored: Vec<String>,
}

impl Manifest {
    /// Reads a manifest; binary paths stay relative (see [`Manifest::resolve`]).
    pub fn load(path: &Path) -> Result<Manifest, DiscoverError> {
        let text = std::fs::read_to_string(path).map_err(|source| DiscoverError::ManifestRead {
            path: path.into(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| DiscoverError::ManifestParse {
            path: path.into(),
            source,
        })
    }

    /// Writes the manifest; paths are stored relative to its directory where they can be.
    pub fn write(&self, path: &Path) -> Result<(), DiscoverError> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut m = self.clone();
        for b in &mut m.binaries {
            if let Ok(rel) = b.path.strip_prefix(dir) {
                b.path = rel.to_path_buf();
            }
        }
        let text = serde_json::to_string_pretty(&m).expect("manifest serialises");
        std::fs::write(path, text + "\n").map_err(|source| DiscoverError::ManifestWrite {
            path: path.into(),
            source,
        })
    }

    /// Lists every binary whose recorded listing is missing or stale into
    /// the manifest (see [`Binary::listing`]); `manifest` is where the
    /// manifest is or will be saved.
    pub fn record_listings(&mut self, manifest: &Path) -> Result<(), DiscoverError> {
        for b in &mut self.binaries {
            let path = Manifest::resolve(manifest, b);
            if current_listing(b, &path).is_none() {
                b.listing = listing(&path)?;
            }
        }
        Ok(())
    }

    /// The absolute path of a binary listed in the manifest at `manifest`.
    pub fn resolve(manifest: &Path, b: &Binary) -> PathBuf {
        if b.path.is_absolute() {
            b.path.clone()
        } else {
            manifest.parent().unwrap_or(Path::new(".")).join(&b.path)
        }
    }
}

/// The manifest next to the running `uffdtest` executable, where
/// `build-tests` writes it by default.
pub fn default_manifest() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join(MANIFEST_NAME)))
        .unwrap_or_else(|| PathBuf::from(MANIFEST_NAME))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_paths_are_relative_to_the_manifest() {
        let dir = std::env::temp_dir().join(format!("uffdtest-manifest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(MANIFEST_NAME);
        let m = Manifest {
            binaries: vec![Binary {
                name: "api".into(),
                path: dir.join("deps/api-1"),
                serial: vec![],
                keys: Default::default(),
                listing: None,
            }],
        };
        m.write(&file).unwrap();
        let back = Manifest::load(&file).unwrap();
        assert_eq!(back.binaries[0].path, PathBuf::from("deps/api-1"));
        assert_eq!(Manifest::resolve(&file, &back.binaries[0]), dir.join("deps/api-1"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
