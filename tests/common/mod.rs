//! Shared by every test binary: the memory-type case lists.
//!
//! One list per family, as the kernel's uffd tests keep one `mem_types[]`
//! table; cases read `<test>::case_N_<memtype>`, which the runner prints as
//! `<test> on <memtype>`.
#![allow(dead_code, unused_imports, unused_macros)]

pub use rstest::rstest;
pub use rstest_reuse::{self, apply, template};
pub use uffdtest::testing::{faulter, pagemap, pagemap_scan, pin};
pub use uffdtest::*;

/// `addr` as the pointer nix's mman calls take.
pub fn ptr(addr: usize) -> std::ptr::NonNull<std::ffi::c_void> {
    std::ptr::NonNull::new(addr as *mut std::ffi::c_void).expect("non-null address")
}

/// Every memory type (guest-memfd skips where the kernel cannot serve it).
#[template]
#[rstest]
#[case::anon(MemType::Anon)]
#[case::shmem(MemType::Shmem)]
#[case::shmem_private(MemType::ShmemPrivate)]
#[case::hugetlb(MemType::Hugetlb)]
#[case::hugetlb_private(MemType::HugetlbPrivate)]
#[case::anon_thp(MemType::AnonThp)]
#[case::guest_memfd(MemType::GuestMemfd)]
pub fn all_mem(#[case] mem: MemType) {}

/// The five types the kernel's unit tests run on.
#[template]
#[rstest]
#[case::anon(MemType::Anon)]
#[case::shmem(MemType::Shmem)]
#[case::shmem_private(MemType::ShmemPrivate)]
#[case::hugetlb(MemType::Hugetlb)]
#[case::hugetlb_private(MemType::HugetlbPrivate)]
pub fn selftest_mem(#[case] mem: MemType) {}

/// Types with a file behind them (an alias view; MINOR mode).
/// guest-memfd is here because every shmem case must also run on it.
#[template]
#[rstest]
#[case::shmem(MemType::Shmem)]
#[case::shmem_private(MemType::ShmemPrivate)]
#[case::hugetlb(MemType::Hugetlb)]
#[case::hugetlb_private(MemType::HugetlbPrivate)]
#[case::guest_memfd(MemType::GuestMemfd)]
pub fn file_mem(#[case] mem: MemType) {}

/// Anonymous types (MOVE).
#[template]
#[rstest]
#[case::anon(MemType::Anon)]
#[case::anon_thp(MemType::AnonThp)]
pub fn anon_mem(#[case] mem: MemType) {}
