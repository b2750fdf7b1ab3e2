//! The memory types userfaultfd serves, and areas of them to register.
//!
//! Names match the kernel selftests (`anon`, `shmem`, `shmem-private`,
//! `hugetlb`, `hugetlb-private`) plus `anon-thp`, `guest-memfd` and the
//! hugetlb types on 1 GiB pages (`hugetlb-1g`, `hugetlb-1g-private`). An [`Area`] knows how its
//! type maps, aliases and releases memory, so a test says only what it checks.

use nix::errno::Errno;
use nix::sys::mman::{MapFlags, MmapAdvise, ProtFlags, madvise, mmap, mmap_anonymous, munmap};
use serde::Serialize;
use std::ffi::c_void;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;

mod buf;
pub mod guest_memfd;
pub mod hugetlb;

pub use buf::Buf;

/// One kind of memory a uffd can be registered on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MemType {
    /// Private anonymous memory, THP disabled on the area.
    Anon,
    /// A memfd mapped MAP_SHARED.
    Shmem,
    /// A memfd mapped MAP_PRIVATE.
    ShmemPrivate,
    /// A hugetlb memfd mapped MAP_SHARED.
    Hugetlb,
    /// A hugetlb memfd mapped MAP_PRIVATE.
    HugetlbPrivate,
    /// PMD-aligned private anonymous memory with MADV_HUGEPAGE.
    AnonThp,
    /// A KVM guest_memfd mapped MAP_SHARED (host mmap since 6.18).
    GuestMemfd,
    /// A hugetlb memfd of 1 GiB pages (MFD_HUGE_1GB) mapped MAP_SHARED.
    #[serde(rename = "hugetlb-1g")]
    Hugetlb1g,
    /// A hugetlb memfd of 1 GiB pages mapped MAP_PRIVATE.
    #[serde(rename = "hugetlb-1g-private")]
    Hugetlb1gPrivate,
}

impl MemType {
    /// Every type, in the selftests' order, then ours.
    pub const ALL: [MemType; 9] = [
        MemType::Anon,
        MemType::Shmem,
        MemType::ShmemPrivate,
        MemType::Hugetlb,
        MemType::HugetlbPrivate,
        MemType::AnonThp,
        MemType::GuestMemfd,
        MemType::Hugetlb1g,
        MemType::Hugetlb1gPrivate,
    ];

    pub fn name(self) -> &'static str {
        match self {
            MemType::Anon => "anon",
            MemType::Shmem => "shmem",
            MemType::ShmemPrivate => "shmem-private",
            MemType::Hugetlb => "hugetlb",
            MemType::HugetlbPrivate => "hugetlb-private",
            MemType::AnonThp => "anon-thp",
            MemType::GuestMemfd => "guest-memfd",
            MemType::Hugetlb1g => "hugetlb-1g",
            MemType::Hugetlb1gPrivate => "hugetlb-1g-private",
        }
    }

    /// Parses a selftest name; also accepts `_` for `-` (test-name form).
    pub fn from_name(s: &str) -> Option<MemType> {
        let s = s.replace('_', "-");
        MemType::ALL.into_iter().find(|m| m.name() == s)
    }

    /// MAP_SHARED mappings: page cache pages visible through every mapping.
    pub fn is_shared(self) -> bool {
        matches!(
            self,
            MemType::Shmem | MemType::Hugetlb | MemType::GuestMemfd | MemType::Hugetlb1g
        )
    }

    pub fn is_hugetlb(self) -> bool {
        self.hugetlb_pool().is_some()
    }

    /// The hugetlb pool the type's pages come from; None if not hugetlb.
    pub fn hugetlb_pool(self) -> Option<hugetlb::PageSize> {
        match self {
            MemType::Hugetlb | MemType::HugetlbPrivate => Some(hugetlb::PageSize::Default),
            MemType::Hugetlb1g | MemType::Hugetlb1gPrivate => Some(hugetlb::PageSize::Gigantic),
            _ => None,
        }
    }

    pub fn is_shmem(self) -> bool {
        matches!(self, MemType::Shmem | MemType::ShmemPrivate)
    }

    /// Anonymous VMAs (no file behind them).
    pub fn is_anon(self) -> bool {
        matches!(self, MemType::Anon | MemType::AnonThp)
    }

    /// Backed by a file, so a second view of the same pages can be mapped.
    pub fn has_file(self) -> bool {
        !self.is_anon()
    }

    /// The unit uffd works in on this type: the huge page size for hugetlb,
    /// the base page otherwise (uffd resolves anon THP areas per PTE).
    pub fn page_size(self) -> Option<usize> {
        match self.hugetlb_pool() {
            Some(pool) => pool.bytes(),
            None => Some(base_page_size()),
        }
    }
}

