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

pub mod boundary;
pub mod ioctls;
pub mod signal;
pub mod wp;
pub use ioctls::*;
pub use signal::*;
pub use wp::*;

/// `addr` as the pointer nix's mman calls take.
pub fn ptr(addr: usize) -> std::ptr::NonNull<std::ffi::c_void> {
    std::ptr::NonNull::new(addr as *mut std::ffi::c_void).expect("non-null address")
}

/// Fills page `i` of `area`'s alias view with `byte`: the page is then in
/// the page cache, and not mapped in the registered view (a minor fault).
pub fn fill_alias_page(area: &Area, i: usize, byte: u8) {
    // SAFETY: the alias is the area's own shared view of its file, and
    // page `i` of it is writable.
    unsafe { std::ptr::write_bytes(area.alias_page(i) as *mut u8, byte, area.page_size()) };
}

/// UFFDIO_COPY of a page of `byte` into the missing page `i` of `area`,
/// registered on `uffd`: the whole page copied, and read back.
#[track_caller]
pub fn copy_page(uffd: &Uffd, area: &Area, i: usize, byte: u8) {
    let ps = area.page_size();
    let src = testing::Buf::filled(ps, byte);
    assert_eq!(
        uffd.copy(area.page(i), src.addr(), ps, CopyMode::empty()),
        Ok(ps as i64)
    );
    assert_eq!(area.read_page(i), vec![byte; ps]);
}

/// Write-protects page `i` of `area`, registered WP on `uffd` and not
/// populated, and checks a uffd-wp marker now stands in its empty PTE.
#[track_caller]
pub fn install_wp_marker(uffd: &Uffd, area: &Area, i: usize) {
    uffd.writeprotect(area.page(i), area.page_size(), WriteprotectMode::WP)
        .unwrap();
    assert_ne!(
        pagemap::entry(area.page(i)).unwrap() & pagemap::PM_UFFD_WP,
        0,
        "marker installed"
    );
}

/// A fill (`fill(start, len)`) finds no registered VMA, and fails ENOENT:
/// in `other`, an unregistered area; over a range running past `area`'s
/// registered VMA; and in `area` once `uffd` unregistered it.
#[track_caller]
pub fn assert_fills_outside_registration_fail(
    uffd: &Uffd,
    area: &Area,
    other: &Area,
    fill: impl Fn(usize, usize) -> uffd::Progress,
) {
    let enoent = testing::progress::failed(nix::errno::Errno::ENOENT);
    let ps = area.page_size();
    assert_eq!(fill(other.page(0), ps), enoent, "an unregistered area");
    let last = area.page(area.npages() - 1);
    assert_eq!(fill(last, 2 * ps), enoent, "a range past the registered VMA");
    uffd.unregister(area.addr(), area.len()).unwrap();
    assert_eq!(fill(area.page(0), ps), enoent, "an area since unregistered");
}

/// Starts a reader of the missing page at `addr` and reads its fault
/// message: the reader then sleeps in the uffd until something resolves or
/// wakes it.
#[track_caller]
pub fn blocked_reader(uffd: &Uffd, addr: usize) -> faulter::Faulter {
    let r = faulter::Faulter::read(addr);
    faulter::next_pagefault(uffd);
    assert_eq!(r.settle(), faulter::State::Blocked);
    r
}

/// Fills page `page` of a not yet registered `area` with `byte`; on
/// anon-thp it then pins the shape instead of leaving it to the THP policy
/// and khugepaged: MADV_COLLAPSE makes the area one PMD-mapped THP (it must
/// run before registration: a uffd-armed range with empty PTEs does not
/// collapse).
pub fn fill_page_pinned(area: &Area, page: usize, byte: u8) {
    area.fill_page(page, byte);
    if area.mem() == MemType::AnonThp {
        testing::thp::collapse_or_fail(area.addr(), area.len());
    }
}

