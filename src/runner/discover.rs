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
//! with `serial_`, or names a function or module that carries a serial_test
//! attribute (`#[serial]`, `#[serial(key)]`, `#[file_serial]`) in the
//! target's source, which the manifest records at build time. Keys that
//! only matter inside one test process ([`PROCESS_LOCAL_KEYS`]) do not count.

use super::elf::ElfError;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

/// The manifest's file name, next to the `uffdtest` binary by default.
pub const MANIFEST_NAME: &str = "uffdtest-tests.json";

/// Targets with this prefix test the harness and are left out of the suite.
pub const HARNESS_PREFIX: &str = "harness_";

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
    /// Functions and modules carrying a serial_test attribute.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub serial: Vec<String>,
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

    /// [`Manifest::write`] with the error as its message, for callers that
    /// only print it.
    pub fn save(&self, path: &Path) -> Result<(), String> {
        Ok(self.write(path)?)
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

/// [`build_manifest`] with the error as its message, for callers that only
/// print it.
pub fn build(extra: &[String]) -> Result<Manifest, String> {
    Ok(build_manifest(extra)?)
}

/// Builds the test binaries with cargo and returns the manifest of the suite.
/// `extra` goes to `cargo test` (e.g. `--release`).
pub fn build_manifest(extra: &[String]) -> Result<Manifest, DiscoverError> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.args([
        "test",
        "--no-run",
        "--test",
        "*",
        "--message-format=json-render-diagnostics",
    ])
    .args(extra)
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    let mut child = cmd.spawn().map_err(|source| DiscoverError::CargoSpawn {
        cargo: cargo.clone(),
        source,
    })?;
    let stdout = child.stdout.take().expect("piped");
    let manifest = from_cargo_messages(BufReader::new(stdout));
    let status = child.wait().map_err(DiscoverError::CargoOutput)?;
    if !status.success() {
        return Err(DiscoverError::CargoFailed { cargo, status });
    }
    let mut manifest = manifest?;
    if manifest.binaries.is_empty() {
        return Err(DiscoverError::NoTestBinaries);
    }
    // Cargo's paths are absolute: where the manifest will live does not matter.
    manifest.record_listings(Path::new("."))?;
    Ok(manifest)
}

/// One executable a cargo build produced, from its `compiler-artifact` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Executable {
    /// The cargo target name (`api`, `uffdtest`).
    pub name: String,
    /// An integration test target (`[[test]]`, `tests/*.rs`).
    pub is_test: bool,
    /// A binary target (`[[bin]]`, `src/main.rs`).
    pub is_bin: bool,
    /// Built as a libtest harness: every integration test, and the unit
    /// tests of a bin or lib that `cargo test` also builds.
    pub harness: bool,
    pub path: PathBuf,
    /// The target's root source file.
    pub src_path: PathBuf,
}

/// Every executable in cargo's JSON build messages
/// (`cargo build|test --message-format=json…`), in the order cargo reported
/// them. Lines that are not cargo messages are skipped.
pub fn executables(r: impl BufRead) -> Result<Vec<Executable>, DiscoverError> {
    use cargo_metadata::Message;
    let mut out = Vec::new();
    for m in Message::parse_stream(r) {
        let Message::CompilerArtifact(a) = m.map_err(DiscoverError::CargoOutput)? else {
            continue;
        };
        let Some(exe) = a.executable else { continue };
        out.push(Executable {
            is_test: a.target.is_test(),
            is_bin: a.target.is_bin(),
            harness: a.profile.test,
            name: a.target.name,
            path: exe.into(),
            src_path: a.target.src_path.into(),
        });
    }
    Ok(out)
}

/// The suite's manifest from cargo's JSON build messages: every
/// integration test binary but the `harness_*` ones (see [`executables`]).
pub fn from_cargo_messages(r: impl BufRead) -> Result<Manifest, DiscoverError> {
    let mut m = Manifest::default();
    for e in executables(r)? {
        if !e.is_test || e.name.starts_with(HARNESS_PREFIX) {
            continue;
        }
        let serial = std::fs::read_to_string(&e.src_path)
            .map(|src| serial_items(&src))
            .unwrap_or_default();
        m.binaries.push(Binary {
            name: e.name,
            path: e.path,
            serial,
            listing: None,
        });
    }
    m.binaries.sort_by(|a, b| a.name.cmp(&b.name));
    m.binaries.dedup_by(|a, b| a.name == b.name);
    Ok(m)
}

