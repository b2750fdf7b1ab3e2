//! Address ranges no other thread of the test process will map.
//!
//! Tests run in parallel threads of one process: a hole a test punches, or
//! the range of an area it dropped, may be handed to another test's mmap at
//! once, and an "unmapped" address then belongs to someone else. The
//! top-down mmap allocator starts just below the stack and walks down; a
//! slot at 48 TiB is beyond any realistic test's reach, and each call gets
//! its own slot.

use crate::mem::Area;
use std::sync::atomic::{AtomicUsize, Ordering};

const BASE: usize = 0x3000_0000_0000;
/// Slot size and alignment: fits any test area, aligned for every huge page
/// size up to 1 GiB.
const SLOT: usize = 1 << 32;

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// The start of a fresh, unmapped, 4 GiB-aligned and 4 GiB-long range.
pub fn far_range() -> usize {
    BASE + NEXT.fetch_add(1, Ordering::Relaxed) * SLOT
}

/// Moves `area`'s main view into a [`far_range`] (mremap MAYMOVE|FIXED),
/// so holes punched into it stay holes.
pub fn relocate(area: &mut Area) {
    let to = far_range();
    let got = super::mm::mremap(
        area.addr(),
        area.len(),
        area.len(),
        libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
        to,
    )
    .expect("mremap the area to a far range");
    assert_eq!(got, to);
    area.moved_to(to);
}
