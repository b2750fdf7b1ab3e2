//! uffdtest: a test suite for Linux userfaultfd, and the harness that runs it.
//!
//! Two wings meet only in the CLI ([`cli`], `main.rs`):
//! - the userfaultfd library, in pipeline order: [`sys`] (raw UAPI) →
//!   [`uffd`] (the handle) and [`event`] (decoded messages) → [`mem`] (memory
//!   types; [`kvm`] for guest_memfd) → [`caps`] (what this kernel can do) →
//!   [`testing`] (what the tests share: skips, areas, the faulter, pins,
//!   pagemap, restore-on-drop guards) and [`stress`] (the bounce test and
//!   benchmarks, built on the library alone);
//! - the harness, which runs any libtest binary and knows nothing of
//!   userfaultfd: [`runner`] (one process per case → KTAP), [`vm`] (the
//!   kernel under test in QEMU) and [`gate`] (build, compare, bisect).

pub mod caps;
pub mod cli;
pub mod event;
pub mod gate;
pub mod knob;
pub mod kvm;
pub mod mem;
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
