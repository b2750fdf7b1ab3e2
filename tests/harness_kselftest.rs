//! `uffdtest install`: the kselftest collection, built statically, installed
//! beside the kernel's own `run_kselftest.sh` and run by it.
//!
//! The kernel's scripts are not ours to ship: `UFFDTEST_KSELFTEST` names a
//! kernel tree's `tools/testing/selftests` (CI extracts Debian's
//! linux-source-6.12); without it the run_kselftest.sh test skips and the
//! launcher is run directly. Named `harness_*` so the runner leaves it out.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("uffdtest-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `uffdtest install DIR`: builds the static suite (cached in target/uffdtest-vm, which `uffdtest vm` shares).
fn install(dir: &Path, extra: &[&str]) {
    let o = Command::new(env!("CARGO_BIN_EXE_uffdtest"))
        .arg("install")
        .arg(dir)
        .args(extra)
        .output()
        .expect("run uffdtest install");
    let (_, err) = text(&o);
    assert!(o.status.success(), "uffdtest install failed: {err}");
}

#[test]
fn installed_collection_runs_under_the_kernels_run_kselftest_sh() {
    let dir = scratch("kselftest");
    let selftests = std::env::var_os("UFFDTEST_KSELFTEST").map(PathBuf::from);
    if let Some(s) = &selftests {
        // What `make -C tools/testing/selftests install` leaves, reduced to the runner itself.
        let cp = Command::new("cp")
            .arg("-r")
            .arg(s.join("run_kselftest.sh"))
            .arg(s.join("kselftest"))
            .arg(&dir)
            .status()
            .unwrap();
        assert!(cp.success());
        std::fs::write(dir.join("kselftest-list.txt"), "size:get_size\n").unwrap();
    }
    install(&dir, &[]);

    let list = std::fs::read_to_string(dir.join("kselftest-list.txt")).unwrap();
    assert!(list.lines().any(|l| l == "uffdtest:api"), "{list}");
    assert!(list.lines().any(|l| l == "uffdtest:copy"), "{list}");
    if selftests.is_some() {
        assert!(
            list.starts_with("size:get_size\n"),
            "another collection's line is kept: {list}"
        );
    }
    let settings = std::fs::read_to_string(dir.join("uffdtest/settings")).unwrap();
    assert!(settings.starts_with("timeout="), "{settings}");
    let bin = dir.join("uffdtest/bin/copy");
    assert!(bin.is_file(), "the test binaries are copied in");

    // The launcher alone: KTAP for one binary, kselftest's exit code.
    let o = Command::new(dir.join("uffdtest/api"))
        .arg("-f")
        .arg("api")
        .current_dir("/")
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(
        matches!(o.status.code(), Some(0 | 4)),
        "exit {:?}: {out}{err}",
        o.status
    );
    assert!(out.starts_with("KTAP version 1\n1..1\n"), "{out}");
    assert!(
        out.contains("\n  KTAP version 1\n"),
        "one nested block for the binary: {out}"
    );

    let Some(_) = selftests else {
        println!("SKIP: UFFDTEST_KSELFTEST is not set (a kernel tree's tools/testing/selftests with run_kselftest.sh)");
        std::fs::remove_dir_all(&dir).unwrap();
        return;
    };
    let o = Command::new(dir.join("run_kselftest.sh"))
        .args(["-t", "uffdtest:api", "-t", "uffdtest:wake"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(out.starts_with("TAP version 13\n1..2\n"), "{out}{err}");
    assert!(out.contains("# selftests: uffdtest: api\n"), "{out}");
    // runner.sh prefixes the launcher's KTAP with `# `; the plain summary line comes last.
    assert!(out.contains("# KTAP version 1\n"), "{out}");
    for (n, t) in [(1, "api"), (2, "wake")] {
        let line = format!("ok {n} selftests: uffdtest: {t}");
        assert!(
            out.lines()
                .any(|l| l == line || l.starts_with(&format!("{line} # SKIP"))),
            "{line} missing:\n{out}{err}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
