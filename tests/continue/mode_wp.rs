// CONTINUE on ranges registered MINOR and WP: UFFDIO_CONTINUE_MODE_WP and
// what a plain CONTINUE maps there. Included by continue.rs.

#[apply(file_mem)]
fn continue_mode_wp_maps_page_write_protected(#[case] mem: MemType) {
    let mode = RegisterMode::MINOR | RegisterMode::WP;
    require_mode!(mem, mode);
    require_behaviour!(caps::Behaviour::ContinueModeWp);
    let (area, uffd) = try_skip!(minor_area(mem, 2, mode));
    let ps = area.page_size();
    for i in 0..2 {
        fill_alias(&area, i, pattern(i));
    }
    let r = Faulter::read(area.page(1) + 5);
    assert_eq!(next_pagefault(&uffd), (PagefaultFlags::MINOR, area.page(1)));
    flip_alias(&area, 1);
    assert_eq!(uffd.r#continue(area.page(1), ps, ContinueMode::WP), Ok(ps as i64));
    assert_eq!(
        uffd.r#continue(area.page(1), ps, ContinueMode::WP),
        failed(Errno::EEXIST)
    );
    assert_eq!(r.join(), !pattern(1)(5));
    assert_eq!(wp_present(area.page(1)), PM_UFFD_WP | PM_PRESENT);
    // Mapped protected: the first write is a WP fault, not a minor one.
    let w = blocked_wp_writer(&uffd, area.page(1), 6, 0x5c);
    uffd.writeprotect(area.page(1), ps, WriteprotectMode::empty()).unwrap();
    assert_eq!(w.join(), 0x5c);
    let mut want = expected(&area, |o| !pattern(1)(o));
    want[6] = 0x5c;
    assert_eq!(area.read_page(1), want);
    assert!(!pagemap::is_uffd_wp(area.page(1)));
    // Page 0, never continued, still faults MINOR.
    let r0 = Faulter::read(area.page(0));
    assert_eq!(next_pagefault(&uffd), (PagefaultFlags::MINOR, area.page(0)));
    uffd.r#continue(area.page(0), ps, ContinueMode::empty()).unwrap();
    assert_eq!(r0.join(), pattern(0)(0));
    assert_no_event(&uffd);
}

#[apply(file_mem)]
fn continue_without_mode_wp_on_minor_wp_range_maps_writable(#[case] mem: MemType) {
    let mode = RegisterMode::MINOR | RegisterMode::WP;
    require_mode!(mem, mode);
    let (area, uffd) = try_skip!(minor_area(mem, 1, mode));
    fill_alias(&area, 0, |_| 3);
    uffd.r#continue(area.addr(), area.page_size(), ContinueMode::empty())
        .unwrap();
    assert!(!pagemap::is_uffd_wp(area.page(0)));
    assert_write_completes(area.page(0), 4);
    assert_no_event(&uffd);
}

#[apply(file_mem)]
fn continue_mode_wp_without_wp_registration_fails_einval(#[case] mem: MemType) {
    require_mode!(mem, RegisterMode::MINOR);
    require_behaviour!(caps::Behaviour::ContinueModeWp);
    let (area, uffd) = try_skip!(minor_area(mem, 1, RegisterMode::MINOR));
    fill_alias(&area, 0, |_| 3);
    assert_continue_refused(&uffd, &area, area.page_size(), ContinueMode::WP, Errno::EINVAL);
}
