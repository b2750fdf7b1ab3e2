//! The gate: [`build`] a kernel tree, [`compare`] two runs, judge one [`bisect`] step, [`merge`] shards.

pub mod bisect;
pub mod build;
pub mod compare;
pub mod merge;
