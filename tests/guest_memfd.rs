//! guest_memfd: KVM guest memory the VMM mmap()s (6.18), and userfaultfd on it.
//!
//! Two halves. The area cases pin what the suite relies on when it maps a
//! guest_memfd (zeroed, shared page cache, holes, the mmap rules); they run
//! wherever KVM does. The uffd cases are the postcopy/restore flows
//! guest_memfd's userfaultfd support exists for (minor fault resolved by
//! CONTINUE after the page arrived through the alias; punch-hole then fault);
//! each also runs on shmem, the type guest_memfd copies, so the case itself
//! is proven on a kernel that cannot yet register guest_memfd and SKIPs.

mod common;
use common::*;
use nix::errno::Errno;
use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};
use testing::Access;
use uffdtest::kvm::GuestMemfdFlags;

/// The area cases: guest_memfd only, named as a case so the runner's
/// `--mem guest-memfd` selects them.
#[template]
#[rstest]
#[case::guest_memfd(MemType::GuestMemfd)]
fn gmem(#[case] mem: MemType) {}

/// guest_memfd and its control: shmem, which guest_memfd's uffd support follows.
#[template]
#[rstest]
#[case::shmem(MemType::Shmem)]
#[case::guest_memfd(MemType::GuestMemfd)]
fn gmem_and_shmem(#[case] mem: MemType) {}

fn rw() -> ProtFlags {
    ProtFlags::PROT_READ | ProtFlags::PROT_WRITE
}

/// mmap()s `len` bytes of `fd` with `flags`; the caller unmaps.
fn map(fd: &OwnedFd, len: usize, flags: MapFlags) -> nix::Result<usize> {
    let nz = NonZeroUsize::new(len).expect("non-empty");
    // SAFETY: a fresh mapping of our own fd at a kernel-chosen address.
    unsafe { mmap(None, nz, rw(), flags, fd.as_fd(), 0) }.map(|p| p.as_ptr() as usize)
}

fn unmap(addr: usize, len: usize) {
    // SAFETY: callers pass a mapping of their own that nothing else uses.
    unsafe { munmap(std::ptr::NonNull::new(addr as *mut _).expect("non-null"), len) }.expect("munmap");
}

// ---- the area ----

#[apply(gmem)]
fn area_is_base_pages_of_the_requested_count(#[case] mem: MemType) {
    let a = try_area!(Area::new(mem, 3));
    assert_eq!(a.page_size(), mem::base_page_size());
    assert_eq!(a.len(), 3 * mem::base_page_size());
    assert_eq!(a.npages(), 3);
    assert!(
        a.fd().is_some() && a.vm().is_some(),
        "a guest-memfd area keeps its fd and its VM"
    );
}

#[apply(gmem)]
fn area_reads_zero_then_holds_what_was_written(#[case] mem: MemType) {
    let a = try_area!(Area::new(mem, 4));
    for i in 0..4 {
        assert!(a.read_page(i).iter().all(|&b| b == 0), "fresh page {i} is not zero");
    }
    for i in 0..4 {
        a.fill_page(i, 0x10 + i as u8);
    }
    for i in 0..4 {
        assert!(
            a.read_page(i).iter().all(|&b| b == 0x10 + i as u8),
            "page {i} lost its bytes"
        );
    }
}

#[apply(gmem)]
fn alias_view_shares_the_pages(#[case] mem: MemType) {
    let a = try_area!(Area::with_alias(mem, 2));
    a.fill_page(0, 0x3c);
    assert!(a.read(a.alias_page(0), a.page_size()).iter().all(|&b| b == 0x3c));
    fill_alias_page(&a, 1, 0xc3);
    assert!(a.read_page(1).iter().all(|&b| b == 0xc3));
}

#[apply(gmem)]
fn release_punches_a_hole_both_views_read_zero(#[case] mem: MemType) {
    let a = try_area!(Area::with_alias(mem, 3));
    a.populate(0x77);
    let ps = a.page_size();
    a.release(ps, ps).expect("MADV_REMOVE on guest_memfd");
    assert!(
        a.read_page(1).iter().all(|&b| b == 0),
        "hole reads non-zero in the main view"
    );
    assert!(
        a.read(a.alias_page(1), ps).iter().all(|&b| b == 0),
        "hole reads non-zero in the alias"
    );
    for i in [0, 2] {
        assert!(
            a.read_page(i).iter().all(|&b| b == 0x77),
            "page {i} outside the hole changed"
        );
    }
}

#[apply(gmem)]
fn fallocate_punch_hole_on_the_fd_zeroes_the_mapped_page(#[case] mem: MemType) {
    use nix::fcntl::{FallocateFlags, fallocate};
    let a = try_area!(Area::new(mem, 2));
    a.populate(0x5e);
    let ps = a.page_size() as i64;
    let fd = a.fd().expect("guest_memfd");
    fallocate(
        fd,
        FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
        0,
        ps,
    )
    .expect("punch hole");
    assert!(a.read_page(0).iter().all(|&b| b == 0));
    assert!(a.read_page(1).iter().all(|&b| b == 0x5e));
    // guest_memfd never changes size: a punch without KEEP_SIZE is refused.
    assert_eq!(
        fallocate(fd, FallocateFlags::FALLOC_FL_PUNCH_HOLE, 0, ps),
        Err(Errno::EOPNOTSUPP)
    );
}

#[apply(gmem)]
fn private_mapping_fails_einval(#[case] mem: MemType) {
    let a = try_area!(Area::new(mem, 1));
    let r = map(a.fd().expect("guest_memfd"), a.len(), MapFlags::MAP_PRIVATE);
    if let Ok(p) = r {
        unmap(p, a.len());
    }
    assert_eq!(r, Err(Errno::EINVAL));
}

#[apply(gmem)]
fn mapping_without_flag_mmap_fails_enodev(#[case] mem: MemType) {
    let a = try_area!(Area::new(mem, 1));
    let vm = a.vm().expect("VM");
    let fd = vm
        .create_guest_memfd(a.len() as u64, GuestMemfdFlags::empty())
        .expect("guest_memfd without flags");
    let r = map(&fd, a.len(), MapFlags::MAP_SHARED);
    if let Ok(p) = r {
        unmap(p, a.len());
    }
    assert_eq!(r, Err(Errno::ENODEV));
}

#[apply(gmem)]
fn host_fault_without_init_shared_is_sigbus(#[case] mem: MemType) {
    let flags = mem::guest_memfd::probe().flags.unwrap_or_default();
    let a = try_area!(Area::new(mem, 1));
    require!(
        flags.contains(GuestMemfdFlags::GUEST_MEMFD_FLAG_INIT_SHARED),
        "KVM has no GUEST_MEMFD_FLAG_INIT_SHARED (KVM_CAP_GUEST_MEMFD_FLAGS = {:#x})",
        flags.bits()
    );
    let fd = a
        .vm()
        .expect("VM")
        .create_guest_memfd(a.len() as u64, GuestMemfdFlags::GUEST_MEMFD_FLAG_MMAP)
        .expect("guest_memfd with MMAP only");
    let p = map(&fd, a.len(), MapFlags::MAP_SHARED).expect("mmap succeeds; the fault is what fails");
    let read = access_in_signal_child(p + 3, Access::Read);
    let write = access_in_signal_child(p + 5, Access::Write);
    unmap(p, a.len());
    // kvm_gmem_fault_user_mapping refuses with VM_FAULT_SIGBUS: BUS_ADRERR
    // at the byte touched.
    assert_eq!(read, Ended::Died(FaultSignal::adrerr(p + 3)));
    assert_eq!(write, Ended::Died(FaultSignal::adrerr(p + 5)));
}

// ---- userfaultfd on it ----

/// REGISTER in every mode either grants the mode's range ioctls or fails
/// EINVAL (the vma is not one uffd serves); any other errno is a bug.
#[apply(gmem_and_shmem)]
fn register_grants_the_mode_or_fails_einval(#[case] mem: MemType) {
    let a = try_area!(Area::new(mem, 1));
    let u = try_skip!(testing::open_uffd(Features::empty()));
    for mode in caps::register_modes() {
        match u.register(a.addr(), a.len(), mode) {
            Ok(ioctls) => {
                // The mask depends on the mode and on whether a hugetlb VMA
                // is in the range, never on the file behind a shared VMA.
                assert_ioctls(ioctls, mem, mode);
                u.unregister(a.addr(), a.len()).expect("unregister");
            }
            Err(e) => {
                assert_eq!(e, Errno::EINVAL, "REGISTER {mode:?} on {mem}");
                // What shmem grants, it must grant with its feature bit present.
                assert!(testing::register_support(mem, mode).is_err(), "{mem} refused {mode:?}");
            }
        }
    }
}

/// Every event a handler saw, for the exact checks after the access.
type Seen = Arc<Mutex<Vec<(PagefaultFlags, u64)>>>;

/// Resolves MINOR faults with UFFDIO_CONTINUE of one page, recording each.
fn continue_handler(uffd: Arc<Uffd>, page_size: usize) -> (testing::FaultHandler, Seen) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let h = testing::FaultHandler::spawn(uffd, move |u, ev| match ev {
        Event::Pagefault { flags, address, .. } => {
            s.lock().unwrap().push((flags, address));
            let page = address as usize & !(page_size - 1);
            match u.r#continue(page, page_size, ContinueMode::empty()) {
                Ok(n) if n == page_size as i64 => Ok(()),
                Ok(n) => Err(format!("UFFDIO_CONTINUE at {page:#x} mapped {n}, not {page_size}")),
                Err(p) => Err(format!("UFFDIO_CONTINUE at {page:#x}: {p}")),
            }
        }
        other => Err(format!("unexpected event {other:?}")),
    });
    (h, seen)
}

