//! The mutation catalogue: read it, check every entry against a kernel tree, pick the entries a run asks for.
//!
//! Accepted format (TOML), one table per mutant:
//! ```toml
//! [[mutant]]
//! id = "copy-unknown-mode"            # unique; names the result file
//! file = "fs/userfaultfd.c"           # relative to the tree
//! area = "COPY"                       # the ioctl, event or fd operation, for the per-area table
//! find = "if (uffdio_copy.mode & ~(UFFDIO_COPY_MODE_DONTWAKE|UFFDIO_COPY_MODE_WP))"   # exact, unique in file
//! replace = "if (0)"
//! description = "UFFDIO_COPY no longer rejects unknown mode bits"
//! equivalent = "why no userspace-visible behaviour can tell"    # optional: the entry is argued, not run
//! ```

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

/// One deliberate break of the kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mutant {
    pub id: String,
    pub file: String,
    pub area: String,
    pub find: String,
    pub replace: String,
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equivalent: Option<String>,
}

impl Mutant {
    /// Identifies what the entry does to the tree: a result recorded for another text is stale.
    pub fn fingerprint(&self) -> String {
        let h = [self.file.as_str(), "\0", &self.find, "\0", &self.replace]
            .iter()
            .flat_map(|s| s.bytes())
            .fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3));
        format!("{h:016x}")
    }

    /// The test binaries where a break of this area shows first. Only the order of the run depends on it (a
    /// survivor still runs every case), so a wrong guess costs time, never a verdict.
    pub fn tested_in(&self) -> &'static [&'static str] {
        match self.area.as_str() {
            "API" => &["api", "features"],
            "REGISTER" => &["register", "vma_kinds"],
            "UNREGISTER" => &["unregister", "lifecycle"],
            "WAKE" => &["wake"],
            "COPY" => &["copy"],
            "ZEROPAGE" => &["zeropage"],
            "MOVE" => &["move", "move_foreign"],
            "WRITEPROTECT" => &["writeprotect", "wp_unpopulated", "wp_async", "wp_fork", "wp_mremap"],
            "CONTINUE" => &["continue"],
            "POISON" => &["poison"],
            "PAGEFAULT" => &["features", "sigbus", "events", "signals"],
            "READ" => &["uffd_file", "lifecycle"],
            "IOC_NEW" => &["api", "uffd_file"],
            "EVENT_FORK" => &["events", "fork_kinds", "wp_fork"],
            "EVENT_REMAP" | "EVENT_REMOVE" | "EVENT_UNMAP" => &["events", "mmap_changing"],
            _ => &[],
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogueFile {
    /// Which tree the texts were written against (for people; the check is the texts themselves).
    #[serde(default)]
    tree: Option<String>,
    #[serde(default)]
    mutant: Vec<Mutant>,
}

/// A parsed catalogue.
#[derive(Debug, Clone)]
pub struct Catalogue {
    pub origin: String,
    pub tree: Option<String>,
    pub mutants: Vec<Mutant>,
}

/// Why a catalogue (or a selection from it) cannot be used; every one is a usage error (exit 2).
#[derive(Debug)]
pub enum CatalogueError {
    Read {
        path: PathBuf,
        err: std::io::Error,
    },
    Parse {
        origin: String,
        msg: String,
    },
    /// Entries that are malformed or do not match the tree, each with its problem.
    Entries {
        origin: String,
        problems: Vec<String>,
    },
    UnknownIds {
        ids: Vec<String>,
    },
}

impl fmt::Display for CatalogueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CatalogueError::Read { path, err } => write!(f, "cannot read the catalogue {}: {err}", path.display()),
            CatalogueError::Parse { origin, msg } => write!(f, "{origin}: not a mutation catalogue: {msg}"),
            CatalogueError::Entries { origin, problems } => write!(
                f,
                "{origin}: {} entr{} cannot be used; fix the text or the file name:\n  {}",
                problems.len(),
                if problems.len() == 1 { "y" } else { "ies" },
                problems.join("\n  ")
            ),
            CatalogueError::UnknownIds { ids } => {
                write!(
                    f,
                    "no catalogue entry named {}; `--only` takes the ids of the catalogue",
                    ids.join(", ")
                )
            }
        }
    }
}

impl std::error::Error for CatalogueError {}

