//! Boots a kernel under test in QEMU with the suite as its initramfs and
//! judges it: [`kconfig`] → [`initramfs`] → [`boot`] → [`console`]; [`init`]
//! is the runner as PID 1 in the guest.

pub mod boot;
pub mod console;
pub mod init;
pub mod initramfs;
pub mod kconfig;
pub mod run;
pub mod vng;
