//! Thin madvise/munmap/mremap wrappers and a PROT_NONE reservation, for tests
//! that change mappings under a uffd and check the errno exactly.

use nix::errno::Errno;

/// A fresh read-write anonymous mapping of `len` bytes where the kernel
/// chooses, `flags` being MAP_PRIVATE or MAP_SHARED (with any extra); the
/// caller unmaps it.
pub fn map_anon(len: usize, flags: i32) -> nix::Result<usize> {
    // SAFETY: a new mapping at a kernel-chosen address touches nothing of ours.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(Errno::last());
    }
    Ok(p as usize)
}

/// madvise(2) on a raw range.
pub fn madvise(addr: usize, len: usize, advice: i32) -> nix::Result<()> {
    // SAFETY: callers pass ranges of their own mappings; madvise checks the rest.
    Errno::result(unsafe { libc::madvise(addr as *mut libc::c_void, len, advice) }).map(drop)
}

/// munmap(2) on a raw range.
pub fn munmap(addr: usize, len: usize) -> nix::Result<()> {
    // SAFETY: callers unmap ranges of their own mappings.
    Errno::result(unsafe { libc::munmap(addr as *mut libc::c_void, len) }).map(drop)
}

/// mremap(2); `new` is used with MREMAP_FIXED only.
pub fn mremap(old: usize, old_len: usize, new_len: usize, flags: i32, new: usize) -> nix::Result<usize> {
    // SAFETY: callers remap their own mappings; the kernel validates the rest.
    let r = unsafe {
        libc::mremap(
            old as *mut libc::c_void,
            old_len,
            new_len,
            flags,
            new as *mut libc::c_void,
        )
    };
    if r == libc::MAP_FAILED {
        Err(Errno::last())
    } else {
        Ok(r as usize)
    }
}

/// How pages of `mem` are dropped the way the type needs: a punched hole
/// for shared file memory, MADV_DONTNEED otherwise.
pub fn release_advice(mem: crate::mem::MemType) -> i32 {
    if mem.is_shared() {
        libc::MADV_REMOVE
    } else {
        libc::MADV_DONTNEED
    }
}

/// A PROT_NONE reservation aligned to `align`: a place to mremap an area
/// to. Unmapped on drop; shrink `addr`/`len` for parts given away.
pub struct Reservation {
    pub addr: usize,
    pub len: usize,
}

impl Reservation {
    pub fn new(len: usize, align: usize) -> Reservation {
        // SAFETY: a fresh anonymous mapping at a kernel-chosen address.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len + align,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED, "mmap reservation: {}", Errno::last());
        let start = p as usize;
        let addr = start.next_multiple_of(align);
        if addr > start {
            munmap(start, addr - start).expect("trim reservation head");
        }
        if start + align > addr {
            munmap(addr + len, start + align - addr).expect("trim reservation tail");
        }
        Reservation { addr, len }
    }

    /// The whole reservation now belongs to a mapping moved onto it.
    pub fn give_away(self) {
        std::mem::forget(self);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.len > 0 {
            let _ = munmap(self.addr, self.len);
        }
    }
}

/// Alignment a destination of `area` needs: its page size, or THP's PMD.
pub fn align_for(area: &crate::mem::Area) -> usize {
    match area.mem() {
        crate::mem::MemType::AnonThp => crate::mem::pmd_size().unwrap_or(area.page_size()),
        _ => area.page_size(),
    }
}

/// Checks every byte of `got` against `want(offset)`; panics naming the
/// first difference and the count, not printing whole (huge) pages.
#[track_caller]
pub fn assert_bytes(got: &[u8], want: impl Fn(usize) -> u8, what: &str) {
    let bad: Vec<usize> = (0..got.len()).filter(|&i| got[i] != want(i)).collect();
    if let Some(&i) = bad.first() {
        panic!(
            "{what}: {} of {} bytes differ; first at offset {i:#x}: {:#04x}, want {:#04x}",
            bad.len(),
            got.len(),
            got[i],
            want(i)
        );
    }
}
