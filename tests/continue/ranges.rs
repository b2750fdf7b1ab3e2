// Which ranges UFFDIO_CONTINUE accepts: registration, memory type, the
// argument checks, a changing mm and the file's end. Included by continue.rs.

#[apply(file_mem)]
fn continue_on_unregistered_range_fails_enoent(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(minor_area(mem, 2, RegisterMode::MINOR));
    fill_alias(&area, 0, |_| 3);
    // The alias view is not registered: validate_dst_vma refuses it.
    assert_eq!(
        uffd.r#continue(area.alias_page(0), area.page_size(), ContinueMode::empty()),
        failed(Errno::ENOENT)
    );
    // A range running past the registered VMA is refused the same way.
    uffd.unregister(area.page(1), area.page_size()).unwrap();
    assert_continue_refused(&uffd, &area, 2 * area.page_size(), ContinueMode::empty(), Errno::ENOENT);
}

#[apply(file_mem)]
fn continue_on_missing_only_registration_maps_cached_page(#[case] mem: MemType) {
    // REGISTER(MISSING) does not grant CONTINUE in `ioctls`, but the
    // kernel does not enforce the mask: mfill_atomic only needs a
    // registered shmem/hugetlb VMA, so a cached page is mapped.
    let (area, uffd) = try_skip!(minor_area(mem, 1, RegisterMode::MISSING));
    let ioctls = uffd.register(area.addr(), area.len(), RegisterMode::MISSING).unwrap();
    assert!(!ioctls.contains(Ioctls::CONTINUE), "{ioctls:?}");
    fill_alias(&area, 0, |_| 0x2f);
    assert_eq!(
        uffd.r#continue(area.addr(), area.page_size(), ContinueMode::empty()),
        Ok(area.page_size() as i64)
    );
    assert_eq!(area.read_page(0), vec![0x2f; area.page_size()]);
}

#[apply(anon_mem)]
fn continue_on_anon_fails_einval(#[case] mem: MemType) {
    require_mode!(mem, RegisterMode::MISSING);
    let area = try_area!(Area::new(mem, 1));
    let uffd = try_skip!(testing::open_uffd(Features::empty()));
    uffd.register(area.addr(), area.len(), RegisterMode::MISSING).unwrap();
    assert_eq!(
        uffd.r#continue(area.addr(), area.page_size(), ContinueMode::empty()),
        failed(Errno::EINVAL)
    );
}

/// Checks that fail before the walk: the kernel returns without writing
/// `mapped`, which our wrapper set to 0.
mod args {
    use super::*;
    use testing::progress::rejected;

    fn setup() -> Result<(Area, Uffd), String> {
        minor_area(MemType::Shmem, 2, RegisterMode::MINOR)
    }

    #[test]
    fn unknown_mode_bits_fail_einval() {
        require_mode!(MemType::Shmem, RegisterMode::MINOR);
        let (area, uffd) = try_skip!(setup());
        fill_alias(&area, 0, |_| 1);
        for bit in [2, 3, 31, 63] {
            let mode = ContinueMode::from_bits_retain(1 << bit);
            assert_eq!(
                uffd.r#continue(area.addr(), area.page_size(), mode),
                rejected(Errno::EINVAL),
                "bit {bit}"
            );
        }
        assert!(!pagemap::is_present(area.page(0)));
    }

    #[test]
    fn misaligned_start_fails_einval() {
        require_mode!(MemType::Shmem, RegisterMode::MINOR);
        let (area, uffd) = try_skip!(setup());
        fill_alias(&area, 0, |_| 1);
        let r = uffd.r#continue(area.addr() + 1, area.page_size(), ContinueMode::empty());
        assert_eq!(r, rejected(Errno::EINVAL));
    }

