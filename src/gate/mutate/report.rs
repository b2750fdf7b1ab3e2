//! The results directory (one JSON per mutant, so a rerun continues where the last one stopped) and the tables
//! made from it: kill rate per file and per area, survivors named, Markdown for docs/mutation.md and JSON.

use super::catalogue::{Catalogue, Mutant};
use super::classify::Outcome;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// What the kernel's own C selftests made of a mutant (`--compare-c`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CResult {
    pub killed: bool,
    /// The failing programs and how they ended, or why there is no verdict.
    pub detail: String,
    pub secs: f64,
}

/// One mutant's recorded result: `<results>/<id>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MutantResult {
    pub id: String,
    pub file: String,
    pub area: String,
    pub description: String,
    /// [`Mutant::fingerprint`] of the entry this result is for; a changed entry is run again.
    pub fingerprint: String,
    #[serde(flatten)]
    pub outcome: Outcome,
    #[serde(default)]
    pub build_secs: f64,
    #[serde(default)]
    pub run_secs: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub c: Option<CResult>,
}

impl MutantResult {
    pub fn new(m: &Mutant, outcome: Outcome) -> MutantResult {
        MutantResult {
            id: m.id.clone(),
            file: m.file.clone(),
            area: m.area.clone(),
            description: m.description.clone(),
            fingerprint: m.fingerprint(),
            outcome,
            build_secs: 0.0,
            run_secs: 0.0,
            c: None,
        }
    }
}

/// The results directory.
#[derive(Debug, Clone)]
pub struct Results {
    pub dir: PathBuf,
}

impl Results {
    pub fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// The recorded result for `m` if it is for the same text and final (not an infrastructure failure).
    pub fn done(&self, m: &Mutant) -> Option<MutantResult> {
        let text = std::fs::read_to_string(self.path(&m.id)).ok()?;
        let r: MutantResult = serde_json::from_str(&text).ok()?;
        (r.fingerprint == m.fingerprint() && r.outcome.is_final()).then_some(r)
    }

    /// Write atomically (a temporary file renamed), so an interrupted run never leaves half a result.
    pub fn record(&self, r: &MutantResult) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let tmp = self.dir.join(format!(".{}.json.tmp", r.id));
        std::fs::write(&tmp, serde_json::to_string_pretty(r).expect("results serialise") + "\n")?;
        std::fs::rename(tmp, self.path(&r.id))
    }

    /// Every current result for the catalogue's entries, by id.
    pub fn load(&self, cat: &Catalogue) -> BTreeMap<String, MutantResult> {
        cat.mutants
            .iter()
            .filter_map(|m| self.done(m).map(|r| (m.id.clone(), r)))
            .collect()
    }
}

/// Counts for one row of the table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    pub mutants: usize,
    pub equivalent: usize,
    pub killed: usize,
    pub timed_out: usize,
    pub survived: usize,
    pub build_failed: usize,
    /// Not run yet (or no usable result so far).
    pub pending: usize,
    /// Mutants the C selftests ran on, and how many of those they killed.
    pub c_run: usize,
    pub c_killed: usize,
    /// Our kills among the mutants the C selftests ran on, for a like-for-like rate.
    pub ours_on_c_run: usize,
}

impl Tally {
    fn add(&mut self, r: Option<&MutantResult>) {
        self.mutants += 1;
        let Some(r) = r else {
            self.pending += 1;
            return;
        };
        match &r.outcome {
            Outcome::Equivalent { .. } => self.equivalent += 1,
            Outcome::Killed { .. } => self.killed += 1,
            Outcome::TimedOut { .. } => self.timed_out += 1,
            Outcome::Survived { .. } => self.survived += 1,
            Outcome::BuildFailed { .. } => self.build_failed += 1,
            Outcome::NoResult { .. } => self.pending += 1,
        }
        if let Some(c) = r.c.as_ref().filter(|_| r.outcome.counts()) {
            self.c_run += 1;
            self.c_killed += usize::from(c.killed);
            self.ours_on_c_run += usize::from(r.outcome.detected());
        }
    }

