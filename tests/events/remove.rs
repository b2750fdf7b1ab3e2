// UFFD_EVENT_REMOVE. Included by events.rs.

#[apply(all_mem)]
fn remove_event_for_madv_dontneed(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(registered_missing(mem, 4, Features::EVENT_REMOVE, |_| {}));
    let (start, end) = (area.page(1), area.page(3));
    let p = park(move || madvise(start, end - start, libc::MADV_DONTNEED));
    assert_parked_in_event(&p, &uffd, "madvise(MADV_DONTNEED)");
    assert_eq!(expect_remove(next_event(&uffd)), (start as u64, end as u64));
    assert_eq!(p.join(), Ok(()));
    assert_no_event(&uffd, "one madvise over one VMA");
}

#[apply(shared_file_mem)]
fn remove_event_for_madv_remove(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(registered_missing(mem, 4, Features::EVENT_REMOVE, |a| a.populate(0x77)));
    let (start, end) = (area.page(2), area.page(3));
    let p = park(move || madvise(start, end - start, libc::MADV_REMOVE));
    assert_parked_in_event(&p, &uffd, "madvise(MADV_REMOVE)");
    assert_eq!(expect_remove(next_event(&uffd)), (start as u64, end as u64));
    assert_eq!(p.join(), Ok(()));
    // The hole is punched: page 2 is missing again, its neighbours are not.
    assert_eq!(area.read(area.page(1), 1)[0], 0x77);
    assert_eq!(area.read(area.page(3), 1)[0], 0x77);
    let f = park(move || read_byte(start));
    assert_parked_in_fault(&f, &uffd);
    assert_eq!(expect_fault(next_event(&uffd)).1, start as u64);
    drop(uffd);
    assert_eq!(f.join(), 0);
}

#[rstest]
#[case::anon(MemType::Anon, Errno::EINVAL)]
#[case::shmem_private(MemType::ShmemPrivate, Errno::EACCES)]
#[case::hugetlb_private(MemType::HugetlbPrivate, Errno::EACCES)]
#[case::hugetlb_1g_private(MemType::Hugetlb1gPrivate, Errno::EACCES)]
fn madv_remove_refused_on_private_memory_sends_nothing(#[case] mem: MemType, #[case] want: Errno) {
    let (area, uffd) = try_skip!(registered_missing(mem, 2, Features::EVENT_REMOVE, |_| {}));
    // madvise_remove() refuses before it reaches userfaultfd_remove().
    assert_eq!(madvise(area.addr(), area.len(), libc::MADV_REMOVE), Err(want));
    assert_no_event(&uffd, "refused MADV_REMOVE");
}

#[apply(hugetlb_mem)]
fn hugetlb_dontneed_at_an_unaligned_start_fails_einval_without_event(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(registered_missing(mem, 2, Features::EVENT_REMOVE, |_| {}));
    let base = mem::base_page_size();
    assert_eq!(
        madvise(area.page(0) + base, area.page_size(), libc::MADV_DONTNEED),
        Err(Errno::EINVAL)
    );
    assert_no_event(&uffd, "refused MADV_DONTNEED");
}

#[apply(hugetlb_mem)]
fn hugetlb_dontneed_reports_the_range_rounded_down_to_huge_pages(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(registered_missing(mem, 3, Features::EVENT_REMOVE, |_| {}));
    let (ps, start) = (area.page_size(), area.page(0));
    // One and a half huge pages: only the whole one is dropped and reported.
    let p = park(move || madvise(start, ps + ps / 2, libc::MADV_DONTNEED));
    assert_parked_in_event(&p, &uffd, "madvise(MADV_DONTNEED)");
    assert_eq!(expect_remove(next_event(&uffd)), (start as u64, (start + ps) as u64));
    assert_eq!(p.join(), Ok(()));
}

#[apply(hugetlb_mem)]
fn hugetlb_dontneed_shorter_than_a_huge_page_sends_nothing(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(registered_missing(mem, 1, Features::EVENT_REMOVE, |_| {}));
    // The end rounds down onto the start: success, nothing dropped, no event.
    assert_eq!(
        madvise(area.page(0), mem::base_page_size(), libc::MADV_DONTNEED),
        Ok(())
    );
    assert_no_event(&uffd, "a sub-huge-page MADV_DONTNEED");
}

