//! Migration between NUMA nodes (move_pages(2), mbind(2) with
//! MPOL_MF_MOVE) keeps what userfaultfd put on a page: the uffd-wp bit
//! (pagemap bit 57) and the contents. mm/migrate.c `remove_migration_pte`
//! carries the bit from the migration entry to the new PTE (and
//! `set_huge_pte_at` for hugetlb). Needs two nodes with memory
//! (caps::two_memory_nodes); `uffdtest vm` gives its guest two.

mod common;
use common::*;
use rstest_reuse::template;
use testing::mm::assert_bytes;
use testing::numa::{bind_and_move, move_to, nodes_of};

const WP: RegisterMode = RegisterMode::WP;

/// The types whose pages migrate (guest_memfd's cannot).
#[template]
#[rstest]
#[case::anon(MemType::Anon)]
#[case::shmem(MemType::Shmem)]
#[case::shmem_private(MemType::ShmemPrivate)]
#[case::hugetlb(MemType::Hugetlb)]
#[case::hugetlb_private(MemType::HugetlbPrivate)]
#[case::anon_thp(MemType::AnonThp)]
#[case::hugetlb_1g(MemType::Hugetlb1g)]
#[case::hugetlb_1g_private(MemType::Hugetlb1gPrivate)]
fn migratable(#[case] mem: MemType) {}

fn pat(page: usize, i: usize) -> u8 {
    (page * 29 + i * 7 + 1) as u8
}

/// Two pages of `mem` holding [`pat`], registered WP and write-protected,
/// and the node they are not on. Err is the SKIP reason.
fn protected(mem: MemType) -> Result<(Area, Uffd, i32), String> {
    let (a, b) = caps::two_memory_nodes()?;
    let features = caps::features_for(mem, WP);
    offers(features)?;
    testing::register_support(mem, WP)?;
    let area = testing::area(mem, 2)?;
    for p in 0..2 {
        for i in 0..area.page_size() {
            testing::write_byte(area.page(p) + i, pat(p, i));
        }
    }
    let uffd = testing::open_uffd(features)?;
    uffd.register(area.addr(), area.len(), WP).unwrap();
    uffd.writeprotect(area.addr(), area.len(), WriteprotectMode::WP)
        .unwrap();
    let here = nodes_of(&[area.page(0)])[0];
    let to = if here == a as i32 { b } else { a };
    Ok((area, uffd, to as i32))
}

/// Both pages are now on `node`, mapped, still write-protected and hold
/// their bytes; a write then faults WP and lands once un-protected.
#[track_caller]
fn assert_moved_and_protected(area: &Area, uffd: &Uffd, node: i32) {
    let pages = [area.page(0), area.page(1)];
    assert_eq!(nodes_of(&pages), [node, node], "pages not on node {node}");
    for (p, &at) in pages.iter().enumerate() {
        assert_eq!(
            wp_present(at),
            pagemap::PM_UFFD_WP | pagemap::PM_PRESENT,
            "page {p} after migration"
        );
        assert_bytes(&area.read_page(p), |i| pat(p, i), "migrated page");
    }
    faulter::assert_no_event(uffd);
    let w = blocked_wp_writer(uffd, area.page(1), 11, 0xfe);
    uffd.writeprotect(area.page(1), area.page_size(), WriteprotectMode::empty())
        .unwrap();
    assert_eq!(w.join(), 0xfe);
    assert_bytes(
        &area.read_page(1),
        |i| if i == 11 { 0xfe } else { pat(1, i) },
        "written page",
    );
}

#[apply(migratable)]
fn move_pages_keeps_uffd_wp_and_contents(#[case] mem: MemType) {
    let (area, uffd, to) = try_skip!(protected(mem));
    // One page per call: the two pages may share a large folio (anon-thp),
    // and a second entry for a folio the call already took answers -EBUSY.
    for p in 0..2 {
        assert_eq!(
            move_to(&[area.page(p)], to),
            Ok(vec![to]),
            "move_pages(2) status of page {p}"
        );
    }
    assert_moved_and_protected(&area, &uffd, to);
}

#[apply(migratable)]
fn mbind_mpol_mf_move_keeps_uffd_wp_and_contents(#[case] mem: MemType) {
    let (area, uffd, to) = try_skip!(protected(mem));
    assert_eq!(bind_and_move(area.addr(), area.len(), to as u32), Ok(()));
    assert_moved_and_protected(&area, &uffd, to);
}
