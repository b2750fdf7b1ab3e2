//! guest_memfd areas: KVM guest memory that the host may mmap() (6.18).
//!
//! Whether the machine can give such memory is probed once: `/dev/kvm`, a
//! VM, KVM_CAP_GUEST_MEMFD and the GUEST_MEMFD_FLAG_MMAP bit of
//! KVM_CAP_GUEST_MEMFD_FLAGS. Where any of these is missing (a TCG guest
//! has no `/dev/kvm`), areas SKIP with that reason. Each area then gets its
//! own VM, kept until the mapping is gone, so cases share no KVM state.

use super::Unavailable;
use crate::kvm::{self, GuestMemfdFlags, Kvm, Vm};
use nix::errno::Errno;
use std::os::fd::OwnedFd;
use std::sync::LazyLock;

/// What the one-time probe found.
#[derive(Debug)]
pub struct Probe {
    /// `/dev/kvm` opened, API version 12, a default VM created; or why not.
    pub kvm: Result<(), Unusable>,
    /// KVM_CAP_GUEST_MEMFD_FLAGS of that VM (None: no VM, or no guest_memfd).
    pub flags: Option<GuestMemfdFlags>,
    /// The flags areas are created with, or the SKIP reason for every
    /// guest-memfd case.
    pub usable: Result<GuestMemfdFlags, Unusable>,
    /// A one-page guest_memfd was created with those flags, mapped shared,
    /// written and read back through the mapping; or what failed.
    pub mmap: Result<(), Unusable>,
    kvm_fd: Option<Kvm>,
}

/// Why guest_memfd areas cannot be had here; Display is the SKIP reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unusable {
    NoKvm,
    OpenKvm(Errno),
    ApiVersion(i32),
    /// KVM_GET_API_VERSION or KVM_CREATE_VM failed.
    KvmCall(&'static str, Errno),
    NoGuestMemfd,
    CheckExtension(Errno),
    /// KVM_CAP_GUEST_MEMFD_FLAGS (raw) lacks GUEST_MEMFD_FLAG_MMAP.
    NoMmap(u64),
    CreateGuestMemfd(GuestMemfdFlags, Errno),
    Mmap(Errno),
    /// The byte read back through the mapping after writing 0xa5.
    ReadBack(u8),
    NotTried,
}

impl std::fmt::Display for Unusable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unusable::NoKvm => f.write_str("no /dev/kvm"),
            Unusable::OpenKvm(e) => write!(f, "cannot open /dev/kvm: {e:?}"),
            Unusable::ApiVersion(v) => write!(f, "KVM API version {v}, expected {}", kvm::KVM_API_VERSION),
            Unusable::KvmCall(call, e) => write!(f, "KVM is not usable: {call} → {e:?}"),
            Unusable::NoGuestMemfd => f.write_str("KVM has no guest_memfd (KVM_CAP_GUEST_MEMFD is 0)"),
            Unusable::CheckExtension(e) => write!(f, "KVM_CHECK_EXTENSION(KVM_CAP_GUEST_MEMFD) → {e:?}"),
            Unusable::NoMmap(raw) => write!(
                f,
                "KVM cannot mmap() guest_memfd (KVM_CAP_GUEST_MEMFD_FLAGS = {raw:#x}, no GUEST_MEMFD_FLAG_MMAP)"
            ),
            Unusable::CreateGuestMemfd(flags, e) => write!(f, "KVM_CREATE_GUEST_MEMFD({flags:?}) → {e:?}"),
            Unusable::Mmap(e) => write!(f, "mmap(MAP_SHARED) of a guest_memfd → {e:?}"),
            Unusable::ReadBack(b) => write!(f, "wrote 0xa5 through a guest_memfd mapping, read back {b:#x}"),
            Unusable::NotTried => f.write_str("not tried"),
        }
    }
}

impl std::error::Error for Unusable {}

static PROBE: LazyLock<Probe> = LazyLock::new(run_probe);

/// The probe, run on first use.
pub fn probe() -> &'static Probe {
    &PROBE
}

fn open_kvm() -> Result<Kvm, Unusable> {
    let kvm = Kvm::open().map_err(|e| match e {
        Errno::ENOENT => Unusable::NoKvm,
        e => Unusable::OpenKvm(e),
    })?;
    match kvm.api_version() {
        Ok(kvm::KVM_API_VERSION) => Ok(kvm),
        Ok(v) => Err(Unusable::ApiVersion(v)),
        Err(e) => Err(Unusable::KvmCall("KVM_GET_API_VERSION", e)),
    }
}

fn create_vm(kvm: &Kvm) -> Result<Vm, Unusable> {
    kvm.create_vm(kvm::KVM_X86_DEFAULT_VM)
        .map_err(|e| Unusable::KvmCall("KVM_CREATE_VM", e))
}

