//! UFFDIO_REGISTER: the ioctls mask each memory type and mode is granted,
//! every argument check, ownership, and how registration changes the VMAs.
//!
//! Expectations come from fs/userfaultfd.c `userfaultfd_register` and
//! mm/userfaultfd.c `userfaultfd_register_range` (6.12); the VMA side is
//! read back from `/proc/self/smaps` VmFlags (`um`/`uw`/`ui`).

mod common;
use common::*;
use nix::errno::Errno;
use nix::sys::mman::{MapFlags, ProtFlags, mmap, mmap_anonymous, mprotect, munmap};
use std::num::NonZeroUsize;
use std::os::fd::AsFd;
use testing::smaps;
use uffdtest::testing::mm::Reservation;

const MISSING: RegisterMode = RegisterMode::MISSING;
const WP: RegisterMode = RegisterMode::WP;
const MINOR: RegisterMode = RegisterMode::MINOR;
// Named combinations, so cases list as `mode_4_MISSING_WP`.
const MISSING_WP: RegisterMode = MISSING.union(WP);
const MISSING_MINOR: RegisterMode = MISSING.union(MINOR);
const WP_MINOR: RegisterMode = WP.union(MINOR);
const MISSING_WP_MINOR: RegisterMode = MISSING_WP.union(MINOR);

fn unmap(addr: usize, len: usize) {
    // SAFETY: callers unmap part of an area they own; nothing refers to it.
    unsafe { munmap(ptr(addr), len) }.expect("munmap");
}

fn protect(addr: usize, len: usize, prot: ProtFlags) {
    // SAFETY: callers change the protection of part of an area they own.
    unsafe { mprotect(ptr(addr), len, prot) }.expect("mprotect");
}

/// Maps `fd` at a kernel-chosen address or, with `at`, over `at` (MAP_FIXED).
fn map_fd(fd: impl AsFd, len: usize, prot: ProtFlags, flags: MapFlags, at: Option<usize>) -> Reservation {
    let (hint, flags) = match at {
        Some(a) => (NonZeroUsize::new(a), flags | MapFlags::MAP_FIXED),
        None => (None, flags),
    };
    // SAFETY: a new mapping of our own fd; MAP_FIXED only replaces part of an
    // area the caller owns.
    let p = unsafe { mmap(hint, NonZeroUsize::new(len).unwrap(), prot, flags, fd, 0) }.expect("mmap");
    Reservation {
        addr: p.as_ptr() as usize,
        len,
    }
}

fn uffd() -> Result<Uffd, String> {
    testing::open_uffd(Features::empty())
}

/// An unregistered area of `npages` of `mem`, which the kernel can register
/// in `mode`, and a fresh uffd to register it with. Err is the SKIP reason,
/// the memory type first.
fn area_and_uffd(mem: MemType, mode: RegisterMode, npages: usize) -> Result<(Area, Uffd), String> {
    let area = area_to_register(mem, npages, Features::empty(), mode)?;
    Ok((area, uffd()?))
}

#[apply(all_mem)]
fn register_grants_documented_ioctls(
    #[case] mem: MemType,
    #[values(MISSING, WP, MINOR, MISSING_WP, MISSING_MINOR, WP_MINOR, MISSING_WP_MINOR)] mode: RegisterMode,
) {
    if mode.contains(MINOR) && mem.is_anon() {
        // Documented refusal, not a missing feature: vma_can_userfault
        // allows VM_UFFD_MINOR on shmem and hugetlb VMAs only.
        let area = try_area!(Area::new(mem, 1));
        let uffd = try_skip!(uffd());
        assert_eq!(uffd.register(area.addr(), area.len(), mode), Err(Errno::EINVAL));
        return;
    }
    let (area, uffd) = try_skip!(area_and_uffd(mem, mode, 2));
    let ioctls = uffd.register(area.addr(), area.len(), mode).expect("UFFDIO_REGISTER");
    assert_eq!(ioctls, expected_ioctls(mem, mode), "{mem} {}", caps::mode_name(mode));
    // The VMA carries exactly the requested modes.
    assert_eq!(smaps::uffd_modes(area.addr()), mode);
    assert_eq!(smaps::uffd_modes(area.page(1)), mode);
}

