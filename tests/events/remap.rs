// UFFD_EVENT_REMAP. Included by events.rs.

#[apply(all_mem)]
fn remap_event_for_a_fixed_move(#[case] mem: MemType) {
    let (mut area, uffd) = try_skip!(registered_missing(mem, 2, Features::EVENT_REMAP, |_| {}));
    let (ps, len, old) = (area.page_size(), area.len(), area.addr());
    let (p, dest) = park_fixed_mremap(&area, &uffd);
    let to = dest.addr;
    assert_eq!(expect_remap(next_event(&uffd)), (old as u64, to as u64, len as u64));
    assert_eq!(p.join(), Ok(to));
    area.moved_to(to);
    dest.give_away();
    // The registration moved with the range: a fault there is reported
    // with the new address.
    let at = area.page(1);
    let f = park(move || read_byte(at));
    assert_parked_in_fault(&f, &uffd);
    assert_eq!(expect_fault(next_event(&uffd)).1, at as u64);
    uffd.copy(at, Buf::filled(ps, 0x42).addr(), ps, CopyMode::empty())
        .unwrap();
    assert_eq!(f.join(), 0x42);
}

#[apply(small_page_mem)]
fn remap_event_for_a_growing_move_carries_the_old_length(#[case] mem: MemType) {
    require_features!(Features::EVENT_REMAP);
    require_mode!(mem, RegisterMode::MISSING);
    let mut area = try_area!(Area::new(mem, 1));
    let (ps, len) = (area.page_size(), area.len());
    // Put the area right below a reservation, so it cannot grow in place.
    let mut r = Reservation::new(2 * len, align_for(&area));
    let at = r.addr;
    assert_eq!(
        mremap(area.addr(), len, len, libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED, at),
        Ok(at)
    );
    area.moved_to(at);
    r.addr += len;
    r.len -= len;
    let uffd = try_skip!(open(Features::EVENT_REMAP));
    register(&uffd, &area, RegisterMode::MISSING);
    let p = park(move || mremap(at, len, len + ps, libc::MREMAP_MAYMOVE, 0));
    assert_parked_in_event(&p, &uffd, "mremap()");
    let (from, to, l) = expect_remap(next_event(&uffd));
    let got = p.join().expect("growing mremap");
    area.moved_to(got);
    assert_ne!(got, at, "the mapping had to move");
    assert_eq!(
        (from, to, l),
        (at as u64, got as u64, len as u64),
        "len is the old length"
    );
    // The moved range, grown, is registered: its first page faults.
    let f = park(move || read_byte(got));
    assert_parked_in_fault(&f, &uffd);
    assert_eq!(expect_fault(next_event(&uffd)).1, got as u64);
    drop(uffd);
    assert_eq!(f.join(), 0, "closing the uffd let the fault fill a zero page");
    munmap(got + len, ps).unwrap();
}

#[apply(hugetlb_mem)]
fn growing_hugetlb_mremap_fails_einval_without_event(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(registered_missing(mem, 2, Features::EVENT_REMAP, |_| {}));
    let ps = area.page_size();
    assert_eq!(
        mremap(area.page(0), ps, 2 * ps, libc::MREMAP_MAYMOVE, 0),
        Err(Errno::EINVAL)
    );
    assert_no_event(&uffd, "refused growing mremap");
}

#[apply(all_mem)]
fn mremap_without_event_remap_unregisters_the_moved_range(#[case] mem: MemType) {
    require_mode!(mem, RegisterMode::MISSING);
    let mut area = try_area!(Area::new(mem, 1));
    let (len, old) = (area.len(), area.addr());
    let dest = Reservation::new(len, align_for(&area));
    // EVENT_UNMAP would report the source range (see below): leave it out.
    let uffd = try_skip!(open(Features::EVENT_REMOVE));
    register(&uffd, &area, RegisterMode::MISSING);
    let to = dest.addr;
    // Nothing to wait for: mremap returns without a message.
    assert_eq!(
        mremap(old, len, len, libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED, to),
        Ok(to)
    );
    area.moved_to(to);
    dest.give_away();
    assert_no_event(&uffd, "mremap without EVENT_REMAP");
    let p = park(move || read_byte(to));
    assert!(settle(&p, &uffd), "the moved range must no longer be registered");
    assert_eq!(p.join(), 0);
    assert_no_event(&uffd, "a read of the moved range");
}