/// Names of the `fn`s and `mod`s that follow a serial_test attribute.
///
/// Accepted form: `#[serial]`, `#[serial(key)]`, `#[file_serial...]`,
/// `#[serial_test::serial...]`, possibly among other attributes, followed by
/// `fn name` or `mod name` on a later (or the same) line.
pub fn serial_items(src: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut pending = false;
    for line in src.lines() {
        let t = line.trim_start();
        if t.starts_with("//") {
            continue;
        }
        // `parallel` only keeps a case away from `serial` ones in the same
        // process; one process per case already does that.
        let parallel = t.starts_with("#[parallel") || t.starts_with("#[serial_test::parallel");
        let serial = t.starts_with("#[serial") || t.starts_with("#[file_serial") || t.starts_with("#[serial_test::");
        if !parallel && serial && !process_local(t) {
            pending = true;
        }
        if pending && let Some(name) = item_name(t) {
            out.push(name);
            pending = false;
        }
    }
    out.sort();
    out.dedup();
    out
}

/// serial_test keys that only order cases sharing one test process: a
/// fork there would queue FORK events on every uffd of the process, another
/// case's included. With one process per case they order nothing.
pub const PROCESS_LOCAL_KEYS: &[&str] = &["fork", "uffd_event_fork"];

/// A `#[serial(k, ...)]` whose keys are all process-local (see
/// [`PROCESS_LOCAL_KEYS`]); `#[serial]` without keys and `#[file_serial]`
/// (a lock across processes) never are.
fn process_local(attr: &str) -> bool {
    let Some(rest) = attr
        .strip_prefix("#[serial(")
        .or_else(|| attr.strip_prefix("#[serial_test::serial("))
    else {
        return false;
    };
    let Some((keys, _)) = rest.split_once(')') else {
        return false;
    };
    keys.split(',').all(|k| PROCESS_LOCAL_KEYS.contains(&k.trim()))
}

fn item_name(line: &str) -> Option<String> {
    for kw in ["fn ", "mod "] {
        if let Some(i) = line.find(kw) {
            // `fn` must be a word of its own: start of line or after a space.
            if i == 0 || line.as_bytes()[i - 1] == b' ' {
                let rest = &line[i + kw.len()..];
                let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !name.is_empty() {
                    return Some(name);
                }
            }
        }
    }
    None
}

/// One case as the runner schedules it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    /// The binary's name (its KTAP subtest block).
    pub binary: String,
    /// The binary's path.
    pub path: PathBuf,
    /// The libtest name, passed back with `--exact`.
    pub test: String,
    /// `<test> on <variant>` or the plain test name.
    pub name: String,
    /// From a `case_N_<variant>` last segment, `_` read as `-` (the memory type).
    pub variant: Option<String>,
    /// Marked `#[ignore]`: run only with `--run-ignored`.
    pub ignored: bool,
    /// Must run alone (see the module doc).
    pub serial: bool,
}

/// Splits a libtest name into the KTAP name and the variant.
///
/// `copy_fills_missing_page::case_2_shmem_private` →
/// (`copy_fills_missing_page on shmem-private`, `shmem-private`);
/// rstest `#[values]` segments after the case become `name=value`:
/// `f::case_1_anon::mode_4_MISSING_union_WP_` → (`f mode=MISSING+WP on anon`, `anon`);
/// `api_is_sane` → (`api_is_sane`, none).
pub fn ktap_name(test: &str) -> (String, Option<String>) {
    let segs: Vec<&str> = test.split("::").collect();
    let Some(at) = segs.iter().rposition(|s| case_variant(s).is_some()).filter(|&i| i > 0) else {
        return (test.to_string(), None);
    };
    let variant = case_variant(segs[at]).expect("found above");
    let mut name = segs[..at].join("::");
    for v in &segs[at + 1..] {
        name.push(' ');
        name.push_str(&values_segment(v));
    }
    (format!("{name} on {variant}"), Some(variant))
}

/// `case_<N>_<desc>` → `desc` with `_` read as `-`.
fn case_variant(seg: &str) -> Option<String> {
    let rest = seg.strip_prefix("case_")?;
    let (num, desc) = rest.split_once('_')?;
    (!num.is_empty() && num.bytes().all(|b| b.is_ascii_digit()) && !desc.is_empty()).then(|| desc.replace('_', "-"))
}

