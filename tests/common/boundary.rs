//! Fills that cross a PMD boundary: the two pages around it, on anon
//! memory two PMDs long. mfill_atomic looks up (and allocates) a page table
//! per PMD, and a PMD-mapped THP on the far side stops it at the boundary.

use nix::errno::Errno;
use uffdtest::mem::{self, Area, MemType};
use uffdtest::testing::{self, pagemap};
use uffdtest::uffd::{Features, Progress, RegisterMode, Uffd};

/// What the far side of the boundary holds when the fill runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FarSide {
    /// Nothing: MADV_NOHUGEPAGE over both PMDs, every page a hole.
    Holes,
    /// A populated PMD-mapped THP (MADV_COLLAPSE, before registration).
    Thp,
}

/// Byte the far side's THP is filled with.
pub const FAR: u8 = 0x6b;

/// An anon area of two PMDs registered MISSING on a uffd with `features`,
/// and the two pages around the boundary given to `fill(uffd, start, len)`.
/// Checks the answer: both pages with holes beyond, one page then EAGAIN
/// with a THP beyond (pmd_trans_huge → EEXIST ends the loop after the first
/// page); checks the pages next to the range are still holes and the THP
/// untouched. Returns the area, the uffd and the boundary's page index for
/// the caller's data checks. Err is the SKIP reason (no THP, no feature).
pub fn fill_across(
    features: Features,
    far: FarSide,
    fill: impl Fn(&Uffd, usize, usize) -> Progress,
) -> Result<(Area, Uffd, usize), String> {
    let pmd = testing::thp::pmd_size()?;
    super::offers(features)?;
    let ps = mem::base_page_size();
    let b = pmd / ps;
    let area = testing::area(MemType::AnonThp, 2 * b)?;
    match far {
        FarSide::Holes => {
            testing::mm::madvise(area.addr(), area.len(), libc::MADV_NOHUGEPAGE).expect("MADV_NOHUGEPAGE")
        }
        FarSide::Thp => {
            for i in b..2 * b {
                area.fill_page(i, FAR);
            }
            testing::thp::collapse_or_fail(area.page(b), pmd);
        }
    }
    let uffd = testing::open_uffd(features)?;
    uffd.register(area.addr(), area.len(), RegisterMode::MISSING)
        .expect("UFFDIO_REGISTER(MISSING)");
    let r = fill(&uffd, area.page(b - 1), 2 * ps);
    match far {
        FarSide::Holes => {
            assert_eq!(r, Ok(2 * ps as i64), "both pages, across the boundary");
            assert!(!pagemap::is_present(area.page(b + 1)), "page after the range");
        }
        FarSide::Thp => {
            assert_eq!(r, testing::progress::err(Errno::EAGAIN, ps as i64), "stops at the THP");
            for i in [b, b + 1, 2 * b - 1] {
                assert_eq!(area.read_page(i), vec![FAR; ps], "THP page {i}");
            }
            assert!(
                testing::smaps::vma(area.addr()).expect("the area").anon_huge >= pmd,
                "the far side is still PMD-mapped"
            );
        }
    }
    assert!(!pagemap::is_present(area.page(b - 2)), "page before the range");
    Ok((area, uffd, b))
}
