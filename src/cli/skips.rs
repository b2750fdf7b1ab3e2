//! `uffdtest skips`: writes docs/skips.md from real runs, every skip reason
//! mapped to the one probe that decided it.
//!
//! A case may skip only on an answer of a probe independent of the case
//! (UFFDIO_API bits, the caps probes, sysfs/procfs facts, privileges,
//! the memory type by construction). [`PROBES`] lists each probe with the
//! reasons it words; a reason that matches no probe, or more than one,
//! fails the generation: a new skip must name its probe here first.

use crate::cli::Exit;
use crate::gate::compare::{LoadError, read_report};
use crate::runner::result::{Report, Status};
use std::collections::BTreeMap;
use std::fmt::{self, Write};
use std::path::PathBuf;

/// One probe: its name, what it reads, and the skip reasons it words
/// (patterns: `*` stands for any text, the rest must match exactly).
pub struct Probe {
    pub name: &'static str,
    pub reads: &'static str,
    pub reasons: &'static [&'static str],
}

/// Every probe a skip may come from.
pub const PROBES: &[Probe] = &[
    Probe {
        name: "UFFDIO_API features",
        reads: "the feature bits UFFDIO_API offers on the caps probe's own uffd (`uffdtest caps`)",
        reasons: &["kernel lacks *"],
    },
    Probe {
        name: "behaviour: multi-VMA WRITEPROTECT",
        reads: "UFFDIO_WRITEPROTECT over two registered VMAs of its own (caps::behaviour)",
        reasons: &["kernel has no multi-VMA UFFDIO_WRITEPROTECT*"],
    },
    Probe {
        name: "behaviour: CONTINUE_MODE_WP",
        reads: "UFFDIO_CONTINUE with MODE_WP over an unmapped range of its own (caps::behaviour)",
        reasons: &["kernel has no UFFDIO_CONTINUE_MODE_WP*"],
    },
    Probe {
        name: "userfaultfd(2)",
        reads: "userfaultfd(2) with and without UFFD_USER_MODE_ONLY, once per process (caps: syscall, syscall_full)",
        reasons: &[
            "cannot open a userfaultfd*",
            "cannot open a uffd without UFFD_USER_MODE_ONLY*",
        ],
    },
    Probe {
        name: "/dev/userfaultfd",
        reads: "open(/dev/userfaultfd) and USERFAULTFD_IOC_NEW (caps: dev_userfaultfd)",
        reasons: &["cannot use /dev/userfaultfd*"],
    },
    Probe {
        name: "privileges",
        reads: "the effective uid, and whether UFFDIO_API grants EVENT_FORK (CAP_SYS_PTRACE; caps: root, event_fork_allowed)",
        reasons: &["needs root*", "UFFD_FEATURE_EVENT_FORK needs CAP_SYS_PTRACE"],
    },
    Probe {
        name: "sysctl",
        reads: "whether /proc/sys/vm/unprivileged_userfaultfd exists",
        reasons: &["no /proc/sys/vm/unprivileged_userfaultfd"],
    },
    Probe {
        name: "memory type",
        reads: "nothing: the UAPI defines no such operation on this memory type (a fact of the case list)",
        reasons: &[
            "hugetlb has no UFFDIO_ZEROPAGE",
            "MINOR mode is not defined for *",
            "* has no file to alias",
        ],
    },
    Probe {
        name: "THP sysfs",
        reads: "/sys/kernel/mm/transparent_hugepage (hpage_pmd_size, the hugepages-<size>kB directories)",
        reasons: &[
            "kernel has no THP*",
            "kernel offers * folios only for *",
            "kernel offers * folios for shmem only*",
            "kernel offers no *kB THP size",
        ],
    },
    Probe {
        name: "hugetlb pool",
        reads: "/sys/kernel/mm/hugepages and vm.nr_hugepages: the sizes, and free pages after raising the pool as root",
        reasons: &[
            "kernel has no hugetlb*",
            "kernel has no *kB hugetlb size",
            "no /proc/sys/vm/nr_hugepages*",
            "need * free huge pages*",
            "need * free 1 GiB huge pages*",
            "no free *kB huge page and not root to make one",
            "could not allocate a *kB huge page*",
        ],
    },
    Probe {
        name: "swap",
        reads: "/proc/swaps: an active swap device, and whether each writes synchronously (caps: swap)",
        reasons: &["no active swap device*", "swap device * writes asynchronously*"],
    },
    Probe {
        name: "long-term pin",
        reads: "a long-term pin of a scratch page of its own: gup_test, else io_uring fixed buffers",
        reasons: &["needs a read-only long-term pin*", "no long-term pin: *"],
    },
    Probe {
        name: "KVM",
        reads: "/dev/kvm: KVM_GET_API_VERSION, KVM_CHECK_EXTENSION (guest_memfd, its flags), a VM of its own",
        reasons: &[
            "no /dev/kvm",
            "cannot open /dev/kvm*",
            "KVM API version *",
            "KVM is not usable*",
            "KVM has no *",
            "KVM_CHECK_EXTENSION*",
        ],
    },
    Probe {
        name: "guest_memfd registration",
        reads: "UFFDIO_REGISTER of a guest_memfd mapping of its own, per mode (caps: guest_memfd)",
        reasons: &["kernel has no userfaultfd support for guest_memfd*"],
    },
    Probe {
        name: "PAGEMAP_SCAN",
        reads: "PAGEMAP_SCAN with an empty range on /proc/self/pagemap (ENOTTY before 6.7)",
        reasons: &["kernel has no PAGEMAP_SCAN*"],
    },
    Probe {
        name: "filesystem",
        reads: "a writable directory that is not tmpfs (fstatfs), for the regular-file cases",
        reasons: &["no writable non-tmpfs directory*"],
    },
    Probe {
        name: "process maps",
        reads: "/proc/self/maps: whether the process has a [vdso]",
        reasons: &["no [vdso] mapping*"],
    },
    Probe {
        name: "guard regions",
        reads: "MADV_GUARD_INSTALL on a scratch page of its own (EINVAL before 6.13)",
        reasons: &["kernel has no guard regions*"],
    },
    Probe {
        name: "NUMA",
        reads: "/sys/devices/system/node: how many nodes have memory",
        reasons: &["needs two NUMA nodes*"],
    },
    Probe {
        name: "device files",
        reads: "whether a device node (/dev/mem) opens, for the VMA-kind cases (tests/vma_kinds.rs)",
        reasons: &["/dev/mem: *"],
    },
    Probe {
        name: "VMA kinds",
        reads: "whether the kernel makes the VMA kind at all (MAP_DROPPABLE, memfd_secret), for tests/vma_kinds.rs",
        reasons: &["kernel has no MAP_DROPPABLE*", "memfd_secret: *"],
    },
    Probe {
        name: "shadow stack",
        reads: "map_shadow_stack(2) of a scratch stack (ENOSYS: no user shadow stack), for the VMA-kind cases",
        reasons: &["no user shadow stack: *"],
    },
    Probe {
        name: "memory cgroup",
        reads: "/proc/self/mountinfo and /proc/self/cgroup: a memory controller to make child cgroups under, its version, cgroup2's memory_hugetlb_accounting; CapEff (testing::memcg)",
        reasons: &[
            "no memory cgroup to make children in*",
            "memcg is cgroup v1 here*",
            "cgroup2 not mounted with memory_hugetlb_accounting*",
            "cgroup v2 without CAP_SYS_RESOURCE*",
        ],
    },
    Probe {
        name: "run selection",
        reads: "the run's --mem list: the 1 GiB hugetlb types run only when named (`uffdtest run --mem hugetlb-1g`; \
                UFFDTEST_HUGETLB_1G=1 under cargo test)",
        reasons: &["* runs on request only*"],
    },
    Probe {
        name: "kernel release",
        reads: "uname's release against the one a behaviour came in, where that behaviour is itself what the case \
                checks and no other call tells (the uffd's FMODE_NOWAIT, 6.10)",
        reasons: &["kernel * predates *"],
    },
    Probe {
        name: "memory failure",
        reads: "whether /proc/sys/vm/memory_failure_early_kill exists (it does exactly with CONFIG_MEMORY_FAILURE), \
                for the cases that poison a page with MADV_HWPOISON",
        reasons: &["no memory-failure handling*"],
    },
    Probe {
        name: "guest kernel",
        reads: "whether a kernel to boot was given (UFFDTEST_KERNEL) and QEMU is installed (tests/harness_vm.rs)",
        reasons: &[
            "qemu-system-x86_64 is not installed*",
            "set UFFDTEST_KERNEL*",
            "no kernel*",
        ],
    },
];

