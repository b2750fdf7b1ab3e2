// The selftests' `events` and `events-wp` flows, written from their
// description: a forked child faults, mremaps, faults, releases; the monitor
// follows it through the FORK descriptor. Included by events.rs.

#[derive(Default, Debug)]
struct Tally {
    missing: Vec<usize>,
    wp: Vec<usize>,
    forks: usize,
    remaps: Vec<(u64, u64, u64)>,
    removes: Vec<(u64, u64)>,
    bad: Vec<String>,
}

/// Child side of the flow; the exit code says which step failed.
fn flow_child(base: usize, ps: usize, n: usize, dest: usize, advice: i32, go: i32) -> i32 {
    let check = |at: usize, i: usize| -> bool {
        // SAFETY: the page lies in the child's copy of the area.
        let s = unsafe { std::slice::from_raw_parts(at as *const u8, ps) };
        s.iter().all(|&b| b == seed(i))
    };
    let touch = |at: usize, i: usize| -> i32 {
        if !check(at, i) {
            return 1;
        }
        // The write-back: a WP fault in events-wp.
        write_byte(at, !seed(i));
        if read_byte(at) != !seed(i) || read_byte(at + 1) != seed(i) {
            return 2;
        }
        0
    };
    for i in 0..n / 2 {
        let r = touch(base + i * ps, i);
        if r != 0 {
            return r;
        }
    }
    match mremap(base, n * ps, n * ps, libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED, dest) {
        Ok(a) if a == dest => {}
        _ => return 3,
    }
    for i in n / 2..n {
        let r = touch(dest + i * ps, i);
        if r != 0 {
            return 10 + r;
        }
    }
    if madvise(dest, n * ps, advice).is_err() {
        return 4;
    }
    // The monitor unregisters the removed range, then lets us look.
    let mut b = [0u8; 1];
    // SAFETY: reading one byte into a local buffer.
    if unsafe { libc::read(go, b.as_mut_ptr().cast(), 1) } != 1 {
        return 5;
    }
    // SAFETY: the whole range is the child's moved mapping.
    let all = unsafe { std::slice::from_raw_parts(dest as *const u8, n * ps) };
    if all.iter().any(|&b| b != 0) {
        return 6;
    }
    0
}

fn events_flow(mem: MemType, wp: bool) {
    let mut features = Features::EVENT_FORK | Features::EVENT_REMAP | Features::EVENT_REMOVE;
    let mut mode = RegisterMode::MISSING;
    if wp {
        features |= Features::PAGEFAULT_FLAG_WP;
        if !mem.is_anon() {
            features |= Features::WP_HUGETLBFS_SHMEM;
        }
        mode |= RegisterMode::WP;
    }
    require_features!(features);
    require_mode!(mem, mode);
    // The child resolves its own faults: as many pages as the area.
    let area = try_skip!(testing::area_for_fork(mem, 8, 8));
    let (ps, n, len, base) = (area.page_size(), area.npages(), area.len(), area.addr());
    let src = Buf::filled(len, 0);
    for i in 0..n {
        // SAFETY: page i of our own source buffer.
        unsafe { std::ptr::write_bytes((src.addr() + i * ps) as *mut u8, seed(i), ps) };
    }
    let dest = Reservation::new(len, align_for(&area));
    let (go_r, go_w): (OwnedFd, OwnedFd) = nix::unistd::pipe().unwrap();
    let uffd = try_skip!(open(features));
    register(&uffd, &area, mode);

    let (d, advice, gr) = (dest.addr, release_advice(mem), go_r.as_raw_fd());
    let forker = park(move || wait_child(spawn_child_raw(move || flow_child(base, ps, n, d, advice, gr))));

    let copy_mode = if wp { CopyMode::WP } else { CopyMode::empty() };
    let mut t = Tally::default();
    let mut child: Option<Uffd> = None;
    let mut cur_base = base as u64;
    let end = Instant::now() + Duration::from_secs(120);
    let mut go_w = Some(go_w);
    loop {
        let u = child.as_ref().unwrap_or(&uffd);
        let evs = u.read_events(16, Some(Duration::from_millis(10))).expect("read");
        if evs.is_empty() {
            if forker.is_done() {
                break;
            }
            if Instant::now() > end {
                go_w.take();
                child.take();
                panic!("events flow on {mem} stuck: {t:?}");
            }
            continue;
        }
        for ev in evs {
            match ev {
                Event::Fork { uffd: c } => {
                    t.forks += 1;
                    child = Some(c);
                }
                Event::Pagefault { flags, address, .. } => {
                    let page = address & !(ps as u64 - 1);
                    let i = ((page - cur_base) / ps as u64) as usize;
                    let Some(c) = child.as_ref() else {
                        t.bad.push(format!("fault at {address:#x} before FORK"));
                        continue;
                    };
                    if flags.contains(PagefaultFlags::WP) {
                        if flags != PagefaultFlags::WP | PagefaultFlags::WRITE {
                            t.bad.push(format!("WP fault flags {flags:?}"));
                        }
                        t.wp.push(i);
                        if let Err(e) = c.writeprotect(page as usize, ps, WriteprotectMode::empty()) {
                            t.bad.push(format!("un-protect {page:#x}: {e}"));
                        }
                    } else {
                        // The child reads each page before writing it.
                        if !flags.is_empty() {
                            t.bad.push(format!("missing fault flags {flags:?}"));
                        }
                        t.missing.push(i);
                        match c.copy(page as usize, src.addr() + i * ps, ps, copy_mode) {
                            Ok(v) if v == ps as i64 => {}
                            r => t.bad.push(format!("UFFDIO_COPY page {i}: {r:?}")),
                        }
                    }
                }
                Event::Remap { from, to, len } => {
                    t.remaps.push((from, to, len));
                    cur_base = to;
                }
                Event::Remove { start, end } => {
                    t.removes.push((start, end));
                    let c = child.as_ref().expect("REMOVE before FORK");
                    if let Err(e) = c.unregister(start as usize, (end - start) as usize) {
                        t.bad.push(format!("UNREGISTER removed range: {e}"));
                    }
                    nix::unistd::write(go_w.as_ref().unwrap(), &[1]).unwrap();
                }
                other => t.bad.push(format!("unexpected {other:?}")),
            }
        }
    }
    let status = forker.join();
    assert_eq!(status, ChildExit::Exited(0), "child of the events flow on {mem}: {t:?}");
    assert!(t.bad.is_empty(), "{:?}", t.bad);
    assert_eq!(t.forks, 1);
    assert_eq!(t.remaps, vec![(base as u64, dest.addr as u64, len as u64)]);
    assert_eq!(t.removes, vec![(dest.addr as u64, (dest.addr + len) as u64)]);
    t.missing.sort_unstable();
    assert_eq!(t.missing, (0..n).collect::<Vec<_>>(), "one MISSING fault per page");
    t.wp.sort_unstable();
    let want_wp: Vec<usize> = if wp { (0..n).collect() } else { vec![] };
    assert_eq!(t.wp, want_wp, "one WP fault per page");
    assert_no_event(&uffd, "the parent's descriptor after the child's run");
}

tests_calling! {
    (#[apply(all_mem)] #[serial(fork)])
    fn events_fork_remap_remove_follow_a_child(mem: MemType) => events_flow(mem, false);
    fn events_wp_fork_remap_remove_follow_a_child(mem: MemType) => events_flow(mem, true);
}
