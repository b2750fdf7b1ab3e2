// How operations spanning VMAs, and mixed queues, are reported. Included by
// events.rs.

/// Splits the area's VMA at page 2 (both halves stay registered).
fn split_at_page_2(area: &Area) {
    let at = area.page(2);
    // SAFETY: the tail of our own mapping becomes read-only.
    let r = unsafe { libc::mprotect(at as *mut libc::c_void, area.addr() + area.len() - at, libc::PROT_READ) };
    assert_eq!(r, 0, "mprotect: {}", Errno::last());
}

#[apply(all_mem)]
fn dontneed_across_two_vmas_sends_one_remove_per_vma(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(registered_missing(mem, 4, Features::EVENT_REMOVE, |_| {}));
    split_at_page_2(&area);
    let (start, ps) = (area.page(1), area.page_size());
    // madvise walks the VMAs and reports each clipped part on its own.
    let p = park(move || madvise(start, 2 * ps, libc::MADV_DONTNEED));
    assert_parked_in_event(&p, &uffd, "madvise, first VMA");
    assert_eq!(expect_remove(next_event(&uffd)), (start as u64, (start + ps) as u64));
    assert_parked_in_event(&p, &uffd, "madvise, second VMA");
    assert_eq!(
        expect_remove(next_event(&uffd)),
        ((start + ps) as u64, (start + 2 * ps) as u64)
    );
    assert_eq!(p.join(), Ok(()));
    assert_no_event(&uffd, "after both VMAs");
}

#[apply(all_mem)]
fn munmap_across_two_vmas_sends_one_unmap(#[case] mem: MemType) {
    let (mut area, uffd) = try_skip!(registered_missing(mem, 4, Features::EVENT_UNMAP, |_| {}));
    split_at_page_2(&area);
    // One message per context and range, however many VMAs it covers.
    let start = area.page(1);
    munmap_tail_sends_one_unmap(&mut area, &uffd, start, "one munmap over two VMAs");
    drop(uffd);
}

#[apply(all_mem)]
fn pending_faults_are_read_before_pending_events(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(registered_missing(mem, 2, Features::EVENT_REMOVE, |_| {}));
    let (ps, p0, p1) = (area.page_size(), area.page(0), area.page(1));
    // The event is queued first...
    let ev = park_release(mem, p1, ps, &uffd);
    // ...then a fault (the event wait holds no mmap lock).
    let f = park(move || read_byte(p0 + 1));
    wait_in_fault(&f);
    // read(2) serves pending faults before events.
    assert_eq!(expect_fault(next_event(&uffd)).1, p0 as u64);
    assert_eq!(expect_remove(next_event(&uffd)), (p1 as u64, (p1 + ps) as u64));
    assert_eq!(ev.join(), Ok(()));
    uffd.copy(p0, Buf::filled(ps, 0x3e).addr(), ps, CopyMode::empty())
        .unwrap();
    assert_eq!(f.join(), 0x3e);
}
