//! `uffdtest bench --guest IMAGE --c-tree TREE`: the whole suite's verdict in a guest, boot to verdict, beside the
//! kernel's own C selftests (`uffd-unit-tests`, and `uffd-stress` on anon, hugetlb and shmem as run_vmtests.sh runs
//! them) built from the tree the kernel came from and booted the same way: same image, memory, CPUs and
//! accelerator. The two alternate round by round, so a machine that gets busier or quieter weighs on both.

use crate::cli::Exit;
use crate::cli::bench_suite::median;
use crate::cli::vm::VmArgs;
use crate::gate::mutate::csuite::{self, CSuite};
use crate::runner::cost::SuiteCost;
use crate::vm::boot::AccelChoice;
use clap::Parser;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// One guest's time from QEMU's start to its end, and what it said.
#[derive(Debug, Clone, Serialize)]
pub struct GuestRound {
    pub secs: f64,
    pub verdict: String,
}

#[derive(Debug, Serialize)]
pub struct GuestBench {
    pub image: PathBuf,
    pub accel: String,
    pub ours: Vec<GuestRound>,
    pub theirs: Vec<GuestRound>,
    /// Where the suite's time went in one more guest, booted after the
    /// rounds with `vm --cost` (its start-up measurements would weigh on a
    /// timed round): its start and the run's cost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breakdown: Option<Breakdown>,
}

#[derive(Debug, Serialize)]
pub struct Breakdown {
    /// From QEMU's start: `kernel console 0.1 s`, `init up 3.9 s`, ..., `verdict 70.2 s`.
    pub boot: Vec<String>,
    pub cost: SuiteCost,
}

impl GuestBench {
    pub fn table(&self) -> String {
        let mut s = format!(
            "{} under {}, {} round(s), interleaved; seconds from QEMU's start to the verdict\n\n",
            self.image.display(),
            self.accel,
            self.ours.len()
        );
        s.push_str(&format!("{:<7} {:>34} {:>34}\n", "round", "uffdtest vm", "C selftests"));
        for (i, (o, t)) in self.ours.iter().zip(&self.theirs).enumerate() {
            s.push_str(&format!(
                "{:<7} {:>34} {:>34}\n",
                i + 1,
                format!("{:.1} s ({})", o.secs, o.verdict),
                format!("{:.1} s ({})", t.secs, t.verdict)
            ));
        }
        let (o, t) = (
            median(self.ours.iter().map(|r| r.secs).collect()),
            median(self.theirs.iter().map(|r| r.secs).collect()),
        );
        s.push_str(&format!(
            "{:<7} {:>34} {:>34}\nratio (ours / theirs): {:.2}\n",
            "median",
            format!("{o:.1} s"),
            format!("{t:.1} s"),
            o / t
        ));
        if let Some(b) = &self.breakdown {
            s.push_str(&format!(
                "\nWhere the suite's time goes in the guest (one more boot, `vm --cost`, not timed above)\n\
                 from QEMU's start: {}\n\n{}",
                b.boot.join(", "),
                b.cost.table()
            ));
        }
        s
    }
}

/// `uffdtest vm`'s own defaults for `image`, then `vm_args` (`-j 2`, `-m 4096`, ...).
fn vm_args(image: &Path, extra: &[String]) -> Result<VmArgs, clap::Error> {
    #[derive(Parser)]
    struct Line {
        #[command(flatten)]
        args: VmArgs,
    }
    let mut argv = vec!["vm".to_string(), "--kernel".into(), image.display().to_string()];
    argv.extend(extra.iter().cloned());
    Line::try_parse_from(argv).map(|l| l.args)
}

fn usage(msg: impl std::fmt::Display) -> Exit {
    Exit::CouldNotRun.because("uffdtest bench --guest", msg)
}

