//! UFFD_FEATURE_WP_UNPOPULATED: write-protecting anonymous memory that is
//! not populated yet installs PTE markers, so the first write still faults.

mod common;
use common::*;
use faulter::assert_no_event;
use nix::sys::mman::{MmapAdvise, madvise};
use pagemap::{PM_PRESENT, PM_UFFD_WP};

const WP: WriteprotectMode = WriteprotectMode::WP;
const UNPROTECT: WriteprotectMode = WriteprotectMode::empty();

const MARKER_FEATURES: Features = Features::PAGEFAULT_FLAG_WP.union(Features::WP_UNPOPULATED);

/// An unpopulated anon area registered WP on a uffd with WP_UNPOPULATED.
/// Err is the SKIP reason: the features first, then the memory type.
fn marker_area(mem: MemType, npages: usize) -> Result<(Area, Uffd), String> {
    let missing = caps::caps().missing(MARKER_FEATURES);
    if !missing.is_empty() {
        return Err(format!("kernel lacks {}", missing.join(", ")));
    }
    testing::register_support(mem, RegisterMode::WP)?;
    let area = testing::area(mem, npages)?;
    let uffd = testing::open_uffd(MARKER_FEATURES)?;
    uffd.register(area.addr(), area.len(), RegisterMode::WP)
        .expect("UFFDIO_REGISTER(WP)");
    Ok((area, uffd))
}

/// [`marker_area`], write-protected whole: a WP marker on every page.
fn protected_marker_area(mem: MemType, npages: usize) -> Result<(Area, Uffd), String> {
    let (area, uffd) = marker_area(mem, npages)?;
    uffd.writeprotect(area.addr(), area.len(), WP).unwrap();
    Ok((area, uffd))
}

fn dontneed(addr: usize, len: usize) {
    // SAFETY: the range is one of our areas' pages.
    unsafe {
        madvise(
            std::ptr::NonNull::new(addr as *mut _).unwrap(),
            len,
            MmapAdvise::MADV_DONTNEED,
        )
    }
    .expect("MADV_DONTNEED");
}

#[apply(anon_mem)]
fn protect_unpopulated_page_installs_marker(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(marker_area(mem, 2));
    let ps = area.page_size();
    assert_eq!(wp_present(area.page(0)), 0);
    uffd.writeprotect(area.page(0), ps, WP).unwrap();
    assert_eq!(wp_present(area.page(0)), PM_UFFD_WP, "marker: protected, not present");
    assert_eq!(wp_present(area.page(1)), 0, "the page outside the range stays empty");
}

#[apply(anon_mem)]
fn unprotect_clears_marker(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(protected_marker_area(mem, 1));
    let ps = area.page_size();
    assert_eq!(wp_present(area.page(0)), PM_UFFD_WP);
    uffd.writeprotect(area.page(0), ps, UNPROTECT).unwrap();
    assert_eq!(wp_present(area.page(0)), 0);
    // No marker left: the first write allocates without a message.
    assert_write_completes(area.page(0), 0x21);
    assert_no_event(&uffd);
}

#[apply(anon_mem)]
fn dontneed_zaps_marker(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(protected_marker_area(mem, 1));
    let ps = area.page_size();
    assert_eq!(wp_present(area.page(0)), PM_UFFD_WP);
    dontneed(area.page(0), ps);
    assert_eq!(wp_present(area.page(0)), 0, "MADV_DONTNEED on anon drops the marker");
    assert_write_completes(area.page(0), 0x22);
    assert_eq!(wp_present(area.page(0)), PM_PRESENT);
    assert_no_event(&uffd);
}

#[apply(anon_mem)]
fn dontneed_drops_protection_of_populated_page(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(marker_area(mem, 1));
    let ps = area.page_size();
    area.fill_page(0, 0x5);
    uffd.writeprotect(area.page(0), ps, WP).unwrap();
    assert_eq!(wp_present(area.page(0)), PM_UFFD_WP | PM_PRESENT);
    // Zapping anon memory means dropping everything, the WP bit too
    // (zap_install_uffd_wp_if_needed leaves anon VMAs alone).
    dontneed(area.page(0), ps);
    assert_eq!(wp_present(area.page(0)), 0);
    assert_write_completes(area.page(0) + 1, 0x23);
    let mut want = vec![0; ps];
    want[1] = 0x23;
    assert_eq!(area.read_page(0), want, "a zapped anon page comes back zero-filled");
    assert_no_event(&uffd);
}