    /// The outcome counts in the tables' column order: mutants, equivalent, killed, timed out, survived, build
    /// failed, pending.
    pub fn columns(&self) -> [usize; 7] {
        [
            self.mutants,
            self.equivalent,
            self.killed,
            self.timed_out,
            self.survived,
            self.build_failed,
            self.pending,
        ]
    }

    /// Detected / (detected + survived): equivalent, build failures and pending mutants do not count.
    pub fn kill_rate(&self) -> Option<f64> {
        let judged = self.killed + self.timed_out + self.survived;
        (judged > 0).then(|| (self.killed + self.timed_out) as f64 / judged as f64)
    }

    /// `N mutants, N equivalent, N killed, N timed out, N survived, N build failures, N pending; our kill rate X`.
    pub fn headline(&self) -> String {
        const NAMES: [&str; 7] = [
            "mutants",
            "equivalent",
            "killed",
            "timed out",
            "survived",
            "build failures",
            "pending",
        ];
        let counts: Vec<String> = self
            .columns()
            .iter()
            .zip(NAMES)
            .map(|(n, name)| format!("{n} {name}"))
            .collect();
        format!("{}; our kill rate {}", counts.join(", "), pct(self.kill_rate()))
    }

    pub fn c_kill_rate(&self) -> Option<f64> {
        (self.c_run > 0).then(|| self.c_killed as f64 / self.c_run as f64)
    }
}

/// Mean wall time of a set of results, in seconds.
fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// The whole picture of one catalogue's run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub catalogue: String,
    pub tree: Option<String>,
    pub total: Tally,
    pub per_file: BTreeMap<String, Tally>,
    pub per_area: BTreeMap<String, Tally>,
    /// Mean build + run seconds of a killed (or timed out) mutant and of a survivor.
    pub mean_secs_killed: Option<f64>,
    pub mean_secs_survived: Option<f64>,
    pub survivors: Vec<MutantResult>,
    pub equivalent: Vec<(String, String)>,
    pub build_failures: Vec<MutantResult>,
    /// `--compare-c`: mean seconds of the C selftests' guest on a mutant they killed, and on one they missed.
    #[serde(default)]
    pub mean_c_secs_killed: Option<f64>,
    #[serde(default)]
    pub mean_c_secs_missed: Option<f64>,
    /// Mutants both suites ran on where exactly one noticed: what each adds to the other.
    #[serde(default)]
    pub only_ours: Vec<MutantResult>,
    #[serde(default)]
    pub only_c: Vec<MutantResult>,
}

pub fn summarize(cat: &Catalogue, results: &BTreeMap<String, MutantResult>) -> Summary {
    let mut s = Summary {
        catalogue: cat.origin.clone(),
        tree: cat.tree.clone(),
        total: Tally::default(),
        per_file: BTreeMap::new(),
        per_area: BTreeMap::new(),
        mean_secs_killed: None,
        mean_secs_survived: None,
        survivors: Vec::new(),
        equivalent: Vec::new(),
        build_failures: Vec::new(),
        mean_c_secs_killed: None,
        mean_c_secs_missed: None,
        only_ours: Vec::new(),
        only_c: Vec::new(),
    };
    let (mut killed, mut survived) = (Vec::new(), Vec::new());
    let (mut c_killed, mut c_missed) = (Vec::new(), Vec::new());
    for m in &cat.mutants {
        // An entry argued equivalent is never run: the argument stands for any result an older entry left.
        let argued = m
            .equivalent
            .as_ref()
            .map(|why| MutantResult::new(m, Outcome::Equivalent { why: why.clone() }));
        let r = argued.as_ref().or_else(|| results.get(&m.id));
        s.total.add(r);
        s.per_file.entry(m.file.clone()).or_default().add(r);
        s.per_area.entry(m.area.clone()).or_default().add(r);
        if let Some(why) = &m.equivalent {
            s.equivalent.push((m.id.clone(), why.clone()));
        }
        let Some(r) = r else { continue };
        if let Some(c) = r.c.as_ref().filter(|_| r.outcome.counts()) {
            if c.killed {
                c_killed.push(c.secs);
            } else {
                c_missed.push(c.secs);
            }
            match (r.outcome.detected(), c.killed) {
                (true, false) => s.only_ours.push(r.clone()),
                (false, true) => s.only_c.push(r.clone()),
                _ => {}
            }
        }
        let secs = r.build_secs + r.run_secs;
        match &r.outcome {
            o if o.detected() => killed.push(secs),
            Outcome::Survived { .. } => {
                survived.push(secs);
                s.survivors.push(r.clone());
            }
            Outcome::BuildFailed { .. } => s.build_failures.push(r.clone()),
            _ => {}
        }
    }
    s.mean_secs_killed = mean(&killed);
    s.mean_secs_survived = mean(&survived);
    s.mean_c_secs_killed = mean(&c_killed);
    s.mean_c_secs_missed = mean(&c_missed);
    s
}