/// Reads page 0 of `a` while a [`continue_handler`] on `u` serves its minor
/// faults: the bytes read and the faults the handler saw, once it stopped
/// without error.
fn read_page_0_through_continue(u: &Arc<Uffd>, a: &Area) -> (Vec<u8>, Vec<(PagefaultFlags, u64)>) {
    let (h, seen) = continue_handler(u.clone(), a.page_size());
    let got = a.read_page(0);
    let errors = h.stop();
    assert!(errors.is_empty(), "{errors:?}");
    let seen = seen.lock().unwrap().clone();
    (got, seen)
}

/// An area of `npages` of `mem` with an alias view, `prep`ared, then
/// registered MINOR on a fresh uffd; with the ioctls the registration
/// granted. Err is the SKIP reason.
fn registered_minor(
    mem: MemType,
    npages: usize,
    prep: impl FnOnce(&Area),
) -> Result<(Area, Arc<Uffd>, Ioctls), String> {
    testing::register_support(mem, RegisterMode::MINOR)?;
    let a = Area::with_alias(mem, npages).map_err(|e| match e {
        mem::Unavailable::Skip(r) => r,
        mem::Unavailable::Error(e) => panic!("cannot set up the area: {e}"),
    })?;
    prep(&a);
    let u = testing::open_uffd(Features::empty())?;
    let ioctls = u
        .register(a.addr(), a.len(), RegisterMode::MINOR)
        .expect("REGISTER MINOR");
    Ok((a, Arc::new(u), ioctls))
}