#[apply(anon_mem)]
fn register_minor_on_anon_fails_einval(
    #[case] mem: MemType,
    #[values(MINOR, MISSING_MINOR, WP_MINOR, MISSING_WP_MINOR)] mode: RegisterMode,
) {
    // vma_can_userfault: VM_UFFD_MINOR only on hugetlb and shmem VMAs.
    let area = try_area!(Area::new(mem, 1));
    let uffd = try_skip!(uffd());
    assert_eq!(uffd.register(area.addr(), area.len(), mode), Err(Errno::EINVAL));
    assert_eq!(smaps::uffd_modes(area.addr()), RegisterMode::empty());
}

#[apply(all_mem)]
fn register_mode_zero_fails_einval(#[case] mem: MemType) {
    let area = try_area!(Area::new(mem, 1));
    let uffd = try_skip!(uffd());
    assert_eq!(
        uffd.register(area.addr(), area.len(), RegisterMode::empty()),
        Err(Errno::EINVAL)
    );
}

#[apply(all_mem)]
fn register_unknown_mode_bits_fail_einval(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(area_and_uffd(mem, MISSING, 1));
    // Anything outside UFFD_API_REGISTER_MODES, alone or with a valid bit.
    for bits in [1 << 3, 1 << 4, 1 << 63, sys::UFFDIO_REGISTER_MODE_MISSING | 1 << 3] {
        let mode = RegisterMode::from_bits_retain(bits);
        assert_eq!(
            uffd.register(area.addr(), area.len(), mode),
            Err(Errno::EINVAL),
            "mode {bits:#x}"
        );
    }
    assert_eq!(smaps::uffd_modes(area.addr()), RegisterMode::empty());
}

#[apply(all_mem)]
fn register_misaligned_start_fails_einval(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(area_and_uffd(mem, MISSING, 2));
    let ps = mem::base_page_size();
    // validate_range: start must be PAGE_SIZE aligned.
    for off in [1, 8, ps / 2] {
        assert_eq!(
            uffd.register(area.addr() + off, ps, MISSING),
            Err(Errno::EINVAL),
            "start + {off}"
        );
    }
}

#[apply(all_mem)]
fn register_misaligned_len_fails_einval(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(area_and_uffd(mem, MISSING, 2));
    let ps = mem::base_page_size();
    for len in [1, ps - 1, ps + 1, area.page_size() + 8] {
        assert_eq!(
            uffd.register(area.addr(), len, MISSING),
            Err(Errno::EINVAL),
            "len {len}"
        );
    }
    assert_eq!(smaps::uffd_modes(area.addr()), RegisterMode::empty());
}

#[apply(all_mem)]
fn register_zero_len_fails_einval(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(area_and_uffd(mem, MISSING, 1));
    assert_eq!(uffd.register(area.addr(), 0, MISSING), Err(Errno::EINVAL));
}

#[apply(all_mem)]
fn register_wrapping_range_fails_einval(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(area_and_uffd(mem, MISSING, 1));
    let ps = mem::base_page_size();
    // start + len wraps to exactly 0, and to one page past 0.
    for len in [0usize.wrapping_sub(area.addr()), 0usize.wrapping_sub(area.addr()) + ps] {
        assert_eq!(
            uffd.register(area.addr(), len, MISSING),
            Err(Errno::EINVAL),
            "len {len:#x}"
        );
    }
}

#[test]
fn register_beyond_task_size_fails_einval() {
    let uffd = try_skip!(uffd());
    let ps = mem::base_page_size();
    // validate_unaligned_range: start >= TASK_SIZE, and a range running past it.
    assert_eq!(uffd.register(1 << 63, ps, MISSING), Err(Errno::EINVAL));
    assert_eq!(uffd.register(usize::MAX - ps + 1, ps, MISSING), Err(Errno::EINVAL));
    assert_eq!(uffd.register((1 << 47) - ps, 2 * ps, MISSING), Err(Errno::EINVAL));
}

