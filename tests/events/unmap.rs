// UFFD_EVENT_UNMAP. Included by events.rs.

/// munmap from `start` to the end of `area` queues one UNMAP carrying that
/// range, and munmap waits until it is read; nothing else is queued after.
/// `area` then ends at `start`.
#[track_caller]
fn munmap_tail_sends_one_unmap(area: &mut Area, uffd: &Uffd, start: usize, after: &str) {
    let end = area.addr() + area.len();
    let p = park(move || munmap(start, end - start));
    assert_parked_in_event(&p, uffd, "munmap");
    assert_eq!(expect_unmap(next_event(uffd)), (start as u64, end as u64));
    assert_eq!(p.join(), Ok(()));
    area.truncated_to(start - area.addr());
    assert_no_event(uffd, after);
}

#[apply(all_mem)]
fn unmap_event_for_munmap(#[case] mem: MemType) {
    let (mut area, uffd) = try_skip!(registered_missing(mem, 4, Features::EVENT_UNMAP, |_| {}));
    let start = area.page(2);
    munmap_tail_sends_one_unmap(&mut area, &uffd, start, "one munmap");
    drop(uffd); // before the area's own munmap, which would queue UNMAP again
}

#[apply(all_mem)]
fn unmap_event_for_a_shrinking_mremap(#[case] mem: MemType) {
    let (mut area, uffd) = try_skip!(registered_missing(mem, 4, Features::EVENT_UNMAP, |_| {}));
    let (base, ps, len) = (area.addr(), area.page_size(), area.len());
    let p = park(move || mremap(base, len, ps, 0, 0));
    assert_parked_in_event(&p, &uffd, "shrinking mremap()");
    assert_eq!(
        expect_unmap(next_event(&uffd)),
        ((base + ps) as u64, (base + len) as u64)
    );
    assert_eq!(p.join(), Ok(base), "shrinking stays in place");
    area.truncated_to(ps);
    assert_no_event(&uffd, "one shrinking mremap");
    drop(uffd);
}

#[apply(all_mem)]
fn unmap_not_delivered_without_event_unmap(#[case] mem: MemType) {
    require_mode!(mem, RegisterMode::MISSING);
    let mut area = try_area!(Area::new(mem, 4));
    let uffd = try_skip!(open(Features::EVENT_REMOVE | Features::EVENT_REMAP));
    register(&uffd, &area, RegisterMode::MISSING);
    let (ps, len) = (area.page_size(), area.len());
    assert_eq!(munmap(area.addr() + len - ps, ps), Ok(()));
    area.truncated_to(len - ps);
    assert_eq!(mremap(area.addr(), len - ps, ps, 0, 0), Ok(area.addr()));
    area.truncated_to(ps);
    assert_no_event(&uffd, "munmap and shrinking mremap without EVENT_UNMAP");
}

#[apply(all_mem)]
fn unmap_reports_the_whole_munmap_range_even_partly_unregistered(#[case] mem: MemType) {
    let mut area = try_skip!(area_to_register(mem, 4, Features::EVENT_UNMAP, RegisterMode::MISSING));
    let uffd = try_skip!(open(Features::EVENT_UNMAP));
    let (ps, half) = (area.page_size(), area.page(2));
    uffd.register(half, 2 * ps, RegisterMode::MISSING).unwrap();
    // Unlike REMOVE, UNMAP carries the munmap() range itself
    // (userfaultfd_unmap_prep gets the whole range for each VMA).
    let start = area.page(1);
    munmap_tail_sends_one_unmap(&mut area, &uffd, start, "one munmap");
}

#[apply(hugetlb_mem)]
fn hugetlb_munmap_inside_a_huge_page_fails_einval_without_event(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(registered_missing(mem, 2, Features::EVENT_UNMAP, |_| {}));
    // The VMA cannot be split inside a huge page: refused before any
    // userfaultfd_unmap_prep().
    let base = mem::base_page_size();
    assert_eq!(munmap(area.page(1), base), Err(Errno::EINVAL));
    assert_eq!(munmap(area.page(0) + base, base), Err(Errno::EINVAL));
    assert_no_event(&uffd, "refused munmap");
    drop(uffd);
}
