//! Moving pages between NUMA nodes, as tests/migration.rs does it:
//! move_pages(2) and mbind(2) with MPOL_MF_MOVE, on this process.

use nix::errno::Errno;

/// `MPOL_BIND` of linux/mempolicy.h.
pub const MPOL_BIND: i32 = 2;
/// `MPOL_MF_MOVE`: move the pages only this process maps.
pub const MPOL_MF_MOVE: u32 = 1 << 1;

/// move_pages(2) of this process: each of `pages` to `node`, or with
/// `node` None only asks where each is. Ok is the per-page status (the node,
/// or `-errno` for a page that did not move).
fn move_pages(pages: &[usize], node: Option<i32>) -> nix::Result<Vec<i32>> {
    let ptrs: Vec<*mut libc::c_void> = pages.iter().map(|&p| p as *mut libc::c_void).collect();
    let nodes = node.map(|n| vec![n; pages.len()]);
    let mut status = vec![i32::MIN; pages.len()];
    // SAFETY: the arrays are `pages.len()` long and live across the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_pages,
            0,
            pages.len(),
            ptrs.as_ptr(),
            nodes.as_ref().map_or(std::ptr::null(), |n| n.as_ptr()),
            status.as_mut_ptr(),
            MPOL_MF_MOVE,
        )
    };
    Errno::result(r).map(|_| status)
}

/// The node each of `pages` is on (`-errno` where none is mapped).
pub fn nodes_of(pages: &[usize]) -> Vec<i32> {
    move_pages(pages, None).expect("move_pages(2) query")
}

/// Moves each of `pages` to `node`; the per-page status.
pub fn move_to(pages: &[usize], node: i32) -> nix::Result<Vec<i32>> {
    move_pages(pages, Some(node))
}

/// mbind(2) `[addr, addr+len)` to `node` with MPOL_MF_MOVE: the pages
/// already there move.
pub fn bind_and_move(addr: usize, len: usize, node: u32) -> nix::Result<()> {
    let mask: [libc::c_ulong; 1] = [1 << node];
    // SAFETY: the mask outlives the call; maxnode counts its bits.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mbind,
            addr,
            len,
            MPOL_BIND,
            mask.as_ptr(),
            libc::c_ulong::BITS as usize,
            MPOL_MF_MOVE,
        )
    };
    Errno::result(r).map(drop)
}