/// The last user page mapped, and a range from it one page past TASK_SIZE:
/// validation refuses the range's end (`len > task_size - start`) before
/// the VMA walk, which would otherwise register the mapped page and return
/// 0. TASK_SIZE here is x86_64's with 4-level paging, (1 << 47) - a page.
#[test]
fn register_of_the_last_user_page_running_past_task_size_fails_einval() {
    let uffd = try_skip!(uffd());
    let ps = mem::base_page_size();
    let len = NonZeroUsize::new(ps).unwrap();
    let map = |addr: usize| {
        // SAFETY: MAP_FIXED_NOREPLACE maps only where nothing is mapped.
        unsafe {
            mmap_anonymous(
                std::ptr::NonNull::new(addr as *mut std::ffi::c_void).map(|p| p.addr()),
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE | MapFlags::MAP_FIXED_NOREPLACE,
            )
        }
    };
    // With 5-level paging TASK_SIZE lies above 47 bits, and this range inside it.
    if let Ok(p) = map(1 << 47) {
        // SAFETY: the page just mapped, unused.
        unsafe { munmap(p, ps) }.unwrap();
        skip!("5-level paging: TASK_SIZE is above 1 << 47");
    }
    let last = (1 << 47) - 2 * ps;
    let page = match map(last) {
        Ok(p) => p,
        Err(e) => skip!("the last user page {last:#x} is taken: {e}"),
    };
    assert_eq!(uffd.register(last, 2 * ps, MISSING), Err(Errno::EINVAL));
    // The page alone is a range like any other.
    assert!(uffd.register(last, ps, MISSING).is_ok());
    // SAFETY: the page mapped above; nothing else refers to it.
    unsafe { munmap(page, ps) }.unwrap();
}

#[apply(all_mem)]
fn register_range_without_vma_fails_einval(#[case] mem: MemType) {
    require_mode!(mem, MISSING);
    let ps = try_skip!(mem.page_size().ok_or("no huge page size"));
    let addr = testing::holes::far_range();
    let uffd = try_skip!(uffd());
    // vma_find() finds nothing in [start, end).
    assert_eq!(uffd.register(addr, 2 * ps, MISSING), Err(Errno::EINVAL));
}

/// Three pages of `mem`, where nothing else is mapped around them, with page
/// `hole` unmapped, registered MISSING as one range: userfaultfd_register
/// walks the VMAs in the range and never checks for gaps between them, so
/// a hole is accepted and only VMAs get flags. The uffd holds the
/// registration. Err is the SKIP reason.
#[track_caller]
fn registered_across_hole(mem: MemType, hole: usize) -> Result<(Area, Uffd), String> {
    let (mut area, uffd) = area_and_uffd(mem, MISSING, 3)?;
    testing::holes::relocate(&mut area);
    unmap(area.page(hole), area.page_size());
    assert_eq!(
        uffd.register(area.addr(), area.len(), MISSING),
        Ok(expected_ioctls(mem, MISSING))
    );
    Ok((area, uffd))
}

#[apply(all_mem)]
fn register_range_with_hole_registers_the_mapped_parts(#[case] mem: MemType) {
    let (area, _uffd) = try_skip!(registered_across_hole(mem, 1));
    assert_eq!(smaps::uffd_modes(area.page(0)), MISSING);
    assert_eq!(smaps::vma(area.page(1)), None, "the hole stays a hole");
    assert_eq!(smaps::uffd_modes(area.page(2)), MISSING);
}

#[apply(all_mem)]
fn register_range_starting_in_hole_registers_what_follows(#[case] mem: MemType) {
    let (area, _uffd) = try_skip!(registered_across_hole(mem, 0));
    assert_eq!(smaps::uffd_modes(area.page(1)), MISSING);
    assert_eq!(smaps::uffd_modes(area.page(2)), MISSING);
}