/// Fills all four pages of `area`, whose page 2 the case populated with
/// [`fill_page_pinned`], with `fill(start, len)`: two pages are filled,
/// then the populated one stops the loop, and the ioctl reports the bytes
/// done and fails EAGAIN (a short fill), not EEXIST. On anon-thp the area
/// is one PMD-mapped THP, which mfill_atomic refuses at once
/// (pmd_trans_huge → EEXIST); this then returns false, as there is no
/// partial progress to check.
#[track_caller]
pub fn fill_stops_at_populated_page(area: &Area, fill: impl Fn(usize, usize) -> uffd::Progress) -> bool {
    use nix::errno::Errno;
    let ps = area.page_size();
    if area.mem() == MemType::AnonThp {
        assert_eq!(fill(area.addr(), 4 * ps), testing::progress::failed(Errno::EEXIST));
        return false;
    }
    assert_eq!(
        fill(area.addr(), 4 * ps),
        testing::progress::err(Errno::EAGAIN, 2 * ps as i64)
    );
    true
}

/// Guards the waits below against hangs; no case measures time.
pub const HANG_GUARD: std::time::Duration = std::time::Duration::from_secs(20);

/// Ok when UFFDIO_API offers every feature in `features`; Err is the SKIP
/// reason, worded as `require_features!` words it.
pub fn offers(features: Features) -> Result<(), String> {
    let missing = caps::caps().missing(features);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("kernel lacks {}", missing.join(", ")))
    }
}

/// An unregistered area of `npages` of `mem`, for a case that registers it
/// in `mode` on a uffd offering `features`. Err is the SKIP reason, checked
/// in the cases' order: a missing feature, then the memory type, then the
/// area itself.
pub fn area_to_register(mem: MemType, npages: usize, features: Features, mode: RegisterMode) -> Result<Area, String> {
    offers(features)?;
    testing::register_support(mem, mode)?;
    testing::area(mem, npages)
}

/// An area of `npages` of `mem`, `prep`ared, then registered MISSING on a
/// fresh uffd offering `features` ([`testing::registered_area`]). Err is
/// the SKIP reason, checked in the cases' order: a missing feature first,
/// then the memory type.
pub fn registered_missing(
    mem: MemType,
    npages: usize,
    features: Features,
    prep: impl FnOnce(&Area),
) -> Result<(Area, std::sync::Arc<Uffd>), String> {
    offers(features)?;
    testing::registered_area(mem, npages, features, RegisterMode::MISSING, prep)
}

/// [`registered_missing`] with pages of a private hugetlb pool kept free for
/// the forked child, which gets `child_pages` ([`testing::fork_spare`]).
pub fn registered_missing_for_fork(
    mem: MemType,
    (npages, child_pages): (usize, usize),
    features: Features,
    prep: impl FnOnce(&Area),
) -> Result<(Area, std::sync::Arc<Uffd>), String> {
    offers(features)?;
    let spare = testing::fork_spare(mem, child_pages);
    testing::registered_area_with_spare(mem, (npages, spare), features, RegisterMode::MISSING, prep)
}

/// The thread is parked in the event wait: its message is queued, it has
/// not returned, and it sleeps killable (`D`) until the message is read.
#[track_caller]
pub fn assert_parked_in_event<T>(p: &testing::parked::Parked<T>, uffd: &Uffd, what: &str) {
    assert!(
        testing::parked::wait_readable(uffd, HANG_GUARD),
        "{what}: no message queued"
    );
    assert!(!p.is_done(), "{what} returned before its event was read");
    assert_eq!(
        p.wait_state('D', HANG_GUARD),
        Some('D'),
        "{what}: wchan {:?}",
        p.wchan()
    );
}

/// Releases `len` bytes at `at` of a `mem` area in a thread, with the
/// advice that drops that type's pages (`release_advice`), and checks the
/// thread parks in the REMOVE event it queued on `uffd` until it is read.
#[track_caller]
pub fn park_release(mem: MemType, at: usize, len: usize, uffd: &Uffd) -> testing::parked::Parked<nix::Result<()>> {
    let advice = testing::mm::release_advice(mem);
    let p = testing::parked::park(move || testing::mm::madvise(at, len, advice));
    assert_parked_in_event(&p, uffd, "madvise");
    p
}

