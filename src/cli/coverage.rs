//! `uffdtest coverage`: writes docs/coverage.md from the built suite.
//!
//! The matrix counts the cases each test binary (one per ioctl or feature)
//! has on each memory type, from the binaries' own listings, so it cannot
//! drift from the code. The upstream table maps every case of the kernel's
//! uffd selftests to ours; a mapping that names a test the suite does not
//! have fails the generation, and so does an upstream memory type we miss.

use crate::mem::MemType;
use crate::runner::discover::{self, Case, HARNESS_PREFIX, Manifest};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// One case of the kernel's selftests and the tests of ours that cover it.
pub struct Upstream {
    /// The upstream case name, as the C test prints it.
    pub name: &'static str,
    /// `uffd-unit-tests`, `uffd-wp-mremap` or `uffd-stress`.
    pub program: &'static str,
    /// The memory types upstream runs it on.
    pub mem: &'static [MemType],
    /// Ours, as `binary::test_fn` (every case of that function counts).
    pub ours: &'static [&'static str],
}

use MemType::{Anon, Hugetlb, HugetlbPrivate, Shmem, ShmemPrivate};
const FIVE: &[MemType] = &[Anon, Shmem, ShmemPrivate, Hugetlb, HugetlbPrivate];

/// The upstream cases, in the order `uffd-unit-tests` runs them, then the
/// other programs. Upstream names are facts about the C tests; ours are
/// checked against the built suite.
pub const UPSTREAM: &[Upstream] = &[
    Upstream {
        name: "UFFDIO_API (with syscall)",
        program: "uffd-unit-tests",
        mem: &[],
        ours: &[
            "api::wrong_api_number_fails_einval",
            "api::unknown_feature_bit_fails_einval",
            "api::second_handshake_fails_einval",
            "api::handshake_offers_every_probed_feature",
        ],
    },
    Upstream {
        name: "UFFDIO_API (with /dev/userfaultfd)",
        program: "uffd-unit-tests",
        mem: &[],
        ours: &[
            "api::wrong_api_number_fails_einval",
            "api::unknown_feature_bit_fails_einval",
            "api::second_handshake_fails_einval",
            "api::dev_and_syscall_descriptors_are_equivalent",
        ],
    },
    Upstream {
        name: "register-ioctls",
        program: "uffd-unit-tests",
        mem: FIVE,
        ours: &[
            "register::register_grants_documented_ioctls",
            "register::register_minor_on_anon_fails_einval",
            "register::register_mode_zero_fails_einval",
        ],
    },
    Upstream {
        name: "wp-fork",
        program: "uffd-unit-tests",
        mem: FIVE,
        ours: &["wp_fork::fork_without_event_drops_wp_in_child"],
    },
    Upstream {
        name: "wp-fork-with-event",
        program: "uffd-unit-tests",
        mem: FIVE,
        ours: &["wp_fork::fork_with_event_keeps_wp_in_child"],
    },
    Upstream {
        name: "wp-fork-pin",
        program: "uffd-unit-tests",
        mem: FIVE,
        ours: &[
            "wp_fork::fork_of_pinned_page_without_event_drops_wp",
            "wp_fork::pin_in_child_without_event_leaves_no_wp",
        ],
    },
    Upstream {
        name: "wp-fork-pin-with-event",
        program: "uffd-unit-tests",
        mem: FIVE,
        ours: &[
            "wp_fork::fork_of_pinned_page_with_event_keeps_wp",
            "wp_fork::read_pin_in_child_with_event_keeps_wp",
        ],
    },
    Upstream {
        name: "wp-unpopulated",
        program: "uffd-unit-tests",
        mem: &[Anon],
        ours: &[
            "wp_unpopulated::protect_unpopulated_page_installs_marker",
            "wp_unpopulated::unprotect_clears_marker",
            "wp_unpopulated::dontneed_zaps_marker",
            "wp_unpopulated::write_to_marker_faults_and_clears_after_resolve",
            "wp_unpopulated::read_of_marker_reads_zero_and_keeps_protection",
        ],
    },
    Upstream {
        name: "minor",
        program: "uffd-unit-tests",
        mem: &[Shmem, Hugetlb],
        ours: &[
            "continue::read_faults_minor_and_continue_maps_the_alias_data",
            "continue::continue_over_populated_page_fails_eexist",
        ],
    },
    Upstream {
        name: "minor-wp",
        program: "uffd-unit-tests",
        mem: &[Shmem, Hugetlb],
        ours: &["continue::continue_mode_wp_maps_page_write_protected"],
    },
    Upstream {
        name: "minor-collapse",
        program: "uffd-unit-tests",
        mem: &[Shmem],
        ours: &["continue::minor_collapse_keeps_contents"],
    },
    Upstream {
        name: "events",
        program: "uffd-unit-tests",
        mem: FIVE,
        ours: &["events::events_fork_remap_remove_follow_a_child"],
    },
    Upstream {
        name: "events-wp",
        program: "uffd-unit-tests",
        mem: FIVE,
        ours: &["events::events_wp_fork_remap_remove_follow_a_child"],
    },
];

/// Cases of the whole suite (harness self-tests left out), by binary.
pub fn suite_cases(manifest_path: &Path) -> Result<Vec<Case>, String> {
    let m = Manifest::load(manifest_path)?;
    let mut out = Vec::new();
    for b in m.binaries.iter().filter(|b| !b.name.starts_with(HARNESS_PREFIX)) {
        out.extend(discover::list_cases(b, &Manifest::resolve(manifest_path, b))?);
    }
    Ok(out)
}

