//! Build a kernel tree out-of-tree with the userfaultfd config, so the gate and bisect boot what they just built.
//!
//! The `O=` directory outlives the call: the config is only regenerated when its inputs change, so a rebuild after
//! a one-file edit recompiles that file and relinks, as a plain `make` would.

use crate::vm::kconfig;
use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where the `.config` starts from before the fragments are merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseConfig {
    /// A make target that writes a whole config: `defconfig`, `tinyconfig`, `kvm_guest.config`...
    Target(String),
    /// A complete `.config` (e.g. a distribution's), copied in as is.
    File(PathBuf),
}

/// A config fragment: `qemu/uffd.config` (compiled in) or a file.
#[derive(Debug, Clone)]
pub struct Fragment {
    /// Where it came from, for messages and the config stamp.
    pub origin: String,
    pub text: String,
}

impl Fragment {
    /// The suite's own fragment, as compiled into the binary.
    pub fn uffd() -> Fragment {
        Fragment {
            origin: "qemu/uffd.config".into(),
            text: crate::vm::kconfig::FRAGMENT.into(),
        }
    }

    pub fn read(path: &Path) -> Result<Fragment, BuildError> {
        let text = fs::read_to_string(path).map_err(io(format!("read config fragment {}", path.display())))?;
        Ok(Fragment {
            origin: path.display().to_string(),
            text,
        })
    }
}

/// What `uffdtest build` was asked to do.
#[derive(Debug, Clone)]
pub struct BuildOpts {
    pub tree: PathBuf,
    /// The `O=` directory; `None` picks one under the user's cache directory.
    pub out: Option<PathBuf>,
    pub base: BaseConfig,
    /// Merged in order after the base; later lines win, as in `merge_config.sh`.
    pub fragments: Vec<Fragment>,
    pub jobs: usize,
    /// Echo make's output to stderr (it is always kept in `<out>/uffdtest-build.log`).
    pub verbose: bool,
}

/// A finished build.
#[derive(Debug, Clone)]
pub struct Built {
    pub image: PathBuf,
    pub out: PathBuf,
    /// Whether this call (re)generated `.config`.
    pub configured: bool,
    /// Recommended options of the fragments that did not reach `.config` (the suite runs, sees less).
    pub missing_recommended: Vec<String>,
    pub elapsed: Duration,
}

/// Why a build did not produce an image. Bisect maps every one of these to "skip this commit".
#[derive(Debug)]
pub enum BuildError {
    NotAKernelTree {
        tree: PathBuf,
        why: String,
    },
    MissingToolchain {
        missing: Vec<(&'static str, &'static str)>,
    },
    BadInput {
        what: String,
    },
    /// Required options of the fragments that `olddefconfig` dropped (unmet dependency or unknown symbol).
    ConfigMissing {
        config: PathBuf,
        missing: Vec<String>,
    },
    Make {
        step: String,
        status: String,
        log: PathBuf,
        tail: String,
    },
    Io {
        what: String,
        err: std::io::Error,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::NotAKernelTree { tree, why } => write!(
                f,
                "{} is not a Linux kernel source tree ({why}); pass the top directory of a kernel checkout with --tree",
                tree.display()
            ),
            BuildError::MissingToolchain { missing } => {
                let tools: Vec<&str> = missing.iter().map(|(t, _)| *t).collect();
                let mut pkgs: Vec<&str> = missing.iter().map(|(_, p)| *p).collect();
                pkgs.dedup();
                write!(
                    f,
                    "the kernel build toolchain is incomplete: missing {}; on Debian/Ubuntu: apt-get install {}",
                    tools.join(", "),
                    pkgs.join(" ")
                )
            }
            BuildError::BadInput { what } => write!(f, "{what}"),
            BuildError::ConfigMissing { config, missing } => write!(
                f,
                "olddefconfig dropped {} required option(s) of the merged fragments, so this kernel cannot run the suite: \
                 {}; see {} (an unmet dependency, or a symbol this tree does not have)",
                missing.len(),
                missing.join(" "),
                config.display()
            ),
            BuildError::Make {
                step,
                status,
                log,
                tail,
            } => write!(
                f,
                "`{step}` failed ({status}); full log in {}; last lines:\n{tail}",
                log.display()
            ),
            BuildError::Io { what, err } => write!(f, "{what}: {err}"),
        }
    }
}