#[apply(hugetlb_mem)]
fn register_hugetlb_start_not_huge_aligned_fails_einval(#[case] mem: MemType) {
    require_mode!(mem, MISSING);
    let area = try_area!(Area::new(mem, 2));
    let ps = mem::base_page_size();
    let uffd = try_skip!(uffd());
    // The first VMA is hugetlb: start must be aligned to its huge page.
    assert_eq!(
        uffd.register(area.addr() + ps, area.page_size(), MISSING),
        Err(Errno::EINVAL)
    );
    assert_eq!(smaps::uffd_modes(area.addr()), RegisterMode::empty());
}

#[apply(hugetlb_mem)]
fn register_hugetlb_end_not_huge_aligned_fails_einval(#[case] mem: MemType) {
    require_mode!(mem, MISSING);
    let area = try_area!(Area::new(mem, 2));
    let ps = mem::base_page_size();
    let uffd = try_skip!(uffd());
    // The VMA holding the end is hugetlb: end must be huge-page aligned.
    for len in [ps, area.page_size() - ps, area.page_size() + ps] {
        assert_eq!(
            uffd.register(area.addr(), len, MISSING),
            Err(Errno::EINVAL),
            "len {len:#x}"
        );
    }
    assert_eq!(smaps::uffd_modes(area.addr()), RegisterMode::empty());
}

#[apply(all_mem)]
fn register_range_owned_by_another_uffd_fails_ebusy(#[case] mem: MemType) {
    require_mode!(mem, MISSING);
    let area = try_area!(Area::new(mem, 2));
    let a = try_skip!(uffd());
    let b = try_skip!(uffd());
    a.register(area.addr(), area.len(), MISSING).expect("first uffd");
    // One VMA may belong to one uffd only, in any mode.
    for mode in [MISSING, MISSING | WP] {
        if testing::register_support(mem, mode).is_ok() {
            assert_eq!(b.register(area.addr(), area.len(), mode), Err(Errno::EBUSY));
        }
    }
    assert_eq!(b.register(area.page(1), area.page_size(), MISSING), Err(Errno::EBUSY));
    assert_eq!(smaps::uffd_modes(area.addr()), MISSING);
}

#[apply(all_mem)]
fn register_is_atomic_when_a_later_vma_is_busy(#[case] mem: MemType) {
    require_mode!(mem, MISSING);
    let area = try_area!(Area::new(mem, 2));
    let a = try_skip!(uffd());
    let b = try_skip!(uffd());
    a.register(area.page(1), area.page_size(), MISSING)
        .expect("first uffd, page 1");
    // All VMAs are checked before any is changed: page 0 stays unregistered.
    assert_eq!(b.register(area.addr(), area.len(), MISSING), Err(Errno::EBUSY));
    assert_eq!(smaps::uffd_modes(area.page(0)), RegisterMode::empty());
    assert_eq!(smaps::uffd_modes(area.page(1)), MISSING);
}

#[apply(all_mem)]
fn register_is_free_again_once_the_owner_is_closed(#[case] mem: MemType) {
    require_mode!(mem, MISSING);
    let area = try_area!(Area::new(mem, 1));
    let a = try_skip!(uffd());
    a.register(area.addr(), area.len(), MISSING).expect("first uffd");
    drop(a);
    // userfaultfd_release clears the VMAs the closed uffd owned.
    assert_eq!(smaps::uffd_modes(area.addr()), RegisterMode::empty());
    let b = try_skip!(uffd());
    assert_eq!(
        b.register(area.addr(), area.len(), MISSING),
        Ok(expected_ioctls(mem, MISSING))
    );
}