/// The test function of a case: its libtest name without the case segment.
fn function(c: &Case) -> String {
    let f = match c.test.rsplit_once("::") {
        Some((head, last)) if last.starts_with("case_") => head,
        _ => c.test.as_str(),
    };
    format!("{}::{f}", c.binary)
}

fn mem_of(c: &Case) -> Option<MemType> {
    c.variant.as_deref().and_then(MemType::from_name)
}

/// Renders docs/coverage.md; Err names every broken upstream mapping.
pub fn render(cases: &[Case]) -> Result<String, String> {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Coverage\n\n\
         Generated by `uffdtest coverage` from the built suite; CI fails when this file is stale.\n\
         Regenerate with `cargo run -- coverage --build -o docs/coverage.md`.\n"
    );
    // The matrix: binary × memory type.
    let mut rows: BTreeMap<&str, BTreeMap<Option<MemType>, usize>> = BTreeMap::new();
    for c in cases {
        *rows.entry(&c.binary).or_default().entry(mem_of(c)).or_default() += 1;
    }
    let _ = writeln!(
        s,
        "## Cases per ioctl or feature and memory type\n\n\
         One row per test binary. `other` counts cases not tied to a memory type (for example the two\n\
         ways of opening a uffd in `api`).\n"
    );
    let mut head = String::from("| binary |");
    let mut rule = String::from("|---|");
    for m in MemType::ALL {
        let _ = write!(head, " {m} |");
        rule.push_str("---:|");
    }
    let _ = writeln!(s, "{head} other | total |\n{rule}---:|---:|");
    let mut col_totals: BTreeMap<Option<MemType>, usize> = BTreeMap::new();
    for (bin, counts) in &rows {
        let _ = write!(s, "| `{bin}` |");
        for m in MemType::ALL {
            let _ = write!(s, " {} |", counts.get(&Some(m)).copied().unwrap_or(0));
        }
        let total: usize = counts.values().sum();
        let _ = writeln!(s, " {} | {total} |", counts.get(&None).copied().unwrap_or(0));
        for (k, v) in counts {
            *col_totals.entry(*k).or_default() += v;
        }
    }
    let _ = write!(s, "| **total** |");
    for m in MemType::ALL {
        let _ = write!(s, " {} |", col_totals.get(&Some(m)).copied().unwrap_or(0));
    }
    let _ = writeln!(
        s,
        " {} | {} |\n",
        col_totals.get(&None).copied().unwrap_or(0),
        cases.len()
    );

    // The upstream table.
    let mut by_fn: BTreeMap<String, Vec<&Case>> = BTreeMap::new();
    for c in cases {
        by_fn.entry(function(c)).or_default().push(c);
    }
    let mut errors = Vec::new();
    let _ = writeln!(
        s,
        "## Upstream selftests → uffdtest\n\n\
         Every case of the kernel's `uffd-unit-tests`, `uffd-wp-mremap` and `uffd-stress`, the memory types\n\
         upstream runs it on, and our tests that check the same behaviour (each runs on at least those types).\n\n\
         | upstream case | program | upstream memory types | our tests |\n|---|---|---|---|"
    );
    for u in UPSTREAM {
        let mut ours = Vec::new();
        let mut covered: Vec<MemType> = Vec::new();
        for f in u.ours {
            match by_fn.get(*f) {
                Some(cs) => {
                    ours.push(format!("`{f}`"));
                    covered.extend(cs.iter().filter_map(|c| mem_of(c)));
                }
                None => errors.push(format!("{}: no test {f} in the suite", u.name)),
            }
        }
        let missing: Vec<_> = u
            .mem
            .iter()
            .filter(|m| !covered.contains(m))
            .map(|m| m.name())
            .collect();
        if !missing.is_empty() {
            errors.push(format!("{}: no case on {}", u.name, missing.join(", ")));
        }
        let mems = if u.mem.is_empty() {
            "—".to_string()
        } else {
            u.mem.iter().map(|m| m.name()).collect::<Vec<_>>().join(", ")
        };
        let _ = writeln!(s, "| `{}` | {} | {mems} | {} |", u.name, u.program, ours.join("<br>"));
    }
    if errors.is_empty() {
        Ok(s)
    } else {
        Err(format!("the upstream mapping is broken:\n  {}", errors.join("\n  ")))
    }
}

#[derive(clap::Args, Debug)]
pub struct CoverageArgs {
    /// The test manifest [default: uffdtest-tests.json next to this executable].
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// Build the test binaries first (`cargo test --no-run`).
    #[arg(long)]
    pub build: bool,
    /// Write here instead of stdout.
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
    /// Compare with this file instead; exit 1 if it is stale.
    #[arg(long, conflicts_with = "output")]
    pub check: Option<PathBuf>,
}

pub fn coverage_cmd(a: &CoverageArgs) -> ExitCode {
    let manifest = a.manifest.clone().unwrap_or_else(discover::default_manifest);
    let result = (|| {
        if a.build {
            discover::build(&[])?.save(&manifest)?;
        }
        render(&suite_cases(&manifest)?)
    })();
    let text = match result {
        Ok(t) => t,
        Err(e) => {
            eprintln!("uffdtest coverage: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(path) = &a.check {
        let old = std::fs::read_to_string(path).unwrap_or_default();
        if old == text {
            return ExitCode::SUCCESS;
        }
        eprintln!(
            "uffdtest coverage: {} is stale; regenerate it with `cargo run -- coverage --build -o {}`",
            path.display(),
            path.display()
        );
        return ExitCode::from(1);
    }
    match &a.output {
        Some(p) => {
            if let Err(e) = std::fs::write(p, &text) {
                eprintln!("uffdtest coverage: cannot write {}: {e}", p.display());
                return ExitCode::from(2);
            }
        }
        None => print!("{text}"),
    }
    ExitCode::SUCCESS
}
