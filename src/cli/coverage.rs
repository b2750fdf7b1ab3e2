//! `uffdtest coverage`: writes docs/coverage.md from the built suite.
//!
//! The matrix counts the cases each test binary (one per ioctl or feature)
//! has on each memory type, from the binaries' own listings, so it cannot
//! drift from the code. The upstream table maps every case of the kernel's
//! uffd selftests to ours; a mapping that names a test the suite does not
//! have fails the generation, and so does an upstream memory type we miss.

use crate::cli::Exit;
use crate::mem::MemType;
use crate::runner::discover::{self, Case, HARNESS_PREFIX, Manifest};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// One case of the kernel's selftests and the tests of ours that cover it.
pub struct Upstream {
    /// The upstream case name, as the C test prints it.
    pub name: &'static str,
    /// `uffd-unit-tests`, `uffd-wp-mremap` or `uffd-stress`.
    pub program: &'static str,
    /// The memory types upstream runs it on.
    pub mem: &'static [MemType],
    /// Ours, as `binary::test_fn` (every case of that function counts);
    /// `binary::test_fn@mem` for a test that runs on one type by construction.
    pub ours: &'static [&'static str],
}

use MemType::{Anon, AnonThp, Hugetlb, HugetlbPrivate, Shmem, ShmemPrivate};
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
        name: "zeropage",
        program: "uffd-unit-tests",
        mem: FIVE,
        ours: &[
            "zeropage::zeropage_resolves_read_fault_with_zeros",
            "zeropage::zeropage_is_granted_except_on_hugetlb",
            "zeropage::zeropage_retried_through_alias",
            "zeropage::zeropage_over_populated_page_fails_eexist",
        ],
    },
    Upstream {
        name: "move",
        program: "uffd-unit-tests",
        mem: &[Anon],
        ours: &[
            "move::move_resolves_every_fault_byte_for_byte",
            "move::move_allow_src_holes_counts_holes_as_moved",
        ],
    },
    Upstream {
        name: "move-pmd",
        program: "uffd-unit-tests",
        mem: &[AnonThp],
        ours: &["move::move_pmd_moves_the_huge_page_whole@anon-thp"],
    },
    Upstream {
        name: "move-pmd-split",
        program: "uffd-unit-tests",
        mem: &[AnonThp],
        ours: &[
            "move::move_pmd_into_a_dst_with_page_table_splits_it@anon-thp",
            "move::move_part_of_a_thp_splits_the_source@anon-thp",
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
        ours: &["continue::minor_collapse_keeps_contents@shmem"],
    },
    Upstream {
        name: "sigbus",
        program: "uffd-unit-tests",
        mem: FIVE,
        ours: &[
            "sigbus::sigbus_handler_copy_resolves_each_missing_page_once",
            "sigbus::forked_child_resolves_its_sigbus_faults_through_the_fork_descriptor",
        ],
    },
    Upstream {
        name: "sigbus-wp",
        program: "uffd-unit-tests",
        mem: FIVE,
        ours: &["sigbus::sigbus_wp_handler_copy_then_unprotect_resolves_each_page"],
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
    Upstream {
        name: "poison",
        program: "uffd-unit-tests",
        mem: FIVE,
        ours: &[
            "poison::poison_even_pages_sigbus_and_odd_pages_read_zero",
            "poison::poison_reports_the_whole_length_as_updated",
        ],
    },
    Upstream {
        name: "mmap-changing",
        program: "uffd-unit-tests",
        mem: &[Shmem],
        ours: &["mmap_changing::resolving_ioctls_fail_eagain_while_remove_is_pending"],
    },
    Upstream {
        name: "test_one_folio (base pages, THP/mTHP sizes, hugetlb; private and shared; swap-out)",
        program: "uffd-wp-mremap",
        mem: &[],
        ours: &[
            "wp_mremap::mremap_clears_wp_on_base_pages",
            "wp_mremap::mremap_clears_wp_on_swapped_out_base_pages",
            "wp_mremap::mremap_clears_wp_on_private_thp",
            "wp_mremap::mremap_clears_wp_on_shared_thp",
            "wp_mremap::mremap_clears_wp_on_swapped_out_private_thp",
            "wp_mremap::mremap_clears_wp_on_swapped_out_shared_thp",
            "wp_mremap::mremap_clears_wp_on_hugetlb",
        ],
    },
    Upstream {
        name: "bounce (uffd-stress <type> <MiB> <bounces>)",
        program: "uffd-stress",
        mem: FIVE,
        ours: &["stress::bounce_keeps_every_counter_and_byte"],
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

/// The test function of a case: its KTAP name without variant and values.
fn function(c: &Case) -> String {
    let f = c.name.split(' ').next().unwrap_or(&c.name);
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
        for entry in u.ours {
            let (f, fixed) = match entry.split_once('@') {
                Some((f, m)) => (f, MemType::from_name(m)),
                None => (*entry, None),
            };
            match by_fn.get(f) {
                Some(cs) => {
                    ours.push(format!("`{f}`"));
                    covered.extend(cs.iter().filter_map(|c| mem_of(c)));
                    covered.extend(fixed);
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

pub fn coverage_cmd(a: &CoverageArgs) -> Exit {
    let manifest = a.manifest.clone().unwrap_or_else(discover::default_manifest);
    let result = (|| {
        if a.build {
            discover::build(&[])?.save(&manifest)?;
        }
        render(&suite_cases(&manifest)?)
    })();
    let text = match result {
        Ok(t) => t,
        Err(e) => return Exit::CouldNotRun.because("uffdtest coverage", e),
    };
    if let Some(path) = &a.check {
        let old = std::fs::read_to_string(path).unwrap_or_default();
        if old == text {
            return Exit::Ok;
        }
        eprintln!(
            "uffdtest coverage: {} is stale; regenerate it with `cargo run -- coverage --build -o {}`",
            path.display(),
            path.display()
        );
        return Exit::Failure;
    }
    match &a.output {
        Some(p) => {
            if let Err(e) = std::fs::write(p, &text) {
                return Exit::CouldNotRun
                    .because("uffdtest coverage", format_args!("cannot write {}: {e}", p.display()));
            }
        }
        None => print!("{text}"),
    }
    Exit::Ok
}
