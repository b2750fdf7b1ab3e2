//! `uffdtest bench --suite`: where a full run's time goes on this host
//! ([`crate::runner::cost`]), and with `--against`, the suite and another
//! test program timed in turn.

use crate::cli::Exit;
use crate::cli::run::{Build, Filters, Selection, manifest, options};
use crate::mem::MemType;
use crate::runner::cost::{self, SuiteCost, cpu};
use crate::runner::{Reporter, execute};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `bench --suite`'s answer: the run's cost and, with `--against`, the rounds side by side.
#[derive(Debug, Serialize)]
pub struct SuiteBench {
    #[serde(flatten)]
    pub cost: SuiteCost,
    /// With `--against`: the suite and the other program, round by round.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub side_by_side: Option<SideBySide>,
}

impl SuiteBench {
    pub fn table(&self) -> String {
        let mut s = self.cost.table();
        if let Some(sbs) = &self.side_by_side {
            s.push_str(&sbs.table());
        }
        s
    }
}

fn timed_ms<T>(f: impl FnOnce() -> T) -> f64 {
    let t = Instant::now();
    std::hint::black_box(f());
    t.elapsed().as_secs_f64() * 1e3
}

/// Each capability probe timed in this process: what every case process
/// paid before the run shared the answers.
pub fn probe_costs() -> Vec<(String, f64)> {
    let mut probes_ms = vec![(
        "caps (UFFDIO_API, /dev/userfaultfd, sysfs)".to_string(),
        timed_ms(crate::caps::probe),
    )];
    for b in crate::caps::Behaviour::ALL {
        probes_ms.push((format!("behaviour: {}", b.name()), timed_ms(|| b.probe())));
    }
    probes_ms.push((
        "guest_memfd registration (KVM VMs)".into(),
        timed_ms(|| crate::caps::probe_registration(MemType::GuestMemfd, crate::uffd::RegisterMode::MISSING)),
    ));
    probes_ms
}

/// Runs the selection (built first with `build`) and measures it; with
/// `against`, then runs the suite and that program in turn, round by round.
pub fn measure(
    mem: &[MemType],
    build: bool,
    against: Option<Against>,
) -> Result<SuiteBench, Box<dyn std::error::Error>> {
    let sel = Selection {
        manifest: None,
        build,
        pick: Filters {
            mem: mem.iter().map(|m| m.to_string()).collect(),
            ..Filters::default()
        },
        shard: None,
        run_ignored: false,
        repeat: 1,
        first: Vec::new(),
    };
    let path = manifest(&sel.manifest, build.then_some(Build::Suite))?;
    let mut opts = options(&sel, path);
    opts.handle_signals = true;
    let (_, cost) = cost::measure(&opts, probe_costs, &mut [])?;
    let side_by_side = match against {
        Some(a) => Some(a.run(opts.hugepages, || {
            let t = Instant::now();
            execute(&opts, &mut [] as &mut [&mut dyn Reporter]).map(|_| t.elapsed())
        })?),
        None => None,
    };
    Ok(SuiteBench { cost, side_by_side })
}

/// Another test program timed beside the suite (`bench --suite --against`).
#[derive(Debug, Clone)]
pub struct Against {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub rounds: usize,
}

/// Wall and CPU of one run, seconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Timing {
    pub wall_s: f64,
    pub cpu_s: f64,
}

/// Both programs' rounds, in the order they ran.
#[derive(Debug, Serialize)]
pub struct SideBySide {
    pub program: String,
    pub ours: Vec<Timing>,
    pub theirs: Vec<Timing>,
    /// Rounds in which the other program exited non-zero.
    pub their_failures: usize,
}

impl Against {
    pub fn new(program: &Path, args: &[String], rounds: usize) -> Against {
        Against {
            program: program.to_path_buf(),
            args: args.to_vec(),
            rounds: rounds.max(1),
        }
    }