impl std::fmt::Display for MemType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is no memory type's; Display lists the known ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownMemType(pub String);

impl std::fmt::Display for UnknownMemType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = MemType::ALL.iter().map(|m| m.name()).collect();
        write!(f, "unknown memory type '{}' (known: {})", self.0, names.join(", "))
    }
}

impl std::error::Error for UnknownMemType {}

impl std::str::FromStr for MemType {
    type Err = UnknownMemType;
    fn from_str(s: &str) -> Result<Self, UnknownMemType> {
        MemType::from_name(s).ok_or_else(|| UnknownMemType(s.to_string()))
    }
}

/// A field of /proc/meminfo as the kernel prints it: kB for sizes
/// (`MemAvailable`), a count for the `HugePages_*` fields.
pub fn meminfo(key: &str) -> Option<usize> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

pub fn base_page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// The PMD size THP uses, from sysfs; None without THP.
pub fn pmd_size() -> Option<usize> {
    std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Why an area could not be made: a reason to SKIP with, or a real error.
#[derive(Debug)]
pub enum Unavailable {
    /// The machine cannot give this memory (no hugetlb pages, no THP...).
    Skip(String),
    /// A call failed that should not have.
    Error(String),
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unavailable::Skip(s) | Unavailable::Error(s) => f.write_str(s),
        }
    }
}

fn err(what: &str, e: Errno) -> Unavailable {
    Unavailable::Error(format!("{what}: {e}"))
}

/// Set (by `uffdtest run --mem hugetlb-1g`, or by hand) to make 1 GiB hugetlb
/// areas: each clears and copies whole GiB pages, seconds apiece, so a plain
/// `cargo test` and an unasked run leave them out.
pub const GIGANTIC_ENV: &str = "UFFDTEST_HUGETLB_1G";

/// A mapping of `npages` pages of one memory type, unmapped on drop.
#[derive(Debug)]
pub struct Area {
    mem: MemType,
    ptr: NonNull<c_void>,
    len: usize,
    page_size: usize,
    fd: Option<OwnedFd>,
    alias: Option<NonNull<c_void>>,
    /// The VM a guest_memfd belongs to; a field, so it drops after the
    /// mappings are gone.
    vm: Option<crate::kvm::Vm>,
    /// For 1 GiB pages: the pool's lease, dropped last, once the mappings
    /// and the file are gone and the pages back in the pool.
    _lease: Option<std::sync::Arc<hugetlb::Lease>>,
}

// SAFETY: an Area is a plain address range; the mapping lives until drop.
unsafe impl Send for Area {}
// SAFETY: methods only issue syscalls or raw accesses the caller chose.
unsafe impl Sync for Area {}

impl Area {
    /// Maps `npages` unpopulated pages (huge pages for hugetlb; for
    /// `anon-thp`, base pages rounded up to whole PMD-aligned PMDs).
    ///
    /// A private 1 GiB area asks for twice its pages free: a forked child owns
    /// no reservation of the parent's private mapping, so each page it gets
    /// must be a free unreserved one, and the 1 GiB pool, unlike the 2 MiB one
    /// (64 spare), has none to lend; without them the child's fill failed
    /// ENOMEM or the kernel killed it ("inadequate hugepage pool").
    pub fn new(mem: MemType, npages: usize) -> Result<Area, Unavailable> {
        let for_children = if mem == MemType::Hugetlb1gPrivate { npages } else { 0 };
        Area::new_reserving(mem, npages, npages + for_children)
    }

