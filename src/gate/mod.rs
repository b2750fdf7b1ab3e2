//! The gate: [`build`] a kernel tree, [`compare`] two runs, judge one [`bisect`] step, [`merge`] shards;
//! [`kselftest`] installs the suite where kernel CI fleets run it.

pub mod bisect;
pub mod build;
pub mod compare;
pub mod kselftest;
pub mod merge;
