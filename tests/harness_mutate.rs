//! `uffdtest mutate` end to end on a fixture kernel tree with a fake `make`: bad input exits 2 with a message
//! that names the fix, and no exit path leaves a mutant in the tree (a failed build, Ctrl-C during a build, a
//! SIGKILL whose journal the next run replays).
//!
//! The base runs are recorded in the results directory beforehand, so the run goes straight to its mutant;
//! `uffdtest build`'s toolchain check still wants gcc, flex, bison, bc, perl and the libelf/openssl headers.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use uffdtest::runner::result::{Report, Status, TestResult};

const ORIGINAL: &str = "int f(void)\n{\n\treturn -EINVAL;\n}\n";

const CATALOGUE: &str = r#"
[[mutant]]
id = "f-succeeds"
file = "mm/u.c"
area = "COPY"
find = "return -EINVAL;"
replace = "return 0;"
description = "f no longer fails"
"#;

/// `make` as `uffdtest build` calls it: config targets do nothing, `bzImage` says it started, then fails when
/// FAKE_MAKE_FAIL is set, else sleeps (a long compile) and leaves an image.
const FAKE_MAKE: &str = r#"#!/bin/sh
for a; do case $a in O=*) out=${a#O=};; esac; done
case "$*" in
*bzImage*)
    echo started > "$FAKE_MAKE_STARTED"
    if [ -n "$FAKE_MAKE_FAIL" ]; then echo "mm/u.c:3:9: error: boom"; exit 2; fi
    mkdir -p "$out/arch/x86/boot" && touch "$out/arch/x86/boot/bzImage"
    exec sleep 30 ;;
esac
exit 0
"#;

struct Fixture {
    dir: PathBuf,
}