#[apply(file_mem)]
fn fallocate_punch_hole_drops_pages_without_remove_event(#[case] mem: MemType) {
    require_features!(Features::EVENT_REMOVE);
    require_mode!(mem, RegisterMode::MISSING);
    let area = try_area!(Area::new(mem, 2));
    let fd = area.fd().expect("file-backed area");
    let uffd = try_skip!(open(Features::EVENT_REMOVE));
    if mem.is_shared() {
        area.populate(0x31);
    }
    register(&uffd, &area, RegisterMode::MISSING);
    let ps = area.page_size();
    // Only madvise() calls userfaultfd_remove(); a hole punched through
    // the file unmaps the pages silently.
    nix::fcntl::fallocate(
        fd,
        nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
        ps as i64,
        ps as i64,
    )
    .unwrap();
    assert_no_event(&uffd, "fallocate(PUNCH_HOLE)");
    // ...yet the page is gone: the next access is a MISSING fault.
    let at = area.page(1);
    let f = park(move || read_byte(at));
    assert_parked_in_fault(&f, &uffd);
    assert_eq!(expect_fault(next_event(&uffd)).1, at as u64);
    drop(uffd);
    assert_eq!(f.join(), 0);
}

#[apply(all_mem)]
fn remove_not_delivered_without_event_remove(#[case] mem: MemType) {
    require_mode!(mem, RegisterMode::MISSING);
    let area = try_area!(Area::new(mem, 2));
    let uffd = try_skip!(open(Features::EVENT_REMAP | Features::EVENT_UNMAP));
    register(&uffd, &area, RegisterMode::MISSING);
    // Returns at once: no event to wait for.
    assert_eq!(madvise(area.addr(), area.len(), libc::MADV_DONTNEED), Ok(()));
    if mem.is_shared() {
        assert_eq!(madvise(area.addr(), area.len(), libc::MADV_REMOVE), Ok(()));
    }
    assert_no_event(&uffd, "madvise without EVENT_REMOVE");
}

/// MADV_DONTNEED_LOCKED (5.18), not in every libc's constants.
const MADV_DONTNEED_LOCKED: i32 = 24;

#[rstest]
#[case::free_anon(MemType::Anon, libc::MADV_FREE)]
#[case::free_anon_thp(MemType::AnonThp, libc::MADV_FREE)]
#[case::dontneed_locked_anon(MemType::Anon, MADV_DONTNEED_LOCKED)]
#[case::dontneed_locked_shmem(MemType::Shmem, MADV_DONTNEED_LOCKED)]
#[case::dontneed_locked_hugetlb(MemType::Hugetlb, MADV_DONTNEED_LOCKED)]
fn remove_event_for_madv_free_and_dontneed_locked(#[case] mem: MemType, #[case] advice: i32) {
    let (area, uffd) = try_skip!(registered_missing(mem, 2, Features::EVENT_REMOVE, |_| {}));
    let (start, len) = (area.page(0), 2 * area.page_size());
    // Both share MADV_DONTNEED's path through userfaultfd_remove().
    let p = park(move || madvise(start, len, advice));
    assert_parked_in_event(&p, &uffd, "madvise");
    assert_eq!(expect_remove(next_event(&uffd)), (start as u64, (start + len) as u64));
    assert_eq!(p.join(), Ok(()));
}

#[rstest]
#[case::hugetlb(MemType::Hugetlb)]
#[case::hugetlb_1g(MemType::Hugetlb1g)]
fn hugetlb_madv_remove_of_part_of_a_huge_page_reports_it_and_only_zeroes_it(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(registered_missing(mem, 1, Features::EVENT_REMOVE, |a| a.populate(0x56)));
    let base = mem::base_page_size();
    let start = area.addr() + base;
    // madvise_remove() reports the range as given; hugetlbfs then drops
    // only whole huge pages and zeroes the partial ones in place
    // (fs/hugetlbfs/inode.c hugetlbfs_punch_hole).
    let p = park(move || madvise(start, base, libc::MADV_REMOVE));
    assert_parked_in_event(&p, &uffd, "madvise(MADV_REMOVE)");
    assert_eq!(expect_remove(next_event(&uffd)), (start as u64, (start + base) as u64));
    assert_eq!(p.join(), Ok(()));
    assert!(pagemap::is_present(area.addr()), "the huge page stays mapped");
    let want = |i: usize| if (base..2 * base).contains(&i) { 0 } else { 0x56 };
    assert_bytes(&area.read_page(0), want, "only the removed range is zeroed");
}

#[apply(all_mem)]
fn remove_reports_only_the_registered_part_of_a_range(#[case] mem: MemType) {
    require_features!(Features::EVENT_REMOVE);
    require_mode!(mem, RegisterMode::MISSING);
    let area = try_area!(Area::new(mem, 4));
    let uffd = try_skip!(open(Features::EVENT_REMOVE));
    let (ps, half) = (area.page_size(), area.page(2));
    uffd.register(half, 2 * ps, RegisterMode::MISSING).unwrap();
    let (start, len) = (area.addr(), area.len());
    // userfaultfd_remove() runs per VMA with the VMA's part of the range.
    let p = park(move || madvise(start, len, libc::MADV_DONTNEED));
    assert_parked_in_event(&p, &uffd, "madvise");
    assert_eq!(expect_remove(next_event(&uffd)), (half as u64, (half + 2 * ps) as u64));
    assert_eq!(p.join(), Ok(()));
    assert_no_event(&uffd, "the unregistered part");
}
