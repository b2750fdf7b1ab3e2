//! The suite from a cargo build: its test executables from cargo's JSON
//! messages, and which of their items serial_test marks.

use super::{Binary, DiscoverError, HARNESS_PREFIX, Manifest};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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
    Ok(suite_manifest(executables(r)?))
}

/// The suite's manifest from cargo's executables: every integration test
/// binary but the `harness_*` ones.
pub fn suite_manifest(exes: impl IntoIterator<Item = Executable>) -> Manifest {
    let mut m = Manifest::default();
    for e in exes {
        if !e.is_test || e.name.starts_with(HARNESS_PREFIX) {
            continue;
        }
        let (alone, keyed): (Vec<SerialItem>, Vec<SerialItem>) = serial_items(&source_with_includes(&e.src_path))
            .into_iter()
            .partition(|i| i.keys.is_empty());
        m.binaries.push(Binary {
            name: e.name,
            path: e.path,
            serial: alone.into_iter().map(|i| i.name).collect(),
            keys: keyed.into_iter().map(|i| (i.name, i.keys)).collect(),
            listing: None,
        });
    }
    m.binaries.sort_by(|a, b| a.name.cmp(&b.name));
    m.binaries.dedup_by(|a, b| a.name == b.name);
    m
}

/// A test's source with the files it `include!`s (by a literal path,
/// relative to it) appended, so that serial marks in them count too.
/// An unreadable file is empty: its items then run in parallel, as before
/// serial_test existed; the build would have failed first.
fn source_with_includes(path: &Path) -> String {
    let mut src = std::fs::read_to_string(path).unwrap_or_default();
    let dir = path.parent().unwrap_or(Path::new("."));
    let included: Vec<String> = src
        .lines()
        .filter_map(|l| l.trim().strip_prefix("include!(\""))
        .filter_map(|l| l.split('"').next())
        .map(|rel| source_with_includes(&dir.join(rel)))
        .collect();
    for inc in included {
        src.push('\n');
        src.push_str(&inc);
    }
    src
}

/// An item (`fn` or `mod`) a serial_test attribute marks, with the keys
/// that order it: none means it runs alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialItem {
    pub name: String,
    pub keys: Vec<String>,
}

/// The `fn`s and `mod`s that follow a serial_test attribute, with its keys.
///
/// Accepted form: `#[serial]`, `#[serial(key)]`, `#[file_serial...]`,
/// `#[serial_test::serial...]`, possibly among other attributes, followed by
/// `fn name` or `mod name` on a later (or the same) line. An item marked
/// twice keeps the union of its keys, or none if either mark has none.
pub fn serial_items(src: &str) -> Vec<SerialItem> {
    let mut out: Vec<SerialItem> = Vec::new();
    let mut pending: Option<Vec<String>> = None;
    for line in src.lines() {
        let t = line.trim_start();
        if t.starts_with("//") {
            continue;
        }
        // `parallel` only keeps a case away from `serial` ones in the same
        // process; one process per case already does that.
        let parallel = t.starts_with("#[parallel") || t.starts_with("#[serial_test::parallel");
        let serial = t.starts_with("#[serial") || t.starts_with("#[file_serial") || t.starts_with("#[serial_test::");
        if !parallel
            && serial
            && let Some(keys) = attribute_keys(t)
        {
            pending = Some(match pending.take() {
                Some(prev) if prev.is_empty() || keys.is_empty() => Vec::new(),
                Some(prev) => prev.into_iter().chain(keys).collect(),
                None => keys,
            });
        }
        if pending.is_some()
            && let Some(name) = item_name(t)
        {
            let keys = pending.take().expect("checked");
            match out.iter_mut().find(|i| i.name == name) {
                Some(i) if i.keys.is_empty() || keys.is_empty() => i.keys.clear(),
                Some(i) => i.keys.extend(keys),
                None => out.push(SerialItem { name, keys }),
            }
        }
    }
    for i in &mut out {
        i.keys.sort();
        i.keys.dedup();
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// serial_test keys that only order cases sharing one test process: a
/// fork there would queue FORK events on every uffd of the process, another
/// case's included. With one process per case they order nothing.
/// `sigusr1` orders cases that install a handler for that signal.
pub const PROCESS_LOCAL_KEYS: &[&str] = &["fork", "uffd_event_fork", "sigusr1"];

/// Keys whose cases still run alone: the runner itself reads and restores
/// the sysctls after every case ([`crate::runner::env`]), so a case that
/// changes one must have no neighbour whose end would put it back.
pub const ALONE_KEYS: &[&str] = &["sysctl"];

/// The keys of a serial_test attribute line that order cases across
/// processes: `Some([])` for one that makes its item run alone (no keys, or
/// a key in [`ALONE_KEYS`]), `None` when all its keys are process-local
/// (see [`PROCESS_LOCAL_KEYS`]).
fn attribute_keys(attr: &str) -> Option<Vec<String>> {
    let args = attr
        .split_once('(')
        .filter(|(head, _)| !head.contains(']'))
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(args, _)| args);
    let Some(args) = args else {
        return Some(Vec::new());
    };
    let keys: Vec<&str> = args.split(',').map(str::trim).filter(|k| !k.is_empty()).collect();
    if keys.is_empty() || keys.iter().any(|k| ALONE_KEYS.contains(k)) {
        return Some(Vec::new());
    }
    let shared: Vec<String> = keys
        .iter()
        .filter(|k| !PROCESS_LOCAL_KEYS.contains(k))
        .map(|k| k.to_string())
        .collect();
    (!shared.is_empty()).then_some(shared)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_marks_in_included_files_count() {
        let dir = std::env::temp_dir().join(format!("uffdtest-include-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("events")).unwrap();
        std::fs::write(
            dir.join("events.rs"),
            "include!(\"events/fork.rs\");\n#[serial]\nfn root() {}\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("events/fork.rs"),
            "#[serial(thp)]\nfn in_included() {}\nfn parallel() {}\n",
        )
        .unwrap();
        let serial: Vec<String> = serial_items(&source_with_includes(&dir.join("events.rs")))
            .into_iter()
            .map(|i| i.name)
            .collect();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(serial, ["in_included", "root"]);
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
#[serial_test::file_serial(thp, ksm)]
fn two_keys() {}
#[serial(fork, gup_test)]
fn forks_and_pins() {}
#[file_serial(thp)]
#[serial]
fn keyed_and_alone() {}
";
        let got: Vec<(String, Vec<String>)> = serial_items(src).into_iter().map(|i| (i.name, i.keys)).collect();
        let want = |n: &str, k: &[&str]| (n.to_string(), k.iter().map(|k| k.to_string()).collect::<Vec<_>>());
        assert_eq!(
            got,
            vec![
                want("forks_and_pins", &["gup_test"]),
                want("forks_and_sets_a_sysctl", &[]),
                want("keyed_and_alone", &[]),
                want("plain_serial", &[]),
                want("shrinks_pool", &["hugepages"]),
                want("sysctl_cases", &[]),
                want("two_keys", &["ksm", "thp"]),
            ]
        );
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
}
