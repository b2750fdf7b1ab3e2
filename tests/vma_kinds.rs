//! Which VMAs UFFDIO_REGISTER takes: one case per rule of
//! `vma_can_userfault` and of `userfaultfd_register`, on the VMA kinds the
//! rules exist for (the memfd areas of the other binaries aside).
//!
//! The rules, newest kernel first (mm/userfaultfd.c; 6.12 has them in
//! include/linux/userfaultfd_k.h):
//! - VM_DROPPABLE and VM_SHADOW_STACK VMAs never register;
//! - VM_SPECIAL (VM_IO, VM_DONTEXPAND, VM_PFNMAP, VM_MIXEDMAP) VMAs never
//!   register, hugetlb excepted (hugetlbfs marks its VMAs VM_DONTEXPAND);
//!   this comes before the WP_ASYNC rule, so it holds there too;
//! - MINOR needs a hugetlb or shmem VMA;
//! - WP alone on a uffd with WP_ASYNC takes any other VMA;
//! - otherwise only anonymous, shmem and hugetlb VMAs register. The test
//!   is on the VMA's operations, not the pages behind it: /dev/zero mapped
//!   private is anonymous and mapped shared is shmem, but a SysV shm
//!   segment (shm_vm_ops wrapping shmem) is neither unless SHM_HUGETLB
//!   made it hugetlb, and memfd_secret is its own kind;
//! - a MAP_SHARED VMA without VM_MAYWRITE fails EPERM: a memfd sealed
//!   F_SEAL_WRITE or F_SEAL_FUTURE_WRITE and mapped shared loses it.

mod common;
use common::*;
use nix::errno::Errno;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use testing::smaps;

const MISSING: RegisterMode = RegisterMode::MISSING;
const WP: RegisterMode = RegisterMode::WP;
const MINOR: RegisterMode = RegisterMode::MINOR;

/// A VMA kind no [`MemType`] stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// /dev/zero, MAP_PRIVATE: an anonymous VMA.
    DevZeroPrivate,
    /// /dev/zero, MAP_SHARED: a shmem VMA.
    DevZeroShared,
    /// shmget(2) + shmat(2).
    SysvShm,
    /// shmget(2) with SHM_HUGETLB.
    SysvShmHugetlb,
    /// memfd_secret(2), 5.14.
    MemfdSecret,
    /// MAP_DROPPABLE, 6.11: VM_DROPPABLE.
    Droppable,
    /// map_shadow_stack(2), 6.6: VM_SHADOW_STACK.
    ShadowStack,
    /// The vDSO text: a special mapping, VM_DONTEXPAND.
    Vdso,
    /// The vDSO data: VM_IO | VM_PFNMAP.
    Vvar,
    /// /dev/mem: remap_pfn_range, VM_IO | VM_PFNMAP.
    DevMem,
}

/// How a mapping of a [`Kind`] goes away.
enum Undo {
    Munmap,
    Shmdt,
    /// The kernel's own mapping: left alone.
    Keep,
}

/// A mapping of one kind, undone on drop.
struct Mapping {
    addr: usize,
    len: usize,
    undo: Undo,
    _fd: Option<OwnedFd>,
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping is ours and nothing refers to it any more.
        unsafe {
            match self.undo {
                Undo::Munmap => {
                    libc::munmap(self.addr as *mut libc::c_void, self.len);
                }
                Undo::Shmdt => {
                    libc::shmdt(self.addr as *const libc::c_void);
                }
                Undo::Keep => {}
            }
        }
    }
}

fn rw() -> i32 {
    libc::PROT_READ | libc::PROT_WRITE
}

/// mmap(2) of `len` bytes; Err is the errno.
fn map(len: usize, prot: i32, flags: i32, fd: i32) -> Result<usize, Errno> {
    // SAFETY: a new mapping at a kernel-chosen address.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, 0) };
    if p == libc::MAP_FAILED {
        Err(Errno::last())
    } else {
        Ok(p as usize)
    }
}

fn open_dev(path: &str) -> Result<OwnedFd, String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map(OwnedFd::from)
        .map_err(|e| format!("{path}: {e}"))
}

