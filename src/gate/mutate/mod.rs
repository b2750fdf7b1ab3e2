//! `uffdtest mutate`: measure what the suite notices by breaking the kernel on purpose. [`catalogue`] (what to
//! break) → [`apply`] (into a clean tree and out again) → [`run`] (base twice, then each mutant built and booted
//! through [`guest`]; [`csuite`] for the kernel's C selftests) → [`classify`] → [`report`] (one JSON per mutant, tables per file and per ioctl).

pub mod apply;
pub mod catalogue;
pub mod classify;
pub mod csuite;
pub mod guest;
pub mod report;
pub mod run;