/// Parse a catalogue and check what needs no tree: ids unique and file-safe, texts present and different.
pub fn parse(text: &str, origin: &str) -> Result<Catalogue, CatalogueError> {
    let file: CatalogueFile = toml::from_str(text).map_err(|e| CatalogueError::Parse {
        origin: origin.into(),
        msg: e.to_string(),
    })?;
    let mut problems = Vec::new();
    if file.mutant.is_empty() {
        problems.push("no [[mutant]] entries".to_string());
    }
    let mut seen = std::collections::BTreeSet::new();
    for m in &file.mutant {
        let id_ok = !m.id.is_empty()
            && m.id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
            && !m.id.starts_with('.');
        if !id_ok {
            problems.push(format!(
                "id {:?}: use letters, digits, '-', '_' or '.' (it names a file)",
                m.id
            ));
        }
        if !seen.insert(m.id.as_str()) {
            problems.push(format!("{}: the id is used twice", m.id));
        }
        if m.find.is_empty() {
            problems.push(format!("{}: empty find text", m.id));
        }
        if m.find == m.replace {
            problems.push(format!(
                "{}: replace is the same as find (the entry changes nothing)",
                m.id
            ));
        }
        if Path::new(&m.file).is_absolute() || m.file.split('/').any(|c| c == "..") {
            problems.push(format!("{}: file {:?} must be relative to the tree", m.id, m.file));
        }
        if m.equivalent.as_deref().is_some_and(|w| w.trim().is_empty()) {
            problems.push(format!("{}: equivalent needs the reason", m.id));
        }
    }
    if !problems.is_empty() {
        return Err(CatalogueError::Entries {
            origin: origin.into(),
            problems,
        });
    }
    Ok(Catalogue {
        origin: origin.into(),
        tree: file.tree,
        mutants: file.mutant,
    })
}

/// [`parse`] of a file.
pub fn load(path: &Path) -> Result<Catalogue, CatalogueError> {
    let text = std::fs::read_to_string(path).map_err(|err| CatalogueError::Read {
        path: path.to_path_buf(),
        err,
    })?;
    parse(&text, &path.display().to_string())
}

/// Whether `needle` occurs in `hay` never (0), once (1) or more (2); overlapping matches count.
fn occurrences(hay: &str, needle: &str) -> usize {
    let Some(i) = hay.find(needle) else { return 0 };
    let next = i + needle.chars().next().map_or(1, char::len_utf8);
    if hay[next..].contains(needle) { 2 } else { 1 }
}

