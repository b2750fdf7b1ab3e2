//! `--known-issues FILE` and `--strict` for `run` and `vm`: the declared
//! known kernel issues, judged by the facts of the machine under test (its
//! release, and on the host the capability probes' answers).

use crate::caps::{Behaviour, behaviour, caps, feature_names};
use crate::runner::known::{Expectations, Facts, KnownIssues};
use crate::uffd::Features;
use clap::Args;
use std::path::PathBuf;

/// The file CI and a fresh clone use: `known-issues.toml` at the repo root.
pub const DEFAULT_FILE: &str = "known-issues.toml";

#[derive(Args, Debug, Clone)]
pub struct KnownArgs {
    /// Declared known kernel issues: a matching failure is XFAIL (exit 0 if
    /// nothing else failed), a matching pass XPASS. A missing file declares nothing.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_FILE)]
    pub known_issues: PathBuf,
    /// Ignore the known-issues file: every failure fails.
    #[arg(long)]
    pub strict: bool,
}

impl KnownArgs {
    /// The issues to apply; None under `--strict`.
    pub fn issues(&self) -> Result<Option<KnownIssues>, crate::runner::known::KnownError> {
        if self.strict {
            return Ok(None);
        }
        KnownIssues::load(&self.known_issues).map(Some)
    }
}

/// This machine's facts: the release, every `UFFD_FEATURE_*` bit offered or
/// not, every behaviour probe's answer (by its snake_case name).
pub fn host_facts() -> Facts {
    let c = caps();
    let mut f = Facts {
        release: Some(c.release.clone()),
        ..Facts::default()
    };
    f.present.extend(feature_names(c.features));
    f.absent.extend(feature_names(Features::all() - c.features));
    for b in Behaviour::ALL {
        let name = serde_json::to_value(b)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        match behaviour(b) {
            Ok(true) => {
                f.present.insert(name);
            }
            Ok(false) => {
                f.absent.insert(name);
            }
            Err(_) => {}
        }
    }
    f
}

/// The expectations for a run on this machine.
pub fn host_expectations(a: &KnownArgs) -> Result<Option<Expectations>, crate::runner::known::KnownError> {
    Ok(a.issues()?.map(|issues| Expectations {
        issues,
        facts: host_facts(),
    }))
}
