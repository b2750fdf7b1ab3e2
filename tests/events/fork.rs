// UFFD_EVENT_FORK. Included by events.rs.

#[apply(all_mem)]
#[serial(fork)]
fn fork_event_descriptor_resolves_the_childs_faults(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(registered_missing_for_fork(mem, (2, 1), Features::EVENT_FORK, |_| {}));
    let (ps, at) = (area.page_size(), area.page(1) + 5);
    // The child reads page 1 and exits with what it saw.
    let forker = park(move || wait_child(spawn_child_raw(move || read_byte(at) as i32)));
    assert_parked_in_event(&forker, &uffd, "fork()");
    let Event::Fork { uffd: child } = next_event(&uffd) else {
        panic!("expected UFFD_EVENT_FORK");
    };
    // The new descriptor is a uffd with the parent's file flags.
    use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
    let link = std::fs::read_link(format!("/proc/self/fd/{}", child.as_raw_fd())).unwrap();
    assert_eq!(link.to_string_lossy(), "anon_inode:[userfaultfd]");
    let fl = OFlag::from_bits_retain(fcntl(&child, FcntlArg::F_GETFL).unwrap());
    assert!(fl.contains(OFlag::O_NONBLOCK), "child uffd keeps O_NONBLOCK: {fl:?}");
    let fdf = FdFlag::from_bits_retain(fcntl(&child, FcntlArg::F_GETFD).unwrap());
    assert!(fdf.contains(FdFlag::FD_CLOEXEC), "child uffd keeps O_CLOEXEC");
    // The child's fault arrives on the child's descriptor only.
    let (flags, address, _) = expect_fault(next_event(&child));
    assert_eq!((flags, address), (PagefaultFlags::empty(), area.page(1) as u64));
    assert_no_event(&uffd, "parent descriptor while the child faults");
    let src = Buf::filled(ps, 0x6d);
    assert_eq!(
        child.copy(area.page(1), src.addr(), ps, CopyMode::empty()),
        Ok(ps as i64)
    );
    assert_eq!(
        forker.join(),
        ChildExit::Exited(0x6d),
        "the child read the page copied through its uffd"
    );
    // The copy went into the child's memory: the parent's page is still
    // missing for the private types (for shared ones it is the same page).
    if !mem.is_shared() {
        let p = park(move || read_byte(at));
        assert_parked_in_fault(&p, &uffd);
        let (_, address, _) = expect_fault(next_event(&uffd));
        assert_eq!(address, area.page(1) as u64);
        uffd.copy(area.page(1), Buf::filled(ps, 0x11).addr(), ps, CopyMode::empty())
            .unwrap();
        assert_eq!(p.join(), 0x11);
    } else {
        assert_eq!(area.read(at, 1)[0], 0x6d);
    }
}

#[apply(all_mem)]
#[serial(fork)]
fn fork_without_event_fork_leaves_the_child_unregistered(#[case] mem: MemType) {
    require_mode!(mem, RegisterMode::MISSING);
    let area = try_area!(Area::new(mem, 1));
    let uffd = try_skip!(open(Features::empty()));
    register(&uffd, &area, RegisterMode::MISSING);
    let at = area.page(0) + 9;
    // No FORK event: fork returns at once and the child's copy of the range
    // is not registered, so its read fills a zero page.
    let status = testing::in_child(move || read_byte(at) as i32 + 1);
    assert_eq!(status, ChildExit::Exited(1));
    assert_no_event(&uffd, "fork and the child's read");
}