/// Whether `text` matches `pattern`, where `*` matches any run of text.
pub fn matches(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    for (i, part) in parts.iter().enumerate() {
        if i == parts.len() - 1 {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

/// The probes whose patterns match `reason` (exactly one when the table is right).
pub fn probes_for(reason: &str) -> Vec<&'static Probe> {
    PROBES
        .iter()
        .filter(|p| p.reasons.iter().any(|r| matches(r, reason)))
        .collect()
}

/// Skip counts per reason of one run.
pub fn skip_reasons(report: &Report) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (_, leaf) in report.leaves() {
        if leaf.status == Status::Skip {
            *out.entry(leaf.reason.clone().unwrap_or_default()).or_insert(0) += 1;
        }
    }
    out
}

/// One run's column: its label and its skips.
pub struct Run {
    pub label: String,
    pub skips: BTreeMap<String, usize>,
}

/// Why `uffdtest skips` could not generate or check docs/skips.md.
#[derive(Debug)]
pub enum SkipsError {
    /// A RUN argument is not LABEL=FILE.
    Usage(String),
    /// A run's file could not be read.
    Load(LoadError),
    /// Skip reasons that no probe words, or several do (one line each).
    Unclaimed(Vec<String>),
    /// The checked file's probe table is not what [`PROBES`] generates.
    StaleProbes,
    /// Skip kinds of the runs the checked file lists no row for (one line each).
    Unlisted(Vec<String>),
}

impl fmt::Display for SkipsError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            SkipsError::Usage(s) => write!(f, "{s}: expected LABEL=FILE, e.g. host=/tmp/uffdtest-suite.json"),
            SkipsError::Load(e) => write!(f, "{e}"),
            SkipsError::Unclaimed(bad) => write!(
                f,
                "skip reasons without exactly one probe (add or fix an entry in src/cli/skips.rs PROBES, or make \
                 the case skip on a probe):\n  {}",
                bad.join("\n  ")
            ),
            SkipsError::StaleProbes => f.write_str("its probe table is not what src/cli/skips.rs PROBES generates"),
            SkipsError::Unlisted(bad) => write!(
                f,
                "it lists no skip of these kinds (regenerate it from runs that include them):\n  {}",
                bad.join("\n  ")
            ),
        }
    }
}

