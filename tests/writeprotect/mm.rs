// Protection against the rest of the mm: kernel accesses, mmap changes,
// mprotect, other views of the pages and other uffds. Included by
// writeprotect.rs.

/// read(2) of 16 bytes of /dev/zero into `addr`: the kernel writes the
/// page with copy_to_user, a fault without FAULT_FLAG_USER. Returns the
/// byte count, or 255 - errno.
fn kernel_zero_fill(addr: usize) -> u8 {
    let Ok(f) = std::fs::File::open("/dev/zero") else {
        return 255;
    };
    // SAFETY: addr..addr+16 lies in a mapping of the caller's area.
    let n = unsafe { libc::read(std::os::fd::AsRawFd::as_raw_fd(&f), addr as *mut libc::c_void, 16) };
    if n < 0 { 255 - Errno::last() as u8 } else { n as u8 }
}

#[apply(all_mem)]
fn kernel_write_to_protected_page_fails_efault_on_user_mode_only_uffd(#[case] mem: MemType) {
    // handle_userfault refuses kernel-mode faults on a UFFD_USER_MODE_ONLY
    // fd with VM_FAULT_SIGBUS: copy_to_user fails and read(2) says EFAULT.
    require_mode!(mem, RegisterMode::WP);
    let (area, uffd) = try_skip!(protected_wp_area(mem, 1, Features::empty()));
    let r = Faulter::call({
        let a = area.page(0) + 8;
        move || kernel_zero_fill(a)
    });
    assert_eq!(r.settle(), State::Done);
    assert_eq!(r.join(), 255 - Errno::EFAULT as u8);
    assert_no_event(&uffd);
    assert_eq!(area.read_page(0), vec![0x11; area.page_size()], "nothing was written");
    assert!(wp_bit(area.page(0)));
}

#[apply(all_mem)]
fn kernel_write_to_protected_page_waits_on_full_uffd(#[case] mem: MemType) {
    // Without UFFD_USER_MODE_ONLY (needs privilege) the kernel's own write
    // is a WP fault like any other, and waits for the monitor.
    require_mode!(mem, RegisterMode::WP);
    require!(
        caps::caps().features_full.is_some(),
        "cannot open a uffd without UFFD_USER_MODE_ONLY here"
    );
    let area = try_area!(Area::new(mem, 1));
    area.populate(0x11);
    let flags = OpenFlags::O_CLOEXEC | OpenFlags::O_NONBLOCK;
    let uffd = try_skip!(testing::open_uffd_flags(
        flags,
        caps::features_for(mem, RegisterMode::WP)
    ));
    uffd.register(area.addr(), area.len(), RegisterMode::WP).unwrap();
    uffd.writeprotect(area.addr(), area.len(), WP).unwrap();
    let r = Faulter::call({
        let a = area.page(0) + 8;
        move || kernel_zero_fill(a)
    });
    // A kernel fault carries no FAULT_FLAG_USER, but the message is the same.
    assert_eq!(
        next_pagefault(&uffd),
        (PagefaultFlags::WP | PagefaultFlags::WRITE, area.page(0))
    );
    assert_eq!(r.settle(), State::Blocked);
    uffd.writeprotect(area.addr(), area.len(), UNPROTECT).unwrap();
    assert_eq!(r.join(), 16);
    let mut want = vec![0x11; area.page_size()];
    want[8..24].fill(0);
    assert_eq!(area.read_page(0), want);
}

/// MADV_DONTNEED of `[addr, addr+len)` on a thread: with EVENT_REMOVE it
/// parks in userfaultfd_remove, mmap_changing raised, until the REMOVE
/// message is read. Returns 0 on success, 1 on failure.
fn dontneed_on_thread(addr: usize, len: usize) -> Faulter {
    Faulter::call(move || {
        // SAFETY: the range lies in the caller's area.
        let r = unsafe { libc::madvise(addr as *mut libc::c_void, len, libc::MADV_DONTNEED) };
        u8::from(r != 0)
    })
}

#[apply(selftest_mem)]
fn writeprotect_while_mmap_changing_fails_eagain(#[case] mem: MemType) {
    require_mode!(mem, RegisterMode::WP);
    require_features!(Features::EVENT_REMOVE);
    let (area, uffd) = try_skip!(wp_area(mem, 2, Features::EVENT_REMOVE));
    let ps = area.page_size();
    let t = dontneed_on_thread(area.page(1), ps);
    // The REMOVE message is queued after mmap_changing went up.
    assert!(
        uffd.poll(Some(std::time::Duration::from_secs(20))).unwrap(),
        "no REMOVE message"
    );
    assert_eq!(t.settle(), State::Blocked);
    assert_eq!(uffd.writeprotect(area.addr(), area.len(), WP), Err(Errno::EAGAIN));
    assert_eq!(uffd.writeprotect(area.page(0), ps, UNPROTECT), Err(Errno::EAGAIN));
    assert!(!wp_bit(area.page(0)), "a refused call protected the page");
    match uffd.read_event(Some(std::time::Duration::ZERO)).unwrap() {
        Some(Event::Remove { start, end }) => {
            assert_eq!((start as usize, end as usize), (area.page(1), area.page(1) + ps))
        }
        other => panic!("expected UFFD_EVENT_REMOVE, got {other:?}"),
    }
    assert_eq!(t.join(), 0, "MADV_DONTNEED failed");
    // Once the monitor has seen the change the ioctl works again.
    uffd.writeprotect(area.page(0), ps, WP).unwrap();
    assert!(wp_bit(area.page(0)));
}

