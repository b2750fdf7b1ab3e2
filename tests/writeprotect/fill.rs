// Protection that comes with a page: COPY with MODE_WP, and the markers
// WP leaves on pages not yet populated. Included by writeprotect.rs.

#[apply(all_mem)]
fn copy_mode_wp_installs_protected_page(#[case] mem: MemType) {
    let mode = RegisterMode::MISSING | RegisterMode::WP;
    require_mode!(mem, mode);
    let area = try_area!(Area::new(mem, 2));
    let ps = area.page_size();
    let uffd = try_skip!(testing::open_uffd(caps::features_for(mem, RegisterMode::WP)));
    uffd.register(area.addr(), area.len(), mode).unwrap();
    let src = testing::Buf::pattern(ps, |i| (i % 251) as u8);
    assert_eq!(uffd.copy(area.page(1), src.addr(), ps, CopyMode::WP), Ok(ps as i64));
    let e = pagemap::entry(area.page(1)).unwrap();
    assert_eq!(e & (PM_UFFD_WP | PM_PRESENT), PM_UFFD_WP | PM_PRESENT, "{e:#x}");
    // Reads see the copied data without a fault.
    let r = Faulter::read(area.page(1) + 7);
    assert_eq!(r.settle(), State::Done);
    assert_eq!(r.join(), 7);
    assert_eq!(area.read_page(1), src.bytes(ps));
    assert_no_event(&uffd);
    // A write faults WP until un-protected.
    let w = Faulter::write(area.page(1) + 9, 0xee);
    assert_eq!(
        next_pagefault(&uffd),
        (PagefaultFlags::WP | PagefaultFlags::WRITE, area.page(1))
    );
    assert_eq!(w.settle(), State::Blocked);
    uffd.writeprotect(area.page(1), ps, UNPROTECT).unwrap();
    assert_eq!(w.join(), 0xee);
    let mut want = src.bytes(ps);
    want[9] = 0xee;
    assert_eq!(area.read_page(1), want);
}

#[apply(all_mem)]
fn copy_without_mode_wp_installs_writable_page(#[case] mem: MemType) {
    let mode = RegisterMode::MISSING | RegisterMode::WP;
    require_mode!(mem, mode);
    let area = try_area!(Area::new(mem, 1));
    let ps = area.page_size();
    let uffd = try_skip!(testing::open_uffd(caps::features_for(mem, RegisterMode::WP)));
    uffd.register(area.addr(), area.len(), mode).unwrap();
    let src = testing::Buf::filled(ps, 0x3c);
    assert_eq!(
        uffd.copy(area.page(0), src.addr(), ps, CopyMode::empty()),
        Ok(ps as i64)
    );
    assert!(!wp_bit(area.page(0)));
    let w = Faulter::write(area.page(0), 0x3d);
    assert_eq!(w.settle(), State::Done);
    assert_eq!(w.join(), 0x3d);
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
    let area = try_area!(Area::new(mem, 2));
    let uffd = try_skip!(testing::open_uffd(caps::features_for(mem, RegisterMode::WP)));
    uffd.register(area.addr(), area.len(), RegisterMode::WP).unwrap();
    uffd.writeprotect(area.addr(), area.len(), WP).unwrap();
    for i in 0..2 {
        let e = pagemap::entry(area.page(i)).unwrap();
        assert_eq!(e & (PM_UFFD_WP | PM_PRESENT), PM_UFFD_WP, "page {i}: {e:#x}");
    }
    // The first write to the marked page is a WP fault.
    let w = Faulter::write(area.page(1) + 5, 0x42);
    assert_eq!(
        next_pagefault(&uffd),
        (PagefaultFlags::WP | PagefaultFlags::WRITE, area.page(1))
    );
    assert_eq!(w.settle(), State::Blocked);
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
    let area = try_area!(Area::new(mem, 1));
    let uffd = try_skip!(testing::open_uffd(caps::features_for(mem, RegisterMode::WP)));
    uffd.register(area.addr(), area.len(), RegisterMode::WP).unwrap();
    uffd.writeprotect(area.addr(), area.len(), WP).unwrap();
    let r = Faulter::read(area.page(0));
    assert_eq!(r.settle(), State::Done);
    assert_eq!(r.join(), 0);
    assert_no_event(&uffd);
    // The read fault replaced the marker with a protected mapping.
    let e = pagemap::entry(area.page(0)).unwrap();
    assert_eq!(e & (PM_UFFD_WP | PM_PRESENT), PM_UFFD_WP | PM_PRESENT, "{e:#x}");
    let w = Faulter::write(area.page(0), 1);
    assert_eq!(
        next_pagefault(&uffd),
        (PagefaultFlags::WP | PagefaultFlags::WRITE, area.page(0))
    );
    uffd.writeprotect(area.addr(), area.len(), UNPROTECT).unwrap();
    assert_eq!(w.join(), 1);
}