impl std::error::Error for BuildError {}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BuildError {
    let what = what.into();
    move |err| BuildError::Io { what, err }
}

/// A kernel tree has a top Makefile that sets VERSION and a Kconfig beside it.
pub fn check_tree(tree: &Path) -> Result<(), BuildError> {
    let not = |why: &str| BuildError::NotAKernelTree {
        tree: tree.to_path_buf(),
        why: why.into(),
    };
    if !tree.is_dir() {
        return Err(not("no such directory"));
    }
    let makefile = fs::read_to_string(tree.join("Makefile")).map_err(|_| not("no top-level Makefile"))?;
    if !makefile.lines().any(|l| l.starts_with("VERSION =")) || !makefile.lines().any(|l| l.starts_with("PATCHLEVEL ="))
    {
        return Err(not("its Makefile sets no VERSION/PATCHLEVEL"));
    }
    if !tree.join("Kconfig").is_file() || !tree.join("arch/x86/Kconfig").is_file() {
        return Err(not("no Kconfig or arch/x86/Kconfig"));
    }
    Ok(())
}

/// Tools and headers an x86_64 bzImage build needs, each with the Debian package that brings it.
const TOOLS: &[(&str, &str)] = &[
    ("make", "make"),
    ("gcc", "gcc"),
    ("flex", "flex"),
    ("bison", "bison"),
    ("bc", "bc"),
    ("perl", "perl"),
];
const HEADERS: &[(&str, &str, &str)] = &[
    ("libelf.h", "/usr/include/libelf.h", "libelf-dev"),
    ("openssl/ssl.h", "/usr/include/openssl/ssl.h", "libssl-dev"),
];

fn on_path(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
        .unwrap_or(false)
}

/// Name every missing tool at once, so one `apt-get install` fixes them all.
pub fn check_toolchain() -> Result<(), BuildError> {
    let mut missing: Vec<(&'static str, &'static str)> = TOOLS
        .iter()
        .filter(|(t, _)| !on_path(t))
        .map(|&(t, p)| (t, p))
        .collect();
    missing.extend(
        HEADERS
            .iter()
            .filter(|(_, path, _)| !Path::new(path).exists())
            .map(|&(h, _, p)| (h, p)),
    );
    if missing.is_empty() {
        Ok(())
    } else {
        Err(BuildError::MissingToolchain { missing })
    }
}

/// The default `O=` directory: one per tree, under `$XDG_CACHE_HOME/uffdtest/kbuild/`.
pub fn default_out(tree: &Path) -> PathBuf {
    let tree = tree.canonicalize().unwrap_or_else(|_| tree.to_path_buf());
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    let name = tree
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "linux".into());
    cache.join("uffdtest/kbuild").join(format!(
        "{name}-{:08x}",
        fnv1a(tree.as_os_str().as_encoded_bytes()) as u32
    ))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// What the merged fragments ask `.config` to hold, each symbol as its last fragment line says.
///
/// Options come from [`kconfig::parse_fragment`] (with their need); a later `# CONFIG_X is not set` or
/// `CONFIG_X=n` drops an earlier wish for X, so a demo fragment can turn KASAN off again.
pub fn wanted(fragments: &[Fragment]) -> Result<Vec<kconfig::Want>, BuildError> {
    let mut out: Vec<kconfig::Want> = Vec::new();
    for f in fragments {
        for line in f.text.lines().map(str::trim) {
            if let Some(sym) = line.strip_prefix("# ").and_then(|r| r.strip_suffix(" is not set")) {
                out.retain(|w| w.name != sym);
            }
        }
        let wants = kconfig::parse_fragment(&f.text).map_err(|e| BuildError::BadInput {
            what: format!("{}: {e}", f.origin),
        })?;
        for w in wants {
            out.retain(|o| o.name != w.name);
            if w.value != "n" {
                out.push(w);
            }
        }
    }
    Ok(out)
}