/// The flags to create areas with: MMAP, plus INIT_SHARED where the kernel
/// has it (from 6.18 a host fault without it is SIGBUS).
fn area_flags(vm: &Vm) -> Result<(GuestMemfdFlags, GuestMemfdFlags), Unusable> {
    match vm.check_extension(kvm::KVM_CAP_GUEST_MEMFD) {
        Ok(n) if n > 0 => {}
        Ok(_) => return Err(Unusable::NoGuestMemfd),
        Err(e) => return Err(Unusable::CheckExtension(e)),
    }
    // Kernels without the capability answer 0, as for a VM without mmap.
    let raw = vm.check_extension(kvm::KVM_CAP_GUEST_MEMFD_FLAGS).unwrap_or(0).max(0) as u64;
    let have = GuestMemfdFlags::from_bits_retain(raw);
    if !have.contains(GuestMemfdFlags::GUEST_MEMFD_FLAG_MMAP) {
        return Err(Unusable::NoMmap(raw));
    }
    Ok((
        have,
        have & (GuestMemfdFlags::GUEST_MEMFD_FLAG_MMAP | GuestMemfdFlags::GUEST_MEMFD_FLAG_INIT_SHARED),
    ))
}

fn run_probe() -> Probe {
    let mut p = Probe {
        kvm: Ok(()),
        flags: None,
        usable: Err(Unusable::NotTried),
        mmap: Err(Unusable::NotTried),
        kvm_fd: None,
    };
    let kvm = match open_kvm() {
        Ok(k) => k,
        Err(why) => {
            p.kvm = Err(why.clone());
            p.usable = Err(why);
            return p;
        }
    };
    let vm = match create_vm(&kvm) {
        Ok(v) => v,
        Err(why) => {
            p.kvm = Err(why.clone());
            p.usable = Err(why);
            return p;
        }
    };
    p.kvm_fd = Some(kvm);
    match area_flags(&vm) {
        Ok((have, flags)) => {
            p.flags = Some(have);
            p.usable = Ok(flags);
            p.mmap = try_mmap(&vm, flags);
        }
        Err(why) => {
            p.flags = vm
                .check_extension(kvm::KVM_CAP_GUEST_MEMFD_FLAGS)
                .ok()
                .map(|r| GuestMemfdFlags::from_bits_retain(r.max(0) as u64));
            p.usable = Err(why);
        }
    }
    p
}

/// Creates, maps, writes and reads back one page.
fn try_mmap(vm: &Vm, flags: GuestMemfdFlags) -> Result<(), Unusable> {
    let page = super::base_page_size();
    let fd = vm
        .create_guest_memfd(page as u64, flags)
        .map_err(|e| Unusable::CreateGuestMemfd(flags, e))?;
    let p = map(&fd, page).map_err(Unusable::Mmap)?;
    let addr = p.as_ptr() as *mut u8;
    // SAFETY: a fresh one-page read-write shared mapping of our own fd; the
    // flags say the kernel serves host faults on it.
    let back = unsafe {
        std::ptr::write_volatile(addr, 0xa5);
        std::ptr::read_volatile(addr)
    };
    // SAFETY: our own mapping, unmapped once.
    let _ = unsafe { nix::sys::mman::munmap(p, page) };
    if back == 0xa5 {
        Ok(())
    } else {
        Err(Unusable::ReadBack(back))
    }
}

fn map(fd: &OwnedFd, len: usize) -> nix::Result<std::ptr::NonNull<std::ffi::c_void>> {
    use nix::sys::mman::{MapFlags, mmap};
    use std::os::fd::AsFd;
    let nz = std::num::NonZeroUsize::new(len).ok_or(Errno::EINVAL)?;
    // SAFETY: a fresh shared mapping of our own fd at a kernel-chosen address.
    unsafe { mmap(None, nz, super::rw(), MapFlags::MAP_SHARED, fd.as_fd(), 0) }
}

/// A guest_memfd of `len` bytes on a VM of its own, mapped shared: the VM,
/// the fd and the mapping. SKIP where the probe found guest_memfd unusable;
/// any later failure is an error.
pub(super) fn create(len: usize) -> Result<(Vm, OwnedFd, std::ptr::NonNull<std::ffi::c_void>), Unavailable> {
    let p = probe();
    let flags = p.usable.clone().map_err(|e| Unavailable::Skip(e.to_string()))?;
    let kvm = p.kvm_fd.as_ref().expect("usable implies /dev/kvm is open");
    let vm = create_vm(kvm).map_err(|e| Unavailable::Error(e.to_string()))?;
    let fd = vm
        .create_guest_memfd(len as u64, flags)
        .map_err(|e| Unavailable::Error(format!("KVM_CREATE_GUEST_MEMFD({flags:?}, {len}) → {e}")))?;
    let ptr = map(&fd, len).map_err(|e| Unavailable::Error(format!("mmap guest_memfd: {e}")))?;
    Ok((vm, fd, ptr))
}