fn pct(r: Option<f64>) -> String {
    r.map_or("–".into(), |r| format!("{:.1} %", r * 100.0))
}

fn table(out: &mut String, first: &str, rows: &BTreeMap<String, Tally>, total: &Tally) {
    let _ = writeln!(
        out,
        "| {first} | mutants | equivalent | killed | timed out | survived | build failed | pending | kill rate | C selftests |"
    );
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let c = |t: &Tally| match t.c_kill_rate() {
        Some(_) => format!("{} ({}/{})", pct(t.c_kill_rate()), t.c_killed, t.c_run),
        None => "–".into(),
    };
    for (name, t) in rows
        .iter()
        .map(|(n, t)| (format!("`{n}`"), t))
        .chain([("**all**".to_string(), total)])
    {
        let counts: Vec<String> = t.columns().iter().map(usize::to_string).collect();
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} |",
            counts.join(" | "),
            pct(t.kill_rate()),
            c(t)
        );
    }
}

/// docs/mutation.md.
pub fn markdown(s: &Summary) -> String {
    let mut out = String::new();
    let t = &s.total;
    out.push_str("# Mutation testing: what the suite notices\n\n");
    let _ = writeln!(
        out,
        "Generated by `uffdtest mutate` from `{}`{} and the results beside it; do not edit by hand.\n",
        s.catalogue,
        s.tree
            .as_deref()
            .map(|t| format!(" (written against {t})"))
            .unwrap_or_default()
    );
    out.push_str(
        "Each catalogue entry breaks one userfaultfd behaviour in the kernel source; the kernel is rebuilt and \
         the suite run in a guest. A mutant is **killed** when a case that passed in both unmutated base runs \
         fails (or the kernel splats), **timed out** when the guest stopped answering, **survived** when every \
         stable case still passed. Kill rate = (killed + timed out) / (killed + timed out + survived); entries \
         argued **equivalent** in the catalogue and **build failures** are not counted.\n\n",
    );
    let _ = writeln!(
        out,
        "**Headline:** {}{}.\n",
        t.headline(),
        match t.c_kill_rate() {
            Some(_) => format!(
                "; on the {} mutants the kernel's C selftests also ran on, ours {} against theirs {}",
                t.c_run,
                pct(Some(t.ours_on_c_run as f64 / t.c_run as f64)),
                pct(t.c_kill_rate())
            ),
            None => String::new(),
        }
    );
    let secs = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.0} s"));
    let _ = writeln!(
        out,
        "Mean wall time per mutant (incremental build + guest run): killed {}, survived {}.\n",
        secs(s.mean_secs_killed),
        secs(s.mean_secs_survived)
    );
    if t.c_run > 0 {
        let _ = writeln!(
            out,
            "The C selftests' guest (boot to power-off, stopping at the first run that failed where it passed on \
             base): {} on a mutant they killed, {} on one they missed.\n",
            secs(s.mean_c_secs_killed),
            secs(s.mean_c_secs_missed)
        );
    }
    out.push_str("## Per file\n\n");
    table(&mut out, "file", &s.per_file, t);
    out.push_str("\n## Per ioctl, event or fd operation\n\n");
    table(&mut out, "area", &s.per_area, t);
    out.push_str("\n## Survivors\n\n");
    if s.survivors.is_empty() {
        out.push_str("None.\n");
    }
    for r in &s.survivors {
        let _ = writeln!(out, "- `{}` ({}, {}): {}", r.id, r.file, r.area, r.description);
        if let Outcome::Survived { newly_skipped } = &r.outcome
            && !newly_skipped.is_empty()
        {
            let _ = writeln!(
                out,
                "  - {} stable case(s) skipped instead of failing, e.g. {}",
                newly_skipped.len(),
                newly_skipped[0]
            );
        }
    }
    if t.c_run > 0 {
        let _ = writeln!(
            out,
            "\n## Where the two suites differ\n\nOf the {} mutants both ran on: killed by ours and missed by the C \
             selftests ({}), killed by the C selftests and missed by ours ({}).\n",
            t.c_run,
            s.only_ours.len(),
            s.only_c.len()
        );
        for (title, rs) in [("Only ours", &s.only_ours), ("Only the C selftests", &s.only_c)] {
            if rs.is_empty() {
                continue;
            }
            let _ = writeln!(out, "### {title}\n");
            for r in rs {
                let _ = writeln!(out, "- `{}` ({}, {}): {}", r.id, r.file, r.area, r.description);
            }
            out.push('\n');
        }
    }
    if !s.build_failures.is_empty() {
        out.push_str("\n## Build failures\n\n");
        for r in &s.build_failures {
            let _ = writeln!(out, "- `{}` ({}): {}", r.id, r.file, r.description);
        }
    }
    out.push_str("\n## Equivalent (argued, not run)\n\n");
    for (id, why) in &s.equivalent {
        let _ = writeln!(out, "- `{id}`: {why}");
    }
    out
}

