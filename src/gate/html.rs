//! `uffdtest report`: one self-contained HTML page (inline CSS, no script,
//! nothing fetched) of a run's JSON or a compare's JSON: the binary (ioctl)
//! × memory type matrix coloured by outcome, then what failed with its
//! message and kernel splat; for a compare, base and candidate matrices side
//! by side and the moved cases, regressions first.

use crate::runner::{Report, Status, TestResult};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write;

/// The memory types in the order the suite lists them; others follow, sorted.
const MEMTYPES: &[&str] = &[
    "anon",
    "shmem",
    "shmem-private",
    "hugetlb",
    "hugetlb-private",
    "anon-thp",
    "guest-memfd",
];

/// The column of cases that are not parametrised over memory types, or
/// over something else (api's `syscall`/`dev-userfaultfd`, events' variants):
/// the matrix stays seven memory types wide.
pub const NO_MEMTYPE: &str = "other";

/// Outcomes counted in one cell.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub pass: usize,
    /// Failed, timed out, crashed, could not run, or XPASS.
    pub fail: usize,
    pub skip: usize,
    pub xfail: usize,
}

impl Counts {
    fn add(&mut self, s: Status) {
        match s {
            Status::Pass => self.pass += 1,
            Status::Skip => self.skip += 1,
            Status::Xfail => self.xfail += 1,
            _ => self.fail += 1,
        }
    }

    /// The cell's colour class: any failure is red, then xfail, pass, all-skipped.
    fn class(&self) -> &'static str {
        if self.fail > 0 {
            "fail"
        } else if self.xfail > 0 {
            "xfail"
        } else if self.pass > 0 && self.skip > 0 {
            "passskip"
        } else if self.pass > 0 {
            "pass"
        } else {
            "skip"
        }
    }
}

/// Binary → memory type → counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Matrix(pub BTreeMap<String, BTreeMap<String, Counts>>);

impl Matrix {
    pub fn of(r: &Report) -> Matrix {
        let mut m = Matrix::default();
        for (path, leaf) in r.leaves() {
            let binary = path.first().copied().unwrap_or("").to_string();
            m.0.entry(binary)
                .or_default()
                .entry(memtype(leaf))
                .or_default()
                .add(leaf.status);
        }
        m
    }

    fn columns<'a>(matrices: impl Iterator<Item = &'a Matrix>) -> Vec<String> {
        let mut seen: Vec<String> = Vec::new();
        for m in matrices {
            for row in m.0.values() {
                for k in row.keys() {
                    if !seen.contains(k) {
                        seen.push(k.clone());
                    }
                }
            }
        }
        let rank = |c: &String| {
            MEMTYPES
                .iter()
                .position(|m| m == c)
                .unwrap_or(if c == NO_MEMTYPE { usize::MAX } else { MEMTYPES.len() })
        };
        seen.sort_by(|a, b| rank(a).cmp(&rank(b)).then(a.cmp(b)));
        seen
    }
}

/// The leaf's memory type: the runner's variant, or the KTAP name's ` on <memtype>`.
fn memtype(t: &TestResult) -> String {
    let v = t
        .variant
        .clone()
        .or_else(|| t.name.rsplit_once(" on ").map(|(_, v)| v.to_string()));
    column(v.as_deref())
}

/// The column a variant goes in: a memory type's own, else [`NO_MEMTYPE`].
fn column(variant: Option<&str>) -> String {
    match variant {
        Some(v) if MEMTYPES.contains(&v) => v.to_string(),
        _ => NO_MEMTYPE.to_string(),
    }
}

/// A compare's JSON as `uffdtest compare --format json` writes it.
#[derive(Debug, Deserialize)]
pub struct CompareDoc {
    pub base_summary: String,
    pub candidate_summary: String,
    pub changes: Vec<ChangeDoc>,
    #[serde(default)]
    pub new_splats: Vec<SplatDoc>,
    #[serde(default)]
    pub unchanged: usize,
    #[serde(default)]
    pub matrix: Option<SideBySide>,
}

/// A moved case as `compare --format json` writes it; fields it leaves
/// out (an empty side, an older report) read as empty.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ChangeDoc {
    pub case: String,
    pub change: String,
    pub base: Vec<Status>,
    pub candidate: Vec<Status>,
    pub reason: Option<String>,
    /// Fails the gate (a regression, or a pass turned skip/xfail/missing);
    /// JSON from before the field read as `change == "regression"`.
    pub gating: Option<bool>,
}

impl ChangeDoc {
    fn gates(&self) -> bool {
        self.gating.unwrap_or(self.change == "regression")
    }
}