/// Snapshot restore / postcopy: the page arrives through the alias, the
/// guest-side access takes a minor fault, CONTINUE maps the cached page.
#[apply(gmem_and_shmem)]
fn minor_fault_after_alias_populate_is_resolved_by_continue(#[case] mem: MemType) {
    let (a, u, ioctls) = try_skip!(registered_minor(mem, 2, |a| fill_alias_page(a, 0, 0xab)));
    let ps = a.page_size();
    assert_ioctls(ioctls, mem, RegisterMode::MINOR);
    let (got, seen) = read_page_0_through_continue(&u, &a);
    assert!(
        got.iter().all(|&b| b == 0xab),
        "the minor fault did not map the alias's page"
    );
    assert_eq!(seen, vec![(PagefaultFlags::MINOR, a.page(0) as u64)]);
    // One page, now mapped in both views: a write through one shows in the other.
    a.fill_page(0, 0xcd);
    assert!(a.read(a.alias_page(0), ps).iter().all(|&b| b == 0xcd));
}

/// A punched hole is a missing page again: MISSING mode raises a fault that
/// UFFDIO_COPY fills; pages outside the hole fault no more.
#[apply(gmem_and_shmem)]
fn punch_hole_then_fault_raises_missing_fault_resolved_by_copy(#[case] mem: MemType) {
    let (a, u) = try_skip!(registered_missing(mem, 2, Features::empty(), |a| a.populate(0x11)));
    let ps = a.page_size();
    a.release(0, ps).expect("punch hole");
    let (h, seen) = testing::copy_handler(u.clone(), ps, 0x22);
    let hole = a.read_page(0);
    let kept = a.read_page(1);
    let errors = h.stop();
    assert!(errors.is_empty(), "{errors:?}");
    assert!(
        hole.iter().all(|&b| b == 0x22),
        "the hole was not filled by UFFDIO_COPY"
    );
    assert!(kept.iter().all(|&b| b == 0x11), "the page outside the hole changed");
    assert_eq!(*seen.lock().unwrap(), vec![a.page(0) as u64]);
}

/// MINOR mode only traps pages the cache holds: after a hole the access
/// allocates a zero page and no event is raised.
#[apply(gmem_and_shmem)]
fn punch_hole_then_fault_in_minor_mode_maps_zero_without_event(#[case] mem: MemType) {
    let (a, u, _) = try_skip!(registered_minor(mem, 1, |a| fill_alias_page(a, 0, 0xab)));
    let ps = a.page_size();
    a.release(0, ps).expect("punch hole");
    // The access completes before it returns, so any fault it raised is seen.
    let (got, seen) = read_page_0_through_continue(&u, &a);
    assert!(seen.is_empty(), "a hole raised {seen:?}");
    assert!(got.iter().all(|&b| b == 0), "the hole did not read zero");
}

/// Postcopy after a discard: the page is punched out, re-sent through the
/// alias, and the access then takes a minor fault for the new contents.
#[apply(gmem_and_shmem)]
fn minor_fault_after_punch_hole_and_repopulate_maps_the_new_page(#[case] mem: MemType) {
    let (a, u, _) = try_skip!(registered_minor(mem, 1, |a| a.fill_page(0, 0x01)));
    let ps = a.page_size();
    a.release(0, ps).expect("punch hole");
    fill_alias_page(&a, 0, 0x02);
    let (got, seen) = read_page_0_through_continue(&u, &a);
    assert!(
        got.iter().all(|&b| b == 0x02),
        "the access did not see the re-sent page"
    );
    assert_eq!(seen, vec![(PagefaultFlags::MINOR, a.page(0) as u64)]);
}
