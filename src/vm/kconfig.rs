//! Checks a kernel `.config` against the suite's fragment, `qemu/uffd.config`.
//!
//! The fragment is a plain Kconfig fragment (usable with `merge_config.sh`
//! and `vng --config`) split by marker comments, `# uffdtest: required`,
//! `# uffdtest: recommended` and `# uffdtest: swap`, so one file says both
//! what to set and how much each option matters.

use std::collections::HashMap;
use std::fmt;

/// The fragment shipped with the suite, compiled in so `kconfig --check`
/// works from an installed binary.
pub const FRAGMENT: &str = include_str!("../../qemu/uffd.config");

/// How much an option of the fragment matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Need {
    /// Without it the guest cannot boot or the suite cannot run.
    Required,
    /// Makes the kernel catch what the suite provokes.
    Recommended,
    /// Gives the guest its swap device; without it the swap cases skip. A
    /// module (`=m`) does too: `uffdtest vm` loads it from the kernel's modules.
    Swap,
    /// The mm machinery the cross-feature cases drive (KSM, NUMA migration,
    /// memcg, io_uring): without it those cases skip.
    Mm,
}

impl fmt::Display for Need {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Need::Required => "required",
            Need::Recommended => "recommended",
            Need::Swap => "swap",
            Need::Mm => "mm",
        })
    }
}

/// One `CONFIG_X=value` line of the fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    pub name: String,
    pub value: String,
    pub need: Need,
}

/// An option of the fragment whose value `.config` does not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    pub want: Want,
    /// The value in `.config`, `None` when it is absent or `is not set`.
    pub found: Option<String>,
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let found = match &self.found {
            Some(v) => format!("is {v}"),
            None => "is not set".into(),
        };
        write!(
            f,
            "{:<11} {}={} ({found})",
            self.want.need, self.want.name, self.want.value
        )
    }
}

/// Reads the fragment's options with their need.
///
/// Accepted format: `CONFIG_X=v` lines; `# uffdtest: required` and
/// `# uffdtest: recommended`, `# uffdtest: swap` and `# uffdtest: mm` switch the need of the
/// lines after them (the default is required); other comments and blank
/// lines are ignored.
pub fn parse_fragment(text: &str) -> Result<Vec<Want>, String> {
    let mut need = Need::Required;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let t = line.trim();
        match t {
            "# uffdtest: required" => need = Need::Required,
            "# uffdtest: recommended" => need = Need::Recommended,
            "# uffdtest: swap" => need = Need::Swap,
            "# uffdtest: mm" => need = Need::Mm,
            _ if t.is_empty() || t.starts_with('#') => {}
            _ => {
                let (name, value) = t
                    .split_once('=')
                    .filter(|(k, _)| k.starts_with("CONFIG_"))
                    .ok_or_else(|| format!("fragment line {}: expected CONFIG_X=value, got {t:?}", n + 1))?;
                out.push(Want {
                    name: name.into(),
                    value: value.into(),
                    need,
                });
            }
        }
    }
    Ok(out)
}

