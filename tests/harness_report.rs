//! `uffdtest report`: the HTML page of a real compare (Debian's 6.12 in a
//! guest against the same kernel with a planted UFFDIO_COPY mode-bit bug
//! and WARN, tests/data/compare) and of a run, read back as XML: well formed,
//! self-contained, and the regressions where a reviewer looks.

use quick_xml::Reader;
use quick_xml::events::Event;
use std::path::Path;
use std::process::Command;

fn uffdtest(args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_uffdtest"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        matches!(o.status.code(), Some(0 | 1)),
        "uffdtest {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn data(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/compare")
        .join(name)
        .display()
        .to_string()
}

/// Every element with its class and text, checking the page is well formed.
fn cells(html: &str) -> Vec<(String, String, String)> {
    let mut r = Reader::from_str(html);
    let mut out = Vec::new();
    let mut stack: Vec<(String, String, String)> = Vec::new();
    loop {
        match r.read_event().expect("the page is well-formed XML") {
            Event::Start(e) => {
                let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                let class = e
                    .try_get_attribute("class")
                    .unwrap()
                    .map(|a| String::from_utf8_lossy(&a.value).into_owned())
                    .unwrap_or_default();
                assert!(
                    e.try_get_attribute("src").unwrap().is_none() && e.try_get_attribute("href").unwrap().is_none(),
                    "nothing is fetched: {name}"
                );
                stack.push((name, class, String::new()));
            }
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    top.2.push_str(&String::from_utf8_lossy(&t));
                }
            }
            Event::End(_) => out.push(stack.pop().expect("balanced tags")),
            Event::Eof => break,
            _ => {}
        }
    }
    assert!(stack.is_empty(), "unclosed: {stack:?}");
    out
}

#[test]
fn a_compare_page_shows_both_matrices_and_outlines_the_regressions() {
    let dir = std::env::temp_dir().join(format!("uffdtest-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cmp = dir.join("compare.json");
    uffdtest(&[
        "compare",
        &data("guest-6.12-base.json"),
        &data("guest-6.12-copy-mode-bit5-warn.json"),
        "--format",
        "json",
        "-o",
        cmp.to_str().unwrap(),
    ]);
    let html = uffdtest(&["report", cmp.to_str().unwrap()]);
    assert!(html.starts_with("<!DOCTYPE html>"));
    let els = cells(&html);
    let tables: Vec<_> = els.iter().filter(|e| e.0 == "table" && e.1 == "matrix").collect();
    assert_eq!(tables.len(), 2, "base and candidate side by side");
    // copy × six memory types regressed: outlined red on the candidate's side, nowhere else.
    let moved: Vec<_> = els.iter().filter(|e| e.1 == "fail moved").collect();
    assert_eq!(moved.len(), 6, "{moved:?}");
    assert!(moved.iter().all(|e| e.2 == "2/1/0"), "{moved:?}");
    let h2: Vec<&str> = els.iter().filter(|e| e.0 == "h2").map(|e| e.2.as_str()).collect();
    assert!(h2.contains(&"New kernel splats (1)"), "{h2:?}");
    assert!(h2.contains(&"regression (6)"), "{h2:?}");
    assert!(html.contains("fs/userfaultfd.c:1620"), "the splat is quoted");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_run_page_has_one_row_per_binary_and_its_failures() {
    let html = uffdtest(&["report", &data("guest-6.12-copy-mode-bit5-warn.json")]);
    let els = cells(&html);
    let rows: Vec<&str> = els
        .iter()
        .filter(|e| e.0 == "th" && e.1 == "row")
        .map(|e| e.2.as_str())
        .collect();
    assert!(rows.contains(&"copy") && rows.contains(&"register"), "{rows:?}");
    let failures = els.iter().filter(|e| e.0 == "div" && e.1 == "failure").count();
    assert_eq!(failures, 6);
    assert!(els.iter().any(|e| e.0 == "h2" && e.2 == "Failures (6)"));
}