impl std::error::Error for SkipsError {}

/// Each run's reasons grouped by the one probe that words them, or every
/// reason without exactly one probe.
fn claim(runs: &[Run]) -> Result<BTreeMap<&'static str, Vec<&str>>, SkipsError> {
    let mut reasons: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut bad = Vec::new();
    for run in runs {
        for reason in run.skips.keys() {
            match probes_for(reason).as_slice() {
                [p] => reasons.entry(p.name).or_default().push(reason),
                [] => bad.push(format!("{}: no probe words \"{reason}\"", run.label)),
                many => bad.push(format!(
                    "{}: \"{reason}\" matches several probes: {}",
                    run.label,
                    many.iter().map(|p| p.name).collect::<Vec<_>>().join(", ")
                )),
            }
        }
    }
    if !bad.is_empty() {
        bad.sort();
        bad.dedup();
        return Err(SkipsError::Unclaimed(bad));
    }
    for rs in reasons.values_mut() {
        rs.sort();
        rs.dedup();
    }
    Ok(reasons)
}

/// The heading of the machine-independent part of docs/skips.md.
const PROBES_HEADING: &str = "## The probes\n";

/// The probe table: every probe, what it reads, the reasons it words.
fn probe_table() -> String {
    let mut md = format!("{PROBES_HEADING}\n| probe | what it reads | reasons it words |\n|---|---|---|\n");
    for p in PROBES {
        let words: Vec<String> = p.reasons.iter().map(|r| format!("`{r}`")).collect();
        let _ = writeln!(md, "| {} | {} | {} |", p.name, cell(p.reads), words.join(", "));
    }
    md
}

/// The markdown of docs/skips.md: the runs' skips per reason (counts per
/// run, informative), then the probe table.
pub fn render(runs: &[Run]) -> Result<String, SkipsError> {
    let reasons = claim(runs)?;
    let mut md = String::new();
    let labels: Vec<&str> = runs.iter().map(|r| r.label.as_str()).collect();
    let _ = writeln!(md, "# Why cases skip\n");
    let _ = writeln!(
        md,
        "Generated by `uffdtest skips` from the runs named in each column; do not edit. A case skips only on the \
         answer of a probe independent of it; src/cli/skips.rs lists the probes and the reasons each words. `uffdtest \
         caps` shows each probe's answer on a machine. The counts depend on the machine and kernel of each run and are \
         not checked; `uffdtest skips --check` (CI) checks that every skip of its runs has exactly one probe, that \
         this file lists a skip of the same probe and pattern, and that the probe table below is fresh.\n"
    );
    let _ = writeln!(md, "## Skips per reason\n");
    let _ = writeln!(md, "| probe | reason | {} |", labels.join(" | "));
    let _ = writeln!(md, "|---|---|{}", "---:|".repeat(labels.len()));
    for probe in PROBES {
        for reason in reasons.get(probe.name).into_iter().flatten() {
            let counts: Vec<String> = runs
                .iter()
                .map(|r| r.skips.get(*reason).map_or("–".to_string(), |n| n.to_string()))
                .collect();
            let _ = writeln!(md, "| {} | {} | {} |", probe.name, cell(reason), counts.join(" | "));
        }
    }
    let totals: Vec<String> = runs
        .iter()
        .map(|r| r.skips.values().sum::<usize>().to_string())
        .collect();
    let _ = writeln!(md, "| | **all skips** | {} |\n", totals.join(" | "));
    md += &probe_table();
    Ok(md)
}

