//! Subcommands that only present library results.

pub mod caps;
pub mod gate;
pub mod run;