#[rstest]
#[case::shmem(MemType::Shmem)]
#[case::hugetlb(MemType::Hugetlb)]
#[case::hugetlb_1g(MemType::Hugetlb1g)]
fn register_readonly_shared_mapping_fails_eperm(
    #[case] mem: MemType,
    #[values(MISSING, WP, MINOR)] mode: RegisterMode,
) {
    require_mode!(mem, mode);
    let area = try_area!(Area::new(mem, 1));
    let fd = area.fd().expect("file-backed area");
    // Reopen the memfd read-only: a MAP_SHARED mapping of it lacks
    // VM_MAYWRITE, and UFFDIO_COPY could otherwise fill the file.
    let path = format!("/proc/self/fd/{}", testing::fdnum(fd));
    let ro = std::fs::File::open(&path).expect("reopen memfd read-only");
    let m = map_fd(&ro, area.len(), ProtFlags::PROT_READ, MapFlags::MAP_SHARED, None);
    let uffd = try_skip!(uffd());
    assert_eq!(uffd.register(m.addr, m.len, mode), Err(Errno::EPERM));
    assert_eq!(smaps::uffd_modes(m.addr), RegisterMode::empty());
}

#[rstest]
#[case::shmem_private(MemType::ShmemPrivate)]
#[case::hugetlb_private(MemType::HugetlbPrivate)]
#[case::hugetlb_1g_private(MemType::Hugetlb1gPrivate)]
fn register_readonly_private_mapping_is_allowed(#[case] mem: MemType) {
    require_mode!(mem, MISSING);
    let area = try_area!(Area::new(mem, 1));
    let fd = area.fd().expect("file-backed area");
    let path = format!("/proc/self/fd/{}", testing::fdnum(fd));
    let ro = std::fs::File::open(&path).expect("reopen memfd read-only");
    // A private mapping keeps VM_MAYWRITE (writes CoW), so it may register.
    let m = map_fd(&ro, area.len(), ProtFlags::PROT_READ, MapFlags::MAP_PRIVATE, None);
    let uffd = try_skip!(uffd());
    assert_eq!(uffd.register(m.addr, m.len, MISSING), Ok(expected_ioctls(mem, MISSING)));
    assert_eq!(smaps::uffd_modes(m.addr), MISSING);
}

#[apply(all_mem)]
fn register_prot_none_area_is_allowed(#[case] mem: MemType) {
    require_mode!(mem, MISSING);
    let area = try_area!(Area::new(mem, 1));
    protect(area.addr(), area.len(), ProtFlags::PROT_NONE);
    let uffd = try_skip!(uffd());
    // Only VM_MAYWRITE matters, not the current protection.
    assert_eq!(
        uffd.register(area.addr(), area.len(), MISSING),
        Ok(expected_ioctls(mem, MISSING))
    );
}

#[rstest]
#[case::shared(MapFlags::MAP_SHARED)]
#[case::private(MapFlags::MAP_PRIVATE)]
fn register_regular_file_mapping_fails_einval(
    #[case] flags: MapFlags,
    #[values(MISSING, WP, MINOR)] mode: RegisterMode,
) {
    let ps = mem::base_page_size();
    let f = try_skip!(testing::files::non_shmem_file(2 * ps));
    let m = map_fd(&f, 2 * ps, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE, flags, None);
    let uffd = try_skip!(uffd());
    // vma_can_userfault: only anonymous, shmem and hugetlb VMAs.
    assert_eq!(uffd.register(m.addr, m.len, mode), Err(Errno::EINVAL));
}

#[apply(all_mem)]
fn register_span_with_an_unsupported_vma_fails_einval_atomically(#[case] mem: MemType) {
    require_mode!(mem, MISSING);
    let area = try_area!(Area::new(mem, 2));
    let ps = area.page_size();
    let f = try_skip!(testing::files::non_shmem_file(ps));
    // Replace page 1 with a regular file mapping.
    let m = map_fd(
        &f,
        ps,
        ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
        MapFlags::MAP_SHARED,
        Some(area.page(1)),
    );
    std::mem::forget(m); // the area's drop unmaps it
    let uffd = try_skip!(uffd());
    assert_eq!(uffd.register(area.addr(), area.len(), MISSING), Err(Errno::EINVAL));
    assert_eq!(smaps::uffd_modes(area.page(0)), RegisterMode::empty());
}