    /// [`Area::new`] with `spare` pages of its hugetlb pool left free and
    /// unreserved: a UFFDIO_COPY whose source is not resident holds the bytes
    /// in such a page while it faults the source in, and a 1 GiB pool has
    /// nowhere else to take it from (docs/findings/hugetlb-1g-copy-enomem.md).
    pub fn with_spare(mem: MemType, npages: usize, spare: usize) -> Result<Area, Unavailable> {
        Area::new_reserving(mem, npages, npages + spare)
    }

    /// [`Area::new`], making sure `reserve` pages of a hugetlb pool are free
    /// (more than `npages` when another view will reserve pages too).
    fn new_reserving(mem: MemType, npages: usize, reserve: usize) -> Result<Area, Unavailable> {
        if mem.hugetlb_pool() == Some(hugetlb::PageSize::Gigantic) && std::env::var_os(GIGANTIC_ENV).is_none() {
            return Err(Unavailable::Skip(format!(
                "{mem} runs on request only: uffdtest run --mem {mem} ({GIGANTIC_ENV}=1 under cargo test)"
            )));
        }
        let lease = match mem.hugetlb_pool() {
            Some(hugetlb::PageSize::Gigantic) if mem.page_size().is_some() => {
                Some(hugetlb::lease_gigantic().map_err(|e| Unavailable::Error(format!("lease the 1 GiB pool: {e}")))?)
            }
            _ => None,
        };
        let page_size = mem.page_size().ok_or_else(|| {
            Unavailable::Skip(mem.hugetlb_pool().unwrap_or(hugetlb::PageSize::Default).absent().into())
        })?;
        let mut len = npages * page_size;
        if mem == MemType::AnonThp {
            // THP needs whole PMDs; round up so any page count works.
            len = len.next_multiple_of(pmd_size().unwrap_or(page_size));
        }
        let nz = NonZeroUsize::new(len).ok_or_else(|| Unavailable::Error("empty area".into()))?;
        let mut vm = None;
        let (ptr, fd) = match mem {
            MemType::Anon => {
                let p = anon_map(nz)?;
                // Keep uffd on small pages, whatever THP's global mode is.
                // SAFETY: p..p+len is our own fresh mapping.
                let _ = unsafe { madvise(p, len, MmapAdvise::MADV_NOHUGEPAGE) };
                (p, None)
            }
            MemType::AnonThp => (thp_map(len)?, None),
            MemType::GuestMemfd => {
                let (v, fd, p) = guest_memfd::create(len)?;
                vm = Some(v);
                (p, Some(fd))
            }
            MemType::Shmem
            | MemType::ShmemPrivate
            | MemType::Hugetlb
            | MemType::HugetlbPrivate
            | MemType::Hugetlb1g
            | MemType::Hugetlb1gPrivate => {
                if let Some(pool) = mem.hugetlb_pool() {
                    hugetlb::ensure_free_of(pool, reserve).map_err(|e| Unavailable::Skip(e.to_string()))?;
                }
                let fd = memfd(mem, len)?;
                let flags = if mem.is_shared() {
                    MapFlags::MAP_SHARED
                } else {
                    MapFlags::MAP_PRIVATE
                };
                // SAFETY: a fresh mapping of our own memfd, at a kernel-chosen address.
                let p = unsafe { mmap(None, nz, rw(), flags, fd.as_fd(), 0) }.map_err(|e| err("mmap", e))?;
                (p, Some(fd))
            }
        };
        Ok(Area {
            mem,
            ptr,
            len,
            page_size,
            fd,
            alias: None,
            vm,
            _lease: lease,
        })
    }

