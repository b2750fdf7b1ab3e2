// Protection that comes with a page: COPY with MODE_WP, and the markers
// WP leaves on pages not yet populated. Included by writeprotect.rs.

const MISSING_WP: RegisterMode = RegisterMode::MISSING.union(RegisterMode::WP);

/// `npages` of `mem`, unpopulated, registered MISSING and WP with WP's
/// features: COPY may then fill pages protected or not.
fn missing_wp_area(mem: MemType, npages: usize) -> Result<(Area, Arc<Uffd>), String> {
    let features = caps::features_for(mem, RegisterMode::WP);
    testing::registered_area(mem, npages, features, MISSING_WP, |_| {})
}

/// `npages` of file memory `mem`, unpopulated, registered WP and
/// protected whole: file memory needs no WP_UNPOPULATED for its markers.
fn file_marker_area(mem: MemType, npages: usize) -> Result<(Area, Uffd), String> {
    let features = caps::features_for(mem, RegisterMode::WP);
    protected_area(mem, npages, RegisterMode::WP, features)
}

#[apply(all_mem)]
fn copy_mode_wp_installs_protected_page(#[case] mem: MemType) {
    require_mode!(mem, MISSING_WP);
    let (area, uffd) = try_skip!(missing_wp_area(mem, 2));
    let ps = area.page_size();
    let src = testing::Buf::pattern(ps, |i| (i % 251) as u8);
    assert_eq!(uffd.copy(area.page(1), src.addr(), ps, CopyMode::WP), Ok(ps as i64));
    assert_eq!(wp_present(area.page(1)), PM_UFFD_WP | PM_PRESENT);
    // Reads see the copied data without a fault.
    assert_read_completes(area.page(1) + 7, 7);
    assert_eq!(area.read_page(1), src.bytes(ps));
    assert_no_event(&uffd);
    // A write faults WP until un-protected.
    let w = blocked_wp_writer(&uffd, area.page(1), 9, 0xee);
    uffd.writeprotect(area.page(1), ps, UNPROTECT).unwrap();
    assert_eq!(w.join(), 0xee);
    let mut want = src.bytes(ps);
    want[9] = 0xee;
    assert_eq!(area.read_page(1), want);
}

#[apply(all_mem)]
fn copy_without_mode_wp_installs_writable_page(#[case] mem: MemType) {
    require_mode!(mem, MISSING_WP);
    let (area, uffd) = try_skip!(missing_wp_area(mem, 1));
    let ps = area.page_size();
    let src = testing::Buf::filled(ps, 0x3c);
    assert_eq!(
        uffd.copy(area.page(0), src.addr(), ps, CopyMode::empty()),
        Ok(ps as i64)
    );
    assert!(!wp_bit(area.page(0)));
    assert_write_completes(area.page(0), 0x3d);
    assert_no_event(&uffd);
}

#[apply(all_mem)]
fn copy_mode_wp_without_wp_registration_fails_einval(#[case] mem: MemType) {
    require_mode!(mem, RegisterMode::MISSING);
    let area = try_area!(Area::new(mem, 1));
    let ps = area.page_size();
    let uffd = try_skip!(testing::open_uffd(Features::empty()));
    uffd.register(area.addr(), area.len(), RegisterMode::MISSING).unwrap();
    let src = testing::Buf::filled(ps, 0x3c);
    let err = uffd.copy(area.page(0), src.addr(), ps, CopyMode::WP).unwrap_err();
    assert_eq!(
        err,
        Partial {
            errno: Errno::EINVAL,
            progress: Partial::neg(Errno::EINVAL)
        }
    );
    assert!(!pagemap::is_present(area.page(0)), "a refused COPY mapped the page");
}

#[apply(file_mem)]
fn protect_unpopulated_file_page_installs_marker(#[case] mem: MemType) {
    // File memory always uses PTE markers for uffd-wp, so protection
    // survives on a page that is not mapped yet (WP_HUGETLBFS_SHMEM).
    require_mode!(mem, RegisterMode::WP);
    let (area, uffd) = try_skip!(file_marker_area(mem, 2));
    for i in 0..2 {
        assert_eq!(wp_present(area.page(i)), PM_UFFD_WP, "page {i}");
    }
    // The first write to the marked page is a WP fault.
    let w = blocked_wp_writer(&uffd, area.page(1), 5, 0x42);
    uffd.writeprotect(area.page(1), area.page_size(), UNPROTECT).unwrap();
    assert_eq!(w.join(), 0x42);
    let mut want = vec![0; area.page_size()];
    want[5] = 0x42;
    assert_eq!(area.read_page(1), want);
    assert!(!wp_bit(area.page(1)));
    assert!(wp_bit(area.page(0)), "page 0 keeps its marker");
}

