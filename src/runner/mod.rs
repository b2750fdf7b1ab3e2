//! The runner: runs any libtest binaries one case per process and reports
//! KTAP. Stages: [`discover`] → [`select`] → [`run`] (each case a
//! [`process`] whose output [`libtest`] reads, the kernel log watched by
//! [`kmsg`] with [`klog`]'s idea of a splat, the machine set by [`env`]) →
//! [`ktap`], [`report`] and [`kcidb`]; [`result`] is the one model they share.
//! [`known`] turns declared known failures into XFAIL; [`cost`] says where a run's time went.
//!
//! From the guest's init or any other caller:
//!
//! ```no_run
//! use uffdtest::runner::{RunOptions, execute, report::Ktap};
//! let opts = RunOptions { announce_kmsg: true, ..RunOptions::default() };
//! let report = execute(&opts, &mut [&mut Ktap::new(std::io::stdout())]).expect("plan the run");
//! std::process::exit(report.exit_code());
//! ```

pub mod attribute;
pub mod cost;
pub mod discover;
pub mod elf;
pub mod env;
pub mod kcidb;
pub mod klog;
pub mod kmsg;
pub mod known;
pub mod ktap;
pub mod libtest;
pub mod passes;
pub mod process;
pub mod report;
pub mod result;
pub mod run;
pub mod schedule;
pub mod select;

pub use discover::{Binary, Case, DiscoverError, MANIFEST_NAME, Manifest};
pub use ktap::{parse as parse_ktap, write_report as write_ktap};
pub use result::{Report, Status, TestResult, Totals};
pub use run::{Event, Plan, Reporter, RunOptions, execute};
pub use select::{PlanError, plan};
