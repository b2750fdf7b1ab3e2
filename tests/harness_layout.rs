//! The crate's two wings, checked: which folder of `src/` may name which.
//!
//! The userfaultfd side (the library, `testing/`, `stress/`) and the
//! generic harness (`runner/`, `vm/`, `gate/`) meet only in `cli/`. A
//! `crate::` path across that line compiles fine, so nothing but this test
//! stops it: it reads every source file and fails on an arrow the README's
//! layout table does not allow.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The library: UAPI, the handle, events, memory types, KVM, the probe,
/// kernel knobs set for a while.
const LIBRARY: &[&str] = &["sys", "uffd", "event", "mem", "kvm", "caps", "knob"];
const HARNESS: &[&str] = &["runner", "vm", "gate"];

/// What a folder (or root module) may name besides itself.
fn allowed(from: &str) -> Vec<&'static str> {
    match from {
        f if LIBRARY.contains(&f) => LIBRARY.to_vec(),
        // Test support builds on the library; the load generators on the
        // library alone, so that they never panic the way a test helper may.
        "testing" => LIBRARY.to_vec(),
        "stress" => LIBRARY.to_vec(),
        // The harness runs any libtest binary; each layer sees the ones below.
        "runner" => vec![],
        "vm" => vec!["runner"],
        "gate" => vec!["runner", "vm"],
        "cli" => [LIBRARY, HARNESS, &["testing", "stress"]].concat(),
        other => {
            panic!("src/{other}: a top-level module the layout does not know; add it to LIBRARY, HARNESS or the table")
        }
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.expect("dir entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file belongs to: `src/runner/run.rs` → `runner`.
fn top(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    match first {
        "lib.rs" | "main.rs" => None,
        f => Some(f.trim_end_matches(".rs").to_string()),
    }
}

/// Every `crate::<module>` in code (line comments dropped; doc links count).
fn crate_paths(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = match line.find("//") {
            Some(i) if !line[i..].starts_with("///") && !line[i..].starts_with("//!") => &line[..i],
            _ => line,
        };
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let tail = &rest[i + "crate::".len()..];
            let name: String = tail
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // `$crate::skip!`: a macro exported at the root, not a module.
            let is_macro = tail[name.len()..].starts_with('!');
            if !name.is_empty() && !is_macro {
                out.insert(name);
            }
            rest = tail;
        }
    }
    out
}

/// from → (to → files), over the whole of `src/`.
fn arrows() -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut map: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for f in files {
        let Some(from) = top(&src, &f) else { continue };
        let text = std::fs::read_to_string(&f).expect("source file");
        for to in crate_paths(&text) {
            if to != from {
                let rel = f.strip_prefix(&src).expect("under src").display().to_string();
                map.entry(from.clone()).or_default().entry(to).or_default().insert(rel);
            }
        }
    }
    map
}

#[test]
fn no_arrow_crosses_the_wings() {
    let mut bad = Vec::new();
    for (from, tos) in arrows() {
        let ok = allowed(&from);
        for (to, files) in tos {
            if !ok.contains(&to.as_str()) {
                bad.push(format!(
                    "{from} → {to} ({})",
                    files.into_iter().collect::<Vec<_>>().join(", ")
                ));
            }
        }
    }
    assert!(bad.is_empty(), "imports the layout forbids:\n  {}", bad.join("\n  "));
}

/// Prints the arrows (`cargo test --test harness_layout -- --nocapture`),
/// the table the README's layout section summarises.
#[test]
fn arrows_are_listed() {
    let map = arrows();
    for (from, tos) in &map {
        let names: Vec<_> = tos.keys().map(String::as_str).collect();
        println!("{from:8} → {}", names.join(", "));
    }
    assert!(map.contains_key("cli"), "cli names the modules it joins");
}

/// The README's layout section: from `## Layout` to the next `## `.
fn layout_section() -> String {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).expect("README.md");
    let start = readme
        .find("\n## Layout\n")
        .expect("a `## Layout` section in README.md");
    let rest = &readme[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3);
    rest[..end].to_string()
}

fn dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.expect("dir entry").path();
        if p.is_dir() {
            out.push(p.clone());
            dirs(&p, out);
        }
    }
}

/// Every folder of `src/` is in the layout table: a top-level one by its
/// path (`src/gate/`), a nested one by its name (`mutate/`); and so is
/// every folder of the repository (`mutants/`, `.ci/run`).
#[test]
fn the_layout_table_names_every_folder() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let table = layout_section();
    let mut src = Vec::new();
    dirs(&root.join("src"), &mut src);
    let mut missing = Vec::new();
    for d in src {
        let rel = d.strip_prefix(root).expect("under the root");
        let want = if rel.parent() == Some(Path::new("src")) {
            format!("`{}/`", rel.display())
        } else {
            format!("`{}/`", rel.file_name().expect("a name").to_string_lossy())
        };
        if !table.contains(&want) {
            missing.push(want);
        }
    }
    for e in std::fs::read_dir(root).expect("the root") {
        let p = e.expect("dir entry").path();
        let name = p.file_name().expect("a name").to_string_lossy().to_string();
        // Built or private to git, not part of the layout.
        if !p.is_dir() || name == "target" || name == ".git" {
            continue;
        }
        let want = format!("`{name}/");
        if !table.contains(&want) {
            missing.push(want);
        }
    }
    assert!(
        missing.is_empty(),
        "README's layout table lacks: {}",
        missing.join(", ")
    );
}

#[test]
fn comments_do_not_count_as_imports() {
    let found = crate_paths(
        "let x = crate::uffd::Uffd::open(); // see crate::runner\n/// [`crate::mem`]\n$crate::skip!(\"x\");\n",
    );
    let want: BTreeSet<String> = ["uffd", "mem"].into_iter().map(String::from).collect();
    assert_eq!(found, want);
}