#[test]
#[serial(fork)]
fn fork_queues_one_event_per_context() {
    // dup_userfaultfd() makes one child context per parent context, however
    // many ranges it covers: two ranges on uffd A give A one FORK, and a
    // range on uffd B gives B its own.
    require_features!(Features::EVENT_FORK);
    let (a1, a2, b1) = (
        try_area!(Area::new(MemType::Anon, 1)),
        try_area!(Area::new(MemType::Shmem, 1)),
        try_area!(Area::new(MemType::Anon, 1)),
    );
    let ua = try_skip!(open(Features::EVENT_FORK));
    let ub = try_skip!(open(Features::EVENT_FORK));
    register(&ua, &a1, RegisterMode::MISSING);
    register(&ua, &a2, RegisterMode::MISSING);
    register(&ub, &b1, RegisterMode::MISSING);
    let (x, y, z) = (a1.addr(), a2.addr(), b1.addr());
    // The child faults on all three and exits with what it read; the FORK
    // descriptors resolve its faults.
    let p = park(move || {
        wait_child(spawn_child_raw(move || {
            (read_byte(x) as i32) + (read_byte(y) as i32) + (read_byte(z) as i32)
        }))
    });
    // The events come one at a time, in the order of the parent's VMAs.
    let mut children: [Option<Uffd>; 2] = [None, None];
    let end = Instant::now() + LIMIT;
    while children.iter().any(Option::is_none) {
        assert!(
            Instant::now() < end,
            "FORK events missing: {:?}",
            children.each_ref().map(Option::is_some)
        );
        for (k, u) in [&ua, &ub].into_iter().enumerate() {
            if children[k].is_none() && u.poll(Some(Duration::from_millis(5))).unwrap() {
                assert!(!p.is_done(), "fork() returned with a FORK event unread");
                match next_event(u) {
                    Event::Fork { uffd } => children[k] = Some(uffd),
                    other => panic!("expected UFFD_EVENT_FORK, got {other:?}"),
                }
            }
        }
    }
    assert_no_event(&ua, "one FORK per context");
    assert_no_event(&ub, "one FORK per context");
    let [Some(ca), Some(cb)] = &children else {
        unreachable!()
    };
    let src = Buf::filled(mem::base_page_size(), 10);
    let ps = mem::base_page_size();
    // Faults in order: x and y on A's child context, z on B's.
    for (u, at) in [(ca, x), (ca, y), (cb, z)] {
        assert_eq!(expect_fault(next_event(u)).1, at as u64);
        assert_eq!(u.copy(at, src.addr(), ps, CopyMode::empty()), Ok(ps as i64));
    }
    assert_eq!(p.join(), ChildExit::Exited(30));
}

#[test]
#[serial(fork)]
fn a_forked_childs_own_fork_reports_on_the_childs_descriptor() {
    // The child context inherits EVENT_FORK: when the child forks, the
    // FORK event goes to the child's descriptor, and the grandchild's
    // faults to the descriptor that event hands out.
    require_features!(Features::EVENT_FORK);
    let area = try_area!(Area::new(MemType::Anon, 1));
    let uffd = try_skip!(open(Features::EVENT_FORK));
    register(&uffd, &area, RegisterMode::MISSING);
    let at = area.addr();
    let p = park(move || {
        wait_child(spawn_child_raw(move || {
            // In the child: fork the grandchild, which reads the page.
            let g = spawn_child_raw(move || read_byte(at) as i32);
            let mut st = 0;
            // SAFETY: waiting for our own child.
            if unsafe { libc::waitpid(g.as_raw(), &mut st, 0) } != g.as_raw() {
                return 100;
            }
            if libc::WIFEXITED(st) {
                libc::WEXITSTATUS(st)
            } else {
                101
            }
        }))
    });
    let Event::Fork { uffd: child } = next_event(&uffd) else {
        panic!("expected the child's FORK");
    };
    // The child now waits in its own fork() on the child descriptor.
    assert!(
        wait_readable(&child, LIMIT),
        "the child's fork queued nothing on the child's uffd"
    );
    assert_no_event(&uffd, "the grandchild's fork, on the parent's uffd");
    let Event::Fork { uffd: grandchild } = next_event(&child) else {
        panic!("expected the grandchild's FORK");
    };
    assert_eq!(expect_fault(next_event(&grandchild)).1, at as u64);
    assert_no_event(&child, "the grandchild's fault, on the child's uffd");
    let ps = area.page_size();
    assert_eq!(
        grandchild.copy(at, Buf::filled(ps, 0x47).addr(), ps, CopyMode::empty()),
        Ok(ps as i64)
    );
    assert_eq!(p.join(), ChildExit::Exited(0x47));
}
