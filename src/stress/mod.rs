//! Concurrency stress of userfaultfd: the bounce test (`uffdtest stress`),
//! its soak with fork, mremap and MADV_DONTNEED events, and the benchmarks
//! (`uffdtest bench`).

pub mod bench;
pub mod bounce;
pub mod hostile;
pub mod load;
pub mod load_child;
pub mod soak;
pub mod verify;

pub use bounce::{Config, Failure, Totals, parse_duration, parse_size, run};