fn make(tree: &Path, out: &Path, jobs: usize, args: &[&str], log: &Path, verbose: bool) -> Result<(), BuildError> {
    let mut cmd = Command::new("make");
    cmd.arg("-C")
        .arg(tree)
        .arg(format!("O={}", out.display()))
        .arg("ARCH=x86_64")
        .arg(format!("-j{jobs}"));
    cmd.args(args);
    let step = format!("make O={} {}", out.display(), args.join(" "));
    let mut logf = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(io(format!("open {}", log.display())))?;
    let _ = writeln!(logf, "### {step}");
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    // If we die (git bisect run interrupted, a CI job cancelled), make gets SIGTERM and passes it to its
    // children, instead of building on unattended.
    // SAFETY: the closure runs between fork and exec and only makes the prctl(2) syscall, which is
    // async-signal-safe; it touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM).map_err(std::io::Error::from)
        });
    }
    let mut child = cmd.spawn().map_err(io(format!("run {step}")))?;
    // Merge stdout and stderr into the log in arrival order, echoing when asked.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|r| {
        let tx = tx.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(r).split(b'\n').map_while(Result::ok) {
                let _ = tx.send(String::from_utf8_lossy(&line).into_owned());
            }
        })
    })
    .collect();
    drop(tx);
    let mut tail = std::collections::VecDeque::new();
    for line in rx {
        if verbose {
            eprintln!("{line}");
        }
        let _ = writeln!(logf, "{line}");
        if tail.len() == 40 {
            tail.pop_front();
        }
        tail.push_back(line);
    }
    for r in readers {
        let _ = r.join();
    }
    let status = child.wait().map_err(io(format!("wait for {step}")))?;
    if status.success() {
        return Ok(());
    }
    let tail: Vec<String> = tail.into_iter().collect();
    Err(BuildError::Make {
        step,
        status: status.to_string(),
        log: log.to_path_buf(),
        tail: tail.join("\n"),
    })
}

/// Identifies the config inputs; a change of any of them regenerates `.config`.
fn config_key(base: &BaseConfig, fragments: &[Fragment]) -> Result<String, BuildError> {
    let mut key = match base {
        BaseConfig::Target(t) => format!("target {t}\n"),
        BaseConfig::File(p) => {
            let text = fs::read(p).map_err(io(format!("read base config {}", p.display())))?;
            format!("file {} {:016x}\n", p.display(), fnv1a(&text))
        }
    };
    for f in fragments {
        key.push_str(&format!("fragment {} {:016x}\n", f.origin, fnv1a(f.text.as_bytes())));
    }
    Ok(key)
}

const STAMP: &str = ".uffdtest-config-inputs";

