//! A binary's cases: listed by libtest (or from the manifest's listing of
//! the same build), each named for KTAP with its variant and serial mark.

use super::{Binary, DiscoverError, Listing};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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
    /// Never runs beside a case sharing one of these keys (see the module doc).
    pub keys: Vec<String>,
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

/// The keys of the keyed serial_test marks on any segment of a libtest name.
pub fn serial_keys(test: &str, keyed: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    let mut keys: Vec<String> = test
        .split("::")
        .filter_map(|seg| keyed.get(seg))
        .flatten()
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
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
pub(super) fn current_listing<'a>(binary: &'a Binary, path: &Path) -> Option<&'a Listing> {
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
                keys: serial_keys(&test, &binary.keys),
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
    fn serial_by_name_or_list() {
        assert!(is_serial("serial::x::case_1_anon", &[]));
        assert!(is_serial("serial_unpriv_sysctl", &[]));
        assert!(is_serial("shrinks_pool::case_1_anon", &["shrinks_pool".into()]));
        assert!(!is_serial("deserialises", &[]));
    }

    #[test]
    fn keys_come_from_every_marked_segment() {
        let keyed: BTreeMap<String, Vec<String>> = [
            ("pins".to_string(), vec!["gup_test".to_string()]),
            ("collapse".to_string(), vec!["thp".to_string()]),
        ]
        .into();
        assert_eq!(serial_keys("pins::collapse::case_1_anon", &keyed), ["gup_test", "thp"]);
        assert_eq!(serial_keys("collapse_more::case_1_anon", &keyed), Vec::<String>::new());
    }

    #[test]
    fn recorded_listing_is_used_only_for_the_build_it_came_from() {
        let exe = std::env::current_exe().unwrap();
        let id = crate::runner::elf::build_id(&exe).unwrap().expect("a build ID");
        let recorded = |build_id: String| Binary {
            name: "lib".into(),
            path: exe.clone(),
            serial: vec![],
            keys: Default::default(),
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
        let me = "runner::discover::cases::tests::recorded_listing_is_used_only_for_the_build_it_came_from";
        assert!(cases.iter().any(|c| c.test == me));
    }
}