/// Runs the rounds and prints the table (or JSON); exit 0 when every round of ours gave a verdict.
pub fn guest(image: &Path, tree: &Path, rounds: usize, extra: &[String], json: bool) -> Exit {
    let args = match vm_args(image, extra) {
        Ok(a) => a,
        Err(e) => return usage(format_args!("the arguments for `uffdtest vm`: {e}")),
    };
    let mut opts = args.options();
    // Judged as `uffdtest vm` judges: a declared known issue is an XFAIL, not a failure of the round.
    let known = match args.known.issues() {
        Ok(k) => k,
        Err(e) => return usage(e),
    };
    // A build tree names its image as `vm` reads it; the C guest boots that image.
    let image = match crate::vm::boot::resolve_kernel(image) {
        Ok(k) => k.image,
        Err(e) => return usage(e),
    };
    let image = image.as_path();
    let work = crate::gate::build::default_out(tree).join("uffdtest-bench-guest");
    let mut out = GuestBench {
        image: image.to_path_buf(),
        accel: String::new(),
        ours: Vec::new(),
        theirs: Vec::new(),
        breakdown: None,
    };
    let mut c: Option<CSuite> = None;
    for round in 1..=rounds.max(1) {
        let mut run = match crate::vm::run::run(&opts, &mut std::io::sink()) {
            Ok(r) => r,
            Err(e) => return usage(format_args!("round {round}, uffdtest vm: {e}")),
        };
        if let Some(k) = &known {
            let release = run.console.kernel_release.clone();
            let _ = crate::vm::run::judge_known(&mut run.report, k, release, &mut std::io::sink());
        }
        let t = run.report.totals();
        out.ours.push(GuestRound {
            secs: run.elapsed.saturating_sub(run.boot_started).as_secs_f64(),
            verdict: t.summary_line(),
        });
        out.accel = run.accel.to_string();
        // Later rounds boot with what this one found: no KVM probe boot each round.
        opts.accel = match run.accel {
            crate::vm::boot::Accel::Kvm => AccelChoice::Kvm,
            crate::vm::boot::Accel::Tcg => AccelChoice::Tcg,
        };
        eprintln!(
            "uffdtest bench: round {round}, uffdtest vm: {:.1} s",
            out.ours[round - 1].secs
        );
        // The C guest gets the accelerator the suite's boot ended up with, and its memory and CPUs.
        if c.is_none() {
            c = match csuite::build(
                tree,
                &work,
                csuite::VMTESTS_RUNS,
                opts.accel,
                opts.memory_mib,
                opts.cpus,
            ) {
                Ok(c) => Some(c),
                Err(e) => return usage(format_args!("the C selftests from {}: {e}", tree.display())),
            };
        }
        let c = c.as_mut().expect("built above");
        let r = match c.run(image, &work.join(format!("round-{round}")), &[]) {
            Ok(r) => r,
            Err(e) => return usage(format_args!("round {round}, the C selftests: {e}")),
        };
        let failed = r.exits.values().filter(|&&e| e != 0 && e != 4).count();
        out.theirs.push(GuestRound {
            secs: r.secs,
            verdict: format!(
                "{} programs, {failed} failed{}",
                r.exits.len(),
                if r.finished { "" } else { ", unfinished" }
            ),
        });
        eprintln!("uffdtest bench: round {round}, C selftests: {:.1} s", r.secs);
    }
    opts.guest.cost = true;
    eprintln!("uffdtest bench: one more guest, vm --cost: where the suite's time goes");
    match crate::vm::run::run(&opts, &mut std::io::sink()) {
        Ok(run) => {
            out.breakdown = SuiteCost::from_report(&run.report).map(|cost| Breakdown {
                boot: run.from_boot(),
                cost,
            });
            if out.breakdown.is_none() {
                eprintln!("uffdtest bench: the guest with --cost gave no cost line");
            }
        }
        Err(e) => eprintln!("uffdtest bench: the guest with --cost: {e}"),
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        print!("{}", out.table());
    }
    Exit::Ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_gives_each_round_and_the_ratio_of_the_medians() {
        let r = |secs: f64| GuestRound {
            secs,
            verdict: "v".into(),
        };
        let b = GuestBench {
            image: "bzImage".into(),
            accel: "tcg".into(),
            ours: vec![r(100.0), r(120.0), r(90.0)],
            theirs: vec![r(50.0), r(60.0), r(70.0)],
            breakdown: None,
        };
        let t = b.table();
        assert!(t.contains("median"), "{t}");
        assert!(t.contains("100.0 s") && t.contains("60.0 s"), "{t}");
        assert!(t.ends_with("ratio (ours / theirs): 1.67\n"), "{t}");
        assert_eq!(median(vec![4.0, 1.0]), 2.5);
    }

    #[test]
    fn vm_arguments_take_vm_defaults_and_the_extras() {
        let a = vm_args(Path::new("/k"), &["-j".into(), "2".into()]).unwrap();
        assert_eq!((a.jobs, a.machine.smp), (Some(2), 2));
        assert!(vm_args(Path::new("/k"), &["--no-such".into()]).is_err());
    }
}
