//! Page-aligned buffers of known bytes: the sources COPY reads from.

use super::{Area, MemType, Unavailable};

/// A buffer of private anonymous memory, page-aligned, unmapped on drop.
pub struct Buf {
    area: Area,
}

/// `MPOL_LOCAL` of linux/mempolicy.h.
const MPOL_LOCAL: libc::c_long = 4;

/// Unwritten anonymous memory for `len` bytes, kept out of automatic NUMA
/// balancing: its scanner makes PTEs PROT_NONE to sample accesses, and a
/// fill that reads such a source with page faults disabled falls back to a
/// bounce page, which a 1 GiB hugetlb pool may not have
/// (docs/findings/hugetlb-1g-copy-enomem.md). A VMA with a policy of its own
/// is not scanned; without NUMA in the kernel mbind fails and nothing is lost.
fn fresh(len: usize) -> Result<Area, Unavailable> {
    let pages = len.div_ceil(super::base_page_size()).max(1);
    let area = Area::new(MemType::Anon, pages)?;
    // SAFETY: mbind of our own mapping; MPOL_LOCAL takes no node mask.
    let _ = unsafe {
        libc::syscall(
            libc::SYS_mbind,
            area.addr(),
            area.len(),
            MPOL_LOCAL,
            0usize,
            0usize,
            0usize,
        )
    };
    Ok(area)
}

impl Buf {
    /// `len` bytes filled with `byte`, or why the memory could not be had.
    pub fn try_filled(len: usize, byte: u8) -> Result<Buf, Unavailable> {
        let area = fresh(len)?;
        // SAFETY: the area is ours and at least `len` long.
        unsafe { std::ptr::write_bytes(area.addr() as *mut u8, byte, len) };
        Ok(Buf { area })
    }

    /// `len` bytes never written: valid to read (as zeros), none of it
    /// resident, so the kernel's first read of it must fault it in.
    pub fn untouched(len: usize) -> Buf {
        Buf {
            area: fresh(len).expect("anonymous memory"),
        }
    }

    /// [`Buf::try_filled`], for callers to whom no memory is a bug.
    pub fn filled(len: usize, byte: u8) -> Buf {
        Buf::try_filled(len, byte).expect("anonymous memory")
    }

    /// Filled with a per-byte pattern: `f(offset)`.
    pub fn pattern(len: usize, f: impl Fn(usize) -> u8) -> Buf {
        let b = Buf::filled(len, 0);
        for i in 0..len {
            // SAFETY: inside the buffer.
            unsafe { *((b.addr() + i) as *mut u8) = f(i) };
        }
        b
    }

    /// `npages` pages of `ps` bytes, byte `i` of page `p` being `f(p, i)`:
    /// [`Buf::pattern`] without a division per byte, which on 1 GiB pages
    /// took longer than the case around it.
    pub fn paged(ps: usize, npages: usize, f: impl Fn(usize, usize) -> u8) -> Buf {
        let b = Buf::filled(ps * npages, 0);
        for p in 0..npages {
            // SAFETY: page `p` lies inside the buffer, which nothing else uses.
            let page = unsafe { std::slice::from_raw_parts_mut((b.addr() + p * ps) as *mut u8, ps) };
            for (i, byte) in page.iter_mut().enumerate() {
                *byte = f(p, i);
            }
        }
        b
    }

    pub fn addr(&self) -> usize {
        self.area.addr()
    }

    pub fn bytes(&self, len: usize) -> Vec<u8> {
        self.area.read(self.addr(), len)
    }
}
