//! `/proc/self/fdinfo/<fd>` of a uffd, as `userfaultfd_show_fdinfo`
//! (fs/userfaultfd.c) prints it after the generic lines.
//!
//! Accepted format (one field a line, among others):
//! `pending:\t<n>`, `total:\t<n>`, `API:\t<api hex>:<features hex>:<ioctls hex>`.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// The uffd lines of an fdinfo file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UffdInfo {
    /// Faults queued and not yet read.
    pub pending: u64,
    /// Faults waiting, read or not.
    pub total: u64,
    /// The `API:` value, as printed.
    pub api: String,
}

/// Parses the text of an fdinfo file; None if a uffd line is missing.
pub fn parse(text: &str) -> Option<UffdInfo> {
    let field = |k: &str| text.lines().find_map(|l| l.strip_prefix(k)).map(str::trim);
    Some(UffdInfo {
        pending: field("pending:")?.parse().ok()?,
        total: field("total:")?.parse().ok()?,
        api: field("API:")?.to_string(),
    })
}

/// The fdinfo of `fd`, a uffd of this process.
pub fn read(fd: &impl AsRawFd) -> UffdInfo {
    let path = format!("/proc/self/fdinfo/{}", fd.as_raw_fd());
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    parse(&text).unwrap_or_else(|| panic!("{path} has no uffd lines:\n{text}"))
}

/// Waits (a hang guard of `limit`, not a measurement) until `pending` is
/// `n`; false if it never was.
pub fn wait_pending(fd: &impl AsRawFd, n: u64, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    while read(fd).pending != n {
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}
