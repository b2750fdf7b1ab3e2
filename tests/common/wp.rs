//! Shared by the write-protect and CONTINUE test binaries.

use super::*;

/// The features a WP marker on an unpopulated page of `mem` needs: WP's,
/// and WP_UNPOPULATED for anon PTEs (file memory always gets markers).
pub fn wp_marker_features(mem: MemType) -> Features {
    let mut f = caps::features_for(mem, RegisterMode::WP);
    if mem.is_anon() {
        f |= Features::WP_UNPOPULATED;
    }
    f
}