    #[test]
    fn unaligned_length_fails_einval() {
        require_mode!(MemType::Shmem, RegisterMode::MINOR);
        let (area, uffd) = try_skip!(setup());
        fill_alias(&area, 0, |_| 1);
        let r = uffd.r#continue(area.addr(), area.page_size() - 1, ContinueMode::empty());
        assert_eq!(r, rejected(Errno::EINVAL));
    }

    #[test]
    fn zero_length_fails_einval() {
        require_mode!(MemType::Shmem, RegisterMode::MINOR);
        let (area, uffd) = try_skip!(setup());
        assert_eq!(
            uffd.r#continue(area.addr(), 0, ContinueMode::empty()),
            rejected(Errno::EINVAL)
        );
    }

    #[test]
    fn range_beyond_user_address_space_fails_einval() {
        require_mode!(MemType::Shmem, RegisterMode::MINOR);
        let (area, uffd) = try_skip!(setup());
        let ps = area.page_size();
        assert_eq!(
            uffd.r#continue(1 << 47, ps, ContinueMode::empty()),
            rejected(Errno::EINVAL)
        );
        let wrap = usize::MAX & !(ps - 1);
        assert_eq!(
            uffd.r#continue(area.addr(), wrap, ContinueMode::empty()),
            rejected(Errno::EINVAL)
        );
    }
}