    /// Like [`Area::new`], plus a second MAP_SHARED view of the same file,
    /// which minor-fault tests fill while the main view is registered.
    pub fn with_alias(mem: MemType, npages: usize) -> Result<Area, Unavailable> {
        // A MAP_SHARED view of hugetlb reserves the file's pages, a
        // MAP_PRIVATE main view its own as well: twice the pages.
        let reserve = if mem.is_hugetlb() && !mem.is_shared() {
            2 * npages
        } else {
            npages
        };
        let mut a = Area::new_reserving(mem, npages, reserve)?;
        let fd =
            a.fd.as_ref()
                .ok_or_else(|| Unavailable::Skip(format!("{mem} has no file to alias")))?;
        let nz = NonZeroUsize::new(a.len).expect("non-empty");
        // SAFETY: a fresh shared mapping of our own memfd.
        let p =
            unsafe { mmap(None, nz, rw(), MapFlags::MAP_SHARED, fd.as_fd(), 0) }.map_err(|e| err("mmap alias", e))?;
        a.alias = Some(p);
        Ok(a)
    }

    /// [`Area::with_alias`] if `alias`, else [`Area::new`].
    pub fn new_with(mem: MemType, npages: usize, alias: bool) -> Result<Area, Unavailable> {
        if alias {
            Area::with_alias(mem, npages)
        } else {
            Area::new(mem, npages)
        }
    }

    pub fn mem(&self) -> MemType {
        self.mem
    }

    pub fn addr(&self) -> usize {
        self.ptr.as_ptr() as usize
    }

    /// Records that a test mremap()ed the whole main view to `addr`: later
    /// calls and drop then use the new place, and the old range, which other
    /// threads may map meanwhile, is never touched again.
    pub fn moved_to(&mut self, addr: usize) {
        self.ptr = NonNull::new(addr as *mut c_void).expect("mremap result is non-null");
    }