/// The (probe, reason pattern) a reason that one probe claims falls under.
fn kind(reason: &str) -> Option<(&'static str, &'static str)> {
    let p = *probes_for(reason).first()?;
    p.reasons.iter().find(|r| matches(r, reason)).map(|r| (p.name, *r))
}

/// The (probe, reason) rows of a skips.md counts table.
fn listed_rows(md: &str) -> Vec<(String, String)> {
    let counts = md.split(PROBES_HEADING).next().unwrap_or("");
    counts
        .lines()
        .filter_map(|l| {
            let mut cols = l.strip_prefix("| ")?.split(" | ");
            let (probe, reason) = (cols.next()?, cols.next()?);
            (!probe.is_empty() && probe != "probe" && !probe.starts_with("--"))
                .then(|| (probe.to_string(), reason.replace("\\|", "|")))
        })
        .collect()
}

/// Checks `md` (a docs/skips.md) against `runs`, machine-independently:
/// every skip of the runs has exactly one probe, `md` lists a skip of the
/// same probe and reason pattern (the wording may differ in its numbers or
/// paths), and its probe table is fresh. The counts are not compared.
pub fn check(md: &str, runs: &[Run]) -> Result<(), SkipsError> {
    claim(runs)?;
    if md.split_once(PROBES_HEADING).map(|(_, t)| t) != probe_table().split_once(PROBES_HEADING).map(|(_, t)| t) {
        return Err(SkipsError::StaleProbes);
    }
    let listed: Vec<(&str, &str)> = listed_rows(md).iter().filter_map(|(_, r)| kind(r)).collect();
    let mut bad: Vec<String> = runs
        .iter()
        .flat_map(|run| run.skips.keys().map(move |r| (run, r)))
        .filter_map(|(run, r)| {
            let k = kind(r)?;
            (!listed.contains(&k)).then(|| format!("{}: \"{r}\" ({}: `{}`)", run.label, k.0, k.1))
        })
        .collect();
    bad.sort();
    bad.dedup();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(SkipsError::Unlisted(bad))
    }
}

/// Text safe in a markdown table cell.
fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

#[derive(clap::Args)]
pub struct SkipsArgs {
    /// Runs as LABEL=FILE (a `uffdtest run`/`vm` JSON report or a KTAP log), one column each.
    #[arg(required = true, value_parser = parse_run)]
    runs: Vec<(String, PathBuf)>,
    /// Write the markdown here instead of stdout.
    #[arg(short, long, conflicts_with = "check")]
    output: Option<PathBuf>,
    /// Exit 1 unless every skip of these runs has one probe and FILE lists its kind, with a fresh probe table
    /// (the counts, which depend on the machine, are not checked).
    #[arg(long, value_name = "FILE")]
    check: Option<PathBuf>,
}

fn parse_run(s: &str) -> Result<(String, PathBuf), SkipsError> {
    s.split_once('=')
        .map(|(l, p)| (l.to_string(), PathBuf::from(p)))
        .ok_or_else(|| SkipsError::Usage(s.to_string()))
}

fn load(args: &SkipsArgs) -> Result<Vec<Run>, SkipsError> {
    args.runs
        .iter()
        .map(|(label, path)| {
            let r = read_report(path).map_err(SkipsError::Load)?;
            Ok(Run {
                label: label.clone(),
                skips: skip_reasons(&r),
            })
        })
        .collect()
}