    /// Alternates the suite (`ours`, which returns its wall time) and the
    /// program, so a machine that gets busier or quieter weighs on both.
    /// The huge-page pool stays at `hugepages` through every round, so the
    /// other program runs its hugetlb tests as the suite does (each run of
    /// the suite puts back what it found; with an empty pool the kernel's
    /// selftests skip theirs and look faster than they are).
    fn run(
        &self,
        hugepages: Option<u64>,
        mut ours: impl FnMut() -> Result<Duration, crate::runner::PlanError>,
    ) -> Result<SideBySide, Box<dyn std::error::Error>> {
        use nix::sys::resource::UsageWho::{RUSAGE_CHILDREN, RUSAGE_SELF};
        let (_pool, notes) = crate::runner::env::Env::setup(hugepages, None, &[]);
        for n in notes {
            eprintln!("uffdtest: {n}");
        }
        let mut out = SideBySide {
            program: self.program.display().to_string(),
            ours: Vec::new(),
            theirs: Vec::new(),
            their_failures: 0,
        };
        for _ in 0..self.rounds {
            let cpu0 = cpu(RUSAGE_SELF) + cpu(RUSAGE_CHILDREN);
            let wall = ours()?;
            out.ours.push(Timing {
                wall_s: wall.as_secs_f64(),
                cpu_s: cpu(RUSAGE_SELF) + cpu(RUSAGE_CHILDREN) - cpu0,
            });
            let cpu0 = cpu(RUSAGE_CHILDREN);
            let t = Instant::now();
            let status = Command::new(&self.program)
                .args(&self.args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map_err(|e| format!("{}: {e}", self.program.display()))?;
            out.theirs.push(Timing {
                wall_s: t.elapsed().as_secs_f64(),
                cpu_s: cpu(RUSAGE_CHILDREN) - cpu0,
            });
            out.their_failures += usize::from(!status.success());
        }
        Ok(out)
    }
}

/// The middle value (the mean of the two middle ones for an even count); 0 for none.
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

impl SideBySide {
    /// Medians of wall and CPU: (ours, theirs).
    pub fn medians(&self) -> (Timing, Timing) {
        let m = |v: &[Timing]| Timing {
            wall_s: median(v.iter().map(|t| t.wall_s).collect()),
            cpu_s: median(v.iter().map(|t| t.cpu_s).collect()),
        };
        (m(&self.ours), m(&self.theirs))
    }

    pub fn table(&self) -> String {
        let (o, t) = self.medians();
        let name = Path::new(&self.program)
            .file_name()
            .map_or(self.program.clone(), |n| n.to_string_lossy().into_owned());
        let mut s = format!(
            "\nSide by side, {} rounds interleaved (medians):\n{:<24} {:>9} {:>9}\n",
            self.ours.len(),
            "",
            "wall",
            "CPU"
        );
        s.push_str(&format!(
            "{:<24} {:>7.2} s {:>7.2} s\n",
            "uffdtest run", o.wall_s, o.cpu_s
        ));
        s.push_str(&format!("{name:<24} {:>7.2} s {:>7.2} s\n", t.wall_s, t.cpu_s));
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::INFINITY };
        s.push_str(&format!(
            "{:<24} {:>9.2} {:>9.2}\n",
            "ratio (ours / theirs)",
            ratio(o.wall_s, t.wall_s),
            ratio(o.cpu_s, t.cpu_s)
        ));
        if self.their_failures > 0 {
            s.push_str(&format!(
                "{name} exited non-zero in {} of {} rounds\n",
                self.their_failures,
                self.theirs.len()
            ));
        }
        s
    }
}

/// `uffdtest bench --suite`.
pub fn suite(mem: &[MemType], build: bool, json: bool, against: Option<Against>) -> Exit {
    match measure(mem, build, against) {
        Ok(c) if json => {
            println!("{}", serde_json::to_string_pretty(&c).unwrap_or_default());
            Exit::Ok
        }
        Ok(c) => {
            print!("{}", c.table());
            Exit::Ok
        }
        Err(e) => Exit::CouldNotRun.because("uffdtest bench --suite", e),
    }
}
