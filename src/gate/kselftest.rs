//! `uffdtest install`: the suite as a kselftest collection, laid out the
//! way the kernel's `tools/testing/selftests/run_kselftest.sh` reads one.
//!
//! ```text
//! DIR/kselftest-list.txt        one `uffdtest:<binary>` line per test binary (other collections' lines kept)
//! DIR/uffdtest/settings         timeout=N for each launcher
//! DIR/uffdtest/<binary>         the launcher: a sh script running `uffdtest run --ioctl <binary>`
//! DIR/uffdtest/uffdtest         the static runner
//! DIR/uffdtest/uffdtest-tests.json   its manifest, with each binary's case listing
//! DIR/uffdtest/bin/<binary>     the static test binaries
//! ```
//!
//! `run_kselftest.sh` and its `kselftest/runner.sh` are the kernel's and
//! stay there: install into a directory the kernel's
//! `make -C tools/testing/selftests install INSTALL_PATH=DIR` filled (or
//! copy those two in). runner.sh runs each launcher with cwd = the
//! collection, prefixes its KTAP with `# ` and writes one `ok`/`not ok`
//! line per binary from the exit code, which `uffdtest run` gives as
//! kselftest does (0 pass, 1 fail, 4 all skipped).

use crate::runner::discover::{MANIFEST_NAME, Manifest};
use crate::vm::build::{StaticBuildError, static_binaries};
use std::fmt;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The collection's directory and the first field of its `kselftest-list.txt` lines.
pub const COLLECTION: &str = "uffdtest";

/// The list run_kselftest.sh reads (`collection:test` per line).
pub const LIST_NAME: &str = "kselftest-list.txt";

/// runner.sh's timeout for one launcher, i.e. one test binary's cases.
///
/// It must outlast the runner's own deadlines, 60 s a case and 300 s a
/// stress case: a hung case is then reported by the runner, with where its
/// threads wait, and the binary's other cases still count. Whole binaries
/// take at most ~20 s on the host and ~40 s under TCG (the stress binary),
/// so 900 s leaves room for one stress hang plus a slow guest.
/// runner.sh's default, 45 s, would cut a TCG run short.
pub const DEFAULT_TIMEOUT_SECS: u64 = 900;

#[derive(Debug, Clone)]
pub struct InstallOptions {
    /// INSTALL_PATH: the kselftest install directory.
    pub dir: PathBuf,
    /// Prebuilt static test binaries; None builds them from `source`.
    pub manifest: Option<PathBuf>,
    /// The static `uffdtest`; None: the built one, or this executable if static.
    pub init: Option<PathBuf>,
    pub source: PathBuf,
    /// Written to the collection's `settings` as `timeout=`.
    pub timeout_secs: u64,
    /// Extra arguments every launcher passes to `uffdtest run` (e.g. `--jobs 1`).
    pub run_args: Vec<String>,
    /// Data files the runner reads from its working directory (the
    /// collection's, under runner.sh), copied in beside the launchers.
    pub data_files: Vec<PathBuf>,
}

/// What was installed.
#[derive(Debug)]
pub struct Installed {
    pub collection: PathBuf,
    /// The test binaries, in list order.
    pub tests: Vec<String>,
    pub cases: usize,
}

#[derive(Debug)]
pub enum InstallError {
    Build(StaticBuildError),
    Io {
        path: PathBuf,
        source: io::Error,
    },
    /// A test binary named like one of the collection's own files.
    Clash(String),
    /// The binaries could not be listed for the manifest.
    Listing(String),
}

impl fmt::Display for InstallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InstallError::Build(e) => e.fmt(f),
            InstallError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            InstallError::Clash(n) => write!(
                f,
                "a test binary is named {n:?}, which the collection uses for its own file: rename the test target"
            ),
            InstallError::Listing(e) => write!(f, "listing the installed test binaries: {e}"),
        }
    }
}

impl std::error::Error for InstallError {}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> InstallError + '_ {
    move |source| InstallError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Names the collection keeps for itself.
const RESERVED: &[&str] = &["uffdtest", "settings", "bin", MANIFEST_NAME];

