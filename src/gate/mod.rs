//! The gate: [`build`] a kernel tree, [`compare`] two runs, judge one [`bisect`] step, [`merge`] shards;
//! [`mutate`] measures what the suite notices by breaking the kernel on purpose; [`kselftest`] installs the suite where kernel CI fleets run it; [`html`] draws a run or a compare as one page.

pub mod bisect;
pub mod build;
pub mod compare;
pub mod html;
pub mod kselftest;
pub mod merge;
pub mod mutate;