#[apply(all_mem)]
fn register_spanning_two_vmas_registers_both(#[case] mem: MemType) {
    require_mode!(mem, MISSING);
    let area = try_area!(Area::new(mem, 2));
    protect(area.page(1), area.page_size(), ProtFlags::PROT_READ);
    let v0 = smaps::vma(area.page(0)).expect("vma 0");
    assert_eq!(v0.end, area.page(1), "mprotect split the area in two VMAs");
    let uffd = try_skip!(uffd());
    assert_eq!(
        uffd.register(area.addr(), area.len(), MISSING),
        Ok(expected_ioctls(mem, MISSING))
    );
    assert_eq!(smaps::uffd_modes(area.page(0)), MISSING);
    assert_eq!(smaps::uffd_modes(area.page(1)), MISSING);
    uffd.unregister(area.addr(), area.len()).expect("UFFDIO_UNREGISTER");
    assert_eq!(smaps::uffd_modes(area.page(0)), RegisterMode::empty());
    assert_eq!(smaps::uffd_modes(area.page(1)), RegisterMode::empty());
}

#[apply(all_mem)]
fn register_subrange_splits_the_vma(#[case] mem: MemType) {
    require_mode!(mem, MISSING);
    let area = try_area!(Area::new(mem, 3));
    let ps = area.page_size();
    let uffd = try_skip!(uffd());
    uffd.register(area.page(1), ps, MISSING).expect("register page 1");
    let v = smaps::vma(area.page(1)).expect("vma of page 1");
    assert_eq!((v.start, v.end), (area.page(1), area.page(1) + ps));
    assert_eq!(v.uffd_modes(), MISSING);
    assert_eq!(smaps::uffd_modes(area.page(0)), RegisterMode::empty());
    assert_eq!(smaps::uffd_modes(area.page(2)), RegisterMode::empty());
}

#[apply(all_mem)]
fn register_again_after_unregister_works(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(area_and_uffd(mem, MISSING, 2));
    for round in 0..3 {
        assert_eq!(
            uffd.register(area.addr(), area.len(), MISSING),
            Ok(expected_ioctls(mem, MISSING)),
            "round {round}"
        );
        assert_eq!(smaps::uffd_modes(area.addr()), MISSING);
        uffd.unregister(area.addr(), area.len()).expect("UFFDIO_UNREGISTER");
        assert_eq!(smaps::uffd_modes(area.addr()), RegisterMode::empty());
    }
}

#[apply(all_mem)]
fn register_same_mode_twice_is_a_no_op(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(area_and_uffd(mem, MISSING, 2));
    let first = uffd.register(area.addr(), area.len(), MISSING).expect("first");
    let second = uffd.register(area.addr(), area.len(), MISSING).expect("second");
    assert_eq!(first, second);
    assert_eq!(smaps::uffd_modes(area.addr()), MISSING);
}

#[apply(all_mem)]
fn register_again_replaces_a_mode_it_does_not_include(#[case] mem: MemType) {
    require_mode!(mem, MISSING | WP);
    let area = try_area!(Area::new(mem, 1));
    let uffd = try_skip!(uffd());
    uffd.register(area.addr(), area.len(), MISSING).expect("MISSING");
    // userfaultfd_register_range: new_flags = (flags & ~__VM_UFFD_FLAGS) | mode,
    // so the second call's modes replace the first's.
    assert_eq!(uffd.register(area.addr(), area.len(), WP), Ok(expected_ioctls(mem, WP)));
    assert_eq!(smaps::uffd_modes(area.addr()), WP);
    assert_eq!(
        uffd.register(area.addr(), area.len(), MISSING | WP),
        Ok(expected_ioctls(mem, MISSING | WP))
    );
    assert_eq!(smaps::uffd_modes(area.addr()), MISSING | WP);
}