impl Fixture {
    fn new(name: &str) -> Fixture {
        let dir = std::env::temp_dir().join(format!("uffdtest-harness-mutate-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let tree = dir.join("linux");
        for (path, text) in [
            ("Makefile", "VERSION = 6\nPATCHLEVEL = 12\n"),
            ("Kconfig", ""),
            ("arch/x86/Kconfig", ""),
            ("mm/u.c", ORIGINAL),
        ] {
            std::fs::create_dir_all(tree.join(path).parent().unwrap()).unwrap();
            std::fs::write(tree.join(path), text).unwrap();
        }
        let f = Fixture { dir };
        for args in [
            &["init", "-q"][..],
            &["add", "-A", "-f"],
            &["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "pristine"],
        ] {
            assert!(f.git(args).status.success(), "git {args:?}");
        }
        std::fs::write(f.dir.join("cat.toml"), CATALOGUE).unwrap();
        std::fs::write(f.dir.join("base.config"), "CONFIG_64BIT=y\n").unwrap();
        let bin = f.dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(bin.join("make"), FAKE_MAKE).unwrap();
        std::fs::set_permissions(bin.join("make"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let pass = TestResult::group("copy", vec![TestResult::new("fills on anon", Status::Pass)]);
        let base = serde_json::to_string(&Report {
            tests: vec![pass],
            ..Default::default()
        })
        .unwrap();
        std::fs::create_dir_all(f.dir.join("results/base")).unwrap();
        for n in 1..=2 {
            std::fs::write(f.dir.join(format!("results/base/run-{n}.json")), &base).unwrap();
        }
        f
    }

    fn tree(&self) -> PathBuf {
        self.dir.join("linux")
    }

    fn git(&self, args: &[&str]) -> Output {
        Command::new("git")
            .arg("-C")
            .arg(self.tree())
            .args(args)
            .output()
            .unwrap()
    }

    fn source(&self) -> String {
        std::fs::read_to_string(self.tree().join("mm/u.c")).unwrap()
    }

    /// The tree as the catalogue found it: the original text, nothing modified for git, no journal.
    fn assert_clean(&self) {
        assert_eq!(self.source(), ORIGINAL);
        assert!(
            self.git(&["status", "--porcelain", "--untracked-files=no"])
                .stdout
                .is_empty()
        );
        assert!(!self.tree().join(".uffdtest-mutant").exists());
    }

    fn mutate(&self, extra: &[&str]) -> Command {
        self.mutate_on(&self.tree(), extra)
    }

    fn mutate_on(&self, tree: &Path, extra: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_uffdtest"));
        let path = format!(
            "{}:{}",
            self.dir.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        c.arg("mutate")
            .arg("--tree")
            .arg(tree)
            .arg("--catalogue")
            .arg(self.dir.join("cat.toml"))
            .arg("--results")
            .arg(self.dir.join("results"))
            .arg("--out")
            .arg(self.dir.join("out"))
            .arg("--config")
            .arg(self.dir.join("base.config"))
            .args(extra)
            .env("PATH", path)
            .env("FAKE_MAKE_STARTED", self.dir.join("started"))
            .stdin(Stdio::null());
        c
    }

    /// Start a run and wait until its build of the mutant is under way.
    fn start_build(&self) -> Child {
        let mut child = self
            .mutate(&[])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.dir.join("started").exists() {
            if let Some(status) = child.try_wait().unwrap() {
                let mut err = String::new();
                std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
                panic!("mutate ended ({status}) before make ran; is the kernel build toolchain installed?\n{err}");
            }
            assert!(Instant::now() < deadline, "make never started");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(self.source().contains("return 0;"), "the mutant is in while it builds");
        child
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_failed_build_is_recorded_and_the_tree_restored() {
    let f = Fixture::new("buildfail");
    let o = f.mutate(&[]).env("FAKE_MAKE_FAIL", "1").output().unwrap();
    assert!(f.dir.join("started").exists(), "make ran: {}", stderr(&o));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    f.assert_clean();
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(f.dir.join("results/f-succeeds.json")).unwrap()).unwrap();
    assert_eq!(r["outcome"], "build_failed");
    assert_eq!(r["detail"], "mm/u.c:3:9: error: boom");
}

#[test]
fn ctrl_c_during_the_build_takes_the_mutant_out() {
    let f = Fixture::new("sigint");
    let child = f.start_build();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(
        o.status.signal(),
        Some(libc::SIGINT),
        "dies of the signal, as a shell expects"
    );
    f.assert_clean();
    assert!(!f.dir.join("results/f-succeeds.json").exists());
}

#[test]
fn a_killed_run_is_undone_by_the_next_one() {
    let f = Fixture::new("sigkill");
    let mut child = f.start_build();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(f.source().contains("return 0;"), "SIGKILL leaves the mutant");
    let o = f.mutate(&["--check"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("restored mm/u.c"), "{}", stderr(&o));
    f.assert_clean();
}

#[test]
fn bad_input_exits_2_and_says_what_to_do() {
    let f = Fixture::new("bad");
    // A dirty tree.
    std::fs::write(f.tree().join("mm/u.c"), "edited\n").unwrap();
    let o = f.mutate(&[]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("uncommitted changes") && stderr(&o).contains("mm/u.c"),
        "{}",
        stderr(&o)
    );
    std::fs::write(f.tree().join("mm/u.c"), ORIGINAL).unwrap();
    // A text that is not there, one that is there twice.
    for (text, want) in [("return -EPERM;", "is not in mm/u.c"), ("i", "more than once")] {
        std::fs::write(f.dir.join("cat.toml"), CATALOGUE.replace("return -EINVAL;", text)).unwrap();
        let o = f.mutate(&["--check"]).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{text}");
        assert!(stderr(&o).contains(want), "{}", stderr(&o));
    }
    // Not a kernel tree.
    let o = f.mutate_on(&f.dir, &["--check"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not a Linux kernel source tree"), "{}", stderr(&o));
    // A tree that is not under git.
    std::fs::remove_dir_all(f.tree().join(".git")).unwrap();
    std::fs::write(f.dir.join("cat.toml"), CATALOGUE).unwrap();
    let o = f.mutate(&[]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("git init -q && git add -A -f"), "{}", stderr(&o));
}

#[test]
fn the_shipped_catalogue_is_refused_against_a_tree_it_was_not_written_for() {
    let f = Fixture::new("shipped");
    let cat = Path::new(env!("CARGO_MANIFEST_DIR")).join("mutants/linux-6.12.toml");
    std::fs::copy(cat, f.dir.join("cat.toml")).unwrap();
    let o = f.mutate(&["--check"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("fs/userfaultfd.c is not a readable file of the tree"),
        "{}",
        stderr(&o)
    );
}