/// Reads a `.config`: `CONFIG_X=v` lines (set) and `# CONFIG_X is not set`
/// (absent from the map, as if the option did not exist).
pub fn parse_config(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter(|l| l.starts_with("CONFIG_"))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Whether `config` has what `w` wants: its value, or for a swap option
/// wanted built in, a module (the harness loads it).
fn satisfied(w: &Want, config: &HashMap<String, String>) -> bool {
    match config.get(&w.name) {
        Some(v) if *v == w.value => true,
        Some(v) => w.need == Need::Swap && w.value == "y" && v == "m",
        None => false,
    }
}

/// The options of `fragment` that `config` lacks, required ones first.
pub fn check(fragment: &[Want], config: &HashMap<String, String>) -> Vec<Missing> {
    let mut out: Vec<Missing> = fragment
        .iter()
        .filter(|w| !satisfied(w, config))
        .map(|w| Missing {
            want: w.clone(),
            found: config.get(&w.name).cloned(),
        })
        .collect();
    out.sort_by_key(|m| m.want.need);
    out
}

/// The human report of [`check`]; ends with the fix.
pub fn report(config_path: &str, total: usize, missing: &[Missing]) -> String {
    let count = |n: Need| missing.iter().filter(|m| m.want.need == n).count();
    let (required, recommended, swap, mm) = (
        count(Need::Required),
        count(Need::Recommended),
        count(Need::Swap),
        count(Need::Mm),
    );
    let mut s = String::new();
    for m in missing {
        s += &format!("{m}\n");
    }
    s += &format!(
        "{config_path}: {} of {total} options set; missing {required} required, {recommended} recommended{}{}\n",
        total - missing.len(),
        if swap > 0 {
            format!(", {swap} for swap")
        } else {
            String::new()
        },
        if mm > 0 {
            format!(", {mm} for mm features")
        } else {
            String::new()
        }
    );
    if mm > 0 {
        s += "the cases of the mm features named above (KSM, NUMA migration, memcg, io_uring) skip on this kernel\n";
    }
    if swap > 0 {
        s += "the guest gets no swap device, so `uffdtest vm` skips the swap cases (no active swap device)\n";
    }
    if required > 0 {
        s += "this kernel cannot run the suite: merge qemu/uffd.config (scripts/kconfig/merge_config.sh -m .config \
              qemu/uffd.config && make olddefconfig) and rebuild\n";
    } else if recommended > 0 {
        s += "the suite can run; the recommended options make the kernel report what the suite provokes\n";
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_fragment_parses_with_both_needs() {
        let f = parse_fragment(FRAGMENT).unwrap();
        let req = |n: &str| f.iter().find(|w| w.name == n).map(|w| w.need);
        assert_eq!(req("CONFIG_USERFAULTFD"), Some(Need::Required));
        assert_eq!(req("CONFIG_PTE_MARKER_UFFD_WP"), Some(Need::Required));
        assert_eq!(req("CONFIG_DEVTMPFS"), Some(Need::Required));
        assert_eq!(req("CONFIG_KASAN"), Some(Need::Recommended));
        assert_eq!(req("CONFIG_GUP_TEST"), Some(Need::Recommended));
        assert_eq!(req("CONFIG_SWAP"), Some(Need::Swap));
        assert_eq!(req("CONFIG_ZRAM"), Some(Need::Swap));
        assert_eq!(req("CONFIG_KSM"), Some(Need::Mm));
        assert_eq!(req("CONFIG_NUMA"), Some(Need::Mm));
        assert_eq!(req("CONFIG_MEMCG"), Some(Need::Mm));
    }

    #[test]
    fn a_missing_mm_option_names_the_cases_that_skip() {
        let frag = parse_fragment("CONFIG_A=y\n# uffdtest: mm\nCONFIG_KSM=y\n").unwrap();
        let r = report("x", 2, &check(&frag, &parse_config("CONFIG_A=y\n")));
        assert!(
            r.contains("missing 0 required, 0 recommended, 1 for mm features"),
            "{r}"
        );
        assert!(r.contains("CONFIG_KSM=y (is not set)"), "{r}");
        assert!(r.contains("KSM, NUMA migration, memcg"), "{r}");
    }

    #[test]
    fn a_swap_option_may_be_a_module_others_may_not() {
        let frag = parse_fragment("CONFIG_A=y\n# uffdtest: swap\nCONFIG_Z=y\nCONFIG_S=y\n").unwrap();
        let cfg = parse_config("CONFIG_A=m\nCONFIG_Z=m\n");
        let got: Vec<(String, Need)> = check(&frag, &cfg)
            .into_iter()
            .map(|m| (m.want.name, m.want.need))
            .collect();
        assert_eq!(
            got,
            [("CONFIG_A".into(), Need::Required), ("CONFIG_S".into(), Need::Swap)]
        );
        let r = report("x", 3, &check(&frag, &cfg));
        assert!(r.contains("missing 1 required, 0 recommended, 1 for swap"), "{r}");
        assert!(r.contains("skips the swap cases"), "{r}");
    }

    #[test]
    fn fragment_rejects_a_line_that_is_not_an_option() {
        assert!(
            parse_fragment("CONFIG_A=y\nUSERFAULTFD=y\n")
                .unwrap_err()
                .contains("line 2")
        );
    }

    #[test]
    fn unset_module_and_absent_options_are_missing() {
        let frag =
            parse_fragment("CONFIG_A=y\nCONFIG_B=y\nCONFIG_C=y\n# uffdtest: recommended\nCONFIG_D=y\nCONFIG_E=y\n")
                .unwrap();
        let cfg = parse_config("CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_D=m\nCONFIG_E=y\n");
        let got: Vec<(String, Need, Option<String>)> = check(&frag, &cfg)
            .into_iter()
            .map(|m| (m.want.name, m.want.need, m.found))
            .collect();
        assert_eq!(
            got,
            [
                ("CONFIG_B".into(), Need::Required, None),
                ("CONFIG_C".into(), Need::Required, None),
                ("CONFIG_D".into(), Need::Recommended, Some("m".into())),
            ]
        );
    }

    fn check_file(name: &str) -> Vec<(String, Need)> {
        let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let frag = parse_fragment(FRAGMENT).unwrap();
        check(&frag, &parse_config(&text))
            .into_iter()
            .map(|m| (m.want.name, m.want.need))
            .collect()
    }

    fn names(v: &[(String, Need)], need: Need) -> Vec<&str> {
        v.iter().filter(|(_, n)| *n == need).map(|(s, _)| s.as_str()).collect()
    }

    #[test]
    fn debian_6_12_cloud_kernel_lacks_only_debug_options() {
        let m = check_file("kconfig-debian-6.12-cloud-amd64.config");
        assert_eq!(names(&m, Need::Required), Vec::<&str>::new());
        assert_eq!(names(&m, Need::Swap), Vec::<&str>::new(), "zram is a module there");
        assert_eq!(
            names(&m, Need::Mm),
            Vec::<&str>::new(),
            "KSM, NUMA, memcg, io_uring are in"
        );
        assert_eq!(
            names(&m, Need::Recommended),
            [
                "CONFIG_DEBUG_VM",
                "CONFIG_PROVE_LOCKING",
                "CONFIG_KASAN",
                "CONFIG_KASAN_GENERIC",
                "CONFIG_GUP_TEST"
            ]
        );
    }

    #[test]
    fn debian_6_1_cloud_kernel_also_lacks_memory_failure() {
        let m = check_file("kconfig-debian-6.1-cloud-amd64.config");
        assert_eq!(names(&m, Need::Required), Vec::<&str>::new());
        assert!(names(&m, Need::Recommended).contains(&"CONFIG_MEMORY_FAILURE"));
    }

    #[test]
    fn x86_64_defconfig_cannot_run_the_suite() {
        let m = check_file("kconfig-x86_64-defconfig-6.12.config");
        assert_eq!(
            names(&m, Need::Required),
            [
                "CONFIG_USERFAULTFD",
                "CONFIG_HAVE_ARCH_USERFAULTFD_WP",
                "CONFIG_HAVE_ARCH_USERFAULTFD_MINOR",
                "CONFIG_PTE_MARKER_UFFD_WP",
                "CONFIG_TRANSPARENT_HUGEPAGE"
            ]
        );
    }
}