/// Builds (or takes) the static suite and installs it under `o.dir`.
pub fn install(o: &InstallOptions) -> Result<Installed, InstallError> {
    let (runner, manifest) =
        static_binaries(o.manifest.as_deref(), o.init.as_deref(), &o.source).map_err(InstallError::Build)?;
    if let Some(b) = manifest.binaries.iter().find(|b| RESERVED.contains(&b.name.as_str())) {
        return Err(InstallError::Clash(b.name.clone()));
    }
    let coll = o.dir.join(COLLECTION);
    let bin = coll.join("bin");
    std::fs::create_dir_all(&bin).map_err(io_err(&bin))?;
    copy_exe(&runner, &coll.join("uffdtest"))?;

    let mut installed = Manifest::default();
    for b in &manifest.binaries {
        copy_exe(&b.path, &bin.join(&b.name))?;
        let mut b = b.clone();
        b.path = Path::new("bin").join(&b.name);
        installed.binaries.push(b);
    }
    for f in &o.data_files {
        let to = coll.join(f.file_name().unwrap_or(f.as_os_str()));
        std::fs::copy(f, &to).map_err(io_err(f))?;
    }
    let man_path = coll.join(MANIFEST_NAME);
    // The listing rides along so each launcher starts its first case at once.
    installed
        .record_listings(&man_path)
        .map_err(|e| InstallError::Listing(e.to_string()))?;
    installed
        .write(&man_path)
        .map_err(|e| InstallError::Listing(e.to_string()))?;

    let mut tests = Vec::new();
    for b in &installed.binaries {
        let p = coll.join(&b.name);
        write_file(&p, &launcher(&b.name, &o.run_args), 0o755)?;
        tests.push(b.name.clone());
    }
    write_file(&coll.join("settings"), &settings(o.timeout_secs), 0o644)?;

    let list = o.dir.join(LIST_NAME);
    let old = match std::fs::read_to_string(&list) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io_err(&list)(e)),
    };
    write_file(&list, &merged_list(&old, &tests), 0o644)?;
    let cases = installed
        .binaries
        .iter()
        .filter_map(|b| b.listing.as_ref())
        .map(|l| l.tests.len() - l.ignored.len())
        .sum();
    Ok(Installed {
        collection: coll,
        tests,
        cases,
    })
}

fn copy_exe(from: &Path, to: &Path) -> Result<(), InstallError> {
    // Replace, never write through: the old file may be running (a launcher of a previous install).
    let _ = std::fs::remove_file(to);
    std::fs::copy(from, to).map_err(io_err(from))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).map_err(io_err(to))
}

fn write_file(path: &Path, text: &str, mode: u32) -> Result<(), InstallError> {
    let _ = std::fs::remove_file(path);
    std::fs::write(path, text).map_err(io_err(path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io_err(path))
}

/// POSIX sh single quoting.
fn sh_quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=,:".contains(&b)) {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// One test binary's launcher. runner.sh starts it as `./<name>` from the
/// collection's directory with `KSELFTEST_<NAME>_ARGS` as arguments, which
/// go on to `uffdtest run` (`--mem anon`, `-f PATTERN`).
pub fn launcher(name: &str, run_args: &[String]) -> String {
    let mut args = vec![
        "run".to_string(),
        "--manifest".into(),
        MANIFEST_NAME.into(),
        "--ioctl".into(),
        name.into(),
        // Each case named in the kernel log before it runs, so a splat on the console has its case.
        "--announce-kmsg".into(),
    ];
    args.extend(run_args.iter().cloned());
    let args: Vec<String> = args.iter().map(|a| sh_quote(a)).collect();
    format!(
        "#!/bin/sh\n\
         # Written by `uffdtest install`: the {name} cases of uffdtest, each in its own process,\n\
         # KTAP on stdout; exits 0 all passed, 1 a case failed or the kernel splatted, 4 all skipped.\n\
         cd \"$(dirname \"$0\")\" || exit 2\n\
         exec ./uffdtest {} \"$@\"\n",
        args.join(" ")
    )
}

/// The collection's `settings` (runner.sh reads `key=value` lines).
pub fn settings(timeout_secs: u64) -> String {
    format!("timeout={timeout_secs}\n")
}

/// `kselftest-list.txt` with this collection's lines replaced by `tests`,
/// other collections' lines kept in place.
pub fn merged_list(old: &str, tests: &[String]) -> String {
    let prefix = format!("{COLLECTION}:");
    let mut out: String = old
        .lines()
        .filter(|l| !l.starts_with(&prefix) && !l.trim().is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    for t in tests {
        out.push_str(&format!("{prefix}{t}\n"));
    }
    out
}

/// Packs `dir` (the collection and whatever else is installed there) as
/// one gzipped tarball, for a lab that fetches a single artefact; unpack it
/// and run `./run_kselftest.sh` inside.
pub fn tarball(dir: &Path, file: &Path) -> Result<(), InstallError> {
    let status = std::process::Command::new("tar")
        .arg("-czf")
        .arg(file)
        .arg("-C")
        .arg(dir)
        .arg(".")
        .status()
        .map_err(io_err(Path::new("tar")))?;
    if !status.success() {
        return Err(InstallError::Io {
            path: file.to_path_buf(),
            source: io::Error::other(format!("tar exited with {status}")),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_keeps_other_collections_and_replaces_ours() {
        let old = "mm:run_vmtests.sh\nuffdtest:gone\nsize:get_size\n";
        assert_eq!(
            merged_list(old, &["api".into(), "copy".into()]),
            "mm:run_vmtests.sh\nsize:get_size\nuffdtest:api\nuffdtest:copy\n"
        );
        assert_eq!(merged_list("", &["api".into()]), "uffdtest:api\n");
    }

    #[test]
    fn the_launcher_runs_one_binary_and_passes_arguments_on() {
        let l = launcher("copy", &["--jobs".into(), "1".into(), "a b".into()]);
        assert!(l.starts_with("#!/bin/sh\n"));
        assert!(
            l.ends_with(
                "exec ./uffdtest run --manifest uffdtest-tests.json --ioctl copy --announce-kmsg --jobs 1 'a b' \"$@\"\n"
            ),
            "{l}"
        );
    }

    #[test]
    fn settings_is_what_runner_sh_reads() {
        assert_eq!(settings(900), "timeout=900\n");
    }
}