#[apply(hugetlb_mem)]
fn hugetlb_subpage_continue_fails_einval(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(minor_area(mem, 2, RegisterMode::MINOR));
    fill_alias(&area, 0, |_| 1);
    let base = mem::base_page_size();
    // Base-page aligned passes validate_range; hugetlb then wants whole
    // huge pages, and this check runs inside the walk: -EINVAL is written.
    let einval = failed(Errno::EINVAL);
    assert_eq!(
        uffd.r#continue(area.addr() + base, area.page_size(), ContinueMode::empty()),
        einval
    );
    assert_eq!(uffd.r#continue(area.addr(), base, ContinueMode::empty()), einval);
    assert!(!pagemap::is_present(area.page(0)));
}

#[apply(file_mem)]
fn continue_while_mmap_changing_fails_eagain(#[case] mem: MemType) {
    // userfaultfd_continue checks mmap_changing first and reports -EAGAIN
    // in `mapped` as well.
    require_mode!(mem, RegisterMode::MINOR);
    require_features!(Features::EVENT_REMOVE);
    let area = try_area!(Area::with_alias(mem, 2));
    let ps = area.page_size();
    let uffd = try_skip!(testing::open_uffd(
        caps::features_for(mem, RegisterMode::MINOR) | Features::EVENT_REMOVE
    ));
    uffd.register(area.addr(), area.len(), RegisterMode::MINOR).unwrap();
    fill_alias(&area, 0, |_| 0x17);
    let a = area.page(1);
    let t = Faulter::call(move || {
        // SAFETY: page 1 of our area.
        let r = unsafe { libc::madvise(a as *mut libc::c_void, ps, libc::MADV_DONTNEED) };
        u8::from(r != 0)
    });
    assert!(
        uffd.poll(Some(std::time::Duration::from_secs(20))).unwrap(),
        "no REMOVE message"
    );
    assert_eq!(t.settle(), State::Blocked);
    // The fixed ABI (95567729173e): -EAGAIN in `mapped`, not the sentinel
    // the library preset.
    assert_continue_refused(&uffd, &area, ps, ContinueMode::empty(), Errno::EAGAIN);
    match uffd.read_event(Some(std::time::Duration::ZERO)).unwrap() {
        Some(Event::Remove { start, end }) => assert_eq!((start as usize, end as usize), (a, a + ps)),
        other => panic!("expected UFFD_EVENT_REMOVE, got {other:?}"),
    }
    assert_eq!(t.join(), 0, "MADV_DONTNEED failed");
    assert_eq!(uffd.r#continue(area.page(0), ps, ContinueMode::empty()), Ok(ps as i64));
    assert_eq!(area.read_page(0), vec![0x17; ps]);
}

#[apply(file_mem)]
fn continue_beyond_end_of_file_fails(#[case] mem: MemType) {
    // Truncating the file under the registered view leaves page 1 past EOF.
    // shmem: shmem_get_folio(SGP_NOALLOC) refuses an index at or past
    // i_size with -EINVAL; hugetlb finds no folio in the cache: -EFAULT.
    let (area, uffd) = try_skip!(minor_area(mem, 2, RegisterMode::MINOR));
    let ps = area.page_size();
    fill_alias(&area, 1, |_| 0x3e);
    nix::unistd::ftruncate(area.fd().expect("file-backed area"), ps as i64).expect("ftruncate");
    let errno = if mem.is_hugetlb() { Errno::EFAULT } else { Errno::EINVAL };
    assert_eq!(
        uffd.r#continue(area.page(1), ps, ContinueMode::empty()),
        failed(errno)
    );
    assert!(!pagemap::is_present(area.page(1)));
}

/// Why MADV_HWPOISON cannot poison a page here, if it cannot: the sysctl
/// vm.memory_failure_early_kill exists exactly when CONFIG_MEMORY_FAILURE
/// is built in, and only root may inject.
fn hwpoison_unavailable() -> Option<String> {
    if !std::path::Path::new("/proc/sys/vm/memory_failure_early_kill").exists() {
        return Some(
            "no memory-failure handling (no /proc/sys/vm/memory_failure_early_kill: CONFIG_MEMORY_FAILURE is off), \
             MADV_HWPOISON cannot poison a page"
                .into(),
        );
    }
    (!caps::caps().root).then(|| "needs root: MADV_HWPOISON needs CAP_SYS_ADMIN".into())
}

/// mfill_atomic_pte_continue refuses a cache page that memory_failure()
/// marked poisoned, -EIO before anything is mapped. shmem keeps such a
/// folio in its cache (shmem_error_remove_folio truncates nothing), so a
/// monitor can meet one. A child injects the poison with MADV_HWPOISON
/// through the alias and takes the BUS_MCEERR_AR that action-required
/// poisoning sends the injector. The page is lost to the machine for good,
/// as any soft-poisoned page is: one base page per memory type and run.
#[rstest]
#[case::shmem(MemType::Shmem)]
#[case::shmem_private(MemType::ShmemPrivate)]
fn continue_over_a_hwpoisoned_cache_page_fails_eio(#[case] mem: MemType) {
    if let Some(reason) = hwpoison_unavailable() {
        skip!("{reason}");
    }
    let (area, uffd) = try_skip!(minor_area(mem, 2, RegisterMode::MINOR));
    let ps = area.page_size();
    fill_alias(&area, 0, |_| 0x3c);
    fill_alias(&area, 1, |_| 0x3d);
    let alias = area.alias_page(0);
    let injector = in_signal_child(|| {
        // SAFETY: page 0 of the alias view, shared with the parent.
        let r = unsafe { libc::madvise(alias as *mut libc::c_void, ps, libc::MADV_HWPOISON) };
        if r == 0 { 0 } else { Errno::last_raw() }
    });
    // The one BUS_MCEERR_AR names page 0 of either view: memory_failure()
    // signals each VMA of the injector over that file offset (the registered
    // view is one, mapped or not), and the second SIGBUS merges with the first.
    let views = [alias, area.page(0)];
    assert!(
        views.iter().any(|&at| injector == Ended::Other(testing::ChildExit::Exited(0), 1, Some(FaultSignal::poisoned(at, ps)))),
        "the injector's MADV_HWPOISON: {injector:?}, page 0 at {views:x?}"
    );
    assert_continue_refused(&uffd, &area, 2 * ps, ContinueMode::empty(), Errno::EIO);
    // The page after it is whole and still maps.
    assert_eq!(uffd.r#continue(area.page(1), ps, ContinueMode::empty()), Ok(ps as i64));
    assert_eq!(area.read_page(1), vec![0x3d; ps]);
}
