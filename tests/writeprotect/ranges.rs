// Which ranges UFFDIO_WRITEPROTECT accepts: unregistered or MISSING-only
// memory, VMA boundaries, holes, and the argument checks. Included by
// writeprotect.rs.

#[apply(all_mem)]
fn writeprotect_on_missing_only_registration_fails_enoent(#[case] mem: MemType) {
    require_mode!(mem, RegisterMode::MISSING);
    let (area, uffd) = try_skip!(page_and_plain_uffd(mem, 1));
    uffd.register(area.addr(), area.len(), RegisterMode::MISSING).unwrap();
    // mwriteprotect_range: a VMA without VM_UFFD_WP is -ENOENT, either way.
    assert_eq!(uffd.writeprotect(area.addr(), area.len(), WP), Err(Errno::ENOENT));
    assert_eq!(
        uffd.writeprotect(area.addr(), area.len(), UNPROTECT),
        Err(Errno::ENOENT)
    );
    assert!(!wp_bit(area.page(0)));
}

#[apply(all_mem)]
fn writeprotect_on_unregistered_memory_fails_enoent(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(page_and_plain_uffd(mem, 1));
    assert_eq!(uffd.writeprotect(area.addr(), area.len(), WP), Err(Errno::ENOENT));
    assert!(!wp_bit(area.page(0)));
}

#[apply(selftest_mem)]
fn writeprotect_stops_at_first_unregistered_vma_with_enoent(#[case] mem: MemType) {
    require_mode!(mem, RegisterMode::WP);
    // Before multi-VMA writeprotect there is no walk to stop.
    require_behaviour!(caps::Behaviour::MultiVmaWriteprotect);
    let area = try_area!(Area::new(mem, 2));
    area.populate(1);
    let uffd = try_skip!(testing::open_uffd(caps::features_for(mem, RegisterMode::WP)));
    uffd.register(area.page(0), area.page_size(), RegisterMode::WP).unwrap();
    // The VMAs are walked in order: the registered head is protected
    // before the unregistered tail fails the call.
    assert_eq!(uffd.writeprotect(area.addr(), area.len(), WP), Err(Errno::ENOENT));
    assert!(wp_bit(area.page(0)), "head VMA protected before the failure");
    assert!(!wp_bit(area.page(1)));
}

#[apply(selftest_mem)]
fn writeprotect_skips_unmapped_holes(#[case] mem: MemType) {
    require_mode!(mem, RegisterMode::WP);
    // Before multi-VMA writeprotect (6.4) a range must lie in one VMA.
    require_behaviour!(caps::Behaviour::MultiVmaWriteprotect);
    let mut area = try_area!(Area::new(mem, 3));
    // Far from where other threads map, so the hole stays a hole.
    testing::holes::relocate(&mut area);
    area.populate(1);
    let ps = area.page_size();
    // SAFETY: unmapping the middle page of our own area; Area's drop
    // unmaps the whole range again, which is harmless.
    unsafe { nix::sys::mman::munmap(std::ptr::NonNull::new(area.page(1) as *mut _).unwrap(), ps) }.unwrap();
    let uffd = try_skip!(testing::open_uffd(caps::features_for(mem, RegisterMode::WP)));
    uffd.register(area.page(0), ps, RegisterMode::WP).unwrap();
    uffd.register(area.page(2), ps, RegisterMode::WP).unwrap();
    // for_each_vma_range only visits mapped VMAs: the hole is no error.
    assert_eq!(uffd.writeprotect(area.addr(), 3 * ps, WP), Ok(()), "over a hole");
    assert!(wp_bit(area.page(0)) && wp_bit(area.page(2)));
    uffd.writeprotect(area.addr(), 3 * ps, UNPROTECT).unwrap();
    assert!(!wp_bit(area.page(0)) && !wp_bit(area.page(2)));
}

#[test]
fn writeprotect_on_unmapped_range_fails_enoent() {
    let uffd = try_skip!(testing::open_uffd(Features::PAGEFAULT_FLAG_WP));
    // A range no test thread maps: a dropped area's range could be reused.
    let addr = testing::holes::far_range();
    assert_eq!(uffd.writeprotect(addr, mem::base_page_size(), WP), Err(Errno::ENOENT));
    assert_eq!(uffd.writeprotect(addr, 1 << 30, UNPROTECT), Err(Errno::ENOENT));
}