#[derive(Debug, Deserialize)]
pub struct SplatDoc {
    pub line: String,
    #[serde(default)]
    pub cases: Vec<String>,
}

/// Both runs' matrices, which `compare --format json` carries for this page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SideBySide {
    pub base: Matrix,
    pub candidate: Matrix,
}

/// What `uffdtest report` was given.
pub enum Input {
    Run(Box<Report>),
    Compare(Box<CompareDoc>),
}

/// Reads a run's or a compare's JSON (a compare has `changes`).
pub fn read(text: &str) -> Result<Input, serde_json::Error> {
    let v: serde_json::Value = serde_json::from_str(text)?;
    if v.get("changes").is_some() {
        Ok(Input::Compare(Box::new(serde_json::from_value(v)?)))
    } else {
        Ok(Input::Run(Box::new(serde_json::from_value(v)?)))
    }
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            // What XML 1.0 cannot hold (ANSI escapes, NUL) is dropped.
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => {}
            c => o.push(c),
        }
    }
    o
}

const STYLE: &str = "\
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1d1d1f;background:#fff}\
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:24px 0 8px}\
.summary{font-size:15px;margin:4px 0 16px}.verdict-bad{color:#b3261e;font-weight:700}.verdict-ok{color:#1e7b34;font-weight:700}\
table.matrix{border-collapse:collapse;margin-bottom:8px}\
.matrix{font-size:12px}.matrix th,.matrix td{border:1px solid #d0d0d5;padding:2px 4px;text-align:center;white-space:nowrap}\
.matrix th{background:#f3f3f6;font-weight:600}.matrix th.col{white-space:normal;max-width:60px}.matrix th.row{text-align:left}\
.matrix caption{font-weight:600;text-align:left;padding:2px 0}\
td.pass{background:#c9ecd2}td.passskip{background:#e3f3e1}td.skip{background:#e6e6ea;color:#666}\
td.fail{background:#f4b4ae;font-weight:700}td.xfail{background:#fbe3a8}td.none{background:#fff;color:#bbb}\
td.moved{outline:3px solid #b3261e;outline-offset:-3px}\
.legend span{display:inline-block;padding:1px 8px;margin-right:6px;border:1px solid #d0d0d5}\
.sides{display:flex;gap:20px;flex-wrap:wrap;align-items:flex-start}\
.failure{border-left:4px solid #b3261e;padding:4px 12px;margin:10px 0;background:#fdf3f2}\
.failure h3{font-size:14px;margin:2px 0}\
pre{background:#f6f6f8;padding:6px 8px;overflow-x:auto;font-size:12px;margin:4px 0;white-space:pre-wrap}\
table.changes{border-collapse:collapse}.changes td,.changes th{border:1px solid #d0d0d5;padding:3px 8px;text-align:left;vertical-align:top}\
.changes th{background:#f3f3f6}.st-fail{color:#b3261e;font-weight:700}.st-pass{color:#1e7b34}.st-skip{color:#666}";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"/>\
         <meta name=\"viewport\" content=\"width=device-width\"/><title>{}</title>\
         <style>{STYLE}</style></head>\n<body>\n{body}</body></html>\n",
        esc(title)
    )
}

fn legend() -> String {
    "<p class=\"legend\"><span class=\"cell-pass\" style=\"background:#c9ecd2\">passed</span>\
     <span style=\"background:#e3f3e1\">passed, some skipped</span>\
     <span style=\"background:#e6e6ea\">all skipped</span>\
     <span style=\"background:#fbe3a8\">expected failure</span>\
     <span style=\"background:#f4b4ae\">failed</span> \
     cell: passed/failed/skipped cases</p>\n"
        .into()
}

/// A cell's text: `pass` alone when nothing else, else `p/f/s`.
fn cell_text(c: &Counts) -> String {
    let mut t = format!("{}/{}/{}", c.pass, c.fail, c.skip);
    if c.xfail > 0 {
        let _ = write!(t, " +{}x", c.xfail);
    }
    t
}

