//! Subcommands that only present library results.

pub mod caps;
pub mod coverage;
pub mod gate;
pub mod run;
pub mod vm;