/// Argument checks that fail before any VMA is looked at.
mod args {
    use super::*;

    fn setup() -> Result<(Area, Arc<Uffd>), String> {
        wp_area(MemType::Anon, 2, Features::empty())
    }

    #[test]
    fn unknown_mode_bits_fail_einval() {
        let (area, uffd) = try_skip!(setup());
        for bit in [2, 3, 31, 63] {
            let mode = WriteprotectMode::from_bits_retain(1 << bit);
            assert_eq!(
                uffd.writeprotect(area.addr(), area.len(), mode),
                Err(Errno::EINVAL),
                "bit {bit}"
            );
            let mode = WriteprotectMode::from_bits_retain(1 << bit) | WP;
            assert_eq!(
                uffd.writeprotect(area.addr(), area.len(), mode),
                Err(Errno::EINVAL),
                "WP|bit {bit}"
            );
        }
        assert!(!wp_bit(area.page(0)), "a refused call protected the page");
    }

    #[test]
    fn protect_with_dontwake_fails_einval() {
        let (area, uffd) = try_skip!(setup());
        let mode = WP | WriteprotectMode::DONTWAKE;
        assert_eq!(uffd.writeprotect(area.addr(), area.len(), mode), Err(Errno::EINVAL));
        assert!(!wp_bit(area.page(0)));
    }

    #[test]
    fn misaligned_start_fails_einval() {
        let (area, uffd) = try_skip!(setup());
        assert_eq!(
            uffd.writeprotect(area.addr() + 1, area.page_size(), WP),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            uffd.writeprotect(area.addr() + 8, area.page_size(), WP),
            Err(Errno::EINVAL)
        );
        assert!(!wp_bit(area.page(0)));
    }

    #[test]
    fn unaligned_length_fails_einval() {
        let (area, uffd) = try_skip!(setup());
        assert_eq!(
            uffd.writeprotect(area.addr(), area.page_size() + 1, WP),
            Err(Errno::EINVAL)
        );
        assert_eq!(uffd.writeprotect(area.addr(), 1, WP), Err(Errno::EINVAL));
        assert!(!wp_bit(area.page(0)));
    }

    #[test]
    fn zero_length_fails_einval() {
        let (area, uffd) = try_skip!(setup());
        assert_eq!(uffd.writeprotect(area.addr(), 0, WP), Err(Errno::EINVAL));
        assert_eq!(uffd.writeprotect(area.addr(), 0, UNPROTECT), Err(Errno::EINVAL));
    }

    #[test]
    fn range_beyond_user_address_space_fails_einval() {
        let (area, uffd) = try_skip!(setup());
        let ps = area.page_size();
        // x86_64 TASK_SIZE with 4-level paging is (1 << 47) - PAGE_SIZE;
        // 5-level paging only raises it for mappings above that hint.
        let top = (1usize << 47) - ps;
        assert_eq!(uffd.writeprotect(1 << 47, ps, WP), Err(Errno::EINVAL), "start at 1<<47");
        assert_eq!(
            uffd.writeprotect(top, 2 * ps, WP),
            Err(Errno::EINVAL),
            "end past TASK_SIZE"
        );
        assert_eq!(
            uffd.writeprotect(usize::MAX & !(ps - 1), ps, WP),
            Err(Errno::EINVAL),
            "start at the top"
        );
        // A length that wraps the address space.
        assert_eq!(
            uffd.writeprotect(area.addr(), usize::MAX & !(ps - 1), WP),
            Err(Errno::EINVAL)
        );
    }
}

#[apply(hugetlb_mem)]
fn hugetlb_subpage_range_fails_einval(#[case] mem: MemType) {
    require_mode!(mem, RegisterMode::WP);
    let (area, uffd) = try_skip!(wp_area(mem, 2, Features::empty()));
    let base = mem::base_page_size();
    // Base-page aligned is enough for validate_range but not for hugetlb.
    assert_eq!(
        uffd.writeprotect(area.addr() + base, area.page_size(), WP),
        Err(Errno::EINVAL)
    );
    assert_eq!(uffd.writeprotect(area.addr(), base, WP), Err(Errno::EINVAL));
    assert_eq!(
        uffd.writeprotect(area.addr(), area.page_size() + base, WP),
        Err(Errno::EINVAL)
    );
    assert!(!wp_bit(area.page(0)) && !wp_bit(area.page(1)));
}