/// Every entry's file exists in `tree` and its find text occurs there exactly once.
pub fn check_against(cat: &Catalogue, tree: &Path) -> Result<(), CatalogueError> {
    let mut texts: std::collections::BTreeMap<&str, Option<String>> = Default::default();
    let mut problems = Vec::new();
    for m in &cat.mutants {
        let text = texts
            .entry(m.file.as_str())
            .or_insert_with(|| std::fs::read_to_string(tree.join(&m.file)).ok());
        match text {
            None => problems.push(format!("{}: {} is not a readable file of the tree", m.id, m.file)),
            Some(t) => match occurrences(t, &m.find) {
                1 => {}
                0 => problems.push(format!("{}: its find text is not in {}", m.id, m.file)),
                _ => problems.push(format!(
                    "{}: its find text occurs more than once in {}; add context until it is unique",
                    m.id, m.file
                )),
            },
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(CatalogueError::Entries {
            origin: cat.origin.clone(),
            problems,
        })
    }
}

/// The entries a run covers: `only` (ids, all if empty), then every n-th from the i-th of `shard` (1-based).
pub fn select<'a>(
    cat: &'a Catalogue,
    only: &[String],
    shard: Option<(usize, usize)>,
) -> Result<Vec<&'a Mutant>, CatalogueError> {
    let unknown: Vec<String> = only
        .iter()
        .filter(|id| !cat.mutants.iter().any(|m| &m.id == *id))
        .cloned()
        .collect();
    if !unknown.is_empty() {
        return Err(CatalogueError::UnknownIds { ids: unknown });
    }
    Ok(cat
        .mutants
        .iter()
        .filter(|m| only.is_empty() || only.contains(&m.id))
        .enumerate()
        .filter(|(i, _)| shard.is_none_or(|(k, n)| i % n == k - 1))
        .map(|(_, m)| m)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: &str = r#"
tree = "fixture"
[[mutant]]
id = "a"
file = "fs/x.c"
area = "COPY"
find = "return -EINVAL;"
replace = "return 0;"
description = "x"
"#;

    #[test]
    fn an_entry_round_trips() {
        let c = parse(ONE, "t").unwrap();
        assert_eq!(c.tree.as_deref(), Some("fixture"));
        assert_eq!(c.mutants[0].find, "return -EINVAL;");
        assert_eq!(c.mutants[0].fingerprint(), c.mutants[0].clone().fingerprint());
    }

    #[test]
    fn every_area_of_the_catalogue_starts_with_test_binaries_that_exist() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let cat = load(&root.join("mutants/linux-6.12.toml")).unwrap();
        for m in &cat.mutants {
            assert!(!m.tested_in().is_empty(), "{}: area {} starts nowhere", m.id, m.area);
            for b in m.tested_in() {
                assert!(
                    root.join("tests").join(format!("{b}.rs")).is_file(),
                    "{}: no tests/{b}.rs",
                    m.id
                );
            }
        }
    }

    #[test]
    fn every_problem_of_a_bad_catalogue_is_named() {
        let text = format!(
            "{ONE}\n[[mutant]]\nid = \"a\"\nfile = \"/abs\"\narea = \"X\"\nfind = \"q\"\nreplace = \"q\"\ndescription = \"d\"\n"
        );
        let e = parse(&text, "t").unwrap_err().to_string();
        for want in ["used twice", "changes nothing", "relative to the tree"] {
            assert!(e.contains(want), "{want} not in {e}");
        }
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e = parse(&ONE.replace("area =", "areas ="), "t").unwrap_err();
        assert!(matches!(e, CatalogueError::Parse { .. }), "{e}");
    }

    #[test]
    fn find_text_must_be_in_the_file_exactly_once() {
        let dir = std::env::temp_dir().join(format!("uffdtest-cat-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("fs")).unwrap();
        let c = parse(ONE, "t").unwrap();
        std::fs::write(dir.join("fs/x.c"), "return -EINVAL;\n").unwrap();
        assert!(check_against(&c, &dir).is_ok());
        std::fs::write(dir.join("fs/x.c"), "return -EINVAL;\nreturn -EINVAL;\n").unwrap();
        let e = check_against(&c, &dir).unwrap_err().to_string();
        assert!(e.contains("more than once"), "{e}");
        std::fs::write(dir.join("fs/x.c"), "return 0;\n").unwrap();
        assert!(
            check_against(&c, &dir)
                .unwrap_err()
                .to_string()
                .contains("not in fs/x.c")
        );
        std::fs::remove_file(dir.join("fs/x.c")).unwrap();
        assert!(
            check_against(&c, &dir)
                .unwrap_err()
                .to_string()
                .contains("not a readable file")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn overlapping_matches_count_twice() {
        assert_eq!(occurrences("aaa", "aa"), 2);
        assert_eq!(occurrences("xaay", "aa"), 1);
    }

    #[test]
    fn selection_by_id_and_shard() {
        let text: String = (0..5)
            .map(|i| {
                ONE.replace("id = \"a\"", &format!("id = \"m{i}\""))
                    .replace("tree = \"fixture\"", "")
            })
            .collect();
        let c = parse(&text, "t").unwrap();
        let ids = |v: Vec<&Mutant>| v.iter().map(|m| m.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(select(&c, &[], Some((2, 2))).unwrap()), ["m1", "m3"]);
        assert_eq!(
            ids(select(&c, &["m4".into(), "m0".into()], None).unwrap()),
            ["m0", "m4"]
        );
        assert!(matches!(
            select(&c, &["nope".into()], None),
            Err(CatalogueError::UnknownIds { .. })
        ));
    }

    /// The shipped catalogue parses, and is as wide as issue #16 asks: 80 entries or more over every ioctl.
    #[test]
    fn the_shipped_catalogue_covers_every_ioctl() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("mutants/linux-6.12.toml");
        let c = load(&path).unwrap();
        assert!(c.mutants.len() >= 80, "{}", c.mutants.len());
        for area in [
            "API",
            "REGISTER",
            "UNREGISTER",
            "WAKE",
            "COPY",
            "ZEROPAGE",
            "MOVE",
            "WRITEPROTECT",
            "CONTINUE",
            "POISON",
            "IOC_NEW",
            "PAGEFAULT",
            "EVENT_FORK",
            "EVENT_REMAP",
            "EVENT_REMOVE",
            "EVENT_UNMAP",
        ] {
            assert!(c.mutants.iter().any(|m| m.area == area), "no entry for {area}");
        }
    }
}
