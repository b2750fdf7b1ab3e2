//! A sysctl or sysfs knob set for the length of a case.
//!
//! Knobs are global kernel state shared by every case in the run (and by the
//! next run): a case that changes one must put it back even when it fails,
//! so the old value is restored on drop, which also runs while a panic
//! unwinds.

use std::fmt;

/// Why a knob could not be set.
#[derive(Debug)]
pub enum KnobError {
    /// The file is absent or unreadable: this kernel has no such knob.
    Missing { path: String },
    /// The kernel refused the value.
    Write {
        path: String,
        value: String,
        source: std::io::Error,
    },
}

impl fmt::Display for KnobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KnobError::Missing { path } => write!(f, "{path} is missing"),
            KnobError::Write { path, value, source } => write!(f, "cannot write {value} to {path}: {source}"),
        }
    }
}

impl std::error::Error for KnobError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            KnobError::Missing { .. } => None,
            KnobError::Write { source, .. } => Some(source),
        }
    }
}

/// A knob holding a value until dropped, then its old one again.
#[must_use = "the old value is restored when the guard is dropped"]
#[derive(Debug)]
pub struct Knob {
    path: String,
    old: String,
}

impl Knob {
    /// Writes `value` to `path` (a /proc/sys or /sys file). The old value is
    /// the selected `[choice]` of a sysfs choice list such as THP's
    /// `always [madvise] never`, else the file's trimmed contents.
    pub fn set(path: impl Into<String>, value: &str) -> Result<Knob, KnobError> {
        let path = path.into();
        let Some(old) = crate::caps::sysfs_choice(&path)
            .or_else(|| std::fs::read_to_string(&path).ok().map(|s| s.trim().to_string()))
        else {
            return Err(KnobError::Missing { path });
        };
        if let Err(source) = std::fs::write(&path, value) {
            return Err(KnobError::Write {
                path,
                value: value.to_string(),
                source,
            });
        }
        Ok(Knob { path, old })
    }
}

impl Drop for Knob {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.path, &self.old);
    }
}
