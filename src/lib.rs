//! uffdtest: a test suite for Linux userfaultfd, and the harness that runs it.
//!
//! The library wing, in pipeline order: [`sys`] (raw UAPI) → [`uffd`] (the
//! handle) and [`event`] (decoded messages) → [`mem`] (memory types) →
//! [`caps`] (what this kernel can do) → [`testing`] (what the tests share).

pub mod caps;
pub mod cli;
pub mod event;
pub mod faulter;
pub mod gate;
pub mod kvm;
pub mod mem;
pub mod pagemap;
pub mod pagemap_scan;
pub mod pin;
pub mod runner;
pub mod stress;
pub mod sys;
pub mod testing;
pub mod uffd;
pub mod vm;

pub use event::{Event, PagefaultFlags};
pub use mem::{Area, MemType};
pub use uffd::{
    Api, ContinueMode, CopyMode, Features, Ioctls, MoveMode, OpenFlags, Partial, PoisonMode, Progress, RegisterMode,
    Uffd, WriteprotectMode, ZeropageMode,
};