#[apply(anon_mem)]
fn write_to_marker_faults_and_clears_after_resolve(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(protected_marker_area(mem, 2));
    let ps = area.page_size();
    let w = blocked_wp_writer(&uffd, area.page(1), 17, 0x24);
    uffd.writeprotect(area.page(1), ps, UNPROTECT).unwrap();
    assert_eq!(w.join(), 0x24);
    assert_eq!(wp_present(area.page(1)), PM_PRESENT, "resolved: present, not protected");
    let mut want = vec![0; ps];
    want[17] = 0x24;
    assert_eq!(area.read_page(1), want);
    assert_eq!(wp_present(area.page(0)), PM_UFFD_WP, "the other marker is untouched");
    assert_no_event(&uffd);
}

#[apply(anon_mem)]
fn read_of_marker_reads_zero_and_keeps_protection(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(protected_marker_area(mem, 1));
    let ps = area.page_size();
    assert_read_completes(area.page(0) + 3, 0);
    assert_no_event(&uffd);
    // The read maps the zero page with the WP bit carried over.
    assert_eq!(wp_present(area.page(0)), PM_UFFD_WP | PM_PRESENT);
    let w = wp_write_fault(&uffd, area.page(0), 0, 0x25);
    uffd.writeprotect(area.page(0), ps, UNPROTECT).unwrap();
    assert_eq!(w.join(), 0x25);
    assert_eq!(testing::read_byte(area.page(0)), 0x25);
    dontneed(area.page(0), ps);
    assert_eq!(wp_present(area.page(0)), 0);
}

#[apply(anon_mem)]
fn protect_range_mixing_populated_and_empty_pages(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(marker_area(mem, 4));
    let ps = area.page_size();
    area.fill_page(0, 0x31);
    area.fill_page(2, 0x33);
    // On anon-thp the first write may populate a whole THP, pages 1 and 3
    // included: what was present before decides what is after.
    let before: Vec<u64> = (0..4).map(|i| wp_present(area.page(i))).collect();
    if mem == MemType::Anon {
        assert_eq!(before, [PM_PRESENT, 0, PM_PRESENT, 0]);
    }
    uffd.writeprotect(area.addr(), 4 * ps, WP).unwrap();
    for (i, b) in before.iter().enumerate() {
        assert_eq!(wp_present(area.page(i)), PM_UFFD_WP | b, "page {i}");
    }
    // Both kinds fault on write, populated or not.
    for (i, byte) in [(1, 0x41), (2, 0x42)] {
        let w = wp_write_fault(&uffd, area.page(i), 0, byte);
        uffd.writeprotect(area.page(i), ps, UNPROTECT).unwrap();
        assert_eq!(w.join(), byte);
    }
    assert_eq!(testing::read_byte(area.page(0)), 0x31);
    assert_eq!(testing::read_byte(area.page(1)), 0x41);
    assert_eq!(testing::read_byte(area.page(2)), 0x42);
    assert_eq!(testing::read_byte(area.page(3)), 0);
}

#[apply(anon_mem)]
fn unregister_removes_markers(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(protected_marker_area(mem, 1));
    assert_eq!(wp_present(area.page(0)), PM_UFFD_WP);
    uffd.unregister(area.addr(), area.len()).unwrap();
    assert_eq!(wp_present(area.page(0)), 0);
    assert_write_completes(area.page(0), 0x26);
    assert_no_event(&uffd);
}

#[apply(anon_mem)]
fn without_feature_unpopulated_pages_get_no_marker(#[case] mem: MemType) {
    // The control: the same calls on a uffd without WP_UNPOPULATED.
    require_mode!(mem, RegisterMode::WP);
    let (area, _uffd) = try_skip!(protected_area(mem, 1, RegisterMode::WP, Features::PAGEFAULT_FLAG_WP));
    assert_eq!(wp_present(area.page(0)), 0);
}
