//! How a [`Comparison`] reads: a table for people, Markdown for a CI comment.

use super::{CaseChange, Comparison};
use crate::runner::result::Status;
use std::fmt::Write;

fn statuses_text(s: &[Status]) -> String {
    if s.is_empty() {
        return "-".into();
    }
    let first = s[0];
    if s.iter().all(|x| *x == first) {
        return if s.len() > 1 {
            format!("{}×{}", first.name(), s.len())
        } else {
            first.name().into()
        };
    }
    s.iter().map(|x| x.name()).collect::<Vec<_>>().join(",")
}

fn from_to(x: &CaseChange) -> String {
    format!("{} → {}", statuses_text(&x.base), statuses_text(&x.candidate))
}

/// The human table.
pub fn render_text(c: &Comparison) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "base:      {}", c.base_summary);
    let _ = writeln!(s, "candidate: {}", c.candidate_summary);
    for w in &c.warnings {
        let _ = writeln!(s, "warning: {w}");
    }
    let width = c
        .changes
        .iter()
        .map(|x| x.case.chars().count())
        .max()
        .unwrap_or(0)
        .min(90);
    let mut current = None;
    for x in &c.changes {
        if current != Some(x.change) {
            current = Some(x.change);
            let _ = writeln!(s, "\n{} ({}):", x.change.title(), c.count(x.change));
        }
        let mut line = format!("  {:<width$}  {}", x.case, from_to(x));
        if let Some(old) = &x.renamed_from {
            let _ = write!(line, "  (renamed from {old}?)");
        }
        if let Some(r) = &x.reason {
            let _ = write!(line, "  {}", one_line(r));
        }
        let _ = writeln!(s, "{}", line.trim_end());
    }
    if !c.new_splats.is_empty() {
        let _ = writeln!(s, "\nNew kernel splats ({}):", c.new_splats.len());
        for sp in &c.new_splats {
            let _ = writeln!(s, "  {}", sp.line);
            if !sp.cases.is_empty() {
                let _ = writeln!(s, "    during: {}", sp.cases.join(", "));
            }
        }
    }
    let _ = writeln!(s, "\n{} unchanged case(s). {}", c.unchanged, c.verdict());
    s
}

fn one_line(r: &str) -> String {
    const MAX: usize = 160;
    let l = r.lines().next().unwrap_or("");
    if l.chars().count() > MAX {
        format!("{}…", l.chars().take(MAX).collect::<String>())
    } else {
        l.to_string()
    }
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// Markdown for a CI comment: the verdict first, one table per kind of change.
pub fn render_markdown(c: &Comparison) -> String {
    let mut s = String::new();
    let icon = if c.exit_code() == 0 { "✅" } else { "❌" };
    let _ = writeln!(s, "### {icon} uffdtest: {}\n", c.verdict());
    let _ = writeln!(s, "| run | result |\n|---|---|");
    let _ = writeln!(
        s,
        "| base | {} |\n| candidate | {} |",
        c.base_summary, c.candidate_summary
    );
    for w in &c.warnings {
        let _ = writeln!(s, "\n> ⚠️ {}", md_cell(w));
    }
    let mut current = None;
    for x in &c.changes {
        if current != Some(x.change) {
            current = Some(x.change);
            let _ = writeln!(s, "\n#### {} ({})\n", x.change.title(), c.count(x.change));
            let _ = writeln!(s, "| case | base → candidate | reason |\n|---|---|---|");
        }
        let mut case = format!("`{}`", md_cell(&x.case));
        if let Some(old) = &x.renamed_from {
            let _ = write!(case, " (renamed from `{}`?)", md_cell(old));
        }
        let _ = writeln!(
            s,
            "| {case} | {} | {} |",
            from_to(x),
            md_cell(&one_line(x.reason.as_deref().unwrap_or("")))
        );
    }
    if !c.new_splats.is_empty() {
        let _ = writeln!(s, "\n#### New kernel splats ({})\n", c.new_splats.len());
        for sp in &c.new_splats {
            let _ = writeln!(
                s,
                "- `{}` during {}",
                md_cell(&sp.line),
                if sp.cases.is_empty() {
                    "no case (boot or between cases)".to_string()
                } else {
                    sp.cases
                        .iter()
                        .map(|c| format!("`{}`", md_cell(c)))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            );
        }
    }
    let _ = writeln!(s, "\n{} unchanged case(s).", c.unchanged);
    s
}
