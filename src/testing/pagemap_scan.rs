//! The PAGEMAP_SCAN ioctl on `/proc/<pid>/pagemap` (6.7), as
//! `include/uapi/linux/fs.h` declares it: how userfaultfd's WP_ASYNC mode
//! is read back (which pages were written) and re-armed (PM_SCAN_WP_MATCHING).
//! See Documentation/admin-guide/mm/pagemap.rst.
#![allow(non_camel_case_types)]

use nix::errno::Errno;
use std::os::fd::{AsRawFd, OwnedFd};

/// ioctl type byte of procfs (`PROCFS_IOCTL_MAGIC`).
pub const PROCFS_IOCTL_MAGIC: u8 = b'f';

// `pm_scan_arg.flags`.
/// Write-protect the pages that match.
pub const PM_SCAN_WP_MATCHING: u64 = 1 << 0;
/// Fail with EPERM on a VMA without async uffd-wp instead of skipping it.
pub const PM_SCAN_CHECK_WPASYNC: u64 = 1 << 1;

// Page categories.
pub const PAGE_IS_WPALLOWED: u64 = 1 << 0;
pub const PAGE_IS_WRITTEN: u64 = 1 << 1;
pub const PAGE_IS_FILE: u64 = 1 << 2;
pub const PAGE_IS_PRESENT: u64 = 1 << 3;
pub const PAGE_IS_SWAPPED: u64 = 1 << 4;
pub const PAGE_IS_PFNZERO: u64 = 1 << 5;
pub const PAGE_IS_HUGE: u64 = 1 << 6;
pub const PAGE_IS_SOFT_DIRTY: u64 = 1 << 7;

/// `struct page_region`: `[start, end)` shares `categories`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct page_region {
    pub start: u64,
    pub end: u64,
    pub categories: u64,
}

/// `struct pm_scan_arg`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct pm_scan_arg {
    /// Must be `size_of::<pm_scan_arg>()`.
    pub size: u64,
    pub flags: u64,
    pub start: u64,
    pub end: u64,
    /// Out: where the walk stopped.
    pub walk_end: u64,
    pub vec: u64,
    pub vec_len: u64,
    /// 0: no limit.
    pub max_pages: u64,
    pub category_inverted: u64,
    pub category_mask: u64,
    pub category_anyof_mask: u64,
    pub return_mask: u64,
}

const _: () = assert!(std::mem::size_of::<pm_scan_arg>() == 96);
const _: () = assert!(std::mem::offset_of!(pm_scan_arg, walk_end) == 32);
const _: () = assert!(std::mem::offset_of!(pm_scan_arg, return_mask) == 88);
const _: () = assert!(std::mem::size_of::<page_region>() == 24);

nix::ioctl_readwrite!(pagemap_scan_ioctl, PROCFS_IOCTL_MAGIC, 16, pm_scan_arg);

/// What a scan asks for; `vec`, `vec_len` and `size` are filled in by
/// [`Pagemap::scan`].
#[derive(Debug, Default, Clone, Copy)]
pub struct Scan {
    pub flags: u64,
    pub start: usize,
    pub end: usize,
    pub max_pages: u64,
    pub category_inverted: u64,
    pub category_mask: u64,
    pub category_anyof_mask: u64,
    pub return_mask: u64,
}

/// A scan's answer: the regions and where the walk ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scanned {
    pub regions: Vec<page_region>,
    pub walk_end: usize,
}

/// An open `/proc/<pid>/pagemap`.
pub struct Pagemap {
    fd: OwnedFd,
}

impl Pagemap {
    /// This process's pagemap.
    pub fn open_self() -> std::io::Result<Pagemap> {
        Ok(Pagemap {
            fd: std::fs::File::open("/proc/self/pagemap")?.into(),
        })
    }

    /// Issues PAGEMAP_SCAN with `arg` as given, for the argument-check
    /// tests; returns the ioctl's value (regions written).
    pub fn scan_raw(&self, arg: &mut pm_scan_arg) -> nix::Result<i32> {
        // SAFETY: arg is a valid pm_scan_arg; the kernel checks `vec`.
        unsafe { pagemap_scan_ioctl(self.fd.as_raw_fd(), arg) }
    }

    /// Scans with room for `vec_len` regions.
    pub fn scan(&self, s: &Scan, vec_len: usize) -> Result<Scanned, Errno> {
        let mut vec = vec![page_region::default(); vec_len];
        let mut arg = pm_scan_arg {
            size: std::mem::size_of::<pm_scan_arg>() as u64,
            flags: s.flags,
            start: s.start as u64,
            end: s.end as u64,
            walk_end: 0,
            vec: if vec_len == 0 { 0 } else { vec.as_mut_ptr() as u64 },
            vec_len: vec_len as u64,
            max_pages: s.max_pages,
            category_inverted: s.category_inverted,
            category_mask: s.category_mask,
            category_anyof_mask: s.category_anyof_mask,
            return_mask: s.return_mask,
        };
        let n = self.scan_raw(&mut arg)? as usize;
        vec.truncate(n);
        Ok(Scanned {
            regions: vec,
            walk_end: arg.walk_end as usize,
        })
    }
}