/// The kernel's mapping named `[name]` in /proc/self/maps.
fn named(name: &str) -> Result<(usize, usize), String> {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
    let line = maps
        .lines()
        .find(|l| l.ends_with(&format!("[{name}]")))
        .ok_or_else(|| format!("no [{name}] mapping in this process"))?;
    let (s, e) = line.split_whitespace().next().unwrap().split_once('-').unwrap();
    let (s, e) = (
        usize::from_str_radix(s, 16).unwrap(),
        usize::from_str_radix(e, 16).unwrap(),
    );
    Ok((s, e - s))
}

/// A SysV segment of `len` bytes, attached; Err is the SKIP reason.
fn sysv(len: usize, extra: i32) -> Result<usize, String> {
    // SAFETY: shmget/shmat/shmctl take plain integers; the segment is
    // marked for removal at once, so it goes with the detach.
    unsafe {
        let id = libc::shmget(libc::IPC_PRIVATE, len, libc::IPC_CREAT | 0o600 | extra);
        if id < 0 {
            return Err(format!("shmget({len:#x}, {extra:#x}): {}", Errno::last()));
        }
        let p = libc::shmat(id, std::ptr::null(), 0);
        let err = Errno::last();
        libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut());
        if p as isize == -1 {
            return Err(format!("shmat: {err}"));
        }
        Ok(p as usize)
    }
}

impl Kind {
    /// Maps one of this kind; Err is the SKIP reason (the kernel or the
    /// machine lacks it), decided by the mapping call, never by REGISTER.
    fn map(self) -> Result<Mapping, String> {
        let ps = mem::base_page_size();
        let mapped = |addr, len, undo, fd| {
            Ok(Mapping {
                addr,
                len,
                undo,
                _fd: fd,
            })
        };
        match self {
            Kind::DevZeroPrivate | Kind::DevZeroShared => {
                let fd = open_dev("/dev/zero")?;
                let share = if self == Kind::DevZeroShared {
                    libc::MAP_SHARED
                } else {
                    libc::MAP_PRIVATE
                };
                let a = map(2 * ps, rw(), share, fd.as_raw_fd()).map_err(|e| format!("mmap /dev/zero: {e}"))?;
                mapped(a, 2 * ps, Undo::Munmap, Some(fd))
            }
            Kind::SysvShm => mapped(sysv(2 * ps, 0)?, 2 * ps, Undo::Shmdt, None),
            Kind::SysvShmHugetlb => {
                let hp = MemType::Hugetlb.page_size().ok_or("kernel has no hugetlb page size")?;
                mapped(sysv(hp, libc::SHM_HUGETLB)?, hp, Undo::Shmdt, None)
            }
            Kind::MemfdSecret => {
                // SAFETY: memfd_secret takes one flags word.
                let fd = unsafe { libc::syscall(libc::SYS_memfd_secret, libc::O_CLOEXEC) };
                if fd < 0 {
                    return Err(format!("memfd_secret: {} (secretmem off?)", Errno::last()));
                }
                // SAFETY: the kernel just handed us this fd.
                let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
                nix::unistd::ftruncate(&fd, ps as i64).map_err(|e| format!("ftruncate secretmem: {e}"))?;
                let a = map(ps, rw(), libc::MAP_SHARED, fd.as_raw_fd()).map_err(|e| format!("mmap secretmem: {e}"))?;
                mapped(a, ps, Undo::Munmap, Some(fd))
            }
            Kind::Droppable => {
                const MAP_DROPPABLE: i32 = 0x08;
                let a = map(2 * ps, rw(), libc::MAP_ANONYMOUS | MAP_DROPPABLE, -1)
                    .map_err(|e| format!("kernel has no MAP_DROPPABLE (6.11): mmap {e}"))?;
                mapped(a, 2 * ps, Undo::Munmap, None)
            }
            Kind::ShadowStack => {
                // SAFETY: map_shadow_stack(addr 0, size, flags 0) maps fresh memory.
                let a = unsafe { libc::syscall(453, 0usize, ps, 0u32) };
                if a < 0 {
                    return Err(format!("no user shadow stack: map_shadow_stack {}", Errno::last()));
                }
                mapped(a as usize, ps, Undo::Munmap, None)
            }
            Kind::Vdso | Kind::Vvar => {
                let (a, len) = named(if self == Kind::Vdso { "vdso" } else { "vvar" })?;
                mapped(a, len, Undo::Keep, None)
            }
            Kind::DevMem => {
                let fd = open_dev("/dev/mem")?;
                let a = map(ps, rw(), libc::MAP_SHARED, fd.as_raw_fd()).map_err(|e| format!("mmap /dev/mem: {e}"))?;
                mapped(a, ps, Undo::Munmap, Some(fd))
            }
        }
    }