/// An rstest `#[values]` segment `<arg>_<N>_<value>` → `arg=value`, with
/// rstest's spelling of `A | B` (`A_union_B_`) read back as `A+B`.
fn values_segment(seg: &str) -> String {
    let parts: Vec<&str> = seg.splitn(3, '_').collect();
    match parts.as_slice() {
        [arg, n, value] if n.bytes().all(|b| b.is_ascii_digit()) => {
            let value = value.replace("_union_", "+");
            format!("{arg}={}", value.trim_matches('_'))
        }
        _ => seg.to_string(),
    }
}

/// Whether a libtest name is serial by the naming convention or the
/// manifest's list of serial items.
pub fn is_serial(test: &str, serial_items: &[String]) -> bool {
    test.split("::")
        .any(|seg| seg == "serial" || seg.starts_with("serial_") || serial_items.iter().any(|s| s == seg))
}

/// Lists a binary: its cases and which are ignored, with its build ID.
/// None for a binary without a build ID, which is listed at every run.
pub fn listing(path: &Path) -> Result<Option<Listing>, DiscoverError> {
    let Some(build_id) = crate::runner::elf::build_id(path)? else {
        return Ok(None);
    };
    Ok(Some(Listing {
        build_id,
        tests: list_names(path, false)?,
        ignored: list_names(path, true)?,
    }))
}

/// The binary's recorded listing, if it was made from the binary at `path`.
fn current_listing<'a>(binary: &'a Binary, path: &Path) -> Option<&'a Listing> {
    let l = binary.listing.as_ref()?;
    (crate::runner::elf::build_id(path).ok().flatten()? == l.build_id).then_some(l)
}

/// A binary's cases, ignored ones included (marked): from the manifest's
/// listing while it matches the binary's build ID, else by running it.
pub fn list_cases(binary: &Binary, path: &Path) -> Result<Vec<Case>, DiscoverError> {
    let (all, ignored) = match current_listing(binary, path) {
        Some(l) => (l.tests.clone(), l.ignored.clone()),
        None => (list_names(path, false)?, list_names(path, true)?),
    };
    Ok(all
        .into_iter()
        .map(|test| {
            let (name, variant) = ktap_name(&test);
            Case {
                binary: binary.name.clone(),
                path: path.to_path_buf(),
                ignored: ignored.contains(&test),
                serial: is_serial(&test, &binary.serial),
                test,
                name,
                variant,
            }
        })
        .collect())
}