#[apply(file_mem)]
fn read_of_marked_file_page_maps_it_protected(#[case] mem: MemType) {
    require_mode!(mem, RegisterMode::WP);
    let (area, uffd) = try_skip!(file_marker_area(mem, 1));
    assert_read_completes(area.page(0), 0);
    assert_no_event(&uffd);
    // The read fault replaced the marker with a protected mapping.
    assert_eq!(wp_present(area.page(0)), PM_UFFD_WP | PM_PRESENT);
    assert_write_waits_for_unprotect(&uffd, &area, 1);
}

#[apply(anon_mem)]
fn protect_unpopulated_anon_page_is_noop_without_wp_unpopulated(#[case] mem: MemType) {
    // Anon uses markers only when WP_UNPOPULATED was asked for; without it
    // there is nothing to protect, and the first write allocates freely.
    require_mode!(mem, RegisterMode::WP);
    let (area, uffd) = try_skip!(protected_area(mem, 1, RegisterMode::WP, Features::PAGEFAULT_FLAG_WP));
    assert_eq!(wp_present(area.page(0)), 0);
    assert_write_completes(area.page(0), 0x4b);
    assert_no_event(&uffd);
    assert!(!wp_bit(area.page(0)));
}

#[apply(all_mem)]
fn copy_fills_a_page_holding_only_a_wp_marker(#[case] mem: MemType) {
    // With MISSING|WP a protected but unpopulated page holds a PTE marker;
    // an access to it is still a MISSING fault, and COPY may overwrite the
    // marker (pte_none_mostly): the protection goes unless MODE_WP says so.
    require_mode!(mem, MISSING_WP);
    let features = wp_marker_features(mem);
    require_features!(features);
    let (area, uffd) = try_skip!(protected_area(mem, 2, MISSING_WP, features));
    let ps = area.page_size();
    for i in 0..2 {
        assert_eq!(wp_present(area.page(i)), PM_UFFD_WP, "page {i} marker");
    }
    let r = Faulter::read(area.page(0) + 3);
    assert_eq!(next_pagefault(&uffd), (PagefaultFlags::empty(), area.page(0)));
    let src = testing::Buf::filled(ps, 0x5e);
    assert_eq!(
        uffd.copy(area.page(0), src.addr(), ps, CopyMode::empty()),
        Ok(ps as i64)
    );
    assert_eq!(r.join(), 0x5e);
    assert!(
        !wp_bit(area.page(0)),
        "COPY without MODE_WP drops the marker's protection"
    );
    assert_write_completes(area.page(0), 0x5f);
    // MODE_WP keeps the page protected.
    assert_eq!(uffd.copy(area.page(1), src.addr(), ps, CopyMode::WP), Ok(ps as i64));
    assert_eq!(wp_present(area.page(1)), PM_UFFD_WP | PM_PRESENT);
    assert_no_event(&uffd);
}

#[apply(all_mem)]
fn wp_marker_pagemap_encoding(#[case] mem: MemType) {
    // How /proc/pid/pagemap shows a WP marker on an unpopulated page:
    // a PTE marker is a swap-format entry, so pte_to_pagemap_entry adds
    // PM_SWAP; pagemap_hugetlb_range reports only PM_UFFD_WP. No page
    // behind either, so never PM_PRESENT or PM_FILE.
    require_mode!(mem, RegisterMode::WP);
    let features = wp_marker_features(mem);
    require_features!(features);
    let (area, _uffd) = try_skip!(protected_area(mem, 1, RegisterMode::WP, features));
    let mask = PM_UFFD_WP | pagemap::PM_SWAP | PM_PRESENT | pagemap::PM_FILE;
    let want = if mem.is_hugetlb() {
        PM_UFFD_WP
    } else {
        PM_UFFD_WP | pagemap::PM_SWAP
    };
    let e = pagemap::entry(area.page(0)).unwrap();
    assert_eq!(e & mask, want, "entry {e:#x}");
}