#[apply(anon_mem)]
fn protect_unpopulated_anon_page_is_noop_without_wp_unpopulated(#[case] mem: MemType) {
    // Anon uses markers only when WP_UNPOPULATED was asked for; without it
    // there is nothing to protect, and the first write allocates freely.
    require_mode!(mem, RegisterMode::WP);
    let area = try_area!(Area::new(mem, 1));
    let uffd = try_skip!(testing::open_uffd(Features::PAGEFAULT_FLAG_WP));
    uffd.register(area.addr(), area.len(), RegisterMode::WP).unwrap();
    uffd.writeprotect(area.addr(), area.len(), WP).unwrap();
    assert_eq!(pagemap::entry(area.page(0)).unwrap() & (PM_UFFD_WP | PM_PRESENT), 0);
    let w = Faulter::write(area.page(0), 0x4b);
    assert_eq!(w.settle(), State::Done);
    assert_eq!(w.join(), 0x4b);
    assert_no_event(&uffd);
    assert!(!wp_bit(area.page(0)));
}

#[apply(all_mem)]
fn copy_fills_a_page_holding_only_a_wp_marker(#[case] mem: MemType) {
    // With MISSING|WP a protected but unpopulated page holds a PTE marker;
    // an access to it is still a MISSING fault, and COPY may overwrite the
    // marker (pte_none_mostly): the protection goes unless MODE_WP says so.
    let mode = RegisterMode::MISSING | RegisterMode::WP;
    require_mode!(mem, mode);
    let mut features = caps::features_for(mem, RegisterMode::WP);
    if mem.is_anon() {
        require_features!(Features::WP_UNPOPULATED);
        features |= Features::WP_UNPOPULATED;
    }
    let area = try_area!(Area::new(mem, 2));
    let ps = area.page_size();
    let uffd = try_skip!(testing::open_uffd(features));
    uffd.register(area.addr(), area.len(), mode).unwrap();
    uffd.writeprotect(area.addr(), 2 * ps, WP).unwrap();
    for i in 0..2 {
        let e = pagemap::entry(area.page(i)).unwrap();
        assert_eq!(e & (PM_UFFD_WP | PM_PRESENT), PM_UFFD_WP, "page {i} marker: {e:#x}");
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
    let w = Faulter::write(area.page(0), 0x5f);
    assert_eq!(w.settle(), State::Done);
    assert_eq!(w.join(), 0x5f);
    // MODE_WP keeps the page protected.
    assert_eq!(uffd.copy(area.page(1), src.addr(), ps, CopyMode::WP), Ok(ps as i64));
    let e = pagemap::entry(area.page(1)).unwrap();
    assert_eq!(e & (PM_UFFD_WP | PM_PRESENT), PM_UFFD_WP | PM_PRESENT, "{e:#x}");
    assert_no_event(&uffd);
}

#[apply(all_mem)]
fn wp_marker_pagemap_encoding(#[case] mem: MemType) {
    // How /proc/pid/pagemap shows a WP marker on an unpopulated page:
    // a PTE marker is a swap-format entry, so pte_to_pagemap_entry adds
    // PM_SWAP; pagemap_hugetlb_range reports only PM_UFFD_WP. No page
    // behind either, so never PM_PRESENT or PM_FILE.
    require_mode!(mem, RegisterMode::WP);
    let mut features = caps::features_for(mem, RegisterMode::WP);
    if mem.is_anon() {
        require_features!(Features::WP_UNPOPULATED);
        features |= Features::WP_UNPOPULATED;
    }
    let area = try_area!(Area::new(mem, 1));
    let uffd = try_skip!(testing::open_uffd(features));
    uffd.register(area.addr(), area.len(), RegisterMode::WP).unwrap();
    uffd.writeprotect(area.addr(), area.len(), WP).unwrap();
    let mask = PM_UFFD_WP | pagemap::PM_SWAP | PM_PRESENT | pagemap::PM_FILE;
    let want = if mem.is_hugetlb() {
        PM_UFFD_WP
    } else {
        PM_UFFD_WP | pagemap::PM_SWAP
    };
    let e = pagemap::entry(area.page(0)).unwrap();
    assert_eq!(e & mask, want, "entry {e:#x}");
}