/// The matrix as a table over `rows` (binaries) and `columns` (memory
/// types); `moved` marks cells (binary, memtype) to outline.
fn matrix_table(m: &Matrix, rows: &[&String], columns: &[String], caption: &str, moved: &[(String, String)]) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<table class=\"matrix\"><caption>{}</caption><tr><th>ioctl</th>",
        esc(caption)
    );
    for c in columns {
        // A long memory type may break after its hyphen: two matrices side by side fit a laptop screen.
        let _ = write!(h, "<th class=\"col\">{}</th>", esc(c).replace('-', "-<wbr/>"));
    }
    h.push_str("</tr>\n");
    let empty = BTreeMap::new();
    for binary in rows {
        let row = m.0.get(*binary).unwrap_or(&empty);
        let _ = write!(h, "<tr><th class=\"row\">{}</th>", esc(binary));
        for col in columns {
            match row.get(col) {
                Some(c) => {
                    let mark = if moved.iter().any(|(b, t)| b == *binary && t == col) {
                        " moved"
                    } else {
                        ""
                    };
                    let _ = write!(
                        h,
                        "<td class=\"{}{mark}\" title=\"{} passed, {} failed, {} skipped, {} xfail\">{}</td>",
                        c.class(),
                        c.pass,
                        c.fail,
                        c.skip,
                        c.xfail,
                        cell_text(c)
                    );
                }
                None => h.push_str("<td class=\"none\">–</td>"),
            }
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</table>\n");
    h
}

fn status_class(s: Status) -> &'static str {
    match s {
        Status::Pass | Status::Xfail => "st-pass",
        Status::Skip => "st-skip",
        _ => "st-fail",
    }
}

/// The page for one run's report.
pub fn run_page(r: &Report, title: &str) -> String {
    let m = Matrix::of(r);
    let cols = Matrix::columns(std::iter::once(&m));
    let t = r.totals();
    let mut b = String::new();
    let _ = writeln!(b, "<h1>uffdtest: {}</h1>", esc(title));
    let verdict = if t.exit_code() == 1 {
        "verdict-bad"
    } else {
        "verdict-ok"
    };
    let _ = writeln!(
        b,
        "<p class=\"summary\"><span class=\"{verdict}\">{}</span>{}</p>",
        esc(&t.summary_line()),
        if r.interrupted { " (interrupted)" } else { "" }
    );
    b.push_str(&legend());
    let rows: Vec<&String> = m.0.keys().collect();
    b.push_str(&matrix_table(
        &m,
        &rows,
        &cols,
        "cases per ioctl (test binary) and memory type",
        &[],
    ));
    let failed: Vec<_> = r.leaves().into_iter().filter(|(_, l)| l.status.is_failure()).collect();
    let _ = writeln!(b, "<h2>Failures ({})</h2>", failed.len());
    if failed.is_empty() {
        b.push_str("<p>None.</p>\n");
    }
    for (path, l) in failed {
        let _ = write!(
            b,
            "<div class=\"failure\"><h3>{} <span class=\"{}\">{}</span></h3>",
            esc(&path.join(" / ")),
            status_class(l.status),
            l.status.name().to_uppercase()
        );
        if let Some(reason) = &l.reason {
            let _ = write!(b, "<p>{}</p>", esc(reason));
        }
        if !l.diagnostics.is_empty() {
            let _ = write!(b, "<pre>{}</pre>", esc(&l.diagnostics.join("\n")));
        }
        if !l.kmsg.is_empty() {
            let _ = write!(
                b,
                "<p>kernel log:</p><pre class=\"splat\">{}</pre>",
                esc(&l.kmsg.join("\n"))
            );
        }
        b.push_str("</div>\n");
    }
    let skips = skip_reasons(r);
    if !skips.is_empty() {
        let _ = writeln!(
            b,
            "<h2>Skip reasons</h2><table class=\"changes\"><tr><th>cases</th><th>reason</th></tr>"
        );
        for (reason, n) in skips {
            let _ = writeln!(b, "<tr><td>{n}</td><td>{}</td></tr>", esc(&reason));
        }
        b.push_str("</table>\n");
    }
    page(&format!("uffdtest: {title}"), &b)
}

/// Skip reasons with how many cases gave each, most first.
pub fn skip_reasons(r: &Report) -> Vec<(String, usize)> {
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    for (_, l) in r.leaves() {
        if l.status == Status::Skip {
            *by.entry(l.reason.clone().unwrap_or_else(|| "(no reason given)".into()))
                .or_default() += 1;
        }
    }
    let mut v: Vec<_> = by.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v
}