pub fn skips_cmd(args: &SkipsArgs) -> Exit {
    let runs = match load(args) {
        Ok(runs) => runs,
        Err(e) => {
            eprintln!("uffdtest skips: {e}");
            return Exit::CouldNotRun;
        }
    };
    if let Some(path) = &args.check {
        let old = std::fs::read_to_string(path).unwrap_or_default();
        return match check(&old, &runs) {
            Ok(()) => Exit::Ok,
            Err(e) => {
                eprintln!(
                    "uffdtest skips: {}: {e}\nregenerate it with `uffdtest skips host=RUN.json guest-6.12=VM.json \
                     guest-6.1=VM61.json -o {}`",
                    path.display(),
                    path.display()
                );
                Exit::Failure
            }
        };
    }
    let md = match render(&runs) {
        Ok(md) => md,
        Err(e) => {
            eprintln!("uffdtest skips: {e}");
            return Exit::Failure;
        }
    };
    match &args.output {
        Some(path) => {
            if let Err(e) = std::fs::write(path, &md) {
                eprintln!("uffdtest skips: write {}: {e}", path.display());
                return Exit::CouldNotRun;
            }
        }
        None => print!("{md}"),
    }
    Exit::Ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("kernel lacks *", "kernel lacks UFFD_FEATURE_MOVE", true)]
    #[case("* has no file to alias", "anon has no file to alias", true)]
    #[case(
        "kernel offers * folios only for *",
        "kernel offers 8kB folios only for shmem files",
        true
    )]
    #[case("no /dev/kvm", "no /dev/kvm here", false)]
    #[case("need * free huge pages*", "need 4 free huge pages, 0 free", true)]
    #[case("kernel has no THP*", "kernel has no hugetlb", false)]
    fn patterns(#[case] pattern: &str, #[case] text: &str, #[case] want: bool) {
        assert_eq!(matches(pattern, text), want);
    }

    #[test]
    fn every_reason_seen_in_the_recorded_runs_has_one_probe() {
        for reason in [
            "KVM has no guest_memfd (KVM_CAP_GUEST_MEMFD is 0)",
            "no active swap device: the swap-out case needs one",
            "hugetlb has no UFFDIO_ZEROPAGE",
            "needs a read-only long-term pin (gup_test: CONFIG_GUP_TEST and debugfs); io_uring only pins for write",
            "kernel lacks UFFD_FEATURE_MOVE for anon",
            "kernel has no UFFDIO_CONTINUE_MODE_WP (6.4)",
            "kernel has no multi-VMA UFFDIO_WRITEPROTECT (6.4): one VMA per call",
            "kernel has no THP (CONFIG_TRANSPARENT_HUGEPAGE off)",
        ] {
            assert_eq!(probes_for(reason).len(), 1, "{reason}");
        }
    }

    fn run(label: &str, reasons: &[&str]) -> Run {
        Run {
            label: label.into(),
            skips: reasons.iter().map(|r| (r.to_string(), 1)).collect(),
        }
    }

    #[test]
    fn an_unclaimed_reason_fails_the_generation() {
        let e = render(&[run("host", &["the copy returned EINVAL"])]).unwrap_err();
        assert!(
            matches!(&e, SkipsError::Unclaimed(bad) if bad == &["host: no probe words \"the copy returned EINVAL\""]),
            "{e:?}"
        );
    }

    #[test]
    fn on_request_types_have_their_probe() {
        let r = "hugetlb-1g runs on request only: --mem hugetlb-1g";
        assert_eq!(
            probes_for(r).iter().map(|p| p.name).collect::<Vec<_>>(),
            ["run selection"]
        );
    }

    /// The check passes on another machine's wording of a listed kind,
    /// whatever its counts, and names a kind the file does not list.
    #[test]
    fn check_compares_kinds_not_counts() {
        let md = render(&[run("host", &["need 3 free 1 GiB huge pages, only 2 after raising it"])]).unwrap();
        let other = run("ci", &["need 4 free 1 GiB huge pages, only 1 after raising it"]);
        check(&md, &[other]).unwrap();
        let e = check(&md, &[run("ci", &["no /dev/kvm"])]).unwrap_err();
        assert!(
            matches!(&e, SkipsError::Unlisted(bad) if bad == &["ci: \"no /dev/kvm\" (KVM: `no /dev/kvm`)"]),
            "{e:?}"
        );
        let e = check(&md, &[run("ci", &["the copy returned EINVAL"])]).unwrap_err();
        assert!(matches!(e, SkipsError::Unclaimed(_)), "{e:?}");
    }

    #[test]
    fn check_finds_a_stale_probe_table() {
        let md = render(&[run("host", &["no /dev/kvm"])]).unwrap();
        let stale = md.replace("`no /dev/kvm`, ", "");
        assert_ne!(stale, md);
        assert!(matches!(check(&stale, &[]), Err(SkipsError::StaleProbes)));
        check(&md, &[]).unwrap();
    }
}
