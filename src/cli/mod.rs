//! Subcommands that only present library results.

pub mod caps;
pub mod coverage;
pub mod run;
pub mod vm;
pub mod gate;