#[apply(all_mem)]
fn wp_fault_reports_faulting_thread_with_thread_id(#[case] mem: MemType) {
    require_mode!(mem, RegisterMode::WP);
    require_features!(Features::THREAD_ID);
    let (area, uffd) = try_skip!(protected_wp_area(mem, 1, Features::THREAD_ID));
    let w = Faulter::write(area.page(0), 0x13);
    match uffd.read_event(Some(std::time::Duration::from_secs(20))).unwrap() {
        Some(Event::Pagefault { flags, address, ptid }) => {
            assert_eq!(flags, PagefaultFlags::WP | PagefaultFlags::WRITE);
            assert_eq!(address as usize, area.page(0));
            assert_eq!(ptid as i32, w.tid(), "ptid names the faulting thread");
        }
        other => panic!("expected a PAGEFAULT, got {other:?}"),
    }
    uffd.writeprotect(area.addr(), area.len(), UNPROTECT).unwrap();
    assert_eq!(w.join(), 0x13);
}

#[apply(all_mem)]
fn mprotect_round_trip_keeps_protection(#[case] mem: MemType) {
    // change_protection must carry the uffd-wp bit through a plain
    // mprotect: dropping it would let a write past the monitor.
    require_mode!(mem, RegisterMode::WP);
    let (area, uffd) = try_skip!(protected_wp_area(mem, 2, Features::empty()));
    for prot in [libc::PROT_READ, libc::PROT_READ | libc::PROT_WRITE] {
        // SAFETY: our own area.
        let r = unsafe { libc::mprotect(area.addr() as *mut libc::c_void, area.len(), prot) };
        assert_eq!(r, 0, "mprotect({prot:#x}): {}", Errno::last());
        assert!(
            wp_bit(area.page(0)) && wp_bit(area.page(1)),
            "after mprotect({prot:#x})"
        );
    }
    let w = blocked_wp_writer(&uffd, area.page(1), 0, 0x71);
    uffd.writeprotect(area.page(1), area.page_size(), UNPROTECT).unwrap();
    assert_eq!(w.join(), 0x71);
    assert!(wp_bit(area.page(0)));
}

#[rstest]
#[case::shmem(MemType::Shmem)]
#[case::hugetlb(MemType::Hugetlb)]
#[case::hugetlb_1g(MemType::Hugetlb1g)]
fn write_through_unregistered_view_bypasses_protection(#[case] mem: MemType) {
    // Protection lives in the registered view's page tables, not in the
    // page: another shared view writes freely and the protected view sees it.
    require_mode!(mem, RegisterMode::WP);
    let area = match Area::with_alias(mem, 1) {
        Ok(a) => a,
        Err(mem::Unavailable::Skip(r)) => skip!("{r}"),
        Err(mem::Unavailable::Error(e)) => panic!("cannot set up the area: {e}"),
    };
    area.populate(0x11);
    let uffd = try_skip!(testing::open_uffd(caps::features_for(mem, RegisterMode::WP)));
    uffd.register(area.addr(), area.len(), RegisterMode::WP).unwrap();
    uffd.writeprotect(area.addr(), area.len(), WP).unwrap();
    assert_write_completes(area.alias_page(0) + 5, 0x72);
    assert_no_event(&uffd);
    assert_eq!(testing::read_byte(area.page(0) + 5), 0x72);
    assert!(wp_bit(area.page(0)), "the registered view stays protected");
    assert!(!wp_bit(area.alias_page(0)));
    assert_write_waits_for_unprotect(&uffd, &area, 0x73);
}

#[apply(selftest_mem)]
fn writeprotect_acts_on_a_range_registered_by_another_uffd_of_the_mm(#[case] mem: MemType) {
    // mwriteprotect_range asks only whether the VMA is registered WP, not
    // with which context: a second uffd of the same process protects the
    // first one's range, and the fault goes to the registering uffd.
    // (Pinned here as the kernel behaves; a fix adding a context check
    // would show up as this case failing with ENOENT.)
    require_mode!(mem, RegisterMode::WP);
    let (area, owner) = try_skip!(wp_area(mem, 1, Features::empty()));
    let other = try_skip!(testing::open_uffd(caps::features_for(mem, RegisterMode::WP)));
    other.writeprotect(area.addr(), area.len(), WP).unwrap();
    assert!(wp_bit(area.page(0)));
    let w = wp_write_fault(&owner, area.page(0), 0, 0x74);
    assert_no_event(&other);
    assert_eq!(w.settle(), State::Blocked);
    // Un-protecting through the other uffd clears the bit but wakes only
    // that context's waiters: the writer sleeps on the owner's queue.
    other.writeprotect(area.addr(), area.len(), UNPROTECT).unwrap();
    assert!(!wp_bit(area.page(0)));
    let why = "woken through a context it does not wait on";
    assert_asleep_until_wake(&owner, w, area.addr(), area.len(), 0x74, why);
}