/// The summary as one JSON document.
pub fn json(s: &Summary) -> String {
    serde_json::to_string_pretty(s).expect("summary serialises") + "\n"
}

/// Where the results of a catalogue go by default: `mutants/results/<catalogue stem>/`.
pub fn default_dir(catalogue: &Path) -> PathBuf {
    let stem = catalogue
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    catalogue.parent().unwrap_or(Path::new(".")).join("results").join(stem)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mutant(id: &str, file: &str, area: &str, eq: Option<&str>) -> Mutant {
        Mutant {
            id: id.into(),
            file: file.into(),
            area: area.into(),
            find: format!("find {id}"),
            replace: "r".into(),
            description: format!("breaks {id}"),
            equivalent: eq.map(Into::into),
        }
    }

    fn fixture() -> (Catalogue, BTreeMap<String, MutantResult>) {
        let cat = Catalogue {
            origin: "mutants/x.toml".into(),
            tree: Some("t".into()),
            mutants: vec![
                mutant("k", "fs/userfaultfd.c", "COPY", None),
                mutant("s", "fs/userfaultfd.c", "MOVE", None),
                mutant("t", "mm/userfaultfd.c", "COPY", None),
                mutant("e", "mm/userfaultfd.c", "COPY", Some("same errno later")),
                mutant("b", "mm/shmem.c", "COPY", None),
                mutant("p", "mm/shmem.c", "COPY", None),
            ],
        };
        let mut r = BTreeMap::new();
        let mut put = |m: &Mutant, o: Outcome, secs: f64, c: Option<bool>| {
            let mut x = MutantResult::new(m, o);
            x.run_secs = secs;
            x.c = c.map(|killed| CResult {
                killed,
                detail: String::new(),
                secs: 1.0,
            });
            r.insert(m.id.clone(), x);
        };
        put(
            &cat.mutants[0],
            Outcome::Killed {
                by: vec!["copy / a".into()],
            },
            10.0,
            Some(false),
        );
        put(
            &cat.mutants[1],
            Outcome::Survived { newly_skipped: vec![] },
            100.0,
            Some(false),
        );
        put(
            &cat.mutants[2],
            Outcome::TimedOut {
                detail: "silent".into(),
            },
            30.0,
            Some(true),
        );
        // Argued equivalent after it was recorded as a survivor: the argument counts.
        put(&cat.mutants[3], Outcome::Survived { newly_skipped: vec![] }, 0.0, None);
        put(
            &cat.mutants[4],
            Outcome::BuildFailed { detail: "error".into() },
            5.0,
            None,
        );
        (cat, r)
    }

    #[test]
    fn tallies_rates_and_times() {
        let (cat, r) = fixture();
        let s = summarize(&cat, &r);
        let t = &s.total;
        assert_eq!(t.columns(), [6, 1, 1, 1, 1, 1, 1]);
        assert_eq!(t.kill_rate(), Some(2.0 / 3.0));
        assert_eq!((t.c_run, t.c_killed, t.ours_on_c_run), (3, 1, 2));
        assert_eq!(s.per_area["COPY"].kill_rate(), Some(1.0));
        assert_eq!(s.per_file["fs/userfaultfd.c"].kill_rate(), Some(0.5));
        assert_eq!((s.mean_secs_killed, s.mean_secs_survived), (Some(20.0), Some(100.0)));
        assert_eq!(s.survivors.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["s"]);
        let ids = |v: &[MutantResult]| v.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
        assert_eq!((ids(&s.only_ours), ids(&s.only_c)), (vec!["k".to_string()], vec![]));
        assert_eq!((s.mean_c_secs_killed, s.mean_c_secs_missed), (Some(1.0), Some(1.0)));
    }

    #[test]
    fn the_markdown_names_survivors_and_the_headline() {
        let (cat, r) = fixture();
        let md = markdown(&summarize(&cat, &r));
        assert!(
            md.contains("1 survived, 1 build failures, 1 pending; our kill rate 66.7 %"),
            "{md}"
        );
        assert!(md.contains("ours 66.7 % against theirs 33.3 %"), "{md}");
        assert!(md.contains("- `s` (fs/userfaultfd.c, MOVE): breaks s"), "{md}");
        assert!(
            md.contains("| **all** | 6 | 1 | 1 | 1 | 1 | 1 | 1 | 66.7 % | 33.3 % (1/3) |"),
            "{md}"
        );
        assert!(md.contains("- `e`: same errno later"), "{md}");
        assert!(
            md.contains("missed by the C selftests (1), killed by the C selftests and missed by ours (0)"),
            "{md}"
        );
        assert!(
            md.contains("### Only ours\n\n- `k` (fs/userfaultfd.c, COPY): breaks k\n"),
            "{md}"
        );
        assert!(!md.contains("### Only the C selftests"), "{md}");
    }

    #[test]
    fn results_resume_only_for_the_same_text_and_a_final_outcome() {
        let dir = std::env::temp_dir().join(format!("uffdtest-results-{}", std::process::id()));
        let res = Results { dir: dir.clone() };
        let m = mutant("k", "fs/userfaultfd.c", "COPY", None);
        res.record(&MutantResult::new(&m, Outcome::Killed { by: vec!["x".into()] }))
            .unwrap();
        assert!(res.done(&m).is_some());
        let changed = Mutant {
            replace: "other".into(),
            ..m.clone()
        };
        assert!(res.done(&changed).is_none());
        res.record(&MutantResult::new(&m, Outcome::NoResult { detail: "qemu".into() }))
            .unwrap();
        assert!(res.done(&m).is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn results_default_beside_the_catalogue() {
        assert_eq!(
            default_dir(Path::new("mutants/linux-6.12.toml")),
            Path::new("mutants/results/linux-6.12")
        );
    }
}