#[apply(all_mem)]
fn register_again_with_a_subset_keeps_the_superset(#[case] mem: MemType) {
    require_mode!(mem, MISSING | WP);
    let area = try_area!(Area::new(mem, 1));
    let uffd = try_skip!(uffd());
    uffd.register(area.addr(), area.len(), MISSING | WP)
        .expect("MISSING|WP");
    // A VMA already registered with every requested mode is skipped; the
    // mask still describes the request.
    assert_eq!(
        uffd.register(area.addr(), area.len(), MISSING),
        Ok(expected_ioctls(mem, MISSING))
    );
    assert_eq!(smaps::uffd_modes(area.addr()), MISSING | WP);
}

#[rstest]
#[case::hugetlb(MemType::Hugetlb)]
#[case::hugetlb_1g(MemType::Hugetlb1g)]
fn register_mixed_hugetlb_and_anon_span_gets_basic_ioctls(#[case] mem: MemType) {
    require_mode!(mem, MISSING);
    // A hugetlb area directly followed by anonymous memory: the mask drops
    // to the BASIC set as soon as one hugetlb VMA is in the range.
    let area = try_area!(Area::new(mem, 2));
    let hp = area.page_size();
    // SAFETY: replace the second huge page by an anonymous mapping we own.
    let anon = unsafe {
        nix::sys::mman::mmap_anonymous(
            NonZeroUsize::new(area.page(1)),
            NonZeroUsize::new(hp).unwrap(),
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_PRIVATE | MapFlags::MAP_FIXED,
        )
    }
    .expect("mmap anon over the second huge page");
    assert_eq!(anon.as_ptr() as usize, area.page(1));
    let uffd = try_skip!(uffd());
    assert_eq!(
        uffd.register(area.addr(), area.len(), MISSING),
        Ok(expected_ioctls(mem, MISSING))
    );
    assert_eq!(smaps::uffd_modes(area.page(1)), MISSING);
    // The anonymous part alone gets the full set.
    uffd.unregister(area.addr(), area.len()).unwrap();
    assert_eq!(
        uffd.register(area.page(1), hp, MISSING),
        Ok(expected_ioctls(MemType::Anon, MISSING))
    );
}

#[test]
fn register_vdso_fails_einval() {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let Some(line) = maps.lines().find(|l| l.ends_with("[vdso]")) else {
        skip!("no [vdso] mapping in this process");
    };
    let (s, e) = line.split_whitespace().next().unwrap().split_once('-').unwrap();
    let (s, e) = (
        usize::from_str_radix(s, 16).unwrap(),
        usize::from_str_radix(e, 16).unwrap(),
    );
    let uffd = try_skip!(uffd());
    // A special mapping is neither anonymous, shmem nor hugetlb.
    assert_eq!(uffd.register(s, e - s, MISSING), Err(Errno::EINVAL));
}

#[rstest]
#[case::shared(MapFlags::MAP_SHARED)]
#[case::private(MapFlags::MAP_PRIVATE)]
fn register_wp_only_with_wp_async_takes_any_file(#[case] flags: MapFlags) {
    require_features!(Features::WP_ASYNC | Features::PAGEFAULT_FLAG_WP);
    let ps = mem::base_page_size();
    let f = try_skip!(testing::files::non_shmem_file(2 * ps));
    let m = map_fd(&f, 2 * ps, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE, flags, None);
    let uffd = try_skip!(testing::open_uffd(Features::WP_ASYNC | Features::PAGEFAULT_FLAG_WP));
    // vma_can_userfault: with WP_ASYNC and WP as the only mode, any VMA
    // type may register; adding another mode brings the type check back.
    assert_eq!(uffd.register(m.addr, m.len, MISSING | WP), Err(Errno::EINVAL));
    assert_eq!(uffd.register(m.addr, m.len, WP), Ok(expected_ioctls(MemType::Anon, WP)));
    assert_eq!(smaps::uffd_modes(m.addr), WP);
}