/// Moves all of `area` with mremap(MREMAP_FIXED) to a fresh reservation, in
/// a thread that parks in the REMAP event it queued on `uffd`. Returns the
/// thread (its result is the new address) and the reservation moved to.
#[track_caller]
pub fn park_fixed_mremap(
    area: &Area,
    uffd: &Uffd,
) -> (testing::parked::Parked<nix::Result<usize>>, testing::mm::Reservation) {
    let (old, len) = (area.addr(), area.len());
    let dest = testing::mm::Reservation::new(len, testing::mm::align_for(area));
    let to = dest.addr;
    let flags = libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED;
    let p = testing::parked::park(move || testing::mm::mremap(old, len, len, flags, to));
    assert_parked_in_event(&p, uffd, "mremap");
    (p, dest)
}

/// Waits until the thread sleeps in handle_userfault: its fault is queued
/// (or about to be) and it has not returned.
#[track_caller]
pub fn wait_in_fault<T>(p: &testing::parked::Parked<T>) {
    let end = std::time::Instant::now() + HANG_GUARD;
    while !p.wchan().is_some_and(|w| w.contains("handle_userfault")) {
        assert!(!p.is_done(), "the access completed");
        assert!(
            std::time::Instant::now() < end,
            "never reached handle_userfault: {:?}",
            p.wchan()
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Waits for the UFFD_EVENT_FORK that a fork of a registered area queues
/// on `uffd`, and returns the child's descriptor it carries.
#[track_caller]
pub fn next_fork_event(uffd: &Uffd) -> Uffd {
    assert!(
        testing::parked::wait_readable(uffd, HANG_GUARD),
        "fork queued no FORK event"
    );
    let Some(Event::Fork { uffd: child }) = uffd.read_event(Some(std::time::Duration::ZERO)).unwrap() else {
        panic!("expected UFFD_EVENT_FORK");
    };
    child
}

/// Each of `bits`, passed as the mode of a resolving ioctl by `call`, is
/// refused EINVAL before anything is done (the progress field keeps 0).
#[track_caller]
pub fn assert_modes_rejected(bits: &[u64], call: impl Fn(u64) -> uffd::Progress) {
    for &bits in bits {
        assert_eq!(
            call(bits),
            testing::progress::rejected(nix::errno::Errno::EINVAL),
            "mode {bits:#x}"
        );
    }
}

/// `validate_range` refuses each of these (start, len) over `area` with
/// EINVAL before a fill ioctl looks at a VMA: starts off a base page, lengths
/// of zero or not a base-page multiple, and a range that wraps to 0.
#[track_caller]
pub fn assert_ranges_rejected(area: &Area, call: impl Fn(usize, usize) -> uffd::Progress) {
    let (ps, bp) = (area.page_size(), mem::base_page_size());
    for (start, len) in [
        (area.addr() + 1, ps),
        (area.addr() + bp / 2, ps),
        (area.addr(), 0),
        (area.addr(), 1),
        (area.addr(), bp + 1),
        (area.addr(), 0usize.wrapping_sub(area.addr())),
    ] {
        assert_eq!(
            call(start, len),
            testing::progress::rejected(nix::errno::Errno::EINVAL),
            "start {start:#x} len {len:#x}"
        );
    }
}

/// Tests that share their attributes (a case template, serial keys) and
/// differ only in what they pass one helper: the attributes once, in
/// parentheses, then a line per test. Each test keeps its name and doc.
///
/// Only for attributes the runner need not see: it reads a cross-process
/// lock (`#[file_serial]`, `#[serial]` with a key not in
/// `runner::discover::cargo::PROCESS_LOCAL_KEYS`) from the line above one
/// `fn`, so a group here would run such cases at once. Process-local keys
/// (`fork`, `sigusr1`) and `#[parallel]` only order cases within one test
/// process, which `cargo test` still does through the macro.
///
/// ```ignore
/// tests_calling! {
///     (#[apply(all_mem)] #[serial(fork)])
///     /// What it checks.
///     fn name_of_the_test(mem: MemType) => helper(mem, true);
/// }
/// ```
macro_rules! tests_calling {
    (@one ($(#[$attr:meta])*) $(#[$doc:meta])* fn $name:ident($case:ident: $ty:ty) => $call:expr) => {
        $(#[$doc])*
        $(#[$attr])*
        fn $name(#[case] $case: $ty) {
            $call;
        }
    };
    ($attrs:tt $($(#[$doc:meta])* fn $name:ident($case:ident: $ty:ty) => $call:expr;)+) => {
        $(tests_calling!(@one $attrs $(#[$doc])* fn $name($case: $ty) => $call);)+
    };
}
pub(crate) use tests_calling;

/// A memory-type case list: the rstest_reuse template `$name`, with one
/// `#[case::$case(MemType::$ty)]` per `$case($ty)`, so a case reads
/// `<test>::case_N_<case>`.
macro_rules! mem_template {
    ($(#[$doc:meta])* $name:ident: $($case:ident($ty:ident)),+ $(,)?) => {
        $(#[$doc])*
        #[template]
        #[rstest]
        $(#[case::$case(MemType::$ty)])+
        pub fn $name(#[case] mem: MemType) {}
    };
}

// Every list with the hugetlb types has their 1 GiB twins as well: a run
// makes 1 GiB areas only when `--mem` asks for them (each clears and fills
// whole GiB pages), and the runner reports them SKIP at once otherwise.

mem_template! {
    /// Every memory type (guest-memfd skips where the kernel cannot serve it).
    all_mem: anon(Anon), shmem(Shmem), shmem_private(ShmemPrivate), hugetlb(Hugetlb),
        hugetlb_private(HugetlbPrivate), anon_thp(AnonThp), guest_memfd(GuestMemfd),
        hugetlb_1g(Hugetlb1g), hugetlb_1g_private(Hugetlb1gPrivate)
}

mem_template! {
    /// The five types the kernel's unit tests run on (and hugetlb on 1 GiB pages).
    selftest_mem: anon(Anon), shmem(Shmem), shmem_private(ShmemPrivate), hugetlb(Hugetlb),
        hugetlb_private(HugetlbPrivate), hugetlb_1g(Hugetlb1g), hugetlb_1g_private(Hugetlb1gPrivate)
}

mem_template! {
    /// Types with a file behind them (an alias view; MINOR mode).
    /// guest-memfd is here because every shmem case must also run on it.
    file_mem: shmem(Shmem), shmem_private(ShmemPrivate), hugetlb(Hugetlb),
        hugetlb_private(HugetlbPrivate), guest_memfd(GuestMemfd), hugetlb_1g(Hugetlb1g),
        hugetlb_1g_private(Hugetlb1gPrivate)
}

mem_template! {
    /// Anonymous types (MOVE).
    anon_mem: anon(Anon), anon_thp(AnonThp)
}

mem_template! {
    /// The shared types with a file behind them: a copy lands in the page
    /// cache, and MADV_REMOVE (which private mappings refuse) punches holes.
    shared_file_mem: shmem(Shmem), hugetlb(Hugetlb), hugetlb_1g(Hugetlb1g)
}

mem_template! {
    /// The types on base pages or THPs: those reclaim can swap out and whose
    /// mappings may grow (hugetlb refuses both).
    small_page_mem: anon(Anon), shmem(Shmem), shmem_private(ShmemPrivate), anon_thp(AnonThp)
}

mem_template! {
    /// The hugetlb types (huge-page alignment rules), on both page sizes.
    hugetlb_mem: hugetlb(Hugetlb), hugetlb_private(HugetlbPrivate), hugetlb_1g(Hugetlb1g),
        hugetlb_1g_private(Hugetlb1gPrivate)
}

/// THP and mTHP sizes in kB, x86_64 with 4K pages: orders 1 to 9; a case
/// reads `<test>::case_N_k<size>`.
#[template]
#[rstest]
#[case::k8(8)]
#[case::k16(16)]
#[case::k32(32)]
#[case::k64(64)]
#[case::k128(128)]
#[case::k256(256)]
#[case::k512(512)]
#[case::k1024(1024)]
#[case::k2048(2048)]
pub fn thp_sizes(#[case] kb: usize) {}

/// The mTHP sizes alone, below the PMD's (orders 1 to 8), for behaviour of
/// `alloc_anon_folio`: a PMD-sized fault takes the huge-PMD path instead.
#[template]
#[rstest]
#[case::k8(8)]
#[case::k16(16)]
#[case::k32(32)]
#[case::k64(64)]
#[case::k128(128)]
#[case::k256(256)]
#[case::k512(512)]
#[case::k1024(1024)]
pub fn mthp_sizes(#[case] kb: usize) {}