/// How long a binary may take to list its cases.
const LIST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// `BIN --list --format terse [--ignored]`: lines `name: test`.
fn list_names(path: &Path, ignored: bool) -> Result<Vec<String>, DiscoverError> {
    let mut cmd = Command::new(path);
    cmd.args(["--list", "--format", "terse"]);
    if ignored {
        cmd.arg("--ignored");
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| DiscoverError::ListSpawn {
            path: path.into(),
            source,
        })?;
    // Listing runs no test, but a broken binary must not stall the run: give it a deadline.
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(LIST_TIMEOUT) {
        Ok(r) => r.map_err(|source| DiscoverError::ListSpawn {
            path: path.into(),
            source,
        })?,
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            return Err(DiscoverError::ListTimeout {
                path: path.into(),
                secs: LIST_TIMEOUT.as_secs(),
            });
        }
    };
    if !out.status.success() {
        return Err(DiscoverError::ListFailed {
            path: path.into(),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .map(str::to_string)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::parametrised(
        "copy_fills_missing_page::case_2_shmem",
        "copy_fills_missing_page on shmem",
        Some("shmem")
    )]
    #[case::underscore_variant("a::case_3_shmem_private", "a on shmem-private", Some("shmem-private"))]
    #[case::nested_module("serial::b::case_10_hugetlb", "serial::b on hugetlb", Some("hugetlb"))]
    #[case::values_after_case(
        "f::case_1_anon::mode_4_MISSING_union_WP_",
        "f mode=MISSING+WP on anon",
        Some("anon")
    )]
    #[case::plain("api_is_sane", "api_is_sane", None)]
    #[case::not_a_case_segment("m::cases_1_x", "m::cases_1_x", None)]
    #[case::no_number("m::case_x", "m::case_x", None)]
    fn libtest_names_map_to_ktap_names(#[case] test: &str, #[case] name: &str, #[case] variant: Option<&str>) {
        assert_eq!(ktap_name(test), (name.to_string(), variant.map(str::to_string)));
    }

    #[test]
    fn serial_attributes_are_found_in_source() {
        let src = "
#[apply(all_mem)]
#[serial(hugepages)]
fn shrinks_pool(#[case] mem: MemType) {}

#[test]
fn not_serial() {}

#[serial]
#[test]
pub fn plain_serial() {}
// #[serial]
fn commented() {}
#[file_serial(sysctl)] mod sysctl_cases {}

#[serial(fork)]
fn forks_in_its_own_process() {}
#[serial_test::serial(uffd_event_fork)]
fn also_forks() {}
#[serial(sysctl, fork)]
fn forks_and_sets_a_sysctl() {}
";
        assert_eq!(
            serial_items(src),
            vec![
                "forks_and_sets_a_sysctl",
                "plain_serial",
                "shrinks_pool",
                "sysctl_cases"
            ]
        );
    }

    #[test]
    fn serial_by_name_or_list() {
        assert!(is_serial("serial::x::case_1_anon", &[]));
        assert!(is_serial("serial_unpriv_sysctl", &[]));
        assert!(is_serial("shrinks_pool::case_1_anon", &["shrinks_pool".into()]));
        assert!(!is_serial("deserialises", &[]));
    }

    /// `cargo test --no-run --message-format=json` output kept in `tests/data/cargo/`.
    fn cargo_messages() -> Vec<u8> {
        std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/cargo/test-no-run.jsonl"
        ))
        .unwrap()
    }

    #[test]
    fn executables_are_read_from_cargo_messages() {
        let exes = executables(&cargo_messages()[..]).unwrap();
        let got: Vec<_> = exes
            .iter()
            .map(|e| (e.name.as_str(), e.is_test, e.is_bin, e.harness))
            .collect();
        assert_eq!(
            got,
            [
                ("uffdtest", false, true, false),
                ("uffdtest", false, true, true),
                ("api", true, false, true),
                ("harness_runner", true, false, true),
            ]
        );
        assert_eq!(exes[0].path, PathBuf::from("/src/uffdtest/target/debug/uffdtest"));
        assert_eq!(exes[2].src_path, PathBuf::from("/nonexistent/api.rs"));
    }

    #[test]
    fn manifest_from_cargo_messages_keeps_suite_tests_only() {
        let m = from_cargo_messages(&cargo_messages()[..]).unwrap();
        let names: Vec<_> = m.binaries.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["api"]);
        assert!(
            m.binaries[0]
                .path
                .to_string_lossy()
                .starts_with("/src/uffdtest/target/debug/deps/api-")
        );
    }

    #[test]
    fn recorded_listing_is_used_only_for_the_build_it_came_from() {
        let exe = std::env::current_exe().unwrap();
        let id = crate::runner::elf::build_id(&exe).unwrap().expect("a build ID");
        let recorded = |build_id: String| Binary {
            name: "lib".into(),
            path: exe.clone(),
            serial: vec![],
            listing: Some(Listing {
                build_id,
                tests: vec!["recorded::case_1_anon".into(), "slow".into()],
                ignored: vec!["slow".into()],
            }),
        };
        let cases = list_cases(&recorded(id.clone()), &exe).unwrap();
        let got: Vec<_> = cases.iter().map(|c| (c.test.as_str(), c.ignored)).collect();
        assert_eq!(got, [("recorded::case_1_anon", false), ("slow", true)]);
        // Another build: the binary is listed again, for real.
        let cases = list_cases(&recorded(format!("{id}00")), &exe).unwrap();
        assert!(cases.iter().all(|c| c.test != "slow"));
        let me = "runner::discover::tests::recorded_listing_is_used_only_for_the_build_it_came_from";
        assert!(cases.iter().any(|c| c.test == me));
    }

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
                listing: None,
            }],
        };
        m.save(&file).unwrap();
        let back = Manifest::load(&file).unwrap();
        assert_eq!(back.binaries[0].path, PathBuf::from("deps/api-1"));
        assert_eq!(Manifest::resolve(&file, &back.binaries[0]), dir.join("deps/api-1"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