    /// The VmFlags mnemonic the rule keys on, which the mapping must show.
    fn vm_flag(self) -> Option<&'static str> {
        match self {
            Kind::Droppable => Some("dp"),
            Kind::ShadowStack => Some("ss"),
            Kind::Vdso => Some("de"),
            Kind::Vvar | Kind::DevMem => Some("pf"),
            Kind::SysvShmHugetlb => Some("ht"),
            _ => None,
        }
    }

    /// The memory type whose rules the VMA follows, if any.
    fn registers_as(self) -> Option<MemType> {
        match self {
            Kind::DevZeroPrivate => Some(MemType::Anon),
            Kind::DevZeroShared => Some(MemType::Shmem),
            Kind::SysvShmHugetlb => Some(MemType::Hugetlb),
            _ => None,
        }
    }

    /// Never registers, WP_ASYNC or not (VM_DROPPABLE, VM_SHADOW_STACK,
    /// VM_SPECIAL).
    fn refused_outright(self) -> bool {
        matches!(
            self,
            Kind::Droppable | Kind::ShadowStack | Kind::Vdso | Kind::Vvar | Kind::DevMem
        )
    }
}

/// Maps `kind`, checks it carries the VmFlags its rule keys on, and opens
/// a uffd with `features`. Err is the SKIP reason.
fn setup(kind: Kind, features: Features) -> Result<(Mapping, Uffd), String> {
    let m = kind.map()?;
    if let Some(flag) = kind.vm_flag() {
        let v = smaps::vma(m.addr).expect("the mapping is in smaps");
        assert!(
            v.flags.iter().any(|f| f == flag),
            "{kind:?} lacks VmFlags {flag}: {:?}",
            v.flags
        );
    }
    Ok((m, testing::open_uffd(features)?))
}