/// Write `<out>/.config` from the base and fragments unless the same inputs already made it; then check it.
/// Returns whether it was (re)generated and the recommended options that did not stick.
fn configure(opts: &BuildOpts, out: &Path, log: &Path) -> Result<(bool, Vec<String>), BuildError> {
    let key = config_key(&opts.base, &opts.fragments)?;
    let config = out.join(".config");
    let stamp = out.join(STAMP);
    let wanted = wanted(&opts.fragments)?;
    let fresh = config.is_file() && fs::read_to_string(&stamp).is_ok_and(|s| s == key);
    if !fresh {
        let _ = fs::remove_file(&stamp);
        match &opts.base {
            BaseConfig::Target(t) => make(&opts.tree, out, opts.jobs, &[t], log, opts.verbose)?,
            BaseConfig::File(p) => {
                fs::copy(p, &config).map_err(io(format!("copy {} to {}", p.display(), config.display())))?;
            }
        }
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(&config)
            .map_err(io(format!("append to {}", config.display())))?;
        for frag in &opts.fragments {
            writeln!(
                f,
                "\n# --- merged by uffdtest build from {} ---\n{}",
                frag.origin, frag.text
            )
            .map_err(io(format!("append to {}", config.display())))?;
        }
        drop(f);
        make(&opts.tree, out, opts.jobs, &["olddefconfig"], log, opts.verbose)?;
    }
    let text = fs::read_to_string(&config).map_err(io(format!("read {}", config.display())))?;
    let missing = kconfig::check(&wanted, &kconfig::parse_config(&text));
    let (required, recommended): (Vec<_>, Vec<_>) = missing
        .into_iter()
        .partition(|m| m.want.need == kconfig::Need::Required);
    let show = |m: &kconfig::Missing| format!("{}={}", m.want.name, m.want.value);
    if !required.is_empty() {
        return Err(BuildError::ConfigMissing {
            config,
            missing: required.iter().map(show).collect(),
        });
    }
    if !fresh {
        fs::write(&stamp, &key).map_err(io(format!("write {}", stamp.display())))?;
    }
    Ok((!fresh, recommended.iter().map(show).collect()))
}

/// Configure (if needed) and build bzImage; every precondition is checked before make runs.
pub fn build(opts: &BuildOpts) -> Result<Built, BuildError> {
    check_tree(&opts.tree)?;
    check_toolchain()?;
    if let BaseConfig::File(p) = &opts.base
        && !p.is_file()
    {
        return Err(BuildError::BadInput {
            what: format!("base config {} does not exist", p.display()),
        });
    }
    wanted(&opts.fragments)?;
    let out = opts.out.clone().unwrap_or_else(|| default_out(&opts.tree));
    fs::create_dir_all(&out).map_err(io(format!("create build directory {}", out.display())))?;
    if opts.tree.join(".config").exists() || opts.tree.join("include/config").exists() {
        return Err(BuildError::NotAKernelTree {
            tree: opts.tree.clone(),
            why: "it has an in-tree .config or include/config, which out-of-tree builds refuse; run `make mrproper` \
                  in it"
                .into(),
        });
    }
    let log = out.join("uffdtest-build.log");
    let _ = fs::remove_file(&log);
    let start = Instant::now();
    let (configured, missing_recommended) = configure(opts, &out, &log)?;
    make(&opts.tree, &out, opts.jobs, &["bzImage"], &log, opts.verbose)?;
    let image = out.join("arch/x86/boot/bzImage");
    if !image.is_file() {
        return Err(BuildError::BadInput {
            what: format!("make succeeded but {} is missing", image.display()),
        });
    }
    Ok(Built {
        image,
        out,
        configured,
        missing_recommended,
        elapsed: start.elapsed(),
    })
}

/// All cores the machine has, which is what `uffdtest build` uses unless told otherwise.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frag(text: &str) -> Fragment {
        Fragment {
            origin: "test".into(),
            text: text.into(),
        }
    }

    #[test]
    fn later_fragment_turns_an_option_off_again() {
        let w = wanted(&[
            frag("# uffdtest: required\nCONFIG_A=y\n# uffdtest: recommended\nCONFIG_KASAN=y\nCONFIG_B=y\n"),
            frag("# CONFIG_KASAN is not set\nCONFIG_B=n\nCONFIG_A=m\n"),
        ])
        .unwrap();
        let got: Vec<(&str, &str)> = w.iter().map(|w| (w.name.as_str(), w.value.as_str())).collect();
        assert_eq!(got, vec![("CONFIG_A", "m")]);
    }

    #[test]
    fn a_directory_without_kernel_makefile_is_refused() {
        let err = check_tree(Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap_err();
        assert!(err.to_string().contains("not a Linux kernel source tree"), "{err}");
    }
}
