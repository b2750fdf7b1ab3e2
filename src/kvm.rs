//! The subset of the KVM UAPI (`include/uapi/linux/kvm.h`, 6.18) that makes
//! a guest_memfd, plus thin handles for `/dev/kvm` and a VM.
//!
//! Written out by hand as [`crate::sys`] is: the host's 6.1 headers predate
//! guest_memfd. Layouts are pinned at compile time and request codes in the
//! unit tests. No vCPU is ever created: a VM is only what a guest_memfd
//! hangs off.
#![allow(non_camel_case_types)]

use crate::sys::uapi_flags;
use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::sys::stat::Mode;
use nix::{ioctl_readwrite, ioctl_write_int_bad, request_code_none};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// ioctl type byte of every KVM request.
pub const KVMIO: u8 = 0xAE;
/// The only API version KVM has ever reported (`KVM_API_VERSION`).
pub const KVM_API_VERSION: i32 = 12;

/// The machine type of `KVM_CREATE_VM` for an ordinary x86 VM.
pub const KVM_X86_DEFAULT_VM: i32 = 0;

/// `KVM_CHECK_EXTENSION` > 0: KVM_CREATE_GUEST_MEMFD exists (6.8).
pub const KVM_CAP_GUEST_MEMFD: i32 = 234;
/// `KVM_CHECK_EXTENSION` returns the `GUEST_MEMFD_FLAG_*` a VM accepts
/// (6.18; briefly named KVM_CAP_GUEST_MEMFD_MMAP and returning 1 = MMAP).
pub const KVM_CAP_GUEST_MEMFD_FLAGS: i32 = 244;

/// Host userspace may mmap() the guest_memfd (6.18).
pub const GUEST_MEMFD_FLAG_MMAP: u64 = 1 << 0;
/// Memory starts shared with the host, so host faults are served; without
/// it a fault on the mapping is SIGBUS (6.18).
pub const GUEST_MEMFD_FLAG_INIT_SHARED: u64 = 1 << 1;

// ioctl numbers.
pub const _KVM_GET_API_VERSION: u8 = 0x00;
pub const _KVM_CREATE_VM: u8 = 0x01;
pub const _KVM_CHECK_EXTENSION: u8 = 0x03;
pub const _KVM_CREATE_GUEST_MEMFD: u8 = 0xd4;

/// Argument of KVM_CREATE_GUEST_MEMFD (Available with KVM_CAP_GUEST_MEMFD).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct kvm_create_guest_memfd {
    pub size: u64,
    pub flags: u64,
    pub reserved: [u64; 6],
}

// `_IO` requests whose argument is an int passed by value. Even
// KVM_GET_API_VERSION reads one: it fails EINVAL unless it is 0, so
// ioctl_none! (which leaves the register unset) will not do.
ioctl_write_int_bad!(kvm_get_api_version, request_code_none!(KVMIO, _KVM_GET_API_VERSION));
ioctl_write_int_bad!(kvm_create_vm, request_code_none!(KVMIO, _KVM_CREATE_VM));
ioctl_write_int_bad!(kvm_check_extension, request_code_none!(KVMIO, _KVM_CHECK_EXTENSION));
ioctl_readwrite!(
    kvm_create_guest_memfd,
    KVMIO,
    _KVM_CREATE_GUEST_MEMFD,
    kvm_create_guest_memfd
);

/// Request codes, for the tests. (`ioctl_num_type` differs between libcs.)
#[allow(clippy::unnecessary_cast)]
pub mod request {
    use nix::{request_code_none, request_code_readwrite};

    pub const KVM_GET_API_VERSION: u64 = request_code_none!(super::KVMIO, super::_KVM_GET_API_VERSION) as u64;
    pub const KVM_CREATE_VM: u64 = request_code_none!(super::KVMIO, super::_KVM_CREATE_VM) as u64;
    pub const KVM_CHECK_EXTENSION: u64 = request_code_none!(super::KVMIO, super::_KVM_CHECK_EXTENSION) as u64;
    pub const KVM_CREATE_GUEST_MEMFD: u64 = request_code_readwrite!(
        super::KVMIO,
        super::_KVM_CREATE_GUEST_MEMFD,
        std::mem::size_of::<super::kvm_create_guest_memfd>()
    ) as u64;
}