/// Every [`Kind`], as cases named for it.
#[template]
#[rstest]
#[case::devzero_private(Kind::DevZeroPrivate)]
#[case::devzero_shared(Kind::DevZeroShared)]
#[case::sysv_shm(Kind::SysvShm)]
#[case::sysv_shm_hugetlb(Kind::SysvShmHugetlb)]
#[case::memfd_secret(Kind::MemfdSecret)]
#[case::droppable(Kind::Droppable)]
#[case::shadow_stack(Kind::ShadowStack)]
#[case::vdso(Kind::Vdso)]
#[case::vvar(Kind::Vvar)]
#[case::dev_mem(Kind::DevMem)]
fn kinds(#[case] kind: Kind) {}

#[apply(kinds)]
fn register_by_vma_kind(#[case] kind: Kind, #[values(MISSING, WP, MINOR)] mode: RegisterMode) {
    let takes = |mem: MemType| !(mode == MINOR && mem.is_anon());
    let want = match kind.registers_as() {
        Some(mem) if takes(mem) => {
            require_mode!(mem, mode);
            Ok(expected_ioctls(mem, mode))
        }
        _ => Err(Errno::EINVAL),
    };
    let (m, uffd) = try_skip!(setup(kind, Features::empty()));
    assert_eq!(uffd.register(m.addr, m.len, mode), want, "{kind:?}");
    let registered = if want.is_ok() { mode } else { RegisterMode::empty() };
    assert_eq!(smaps::uffd_modes(m.addr), registered);
}

#[apply(kinds)]
fn register_wp_only_with_wp_async_by_vma_kind(#[case] kind: Kind) {
    let f = Features::WP_ASYNC | Features::PAGEFAULT_FLAG_WP;
    require_features!(f);
    let want = if kind.refused_outright() {
        Err(Errno::EINVAL)
    } else {
        Ok(expected_ioctls(kind.registers_as().unwrap_or(MemType::Anon), WP))
    };
    let (m, uffd) = try_skip!(setup(kind, f));
    assert_eq!(uffd.register(m.addr, m.len, WP), want, "{kind:?}");
}

#[rstest]
#[case::private(libc::MAP_PRIVATE)]
#[case::shared(libc::MAP_SHARED)]
fn devzero_mapping_serves_missing_faults(#[case] share: i32) {
    if share != libc::MAP_SHARED {
        judged_by_the_runner!("docs/findings/devzero-private-fill.md");
    }
    let kind = if share == libc::MAP_SHARED {
        Kind::DevZeroShared
    } else {
        Kind::DevZeroPrivate
    };
    require_mode!(kind.registers_as().unwrap(), MISSING);
    let (m, uffd) = try_skip!(setup(kind, Features::empty()));
    uffd.register(m.addr, m.len, MISSING).unwrap();
    let f = faulter::Faulter::read(m.addr + 7);
    assert_eq!(faulter::next_pagefault(&uffd), (PagefaultFlags::empty(), m.addr));
    let ps = mem::base_page_size();
    let src = testing::Buf::filled(ps, 0x6b);
    let copied = uffd.copy(m.addr, src.addr(), ps, CopyMode::empty());
    if copied.is_err() {
        // Free the faulter before the mapping goes (UNREGISTER wakes it),
        // so a failing case fails alone.
        uffd.unregister(m.addr, m.len).unwrap();
        f.join();
        panic!("UFFDIO_COPY into {kind:?}: {copied:?}");
    }
    assert_eq!(copied, Ok(ps as i64));
    assert_eq!(f.join(), 0x6b);
    faulter::assert_no_event(&uffd);
}

#[apply(hugetlb_mem)]
fn hugetlb_vma_is_dontexpand_and_still_registers(#[case] mem: MemType) {
    require_mode!(mem, MISSING);
    let area = try_area!(Area::new(mem, 1));
    let flags = smaps::vma(area.addr()).expect("in smaps").flags;
    assert!(
        flags.iter().any(|f| f == "de") && flags.iter().any(|f| f == "ht"),
        "{flags:?}"
    );
    let uffd = try_skip!(testing::open_uffd(Features::empty()));
    assert_eq!(
        uffd.register(area.addr(), area.len(), MISSING),
        Ok(expected_ioctls(mem, MISSING))
    );
}

#[rstest]
fn sealed_memfd_mapped_shared_fails_eperm_and_private_registers(
    #[values(libc::F_SEAL_WRITE, libc::F_SEAL_FUTURE_WRITE)] seal: i32,
    #[values(libc::MAP_SHARED, libc::MAP_PRIVATE)] share: i32,
    #[values(MISSING, WP, MINOR)] mode: RegisterMode,
) {
    let mem = if share == libc::MAP_SHARED {
        MemType::Shmem
    } else {
        MemType::ShmemPrivate
    };
    require_mode!(mem, mode);
    let ps = mem::base_page_size();
    // SAFETY: memfd_create with a static name.
    let fd = unsafe { libc::memfd_create(c"uffdtest-sealed".as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    assert!(fd >= 0, "memfd_create: {}", Errno::last());
    // SAFETY: the kernel just handed us this fd.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    nix::unistd::ftruncate(&fd, ps as i64).unwrap();
    // SAFETY: F_ADD_SEALS on our memfd.
    assert_eq!(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seal) }, 0);
    // A sealed memfd maps shared only read-only, and then without
    // VM_MAYWRITE; a private mapping keeps it (writes are CoW).
    let a = map(ps, libc::PROT_READ, share, fd.as_raw_fd()).expect("mmap the sealed memfd");
    let m = Mapping {
        addr: a,
        len: ps,
        undo: Undo::Munmap,
        _fd: Some(fd),
    };
    let mw = smaps::vma(a).expect("in smaps").flags.iter().any(|f| f == "mw");
    assert_eq!(mw, share == libc::MAP_PRIVATE, "VM_MAYWRITE");
    let uffd = try_skip!(testing::open_uffd(Features::empty()));
    let want = if share == libc::MAP_SHARED {
        Err(Errno::EPERM)
    } else {
        Ok(expected_ioctls(mem, mode))
    };
    assert_eq!(uffd.register(m.addr, m.len, mode), want);
}
