//! Long-term page pins (FOLL_LONGTERM), as DMA would hold them: fork must
//! copy a pinned anon page at once (early CoW) instead of sharing it.
//!
//! Two ways in: `/sys/kernel/debug/gup_test` (CONFIG_GUP_TEST; read-only or
//! write pins, as the kernel selftests use), else io_uring fixed buffers
//! (IORING_REGISTER_BUFFERS pins with FOLL_WRITE | FOLL_LONGTERM, io_uring/
//! memmap.c `io_pin_pages`).

use nix::errno::Errno;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `struct pin_longterm_test` of mm/gup_test.h.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct pin_longterm_test {
    addr: u64,
    size: u64,
    flags: u32,
}
const _: () = assert!(std::mem::size_of::<pin_longterm_test>() == 24);

nix::ioctl_write_ptr!(pin_longterm_test_start, b'g', 7, pin_longterm_test);
nix::ioctl_none!(pin_longterm_test_stop, b'g', 8);

const GUP_TEST: &str = "/sys/kernel/debug/gup_test";
/// `IORING_REGISTER_BUFFERS` / `IORING_UNREGISTER_BUFFERS` opcodes.
const IORING_REGISTER_BUFFERS: libc::c_uint = 0;
const IORING_UNREGISTER_BUFFERS: libc::c_uint = 1;
/// `struct io_uring_params` is 120 bytes; setup only reads flags and the
/// reserved fields, which must be zero.
const IO_URING_PARAMS_SIZE: usize = 120;

/// Which mechanism holds a pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// gup_test, read-only (FOLL_LONGTERM without FOLL_WRITE).
    GupRead,
    /// io_uring fixed buffer (FOLL_WRITE | FOLL_LONGTERM).
    IoUring,
}

/// A held long-term pin; dropping it unpins.
#[derive(Debug)]
pub struct Pin {
    how: How,
    fd: OwnedFd,
    held: bool,
}

impl Pin {
    pub fn how(&self) -> How {
        self.how
    }

    /// Unpins now (as drop does), reporting the errno.
    pub fn release(mut self) -> nix::Result<()> {
        self.held = false;
        self.unpin()
    }

    fn unpin(&self) -> nix::Result<()> {
        match self.how {
            // SAFETY: a no-argument ioctl on our gup_test fd.
            How::GupRead => unsafe { pin_longterm_test_stop(self.fd.as_raw_fd()) }.map(drop),
            How::IoUring => {
                // SAFETY: io_uring_register with no argument for UNREGISTER_BUFFERS.
                let r = unsafe {
                    libc::syscall(
                        libc::SYS_io_uring_register,
                        self.fd.as_raw_fd(),
                        IORING_UNREGISTER_BUFFERS,
                        std::ptr::null::<u8>(),
                        0,
                    )
                };
                Errno::result(r).map(drop)
            }
        }
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        if self.held {
            let _ = self.unpin();
        }
    }
}

/// Why a long-term pin could not be taken: the mechanism is missing, or the
/// kernel refused the pin.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    /// gup_test could not be opened (CONFIG_GUP_TEST off, no debugfs).
    #[error("{GUP_TEST}: {0} (CONFIG_GUP_TEST off or debugfs not mounted)")]
    NoGupTest(std::io::Error),
    /// PIN_LONGTERM_TEST_START failed.
    #[error("PIN_LONGTERM_TEST_START: {0}")]
    GupPin(Errno),
    /// io_uring_setup failed (io_uring disabled?).
    #[error("io_uring_setup: {0} (io_uring disabled?)")]
    NoIoUring(Errno),
    /// IORING_REGISTER_BUFFERS failed.
    #[error("IORING_REGISTER_BUFFERS: {0}")]
    RegisterBuffers(Errno),
}

/// A read-only long-term pin through gup_test. Err: why it is unavailable
/// (no CONFIG_GUP_TEST, debugfs not mounted) or the pin's errno.
pub fn gup_read(addr: usize, len: usize) -> Result<Pin, PinError> {
    mount_debugfs();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(GUP_TEST)
        .map_err(PinError::NoGupTest)?;
    let arg = pin_longterm_test {
        addr: addr as u64,
        size: len as u64,
        flags: 0,
    };
    // SAFETY: arg is a valid pin_longterm_test the kernel only reads.
    unsafe { pin_longterm_test_start(f.as_raw_fd(), &arg) }.map_err(PinError::GupPin)?;
    Ok(Pin {
        how: How::GupRead,
        fd: f.into(),
        held: true,
    })
}

/// A write long-term pin: `[addr, addr+len)` registered as an io_uring
/// fixed buffer. Err: why it is unavailable, or the errno.
pub fn io_uring_write(addr: usize, len: usize) -> Result<Pin, PinError> {
    let mut params = [0u8; IO_URING_PARAMS_SIZE];
    // SAFETY: io_uring_setup reads and writes the params struct we pass.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
    let fd = Errno::result(fd).map_err(PinError::NoIoUring)? as i32;
    // SAFETY: the kernel just returned this fd to us.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let iov = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: len,
    };
    // SAFETY: one iovec, read by the kernel.
    let r = unsafe {
        libc::syscall(
            libc::SYS_io_uring_register,
            fd.as_raw_fd(),
            IORING_REGISTER_BUFFERS,
            &iov as *const libc::iovec,
            1u32,
        )
    };
    Errno::result(r).map_err(PinError::RegisterBuffers)?;
    Ok(Pin {
        how: How::IoUring,
        fd,
        held: true,
    })
}

/// Any long-term pin this kernel offers: gup_test's read-only one first
/// (what the selftests use), else io_uring's write pin. Err lists why
/// neither worked.
pub fn longterm(addr: usize, len: usize) -> Result<Pin, String> {
    match gup_read(addr, len) {
        Ok(p) => Ok(p),
        Err(g) => io_uring_write(addr, len).map_err(|u| format!("no long-term pin: {g}; {u}")),
    }
}

/// gup_test lives in debugfs, which a minimal guest may not have mounted:
/// mount it (root only, left mounted) if it is absent.
fn mount_debugfs() {
    let mounted = std::fs::read_to_string("/proc/mounts")
        .map(|m| m.lines().any(|l| l.split_whitespace().nth(2) == Some("debugfs")))
        .unwrap_or(true);
    if mounted || !nix::unistd::geteuid().is_root() {
        return;
    }
    let _ = nix::mount::mount(
        Some("debugfs"),
        "/sys/kernel/debug",
        Some("debugfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    );
}
