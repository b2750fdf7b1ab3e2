// MINOR faults on huge page-cache folios: a collapse under a MINOR range,
// and per-page faults on a PMD-sized folio. Included by continue.rs.

/// A memfd of one PMD mapped twice at PMD-aligned addresses, so the
/// registered view can be collapsed into a PMD mapping.
struct PmdViews {
    main: usize,
    alias: usize,
    len: usize,
    _fd: std::os::fd::OwnedFd,
}

impl PmdViews {
    fn new(pmd: usize) -> PmdViews {
        use nix::sys::mman::{MapFlags, ProtFlags, mmap, mmap_anonymous, munmap};
        use std::num::NonZeroUsize;
        let fd = nix::sys::memfd::memfd_create(c"uffd-minor-collapse", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
            .expect("memfd_create");
        nix::unistd::ftruncate(&fd, pmd as i64).expect("ftruncate");
        let rw = ProtFlags::PROT_READ | ProtFlags::PROT_WRITE;
        let mut views = [0usize; 2];
        for v in &mut views {
            // SAFETY: a fresh reservation, then our memfd mapped over its
            // aligned part; the unaligned rest is trimmed off.
            unsafe {
                let big = mmap_anonymous(
                    None,
                    NonZeroUsize::new(2 * pmd).unwrap(),
                    ProtFlags::PROT_NONE,
                    MapFlags::MAP_PRIVATE,
                )
                .expect("reserve");
                let start = big.as_ptr() as usize;
                let aligned = start.next_multiple_of(pmd);
                let p = mmap(
                    Some(NonZeroUsize::new(aligned).unwrap()),
                    NonZeroUsize::new(pmd).unwrap(),
                    rw,
                    MapFlags::MAP_SHARED | MapFlags::MAP_FIXED,
                    &fd,
                    0,
                )
                .expect("mmap memfd");
                if aligned > start {
                    munmap(big, aligned - start).unwrap();
                }
                let tail = aligned + pmd;
                if start + 2 * pmd > tail {
                    munmap(std::ptr::NonNull::new(tail as *mut _).unwrap(), start + 2 * pmd - tail).unwrap();
                }
                *v = p.as_ptr() as usize;
            }
        }
        PmdViews {
            main: views[0],
            alias: views[1],
            len: pmd,
            _fd: fd,
        }
    }
}

impl Drop for PmdViews {
    fn drop(&mut self) {
        for v in [self.main, self.alias] {
            // SAFETY: our own mappings.
            let _ = unsafe { nix::sys::mman::munmap(std::ptr::NonNull::new(v as *mut _).unwrap(), self.len) };
        }
    }
}

/// Serial with the cases that change the shmem THP policy: under
/// `shmem_enabled=always` set by a concurrent case the contents checks failed
/// (page 0 read 0 for 255) and the binary later died of SIGSEGV.
#[test]
#[serial_test::serial(thp)]
fn minor_collapse_keeps_contents() {
    require_mode!(MemType::Shmem, RegisterMode::MINOR);
    let Some(pmd) = mem::pmd_size() else {
        skip!("kernel has no THP (CONFIG_TRANSPARENT_HUGEPAGE off)")
    };
    let ps = mem::base_page_size();
    let views = PmdViews::new(pmd);
    let uffd = std::sync::Arc::new(try_skip!(testing::open_uffd(Features::MINOR_SHMEM)));
    uffd.register(views.main, views.len, RegisterMode::MINOR).unwrap();
    let n = pmd / ps;
    let byte = |i: usize| (i % 255) as u8;
    for i in 0..n {
        // SAFETY: inside the alias view.
        unsafe { std::ptr::write_bytes((views.alias + i * ps) as *mut u8, byte(i), ps) };
    }
    // The monitor flips each page through the alias and continues it.
    let (alias, faults) = (views.alias, std::sync::Arc::new(std::sync::Mutex::new(Vec::new())));
    let seen = faults.clone();
    let handler = testing::FaultHandler::spawn(uffd.clone(), move |u, ev| match ev {
        Event::Pagefault { flags, address, .. } => {
            seen.lock().unwrap().push((flags, address as usize));
            let page = address as usize & !(ps - 1);
            let a = (alias + (page - (address as usize & !(pmd - 1)))) as *mut u8;
            for off in 0..ps {
                // SAFETY: inside the alias view.
                unsafe { *a.add(off) = !*a.add(off) };
            }
            u.r#continue(page, ps, ContinueMode::empty())
                .map(drop)
                .map_err(|p| format!("CONTINUE {page:#x}: {p}"))
        }
        other => Err(format!("unexpected event {other:?}")),
    });
    for i in 0..n {
        assert_eq!(testing::read_byte(views.main + i * ps), !byte(i), "page {i}");
    }
    {
        let f = faults.lock().unwrap();
        assert_eq!(f.len(), n, "one minor fault per page");
        for (i, (flags, addr)) in f.iter().enumerate() {
            assert_eq!((*flags, *addr), (PagefaultFlags::MINOR, views.main + i * ps));
        }
    }
    // SAFETY: the registered view is our mapping. (nix has no MADV_COLLAPSE.)
    let r = Errno::result(unsafe { libc::madvise(views.main as *mut _, views.len, libc::MADV_COLLAPSE) });
    if let Err(e) = r {
        drop(handler);
        skip!("MADV_COLLAPSE of the minor-registered shmem view failed: {e}");
    }
    assert_eq!(
        smaps_field(views.main, "ShmemPmdMapped"),
        Some(pmd),
        "registered view PMD-mapped"
    );
    for i in 0..n {
        let want = vec![!byte(i); ps];
        // SAFETY: both views are mapped for the life of `views`.
        let got = unsafe { std::slice::from_raw_parts((views.main + i * ps) as *const u8, ps) }.to_vec();
        assert_eq!(got, want, "page {i} through the registered view after collapse");
        // SAFETY: as above.
        let got = unsafe { std::slice::from_raw_parts((views.alias + i * ps) as *const u8, ps) }.to_vec();
        assert_eq!(got, want, "page {i} through the alias after collapse");
    }
    let errors = handler.stop();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(faults.lock().unwrap().len(), n, "no fault after the collapse");
}

const SHMEM_ENABLED: &str = "/sys/kernel/mm/transparent_hugepage/shmem_enabled";

/// Sets the shmem THP policy of internal mounts (memfd) for one case.
/// Err is a SKIP reason.
fn shmem_thp(value: &str) -> Result<Knob, String> {
    if caps::sysfs_choice(SHMEM_ENABLED).is_none() {
        return Err("kernel has no shmem THP (no shmem_enabled)".into());
    }
    Knob::set(SHMEM_ENABLED, value).map_err(|e| match e {
        KnobError::Write { source, .. } => format!("cannot set {SHMEM_ENABLED} to {value}: {source}"),
        e => e.to_string(),
    })
}

#[test]
#[serial_test::serial(thp)]
fn minor_faults_on_a_huge_cache_folio_are_per_page() {
    // The page cache holds one PMD-sized folio; the registered view still
    // faults and is continued one base page at a time.
    require_mode!(MemType::Shmem, RegisterMode::MINOR);
    require_root!("sets the shmem THP policy");
    let Some(pmd) = mem::pmd_size() else {
        skip!("kernel has no THP (CONFIG_TRANSPARENT_HUGEPAGE off)")
    };
    let _policy = try_skip!(shmem_thp("always"));
    let ps = mem::base_page_size();
    let views = PmdViews::new(pmd);
    for i in 0..pmd / ps {
        // SAFETY: inside the alias view.
        unsafe { std::ptr::write_bytes((views.alias + i * ps) as *mut u8, (i % 251) as u8, ps) };
    }
    require!(
        smaps_field(views.alias, "ShmemPmdMapped") == Some(pmd),
        "shmem did not allocate a PMD folio for the memfd (memory fragmented?)"
    );
    let uffd = try_skip!(testing::open_uffd(Features::MINOR_SHMEM));
    uffd.register(views.main, pmd, RegisterMode::MINOR).unwrap();
    for i in [5, 6, 300] {
        let r = Faulter::read(views.main + i * ps + 1);
        assert_eq!(
            next_pagefault(&uffd),
            (PagefaultFlags::MINOR, views.main + i * ps),
            "page {i}"
        );
        assert_eq!(
            uffd.r#continue(views.main + i * ps, ps, ContinueMode::empty()),
            Ok(ps as i64)
        );
        assert_eq!(r.join(), (i % 251) as u8);
    }
    let present: Vec<usize> = (0..pmd / ps)
        .filter(|i| pagemap::is_present(views.main + i * ps))
        .collect();
    assert_eq!(present, [5, 6, 300], "CONTINUE mapped exactly the pages asked for");
    assert_eq!(smaps_field(views.main, "ShmemPmdMapped"), Some(0));
    // The rest in one call: it stops at the first mapped page, after 5.
    assert_eq!(
        uffd.r#continue(views.main, pmd, ContinueMode::empty()),
        Err(Partial {
            errno: Errno::EAGAIN,
            progress: 5 * ps as i64
        })
    );
    assert_no_event(&uffd);
}