    /// Records that a test unmapped the main view past its first `len`
    /// bytes (munmap, shrinking mremap); drop leaves that range alone.
    /// Not for areas with an alias, whose view keeps the old length.
    pub fn truncated_to(&mut self, len: usize) {
        assert!(
            len <= self.len && self.alias.is_none(),
            "truncate {} to {len}",
            self.len
        );
        self.len = len;
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn page_size(&self) -> usize {
        self.page_size
    }

    pub fn npages(&self) -> usize {
        self.len / self.page_size
    }

    /// Address of page `i` of the main view.
    pub fn page(&self, i: usize) -> usize {
        assert!(i < self.npages(), "page {i} outside a {}-page area", self.npages());
        self.addr() + i * self.page_size
    }

    /// Start of the alias view, if one was mapped.
    pub fn alias(&self) -> Option<usize> {
        self.alias.map(|p| p.as_ptr() as usize)
    }

    /// Address of page `i` in the alias view.
    pub fn alias_page(&self, i: usize) -> usize {
        self.alias().expect("area has no alias") + i * self.page_size
    }

    /// The memfd behind shmem and hugetlb areas.
    pub fn fd(&self) -> Option<&OwnedFd> {
        self.fd.as_ref()
    }

    /// The VM behind a guest-memfd area.
    pub fn vm(&self) -> Option<&crate::kvm::Vm> {
        self.vm.as_ref()
    }

    /// Writes `byte` to the whole of page `i` through the main view.
    pub fn fill_page(&self, i: usize, byte: u8) {
        // SAFETY: the page lies inside our mapping, which is writable.
        unsafe { std::ptr::write_bytes(self.page(i) as *mut u8, byte, self.page_size) }
    }

    /// Faults every page in by writing `byte` to all of it.
    pub fn populate(&self, byte: u8) {
        for i in 0..self.npages() {
            self.fill_page(i, byte);
        }
    }

    /// Copies `len` bytes at `addr` (any view) out; blocks on a registered
    /// missing page until someone resolves it, as any access does.
    pub fn read(&self, addr: usize, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        // SAFETY: callers pass addresses of this area's views; reads are plain.
        unsafe { std::ptr::copy_nonoverlapping(addr as *const u8, v.as_mut_ptr(), len) };
        v
    }

    /// The contents of page `i` of the main view.
    pub fn read_page(&self, i: usize) -> Vec<u8> {
        self.read(self.page(i), self.page_size)
    }

    /// Drops the pages of `[offset, offset+len)` the way this type must:
    /// MADV_DONTNEED for private memory, a punched hole (MADV_REMOVE) for
    /// shared file memory so the page cache is emptied too.
    pub fn release(&self, offset: usize, len: usize) -> nix::Result<()> {
        let advice = if self.mem.is_shared() {
            MmapAdvise::MADV_REMOVE
        } else {
            MmapAdvise::MADV_DONTNEED
        };
        let p = (self.addr() + offset) as *mut c_void;
        // SAFETY: the range lies inside our mapping.
        unsafe { madvise(NonNull::new(p).expect("non-null"), len, advice) }?;
        if let (false, Some(fd)) = (self.mem.is_shared(), &self.fd) {
            // A private file mapping also reads through to the file: empty
            // that too, so the page is truly missing.
            nix::fcntl::fallocate(
                fd,
                nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
                offset as i64,
                len as i64,
            )?;
        }
        Ok(())
    }

    /// Releases every page.
    pub fn release_all(&self) -> nix::Result<()> {
        self.release(0, self.len)
    }
}

impl Drop for Area {
    fn drop(&mut self) {
        // SAFETY: both mappings are ours and nothing refers to them past drop.
        unsafe {
            let _ = munmap(self.ptr, self.len);
            if let Some(a) = self.alias {
                let _ = munmap(a, self.len);
            }
        }
    }
}

fn rw() -> ProtFlags {
    ProtFlags::PROT_READ | ProtFlags::PROT_WRITE
}

fn anon_map(len: NonZeroUsize) -> Result<NonNull<c_void>, Unavailable> {
    // SAFETY: a fresh private anonymous mapping at a kernel-chosen address.
    unsafe { mmap_anonymous(None, len, rw(), MapFlags::MAP_PRIVATE) }.map_err(|e| err("mmap", e))
}

/// A PMD-aligned anonymous mapping with MADV_HUGEPAGE, trimmed from a larger
/// reservation so THPs can be used from the first byte.
fn thp_map(len: usize) -> Result<NonNull<c_void>, Unavailable> {
    let pmd =
        pmd_size().ok_or_else(|| Unavailable::Skip("kernel has no THP (CONFIG_TRANSPARENT_HUGEPAGE off)".into()))?;
    if !len.is_multiple_of(pmd) {
        return Err(Unavailable::Error(format!(
            "anon-thp areas come in whole PMDs ({pmd} bytes); asked for {len}"
        )));
    }
    let big = anon_map(NonZeroUsize::new(len + pmd).expect("non-zero"))?;
    let start = big.as_ptr() as usize;
    let aligned = start.next_multiple_of(pmd);
    // SAFETY: trimming the head and tail of our own mapping.
    unsafe {
        if aligned > start {
            let _ = munmap(big, aligned - start);
        }
        let tail = aligned + len;
        let end = start + len + pmd;
        if end > tail {
            let _ = munmap(NonNull::new(tail as *mut c_void).expect("non-null"), end - tail);
        }
    }
    let p = NonNull::new(aligned as *mut c_void).expect("non-null");
    // SAFETY: the range is our mapping.
    match unsafe { madvise(p, len, MmapAdvise::MADV_HUGEPAGE) } {
        Ok(()) => Ok(p),
        // THP is there (pmd_size() read it from sysfs): a refusal is a failure.
        Err(e) => Err(err("madvise(MADV_HUGEPAGE)", e)),
    }
}

fn memfd(mem: MemType, len: usize) -> Result<OwnedFd, Unavailable> {
    use nix::sys::memfd::{MFdFlags, memfd_create};
    let mut flags = MFdFlags::MFD_CLOEXEC;
    match mem.hugetlb_pool() {
        Some(hugetlb::PageSize::Default) => flags |= MFdFlags::MFD_HUGETLB,
        Some(hugetlb::PageSize::Gigantic) => flags |= MFdFlags::MFD_HUGETLB | MFdFlags::MFD_HUGE_1GB,
        None => {}
    }
    // hugetlb's page size was read from sysfs before: a refusal is a failure.
    let fd = memfd_create(c"uffdtest", flags).map_err(|e| err("memfd_create", e))?;
    nix::unistd::ftruncate(&fd, len as i64).map_err(|e| err("ftruncate", e))?;
    Ok(fd)
}