#[test]
fn remap_with_event_unmap_also_reports_the_old_range_unmapped() {
    // mremap queues REMAP, then the munmap of the source range queues
    // UNMAP: the old VMA still carries the context (mm/mremap.c move_vma).
    let f = Features::EVENT_REMAP | Features::EVENT_UNMAP;
    require_features!(f);
    let mut area = try_area!(Area::new(MemType::Anon, 4));
    let (len, old) = (area.len(), area.addr());
    let dest = Reservation::new(len, area.page_size());
    let uffd = try_skip!(open(f));
    register(&uffd, &area, RegisterMode::MISSING);
    let to = dest.addr;
    let p = park(move || mremap(old, len, len, libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED, to));
    assert_parked_in_event(&p, &uffd, "mremap()");
    let first = next_event(&uffd);
    let mut seen = vec![format!("{first:?}")];
    if let Event::Remap { from, to: t, len: l } = first {
        assert_eq!((from, t, l), (old as u64, to as u64, len as u64));
        assert_parked_in_event(&p, &uffd, "mremap() after REMAP");
        let second = next_event(&uffd);
        seen.push(format!("{second:?}"));
        assert_eq!(expect_unmap(second), (old as u64, (old + len) as u64), "{seen:?}");
    } else {
        panic!("first message of a moving mremap: {seen:?}");
    }
    assert_eq!(p.join(), Ok(to));
    area.moved_to(to);
    dest.give_away();
}

#[test]
fn dontunmap_move_reports_remap_and_keeps_the_old_range_registered() {
    require_features!(Features::EVENT_REMAP);
    let area = try_area!(Area::new(MemType::Anon, 2));
    area.fill_page(0, 0x12);
    let (old, len, ps) = (area.addr(), area.len(), area.page_size());
    let uffd = try_skip!(open(Features::EVENT_REMAP));
    register(&uffd, &area, RegisterMode::MISSING);
    let p = park(move || mremap(old, len, len, libc::MREMAP_MAYMOVE | libc::MREMAP_DONTUNMAP, 0));
    assert_parked_in_event(&p, &uffd, "mremap(DONTUNMAP)");
    let (from, to, l) = expect_remap(next_event(&uffd));
    let new = p.join().expect("mremap(DONTUNMAP)");
    assert_eq!((from, to, l), (old as u64, new as u64, len as u64));
    // The page moved; the old range stays mapped, empty, and registered:
    // touching it is a MISSING fault at the old address.
    assert_eq!(read_byte(new), 0x12);
    let f = park(move || read_byte(old));
    assert_parked_in_fault(&f, &uffd);
    assert_eq!(
        expect_fault(next_event(&uffd)),
        (PagefaultFlags::empty(), old as u64, 0)
    );
    uffd.copy(old, Buf::filled(ps, 0x34).addr(), ps, CopyMode::empty())
        .unwrap();
    assert_eq!(f.join(), 0x34);
    drop(uffd);
    munmap(new, len).unwrap();
}

#[test]
fn fixed_move_onto_a_registered_range_reports_unmap_remap_unmap_in_order() {
    // mremap(MAYMOVE|FIXED) first unmaps the destination (uf_unmap_early),
    // then moves (REMAP), then unmaps the source: mm/mremap.c completes the
    // three lists in that order.
    let f = Features::EVENT_REMAP | Features::EVENT_UNMAP;
    require_features!(f);
    let mut a = try_area!(Area::new(MemType::Anon, 2));
    let mut b = try_area!(Area::new(MemType::Anon, 2));
    let uffd = try_skip!(open(f));
    register(&uffd, &a, RegisterMode::MISSING);
    register(&uffd, &b, RegisterMode::MISSING);
    let (from, to, len) = (a.addr(), b.addr(), a.len());
    let p = park(move || mremap(from, len, len, libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED, to));
    let (fr, t, l) = (from as u64, to as u64, len as u64);
    assert_parked_in_event(&p, &uffd, "mremap: destination");
    assert_eq!(expect_unmap(next_event(&uffd)), (t, t + l));
    assert_parked_in_event(&p, &uffd, "mremap: move");
    assert_eq!(expect_remap(next_event(&uffd)), (fr, t, l));
    assert_parked_in_event(&p, &uffd, "mremap: source");
    assert_eq!(expect_unmap(next_event(&uffd)), (fr, fr + l));
    assert_eq!(p.join(), Ok(to));
    assert_no_event(&uffd, "after the three events");
    // b's range now holds a's mapping: only a unmaps it.
    b.truncated_to(0);
    a.moved_to(to);
    drop(uffd);
}

#[apply(hugetlb_mem)]
fn hugetlb_mremap_to_an_unaligned_address_fails_einval_without_event(#[case] mem: MemType) {
    let f = Features::EVENT_REMAP | Features::EVENT_UNMAP;
    require_features!(f);
    require_mode!(mem, RegisterMode::MISSING);
    let area = try_area!(Area::new(mem, 1));
    let (len, ps) = (area.len(), area.page_size());
    let dest = Reservation::new(2 * len, ps);
    let uffd = try_skip!(open(f));
    register(&uffd, &area, RegisterMode::MISSING);
    let to = dest.addr + mem::base_page_size();
    let r = mremap(area.addr(), len, len, libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED, to);
    assert_eq!(r, Err(Errno::EINVAL), "hugetlb needs a huge-page-aligned destination");
    assert_no_event(&uffd, "a refused mremap");
    drop(uffd);
}