fn statuses(s: &[Status]) -> String {
    if s.is_empty() {
        return "<span class=\"st-skip\">(absent)</span>".into();
    }
    s.iter()
        .map(|x| format!("<span class=\"{}\">{}</span>", status_class(*x), x.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The page for a comparison.
pub fn compare_page(c: &CompareDoc, title: &str) -> String {
    let regressions = c.changes.iter().filter(|x| x.gates()).count();
    let bad = regressions > 0 || !c.new_splats.is_empty();
    let mut b = String::new();
    let _ = writeln!(b, "<h1>uffdtest compare: {}</h1>", esc(title));
    let _ = writeln!(
        b,
        "<p class=\"summary\"><span class=\"{}\">{}</span></p>\
         <p>base: {} &#8212; candidate: {} &#8212; {} case(s) unchanged</p>",
        if bad { "verdict-bad" } else { "verdict-ok" },
        if bad {
            format!(
                "REGRESSION: {regressions} regressed case(s), {} new kernel splat(s)",
                c.new_splats.len()
            )
        } else {
            "OK: no regression, no new kernel splat".into()
        },
        esc(&c.base_summary),
        esc(&c.candidate_summary),
        c.unchanged
    );
    if let Some(m) = &c.matrix {
        let cols = Matrix::columns([&m.base, &m.candidate].into_iter());
        // Cells holding a regression, outlined on the candidate's side.
        let moved: Vec<(String, String)> = c
            .changes
            .iter()
            .filter(|x| x.gates())
            .map(|x| {
                let (binary, case) = x.case.split_once(" / ").unwrap_or(("", &x.case));
                (binary.to_string(), column(case.rsplit_once(" on ").map(|(_, m)| m)))
            })
            .collect();
        b.push_str(&legend());
        b.push_str("<div class=\"sides\">");
        let mut rows: Vec<&String> = m.base.0.keys().chain(m.candidate.0.keys()).collect();
        rows.sort();
        rows.dedup();
        b.push_str(&matrix_table(&m.base, &rows, &cols, "base", &[]));
        b.push_str(&matrix_table(
            &m.candidate,
            &rows,
            &cols,
            "candidate (outlined: a regression)",
            &moved,
        ));
        b.push_str("</div>\n");
    }
    if !c.new_splats.is_empty() {
        let _ = writeln!(b, "<h2>New kernel splats ({})</h2>", c.new_splats.len());
        for s in &c.new_splats {
            let _ = writeln!(
                b,
                "<div class=\"failure\"><pre class=\"splat\">{}</pre><p>during: {}</p></div>",
                esc(&s.line),
                esc(&s.cases.join(", "))
            );
        }
    }
    let mut order: Vec<&str> = Vec::new();
    for x in &c.changes {
        if !order.contains(&x.change.as_str()) {
            order.push(&x.change);
        }
    }
    order.sort_by_key(|k| (*k != "regression", *k != "fix"));
    for kind in order {
        let rows: Vec<_> = c.changes.iter().filter(|x| x.change == kind).collect();
        let _ = writeln!(
            b,
            "<h2>{} ({})</h2><table class=\"changes\"><tr><th>case</th><th>base</th><th>candidate</th><th>message</th></tr>",
            esc(&kind.replace('_', " ")),
            rows.len()
        );
        for x in rows {
            let _ = writeln!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&x.case),
                statuses(&x.base),
                statuses(&x.candidate),
                esc(x.reason.as_deref().unwrap_or(""))
            );
        }
        b.push_str("</table>\n");
    }
    page(&format!("uffdtest compare: {title}"), &b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(name: &str, variant: Option<&str>, s: Status) -> TestResult {
        let mut t = TestResult::new(name, s);
        t.variant = variant.map(str::to_string);
        t
    }

    #[test]
    fn the_matrix_counts_cases_per_binary_and_memtype() {
        let r = Report {
            tests: vec![TestResult::group(
                "copy",
                vec![
                    leaf("a on anon", Some("anon"), Status::Pass),
                    leaf("b on anon", Some("anon"), Status::Timeout),
                    leaf("a on shmem", Some("shmem"), Status::Skip),
                    leaf("plain", None, Status::Pass),
                ],
            )],
            ..Report::default()
        };
        let m = Matrix::of(&r);
        let row = &m.0["copy"];
        assert_eq!(
            row["anon"],
            Counts {
                pass: 1,
                fail: 1,
                skip: 0,
                xfail: 0
            }
        );
        assert_eq!(row["anon"].class(), "fail");
        assert_eq!(row["shmem"].class(), "skip");
        assert_eq!(Matrix::columns(std::iter::once(&m)), vec!["anon", "shmem", NO_MEMTYPE]);
        assert_eq!(
            column(Some("dev-userfaultfd")),
            NO_MEMTYPE,
            "api's variants are no memory type"
        );
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(esc("a<b> & \"c\"\u{1b}[0m"), "a&lt;b&gt; &amp; &quot;c&quot;[0m");
    }
}