const _: () = assert!(std::mem::size_of::<kvm_create_guest_memfd>() == 64);
const _: () = assert!(std::mem::align_of::<kvm_create_guest_memfd>() == 8);
const _: () = assert!(std::mem::offset_of!(kvm_create_guest_memfd, size) == 0);
const _: () = assert!(std::mem::offset_of!(kvm_create_guest_memfd, flags) == 8);
const _: () = assert!(std::mem::offset_of!(kvm_create_guest_memfd, reserved) == 16);

uapi_flags! {
    /// `kvm_create_guest_memfd.flags`.
    GuestMemfdFlags {
        GUEST_MEMFD_FLAG_MMAP = GUEST_MEMFD_FLAG_MMAP;
        GUEST_MEMFD_FLAG_INIT_SHARED = GUEST_MEMFD_FLAG_INIT_SHARED;
    }
}

fn owned(fd: i32) -> OwnedFd {
    // SAFETY: the kernel just returned this fd and nobody else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// `/dev/kvm`, the system fd.
#[derive(Debug)]
pub struct Kvm {
    fd: OwnedFd,
}

impl Kvm {
    /// Opens `/dev/kvm` read-write.
    pub fn open() -> nix::Result<Kvm> {
        let fd = nix::fcntl::open("/dev/kvm", OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())?;
        Ok(Kvm { fd })
    }

    /// KVM_GET_API_VERSION.
    pub fn api_version(&self) -> nix::Result<i32> {
        // SAFETY: the argument must be 0, passed by value.
        unsafe { kvm_get_api_version(self.fd.as_raw_fd(), 0) }
    }

    /// KVM_CHECK_EXTENSION on the system fd (what KVM could offer a VM).
    pub fn check_extension(&self, cap: i32) -> nix::Result<i32> {
        // SAFETY: the capability number is passed by value.
        unsafe { kvm_check_extension(self.fd.as_raw_fd(), cap) }
    }

    /// KVM_CREATE_VM of machine type `kind`.
    pub fn create_vm(&self, kind: i32) -> nix::Result<Vm> {
        // SAFETY: the machine type is passed by value; the result is a new fd.
        let fd = unsafe { kvm_create_vm(self.fd.as_raw_fd(), kind) }?;
        Ok(Vm { fd: owned(fd) })
    }
}

/// A VM fd: owns the `struct kvm` its guest_memfds belong to.
#[derive(Debug)]
pub struct Vm {
    fd: OwnedFd,
}

impl Vm {
    /// KVM_CHECK_EXTENSION on the VM fd: the answer for this VM's type.
    pub fn check_extension(&self, cap: i32) -> nix::Result<i32> {
        // SAFETY: the capability number is passed by value.
        unsafe { kvm_check_extension(self.fd.as_raw_fd(), cap) }
    }

    /// KVM_CREATE_GUEST_MEMFD. The kernel hands the fd out without
    /// O_CLOEXEC; it is set here so an exec()ing child does not inherit it.
    pub fn create_guest_memfd(&self, size: u64, flags: GuestMemfdFlags) -> nix::Result<OwnedFd> {
        let mut arg = kvm_create_guest_memfd {
            size,
            flags: flags.bits(),
            ..Default::default()
        };
        // SAFETY: arg is a valid kvm_create_guest_memfd the kernel only reads.
        let fd = owned(unsafe { kvm_create_guest_memfd(self.fd.as_raw_fd(), &mut arg) }?);
        fcntl(&fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
        Ok(fd)
    }
}

#[cfg(test)]
mod tests {
    use super::request::*;

    /// Values from the 6.18 header's `_IO`/`_IOWR` on x86_64.
    #[test]
    fn request_codes_match_the_kernel_header() {
        assert_eq!(KVM_GET_API_VERSION, 0xAE00);
        assert_eq!(KVM_CREATE_VM, 0xAE01);
        assert_eq!(KVM_CHECK_EXTENSION, 0xAE03);
        assert_eq!(KVM_CREATE_GUEST_MEMFD, 0xC040_AED4);
    }

    #[test]
    fn guest_memfd_flags_match_the_kernel_header() {
        assert_eq!(super::GUEST_MEMFD_FLAG_MMAP, 1);
        assert_eq!(super::GUEST_MEMFD_FLAG_INIT_SHARED, 2);
        assert_eq!(super::KVM_CAP_GUEST_MEMFD, 234);
        assert_eq!(super::KVM_CAP_GUEST_MEMFD_FLAGS, 244);
    }
}
